"""The decision guide: which loss fits these labels, how to convert them, and why.

The margin-family losses differ mostly in the *label convention* they take, and torch accepts
the wrong one without an error. The guide answers in two steps:

1. :func:`describe` names the convention a target is in, from its dtype, shape and set of
   values, with the evidence and the other conventions the same values could be in
   (a :class:`LabelDescription`; :data:`CONVENTIONS` lists them all);
2. :func:`recommend` names the loss that fits that convention, the one line of code that
   converts the target for it, why, and an alternative (a :class:`Recommendation`).

In short:

* binary, one label per sample, {0, 1} -> ``BCEWithLogitsLoss``
  (margin alternative: ``SoftMarginLoss`` after ``labels.to_pm1``);
* binary, ±1 -> ``SoftMarginLoss`` (alternative: ``BCEWithLogitsLoss`` after ``labels.to_01``);
* multi-label 0/1 mask, hard or soft -> ``MultiLabelSoftMarginLoss``
  (ranking alternative for hard masks: ``MultiLabelMarginLoss`` after
  ``labels.multi_hot_to_padded``);
* multi-class, one class index per sample -> ``MultiMarginLoss``
  (probabilistic alternative: ``CrossEntropyLoss``);
* multi-label, -1-padded index lists -> ``MultiLabelMarginLoss``
  (alternative: ``MultiLabelSoftMarginLoss`` after ``labels.padded_to_multi_hot``);
* one-hot rows, label sets and sparse CSR rows are converted to the nearest of these.

:func:`recommend` is a walk down two ordered tables. The *conflicts* come first: a target in no
convention, or a hint (``multi_label``, ``num_classes``) that the values contradict, raises a
:class:`~marginloss.errors.LabelError`. Then the *rules*: each names the conventions it applies
to, a condition on the hints, the loss, the conversion, the explanation and the alternative;
the first rule that matches is the recommendation, so a specific rule (a hint, a preference)
sits above the general rule for its convention.

Examples:
    >>> describe(torch.tensor([3, 0, 2])).convention
    'class_indices'
    >>> rec = recommend(torch.tensor([0, 1, 1, 0]), prefer="margin")
    >>> rec.loss, rec.code
    ('SoftMarginLoss', 'target = marginloss.labels.to_pm1(target)')
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from marginloss import labels
from marginloss.errors import DtypeError, LabelError
from marginloss.labels import _as_sets, _value_set, _values_preview

__all__ = ["CONVENTIONS", "LabelDescription", "Recommendation", "describe", "recommend"]

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


def describe(target: object) -> LabelDescription:
    """Name the label convention ``target`` is in, with the evidence (dtype, shape, values).

    The rules read the dtype, the shape and the set of values: {0, 1} with one label per
    sample is binary; only ±1 is a sign per score; non-negative integers with one per sample
    are class indices; (N, C) rows of 0/1 are one-hot (exactly one 1 per row) or multi-hot;
    values in [0, 1] are soft labels; integer rows whose -1 entries all trail are -1-padded
    index lists. When the values fit several conventions (a 1-D tensor of 0s and 1s could also
    be two-class indices), the most common reading is chosen and the others are listed in
    ``alternatives``; :func:`recommend` takes hints that settle them.

    Args:
        target: A tensor (dense or ``torch.sparse_csr``), a NumPy array, or a list of label
            collections (e.g. ``[{0, 3}, {1}]``).

    Returns:
        A :class:`LabelDescription`. Values in no convention (scores, NaN, negative numbers)
        give the convention ``"unknown"``, a target without elements ``"empty"``.

    Raises:
        DtypeError: ``target`` cannot be read as numbers (strings, arbitrary objects), or is
            complex.

    Examples:
        >>> d = describe(torch.tensor([0, 1, 1, 0]))
        >>> d.convention, d.alternatives
        ('binary_01', ('class_indices', 'multi_hot'))
        >>> describe(torch.tensor([1.0, -1.0])).convention
        'binary_pm1'
        >>> describe(torch.tensor([[1, 0, 1], [0, 1, 0]])).convention
        'multi_hot'
        >>> describe([{0, 3}, {1}]).num_classes
        4
        >>> print(describe(torch.tensor([[2, 0, -1], [1, -1, -1]])))
        class-index lists padded with -1 ... [padded_indices]: dtype torch.int64, shape (2, 3), ...
    """
    if isinstance(target, list | tuple) and _holds_label_sets(target):
        return _describe_sets(_as_sets("describe", target))
    if not isinstance(target, Tensor):
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


def _holds_label_sets(rows: list | tuple) -> bool:
    """Sets among the rows, or rows of different lengths: label sets, not a table."""
    return any(isinstance(r, set | frozenset) for r in rows) or len(
        {len(r) if isinstance(r, Sequence | Tensor) else -1 for r in rows}) > 1


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


def _is_integral(t: Tensor) -> bool:
    """True for integer/bool dtypes, or a float tensor holding only whole numbers (no NaN)."""
    if not t.is_floating_point():
        return True
    return bool(torch.isfinite(t).all()) and bool((t == t.round()).all())


def _trailing_padding(t: Tensor) -> bool:
    """True when, in every row, the -1 entries form a suffix (and there is at least one)."""
    rows = t.reshape(-1, t.shape[-1])
    neg = rows == -1
    if not bool(neg.any()):
        return False
    # After the first -1 of a row, every entry must be -1.
    after_first = neg.to(torch.int64).cummax(dim=-1).values.bool()
    return bool((after_first == neg).all())


# ----------------------------------------------------------------------------------------------
# the recommendation


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    """The loss that fits a target, how to convert the target for it, and why.

    ``print(rec)`` gives the whole report: the convention with its evidence, the loss, why, the
    line that converts the target, the line that builds the loss, and the alternative.

    Attributes:
        loss: Class name of the loss (``"SoftMarginLoss"``, ``"BCEWithLogitsLoss"``, ...).
        module: Where ``loss`` lives: ``"marginloss"`` or ``"torch.nn"``.
        convert: A callable that brings the target into ``loss``'s convention, or None when the
            target is already in it.
        code: The line of code that converts the target (a comment when none is needed).
        reason: Why, in sentences, ambiguities included.
        alternative: Another loss that fits, with what it needs, or None.
        description: The :class:`LabelDescription` behind the choice (the convention, the
            evidence, the other conventions the values could be in).
    """

    loss: str
    module: str
    convert: Callable[[Any], Tensor] | None
    code: str
    reason: str
    alternative: str | None
    description: LabelDescription

    @property
    def convention(self) -> str:
        """The convention the target was found in (a key of :data:`CONVENTIONS`)."""
        return self.description.convention

    @property
    def loss_code(self) -> str:
        """The line that builds the loss, e.g. ``loss_fn = marginloss.SoftMarginLoss()``."""
        return f"loss_fn = {self.module}.{self.loss}()"

    def __str__(self) -> str:
        d = self.description
        lines = [f"convention:  {d.summary} [{d.convention}]",
                 f"evidence:    dtype {d.dtype}, shape {d.shape}, values {d.values}. "
                 f"{d.evidence}"]
        if d.alternatives:
            lines.append("could be:    " + "; ".join(CONVENTIONS[a] for a in d.alternatives))
        lines += [f"loss:        {self.module}.{self.loss}",
                  f"why:         {self.reason}",
                  f"convert:     {self.code}",
                  f"then:        {self.loss_code}"]
        if self.alternative:
            lines.append(f"alternative: {self.alternative}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# what the rules read: the description and the hints


@dataclass(frozen=True)
class _Case:
    """A target's description and the caller's hints: everything a rule's condition and texts
    read. The text properties are the variable parts of the reasons (``{q.seen}`` etc.)."""

    desc: LabelDescription
    multi_label: bool | None
    num_classes: int | None
    prefer: str

    @property
    def convention(self) -> str:
        return self.desc.convention

    @property
    def margin(self) -> bool:
        return self.prefer == "margin"

    @property
    def probabilistic(self) -> bool:
        return self.prefer == "probabilistic"

    @property
    def is_1d(self) -> bool:
        return len(self.desc.shape) == 1

    @property
    def width(self) -> int:
        """The size of the last dimension: the classes of a row."""
        return self.desc.shape[-1]

    @property
    def per_class(self) -> bool:
        """(N, C) with C > 1: one label per class."""
        return len(self.desc.shape) == 2 and self.desc.shape[-1] > 1

    @property
    def column(self) -> bool:
        """(N, 1): one label per sample, in a column."""
        return len(self.desc.shape) == 2 and self.desc.shape[-1] == 1

    @property
    def classes(self) -> int:
        """The number of classes: the hint, else what the labels imply (a lower bound)."""
        return self.num_classes or self.desc.num_classes or 1

    @property
    def max_label(self) -> int:
        """The largest class index in the target."""
        return (self.desc.num_classes or 0) - 1

    @property
    def exceeds_num_classes(self) -> bool:
        """A class index >= the ``num_classes`` hint."""
        return (self.num_classes is not None and bool(self.desc.num_classes)
                and self.desc.num_classes > self.num_classes)

    # text the templates quote ------------------------------------------------------------------

    @property
    def seen(self) -> str:
        d = self.desc
        return f"The target ({d.dtype}, shape {d.shape}, values {d.values})"

    @property
    def binary_hints(self) -> str:
        """For 1-D {0, 1} values without hints: the other readings and the hints that settle
        them."""
        if self.is_1d and self.multi_label is None and self.num_classes is None:
            return (" The same values could be class indices of a two-class model (pass "
                    "num_classes=2) or one sample's multi-hot row (pass multi_label=True).")
        return ""

    @property
    def pm1_padding_note(self) -> str:
        if not self.desc.alternatives:
            return ""
        return (" (Integer rows of -1 and 1 whose -1s all trail could also be -1-padded index "
                "lists of class 1 only; pass multi_label=True if that is what they are.)")

    @property
    def index_kind(self) -> str:
        """The first clause of the evidence, e.g. ``whole numbers from 0 to 3, one per
        sample``."""
        return self.desc.evidence.split(":")[0].lower()

    @property
    def outputs_bound(self) -> str:
        if self.num_classes is not None:
            return ""
        return f"; the model needs at least {self.desc.num_classes} outputs"

    @property
    def evidence_clause(self) -> str:
        """The evidence without its final period."""
        return self.desc.evidence[:-1]

    @property
    def padding_caveat(self) -> str:
        if not self.desc.alternatives:
            return ""
        return (" Some -1 entries come before class indices; torch (and marginloss) read each "
                "row only up to its first -1.")

    @property
    def soft(self) -> str:
        return "" if self.convention == "multi_hot" else "soft "

    @property
    def inferred_classes_note(self) -> str:
        if self.num_classes is not None:
            return ""
        return (f" num_classes was not given; {self.classes} is the largest label + 1, a lower "
                f"bound: pass num_classes=C for the width of the model's output.")


# ----------------------------------------------------------------------------------------------
# conversions: a callable and the line of code that does the same


@dataclass(frozen=True)
class _Conversion:
    fn: Callable[[Any], Tensor] | None
    code: str


def _long(target: Tensor) -> Tensor:
    """Class indices stored as floats (or narrow ints) as int64."""
    return target.long()


def _flatten_long(target: Tensor) -> Tensor:
    """Per-position class indices (N, d1, ...) as one int64 index per position."""
    return target.reshape(-1).long()


def _float_labels(target: Tensor) -> Tensor:
    """Labels as torch's default float dtype (BCEWithLogitsLoss needs float targets)."""
    if target.is_floating_point():
        return target
    return target.to(torch.get_default_dtype())


