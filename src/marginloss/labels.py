"""Label conventions: convert a target from one to another, exactly and with clear errors.

The margin-family losses each take a different label convention, and the wrong one usually
trains without an error (torch accepts {0, 1} where ±1 is meant, and a 0/1 mask where -1-padded
index lists are meant). These functions convert between the conventions:

* binary {0, 1}, ``[0, 1]``: ``BCEWithLogitsLoss``;
* binary ±1, ``[-1., 1.]``: ``SoftMarginLoss``;
* class indices, ``[3, 0]``: ``MultiMarginLoss``, ``CrossEntropyLoss``;
* one-hot rows, ``[[0, 0, 0, 1], [1, 0, 0, 0]]``: convert to class indices;
* multi-hot mask, hard or soft, ``[[1, 0, 0, 1], [0, 1, 0, 0]]``: ``MultiLabelSoftMarginLoss``;
* -1-padded index lists, ``[[0, 3, -1, -1], [1, -1, -1, -1]]``: ``MultiLabelMarginLoss``;
* label sets, ``[{0, 3}, {1}]``, and ``torch.sparse_csr`` rows: convert to a mask or to padded
  lists;
* shortlists (the fused heads' ``candidates=``, ``(N, K)`` class indices padded with -1 or
  ``num_classes``): :func:`shortlist_target` maps class-space positives to the candidate-space
  multi-hot the shortlist head takes; :func:`from_padded` turns index lists padded with -1
  and/or ``num_classes`` (anywhere in a row) into the ``(rows, cols)`` pair the sparse targets
  take.

The binary maps are affine: :func:`to_pm1` is ``y -> 2y - 1`` and :func:`to_01` its inverse
``y -> (y + 1) / 2``. The others are exact re-encodings of the same label sets: for a sample
with classes ``S``, the mask row is ``1[c in S]`` for ``c < C``, the padded row lists ``S`` in
increasing order then ``-1`` up to width ``C``, and the CSR row stores the columns ``S``.

Converters that build a class dimension take ``num_classes`` explicitly: inferring it from the
largest label present gives too narrow a tensor whenever the last class is missing from a batch.
Converters keep the input's device. Float outputs use ``dtype`` (default: torch's default dtype,
usually float32); index outputs are int64, as torch's losses require. To find out which
convention a target is in, and which loss fits it, see :mod:`marginloss.guide`.

Examples:
    >>> to_pm1(torch.tensor([0, 1, 1]))
    tensor([-1.,  1.,  1.])
    >>> multi_hot_to_padded(torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]]))
    tensor([[ 0,  3, -1, -1],
            [ 1, -1, -1, -1]])
    >>> padded_to_sets(torch.tensor([[0, 3, -1, -1], [1, -1, -1, -1]]))
    [{0, 3}, {1}]
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from marginloss.errors import DtypeError, LabelError, ShapeError

__all__ = [
    "csr_to_multi_hot",
    "csr_to_sets",
    "from_padded",
    "indices_to_multi_hot",
    "indices_to_one_hot",
    "multi_hot_to_csr",
    "multi_hot_to_padded",
    "multi_hot_to_sets",
    "one_hot_to_indices",
    "padded_to_multi_hot",
    "padded_to_sets",
    "sets_to_csr",
    "sets_to_multi_hot",
    "sets_to_padded",
    "shortlist_target",
    "to_01",
    "to_pm1",
]


# ----------------------------------------------------------------------------------------------
# helpers (also used by marginloss.guide)


def _check_tensor(fn: str, t: object, arg: str = "target") -> Tensor:
    """``t`` is a real-valued, dense torch.Tensor (the first check on any label tensor)."""
    if not isinstance(t, Tensor):
        raise DtypeError(f"{fn}: `{arg}` must be a torch.Tensor, got {type(t).__name__}.")
    if t.is_complex():
        raise DtypeError(f"{fn}: `{arg}` must be real, got {t.dtype}.")
    if t.layout != torch.strided:
        raise DtypeError(
            f"{fn}: `{arg}` must be a dense tensor, got layout {t.layout}. "
            f"For sparse CSR rows use `csr_to_multi_hot` first."
        )
    return t


def _float_dtype(fn: str, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.get_default_dtype()
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise DtypeError(f"{fn}: `dtype` must be a floating-point torch.dtype, got {dtype!r}.")
    return dtype


def _check_num_classes(fn: str, num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"{fn}: `num_classes` must be a positive int (the width C of the model's output), "
            f"got {num_classes!r}."
        )
    return num_classes


def _values_preview(t: Tensor, limit: int = 6) -> str:
    """The distinct values of ``t``, abbreviated and rounded for messages: ``{0, 0.25, 1}``."""
    flat = t.detach().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    nan = flat.is_floating_point() and bool(torch.isnan(flat).any())
    if nan:
        flat = flat[~torch.isnan(flat)]
    vals = torch.unique(flat).tolist()
    shown = [str(int(v)) if float(v).is_integer() else f"{v:.4g}" for v in vals[:limit]]
    if len(vals) > limit:
        shown.append(f"... ({len(vals)} distinct)")
    if nan:
        shown.append("nan")
    return "{" + ", ".join(shown) + "}"


def _value_set(t: Tensor) -> set[float]:
    flat = t.detach().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    return set(torch.unique(flat).tolist())


def _require_binary_mask(fn: str, mask: Tensor, what: str = "a 0/1 multi-hot mask") -> Tensor:
    """Validate a hard {0, 1} (or bool) mask of rank 1 or 2; return it as a bool tensor."""
    _check_tensor(fn, mask, "mask")
    if mask.dim() not in (1, 2):
        raise ShapeError(
            f"{fn}: `mask` must be {what} of shape (C,) or (N, C), got shape {tuple(mask.shape)}."
        )
    if mask.dtype == torch.bool:
        return mask
    if mask.numel() and not _value_set(mask) <= {0, 1}:
        seen = _values_preview(mask)
        hint = ""
        if mask.is_floating_point() and mask.min() >= 0 and mask.max() <= 1:
            hint = " For soft labels, threshold them first, e.g. `mask >= 0.5`."
        elif mask.min() == -1:
            hint = (" It looks like ±1 labels (convert with `to_01`) or -1-padded index lists "
                    "(use `padded_to_multi_hot`).")
        raise LabelError(f"{fn}: `mask` must be {what} holding only 0 and 1, got {seen}.{hint}")
    return mask != 0


def _as_sets(fn: str, sets: object) -> list[list[int]]:
    """Normalise a sequence of label collections into lists of Python ints (order kept)."""
    if isinstance(sets, Tensor | str | bytes) or not isinstance(sets, Iterable):
        raise DtypeError(
            f"{fn}: `sets` must be a list of label collections (e.g. [{{0, 3}}, {{1}}]), got "
            f"{type(sets).__name__}. For a padded tensor use `padded_to_multi_hot`."
        )
    out = []
    for i, row in enumerate(sets):
        if isinstance(row, Tensor):
            row = row.reshape(-1).tolist()
        if isinstance(row, int | str | bytes | float) or not isinstance(row, Iterable):
            raise DtypeError(
                f"{fn}: sample {i} of `sets` must be a collection of class indices, got "
                f"{row!r}. Wrap single labels in a set, e.g. [{{2}}, {{0, 1}}]."
            )
        labels = []
        for v in row:
            if isinstance(v, bool) or not (isinstance(v, int) or
                                           (hasattr(v, "__index__") and not isinstance(v, float))):
                raise DtypeError(
                    f"{fn}: sample {i} of `sets` holds {v!r}; labels must be integer class "
                    f"indices."
                )
            labels.append(int(v))
        out.append(labels)
    return out


def _check_set_range(fn: str, rows: list[list[int]], num_classes: int) -> None:
    for i, row in enumerate(rows):
        for v in row:
            if not 0 <= v < num_classes:
                raise LabelError(
                    f"{fn}: sample {i} has class {v}, outside [0, {num_classes}) for "
                    f"num_classes={num_classes}."
                    + (" If your classes are numbered from 1, subtract 1." if v == num_classes
                       else "")
                )


def _make_csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A CSR tensor, checked (``check_invariants=True``: no "checks implicitly disabled"
    warning), without torch's "sparse CSR support is in beta" UserWarning: that warning is about
    torch, not about the caller's labels, and would fail a test suite run with ``-W error``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=True)


def _check_csr(fn: str, csr: object) -> Tensor:
    if not isinstance(csr, Tensor) or csr.layout != torch.sparse_csr:
        got = csr.layout if isinstance(csr, Tensor) else type(csr).__name__
        raise DtypeError(
            f"{fn}: `csr` must be a torch.sparse_csr tensor of shape (N, C), got {got}. "
            f"Build one with `multi_hot_to_csr(mask)` or `sets_to_csr(sets, num_classes=C)`."
        )
    if csr.dim() != 2:
        raise ShapeError(f"{fn}: `csr` must be 2-D (N, C), got shape {tuple(csr.shape)}.")
    return csr


# ----------------------------------------------------------------------------------------------
# binary: {0, 1} <-> {-1, +1}


def to_pm1(target: Tensor, *, dtype: torch.dtype | None = None) -> Tensor:
    """Map binary labels from {0, 1} (or bool) to {-1, +1}: ``2 * target - 1``.

    This is the conversion :class:`marginloss.SoftMarginLoss` needs: it takes one sign per
    score, and a 0 label there means "no label" (the loss is log 2 whatever the score).

    Args:
        target: Labels holding only 0 and 1 (any shape, any real dtype, or bool).
        dtype: Floating-point dtype of the result. Default: ``target``'s dtype if it is
            floating point, else torch's default dtype.

    Returns:
        A float tensor of ``target``'s shape, holding -1 where ``target`` is 0 and +1 where it
        is 1.

    Raises:
        LabelError: ``target`` holds a value other than 0 and 1 (for instance it is already ±1,
            or holds soft labels).

    Examples:
        >>> to_pm1(torch.tensor([0, 1, 1, 0]))
        tensor([-1.,  1.,  1., -1.])
        >>> to_pm1(torch.tensor([[True, False]]), dtype=torch.float64)
        tensor([[ 1., -1.]], dtype=torch.float64)
        >>> to_pm1(torch.tensor([-1.0, 1.0]))
        Traceback (most recent call last):
        ...
        marginloss.errors.LabelError: to_pm1: ...already in {-1, +1}...
    """
    fn = "to_pm1"
    _check_tensor(fn, target)
    if dtype is None:
        dtype = target.dtype if target.is_floating_point() else torch.get_default_dtype()
    dtype = _float_dtype(fn, dtype)
    if target.dtype != torch.bool and target.numel():
        values = _value_set(target)
        if not values <= {0, 1}:
            if values <= {-1, 1}:
                fix = " It is already in {-1, +1}: use it as it is."
            elif target.is_floating_point() and target.min() >= 0 and target.max() <= 1:
                fix = (" Soft labels have no ±1 form: use `BCEWithLogitsLoss` or "
                       "`MultiLabelSoftMarginLoss`, which take probabilities.")
            else:
                fix = ""
            raise LabelError(
                f"{fn}: `target` must hold only 0 and 1, got {_values_preview(target)}.{fix}"
            )
    return target.to(dtype) * 2 - 1


def to_01(target: Tensor, *, dtype: torch.dtype | None = None) -> Tensor:
    """Map binary labels from {-1, +1} to {0, 1}: ``(target + 1) / 2``.

    The inverse of :func:`to_pm1`: brings ±1 labels into the convention of
    ``BCEWithLogitsLoss`` and :class:`marginloss.MultiLabelSoftMarginLoss`.

    Args:
        target: Labels holding only -1 and +1 (any shape, any real dtype).
        dtype: Floating-point dtype of the result. Default: ``target``'s dtype if it is
            floating point, else torch's default dtype.

    Returns:
        A float tensor of ``target``'s shape with 0 where ``target`` is -1 and 1 where it is +1.

    Raises:
        LabelError: ``target`` holds a value other than -1 and +1 (0 included: a 0 is not a
            ±1 label).

    Examples:
        >>> to_01(torch.tensor([-1.0, 1.0, 1.0]))
        tensor([0., 1., 1.])
        >>> to_01(torch.tensor([0, 1]))
        Traceback (most recent call last):
        ...
        marginloss.errors.LabelError: to_01: ...looks like {0, 1} labels already...
    """
    fn = "to_01"
    _check_tensor(fn, target)
    if target.dtype == torch.bool:
        raise DtypeError(f"{fn}: a bool `target` is already 0/1; use `target.float()`.")
    if dtype is None:
        dtype = target.dtype if target.is_floating_point() else torch.get_default_dtype()
    dtype = _float_dtype(fn, dtype)
    if target.numel():
        values = _value_set(target)
        if not values <= {-1, 1}:
            fix = " It looks like {0, 1} labels already: use it as it is." if values <= {0, 1} \
                else ""
            raise LabelError(
                f"{fn}: `target` must hold only -1 and +1, got {_values_preview(target)}.{fix}"
            )
    return (target.to(dtype) + 1) / 2


# ----------------------------------------------------------------------------------------------
# class indices <-> one-hot / multi-hot


def indices_to_one_hot(indices: Tensor, num_classes: int, *,
                       dtype: torch.dtype | None = None) -> Tensor:
    """One-hot rows from class indices: ``(N,)`` integers in ``[0, C)`` -> ``(N, C)``.

    Args:
        indices: Integer class indices, shape ``(N,)`` (or 0-d for a single sample).
        num_classes: The number of classes ``C`` (the width of the model's output).
        dtype: Floating-point dtype of the result. Default: torch's default dtype.

    Returns:
        A float tensor of shape ``(*indices.shape, C)`` with a single 1 per row.

    Raises:
        DtypeError: ``indices`` is floating point or bool.
        LabelError: an index lies outside ``[0, num_classes)``.

    Examples:
        >>> indices_to_one_hot(torch.tensor([2, 0]), num_classes=3)
        tensor([[0., 0., 1.],
                [1., 0., 0.]])
    """
    fn = "indices_to_one_hot"
    _check_tensor(fn, indices, "indices")
    if indices.dim() > 1:
        raise ShapeError(
            f"{fn}: `indices` must hold one class per sample, shape (N,), got "
            f"{tuple(indices.shape)}. For several labels per sample use `indices_to_multi_hot`."
        )
    return indices_to_multi_hot(indices, num_classes, dtype=dtype, _fn=fn)


def indices_to_multi_hot(indices: Tensor, num_classes: int, *, dtype: torch.dtype | None = None,
                         _fn: str = "indices_to_multi_hot") -> Tensor:
    """A multi-hot mask from class indices: ``(N,)`` or ``(N, K)`` -> ``(N, C)``.

    A 1-D ``indices`` gives one-hot rows (one label per sample); a 2-D ``indices`` gives each
    sample the ``K`` classes of its row (repeats are harmless). For lists padded with -1 use
    :func:`padded_to_multi_hot`; for ragged lists use :func:`sets_to_multi_hot`.

    Args:
        indices: Integer class indices in ``[0, C)``, shape ``(N,)`` or ``(N, K)``.
        num_classes: The number of classes ``C``.
        dtype: Floating-point dtype of the result. Default: torch's default dtype.

    Returns:
        A 0/1 float tensor of shape ``(N, C)`` (``(C,)`` for a 0-d ``indices``).

    Raises:
        DtypeError: ``indices`` is floating point or bool.
        ShapeError: ``indices`` has more than two dimensions.
        LabelError: an index lies outside ``[0, num_classes)`` (-1 padding included).
        ValueError: ``num_classes`` is not a positive int.

    Examples:
        >>> indices_to_multi_hot(torch.tensor([1, 3]), num_classes=4)
        tensor([[0., 1., 0., 0.],
                [0., 0., 0., 1.]])
        >>> indices_to_multi_hot(torch.tensor([[0, 2], [1, 1]]), num_classes=3)
        tensor([[1., 0., 1.],
                [0., 1., 0.]])
    """
    fn = _fn
    _check_tensor(fn, indices, "indices")
    num_classes = _check_num_classes(fn, num_classes)
    dtype = _float_dtype(fn, dtype)
    if indices.is_floating_point() or indices.dtype == torch.bool:
        raise DtypeError(
            f"{fn}: `indices` must hold integer class indices, got {indices.dtype}. "
            f"If these are whole numbers stored as floats, use `indices.long()`; if they are "
            f"already a 0/1 mask, no conversion is needed."
        )
    if indices.dim() > 2:
        raise ShapeError(
            f"{fn}: `indices` must have shape (N,) or (N, K), got {tuple(indices.shape)}."
        )
    if indices.numel():
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= num_classes:
            hint = ""
            if lo == -1:
                hint = " -1 entries look like padding: use `padded_to_multi_hot`."
            elif hi == num_classes and lo >= 1:
                hint = " If your classes are numbered from 1, use `indices - 1`."
            raise LabelError(
                f"{fn}: `indices` must lie in [0, {num_classes}) for num_classes={num_classes}, "
                f"but they range over [{lo}, {hi}].{hint}"
            )
    if indices.dim() == 2:
        out = torch.zeros(indices.shape[0], num_classes, dtype=dtype, device=indices.device)
        return out.scatter_(1, indices.long(), 1.0)
    out = torch.zeros(*indices.shape, num_classes, dtype=dtype, device=indices.device)
    return out.scatter_(-1, indices.long().unsqueeze(-1), 1.0)


def one_hot_to_indices(one_hot: Tensor) -> Tensor:
    """Class indices from one-hot rows: ``(N, C)`` with exactly one 1 per row -> ``(N,)`` int64.

    Args:
        one_hot: A 0/1 (or bool) tensor of shape ``(N, C)`` (or ``(C,)`` for one sample).

    Returns:
        An int64 tensor of shape ``(N,)`` (0-d for a 1-D input).

    Raises:
        LabelError: a row has no 1 or several (that is a multi-hot mask: use it with
            ``MultiLabelSoftMarginLoss``, or :func:`multi_hot_to_padded`), or the values are not
            0/1 (scores or probabilities: use ``.argmax(-1)``).

    Examples:
        >>> one_hot_to_indices(torch.tensor([[0., 0., 1.], [1., 0., 0.]]))
        tensor([2, 0])
    """
    fn = "one_hot_to_indices"
    _check_tensor(fn, one_hot, "one_hot")
    if one_hot.dim() not in (1, 2):
        raise ShapeError(
            f"{fn}: `one_hot` must have shape (N, C) or (C,), got {tuple(one_hot.shape)}."
        )
    if one_hot.dtype != torch.bool and one_hot.numel() and not _value_set(one_hot) <= {0, 1}:
        raise LabelError(
            f"{fn}: `one_hot` must hold only 0 and 1, got {_values_preview(one_hot)}. For scores "
            f"or class probabilities use `target.argmax(-1)`."
        )
    counts = (one_hot != 0).sum(-1)
    if one_hot.numel() and not bool((counts == 1).all()):
        bad = int((counts != 1).nonzero()[0, 0]) if one_hot.dim() == 2 else 0
        n = int(counts.reshape(-1)[bad])
        raise LabelError(
            f"{fn}: every row must have exactly one 1, but row {bad} has {n}. Rows with several "
            f"labels form a multi-hot mask: use it with `MultiLabelSoftMarginLoss`, or "
            f"`multi_hot_to_padded` for `MultiLabelMarginLoss`."
        )
    return (one_hot != 0).to(torch.uint8).argmax(-1)


# ----------------------------------------------------------------------------------------------
# multi-hot <-> -1-padded index lists <-> label sets <-> sparse CSR


def multi_hot_to_padded(mask: Tensor) -> Tensor:
    """torch's ``MultiLabelMarginLoss`` target from a 0/1 mask: ``(N, C)`` -> ``(N, C)`` int64.

    Each row lists the sample's classes in increasing order, then -1 up to width ``C`` (torch
    reads a row up to its first -1). A row with no label becomes all -1 (it then contributes 0
    to the loss).

    Args:
        mask: A 0/1 (or bool) mask of shape ``(N, C)`` or ``(C,)``.

    Returns:
        An int64 tensor of ``mask``'s shape.

    Raises:
        LabelError: ``mask`` holds values other than 0 and 1 (±1 labels, soft labels).
        ShapeError: ``mask`` is not 1-D or 2-D.
        DtypeError: ``mask`` is not a dense real tensor (e.g. sparse CSR rows).

    Examples:
        >>> multi_hot_to_padded(torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]))
        tensor([[ 1,  2, -1, -1],
                [ 0, -1, -1, -1],
                [-1, -1, -1, -1]])
    """
    fn = "multi_hot_to_padded"
    on = _require_binary_mask(fn, mask)
    n_classes = on.shape[-1]
    cols = torch.arange(n_classes, device=on.device).expand_as(on)
    # Sort the classes that are present first (stable, so in increasing order), then the rest.
    key = torch.where(on, cols, cols + n_classes)
    order = key.sort(dim=-1, stable=True).values
    return torch.where(order < n_classes, order, torch.full_like(order, -1)).long()


def padded_to_multi_hot(padded: Tensor, *, dtype: torch.dtype | None = None) -> Tensor:
    """A 0/1 mask from -1-padded index lists (torch's ``MultiLabelMarginLoss`` target).

    Follows torch's reading of the format: each row is read up to its first -1, and what comes
    after that -1 is ignored. The number of classes is the row width ``C``.

    Args:
        padded: int tensor of shape ``(N, C)`` or ``(C,)``, entries in ``[0, C)`` or -1.
        dtype: Floating-point dtype of the result. Default: torch's default dtype.

    Returns:
        A 0/1 float tensor of ``padded``'s shape.

    Raises:
        DtypeError: ``padded`` is floating point or bool (a mask already?).
        ShapeError: ``padded`` is not 1-D or 2-D.
        LabelError: an entry is below -1 or not smaller than the row width ``C``.

    Examples:
        >>> padded_to_multi_hot(torch.tensor([[3, 0, -1, -1], [1, -1, 2, -1]]))
        tensor([[1., 0., 0., 1.],
                [0., 1., 0., 0.]])
    """
    fn = "padded_to_multi_hot"
    _check_tensor(fn, padded, "padded")
    dtype = _float_dtype(fn, dtype)
    if padded.is_floating_point() or padded.dtype == torch.bool:
        raise DtypeError(
            f"{fn}: `padded` must hold integer class indices padded with -1, got "
            f"{padded.dtype}. If it is a 0/1 mask already, no conversion is needed."
        )
    if padded.dim() not in (1, 2):
        raise ShapeError(f"{fn}: `padded` must have shape (N, C) or (C,), got "
                         f"{tuple(padded.shape)}.")
    n_classes = padded.shape[-1]
    if padded.numel():
        lo, hi = int(padded.min()), int(padded.max())
        if lo < -1 or hi >= n_classes:
            raise LabelError(
                f"{fn}: entries must be class indices in [0, {n_classes}) (C is the row width) "
                f"or -1 for padding, but they range over [{lo}, {hi}]. torch's format has one "
                f"column per class; for ragged label lists use `sets_to_padded(sets, "
                f"num_classes=C)`."
            )
    rows = padded.reshape(-1, n_classes).long()
    # Valid = before the first -1 of its row (torch's reading).
    valid = (rows >= 0).to(torch.int64).cumprod(dim=-1).bool()
    out = torch.zeros(rows.shape, dtype=dtype, device=padded.device)
    out.scatter_add_(1, rows.clamp_min(0), valid.to(dtype))
    return out.clamp_max_(1).reshape(padded.shape)


def padded_to_sets(padded: Tensor) -> list[set[int]]:
    """Label sets from -1-padded index lists (each row read up to its first -1, as torch does).

    Args:
        padded: int tensor of shape ``(N, C)`` or ``(C,)``, entries in ``[0, C)`` or -1.

    Returns:
        A list of ``N`` sets of class indices (one set for a 1-D ``padded``).

    Raises:
        DtypeError, ShapeError, LabelError: as :func:`padded_to_multi_hot`.

    Examples:
        >>> padded_to_sets(torch.tensor([[3, 0, -1, -1], [-1, -1, -1, -1]]))
        [{0, 3}, set()]
    """
    return multi_hot_to_sets(padded_to_multi_hot(padded, dtype=torch.float32))


def sets_to_padded(sets: Sequence[Iterable[int]], num_classes: int, *,
                   device: torch.device | str | None = None) -> Tensor:
    """torch's ``MultiLabelMarginLoss`` target from label sets: -> ``(N, C)`` int64.

    Each row lists the sample's classes (duplicates dropped, increasing order), then -1.

    Args:
        sets: One collection of class indices per sample (sets, lists, tuples or 1-D tensors).
        num_classes: The number of classes ``C``; also the row width, as torch requires.
        device: Device of the result. Default: CPU.

    Returns:
        An int64 tensor of shape ``(N, C)``.

    Raises:
        DtypeError: ``sets`` is not a list of collections of integers.
        LabelError: a class lies outside ``[0, num_classes)``.
        ValueError: ``num_classes`` is not a positive int.

    Examples:
        >>> sets_to_padded([{0, 3}, {1}, set()], num_classes=4)
        tensor([[ 0,  3, -1, -1],
                [ 1, -1, -1, -1],
                [-1, -1, -1, -1]])
    """
    fn = "sets_to_padded"
    num_classes = _check_num_classes(fn, num_classes)
    rows = _as_sets(fn, sets)
    _check_set_range(fn, rows, num_classes)
    out = torch.full((len(rows), num_classes), -1, dtype=torch.int64)
    for i, row in enumerate(rows):
        labels = sorted(set(row))
        out[i, : len(labels)] = torch.tensor(labels, dtype=torch.int64)
    return out.to(device) if device is not None else out


def sets_to_multi_hot(sets: Sequence[Iterable[int]], num_classes: int, *,
                      dtype: torch.dtype | None = None,
                      device: torch.device | str | None = None) -> Tensor:
    """A 0/1 mask ``(N, C)`` from label sets (one collection of class indices per sample).

    Args:
        sets: One collection of class indices per sample (sets, lists, tuples or 1-D tensors).
        num_classes: The number of classes ``C``.
        dtype: Floating-point dtype of the result. Default: torch's default dtype.
        device: Device of the result. Default: CPU.

    Returns:
        A 0/1 float tensor of shape ``(N, C)``.

    Raises:
        DtypeError: ``sets`` is not a list of collections of integers.
        LabelError: a class lies outside ``[0, num_classes)``.
        ValueError: ``num_classes`` is not a positive int.

    Examples:
        >>> sets_to_multi_hot([{0, 3}, [1], ()], num_classes=4)
        tensor([[1., 0., 0., 1.],
                [0., 1., 0., 0.],
                [0., 0., 0., 0.]])
    """
    fn = "sets_to_multi_hot"
    num_classes = _check_num_classes(fn, num_classes)
    dtype = _float_dtype(fn, dtype)
    rows = _as_sets(fn, sets)
    _check_set_range(fn, rows, num_classes)
    out = torch.zeros(len(rows), num_classes, dtype=dtype)
    for i, row in enumerate(rows):
        if row:
            out[i, row] = 1
    return out.to(device) if device is not None else out


def multi_hot_to_sets(mask: Tensor) -> list[set[int]]:
    """Label sets from a 0/1 mask: one set of class indices per row.

    Args:
        mask: A 0/1 (or bool) mask of shape ``(N, C)`` or ``(C,)``.

    Returns:
        A list of ``N`` sets of class indices (one set for a 1-D ``mask``).

    Raises:
        LabelError: ``mask`` holds values other than 0 and 1.
        ShapeError: ``mask`` is not 1-D or 2-D.

    Examples:
        >>> multi_hot_to_sets(torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0]]))
        [{0, 3}, set()]
    """
    on = _require_binary_mask("multi_hot_to_sets", mask).reshape(-1, mask.shape[-1])
    rows, cols = on.nonzero(as_tuple=True)
    out: list[set[int]] = [set() for _ in range(on.shape[0])]
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        out[r].add(c)
    return out


def multi_hot_to_csr(mask: Tensor, *, dtype: torch.dtype | None = None) -> Tensor:
    """Sparse CSR rows from a 0/1 mask ``(N, C)``: row ``i`` stores sample ``i``'s classes.

    Memory grows with the number of labels, not ``N * C``: the compact form for many classes.

    Args:
        mask: A 0/1 (or bool) mask of shape ``(N, C)``.
        dtype: Floating-point dtype of the stored values (all 1). Default: torch's default
            dtype.

    Returns:
        A ``torch.sparse_csr`` tensor of shape ``(N, C)``.

    Raises:
        LabelError: ``mask`` holds values other than 0 and 1.
        ShapeError: ``mask`` is not 2-D.

    Examples:
        >>> csr = multi_hot_to_csr(torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]]))
        >>> csr.crow_indices(), csr.col_indices()
        (tensor([0, 2, 3]), tensor([0, 3, 1]))
    """
    fn = "multi_hot_to_csr"
    on = _require_binary_mask(fn, mask)
    if on.dim() != 2:
        raise ShapeError(f"{fn}: `mask` must be 2-D (N, C) for CSR rows, got "
                         f"{tuple(mask.shape)}; use `mask.unsqueeze(0)` for one sample.")
    dtype = _float_dtype(fn, dtype)
    counts = on.sum(-1)
    crow = torch.zeros(on.shape[0] + 1, dtype=torch.int64, device=on.device)
    crow[1:] = counts.cumsum(0)
    col = on.nonzero(as_tuple=True)[1]
    values = torch.ones(col.numel(), dtype=dtype, device=on.device)
    return _make_csr(crow, col, values, tuple(on.shape))


def csr_to_multi_hot(csr: Tensor, *, dtype: torch.dtype | None = None) -> Tensor:
    """A dense 0/1 mask ``(N, C)`` from sparse CSR rows (every stored entry counts as a label).

    Stored entries are labels whatever their value (explicit zeros included), so a CSR matrix
    that stores scores must be thresholded first.

    Args:
        csr: A ``torch.sparse_csr`` tensor of shape ``(N, C)``.
        dtype: Floating-point dtype of the result. Default: torch's default dtype.

    Returns:
        A 0/1 float tensor of shape ``(N, C)``.

    Raises:
        DtypeError: ``csr`` is not a sparse CSR tensor.
        ShapeError: ``csr`` is not 2-D.

    Examples:
        >>> csr = sets_to_csr([{0, 3}, {1}], num_classes=4)
        >>> csr_to_multi_hot(csr)
        tensor([[1., 0., 0., 1.],
                [0., 1., 0., 0.]])
    """
    fn = "csr_to_multi_hot"
    _check_csr(fn, csr)
    dtype = _float_dtype(fn, dtype)
    crow, col = csr.crow_indices(), csr.col_indices()
    n_rows, n_classes = csr.shape
    rows = torch.repeat_interleave(torch.arange(n_rows, device=crow.device), crow.diff())
    out = torch.zeros(n_rows, n_classes, dtype=dtype, device=crow.device)
    out[rows, col] = 1
    return out


def sets_to_csr(sets: Sequence[Iterable[int]], num_classes: int, *,
                dtype: torch.dtype | None = None) -> Tensor:
    """Sparse CSR rows ``(N, C)`` from label sets (duplicates dropped, columns sorted).

    Args:
        sets: One collection of class indices per sample (sets, lists, tuples or 1-D tensors).
        num_classes: The number of classes ``C``.
        dtype: Floating-point dtype of the stored values (all 1). Default: torch's default
            dtype.

    Returns:
        A ``torch.sparse_csr`` tensor of shape ``(N, C)``, on the CPU.

    Raises:
        DtypeError: ``sets`` is not a list of collections of integers.
        LabelError: a class lies outside ``[0, num_classes)``.
        ValueError: ``num_classes`` is not a positive int.

    Examples:
        >>> sets_to_csr([{3, 0}, {1}], num_classes=4).col_indices()
        tensor([0, 3, 1])
    """
    fn = "sets_to_csr"
    num_classes = _check_num_classes(fn, num_classes)
    dtype = _float_dtype(fn, dtype)
    rows = [sorted(set(r)) for r in _as_sets(fn, sets)]
    _check_set_range(fn, rows, num_classes)
    crow = torch.tensor([0] + [len(r) for r in rows], dtype=torch.int64).cumsum(0)
    col = torch.tensor([c for r in rows for c in r], dtype=torch.int64)
    values = torch.ones(col.numel(), dtype=dtype)
    return _make_csr(crow, col, values, (len(rows), num_classes))


def csr_to_sets(csr: Tensor) -> list[set[int]]:
    """Label sets from sparse CSR rows: the stored column indices of each row.

    Args:
        csr: A ``torch.sparse_csr`` tensor of shape ``(N, C)``.

    Returns:
        A list of ``N`` sets of class indices.

    Raises:
        DtypeError: ``csr`` is not a sparse CSR tensor.
        ShapeError: ``csr`` is not 2-D.

    Examples:
        >>> csr_to_sets(sets_to_csr([{0, 3}, set()], num_classes=4))
        [{0, 3}, set()]
    """
    _check_csr("csr_to_sets", csr)
    crow, col = csr.crow_indices().tolist(), csr.col_indices().tolist()
    return [set(col[crow[i]:crow[i + 1]]) for i in range(len(crow) - 1)]


# ----------------------------------------------------------------------------------------------
# shortlists: class space <-> candidate space; index lists padded with -1 and/or C


def _index_matrix(fn: str, t: object, arg: str, num_classes: int) -> Tensor:
    """A 2-D integer tensor whose entries are classes in ``[0, C)`` or padding (-1 or C)."""
    t = _check_tensor(fn, t, arg)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise DtypeError(f"{fn}: `{arg}` must hold integer class indices (int64 or int32), got "
                         f"{t.dtype}.")
    if t.dim() != 2:
        raise ShapeError(f"{fn}: `{arg}` must have shape (N, K) (one row of class indices per "
                         f"sample), got {tuple(t.shape)}; for one sample use "
                         f"`{arg}.unsqueeze(0)`.")
    bad = (t < -1) | (t > num_classes)
    if t.numel() and bool(bad.any()):
        n, k = (int(i) for i in bad.nonzero()[0])
        raise LabelError(
            f"{fn}: `{arg}` holds class {int(t[n, k])} in sample {n}, outside [0, {num_classes}) "
            f"for num_classes={num_classes}; -1 and {num_classes} mark padding."
        )
    return t


def from_padded(indices: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """The ``(rows, cols)`` pair form of index lists padded with -1 and/or ``num_classes``.

    Unlike torch's ``MultiLabelMarginLoss`` format (read up to the first -1), padding may sit
    anywhere in a row, and every other entry is a label. The pair is the sparse target form
    :func:`marginloss.functional.multilabel_soft_margin_loss`,
    :func:`~marginloss.functional.multilabel_margin_loss` and their fused heads take
    (:mod:`marginloss.sparse`): entry ``i`` is class ``cols[i]`` of sample ``rows[i]``, in row
    order, then in the order of the row. :math:`O(N P)`.

    Args:
        indices: int tensor of shape ``(N, P)``: class indices in ``[0, C)``, padded with -1 or
            ``C``.
        num_classes: The number of classes ``C``.

    Returns:
        ``(rows, cols)``, two int64 tensors of the same length (the number of labels).

    Raises:
        DtypeError: ``indices`` is not a dense integer tensor.
        ShapeError: ``indices`` is not 2-D.
        LabelError: an entry is neither a class in ``[0, C)`` nor padding.
        ValueError: ``num_classes`` is not a positive int.

    Examples:
        >>> rows, cols = from_padded(torch.tensor([[3, -1, 0], [5, 5, 1]]), num_classes=5)
        >>> rows, cols
        (tensor([0, 0, 1]), tensor([3, 0, 1]))
        >>> import marginloss.functional as F
        >>> x = torch.zeros(2, 5)
        >>> F.multilabel_soft_margin_loss(x, (rows, cols)) == F.multilabel_soft_margin_loss(
        ...     x, torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 0]]))
        tensor(True)
    """
    fn = "from_padded"
    num_classes = _check_num_classes(fn, num_classes)
    t = _index_matrix(fn, indices, "indices", num_classes)
    rows, pos = ((t >= 0) & (t < num_classes)).nonzero(as_tuple=True)
    return rows, t[rows, pos].long()


def _positives(fn: str, positives: object, n_rows: int, num_classes: int,
               device: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(rows, cols, values or None)`` of class-space positives in any accepted form,
    checked."""
    values = None
    if isinstance(positives, Tensor) and positives.layout == torch.sparse_csr:
        csr = _check_csr(fn, positives)
        if tuple(csr.shape) != (n_rows, num_classes):
            raise ShapeError(f"{fn}: a CSR `positives` must have shape ({n_rows}, {num_classes}) "
                             f"(N samples of `candidates`, num_classes), got {tuple(csr.shape)}.")
        crow, cols, values = csr.crow_indices(), csr.col_indices().long(), csr.values()
        rows = torch.repeat_interleave(torch.arange(n_rows, device=crow.device), crow.diff())
    elif isinstance(positives, Tensor):
        t = _index_matrix(fn, positives, "positives", num_classes)
        if t.shape[0] != n_rows:
            raise ShapeError(f"{fn}: `positives` has {t.shape[0]} rows but `candidates` "
                             f"{n_rows}; give one row per sample.")
        rows, cols = from_padded(t, num_classes)
    elif isinstance(positives, tuple) and len(positives) == 2:
        rows, cols = (_check_tensor(fn, t, "positives").reshape(-1).long() for t in positives)
        if rows.numel() != cols.numel():
            raise ShapeError(f"{fn}: the (rows, cols) pair must have equal lengths, got "
                             f"{rows.numel()} and {cols.numel()}.")
        if rows.numel() and bool(((rows < 0) | (rows >= n_rows)).any()):
            raise LabelError(f"{fn}: the (rows, cols) `positives` have a row outside "
                             f"[0, {n_rows}) for the {n_rows} samples of `candidates`.")
    elif isinstance(positives, list):
        if len(positives) != n_rows:
            raise ShapeError(f"{fn}: a list `positives` holds one index tensor per sample, so "
                             f"its length must be {n_rows} (the rows of `candidates`); got "
                             f"{len(positives)}.")
        parts = []
        for i, p in enumerate(positives):
            p = _check_tensor(fn, p, f"positives[{i}]")
            if (p.is_floating_point() and p.numel()) or p.dtype == torch.bool:
                raise DtypeError(f"{fn}: `positives[{i}]` must hold integer class indices, got "
                                 f"{p.dtype}.")
            parts.append(p.reshape(-1).long())
        counts = torch.tensor([p.numel() for p in parts], dtype=torch.int64)
        cols = torch.cat(parts).to(device) if parts else torch.zeros(0, dtype=torch.int64,
                                                                      device=device)
        rows = torch.repeat_interleave(torch.arange(n_rows), counts).to(device)
    else:
        raise DtypeError(
            f"{fn}: `positives` must be a list of N class-index tensors, a torch.sparse_csr "
            f"tensor (N, C), an (N, P) index tensor padded with -1 or num_classes, or a "
            f"(rows, cols) pair; got {type(positives).__name__}."
        )
    if cols.numel() and bool(((cols < 0) | (cols >= num_classes)).any()):
        bad = int(cols[(cols < 0) | (cols >= num_classes)][0])
        raise LabelError(f"{fn}: `positives` holds class {bad}, outside [0, {num_classes}) for "
                         f"num_classes={num_classes}.")
    return rows.to(device), cols.to(device), None if values is None else values.to(device)


