r"""One short GPU check for a lent CUDA machine (about 8 minutes at most): tests, then numbers.

    PYTHONPATH=src python benchmarks/gpu_check.py OUT_DIR            # e.g. "$OUT"
    PYTHONPATH=src python benchmarks/gpu_check.py OUT_DIR --dry-run  # the plan; no GPU needed
    PYTHONPATH=src python benchmarks/gpu_check.py OUT_DIR --interpret  # all of it, on the CPU,
                                                   # under Triton's interpreter, tiny sizes

Parts, in order, each in its own process with its own time limit, so that one failure or hang
does not lose the rest. Each ends with one line, ``== <part>: <status> (<seconds> s)``, status
OK, FAILED (rc N), TIMEOUT, NO TEST RAN (a pytest part that passed nothing) or SKIPPED, and
the last lines of its log:

1. ``environment``: Python, torch, CUDA, Triton, the GPU (``nvidia-smi``); then
   ``marginloss info`` (versions, devices, the backend each loss picks);
2. ``kernel tests``: ``python -m pytest tests/kernels -m gpu -q -x`` (the Triton kernels);
3. ``bench float32`` and 4. ``bench bfloat16``: ``marginloss.benchmark --device cuda`` with a
   short budget (bfloat16 without torch.compile unless ``--bf16-compile``: compiling every
   case twice may not fit); markdown appended to ``OUT_DIR/bench.md``, rows to
   ``OUT_DIR/bench.csv`` (written case by case, so a run cut short keeps what it measured);
5. ``composability tests``: ``python -m pytest tests/test_composability.py -q -x`` (on CUDA:
   CUDA graphs, compile, export; skipped if the file is absent).

Every part's full output is in ``OUT_DIR/<n>_<part>.log``; ``OUT_DIR/summary.txt`` has the
status lines. After the benchmark parts, ``OUT_DIR/report.md`` has one row per case read
back from ``bench.csv`` (so a benchmark part cut short still reports what it measured): each
implementation's step time as a percentage of the measured device copy bandwidth,

.. math::

    \mathrm{pct}_{impl} = 100 \cdot \frac{\mathrm{min\_bytes} / t_{impl}}{\mathrm{copy\_gbps}},

(``min_bytes``: read every input, target and weight once, write every input's gradient once)
and, for the cases at :math:`2^{26}` elements, the issue's goal for ours (:data:`GOALS`).
Exit status: 0 if every part passed, else 1. The total is kept under ``--total`` seconds
(default 450): a part gets at most its own limit and what is left. ``--only PART`` runs only
the parts named; ``--loss NAME`` limits the benchmark to those losses.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

ENV_SCRIPT = """
import platform, subprocess, shutil, sys
print("python", platform.python_version(), platform.platform())
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(), "threads", torch.get_num_threads())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i}", p.name, f"{p.total_memory / 2**30:.0f} GiB", f"sm_{p.major}{p.minor}")
try:
    import triton
    print("triton", triton.__version__)
except Exception as e:
    print("triton: import fails:", type(e).__name__, e)
import marginloss
print("marginloss", marginloss.__version__, marginloss.__file__)
if shutil.which("nvidia-smi"):
    print(subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout)
"""


#: The issue's goals for ours at 2^26 elements (whole training step, % of copy bandwidth).
GOALS = {"soft_margin_loss": 80.0, "multilabel_soft_margin_loss": 80.0,
         "multi_margin_loss": 80.0, "multilabel_margin_loss": 50.0}
GOAL_ELEMENTS = 1 << 26


#: ``--interpret``'s benchmark runner: Triton < 3.7's interpreter fails on every runtime loop
#: bound with NumPy >= 2.4 (triton issue 9171); apply the kernel tests' backport of the fix
#: (``tests/kernels/conftest.py``, a no-op on newer Triton), then run the benchmark.
INTERPRET_BENCH = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("kernel_conftest", sys.argv.pop(1))
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from marginloss.benchmark import main
sys.exit(main(sys.argv[2:]))
"""


@dataclass
class Part:
    """One step of the check: a command, its time limit, and when it does not apply."""

    name: str
    argv: list[str]
    limit_s: float
    skip_reason: str | None = None


