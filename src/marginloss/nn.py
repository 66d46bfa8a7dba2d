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

from collections.abc import Callable
from typing import Literal

from torch import Tensor
from torch.nn import Linear, PairwiseDistance
from torch.nn.modules.loss import _Loss, _WeightedLoss

from marginloss import _pipeline, functional, losses
from marginloss._reduction import Reduction
from marginloss.backends import Backend

__all__ = ["CosineEmbeddingLoss", "HingeEmbeddingLoss", "LinearMultiLabelMarginLoss",
           "LinearMultiLabelSoftMarginLoss", "LinearMultiMarginLoss", "MarginRankingLoss", "MultiLabelMarginLoss", "MultiLabelSoftMarginLoss",
           "MultiMarginLoss", "SoftMarginLoss", "TripletMarginLoss",
           "TripletMarginWithDistanceLoss"]


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


def _soft_margin_options(module) -> list[str]:
    """``extra_repr`` parts of the multilabel soft margin loss's own options, where set."""
    parts = []
    if module.pos_weight is not None:
        parts.append(f"pos_weight=({module.pos_weight.numel()},)")
    if module.label_smoothing:
        parts.append(f"label_smoothing={module.label_smoothing}")
    if module.class_reduction != "mean":
        parts.append(f"class_reduction={module.class_reduction!r}")
    return parts


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
        pos_weight: Optional weight of each class's positive term, shape ``(C,)``, as in
            :class:`torch.nn.BCEWithLogitsLoss`; registered as a buffer (keyword-only).
            Default: None.
        label_smoothing: Targets become ``y (1 - eps) + eps / 2``, ``eps`` in [0, 1)
            (keyword-only). Default: 0.0.
        class_reduction: ``"mean"`` over the classes (torch's loss) or their ``"sum"``
            (for very many classes; keyword-only). Default: ``"mean"``.

    Examples:
        >>> loss_fn = MultiLabelSoftMarginLoss(weight=torch.tensor([1.0, 1.0, 1.0]))
        >>> round(loss_fn(torch.tensor([[0.8, -1.5, 0.3]]), torch.tensor([[1.0, 0.0, 1.0]])).item(), 4)
        0.3756
        >>> list(loss_fn.state_dict())
        ['weight']
    """

    pos_weight: Tensor | None
    label_smoothing: float
    class_reduction: str

    def __init__(self, weight: Tensor | None = None, size_average=None, reduce=None,
                 reduction: Reduction = "mean", *, validate: bool = True,
                 backend: Backend = "auto", pos_weight: Tensor | None = None,
                 label_smoothing: float = 0.0,
                 class_reduction: Literal["mean", "sum"] = "mean") -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self._set_options(validate, backend)
        self.register_buffer("pos_weight", pos_weight)
        self.label_smoothing = label_smoothing
        self.class_reduction = class_reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.multilabel_soft_margin_loss(
            input, target, weight=self.weight, reduction=self.reduction,
            validate=self.validate, backend=self.backend, pos_weight=self.pos_weight,
            label_smoothing=self.label_smoothing, class_reduction=self.class_reduction,
        )

    def extra_repr(self) -> str:
        return ", ".join([super().extra_repr(), *_soft_margin_options(self)])


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


class HingeEmbeddingLoss(_Options, _Loss):
    """Module form of :func:`marginloss.functional.hinge_embedding_loss`.

    Drop-in for :class:`torch.nn.HingeEmbeddingLoss`: the input is a distance per pair, the
    target -1 or +1 (dissimilar / similar); other labels raise unless ``validate=False``.

    Args:
        margin: The distance beyond which a dissimilar pair costs nothing. Default: 1.
        size_average: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduce: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Check target values (keyword-only). Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"`` (keyword-only).
            Default: ``"auto"``.

    Examples:
        >>> loss_fn = HingeEmbeddingLoss(margin=1.0)
        >>> loss_fn(torch.tensor([0.25, 2.0, 0.5]), torch.tensor([1.0, -1.0, -1.0]))
        tensor(0.2500)
    """

    __constants__ = ["margin", "reduction", "validate", "backend"]
    margin: float

    def __init__(self, margin: float = 1.0, size_average=None, reduce=None,
                 reduction: Reduction = "mean", *, validate: bool = True,
                 backend: Backend = "auto") -> None:
        super().__init__(size_average, reduce, reduction)
        self.margin = margin
        self._set_options(validate, backend)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, {super().extra_repr()}"

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.hinge_embedding_loss(
            input, target, margin=self.margin, reduction=self.reduction,
            validate=self.validate, backend=self.backend,
        )


class MarginRankingLoss(_Options, _Loss):
    """Module form of :func:`marginloss.functional.margin_ranking_loss`.

    Drop-in for :class:`torch.nn.MarginRankingLoss`: the target says, per pair, which input
    should rank higher (+1: ``input1``, -1: ``input2``); other labels raise unless
    ``validate=False``.

    Args:
        margin: Default: 0.
        size_average: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduce: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Check target values (keyword-only). Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"`` (keyword-only).
            Default: ``"auto"``.

    Examples:
        >>> loss_fn = MarginRankingLoss(margin=0.5)
        >>> loss_fn(torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0]))
        tensor(0.5000)
    """

    __constants__ = ["margin", "reduction", "validate", "backend"]
    margin: float

    def __init__(self, margin: float = 0.0, size_average=None, reduce=None,
                 reduction: Reduction = "mean", *, validate: bool = True,
                 backend: Backend = "auto") -> None:
        super().__init__(size_average, reduce, reduction)
        self.margin = margin
        self._set_options(validate, backend)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, {super().extra_repr()}"

    def forward(self, input1: Tensor, input2: Tensor, target: Tensor) -> Tensor:
        return functional.margin_ranking_loss(
            input1, input2, target, margin=self.margin, reduction=self.reduction,
            validate=self.validate, backend=self.backend,
        )


class _LinearHead(_Options):
    """What the fused heads share: the linear layer they own (``self.linear``, an
    :class:`torch.nn.Linear`, as in :class:`torch.nn.LinearCrossEntropyLoss`), ``chunk_size``
    and the options."""

    num_classes: int
    chunk_size: int | None

    def _set_head(self, in_features: int, num_classes: int, bias: bool, device, dtype,
                  chunk_size: int | None, validate: bool, backend: str) -> None:
        from marginloss.linear import check_chunk_size

        check_chunk_size(type(self).__name__, chunk_size)
        self._set_options(validate, backend)
        self.num_classes = num_classes
        self.chunk_size = chunk_size
        self.linear = Linear(in_features, num_classes, bias=bias, device=device, dtype=dtype)

    def _head_args(self) -> dict:
        return {"linear_bias": self.linear.bias, "reduction": self.reduction,
                "chunk_size": self.chunk_size, "validate": self.validate,
                "backend": self.backend}

    def extra_repr(self) -> str:
        parts = [f"in_features={self.linear.in_features}", f"num_classes={self.num_classes}",
                 f"bias={self.linear.bias is not None}", super().extra_repr()]
        if self.chunk_size is not None:
            parts.append(f"chunk_size={self.chunk_size}")
        return ", ".join(parts)


class LinearMultiLabelSoftMarginLoss(_LinearHead, _WeightedLoss):
    """A linear layer and :class:`MultiLabelSoftMarginLoss` fused: the module form of
    :func:`marginloss.functional.linear_multilabel_soft_margin_loss` (math there, method in
    :mod:`marginloss.linear`). It owns the layer, ``self.linear`` (``nn.Linear(in_features,
    num_classes, bias=bias)``), and never holds the ``(N, C)`` logits.

    Args:
        in_features: Size of each input sample, H.
        num_classes: Number of classes, C.
        bias: Whether the layer has a bias. Default: ``False`` (as torch's
            ``LinearCrossEntropyLoss``).
        device, dtype: Of the layer's parameters.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        weight: Optional per-class weight ``(C,)``; a buffer.
        pos_weight: Optional weight of each class's positive term ``(C,)``; a buffer.
        label_smoothing: Targets become ``y (1 - eps) + eps / 2``, ``eps`` in [0, 1).
        class_reduction: ``"mean"`` over the classes (torch's) or their ``"sum"``.
        chunk_size: Classes per chunk (None: picked from the batch size).
        validate, backend: As for the plain loss.

    Examples:
        >>> head = LinearMultiLabelSoftMarginLoss(16, 100_000)
        >>> h, y = torch.randn(4, 16), torch.zeros(4, 100_000)
        >>> head(h, y).backward()  # never holds a 4 x 100,000 logits tensor
        >>> head.linear.weight.grad.shape
        torch.Size([100000, 16])
    """

    pos_weight: Tensor | None
    label_smoothing: float

    def __init__(self, in_features: int, num_classes: int, *, bias: bool = False, device=None,
                 dtype=None, reduction: Reduction = "mean", weight: Tensor | None = None,
                 pos_weight: Tensor | None = None, label_smoothing: float = 0.0,
                 chunk_size: int | None = None, validate: bool = True,
                 backend: Backend = "auto",
                 class_reduction: Literal["mean", "sum"] = "mean") -> None:
        super().__init__(weight, None, None, reduction)
        self._set_head(in_features, num_classes, bias, device, dtype, chunk_size, validate,
                       backend)
        self.register_buffer("pos_weight", pos_weight)
        self.label_smoothing = label_smoothing
        self.class_reduction = class_reduction

    def forward(self, input: Tensor, target: Tensor, candidates: Tensor | None = None) -> Tensor:
        """The loss of ``self.linear(input)`` (``candidates``: the shortlist form, see
        :func:`marginloss.functional.linear_multilabel_soft_margin_loss`)."""
        return functional.linear_multilabel_soft_margin_loss(
            input, self.linear.weight, target, weight=self.weight, pos_weight=self.pos_weight,
            label_smoothing=self.label_smoothing, candidates=candidates,
            class_reduction=self.class_reduction, **self._head_args())

    def extra_repr(self) -> str:
        return ", ".join([super().extra_repr(), *_soft_margin_options(self)])


class LinearMultiMarginLoss(_LinearHead, _WeightedLoss):
    """A linear layer and :class:`MultiMarginLoss` fused: the module form of
    :func:`marginloss.functional.linear_multi_margin_loss`. It owns ``self.linear`` and never
    holds the ``(N, C)`` logits.

    Args:
        in_features: Size of each input sample, H.
        num_classes: Number of classes, C.
        bias: Whether the layer has a bias. Default: ``False``.
        device, dtype: Of the layer's parameters.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        weight: Optional per-class weight ``(C,)``; a buffer.
        p: 1 or 2. Default: 1.
        margin: Default: 1.0.
        chunk_size: Classes per chunk (None: picked from the batch size).
        validate, backend: As for the plain loss.

    Examples:
        >>> LinearMultiMarginLoss(16, 1000, bias=True, p=2)
        LinearMultiMarginLoss(
          in_features=16, num_classes=1000, bias=True, p=2, margin=1.0, reduction='mean'
          (linear): Linear(in_features=16, out_features=1000, bias=True)
        )
    """

    def __init__(self, in_features: int, num_classes: int, *, bias: bool = False, device=None,
                 dtype=None, reduction: Reduction = "mean", weight: Tensor | None = None,
                 p: int = 1, margin: float = 1.0, chunk_size: int | None = None,
                 validate: bool = True, backend: Backend = "auto") -> None:
        if p != 1 and p != 2:
            raise ValueError(f"LinearMultiMarginLoss: `p` must be 1 or 2, got {p!r}.")
        super().__init__(weight, None, None, reduction)
        self._set_head(in_features, num_classes, bias, device, dtype, chunk_size, validate,
                       backend)
        self.p = p
        self.margin = margin

    def extra_repr(self) -> str:
        head = f"in_features={self.linear.in_features}, num_classes={self.num_classes}, " \
               f"bias={self.linear.bias is not None}, "
        return head + f"p={self.p}, margin={self.margin}, " + _Options.extra_repr(self) + (
            f", chunk_size={self.chunk_size}" if self.chunk_size is not None else "")

    def forward(self, input: Tensor, target: Tensor, candidates: Tensor | None = None) -> Tensor:
        """The loss of ``self.linear(input)`` (``candidates``: the shortlist form, see
        :func:`marginloss.functional.linear_multi_margin_loss`)."""
        return functional.linear_multi_margin_loss(
            input, self.linear.weight, target, p=self.p, margin=self.margin, weight=self.weight,
            candidates=candidates, **self._head_args())


class LinearMultiLabelMarginLoss(_LinearHead, _Loss):
    """A linear layer and :class:`MultiLabelMarginLoss` fused: the module form of
    :func:`marginloss.functional.linear_multilabel_margin_loss`. It owns ``self.linear`` and
    never holds the ``(N, C)`` logits.

    Args:
        in_features: Size of each input sample, H.
        num_classes: Number of classes, C.
        bias: Whether the layer has a bias. Default: ``False``.
        device, dtype: Of the layer's parameters.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: Classes per chunk (None: picked from the batch size).
        validate, backend: As for the plain loss.

    Examples:
        >>> head = LinearMultiLabelMarginLoss(8, 50)
        >>> loss = head(torch.randn(2, 8), torch.tensor([[3, 7, -1], [0, -1, -1]]))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(self, in_features: int, num_classes: int, *, bias: bool = False, device=None,
                 dtype=None, reduction: Reduction = "mean", chunk_size: int | None = None,
                 validate: bool = True, backend: Backend = "auto") -> None:
        super().__init__(None, None, reduction)
        self._set_head(in_features, num_classes, bias, device, dtype, chunk_size, validate,
                       backend)

    def forward(self, input: Tensor, target: Tensor, candidates: Tensor | None = None) -> Tensor:
        """The loss of ``self.linear(input)`` (``candidates``: the shortlist form, see
        :func:`marginloss.functional.linear_multilabel_margin_loss`)."""
        return functional.linear_multilabel_margin_loss(input, self.linear.weight, target,
                                                        candidates=candidates,
                                                        **self._head_args())


class TripletMarginLoss(_Options, _Loss):
    """Module form of :func:`marginloss.functional.triplet_margin_loss` (math and shapes there).

    Drop-in for :class:`torch.nn.TripletMarginLoss`: ``forward(anchor, positive, negative)``.

    Args:
        margin: Must be greater than 0 (as torch). Default: 1.0.
        p: Degree of the norm, greater than 0. Default: 2.0.
        eps: Added to each difference (finite). Default: 1e-6.
        swap: Use the distance swap. Default: False.
        size_average: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduce: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Unused (no labels; keyword-only). Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"`` (keyword-only).
            Default: ``"auto"``.

    Examples:
        >>> loss_fn = TripletMarginLoss(margin=1.0)
        >>> a, p, n = torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 4.5]])
        >>> round(loss_fn(a, p, n).item(), 3)
        1.5
    """

    __constants__ = ["margin", "p", "eps", "swap", "reduction", "validate", "backend"]
    margin: float
    p: float
    eps: float
    swap: bool

    def __init__(self, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6,
                 swap: bool = False, size_average=None, reduce=None,
                 reduction: Reduction = "mean", *, validate: bool = True,
                 backend: Backend = "auto") -> None:
        super().__init__(size_average, reduce, reduction)
        if not margin > 0:
            raise ValueError(f"TripletMarginLoss: expected margin to be greater than 0, got "
                             f"{margin} instead")
        losses.triplet_margin_loss.check_options("TripletMarginLoss", margin, p, eps)
        self._set_options(validate, backend)
        self.margin = margin
        self.p = p
        self.eps = eps
        self.swap = swap

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, p={self.p}, eps={self.eps}, swap={self.swap}, "
                + super().extra_repr())

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return functional.triplet_margin_loss(
            anchor, positive, negative, margin=self.margin, p=self.p, eps=self.eps,
            swap=self.swap, reduction=self.reduction, validate=self.validate,
            backend=self.backend,
        )


