"""The decision guide: which loss fits these labels, how to convert them, and why.

The margin-family losses differ mostly in the *label convention* they take, and torch accepts
the wrong one without an error. The guide answers in two steps:

1. :func:`describe` names the convention a target is in, from its dtype, shape and set of
   values (and, for losses that compare several inputs, the inputs' number and shapes), with
   the evidence and the other conventions the same values could be in
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
* one-hot rows, label sets and sparse CSR rows are converted to the nearest of these;
* with two inputs (``inputs=(input1, input2)``): pair labels, ±1 similar/dissimilar for two
  embeddings (N, D) -> ``CosineEmbeddingLoss`` (alternative: ``HingeEmbeddingLoss`` on their
  distance); ranking preferences, ±1 for which of two scores should be higher ->
  ``MarginRankingLoss`` (ties and soft preferences: ``BCEWithLogitsLoss`` on the difference);
* with three inputs (anchor, positive, negative) and no target: ``TripletMarginLoss``.

:func:`recommend` is a walk down two ordered tables. The *conflicts* come first: a target in no
convention, or a hint (``multi_label``, ``num_classes``) that the values contradict, raises a
:class:`~marginloss.errors.LabelError`. Then the *rules*: each names the conventions it applies
to, a condition on the hints, the loss, the conversion, the call, the explanation and the
alternative; the first rule that matches is the recommendation, so a specific rule (a hint, a
preference) sits above the general rule for its convention.

Examples:
    >>> describe(torch.tensor([3, 0, 2])).convention
    'class_indices'
    >>> rec = recommend(torch.tensor([0, 1, 1, 0]), prefer="margin")
    >>> rec.loss, rec.code
    ('SoftMarginLoss', 'target = marginloss.labels.to_pm1(target)')
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from marginloss import labels
from marginloss.errors import DtypeError, LabelError, ShapeError
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
    "pair_labels": "pair labels, one per pair of embeddings (N, D): +1 similar, -1 dissimilar",
    "ranking_preferences": "ranking preferences, one per pair of scores: +1 when the first "
                           "should rank higher, -1 when the second should",
    "triplets": "triplets of embeddings (anchor, positive, negative): the order is the label",
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
        inputs: The shapes of the inputs passed to :func:`describe` (empty when none were).
        encoding: How the values encode pair labels or ranking preferences: ``"pm1"`` (±1),
            ``"01"`` (1 and 0 for +1 and -1), ``"ties"`` (ranking: -1, 0, +1 with 0 a tie) or
            ``"soft"`` (ranking: the probability that the first input should rank higher);
            None for the other conventions.
    """

    convention: str
    summary: str
    dtype: str
    shape: tuple[int, ...]
    values: str
    num_classes: int | None = None
    alternatives: tuple[str, ...] = field(default_factory=tuple)
    evidence: str = ""
    inputs: tuple[tuple[int, ...], ...] = ()
    encoding: str | None = None

    @property
    def facts(self) -> str:
        """The target's dtype, shape and values (and the inputs' shapes), in words."""
        target = f"dtype {self.dtype}, shape {self.shape}, values {self.values}"
        if not self.inputs:
            return target
        return (f"inputs {_shapes_text(self.inputs)}; "
                + ("no target" if self.dtype == "none" else f"target {target}"))

    @property
    def ambiguous(self) -> bool:
        """True when the values fit several conventions (see ``alternatives``)."""
        return bool(self.alternatives)

    def __str__(self) -> str:
        text = f"{self.summary} [{self.convention}]: {self.facts}. {self.evidence}"
        if self.alternatives:
            text += " Could also be: " + "; ".join(CONVENTIONS[a] for a in self.alternatives) + "."
        return text


