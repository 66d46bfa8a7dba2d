r"""The margin-family losses, as functions with torch.nn.functional's names and signatures.

``import marginloss.functional as F`` is a drop-in for the same names in
:mod:`torch.nn.functional`: same parameters in the same order with the same defaults (the
deprecated ``size_average`` / ``reduce`` included), same values, output shapes and dtypes, and the
same gradient with respect to ``input``. Each call computes the loss and its gradient in one
fused pass and is differentiable once (in ``input`` only). Each loss is a registered operator,
``torch.ops.marginloss.<name>``, so ``torch.compile(fullgraph=True)``, ``torch.export`` and
``torch.func`` (``grad``, ``vmap``, per-sample gradients, ``jacrev``) work as with torch's own.

Two keyword-only options come after torch's parameters:

* ``validate=True``: check the target's values against the loss's label convention and raise
  :class:`marginloss.errors.LabelError` with the fix. The check runs inside the operator and,
  where the backend can, inside the kernel's own pass (a compiled graph never breaks on it).
  On the CPU the call itself raises. On CUDA there is no host synchronisation: a call with bad
  labels returns a NaN loss, and the error is raised by the first marginloss call after the
  device has finished it, or by :func:`marginloss.check_labels` (see
  :mod:`marginloss._deferred`). Shape and dtype checks always run; with ``validate=False``,
  out-of-range class indices give undefined (but memory-safe) results.
* ``backend="auto"``: ``"auto"`` (Triton kernels for CUDA tensors when available; on the CPU,
  native C kernels for float32 when a C compiler can build them; else torch ops), ``"torch"``,
  ``"triton"`` or ``"native"`` (the last two raise an error saying why when their kernels
  cannot run).

Label conventions, at a glance:

=============================  ========================  =========================================
loss                           ``target``                values
=============================  ========================  =========================================
``soft_margin_loss``           float, ``input``'s shape  {-1, +1}, one sign per score
``multilabel_soft_margin_loss``  float, ``(N, C)``       0/1 multi-hot mask (soft labels allowed)
``multi_margin_loss``          integer, ``(N,)``         one class index in [0, C)
``multilabel_margin_loss``     integer, ``(N, C)``       class indices, padded with -1
=============================  ========================  =========================================
"""

from __future__ import annotations

from torch import Tensor

from marginloss import _pipeline, losses
from marginloss._reduction import Reduction
from marginloss.backends import Backend

__all__ = [
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "soft_margin_loss",
]


def soft_margin_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    *,
    validate: bool = True,
    backend: Backend = "auto",
) -> Tensor:
    r"""Two-class logistic loss on ±1 labels, elementwise.

    For each element, with score :math:`x` and label :math:`y \in \{-1, +1\}`,

    .. math::
        \ell = \log\bigl(1 + e^{-y x}\bigr)
             = \max(-y x, 0) + \log\bigl(1 + e^{-|y x|}\bigr), \qquad
        \frac{\partial \ell}{\partial x} = -y\,\sigma(-y x),

    and the output is :math:`\ell` (``reduction="none"``), its mean over all elements
    (``"mean"``) or its sum (``"sum"``). The right-hand form is what is computed: it stays finite
    and exact for any score, where :func:`torch.nn.functional.soft_margin_loss` returns ``inf``
    (and a ``nan`` gradient) once :math:`y x < -88.7` in float32, or :math:`< -11` in float16.

    Label convention:
        ``target`` holds **-1 or +1** per element. {0, 1} labels are the classic mistake: torch
        accepts them silently (``y = 0`` gives :math:`\log 2` whatever the score); here they
        raise :class:`marginloss.LabelError`. Convert with
        :func:`marginloss.labels.to_pm1` (``2 * target - 1``).

    Args:
        input: Scores (logits), any shape, floating point.
        target: Labels in {-1, +1}, with the input's shape or broadcastable to it.
        size_average: Deprecated (see ``reduction``); overrides it when not None.
        reduce: Deprecated (see ``reduction``); overrides it when not None.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Check that ``target`` holds only ±1. Keyword-only. Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"``. Keyword-only.
            Default: ``"auto"``.

    Shape:
        - input: :math:`(*)`, any number of dimensions.
        - target: :math:`(*)`, same shape as the input (or broadcastable to it).
        - output: scalar; :math:`(*)` if ``reduction="none"``.

    Returns:
        The loss in ``input``'s dtype (float16/bfloat16 are computed in float32).

    Examples:
        >>> x = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)
        >>> y = torch.tensor([1.0, 1.0, -1.0])
        >>> # (log(1 + e^-2) + log(1 + e^1) + log(1 + e^0.5)) / 3 = (0.1269 + 1.3133 + 0.9741) / 3
        >>> loss = soft_margin_loss(x, y)
        >>> round(loss.item(), 4)
        0.8048
        >>> loss.backward()
        >>> x.grad  # -y * sigmoid(-y x) / 3
        tensor([-0.0397, -0.2437,  0.2075])
        >>> soft_margin_loss(torch.tensor([-100.0]), torch.tensor([1.0]))  # torch gives inf
        tensor(100.)
    """
    return _pipeline.run(losses.soft_margin_loss.SPEC, (input,), target, None, (), size_average,
                         reduce, reduction, validate, backend)


