"""Compile every Triton kernel variant for sm_90 (H100 / H200) and report its resource usage.

Usage::

    python benchmarks/sm90_compile_check.py [--arch 90] [--shapes NxC ...] [--csv FILE]

Needs triton (with its bundled ptxas and cuobjdump), but no GPU: Triton's own compiler builds the
cubins ahead of time for ``GPUTarget("cuda", ARCH, 32)``, and ``cuobjdump -res-usage`` reads
their registers, stack, local and shared memory.

**Which variants.** The script does not list kernels or flags itself: it runs every loss's real
launcher (``marginloss.kernels.<loss>.launch``) on small CPU tensors with the kernel launch
replaced by a recorder, over every combination a call can produce:

* input dtype float32 / bfloat16 / float16;
* reduction ``"none"`` or reduced; gradient or forward-only;
* no weight, a per-class weight and (where the loss takes one) a full weight;
* the target's dtypes (int32 / int64 indices; labels in the input's dtype or float32);
* every value of an integer option that the loss accepts (``p`` in {1, 2});
* row shapes (``--shapes``, ``N x C``): by default long rows (the chunk loop at the largest
  ``BLOCK_C``), short rows (many rows packed per program) and sizes that are not multiples of
  16 (no divisibility specialisation: scalar loads and stores).

Each recorded launch is specialised as Triton's JIT would specialise it (the JIT's own binder:
constexprs, 16-byte divisibility of pointers and integers, ints equal to 1), de-duplicated, and
compiled once, in a fresh cache (so ptxas runs every time). The table lists, per compiled
variant: kernel, variant (pointer dtypes, constexprs, warps), registers per thread and stack
frame bytes (``cuobjdump -res-usage``), spill stores / loads in bytes (the ``ptxas -v`` log of
that same compile), and shared memory (Triton's dynamic allocation). The exit status is 1 when
any variant spills.

The review in ``shared/reference/gpu_kernel_review.md`` did this by hand for Triton 3.6; this
script makes it repeatable.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import importlib.util
import io
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch

from marginloss.losses import LOSSES, Call

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _set_up_triton() -> None:
    """Triton as this check needs it. Must run before the kernel modules are imported (and it
    changes the process's environment, so it runs from :func:`main` only, never on import)."""
    os.environ.pop("TRITON_INTERPRET", None)  # compile the real @triton.jit kernels
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="sm90_check_")  # ptxas every time
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"  # ptxas -v's report (spills) is printed: captured
    # Triton 3.9 warns on every compile that its fp-fusion default will change in 3.10; the
    # check compiles what a launch compiles today (fusion on), so the notice is noise here.
    warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")


# ----------------------------------------------------------------------------------------------
# 1. the launches every call can produce


@dataclass(frozen=True)
class Launch:
    kernel: object  # the JITFunction
    args: tuple
    kwargs: dict


def record_launches(fn, *args) -> list[Launch]:
    """Run ``fn(*args)`` with ``torch.library.wrap_triton`` replaced by a recorder."""
    launches: list[Launch] = []

    class _Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches.append(Launch(self.kernel, args, kwargs))
            return launch

    with mock.patch.object(torch.library, "wrap_triton", _Recorder):
        fn(*args)
    return launches


def int_option_values(spec, option, inputs, target) -> list[int]:
    """The values in 1..3 (and the default) that ``spec.prepare`` accepts for an int option."""
    values = []
    for value in sorted({option.default, 1, 2, 3}):
        options = tuple(value if o is option else o.default for o in spec.options)
        try:
            spec.prepare(inputs, target, None, options)
        except ValueError:
            continue
        values.append(value)
    return values


def calls(spec, shapes):
    """Every distinct kind of call of ``spec``: ``(label, Call)``."""
    for (n, c), dtype in itertools.product(shapes, DTYPES):
        g = torch.Generator().manual_seed(0)
        (x,), target, kwargs = spec.sample(n, c, dtype=dtype, generator=g)
        if target.is_floating_point():  # labels: the input's dtype, or float32
            target_dtypes = dict.fromkeys((dtype, torch.float32))
        else:  # indices
            target_dtypes = (torch.int32, torch.int64)
        weights = [None]
        if spec.weighted:
            weights.append(torch.rand(c, dtype=dtype) + 0.5)
            if spec.full_weight:
                weights.append(torch.rand(n, c, dtype=dtype) + 0.5)
        option_values = [
            int_option_values(spec, o, (x,), target) if o.type == "int"
            else [kwargs.get(o.name, o.default)]
            for o in spec.options
        ]
        for target_dtype, weight, options, reduction, need_grad in itertools.product(
                target_dtypes, weights, itertools.product(*option_values), ("none", "sum"),
                (True, False)):
            inputs, t, w, opts, _ = spec.prepare((x,), target.to(target_dtype), weight,
                                                 tuple(options))
            yield Call(inputs, t, w, opts, reduction, (need_grad,))