def describe(target: object, *, inputs: Sequence[object] | None = None) -> LabelDescription:
    """Name the label convention ``target`` is in, with the evidence (dtype, shape, values).

    The rules read the dtype, the shape and the set of values: {0, 1} with one label per
    sample is binary; only ±1 is a sign per score; non-negative integers with one per sample
    are class indices; (N, C) rows of 0/1 are one-hot (exactly one 1 per row) or multi-hot;
    values in [0, 1] are soft labels; integer rows whose -1 entries all trail are -1-padded
    index lists. When the values fit several conventions (a 1-D tensor of 0s and 1s could also
    be two-class indices), the most common reading is chosen and the others are listed in
    ``alternatives``; :func:`recommend` takes hints that settle them.

    With ``inputs``, the tensors the loss would compare, their number and shapes (metadata
    only) say what the labels are about:

    * three inputs of one rank, ``(N, D)`` each: **triplets** (anchor, positive, negative); the
      order of the inputs is the label, and no target is needed (pass ``target=None``);
    * two inputs ``(N, D)`` beside a target ``(N,)`` (or ``(D,)`` beside a 0-d target): **pair
      labels**, +1 (or 1) for a similar pair and -1 (or 0) for a dissimilar one;
    * two inputs of the target's rank (one score per item, broadcasting as torch does):
      **ranking preferences**, +1 (or 1) when the first input should score higher and -1 (or
      0) when the second should; -1/0/+1 with 0 a tie, and probabilities in [0, 1] (that the
      first should score higher), are recognised too (``encoding`` says which).

    Args:
        target: A tensor (dense or ``torch.sparse_csr``), a NumPy array, or a list of label
            collections (e.g. ``[{0, 3}, {1}]``); None for triplets.
        inputs: None (default: the target alone decides), or the two inputs of a pair or
            ranking loss, or the three of a triplet loss: tensors (or anything with a
            ``.shape``); only their shapes are read.

    Returns:
        A :class:`LabelDescription`. Values in no convention (scores, NaN, negative numbers;
        with two inputs, values that are neither pair labels nor preferences) give the
        convention ``"unknown"``, a target without elements ``"empty"``.

    Raises:
        DtypeError: ``target`` cannot be read as numbers (strings, arbitrary objects), or is
            complex.
        ShapeError: the inputs' shapes fit no loss that compares them (ranks that differ,
            sizes that do not broadcast, a target shaped for neither pairs nor scores).
        ValueError: ``inputs`` is not a sequence of two or three shaped objects, or two
            inputs come without a target.

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
        >>> x1, x2 = torch.randn(4, 16), torch.randn(4, 16)
        >>> describe(torch.tensor([1, 0, 0, 1]), inputs=(x1, x2)).convention
        'pair_labels'
        >>> d = describe(torch.tensor([1.0, -1.0, 1.0, 1.0]), inputs=(x1[:, 0], x2[:, 0]))
        >>> d.convention, d.encoding
        ('ranking_preferences', 'pm1')
        >>> describe(None, inputs=(x1, x2, x1)).convention
        'triplets'
    """
    if inputs is None:
        return _describe_labels(target)
    shapes = _input_shapes(inputs)
    if len(shapes) == 3:
        return _describe_triplets(None if target is None else _describe_labels(target), shapes)
    if target is None:
        raise ValueError("describe: two inputs need a target, one label per pair: +1/-1 "
                         "(similar/dissimilar pairs, or which input should rank higher). Only "
                         "triplets (three inputs) take no target.")
    return _describe_pairs(target, _describe_labels(target), shapes)


def _describe_labels(target: object) -> LabelDescription:
    """:func:`describe` of the target alone (no inputs)."""
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


# ---- several inputs: triplets, pairs, ranking preferences ---------------------------------------


def _input_shapes(inputs: object) -> tuple[tuple[int, ...], ...]:
    """The shapes of ``describe``'s ``inputs``: two or three objects with a ``.shape``."""
    if isinstance(inputs, Tensor | str) or not isinstance(inputs, Sequence):
        raise ValueError(f"describe: `inputs` must be a tuple of the two inputs of a pair or "
                         f"ranking loss, or of the three of a triplet loss (anchor, positive, "
                         f"negative), got {type(inputs).__name__}.")
    shapes = []
    for k, x in enumerate(inputs):
        shape = getattr(x, "shape", None)
        if shape is None:
            raise ValueError(f"describe: `inputs[{k}]` must be a tensor (or have a .shape), got "
                             f"{type(x).__name__}.")
        shapes.append(tuple(int(d) for d in shape))
    if len(shapes) not in (2, 3):
        raise ValueError(f"describe: `inputs` must hold two inputs (a pair or ranking loss) or "
                         f"three (a triplet loss), got {len(shapes)}.")
    return tuple(shapes)


