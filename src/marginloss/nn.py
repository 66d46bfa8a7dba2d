"""Module forms of the losses, drop-ins for their torch.nn namesakes.

Each class subclasses torch's own base (``torch.nn.modules.loss._Loss``, or ``_WeightedLoss`` for
the losses with a class weight), takes torch.nn's constructor parameters in the same order with
the same defaults (the deprecated ``size_average`` / ``reduce`` included, mapped at construction
by torch's base class, with its warning), then the keyword-only ``validate`` and ``backend``
options. ``weight`` is a buffer, as in torch, so ``state_dict`` keys, ``.to()`` and
``isinstance(criterion, torch.nn.modules.loss._Loss)`` behave the same. The math, label
conventions and shapes are documented on the functions in :mod:`marginloss.functional`.

TorchScript: ``torch.jit.script`` of these modules (or of a model holding one) raises an error
that says to use ``torch.compile`` or ``torch.export`` instead: the losses are Python-level
operators (``torch.ops.marginloss.*``) with a Python pipeline of checks in front, which
TorchScript cannot compile, while ``torch.compile(fullgraph=True)`` and ``torch.export`` trace
them completely.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn.modules.loss import _Loss, _WeightedLoss

from marginloss import _pipeline, functional
from marginloss._reduction import Reduction
from marginloss.backends import Backend

__all__ = ["MultiLabelMarginLoss", "MultiLabelSoftMarginLoss", "MultiMarginLoss", "SoftMarginLoss"]


class _Options:
    """The keyword-only options every module adds to torch's: ``validate`` and ``backend``."""

    __constants__ = ["reduction", "validate", "backend"]
    validate: bool
    backend: str

    def _set_options(self, validate: bool, backend: str) -> None:
        _pipeline.check_options(validate, backend, type(self).__name__)
        self.validate = validate
        self.backend = backend

    def extra_repr(self) -> str:
        parts = [f"reduction={self.reduction!r}"]  # type: ignore[attr-defined]
        if not self.validate:
            parts.append("validate=False")
        if self.backend != "auto":
            parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)

    def __prepare_scriptable__(self):
        raise RuntimeError(
            f"marginloss.{type(self).__name__} cannot be compiled with torch.jit.script "
            f"(TorchScript): its forward is a Python pipeline in front of a registered operator. "
            f"Use torch.compile(model, fullgraph=True) or torch.export.export(model, ...) "
            f"instead; both trace it completely."
        )


class SoftMarginLoss(_Options, _Loss):
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

    def __init__(self, size_average=None, reduce=None, reduction: Reduction = "mean", *,
                 validate: bool = True, backend: Backend = "auto") -> None:
        super().__init__(size_average, reduce, reduction)
        self._set_options(validate, backend)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.soft_margin_loss(
            input, target, reduction=self.reduction, validate=self.validate, backend=self.backend
        )


class MultiLabelSoftMarginLoss(_Options, _WeightedLoss):
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

    def __init__(self, weight: Tensor | None = None, size_average=None, reduce=None,
                 reduction: Reduction = "mean", *, validate: bool = True,
                 backend: Backend = "auto") -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self._set_options(validate, backend)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.multilabel_soft_margin_loss(
            input, target, weight=self.weight, reduction=self.reduction,
            validate=self.validate, backend=self.backend,
        )


class MultiMarginLoss(_Options, _WeightedLoss):
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

    def __init__(self, p: int = 1, margin: float = 1.0, weight: Tensor | None = None,
                 size_average=None, reduce=None, reduction: Reduction = "mean", *,
                 validate: bool = True, backend: Backend = "auto") -> None:
        if p != 1 and p != 2:
            raise ValueError(f"MultiMarginLoss: `p` must be 1 or 2, got {p!r}.")
        if weight is not None and weight.dim() != 1:
            raise ValueError(
                f"MultiMarginLoss: `weight` must be None or a 1-D tensor of per-class weights, "
                f"got a {weight.dim()}-D tensor of shape {tuple(weight.shape)}."
            )
        super().__init__(weight, size_average, reduce, reduction)
        self._set_options(validate, backend)
        self.p = p
        self.margin = margin

    def extra_repr(self) -> str:
        return f"p={self.p}, margin={self.margin}, " + super().extra_repr()

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.multi_margin_loss(
            input, target, p=self.p, margin=self.margin, weight=self.weight,
            reduction=self.reduction, validate=self.validate, backend=self.backend,
        )


class MultiLabelMarginLoss(_Options, _Loss):
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

    def __init__(self, size_average=None, reduce=None, reduction: Reduction = "mean", *,
                 validate: bool = True, backend: Backend = "auto") -> None:
        super().__init__(size_average, reduce, reduction)
        self._set_options(validate, backend)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.multilabel_margin_loss(
            input, target, reduction=self.reduction, validate=self.validate, backend=self.backend
        )
