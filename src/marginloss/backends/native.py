r"""The native CPU backend: one C kernel per loss, compiled on first use.

Each loss ``<name>`` has its kernel in ``csrc/<name>.c`` (math, stabilisation and memory traffic
are described at the top of each file; the shared ABI and helpers are in ``csrc/common.h``). A
kernel computes the loss, the gradient and the label check in one vectorised pass over memory.
Nothing here names a loss: the kernel of a :class:`~marginloss.losses._spec.LossSpec` is the
symbol ``ml_<spec.name>_f32`` and its descriptor ``ml_<spec.name>_info`` says what it takes
(inputs, options, the target's dtype and shape, weights, per-element or per-row losses, a check
of the option values).

How it is built and run:

* **Compiled on first use**, never at import: the first call that needs the library (or
  :func:`status`) compiles every ``csrc/*.c`` into one shared library with the C compiler
  (``$CC``, else ``cc``, ``gcc`` or ``clang``; a second or two), ``-O3 -march=native -fopenmp``,
  and caches it under ``$MARGINLOSS_CACHE_DIR`` (default ``~/.cache/marginloss``), keyed by the
  sources, the compiler, the flags and the CPU. Later processes load it in milliseconds.
* **Optional**: with ``MARGINLOSS_NATIVE=0``, or without a compiler, the backend is unavailable
  and says why (:func:`status`, :func:`unavailable`); the torch backend computes the same.
* **Threads**: up to ``torch.get_num_threads()``, from the OpenMP runtime torch has already
  loaded (the library links ``libgomp.so.1`` by its soname, so it gets torch's own thread team
  instead of a second one competing with it). The kernel uses fewer threads for small calls.
  Results do not depend on the number of threads. In a forked child calls run on one thread
  (libgomp's team does not survive ``fork``).
* **Scope**: CPU, float32 contiguous inputs; the target in the kernel's dtype (another integer
  dtype is converted to int64 for an int64 kernel), its canonical shape, contiguous, or in a
  form the kernel declares besides (``target_forms``): one value broadcast to ``(N, C)`` (all
  strides 0, e.g. :mod:`marginloss.sparse`'s zero target, read once), or a narrow contiguous
  ``(N, W)`` target with :math:`1 \le W \le C` (its rows' first :math:`W` entries, e.g. a
  -1-padded index list without its padding columns); a float32 weight, per class ``(C,)`` or
  full ``(N, C)``, contiguous, where the kernel takes one. :func:`unavailable` says why a call
  is out of scope, from metadata only.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from marginloss.losses._spec import Call, LossSpec, Result, input_dtype

NAME = "native"
DEVICES = ("cpu",)  # device types backend="auto" may send here

_ABI = 2  # ML_ABI in csrc/common.h
# -fno-trapping-math lets the branch-free selects vectorise; -ffp-contract=fast allows fused
# multiply-adds, which ISO mode (-std=c99) would otherwise forbid
_FLAGS = ("-O3", "-std=c99", "-ffp-contract=fast", "-fPIC", "-shared", "-fno-math-errno",
          "-fno-trapping-math", "-Wno-unknown-pragmas")
# tried in order until one builds and loads: the first is the fast one. -fopenmp-simd alone
# still vectorises the sums (the `omp simd` pragmas) without the OpenMP runtime.
_VARIANTS = (("-march=native", "-fopenmp"), ("-fopenmp",), ("-march=native", "-fopenmp-simd"),
             ("-fopenmp-simd",), ())

# struct ml_call (csrc/common.h): x[3], grad[3], target, weight (pointers), w_row_stride,
# n_rows, n_cols, t_cols, opt[4], gscale, reduction, n_threads, loss, rows
_CALL = struct.Struct("=8Q4q5d2i2Q")
# struct ml_ext: ext[2] (scalar extras), vec[2] (per-class vector extras)
_EXT = struct.Struct("=2d2Q")
_REDUCTION = {"none": 0, "mean": 1, "sum": 2}
_TARGET_DTYPES = {1: torch.float32, 2: torch.int64}  # ML_TARGET_F32, ML_TARGET_I64
_WEIGHT_CLASS, _WEIGHT_FULL = 1, 2
_FORM_SCALAR, _FORM_NARROW = 1, 2  # ML_FORM_*: target forms besides the full one
_F32 = torch.float32
_SCALAR = torch.empty((), dtype=_F32)  # the template of 0-d losses
_INTEGER = (torch.int8, torch.int16, torch.int32, torch.uint8, torch.int64)


# ----------------------------------------------------------------------------------------------
# building and loading


def cache_dir() -> Path:
    """Where the compiled library is kept: ``$MARGINLOSS_CACHE_DIR``, else the user cache."""
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


def _compiler_id(cc: str) -> str:
    """The compiler's identity without running it: its resolved path, size and mtime."""
    real = os.path.realpath(cc)
    try:
        st = os.stat(real)
        return f"{real} {st.st_size} {st.st_mtime_ns}"
    except OSError:
        return real