def _shapes_text(shapes: Sequence[tuple[int, ...]]) -> str:
    """``(4, 16), (4, 16) and (4, 16)``."""
    return ", ".join(str(s) for s in shapes[:-1]) + f" and {shapes[-1]}"


def _broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...] | None:
    """The broadcast shape, or None when the shapes do not broadcast."""
    try:
        return tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        return None


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _describe_triplets(base: LabelDescription | None,
                       shapes: tuple[tuple[int, ...], ...]) -> LabelDescription:
    """Three inputs: anchor, positive, negative (one rank, broadcasting as torch's triplet
    losses do)."""
    full = _broadcast(*shapes)
    if len({len(s) for s in shapes}) != 1 or full is None:
        raise ShapeError(f"describe: the three inputs (anchor, positive, negative) have shapes "
                         f"{_shapes_text(shapes)}; the triplet losses need one rank for all "
                         f"three and sizes that broadcast, such as (N, D) each.")
    dim = full[-1] if full else 1
    evidence = (f"Three inputs of one rank: an anchor, a positive (like the anchor) and a "
                f"negative (unlike it), {_count(full[:-1])} triplets of {dim}-dimensional "
                f"embeddings; the order of the inputs is the label.")
    if base is None:
        return LabelDescription("triplets", CONVENTIONS["triplets"], "none", (), "none", None,
                                (), evidence, shapes)
    evidence += " The target is not used: the triplet losses take none."
    return LabelDescription("triplets", CONVENTIONS["triplets"], base.dtype, base.shape,
                            base.values, None, (), evidence, shapes)


def _describe_pairs(target: object, base: LabelDescription,
                    shapes: tuple[tuple[int, ...], ...]) -> LabelDescription:
    """Two inputs and a target: pair labels (inputs with a feature dimension more than the
    target) or ranking preferences (inputs of the target's rank: one score per item)."""
    (a, b), s = shapes, base.shape
    both = _broadcast(a, b) if len(a) == len(b) else None
    if both is None:
        raise ShapeError(f"describe: the two inputs have shapes {_shapes_text(shapes)}; the "
                         f"pair and ranking losses need one rank for both and sizes that "
                         f"broadcast.")
    if len(both) == len(s) and _broadcast(both, s) is not None:
        kind, n, dim = "ranking_preferences", _count(_broadcast(both, s) or ()), None
    elif len(both) == len(s) + 1 and len(s) <= 1 and _broadcast(both[:-1], s) is not None:
        kind, n, dim = "pair_labels", _count(_broadcast(both[:-1], s) or ()), both[-1]
    else:
        raise ShapeError(
            f"describe: inputs of shapes {_shapes_text(shapes)} with a target of shape {s} fit "
            f"no loss that compares two inputs: a ranking loss takes two scores per target "
            f"entry (inputs of the target's shape, e.g. (N,) each with a target (N,)), a pair "
            f"loss two embeddings per target entry (inputs (N, D) with a target (N,)).")
    if base.convention == "empty":
        return dataclasses.replace(base, inputs=shapes)
    encoding = _pair_encoding(target, base, ranking=kind == "ranking_preferences")
    if kind == "pair_labels":
        what = f"Two inputs of {dim}-dimensional embeddings ({n} pairs), one label per pair"
        evidence = {
            "pm1": f"{what}: +1 for a similar pair, -1 for a dissimilar one.",
            "01": f"{what}, 1 and 0: read as 1 = similar, 0 = dissimilar (the pair losses "
                  f"take ±1).",
            None: f"{what}, but the values are not pair labels (+1 or 1 for a similar pair, "
                  f"-1 or 0 for a dissimilar one). From a class label per sample, the pair "
                  f"label is marginloss.labels.to_pm1(c1 == c2).",
        }[encoding]
    else:
        what = f"Two inputs of scores shaped like the target ({n} pairs of items)"
        evidence = {
            "pm1": f"{what}, one label per pair: +1 when input1 should score higher, -1 when "
                   f"input2 should.",
            "01": f"{what}, 1 and 0: read as 1 = input1 should score higher, 0 = input2 "
                  f"should (MarginRankingLoss takes ±1).",
            "ties": f"{what}, -1, 0 and +1: 0 is a tie (MarginRankingLoss defines only ±1).",
            "soft": f"{what}, fractions in [0, 1]: the probability that input1 should score "
                    f"higher (soft preferences).",
            None: f"{what}, but the values are not preferences (±1 or 1/0 for which input "
                  f"should score higher, -1/0/+1 with ties, or probabilities). From a "
                  f"relevance grade or regression target per item, the preference of a pair "
                  f"is torch.sign(t1 - t2) (0 for a tie).",
        }[encoding]
    return dataclasses.replace(base, convention=kind if encoding else "unknown",
                               summary=CONVENTIONS[kind if encoding else "unknown"],
                               num_classes=None, alternatives=(), evidence=evidence,
                               inputs=shapes, encoding=encoding)


