r"""Benchmark: marginloss vs torch.nn eager vs ``torch.compile``, forward + backward, one run.

The one harness for CPU and CUDA: ``marginloss bench``, ``python -m marginloss.benchmark`` and
``python benchmarks/bench.py`` all run :func:`main`. Every loss in
:data:`marginloss.losses.LOSSES` is benchmarked on the cases its spec declares
(``spec.benchmark_cases``); nothing here names a loss. Each case is timed as a full training
step of the loss::

    x.grad = None; loss = f(x, target, **options); loss.backward()

for three implementations, all in the same run:

* **ours**: ``marginloss.functional.<loss>`` with its defaults (``validate=True``,
  ``backend="auto"``);
* **eager**: ``torch.nn.functional.<loss>``;
* **compile**: ``torch.compile(torch.nn.functional.<loss>, dynamic=False)``, compiled afresh
  for every case (``torch._dynamo.reset()``); compile time is excluded.

**How it is timed.** The implementations take turns: in each of several rounds every
implementation (and the ``exp`` reference below) is timed once, in a rotating order, so that
a noisy shared machine slows them alike. A round is one ``blocked_autorange`` of
:class:`torch.utils.benchmark.Timer` on CPU (threads as torch's) and one
:func:`triton.testing.do_bench` on CUDA (CUDA events, L2 flushed before each run; the
``Timer``, which synchronizes, when Triton is missing). A step slower than a round gets one
call per round and only as many rounds as the budget allows (at least one).

**Columns** (markdown table; the CSV and JSON hold the same values under the names in
parentheses):

* **case** (``case``; also ``loss``, ``n``, ``c``, ``options``): the loss, N rows, C classes,
  and the sampler's options (``p=2``, ``positives=16``); **dtype**: the scores' dtype.
* **backend** (``backend``): the backend ``backend="auto"`` picked for ours (native, triton,
  torch).
* **ours / eager / compile ms** (``<impl>_ms``): median milliseconds per step over the rounds.
* **× eager**, **× compile** (``speedup_vs_<impl>``): how many times faster ours is than that
  baseline (> 1: ours is faster), the median of the per-round ratios, so that both sides of a
  ratio saw the same machine.
* **GB/s** (``ours_gbps``): the minimal traffic of a fused step divided by our time. The
  minimal bytes (``min_bytes``) read every input, the target and every tensor option (a class
  weight) once and write every input's gradient once; the loss itself is negligible.
* **% limit** (``limit_pct``, with ``limit_ms`` and ``limit_bound``): how close ours runs to
  what this machine allows, ``100 * limit / ours``, where
  ``limit = max(min_bytes / copy bandwidth, exp time)``. The **copy bandwidth**
  (``copy_gbps``, shown above the table) is ``dst.copy_(src)`` on large buffers (256 MiB
  each on CPU, 1 GiB on CUDA), counting the read and the write, measured in the same run; the
  **exp time** (``exp_ms``) is ``torch.exp(x, out=o)`` over as many elements as the scores, in
  their dtype, timed in the same rounds as the implementations: a logistic loss needs at
  least one exponential per element. In brackets (``limit_bound``) which of the two is larger,
  ``memory`` or ``exp``; it depends on the machine (a GPU is memory-bound). The project's
  target is >= 50 % for the two logistic losses at N=1024, C=4096, float32. Above 100 % is
  possible: the hinge losses need no exponential (for them the exp bound is only a
  yardstick), and a case whose data stays partly in cache between steps can beat the
  large-buffer copy.
* **peak MB ours / eager / compile** (``<impl>_peak_mb``): the most memory one step needs
  beyond what is live before it (inputs and targets excluded, the gradient it leaves included).
  CPU: the growth of the process's peak resident set, in a second pass after all the timing
  (see :func:`peak_extra_bytes`); CUDA: ``torch.cuda.max_memory_allocated``.
* **ok ours / compile** (``ours_ok``, ``compile_ok``): whether that implementation's loss and
  gradient match eager's (checked on the first step; tolerances in :func:`matches`). torch
  2.13's compiled ``multilabel_margin_loss`` ignores the ``-1`` padding: it shows **no**.
* Below the table, one line per implementation that could not run a case (an error, or out of
  memory); its cells read n/a.

The CSV (``--csv FILE``) has one row per case, these columns plus the environment (date,
machine, cpu, device, torch, triton, marginloss, python, threads); ``--json`` prints the
environment and the rows.

Defaults: float32 on CPU; float32 and bfloat16 on CUDA, where the cases also include each
loss's largest case with N and C four times larger (16 times the elements: 2^26 scores for
``soft_margin_loss``). ``--quick``: every loss at N=128, C=512 and at N=64, C=10 (the
project's small-input targets: faster than eager from 128 x 512 up, within 1.5x of eager at
64 x 10), a short budget, no ``torch.compile``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import datetime
import functools
import gc
import importlib.metadata
import importlib.util
import json
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as TF
from torch.utils import benchmark as torch_benchmark

import marginloss
import marginloss.functional as F
from marginloss.backends import BACKENDS
from marginloss.losses import LOSSES, LossSpec, by_name

#: The implementations compared, in table order.
IMPLEMENTATIONS = ("ours", "eager", "compile")
#: ``--quick``'s sizes (N, C), each with every loss.
QUICK_SIZES = ((128, 512), (64, 10))
#: On CUDA, each loss's largest case also runs with N and C this many times larger.
GPU_SCALE = 4
#: Rounds per case: each implementation is timed once per round.
ROUNDS = 5
#: Seconds of timing per implementation and case (``--budget``), normal and ``--quick``.
BUDGET_S, QUICK_BUDGET_S = 2.0, 0.1
DTYPES = ("float32", "bfloat16", "float16", "float64")
#: Elements of each buffer of the copy-bandwidth measurement (float32).
COPY_ELEMENTS = {"cpu": 1 << 26, "cuda": 1 << 28}

ENV_FIELDS = ("date", "machine", "cpu", "device", "torch", "triton", "marginloss", "python",
              "threads")
ROW_FIELDS = ("loss", "case", "n", "c", "options", "dtype", "backend",
              "ours_ms", "eager_ms", "compile_ms", "exp_ms",
              "speedup_vs_eager", "speedup_vs_compile",
              "min_bytes", "ours_gbps", "copy_gbps", "limit_ms", "limit_bound", "limit_pct",
              "ours_peak_mb", "eager_peak_mb", "compile_peak_mb",
              "ours_ok", "compile_ok", "rounds", "errors")
CSV_FIELDS = ENV_FIELDS + ROW_FIELDS


# ----------------------------------------------------------------------------------------------
# cases


@dataclass(frozen=True)
class Case:
    """One benchmark row: ``spec``'s loss on ``(n, c)`` scores, with ``spec.sample``'s keyword
    arguments ``options`` (e.g. ``p``, ``positives``)."""

    spec: LossSpec
    n: int
    c: int
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, spec: LossSpec, case: dict, **sizes: int) -> Case:
        """From a ``spec.benchmark_cases`` entry; ``sizes`` (``n=``, ``c=``) override it."""
        case = {**case, **sizes}
        options = tuple(sorted((k, v) for k, v in case.items() if k not in ("n", "c")))
        return cls(spec, int(case["n"]), int(case["c"]), options)

    @property
    def loss(self) -> str:
        return self.spec.name

    @property
    def options_str(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.options)

    @property
    def label(self) -> str:
        return f"{self.loss} N={self.n} C={self.c}" + "".join(
            f", {k}={v}" for k, v in self.options)

    def sample(self, device: torch.device | str, dtype: torch.dtype, seed: int = 0):
        """``(inputs, target, kwargs)`` from the spec's sampler, seeded."""
        g = torch.Generator().manual_seed(seed)
        return self.spec.sample(self.n, self.c, dtype=dtype, device=device, generator=g,
                                **dict(self.options))


