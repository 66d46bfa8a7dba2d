"""The ``marginloss`` command (also ``python -m marginloss``).

Subcommands:

* ``demo``: train every loss on real data shipped inside scikit-learn and river; print a table
  of held-out metrics and times (``--json`` for JSON, ``--plot FILE.png`` for the curves).
* ``guide FILE``: read labels from a ``.npy``, ``.pt``, ``.csv`` or ``.txt`` file, name their
  convention, the loss that fits, why, and the line of code that converts them.
* ``bench``: the benchmark table on this machine's device (CPU, or CUDA when present).
* ``info``: versions, devices, and which backend each loss would use here, and why.

Every subcommand imports what it needs when it runs: ``marginloss --help`` imports no
optional dependency.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    from marginloss import __version__

    parser = argparse.ArgumentParser(
        prog="marginloss",
        description="Margin-family losses for PyTorch: demo, label guide, benchmark, info.",
    )
    parser.add_argument("--version", action="version", version=f"marginloss {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="train every loss on real data and print held-out metrics",
        description="Train small models with every margin loss and its probabilistic baseline "
                    "on real data that ships inside scikit-learn and river (breast cancer, "
                    "digits, Yeast); print held-out metrics and times.")
    demo.add_argument("--quick", action="store_true",
                      help="a third of the epochs (CI smoke test, a few seconds)")
    demo.add_argument("--json", action="store_true", help="print the report as JSON")
    demo.add_argument("--plot", metavar="FILE.png", help="save the training curves (matplotlib)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the splits and weights")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    demo.add_argument("--check", action="store_true",
                      help="exit with status 1 if a required held-out result is not reached")

    guide = sub.add_parser(
        "guide", help="name the label convention of a file and the loss that fits it",
        description="Read labels from FILE (.npy, .pt, .csv, .txt), name their convention, the "
                    "loss that fits it, why, and the line of code that converts them. Lines "
                    "of different lengths in a .txt/.csv file are read as label sets.")
    guide.add_argument("file", metavar="FILE")
    guide.add_argument("--multi-label", dest="multi_label", action="store_const", const=True,
                       default=None, help="a sample can have several labels")
    guide.add_argument("--single-label", dest="multi_label", action="store_const", const=False,
                       help="every sample has exactly one label")
    guide.add_argument("--num-classes", type=int, default=None, metavar="C",
                       help="number of classes (the width of the model's output)")
    guide.add_argument("--prefer", choices=("auto", "margin", "probabilistic"), default="auto",
                       help="put a margin or a probabilistic loss first")
    guide.add_argument("--key", default=None,
                       help="for a .pt file holding a dict: the entry with the labels")

    bench = sub.add_parser(
        "bench", help="run the benchmark table on this machine's device",
        description="Run marginloss.benchmark; extra arguments are passed on to it.")
    bench.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    bench.add_argument("--quick", action="store_true", help="a reduced, fast benchmark")

    sub.add_parser("info", help="versions, devices, and the backend each loss would use")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``marginloss`` command with ``argv`` (default: ``sys.argv[1:]``); return the
    exit status."""
    parser = _build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    handler = {"demo": _demo, "guide": _guide, "bench": _bench, "info": _info}[args.command]
    try:
        return handler(args, extra)
    except BrokenPipeError:  # e.g. `marginloss demo | head`
        return 0


# ----------------------------------------------------------------------------------------------
# demo


def _demo(args: argparse.Namespace, extra: list[str]) -> int:
    from marginloss import demo

    try:
        report = demo.run(quick=args.quick, seed=args.seed, progress=not args.no_progress)
    except demo.MissingDependencyError as e:
        print(f"marginloss demo: {e}", file=sys.stderr)
        return 2
    if args.plot:
        try:
            path = demo.save_plot(report, args.plot)
        except demo.MissingDependencyError:
            print("marginloss demo: --plot needs matplotlib: pip install matplotlib",
                  file=sys.stderr)
            return 2
        report["plot"] = str(path)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(demo.format_report(report))
        if args.plot:
            print(f"training curves saved to {report['plot']}")
    return 1 if args.check and not report["passed"] else 0


# ----------------------------------------------------------------------------------------------
# guide


class _ReadError(Exception):
    pass


def _parse_number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() \
        else value


def _read_text(path: Path):
    """Numbers from a .csv/.txt file: a tensor for a table, a list of sets for ragged rows."""
    import torch

    rows: list[list[float | int]] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f.strip() for f in (line.split(",") if "," in line else
                                       line.replace(";", " ").split())]
        fields = [f for f in fields if f != ""]
        try:
            rows.append([_parse_number(f) for f in fields])
        except ValueError:
            if not rows:  # a header line
                continue
            raise _ReadError(f"{path}: line {lineno} is not numeric: {raw.strip()!r}") from None
    if not rows:
        raise _ReadError(f"{path}: no numbers found")
    if len({len(r) for r in rows}) > 1:
        bad = [v for r in rows for v in r if not isinstance(v, int)]
        if bad:
            raise _ReadError(f"{path}: rows of different lengths are read as label sets, which "
                             f"must hold integer class indices; found {bad[0]!r}")
        return [set(r) for r in rows]  # ragged rows: label sets
    is_int = all(isinstance(v, int) for r in rows for v in r)
    t = torch.tensor(rows, dtype=torch.int64 if is_int else torch.float32)
    return t.reshape(-1) if t.shape[1] == 1 else t


