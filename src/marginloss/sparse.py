r"""Sparse multi-label targets: each sample's positive classes, never a dense ``(N, C)`` target.

With :math:`C = 10^5` classes and a handful of labels per sample, a dense multi-hot or -1-padded
target costs 4 to 8 bytes per class per sample.
:func:`~marginloss.functional.multilabel_soft_margin_loss` and
:func:`~marginloss.functional.multilabel_margin_loss` (and their modules) therefore also take
the positives of each sample in one of three forms, and this module turns any of them into one
:class:`SparseTarget` (the stored entries as ``(row, col[, value])`` triples, ``nnz`` of them):

* a ``torch.sparse_csr`` tensor of shape ``(N, C)``: each stored entry is a label, its value 1
  (for the soft margin loss, a soft label in :math:`(0, 1]`);
* a ``list`` of ``N`` per-sample 1-D integer tensors of class indices (value 1 each);
* a ``tuple`` ``(rows, cols)`` of two 1-D integer tensors of equal length: entry :math:`i` is
  class ``cols[i]`` of sample ``rows[i]`` (value 1); :math:`C` is the input's.

The result equals the dense target's (loss and input gradient, every reduction, weight), and
the target side costs :math:`O(\text{nnz})`, not :math:`O(N C)`.

**Soft margin loss.** With :math:`P_n` the stored entries of row :math:`n` and :math:`y` their
values (0 for every class not stored),

.. math::
    \ell_n = \frac{1}{C} \sum_{c} w_{nc} \bigl(\operatorname{softplus}(x_{nc}) - y_{nc} x_{nc}\bigr)
           = \underbrace{\frac{1}{C} \sum_{c} w_{nc} \operatorname{softplus}(x_{nc})}_{
             \text{the dense pass with a zero target}}
             - \frac{1}{C} \sum_{(n, c) \in P_n} w_{nc}\, y_{nc}\, x_{nc} .

The first term is the loss's own pass with a zero target (a stride-0 view of one 0-d zero,
never materialised: every backend reads it in place, the CPU's C kernel as one value read
once, so this pass costs what the dense target's does, less its reads of the target); the
second is an :math:`O(\text{nnz})` gather of the scores at the positives and a per-row sum
(:func:`soft_margin_correction`), differentiated by autograd (:math:`-w y / C` at each
positive). ``pos_weight`` :math:`p` and ``label_smoothing`` :math:`\varepsilon` keep this
form: the zero-target pass takes them as they are, and the correction becomes
:math:`w\,y(1 - \varepsilon)\,(p x - (p - 1) \operatorname{softplus}(x))` per positive. Duplicate
entries of a row **add up**, as in ``target.to_dense()``, so their values must sum to at most 1
(two hard labels for one class are an error).

Precision: the two terms are rounded apart, so the loss carries an absolute error of about
:math:`2^{-24} \cdot \frac{1}{C} \sum_c w \operatorname{softplus}(x)` in float32 (relative to
the loss, small unless the model is very confident), and the gradient at a positive an
absolute error of about :math:`2^{-24} w / C` (it is :math:`w(\sigma(x) - y)/C` computed as
:math:`w\sigma(x)/C - wy/C`). Where that matters, compute in float64.

**Margin loss.** The stored entries of each row become its list, in stored order (a class
stored twice is listed twice and counts twice, as in a dense -1-padded row), in a narrow
``(N, K + 1)`` target padded with -1 (:math:`K` the longest list; :func:`to_padded`): the
losses read a row only up to its first -1, so this is the dense target without its padding
columns, :math:`O(N K)`. A row may list at most :math:`C` entries. Every backend takes the
narrow target (the CPU's C kernel reads each row up to its first -1 or its :math:`K + 1`
entries, not the dense target's :math:`C`).

**Validation** (``validate=True``) reads the sparse structure only, :math:`O(\text{nnz})`
(plus a sort of the entries for the soft margin loss's duplicate check): indices in range, a
well-formed CSR row pointer, values allowed by the loss (soft margin: each in :math:`(0, 1]`
and the sum over a duplicated class at most 1; margin: exactly 1). Errors name the argument,
the convention and the fix. On a CUDA device the soft margin loss's check does not wait for the
device: as with dense targets, the loss turns NaN and :class:`~marginloss.errors.LabelError` is
raised by a later call or :func:`marginloss.check_labels`.

For fused heads (which never hold all the logits), :meth:`SparseTarget.columns` selects the
entries of one class chunk and :func:`soft_margin_correction` gives the chunk's correction
from the scores at those entries.

Examples:
    >>> import marginloss.functional as F
    >>> x = torch.tensor([[0.8, -1.5, 0.3], [0.1, 0.2, -0.4]])
    >>> positives = [torch.tensor([0, 2]), torch.tensor([1])]
    >>> dense = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    >>> F.multilabel_soft_margin_loss(x, positives, reduction="none")
    tensor([0.3756, 0.6185])
    >>> F.multilabel_soft_margin_loss(x, dense, reduction="none")
    tensor([0.3756, 0.6185])
    >>> rows, cols = torch.tensor([0, 0, 1]), torch.tensor([0, 2, 1])  # the same positives
    >>> # row 0: no active pair; row 1: (1 - (0.2 - 0.1)) + (1 - (0.2 + 0.4)) = 1.3, / C = 3
    >>> round(float(F.multilabel_margin_loss(x, (rows, cols))), 4)
    0.2167
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from marginloss import _checks, _deferred, _reduction
from marginloss.errors import DtypeError, LabelError, ShapeError

__all__ = [
    "SparseTarget",
    "count_problems",
    "is_sparse_target",
    "parse",
    "positive_scores",
    "raise_problems",
    "soft_margin_correction",
    "to_padded",
]

_INDEX_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_FORMS = (
    "a torch.sparse_csr tensor of shape (N, C), a list of N 1-D class-index tensors, or a "
    "(rows, cols) tuple of index tensors"
)


class SparseTarget(NamedTuple):
    """The stored entries of a sparse multi-label target, one per ``(row, col)`` pair.

    Attributes:
        rows: ``(nnz,)`` int64, the sample of each entry.
        cols: ``(nnz,)`` int64, its class.
        values: ``(nnz,)`` its label (CSR values), or None: every label is 1.
        shape: ``(N, C)``.
        form: ``"csr"``, ``"list"`` or ``"pair"`` (for messages).
        crow: ``(N + 1,)`` int64 row pointer when the entries are grouped by row (CSR, list),
            else None.
        lengths: Entries per row when known without reading values (the list form), else None.
    """

    rows: Tensor
    cols: Tensor
    values: Tensor | None
    shape: tuple[int, int]
    form: str
    crow: Tensor | None = None
    lengths: tuple[int, ...] | None = None

    @property
    def nnz(self) -> int:
        return self.cols.numel()

    def columns(self, start: int, stop: int) -> SparseTarget:
        """The entries with class in ``[start, stop)``, classes shifted by ``-start``: the
        target of one class chunk ``input[:, start:stop]`` (:math:`O(\\text{nnz})`)."""
        keep = (self.cols >= start) & (self.cols < stop)
        idx = keep.nonzero().reshape(-1)  # one read of the count (a device sync on a GPU)
        values = None if self.values is None else self.values[idx]
        return SparseTarget(self.rows[idx], self.cols[idx] - start, values,
                            (self.shape[0], stop - start), self.form)


def is_sparse_target(target: object) -> bool:
    """Whether ``target`` is in one of the sparse forms (metadata only): a sparse tensor, a
    list, or a tuple."""
    if isinstance(target, Tensor):
        return target.layout is not torch.strided
    return isinstance(target, list | tuple)


# ----------------------------------------------------------------------------------------------
# parsing: metadata only (shapes, dtypes, devices); no value is read


def parse(fn: str, target: object, input: Tensor) -> SparseTarget:
    """``target`` in one of the three sparse forms, for the ``(N, C)`` scores ``input``.

    Checks what metadata shows (form, shapes, dtypes, devices) and raises
    :class:`~marginloss.errors.ShapeError` / :class:`~marginloss.errors.DtypeError` naming the
    argument and the fix; values are checked by :func:`count_problems`.
    """
    _checks.check_input(fn, input)
    if input.dim() != 2:
        raise ShapeError(
            f"{fn}: a sparse `target` needs `input` of shape (N, C) (one row of class scores "
            f"per sample), got {_checks.shape_str(input)}. For one sample use "
            f"`input.unsqueeze(0)`."
        )
    n_rows, n_classes = input.shape
    if isinstance(target, Tensor):
        return _parse_csr(fn, target, input)
    if isinstance(target, tuple):
        if len(target) != 2:
            raise ShapeError(
                f"{fn}: a tuple `target` is the (rows, cols) pair of index tensors, but this "
                f"one has {len(target)} elements. For one index tensor per sample, pass a "
                f"list: `list(target)`."
            )
        return _parse_pair(fn, target, input)
    if isinstance(target, list):
        return _parse_list(fn, target, input)
    raise DtypeError(f"{fn}: `target` must be a torch.Tensor or {_FORMS}; got "
                     f"{type(target).__name__}.")


def _index_tensor(fn: str, t: object, what: str, input: Tensor) -> Tensor:
    """A 1-D (or 0-d) integer index tensor on the input's device, flattened to 1-D."""
    if not isinstance(t, Tensor):
        raise DtypeError(f"{fn}: {what} must be a torch.Tensor of class indices, got "
                         f"{type(t).__name__}. Build one with `torch.tensor(indices)`.")
    if t.layout is not torch.strided:
        raise DtypeError(f"{fn}: {what} must be a dense index tensor, got layout {t.layout}.")
    if t.dim() > 1:
        raise ShapeError(f"{fn}: {what} must be 1-D (a list of class indices), got shape "
                         f"{_checks.shape_str(t)}.")
    if t.dtype not in _INDEX_DTYPES and not (t.numel() == 0 and t.dtype != torch.bool):
        raise DtypeError(
            f"{fn}: {what} must hold integer class indices (int64 or int32), got {t.dtype}. "
            f"If these are whole numbers stored as floats, use `.long()`; a 0/1 mask row is "
            f"converted with `row.nonzero().flatten()`."
        )
    _checks.check_same_device(fn, what.strip("`"), t, input)
    return t.reshape(-1)


