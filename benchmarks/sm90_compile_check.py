"""Compile every Triton kernel variant for sm_90 (H100 / H200): resources, SASS cost, H200 bound.

Usage::

    python benchmarks/sm90_compile_check.py [--ci] [--cover {1,2,3,all}] [--markdown]
                                            [--arch 90] [--shapes NxC ...] [--losses NAME ...]
                                            [--every-layout] [--jobs N] [--csv FILE]
                                            [--json FILE]

Needs triton (with its bundled ``ptxas``, ``cuobjdump`` and ``nvdisasm``), but no GPU: Triton's
own compiler builds the cubins ahead of time for ``GPUTarget("cuda", ARCH, 32)``.

**Which variants.** The script does not list kernels or flags itself: it runs every loss's real
launcher (``marginloss.kernels.<loss>.launch``) on CPU tensors with the kernel launch replaced
by a recorder (``JITFunction.run``), over every combination a call can produce:

* input dtype float32 / bfloat16 / float16;
* reduction ``"none"`` or reduced; gradient or forward-only; the in-kernel label check on or
  off (when the launcher takes ``check``);
* no weight, a per-class weight and (where the loss takes one) a full weight;
* the target's dtypes (int32 / int64 indices; labels in the input's dtype or float32);
* every value of an integer option that the loss accepts (``p`` in {1, 2});
* row shapes (``--shapes``, ``N x C``): by default the roofline case 4096 x 2048 (first, so
  its variants carry the cost figures: the multilabel margin benchmark case N=4096, C=2048,
  K=16 positives, the sampler's default), long rows (the chunk loop at the largest
  ``BLOCK_C``), short rows (many rows packed per program) and sizes that are not multiples of
  16 (no divisibility specialisation: scalar loads and stores);
* and, for every call that has a gradient, the backward's in-place scale
  (``marginloss.backends.triton.scale_``) with an upstream gradient shaped like the loss.

Each recorded launch is specialised as Triton's JIT would specialise it (the JIT's own binder:
constexprs, 16-byte divisibility of pointers and integers, ints equal to 1), de-duplicated, and
compiled once, in a fresh cache (so ptxas runs every time), by a pool of ``--jobs`` processes
(default ``os.cpu_count()``).

**Resources.** Registers per thread and stack frame bytes (``cuobjdump -res-usage``), spill
stores / loads in bytes (the ``ptxas -v`` log of that same compile) and shared memory
(Triton's dynamic allocation). The exit status is 1 when any variant spills or uses more than
128 registers per thread (at most 128 keeps 2 CTAs of 8 warps, or 4 of 4 warps, on an SM).

**Instructions per element (ipe).** From the SASS with line information
(``nvdisasm -gi``: the same disassembly as ``cuobjdump -sass``, plus the source line and
inlining chain of each instruction):

1. Instructions are counted from the kernel's entry to its last unconditional ``EXIT``
   (out-of-line slow paths after it, reached by calls, count 0; ``NOP`` padding counts 0).
2. A loop is a backward branch: its body is every instruction from the branch target (the
   loop label) to the branch. Loops nest by address range; each instruction belongs to its
   innermost loop.
3. Each loop is mapped to its source loop by the line of its backward branch (the ``for``
   statement, with the chain of inlined call sites), and weighted by how many times that
   source loop's body runs in one program. Those counts come from running the same launch
   once under Triton's interpreter (program 0 only, ``sys.settrace`` counting the first line
   of every loop body per call chain): so nested loops, loops that run 0 times (e.g. the
   multilabel margin's general search and extra histogram sweeps at K < 32) and
   data-dependent bounds (K) are counted as that launch runs them. Instructions outside loops
   count once. (A launch that reads what an earlier launch of the same call wrote, e.g. the
   multilabel margin's split rows, sees that launch's program 0 only, or nothing when its
   counts were already taken: its own scratch must keep it in bounds then.)
4. ipe = (weighted instruction count of one program, per thread) / (input elements per
   program / (32 x num_warps)): the instructions a thread issues per element it covers. For
   a kernel whose program runs one loop over full tiles this is the loop body divided by
   ``BLOCK_N x BLOCK_C / (32 x num_warps)`` plus the program's fixed cost spread over its
   elements; for soft margin (no loop) it is the whole kernel over ``BLOCK / 256``.
   Elements are useful input elements (padding lanes of a partial tile count against ipe).

It is a static estimate: both sides of a forward branch inside the main flow are counted (an
upper bound), and loops that LLVM unrolled (small ones, e.g. a list-length scan, x4) are
weighted per source iteration with their whole unrolled body (an overestimate of those loops).

**Bytes per element** are what the call must move, per input element: read every input and
the target (float / bool labels: each distinct byte once, so a broadcast target counts once;
class indices: one per row; -1-padded index lists: the entries up to and including the first
negative), read the weight (distinct bytes), write the gradient, and write the loss for
``reduction="none"`` (the reduced losses' per-row or per-block partial sums are not counted).
The backward scale moves its gradient twice (read, write) plus the upstream gradient.

**H200 bound.** Memory time per element = bytes / 4.8e12 B/s (HBM3e); issue time per element
= ipe / (32 threads x 1.045e12 warp-instructions/s), i.e. 132 SMs x 4 schedulers x 1.98 GHz
boost, one warp-instruction per scheduler per clock. The larger one bounds the kernel;
``% bw`` = memory time / that bound: the fraction of 4.8 TB/s the kernel can reach at best.
Memory-bound kernels are declared per kernel (:data:`MEMORY_BOUND_KERNELS`, the logistic
kernels; a kernel module may add its own in a ``MEMORY_BOUND`` tuple of kernel names): their
training-step variants (with a gradient) at the roofline shape must issue faster than they
move memory (exit status 1 otherwise; ``tests/kernels/test_sm90.py`` asserts it); their other
variants that are issue-bound (half-precision forward-only calls move 2-4 bytes per element)
are reported.

**Which variants are compiled** (``--cover``). Every kind of call gives about 1,800 distinct
variants (about 12 CPU-minutes to compile). By default (``--cover 3``) a greedy covering
array picks, per kernel, variants until every combination of three compile-key feature values
that any variant has (pointer dtypes, int widths, constexpr values, 16-byte divisibility and
ints specialised to 1, warps, shape) is in a picked one: about a quarter of them. Always
picked: each kernel's first float32 and bfloat16 variant at the roofline shape (the reference
figures) and every training-step variant of a memory-bound kernel there. The loop trip counts
are taken for the picked variants only. ``--cover all`` compiles every variant.

**CI mode** (``--ci``): the default shapes, a summary per kernel plus the offending variants
(no per-variant table), parallel compiles. ``--json FILE`` writes every figure for tests;
``--markdown`` prints the per-kernel table of ``benchmarks/RESULTS.md``. Triton's cache (fresh
each run, so ptxas runs every time) lives in ``/dev/shm`` when it can.

The review in ``shared/reference/gpu_kernel_review.md`` did this by hand for Triton 3.6; this
script makes it repeatable.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import collections
import contextlib
import csv
import functools
import importlib
import importlib.util
import inspect
import io
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from unittest import mock

import torch

from marginloss.losses import LOSSES, Call

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
DEFAULT_SHAPES = ("4096x2048", "4x8192", "4096x20", "9x1001")

#: H200 (SXM, 141 GB HBM3e): memory bandwidth, B/s.
H200_BYTES_PER_S = 4.8e12
#: H200 issue rate, warp-instructions/s: 132 SMs x 4 schedulers x 1.98 GHz (max boost), one
#: warp-instruction per scheduler per clock.
H200_WARP_INSTRUCTIONS_PER_S = 132 * 4 * 1.98e9
MAX_REGISTERS = 128

#: Meta-parameters a launcher sets from whether it compiles or interprets (``PTX``: inline PTX
#: only when compiled, ``kernels._common.ptx_allowed``); they change no loop bound.
_MODE_META = {"PTX"}
_LAUNCH_OPTIONS = {"num_warps", "num_stages", "num_ctas", "maxnreg", "enable_fp_fusion",
                   "debug", "launch_cooperative_grid", "launch_pdl"}


def _set_up_triton() -> None:
    """Triton as this check needs it. Must run before the kernel modules are imported (and it
    changes the process's environment, so it runs from :func:`main` only, never on import)."""
    os.environ.pop("TRITON_INTERPRET", None)  # compile the real @triton.jit kernels
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # in memory: many small files
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="sm90_check_", dir=shm)  # fresh
    atexit.register(shutil.rmtree, os.environ["TRITON_CACHE_DIR"], ignore_errors=True)
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"  # ptxas -v's report (spills) is printed: captured
    _quiet_triton()


