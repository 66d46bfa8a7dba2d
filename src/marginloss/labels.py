"""Label conventions: convert between them, and recognise which one a target is in.

The margin-family losses each take a different label convention, and the wrong one usually
trains without an error (torch accepts {0, 1} where ±1 is meant, and a 0/1 mask where -1-padded
index lists are meant). These functions convert between the conventions, exactly and with clear
errors, and :func:`describe` names the convention a target is in, with the evidence.

* binary {0, 1}, ``[0, 1]``: ``BCEWithLogitsLoss``;
* binary ±1, ``[-1., 1.]``: ``SoftMarginLoss``;
* class indices, ``[3, 0]``: ``MultiMarginLoss``, ``CrossEntropyLoss``;
* one-hot rows, ``[[0, 0, 0, 1], [1, 0, 0, 0]]``: convert to class indices;
* multi-hot mask, hard or soft, ``[[1, 0, 0, 1], [0, 1, 0, 0]]``: ``MultiLabelSoftMarginLoss``;
* -1-padded index lists, ``[[0, 3, -1, -1], [1, -1, -1, -1]]``: ``MultiLabelMarginLoss``;
* label sets, ``[{0, 3}, {1}]``, and ``torch.sparse_csr`` rows: convert to a mask or to padded
  lists.

Converters that build a class dimension take ``num_classes`` explicitly: inferring it from the
largest label present gives too narrow a tensor whenever the last class is missing from a batch.
Converters keep the input's device. Float outputs use ``dtype`` (default: torch's default dtype,
usually float32); index outputs are int64, as torch's losses require.

Examples:
    >>> to_pm1(torch.tensor([0, 1, 1]))
    tensor([-1.,  1.,  1.])
    >>> multi_hot_to_padded(torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]]))
    tensor([[ 0,  3, -1, -1],
            [ 1, -1, -1, -1]])
    >>> describe(torch.tensor([3, 0, 2])).convention
    'class_indices'
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from marginloss._validation import DtypeError, LabelError, ShapeError, check_real_tensor

__all__ = [
    "CONVENTIONS",
    "LabelDescription",
    "csr_to_multi_hot",
    "csr_to_sets",
    "describe",
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
    "to_01",
    "to_pm1",
]

#: Every convention :func:`describe` can name, with a short human-readable description.
CONVENTIONS: dict[str, str] = {
    "binary_01": "binary labels in {0, 1}, one per sample",
    "binary_pm1": "binary labels in {-1, +1}, one sign per score",
    "soft_binary": "soft binary labels (probabilities in [0, 1]), one per score",
    "class_indices": "class indices, one integer class per sample",
    "one_hot": "one-hot rows (N, C): exactly one 1 per row",
    "multi_hot": "a multi-hot mask (N, C): 0/1 per class, any number of 1s per row",
    "soft_multi_hot": "a soft multi-hot mask (N, C): a probability in [0, 1] per class",
    "class_probabilities": "class-probability rows (N, C) that sum to 1 (soft one-hot)",
    "padded_indices": "class-index lists padded with -1 (N, C), MultiLabelMarginLoss's format",
    "sparse_csr": "sparse CSR rows (N, C): the stored columns of row i are sample i's labels",
    "label_sets": "a list of label sets, one collection of class indices per sample",
    "empty": "an empty target (no labels to inspect)",
    "unknown": "no label convention (values look like scores or regression targets)",
}


# ----------------------------------------------------------------------------------------------
# helpers


def _check_tensor(fn: str, t: object, arg: str = "target") -> Tensor:
    check_real_tensor(fn, t, arg)
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


def _is_integral(t: Tensor) -> bool:
    """True for integer/bool dtypes, or a float tensor holding only whole numbers (no NaN)."""
    if not t.is_floating_point():
        return True
    return bool(torch.isfinite(t).all()) and bool((t == t.round()).all())


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
        marginloss._validation.LabelError: to_pm1: ...already in {-1, +1}...
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
        marginloss._validation.LabelError: to_01: ...looks like {0, 1} labels already...
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

    Examples:
        >>> csr_to_sets(sets_to_csr([{0, 3}, set()], num_classes=4))
        [{0, 3}, set()]
    """
    _check_csr("csr_to_sets", csr)
    crow, col = csr.crow_indices().tolist(), csr.col_indices().tolist()
    return [set(col[crow[i]:crow[i + 1]]) for i in range(len(crow) - 1)]


# ----------------------------------------------------------------------------------------------
# describe


