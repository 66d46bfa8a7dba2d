"""Helpers every backend shares: the accumulation dtype, the reduction's scale, reducing rows.

Kept apart from any one backend, so that no backend imports another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # the loss modules import this module: no import back at run time
    from marginloss.losses._spec import Call, LossSpec


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the math runs in: float64 stays float64, everything else runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def n_terms(spec: LossSpec, call: Call) -> int:
    """How many loss terms ``"mean"`` averages: rows, or elements for elementwise losses."""
    x = call.inputs[0]
    return x.numel() if spec.elementwise else x.shape[0]


def grad_scale(spec: LossSpec, call: Call) -> float:
    """The reduction's factor in every gradient: ``1 / n_terms`` for ``"mean"``, else 1
    (an empty ``"mean"`` has no gradient entries, so its factor does not matter)."""
    if call.reduction != "mean":
        return 1.0
    n = n_terms(spec, call)
    return 1.0 / n if n else 1.0


def reduce_rows(rows: Tensor, reduction: str, out_dtype: torch.dtype,
                count: int | None = None) -> Tensor:
    """Per-row losses -> the requested reduction, in ``out_dtype``.

    ``"mean"`` divides the sum by ``count`` (default: the number of rows; an elementwise loss
    passes its per-row sums and the number of elements). The mean of nothing is nan (0 / 0), as
    torch's. ``torch.sum`` adds in a fixed order, so the result is deterministic.
    """
    if reduction == "none":
        return rows.to(out_dtype)
    total = rows.sum()
    if reduction == "mean":
        count = rows.numel() if count is None else count
        total = total / count if count else total.new_tensor(float("nan"))
    return total.to(out_dtype)