def select_cases(losses: Sequence[str] | None = None, *, quick: bool = False,
                 n: int | None = None, c: int | None = None,
                 device: str = "cpu") -> list[Case]:
    """The cases to run, in :data:`~marginloss.losses.LOSSES` order.

    Every spec's ``benchmark_cases`` (``quick``: its first case at each of
    :data:`QUICK_SIZES`); ``n`` / ``c`` replace the sizes of every case; on CUDA without
    sizes, each loss's largest case also runs :data:`GPU_SCALE` times larger in N and C.
    ``losses`` keeps only the losses named. Duplicates are dropped.
    """
    specs = [by_name(name) for name in losses] if losses else list(LOSSES)
    specs = [s for s in LOSSES if s in specs]
    out: list[Case] = []
    for spec in specs:
        declared = list(spec.benchmark_cases) or [{"n": 1024, "c": 1024}]
        if quick:
            first = {k: v for k, v in declared[0].items() if k not in ("n", "c")}
            sizes = [(n or qn, c or qc) for qn, qc in QUICK_SIZES]
            out += [Case.from_dict(spec, first, n=sn, c=sc) for sn, sc in sizes]
            continue
        override = {k: v for k, v in (("n", n), ("c", c)) if v is not None}
        out += [Case.from_dict(spec, case, **override) for case in declared]
        if device == "cuda" and not override:
            largest = max(declared, key=lambda d: d["n"] * d["c"])  # first of equals
            out.append(Case.from_dict(spec, largest, n=largest["n"] * GPU_SCALE,
                                      c=largest["c"] * GPU_SCALE))
    return list(dict.fromkeys(out))