@dataclass(frozen=True)
class LabelDescription:
    """What :func:`describe` found: the convention a target is in, and the evidence.

    Attributes:
        convention: A key of :data:`CONVENTIONS` (e.g. ``"binary_01"``, ``"padded_indices"``).
        summary: The convention in words.
        dtype: The target's dtype as a string (``"torch.int64"``; ``"list"`` for label sets).
        shape: The target's shape (``(N,)`` for label sets).
        values: The distinct values seen, abbreviated (``"{0, 1}"``).
        num_classes: The number of classes the labels imply, when they imply one: the width
            ``C`` of a mask or padded rows, or ``max + 1`` for indices and label sets (a lower
            bound: classes absent from the data cannot be seen).
        alternatives: Other conventions the same values could be in (empty when unambiguous).
        evidence: Why this convention, in one or two sentences.
    """

    convention: str
    summary: str
    dtype: str
    shape: tuple[int, ...]
    values: str
    num_classes: int | None = None
    alternatives: tuple[str, ...] = field(default_factory=tuple)
    evidence: str = ""

    @property
    def ambiguous(self) -> bool:
        """True when the values fit several conventions (see ``alternatives``)."""
        return bool(self.alternatives)

    def __str__(self) -> str:
        text = (f"{self.summary} [{self.convention}]: dtype {self.dtype}, shape "
                f"{self.shape}, values {self.values}. {self.evidence}")
        if self.alternatives:
            text += " Could also be: " + "; ".join(CONVENTIONS[a] for a in self.alternatives) + "."
        return text


def _describe_sets(rows: list[list[int]]) -> LabelDescription:
    flat = [v for r in rows for v in r]
    values = "{" + ", ".join(str(v) for v in sorted(set(flat))[:6]) + (
        ", ..." if len(set(flat)) > 6 else "") + "}"
    c = max(flat) + 1 if flat else None
    sizes = [len(set(r)) for r in rows]
    ev = (f"A list of {len(rows)} label collections of sizes {min(sizes, default=0)} to "
          f"{max(sizes, default=0)}, classes 0 to {c - 1 if c else '-'}.")
    return LabelDescription("label_sets", CONVENTIONS["label_sets"], "list", (len(rows),),
                            values, c, (), ev)