def _quiet_triton() -> None:
    # Triton 3.9 warns on every compile that its fp-fusion default will change in 3.10; the
    # check compiles what a launch compiles today (fusion on), so the notice is noise here.
    warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")


def triton_tools() -> dict[str, str]:
    """The binaries bundled in the triton wheel (found without importing triton)."""
    spec = importlib.util.find_spec("triton")
    root = Path(spec.origin).parent if spec and spec.origin else Path("triton")
    bin_dir = root / "backends" / "nvidia" / "bin"
    return {name: str(bin_dir / name) for name in ("ptxas", "cuobjdump", "nvdisasm")}


# ----------------------------------------------------------------------------------------------
# 1. the launches every call can produce


@dataclass
class Launch:
    kernel: object  # the JITFunction (or, under the interpreter, the InterpretedFunction)
    args: tuple
    kwargs: dict
    grid: tuple | None
    specialised: tuple | None = None  # record(..., backend): specialise()'s answer
    trip: str | None = None  # ... and trip_key()'s (the arguments are then dropped)


@dataclass
class Workload:
    """One call (a loss call, or the backward's scale) and what it must move."""

    label: str  # e.g. "multi_margin_loss 4096x2048"
    shape: tuple[int, int]
    elements: int  # input elements
    bytes: int  # what the call must move (see the module docstring)
    grad: bool = False  # a training step's launch (a gradient, or the backward's scale)
    dtype: str = "float32"  # the input's dtype
    launches: list[Launch] = field(default_factory=list)


def _kernel_classes():
    from triton.runtime.jit import JITFunction
    classes = [JITFunction]
    with contextlib.suppress(ImportError):
        from triton.runtime.interpreter import InterpretedFunction
        classes.append(InterpretedFunction)
    return classes


@contextlib.contextmanager
def launches_go_to(handler):
    """Every kernel launch (``kernel[grid](...)``, directly or through
    ``torch.library.wrap_triton``, which is made the identity: its eager wrapper ends in the
    same ``run``) calls ``handler(kernel, args, kwargs, grid)`` instead."""
    def run(self, *args, grid, warmup, **kwargs):
        if not warmup:
            return handler(self, args, kwargs, grid)
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(torch.library, "wrap_triton", lambda k: k))
        for cls in _kernel_classes():
            stack.enter_context(mock.patch.object(cls, "run", run))
        yield


#: Target dtypes a user can pass, tried on every loss (``spec.prepare`` rejects what the loss
#: does not take, and converts what it does not pass on as it is).
LABEL_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.bool,
                torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
INDEX_DTYPES = (torch.int64, torch.int32)  # what the index losses document (int8: see report)
#: Values tried for each option (``LossSpec.options`` and ``extras``), by schema type, besides
#: its default; :func:`option_values` keeps those that change what the launcher launches.
OPTION_CANDIDATES = {"int": (0, 1, 2, 3), "float": (0.0, 0.5, 1.0, 2.0, 3.0),
                     "Tensor?": (None, "per-class")}
_USER_ERRORS = (ValueError, TypeError)  # what spec.prepare raises for a call it refuses


def launch_signature(kernel, args, kwargs) -> tuple:
    """What of a launch can decide its compiled variant, without Triton's JIT (so it is the
    same under the interpreter): the kernel, each tensor's dtype (or None), each integer's
    class (1, a multiple of 16, other), and every non-tensor keyword (constexprs, warps)."""
    def cls(a):
        if isinstance(a, torch.Tensor):
            return str(a.dtype)
        if isinstance(a, bool) or a is None or isinstance(a, str):
            return a
        if isinstance(a, int):
            return "=1" if a == 1 else "%16" if a % 16 == 0 else "int"
        return type(a).__name__
    return (kernel.fn.__name__, tuple(map(cls, args)),
            tuple(sorted((k, cls(v)) for k, v in kwargs.items()
                         if not isinstance(v, torch.Tensor))))


def _launch_signatures(launch, call, check) -> frozenset:
    seen = set()

    def handler(kernel, args, kwargs, grid):
        seen.add(launch_signature(kernel, args, kwargs))
    with launches_go_to(handler):
        _run_call(launch, call, check)
    return frozenset(seen)


def _option_call(spec, xs, target, weight, options, extras, reduction, need):
    """``Call`` of ``spec`` through its ``prepare`` (and ``prepare_extras``), or None if the
    loss refuses it."""
    try:
        inputs, t, w, opts, _ = spec.prepare(xs, target, weight, tuple(options))
        call = Call(inputs, t, w, opts, reduction, (need,) * len(inputs))
        if spec.extras:
            call = call._replace(extras=spec.prepare_extras(call, tuple(extras)))
    except _USER_ERRORS:
        return None
    return call


def option_values(spec, launch, checks, xs, target, weights, kwargs) -> list[tuple]:
    """``(options, extras)`` pairs to enumerate for ``spec``: the product, over its options
    and extras, of one value per distinct effect.

    Each option is tried at its default and at the candidates of its type
    (:data:`OPTION_CANDIDATES`; a ``"Tensor?"`` extra: None or a per-class vector), the
    others at their defaults, on small inputs, over every reduction kind, gradient, weight and
    label check; values that launch the same set of kernel variants
    (:func:`launch_signature`) count once (e.g. a margin, a runtime float), and values the
    loss refuses or that launch nothing (e.g. a norm degree the kernel hands to torch ops)
    are dropped."""
    every = [*spec.options, *spec.extras]
    defaults = [kwargs.get(o.name, o.default) for o in every]
    c = xs[0].shape[-1]
    chosen = []
    for i, option in enumerate(every):
        candidates = [defaults[i], *OPTION_CANDIDATES.get(option.type, ())]
        effects: dict[frozenset, object] = {}
        for value in candidates:
            if value == "per-class":
                value = torch.rand(c, dtype=xs[0].dtype) + 0.5
            values = [*defaults[:i], value, *defaults[i + 1:]]
            options, extras = values[:len(spec.options)], values[len(spec.options):]
            seen = set()
            for weight, reduction, need, check in itertools.product(
                    weights, ("sum", "none"), (True, False), checks):
                call = _option_call(spec, xs, target, weight, options, extras, reduction, need)
                if call is not None:
                    seen |= _launch_signatures(launch, call, check)
            if seen:
                effects.setdefault(frozenset(seen), value)
        chosen.append(list(effects.values()) or [defaults[i]])
    pairs = []
    for values in itertools.product(*chosen):
        pairs.append((tuple(values[:len(spec.options)]), tuple(values[len(spec.options):])))
    return pairs


#: Enumerate every target dtype and layout and every weight layout (``--every-layout``; 3.5x
#: the variants), not only the usual ones (labels in the input's dtype or float32, int64 /
#: int32 indices; no, per-class or full weight).
EVERY_LAYOUT = False


def _targets(target, dtype) -> list:
    """The target in the usual dtypes or (:data:`EVERY_LAYOUT`) in every dtype a user can pass
    (:data:`LABEL_DTYPES`) and, for a label target shaped like the input, broadcast from a
    single row."""
    if target is None:
        return [None]
    if target.is_floating_point():
        dtypes = dict.fromkeys((dtype, *(LABEL_DTYPES if EVERY_LAYOUT else (torch.float32,))))
    else:
        dtypes = dict.fromkeys(INDEX_DTYPES)
    out = [target.to(d) for d in dtypes]
    if EVERY_LAYOUT and target.is_floating_point() and target.dim() == 2 and \
            target.shape[0] > 1:
        out.append(target[:1].to(dtype))  # (1, C): a stride-0 view once broadcast
    return out