def _pair_encoding(target: object, base: LabelDescription, *, ranking: bool) -> str | None:
    """How a pair or ranking target encodes its labels (see LabelDescription.encoding)."""
    if base.convention in ("sparse_csr", "label_sets"):
        return None
    t = target if isinstance(target, Tensor) else torch.as_tensor(target)
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        return None
    values = _value_set(t)
    if values <= {-1, 1} and -1 in values:
        return "pm1"
    if values <= {0, 1}:
        return "01"
    if ranking and values <= {-1, 0, 1}:
        return "ties"
    if ranking and t.is_floating_point() and min(values) >= 0 and max(values) <= 1:
        return "soft"
    return None


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
        call: The line that computes the loss with ``loss_fn`` (:attr:`loss_code`), naming the
            inputs: ``loss = loss_fn(input, target)``, or e.g. ``loss = loss_fn(input1, input2,
            target)`` for a pair or ranking loss.
        reason: Why, in sentences, ambiguities included.
        alternative: Another loss that fits, with what it needs, or None.
        description: The :class:`LabelDescription` behind the choice (the convention, the
            evidence, the other conventions the values could be in).
    """

    loss: str
    module: str
    convert: Callable[[Any], Tensor] | None
    code: str
    call: str
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
                 f"evidence:    {d.facts}. {d.evidence}"]
        if d.alternatives:
            lines.append("could be:    " + "; ".join(CONVENTIONS[a] for a in d.alternatives))
        lines += [f"loss:        {self.module}.{self.loss}",
                  f"why:         {self.reason}",
                  f"convert:     {self.code}",
                  f"then:        {self.loss_code}"]
        if self.call != _CALL:
            lines.append(f"call:        {self.call}")
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
    def encoding(self) -> str | None:
        """How pair labels or ranking preferences are encoded (``"pm1"``, ``"01"``, ...)."""
        return self.desc.encoding

    @property
    def class_hints(self) -> bool:
        """A ``multi_label`` or ``num_classes`` hint was passed."""
        return self.multi_label is not None or self.num_classes is not None

    @property
    def dim(self) -> int:
        """The size of the inputs' last dimension: the embeddings' D."""
        last = self.desc.inputs[0]
        return last[-1] if last else 1

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
        if d.inputs and d.dtype == "none":
            return f"The triplet (inputs of shapes {_shapes_text(d.inputs)}, no target)"
        seen = f"The target ({d.dtype}, shape {d.shape}, values {d.values})"
        return seen + (f" with inputs of shapes {_shapes_text(d.inputs)}" if d.inputs else "")

    @property
    def target_ignored(self) -> str:
        if self.desc.dtype == "none":
            return ""
        return " The target is not used: the order of the inputs is the label."

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


def _ties_to_probability(target: Tensor) -> Tensor:
    """Preferences -1/0/+1 as the probability that the first input wins: 0, 0.5, 1."""
    return (target + 1) / 2


def _float_labels(target: Tensor) -> Tensor:
    """Labels as torch's default float dtype (BCEWithLogitsLoss needs float targets)."""
    if target.is_floating_point():
        return target
    return target.to(torch.get_default_dtype())


_KEEP = _Conversion(None, "# no conversion needed: the target is already in this loss's "
                          "convention")
_NO_TARGET = _Conversion(None, "# no target: the order (anchor, positive, negative) is the label")
_TIES_TO_PROBABILITY = _Conversion(_ties_to_probability,
                                   "target = (target + 1) / 2  # a tie (0) becomes 0.5")