def multilabel_soft_margin_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    *,
    validate: bool = True,
    backend: Backend = "auto",
) -> Tensor:
    r"""Multi-label one-versus-all logistic loss on a 0/1 mask, averaged over classes.

    For sample :math:`n` with :math:`C` classes, scores :math:`x_{n}` and mask :math:`y_{n}`,

    .. math::
        \ell_n = -\frac{1}{C} \sum_{c=1}^{C} w_c \Bigl[ y_{nc} \log \sigma(x_{nc})
                 + (1 - y_{nc}) \log \sigma(-x_{nc}) \Bigr], \qquad
        \frac{\partial \ell_n}{\partial x_{nc}} = \frac{w_c}{C}\bigl(\sigma(x_{nc}) - y_{nc}\bigr).

    ``"mean"`` averages :math:`\ell_n` over samples (so over :math:`N \cdot C` terms in all),
    ``"sum"`` adds them. The weight does not renormalise: the divisor stays :math:`C`. Computed
    as :math:`\max(x, 0) + \log(1 + e^{-|x|}) - y x`, stable for any score.

    Label convention:
        ``target`` is a **0/1 multi-hot mask** with the input's shape (soft labels in [0, 1]
        are allowed), **not** a list of class indices padded with -1 (that is
        :func:`multilabel_margin_loss`'s convention; older torch docs said otherwise,
        pytorch#92000). ±1 labels raise :class:`marginloss.LabelError`: convert with
        :func:`marginloss.labels.to_01`; index lists with
        :func:`marginloss.labels.padded_to_multi_hot`.

    Args:
        input: Scores (logits), classes on the last dimension.
        target: Multi-hot mask in [0, 1], the input's shape (or broadcastable to it).
        weight: Optional weight broadcastable to the input, usually per class ``(C,)``.
        size_average: Deprecated (see ``reduction``); overrides it when not None.
        reduce: Deprecated (see ``reduction``); overrides it when not None.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Check that ``target`` lies in [0, 1]. Keyword-only. Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"``. Keyword-only.
            Default: ``"auto"``.

    Shape:
        - input: :math:`(N, C)` or :math:`(C)`; more generally :math:`(*, C)`.
        - target: same shape as the input.
        - output: scalar; :math:`(N)` (:math:`(*)`; 0-d for a 1-D input) if
          ``reduction="none"``.

    Returns:
        The loss in the dtype torch promotes ``input``, ``target`` and ``weight`` to.

    Examples:
        >>> x = torch.tensor([[0.8, -1.5, 0.3]])
        >>> y = torch.tensor([[1.0, 0.0, 1.0]])  # classes 0 and 2 present
        >>> # (log(1 + e^-0.8) + log(1 + e^-1.5) + log(1 + e^-0.3)) / 3
        >>> round(multilabel_soft_margin_loss(x, y).item(), 4)
        0.3756
    """
    return _pipeline.run(losses.multilabel_soft_margin_loss.SPEC, (input,), target, weight, (),
                         size_average, reduce, reduction, validate, backend)