def _weights(spec, n, c, dtype) -> list:
    """None, a per-class weight and, for a loss that takes one, a full ``(N, C)`` weight (and,
    with :data:`EVERY_LAYOUT`, one broadcast from ``(N, 1)``)."""
    if not spec.weighted:
        return [None]
    out = [None, torch.rand(c, dtype=dtype) + 0.5]
    if spec.full_weight:
        out.append(torch.rand(n, c, dtype=dtype) + 0.5)
        if EVERY_LAYOUT:
            out.append(torch.rand(n, 1, dtype=dtype) + 0.5)
    return out


def calls(spec, shapes, launch=None, checks=(False,)):
    """Every distinct kind of call of ``spec``: ``((n, c), Call, listed)``, where ``listed``
    is the number of target entries the call must read when the target holds -1-padded
    lists (None otherwise). Inputs are sampled once per shape (float32, then cast).

    The product of: input dtype (:data:`DTYPES`), target (every dtype and layout a user can
    pass: :func:`_targets`), weight (:func:`_weights`), the options' values that change the
    launch (:func:`option_values`, probed once at a small shape), reduction (``"sum"`` or
    ``"none"``: ``"mean"`` differs from ``"sum"`` by a runtime scale) and which inputs need a
    gradient (every subset). Calls the loss refuses are skipped."""
    probe = None
    for n, c in shapes:
        g = torch.Generator().manual_seed(0)
        xs32, target, kwargs = spec.sample(n, c, dtype=torch.float32, generator=g)
        listed = _listed_entries(target, xs32[0])
        if probe is None and launch is not None:
            gp = torch.Generator().manual_seed(0)
            pxs, ptarget, pkw = spec.sample(9, 37, dtype=torch.float32, generator=gp)
            probe = option_values(spec, launch, checks, pxs, ptarget,
                                  _weights(spec, 9, 37, torch.float32), pkw)
        elif probe is None:
            probe = [(tuple(kwargs.get(o.name, o.default) for o in spec.options),
                      tuple(kwargs.get(o.name, o.default) for o in spec.extras))]
        for dtype in DTYPES:
            xs = tuple(x.to(dtype) for x in xs32)
            for t, weight, (options, extras), reduction, need_grad in itertools.product(
                    _targets(target, dtype), _weights(spec, n, c, dtype), probe,
                    ("sum", "none"), itertools.product((True, False), repeat=len(xs))):
                if extras:
                    extras = tuple(_extra_at(e, c, dtype) for e in extras)
                call = _option_call(spec, xs, t, weight, options, extras, reduction, True)
                if call is not None:
                    yield (n, c), call._replace(need_grad=need_grad), listed


def _extra_at(extra, c: int, dtype):
    """An extra probed at the small shape, for a call with ``c`` classes in ``dtype``: a
    per-class vector (the probe's has 37 entries) becomes one of ``c`` entries; a scalar, a
    one-entry tensor or None stays as it is."""
    if not isinstance(extra, torch.Tensor):
        return extra
    if extra.dim() == 1 and extra.numel() > 1:
        extra = torch.linspace(0.5, 1.5, c)
    return extra.to(dtype)


def _distinct_bytes(t) -> int:
    """Bytes of ``t`` counting each memory location once (stride-0 dimensions once)."""
    if t is None:
        return 0
    return math.prod(s for s, st in zip(t.shape, t.stride(), strict=True) if st) \
        * t.element_size()


def _listed_entries(target, x) -> int | None:
    """For an integer target shaped like the input (rows of class indices padded with -1):
    the entries up to and including each row's first negative one."""
    if target is None or target.is_floating_point() or target.shape != x.shape or \
            target.dim() != 2:
        return None
    negative = target < 0
    first = torch.where(negative.any(1), negative.to(torch.int8).argmax(1) + 1, target.shape[1])
    return int(first.sum())


def call_bytes(spec, call: Call, listed: int | None, check: bool = False) -> int:
    """What ``call`` must move (see the module docstring); with ``check``, index lists are
    read whole (the label check looks at every entry, past the first -1, as torch's does)."""
    t = call.target
    moved = sum(x.numel() * x.element_size() for x in call.inputs)
    if t is not None:
        if t.is_floating_point() or t.dtype == torch.bool:
            moved += _distinct_bytes(t)  # labels, each distinct one once
        elif listed is not None:  # index lists: up to the first -1, or all with the check
            moved += (t.numel() if check else listed) * t.element_size()
        else:
            moved += t.numel() * t.element_size()  # one index per row
    moved += _distinct_bytes(call.weight)
    moved += sum(_distinct_bytes(e) for e in call.extras if isinstance(e, torch.Tensor))
    moved += sum(x.numel() * x.element_size()
                 for x, need in zip(call.inputs, call.need_grad, strict=True) if need)
    if call.reduction == "none":
        moved += math.prod(spec.loss_shape(call)) * spec.out_dtype(call).itemsize
    return moved


def workloads(shapes):
    """Every workload the launchers produce, in a fixed order: ``(Workload, run)`` where
    ``run()`` makes the workload's launches (loss calls, then the backward's scale)."""
    from marginloss.backends import triton as triton_backend

    for spec in LOSSES:
        if "triton" not in spec.backends:
            continue
        launch = importlib.import_module(f"marginloss.kernels.{spec.name}").launch
        checks = (False, True) if "check" in inspect.signature(launch).parameters else (False,)
        for shape, call, listed in calls(spec, shapes, launch, checks):
            for check in checks:
                moved = call_bytes(spec, call, listed, check)
                label = call_label(spec, shape, call, check)
                yield (Workload(label, shape, call.input.numel(), moved, any(call.need_grad),
                                _dtype(call.input.dtype)),
                       functools.partial(_run_call, launch, call, check))
            if not any(call.need_grad) or not hasattr(triton_backend, "scale_"):
                continue
            loss_shape, out_dtype = spec.loss_shape(call), spec.out_dtype(call)
            for x, need in zip(call.inputs, call.need_grad, strict=True):
                if need:
                    grad = torch.empty_like(x, memory_format=torch.contiguous_format)
                    go = torch.ones(loss_shape, dtype=out_dtype)
                    moved = 2 * grad.numel() * grad.element_size() + _distinct_bytes(go)
                    label = (f"backward scale {shape[0]}x{shape[1]} {_dtype(grad.dtype)}, "
                             f"upstream {tuple(go.shape)}")
                    yield (Workload(label, shape, grad.numel(), moved, True, _dtype(grad.dtype)),
                           functools.partial(triton_backend.scale_, grad, go))


def _dtype(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def call_label(spec, shape, call: Call, check: bool) -> str:
    """E.g. ``multi_margin_loss 4096x2048 float32, target int64, sum, grad, p=1, margin=1.0``."""
    parts = [f"{spec.name} {shape[0]}x{shape[1]} {_dtype(call.input.dtype)}"]
    if call.target is not None:
        parts.append(f"target {_dtype(call.target.dtype)}")
    if call.weight is not None:
        parts.append(f"weight {tuple(call.weight.shape)}")
    parts.append(call.reduction)
    parts.append("grad" if any(call.need_grad) else "no grad")
    if check:
        parts.append("label check")
    parts += [f"{o.name}={v}" for o, v in zip(spec.options, call.options, strict=True)]
    return ", ".join(parts)


def _run_call(launch, call, check):
    return launch(call, check=True) if check else launch(call)


def record(shapes, backend=None) -> list[Workload]:
    """Every workload, with its launches recorded (no kernel runs). With ``backend``, each
    launch is specialised (:func:`specialise`) and keyed (:func:`trip_key`) as it is recorded,
    and its arguments are dropped (the workloads' tensors are not kept alive)."""
    out = []
    for work, run in workloads(shapes):
        def handler(kernel, args, kwargs, grid, work=work):
            launch = Launch(kernel, args, kwargs,
                            tuple(grid) if isinstance(grid, tuple) else None)
            if backend is not None:
                launch = Launch(kernel, (), {}, launch.grid, specialise(launch, backend),
                                trip_key(work, launch))
            work.launches.append(launch)
        with launches_go_to(handler):
            run()
        out.append(work)
    return out


def trip_key(work: Workload, launch: Launch) -> str:
    """What decides a launch's loop trip counts: kernel, shape, the integer arguments and the
    meta-parameters (not the dtypes, pointers or float scalars, nor those that differ between
    a compile and the interpreter, :data:`_MODE_META`: the interpreter's launch must find the
    compiled one's key)."""
    ints = tuple(a for a in launch.args if type(a) is int)
    meta = tuple(sorted((k, v) for k, v in launch.kwargs.items()
                        if k not in _LAUNCH_OPTIONS and k not in _MODE_META
                        and isinstance(v, (bool, int, str))))
    return repr((launch.kernel.fn.__name__, work.shape, ints, meta))


# ----------------------------------------------------------------------------------------------
# 2. specialise as the JIT would, compile, measure (in worker processes)


def specialise(launch: Launch, backend):
    """``(options, signature, constexprs, attrs)`` exactly as ``JITFunction.run`` builds them."""
    from triton.runtime.jit import create_function_from_signature

    kernel = launch.kernel
    kwargs = dict(launch.kwargs, debug=False)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*launch.args, **kwargs)
    return kernel._pack_args(backend, kwargs, bound, specialization, options)