def _compile(cc: str, flags: tuple[str, ...], src: Path, files: list[str],
             out: Path) -> str | None:
    """Compile ``files`` (in ``src``) into the shared library ``out``; None, else the error."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)  # then renamed: atomic
    os.close(fd)
    try:
        cmd = [cc, *_FLAGS, *flags, "-I", str(src), "-o", tmp, *(str(src / f) for f in files)]
        done = subprocess.run(cmd, capture_output=True, timeout=300)
        if done.returncode == 0:
            os.replace(tmp, out)
            return None
        return " | ".join(done.stderr.decode(errors="replace").strip().splitlines()[-3:])
    except (OSError, subprocess.SubprocessError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build_and_load(cc: str, flags: tuple[str, ...], src: Path) -> ctypes.CDLL | str:
    """The library built with ``flags`` (from the cache when there), or why it failed."""
    names = sorted(p.name for p in src.iterdir() if p.suffix in (".c", ".h"))
    digest = hashlib.sha256()
    for part in [*(n.encode() + b"\0" + (src / n).read_bytes() for n in names),
                 _compiler_id(cc).encode(), " ".join(_FLAGS + flags).encode(),
                 _cpu_id().encode(), platform.machine().encode()]:
        digest.update(part + b"\0")
    path = cache_dir() / f"marginloss-native-{digest.hexdigest()[:20]}.so"
    if not path.exists():
        try:
            problem = _compile(cc, flags, src, [n for n in names if n.endswith(".c")], path)
        except OSError as e:  # e.g. an unwritable cache directory
            problem = f"cannot write to {path.parent}: {e}"
        if problem:
            return f"compiling with {cc} {' '.join(flags)} failed: {problem}"
    try:
        return ctypes.CDLL(str(path))
    except OSError as e:
        return f"loading {path} failed: {e}"


_lock = threading.Lock()
_state: list = []  # [(library or None, why not)] once built or refused


def _library() -> tuple[ctypes.CDLL | None, str | None]:
    """``(library, None)``, or ``(None, why not)``; built or loaded once per process."""
    if _state:
        return _state[0]
    with _lock:
        if not _state:
            _state.append(_load())
    return _state[0]


def _load() -> tuple[ctypes.CDLL | None, str | None]:
    """Builds (or finds in the cache) and loads the library, trying the flag variants in turn."""
    if os.environ.get("MARGINLOSS_NATIVE") == "0":
        return None, "the native kernels are disabled (MARGINLOSS_NATIVE=0)"
    if sys.platform == "win32":
        return None, "the native kernels are built on Linux and macOS only"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler was found (set CC, or install gcc or clang)"
    try:
        with resources.as_file(resources.files("marginloss") / "csrc") as src:
            for flags in _VARIANTS:
                lib = _build_and_load(cc, flags, Path(src))
                if not isinstance(lib, str):
                    return lib, None
    except Exception as e:  # e.g. sources that cannot be read: unavailable, never a crash
        lib = f"{type(e).__name__}: {e}"
    return None, f"the native kernels could not be built: {lib}"


def status() -> str | None:
    """Why the native backend cannot run in this process (None when it can). Builds or loads
    the library on the first call."""
    return _library()[1]


# ----------------------------------------------------------------------------------------------
# the kernels' descriptors


class _Info(ctypes.Structure):
    """``struct ml_kernel`` of csrc/common.h."""

    _fields_ = [("abi", ctypes.c_int32), ("call_size", ctypes.c_int32),
                ("n_inputs", ctypes.c_int32), ("n_opts", ctypes.c_int32),
                ("elementwise", ctypes.c_int32), ("target", ctypes.c_int32),
                ("target_ndim", ctypes.c_int32), ("weight", ctypes.c_int32),
                ("check", ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.POINTER(ctypes.c_double))),
                ("n_ext", ctypes.c_int32), ("target_forms", ctypes.c_int32)]


class _Kernel(NamedTuple):
    """A loaded kernel: its entry point and what its descriptor says."""

    fn: ctypes._CFuncPtr
    n_inputs: int
    n_opts: int
    elementwise: bool
    target: torch.dtype | None
    target_ndim: int
    weight: int
    check: ctypes._CFuncPtr | None
    n_ext: int = 0
    fn_ext: ctypes._CFuncPtr | None = None  # ml_<name>_ext_f32 (n_ext > 0)
    target_forms: int = 0  # ML_FORM_* bits


_kernels: dict[str, _Kernel | str] = {}
_option_problems: dict[tuple, str | None] = {}


def _kernel(name: str) -> _Kernel | str:
    """The kernel of the loss ``name``, or why there is none (cached)."""
    k = _kernels.get(name)
    if k is None:
        k = _kernels[name] = _find_kernel(name)
    return k


def _find_kernel(name: str) -> _Kernel | str:
    """Looks up ``ml_<name>_f32`` and reads its descriptor ``ml_<name>_info``."""
    lib, problem = _library()
    if lib is None:
        return problem
    try:
        fn = getattr(lib, f"ml_{name}_f32")
        describe = getattr(lib, f"ml_{name}_info")
    except AttributeError:
        return f"there is no native kernel for {name}"
    fn.restype = ctypes.c_int64  # its one argument: the packed ml_call, a bytes object
    describe.argtypes, describe.restype = [], ctypes.POINTER(_Info)
    info = describe().contents
    if info.abi != _ABI or info.call_size != _CALL.size:
        return f"the native kernel for {name} has another ABI ({info.abi}, {info.call_size})"
    fn_ext = None
    if info.n_ext:
        try:
            fn_ext = getattr(lib, f"ml_{name}_ext_f32")
        except AttributeError:
            return f"the native kernel for {name} declares extras but has no ml_{name}_ext_f32"
        fn_ext.restype = ctypes.c_int64  # its arguments: the packed ml_call and ml_ext
    return _Kernel(fn, info.n_inputs, info.n_opts, bool(info.elementwise),
                   _TARGET_DTYPES.get(info.target), info.target_ndim, info.weight,
                   info.check or None, info.n_ext, fn_ext, info.target_forms)


def _options_problem(k: _Kernel, options: tuple) -> str | None:
    """What the kernel's own check says about these option values (cached per values)."""
    if len(options) != k.n_opts:
        return f"the native kernel takes {k.n_opts} options, got {len(options)}"
    if k.check is None:
        return None
    key = (k.fn.__name__, options)
    if key not in _option_problems:
        if len(_option_problems) > 1024:
            _option_problems.clear()
        values = (ctypes.c_double * 4)(*(float(v) for v in options))
        why = k.check(values)
        _option_problems[key] = None if why is None else why.decode()
    return _option_problems[key]


