"""GPU benchmark: marginloss's Triton kernels vs torch eager vs torch.compile, forward + backward.

Usage::

    python benchmarks/bench_gpu.py [--quick] [--out FILE.md]

Needs a CUDA device (exits with a message otherwise). For each case and dtype it times one
training-style step, ``x.grad = None; loss = f(x, target); loss.backward()``, for

* ``marginloss``: ``marginloss.functional.<loss>(..., backend="triton", validate=False)``;
* ``marginloss+validate``: the same with ``validate=True`` (one fused value check, one sync);
* ``torch eager``: ``torch.nn.functional.<loss>``;
* ``torch.compile``: ``torch.compile(torch.nn.functional.<loss>)``,

and reports:

* the median time in ms over ``--rep`` runs timed with CUDA events, after ``--warmup`` runs;
* GB/s over the minimal bytes a fused loss must move: read the scores and the target once,
  write the gradient once (the scalar loss is negligible);
* that bandwidth as a fraction of the device's copy bandwidth, measured in the same run by
  timing ``dst.copy_(src)`` on 1 GiB buffers (read + write counted);
* the peak extra memory of one step: ``torch.cuda.max_memory_allocated()`` minus what was
  allocated before it (inputs and targets excluded; the gradient included);
* ``ok``: whether the provider's loss and gradient match torch eager (checked once, before
  timing; a mismatch is reported, never hidden).

Cases: soft margin on 2^26 elements; multilabel soft margin and multi margin at N=4096,
C=16384; multilabel margin at N=4096, C=2048 with 16 positives per row; float32 and bfloat16;
plus a sweep over C for multilabel soft margin (N=4096). ``--quick`` shrinks the sizes and the
repetitions (for a smoke run; not for recorded numbers).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as TF

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
PROVIDERS = ("marginloss", "marginloss+validate", "torch eager", "torch.compile")


# ----------------------------------------------------------------------------------------------
# pure helpers (no GPU needed)


@dataclass
class Case:
    """One benchmark configuration: a loss on an ``(N, C)`` input."""

    loss: str  # soft_margin | multilabel_soft_margin | multi_margin | multilabel_margin
    N: int
    C: int
    positives: int = 0  # multilabel_margin: targets per row

    @property
    def label(self) -> str:
        extra = f", K={self.positives}" if self.loss == "multilabel_margin" else ""
        if self.loss == "soft_margin":
            return f"soft_margin n=2^{(self.N * self.C).bit_length() - 1}"
        return f"{self.loss} N={self.N} C={self.C}{extra}"


def target_bytes_per_row(loss: str, C: int, input_itemsize: int) -> int:
    """Bytes of target per row in the layout the benchmark feeds every provider."""
    if loss in ("soft_margin", "multilabel_soft_margin"):
        return C * input_itemsize  # float labels in the input's dtype
    if loss == "multi_margin":
        return 8  # one int64 class index
    return C * 8  # multilabel_margin: int64 index list padded with -1


def minimal_bytes(case: Case, input_itemsize: int) -> int:
    """Read the scores and the target once, write the gradient once."""
    scores = case.N * case.C * input_itemsize
    return 2 * scores + case.N * target_bytes_per_row(case.loss, case.C, input_itemsize)


def gb_per_s(n_bytes: int, ms: float) -> float:
    return n_bytes / (ms * 1e-3) / 1e9


def cases(quick: bool) -> tuple[list[Case], list[Case]]:
    """``(main cases, multilabel soft margin sweep over C)``."""
    if quick:
        main = [Case("soft_margin", 1 << 12, 1 << 12), Case("multilabel_soft_margin", 1024, 4096),
                Case("multi_margin", 1024, 4096), Case("multilabel_margin", 1024, 2048, 16)]
        return main, [Case("multilabel_soft_margin", 1024, c) for c in (256, 4096, 65536)]
    main = [Case("soft_margin", 1 << 13, 1 << 13),  # 2^26 elements
            Case("multilabel_soft_margin", 4096, 16384), Case("multi_margin", 4096, 16384),
            Case("multilabel_margin", 4096, 2048, 16)]
    sweep = [Case("multilabel_soft_margin", 4096, 1 << k) for k in range(7, 18, 2)]
    return main, sweep


def format_table(rows: list[dict]) -> str:
    """Markdown table of result rows (see :func:`run_case` for the keys)."""
    head = ("| case | dtype | provider | median ms | GB/s | % of copy BW | peak extra MiB "
            "| vs eager | ok |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['case']} | {r['dtype']} | {r['provider']} | {r['error']} "
                         "| | | | | |")
            continue
        lines.append(
            f"| {r['case']} | {r['dtype']} | {r['provider']} | {r['ms']:.3f} | {r['gbps']:.0f} "
            f"| {100 * r['frac']:.0f}% | {r['peak_mib']:.0f} | {r['speedup']:.2f}x "
            f"| {'yes' if r['ok'] else 'NO'} |"
        )
    return "\n".join(lines)


def header(device_name: str, copy_gbps: float, quick: bool) -> str:
    import triton

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"## marginloss GPU benchmark\n\n"
            f"- device: {device_name}\n- torch {torch.__version__}, triton {triton.__version__}\n"
            f"- date: {now}\n- copy bandwidth (1 GiB dst.copy_(src), read + write): "
            f"{copy_gbps:.0f} GB/s\n"
            f"- step: forward + backward, median of CUDA-event timings"
            f"{' (--quick: smoke sizes, not for the record)' if quick else ''}\n")


# ----------------------------------------------------------------------------------------------
# GPU parts


def time_ms(fn: Callable[[], object], warmup: int, rep: int) -> float:
    """Median milliseconds of ``fn`` over ``rep`` runs, each timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    events = []
    for _ in range(rep):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events)