def min_bytes(inputs: Sequence[torch.Tensor], target: torch.Tensor | None,
              kwargs: dict) -> int:
    """The least traffic of a fused step: read every input, the target and every tensor
    option once, write every input's gradient once."""
    def nbytes(t):
        return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0

    return (2 * sum(nbytes(x) for x in inputs) + nbytes(target)
            + sum(nbytes(v) for v in kwargs.values()))


def roofline(n_bytes: int, copy_gbps: float | None, exp_ms: float | None,
             ours_ms: float | None) -> dict:
    """``ours_gbps``, ``limit_ms``, ``limit_bound`` and ``limit_pct`` (module docstring).

    >>> r = roofline(48_000_000, 12.0, 2.5, 8.0)
    >>> r["ours_gbps"], r["limit_ms"], r["limit_bound"], r["limit_pct"]
    (6.0, 4.0, 'memory', 50.0)
    """
    out: dict = {"ours_gbps": None, "limit_ms": None, "limit_bound": None, "limit_pct": None}
    if ours_ms:
        out["ours_gbps"] = n_bytes / (ours_ms * 1e-3) / 1e9
    bounds = {}
    if copy_gbps:
        bounds["memory"] = n_bytes / (copy_gbps * 1e9) * 1e3
    if exp_ms:
        bounds["exp"] = exp_ms
    if bounds:
        out["limit_bound"] = max(bounds, key=bounds.__getitem__)
        out["limit_ms"] = bounds[out["limit_bound"]]
        if ours_ms:
            out["limit_pct"] = 100.0 * out["limit_ms"] / ours_ms
    return out


# ----------------------------------------------------------------------------------------------
# timing


def _triton_do_bench() -> Callable | None:
    if importlib.util.find_spec("triton") is None:
        return None
    try:
        from triton.testing import do_bench
    except ImportError:
        return None
    return do_bench


def time_once(fn: Callable[[], object]) -> float:
    """Seconds of one call of ``fn`` (``Timer.timeit(1)``; it synchronizes an accelerator)."""
    timer = torch_benchmark.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.timeit(1).median


def time_round(fn: Callable[[], object], device: torch.device, seconds: float) -> float:
    """Median seconds per call of ``fn`` over about ``seconds`` of runs (one round).

    CPU: ``Timer.blocked_autorange``. CUDA: ``triton.testing.do_bench`` (CUDA events, L2
    flushed before each run), or the ``Timer`` without Triton.
    """
    if device.type == "cuda":
        do_bench = _triton_do_bench()
        if do_bench is not None:
            ms = do_bench(fn, warmup=max(1, int(seconds * 250)), rep=max(1, int(seconds * 1e3)),
                          quantiles=[0.5, 0.2, 0.8])[0]
            return ms * 1e-3
    timer = torch_benchmark.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=seconds).median


