r"""Benchmark: marginloss vs torch.nn eager vs ``torch.compile``, forward + backward, one run.

``marginloss bench`` (or ``python benchmarks/bench_cpu.py``) prints a markdown table; each row is
one loss on one shape, timed as a full training step of the loss::

    x.grad = None; loss = fn(x, y, ...); loss.backward()

* **ms**: median over repeated runs after warm-up (wall clock on CPU; CUDA events on GPU).
* **× eager** / **× compile**: how many times faster ours is than each baseline (> 1 is faster):
  the median of per-round ratios, the implementations taking turns (see :func:`time_rounds`).
* **GB/s**: the minimal bytes (read scores and targets once, write the gradient once) divided
  by our time: how close the step runs to memory speed.
* **peak MB**: the most memory a step needs beyond its inputs, the gradient it leaves included
  (CPU: growth of the peak resident set, measured in a second pass; CUDA:
  ``torch.cuda.max_memory_allocated``). See :func:`peak_extra_bytes`.
* **compile ok**: whether ``torch.compile``'s result matched eager (torch 2.13's decomposition of
  ``multilabel_margin_loss`` ignores the ``-1`` padding and is wrong).

Baselines are torch's own functions, eager and compiled (``torch.compile(fn, dynamic=False)``,
compile time excluded); ours runs with its defaults (``validate=True``, ``backend="auto"``).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as TF

import marginloss
import marginloss.functional as F


@dataclass(frozen=True)
class Case:
    """One benchmark row: ``loss`` on ``(n, c)`` scores; ``k`` positives for the ranking loss."""

    loss: str
    n: int
    c: int
    k: int = 0
    kwargs: tuple = ()

    @property
    def label(self) -> str:
        extra = f", {self.k} pos" if self.k else ""
        opts = "".join(f", {k}={v}" for k, v in self.kwargs)
        return f"{self.loss} N={self.n} C={self.c}{extra}{opts}"

    def inputs(self, device, dtype, seed: int = 0):
        """Scores, targets in the loss's convention, and extra keyword arguments."""
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(self.n, self.c, generator=g).to(device=device, dtype=dtype)
        if self.loss == "soft_margin_loss":
            y = (torch.randint(0, 2, (self.n, self.c), generator=g) * 2 - 1).to(dtype)
        elif self.loss == "multilabel_soft_margin_loss":
            y = torch.randint(0, 2, (self.n, self.c), generator=g).to(dtype)
        elif self.loss == "multi_margin_loss":
            y = torch.randint(0, self.c, (self.n,), generator=g)
        else:  # multilabel_margin_loss: k distinct classes per row, then -1 padding
            y = torch.full((self.n, self.c), -1, dtype=torch.long)
            y[:, : self.k] = torch.rand(self.n, self.c, generator=g).argsort(1)[:, : self.k]
        return x, y.to(device), dict(self.kwargs)

    def min_bytes(self, x: torch.Tensor, y: torch.Tensor) -> int:
        """Read scores and targets once, write the gradient once."""
        return 2 * x.numel() * x.element_size() + y.numel() * y.element_size()