_TO_PM1 = _Conversion(labels.to_pm1, "target = marginloss.labels.to_pm1(target)")
_TO_01 = _Conversion(labels.to_01, "target = marginloss.labels.to_01(target)")
_FLOAT = _Conversion(_float_labels, "target = target.float()")
_ONE_HOT_TO_INDICES = _Conversion(labels.one_hot_to_indices,
                                  "target = marginloss.labels.one_hot_to_indices(target)")
_PADDED_TO_MULTI_HOT = _Conversion(labels.padded_to_multi_hot,
                                   "target = marginloss.labels.padded_to_multi_hot(target)")
_CSR_TO_MULTI_HOT = _Conversion(labels.csr_to_multi_hot,
                                "target = marginloss.labels.csr_to_multi_hot(target)")


#: The call of a loss on one input (the call line of a rule that does not name another).
_CALL = "loss = loss_fn(input, target)"
_CALL_PAIR = "loss = loss_fn(input1, input2, target)"
_CALL_DIFFERENCE = "loss = loss_fn(input1 - input2, target)"


def _to_pm1(q: _Case) -> _Conversion:
    if q.column:
        return _Conversion(labels.to_pm1, _TO_PM1.code + "  # keep the (N, 1) shape of the "
                                                         "model's output")
    return _TO_PM1


def _float_unless_float(q: _Case) -> _Conversion:
    if q.desc.dtype.startswith("torch.float"):
        return _KEEP
    return _Conversion(_float_labels, _FLOAT.code + "  # BCEWithLogitsLoss needs float labels")


def _probabilistic_preferences(q: _Case) -> _Conversion:
    """Hard preferences for BCEWithLogitsLoss: {0, 1} as floats."""
    return _TO_01 if q.encoding == "pm1" else _float_unless_float(q)


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
    call: str = _CALL