def shortlist_target(positives, candidates: Tensor, num_classes: int, *,
                     dtype: torch.dtype | None = None) -> Tensor:
    r"""The candidate-space multi-hot ``(N, K)`` of class-space positives: the target of the
    fused soft margin head with ``candidates=`` (:func:`marginloss.functional.
    linear_multilabel_soft_margin_loss`).

    ``out[n, k]`` is 1 where ``candidates[n, k]`` is one of sample ``n``'s positives, else 0
    (padding slots, -1 or ``num_classes``, are 0). Index forms are sets (a positive listed
    twice is 1); a CSR's stored values are kept (soft labels; duplicates add up, as in
    ``to_dense()``). A class listed twice among the candidates is marked in both slots. Cost:
    :math:`O((	ext{nnz} + N K) \log 	ext{nnz})` (one sort of the positives, a binary search
    per candidate), never :math:`N 	imes C`.

    Args:
        positives: Each sample's positive classes: a list of ``N`` 1-D index tensors, a
            ``torch.sparse_csr`` tensor ``(N, C)``, an ``(N, P)`` index tensor padded with -1
            or ``num_classes`` (anywhere in a row), or a ``(rows, cols)`` pair.
        candidates: ``(N, K)`` class indices, padded with -1 or ``num_classes``.
        num_classes: The number of classes ``C``.
        dtype: Floating-point dtype of the result. Default: torch's default dtype.

    Returns:
        A float tensor of shape ``(N, K)`` on ``candidates``' device.

    Raises:
        DtypeError: a form or dtype that is not accepted.
        ShapeError: ``candidates`` is not 2-D, or ``positives`` does not have its ``N`` rows.
        LabelError: a class outside ``[0, num_classes)`` (padding aside).
        ValueError: ``num_classes`` is not a positive int.

    Examples:
        >>> candidates = torch.tensor([[7, 2, 9, -1], [4, 0, 5, 5]])
        >>> shortlist_target([torch.tensor([2, 8]), torch.tensor([5])], candidates, 10)
        tensor([[0., 1., 0., 0.],
                [0., 0., 1., 1.]])
        >>> shortlist_target(torch.tensor([[2, 8, 10], [5, -1, -1]]), candidates, 10)
        tensor([[0., 1., 0., 0.],
                [0., 0., 1., 1.]])
    """
    fn = "shortlist_target"
    num_classes = _check_num_classes(fn, num_classes)
    dtype = _float_dtype(fn, dtype)
    cand = _index_matrix(fn, candidates, "candidates", num_classes)
    n_rows = cand.shape[0]
    dev = cand.device
    rows, cols, values = _positives(fn, positives, n_rows, num_classes, dev)
    stride = num_classes + 1  # (a key per (sample, class); padding C keys never match)
    keys, inverse = torch.unique(rows * stride + cols, sorted=True, return_inverse=True)
    if values is None:
        vals = torch.ones(keys.numel(), dtype=dtype, device=dev)
    else:
        vals = torch.zeros(keys.numel(), dtype=dtype, device=dev).index_add_(
            0, inverse, values.to(dtype))
    out = torch.zeros(cand.shape, dtype=dtype, device=dev)
    if keys.numel() == 0 or cand.numel() == 0:
        return out
    real = (cand >= 0) & (cand < num_classes)
    ckeys = torch.arange(n_rows, device=dev).unsqueeze(1) * stride + cand.long().clamp(0)
    pos = torch.searchsorted(keys, ckeys).clamp_(max=keys.numel() - 1)
    hit = real & (keys[pos] == ckeys)
    return torch.where(hit, vals[pos], out)
