"""The Triton backend: one fused kernel per loss, on CUDA devices.

Each loss's kernel lives in ``marginloss.kernels.<loss name>``, whose ``launch(call)`` has the
contract of the loss's ``torch_compute`` (see :mod:`marginloss.losses._spec`). This module
finds it by the loss's name, so it names no loss itself: a loss gets a Triton kernel by adding
that module (and ``"triton"`` to its spec's ``backends``).

The kernels compute in float32 and take float16, bfloat16 and float32 inputs; float64 runs on
the torch backend. They need a CUDA device, except under ``TRITON_INTERPRET=1`` (Triton's CPU
interpreter, for tests), where CPU tensors are accepted too. ``backend="auto"`` only sends CUDA
work here (:data:`DEVICES`), so CPU tensors reach the interpreter only for an explicit
``backend="triton"``.

Nothing here imports triton at import time: the kernel modules (which do) are imported on the
first call that runs on this backend. The kernels do not check labels (``bad_labels`` is None).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from collections.abc import Callable

import torch
from torch import Tensor

from marginloss.losses._spec import Call, LossSpec, Result

NAME = "triton"
DEVICES = ("cuda",)  # the device types backend="auto" may send work to

#: The input dtypes the kernels take (they compute in float32).
DTYPES = (torch.float16, torch.bfloat16, torch.float32)

_PACKAGE = "marginloss.kernels"


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's CPU interpreter (Triton's own spelling:
    ``1``, ``true`` or ``on``)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on")


def unavailable(spec: LossSpec, call: Call) -> str | None:
    """Why the kernels cannot run ``call`` of ``spec`` (None if they can). Metadata only."""
    x = call.inputs[0]
    device = x.device.type
    if device != "cuda" and not (device == "cpu" and interpreting()):
        return f"the input is on {device}, and the Triton kernels need a CUDA device"
    if x.dtype == torch.float64:
        return "float64 inputs run on the torch backend (the kernels compute in float32)"
    if x.dtype not in DTYPES:
        return f"the kernels do not support {x.dtype}"
    return missing(spec.name)


@functools.cache
def missing(name: str) -> str | None:
    """Why the kernel of loss ``name`` cannot be imported here, or None (looked up once per
    process and loss, without importing anything)."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'marginloss[triton]')"
    if importlib.util.find_spec(f"{_PACKAGE}.{name}") is None:
        return f"there is no Triton kernel for {name}"
    return None


def launch_for(spec: LossSpec) -> Callable[[Call], Result]:
    """The ``launch(call) -> Result`` function of ``spec``'s kernel (imports it, and triton).

    Traceable with FakeTensors (every kernel launch goes through ``torch.library.wrap_triton``),
    so it can be the body of a ``torch.library.triton_op``.
    """
    return importlib.import_module(f"{_PACKAGE}.{spec.name}").launch


def run(spec: LossSpec, call: Call, check: bool = False) -> Result:
    """The loss and gradients of ``call``, from ``spec``'s fused kernel, launched on the
    input's device (whatever the current device is); with ``check``, the kernel also counts
    the labels outside the convention (``bad_labels``: a 0-d count on the device)."""
    x = call.inputs[0]
    launch = launch_for(spec)
    if x.is_cuda:
        with torch.cuda.device(x.device):
            return launch(call, check=check) if check else launch(call)
    return launch(call, check=check) if check else launch(call)


def scale_(grad: Tensor, grad_output: Tensor) -> Tensor:
    """``grad *= grad_output`` in place on the device, skipped when ``grad_output`` is a
    scalar 1, without a host read (backward of an eager call; see ``kernels/_scale.py``)."""
    return importlib.import_module(f"{_PACKAGE}._scale").scale_(grad, grad_output)
