"""Backends: which implementation runs a call, and why.

Every backend is a module with one contract (see :mod:`marginloss.losses._spec`)::

    NAME: str                                  # the value of backend= that asks for it
    DEVICES: tuple[str, ...] | None            # device types "auto" may send work to (None: any)
    unavailable(spec, call) -> str | None      # why it cannot run this call (metadata only)
    run(spec, call, check=False) -> Result     # the loss and its gradients (with check: and
                                               # the count of bad labels, if it can count)
    planned(spec, call) -> backend             # optional: NAME and run specialised to the
                                               # metadata of call (kept by eager plans)

``backend="auto"`` tries them in the order of :data:`AUTO_ORDER` and takes the first whose
devices include the input's, that has a kernel for the loss (``spec.backends``) and that can
run the call: Triton for CUDA tensors, the native C kernels for CPU float32, else torch ops.
``backend="triton"`` / ``"native"`` insist on their kernels and raise
:class:`~marginloss.errors.BackendUnavailableError` saying why when they cannot run (never a
silent fallback); ``"torch"`` forces the torch path. A new backend is one module here plus one
entry in :data:`AUTO_ORDER`.

If a kernel fails to compile or launch on this machine (an old GPU, a Triton/driver mismatch),
an ``"auto"`` call falls back to the next backend and the failed one is disabled for that loss
on that device type, with one warning that names the reason (:func:`disable`).

Nothing here runs at import time: Triton is imported, and the native kernels are built, only
when a call could use them.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Literal, get_args

from marginloss.backends import native, torch_ops, triton
from marginloss.errors import BackendUnavailableError
from marginloss.losses._spec import Call, LossSpec

Backend = Literal["auto", "torch", "triton", "native"]

#: The backends ``backend="auto"`` tries, in order.
AUTO_ORDER: tuple[ModuleType, ...] = (triton, native, torch_ops)

#: Every value ``backend=`` takes (a test checks they are "auto" and the names above).
BACKENDS: tuple[str, ...] = get_args(Backend)

_BY_NAME = {b.NAME: b for b in AUTO_ORDER}

__all__ = ["AUTO_ORDER", "BACKENDS", "Backend", "explain", "select"]


def select(requested: str, spec: LossSpec, call: Call) -> ModuleType:
    """The backend module that runs ``call`` of ``spec`` for ``backend=requested``.

    An empty input runs on the torch backend whatever was asked (there is nothing to compute,
    and every backend gives the same empty or nan result).

    Raises:
        BackendUnavailableError: ``requested`` names a backend that cannot run this call.
    """
    return _choose(requested, spec, call, None)


def disable(backend: ModuleType, spec: LossSpec, reason: str) -> None:
    """Stop ``"auto"`` from choosing ``backend`` for ``spec`` in this process, with one warning
    that says why (its kernel failed to compile or launch)."""
    global generation
    _disabled[backend.NAME, spec.name] = reason
    generation += 1
    warnings.warn(
        f"marginloss: the {backend.NAME} kernel of {spec.name} failed on this machine "
        f"({reason}); {spec.name} uses the next backend from now on (pass "
        f"backend={backend.NAME!r} to see the error).", RuntimeWarning, stacklevel=4)


_disabled: dict[tuple[str, str], str] = {}
#: Counts the kernels disabled so far (callers that remember a choice key it on this).
generation = 0


def explain(requested: str, spec: LossSpec, call: Call) -> tuple[ModuleType, str]:
    """:func:`select`'s choice and why, in words (``marginloss info``)."""
    reasons: list[str] = []
    backend = _choose(requested, spec, call, reasons)
    return backend, "; ".join(reasons)


def _choose(requested: str, spec: LossSpec, call: Call, reasons: list[str] | None):
    x = call.inputs[0]
    if not x.numel():
        if reasons is not None:
            reasons.append("empty input")
        return torch_ops
    if requested != "auto":
        backend = _BY_NAME[requested]
        if backend.NAME not in spec.backends:
            problem = f"there is no {backend.NAME} kernel for {spec.name}"
        else:
            problem = backend.unavailable(spec, call)
        if problem is not None:
            raise BackendUnavailableError(
                f"{spec.name}: backend={requested!r} cannot run this call: {problem}.")
        if reasons is not None:
            reasons.append(f"backend={requested!r} was requested")
        return backend
    device = "cpu" if x.is_cpu else x.device.type
    for backend in AUTO_ORDER:
        if backend.DEVICES is not None and device not in backend.DEVICES:
            continue
        if backend.NAME not in spec.backends:
            if reasons is not None:
                reasons.append(f"no {backend.NAME} kernel")
            continue
        problem = _disabled.get((backend.NAME, spec.name)) if _disabled else None
        if problem is None:
            problem = backend.unavailable(spec, call)
        if problem is None:
            if reasons is not None and not reasons:
                reasons.append(f"{device} tensor, {x.dtype}")
            return backend
        if reasons is not None:
            reasons.append(problem)
    raise AssertionError("the torch backend runs every call")  # pragma: no cover