_CONFLICTS: tuple[_Conflict, ...] = (
    _Conflict(("unknown",), lambda q: bool(q.desc.inputs),
              "is neither pair labels nor ranking preferences: {q.desc.evidence}"),
    _Conflict(("pair_labels", "ranking_preferences", "triplets"), lambda q: q.class_hints,
              "came with a multi_label or num_classes hint, but pairs, preferences and "
              "triplets have no classes: drop the hint."),
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

_COSINE_MARGIN = ("Its margin is a cosine, in [-1, 1] (0, the default, to 0.5 is usual): "
                  "with margin >= 1 the dissimilar pairs never cost anything, with margin <= -1 "
                  "they always do.")
_PAIR_ALTERNATIVE = ("HingeEmbeddingLoss on distances: loss_fn(torch.pairwise_distance(input1, "
                     "input2), target), with loss d for a similar pair and max(0, margin - d) "
                     "for a dissimilar one (its input is a distance, not a similarity; margin "
                     "in distance units)")
_RANKING_MARGIN = ("The default margin is 0: a pair in the right order by any amount costs "
                   "nothing, so the scores may stay close together; a margin such as 1 (in "
                   "score units) asks for a gap.")
_RANKING_ALTERNATIVE = ("BCEWithLogitsLoss on the score difference input1 - input2 after "
                        "marginloss.labels.to_01(target) (the logistic, RankNet loss)")

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
    # ---- pair labels: two embeddings per label, similar (+1) or dissimilar (-1) -----------------
    _Rule(("pair_labels",), lambda q: q.encoding == "01",
          "marginloss.CosineEmbeddingLoss", _TO_PM1,
          "{q.seen} holds 1 and 0, one per pair of {q.dim}-dimensional embeddings, read as "
          "similar (1) and dissimilar (0). CosineEmbeddingLoss takes ±1, so convert with "
          "to_pm1: passed as 0/1, torch's loss is 0 for every 0 label (neither of its branches "
          "applies), so the dissimilar pairs teach nothing (marginloss raises LabelError). "
          + _COSINE_MARGIN, _PAIR_ALTERNATIVE, call=_CALL_PAIR),
    _Rule(("pair_labels",), _always,
          "marginloss.CosineEmbeddingLoss", _KEEP,
          "{q.seen} holds one ±1 label per pair of {q.dim}-dimensional embeddings (+1 similar, "
          "-1 dissimilar): the convention CosineEmbeddingLoss takes, with both embeddings: "
          "1 - cos for a similar pair, max(0, cos - margin) for a dissimilar one. "
          + _COSINE_MARGIN, _PAIR_ALTERNATIVE, call=_CALL_PAIR),
    # ---- ranking preferences: which of two scores should be higher -------------------------------
    _Rule(("ranking_preferences",), lambda q: q.encoding == "ties",
          "torch.nn.BCEWithLogitsLoss", _TIES_TO_PROBABILITY,
          "{q.seen} holds preferences -1, 0 and +1, 0 a tie. MarginRankingLoss defines only ±1 "
          "(torch gives a tie the constant loss max(0, margin), marginloss raises LabelError); "
          "BCEWithLogitsLoss on the score difference input1 - input2, with (target + 1) / 2 as "
          "the probability that input1 wins, takes a tie as 0.5 (the RankNet loss).",
          "MarginRankingLoss without the ties: keep = target != 0, then loss_fn(input1[keep], "
          "input2[keep], target[keep])", call=_CALL_DIFFERENCE),
    _Rule(("ranking_preferences",), lambda q: q.encoding == "soft",
          "torch.nn.BCEWithLogitsLoss", _KEEP,
          "{q.seen} holds probabilities that input1 should score higher than input2 (soft "
          "preferences). MarginRankingLoss takes hard ±1 only; BCEWithLogitsLoss on the score "
          "difference input1 - input2 takes them as they are (the RankNet loss).",
          "MarginRankingLoss on hard preferences, torch.where(target > 0.5, 1.0, -1.0) "
          "(drops the confidence; leave out the pairs at 0.5)", call=_CALL_DIFFERENCE),
    _Rule(("ranking_preferences",), lambda q: q.probabilistic,
          "torch.nn.BCEWithLogitsLoss", _probabilistic_preferences,
          "{q.seen} holds hard preferences; as prefer='probabilistic' asks, BCEWithLogitsLoss "
          "on the score difference input1 - input2 with {{0, 1}} labels (1: input1 should score "
          "higher) is the logistic (RankNet) loss for them.",
          "MarginRankingLoss (a hinge on the score difference; takes ±1)",
          call=_CALL_DIFFERENCE),
    _Rule(("ranking_preferences",), lambda q: q.encoding == "01",
          "marginloss.MarginRankingLoss", _TO_PM1,
          "{q.seen} holds 1 and 0, read as: input1 (1) or input2 (0) should score higher. "
          "MarginRankingLoss takes ±1, so convert with to_pm1: passed as 0/1, torch gives "
          "every 0 label the constant loss max(0, margin), so those pairs teach nothing "
          "(marginloss raises LabelError). " + _RANKING_MARGIN,
          "BCEWithLogitsLoss on the score difference input1 - input2 (takes the 0/1 labels as "
          "floats; the logistic, RankNet loss)", call=_CALL_PAIR),
    _Rule(("ranking_preferences",), _always,
          "marginloss.MarginRankingLoss", _KEEP,
          "{q.seen} holds one ±1 preference per pair of scores: the convention "
          "MarginRankingLoss takes, with loss max(0, -y (input1 - input2) + margin): y = +1 "
          "asks input1 to score higher than input2, -1 the reverse (swapping the inputs "
          "without flipping the sign trains the opposite order). " + _RANKING_MARGIN,
          _RANKING_ALTERNATIVE, call=_CALL_PAIR),
    # ---- triplets: anchor, positive, negative ---------------------------------------------------
    _Rule(("triplets",), _always,
          "marginloss.TripletMarginLoss", _NO_TARGET,
          "{q.seen}: an anchor, a positive (same identity as the anchor) and a negative "
          "(another), {q.dim}-dimensional embeddings. TripletMarginLoss asks d(anchor, "
          "positive) + margin <= d(anchor, negative) with the p-norm distance (p=2 by default; "
          "eps=1e-6 is added to each difference, so identical vectors are eps * D^(1/p) apart, "
          "not 0); margin (> 0) is in distance units; swap=True uses the positive-negative "
          "distance instead when it is smaller (a harder negative).{q.target_ignored}",
          "TripletMarginWithDistanceLoss(distance_function=lambda a, b: 1 - "
          "torch.nn.functional.cosine_similarity(a, b)) for a cosine distance (direction only; "
          "margin in (0, 2])", call="loss = loss_fn(anchor, positive, negative)"),
)