def time_interleaved(fns: dict[str, Callable[[], object]], device: torch.device, *,
                     budget_s: float, rounds: int = ROUNDS,
                     errors: dict[str, str] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each of ``fns``, one entry per round (module docstring).

    Each function is first timed once, not for the record, to warm it and estimate its time;
    a function slower than a round (``budget_s / rounds``) is then timed with one call per
    round, in ``budget_s // estimate`` rounds (at least one). The order rotates every round.
    A function that raises is dropped; its error goes to ``errors[name]``.
    """
    errors = {} if errors is None else errors
    per_round = budget_s / rounds
    estimate: dict[str, float] = {}
    for name, fn in fns.items():
        try:
            estimate[name] = time_once(fn)
        except Exception as exc:  # noqa: BLE001 - reported in the table, not fatal
            errors[name] = describe_error(exc)
    names = list(estimate)
    planned = {k: rounds if estimate[k] < per_round else
               max(1, min(rounds, int(budget_s // estimate[k]))) for k in names}
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)] if names else []
        for name in order:
            if name in errors or len(times[name]) >= planned[name]:
                continue
            try:
                if estimate[name] >= per_round:
                    times[name].append(time_once(fns[name]))
                else:
                    times[name].append(time_round(fns[name], device, per_round))
            except Exception as exc:  # noqa: BLE001
                errors[name] = describe_error(exc)
                _free_device_memory(device)
    return {k: v for k, v in times.items() if k not in errors and v}


def ratio(baseline: list[float], ours: list[float]) -> float | None:
    """Median over the rounds both have of ``baseline / ours`` (> 1: ours is faster)."""
    pairs = [b / a for a, b in zip(ours, baseline, strict=False) if a > 0]
    return statistics.median(pairs) if pairs else None


def copy_bandwidth(device: torch.device, *, budget_s: float = 0.6, rounds: int = 3,
                   elements: int | None = None) -> float:
    """GB/s of ``dst.copy_(src)`` on two large float32 buffers, read + write counted: the
    median over ``rounds`` rounds of about ``budget_s / rounds`` seconds each."""
    n = elements or COPY_ELEMENTS.get(device.type, 1 << 26)
    copy = _copy_fn(n, device)
    copy()
    seconds = [time_round(copy, device, budget_s / rounds) for _ in range(rounds)]
    del copy
    _free_device_memory(device)
    return 2 * n * 4 / statistics.median(seconds) / 1e9


def _copy_fn(n: int, device: torch.device) -> Callable[[], object]:
    src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def _exp_fn(n: int, dtype: torch.dtype, device: torch.device) -> Callable[[], object]:
    """``torch.exp(x, out=o)`` on ``n`` elements of ``dtype``: the exp reference."""
    x = torch.randn(n, device=device).to(dtype)
    o = torch.empty_like(x)
    return lambda: torch.exp(x, out=o)


# ----------------------------------------------------------------------------------------------
# memory


def peak_extra_bytes(step: Callable[[], None], device: torch.device,
                     reset: Callable[[], None] = lambda: None) -> int | None:
    """Peak memory one step needs beyond what is live before it (inputs excluded; the
    gradient it leaves behind included). ``reset`` drops the previous step's gradient.

    CUDA: the caching allocator's peak. CPU (Linux): the growth of the process's peak resident
    memory (``VmHWM``, reset through ``/proc/self/clear_refs``), measured after
    :func:`exact_rss_allocator` so that freed blocks go back to the system; None elsewhere.
    Blocks served from free heap memory and freed again within the step can make the CPU figure
    an overestimate (by at most those blocks); it never misses memory the step held at once.
    """
    step()  # warm: compiled code, lazily built state
    reset()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set size to the current one
        base = _proc_status("VmRSS")
        step()
        return _proc_status("VmHWM") - base
    except OSError:
        return None


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{key} not in /proc/self/status")


def _release_free_memory() -> None:
    """Hand free heap pages back to the system (glibc ``malloc_trim``), so that reusing them
    shows up as resident-memory growth again."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def exact_rss_allocator() -> None:
    """Make glibc return every block of 64 KiB or more to the system when it is freed (and take
    fresh pages for the next one), so resident memory tracks what is allocated. Used only for
    the memory pass: it would slow every implementation's allocations in the timing pass."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _free_device_memory(device: torch.device) -> None:
    """Give cached CUDA memory back (tensors die by reference counting; on CPU that is all)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------
# one case


def compile_fresh(fn: Callable) -> Callable:
    """``torch.compile(fn, dynamic=False)`` after ``torch._dynamo.reset()``: a fresh compile
    per case (no recompile limit, no silent eager fallback)."""
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def implementations(spec: LossSpec,
                    compiler: Callable[[Callable], Callable] | None = compile_fresh,
                    backend: str = "auto") -> dict[str, Callable]:
    """``{"ours": ..., "eager": ..., "compile": ...}`` for ``spec`` (no compile without a
    ``compiler``); ours with ``backend=`` (its default, ``"auto"``, unless another is asked)."""
    eager = getattr(TF, spec.name)
    ours = getattr(F, spec.name)
    if backend != "auto":
        ours = functools.partial(ours, backend=backend)
    impls = {"ours": ours, "eager": eager}
    if compiler is not None:
        impls["compile"] = compiler(eager)
    return impls


@dataclass
class _Runner:
    """One implementation on its own copy of the inputs: ``step()`` is the timed statement."""

    fn: Callable
    inputs: list[torch.Tensor]
    target: Any
    kwargs: dict
    result: tuple | None = field(default=None)

    def reset(self) -> None:
        for x in self.inputs:
            x.grad = None

    def step(self) -> None:
        self.reset()
        args = (*self.inputs, self.target) if self.target is not None else tuple(self.inputs)
        self.fn(*args, **self.kwargs).backward()

    def first_step(self) -> tuple:
        """One step that keeps the loss and gradients (float32 copies) to compare."""
        self.reset()
        args = (*self.inputs, self.target) if self.target is not None else tuple(self.inputs)
        loss = self.fn(*args, **self.kwargs)
        loss.backward()
        return (loss.detach().float().clone(),
                *(x.grad.float().clone() for x in self.inputs if x.grad is not None))


def _runners(case: Case, impls: dict[str, Callable], sample: tuple) -> dict[str, _Runner]:
    inputs, target, kwargs = sample
    return {name: _Runner(fn, [x.detach().clone().requires_grad_() for x in inputs], target,
                          kwargs) for name, fn in impls.items()}


def matches(got: tuple, want: tuple, dtype: torch.dtype) -> bool:
    """Loss and gradients equal up to ``dtype``'s precision: every element within ``rtol``
    of the reference tensor's largest magnitude (``rtol`` 1e-4 for float32, 1e-10 for float64,
    3e-2 for 16-bit floats), and the same non-finite values."""
    rtol = {torch.float64: 1e-10, torch.float32: 1e-4}.get(dtype, 3e-2)
    if len(got) != len(want):
        return False
    for a, b in zip(got, want, strict=True):
        if a.shape != b.shape:
            return False
        finite = b[torch.isfinite(b)]
        scale = float(finite.abs().max()) if finite.numel() else 0.0
        if not torch.allclose(a, b, rtol=rtol, atol=rtol * scale, equal_nan=True):
            return False
    return True


def describe_error(exc: BaseException) -> str:
    """An exception in one short line."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):  # torch.OutOfMemoryError in torch 2.5+
        return "out of memory"
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    text = text if len(text) <= 140 else text[:137] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def ours_backend(spec: LossSpec, sample: tuple, backend: str = "auto") -> str | None:
    """The backend ``backend=`` picks for ours on this case (None if unknown)."""
    try:
        from marginloss import backends

        return str(backends.select(backend, spec, spec.call(*sample)).NAME)
    except Exception:  # noqa: BLE001 - informative only; the internals may change
        return None


def run_case(case: Case, device: torch.device, dtype: torch.dtype, *,
             compiler: Callable[[Callable], Callable] | None = compile_fresh,
             budget_s: float = BUDGET_S, rounds: int = ROUNDS,
             copy_gbps: float | None = None, memory: bool | None = None,
             backend: str = "auto") -> dict:
    """Time every implementation of ``case``, check ours and compile against eager, and fill
    one row (the columns of the module docstring). ``memory`` (default: on CUDA) also measures
    the peak memory now; on CPU :func:`measure_memory` does it in a later pass."""
    sample = case.sample(device, dtype)
    inputs, target, kwargs = sample
    row: dict = {"loss": case.loss, "case": case.label, "n": case.n, "c": case.c,
                 "options": case.options_str, "dtype": str(dtype).removeprefix("torch."),
                 "backend": ours_backend(case.spec, sample, backend), "copy_gbps": copy_gbps}
    errors: dict[str, str] = {}
    try:
        impls = implementations(case.spec, compiler, backend)
    except Exception as exc:  # noqa: BLE001 - e.g. torch.compile unsupported here
        impls = implementations(case.spec, None, backend)
        errors["compile"] = describe_error(exc)
    runners = _runners(case, impls, sample)
    results = {}
    for name, runner in runners.items():
        try:
            results[name] = runner.first_step()  # compiles, and shows it can run the case
        except Exception as exc:  # noqa: BLE001 - a baseline that cannot run it is reported
            errors[name] = describe_error(exc)
            runner.reset()
            _free_device_memory(device)
    for name in ("ours", "compile"):
        if name in results and "eager" in results:
            row[f"{name}_ok"] = matches(results[name], results["eager"], dtype)
    del results
    timed = {name: r.step for name, r in runners.items() if name not in errors}
    timed["exp"] = _exp_fn(sum(x.numel() for x in inputs), dtype, device)
    times = time_interleaved(timed, device, budget_s=budget_s, rounds=rounds, errors=errors)
    for name in (*IMPLEMENTATIONS, "exp"):
        if name in times:
            row[f"{name}_ms"] = statistics.median(times[name]) * 1e3
    for base in ("eager", "compile"):
        if "ours" in times and base in times:
            row[f"speedup_vs_{base}"] = ratio(times[base], times["ours"])
    row["rounds"] = max((len(v) for v in times.values()), default=0)
    row["min_bytes"] = min_bytes(inputs, target, kwargs)
    row.update(roofline(row["min_bytes"], copy_gbps, row.get("exp_ms"), row.get("ours_ms")))
    if device.type == "cuda" if memory is None else memory:
        _measure_peaks(runners, row, device, errors)
    row["errors"] = errors
    del runners, timed
    _free_device_memory(device)
    return row


def _measure_peaks(runners: dict[str, _Runner], row: dict, device: torch.device,
                   errors: dict[str, str]) -> None:
    gc.collect()  # garbage cycles of earlier cases would otherwise be freed mid-measurement
    for name, runner in runners.items():
        if name in errors or row.get(f"{name}_ms") is None:
            continue
        try:
            peak = peak_extra_bytes(runner.step, device, reset=runner.reset)
        except Exception as exc:  # noqa: BLE001
            errors[name] = describe_error(exc)
            peak = None
        runner.reset()
        row[f"{name}_peak_mb"] = None if peak is None else peak / 2**20


def measure_memory(case: Case, row: dict, device: torch.device, dtype: torch.dtype, *,
                   compiler: Callable[[Callable], Callable] | None = compile_fresh,
                   backend: str = "auto") -> None:
    """Add ``<impl>_peak_mb`` to ``row`` for every implementation timed in it (a fresh
    compile: the timing pass's compiled code is gone by now)."""
    timed = [n for n in IMPLEMENTATIONS if row.get(f"{n}_ms") is not None]
    if not timed:
        return
    errors = row.setdefault("errors", {})
    try:
        impls = implementations(case.spec, compiler if "compile" in timed else None, backend)
    except Exception as exc:  # noqa: BLE001
        errors["compile"] = describe_error(exc)
        impls = implementations(case.spec, None, backend)
    runners = _runners(case, {k: v for k, v in impls.items() if k in timed},
                       case.sample(device, dtype))
    _measure_peaks(runners, row, device, errors)
    del runners
    _free_device_memory(device)


# ----------------------------------------------------------------------------------------------
# environment and output


def environment(device: torch.device) -> dict:
    """Where and with what the numbers were measured (the CSV's first columns)."""
    try:
        triton_version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton_version = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "triton": triton_version,
        "marginloss": marginloss.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    return format(v, spec)


TABLE_HEADER = ("case", "dtype", "backend", "ours ms", "eager ms", "compile ms", "× eager",
                "× compile", "GB/s", "% limit", "peak MB ours / eager / compile",
                "ok ours / compile")


def _table_cells(r: dict) -> list[str]:
    limit = "n/a" if r.get("limit_pct") is None else \
        f"{r['limit_pct']:.0f}% ({r['limit_bound']})"
    peaks = " / ".join(_fmt(r.get(f"{n}_peak_mb"), ".1f") for n in IMPLEMENTATIONS)
    ok = " / ".join(_fmt(r.get(f"{n}_ok")) for n in ("ours", "compile"))
    return [r["case"], r["dtype"], r.get("backend") or "n/a", _fmt(r.get("ours_ms")),
            _fmt(r.get("eager_ms")), _fmt(r.get("compile_ms")),
            _fmt(r.get("speedup_vs_eager"), ".1f"), _fmt(r.get("speedup_vs_compile"), ".1f"),
            _fmt(r.get("ours_gbps"), ".1f"), limit, peaks, ok]


def format_table(rows: list[dict], env: dict, copy_gbps: float | None = None) -> str:
    """The markdown table (columns: module docstring), with the environment in a comment and
    the copy bandwidth above it, the errors below it."""
    head = ", ".join(f"{k} {v}" for k, v in env.items())
    cells = [list(TABLE_HEADER)] + [_table_cells(r) for r in rows]
    numeric = [i >= 3 for i in range(len(TABLE_HEADER))]
    widths = [max(len(row[i]) for row in cells) for i in range(len(TABLE_HEADER))]

    def line(row: list[str]) -> str:
        text = "| " + " | ".join(v.rjust(w) if num else v.ljust(w)
                                 for v, w, num in zip(row, widths, numeric, strict=True))
        return text + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if num else "-")
                          for w, num in zip(widths, numeric, strict=True)) + "|"
    lines = [f"<!-- {head} -->",
             f"Copy bandwidth (dst.copy_(src), read + write): {_fmt(copy_gbps, '.1f')} GB/s; "
             f"device {env.get('device')}, {env.get('threads')} threads.",
             "", line(cells[0]), rule, *map(line, cells[1:])]
    notes = [f"* {r['case']} ({r['dtype']}): {name} failed: {msg}"
             for r in rows for name, msg in (r.get("errors") or {}).items()]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {m}" for k, m in v.items())
    return v