def _parse_list(fn: str, target: list, input: Tensor) -> SparseTarget:
    n_rows, n_classes = input.shape
    if len(target) != n_rows:
        hint = (" A (rows, cols) pair of index tensors must be passed as a tuple."
                if len(target) == 2 else "")
        raise ShapeError(
            f"{fn}: a list `target` holds one tensor of class indices per sample, so its "
            f"length must be the batch size {n_rows}; got {len(target)}.{hint}"
        )
    for i, t in enumerate(target):
        if not isinstance(t, Tensor):
            raise DtypeError(
                f"{fn}: a list `target` is read as one torch.Tensor of class indices per "
                f"sample, but `target[{i}]` is a {type(t).__name__}. Pass "
                f"`[torch.tensor(labels) for labels in target]` for index lists, or "
                f"`torch.tensor(target)` for a dense target."
            )
    parts = [_index_tensor(fn, t, f"`target[{i}]`", input) for i, t in enumerate(target)]
    lengths = tuple(p.numel() for p in parts)
    dev = input.device
    if parts:
        cols = torch.cat([p.to(torch.int64) for p in parts])
    else:
        cols = torch.empty(0, dtype=torch.int64, device=dev)
    counts = torch.tensor(lengths, dtype=torch.int64).to(dev, non_blocking=True)
    rows = torch.repeat_interleave(torch.arange(n_rows, device=dev), counts,
                                   output_size=cols.numel())
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=dev)
    torch.cumsum(counts, 0, out=crow[1:])
    return SparseTarget(rows, cols, None, (n_rows, n_classes), "list", crow, lengths)