# ----------------------------------------------------------------------------------------------
# the backend's contract


def unavailable(spec: LossSpec, call: Call) -> str | None:
    """Why this backend cannot run ``call`` (None when it can). Reads metadata only; the first
    call that passes the input checks builds or loads the library."""
    inputs = call.inputs
    x = inputs[0]
    for t in inputs:
        if not t.is_cpu:
            return f"the input is on {t.device.type}, and the native kernels run on the CPU"
        if t.dtype is not _F32:
            return f"the native kernels take float32 inputs, got {t.dtype}"
        if t.dim() != 2 or t.shape != x.shape:
            return "the native kernels take (N, C) inputs of one shape"
        if not t.is_contiguous():
            return "the native kernels take contiguous inputs"
    if x.shape[1] >= 1 << 31:
        return "the native kernels take fewer than 2^31 columns"
    k = _kernels.get(spec.name)
    if k is None:
        k = _kernel(spec.name)
    if k.__class__ is str:
        return k
    if len(inputs) != k.n_inputs or bool(spec.elementwise) != k.elementwise:
        return f"the native kernel for {spec.name} does not match its loss spec"
    problem = _target_problem(k, call.target, x)
    if problem is None and call.weight is not None:
        problem = _weight_problem(k, call.weight, x)
    if problem is None and (k.check is not None or len(call.options) != k.n_opts):
        problem = _options_problem(k, tuple(call.options))
    if problem is None and spec.extras:
        problem = _extras_problem(k, spec, spec.extra_values(call), x)
    return problem