def csv_rows(rows: list[dict], env: dict) -> list[dict]:
    """The CSV's rows: the environment's columns, then each row's (:data:`CSV_FIELDS`)."""
    return [{k: _csv_value({**env, **r}.get(k)) for k in CSV_FIELDS} for r in rows]


def check_csv(path: str) -> None:
    """Raise ValueError if ``path`` exists with other columns (rows are appended to it)."""
    p = Path(path)
    if p.exists() and p.stat().st_size:
        with p.open(newline="") as f:
            header = next(csv.reader(f), [])
        if tuple(header) != CSV_FIELDS:
            raise ValueError(f"{path} exists with other columns; give a new file")


def append_csv(path: str, rows: list[dict], env: dict) -> None:
    """Append rows to ``path`` (the header first when the file is new or empty)."""
    p = Path(path)
    new = not p.exists() or p.stat().st_size == 0
    with p.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(csv_rows(rows, env))


# ----------------------------------------------------------------------------------------------
# command line


DESCRIPTION = ("Time marginloss against torch.nn eager and torch.compile: a full training step "
               "(forward + backward) of every loss, the implementations taking turns. Prints "
               "a markdown table: median ms, speedups, GB/s, % of the machine's limit, peak "
               "memory, and whether compile's and our results match eager's.")
