"""The ``marginloss`` command (also ``python -m marginloss``).

Subcommands:

* ``demo``: train every loss on real data shipped inside scikit-learn and river; print a table
  of held-out metrics and times (``--json`` for JSON, ``--plot FILE.png`` for the curves).
  ``demo --extreme``: the fused linear heads on a generated 100,000-label data set in the XC
  format (:mod:`marginloss.demo_extreme`): held-out precision@k and the head's memory.
* ``guide FILE``: read labels from a ``.npy``, ``.pt``, ``.csv`` or ``.txt`` file, name their
  convention, the loss that fits, why, and the line of code that converts them
  (:mod:`marginloss.guide`). A file it cannot read as labels gets a one-line error and exit
  status 2; labels in no convention, or contradicting a hint, exit status 1.
* ``bench``: the benchmark table on this machine's device (CPU, or CUDA when present).
* ``info``: versions, devices, and which backend each loss would use here, and why.

Every subcommand imports what it needs when it runs: ``marginloss --help`` imports no
optional dependency.
"""

from __future__ import annotations

import argparse
import json
import platform
import stat
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    from marginloss import __version__, benchmark

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
                    "digits, Yeast); print held-out metrics and times. With --extreme: "
                    "train the three fused linear heads on a generated data set of 100,000 "
                    "power-law labels, written and read back in the Extreme Classification "
                    "Repository's format, and print held-out precision@1/3/5 and the memory "
                    "of the head (needs only torch).")
    demo.add_argument("--quick", action="store_true",
                      help="a third of the epochs (CI smoke test, a few seconds)")
    demo.add_argument("--json", action="store_true", help="print the report as JSON")
    demo.add_argument("--plot", metavar="FILE.png", help="save the training curves (matplotlib)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the splits and weights")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    extreme = demo.add_argument_group(
        "extreme classification (--extreme)",
        "Generate a power-law labelled data set with sparse features, write it in the XC "
        "format and read it back (marginloss.xc), train an EmbeddingBag encoder with each "
        "fused head (LinearMultiLabelSoftMarginLoss, LinearMultiMarginLoss, "
        "LinearMultiLabelMarginLoss) on CSR label rows, and report held-out precision@1/3/5 "
        "beside the memory a dense head would need (computed) and what the fused head used "
        "(measured). About a minute of CPU time at the default sizes: under two minutes on 2 "
        "CPU cores.")
    extreme.add_argument("--extreme", action="store_true",
                         help="run the extreme classification demo instead")
    for flag, metavar, default, what in (
            ("--samples", "N", 20_000, "samples (a fifth held out)"),
            ("--labels", "C", 100_000, "labels (classes of the head)"),
            ("--features", "F", 50_000, "sparse input features"),
            ("--hidden", "H", 64, "width of the embedding (the head's input)"),
            ("--epochs", "E", 1, "passes over the training samples"),
            ("--batch-size", "B", 256, "samples per training step")):
        extreme.add_argument(flag, type=benchmark.positive_int, default=None, metavar=metavar,
                             help=f"{what} (default: {default:,})")
    extreme.add_argument("--data-file", metavar="PATH", default=None,
                         help="keep the generated XC file at PATH (default: a temporary file)")

    guide = sub.add_parser(
        "guide", help="name the label convention of a file and the loss that fits it",
        description="Read labels from FILE (.npy, .pt, .csv, .txt), name their convention, the "
                    "loss that fits it, why, and the line of code that converts them. Lines "
                    "of different lengths in a .txt/.csv file are read as label sets.",
        epilog="Exit status: 0 when a loss is recommended; 1 when the labels were read but fit "
               "no label convention (scores, NaN, negative values) or contradict a hint "
               "(--multi-label, --single-label, --num-classes); 2 when FILE cannot be read as "
               "labels (missing, unreadable, empty, not in the format its extension names, "
               "holding no labels) or the command line is wrong. Errors are one line on "
               "stderr that names FILE.")
    guide.add_argument("file", metavar="FILE")
    guide.add_argument("--multi-label", dest="multi_label", action="store_const", const=True,
                       default=None, help="a sample can have several labels")
    guide.add_argument("--single-label", dest="multi_label", action="store_const", const=False,
                       help="every sample has exactly one label")
    guide.add_argument("--num-classes", type=benchmark.positive_int, default=None, metavar="C",
                       help="number of classes (the width of the model's output)")
    guide.add_argument("--prefer", choices=("auto", "margin", "probabilistic"), default="auto",
                       help="put a margin or a probabilistic loss first")
    guide.add_argument("--key", default=None,
                       help="for a .pt file holding a dict: the entry with the labels")

    bench = sub.add_parser(
        "bench", help="time every loss against torch eager and torch.compile",
        description=benchmark.DESCRIPTION, epilog=benchmark.EPILOG)
    benchmark.add_arguments(bench)

    sub.add_parser("info", help="versions, devices, and the backend each loss would use")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``marginloss`` command with ``argv`` (default: ``sys.argv[1:]``); return the
    exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = {"demo": _demo, "guide": _guide, "bench": _bench, "info": _info}[args.command]
    try:
        return handler(args)
    except BrokenPipeError:  # e.g. `marginloss demo | head`
        return 0