def copy_bandwidth(warmup: int, rep: int) -> float:
    """GB/s of ``dst.copy_(src)`` on 1 GiB buffers, counting the read and the write."""
    def timed_copy() -> tuple[int, float]:
        src = torch.empty(1 << 28, dtype=torch.float32, device="cuda").uniform_()
        dst = torch.empty_like(src)
        return 2 * src.numel() * src.element_size(), time_ms(lambda: dst.copy_(src), warmup, rep)

    n_bytes, ms = timed_copy()
    torch.cuda.empty_cache()  # the buffers died with timed_copy's frame
    return gb_per_s(n_bytes, ms)


def make_case(case: Case, dtype: torch.dtype):
    """``(x, target)`` on the GPU, in the layout every provider accepts."""
    N, C = case.N, case.C
    x = torch.randn(N, C, device="cuda").to(dtype)
    if case.loss == "soft_margin":
        target = (torch.randint(0, 2, (N, C), device="cuda") * 2 - 1).to(dtype)
    elif case.loss == "multilabel_soft_margin":
        target = torch.randint(0, 2, (N, C), device="cuda").to(dtype)
    elif case.loss == "multi_margin":
        target = torch.randint(0, C, (N,), device="cuda")
    else:
        target = torch.full((N, C), -1, dtype=torch.long, device="cuda")
        k = case.positives
        target[:, :k] = torch.rand(N, C, device="cuda").argsort(dim=1)[:, :k]
    return x.requires_grad_(), target


def providers(loss: str) -> dict[str, Callable]:
    import marginloss.functional as F

    ours = getattr(F, f"{loss}_loss")
    theirs = getattr(TF, f"{loss}_loss")
    return {
        "marginloss": lambda x, t: ours(x, t, backend="triton", validate=False),
        "marginloss+validate": lambda x, t: ours(x, t, backend="triton", validate=True),
        "torch eager": theirs,
        "torch.compile": torch.compile(theirs),
    }


def step_fn(f: Callable, x: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    def step():
        x.grad = None
        f(x, target).backward()
    return step


def loss_and_grad(f, x, target):
    x.grad = None
    loss = f(x, target)
    loss.backward()
    out = loss.detach().float().clone(), x.grad.float().clone()
    x.grad = None
    return out


def close(a, b, dtype) -> bool:
    rtol, atol = (1e-4, 1e-6) if dtype == torch.float32 else (3e-2, 1e-3)
    return all(torch.allclose(u, v, rtol=rtol, atol=atol) for u, v in zip(a, b, strict=True))


def peak_extra_mib(step: Callable[[], None], x: torch.Tensor) -> float:
    x.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def run_case(case: Case, dtype: torch.dtype, copy_gbps: float, warmup: int, rep: int):
    x, target = make_case(case, dtype)
    n_bytes = minimal_bytes(case, x.element_size())
    fns = providers(case.loss)
    reference = loss_and_grad(fns["torch eager"], x, target)
    rows, eager_ms = [], None
    for name in ("torch eager", "marginloss", "marginloss+validate", "torch.compile"):
        row = {"case": case.label, "dtype": str(dtype).removeprefix("torch."), "provider": name}
        try:
            ok = close(loss_and_grad(fns[name], x, target), reference, dtype)
            step = step_fn(fns[name], x, target)
            ms = time_ms(step, warmup, rep)
            peak = peak_extra_mib(step, x)
        except torch.cuda.OutOfMemoryError:
            row["error"] = "out of memory"
            x.grad = None
            torch.cuda.empty_cache()
            rows.append(row)
            continue
        except Exception as exc:  # report, keep going (e.g. a compile failure)
            row["error"] = f"failed: {type(exc).__name__}"
            x.grad = None
            rows.append(row)
            continue
        x.grad = None
        if name == "torch eager":
            eager_ms = ms
        gbps = gb_per_s(n_bytes, ms)
        row.update(ms=ms, gbps=gbps, frac=gbps / copy_gbps, peak_mib=peak, ok=ok,
                   speedup=(eager_ms / ms) if eager_ms else float("nan"))
        rows.append(row)
    del x, target
    torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    parser.add_argument("--out", metavar="FILE.md", help="also write the markdown report here")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--no-sweep", action="store_true", help="skip the sweep over C")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs (default 10)")
    parser.add_argument("--rep", type=int, default=None, help="timed runs (default 50)")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("bench_gpu.py needs a CUDA device and none is available; no numbers produced.",
              file=sys.stderr)
        return 1
    try:
        import triton  # noqa: F401
    except ImportError:
        print("bench_gpu.py needs triton (pip install 'marginloss[triton]').", file=sys.stderr)
        return 1

    warmup = args.warmup if args.warmup is not None else (3 if args.quick else 10)
    rep = args.rep if args.rep is not None else (10 if args.quick else 50)
    copy_gbps = copy_bandwidth(warmup, rep)
    main_cases, sweep = cases(args.quick)
    sections = [header(torch.cuda.get_device_name(), copy_gbps, args.quick)]
    for title, todo in (("Cases", main_cases), ("Sweep over C (multilabel soft margin)", sweep)):
        if title.startswith("Sweep") and args.no_sweep:
            continue
        rows = []
        for case in todo:
            for dtype_name in args.dtypes:
                new = run_case(case, DTYPES[dtype_name], copy_gbps, warmup, rep)
                print("\n".join(format_table(new).splitlines()[2:]), file=sys.stderr, flush=True)
                rows += new
        sections.append(f"### {title}\n\n{format_table(rows)}\n")
    report = "\n".join(sections)
    print(report)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