EPILOG = ("Columns are explained in the docstring of marginloss.benchmark "
          "(python -c 'import marginloss.benchmark as b; help(b)') and in benchmarks/README.md.")


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number of at least 1 (sizes, counts)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark's options to ``parser`` (``marginloss bench`` and :func:`main`)."""
    names = [s.name for s in LOSSES]
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run (auto: CUDA when available, else CPU)")
    parser.add_argument("--dtype", choices=DTYPES, action="append", default=None,
                        help="score dtype; repeat for several (default: float32 on CPU, "
                             "float32 and bfloat16 on CUDA)")
    parser.add_argument("--loss", choices=names, action="append", default=None, metavar="NAME",
                        help=f"only this loss; repeat for several ({', '.join(names)})")
    parser.add_argument("--n", type=positive_int, default=None, metavar="N",
                        help="rows (batch size) of every case, instead of the declared ones")
    parser.add_argument("--c", type=positive_int, default=None, metavar="C",
                        help="classes (columns) of every case, instead of the declared ones")
    parser.add_argument("--quick", action="store_true",
                        help="every loss at N=128 C=512 and N=64 C=10, a short budget, no "
                             "torch.compile (a smoke run)")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip torch.compile (its columns read n/a)")
    parser.add_argument("--budget", type=_positive_float, default=None, metavar="SECONDS",
                        help=f"seconds of timing per implementation and case (default "
                             f"{BUDGET_S:g}; --quick {QUICK_BUDGET_S:g})")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="ours with this backend= (default auto; e.g. triton on CPU "
                             "tensors under TRITON_INTERPRET=1, for a smoke run)")
    parser.add_argument("--json", action="store_true",
                        help="print the environment and rows as JSON instead of the table")
    parser.add_argument("--out", metavar="FILE.md", help="also append the markdown table here")
    parser.add_argument("--csv", metavar="FILE",
                        help="also append one CSV row per case here (with environment columns)")
    return parser


