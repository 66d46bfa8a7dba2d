"""Backend selection: which implementation runs a call, and why.

``backend="auto"`` picks, in this order:

* the Triton kernels (:mod:`marginloss.kernels`) when the input lives on a CUDA device, Triton
  can be imported and the dtype is float16, bfloat16 or float32;
* the native C kernels (:mod:`marginloss._native`) for the two logistic losses on CPU float32
  tensors, when a C compiler is available to build them;
* otherwise the torch backend (:mod:`marginloss._torch_backend`), which runs anywhere.

``backend="triton"`` and ``backend="native"`` insist on their kernels and raise
:class:`BackendUnavailableError` saying why when they cannot run (never a silent fallback);
``backend="torch"`` forces the torch path.

Nothing here runs at import time: Triton is imported, and the native kernels are built, only
when a call could use them. ``TRITON_INTERPRET=1`` (Triton's CPU interpreter, used by the test
suite) lets the Triton kernels run on CPU tensors.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from typing import Literal

import torch
from torch import Tensor

from marginloss import _native, _torch_backend

Backend = Literal["auto", "torch", "triton", "native"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton", "native")

_KERNEL_MODULES = {
    "soft_margin_loss": "marginloss.kernels.soft_margin",
    "multilabel_soft_margin_loss": "marginloss.kernels.soft_margin",
    "multi_margin_loss": "marginloss.kernels.multi_margin",
    "multilabel_margin_loss": "marginloss.kernels.multilabel_margin",
}


class BackendUnavailableError(RuntimeError):
    """``backend="triton"`` or ``"native"`` was requested for a call its kernels cannot run."""


def _triton_status(input: Tensor, explicit: bool) -> str | None:
    """None when the Triton kernels can run on ``input``; otherwise the reason they cannot.

    CPU tensors qualify only for an explicit ``backend="triton"`` under ``TRITON_INTERPRET=1``
    (Triton's interpreter, for tests); ``"auto"`` never sends CPU work to the interpreter.
    """
    interpret = explicit and os.environ.get("TRITON_INTERPRET") == "1"
    if input.device.type != "cuda" and not (interpret and input.device.type == "cpu"):
        return f"the input is on {input.device.type}, and the Triton kernels need a CUDA device"
    if input.dtype == torch.float64:
        return "float64 inputs run on the torch backend (the kernels compute in float32)"
    if input.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return f"the kernels do not support {input.dtype}"
    return _triton_missing()


@functools.cache
def _triton_missing() -> str | None:
    """Why the kernels cannot be imported here, or None (looked up once per process)."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'marginloss[triton]')"
    if importlib.util.find_spec("marginloss.kernels.soft_margin") is None:
        return "this build of marginloss has no Triton kernels"
    return None


def select_backend(requested: str, input: Tensor, loss: str | None = None,
                   target: Tensor | None = None, weight: Tensor | None = None) -> tuple[str, str]:
    """Return ``(backend, reason)``: the backend a call of ``loss`` on ``input`` (with
    ``target`` and ``weight`` as the backend will receive them) runs, and why. Without
    ``loss`` the native kernels are not considered.

    Raises:
        ValueError: ``requested`` is not one of :data:`BACKENDS`.
        BackendUnavailableError: ``requested`` is ``"triton"`` or ``"native"`` and those
            kernels cannot run this call.
    """
    if requested not in BACKENDS:
        raise ValueError(
            f"backend must be one of 'auto', 'torch', 'triton' or 'native', got {requested!r}."
        )
    if requested == "torch":
        return "torch", "backend='torch' was requested"
    if requested == "native":
        problem = _native.unsupported(loss or "this loss", input, target, weight)
        if problem is not None:
            raise BackendUnavailableError(f"backend='native' cannot run this call: {problem}.")
        return "native", "backend='native' was requested"
    problem = _triton_status(input, explicit=requested == "triton")
    if requested == "triton":
        if problem is not None:
            raise BackendUnavailableError(f"backend='triton' cannot run this call: {problem}.")
        return "triton", "backend='triton' was requested"
    if problem is None:
        return "triton", f"{input.device.type} tensor, {input.dtype}, triton available"
    if input.device.type == "cpu" and loss in _native.LOSSES:
        native_problem = _native.unsupported(loss, input, target, weight)
        if native_problem is None:
            return "native", f"cpu tensor, {input.dtype}, native kernels built"
        return "torch", native_problem
    return "torch", problem


def get_compute(loss: str, backend: str, validate: bool = True):
    """The ``compute(input, target, weight, *options, need_grad)`` function of ``loss``.

    All backends share this contract (see :mod:`marginloss._torch_backend`); the Triton
    launchers take their arguments in their own order, adapted here. The native kernels check
    the labels in their own pass, so they are told whether to (``validate``).
    """
    if backend == "triton":
        return _triton_compute(loss)
    if backend == "native":
        return _native_compute(loss, validate)
    return getattr(_torch_backend, loss)


@functools.cache
def _native_compute(loss: str, validate: bool):
    return functools.partial(getattr(_native, loss), validate=validate)


@functools.cache
def _triton_compute(loss: str):
    launch = getattr(importlib.import_module(_KERNEL_MODULES[loss]), loss)

    if loss == "multi_margin_loss":
        def compute(input, target, weight, p, margin, reduction, out_dtype, *, need_grad):
            return launch(input, target, p, margin, weight, reduction, need_grad, out_dtype)
    elif loss == "multilabel_soft_margin_loss":
        def compute(input, target, weight, reduction, out_dtype, *, need_grad):
            return launch(input, target, weight, reduction, need_grad, out_dtype)
    else:  # soft_margin_loss, multilabel_margin_loss: no weight
        def compute(input, target, weight, reduction, out_dtype, *, need_grad):
            return launch(input, target, reduction, need_grad, out_dtype)
    compute.__name__ = f"triton_{loss}"
    return compute