# ----------------------------------------------------------------------------------------------
# 2. specialise as the JIT would, compile, measure


def specialise(launch: Launch, backend):
    """``(signature, constexprs, attrs, options)`` exactly as ``JITFunction.run`` builds them."""
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


def res_usage(cuobjdump: str, cubin: bytes) -> dict[str, int]:
    """REG, STACK, SHARED, LOCAL of the cubin's one kernel, from ``cuobjdump -res-usage``."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out)
    if found is None:
        raise RuntimeError(f"cannot read cuobjdump's output:\n{out}")
    return dict(zip(("reg", "stack", "shared", "local"), map(int, found.groups()), strict=True))



def spills(ptxas_log: str) -> tuple[int, int, int]:
    """``(registers, spill store bytes, spill load bytes)`` from a ``ptxas -v`` log."""
    found = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", ptxas_log)
    regs = re.search(r"Used (\d+) registers", ptxas_log)
    if found is None or regs is None:
        raise RuntimeError(f"cannot read ptxas's log:\n{ptxas_log}")
    return int(regs.group(1)), int(found.group(1)), int(found.group(2))


def default_cuobjdump() -> str:
    """The cuobjdump bundled in the triton wheel (found without importing triton)."""
    spec = importlib.util.find_spec("triton")
    root = Path(spec.origin).parent if spec and spec.origin else Path("triton")
    return str(root / "backends" / "nvidia" / "bin" / "cuobjdump")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability (default 90)")
    parser.add_argument("--shapes", nargs="+", default=["4x8192", "4096x20", "9x1001"],
                        help="row shapes NxC to launch (default: long rows, short rows, sizes "
                             "that are not multiples of 16)")
    parser.add_argument("--cuobjdump", default=default_cuobjdump())
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    args = parser.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]

    _set_up_triton()
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    target = GPUTarget("cuda", args.arch, 32)
    backend = make_backend(target)
    variants: dict[tuple, tuple] = {}
    for spec in LOSSES:
        if "triton" not in spec.backends:
            continue
        launch_fn = importlib.import_module(f"marginloss.kernels.{spec.name}").launch
        for call in calls(spec, shapes):
            for launch in record_launches(launch_fn, call):
                options, signature, constexprs, attrs = specialise(launch, backend)
                key = (launch.kernel.fn.__name__, tuple(signature.items()),
                       tuple(constexprs.items()), repr(sorted(attrs.items())),
                       options.num_warps)
                variants.setdefault(key, (launch.kernel, signature, constexprs, attrs, options))

    rows = []
    start = time.perf_counter()
    print(f"compiling {len(variants)} variants for sm_{args.arch} (triton {triton.__version__})",
          file=sys.stderr)
    for kernel, signature, constexprs, attrs, options in variants.values():
        with contextlib.redirect_stdout(io.StringIO()) as ptxas_log:
            compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs),
                                      target=target, options=options.__dict__)
        usage = res_usage(args.cuobjdump, compiled.asm["cubin"])
        regs, stores, loads = spills(ptxas_log.getvalue())
        assert regs == usage["reg"], (regs, usage)
        rows.append({
            "kernel": kernel.fn.__name__,
            "variant": describe(signature, constexprs, attrs, options.num_warps),
            "regs": usage["reg"],
            "stack": usage["stack"],
            "spill_stores": stores,
            "spill_loads": loads,
            "smem": compiled.metadata.shared,
        })
    elapsed = time.perf_counter() - start
    shutil.rmtree(os.environ["TRITON_CACHE_DIR"], ignore_errors=True)

    width = max(len(r["variant"]) for r in rows)
    print(f"{'kernel':<36} {'variant':<{width}} {'regs':>4} {'stack':>5} {'spill st/ld':>11} "
          f"{'smem':>5}")
    for r in rows:
        spill = f"{r['spill_stores']}/{r['spill_loads']}"
        print(f"{r['kernel']:<36} {r['variant']:<{width}} {r['regs']:>4} {r['stack']:>5} "
              f"{spill:>11} {r['smem']:>5}")
    print()
    for name in dict.fromkeys(r["kernel"] for r in rows):
        mine = [r for r in rows if r["kernel"] == name]
        print(f"{name}: {len(mine)} variants, registers {min(r['regs'] for r in mine)}-"
              f"{max(r['regs'] for r in mine)}, spilling {sum(r['spill_stores'] > 0 for r in mine)}"
              f" (at most {max(r['spill_stores'] for r in mine)} B stored), shared memory up to "
              f"{max(r['smem'] for r in mine)} B")
    spilling = [r for r in rows if r["spill_stores"]]
    print(f"{len(rows)} variants compiled in {elapsed:.0f} s; max {max(r['regs'] for r in rows)} "
          f"registers; {len(spilling)} spill")
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 1 if spilling else 0


if __name__ == "__main__":
    sys.exit(main())