def _parse_pair(fn: str, target: tuple, input: Tensor) -> SparseTarget:
    rows = _index_tensor(fn, target[0], "`target[0]` (the rows)", input)
    cols = _index_tensor(fn, target[1], "`target[1]` (the classes)", input)
    if rows.numel() != cols.numel():
        raise ShapeError(
            f"{fn}: the (rows, cols) pair must have one row index per class index, got "
            f"{rows.numel()} rows and {cols.numel()} classes."
        )
    return SparseTarget(rows.to(torch.int64), cols.to(torch.int64), None, tuple(input.shape),
                        "pair")


def _parse_csr(fn: str, target: Tensor, input: Tensor) -> SparseTarget:
    if target.layout is not torch.sparse_csr:
        fix = ("convert it with `target.to_sparse_csr()`" if target.layout is torch.sparse_coo
               else "convert it to torch.sparse_csr")
        raise DtypeError(f"{fn}: a sparse `target` must be a torch.sparse_csr tensor, got "
                         f"layout {target.layout}; {fix}.")
    if tuple(target.shape) != tuple(input.shape):
        raise ShapeError(
            f"{fn}: a sparse CSR `target` must have the input's shape "
            f"{_checks.shape_str(input)} (N samples, C classes), got "
            f"{_checks.shape_str(target)}."
        )
    _checks.check_real_tensor(fn, target, "target")
    _checks.check_same_device(fn, "target", target, input)
    _checks.check_no_grad(fn, "target", target)
    crow, cols, values = target.crow_indices(), target.col_indices(), target.values()
    n_rows, _ = input.shape
    crow = crow.to(torch.int64)
    # the row of each entry: the number of row ends at or before it (robust to a malformed
    # row pointer, which count_problems() reports)
    pos = torch.arange(cols.numel(), device=crow.device)
    rows = torch.searchsorted(crow[1:], pos, right=True).clamp_(max=max(n_rows - 1, 0))
    if values.dtype == torch.bool:
        values = values.to(torch.uint8)
    return SparseTarget(rows, cols.to(torch.int64), values, tuple(input.shape), "csr", crow)