_KEEP = _Conversion(None, "# no conversion needed: the target is already in this loss's "
                          "convention")
_TO_PM1 = _Conversion(labels.to_pm1, "target = marginloss.labels.to_pm1(target)")
_TO_01 = _Conversion(labels.to_01, "target = marginloss.labels.to_01(target)")
_FLOAT = _Conversion(_float_labels, "target = target.float()")
_ONE_HOT_TO_INDICES = _Conversion(labels.one_hot_to_indices,
                                  "target = marginloss.labels.one_hot_to_indices(target)")
_PADDED_TO_MULTI_HOT = _Conversion(labels.padded_to_multi_hot,
                                   "target = marginloss.labels.padded_to_multi_hot(target)")
_CSR_TO_MULTI_HOT = _Conversion(labels.csr_to_multi_hot,
                                "target = marginloss.labels.csr_to_multi_hot(target)")


def _to_pm1(q: _Case) -> _Conversion:
    if q.column:
        return _Conversion(labels.to_pm1, _TO_PM1.code + "  # keep the (N, 1) shape of the "
                                                         "model's output")
    return _TO_PM1


def _float_unless_float(q: _Case) -> _Conversion:
    if q.desc.dtype.startswith("torch.float"):
        return _KEEP
    return _Conversion(_float_labels, _FLOAT.code + "  # BCEWithLogitsLoss needs float labels")