def _first(table: Sequence[_Rule] | Sequence[_Conflict], q: _Case) -> Any:
    """The first entry of ``table`` that applies to ``q`` (None when none does)."""
    return next((r for r in table if q.convention in r.conventions and r.when(q)), None)


def recommend(target: object, *, inputs: Sequence[object] | None = None,
              multi_label: bool | None = None, num_classes: int | None = None,
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

    Labels that compare several inputs are recognised from ``inputs`` (see :func:`describe`),
    and the recommendation's ``call`` says how to pass them:

    * pair labels, +1 similar / -1 dissimilar, with two embeddings ``(N, D)`` ->
      ``CosineEmbeddingLoss`` (1 and 0 after ``to_pm1``; ``HingeEmbeddingLoss`` on
      ``torch.pairwise_distance(input1, input2)`` as the alternative: it takes distances, not
      similarities);
    * ranking preferences, +1 when ``input1`` should score higher and -1 when ``input2`` should,
      with two score tensors of the target's shape -> ``MarginRankingLoss`` (1 and 0 after
      ``to_pm1``); ties (-1/0/+1), soft preferences (probabilities) or
      ``prefer="probabilistic"`` -> ``BCEWithLogitsLoss`` on ``input1 - input2`` (RankNet);
    * triplets, three embeddings (anchor, positive, negative) and ``target=None`` ->
      ``TripletMarginLoss`` (``TripletMarginWithDistanceLoss`` with a cosine distance as the
      alternative).

    Internally: :func:`describe` names the convention; the first conflict that applies (no
    convention, a contradicting hint) raises; otherwise the first rule of the guide's ordered
    table that applies to the convention and the hints is the answer.

    Args:
        target: The labels: a tensor (dense or ``torch.sparse_csr``), a NumPy array, or a list
            of label collections; None for triplets.
        inputs: The two inputs of a pair or ranking loss, or the three of a triplet loss
            (anchor, positive, negative); only their shapes are read. None (default) for the
            losses of one input.
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
            labels per row, a class index >= ``num_classes``, either hint with pairs, preferences
            or triplets), or with two inputs it is neither pair labels nor preferences.
        DtypeError: ``target`` cannot be read as numbers (see :func:`describe`).
        ShapeError: the inputs' shapes fit no loss that compares them (see :func:`describe`).
        ValueError: ``prefer`` or ``num_classes`` is not a valid option, or ``inputs`` is not
            two or three shaped objects (see :func:`describe`).
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
        >>> x1, x2 = torch.randn(3, 8), torch.randn(3, 8)
        >>> r = recommend(torch.tensor([1, 0, 1]), inputs=(x1, x2))
        >>> r.loss, r.call
        ('CosineEmbeddingLoss', 'loss = loss_fn(input1, input2, target)')
        >>> r.code
        'target = marginloss.labels.to_pm1(target)'
        >>> recommend(torch.tensor([-1.0, 1.0, 1.0]), inputs=(x1[:, 0], x2[:, 0])).loss
        'MarginRankingLoss'
        >>> recommend(None, inputs=(x1, x2, x1)).call
        'loss = loss_fn(anchor, positive, negative)'
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

    q = _Case(describe(target, inputs=inputs),
              None if multi_label is None else bool(multi_label), num_classes, prefer)
    conflict: _Conflict | None = _first(_CONFLICTS, q)
    if conflict is not None:
        raise LabelError(f"recommend: {q.seen} " + conflict.message.format(q=q))
    rule: _Rule | None = _first(_RULES, q)
    if rule is None:  # pragma: no cover - every convention has a rule that always applies
        raise LabelError(f"recommend: no rule for convention {q.convention!r}.")
    module, _, loss = rule.loss.rpartition(".")
    conversion = rule.convert if isinstance(rule.convert, _Conversion) else rule.convert(q)
    return Recommendation(loss=loss, module=module, convert=conversion.fn, code=conversion.code,
                          call=rule.call, reason=rule.reason.format(q=q, loss=loss),
                          alternative=rule.alternative.format(q=q, loss=loss), description=q.desc)