# ----------------------------------------------------------------------------------------------
# validation: O(nnz) reads of the sparse structure


def count_problems(fn: str, st: SparseTarget, *, soft: bool) -> Tensor:
    """The number of problems in ``st`` as a 0-d int64 tensor on its device (no host read).

    Problems: a class outside ``[0, C)``, a row outside ``[0, N)`` (pair form), a malformed CSR
    row pointer, a value outside the loss's set (``soft``: :math:`(0, 1]`, else exactly 1), and
    for ``soft`` a duplicated class whose values sum above 1. :func:`raise_problems` turns a
    non-zero count into the error.
    """
    n_rows, n_classes = st.shape
    rows, cols = st.rows, st.cols
    bad = ((cols < 0) | (cols >= n_classes)).sum()
    if st.form == "pair":
        bad = bad + ((rows < 0) | (rows >= n_rows)).sum()
    if st.form == "csr":
        crow = st.crow
        bad = bad + (crow[0] != 0).to(torch.int64) + (crow[-1] != st.nnz).to(torch.int64)
        bad = bad + (crow.diff() < 0).sum()
    if st.values is not None:
        v = st.values
        ok = ((v > 0) & (v <= 1)) if soft else (v == 1)
        bad = bad + (~ok).sum()
    if soft and st.nnz > 1:
        bad = bad + _duplicate_excess(st).sum()
    return bad


def _sorted_keys(st: SparseTarget) -> tuple[Tensor, Tensor]:
    """The entries' ``row * C + col`` keys, sorted, and the order that sorts them."""
    n_rows, n_classes = st.shape
    rows = st.rows.clamp(0, max(n_rows - 1, 0))
    cols = st.cols.clamp(0, max(n_classes - 1, 0))
    return (rows * max(n_classes, 1) + cols).sort(stable=True)


def _duplicate_excess(st: SparseTarget) -> Tensor:
    """Per entry: 1 where it starts a run of duplicates whose values (1 each when there are
    none) sum above 1, else 0. Sums in the values' dtype, as ``to_dense()``."""
    keys, order = _sorted_keys(st)
    start = torch.ones_like(keys, dtype=torch.bool)
    start[1:] = keys[1:] != keys[:-1]
    seg = torch.cumsum(start, 0) - 1
    v = (torch.ones(st.nnz, dtype=torch.float32, device=keys.device) if st.values is None
         else st.values[order])
    sums = torch.zeros(st.nnz, dtype=v.dtype, device=keys.device).index_add_(0, seg, v)
    return (sums > 1) & start