def describe(target: object) -> LabelDescription:
    """Name the label convention ``target`` is in, with the evidence (dtype, shape, values).

    The rules read the dtype, the shape and the set of values: {0, 1} with one label per
    sample is binary; only ±1 is a sign per score; non-negative integers with one per sample
    are class indices; (N, C) rows of 0/1 are one-hot (exactly one 1 per row) or multi-hot;
    values in [0, 1] are soft labels; integer rows whose -1 entries all trail are -1-padded
    index lists. When the values fit several conventions (a 1-D tensor of 0s and 1s could also
    be two-class indices), the most common reading is chosen and the others are listed in
    ``alternatives``; :func:`marginloss.recommend` takes hints that settle them.

    Args:
        target: A tensor (dense or ``torch.sparse_csr``), a NumPy array, or a list of label
            collections (e.g. ``[{0, 3}, {1}]``).

    Returns:
        A :class:`LabelDescription`.

    Examples:
        >>> d = describe(torch.tensor([0, 1, 1, 0]))
        >>> d.convention, d.alternatives
        ('binary_01', ('class_indices', 'multi_hot'))
        >>> describe(torch.tensor([1.0, -1.0])).convention
        'binary_pm1'
        >>> describe(torch.tensor([[1, 0, 1], [0, 1, 0]])).convention
        'multi_hot'
        >>> print(describe(torch.tensor([[2, 0, -1], [1, -1, -1]])))
        class-index lists padded with -1 ... [padded_indices]: dtype torch.int64, shape (2, 3), ...
    """
    if isinstance(target, list | tuple) and not isinstance(target, Tensor):
        if any(isinstance(r, set | frozenset) for r in target) or len(
                {len(r) if isinstance(r, Sequence | Tensor) else -1 for r in target}) > 1:
            return _describe_sets(_as_sets("describe", target))
        target = torch.as_tensor(target)
    elif not isinstance(target, Tensor):
        try:
            target = torch.as_tensor(target)
        except (TypeError, RuntimeError, ValueError) as e:
            raise DtypeError(f"describe: cannot read {type(target).__name__} as labels: {e}") \
                from None
    t: Tensor = target
    if t.is_complex():
        raise DtypeError(f"describe: labels must be real, got {t.dtype}.")
    dtype, shape = str(t.dtype), tuple(t.shape)

    def out(conv: str, evidence: str, *, values: str | None = None, num_classes: int | None = None,
            alternatives: tuple[str, ...] = ()) -> LabelDescription:
        return LabelDescription(conv, CONVENTIONS[conv], dtype, shape,
                                values if values is not None else _values_preview(t),
                                num_classes, alternatives, evidence)

    if t.layout == torch.sparse_csr:
        nnz = t.col_indices().numel()
        return out("sparse_csr", f"A sparse CSR matrix with {nnz} stored labels over "
                   f"{shape[-1]} classes.", values=f"{nnz} stored entries",
                   num_classes=shape[-1])
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.numel() == 0:
        return out("empty", "The target has no elements.", values="{}")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        return out("unknown", "The target holds NaN or infinite values, which no label "
                   "convention allows.")
    if t.dim() > 2 and t.dtype != torch.bool and not t.is_floating_point() and t.min() >= 0:
        return out("class_indices", f"Non-negative integers of rank {t.dim()}: per-position "
                   f"class indices (e.g. segmentation); flatten them to (N,) for the "
                   f"margin losses.", num_classes=int(t.max()) + 1)

    values = _value_set(t)
    integral = _is_integral(t)
    lo, hi = min(values), max(values)
    width = shape[-1] if t.dim() >= 1 else 1

    # ±1 -------------------------------------------------------------------------------------
    if values <= {-1, 1} and -1 in values:
        alts: tuple[str, ...] = ()
        if not t.is_floating_point() and t.dim() >= 1 and _trailing_padding(t):
            alts = ("padded_indices",)
        per = "one sign per sample" if t.dim() <= 1 or width == 1 else "one sign per class"
        return out("binary_pm1", f"Only -1 and +1 occur ({per}).", alternatives=alts,
                   num_classes=width if t.dim() == 2 and width > 1 else None)

    # -1-padded index lists -------------------------------------------------------------------
    if integral and not t.is_floating_point() and lo == -1 and t.dim() in (1, 2):
        if hi < width:
            trailing = _trailing_padding(t)
            ev = (f"Integers in [-1, {int(hi)}] in rows of width {width}; "
                  + ("every -1 trails its row, as padding does." if trailing else
                     "some -1 come before class indices: torch reads each row only up to its "
                     "first -1 and ignores the rest."))
            alts = () if trailing else ("unknown",)
            return out("padded_indices", ev, num_classes=width, alternatives=alts)
        return out("unknown", f"Integers with -1 whose largest index {int(hi)} does not fit in "
                   f"rows of width {width}, so they are not -1-padded index lists.")

    if lo < 0:
        return out("unknown", "Negative values other than -1 padding or ±1 labels: these look "
                   "like scores or regression targets, not labels.")

    # {0, 1} and bool ---------------------------------------------------------------------------
    if values <= {0, 1}:
        if t.dim() <= 1:
            return out("binary_01", "Only 0 and 1 occur, one value per sample.",
                       alternatives=("class_indices", "multi_hot") if t.dim() == 1 else ())
        if t.dim() == 2 and width == 1:
            return out("binary_01", "Only 0 and 1 occur, in a single column (N, 1).")
        if t.dim() > 2:
            return out("binary_01", f"Only 0 and 1 occur, in a tensor of rank {t.dim()}: one "
                       f"binary label per position.", alternatives=("multi_hot",))
        counts = (t != 0).sum(-1)
        lo_c, hi_c = int(counts.min()), int(counts.max())
        if lo_c == hi_c == 1:
            return out("one_hot", f"(N, C) rows of 0/1 with exactly one 1 in each of the "
                       f"{shape[0]} rows.", num_classes=width, alternatives=("multi_hot",))
        return out("multi_hot", f"(N, C) rows of 0/1 with {lo_c} to {hi_c} ones per row "
                   f"(mean {float(counts.float().mean()):.2f}).", num_classes=width)

    # soft labels in [0, 1] --------------------------------------------------------------------
    if t.is_floating_point() and hi <= 1 and not integral:
        if t.dim() == 2 and width > 1:
            sums = t.sum(-1)
            if bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-4)):
                return out("class_probabilities", "(N, C) rows of values in [0, 1] that each "
                           "sum to 1.", num_classes=width, alternatives=("soft_multi_hot",))
            return out("soft_multi_hot", "(N, C) rows of values in [0, 1] (fractions: soft "
                       "labels).", num_classes=width)
        return out("soft_binary", "Values in [0, 1] with fractions, one per sample: "
                   "probabilities, soft binary labels.")

    # class indices ----------------------------------------------------------------------------
    if integral:
        n_cls = int(hi) + 1
        stored = (" They are stored as floats: the margin losses need an integer dtype "
                  "(`target.long()`).") if t.is_floating_point() else ""
        if t.dim() <= 1:
            one = (" The smallest index is 1: if classes are numbered from 1, subtract 1."
                   if lo == 1 else "")
            return out("class_indices", f"Whole numbers from {int(lo)} to {int(hi)}, one per "
                       f"sample: class indices for at least {n_cls} classes.{one}{stored}",
                       num_classes=n_cls)
        return out("class_indices", f"A 2-D tensor of whole numbers from {int(lo)} to "
                   f"{int(hi)} without -1 padding: per-position class indices, or index lists "
                   f"in which every sample has exactly {width} labels.{stored}",
                   num_classes=n_cls, alternatives=("padded_indices",))

    return out("unknown", f"Values from {lo:g} to {hi:g} with fractions: these look like "
               f"scores or regression targets, not labels.")


def _trailing_padding(t: Tensor) -> bool:
    """True when, in every row, the -1 entries form a suffix (and there is at least one)."""
    rows = t.reshape(-1, t.shape[-1])
    neg = rows == -1
    if not bool(neg.any()):
        return False
    # After the first -1 of a row, every entry must be -1.
    after_first = neg.to(torch.int64).cummax(dim=-1).values.bool()
    return bool((after_first == neg).all())