def describe(signature: dict, constexprs: dict, attrs: dict, num_warps: int) -> str:
    """A short label: the pointer dtypes, the meta-parameters (flags and block sizes), the
    integers the JIT specialised (``=1``: a constant; ``%16``: known multiple of 16), warps."""
    names = list(signature)
    ptrs = [f"{k.removesuffix('_ptr')}={v[1:]}" for k, v in signature.items()
            if v.startswith("*")]
    meta = [f"{names[path[0]]}={int(v) if isinstance(v, bool) else v}"
            for path, v in constexprs.items()
            if names[path[0]].isupper() and v is not None]
    ints = [f"{names[path[0]]}={v}" for path, v in constexprs.items()
            if not names[path[0]].isupper() and isinstance(v, int)]
    ints += [f"{names[path[0]]}%16" for path, a in attrs.items()
             if a and not signature[names[path[0]]].startswith("*")]
    return " ".join([*ptrs, *meta, *ints, f"w{num_warps}"])


def res_usage(cuobjdump_out: str) -> dict[str, int]:
    """REG, STACK, SHARED, LOCAL of the cubin's one kernel, from ``cuobjdump -res-usage``."""
    found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", cuobjdump_out)
    if found is None:
        raise RuntimeError(f"cannot read cuobjdump's output:\n{cuobjdump_out}")
    return dict(zip(("reg", "stack", "shared", "local"), map(int, found.groups()), strict=True))


def spills(ptxas_log: str) -> tuple[int, int, int]:
    """``(registers, spill store bytes, spill load bytes)`` from a ``ptxas -v`` log."""
    found = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", ptxas_log)
    regs = re.search(r"Used (\d+) registers", ptxas_log)
    if found is None or regs is None:
        raise RuntimeError(f"cannot read ptxas's log:\n{ptxas_log}")
    return int(regs.group(1)), int(found.group(1)), int(found.group(2))


_LOCATION = re.compile(r'//## File "([^"]+)", line (\d+)')
_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_BRANCH = re.compile(r"^(?:@!?U?P\w+\s+)?BRA\b[^`]*`\((\.L_x_\d+)\)")


def sass_profile(nvdisasm_out: str) -> dict:
    """The kernel's main-flow SASS as loops (see the module docstring, steps 1-2):
    ``{"total", "outside", "loops": [{"start", "end", "chain", "own"}]}``; a chain is the
    ``[file, line]`` list of the loop's backward branch, innermost first (inlined call sites
    after)."""
    instructions = []  # (address, text, chain)
    labels, chain, pending, pending_labels = {}, (), [], []
    for line in nvdisasm_out.splitlines():
        if (found := _LOCATION.search(line)) is not None:
            pending.append((os.path.realpath(found.group(1)), int(found.group(2))))
        elif (found := _LABEL.match(line)) is not None:
            pending_labels.append(found.group(1))
        elif (found := _INSTRUCTION.match(line)) is not None:
            address = int(found.group(1), 16)
            if pending:
                chain, pending = tuple(pending), []
            for label in pending_labels:
                labels[label] = address
            pending_labels = []
            instructions.append((address, found.group(2), chain))
    last_exit = max((i for i, (_, text, _) in enumerate(instructions) if text == "EXIT"),
                    default=len(instructions) - 1)
    main = [ins for ins in instructions[:last_exit + 1]
            if not ins[1].split()[0].startswith("NOP")]
    loops: dict[int, dict] = {}  # by loop label address
    for address, text, chain in main:
        found = _BRANCH.match(text)
        if found is None or labels.get(found.group(1), address + 1) > address:
            continue
        start = labels[found.group(1)]
        loop = loops.setdefault(start, {"start": start, "end": address, "chain": chain})
        if address >= loop["end"]:
            loop.update(end=address, chain=chain)
    ordered = sorted(loops.values(), key=lambda lp: (lp["start"], -lp["end"]))
    for loop in ordered:
        loop["own"] = 0
        loop["chain"] = [list(c) for c in loop["chain"]]
    outside = 0
    for address, _, _ in main:
        inner = [lp for lp in ordered if lp["start"] <= address <= lp["end"]]
        if inner:
            min(inner, key=lambda lp: lp["end"] - lp["start"])["own"] += 1
        else:
            outside += 1
    return {"total": len(main), "outside": outside, "loops": ordered}


@contextlib.contextmanager
def _ptx_only(backend_cls):
    """Triton's pipeline without its last stage (PTX to cubin): the batch's one ptxas run
    makes the machine code instead (:func:`measure_batch`)."""
    add_stages = backend_cls.add_stages

    def ptx_only(self, stages, options, *args, **kwargs):
        add_stages(self, stages, options, *args, **kwargs)
        if "cubin" in stages:
            stages["cubin"] = lambda src, metadata: b""
    with mock.patch.object(backend_cls, "add_stages", ptx_only):
        yield


def compile_variant(job: dict) -> dict:
    """Compile one variant with Triton's pipeline (runs in a worker). Batched: up to PTX only,
    for :func:`measure_batch`; one by one: to a cubin with Triton's own ptxas run, measured
    here (registers, spills, stack, SASS)."""
    _quiet_triton()
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    kernel = getattr(importlib.import_module(job["module"]), job["name"])
    target = GPUTarget("cuda", job["arch"], 32)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if job["batched"]:
            stack.enter_context(_ptx_only(type(make_backend(target))))
        ptxas_log = stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        compiled = triton.compile(
            ASTSource(kernel, job["signature"], job["constexprs"], job["attrs"]),
            target=target, options=job["options"])
    result = {"smem": compiled.metadata.shared, "compile_s": time.perf_counter() - start}
    if job["batched"]:
        return dict(result, ptx=compiled.asm["ptx"])
    with tempfile.TemporaryDirectory(prefix="sm90_cubin_") as tmp:
        cubin = Path(tmp, "kernel.cubin")
        cubin.write_bytes(compiled.asm["cubin"])
        usage = res_usage(subprocess.run([job["tools"]["cuobjdump"], "-res-usage", str(cubin)],
                                         capture_output=True, text=True, check=True).stdout)
        sass = sass_profile(subprocess.run([job["tools"]["nvdisasm"], "-gi", str(cubin)],
                                           capture_output=True, text=True, check=True).stdout)
    regs, stores, loads = spills(ptxas_log.getvalue())
    if regs != usage["reg"]:
        raise RuntimeError(f"ptxas says {regs} registers, cuobjdump {usage['reg']}")
    return dict(result, regs=regs, stack=usage["stack"], spill_stores=stores,
                spill_loads=loads, sass=sass)


_ENTRY = re.compile(r"^\.visible\s+\.entry\s+(\w+)\(", re.M)
_FILE = re.compile(r'^\s*\.file\s+(\d+)\s+"([^"]+)"[^\n]*$', re.M)
_DEBUG_STR = re.compile(r"^\s*\.section\s+\.debug_str\s*\{(.*?)^\s*\}", re.M | re.S)


