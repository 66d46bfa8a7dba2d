"""Reduction modes and torch's deprecated ``size_average`` / ``reduce`` arguments.

Mirrors ``torch.nn._reduction``: a legacy argument that is not ``None`` overrides an explicit
``reduction`` and emits the same ``UserWarning`` torch emits.

============  ======  =========
size_average  reduce  reduction
============  ======  =========
None / True   None / True  ``"mean"``
False         None / True  ``"sum"``
any           False        ``"none"``
============  ======  =========
"""

from __future__ import annotations

import warnings
from typing import Literal

Reduction = Literal["none", "mean", "sum"]

REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")


def legacy_get_string(size_average: bool | None, reduce: bool | None) -> str:
    """Map the deprecated pair to a reduction string, warning exactly as torch does."""
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if size_average and reduce:
        ret = "mean"
    elif reduce:
        ret = "sum"
    else:
        ret = "none"
    warnings.warn(
        f"size_average and reduce args will be deprecated, please use reduction='{ret}' instead.",
        UserWarning,
        stacklevel=3,
    )
    return ret


def resolve(
    size_average: bool | None, reduce: bool | None, reduction: str, fn_name: str
) -> Reduction:
    """Return the effective reduction, applying torch's legacy-override rules.

    ``"elementwise_mean"`` is accepted as a deprecated alias of ``"mean"`` (with torch's warning);
    anything else outside ``{"none", "mean", "sum"}`` raises :class:`ValueError`.
    """
    if size_average is not None or reduce is not None:
        return legacy_get_string(size_average, reduce)  # type: ignore[return-value]
    if reduction == "elementwise_mean":
        warnings.warn(
            "reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
            UserWarning,
            stacklevel=3,
        )
        return "mean"
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"{fn_name}: {reduction!r} is not a valid value for reduction; "
            f"expected one of 'none', 'mean' or 'sum'."
        )
    return reduction  # type: ignore[return-value]