class TripletMarginWithDistanceLoss(_Options, _Loss):
    """Module form of :func:`marginloss.functional.triplet_margin_with_distance_loss`.

    Drop-in for :class:`torch.nn.TripletMarginWithDistanceLoss`. As in torch, the default
    ``distance_function`` is a :class:`torch.nn.PairwiseDistance` submodule; that distance (and
    any hook-free ``PairwiseDistance`` without ``keepdim``) runs as the fused triplet loss.

    Args:
        distance_function: ``(x1, x2) -> distances``. Keyword-only. Default: None
            (``torch.nn.PairwiseDistance()``).
        margin: Must be greater than 0 (as torch). Keyword-only. Default: 1.0.
        swap: Use the distance swap. Keyword-only. Default: False.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Keyword-only. Default: ``"mean"``.
        validate: Unused (no labels; keyword-only). Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"`` (keyword-only).
            Default: ``"auto"``.

    Examples:
        >>> loss_fn = TripletMarginWithDistanceLoss(margin=0.5)
        >>> a, p, n = torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 4.5]])
        >>> round(loss_fn(a, p, n).item(), 3)  # 0.5 + 5 - 4.5
        1.0
    """

    __constants__ = ["margin", "swap", "reduction", "validate", "backend"]
    margin: float
    swap: bool

    def __init__(self, *, distance_function: Callable[[Tensor, Tensor], Tensor] | None = None,
                 margin: float = 1.0, swap: bool = False, reduction: Reduction = "mean",
                 validate: bool = True, backend: Backend = "auto") -> None:
        super().__init__(size_average=None, reduce=None, reduction=reduction)
        if not margin > 0:
            raise ValueError(f"TripletMarginWithDistanceLoss: expected margin to be greater "
                             f"than 0, got {margin} instead")
        self._set_options(validate, backend)
        self.distance_function: Callable[[Tensor, Tensor], Tensor] | None = (
            distance_function if distance_function is not None else PairwiseDistance()
        )
        self.margin = margin
        self.swap = swap

    def extra_repr(self) -> str:
        return f"margin={self.margin}, swap={self.swap}, " + super().extra_repr()

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return functional.triplet_margin_with_distance_loss(
            anchor, positive, negative, distance_function=self.distance_function,
            margin=self.margin, swap=self.swap, reduction=self.reduction,
            validate=self.validate, backend=self.backend,
        )