def plan(out: Path, budget: float, bf16_compile: bool = False,
         interpret: bool = False, losses: list[str] | None = None) -> list[Part]:
    """The parts, in order (see the module docstring). ``interpret``: the same parts on CPU
    tensors under Triton's interpreter (the kernel tests marked ``interpret``; the benchmark
    with ``backend="triton"`` at a tiny size), to run the whole script end to end without a
    GPU."""
    device = ["--device", "cpu", "--backend", "triton", "--quick", "--n", "8", "--c", "16"] \
        if interpret else ["--device", "cuda"]
    runner = [PY, "-c", INTERPRET_BENCH, str(ROOT / "tests" / "kernels" / "conftest.py")] \
        if interpret else [PY, "-m"]
    bench = [*runner, "marginloss.benchmark", *device, "--budget", str(budget),
             "--out", str(out / "bench.md"), "--csv", str(out / "bench.csv"),
             *(a for name in losses or () for a in ("--loss", name))]
    composability = ROOT / "tests" / "test_composability.py"
    no_pytest = None if importlib.util.find_spec("pytest") else "pytest is not installed"
    return [
        Part("environment", [PY, "-c", ENV_SCRIPT], 45),
        Part("marginloss info", [PY, "-m", "marginloss", "info"], 30),
        Part("kernel tests", [PY, "-m", "pytest", "tests/kernels", "-m",
                              "interpret" if interpret else "gpu", "-q", "-x",
                              "-p", "no:cacheprovider"], 100 if not interpret else 240,
             no_pytest),
        Part("bench float32", [*bench, "--dtype", "float32"], 140),
        Part("bench bfloat16", [*bench, "--dtype", "bfloat16",
                                *([] if bf16_compile else ["--no-compile"])], 120),
        Part("composability tests", [PY, "-m", "pytest", str(composability), "-q", "-x",
                                     "-p", "no:cacheprovider"], 80,
             no_pytest or (None if composability.exists()
                           else "tests/test_composability.py is absent")),
    ]