def merge_ptx(modules: list[str], names: list[str]) -> str:
    """One PTX module holding every kernel of ``modules`` (one Triton module each, same
    header), the i-th entry renamed ``names[i]``, so that one ptxas run and one disassembly
    serve them all (the disassembler's start-up, ~0.6 s, is most of a small kernel's cost).
    Keeps the line information (``.loc``, with inlining) and renumbers its files; drops the
    DWARF sections except the strings ``.loc`` refers to."""
    files: dict[str, int] = {}
    head: dict[str, None] = {}  # header and module-level declarations, each line once
    bodies, strings = [], []
    for k, (ptx, name) in enumerate(zip(modules, names, strict=True)):
        entry = _ENTRY.search(ptx)
        remap = {found.group(1): str(files.setdefault(found.group(2), len(files) + 1))
                 for found in _FILE.finditer(ptx)}
        head.update(dict.fromkeys(line for line in ptx[:entry.start()].splitlines()
                                  if not _FILE.match(line)))
        tail = re.search(r"^\s*\.(file|section)\s", ptx[entry.start():], re.M)
        body = ptx[entry.start():entry.start() + tail.start() if tail else len(ptx)]
        body = re.sub(rf"\b{re.escape(entry.group(1))}(?=\b|_param_)", name, body)

        def loc(found, remap=remap):
            text = re.sub(r"^(\s*\.loc\s+)(\d+)", lambda m: m.group(1) + remap[m.group(2)],
                          found.group(0))
            return re.sub(r"(inlined_at\s+)(\d+)", lambda m: m.group(1) + remap[m.group(2)],
                          text)

        def label(text, k=k):  # the strings' labels, made unique per module
            return re.sub(r"\$L__info_string(\d+)", rf"$L__info_string\1_{k}", text)

        bodies.append(label(re.sub(r"^\s*\.loc\s.*$", loc, body, flags=re.M)))
        strings += [label(m.group(1)) for m in _DEBUG_STR.finditer(ptx, entry.start())]
    file_lines = "".join(f'\t.file\t{i} "{path}"\n' for path, i in files.items())
    return ("\n".join(head) + "\n" + "\n".join(bodies) + file_lines
            + "\t.section\t.debug_str\n\t{\n" + "\n".join(strings) + "\n\t}\n")


_SECTION = re.compile(r"^\s*\.section\s+\.text\.(\w+),", re.M)


def _ptxas_functions(log: str) -> dict[str, tuple[int, int, int, int]]:
    """``{function: (registers, stack bytes, spill store bytes, spill load bytes)}`` from a
    ``ptxas -v`` log of several functions."""
    found = re.findall(r"Function properties for (\w+)\s*\n\s*(\d+) bytes stack frame, "
                       r"(\d+) bytes spill stores, (\d+) bytes spill loads\s*\n[^\n]*?"
                       r"Used (\d+) registers", log)
    return {name: (int(regs), int(stack), int(st), int(ld))
            for name, stack, st, ld, regs in found}


