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
``hinge_embedding_loss``       float, broadcasts         {-1, +1}: similar / dissimilar pair
``margin_ranking_loss``        float, inputs' rank       {-1, +1}: which input ranks higher
=============================  ========================  =========================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor

from marginloss import _pipeline, losses, sparse
from marginloss import linear as _linear
from marginloss._reduction import Reduction
from marginloss.backends import Backend

_MSM = "multilabel_soft_margin_loss"

__all__ = [
    "cosine_embedding_loss",
    "hinge_embedding_loss",
    "linear_multi_margin_loss",
    "linear_multilabel_margin_loss",
    "linear_multilabel_soft_margin_loss",
    "margin_ranking_loss",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "soft_margin_loss",
    "triplet_margin_loss",
    "triplet_margin_with_distance_loss",
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
    pos_weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    class_reduction: Literal["mean", "sum"] = "mean",
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

    Beyond torch (keyword-only): a positive-class weight :math:`p_c` (``pos_weight``, as in
    :class:`torch.nn.BCEWithLogitsLoss`) and label smoothing :math:`\varepsilon`
    (``label_smoothing``: the mask becomes :math:`t = y (1 - \varepsilon) + \varepsilon/2`
    first), fused into the same pass:

    .. math::
        \ell_n = \frac{1}{C} \sum_{c=1}^{C} w_c \Bigl[ -p_c\, t_{nc} \log \sigma(x_{nc})
                 - (1 - t_{nc}) \log \sigma(-x_{nc}) \Bigr], \qquad
        \frac{\partial \ell_n}{\partial x_{nc}} = \frac{w_c}{C}\bigl((1 - t_{nc})\,
        \sigma(x_{nc}) - p_c\, t_{nc}\, \sigma(-x_{nc})\bigr),

    so with ``pos_weight`` the loss is ``BCEWithLogitsLoss(pos_weight=...)`` averaged over the
    classes (then reduced over the samples). ``class_reduction="sum"`` adds the classes'
    terms instead of averaging them (drop the :math:`\frac{1}{C}`): with :math:`10^5` to
    :math:`10^6` classes the mean makes the loss and its gradient vanish, so extreme
    multi-label training sums over classes (and averages over samples).

    Label convention:
        ``target`` is a **0/1 multi-hot mask** with the input's shape (soft labels in [0, 1]
        are allowed), **not** a list of class indices padded with -1 (that is
        :func:`multilabel_margin_loss`'s convention; older torch docs said otherwise,
        pytorch#92000). ±1 labels raise :class:`marginloss.LabelError`: convert with
        :func:`marginloss.labels.to_01`; index lists with
        :func:`marginloss.labels.padded_to_multi_hot`.

    Args:
        input: Scores (logits), classes on the last dimension.
        target: Multi-hot mask in [0, 1], the input's shape (or broadcastable to it); or the
            positives alone (:mod:`marginloss.sparse`): a ``torch.sparse_csr`` ``(N, C)``
            tensor (values in (0, 1]), a list of N class-index tensors, or a ``(rows, cols)``
            tuple.
        weight: Optional weight broadcastable to the input, usually per class ``(C,)``.
        size_average: Deprecated (see ``reduction``); overrides it when not None.
        reduce: Deprecated (see ``reduction``); overrides it when not None.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Check that ``target`` lies in [0, 1]. Keyword-only. Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"``. Keyword-only.
            Default: ``"auto"``.
        pos_weight: Optional weight of each class's positive term, shape ``(C,)`` (e.g.
            ``num_negatives / num_positives`` per class); used in float32 (float64 for a
            float64 loss), never changes the result's dtype. With ``validate=True`` it must be
            finite and >= 0 (``ValueError`` otherwise). Keyword-only. Default: None (all 1).
        label_smoothing: :math:`\varepsilon` in [0, 1); 0.1 turns 0/1 targets into
            0.05/0.95. Keyword-only. Default: 0.0.
        class_reduction: ``"mean"`` (divide the row's sum by :math:`C`, torch's loss) or
            ``"sum"`` (the row's sum over classes). Computed as the mean with every weight
            times :math:`C`, made in float32 (float64 for float64), so with ``"sum"`` the loss
            of a half-precision input comes back in float32. Keyword-only. Default: ``"mean"``.

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
        >>> # positives of class 1 weigh 3, targets smoothed to 0.05 / 0.95
        >>> pw = torch.tensor([1.0, 3.0, 1.0])
        >>> round(multilabel_soft_margin_loss(x, y, pos_weight=pw, label_smoothing=0.1).item(), 4)
        0.4757
        >>> # the sum over the 3 classes: 3 times the mean
        >>> round(multilabel_soft_margin_loss(x, y, class_reduction="sum").item(), 4)
        1.1269
    """
    weight = losses.multilabel_soft_margin_loss.class_sum_weight(input, weight, class_reduction)
    if sparse.is_sparse_target(target):  # CSR, per-sample index lists, or (rows, cols)
        return sparse.multilabel_soft_margin_loss(
            input, target, weight, size_average, reduce, reduction, validate=validate,
            backend=backend, pos_weight=pos_weight, label_smoothing=label_smoothing)
    return _pipeline.run(losses.multilabel_soft_margin_loss.SPEC, (input,), target, weight, (),
                         size_average, reduce, reduction, validate, backend,
                         (pos_weight, label_smoothing))


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
        target: Integer class indices in ``[0, C)``, padded with -1; the input's shape (or
            ``(N, W)``, W <= C: the padding columns may be left out); or the positives alone
            (:mod:`marginloss.sparse`): a ``torch.sparse_csr`` ``(N, C)`` tensor (values 1), a
            list of N class-index tensors, or a ``(rows, cols)`` tuple.
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
    if sparse.is_sparse_target(target):  # CSR, per-sample index lists, or (rows, cols)
        return sparse.multilabel_margin_loss(input, target, size_average, reduce, reduction,
                                             validate=validate, backend=backend)
    return _pipeline.run(losses.multilabel_margin_loss.SPEC, (input,), target, None, (),
                         size_average, reduce, reduction, validate, backend)


def hinge_embedding_loss(
    input: Tensor,
    target: Tensor,
    margin: float = 1.0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    *,
    validate: bool = True,
    backend: Backend = "auto",
) -> Tensor:
    r"""Hinge loss on distances of pairs labelled similar (+1) or dissimilar (-1), elementwise.

    The input is a **distance** (e.g. ``torch.pairwise_distance(a, b)``, not a similarity): for
    each element, with label :math:`y` and margin :math:`\mu`,

    .. math::
        \ell = \begin{cases} x & y = 1 \\ \max(0, \mu - x) & y = -1 \end{cases}, \qquad
        \frac{\partial \ell}{\partial x} = \begin{cases} 1 & y = 1 \\
        -[\mu - x \ge 0] & y = -1 \end{cases},

    and the output is :math:`\ell` (``reduction="none"``), its mean over all elements or its
    sum. A similar pair's loss is its distance, unclamped (negative for a negative input, as in
    torch). At :math:`x = \mu` the gradient is -1 for a dissimilar pair (torch's convention).
    Loss and gradient come from one fused pass (native C on CPU, Triton on CUDA).

    Label convention:
        ``target`` holds **-1 or +1** per element. torch silently adds *both* terms,
        :math:`[\mu - x]_+ + x`, for any other label (0, 2, 0.5, ``False``): {0, 1} labels are
        the classic mistake. Here they raise :class:`marginloss.LabelError`; convert with
        :func:`marginloss.labels.to_pm1`. With ``validate=False`` every label counts exactly as
        torch counts it.

    Args:
        input: Distances, any shape, floating point.
        target: Labels in {-1, +1}; broadcasts with the input (both ways, as in torch).
        margin: :math:`\mu`, the distance beyond which a dissimilar pair costs nothing (any
            float, as torch). Default: 1.
        size_average: Deprecated (see ``reduction``); overrides it when not None.
        reduce: Deprecated (see ``reduction``); overrides it when not None.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Check that ``target`` holds only ±1. Keyword-only. Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"``. Keyword-only.
            Default: ``"auto"``.

    Shape:
        - input: :math:`(*)`, any number of dimensions.
        - target: :math:`(*)`, broadcastable with the input.
        - output: scalar; the broadcast shape if ``reduction="none"``.

    Returns:
        The loss in ``input``'s dtype (float16/bfloat16 are computed in float32). An empty input
        gives ``nan`` for ``"mean"`` and 0 for ``"sum"``.

    Examples:
        >>> d = torch.tensor([0.25, 2.0, 0.5], requires_grad=True)
        >>> y = torch.tensor([1.0, -1.0, -1.0])
        >>> # (0.25 + max(0, 1 - 2) + max(0, 1 - 0.5)) / 3 = 0.75 / 3
        >>> hinge_embedding_loss(d, y)
        tensor(0.2500, grad_fn=<...>)
        >>> hinge_embedding_loss(d, y).backward()
        >>> d.grad
        tensor([ 0.3333,  0.0000, -0.3333])
    """
    return _pipeline.run(losses.hinge_embedding_loss.SPEC, (input,), target, None, (margin,),
                         size_average, reduce, reduction, validate, backend)


def margin_ranking_loss(
    input1: Tensor,
    input2: Tensor,
    target: Tensor,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    *,
    validate: bool = True,
    backend: Backend = "auto",
) -> Tensor:
    r"""Pairwise ranking hinge: which of two scores should be higher, elementwise.

    For scores :math:`x_1, x_2`, preference :math:`y` (+1: :math:`x_1` should be higher, -1:
    :math:`x_2`) and margin :math:`\mu`,

    .. math::
        \ell = \max\bigl(0,\; -y\,(x_1 - x_2) + \mu\bigr), \qquad
        \frac{\partial \ell}{\partial x_1} = -y\,[\ell \text{ active}], \qquad
        \frac{\partial \ell}{\partial x_2} = y\,[\ell \text{ active}],

    active meaning :math:`-y (x_1 - x_2) + \mu \ge 0` (torch's convention at the kink). The
    output is :math:`\ell` (``reduction="none"``), its mean over all elements or its sum. The
    loss and both gradients come from one fused pass (native C on CPU, Triton on CUDA).

    Label convention:
        ``target`` holds **-1 or +1** per pair. torch takes any number silently (``y = 0``
        gives :math:`[\mu]_+` whatever the scores, so {0, 1} labels train half the pairs on
        nothing); here other labels raise :class:`marginloss.LabelError`; convert {0, 1} with
        :func:`marginloss.labels.to_pm1`. With ``validate=False`` any label is used as torch
        uses it. The target is a constant: one that requires grad is refused (torch would
        differentiate with respect to it).

    Args:
        input1: Scores of the first items, floating point.
        input2: Scores of the second items, as many dimensions as ``input1``.
        target: Preferences in {-1, +1}, as many dimensions as the inputs.
        margin: :math:`\mu`. Default: 0.
        size_average: Deprecated (see ``reduction``); overrides it when not None.
        reduce: Deprecated (see ``reduction``); overrides it when not None.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Check that ``target`` holds only ±1. Keyword-only. Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"``. Keyword-only.
            Default: ``"auto"``.

    Shape:
        - input1, input2, target: the same number of dimensions, broadcastable together
          (typically :math:`(N)`, or 0-d).
        - output: scalar; the broadcast shape if ``reduction="none"``.

    Returns:
        The loss in the promoted dtype of the inputs and target (float16/bfloat16 are computed
        in float32). An empty input gives ``nan`` for ``"mean"`` and 0 for ``"sum"``.

    Examples:
        >>> a = torch.tensor([2.0, 0.5, 1.0], requires_grad=True)
        >>> b = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
        >>> y = torch.tensor([1.0, 1.0, -1.0])
        >>> # (max(0, -(2 - 1) + 0.5) + max(0, -(0.5 - 1) + 0.5) + max(0, (1 - 1) + 0.5)) / 3
        >>> margin_ranking_loss(a, b, y, margin=0.5)
        tensor(0.5000, grad_fn=<...>)
    """
    return _pipeline.run(losses.margin_ranking_loss.SPEC, (input1, input2), target, None,
                         (margin,), size_average, reduce, reduction, validate, backend)


# ----------------------------------------------------------------------------------------------
# fused linear heads: the loss of input @ linear_weight.T + linear_bias, without the logits
# (torch.nn.functional.linear_cross_entropy's conventions; the method in marginloss.linear)


def linear_multilabel_soft_margin_loss(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    weight: Tensor | None = None,
    pos_weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
    validate: bool = True,
    backend: Backend = "auto",
    candidates: Tensor | None = None,
    class_reduction: Literal["mean", "sum"] = "mean",
) -> Tensor:
    r""":func:`multilabel_soft_margin_loss` of ``input @ linear_weight.T + linear_bias``,
    computed in chunks of classes without ever holding the ``(N, C)`` logits or their gradient.

    With logits :math:`x = h W^\top + b`, the smoothed label :math:`t = y (1 - \varepsilon) +
    \varepsilon / 2` and the positive weight :math:`p` (1 and :math:`t = y` by default),

    .. math::
        L = \operatorname{reduce}_n \frac{1}{C} \sum_{c=1}^{C} w_c \bigl(
            p_c\, t_{nc} \operatorname{softplus}(-x_{nc})
            + (1 - t_{nc}) \operatorname{softplus}(x_{nc}) \bigr), \qquad
        \frac{\partial L}{\partial x_{nc}} = \frac{w_c}{C} \bigl((1 - t_{nc})\,
        \sigma(x_{nc}) - p_c\, t_{nc}\, \sigma(-x_{nc})\bigr) \cdot s,

    (:math:`s = 1/N` for ``"mean"``), and the gradients of ``input``, ``linear_weight`` and
    ``linear_bias`` are :math:`D W`, :math:`D^\top h` and :math:`\mathbf{1}^\top D` for
    :math:`D = \partial L / \partial x`, accumulated chunk by chunk (see
    :mod:`marginloss.linear`). The result equals the unfused
    ``multilabel_soft_margin_loss(F.linear(input, linear_weight, linear_bias), target, weight,
    pos_weight=pos_weight, label_smoothing=label_smoothing)`` within the dtype's rounding, for
    every ``chunk_size``.

    Args:
        input: Features, :math:`(N, H)` or :math:`(H)`.
        linear_weight: The linear layer's weight, :math:`(C, H)` (as ``nn.Linear.weight``).
        target: 0/1 multi-hot mask :math:`(N, C)` (soft labels in [0, 1] allowed); or the
            positives alone (:mod:`marginloss.sparse`, the target side then costs
            :math:`O(\text{nnz})`): a ``torch.sparse_csr`` :math:`(N, C)` tensor (values in
            (0, 1]), a list of N class-index tensors, or a ``(rows, cols)`` tuple.
        linear_bias: Optional :math:`(C)` bias. Keyword-only, as every argument after ``target``.
        weight: Optional per-class weight :math:`(C)` (or :math:`(N, C)`).
        pos_weight: Optional weight of each class's positive term, shape :math:`(C)` (or
            one value), as for :func:`multilabel_soft_margin_loss` (finite, >= 0; sliced per
            chunk of classes).
        label_smoothing: :math:`\varepsilon` in [0, 1), as for
            :func:`multilabel_soft_margin_loss`. Default: 0.0.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: Classes per chunk; None picks about :math:`2^{22} / N` on the CPU (at
            least 128), :math:`2^{25} / N` on a GPU.
        validate: Check that ``target`` lies in [0, 1] (and ``pos_weight`` is finite and
            >= 0). Default: ``True``.
        backend: The backend of the per-chunk loss pass (``"auto"``, ``"torch"``,
            ``"triton"``, ``"native"``).
        candidates: Optional :math:`(N, K)` integer class indices, padded with -1 or :math:`C`:
            the shortlist form, which scores only these classes per sample (their rows of
            ``linear_weight`` gathered, never the whole matrix; see
            :func:`marginloss.linear.shortlist`). ``target`` is then in candidate space:
            :math:`(N, K)` multi-hot over the candidates
            (:func:`marginloss.labels.shortlist_target` converts class-space positives);
            ``weight`` and ``pos_weight`` stay per class and are gathered. A row's loss is the
            plain loss over its :math:`K_n` real candidates alone (padding slots have no term
            and no gradient; the class average divides by :math:`K_n`; a row without any is 0).
            A class listed twice is scored in both slots (deduplicate with ``torch.unique`` for
            the class-space loss). ``chunk_size`` is unused. Default: None (every class, in
            chunks).
        class_reduction: ``"mean"`` over the classes (torch's loss) or their ``"sum"``, as for
            :func:`multilabel_soft_margin_loss` (with ``candidates``: the sum over a row's
            real candidates). Default: ``"mean"``.

    Returns:
        The loss: scalar, or :math:`(N)` for ``"none"`` (0-d for a 1-D input).

    Examples:
        >>> h = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> W = torch.tensor([[0.8, 0.0], [-1.5, 0.0], [0.0, 0.15]])
        >>> y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
        >>> fused = linear_multilabel_soft_margin_loss(h, W, y, chunk_size=2)
        >>> round(fused.item(), 4) == round(multilabel_soft_margin_loss(h @ W.T, y).item(), 4)
        True
        >>> # a shortlist: classes 2 and 0 for the first sample, 1 (and padding) for the second
        >>> cand = torch.tensor([[2, 0], [1, -1]])
        >>> y_cand = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # y in candidate space
        >>> short = linear_multilabel_soft_margin_loss(h, W, y_cand, candidates=cand,
        ...                                            reduction="none")
        >>> logits = h @ W.T
        >>> torch.allclose(short, torch.stack([
        ...     multilabel_soft_margin_loss(logits[0, [2, 0]], y_cand[0]),
        ...     multilabel_soft_margin_loss(logits[1, [1]], y_cand[1, :1])]))
        True
    """
    if candidates is not None:
        return _linear.shortlist("multilabel_soft_margin_loss", input, linear_weight, target,
                                 candidates, linear_bias=linear_bias, weight=weight, options=(),
                                 reduction=reduction, validate=validate, backend=backend,
                                 extras=(pos_weight, label_smoothing),
                                 class_sum=losses.multilabel_soft_margin_loss
                                 .check_class_reduction(class_reduction, "linear_" + _MSM))
    if isinstance(linear_weight, Tensor) and linear_weight.dim() == 2:
        weight = losses.multilabel_soft_margin_loss.class_sum_weight(
            input, weight, class_reduction, "linear_" + _MSM, n_classes=linear_weight.shape[0])
    else:
        losses.multilabel_soft_margin_loss.check_class_reduction(class_reduction, "linear_" + _MSM)
    return _linear.run("multilabel_soft_margin_loss", input, linear_weight, target,
                       linear_bias=linear_bias, weight=weight, options=(), reduction=reduction,
                       chunk_size=chunk_size, validate=validate, backend=backend,
                       extras=(pos_weight, label_smoothing))


def linear_multi_margin_loss(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    p: int = 1,
    margin: float = 1.0,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
    validate: bool = True,
    backend: Backend = "auto",
    candidates: Tensor | None = None,
) -> Tensor:
    r""":func:`multi_margin_loss` of ``input @ linear_weight.T + linear_bias``, computed in
    chunks of classes without ever holding the ``(N, C)`` logits or their gradient.

    With logits :math:`x = h W^\top + b` and the target's score :math:`x_y = h \cdot W_y + b_y`
    (gathered once per sample, before the chunks),

    .. math::
        \ell_n = \frac{w_y}{C} \sum_{j \ne y} \max(0, \text{margin} - x_y + x_j)^p ,

    reduced over the samples. Every chunk's hinge terms are independent once :math:`x_y` is
    known; the target column's gradient :math:`-\sum_{j \ne y} \partial \ell /
    \partial x_j` is summed over the chunks and applied through :math:`W_y` (see
    :mod:`marginloss.linear`).

    Args:
        input: Features, :math:`(N, H)` or :math:`(H)`.
        linear_weight: The linear layer's weight, :math:`(C, H)`.
        target: Class indices :math:`(N)` (or :math:`()`), in ``[0, C)``.
        linear_bias: Optional :math:`(C)` bias. Keyword-only, as every argument after ``target``.
        p: 1 or 2. Default: 1.
        margin: Default: 1.0.
        weight: Optional per-class weight :math:`(C)` (the target class's, after the power).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: Classes per chunk; None picks about :math:`2^{22} / N` on the CPU (at
            least 128), :math:`2^{25} / N` on a GPU.
        validate: Check that every index lies in ``[0, C)``. Default: ``True``.
        backend: The backend of the per-chunk loss pass.
        candidates: Optional :math:`(N, K)` integer class indices, padded with -1 or :math:`C`:
            the shortlist form, which scores only these classes per sample (their rows of
            ``linear_weight`` gathered, never the whole matrix; see
            :func:`marginloss.linear.shortlist`). ``target`` is then in candidate space:
            :math:`(N)`, the index in :math:`[0, K)` of the true class among the candidates (a
            real one); ``weight`` stays per class (:math:`w_{c_{n y_n}}`). A row's loss is the
            plain loss over its :math:`K_n` real candidates alone (padding slots have no term
            and no gradient; the class average divides by :math:`K_n`; a row without any is 0).
            A class listed twice is scored in both slots (deduplicate with ``torch.unique`` for
            the class-space loss). ``chunk_size`` is unused. Default: None (every class, in
            chunks).

    Examples:
        >>> h = torch.tensor([[1.0, 2.0]])
        >>> W = torch.tensor([[0.1, 0.0], [0.2, 0.0], [0.0, 0.2], [0.0, 0.4]])
        >>> fused = linear_multi_margin_loss(h, W, torch.tensor([3]), chunk_size=3)
        >>> round(fused.item(), 4)  # the multi_margin_loss example: logits [0.1, 0.2, 0.4, 0.8]
        0.325
    """
    if candidates is not None:
        return _linear.shortlist("multi_margin_loss", input, linear_weight, target, candidates,
                                 linear_bias=linear_bias, weight=weight, options=(p, margin),
                                 reduction=reduction, validate=validate, backend=backend)
    return _linear.run("multi_margin_loss", input, linear_weight, target,
                       linear_bias=linear_bias, weight=weight, options=(p, margin),
                       reduction=reduction, chunk_size=chunk_size, validate=validate,
                       backend=backend)


def linear_multilabel_margin_loss(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
    validate: bool = True,
    backend: Backend = "auto",
    candidates: Tensor | None = None,
) -> Tensor:
    r""":func:`multilabel_margin_loss` of ``input @ linear_weight.T + linear_bias``, computed in
    chunks of classes without ever holding the ``(N, C)`` logits or their gradient.

    With logits :math:`x = h W^\top + b` and the target scores :math:`S_j = h \cdot W_{t_j} +
    b_{t_j}` (gathered once, :math:`K` per sample),

    .. math::
        \ell_n = \frac{1}{C} \sum_{t \in T_n} \sum_{k \notin T_n}
                 \max\bigl(0,\; 1 - (S_t - x_{n,k})\bigr),

    reduced over the samples. Each chunk adds its non-targets' terms against all the targets
    (the counts :math:`c_k`) and each target's share :math:`d_j` of its gradient, summed over
    the chunks (see :mod:`marginloss.linear`).

    Args:
        input: Features, :math:`(N, H)` or :math:`(H)`.
        linear_weight: The linear layer's weight, :math:`(C, H)`.
        target: Class indices padded with -1: :math:`(N, C)` as torch's, or any narrower
            :math:`(N, K)` (the same lists with less padding: on CUDA the head reads no value
            on the host, so :math:`K` columns are what it gathers; pass the lists trimmed to
            the longest). Or the positives alone (:mod:`marginloss.sparse`): a
            ``torch.sparse_csr`` :math:`(N, C)` tensor (values 1), a list of N class-index
            tensors, or a ``(rows, cols)`` tuple (turned into the narrow lists).
        linear_bias: Optional :math:`(C)` bias. Keyword-only, as every argument after ``target``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: Classes per chunk; None picks about :math:`2^{22} / N` on the CPU (at
            least 128), :math:`2^{25} / N` on a GPU.
        validate: Check every entry lies in ``[-1, C)`` and that ``target`` is not a 0/1 mask.
        backend: The backend of the per-chunk loss pass.
        candidates: Optional :math:`(N, K)` integer class indices, padded with -1 or :math:`C`:
            the shortlist form, which scores only these classes per sample (their rows of
            ``linear_weight`` gathered, never the whole matrix; see
            :func:`marginloss.linear.shortlist`). ``target`` is then in candidate space:
            :math:`(N, K')` positions in :math:`[0, K)` of the positives among the candidates
            (real ones), padded with -1. A row's loss is the plain loss over its :math:`K_n`
            real candidates alone (padding slots have no term and no gradient; the class average
            divides by :math:`K_n`; a row without any is 0). A class listed twice is scored in
            both slots (deduplicate with ``torch.unique`` for the class-space loss).
            ``chunk_size`` is unused. Default: None (every class, in chunks).

    Examples:
        >>> h = torch.tensor([[1.0, 2.0]])
        >>> W = torch.tensor([[0.1, 0.0], [0.2, 0.0], [0.0, 0.2], [0.0, 0.4]])
        >>> fused = linear_multilabel_margin_loss(h, W, torch.tensor([[3, 0, -1]]), chunk_size=2)
        >>> round(fused.item(), 4)  # the multilabel_margin_loss example
        0.85
    """
    if candidates is not None:
        return _linear.shortlist("multilabel_margin_loss", input, linear_weight, target,
                                 candidates, linear_bias=linear_bias, weight=None, options=(),
                                 reduction=reduction, validate=validate, backend=backend)
    return _linear.run("multilabel_margin_loss", input, linear_weight, target,
                       linear_bias=linear_bias, weight=None, options=(), reduction=reduction,
                       chunk_size=chunk_size, validate=validate, backend=backend)


def triplet_margin_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    margin: float = 1.0,
    p: float = 2,
    eps: float = 1e-6,
    swap: bool = False,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    *,
    validate: bool = True,
    backend: Backend = "auto",
) -> Tensor:
    r"""Triplet loss: each anchor should be nearer its positive than its negative by ``margin``.

    For triplet :math:`n` (anchor :math:`a`, positive :math:`p`, negative :math:`q`), with
    torch's pairwise distance :math:`d(u, v) = \lVert u - v + \epsilon \rVert_p` over the last
    dimension (``eps`` added to the difference, with its sign),

    .. math::
        \ell_n = \max\bigl(0,\; \text{margin} + d(a, p) - d(a, q)\bigr),

    and with ``swap=True`` :math:`d(a, q)` is replaced by :math:`\min(d(a, q), d(p, q))` (the
    distance swap of Balntas et al.; a tie splits the gradient, as ``torch.minimum``). Then
    ``"mean"`` averages over triplets and ``"sum"`` adds. The gradients with respect to all
    three inputs come from the same fused pass (each row of each input is read once); the
    hinge passes the gradient at 0, as torch's ``clamp_min``.

    Computed without overflow: torch squares the differences, so float32/bfloat16 distances
    become ``inf`` above about :math:`1.8 \cdot 10^{19}` (float16: 256) and tiny ones round to
    0; here every distance is scaled by its largest component first.

    Args:
        anchor: Embeddings :math:`(N, D)` (or :math:`(D)`, or :math:`(*, D)`).
        positive: Same rank as ``anchor``; broadcasts with it.
        negative: Same rank as ``anchor``; broadcasts with it.
        margin: Must be greater than 0 (as torch). Default: 1.0.
        p: Degree of the norm, greater than 0 (``inf`` allowed). Default: 2.
        eps: Added to each difference (finite; may be 0). Default: 1e-6.
        swap: Use the distance swap. Default: False.
        size_average: Deprecated (see ``reduction``); overrides it when not None.
        reduce: Deprecated (see ``reduction``); overrides it when not None.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Unused (there are no labels to check). Keyword-only. Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"``. Keyword-only.
            Default: ``"auto"``.

    Shape:
        - anchor, positive, negative: :math:`(N, D)` or :math:`(D)` (:math:`(*, D)` in
          general), one rank, broadcastable together.
        - output: scalar; :math:`(N)` (:math:`(*)`; 0-d for 1-D inputs) if ``reduction="none"``.

    Returns:
        The loss in the dtype torch promotes the inputs to (float16/bfloat16 are computed in
        float32). An empty batch gives ``nan`` for ``"mean"`` and 0 for ``"sum"``.

    Raises:
        ValueError: ``margin <= 0`` (as torch), ``p <= 0``, or a non-finite ``eps``.
        ShapeError: inputs of different ranks, or shapes that do not broadcast.

    Examples:
        >>> a = torch.tensor([[0.0, 0.0]])
        >>> p = torch.tensor([[3.0, 4.0]])  # d(a, p) = 5
        >>> n = torch.tensor([[0.0, 4.5]])  # d(a, n) = 4.5
        >>> round(triplet_margin_loss(a, p, n, eps=0.0).item(), 4)  # 1 + 5 - 4.5
        1.5
    """
    return _pipeline.run(losses.triplet_margin_loss.SPEC, (anchor, positive, negative), None,
                         None, (margin, p, eps, swap), size_average, reduce, reduction,
                         validate, backend)


def triplet_margin_with_distance_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    *,
    distance_function: Callable[[Tensor, Tensor], Tensor] | None = None,
    margin: float = 1.0,
    swap: bool = False,
    reduction: Reduction = "mean",
    validate: bool = True,
    backend: Backend = "auto",
) -> Tensor:
    r"""Triplet loss with any distance: :math:`\max(0, \text{margin} + d(a, p) - d(a, q))`.

    ``distance_function(x1, x2)`` returns the distances of paired rows (a non-negative tensor);
    with ``swap=True``, :math:`d(a, q)` becomes :math:`\min(d(a, q), d(p, q))`. Then
    ``"mean"`` averages and ``"sum"`` adds.

    Torch's pairwise distance (``None``, the default; ``torch.pairwise_distance``; or a
    ``torch.nn.PairwiseDistance(p, eps)`` module) runs as the fused
    :func:`triplet_margin_loss` with that ``p`` and ``eps``: one pass for the loss and the
    three gradients, overflow-free. Any other function is called as torch calls it, autograd
    differentiates through it, and only the hinge and the reduction are computed here (in
    torch ops; ``backend`` then does not apply).

    Args:
        anchor: Embeddings, :math:`(N, *)`.
        positive: Same rank as ``anchor``.
        negative: Same rank as ``anchor``.
        distance_function: ``(x1, x2) -> distances``. Keyword-only. Default: None (Euclidean
            pairwise distance).
        margin: Must be greater than 0 (as torch). Keyword-only. Default: 1.0.
        swap: Use the distance swap. Keyword-only. Default: False.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"`` (no legacy arguments, as torch).
            Keyword-only. Default: ``"mean"``.
        validate: Unused (there are no labels to check). Keyword-only. Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"``, for the fused
            distance. Keyword-only. Default: ``"auto"``.

    Returns:
        The loss; with the default distance, exactly what :func:`triplet_margin_loss` gives.

    Examples:
        >>> a, p, n = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 4.5]])
        >>> l1 = lambda x, y: (x - y).abs().sum(-1)
        >>> triplet_margin_with_distance_loss(a, p, n, distance_function=l1)  # 1 + 7 - 4.5
        tensor(3.5000)
    """
    return losses.triplet_margin_loss.with_distance(
        anchor, positive, negative, distance_function, margin, swap, reduction, validate,
        backend)


def cosine_embedding_loss(
    input1: Tensor,
    input2: Tensor,
    target: Tensor,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    *,
    validate: bool = True,
    backend: Backend = "auto",
) -> Tensor:
    r"""Cosine embedding loss: similar pairs (+1) should align, dissimilar pairs (-1) should not.

    For pair :math:`n` with cosine :math:`c = x_1 \cdot x_2 / \sqrt{(\lVert x_1 \rVert^2 +
    \epsilon)(\lVert x_2 \rVert^2 + \epsilon)}` (torch's :math:`\epsilon = 10^{-12}`),

    .. math::
        \ell_n = \begin{cases} 1 - c & y_n = 1 \\ \max(0,\; c - \text{margin}) & y_n = -1
        \end{cases}

    then ``"mean"`` averages over pairs and ``"sum"`` adds. Both inputs' gradients come from
    the same fused pass (each row read once); the hinge passes the gradient at 0, as torch's
    ``clamp_min``. Stable where torch is not: the norms are scaled first, so vectors with
    entries beyond about :math:`10^{19}` (256 in float16) give the right cosine instead of NaN,
    and zero vectors keep torch's value (:math:`c = 0`) and finite gradient.

    Label convention:
        ``target`` holds **+1 (similar) or -1 (dissimilar)** per pair. Torch silently gives 0
        for any other label, so {0, 1} labels never push a "0" pair apart; here they raise
        :class:`marginloss.LabelError`: convert with :func:`marginloss.labels.to_pm1`.

    The margin is a cosine, so it belongs in [-1, 1] (0 to 0.5 is usual). Any float is
    accepted, as in torch: ``margin >= 1`` makes every dissimilar pair's loss 0.

    Args:
        input1: Embeddings :math:`(N, D)` or :math:`(D)`.
        input2: Embeddings, broadcastable with ``input1``.
        target: Labels in {-1, +1}: :math:`(N)` for 2-D inputs, 0-d for 1-D inputs.
        margin: Cosine above which a dissimilar pair is penalised. Default: 0.
        size_average: Deprecated (see ``reduction``); overrides it when not None.
        reduce: Deprecated (see ``reduction``); overrides it when not None.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        validate: Check that ``target`` holds only ±1. Keyword-only. Default: ``True``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` | ``"native"``. Keyword-only.
            Default: ``"auto"``.

    Shape:
        - input1, input2: :math:`(N, D)` or :math:`(D)`.
        - target: :math:`(N)` or :math:`()`.
        - output: scalar; :math:`(N)` (0-d for 1-D inputs) if ``reduction="none"``.

    Returns:
        The loss in the dtype torch promotes the inputs to (float16/bfloat16 are computed in
        float32). An empty batch gives ``nan`` for ``"mean"`` and 0 for ``"sum"``.

    Examples:
        >>> x1 = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> x2 = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
        >>> y = torch.tensor([1.0, -1.0])
        >>> # pair 0: cos 0, loss 1; pair 1: cos 1, loss max(0, 1 - 0.5) = 0.5
        >>> cosine_embedding_loss(x1, x2, y, margin=0.5, reduction="none")
        tensor([1.0000, 0.5000])
    """
    return _pipeline.run(losses.cosine_embedding_loss.SPEC, (input1, input2), target, None,
                         (margin,), size_average, reduce, reduction, validate, backend)