def child_env(interpret: bool = False) -> dict[str, str]:
    """The environment of every part: the checkout's src first; Triton's interpreter only
    for ``--interpret``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def shown(argv: list[str]) -> str:
    """A command line for the logs: an inline script as ``<script>``, paths as given."""
    return " ".join("<script>" if "\n" in a else a for a in argv)


def run_part(part: Part, log: Path, limit_s: float,
             interpret: bool = False) -> tuple[str, float]:
    """Run one part with its output in ``log``; return (status line, seconds)."""
    start = time.monotonic()
    with log.open("w") as f:
        f.write(f"$ {shown(part.argv)}\n")
        f.flush()
        proc = subprocess.Popen(part.argv, cwd=ROOT, env=child_env(interpret), stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return f"TIMEOUT after {limit_s:.0f} s", time.monotonic() - start
    status = "OK" if rc == 0 else f"FAILED (rc {rc})"
    if rc == 0 and "pytest" in part.argv and " passed" not in tail(log, 3):
        status = "NO TEST RAN (all skipped or deselected?)"
    return status, time.monotonic() - start


def _kill_group(proc: subprocess.Popen) -> None:
    """End the part's process and the processes it started (its own session), by id."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text[-lines:])


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def copy_report(csv_path: Path) -> str:
    """``report.md``: every case of ``csv_path`` with each implementation's step as a % of
    the copy bandwidth measured in the same run, and the goal at 2^26 elements."""
    try:
        with csv_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        return f"(no benchmark rows: {e})"
    head = ["case", "dtype", "backend", "copy GB/s", "ours ms", "eager ms", "compile ms",
            "ours %copy", "eager %copy", "compile %copy", "goal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        copy_gbps, n_bytes = _float(r.get("copy_gbps")), _float(r.get("min_bytes"))
        cells = [r.get("case", ""), r.get("dtype", ""), r.get("backend", ""),
                 f"{copy_gbps:.0f}" if copy_gbps else "n/a"]
        pct = {}
        for impl in ("ours", "eager", "compile"):
            ms = _float(r.get(f"{impl}_ms"))
            cells.append(f"{ms:.3f}" if ms else "n/a")
            if ms and copy_gbps and n_bytes:
                pct[impl] = 100.0 * n_bytes / (ms * 1e-3) / 1e9 / copy_gbps
        cells += [f"{pct[i]:.1f}%" if i in pct else "n/a" for i in ("ours", "eager", "compile")]
        goal = GOALS.get(r.get("loss", ""))
        elements = int(_float(r.get("n")) or 0) * int(_float(r.get("c")) or 0)
        if goal is None or elements != GOAL_ELEMENTS:
            cells.append("-")
        elif "ours" not in pct:
            cells.append(f">= {goal:.0f}%: n/a")
        else:
            cells.append(f">= {goal:.0f}%: {'met' if pct['ours'] >= goal else 'MISSED'}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dry_run(parts: list[Part], out: Path) -> int:
    """Check what can be checked without a GPU: the benchmark's options parse, the test
    paths exist, the output directory is writable; print the plan."""
    sys.path.insert(0, str(ROOT / "src"))
    ok = True
    try:
        from marginloss import benchmark

        for part in parts:
            if "marginloss.benchmark" in part.argv:
                i = part.argv.index("marginloss.benchmark") + 1
                benchmark.build_parser().parse_args(part.argv[i:])
        print("benchmark options: parse")
    except BaseException as e:  # noqa: BLE001 - SystemExit from argparse included
        ok = False
        print(f"benchmark options: FAIL ({type(e).__name__}: {e})")
    for path in ("tests/kernels", "tests/test_composability.py"):
        print(f"{path}: {'present' if (ROOT / path).exists() else 'absent'}")
    try:
        (out / ".write_test").write_text("ok")
        (out / ".write_test").unlink()
        print(f"{out}: writable")
    except OSError as e:
        ok = False
        print(f"{out}: not writable ({e})")
    print("plan:")
    total = 0.0
    for part in parts:
        total += part.limit_s
        note = f"  (skipped: {part.skip_reason})" if part.skip_reason else ""
        print(f"  {part.name:<20} <= {part.limit_s:>4.0f} s  {shown(part.argv)}{note}")
    print(f"  at most {total:.0f} s in all (and --total)")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=os.environ.get("OUT", "gpu_check_out"),
                        help="directory for the logs, bench.md and bench.csv (default: $OUT)")
    parser.add_argument("--budget", type=float, default=0.2,
                        help="benchmark seconds per implementation and case (default 0.2)")
    parser.add_argument("--total", type=float, default=450,
                        help="seconds for everything (default 450)")
    parser.add_argument("--bf16-compile", action="store_true",
                        help="also time torch.compile in bfloat16 (off: compiling every case "
                             "twice may not fit the time)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the plan without running it (no GPU needed)")
    parser.add_argument("--interpret", action="store_true",
                        help="run every part on CPU tensors under Triton's interpreter, at tiny "
                             "sizes (the end-to-end check of this script without a GPU)")
    parser.add_argument("--only", action="append", default=None, metavar="PART",
                        help="run only this part (repeatable; e.g. 'bench float32' or "
                             "bench_float32)")
    parser.add_argument("--loss", action="append", default=None, metavar="NAME",
                        help="benchmark only this loss (repeatable)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    parts = everything = plan(out, args.budget, args.bf16_compile, args.interpret, args.loss)
    if args.only:
        wanted = {name.replace("_", " ") for name in args.only}
        unknown = wanted - {p.name for p in parts}
        if unknown:
            parser.error(f"--only: no part {', '.join(sorted(unknown))} "
                         f"(parts: {', '.join(p.name for p in parts)})")
        parts = [p for p in parts if p.name in wanted]
    if args.dry_run:
        rc = dry_run(parts, out)
        status, seconds = run_part(everything[0], out / "0_environment.log",
                                   everything[0].limit_s)
        print(f"== environment: {status} ({seconds:.0f} s)\n{tail(out / '0_environment.log')}")
        return rc
    deadline = time.monotonic() + args.total
    summary, failed = [], False
    for i, part in enumerate(parts):
        log = out / f"{i}_{part.name.replace(' ', '_')}.log"
        left = deadline - time.monotonic()
        if part.skip_reason or left < 10:
            line = f"== {part.name}: SKIPPED ({part.skip_reason or 'no time left'})"
            print(line, flush=True)
            summary.append(line)
            continue
        print(f"== {part.name}: running (at most {min(part.limit_s, left):.0f} s) ...",
              flush=True)
        try:
            status, seconds = run_part(part, log, min(part.limit_s, left), args.interpret)
        except Exception as e:  # noqa: BLE001 - e.g. cannot start the process: say so, go on
            status, seconds = f"FAILED to start ({type(e).__name__}: {e})", 0.0
        failed |= status != "OK"
        line = f"== {part.name}: {status} ({seconds:.0f} s)"
        print(f"{line}\n{tail(log)}\n", flush=True)
        summary.append(line)
    try:
        (out / "summary.txt").write_text("\n".join(summary) + "\n")
    except OSError as e:
        print(f"cannot write summary.txt: {e}")
    print("\n".join(["== summary", *summary]))
    if (out / "bench.csv").exists():
        report = copy_report(out / "bench.csv")
        try:
            (out / "report.md").write_text(report + "\n")
        except OSError as e:
            print(f"cannot write report.md: {e}")
        print(f"== % of copy bandwidth (report.md)\n{report}")
    for name in ("bench.md", "bench.csv", "report.md"):
        if (out / name).exists():
            print(f"{out / name}: {(out / name).stat().st_size} bytes")
    if (out / "bench.md").exists():
        print((out / "bench.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