def _class_indices(q: _Case) -> _Conversion:
    if len(q.desc.shape) > 1:
        return _Conversion(_flatten_long,
                           "target = target.reshape(-1).long()  # and input.reshape(-1, C)")
    if q.desc.dtype == "torch.int64":
        return _KEEP
    return _Conversion(_long, "target = target.long()")


def _sets_to_multi_hot(q: _Case) -> _Conversion:
    return _Conversion(functools.partial(labels.sets_to_multi_hot, num_classes=q.classes),
                       f"target = marginloss.labels.sets_to_multi_hot(target, "
                       f"num_classes={q.classes})")


# ----------------------------------------------------------------------------------------------
# the tables

_Condition = Callable[[_Case], bool]


def _always(q: _Case) -> bool:
    return True


@dataclass(frozen=True)
class _Conflict:
    """Values in no convention, or a hint they contradict: ``recommend`` raises LabelError
    ``"recommend: {q.seen} " + message``."""

    conventions: tuple[str, ...]
    when: _Condition
    message: str  # a str.format template over q (the _Case)


@dataclass(frozen=True)
class _Rule:
    """One row of the guide: where it applies, and what it recommends there.

    ``reason`` and ``alternative`` are ``str.format`` templates over ``q`` (the :class:`_Case`)
    and ``loss`` (the loss's class name); ``convert`` is a conversion, or a function of the
    case that returns one.
    """

    conventions: tuple[str, ...]
    when: _Condition
    loss: str  # qualified: "marginloss.SoftMarginLoss", "torch.nn.BCEWithLogitsLoss"
    convert: _Conversion | Callable[[_Case], _Conversion]
    reason: str
    alternative: str