def raise_problems(fn: str, st: SparseTarget, *, soft: bool) -> None:
    """Raise the :class:`~marginloss.errors.LabelError` (or ``ShapeError`` for a malformed CSR
    tensor) that describes ``st``'s first problem; reads values (for the message)."""
    n_rows, n_classes = st.shape
    rows, cols = st.rows, st.cols
    where = {"csr": "the CSR `target`", "list": "the list `target`",
             "pair": "the (rows, cols) `target`"}[st.form]
    if st.form == "csr":
        crow = st.crow
        if int(crow[0]) != 0 or int(crow[-1]) != st.nnz or bool((crow.diff() < 0).any()):
            raise ShapeError(
                f"{fn}: {where} has a malformed row pointer (crow_indices must start at 0, never "
                f"decrease and end at nnz={st.nnz}). Build it with `marginloss.labels."
                f"sets_to_csr` or `mask.to_sparse_csr()`, or construct it with "
                f"check_invariants=True."
            )
    if st.form == "pair":
        out = (rows < 0) | (rows >= n_rows)
        if bool(out.any()):
            i = int(out.nonzero()[0, 0])
            raise LabelError(
                f"{fn}: {where} has row index {int(rows[i])} at entry {i}, outside [0, {n_rows}) "
                f"for a batch of {n_rows} samples. Pass validate=False to skip this check."
            )
    out = (cols < 0) | (cols >= n_classes)
    if bool(out.any()):
        i = int(out.nonzero()[0, 0])
        c = int(cols[i])
        hint = (" -1 is padding in dense index lists; sparse forms list only the positives: "
                "drop the -1 entries." if c == -1 else
                " If your classes are numbered from 1, subtract 1." if c == n_classes else "")
        raise LabelError(
            f"{fn}: {where} has class {c} in sample {int(rows[i])}, outside [0, {n_classes}) "
            f"for the input's C = {n_classes} classes.{hint} Pass validate=False to skip this "
            f"check (out-of-range classes then give undefined results)."
        )
    if st.values is not None:
        v = st.values
        ok = ((v > 0) & (v <= 1)) if soft else (v == 1)
        if not bool(ok.all()):
            seen = _checks.values_preview(v[~ok])
            if soft:
                fix = ("Every stored entry is a positive label with a value in (0, 1] (soft "
                       "labels allowed); classes that are not stored have label 0, so drop "
                       "stored zeros, and threshold or rescale scores.")
            else:
                fix = ("This loss takes hard labels: every stored entry is a positive class "
                       "with value 1 (use `torch.ones_like(target.values())`), and classes that "
                       "are not stored are negatives.")
            raise LabelError(f"{fn}: {where} stores values {seen}. {fix} Pass validate=False "
                             f"to skip this check.")
    if soft and st.nnz > 1:
        excess = _duplicate_excess(st)
        if bool(excess.any()):
            keys, _ = _sorted_keys(st)
            key = int(keys[int(excess.nonzero()[0, 0])])
            r, c = divmod(key, max(n_classes, 1))
            raise LabelError(
                f"{fn}: {where} stores class {c} of sample {r} more than once, and duplicates "
                f"add up (as in `to_dense()`) to a label above 1. Store each positive once "
                f"(e.g. `torch.unique` per sample); soft duplicates may split a label of at "
                f"most 1. Pass validate=False to skip this check."
            )
    raise LabelError(f"{fn}: {where} breaks the sparse target convention.")  # pragma: no cover


class _Check(NamedTuple):
    """What :mod:`marginloss._deferred` needs to raise a sparse target's error later (on a GPU
    the check does not wait for the device): ``check_labels(call)`` raises it."""

    name: str
    convention: str
    soft: bool

    def check_labels(self, st: SparseTarget) -> None:
        raise_problems(self.name, st, soft=self.soft)


def _check_now(fn: str, st: SparseTarget, soft: bool, input: Tensor) -> bool:
    """Validate ``st`` now where that costs no wait for a device (the CPU, or while compiling):
    raise on a problem. Returns whether the check is left for :func:`_check_later`."""
    if not input.is_cpu and not torch.compiler.is_compiling():
        return True
    if int(count_problems(fn, st, soft=soft)):
        raise_problems(fn, st, soft=soft)
    return False