def measure_batch(batch: dict) -> dict:
    """Registers, spills and SASS profiles of a batch of variants from their PTX: merged into
    one module (:func:`merge_ptx`), made a cubin by Triton's own ``make_cubin`` (its ptxas,
    its flags, one run) and disassembled once (``nvdisasm -gi``); ptxas allocates registers
    per entry function, so each kernel's code is what its own compile gives (checked:
    ``--one-by-one`` gives the same figures). Should the merged module fail, each variant is
    compiled and disassembled on its own (``why`` says what failed)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    backend = make_backend(GPUTarget("cuda", batch["arch"], 32))
    options = backend.parse_options(batch["options"])
    tools = batch["tools"]

    def machine_code(ptx: str, names: list[str]) -> list[dict]:
        with contextlib.redirect_stdout(io.StringIO()) as log:
            cubin = backend.make_cubin(ptx, {}, options, batch["arch"])
        functions = _ptxas_functions(log.getvalue())
        with tempfile.TemporaryDirectory(prefix="sm90_batch_") as tmp:
            path = Path(tmp, "batch.cubin")
            path.write_bytes(cubin)
            usage = subprocess.run([tools["cuobjdump"], "-res-usage", str(path)],
                                   capture_output=True, text=True, check=True).stdout
            sass = subprocess.run([tools["nvdisasm"], "-gi", str(path)],
                                  capture_output=True, text=True, check=True).stdout
        regs = {n: int(r) for n, r in re.findall(r"Function (\w+):\s*\n\s*REG:(\d+)", usage)}
        sections = {m.group(1): m.start() for m in _SECTION.finditer(sass)}
        bounds = sorted(sections.values()) + [len(sass)]
        out = []
        for name in names:
            start = sections[name]
            text = sass[start:bounds[bounds.index(start) + 1]]
            r, stack, stores, loads = functions[name]
            if regs[name] != r:
                raise RuntimeError(f"ptxas says {r} registers, cuobjdump {regs[name]}")
            out.append({"regs": r, "stack": stack, "spill_stores": stores,
                        "spill_loads": loads, "sass": sass_profile(text)})
        return out

    names = [f"sm90check_v{i}" for i in range(len(batch["ptx"]))]
    try:
        return {"measured": machine_code(merge_ptx(batch["ptx"], names), names)}
    except Exception as error:  # noqa: BLE001 (any failure: the slow, exact path)
        measured = []
        for ptx in batch["ptx"]:
            name = _ENTRY.search(ptx).group(1)
            measured += machine_code(ptx, [name])
        return {"measured": measured, "why": repr(error)[:300]}


def make_batches(jobs: list[dict], count: int) -> list[list[int]]:
    """Job indices in about ``count`` batches, round-robin (a mix of kernels each, so the
    processes finish together), never mixing ptxas flags (fp fusion, extra options)."""
    groups: dict[tuple, list[int]] = collections.defaultdict(list)
    for i, job in enumerate(jobs):
        groups[(job["options"].get("enable_fp_fusion"),
                job["options"].get("ptx_options"))].append(i)
    batches = []
    for indices in groups.values():
        n = max(1, min(count, len(indices)))
        batches += [indices[k::n] for k in range(n)]
    return batches


def compile_batch(jobs: list[dict]) -> tuple[list[dict], str | None]:
    """Compile a batch of variants (:func:`compile_variant`) and, unless each was measured on
    its own (``batched`` False), measure them together (:func:`measure_batch`). Returns the
    results and, when the merged module had to fall back, why."""
    _quiet_triton()
    results = [compile_variant(job) for job in jobs]
    why = None
    if jobs and jobs[0]["batched"]:
        start = time.perf_counter()
        out = measure_batch({"ptx": [r.pop("ptx") for r in results],
                             "options": jobs[0]["options"], "arch": jobs[0]["arch"],
                             "tools": jobs[0]["tools"]})
        share = (time.perf_counter() - start) / len(results)
        for result, measured in zip(results, out["measured"], strict=True):
            result.update(measured, compile_s=result["compile_s"] + share)
        why = out.get("why")
    return results, why


# ----------------------------------------------------------------------------------------------
# 3. loop trip counts: the same launches under Triton's interpreter (a child process)


class _FirstProgramDone(Exception):
    pass


def patch_interpreter_index() -> bool:
    """Triton < 3.7 with NumPy >= 2.4: the interpreter's ``tensor.__index__`` is
    ``int(self.handle.data)`` of a 1-element array, an error in NumPy 2.4 (triton-lang/triton
    issue 9171): apply upstream PR 9172's ``int(self.handle.data.squeeze())``. The same shim
    as tests/kernels/conftest.py. Returns whether it patched."""
    import triton
    from triton.runtime import interpreter

    version = tuple(int(v) for v in re.findall(r"\d+", triton.__version__)[:2])
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if version >= (3, 7) or original is None or getattr(original, "_squeezed_index", False):
        return False

    def index(self):
        return int(self.handle.data.squeeze())

    def patched(tensor, *args, **kwargs):
        original(tensor, *args, **kwargs)
        scope = args[0] if args else kwargs.get("scope")
        if hasattr(scope, "set_attr"):
            scope.set_attr(tensor, "__index__", index)
        else:
            tensor.__index__ = index

    patched._squeezed_index = True
    interpreter._patch_lang_tensor = patched
    return True


def _loop_table(files) -> dict[tuple[str, int], tuple[int, int]]:
    """``{(file, line): (the loop's line, the last line of its body)}`` for every line of the
    body of every for/while loop (its innermost loop)."""
    table = {}
    for file in files:
        loops = sorted(((node.lineno, node.body[0].lineno, node.end_lineno)
                        for node in ast.walk(ast.parse(Path(file).read_text(), file))
                        if isinstance(node, (ast.For, ast.While)) and node.body),
                       key=lambda t: t[0])
        for head, first, last in loops:  # outer loops first: inner ones overwrite
            for line in range(first, last + 1):
                table[(file, line)] = (head, first, last)
    return table


def count_trips(shapes: list[tuple[int, int]], wanted: set[str] | None = None) -> dict:
    """For every trip key (of ``wanted`` only, when given: the selected variants'):
    ``{chain: iterations}`` of program 0 of its first launch, keyed by the loop's source line
    and inlined call sites (innermost first, as in the SASS); plus ``loops``: every loop's line
    range, per kernel file. Needs ``TRITON_INTERPRET=1``."""
    patch_interpreter_index()
    from triton.runtime import interpreter

    kernel_dir = os.path.realpath(os.path.dirname(
        importlib.import_module("marginloss.kernels").__file__))
    files = sorted(str(p) for p in Path(kernel_dir).glob("*.py"))
    body_lines = _loop_table(files)
    builder = interpreter.interpreter_builder
    set_grid_idx = builder.set_grid_idx

    def first_program_only(x, y, z):
        if (x, y, z) != (0, 0, 0):
            raise _FirstProgramDone
        set_grid_idx(x, y, z)

    @functools.cache
    def kernel_file(filename: str) -> str | None:
        path = os.path.realpath(filename)
        return path if path.startswith(kernel_dir + os.sep) else None

    trips: dict[str, dict] = {}
    for work, run in workloads(shapes):
        def handler(kernel, args, kwargs, grid, work=work):
            key = trip_key(work, Launch(kernel, args, kwargs, grid))
            if key in trips or (wanted is not None and key not in wanted):
                return
            counts = collections.Counter()
            name = kernel.fn.__name__

            last_line = {}  # frame -> its previous line event

            def local(frame, event, arg):
                if event == "line":
                    path = kernel_file(frame.f_code.co_filename)
                    loop = body_lines.get((path, frame.f_lineno))
                    before = last_line.get(frame)
                    last_line[frame] = frame.f_lineno
                    # an iteration: the body entered from outside it (a statement spanning
                    # several lines, or a call that returns, gives more events in the body)
                    if loop is not None and not (before is not None
                                                 and loop[1] <= before <= loop[2]):
                        loop_line = loop[0]
                        chain = [(path, loop_line)]
                        f = frame
                        while f.f_code.co_name != name and f.f_back is not None:
                            f = f.f_back
                            if (caller := kernel_file(f.f_code.co_filename)) is not None:
                                chain.append((caller, f.f_lineno))
                        counts[json.dumps(chain)] += 1
                return local

            def tracer(frame, event, arg):
                if kernel_file(frame.f_code.co_filename) is not None and \
                        frame.f_code.co_name != "launch":
                    return local
                return None

            builder.set_grid_idx = first_program_only
            sys.settrace(tracer)
            try:
                run_original(kernel, args, kwargs, grid)
            except Exception as error:  # the interpreter wraps it
                if not any(isinstance(e, _FirstProgramDone) for e in _causes(error)):
                    raise
            finally:
                sys.settrace(None)
                builder.set_grid_idx = set_grid_idx
            trips[key] = dict(counts)

        with launches_go_to(handler):
            run()
    loops = {}
    for file in files:
        tree = ast.parse(Path(file).read_text(), file)
        loops[file] = sorted([n.lineno, n.end_lineno] for n in ast.walk(tree)
                             if isinstance(n, (ast.For, ast.While)))
    return {"trips": trips, "loops": loops}


def _causes(error):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


_ORIGINAL_RUNS = {}


def run_original(kernel, args, kwargs, grid):
    """The kernel's real ``run`` (the recorder has replaced it on the class)."""
    cls = type(kernel)
    run = _ORIGINAL_RUNS[cls]
    return run(kernel, *args, grid=grid, warmup=False, **kwargs)


def _trips_main(shapes, keys_file: str | None) -> None:
    """``--trip-counts [FILE]``: print :func:`count_trips` (of the trip keys listed in FILE,
    one JSON list) as JSON."""
    for cls in _kernel_classes():
        _ORIGINAL_RUNS[cls] = cls.run
    wanted = set(json.loads(Path(keys_file).read_text())) if keys_file else None
    json.dump(count_trips(shapes, wanted), sys.stdout)


def start_trip_counts(shapes: list[str], losses=None, every_layout=False,
                      keys_file: str | None = None) -> subprocess.Popen:
    """The trip counts (of the trip keys in ``keys_file`` only, when given), in a child
    process under the interpreter (read it with ``communicate``)."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("TRITON_DUMP_PTXAS_LOG", None)
    extra = (["--losses", *losses] if losses else []) + \
        (["--every-layout"] if every_layout else []) + \
        (["--trip-keys", keys_file] if keys_file else [])
    return subprocess.Popen([sys.executable, __file__, "--trip-counts", "--shapes", *shapes,
                             *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def dynamic_instructions(sass: dict, trips: dict, loops: dict) -> tuple[float, list[str]]:
    """Weighted instruction count of one program (step 3), and the loops it could not map."""
    total, unmapped = float(sass["outside"]), []
    for loop in sass["loops"]:
        key = json.dumps(loop["chain"])
        if key in trips:
            total += loop["own"] * trips[key]
            continue
        (file, line), callers = loop["chain"][0], loop["chain"][1:]
        # a line inside a source loop: the innermost such loop on the same call chain
        inside = [lo for lo, hi in loops.get(file, ()) if lo <= line <= hi]
        if inside:
            chain = json.dumps([[file, max(inside)], *callers])
            total += loop["own"] * trips.get(chain, 0)  # never entered: 0
        else:
            total += loop["own"]
            unmapped.append(f"{Path(file).name}:{line}")
    return total, unmapped


# ----------------------------------------------------------------------------------------------
# 4. which variants: a 3-way covering (CI) or all of them


#: Kernels that must issue their instructions faster than they move memory, by kernel (a
#: kernel module may list more in a ``MEMORY_BOUND`` tuple of kernel names, or ``True`` for
#: all of its kernels). The logistic kernels: a few flops per element. Asserted for the
#: training-step variants (with a gradient) at the roofline shape only.
MEMORY_BOUND_KERNELS = frozenset({"logistic_flat_kernel",
                                  "_multilabel_soft_margin_loss_rows_kernel"})


def memory_bound_declared(kernel) -> bool:
    name = kernel.fn.__name__
    declared = getattr(sys.modules[kernel.fn.__module__], "MEMORY_BOUND", ())
    if isinstance(declared, bool):
        return declared or name in MEMORY_BOUND_KERNELS
    return name in MEMORY_BOUND_KERNELS or name in declared


def variant_features(signature: dict, constexprs: dict, attrs: dict, num_warps: int,
                     shape: tuple[int, int]) -> dict[tuple, object]:
    """What tells a variant's compile key apart: every parameter's type (pointer dtypes, int
    widths), every constexpr's value (meta-parameters and the ints the JIT specialised to 1),
    every parameter's attributes (16-byte divisibility), warps, and the shape it came from:
    ``{feature: value}`` (a feature a variant lacks, e.g. an int not specialised to a
    constant, has the value None)."""
    names = list(signature)
    out: dict[tuple, object] = {("warps",): num_warps, ("shape",): shape}
    out.update({("type", name): kind for name, kind in signature.items()})
    out.update({("value", names[path[0]]): repr(v) for path, v in constexprs.items()})
    out.update({("attrs", name): repr(attrs.get((i,))) for i, name in enumerate(names)})
    return out


def select_cover(kernels: list[str], features: list[dict], forced: set[int],
                 strength: int = 3) -> list[int]:
    """Indices of a small set of variants that, for each kernel, covers every combination of
    ``strength`` feature values that any of its variants has (every single value, every pair,
    every triple), plus the ``forced`` ones: greedy (the variant covering the most uncovered
    combinations next, lazily re-scored), in the variants' order. Features constant over a
    kernel's variants are left out (they are in every variant)."""
    import heapq

    chosen = set(forced)
    by_kernel: dict[str, list[int]] = collections.defaultdict(list)
    for i, k in enumerate(kernels):
        by_kernel[k].append(i)
    for members in by_kernel.values():
        names = list(dict.fromkeys(f for i in members for f in features[i]))
        varying = [f for f in names if len({features[i].get(f) for i in members}) > 1]
        size = min(strength, len(varying))
        combos = {i: {tuple((f, features[i].get(f)) for f in c)
                      for c in itertools.combinations(varying, size)} for i in members}
        uncovered = set().union(*combos.values())
        for i in members:
            if i in chosen:
                uncovered -= combos[i]
        heap = [(-len(combos[i]), i) for i in members if i not in chosen]
        heapq.heapify(heap)
        while uncovered and heap:
            _, i = heapq.heappop(heap)
            gain = len(combos[i] & uncovered)
            if heap and gain < -heap[0][0]:
                heapq.heappush(heap, (-gain, i))  # stale score: re-queue
                continue
            if gain:
                chosen.add(i)
                uncovered -= combos[i]
        if not any(i in chosen for i in members):
            chosen.add(members[0])
    return sorted(chosen)


def reference_variants(infos: list[dict], roofline_shape: tuple[int, int]) -> set[int]:
    """Always compiled: per kernel, its first float32 and first bfloat16 variant at the
    roofline shape (the table's reference figures) and every training-step variant of a
    memory-bound kernel there (what the test asserts)."""
    forced, seen = set(), set()
    for i, info in enumerate(infos):
        if info["shape"] != roofline_shape:
            continue
        first = (info["kernel"], info["dtype"])
        if info["dtype"] in ("float32", "bfloat16") and first not in seen:
            seen.add(first)
            forced.add(i)
        if info["memory_bound_declared"] and info["grad"]:
            forced.add(i)
    return forced


# ----------------------------------------------------------------------------------------------
# 5. the report


def roofline(ipe: float, bytes_per_element: float) -> dict:
    memory_s = bytes_per_element / H200_BYTES_PER_S
    issue_s = ipe / (32 * H200_WARP_INSTRUCTIONS_PER_S)
    bound = max(memory_s, issue_s)
    return {"memory_ps": memory_s * 1e12, "issue_ps": issue_s * 1e12,
            "bound": "issue" if issue_s > memory_s else "memory",
            "bandwidth_pct": 100 * memory_s / bound if bound else 100.0}


_REFERENCE_KEYS = ("variant", "workload", "regs", "ipe", "bytes_per_element", "memory_ps",
                   "issue_ps", "bound", "bandwidth_pct")


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for name in dict.fromkeys(r["kernel"] for r in rows):
        mine = [r for r in rows if r["kernel"] == name]
        first = mine[0]  # the first variant of the first shape: float32, full work
        bf16 = next((r for r in mine if r["roofline_shape"] and r["dtype"] == "bfloat16"),
                    None)
        out.append({
            "kernel": name, "variants": len(mine),
            "regs_min": min(r["regs"] for r in mine), "regs_max": max(r["regs"] for r in mine),
            "spilling": sum(r["spill_stores"] > 0 for r in mine),
            "spill_max": max(r["spill_stores"] for r in mine),
            "smem_max": max(r["smem"] for r in mine),
            "ipe_min": min(r["ipe"] for r in mine), "ipe_max": max(r["ipe"] for r in mine),
            "issue_bound": sum(r["bound"] == "issue" for r in mine),
            "bandwidth_pct_min": min(r["bandwidth_pct"] for r in mine),
            "memory_bound_declared": first["memory_bound_declared"],
            "reference": {k: first[k] for k in _REFERENCE_KEYS},
            "reference_bf16": bf16 and {k: bf16[k] for k in _REFERENCE_KEYS},
        })
    return out


def failures(rows: list[dict]) -> dict[str, list[dict]]:
    return {
        "spill": [r for r in rows if r["spill_stores"] or r["spill_loads"]],
        "registers": [r for r in rows if r["regs"] > MAX_REGISTERS],
        # asserted: a memory-bound kernel's training-step variants at the roofline shape
        "declared_memory_bound_but_issue_bound": [
            r for r in rows if r["memory_bound_declared"] and r["bound"] == "issue"
            and r["grad"] and r["roofline_shape"]],
        # reported only (forward-only or other shapes: e.g. half-precision reduced calls move
        # 2 bytes per element and may issue longer than that)
        "memory_bound_kernel_issue_bound_elsewhere": [
            r for r in rows if r["memory_bound_declared"] and r["bound"] == "issue"
            and not (r["grad"] and r["roofline_shape"])],
        "unmapped_loops": [r for r in rows if r["unmapped_loops"]],
    }


def print_rows(rows: list[dict], file=sys.stdout) -> None:
    width = max(len(r["variant"]) for r in rows)
    kw = max(len(r["kernel"]) for r in rows)
    print(f"{'kernel':<{kw}} {'variant':<{width}} {'regs':>4} {'stack':>5} {'spill st/ld':>11} "
          f"{'smem':>5} {'ipe':>6} {'B/el':>5} {'mem ps':>6} {'iss ps':>6} {'bound':>6} "
          f"{'% bw':>5}", file=file)
    for r in rows:
        spill = f"{r['spill_stores']}/{r['spill_loads']}"
        print(f"{r['kernel']:<{kw}} {r['variant']:<{width}} {r['regs']:>4} {r['stack']:>5} "
              f"{spill:>11} {r['smem']:>5} {r['ipe']:>6.1f} {r['bytes_per_element']:>5.2f} "
              f"{r['memory_ps']:>6.2f} {r['issue_ps']:>6.2f} {r['bound']:>6} "
              f"{r['bandwidth_pct']:>4.0f}%", file=file)


def print_summary(summary: list[dict], file=sys.stdout) -> None:
    for s in summary:
        ref = s["reference"]
        declared = ", declared memory-bound" if s["memory_bound_declared"] else ""
        print(f"{s['kernel']}: {s['variants']} variants, registers {s['regs_min']}-"
              f"{s['regs_max']}, spilling {s['spilling']} (at most {s['spill_max']} B stored), "
              f"shared memory up to {s['smem_max']} B; ipe {s['ipe_min']:.1f}-"
              f"{s['ipe_max']:.1f}, issue-bound {s['issue_bound']}, at least "
              f"{s['bandwidth_pct_min']:.0f}% of bandwidth{declared}", file=file)
        print(f"    {ref['workload']} [{ref['variant']}]: ipe {ref['ipe']:.1f}, "
              f"{ref['bytes_per_element']:.2f} B/element, memory {ref['memory_ps']:.2f} ps, "
              f"issue {ref['issue_ps']:.2f} ps per element: {ref['bound']}-bound, "
              f"{ref['bandwidth_pct']:.0f}% of 4.8 TB/s at best", file=file)


def print_markdown(summary: list[dict], file=sys.stdout) -> None:
    """The per-kernel table of ``benchmarks/RESULTS.md``: resources over every compiled
    variant, then the float32 and bfloat16 reference variants at the roofline shape."""
    print("| kernel | variants | registers | spilling | ipe (all) | reference at roofline shape "
          "| ipe | B/el | bound | implied H200 % of 4.8 TB/s |", file=file)
    print("|---|---:|---:|---:|---:|---|---:|---:|---|---:|", file=file)
    for s in summary:
        name = s["kernel"] + (" (memory-bound)" if s["memory_bound_declared"] else "")
        for k, ref in enumerate(r for r in (s["reference"], s["reference_bf16"]) if r):
            head = (f"| `{name}` | {s['variants']} | {s['regs_min']}-{s['regs_max']} | "
                    f"{s['spilling']} | {s['ipe_min']:.1f}-{s['ipe_max']:.1f} |" if k == 0
                    else "| | | | | |")
            what = ref["workload"].split(" ", 2)[-1]
            print(f"{head} {what} | {ref['ipe']:.1f} | {ref['bytes_per_element']:.2f} | "
                  f"{ref['bound']} | {ref['bandwidth_pct']:.0f}% |", file=file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ci", action="store_true",
                        help="the default shapes; a summary and the offending variants only")
    parser.add_argument("--arch", type=int, default=90, help="compute capability (default 90)")
    parser.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES),
                        help="row shapes NxC to launch (default: %(default)s; the first one "
                             "is the roofline case)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="compile processes (default: os.cpu_count())")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON")
    parser.add_argument("--one-by-one", action="store_true",
                        help="disassemble each variant's own cubin (slower; the default merges "
                             "each batch's PTX into one module, checked register for register)")
    parser.add_argument("--losses", nargs="+", metavar="NAME",
                        help="only these losses' kernels (default: every loss with a Triton "
                             "kernel)")
    parser.add_argument("--every-layout", action="store_true",
                        help="every target dtype and layout and every weight layout a user "
                             "can pass (about 3.5x the variants)")
    parser.add_argument("--cover", default="3", choices=("1", "2", "3", "all"),
                        help="compile a greedy N-way covering of the variants' compile-key "
                             "features (plus the reference variants), or all of them "
                             "(default: %(default)s)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the per-kernel table for benchmarks/RESULTS.md")
    parser.add_argument("--trip-counts", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trip-keys", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global LOSSES, EVERY_LAYOUT
    if args.losses:
        LOSSES = tuple(s for s in LOSSES if s.name in args.losses)
    EVERY_LAYOUT = args.every_layout
    if args.ci:
        args.shapes = list(DEFAULT_SHAPES)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
    if args.trip_counts:
        _trips_main(shapes, args.trip_keys)
        return 0
    tools = triton_tools()
    missing = [path for path in tools.values() if not os.access(path, os.X_OK)]
    if missing:
        print(f"missing: {', '.join(missing)}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    _set_up_triton()
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    backend = make_backend(GPUTarget("cuda", args.arch, 32))
    variants: dict[tuple, dict] = {}
    for work in record(shapes, backend):
        for launch in work.launches:
            options, signature, constexprs, attrs = launch.specialised
            key = (launch.kernel.fn.__name__, tuple(signature.items()),
                   tuple(constexprs.items()), repr(sorted(attrs.items())), options.num_warps)
            if key in variants:
                continue
            variants[key] = {
                "job": {"module": launch.kernel.fn.__module__, "name": launch.kernel.fn.__name__,
                        "signature": signature, "constexprs": constexprs, "attrs": attrs,
                        "options": dict(options.__dict__), "arch": args.arch, "tools": tools},
                "kernel": launch.kernel.fn.__name__,
                "variant": describe(signature, constexprs, attrs, options.num_warps),
                "workload": work.label,
                "threads": 32 * options.num_warps,
                "elements_per_program": work.elements / max(1, math.prod(launch.grid or (1,))),
                "bytes_per_element": work.bytes / max(1, work.elements),
                "trip_key": launch.trip,
                "memory_bound_declared": memory_bound_declared(launch.kernel),
                "shape": work.shape, "grad": work.grad, "dtype": work.dtype,
                "features": variant_features(signature, constexprs, attrs, options.num_warps,
                                             work.shape),
            }
    recorded_s = time.perf_counter() - start
    every = len(variants)
    keys_file = None
    if args.cover != "all":
        infos = list(variants.values())
        keep = select_cover([v["kernel"] for v in infos], [v["features"] for v in infos],
                            reference_variants(infos, shapes[0]), int(args.cover))
        variants = {k: variants[k] for k in (list(variants)[i] for i in keep)}
        keys_file = os.path.join(os.environ["TRITON_CACHE_DIR"], "trip_keys.json")
        Path(keys_file).write_text(json.dumps(sorted({v["trip_key"]
                                                     for v in variants.values()})))
    # the loop trip counts under the interpreter, in a child process, while we compile
    trip_proc = start_trip_counts(args.shapes, args.losses, args.every_layout, keys_file)
    print(f"compiling {len(variants)} of {every} variants (cover {args.cover}) for "
          f"sm_{args.arch} (triton {triton.__version__}, {args.jobs} processes)",
          file=sys.stderr)
    jobs = [dict(v["job"], batched=not args.one_by_one) for v in variants.values()]
    batches = make_batches(jobs, 1 if args.jobs == 1 else 4 * args.jobs)
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"),
                                 initializer=_quiet_triton) as pool:
            done = list(pool.map(compile_batch, [[jobs[i] for i in b] for b in batches]))
    else:
        done = [compile_batch([jobs[i] for i in b]) for b in batches]
    results: list[dict] = [{}] * len(jobs)
    unmerged = []
    for batch, (outcome, why) in zip(batches, done, strict=True):
        for i, result in zip(batch, outcome, strict=True):
            results[i] = result
        if why:
            unmerged.append(why)
    compiled_s = time.perf_counter() - start - recorded_s
    out, err = trip_proc.communicate()
    if trip_proc.returncode:
        raise RuntimeError(f"trip counts under the interpreter failed:\n{err[-4000:]}")
    counted = json.loads(out)
    shutil.rmtree(os.environ["TRITON_CACHE_DIR"], ignore_errors=True)

    rows = []
    for info, result in zip(variants.values(), results, strict=True):
        trips = counted["trips"].get(info["trip_key"], {})
        instructions, unmapped = dynamic_instructions(result["sass"], trips, counted["loops"])
        ipe = instructions / (info["elements_per_program"] / info["threads"])
        rows.append({
            "kernel": info["kernel"], "variant": info["variant"], "workload": info["workload"],
            "regs": result["regs"], "stack": result["stack"],
            "spill_stores": result["spill_stores"], "spill_loads": result["spill_loads"],
            "smem": result["smem"], "sass_instructions": result["sass"]["total"],
            "loops": len(result["sass"]["loops"]), "instructions_per_program": instructions,
            "elements_per_thread": info["elements_per_program"] / info["threads"],
            "ipe": ipe, "bytes_per_element": info["bytes_per_element"],
            **roofline(ipe, info["bytes_per_element"]),
            "memory_bound_declared": info["memory_bound_declared"],
            "roofline_shape": info["shape"] == shapes[0], "grad": info["grad"],
            "dtype": info["dtype"],
            "unmapped_loops": unmapped, "compile_s": result["compile_s"],
        })
    elapsed = time.perf_counter() - start
    summary = failing = None
    summary, failing = summarise(rows), failures(rows)

    if not args.ci:
        print_rows(rows)
        print()
    print_summary(summary)
    if args.markdown:
        print()
        print_markdown(summary)
    for what, offenders in failing.items():
        if offenders and (args.ci or what == "unmapped_loops"):
            print(f"\n{what.replace('_', ' ')}: {len(offenders)} variants")
            print_rows(offenders)
    stage = sum(r["compile_s"] for r in rows)
    for why in unmerged:
        print(f"a batch was disassembled one variant at a time: {why}", file=sys.stderr)
    print(f"\n{len(rows)} variants compiled in {elapsed:.0f} s wall ({args.jobs} processes; "
          f"recording {recorded_s:.1f} s, compiling + SASS {compiled_s:.0f} s, of which "
          f"triton.compile {stage:.0f} s summed over processes; {len(batches)} disassembly "
          f"batches, {len(unmerged)} unmerged); max "
          f"{max(r['regs'] for r in rows)} registers; {len(failing['spill'])} spill; "
          f"{len(failing['registers'])} above {MAX_REGISTERS} registers; "
          f"{len(failing['declared_memory_bound_but_issue_bound'])} declared memory-bound but "
          f"issue-bound")
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.json:
        args.json.write_text(json.dumps({
            "triton": triton.__version__, "arch": args.arch, "shapes": args.shapes,
            "elapsed_s": elapsed, "jobs": args.jobs, "max_registers": MAX_REGISTERS,
            "unmerged_batches": unmerged,
            "h200": {"bytes_per_s": H200_BYTES_PER_S,
                     "warp_instructions_per_s": H200_WARP_INSTRUCTIONS_PER_S},
            "cover": args.cover, "variants_total": every, "rows": rows, "summary": summary,
            "failures": {k: [(r["kernel"], r["variant"]) for r in v]
                         for k, v in failing.items()},
        }, indent=1))
    return 1 if failing["spill"] or failing["registers"] or \
        failing["declared_memory_bound_but_issue_bound"] else 0


if __name__ == "__main__":
    sys.exit(main())
