"""Module forms of the four losses, drop-ins for their torch.nn namesakes.

Each class takes torch.nn's constructor parameters in the same order with the same defaults
(the deprecated ``size_average`` / ``reduce`` included, mapped at construction as torch does),
then the keyword-only ``validate`` and ``backend`` options. ``weight`` is registered as a buffer,
as torch's ``_WeightedLoss`` does, so ``state_dict`` keys and ``.to()`` behave the same. The math,
label conventions and shapes are documented on the functions in :mod:`marginloss.functional`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from marginloss import _reduction, functional

__all__ = ["MultiLabelMarginLoss", "MultiLabelSoftMarginLoss", "MultiMarginLoss", "SoftMarginLoss"]


class _Loss(torch.nn.Module):
    __constants__ = ["reduction", "validate", "backend"]
    reduction: str

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean", *,
                 validate: bool = True, backend: str = "auto") -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            self.reduction = _reduction.legacy_get_string(size_average, reduce)
        else:
            self.reduction = reduction
        functional._check_options(validate, backend, type(self).__name__)
        self.validate = validate
        self.backend = backend

    def extra_repr(self) -> str:
        parts = [f"reduction={self.reduction!r}"]
        if not self.validate:
            parts.append("validate=False")
        if self.backend != "auto":
            parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)


class SoftMarginLoss(_Loss):
    """Module form of :func:`marginloss.functional.soft_margin_loss` (math, labels, shapes there).

    Drop-in for :class:`torch.nn.SoftMarginLoss`; targets are ±1 per element.

    Args:
        size_average: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduce: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Check target values (keyword-only). Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"`` (keyword-only).
            Default: ``"auto"``.

    Examples:
        >>> loss_fn = SoftMarginLoss()
        >>> round(loss_fn(torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 1.0, -1.0])).item(), 4)
        0.8048
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.soft_margin_loss(
            input, target, reduction=self.reduction, validate=self.validate, backend=self.backend
        )


class MultiLabelSoftMarginLoss(_Loss):
    """Module form of :func:`marginloss.functional.multilabel_soft_margin_loss`.

    Drop-in for :class:`torch.nn.MultiLabelSoftMarginLoss`; targets are a 0/1 mask.

    Args:
        weight: Optional per-class weight, shape ``(C,)`` (any shape broadcastable to the input
            is accepted); registered as a buffer.
        size_average: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduce: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Check target values (keyword-only). Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"`` (keyword-only).
            Default: ``"auto"``.

    Examples:
        >>> loss_fn = MultiLabelSoftMarginLoss(weight=torch.tensor([1.0, 1.0, 1.0]))
        >>> round(loss_fn(torch.tensor([[0.8, -1.5, 0.3]]), torch.tensor([[1.0, 0.0, 1.0]])).item(), 4)
        0.3756
        >>> list(loss_fn.state_dict())
        ['weight']
    """

    weight: Tensor | None

    def __init__(self, weight: Tensor | None = None, size_average=None, reduce=None,
                 reduction: str = "mean", *, validate: bool = True,
                 backend: str = "auto") -> None:
        super().__init__(size_average, reduce, reduction, validate=validate, backend=backend)
        self.register_buffer("weight", weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.multilabel_soft_margin_loss(
            input, target, weight=self.weight, reduction=self.reduction,
            validate=self.validate, backend=self.backend,
        )


class MultiMarginLoss(_Loss):
    """Module form of :func:`marginloss.functional.multi_margin_loss`.

    Drop-in for :class:`torch.nn.MultiMarginLoss`; targets are one class index per sample.

    Args:
        p: 1 or 2. Default: 1.
        margin: The margin. Default: 1.0.
        weight: Optional per-class weight, shape ``(C,)``; registered as a buffer.
        size_average: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduce: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Check target values (keyword-only). Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"`` (keyword-only).
            Default: ``"auto"``.

    Examples:
        >>> loss_fn = MultiMarginLoss()
        >>> round(loss_fn(torch.tensor([[0.1, 0.2, 0.4, 0.8]]), torch.tensor([3])).item(), 4)
        0.325
        >>> MultiMarginLoss(p=2, margin=0.5)
        MultiMarginLoss(p=2, margin=0.5, reduction='mean')
    """

    __constants__ = ["p", "margin", "reduction", "validate", "backend"]
    margin: float
    p: int
    weight: Tensor | None

    def __init__(self, p: int = 1, margin: float = 1.0, weight: Tensor | None = None,
                 size_average=None, reduce=None, reduction: str = "mean", *,
                 validate: bool = True, backend: str = "auto") -> None:
        super().__init__(size_average, reduce, reduction, validate=validate, backend=backend)
        if p != 1 and p != 2:
            raise ValueError(f"MultiMarginLoss: `p` must be 1 or 2, got {p!r}.")
        if weight is not None and weight.dim() != 1:
            raise ValueError(
                f"MultiMarginLoss: `weight` must be None or a 1-D tensor of per-class weights, "
                f"got a {weight.dim()}-D tensor of shape {tuple(weight.shape)}."
            )
        self.register_buffer("weight", weight)
        self.margin = margin
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}, margin={self.margin}, " + super().extra_repr()

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.multi_margin_loss(
            input, target, p=self.p, margin=self.margin, weight=self.weight,
            reduction=self.reduction, validate=self.validate, backend=self.backend,
        )


class MultiLabelMarginLoss(_Loss):
    """Module form of :func:`marginloss.functional.multilabel_margin_loss`.

    Drop-in for :class:`torch.nn.MultiLabelMarginLoss`; targets are class indices padded with -1.

    Args:
        size_average: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduce: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Check target values (keyword-only). Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"`` (keyword-only).
            Default: ``"auto"``.

    Examples:
        >>> loss_fn = MultiLabelMarginLoss()
        >>> round(loss_fn(torch.tensor([[0.1, 0.2, 0.4, 0.8]]), torch.tensor([[3, 0, -1, 1]])).item(), 4)
        0.85
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.multilabel_margin_loss(
            input, target, reduction=self.reduction, validate=self.validate, backend=self.backend
        )