def _check_later(fn: str, st: SparseTarget, soft: bool, loss: Tensor) -> Tensor:
    """On a GPU: ``loss``, NaN where ``st`` has a problem; the error is raised by a later call
    or :func:`marginloss.check_labels` (no host synchronisation)."""
    bad = count_problems(fn, st, soft=soft)
    return _deferred.defer(_Check(fn, _FORMS, soft), st, loss, bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# the O(nnz) pieces of the losses


def positive_scores(input: Tensor, st: SparseTarget) -> Tensor:
    """``input[rows, cols]``: the ``(nnz,)`` scores at the stored entries (differentiable; indices
    clamped into range, so unchecked targets stay memory-safe)."""
    n_rows, n_classes = input.shape
    if st.nnz == 0 or n_rows == 0 or n_classes == 0:
        return input.new_zeros(0) if st.nnz == 0 else input.new_zeros(st.nnz)
    return input[st.rows.clamp(0, n_rows - 1), st.cols.clamp(0, n_classes - 1)]


def soft_margin_correction(scores: Tensor, st: SparseTarget, weight: Tensor | None = None, *,
                           pos_weight: Tensor | None = None, label_smoothing: float = 0.0,
                           per_row: bool = True, dtype: torch.dtype | None = None) -> Tensor:
    r"""What the positives take off the zero-target loss, times :math:`C`: per row ``(N,)`` (or
    in all, 0-d, with ``per_row=False``), from the scores at the entries
    (:func:`positive_scores`, or a head's own). Differentiable in ``scores``.

    .. math::
        \sum_{(n, c) \in P_n} w_{nc}\, \Delta t_{nc} \bigl(p_c\, x_{nc}
        - (p_c - 1) \operatorname{softplus}(x_{nc})\bigr), \qquad
        \Delta t = y (1 - \varepsilon),

    with :math:`p` the ``pos_weight`` (1: the term is :math:`w y x`) and :math:`\varepsilon` the
    ``label_smoothing``: the per-element loss :math:`w[(1 + (p - 1) t) \operatorname{softplus}(x)
    - p t x]` is affine in the smoothed label :math:`t`, which the positives raise by
    :math:`\Delta t` above the zero target's :math:`\varepsilon / 2`.

    ``weight`` broadcasts to ``(N, C)`` (per class ``(C,)``, per sample ``(N, 1)``, or full),
    ``pos_weight`` likewise (usually ``(C,)``). ``dtype``: the dtype of the sums (default: the
    scores').
    """
    dtype = dtype or scores.dtype
    n_rows, n_classes = st.shape
    x = scores.to(dtype)
    at = None
    if st.nnz and (weight is not None or pos_weight is not None):
        at = (st.rows.clamp(0, max(n_rows - 1, 0)), st.cols.clamp(0, max(n_classes - 1, 0)))
    if pos_weight is None:
        terms = x
    else:
        p = pos_weight.expand(n_rows, n_classes)[at].to(dtype) if at else x.new_ones(0)
        # softplus(x) = log(e^x + 1), stable, with the gradient sigmoid(x) everywhere
        terms = p * x - (p - 1) * torch.logaddexp(x, x.new_zeros(()))
    coef = None if st.values is None else st.values.to(dtype)
    if label_smoothing:
        coef = (1.0 - label_smoothing) if coef is None else coef * (1.0 - label_smoothing)
    if coef is not None:
        terms = terms * coef
    if weight is not None and at:
        terms = terms * weight.expand(n_rows, n_classes)[at].to(dtype)
    if not per_row:
        return terms.sum()
    rows = st.rows.clamp(0, max(n_rows - 1, 0))  # unchecked targets stay in bounds
    return torch.zeros(n_rows, dtype=dtype, device=scores.device).index_add(0, rows, terms)


def to_padded(st: SparseTarget, dtype: torch.dtype = torch.int64) -> Tensor:
    """The narrow ``(N, W)`` -1-padded index target, ``W = min(K + 1, C)`` with :math:`K` the
    longest row: row ``n`` lists its entries in stored order (pair form: in the order given),
    then -1. Reads :math:`K` from the device unless the lengths are known (list form)."""
    n_rows, n_classes = st.shape
    dev = st.cols.device
    if st.lengths is not None:
        k_max = max(st.lengths, default=0)
        crow = st.crow
        rows, cols = st.rows, st.cols
    else:
        if st.crow is not None:
            crow, rows, cols = st.crow, st.rows, st.cols
        else:  # pair form: group the entries by row (stable: the given order within a row)
            rows, order = st.rows.clamp(0, max(n_rows - 1, 0)).sort(stable=True)
            cols = st.cols[order]
            crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=dev)
            crow[1:] = torch.bincount(rows, minlength=n_rows)[:n_rows].cumsum(0)
        k_max = int(crow.diff().max()) if n_rows else 0
    width = max(1, min(k_max + 1, n_classes))
    out = torch.full((n_rows, width), -1, dtype=dtype, device=dev)
    if st.nnz:
        slot = torch.arange(st.nnz, device=dev) - crow[rows]
        keep = slot < width  # a row of more than C entries is cut at C (validation reports it)
        # (classes clamped into range: unchecked targets give undefined but memory-safe results)
        out[rows[keep], slot[keep]] = cols[keep].clamp(0, max(n_classes - 1, 0)).to(dtype)
    return out


