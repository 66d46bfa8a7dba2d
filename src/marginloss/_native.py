r"""The native CPU backend: C kernels for the two logistic losses, compiled on first use.

``soft_margin_loss`` and ``multilabel_soft_margin_loss`` are compute-bound on a CPU: an
exponential, a division and a logarithm per element. As a sequence of torch ops each of those
is its own pass over memory; the C loop in ``csrc/logistic.c`` does the loss, the gradient and
the label check in one vectorised pass (about 4-8x faster than torch eager on 2 cores; figures in
``benchmarks/RESULTS.md``). Math and accuracy are described at the top of that file.

How it is built and run:

* **Compiled on first use**, never at import: the first CPU float32 call of either loss runs the
  C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``; about a second) with
  ``-O3 -march=native`` and caches the shared library under ``$MARGINLOSS_CACHE_DIR`` (default
  ``~/.cache/marginloss``), keyed by the source, compiler, flags and CPU. Later processes load it
  in milliseconds. Plain C99, no Python or torch headers.
* **Optional**: without a compiler (or with ``MARGINLOSS_NATIVE=0``) ``backend="auto"`` uses the
  torch backend, which computes the same results; ``backend="native"`` then raises
  :class:`~marginloss._dispatch.BackendUnavailableError` with the reason.
* **Threads**: with OpenMP (``-fopenmp``), a large call splits its rows over
  ``torch.get_num_threads()`` threads of the OpenMP runtime torch has already loaded (the
  library's ``libgomp.so.1`` resolves to torch's own), so the work lands on torch's worker
  threads instead of competing with them. Range boundaries fall on the kernel's summation
  spans: results depend on the number of threads only through the order of a few float64
  additions. Without OpenMP the library is built without it and runs single-threaded.
* **Scope**: CPU, contiguous float32 ``input`` and ``target`` of the same shape (and for
  ``multilabel_soft_margin_loss`` a float32 per-class or full weight). Everything else runs on
  the torch backend (:func:`unsupported` says why).
* **Label check**: fused into the same pass (the kernel counts labels outside the convention).
  When it finds one, the torch validator runs to raise the usual :class:`~marginloss.LabelError`
  with its message; nothing is returned.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from marginloss import _validation
from marginloss._torch_backend import reduce_rows

LOSSES = ("soft_margin_loss", "multilabel_soft_margin_loss")

_SOURCE = "csrc/logistic.c"
# -fno-trapping-math lets the branch-free selects vectorise; -ffp-contract=fast allows fused
# multiply-adds, which ISO mode (-std=c99) would otherwise forbid (about 25% of the time here)
_FLAGS = ("-O3", "-std=c99", "-ffp-contract=fast", "-fPIC", "-shared", "-fno-math-errno",
          "-fno-trapping-math", "-Wno-unknown-pragmas")
# tried in order until one builds and loads: the first is the fast one
_VARIANTS = (("-march=native", "-fopenmp"), ("-fopenmp",), ("-march=native",), ())
_MIN_PER_THREAD = 1 << 14  # elements: below this, one thread does the whole call


# ----------------------------------------------------------------------------------------------
# building and loading


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$MARGINLOSS_CACHE_DIR``, else the user cache."""
    if os.environ.get("MARGINLOSS_CACHE_DIR"):
        return Path(os.environ["MARGINLOSS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "marginloss"


def _compiler() -> str | None:
    """Path of the C compiler: ``$CC`` (its first word), else the first of cc, gcc, clang."""
    names = [os.environ["CC"].split()[0]] if os.environ.get("CC", "").strip() else \
        ["cc", "gcc", "clang"]
    return next((path for name in names if (path := shutil.which(name))), None)


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU model and feature flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _compile(cc: str, flags: tuple[str, ...], source: bytes, out: Path) -> str | None:
    """Compile ``source`` to the shared library ``out``; None on success, else the error."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)  # then renamed: atomic
    os.close(fd)
    try:
        done = subprocess.run([cc, *_FLAGS, *flags, "-o", tmp, "-x", "c", "-"], input=source,
                              capture_output=True, timeout=300)
        if done.returncode == 0:
            os.replace(tmp, out)
            return None
        return " | ".join(done.stderr.decode(errors="replace").strip().splitlines()[-3:])
    except (OSError, subprocess.SubprocessError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build_and_load(cc: str, flags: tuple[str, ...], source: bytes) -> ctypes.CDLL | str:
    """The library built with ``flags`` (from the cache when there), or why it failed."""
    key = hashlib.sha256(b"\0".join(
        [source, cc.encode(), " ".join(_FLAGS + flags).encode(), _cpu_id().encode(),
         platform.machine().encode()])).hexdigest()[:20]
    path = cache_dir() / f"logistic-{key}.so"
    if not path.exists():
        try:
            problem = _compile(cc, flags, source, path)
        except OSError as e:  # e.g. an unwritable cache directory
            problem = f"cannot write to {path.parent}: {e}"
        if problem:
            return f"compiling with {cc} {' '.join(flags)} failed: {problem}"
    try:
        return ctypes.CDLL(str(path))
    except OSError as e:
        return f"loading {path} failed: {e}"


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str | None]:
    """``(library, None)``, or ``(None, why not)``; built or loaded once per process."""
    if os.environ.get("MARGINLOSS_NATIVE") == "0":
        return None, "the native kernels are disabled (MARGINLOSS_NATIVE=0)"
    if sys.platform == "win32":
        return None, "the native kernels are built on Linux and macOS only"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler was found (set CC, or install gcc or clang)"
    source = resources.files("marginloss").joinpath(_SOURCE).read_bytes()
    for flags in _VARIANTS:
        lib = _build_and_load(cc, flags, source)
        if not isinstance(lib, str):
            break
    else:
        return None, f"the native kernels could not be built: {lib}"
    i64, i32, f32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    lib.ml_soft_margin_f32.argtypes = [ptr, ptr, i64, f32, ptr, ptr, ptr, i32]
    lib.ml_soft_margin_f32.restype = i64
    lib.ml_multilabel_soft_margin_f32.argtypes = [ptr, ptr, ptr, i64, i64, i64, f32, ptr, ptr,
                                                  i32]
    lib.ml_multilabel_soft_margin_f32.restype = i64
    return lib, None


def unavailable() -> str | None:
    """Why the native kernels cannot run in this process (None when they can). Builds them on
    the first call."""
    return _library()[1]


def unsupported(loss: str, input: Tensor, target: Tensor | None = None,
                weight: Tensor | None = None) -> str | None:
    """Why the native kernels cannot run this call (None when they can); reads metadata only,
    except that the first call may build the kernels."""
    if loss not in LOSSES:
        return f"there is no native kernel for {loss}"
    if input.device.type != "cpu":
        return f"the input is on {input.device.type}, and the native kernels run on the CPU"
    if input.dtype != torch.float32:
        return f"the native kernels take float32 input, got {input.dtype}"
    if target is not None:
        if target.dtype != torch.float32:
            return f"the native kernels take a float32 target, got {target.dtype}"
        if target.shape != input.shape:
            return "the native kernels take a target of the input's shape (not broadcast)"
        if not (input.is_contiguous() and target.is_contiguous()):
            return "the native kernels take contiguous input and target"
    if weight is not None and (weight.dtype != torch.float32 or _weight_stride(weight) is None):
        return "the native kernels take a float32 weight, one per class or one per element"
    return unavailable()


def _weight_stride(w: Tensor) -> int | None:
    """Row stride of an ``(N, C)`` weight: 0 (one weight per class), C (full), else None."""
    if w.dim() != 2 or (w.shape[1] > 1 and w.stride(1) != 1):
        return None
    if w.shape[0] <= 1 or w.stride(0) == 0:
        return 0
    return w.shape[1] if w.stride(0) == w.shape[1] else None


_forked = False


def _after_fork_in_child() -> None:
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _threads(n_elements: int) -> int:
    """Threads for a call: torch's intra-op count, at most one per ``_MIN_PER_THREAD``. In a
    forked child, one: libgomp's thread team does not survive ``fork`` (a parallel region there
    can hang, as torch's own ops do after a fork), so the kernels stay serial."""
    if _forked:
        return 1
    return max(1, min(torch.get_num_threads(), n_elements // _MIN_PER_THREAD))


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


# ----------------------------------------------------------------------------------------------
# the two losses (the backends' contract: see marginloss._torch_backend)


def soft_margin_loss(input: Tensor, target: Tensor, weight: None, reduction: str,
                     out_dtype: torch.dtype, *, need_grad: bool,
                     validate: bool = True) -> tuple[Tensor, Tensor | None]:
    r""":func:`marginloss._torch_backend.soft_margin_loss` in one C pass: see ``logistic.c``."""
    lib = _library()[0]
    n = input.numel()
    scale = 1.0 / n if (reduction == "mean" and n) else 1.0
    grad = torch.empty_like(input) if need_grad else None
    out = torch.empty_like(input) if reduction == "none" else None
    total = ctypes.c_double()
    bad = lib.ml_soft_margin_f32(input.data_ptr(), target.data_ptr(), n, scale, _ptr(grad),
                                 _ptr(out), ctypes.byref(total), _threads(n))
    if validate and bad:
        _validation.soft_margin_labels(target)
    if out is not None:
        return out.to(out_dtype), grad
    total = total.value
    if reduction == "mean":
        total = total / n if n else float("nan")
    return torch.tensor(total, dtype=out_dtype), grad


def multilabel_soft_margin_loss(input: Tensor, target: Tensor, weight: Tensor | None,
                                reduction: str, out_dtype: torch.dtype, *, need_grad: bool,
                                validate: bool = True) -> tuple[Tensor, Tensor | None]:
    r""":func:`marginloss._torch_backend.multilabel_soft_margin_loss` in one C pass."""
    lib = _library()[0]
    n_rows, n_cols = input.shape
    scale = (1.0 / n_rows if (reduction == "mean" and n_rows) else 1.0) / max(n_cols, 1)
    grad = torch.empty_like(input) if need_grad else None
    rows = torch.empty(n_rows, dtype=torch.float64)
    w_stride = 0 if weight is None else _weight_stride(weight)

    bad = lib.ml_multilabel_soft_margin_f32(
        input.data_ptr(), target.data_ptr(), _ptr(weight), w_stride, n_rows, n_cols, scale,
        _ptr(grad), _ptr(rows), _threads(input.numel()))
    if validate and bad:
        _validation.multilabel_soft_margin_labels(target)
    rows /= n_cols if n_cols else float("nan")
    return reduce_rows(rows, reduction, out_dtype), grad
