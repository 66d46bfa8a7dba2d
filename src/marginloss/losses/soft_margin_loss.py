r"""``soft_margin_loss``: the two-class logistic loss on ±1 labels, elementwise.

With score :math:`x`, label :math:`y \in \{-1, +1\}` and :math:`m = y x`:

.. math::
    \ell = \log(1 + e^{-m}) = \max(-m, 0) + \log(1 + e^{-|m|}), \qquad
    \frac{\partial \ell}{\partial x} = -y\, \sigma(-m).

The right-hand form never overflows (torch's ``log1p(exp(-m))`` is ``inf`` once
:math:`-m > 88.7` in float32, and its gradient ``nan``).

Canonical call: ``input`` viewed as rows ``(N, C)`` (any shape; C its last dimension), ``target``
the same ``(N, C)`` (a broadcast target becomes a stride-0 view, or a copy where no view
exists). ``"none"`` gives one loss per element; ``"mean"`` averages over all elements.
"""

from __future__ import annotations

import torch
from torch import Tensor

from marginloss import _checks
from marginloss.backends._common import acc_dtype, grad_scale
from marginloss.errors import LabelError, ShapeError
from marginloss.losses import _logistic
from marginloss.losses._spec import KERNELS, Call, LossSpec, Result

NAME = "soft_margin_loss"


def prepare(inputs: tuple[Tensor, ...], target: Tensor, weight: None, options: tuple):
    """Shapes and dtypes; the canonical ``(N, C)`` views."""
    (input,) = inputs
    _checks.check_input(NAME, input)
    _checks.check_target_tensor(NAME, target, input)
    if not _checks.broadcasts_to(target.shape, input.shape):
        raise ShapeError(
            f"{NAME}: `target` of shape {_checks.shape_str(target)} does not fit `input` of "
            f"shape {_checks.shape_str(input)}; `target` must have the input's shape (one ±1 "
            f"label per score) or broadcast to it."
        )
    x = _checks.as_rows(input)
    if target.shape != input.shape:
        target = target.expand(input.shape)
    t = target if target.dim() == 2 else target.reshape(x.shape)
    return (x,), t, None, (), tuple(input.shape)


def check_labels(call: Call) -> None:
    """``target`` holds only -1 and +1 (else :class:`LabelError`, with the likely fix)."""
    target = _checks.compact(call.target)
    if target.numel() == 0:
        return
    if target.dtype != torch.bool:  # a bool target is a {0, 1} mask by construction
        lo, hi = _checks.read_back(*_checks.abs_range(target))
        if lo == 1 and hi == 1:
            return
    else:
        lo = hi = 0.0
    seen = _checks.values_preview(target)
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
        f"{NAME}: `target` must hold labels in {{-1, +1}} (one sign per element), but it holds "
        f"{seen}. {fix} Pass validate=False to skip this check."
    )


def torch_compute(call: Call) -> Result:
    r"""The loss and gradient in blocks of lean torch ops.

    Per block: one product, one sigmoid (shared by gradient and loss), the tail's logarithm
    (:func:`~marginloss.losses._logistic.sum_log1p` for reduced losses) and a few cheap ops,
    all in cache-resident scratch buffers.
    """
    input, target = call.input, call.target
    out_dtype = input.dtype
    acc = acc_dtype(input.dtype)
    if target.dtype != acc:
        target = target.to(acc)
    x = input.reshape(-1)
    y = target.reshape(-1)  # a copy only if the target was broadcast
    n = x.numel()
    scale = grad_scale(SPEC, call)
    grad = torch.empty(n, dtype=input.dtype, device=input.device) if call.need_grad[0] else None
    out = torch.empty(n, dtype=out_dtype, device=input.device) if call.reduction == "none" \
        else None
    total = torch.zeros((), dtype=torch.float64, device=input.device)
    zero = torch.zeros((), dtype=acc, device=input.device)
    width = min(_logistic.BLOCK, n)
    m, q, t = (torch.empty(width, dtype=acc, device=input.device) for _ in range(3))
    u64 = _logistic.product_scratch(input, width, out is None)
    for s, e in _logistic.blocks(n, 1):
        ys, mb, qb, tb = y[s:e], m[: e - s], q[: e - s], t[: e - s]
        if x.dtype == acc:
            torch.mul(x[s:e], ys, out=mb)  # m = y x
        else:
            mb.copy_(x[s:e]).mul_(ys)  # m = y x, widened to the accumulation dtype
        torch.neg(mb, out=qb).sigmoid_()  # sigma(-m)
        if grad is not None:
            torch.addcmul(zero, qb, ys, value=-scale, out=grad[s:e])  # -y sigma(-m) / n
        _logistic.neg_tail_from_sigmoid(qb, tb)  # -sigma(-|m|)
        mb.clamp_(max=0)  # min(m, 0) = -max(-m, 0)
        if out is not None:
            out[s:e].copy_(mb.add_(tb.log1p_()).neg_())
        else:
            total -= mb.sum() + _logistic.sum_log1p(tb, u64)
    grads = (None if grad is None else grad.view(input.shape),)
    if out is not None:
        return Result(out.view(input.shape), grads)
    if call.reduction == "mean":
        total = total / n if n else total.new_tensor(float("nan"))
    return Result(total.to(out_dtype), grads)


def sample(n: int, c: int, *, dtype=torch.float32, device="cpu", generator=None):
    """Scores ``(n, c)`` and ±1 labels of the same shape."""
    x = torch.randn(n, c, generator=generator).to(device=device, dtype=dtype)
    y = (torch.randint(0, 2, (n, c), generator=generator) * 2 - 1).to(device=device, dtype=dtype)
    return (x,), y, {}


SPEC = LossSpec(
    name=NAME,
    module="SoftMarginLoss",
    convention="float, the input's shape (or broadcastable), values in {-1, +1}",
    elementwise=True,
    backends=KERNELS,
    fused_label_check=("native", "triton"),  # the C and Triton kernels count bad labels
    prepare=prepare,
    check_labels=check_labels,
    torch_compute=torch_compute,
    sample=sample,
)
