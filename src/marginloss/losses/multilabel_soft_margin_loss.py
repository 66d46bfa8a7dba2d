r"""``multilabel_soft_margin_loss``: per-class logistic loss on a 0/1 mask, averaged over classes.

For row :math:`n` of :math:`C` classes, scores :math:`x`, mask :math:`y \in [0, 1]` and weight
:math:`w`,

.. math::
    \ell_n = \frac{1}{C} \sum_c w_{nc} \bigl(\operatorname{softplus}(x_{nc}) - y_{nc} x_{nc}
    \bigr), \qquad
    \frac{\partial \ell_n}{\partial x_{nc}} = \frac{w_{nc}}{C}\bigl(\sigma(x_{nc}) - y_{nc}\bigr),

which equals torch's :math:`-[y \log\sigma(x) + (1-y)\log\sigma(-x)]`, with
:math:`\operatorname{softplus}(x) = \max(x, 0) + \log(1 + e^{-|x|})` (stable for any score).

Two options of our own (``LossSpec.extras``, keyword-only): a positive-class weight
:math:`p \in [0, \infty)^C` (``pos_weight``, as in ``BCEWithLogitsLoss``) and label smoothing
:math:`\varepsilon \in [0, 1)` (``label_smoothing``), which replaces the mask by
:math:`t = y (1 - \varepsilon) + \varepsilon / 2` before everything:

.. math::
    \ell_n = \frac{1}{C} \sum_c w_{nc} \bigl(p_c\, t_{nc} \operatorname{softplus}(-x_{nc})
    + (1 - t_{nc}) \operatorname{softplus}(x_{nc})\bigr), \qquad
    \frac{\partial \ell_n}{\partial x_{nc}} = \frac{w_{nc}}{C}\bigl((1 - t_{nc})\,
    \sigma(x_{nc}) - p_c\, t_{nc}\, \sigma(-x_{nc})\bigr)

(:math:`p = 1`, :math:`\varepsilon = 0`: the loss above). ``pos_weight`` must have shape
``(C,)`` (or one value), is used in the math's dtype (float32, float64 for a float64 loss) and
does not change the loss's dtype; with ``validate=True`` its values must be finite and
:math:`\ge 0` (checked with the labels).

A third option, ``class_reduction="sum"`` (keyword-only), sums over the classes instead of
dividing by :math:`C` (with :math:`C = 10^6` the mean makes the loss and its gradient vanish).
It is the same loss with every weight multiplied by :math:`C`:
:math:`\sum_c w_{nc} \ell_{nc} = \frac{1}{C} \sum_c (C\, w_{nc}) \ell_{nc}`, so every backend
and the sparse targets run it unchanged (:func:`class_sum_weight`; the scaled weight is made in
float32, or float64 for a float64 input, so the loss is at least float32).

Canonical call: ``input`` ``(N, C)`` (leading dimensions flattened; computed in the dtype torch
promotes ``input``, ``target`` and ``weight`` to), ``target`` ``(N, C)`` (possibly a stride-0
broadcast view; integer and bool masks arrive as they are), ``weight`` a per-class ``(C,)``
vector when it broadcasts as one, else a full ``(N, C)`` tensor. An empty class dimension gives
nan (0 / 0), as torch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from marginloss import _checks
from marginloss.backends._common import acc_dtype, grad_scale, reduce_rows
from marginloss.errors import DtypeError, LabelError, ShapeError
from marginloss.losses import _logistic
from marginloss.losses._spec import KERNELS, Call, LossSpec, Option, Result

NAME = "multilabel_soft_margin_loss"


def out_dtype(call: Call) -> torch.dtype:
    """The dtype torch promotes ``input``, ``target`` and ``weight`` to (the input's float)."""
    dtype = _checks.promote_float(call.input.dtype, call.target.dtype)
    if call.weight is not None:
        dtype = _checks.promote_float(dtype, call.weight.dtype)
    return dtype


def prepare(inputs: tuple[Tensor, ...], target: Tensor, weight: Tensor | None, options: tuple):
    """Shapes and dtypes; the canonical ``(N, C)`` views."""
    (input,) = inputs
    _checks.check_input(NAME, input)
    _checks.check_target_tensor(NAME, target, input)
    if input.dim() == 0:
        raise ShapeError(
            f"{NAME}: `input` must have shape (C,) or (N, C) (classes on the last dimension), "
            f"got a 0-d tensor."
        )
    n_classes = input.shape[-1]
    if not _checks.broadcasts_to(target.shape, input.shape):
        raise ShapeError(
            f"{NAME}: `target` of shape {_checks.shape_str(target)} does not fit `input` of "
            f"shape {_checks.shape_str(input)}; `target` must be a 0/1 (multi-hot) mask with the "
            f"input's shape. If it holds class indices, convert with "
            f"`marginloss.labels.indices_to_multi_hot(target, num_classes={n_classes})`."
        )
    if weight is not None:
        _checks.check_weight_tensor(NAME, weight, input)
        if not _checks.broadcasts_to(weight.shape, input.shape):
            raise ShapeError(
                f"{NAME}: `weight` of shape {_checks.shape_str(weight)} cannot broadcast to "
                f"`input` of shape {_checks.shape_str(input)}; pass a per-class weight of shape "
                f"({n_classes},)."
            )
    # torch computes in the dtype it promotes the three to (a 0-d target or weight does not
    # widen it): bring the canonical tensors there, so that promoting them gives the same
    dtype = _checks.result_float(input, target)
    if weight is not None and weight.dim() > 0:
        dtype = _checks.promote_float(dtype, weight.dtype)
    if dtype == torch.float64 and input.dtype != dtype:
        input = input.to(dtype)
    if target.is_floating_point() and target.dtype != dtype:
        target = target.to(dtype)
    x = _checks.as_rows(input)
    if target.shape != input.shape:
        target = target.expand(input.shape)
    t = target if target.dim() == 2 else target.reshape(x.shape)
    if weight is not None:
        if weight.is_floating_point() and weight.dtype != dtype:
            weight = weight.to(dtype)
        if weight.numel() == (weight.shape[-1] if weight.dim() else 1):  # one per class
            weight = weight.reshape(-1).expand(n_classes).contiguous()
        else:
            weight = weight.expand(input.shape).reshape(x.shape)
    return (x,), t, weight, (), tuple(input.shape[:-1])


_FLOAT_MAX = torch.finfo(torch.float32).max
_NUMBERS = (int, float, torch.SymInt, torch.SymFloat)


CLASS_REDUCTIONS = ("mean", "sum")


def check_class_reduction(class_reduction: object, fn: str = NAME) -> bool:
    """Whether ``class_reduction`` asks for the sum over classes (``"sum"``) rather than their
    mean (``"mean"``, torch's loss); raises ``ValueError`` for anything else."""
    if class_reduction not in CLASS_REDUCTIONS:
        raise ValueError(f"{fn}: `class_reduction` must be 'mean' (divide by the number of "
                         f"classes, torch's loss) or 'sum' (add over the classes), got "
                         f"{class_reduction!r}.")
    return class_reduction == "sum"


def class_sum_weight(input: Tensor, weight: Tensor | None, class_reduction: str,
                     fn: str = NAME, n_classes: int | None = None) -> Tensor | None:
    """The weight that gives ``class_reduction``: ``weight`` itself for ``"mean"``; for
    ``"sum"``, :math:`C w` (:math:`C` per class without a weight) in float32 (float64 for a
    float64 input or weight), which turns the mean over classes into their sum. ``C`` is
    ``n_classes``, by default ``input``'s last dimension. Reads metadata only (a ``(C,)``
    vector, or the weight times C: one pass over a full weight)."""
    if not check_class_reduction(class_reduction, fn) or not isinstance(input, Tensor) or \
            (n_classes is None and input.dim() == 0):
        return weight  # (a bad input is reported by the loss's own checks)
    if n_classes is None:
        n_classes = input.shape[-1]
    if weight is not None and not isinstance(weight, Tensor):
        return weight  # reported by the loss's own checks
    dtypes = (input.dtype,) if weight is None else (input.dtype, weight.dtype)
    acc = torch.float64 if torch.float64 in dtypes else torch.float32
    if weight is None:
        return torch.full((n_classes,), float(n_classes), dtype=acc, device=input.device)
    return weight.to(acc) * float(n_classes)


def prepare_extras(call: Call, extras: tuple) -> tuple:
    """``(pos_weight, label_smoothing)`` checked (metadata only) and canonical: ``pos_weight``
    None or a contiguous ``(C,)`` vector in the math's dtype, ``label_smoothing`` a float."""
    pos_weight, eps = extras
    if isinstance(eps, bool) or not isinstance(eps, _NUMBERS):
        raise DtypeError(f"{NAME}: `label_smoothing` must be a float in [0, 1), got "
                         f"{type(eps).__name__}.")
    if isinstance(eps, int):
        eps = float(eps)
    if not (0.0 <= eps < 1.0):  # NaN fails too
        raise ValueError(
            f"{NAME}: `label_smoothing` must lie in [0, 1), got {eps}: 0 keeps the 0/1 "
            f"targets, 0.1 turns them into 0.05 / 0.95."
        )
    if pos_weight is None:
        return None, eps
    x = call.input
    n_classes = x.shape[1]
    if not isinstance(pos_weight, torch.Tensor):
        raise DtypeError(f"{NAME}: `pos_weight` must be a torch.Tensor or None, got "
                         f"{type(pos_weight).__name__}.")
    if not (pos_weight.is_floating_point() or pos_weight.dtype in
            (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise DtypeError(f"{NAME}: `pos_weight` must be a real tensor, got {pos_weight.dtype}.")
    _checks.check_same_device(NAME, "pos_weight", pos_weight, x)
    _checks.check_no_grad(NAME, "pos_weight", pos_weight)
    if pos_weight.dim() > 1 or pos_weight.numel() not in (1, n_classes):
        raise ShapeError(
            f"{NAME}: `pos_weight` of shape {_checks.shape_str(pos_weight)} does not fit "
            f"{n_classes} classes; pass one weight per class, shape ({n_classes},) (the weight "
            f"of each class's positive term, e.g. num_negatives / num_positives)."
        )
    dtype = acc_dtype(out_dtype(call))
    if pos_weight.dtype != dtype:
        pos_weight = pos_weight.to(dtype)
    if pos_weight.dim() != 1 or pos_weight.shape[0] != n_classes:
        pos_weight = pos_weight.reshape(1).expand(n_classes)
    return pos_weight.contiguous(), eps


def check_pos_weight(call: Call) -> None:
    """``pos_weight`` (when given) is finite and >= 0 (else ValueError, with the likely fix)."""
    pos_weight = SPEC.extra_values(call)[0]
    if pos_weight is None or pos_weight.numel() == 0:
        return
    if bool(((pos_weight >= 0) & (pos_weight <= _FLOAT_MAX)).all()):
        return
    raise ValueError(
        f"{NAME}: `pos_weight` must be finite and >= 0 (the weight of each class's positive "
        f"term), but it holds {_checks.values_preview(pos_weight)}. A class without positives "
        f"gives an infinite num_negatives / num_positives: clamp it "
        f"(`pos_weight.clamp(max=...)`) or leave the class out. Pass validate=False to skip "
        f"this check."
    )


def check_labels(call: Call) -> None:
    """``target`` lies in [0, 1] (else :class:`LabelError`, with the likely fix), and
    ``pos_weight`` is finite and >= 0 (else ValueError)."""
    if call.extras:
        check_pos_weight(call)
    target = _checks.compact(call.target)
    if target.numel() == 0:
        return
    lo, hi = _checks.read_back(*torch.aminmax(target if target.dtype != torch.bool
                                              else target.to(torch.uint8)))
    if lo >= 0 and hi <= 1:
        return
    seen = _checks.values_preview(target)
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
        f"{NAME}: `target` must be a multi-hot mask with values in [0, 1], but it holds {seen}. "
        f"{fix} Pass validate=False to skip this check."
    )


def torch_compute(call: Call) -> Result:
    r"""The loss and gradient in blocks of lean torch ops.

    An unweighted reduced loss needs only the total: :math:`\sum (\max(x, 0) - y x)` (summed
    per element, where it is exact; the two sums apart would cancel catastrophically) plus the
    tails' sum from :func:`~marginloss.losses._logistic.sum_log1p`.
    """
    if call.extras:
        pos_weight, eps = call.extras
        if pos_weight is not None or eps:
            return _compute_with_options(call, pos_weight, eps)
    begun = _begin(call)
    if isinstance(begun, Result):
        return begun
    acc, out, grad, scale, weight = begun
    input, target, reduction = call.input, call.target, call.reduction
    n_rows, n_cols = input.shape
    dev = input.device
    by_row = reduction == "none" or weight is not None
    rows = torch.empty(n_rows, dtype=acc, device=dev) if by_row else None
    total = torch.zeros((), dtype=torch.float64, device=dev)
    width = min(_logistic.BLOCK // n_cols, n_rows) if n_cols <= _logistic.BLOCK else 1
    a, q, t = (torch.empty(max(width, 1), n_cols, dtype=acc, device=dev) for _ in range(3))
    u64 = _logistic.product_scratch(input, a.numel(), not by_row)
    for s, e in _logistic.blocks(n_rows, n_cols):
        xs, ys = input[s:e], target[s:e]
        if xs.dtype != acc:  # float16/bfloat16: widen the block once
            xs = xs.to(acc)
        if ys.dtype != acc:
            ys = ys.to(acc)
        ab, qb, tb = a[: e - s], q[: e - s], t[: e - s]
        if grad is not None:
            torch.sigmoid(xs, out=qb)  # sigma(x)
            gs = grad[s:e]
            if weight is None and gs.dtype == acc:
                torch.sub(qb, ys, out=gs).mul_(scale)  # (sigma(x) - y) / C
            else:
                torch.sub(qb, ys, out=ab)
                if weight is not None:
                    ab.mul_(weight[s:e])
                torch.mul(ab, scale, out=gs)
        _logistic.neg_tail(xs, tb)  # -sigma(-|x|)
        torch.clamp(xs, min=0, out=ab).addcmul_(xs, ys, value=-1)  # max(x, 0) - y x, exact
        if not by_row:
            total += ab.sum() - _logistic.sum_log1p(tb, u64)
            continue
        ab.sub_(tb.log1p_())  # + log(1 + exp(-|x|))
        if weight is not None:
            ab.mul_(weight[s:e])
        torch.sum(ab, dim=1, out=rows[s:e])
    if by_row:
        rows /= n_cols
        return Result(reduce_rows(rows, reduction, out), (grad,))
    total = total / n_cols
    if reduction == "mean":
        total = total / n_rows if n_rows else total.new_tensor(float("nan"))
    return Result(total.to(out), (grad,))


def _compute_with_options(call: Call, pos_weight: Tensor | None, eps: float) -> Result:
    r"""The loss and gradient with ``pos_weight`` and/or label smoothing, in blocks of torch
    ops: with :math:`t` the smoothed label, :math:`u = p t` and :math:`L = \log(1 + e^{-|x|})`,
    the loss is :math:`(1 - t) \max(x, 0) - u \min(x, 0) + ((1 - t) + u) L` and the gradient
    :math:`(1 - t) \sigma(x) - u \sigma(-x)` (no :math:`1 - 1` cancellation for hard labels)."""
    begun = _begin(call)
    if isinstance(begun, Result):
        return begun
    acc, out, grad, scale, weight = begun
    input, target, reduction = call.input, call.target, call.reduction
    n_rows, n_cols = input.shape
    dev = input.device
    if pos_weight is not None:
        pos_weight = pos_weight.to(acc)
    rows = torch.empty(n_rows, dtype=acc, device=dev)
    for s, e in _logistic.blocks(n_rows, n_cols):
        xs, t = input[s:e].to(acc), target[s:e].to(acc)
        if eps:
            t = t * (1.0 - eps) + 0.5 * eps
        u = t * pos_weight if pos_weight is not None else t  # the positive term's factor
        v = 1.0 - t  # the negative term's factor
        if grad is not None:
            g = v * torch.sigmoid(xs) - u * torch.sigmoid(-xs)
            if weight is not None:
                g *= weight[s:e]
            grad[s:e] = g * scale
        tail = _logistic.neg_tail(xs, torch.empty_like(xs)).log1p_().neg_()
        loss = xs.clamp(min=0) * v - xs.clamp(max=0) * u
        loss += tail * (v + u) if pos_weight is not None else tail
        if weight is not None:
            loss *= weight[s:e]
        torch.sum(loss, dim=1, out=rows[s:e])
    rows /= n_cols
    return Result(reduce_rows(rows, reduction, out), (grad,))


def _begin(call: Call) -> Result | tuple:
    """What both torch computes start from: ``(accumulation dtype, output dtype, the gradient
    buffer or None, the gradient's factor 1 / C (times the mean's), the weight in the
    accumulation dtype expanded to (N, C) or None)``; or the finished :class:`Result` of an
    empty class dimension (0 / 0 = nan per row, as torch)."""
    input, weight = call.input, call.weight
    acc = acc_dtype(input.dtype)
    n_rows, n_cols = input.shape
    out = out_dtype(call)
    grad = torch.empty_like(input) if call.need_grad[0] else None
    if n_cols == 0:
        rows = torch.full((n_rows,), float("nan"), dtype=acc, device=input.device)
        return Result(reduce_rows(rows, call.reduction, out), (grad,))
    if weight is not None:
        weight = weight.to(acc)
        if weight.dim() == 1:
            weight = weight.expand(n_rows, n_cols)
    return acc, out, grad, grad_scale(SPEC, call) / n_cols, weight


def sample(n: int, c: int, *, dtype=torch.float32, device="cpu", generator=None):
    """Scores ``(n, c)`` and a 0/1 mask of the same shape (about half the classes present)."""
    x = torch.randn(n, c, generator=generator).to(device=device, dtype=dtype)
    y = torch.randint(0, 2, (n, c), generator=generator).to(device=device, dtype=dtype)
    return (x,), y, {}


SPEC = LossSpec(
    name=NAME,
    module="MultiLabelSoftMarginLoss",
    convention="float (N, C), a 0/1 multi-hot mask (soft labels in [0, 1] allowed)",
    weighted=True,
    extras=(Option("pos_weight", "Tensor?", None), Option("label_smoothing", "float", 0.0)),
    prepare_extras=prepare_extras,
    backends=KERNELS,
    fused_label_check=("native", "triton"),  # the C and Triton kernels count bad labels
    full_weight=True,
    prepare=prepare,
    check_labels=check_labels,
    torch_compute=torch_compute,
    sample=sample,
    out_dtype=out_dtype,
)