_CONFLICTS: tuple[_Conflict, ...] = (
    _Conflict(("unknown", "empty"), _always,
              "is in no label convention: {q.desc.evidence} Pass the labels (targets), not the "
              "model's scores."),
    _Conflict(("class_indices",), lambda q: q.multi_label is True,
              "holds one class index per sample, but multi_label=True was passed. For several "
              "labels per sample, give a (N, C) 0/1 mask, -1-padded index lists, or a list of "
              "label sets."),
    _Conflict(("class_indices",), lambda q: q.exceeds_num_classes and q.max_label == q.num_classes,
              "holds class index {q.max_label}, which does not fit num_classes={q.num_classes} "
              "(if classes are numbered from 1, use target - 1)."),
    _Conflict(("class_indices",), lambda q: q.exceeds_num_classes,
              "holds class index {q.max_label}, which does not fit num_classes={q.num_classes}."),
    _Conflict(("multi_hot", "soft_multi_hot"), lambda q: q.multi_label is False,
              "has rows with several labels (or soft labels), but multi_label=False was passed. "
              "For one class per sample, give class indices (target.argmax(-1))."),
    _Conflict(("padded_indices",), lambda q: q.multi_label is False,
              "holds -1-padded class-index lists (several labels per sample), but "
              "multi_label=False was passed."),
    _Conflict(("padded_indices",), lambda q: q.num_classes not in (None, q.width),
              "has rows of width {q.width}, but MultiLabelMarginLoss needs one column per class "
              "(num_classes={q.num_classes}). Rebuild it with marginloss.labels.sets_to_padded("
              "marginloss.labels.padded_to_sets(target), num_classes={q.num_classes})."),
    _Conflict(("sparse_csr", "label_sets"), lambda q: q.multi_label is False,
              "holds label sets (multi-label), but multi_label=False was passed."),
    _Conflict(("sparse_csr",), lambda q: q.num_classes not in (None, q.width),
              "has {q.width} columns but num_classes={q.num_classes}."),
    _Conflict(("label_sets",), lambda q: q.exceeds_num_classes,
              "holds class {q.max_label}, which does not fit num_classes={q.num_classes}."),
)