def multi_margin_loss(
    input: Tensor,
    target: Tensor,
    p: int = 1,
    margin: float = 1.0,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    *,
    validate: bool = True,
    backend: Backend = "auto",
) -> Tensor:
    r"""Multi-class hinge loss: the target class should outscore every other class by ``margin``.

    For sample :math:`n` with target class :math:`y` and :math:`C` classes,

    .. math::
        \ell_n = \frac{w_y}{C} \sum_{j \ne y} \max\bigl(0,\; \text{margin} - x_y + x_j\bigr)^p ,

    then ``"mean"`` averages over samples and ``"sum"`` adds. Note where the weight goes: it is
    the **target** class's weight, multiplied **after** the power (that is what torch computes;
    its docs long showed it inside the power, which differs for ``p=2``). The divisor is
    :math:`C`, the target class included. The gradient is the subgradient with value 0 at the
    hinge (a term counts only when :math:`\text{margin} - x_y + x_j > 0`).

    Label convention:
        ``target`` holds **one integer class index per sample**, in ``[0, C)``, not one-hot
        rows (use ``target.argmax(-1)``) and not 1-based classes (use ``target - 1``). For
        several classes per sample use :func:`multilabel_margin_loss`.

    Args:
        input: Scores (logits), floating point.
        target: Class indices, integer dtype (int64 or int32).
        p: 1 (hinge) or 2 (squared hinge). Default: 1.
        margin: The margin. Default: 1.0.
        weight: Optional per-class weight, shape ``(C,)``.
        size_average: Deprecated (see ``reduction``); overrides it when not None.
        reduce: Deprecated (see ``reduction``); overrides it when not None.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Check that every index lies in ``[0, C)``. Keyword-only. Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"``. Keyword-only.
            Default: ``"auto"``.

    Shape:
        - input: :math:`(N, C)` or :math:`(C)`.
        - target: :math:`(N)` or :math:`()`, values in ``[0, C)``.
        - output: scalar; :math:`(N)` if ``reduction="none"`` (0-d when ``target`` is 0-d).

    Returns:
        The loss in ``input``'s dtype. An empty batch gives ``nan`` for ``"mean"`` and 0 for
        ``"sum"`` (torch returns uninitialised memory there).

    Examples:
        >>> x = torch.tensor([[0.1, 0.2, 0.4, 0.8]])
        >>> y = torch.tensor([3])
        >>> # ((1 - (0.8 - 0.1)) + (1 - (0.8 - 0.2)) + (1 - (0.8 - 0.4))) / 4
        >>> round(multi_margin_loss(x, y).item(), 4)
        0.325
    """
    return _pipeline.run(losses.multi_margin_loss.SPEC, (input,), target, weight, (p, margin),
                         size_average, reduce, reduction, validate, backend)


def multilabel_margin_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    *,
    validate: bool = True,
    backend: Backend = "auto",
) -> Tensor:
    r"""Multi-label hinge (ranking) loss over class-index lists padded with -1.

    Every target class of a sample should score at least 1 above every non-target class. For
    sample :math:`n` with target list :math:`T_n` and :math:`C` classes,

    .. math::
        \ell_n = \frac{1}{C} \sum_{t \in T_n} \sum_{k \notin T_n}
                 \max\bigl(0,\; 1 - (x_{n,t} - x_{n,k})\bigr),

    then ``"mean"`` averages over samples and ``"sum"`` adds. A class listed twice counts twice
    in the sum (as in torch). The gradient is the subgradient with value 0 at the hinge.
    Computed in :math:`O(C \log |T_n|)` per sample (sorting the target scores) instead of
    torch's :math:`O(|T_n| \cdot C)`.

    Label convention:
        ``target`` holds **class indices padded with -1**, not a 0/1 mask. Row ``n`` lists the
        classes of sample ``n``; only entries before the first ``-1`` count, so
        ``[3, 0, -1, 1]`` means :math:`T_n = \{3, 0\}`. A 0/1 mask raises
        :class:`marginloss.LabelError`: convert it with
        :func:`marginloss.labels.multi_hot_to_padded`, or use
        :func:`multilabel_soft_margin_loss`, which takes the mask.

    Args:
        input: Scores (logits), floating point.
        target: Integer class indices in ``[0, C)``, padded with -1; the input's shape.
        size_average: Deprecated (see ``reduction``); overrides it when not None.
        reduce: Deprecated (see ``reduction``); overrides it when not None.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Check every entry lies in ``[-1, C)`` and that ``target`` is not a 0/1 mask.
            Keyword-only. Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"``. Keyword-only.
            Default: ``"auto"``.

    Shape:
        - input: :math:`(N, C)` or :math:`(C)`.
        - target: same shape as the input.
        - output: scalar; :math:`(N)` if ``reduction="none"`` (0-d for a 1-D input).

    Returns:
        The loss in ``input``'s dtype. An empty batch gives ``nan`` for ``"mean"`` and 0 for
        ``"sum"`` (torch returns uninitialised memory there).

    Examples:
        >>> x = torch.tensor([[0.1, 0.2, 0.4, 0.8]])
        >>> y = torch.tensor([[3, 0, -1, 1]])  # targets {3, 0}; the trailing 1 is ignored
        >>> # (1-(0.8-0.2)) + (1-(0.8-0.4)) + (1-(0.1-0.2)) + (1-(0.1-0.4)) = 3.4; 3.4 / 4
        >>> round(multilabel_margin_loss(x, y).item(), 4)
        0.85
    """
    return _pipeline.run(losses.multilabel_margin_loss.SPEC, (input,), target, None, (),
                         size_average, reduce, reduction, validate, backend)
