"""Fused linear heads vs the unfused head: time and peak extra memory of one training step.

    python benchmarks/linear_heads.py                      # the issue's case + the C sweep
    python benchmarks/linear_heads.py --no-sweep --rounds 5
    python benchmarks/linear_heads.py --sweep-only --plot docs/linear_heads.png
    python benchmarks/linear_heads.py --help

One step is ``x.grad = W.grad = None; loss = head(x, W, y); loss.backward()`` (float32) for:

* ``fused``: ``marginloss.functional.linear_<loss>`` (defaults: chunk size picked from N);
* ``eager+ours``: ``F.linear`` then ``marginloss.functional.<loss>`` on the full logits;
* ``eager+torch``: ``F.linear`` then ``torch.nn.functional.<loss>``;
* ``compile+torch`` (``--compile``): ``torch.compile`` of the latter;
* for scale, torch 2.13's own fused head for softmax cross-entropy,
  ``F.linear_cross_entropy`` with ``options=LinearCrossEntropyOptions(batch_chunk_size=N/4)``
  (chunks of rows; its default "auto" policy would pick 1-row chunks here) and with
  ``options=None`` (its unfused reference), on int64 class targets.

Timing: the implementations take turns, ``--rounds`` times, one step each (rotating the
order, so background load hits them alike); medians are reported, and the ratio to
``eager+ours`` is the median of the per-round ratios. Memory: a second pass, one step each,
after the timing: the growth of the process's peak resident set during the step
(``marginloss.benchmark.peak_extra_bytes``, glibc set to hand every freed block back), given
twice: ``peak`` includes the gradients the step leaves behind (``x.grad``, ``W.grad``: the
same for every head, ``W.grad`` alone is C x H), ``transient`` excludes them (what the head
costs beyond the gradients any training step keeps).

Every implementation is checked against ``eager+ours`` (loss and both gradients) before it is
timed. The sweep (``--sweep``) times the fused and the unfused (``eager+ours``) head over C and
measures their memory, and ``--plot`` draws both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

_SRC = Path(__file__).resolve().parents[1] / "src"
if (_SRC / "marginloss").is_dir():
    sys.path.insert(0, str(_SRC))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import marginloss.functional as MF  # noqa: E402
from marginloss import benchmark  # noqa: E402

LOSSES = ("multilabel_soft_margin_loss", "multi_margin_loss", "multilabel_margin_loss")


def make_data(loss: str, n: int, h: int, c: int, positives: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, generator=g).requires_grad_()
    w = (torch.randn(c, h, generator=g) / h ** 0.5).requires_grad_()
    cols = torch.randint(0, c, (n, positives), generator=g)
    if loss == "multilabel_soft_margin_loss":
        y = torch.zeros(n, c).scatter_(1, cols, 1.0)
    elif loss == "multi_margin_loss":
        y = cols[:, 0].contiguous()
    else:
        y = torch.full((n, c), -1, dtype=torch.long)
        y[:, :positives] = cols  # (duplicates count twice, as in torch; fine for timing)
    return x, w, y


def implementations(loss: str, y, with_compile: bool, with_ce: bool) -> dict:
    fused = getattr(MF, f"linear_{loss}")
    ours = getattr(MF, loss)
    theirs = getattr(F, loss)
    impls = {
        "fused": lambda x, w: fused(x, w, y),
        "eager+ours": lambda x, w: ours(F.linear(x, w), y),
        "eager+torch": lambda x, w: theirs(F.linear(x, w), y),
    }
    if with_compile:
        benchmark.compile_fresh(lambda: None)  # (resets dynamo)
        compiled = torch.compile(lambda x, w: theirs(F.linear(x, w), y), dynamic=False)
        impls["compile+torch"] = compiled
    if with_ce:
        yc = y if y.dim() == 1 else y.argmax(1) if y.is_floating_point() else y[:, 0].clamp_min(0)
        # batch chunks of N/4 rows: its "auto" policy picks 1-row chunks for these float32
        # CPU shapes (aspect_ratio:2 -> next_pow2(ceil(N / ceil(C / H))) / 2), a GEMV per row
        opts = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=max(1, y.shape[0] // 4))
        impls["torch linear_cross_entropy (chunked)"] = (
            lambda x, w: F.linear_cross_entropy(x, w, yc, options=opts))
        impls["torch linear_cross_entropy (options=None)"] = (
            lambda x, w: F.linear_cross_entropy(x, w, yc))
    return impls


def step_fn(fn, x, w):
    def step():
        x.grad = None
        w.grad = None
        fn(x, w).backward()
    return step


def check(impls: dict, x, w) -> dict:
    """Loss and gradients of each implementation vs eager+ours (cross entropy: not compared)."""
    out = {}
    ref = None
    for name, fn in impls.items():
        x.grad = w.grad = None
        loss = fn(x, w)
        loss.backward()
        got = (loss.detach(), x.grad.clone(), w.grad.clone())
        if name == "eager+ours":
            ref = got
        out[name] = got
    x.grad = w.grad = None
    errors = {}
    for name, got in out.items():
        if "cross_entropy" in name:
            continue
        errors[name] = max(float((a - b).abs().max() / (b.abs().max() + 1e-30))
                           for a, b in zip(got, ref))
        # torch's own loss sums C float32 terms in order (1e-3 off at C = 2e5): looser there
        if errors[name] > (1e-2 if "torch" in name else 1e-4):
            raise AssertionError(f"{name} differs from eager+ours: relative error "
                                 f"{errors[name]:.2e}")
    return errors


def time_rounds(steps: dict, rounds: int) -> dict[str, list[float]]:
    names = list(steps)
    times: dict[str, list[float]] = {k: [] for k in names}
    for name in names:  # warm-up (compiles, builds the native library)
        steps[name]()
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def memory(steps: dict, x, w) -> dict[str, tuple[float, float]]:
    grads_left = (x.numel() + w.numel()) * x.element_size()
    out = {}
    for name, step in steps.items():
        peak = benchmark.peak_extra_bytes(step, torch.device("cpu"),
                                          reset=lambda: setattr(x, "grad", None) or
                                          setattr(w, "grad", None))
        x.grad = w.grad = None
        out[name] = (peak / 2**20, (peak - grads_left) / 2**20) if peak is not None else (
            float("nan"), float("nan"))
    return out


def main_case(args) -> list[dict]:
    rows = []
    for loss in args.loss:
        x, w, y = make_data(loss, args.n, args.h, args.c, args.positives)
        impls = implementations(loss, y, args.compile, args.cross_entropy and
                                loss == "multilabel_soft_margin_loss")
        errors = check(impls, x, w)
        steps = {k: step_fn(f, x, w) for k, f in impls.items()}
        times = time_rounds(steps, args.rounds)
        base = times["eager+ours"]
        for name, ts in times.items():
            rows.append({"loss": loss, "impl": name, "N": args.n, "H": args.h, "C": args.c,
                         "ms": statistics.median(ts) * 1e3,
                         "ms_all": [round(t * 1e3, 1) for t in ts],
                         "x_eager_ours": statistics.median(a / b for a, b in zip(ts, base)),
                         "max_rel_err": errors.get(name)})
            print(json.dumps(rows[-1]), flush=True)
        benchmark.exact_rss_allocator()
        mem = memory(steps, x, w)
        for row in rows:
            if row["loss"] == loss:
                row["peak_mb"], row["transient_mb"] = mem[row["impl"]]
        print(json.dumps({"loss": loss, "memory_mb": mem}), flush=True)
        del steps, impls
    return rows


def sweep(args) -> list[dict]:
    rows = []
    loss = args.sweep_loss
    benchmark.exact_rss_allocator()
    for c in args.sweep_c:
        x, w, y = make_data(loss, args.n, args.h, c, args.positives)
        impls = implementations(loss, y, False, False)
        names = ["fused"] + (["eager+ours"] if c <= args.sweep_unfused_max else [])
        steps = {k: step_fn(impls[k], x, w) for k in names}
        reps = max(1, round(args.sweep_budget / max(c, 1)))
        times = time_rounds(steps, min(reps, args.rounds))
        mem = memory(steps, x, w)
        for name in names:
            rows.append({"loss": loss, "impl": name, "N": args.n, "H": args.h, "C": c,
                         "ms": statistics.median(times[name]) * 1e3,
                         "ms_all": [round(t * 1e3, 1) for t in times[name]],
                         "peak_mb": mem[name][0], "transient_mb": mem[name][1]})
            print(json.dumps(rows[-1]), flush=True)
        del steps, impls, x, w, y
    return rows


def plot(rows: list[dict], path: str, env: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for impl, style in (("fused", "o-"), ("eager+ours", "s--")):
        rs = [r for r in rows if r["impl"] == impl]
        if not rs:
            continue
        cs = [r["C"] for r in rs]
        label = "fused head (marginloss)" if impl == "fused" else "nn.Linear + loss (unfused)"
        a.plot(cs, [r["ms"] / 1e3 for r in rs], style, label=label)
        b.plot(cs, [r["transient_mb"] for r in rs], style, label=label)
    for ax in (a, b):
        ax.set_xscale("log")
        ax.set_xlabel("classes C")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    a.set_yscale("log")
    a.set_ylabel("seconds per training step")
    b.set_ylabel("extra memory beyond x.grad and W.grad (MiB)")
    b.set_yscale("symlog", linthresh=10)
    r0 = rows[0]
    fig.suptitle(f"{r0['loss']}, N={r0['N']}, H={r0['H']}, float32: {env}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loss", action="append", choices=LOSSES, help="(repeatable) default: all")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--h", type=int, default=256)
    p.add_argument("--c", type=int, default=200_000)
    p.add_argument("--positives", type=int, default=16, help="labels per sample")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="add torch.compile of the unfused head")
    p.add_argument("--no-cross-entropy", dest="cross_entropy", action="store_false")
    p.add_argument("--no-sweep", dest="sweep", action="store_false")
    p.add_argument("--sweep-only", action="store_true")
    p.add_argument("--sweep-loss", default="multilabel_soft_margin_loss", choices=LOSSES)
    p.add_argument("--sweep-c", type=int, nargs="+",
                   default=[10_000, 31_623, 100_000, 316_228, 1_000_000])
    p.add_argument("--sweep-unfused-max", type=int, default=316_228,
                   help="largest C the unfused head runs at in the sweep")
    p.add_argument("--sweep-budget", type=float, default=400_000,
                   help="rounds per sweep point: budget / C (at least 1, at most --rounds)")
    p.add_argument("--plot", default=None, help="PNG of the sweep")
    p.add_argument("--json", default=None, help="write every row here")
    args = p.parse_args(argv)
    args.loss = args.loss or list(LOSSES)
    env = (f"{benchmark._cpu_name()}, {torch.get_num_threads()} threads, torch "
           f"{torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(env, flush=True)
    rows = [] if args.sweep_only else main_case(args)
    sweep_rows = sweep(args) if args.sweep or args.sweep_only else []
    if args.plot and sweep_rows:
        plot(sweep_rows, args.plot, env)
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "main": rows, "sweep": sweep_rows},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