_CLASS_INDICES_WHY = ("{q.seen} holds one class index per sample ({q.index_kind}){q.outputs_bound}"
                      ": the convention of {loss}, with input of shape (N, {q.classes}).")
_BINARY_AS_INDICES_WHY = (
    "{q.seen} holds only 0 and 1; with num_classes={q.num_classes} they are read as class "
    "indices for a model with {q.num_classes} outputs. (With one output per sample, pass "
    "num_classes=1 and use BCEWithLogitsLoss or SoftMarginLoss.)")
_ONE_HOT_WHY = (
    "{q.seen} holds one-hot rows (exactly one 1 per row), so one class per sample: {loss} takes "
    "the class indices, target.argmax(-1). If a sample can have several labels and these rows "
    "just happen to have one, pass multi_label=True (MultiLabelSoftMarginLoss takes the mask as "
    "it is).")
_MULTI_HOT_WHY = ("{q.seen} is a {q.soft}multi-hot mask: {q.evidence_clause}; the convention "
                  "MultiLabelSoftMarginLoss takes")

# The guide, in order: the first rule whose conventions include the target's and whose
# condition holds is the recommendation. Within a convention, hints come first, then the
# preference, then the default.
_RULES: tuple[_Rule, ...] = (
    # ---- binary {0, 1}, and its other readings ----------------------------------------------
    _Rule(("binary_01",), lambda q: q.is_1d and q.multi_label is True,
          "marginloss.MultiLabelSoftMarginLoss", _KEEP,
          "{q.seen} was read as one sample's multi-hot row over {q.width} classes, as "
          "multi_label=True says; MultiLabelSoftMarginLoss takes it with input of shape "
          "({q.width},). For a batch, stack the rows into (N, C).",
          "MultiLabelMarginLoss after marginloss.labels.multi_hot_to_padded (a ranking loss)"),
    _Rule(("binary_01",), lambda q: q.is_1d and (q.num_classes or 0) >= 2 and q.probabilistic,
          "torch.nn.CrossEntropyLoss", _class_indices, _BINARY_AS_INDICES_WHY,
          "MultiMarginLoss (multi-class hinge)"),
    _Rule(("binary_01",), lambda q: q.is_1d and (q.num_classes or 0) >= 2,
          "marginloss.MultiMarginLoss", _class_indices, _BINARY_AS_INDICES_WHY,
          "CrossEntropyLoss (probabilistic: softmax + log-loss)"),
    _Rule(("binary_01",), lambda q: q.margin,
          "marginloss.SoftMarginLoss", _to_pm1,
          "{q.seen} holds binary labels in {{0, 1}}. SoftMarginLoss takes ±1, so convert them "
          "with to_pm1 (2 * target - 1): passed as 0/1, a 0 label gives log 2 whatever the "
          "score and the negatives teach the model nothing.{q.binary_hints}",
          "BCEWithLogitsLoss (takes {{0, 1}} directly; the same logistic loss)"),
    _Rule(("binary_01",), _always,
          "torch.nn.BCEWithLogitsLoss", _float_unless_float,
          "{q.seen} holds binary labels in {{0, 1}}, one per sample: BCEWithLogitsLoss takes "
          "them directly (as floats).{q.binary_hints}",
          "SoftMarginLoss after marginloss.labels.to_pm1(target) (the margin form, the same "
          "logistic loss on ±1 labels)"),
    # ---- binary ±1 -----------------------------------------------------------------------------
    _Rule(("binary_pm1",), lambda q: (q.multi_label is True and q.per_class
                                      and "padded_indices" in q.desc.alternatives),
          "marginloss.MultiLabelMarginLoss", _KEEP,
          "{q.seen} was read as -1-padded class-index lists, as multi_label=True says.",
          "MultiLabelSoftMarginLoss after marginloss.labels.padded_to_multi_hot"),
    _Rule(("binary_pm1",), lambda q: q.multi_label is True and q.per_class,
          "marginloss.MultiLabelSoftMarginLoss", _TO_01,
          "{q.seen} holds one ±1 label per class (multi-label). MultiLabelSoftMarginLoss takes "
          "them as a 0/1 mask (to_01); on ±1 labels, SoftMarginLoss computes the same mean loss "
          "directly.",
          "SoftMarginLoss (takes the ±1 labels as they are)"),
    _Rule(("binary_pm1",), lambda q: q.probabilistic,
          "torch.nn.BCEWithLogitsLoss", _TO_01,
          "{q.seen} holds ±1 labels; BCEWithLogitsLoss takes {{0, 1}}, so convert with to_01 "
          "((target + 1) / 2).{q.pm1_padding_note}",
          "SoftMarginLoss (takes ±1 directly)"),
    _Rule(("binary_pm1",), lambda q: q.per_class,
          "marginloss.SoftMarginLoss", _KEEP,
          "{q.seen} holds one ±1 label per class: the convention SoftMarginLoss takes "
          "(log(1 + exp(-y x)) per element).{q.pm1_padding_note}",
          "MultiLabelSoftMarginLoss after marginloss.labels.to_01 (per-class weights)"),
    _Rule(("binary_pm1",), _always,
          "marginloss.SoftMarginLoss", _KEEP,
          "{q.seen} holds binary labels in {{-1, +1}}: the convention SoftMarginLoss takes "
          "(log(1 + exp(-y x)) per element).{q.pm1_padding_note}",
          "BCEWithLogitsLoss after marginloss.labels.to_01(target)"),
    # ---- soft binary -----------------------------------------------------------------------------
    _Rule(("soft_binary",), _always,
          "torch.nn.BCEWithLogitsLoss", _KEEP,
          "{q.seen} holds probabilities in [0, 1], one per sample (soft binary labels). "
          "BCEWithLogitsLoss takes soft labels; SoftMarginLoss takes only hard ±1.",
          "MultiLabelSoftMarginLoss with input.unsqueeze(-1) and target.unsqueeze(-1) (the same "
          "loss, fused)"),
    # ---- class indices ---------------------------------------------------------------------------
    _Rule(("class_indices",), lambda q: q.probabilistic,
          "torch.nn.CrossEntropyLoss", _class_indices, _CLASS_INDICES_WHY,
          "MultiMarginLoss (multi-class hinge, p=1 or p=2)"),
    _Rule(("class_indices",), _always,
          "marginloss.MultiMarginLoss", _class_indices, _CLASS_INDICES_WHY,
          "CrossEntropyLoss (probabilistic: softmax + log-loss, calibrated probabilities)"),
    # ---- one-hot rows ----------------------------------------------------------------------------
    _Rule(("one_hot",), lambda q: bool(q.multi_label),
          "marginloss.MultiLabelSoftMarginLoss", _KEEP,
          "{q.seen} was read as a multi-label mask (every row happens to hold one label), as "
          "multi_label=True says: MultiLabelSoftMarginLoss takes it directly.",
          "MultiLabelMarginLoss after marginloss.labels.multi_hot_to_padded (ranking)"),
    _Rule(("one_hot",), lambda q: q.probabilistic,
          "torch.nn.CrossEntropyLoss", _ONE_HOT_TO_INDICES, _ONE_HOT_WHY,
          "MultiMarginLoss after one_hot_to_indices"),
    _Rule(("one_hot",), _always,
          "marginloss.MultiMarginLoss", _ONE_HOT_TO_INDICES, _ONE_HOT_WHY,
          "CrossEntropyLoss after one_hot_to_indices (probabilistic)"),
    # ---- multi-hot masks, hard or soft, and class-probability rows ------------------------------
    _Rule(("class_probabilities",), lambda q: q.multi_label is not True,
          "torch.nn.CrossEntropyLoss", _KEEP,
          "{q.seen} holds rows of class probabilities that sum to 1 (soft one-hot, e.g. label "
          "smoothing or distillation): CrossEntropyLoss takes them as probability targets. The "
          "margin losses take hard labels only. If these are independent per-class "
          "probabilities, pass multi_label=True.",
          "MultiMarginLoss after target.argmax(-1) (drops the soft information)"),
    _Rule(("multi_hot", "soft_multi_hot", "class_probabilities"), lambda q: q.probabilistic,
          "torch.nn.BCEWithLogitsLoss", _FLOAT,
          "{q.seen} is a {q.soft}multi-hot mask: BCEWithLogitsLoss takes it as float labels.",
          "MultiLabelSoftMarginLoss (the same loss, fused)"),
    _Rule(("multi_hot",), _always,
          "marginloss.MultiLabelSoftMarginLoss", _KEEP, _MULTI_HOT_WHY + ".",
          "MultiLabelMarginLoss after marginloss.labels.multi_hot_to_padded(target) (a ranking "
          "loss: positives scored above negatives)"),
    _Rule(("soft_multi_hot", "class_probabilities"), _always,
          "marginloss.MultiLabelSoftMarginLoss", _KEEP,
          _MULTI_HOT_WHY + " (soft labels included).",
          "BCEWithLogitsLoss (the same loss, unfused)"),
    # ---- -1-padded index lists -------------------------------------------------------------------
    _Rule(("padded_indices",), lambda q: q.probabilistic,
          "torch.nn.BCEWithLogitsLoss", _PADDED_TO_MULTI_HOT,
          "{q.seen} holds -1-padded class-index lists; BCEWithLogitsLoss needs them as a 0/1 "
          "mask.{q.padding_caveat}",
          "MultiLabelMarginLoss (takes the lists directly)"),
    _Rule(("padded_indices",), _always,
          "marginloss.MultiLabelMarginLoss", _KEEP,
          "{q.seen} holds class-index lists padded with -1 (torch's MultiLabelMarginLoss "
          "format: row [3, 0, -1, -1] means classes 3 and 0).{q.padding_caveat}",
          "MultiLabelSoftMarginLoss after marginloss.labels.padded_to_multi_hot(target) "
          "(per-class logistic loss, thresholdable scores)"),
    # ---- sparse CSR rows and label sets ----------------------------------------------------------
    _Rule(("sparse_csr",), _always,
          "marginloss.MultiLabelSoftMarginLoss", _CSR_TO_MULTI_HOT,
          "{q.seen} is sparse CSR rows of labels; the losses take dense targets, so densify to a "
          "0/1 mask for MultiLabelSoftMarginLoss (per batch, if memory is tight).",
          "MultiLabelMarginLoss after marginloss.labels.multi_hot_to_padded("
          "marginloss.labels.csr_to_multi_hot(target))"),
    _Rule(("label_sets",), _always,
          "marginloss.MultiLabelSoftMarginLoss", _sets_to_multi_hot,
          "{q.seen} is a list of label sets (several labels per sample); "
          "MultiLabelSoftMarginLoss takes them as a 0/1 mask.{q.inferred_classes_note}",
          "MultiLabelMarginLoss after marginloss.labels.sets_to_padded(target, "
          "num_classes={q.classes})"),
)