# ----------------------------------------------------------------------------------------------
# demo


_EXTREME_ONLY = ("samples", "labels", "features", "hidden", "epochs", "batch_size", "data_file")


def _demo(args: argparse.Namespace) -> int:
    from marginloss import demo

    given = [f"--{name.replace('_', '-')}" for name in _EXTREME_ONLY
             if getattr(args, name) is not None]
    if args.extreme:
        return _demo_extreme(args)
    if given:
        print(f"marginloss demo: {', '.join(given)} only apply with --extreme", file=sys.stderr)
        return 2
    try:
        report = demo.run(quick=args.quick, seed=args.seed, progress=not args.no_progress)
    except demo.MissingDependencyError as e:
        print(e, file=sys.stderr)
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
        demo.print_report(report)
        if args.plot:
            print(f"training curves saved to {report['plot']}")
    return 0


def _demo_extreme(args: argparse.Namespace) -> int:
    import dataclasses

    from marginloss import demo_extreme

    if args.quick or args.plot:
        print("marginloss demo: --quick and --plot do not apply to --extreme (give smaller "
              "--samples/--labels for a quick run)", file=sys.stderr)
        return 2
    sizes = {name: getattr(args, name) for name in _EXTREME_ONLY[:-1]
             if getattr(args, name) is not None}
    settings = dataclasses.replace(demo_extreme.Settings(), seed=args.seed, **sizes)
    try:
        report = demo_extreme.run(settings, data_file=args.data_file,
                                  progress=not args.no_progress)
    except (ValueError, OSError) as e:
        print(f"marginloss demo --extreme: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        demo_extreme.print_report(report)
    return 0


# ----------------------------------------------------------------------------------------------
# guide


_LABEL_KEYS = ("target", "targets", "labels", "label", "y")


class _ReadError(Exception):
    """The file cannot be read as labels; the message says why, in one line (path aside)."""


def _guide(args: argparse.Namespace) -> int:
    from marginloss.errors import LabelError
    from marginloss.guide import recommend

    path = Path(args.file)
    try:
        target = _read_labels(path, args.key)
    except _ReadError as e:
        return _guide_error(path, str(e), 2)
    except Exception as e:  # noqa: BLE001 - a file the readers did not foresee: no traceback
        return _guide_error(path, f"cannot read labels from it ({_first_line(e)})", 2)
    try:
        rec = recommend(target, multi_label=args.multi_label, num_classes=args.num_classes,
                        prefer=args.prefer)
    except LabelError as e:  # read, but in no convention, or contradicting a hint
        return _guide_error(path, str(e), 1)
    except Exception as e:  # noqa: BLE001 - e.g. describe's DtypeError: not numbers
        return _guide_error(path, f"cannot read labels from it ({_first_line(e)})", 2)
    print(f"file:        {path}")
    print(rec)
    return 0


def _guide_error(path: Path, message: str, status: int) -> int:
    """One line on stderr that names the file and what is wrong; return the exit status."""
    message = " ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"marginloss guide: {path}: {message}", file=sys.stderr)
    return status


def _first_line(e: BaseException) -> str:
    """An exception as one short line: ``Type: first line of its message``."""
    text = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    text = text.split(". ", 1)[0]  # the first sentence
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _read_labels(path: Path, key: str | None) -> object:
    """The labels in ``path``: a tensor, or a list of label sets. Raises _ReadError."""
    loaders = {".npy": _load_npy, ".pt": _load_pt, ".pth": _load_pt, ".csv": _load_text,
               ".tsv": _load_text, ".txt": _load_text}
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise _ReadError("no such file") from None
    except OSError as e:
        raise _ReadError(f"cannot read it: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise _ReadError("is a directory, not a file of labels")
    if not stat.S_ISREG(mode):
        raise _ReadError("is not a regular file")
    suffix = path.suffix.lower()
    if suffix not in loaders:
        raise _ReadError(f"unsupported file type {suffix!r} (use .npy, .pt, .csv or .txt)"
                         if suffix else "has no extension: name it .npy, .pt, .csv or .txt "
                                        "after its format")
    if key is not None and loaders[suffix] is not _load_pt:
        raise _ReadError("--key applies to .pt files only (a dict of tensors)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _ReadError(f"cannot read it: {e.strerror or e}") from None
    if not data:
        raise _ReadError("is empty (0 bytes): no labels")
    return loaders[suffix](data, key)


def _text_hint(data: bytes) -> str:
    """For a binary format holding text: say so, and name the extension that reads it."""
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return "; it looks like text: name it .txt or .csv" if b"\0" not in data[:4096] else ""


def _load_npy(data: bytes, key: str | None) -> object:
    import io

    import numpy as np
    import torch

    if data.startswith(b"PK"):
        raise _ReadError("is a zip archive (.npz?), not a .npy array: save the labels with "
                         "numpy.save")
    if not data.startswith(b"\x93NUMPY"):
        raise _ReadError("is not a .npy file (no NumPy header)" + _text_hint(data))
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        if "Object arrays" in str(e):
            raise _ReadError("holds a NumPy object array (Python objects), which is not "
                             "loaded: save numeric labels, or label sets as lines of a .txt "
                             "file") from None
        raise _ReadError(f"is not a valid .npy file ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - truncated or corrupt: EOFError, OSError, ...
        raise _ReadError(f"is not a valid .npy file ({_first_line(e)})") from None
    kinds = {"U": "strings", "S": "bytes", "c": "complex numbers", "M": "dates", "m": "times",
             "V": "records"}
    if arr.dtype.kind not in "biuf":
        raise _ReadError(f"holds an array of {kinds.get(arr.dtype.kind, 'objects')} "
                         f"(dtype {arr.dtype}), not numeric labels")
    if arr.dtype.kind == "u" and arr.dtype.itemsize > 1:  # torch's uint16+ lack most ops
        arr = arr.astype(np.int64)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return _tensor_labels(torch.from_numpy(np.ascontiguousarray(arr)), "")


def _load_pt(data: bytes, key: str | None) -> object:
    import io
    import pickle
    import re
    import warnings

    import torch

    if not data.startswith((b"PK\x03\x04", b"\x80")):  # torch.save: a zip; legacy: a pickle
        raise _ReadError("is not a PyTorch file (torch.save writes a zip archive)"
                         + _text_hint(data))
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols and sparse tensors
            warnings.simplefilter("ignore")
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"a pickled {found.group(1)}" if found else "pickled Python objects"
        raise _ReadError(f"holds {what}, which torch.load(weights_only=True) does not load: "
                         f"save the labels as a tensor, torch.save(torch.as_tensor(labels), "
                         f"path)") from None
    except Exception as e:  # noqa: BLE001 - truncated or corrupt archive: RuntimeError, EOFError
        raise _ReadError(f"is not a valid PyTorch file ({_first_line(e)})") from None
    return _pick_labels(obj, key)


def _pick_labels(obj: object, key: str | None) -> object:
    """The labels in what torch.load returned: the object itself, or one entry of a dict."""
    if not isinstance(obj, dict):
        if key is not None:
            raise _ReadError(f"holds {_a(type(obj).__name__)}, not a dict: --key does not "
                             f"apply")
        return _as_labels(obj, "")
    names = sorted(map(str, obj))
    keys = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    if key is not None:
        if key not in obj:
            raise _ReadError(f"has no entry {key!r} (keys: {keys})")
        name = key
    else:
        tensors = [k for k, v in obj.items() if _is_tensor(v)]
        named = [k for k in _LABEL_KEYS if k in obj]
        if named:
            name = named[0]
        elif len(tensors) == 1:
            name = tensors[0]
        elif not tensors:
            raise _ReadError(f"holds a dict without tensors (keys: {keys})" if obj else
                             "holds an empty dict: no labels")
        else:
            raise _ReadError(f"holds a dict of {len(tensors)} tensors, none named "
                             f"{', '.join(_LABEL_KEYS)}: pick the labels with --key (keys: "
                             f"{keys})")
    return _as_labels(obj[name], f"entry {name!r} ")


def _is_tensor(obj: object) -> bool:
    import torch

    return isinstance(obj, torch.Tensor)


def _as_labels(obj: object, where: str) -> object:
    """A tensor, or a list describe() reads (numbers, rows, label sets); else _ReadError."""
    import torch

    if isinstance(obj, torch.Tensor):
        return _tensor_labels(obj, where)
    if isinstance(obj, list | tuple):
        if not obj:
            raise _ReadError(f"{where}holds an empty {type(obj).__name__}: no labels")
        if all(isinstance(v, torch.Tensor) for v in obj) and len({v.shape for v in obj}) == 1:
            return _tensor_labels(torch.stack(list(obj)), where)  # rows of one width
        bad = next((v for v in obj if not isinstance(
            v, int | float | list | tuple | set | frozenset | torch.Tensor)), None)
        if bad is not None:
            raise _ReadError(f"{where}holds {_a(type(obj).__name__)} of "
                             f"{type(bad).__name__}, not labels")
        return list(obj)
    raise _ReadError(f"{where}holds {_a(type(obj).__name__)}, not a tensor of labels: save "
                     f"one with torch.save(torch.as_tensor(labels), path)")


def _a(noun: str) -> str:
    """``noun`` with its indefinite article: ``an int``, ``a set``."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _tensor_labels(t: Any, where: str) -> object:
    if t.is_complex():
        raise _ReadError(f"{where}holds a complex tensor ({t.dtype}), not labels")
    if t.numel() == 0:
        raise _ReadError(f"{where}holds an empty tensor of shape {tuple(t.shape)}: no labels")
    return t


def _load_text(data: bytes, key: str | None) -> object:
    """Numbers from a .csv/.txt file: a tensor for a table, a list of sets for ragged rows."""
    import torch

    if b"\0" in data:
        raise _ReadError("is a binary file, not text: a .csv/.txt file holds numbers as text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _ReadError(f"is not a text file (byte 0x{data[e.start]:02x} at offset {e.start} "
                         f"is not UTF-8): a .csv/.txt file holds numbers as text") from None
    rows: list[list[float | int]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
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
            shown = raw.strip() if len(raw.strip()) <= 60 else raw.strip()[:57] + "..."
            raise _ReadError(f"line {lineno} is not numeric: {shown!r}") from None
    if not rows:
        raise _ReadError("holds no numbers: no labels")
    if len({len(r) for r in rows}) > 1:
        bad = [v for r in rows for v in r if not isinstance(v, int)]
        if bad:
            raise _ReadError(f"rows of different lengths are read as label sets, which must "
                             f"hold integer class indices; found {bad[0]!r}")
        return [set(r) for r in rows]  # ragged rows: label sets
    is_int = all(isinstance(v, int) for r in rows for v in r)
    try:
        t = torch.tensor(rows, dtype=torch.int64 if is_int else torch.float32)
    except (OverflowError, RuntimeError, ValueError) as e:
        raise _ReadError(f"holds numbers too large for labels ({_first_line(e)})") from None
    return t.reshape(-1) if t.shape[1] == 1 else t


def _parse_number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() \
        else value


# ----------------------------------------------------------------------------------------------
# bench


def _bench(args: argparse.Namespace) -> int:
    from marginloss import benchmark

    return benchmark.run(args)


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


def _info(args: argparse.Namespace) -> int:
    import importlib.util
    import os

    import torch

    import marginloss
    from marginloss import backends
    from marginloss.backends import native
    from marginloss.losses import LOSSES

    print(f"marginloss  {marginloss.__version__}  ({Path(marginloss.__file__).parent})")
    print(f"python      {platform.python_version()} ({platform.platform()})")
    print(f"torch       {torch.__version__}")
    print(f"numpy       {_version_of('numpy')}")
    print(f"triton      {_version_of('triton')}")
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("            TRITON_INTERPRET=1 (Triton's CPU interpreter is on)")
    problem = native.status()  # builds the native kernels if they are not cached yet
    print(f"native      {'built, in ' + str(native.cache_dir()) if problem is None else problem}")
    demo_deps = ", ".join(f"{m} {'yes' if importlib.util.find_spec(m) else 'no'}"
                          for m in ("sklearn", "river", "matplotlib", "rich"))
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
    print('backend each loss uses with backend="auto", for a small contiguous batch:')
    for dev in devices:
        for dtype in (torch.float32, torch.bfloat16, torch.float64) if dev == "cuda" else \
                (torch.float32, torch.float64):
            for spec in LOSSES:
                call = spec.call(*spec.sample(2, 3, dtype=dtype, device=dev))
                backend, reason = backends.explain("auto", spec, call)
                print(f"  {spec.name:<28} {dev:<4} {str(dtype).replace('torch.', ''):<8} -> "
                      f"{backend.NAME}: {reason}")
    return 0