def _extras_problem(k: _Kernel, spec: LossSpec, extras: tuple, x: Tensor) -> str | None:
    """Why the kernel cannot take these extras (the loss's own options), or None: it reads
    every one of them, a tensor one is a contiguous float32 CPU vector of C entries."""
    if k.n_ext != len(spec.extras):
        return f"the native kernel takes {k.n_ext} of the {len(spec.extras)} extra options"
    for o, v in zip(spec.extras, extras):
        if isinstance(v, Tensor) and not (v.is_cpu and v.dtype is _F32 and v.dim() == 1
                                          and v.shape[0] == x.shape[1] and v.is_contiguous()):
            return f"the native kernels take `{o.name}` as a contiguous float32 (C,) CPU vector"
    return None


def _target_problem(k: _Kernel, target: Tensor | None, x: Tensor) -> str | None:
    """Why the kernel cannot take this target (its dtype, canonical shape, layout), or None."""
    if k.target is None:
        return None if target is None else "the native kernel takes no target"
    if target is None:
        return "the native kernel needs a target"
    if not target.is_cpu:
        return f"the target is on {target.device.type}, and the native kernels run on the CPU"
    if target.dtype is not k.target and not (k.target == torch.int64 and target.dtype in _INTEGER):
        return f"the native kernel takes a {k.target} target, got {target.dtype}"
    if _target_cols(k, target, x) is not None:
        return None
    shape = tuple(x.shape[:k.target_ndim])
    narrow = k.target_forms & _FORM_NARROW
    if tuple(target.shape) != shape and not (
            narrow and target.dim() == 2 and target.shape[0] == x.shape[0]
            and 1 <= target.shape[1] <= x.shape[1]):
        also = " or (N, W) with 1 <= W <= C" if narrow else ""
        return f"the native kernel takes a target of shape {shape}{also} (not broadcast)"
    if k.target_forms & _FORM_SCALAR:
        return "the native kernel takes a contiguous target, or one value broadcast (strides 0)"
    return "the native kernels take a contiguous target"