def _read_labels(path: Path, key: str | None):
    import torch

    suffix = path.suffix.lower()
    if suffix == ".npy":
        import numpy as np

        arr = np.load(path, allow_pickle=False)
        if arr.dtype.kind not in "biuf":
            raise _ReadError(f"{path}: a {arr.dtype} array does not hold numeric labels")
        return torch.from_numpy(np.ascontiguousarray(arr))
    if suffix in (".pt", ".pth"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if key is not None:
                if key not in obj:
                    raise _ReadError(f"{path}: no key {key!r}; keys: {sorted(map(str, obj))}")
                obj = obj[key]
            elif len(tensors) == 1:
                obj = next(iter(tensors.values()))
            else:
                for name in ("target", "targets", "labels", "label", "y"):
                    if name in tensors:
                        obj = tensors[name]
                        break
                else:
                    raise _ReadError(f"{path}: a dict of {len(tensors)} tensors; pick the labels "
                                     f"with --key (keys: {sorted(map(str, obj))})")
        if isinstance(obj, list | tuple) and not isinstance(obj, torch.Tensor):
            return list(obj)
        if not isinstance(obj, torch.Tensor):
            raise _ReadError(f"{path}: holds a {type(obj).__name__}, not a tensor of labels")
        return obj
    if suffix in (".csv", ".txt", ".tsv"):
        return _read_text(path)
    raise _ReadError(f"{path}: unsupported file type {suffix!r} (use .npy, .pt, .csv or .txt)")


def _guide(args: argparse.Namespace, extra: list[str]) -> int:
    from marginloss import LabelError, recommend

    path = Path(args.file)
    if not path.is_file():
        print(f"marginloss guide: no such file: {path}", file=sys.stderr)
        return 2
    try:
        target = _read_labels(path, args.key)
        rec = recommend(target, multi_label=args.multi_label, num_classes=args.num_classes,
                        prefer=args.prefer)
    except LabelError as e:
        print(f"marginloss guide: {path}: {e}", file=sys.stderr)
        return 1
    except (_ReadError, OSError, ValueError, TypeError, RuntimeError) as e:
        print(f"marginloss guide: {e}", file=sys.stderr)
        return 1
    desc = rec.description
    print(f"file:        {path}")
    print(f"convention:  {desc.summary} [{desc.convention}]")
    print(f"evidence:    dtype {desc.dtype}, shape {desc.shape}, values {desc.values}. "
          f"{desc.evidence}")
    if desc.alternatives:
        from marginloss.labels import CONVENTIONS

        print("could be:    " + "; ".join(CONVENTIONS[a] for a in desc.alternatives))
    print(f"loss:        {rec.module}.{rec.loss}")
    print(f"why:         {rec.reason}")
    print(f"convert:     {rec.code}")
    print(f"then:        {rec.loss_code}")
    if rec.alternative:
        print(f"alternative: {rec.alternative}")
    return 0


# ----------------------------------------------------------------------------------------------
# bench


def _bench(args: argparse.Namespace, extra: list[str]) -> int:
    try:
        from marginloss import benchmark
    except ImportError as e:
        if getattr(e, "name", None) not in ("marginloss.benchmark", None):
            raise
        print("marginloss bench: this build of marginloss has no benchmark module "
              "(marginloss.benchmark).", file=sys.stderr)
        return 2
    argv = ["--device", args.device] + (["--quick"] if args.quick else []) + extra
    return int(benchmark.main(argv) or 0)


# ----------------------------------------------------------------------------------------------
# info


def _version_of(module: str) -> str:
    import importlib
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return "not installed"
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - report any import failure, do not crash
        return f"installed, import fails: {type(e).__name__}: {e}"
    return str(getattr(mod, "__version__", "installed"))


def _info(args: argparse.Namespace, extra: list[str]) -> int:
    import importlib.util
    import os

    import torch

    import marginloss
    from marginloss._dispatch import select_backend

    print(f"marginloss  {marginloss.__version__}  ({Path(marginloss.__file__).parent})")
    print(f"python      {platform.python_version()} ({platform.platform()})")
    print(f"torch       {torch.__version__}")
    print(f"numpy       {_version_of('numpy')}")
    print(f"triton      {_version_of('triton')}")
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("            TRITON_INTERPRET=1 (Triton's CPU interpreter is on)")
    from marginloss import _native

    problem = _native.unavailable()  # builds the native kernels if they are not cached yet
    print(f"native      {'built, in ' + str(_native.cache_dir()) if problem is None else problem}")
    demo_deps = ", ".join(f"{m} {'yes' if importlib.util.find_spec(m) else 'no'}"
                          for m in ("sklearn", "river", "matplotlib"))
    print(f"demo deps   {demo_deps}")
    print()
    print("devices:")
    print(f"  cpu       {os.cpu_count()} logical CPUs, torch uses {torch.get_num_threads()} "
          f"threads")
    devices = ["cpu"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"  cuda:{i}    {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability "
                  f"{p.major}.{p.minor}, CUDA {torch.version.cuda}")
        devices.append("cuda")
    else:
        print("  cuda      not available"
              + ("" if torch.version.cuda else " (this torch build has no CUDA)"))
    print()
    print('backend each loss uses with backend="auto":')
    losses = ("soft_margin_loss", "multilabel_soft_margin_loss", "multi_margin_loss",
              "multilabel_margin_loss")
    for dev in devices:
        for dtype in (torch.float32, torch.bfloat16, torch.float64) if dev == "cuda" else \
                (torch.float32,):
            example = torch.empty(2, 3, device=dev, dtype=dtype)
            for loss in losses:
                target = torch.zeros_like(example) if "soft" in loss else None
                name, reason = select_backend("auto", example, loss, target)
                print(f"  {loss:<28} {dev:<4} {str(dtype).replace('torch.', ''):<8} -> "
                      f"{name}: {reason}")
    return 0