def _first(table: Sequence[_Rule] | Sequence[_Conflict], q: _Case) -> Any:
    """The first entry of ``table`` that applies to ``q`` (None when none does)."""
    return next((r for r in table if q.convention in r.conventions and r.when(q)), None)


def recommend(target: object, *, multi_label: bool | None = None, num_classes: int | None = None,
              prefer: str = "auto") -> Recommendation:
    """Name the loss that fits ``target``'s label convention, how to convert it, and why.

    The guide: binary {0, 1} labels -> ``BCEWithLogitsLoss`` (``SoftMarginLoss`` after
    :func:`~marginloss.labels.to_pm1` as the margin alternative); binary ±1 ->
    ``SoftMarginLoss``; a multi-label 0/1 mask, hard or soft -> ``MultiLabelSoftMarginLoss``;
    one class index per sample -> ``MultiMarginLoss`` (``CrossEntropyLoss`` is the
    probabilistic alternative); -1-padded index lists -> ``MultiLabelMarginLoss``. One-hot rows,
    label sets and sparse CSR rows are converted to the nearest of these.

    Some targets fit several conventions; the most common reading is chosen, ``reason`` says
    what else it could be, and the keyword hints settle it:

    * a 1-D tensor of 0s and 1s: binary labels (default), two-class indices
      (``num_classes=2`` or more) or one sample's multi-hot row (``multi_label=True``);
    * one-hot rows: one class per sample (default) or a multi-label mask whose rows happen to
      hold one label each (``multi_label=True``).

    Internally: :func:`describe` names the convention; the first conflict that applies (no
    convention, a contradicting hint) raises; otherwise the first rule of the guide's ordered
    table that applies to the convention and the hints is the answer.

    Args:
        target: The labels: a tensor (dense or ``torch.sparse_csr``), a NumPy array, or a list
            of label collections.
        multi_label: True when a sample can have several labels, False when it has exactly one;
            None (default) to decide from the values.
        num_classes: The number of classes ``C`` (the width of the model's output). Settles the
            1-D {0, 1} case, and sizes the mask built from label sets.
        prefer: ``"auto"`` (default: the guide above), ``"margin"`` (a margin loss first, the
            probabilistic one as the alternative) or ``"probabilistic"`` (the reverse).

    Returns:
        A :class:`Recommendation`.

    Raises:
        LabelError: ``target`` is in no label convention (scores, NaN, negative values, no
            elements), or a hint contradicts the values (``multi_label=False`` with several
            labels per row, a class index >= ``num_classes``).
        DtypeError: ``target`` cannot be read as numbers (see :func:`describe`).
        ValueError: ``prefer`` or ``num_classes`` is not a valid option.
        TypeError: ``multi_label`` is not True, False or None.

    Examples:
        >>> r = recommend(torch.tensor([0, 1, 1, 0]))
        >>> r.loss, r.alternative.split()[0]
        ('BCEWithLogitsLoss', 'SoftMarginLoss')
        >>> recommend(torch.tensor([0, 1, 1, 0]), prefer="margin").convert(torch.tensor([0, 1]))
        tensor([-1.,  1.])
        >>> recommend(torch.tensor([3, 0, 2])).loss
        'MultiMarginLoss'
        >>> r = recommend(torch.tensor([[1, 0, 0], [0, 0, 1]]), multi_label=True)
        >>> r.loss, r.convert
        ('MultiLabelSoftMarginLoss', None)
        >>> print(recommend(torch.tensor([[2, 0, -1], [1, -1, -1]])))
        convention:  class-index lists padded with -1 (N, C), MultiLabelMarginLoss's format ...
        evidence:    dtype torch.int64, shape (2, 3), values {-1, 0, 1, 2}. Integers in ...
        loss:        marginloss.MultiLabelMarginLoss
        why:         The target (torch.int64, shape (2, 3), values {-1, 0, 1, 2}) holds ...
        convert:     # no conversion needed: the target is already in this loss's convention
        then:        loss_fn = marginloss.MultiLabelMarginLoss()
        alternative: MultiLabelSoftMarginLoss after marginloss.labels.padded_to_multi_hot(...
        >>> recommend(torch.tensor([3, 0, 2]), multi_label=True)
        Traceback (most recent call last):
        ...
        marginloss.errors.LabelError: recommend: The target ... but multi_label=True was passed...
    """
    if prefer not in ("auto", "margin", "probabilistic"):
        raise ValueError(f"recommend: `prefer` must be 'auto', 'margin' or 'probabilistic', got "
                         f"{prefer!r}.")
    if multi_label not in (None, True, False):
        raise TypeError(f"recommend: `multi_label` must be True, False or None, got "
                        f"{multi_label!r}.")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(
            num_classes, int) or num_classes < 1):
        raise ValueError(f"recommend: `num_classes` must be a positive int, got {num_classes!r}.")

    q = _Case(describe(target), None if multi_label is None else bool(multi_label), num_classes,
              prefer)
    conflict: _Conflict | None = _first(_CONFLICTS, q)
    if conflict is not None:
        raise LabelError(f"recommend: {q.seen} " + conflict.message.format(q=q))
    rule: _Rule | None = _first(_RULES, q)
    if rule is None:  # pragma: no cover - every convention has a rule that always applies
        raise LabelError(f"recommend: no rule for convention {q.convention!r}.")
    module, _, loss = rule.loss.rpartition(".")
    conversion = rule.convert if isinstance(rule.convert, _Conversion) else rule.convert(q)
    return Recommendation(loss=loss, module=module, convert=conversion.fn, code=conversion.code,
                          reason=rule.reason.format(q=q, loss=loss),
                          alternative=rule.alternative.format(q=q, loss=loss), description=q.desc)
