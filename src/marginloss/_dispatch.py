"""Backend selection: which implementation runs a call, and why.

``backend="auto"`` picks the Triton kernels (:mod:`marginloss.kernels`) when the input lives on a
CUDA device, Triton can be imported and the dtype is float16, bfloat16 or float32; otherwise the
torch backend (:mod:`marginloss._torch_backend`). ``backend="triton"`` insists on the kernels
and raises :class:`BackendUnavailableError` saying why when they cannot run (never a silent
fallback); ``backend="torch"`` forces the torch path.

Nothing here runs at import time: Triton is imported inside :func:`select_backend`, and only
when a call could use it. ``TRITON_INTERPRET=1`` (Triton's CPU interpreter, used by the test
suite) lets the kernels run on CPU tensors.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from typing import Literal

import torch
from torch import Tensor

from marginloss import _torch_backend

Backend = Literal["auto", "torch", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")

_KERNEL_MODULES = {
    "soft_margin_loss": "marginloss.kernels.soft_margin",
    "multilabel_soft_margin_loss": "marginloss.kernels.soft_margin",
    "multi_margin_loss": "marginloss.kernels.multi_margin",
    "multilabel_margin_loss": "marginloss.kernels.multilabel_margin",
}


class BackendUnavailableError(RuntimeError):
    """``backend="triton"`` was requested for a call the Triton kernels cannot run."""


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


def select_backend(requested: str, input: Tensor) -> tuple[str, str]:
    """Return ``(backend, reason)``: the backend a call on ``input`` runs, and why.

    Raises:
        ValueError: ``requested`` is not one of ``"auto"``, ``"torch"``, ``"triton"``.
        BackendUnavailableError: ``requested == "triton"`` and the kernels cannot run.
    """
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of 'auto', 'torch' or 'triton', got {requested!r}.")
    if requested == "torch":
        return "torch", "backend='torch' was requested"
    problem = _triton_status(input, explicit=requested == "triton")
    if requested == "triton":
        if problem is not None:
            raise BackendUnavailableError(f"backend='triton' cannot run this call: {problem}.")
        return "triton", "backend='triton' was requested"
    if problem is None:
        return "triton", f"{input.device.type} tensor, {input.dtype}, triton available"
    return "torch", problem


def get_compute(loss: str, backend: str):
    """The ``compute(input, target, weight, *options, need_grad)`` function of ``loss``.

    Both backends share this contract (see :mod:`marginloss._torch_backend`); the Triton
    launchers take their arguments in their own order, adapted here.
    """
    if backend == "triton":
        return _triton_compute(loss)
    return getattr(_torch_backend, loss)


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