def _target_cols(k: _Kernel, target: Tensor | None, x: Tensor) -> int | None:
    """``ml_call.t_cols`` for a target of the kernel's dtype (metadata only), or None when the
    kernel cannot read its layout: C (or the number of classes, for a kernel whose target is
    not 2-D) for the canonical contiguous target; where the kernel declares the form, W for a
    contiguous ``(N, W)`` target with ``1 <= W <= C``, 0 for one value broadcast to ``(N, C)``
    (all strides 0, not empty: the kernel reads its one element)."""
    n_cols = x.shape[1]
    if target is None or k.target_ndim != 2:
        ok = target is None or (tuple(target.shape) == tuple(x.shape[:k.target_ndim])
                                and target.is_contiguous())
        return n_cols if ok else None
    if target.dim() != 2 or target.shape[0] != x.shape[0]:
        return None
    width = target.shape[1]
    if width == n_cols and target.is_contiguous():
        return n_cols
    if k.target_forms & _FORM_NARROW and 1 <= width < n_cols and target.is_contiguous():
        return width
    if (k.target_forms & _FORM_SCALAR and width == n_cols and target.stride() == (0, 0)
            and target.numel() > 0):
        return 0
    return None


def _weight_problem(k: _Kernel, w: Tensor, x: Tensor) -> str | None:
    """Why the kernel cannot take this weight, or None: float32, per class ``(C,)`` (also
    expanded over the rows, row stride 0) or full ``(N, C)`` contiguous, as it declares."""
    if not k.weight:
        return "the native kernel takes no weight"
    if not w.is_cpu or w.dtype is not _F32:
        return f"the native kernels take a float32 CPU weight, got {w.dtype} on {w.device.type}"
    if w.dim() == 1 and w.shape[0] == x.shape[1] and w.is_contiguous():
        kind = _WEIGHT_CLASS
    elif w.dim() == 2 and w.shape == x.shape and w.is_contiguous():
        kind = _WEIGHT_FULL
    elif (w.dim() == 2 and w.shape == x.shape and w.stride(0) == 0
          and (w.stride(1) == 1 or x.shape[1] == 1)):
        kind = _WEIGHT_CLASS  # a per-class weight expanded over the rows
    else:
        return "the native kernels take a contiguous weight of shape (C,) or (N, C)"
    if not k.weight & kind:
        return f"the native kernel takes no {'class' if kind == _WEIGHT_CLASS else 'full'} weight"
    return None


_forked = False


def _after_fork_in_child() -> None:
    """Registered with ``os.register_at_fork``: calls in the child run on one thread."""
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _mean_scale(n_terms: int) -> float:
    """``"mean"``'s :func:`~marginloss.backends._common.grad_scale`, from what ``run`` has."""
    return 1.0 / n_terms if n_terms else 1.0


def run(spec: LossSpec, call: Call, check: bool = False) -> Result:
    """The loss, the gradients and the bad-label count of ``call``, in one C pass (the count
    costs nothing extra, so it is made whatever ``check`` says).

    The call must be one :func:`unavailable` accepts. Raises :class:`MemoryError` when the
    kernel could not get its scratch memory.
    """
    return planned(spec, call).run(spec, call, check)


def planned(spec: LossSpec, call: Call) -> _Planned:
    """A backend for the calls whose metadata equal ``call``'s (shapes, strides, dtypes,
    options, reduction, gradient needs): :func:`run` with everything that depends on metadata
    only worked out once, for the pipeline's plans (:mod:`marginloss._pipeline`). The call
    must be one :func:`unavailable` accepts."""
    k = _kernels.get(spec.name)
    if k is None or k.__class__ is str:
        k = _kernel(spec.name)
        if k.__class__ is str:
            raise RuntimeError(f"the native backend cannot run {spec.name}: {k}")
    return _Planned(spec, call, k)


# struct ml_call in three parts: the pointers; the sizes, options and reduction (fixed for a
# plan); the thread count and the outputs
_POINTERS = struct.Struct("=8Q")
_POINTERS_1 = struct.Struct("=Q16xQ16x2Q")  # one input: x[0], grad[0], target, weight
_FIXED = struct.Struct("=4q5di")
_TAIL = struct.Struct("=i2Q")
assert _POINTERS.size + _FIXED.size + _TAIL.size == _CALL.size


