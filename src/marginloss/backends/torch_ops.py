"""The torch backend: each loss's own torch-ops compute (``spec.torch_compute``).

Runs on every device torch supports: it is the CPU path for dtypes and layouts the native
kernels do not take, and the CUDA path when Triton is not available. Every loss has one (it is
the reference the other backends are tested against).
"""

from __future__ import annotations

from marginloss.losses._spec import Call, LossSpec, Result

NAME = "torch"
DEVICES = None  # any device: "auto" falls back to this backend


def unavailable(spec: LossSpec, call: Call) -> str | None:
    """Never: the torch backend runs every call."""
    return None


def run(spec: LossSpec, call: Call, check: bool = False) -> Result:
    """The loss's torch-ops compute (it counts no labels: ``check`` is ignored)."""
    return spec.torch_compute(call)