CASES = [
    Case("soft_margin_loss", 1024, 4096),
    Case("multilabel_soft_margin_loss", 1024, 4096),
    Case("multi_margin_loss", 1024, 1024),
    Case("multi_margin_loss", 1024, 4096),
    Case("multi_margin_loss", 1024, 1024, kwargs=(("p", 2),)),
    Case("multilabel_margin_loss", 1024, 1024, k=16),
    Case("multilabel_margin_loss", 256, 2048, k=1024),
]
QUICK_CASES = [
    Case("soft_margin_loss", 128, 512),
    Case("multilabel_soft_margin_loss", 128, 512),
    Case("multi_margin_loss", 128, 512),
    Case("multilabel_margin_loss", 64, 256, k=16),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(fn: Callable, x: torch.Tensor, y: torch.Tensor, kwargs: dict) -> Callable[[], None]:
    def step():
        x.grad = None
        fn(x, y, **kwargs).backward()

    return step


def _time_once(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        step()
        b.record()
        b.synchronize()
        return a.elapsed_time(b)
    t0 = time.perf_counter()
    step()
    return (time.perf_counter() - t0) * 1e3


def time_rounds(steps: dict[str, Callable[[], None]], device: torch.device, *,
                budget_s: float = 2.0, min_rounds: int = 5,
                max_rounds: int = 50) -> dict[str, list[float]]:
    """Milliseconds per run of each step, timed in rounds (each step once per round, in turn).

    Taking turns exposes every implementation to the same background load, which on a shared
    machine drifts over seconds; per-round ratios then compare like with like. Two warm-up runs
    each first; rounds continue until ``budget_s`` per step is spent (at least ``min_rounds``).
    """
    for step in steps.values():
        step()
        step()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or
                                   time.perf_counter() - start < budget_s * len(steps)):
        for name, step in steps.items():
            times[name].append(_time_once(step, device))
        rounds += 1
    return times


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
    gc.collect()
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
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
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


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


def _implementations(case: Case, use_compile: bool) -> dict[str, Callable]:
    ref = getattr(TF, case.loss)
    impls = {"ours": getattr(F, case.loss), "eager": ref}
    if use_compile:
        impls["compile"] = torch.compile(ref, dynamic=False)
    return impls


def _steps(case: Case, inputs: tuple, use_compile: bool):
    """Yield ``(name, fn, x, step)`` per implementation of ``case`` on ``inputs``
    (``case.inputs(...)``): a fresh copy of the scores each, compiles fresh."""
    x0, y, kwargs = inputs
    if use_compile:
        torch._dynamo.reset()  # a fresh compile per case: no recompile limit, no eager fallback
    for name, fn in _implementations(case, use_compile).items():
        x = x0.clone().requires_grad_()
        yield name, fn, x, _step(fn, x, y, kwargs)


def measure_memory(case: Case, row: dict, device: torch.device, dtype: torch.dtype,
                   use_compile: bool) -> None:
    """Add ``<impl>_peak_mb`` to ``row`` (implementations that failed to time are skipped)."""
    for name, _, x, step in _steps(case, case.inputs(device, dtype), use_compile):
        if row.get(f"{name}_ms") is None:
            continue
        peak = peak_extra_bytes(step, device, reset=lambda x=x: setattr(x, "grad", None))
        row[f"{name}_peak_mb"] = None if peak is None else peak / 2**20


def run_case(case: Case, device: torch.device, dtype: torch.dtype, use_compile: bool,
             budget_s: float) -> dict:
    """Time every implementation of ``case`` and check torch.compile's result against eager."""
    x0, y, kwargs = inputs = case.inputs(device, dtype)
    row: dict = {"case": case.label, "dtype": str(dtype).replace("torch.", "")}
    steps, outputs = {}, {}
    for name, fn, x, step in _steps(case, inputs, use_compile):
        try:
            step()  # compiles, and shows whether this implementation can run the case at all
        except Exception as exc:  # a baseline that cannot run this case is reported, not fatal
            row[f"{name}_ms"] = None
            row[f"{name}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            continue
        steps[name] = step
        # the result, under the same grad mode as the timed step (a compiled function would
        # otherwise recompile for no_grad)
        outputs[name] = (fn(x, y, **kwargs).detach().float(), x.grad.float().clone())
    times = time_rounds(steps, device, budget_s=budget_s)
    for name, ts in times.items():
        row[f"{name}_ms"] = statistics.median(ts)
    ours = row.get("ours_ms")
    for base in ("eager", "compile"):
        if "ours" in times and base in times:
            row[f"speedup_vs_{base}"] = statistics.median(
                b / a for a, b in zip(times["ours"], times[base]))
    if ours:
        row["ours_gbps"] = case.min_bytes(x0, y) / (ours * 1e-3) / 1e9
    if "compile" in outputs and "eager" in outputs:
        (lc, gc), (le, ge) = outputs["compile"], outputs["eager"]
        row["compile_matches_eager"] = bool(torch.allclose(lc, le, rtol=1e-4, atol=1e-5)
                                            and torch.allclose(gc, ge, rtol=1e-4, atol=1e-6))
    return row


def environment(device: torch.device) -> dict:
    env = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "marginloss": marginloss.__version__,
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "device": device.type,
    }
    if device.type == "cuda":
        env["device"] = torch.cuda.get_device_name(device)
        try:
            import triton

            env["triton"] = triton.__version__
        except ImportError:
            env["triton"] = None
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def format_table(rows: list[dict], env: dict) -> str:
    head = ", ".join(f"{k} {v}" for k, v in env.items())
    lines = [
        f"<!-- {head} -->",
        "| case | dtype | ours ms | eager ms | compile ms | × eager | × compile | ours GB/s "
        "| peak MB ours / eager / compile | compile ok |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        peaks = " / ".join(_fmt(r.get(f"{n}_peak_mb"), ".1f") for n in ("ours", "eager",
                                                                      "compile"))
        ok = r.get("compile_matches_eager")
        ok = "n/a" if ok is None else ("yes" if ok else "**no**")
        lines.append(
            f"| {r['case']} | {r['dtype']} | {_fmt(r.get('ours_ms'), '.2f')} "
            f"| {_fmt(r.get('eager_ms'), '.2f')} | {_fmt(r.get('compile_ms'), '.2f')} "
            f"| {_fmt(r.get('speedup_vs_eager'), '.1f')} | {_fmt(r.get('speedup_vs_compile'), '.1f')} "
            f"| {_fmt(r.get('ours_gbps'), '.1f')} | {peaks} | {ok} |"
        )
    errors = [(r["case"], k, v) for r in rows for k, v in r.items() if k.endswith("_error")]
    for case, k, v in errors:
        lines.append(f"\n{case}: {k.removesuffix('_error')} failed: {v}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="marginloss bench",
        description="Time marginloss against torch.nn eager and torch.compile "
                    "(forward + backward, median ms, ratios, GB/s, peak memory).",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where to run (auto: CUDA when available, else CPU)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "float64"],
                        default="float32")
    parser.add_argument("--quick", action="store_true",
                        help="small shapes, short timing budget, no torch.compile (a smoke run)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timing per implementation and case (default 2, quick 0.2)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead")
    parser.add_argument("--out", help="also append the markdown table to this file")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("marginloss bench: --device cuda was asked for, but torch sees no CUDA device.",
              file=sys.stderr)
        return 2
    device = torch.device("cuda" if args.device == "cuda" or (
        args.device == "auto" and torch.cuda.is_available()) else "cpu")
    dtype = getattr(torch, args.dtype)
    use_compile = not (args.quick or args.no_compile)
    budget = args.budget if args.budget is not None else (0.2 if args.quick else 2.0)
    cases = QUICK_CASES if args.quick else CASES
    env = environment(device)
    rows = []
    for i, case in enumerate(cases, 1):
        print(f"[{i}/{len(cases)}] timing {case.label} ...", file=sys.stderr, flush=True)
        rows.append(run_case(case, device, dtype, use_compile, budget))
    if device.type == "cpu":
        exact_rss_allocator()  # after timing: it changes how the allocator behaves
    for i, (case, row) in enumerate(zip(cases, rows), 1):
        print(f"[{i}/{len(cases)}] memory {case.label} ...", file=sys.stderr, flush=True)
        measure_memory(case, row, device, dtype, use_compile)
    if args.json:
        print(json.dumps({"environment": env, "rows": rows}, indent=2))
    else:
        print(format_table(rows, env))
    if args.out:
        with open(args.out, "a") as f:
            f.write(format_table(rows, env) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    sys.exit(main())