# ----------------------------------------------------------------------------------------------
# the two losses (called by marginloss.functional for sparse targets)


def multilabel_soft_margin_loss(input: Tensor, target, weight: Tensor | None = None,
                                size_average=None, reduce=None, reduction: str = "mean", *,
                                validate: bool = True, backend: str = "auto",
                                pos_weight: Tensor | None = None,
                                label_smoothing: float = 0.0) -> Tensor:
    """:func:`marginloss.functional.multilabel_soft_margin_loss` for a sparse ``target``: the
    dense pass with a zero target minus the positives' correction (module docstring)."""
    from marginloss import functional

    fn = "multilabel_soft_margin_loss"
    st = parse(fn, target, input)
    if size_average is not None or reduce is not None or reduction not in _reduction.REDUCTIONS:
        reduction = _reduction.resolve(size_average, reduce, reduction, fn)
    later = validate and _check_now(fn, st, True, input)
    n_rows, n_classes = st.shape
    # the dtype the dense target would give: a float CSR's values promote, index forms do not
    out = input.dtype
    if st.values is not None and st.values.is_floating_point():
        out = _checks.promote_float(out, st.values.dtype)
    if isinstance(weight, Tensor) and weight.dim() > 0:
        out = _checks.promote_float(out, weight.dtype)
    acc = torch.float64 if out == torch.float64 else torch.float32
    # the dense pass in the accumulation dtype (float16 scores give a float32 loss here), so
    # that the difference below is taken before the one rounding to the output dtype. Every
    # backend reads the stride-0 zero in place (the CPU's C kernel as one value).
    zero = torch.zeros((), dtype=acc, device=input.device).expand(n_rows, n_classes)
    loss = functional.multilabel_soft_margin_loss(
        input, zero, weight, reduction=reduction, validate=validate, backend=backend,
        pos_weight=pos_weight, label_smoothing=label_smoothing)
    if st.nnz:
        corr = soft_margin_correction(positive_scores(input, st), st, weight,
                                      pos_weight=pos_weight, label_smoothing=label_smoothing,
                                      per_row=reduction == "none", dtype=acc)
        loss = loss - corr * (1.0 / (n_classes * n_rows) if reduction == "mean"
                              else 1.0 / n_classes)
    if later:
        loss = _check_later(fn, st, True, loss)
    return loss.to(out)


def multilabel_margin_loss(input: Tensor, target, size_average=None, reduce=None,
                           reduction: str = "mean", *, validate: bool = True,
                           backend: str = "auto") -> Tensor:
    """:func:`marginloss.functional.multilabel_margin_loss` for a sparse ``target``: the dense
    loss on the narrow -1-padded target of :func:`to_padded` (module docstring). The check reads
    the structure on every device (building the target reads the longest row anyway)."""
    from marginloss import functional

    fn = "multilabel_margin_loss"
    padded = margin_lists(fn, parse(fn, target, input), validate)
    return functional.multilabel_margin_loss(input, padded, size_average, reduce, reduction,
                                             validate=False, backend=backend)


def margin_lists(fn: str, st: SparseTarget, validate: bool) -> Tensor:
    """The margin loss's narrow -1-padded lists of ``st`` (:func:`to_padded`, :math:`O(N K)`),
    checked first when ``validate``: indices in range and values 1 (:func:`raise_problems`),
    and no row listing more than :math:`C` entries (a class listed twice). The check reads the
    structure on every device (building the lists reads the longest row anyway)."""
    if validate and int(count_problems(fn, st, soft=False)):
        raise_problems(fn, st, soft=False)
    padded = to_padded(st)
    if validate and st.nnz and padded.shape[1] == st.shape[1]:
        longest = int((st.crow.diff() if st.crow is not None else
                       torch.bincount(st.rows, minlength=st.shape[0])).max())
        if longest > st.shape[1]:
            raise LabelError(
                f"{fn}: a sample of the sparse `target` lists {longest} entries, more than the "
                f"C = {st.shape[1]} classes, so it lists a class more than once (each listing "
                f"counts, as in a dense -1-padded row, which has room for C). Drop the "
                f"duplicates (e.g. `torch.unique` per sample)."
            )
    return padded