class CosineEmbeddingLoss(_Options, _Loss):
    """Module form of :func:`marginloss.functional.cosine_embedding_loss` (math, labels, shapes
    there).

    Drop-in for :class:`torch.nn.CosineEmbeddingLoss`; targets are +1 (similar pair) or -1
    (dissimilar pair).

    Args:
        margin: Cosine above which a dissimilar pair is penalised, in [-1, 1]. Default: 0.0.
        size_average: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduce: Deprecated; mapped to ``reduction`` at construction, as torch does.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Check target values (keyword-only). Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"`` (keyword-only).
            Default: ``"auto"``.

    Examples:
        >>> loss_fn = CosineEmbeddingLoss(margin=0.5)
        >>> x1, x2 = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 1.0]])
        >>> round(loss_fn(x1, x2, torch.tensor([-1.0])).item(), 4)
        0.5
    """

    __constants__ = ["margin", "reduction", "validate", "backend"]
    margin: float

    def __init__(self, margin: float = 0.0, size_average=None, reduce=None,
                 reduction: Reduction = "mean", *, validate: bool = True,
                 backend: Backend = "auto") -> None:
        super().__init__(size_average, reduce, reduction)
        self._set_options(validate, backend)
        self.margin = margin

    def extra_repr(self) -> str:
        return f"margin={self.margin}, " + super().extra_repr()

    def forward(self, input1: Tensor, input2: Tensor, target: Tensor) -> Tensor:
        return functional.cosine_embedding_loss(
            input1, input2, target, margin=self.margin, reduction=self.reduction,
            validate=self.validate, backend=self.backend,
        )
