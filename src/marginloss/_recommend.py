"""The decision guide: look at a target and name the loss that fits its label convention.

* binary, one label per sample, {0, 1} -> ``BCEWithLogitsLoss``
  (margin alternative: ``SoftMarginLoss`` after ``labels.to_pm1``);
* binary, ±1 -> ``SoftMarginLoss`` (alternative: ``BCEWithLogitsLoss`` after ``labels.to_01``);
* multi-label 0/1 mask, hard or soft -> ``MultiLabelSoftMarginLoss``
  (ranking alternative for hard masks: ``MultiLabelMarginLoss`` after
  ``labels.multi_hot_to_padded``);
* multi-class, one class index per sample -> ``MultiMarginLoss``
  (probabilistic alternative: ``CrossEntropyLoss``);
* multi-label, -1-padded index lists -> ``MultiLabelMarginLoss``
  (alternative: ``MultiLabelSoftMarginLoss`` after ``labels.padded_to_multi_hot``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from marginloss import labels as _labels
from marginloss._validation import LabelError

__all__ = ["Recommendation", "recommend"]

_MARGIN_LOSSES = {"SoftMarginLoss", "MultiLabelSoftMarginLoss", "MultiMarginLoss",
                  "MultiLabelMarginLoss"}


@dataclass(frozen=True)
class Recommendation:
    """The loss that fits a target, how to convert the target for it, and why.

    Attributes:
        loss: Class name of the loss (``"SoftMarginLoss"``, ``"BCEWithLogitsLoss"``, ...).
        convert: A callable that brings the target into ``loss``'s convention, or None when the
            target is already in it.
        reason: Why, in sentences, ambiguities included.
        convention: The convention the target was found in (a key of
            :data:`marginloss.labels.CONVENTIONS`).
        module: Where ``loss`` lives: ``"marginloss"`` or ``"torch.nn"``.
        code: The line of code that converts the labels (a comment when none is needed).
        alternative: Another loss that fits, with what it needs, or None.
        description: The :class:`marginloss.labels.LabelDescription` behind the choice.
    """

    loss: str
    convert: Callable[[Any], torch.Tensor] | None
    reason: str
    convention: str
    module: str
    code: str
    alternative: str | None = None
    description: _labels.LabelDescription | None = None

    @property
    def loss_code(self) -> str:
        """The line that builds the loss, e.g. ``loss_fn = marginloss.SoftMarginLoss()``."""
        return f"loss_fn = {self.module}.{self.loss}()"

    def __str__(self) -> str:
        lines = [f"loss:        {self.module}.{self.loss}",
                 f"labels:      {self.description}" if self.description else
                 f"labels:      {self.convention}",
                 f"why:         {self.reason}",
                 f"convert:     {self.code}"]
        if self.alternative:
            lines.append(f"alternative: {self.alternative}")
        return "\n".join(lines)


def _long(target: torch.Tensor) -> torch.Tensor:
    """Class indices stored as floats (or narrow ints) as int64."""
    return target.long()


def _rec(loss: str, convert, code: str, reason: str, desc, alternative: str | None = None
         ) -> Recommendation:
    module = "marginloss" if loss in _MARGIN_LOSSES else "torch.nn"
    return Recommendation(loss=loss, convert=convert, reason=reason,
                          convention=desc.convention, module=module, code=code,
                          alternative=alternative, description=desc)


_NO_CONVERSION = "# no conversion needed: the target is already in this loss's convention"


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
        LabelError: ``target`` is in no label convention (scores, NaN, negative values), or a
            hint contradicts the values (``multi_label=False`` with several labels per row).

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
        >>> recommend(torch.tensor([[2, 0, -1], [1, -1, -1]])).loss
        'MultiLabelMarginLoss'
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

    desc = _labels.describe(target)
    conv = desc.convention
    margin = prefer == "margin"
    prob = prefer == "probabilistic"
    seen = f"The target ({desc.dtype}, shape {desc.shape}, values {desc.values})"

    def contradiction(msg: str) -> LabelError:
        return LabelError(f"recommend: {seen} {msg}")

    if conv in ("unknown", "empty"):
        raise LabelError(
            f"recommend: {seen} is in no label convention: {desc.evidence} Pass the labels "
            f"(targets), not the model's scores."
        )

    # ---- binary {0, 1} (and its ambiguous readings) -------------------------------------------
    if conv == "binary_01":
        is_1d = len(desc.shape) == 1
        if is_1d and multi_label:
            return _rec(
                "MultiLabelSoftMarginLoss", None, _NO_CONVERSION,
                f"{seen} was read as one sample's multi-hot row over {desc.shape[0]} classes, "
                f"as multi_label=True says; MultiLabelSoftMarginLoss takes it with input of "
                f"shape ({desc.shape[0]},). For a batch, stack the rows into (N, C).", desc,
                "MultiLabelMarginLoss after marginloss.labels.multi_hot_to_padded (a ranking "
                "loss)")
        if is_1d and num_classes is not None and num_classes >= 2 and not multi_label:
            code = "target = target.long()" if desc.dtype != "torch.int64" else _NO_CONVERSION
            conv_fn = _long if desc.dtype != "torch.int64" else None
            first, alt = ("CrossEntropyLoss", "MultiMarginLoss (multi-class hinge)") if prob \
                else ("MultiMarginLoss", "CrossEntropyLoss (probabilistic: softmax + log-loss)")
            return _rec(
                first, conv_fn, code,
                f"{seen} holds only 0 and 1; with num_classes={num_classes} they are read as "
                f"class indices for a model with {num_classes} outputs. (With one output per "
                f"sample, pass num_classes=1 and use BCEWithLogitsLoss or SoftMarginLoss.)",
                desc, alt)
        ambiguity = ""
        if is_1d and multi_label is None and num_classes is None:
            ambiguity = (" The same values could be class indices of a two-class model (pass "
                         "num_classes=2) or one sample's multi-hot row (pass multi_label=True).")
        column = len(desc.shape) == 2 and desc.shape[-1] == 1
        if margin:
            code = ("target = marginloss.labels.to_pm1(target)" if not column else
                    "target = marginloss.labels.to_pm1(target)  # keep the (N, 1) shape of the "
                    "model's output")
            return _rec(
                "SoftMarginLoss", _labels.to_pm1, code,
                f"{seen} holds binary labels in {{0, 1}}. SoftMarginLoss takes ±1, so convert "
                f"them with to_pm1 (2 * target - 1): passed as 0/1, a 0 label gives log 2 "
                f"whatever the score and the negatives teach the model nothing.{ambiguity}",
                desc, "BCEWithLogitsLoss (takes {0, 1} directly; the same logistic loss)")
        is_float = desc.dtype.startswith("torch.float")
        return _rec(
            "BCEWithLogitsLoss", None if is_float else _float_labels,
            _NO_CONVERSION if is_float else
            "target = target.float()  # BCEWithLogitsLoss needs float labels",
            f"{seen} holds binary labels in {{0, 1}}, one per sample: BCEWithLogitsLoss "
            f"takes them directly (as floats).{ambiguity}", desc,
            "SoftMarginLoss after marginloss.labels.to_pm1(target) (the margin form, the same "
            "logistic loss on ±1 labels)")

    # ---- binary ±1 ------------------------------------------------------------------------------
    if conv == "binary_pm1":
        per_class = len(desc.shape) == 2 and desc.shape[-1] > 1
        note = ""
        if desc.alternatives:
            note = (" (Integer rows of -1 and 1 whose -1s all trail could also be -1-padded "
                    "index lists of class 1 only; pass multi_label=True if that is what they "
                    "are.)")
        if multi_label and per_class and "padded_indices" in desc.alternatives:
            return _rec(
                "MultiLabelMarginLoss", None, _NO_CONVERSION,
                f"{seen} was read as -1-padded class-index lists, as multi_label=True says.",
                desc, "MultiLabelSoftMarginLoss after marginloss.labels.padded_to_multi_hot")
        if multi_label and per_class:
            return _rec(
                "MultiLabelSoftMarginLoss", _labels.to_01,
                "target = marginloss.labels.to_01(target)",
                f"{seen} holds one ±1 label per class (multi-label). MultiLabelSoftMarginLoss "
                f"takes them as a 0/1 mask (to_01); on ±1 labels, SoftMarginLoss computes the "
                f"same mean loss directly.", desc,
                "SoftMarginLoss (takes the ±1 labels as they are)")
        if prob:
            return _rec(
                "BCEWithLogitsLoss", _labels.to_01, "target = marginloss.labels.to_01(target)",
                f"{seen} holds ±1 labels; BCEWithLogitsLoss takes {{0, 1}}, so convert with "
                f"to_01 ((target + 1) / 2).{note}", desc,
                "SoftMarginLoss (takes ±1 directly)")
        conv_fn, code = None, _NO_CONVERSION
        what = "one ±1 label per class" if per_class else "binary labels in {-1, +1}"
        return _rec(
            "SoftMarginLoss", conv_fn, code,
            f"{seen} holds {what}: the convention SoftMarginLoss takes "
            f"(log(1 + exp(-y x)) per element).{note}", desc,
            ("MultiLabelSoftMarginLoss after marginloss.labels.to_01 (per-class weights)"
             if per_class else "BCEWithLogitsLoss after marginloss.labels.to_01(target)"))

    # ---- soft binary ---------------------------------------------------------------------------
    if conv == "soft_binary":
        return _rec(
            "BCEWithLogitsLoss", None, _NO_CONVERSION,
            f"{seen} holds probabilities in [0, 1], one per sample (soft binary labels). "
            f"BCEWithLogitsLoss takes soft labels; SoftMarginLoss takes only hard ±1.", desc,
            "MultiLabelSoftMarginLoss with input.unsqueeze(-1) and target.unsqueeze(-1) (the "
            "same loss, fused)")

    # ---- class indices ---------------------------------------------------------------------------
    if conv == "class_indices":
        if multi_label:
            raise contradiction(
                "holds one class index per sample, but multi_label=True was passed. For "
                "several labels per sample, give a (N, C) 0/1 mask, -1-padded index lists, or "
                "a list of label sets.")
        multi_dim = len(desc.shape) > 1
        conv_fn = None if desc.dtype == "torch.int64" else _long
        code = _NO_CONVERSION if conv_fn is None else "target = target.long()"
        if multi_dim:
            conv_fn = _flatten_long
            code = "target = target.reshape(-1).long()  # and input.reshape(-1, C)"
        c = num_classes or desc.num_classes
        bound = (f"; the model needs at least {desc.num_classes} outputs"
                 if num_classes is None else "")
        if num_classes is not None and desc.num_classes and desc.num_classes > num_classes:
            raise contradiction(
                f"holds class index {desc.num_classes - 1}, which does not fit "
                f"num_classes={num_classes}" + (" (if classes are numbered from 1, use "
                                                 "target - 1)" if desc.num_classes - 1 ==
                                                num_classes else "") + ".")
        first, alt = ("CrossEntropyLoss", "MultiMarginLoss (multi-class hinge, p=1 or p=2)") \
            if prob else ("MultiMarginLoss",
                          "CrossEntropyLoss (probabilistic: softmax + log-loss, "
                          "calibrated probabilities)")
        return _rec(
            first, conv_fn, code,
            f"{seen} holds one class index per sample ({desc.evidence.split(':')[0].lower()})"
            f"{bound}: the convention of {first}, with input of shape (N, {c}).", desc, alt)

    # ---- one-hot rows ---------------------------------------------------------------------------
    if conv == "one_hot":
        if multi_label:
            return _rec(
                "MultiLabelSoftMarginLoss", None, _NO_CONVERSION,
                f"{seen} was read as a multi-label mask (every row happens to hold one label), "
                f"as multi_label=True says: MultiLabelSoftMarginLoss takes it directly.", desc,
                "MultiLabelMarginLoss after marginloss.labels.multi_hot_to_padded (ranking)")
        first, alt = ("CrossEntropyLoss", "MultiMarginLoss after one_hot_to_indices") if prob \
            else ("MultiMarginLoss", "CrossEntropyLoss after one_hot_to_indices "
                                     "(probabilistic)")
        return _rec(
            first, _labels.one_hot_to_indices,
            "target = marginloss.labels.one_hot_to_indices(target)",
            f"{seen} holds one-hot rows (exactly one 1 per row), so one class per sample: "
            f"{first} takes the class indices, target.argmax(-1). If a sample can have "
            f"several labels and these rows just happen to have one, pass multi_label=True "
            f"(MultiLabelSoftMarginLoss takes the mask as it is).", desc, alt)

    # ---- multi-hot, hard or soft ----------------------------------------------------------------
    if conv in ("multi_hot", "soft_multi_hot", "class_probabilities"):
        if conv == "class_probabilities" and multi_label is not True:
            return _rec(
                "CrossEntropyLoss", None, _NO_CONVERSION,
                f"{seen} holds rows of class probabilities that sum to 1 (soft one-hot, e.g. "
                f"label smoothing or distillation): CrossEntropyLoss takes them as "
                f"probability targets. The margin losses take hard labels only. If these are "
                f"independent per-class probabilities, pass multi_label=True.", desc,
                "MultiMarginLoss after target.argmax(-1) (drops the soft information)")
        if multi_label is False:
            raise contradiction(
                "has rows with several labels (or soft labels), but multi_label=False was "
                "passed. For one class per sample, give class indices (target.argmax(-1)).")
        soft = conv != "multi_hot"
        if prob:
            return _rec(
                "BCEWithLogitsLoss", _float_labels, "target = target.float()",
                f"{seen} is a {'soft ' if soft else ''}multi-hot mask: BCEWithLogitsLoss takes "
                f"it as float labels.", desc, "MultiLabelSoftMarginLoss (the same loss, fused)")
        conv_fn, code = None, _NO_CONVERSION
        alt = ("BCEWithLogitsLoss (the same loss, unfused)" if soft else
               "MultiLabelMarginLoss after marginloss.labels.multi_hot_to_padded(target) (a "
               "ranking loss: positives scored above negatives)")
        return _rec(
            "MultiLabelSoftMarginLoss", conv_fn, code,
            f"{seen} is a {'soft ' if soft else ''}multi-hot mask: {desc.evidence[:-1]}; the "
            f"convention MultiLabelSoftMarginLoss takes"
            + (" (soft labels included)." if soft else "."), desc, alt)

    # ---- -1-padded index lists -----------------------------------------------------------------
    if conv == "padded_indices":
        if multi_label is False:
            raise contradiction(
                "holds -1-padded class-index lists (several labels per sample), but "
                "multi_label=False was passed.")
        if num_classes is not None and num_classes != desc.shape[-1]:
            raise contradiction(
                f"has rows of width {desc.shape[-1]}, but MultiLabelMarginLoss needs one "
                f"column per class (num_classes={num_classes}). Rebuild it with "
                f"marginloss.labels.sets_to_padded(marginloss.labels.padded_to_sets(target), "
                f"num_classes={num_classes}).")
        caveat = ("" if not desc.alternatives else " Some -1 entries come before class "
                  "indices; torch (and marginloss) read each row only up to its first -1.")
        if prob:
            return _rec(
                "BCEWithLogitsLoss", _labels.padded_to_multi_hot,
                "target = marginloss.labels.padded_to_multi_hot(target)",
                f"{seen} holds -1-padded class-index lists; BCEWithLogitsLoss needs them as a "
                f"0/1 mask.{caveat}", desc, "MultiLabelMarginLoss (takes the lists directly)")
        return _rec(
            "MultiLabelMarginLoss", None, _NO_CONVERSION,
            f"{seen} holds class-index lists padded with -1 (torch's MultiLabelMarginLoss "
            f"format: row [3, 0, -1, -1] means classes 3 and 0).{caveat}", desc,
            "MultiLabelSoftMarginLoss after marginloss.labels.padded_to_multi_hot(target) "
            "(per-class logistic loss, thresholdable scores)")

    # ---- sparse CSR rows and label sets ----------------------------------------------------
    if conv in ("sparse_csr", "label_sets"):
        if multi_label is False:
            raise contradiction("holds label sets (multi-label), but multi_label=False was "
                                "passed.")
        if conv == "sparse_csr":
            if num_classes is not None and num_classes != desc.shape[-1]:
                raise contradiction(f"has {desc.shape[-1]} columns but num_classes="
                                    f"{num_classes}.")
            return _rec(
                "MultiLabelSoftMarginLoss", _labels.csr_to_multi_hot,
                "target = marginloss.labels.csr_to_multi_hot(target)",
                f"{seen} is sparse CSR rows of labels; the losses take dense targets, so "
                f"densify to a 0/1 mask for MultiLabelSoftMarginLoss (per batch, if memory is "
                f"tight).", desc,
                "MultiLabelMarginLoss after marginloss.labels.multi_hot_to_padded("
                "marginloss.labels.csr_to_multi_hot(target))")
        c = num_classes
        note = ""
        if c is None:
            c = desc.num_classes or 1
            note = (f" num_classes was not given; {c} is the largest label + 1, a lower bound: "
                    f"pass num_classes=C for the width of the model's output.")
        elif desc.num_classes and desc.num_classes > c:
            raise contradiction(f"holds class {desc.num_classes - 1}, which does not fit "
                                f"num_classes={c}.")
        return _rec(
            "MultiLabelSoftMarginLoss",
            functools.partial(_labels.sets_to_multi_hot, num_classes=c),
            f"target = marginloss.labels.sets_to_multi_hot(target, num_classes={c})",
            f"{seen} is a list of label sets (several labels per sample); "
            f"MultiLabelSoftMarginLoss takes them as a 0/1 mask.{note}", desc,
            f"MultiLabelMarginLoss after marginloss.labels.sets_to_padded(target, "
            f"num_classes={c})")

    raise LabelError(f"recommend: no rule for convention {conv!r}.")  # pragma: no cover


def _float_labels(target: torch.Tensor) -> torch.Tensor:
    """Labels as torch's default float dtype (BCEWithLogitsLoss needs float targets)."""
    if target.is_floating_point():
        return target
    return target.to(torch.get_default_dtype())


def _flatten_long(target: torch.Tensor) -> torch.Tensor:
    return target.reshape(-1).long()
