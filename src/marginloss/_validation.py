"""Input checks shared by every backend, and the errors they raise.

Shape, dtype and option checks always run; they read only metadata, never tensor values.
Value checks (label conventions, index ranges) run when ``validate=True`` (the default): each
loss reduces its target to one small tensor (``aminmax``) and reads it back once, so a call costs
at most one host synchronisation. ``validate=False`` skips them, for hot loops and CUDA graphs.

Every message names the function and the argument, says what was expected and what was
received, and gives the fix where one exists.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DtypeError", "LabelError", "ShapeError"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class LabelError(ValueError):
    """A target's values do not follow the loss's label convention (e.g. {0,1} where ±1 is meant)."""


class ShapeError(ValueError):
    """Tensor shapes (or ranks) that the loss cannot accept together."""


class DtypeError(TypeError):
    """A tensor whose dtype the loss cannot accept (e.g. integer scores, float class indices)."""


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def _values_preview(t: Tensor, limit: int = 6) -> str:
    """A short, readable sample of the distinct values of ``t`` (only used on the error path)."""
    flat = t.detach().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    vals = torch.unique(flat[~torch.isnan(flat)] if flat.is_floating_point() else flat)
    shown = [v if not float(v).is_integer() else int(v) for v in vals[:limit].tolist()]
    more = f", ... ({vals.numel()} distinct)" if vals.numel() > limit else ""
    nan = ", nan" if flat.is_floating_point() and bool(torch.isnan(flat).any()) else ""
    return "{" + ", ".join(str(v) for v in shown) + more + nan + "}"


# ----------------------------------------------------------------------------------------------
# generic checks


def check_input(fn: str, input: Tensor) -> None:
    if not isinstance(input, Tensor):
        raise DtypeError(f"{fn}: `input` must be a torch.Tensor, got {type(input).__name__}.")
    if input.dtype not in _FLOAT_DTYPES:
        raise DtypeError(
            f"{fn}: `input` must hold floating-point scores (float16, bfloat16, float32 or "
            f"float64), got {input.dtype}. Convert it with `input.float()`."
        )


def check_real_tensor(fn: str, t: object, arg: str) -> None:
    """``t`` is a real-valued torch.Tensor (the first check on any label tensor)."""
    if not isinstance(t, Tensor):
        raise DtypeError(f"{fn}: `{arg}` must be a torch.Tensor, got {type(t).__name__}.")
    if t.is_complex():
        raise DtypeError(f"{fn}: `{arg}` must be real, got {t.dtype}.")


def check_target_tensor(fn: str, target: Tensor, input: Tensor) -> None:
    check_real_tensor(fn, target, "target")
    if target.device != input.device:
        raise ValueError(
            f"{fn}: `target` is on {target.device} but `input` is on {input.device}; "
            f"move them to the same device (e.g. `target.to(input.device)`)."
        )
    check_no_grad(fn, "target", target)


def check_no_grad(fn: str, name: str, t: Tensor) -> None:
    """marginloss differentiates with respect to ``input`` only; say so instead of returning 0."""
    if t.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"{fn}: `{name}` requires grad, but marginloss computes the gradient with respect to "
            f"`input` only. Pass `{name}.detach()` (or compute this loss under torch.no_grad() "
            f"for evaluation)."
        )


def check_weight_tensor(fn: str, weight: Tensor, input: Tensor) -> None:
    if not isinstance(weight, Tensor):
        raise DtypeError(f"{fn}: `weight` must be a torch.Tensor or None, got {type(weight).__name__}.")
    if not (weight.is_floating_point() or weight.dtype in (torch.int8, torch.int16, torch.int32,
                                                           torch.int64, torch.uint8)):
        raise DtypeError(f"{fn}: `weight` must be a real tensor, got {weight.dtype}.")
    if weight.device != input.device:
        raise ValueError(
            f"{fn}: `weight` is on {weight.device} but `input` is on {input.device}; "
            f"move it with `weight.to(input.device)`."
        )
    check_no_grad(fn, "weight", weight)


def check_integer_target(fn: str, target: Tensor, what: str, fix: str) -> None:
    if target.is_floating_point() or target.dtype == torch.bool:
        raise DtypeError(
            f"{fn}: `target` must hold integer {what} (int64 or int32), got {target.dtype}. {fix}"
        )


def _abs_range(t: Tensor, block: int = 1 << 18) -> tuple[Tensor, Tensor]:
    """``(min |t|, max |t|)`` as 0-d tensors, in blocks: no full-size temporary, no sync."""
    flat = t.reshape(-1)
    if flat.numel() <= block:
        return torch.aminmax(flat.abs())
    scratch = torch.empty(block, dtype=flat.dtype, device=flat.device)
    lows, highs = [], []
    for s in range(0, flat.numel(), block):
        chunk = flat[s : s + block]
        lo, hi = torch.aminmax(torch.abs(chunk, out=scratch[: chunk.numel()]))
        lows.append(lo)
        highs.append(hi)
    return torch.stack(lows).min(), torch.stack(highs).max()


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """Whether a tensor of ``shape`` broadcasts to exactly ``target`` (torch's rules)."""
    if len(shape) > len(target):
        return False
    return all(a == b or a == 1 for a, b in zip(reversed(shape), reversed(target)))


def _read_back(*scalars: Tensor) -> list[float]:
    """Read several 0-d results of one dtype back to the host with a single synchronisation."""
    return torch.stack(scalars).tolist()


# ----------------------------------------------------------------------------------------------
# per-loss checks


def soft_margin(input: Tensor, target: Tensor) -> None:
    """Shapes and dtypes; the label values are :func:`soft_margin_labels`'s."""
    fn = "soft_margin_loss"
    check_input(fn, input)
    check_target_tensor(fn, target, input)
    if not _broadcasts_to(target.shape, input.shape):
        raise ShapeError(
            f"{fn}: `target` of shape {_shape(target)} does not fit `input` of shape "
            f"{_shape(input)}; `target` must have the input's shape (one ±1 label per score) "
            f"or broadcast to it."
        )


def soft_margin_labels(target: Tensor) -> None:
    """``target`` holds only -1 and +1 (else :class:`LabelError`, with the likely fix)."""
    fn = "soft_margin_loss"
    if target.numel() == 0:
        return
    if target.dtype != torch.bool:  # a bool target is a {0, 1} mask by construction
        lo, hi = _read_back(*_abs_range(target))
        if lo == 1 and hi == 1:
            return
    else:
        lo = hi = 0.0
    seen = _values_preview(target)
    if target.dtype == torch.bool or set(torch.unique(target).tolist()) <= {0, 1}:
        fix = (
            "It looks like {0, 1} labels, which soft_margin_loss would silently treat as 'no "
            "label' (y = 0 gives log 2 whatever the score). Convert them with "
            "`marginloss.labels.to_pm1(target)` (that is, `2 * target - 1`), or use "
            "`BCEWithLogitsLoss` for {0, 1} labels."
        )
    elif lo != lo or hi != hi:  # NaN
        fix = "Remove the NaN labels."
    else:
        fix = (
            "soft_margin_loss takes hard ±1 labels; for soft labels or probabilities in [0, 1] "
            "use `multilabel_soft_margin_loss` or `BCEWithLogitsLoss`."
        )
    raise LabelError(
        f"{fn}: `target` must hold labels in {{-1, +1}} (one sign per element), but it holds "
        f"{seen}. {fix} Pass validate=False to skip this check."
    )


def multilabel_soft_margin(input: Tensor, target: Tensor, weight: Tensor | None) -> None:
    """Shapes and dtypes; the label values are :func:`multilabel_soft_margin_labels`'s."""
    fn = "multilabel_soft_margin_loss"
    check_input(fn, input)
    check_target_tensor(fn, target, input)
    if input.dim() == 0:
        raise ShapeError(
            f"{fn}: `input` must have shape (C,) or (N, C) (classes on the last dimension), "
            f"got a 0-d tensor."
        )
    if not _broadcasts_to(target.shape, input.shape):
        raise ShapeError(
            f"{fn}: `target` of shape {_shape(target)} does not fit `input` of shape "
            f"{_shape(input)}; `target` must be a 0/1 (multi-hot) mask with the input's shape. "
            f"If it holds class indices, convert with "
            f"`marginloss.labels.indices_to_multi_hot(target, num_classes={input.shape[-1]})`."
        )
    if weight is not None:
        check_weight_tensor(fn, weight, input)
        if not _broadcasts_to(weight.shape, input.shape):
            raise ShapeError(
                f"{fn}: `weight` of shape {_shape(weight)} cannot broadcast to `input` of shape "
                f"{_shape(input)}; pass a per-class weight of shape ({input.shape[-1]},)."
            )


def multilabel_soft_margin_labels(target: Tensor) -> None:
    """``target`` lies in [0, 1] (else :class:`LabelError`, with the likely fix)."""
    fn = "multilabel_soft_margin_loss"
    if target.numel() == 0:
        return
    lo, hi = _read_back(*torch.aminmax(target if target.dtype != torch.bool
                                       else target.to(torch.uint8)))
    if 0 <= lo and hi <= 1:
        return
    seen = _values_preview(target)
    if lo == -1 and set(torch.unique(target).tolist()) <= {-1, 0, 1} and hi == 1:
        fix = (
            "It looks like ±1 labels; this loss takes a 0/1 multi-hot mask. Convert with "
            "`marginloss.labels.to_01(target)` (that is, `(target + 1) / 2`)."
        )
    elif lo == -1 and not target.is_floating_point():
        fix = (
            "It looks like -1-padded class-index lists (the multilabel_margin_loss convention). "
            "Convert with `marginloss.labels.padded_to_multi_hot(target)`, or use "
            "`multilabel_margin_loss`."
        )
    elif lo != lo or hi != hi:
        fix = "Remove the NaN labels."
    elif hi > 1 and not target.is_floating_point() and lo >= 0:
        fix = (
            "It looks like class indices; convert them with "
            "`marginloss.labels.indices_to_multi_hot(target, num_classes=C)`."
        )
    else:
        fix = "Labels must be probabilities (0 = absent, 1 = present; soft labels in between)."
    raise LabelError(
        f"{fn}: `target` must be a multi-hot mask with values in [0, 1], but it holds {seen}. "
        f"{fix} Pass validate=False to skip this check."
    )


def multi_margin(input: Tensor, target: Tensor, p: object, weight: Tensor | None,
                 validate: bool) -> None:
    fn = "multi_margin_loss"
    if p != 1 and p != 2:
        raise ValueError(f"{fn}: `p` must be 1 or 2, got {p!r}.")
    check_input(fn, input)
    check_target_tensor(fn, target, input)
    if input.dim() > 2:
        raise ShapeError(
            f"{fn}: `input` must have shape (C,) or (N, C), got {_shape(input)}. Flatten the "
            f"leading dimensions first, e.g. `input.reshape(-1, C)` and `target.reshape(-1)`."
        )
    n_classes = input.shape[-1] if input.dim() > 0 else 1
    if n_classes == 0:
        raise ShapeError(f"{fn}: `input` of shape {_shape(input)} has no classes (C = 0).")
    n_rows = input.shape[0] if input.dim() == 2 else 1
    check_integer_target(
        fn, target, "class indices",
        "If these are class indices stored as floats, use `target.long()`; if they are one-hot "
        "rows, use `target.argmax(-1)`.",
    )
    if target.dim() > 1 or target.numel() != n_rows:
        hint = ""
        if target.shape == input.shape and input.dim() == 2:
            hint = (
                " A target with the input's shape looks like one-hot/multi-hot rows: use "
                "`target.argmax(-1)` for one class per row, or `multilabel_margin_loss` / "
                "`multilabel_soft_margin_loss` for several."
            )
        raise ShapeError(
            f"{fn}: `target` must hold one class index per sample, shape ({n_rows},), for "
            f"`input` of shape {_shape(input)}; got {_shape(target)}.{hint}"
        )
    if weight is not None:
        check_weight_tensor(fn, weight, input)
        if weight.dim() != 1 or weight.numel() != n_classes:
            raise ShapeError(
                f"{fn}: `weight` must be one-dimensional with one entry per class, shape "
                f"({n_classes},); got {_shape(weight)}."
            )
    if not validate or target.numel() == 0:
        return
    lo, hi = _read_back(*torch.aminmax(target))
    if 0 <= lo and hi < n_classes:
        return
    hint = " If your classes are numbered from 1, use `target - 1`." if hi == n_classes else ""
    raise LabelError(
        f"{fn}: `target` must hold class indices in [0, {n_classes}) for C = {n_classes} "
        f"classes, but its values range over [{int(lo)}, {int(hi)}].{hint} "
        f"Pass validate=False to skip this check (out-of-range indices then give undefined "
        f"results)."
    )


def multilabel_margin(input: Tensor, target: Tensor, validate: bool) -> None:
    fn = "multilabel_margin_loss"
    check_input(fn, input)
    check_target_tensor(fn, target, input)
    if input.dim() > 2:
        raise ShapeError(
            f"{fn}: `input` must have shape (C,) or (N, C), got {_shape(input)}."
        )
    n_classes = input.shape[-1] if input.dim() > 0 else 1
    if n_classes == 0:
        raise ShapeError(f"{fn}: `input` of shape {_shape(input)} has no classes (C = 0).")
    check_integer_target(
        fn, target, "class indices padded with -1",
        "For a 0/1 multi-hot mask use `multilabel_soft_margin_loss`, or convert it with "
        "`marginloss.labels.multi_hot_to_padded(target)`.",
    )
    ok = (target.shape == input.shape) if input.dim() == 2 else (
        target.dim() <= 1 and target.numel() == n_classes)
    if not ok:
        raise ShapeError(
            f"{fn}: `target` must have the input's shape {_shape(input)}: each row lists the "
            f"sample's class indices, padded with -1; got {_shape(target)}. Build it from label "
            f"sets with `marginloss.labels.sets_to_padded(sets, num_classes={n_classes})`."
        )
    if not validate or target.numel() == 0:
        return
    lo, hi = _read_back(*torch.aminmax(target))
    if -1 <= lo and hi < n_classes and not (lo >= 0 and hi <= 1 and n_classes > 2):
        return
    if lo >= 0 and hi <= 1:
        raise LabelError(
            f"{fn}: `target` looks like a 0/1 multi-hot mask (only 0 and 1, no -1 padding), but "
            f"this loss takes class-index lists padded with -1 (row [3, 0, -1, -1] means classes "
            f"3 and 0). Convert with `marginloss.labels.multi_hot_to_padded(target)`, or use "
            f"`multilabel_soft_margin_loss`, which takes the mask directly. If you really mean "
            f"index lists made of 0s and 1s without padding, pass validate=False."
        )
    raise LabelError(
        f"{fn}: `target` entries must be class indices in [0, {n_classes}) or -1 (padding), but "
        f"its values range over [{int(lo)}, {int(hi)}]. Pass validate=False to skip this check "
        f"(out-of-range indices then give undefined results)."
    )