class _Planned:
    """The native backend (``NAME``, ``run``) specialised to one call's metadata."""

    NAME = NAME

    def __init__(self, spec: LossSpec, call: Call, k: _Kernel):
        x = call.inputs[0]
        n_rows, n_cols = x.shape
        weight = call.weight
        reduction = _REDUCTION[call.reduction]
        opts = (*call.options, *(0.0,) * (4 - len(call.options)))
        t_cols = _target_cols(k, call.target, x)
        if t_cols is None:  # (never: unavailable() accepted the call)
            raise RuntimeError(f"the native kernel for {spec.name} cannot read this target")
        self.fixed = _FIXED.pack(
            n_cols if weight is not None and weight.dim() == 2 and weight.stride(0) else 0,
            n_rows, n_cols, t_cols, *opts,
            _mean_scale(n_rows * n_cols if k.elementwise else n_rows) if reduction == 1
            else 1.0, reduction)
        self.fn = k.fn_ext if call.extras and k.fn_ext is not None else None
        self.kernel = k.fn
        # the loss: a scalar, one value per element or one per row (no tensor of the call is
        # kept: a plan outlives it)
        self.loss_shape = None if reduction else (n_rows, n_cols) if k.elementwise else (n_rows,)
        self.single = len(call.inputs) == 1
        self.need = call.need_grad
        t = call.target
        self.convert = k.target if t is not None and t.dtype is not k.target else None
        self.out_dtype = None if spec.out_dtype is input_dtype else spec.out_dtype(call)
        self.name = spec.name

    def run(self, spec: LossSpec, call: Call, check: bool = False) -> Result:
        """:func:`run` of a call with the planned metadata."""
        inputs = call.inputs
        x = inputs[0]
        target, weight = call.target, call.weight
        if self.convert is not None:
            target = target.to(self.convert)  # another integer dtype, for an int64 kernel
        t_ptr = 0 if target is None else target.data_ptr()
        w_ptr = 0 if weight is None else weight.data_ptr()
        if self.single:  # the usual case, without the loops
            g = torch.empty_like(x) if self.need[0] else None
            grads = (g,)
            head = _POINTERS_1.pack(x.data_ptr(), 0 if g is None else g.data_ptr(), t_ptr, w_ptr)
        else:
            grads = tuple(torch.empty_like(t) if need else None
                          for t, need in zip(inputs, self.need))
            head = _POINTERS.pack(
                *(t.data_ptr() for t in inputs), *(0,) * (3 - len(inputs)),
                *(0 if g is None else g.data_ptr() for g in grads), *(0,) * (3 - len(grads)),
                t_ptr, w_ptr)
        loss = (torch.empty_like(_SCALAR) if self.loss_shape is None  # twice as fast as empty(())
                else torch.empty(self.loss_shape, dtype=_F32))
        packed = head + self.fixed + _TAIL.pack(1 if _forked else torch.get_num_threads(),
                                                loss.data_ptr(), 0)
        if self.fn is not None:  # scalars in ext[i], vectors in vec[i]
            vals = (*call.extras, *(None,) * (2 - len(call.extras)))
            bad = self.fn(packed, _EXT.pack(
                *(0.0 if v is None or isinstance(v, Tensor) else float(v) for v in vals),
                *(v.data_ptr() if isinstance(v, Tensor) else 0 for v in vals)))
        else:  # no extras: each at its default
            bad = self.kernel(packed)
        if bad < 0:
            raise MemoryError(f"the native kernel for {self.name} ran out of scratch memory")
        if self.out_dtype is not None:  # (the inputs here are float32)
            loss = loss.to(self.out_dtype)
        return _new(Result, (loss, grads, bad))  # (a NamedTuple's __new__ is slower)


_new = tuple.__new__