def build_parser(prog: str = "marginloss bench") -> argparse.ArgumentParser:
    """The benchmark's own parser (``python -m marginloss.benchmark``)."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG)
    return add_arguments(parser)


def run(args: argparse.Namespace, *, compiler: Callable[[Callable], Callable] | None = None
        ) -> int:
    """Run the benchmark for parsed options (:func:`add_arguments`); return the exit status:
    0, 1 if ours failed on some case, 2 if the options cannot be honoured. ``compiler``
    replaces :func:`compile_fresh` (tests)."""
    if args.device == "cuda" and not torch.cuda.is_available():
        print("marginloss bench: --device cuda was asked for, but torch sees no CUDA device.",
              file=sys.stderr)
        return 2
    device = torch.device("cuda" if args.device == "cuda" or (
        args.device == "auto" and torch.cuda.is_available()) else "cpu")
    if args.csv:
        try:
            check_csv(args.csv)
        except ValueError as e:
            print(f"marginloss bench: --csv {e}", file=sys.stderr)
            return 2
    dtype_names = args.dtype or (["float32", "bfloat16"] if device.type == "cuda"
                                 else ["float32"])
    dtypes = [getattr(torch, d) for d in dict.fromkeys(dtype_names)]
    use_compile = not (args.quick or args.no_compile)
    compiler = (compiler or compile_fresh) if use_compile else None
    budget = args.budget if args.budget is not None else (
        QUICK_BUDGET_S if args.quick else BUDGET_S)
    cases = select_cases(args.loss, quick=args.quick, n=args.n, c=args.c, device=device.type)
    env = environment(device)
    print(f"marginloss bench: {len(cases) * len(dtypes)} cases on {env['device']}, "
          f"{budget:g} s per implementation", file=sys.stderr, flush=True)
    copy_gbps = copy_bandwidth(device, budget_s=min(1.0, 3 * budget))
    print(f"copy bandwidth: {copy_gbps:.1f} GB/s", file=sys.stderr, flush=True)
    todo = [(case, dtype) for dtype in dtypes for case in cases]
    rows = []
    for i, (case, dtype) in enumerate(todo, 1):
        tag = f"[{i}/{len(todo)}] {case.label} {str(dtype).removeprefix('torch.')}"
        print(f"{tag}: timing ...", file=sys.stderr, flush=True)
        try:
            row = run_case(case, device, dtype, compiler=compiler, budget_s=budget,
                           copy_gbps=copy_gbps, backend=args.backend)
        except Exception as exc:  # noqa: BLE001 - e.g. no memory for the inputs: next case
            row = {"loss": case.loss, "case": case.label, "n": case.n, "c": case.c,
                   "options": case.options_str, "dtype": str(dtype).removeprefix("torch."),
                   "errors": {"ours": describe_error(exc)}}
            _free_device_memory(device)
        rows.append(row)
        print(f"{tag}: " + ", ".join(f"{n} {_fmt(row.get(n + '_ms'))} ms"
                                     for n in IMPLEMENTATIONS if n + "_ms" in row),
              file=sys.stderr, flush=True)
        if device.type == "cuda" and args.csv:
            append_csv(args.csv, [row], env)  # complete: partial runs keep their rows
    if device.type == "cpu":
        exact_rss_allocator()  # after timing: it changes how the allocator behaves
        for i, ((case, dtype), row) in enumerate(zip(todo, rows, strict=True), 1):
            print(f"[{i}/{len(todo)}] {case.label}: memory ...", file=sys.stderr, flush=True)
            try:
                measure_memory(case, row, device, dtype, compiler=compiler,
                               backend=args.backend)
            except Exception as exc:  # noqa: BLE001 - the timings stand without it
                row.setdefault("errors", {})["memory"] = describe_error(exc)
        if args.csv:
            append_csv(args.csv, rows, env)
    table = format_table(rows, env, copy_gbps)
    if args.json:
        print(json.dumps({"environment": env, "copy_gbps": copy_gbps, "rows": rows}, indent=2))
    else:
        print(table)
    if args.out:
        with open(args.out, "a") as f:
            f.write(table + "\n\n")
    return 1 if any("ours" in (r.get("errors") or {}) for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    """``marginloss bench`` with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
