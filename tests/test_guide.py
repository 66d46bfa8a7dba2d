"""marginloss.guide: describe and recommend on each convention, the ambiguous cases and hints,
the rule tables, and the Recommendation report."""

import ast
import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import marginloss
from marginloss import guide
from marginloss import labels as L
from marginloss.errors import DtypeError, LabelError, ShapeError
from marginloss.guide import CONVENTIONS, Recommendation, describe, recommend

MASK = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0]])

# Inputs of the losses that compare several: two embeddings per pair, two scores per ranked
# pair, three embeddings per triplet (4 of each).
_g = torch.Generator().manual_seed(0)
EMB = (torch.randn(4, 8, generator=_g), torch.randn(4, 8, generator=_g))
SCORES = (torch.randn(4, generator=_g), torch.randn(4, generator=_g))
TRIPLET = tuple(torch.randn(4, 8, generator=_g) for _ in range(3))


def _loss_accepts(rec: Recommendation, target, input):
    """The converted target must be accepted by the recommended loss (with validation on)."""
    t = rec.convert(target) if rec.convert else target
    if rec.module == "marginloss":
        fn = getattr(marginloss, rec.loss)()
    else:
        fn = getattr(torch.nn, rec.loss)()
    return fn(input, t)


def test_exported():
    assert marginloss.recommend is recommend
    assert marginloss.Recommendation is Recommendation
    assert {"recommend", "Recommendation"} <= set(marginloss.__all__)
    assert sorted(guide.__all__) == ["CONVENTIONS", "LabelDescription", "Recommendation",
                                     "describe", "recommend"]


def test_binary_01_default_is_bce_with_softmargin_alternative():
    y = torch.tensor([0, 1, 1, 0])
    r = recommend(y)
    assert r.loss == "BCEWithLogitsLoss" and r.module == "torch.nn"
    assert "SoftMarginLoss" in r.alternative and "to_pm1" in r.alternative
    # ambiguous: the reason explains the other readings and the hints that settle them
    assert "num_classes=2" in r.reason and "multi_label=True" in r.reason
    _loss_accepts(r, y, torch.randn(4))


def test_binary_01_prefer_margin_converts_to_pm1():
    y = torch.tensor([0, 1, 1, 0])
    r = recommend(y, prefer="margin")
    assert r.loss == "SoftMarginLoss" and r.convert is L.to_pm1
    assert r.code == "target = marginloss.labels.to_pm1(target)"
    assert r.convert(y).tolist() == [-1, 1, 1, -1]
    _loss_accepts(r, y, torch.randn(4))


def test_binary_01_hint_num_classes_gives_class_indices():
    y = torch.tensor([0, 1, 1, 0])
    r = recommend(y, num_classes=2)
    assert r.loss == "MultiMarginLoss" and "CrossEntropyLoss" in r.alternative
    _loss_accepts(r, y, torch.randn(4, 2))


def test_binary_01_hint_multi_label_gives_one_multi_hot_row():
    y = torch.tensor([0, 1, 1, 0])
    r = recommend(y, multi_label=True)
    assert r.loss == "MultiLabelSoftMarginLoss" and r.convert is None
    _loss_accepts(r, y, torch.randn(4))


def test_binary_column_is_not_ambiguous():
    r = recommend(torch.tensor([[0.0], [1.0]]))
    assert r.loss == "BCEWithLogitsLoss" and r.convert is None
    assert "num_classes=2" not in r.reason


def test_binary_pm1():
    y = torch.tensor([-1.0, 1.0, 1.0])
    r = recommend(y)
    assert r.loss == "SoftMarginLoss" and r.convert is None and r.module == "marginloss"
    assert "BCEWithLogitsLoss" in r.alternative
    _loss_accepts(r, y, torch.randn(3))
    r = recommend(y, prefer="probabilistic")
    assert r.loss == "BCEWithLogitsLoss" and r.convert is L.to_01
    _loss_accepts(r, y, torch.randn(3))


def test_pm1_per_class_with_multi_label_hint():
    y = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    assert recommend(y).loss == "SoftMarginLoss"
    r = recommend(y, multi_label=True)
    assert r.loss == "MultiLabelSoftMarginLoss" and r.convert is L.to_01
    _loss_accepts(r, y, torch.randn(2, 2))


@pytest.mark.parametrize("mask", [MASK, MASK.bool(), MASK.float()])
def test_multi_hot(mask):
    r = recommend(mask)
    assert r.loss == "MultiLabelSoftMarginLoss"
    assert "MultiLabelMarginLoss" in r.alternative and "multi_hot_to_padded" in r.alternative
    if mask.dtype != torch.bool:
        _loss_accepts(r, mask, torch.randn(3, 4))


def test_soft_multi_hot():
    y = torch.tensor([[0.1, 0.9], [0.6, 0.2]])
    r = recommend(y)
    assert r.loss == "MultiLabelSoftMarginLoss" and r.convert is None
    assert "soft" in r.reason
    _loss_accepts(r, y, torch.randn(2, 2))


def test_class_indices():
    y = torch.tensor([3, 0, 2, 1])
    r = recommend(y)
    assert r.loss == "MultiMarginLoss" and r.convert is None
    assert "CrossEntropyLoss" in r.alternative
    _loss_accepts(r, y, torch.randn(4, 4))
    assert recommend(y, prefer="probabilistic").loss == "CrossEntropyLoss"


def test_class_indices_stored_as_float_are_converted():
    y = torch.tensor([3.0, 0.0, 2.0])
    r = recommend(y)
    assert r.loss == "MultiMarginLoss" and r.code == "target = target.long()"
    assert r.convert(y).dtype == torch.int64
    _loss_accepts(r, y, torch.randn(3, 4))


def test_class_indices_hint_conflicts():
    with pytest.raises(LabelError, match="multi_label=True"):
        recommend(torch.tensor([3, 0, 2]), multi_label=True)
    with pytest.raises(LabelError, match="numbered from 1"):
        recommend(torch.tensor([1, 2, 3]), num_classes=3)


def test_one_hot_is_ambiguous_and_hint_settles():
    y = torch.tensor([[0, 0, 1], [1, 0, 0]])
    r = recommend(y)
    assert r.loss == "MultiMarginLoss" and r.convert is L.one_hot_to_indices
    assert "multi_label=True" in r.reason
    _loss_accepts(r, y, torch.randn(2, 3))
    r = recommend(y, multi_label=True)
    assert r.loss == "MultiLabelSoftMarginLoss" and r.convert is None


def test_padded_indices():
    y = L.multi_hot_to_padded(MASK)
    r = recommend(y)
    assert r.loss == "MultiLabelMarginLoss" and r.convert is None
    assert "padded_to_multi_hot" in r.alternative
    _loss_accepts(r, y, torch.randn(3, 4))
    with pytest.raises(LabelError, match="num_classes=6"):
        recommend(y, num_classes=6)
    with pytest.raises(LabelError, match="multi_label=False"):
        recommend(y, multi_label=False)


def test_multi_hot_contradicts_single_label_hint():
    with pytest.raises(LabelError, match="multi_label=False"):
        recommend(MASK, multi_label=False)


def test_label_sets_and_csr():
    sets = [{0, 3}, {1}, {0, 1, 2}]
    r = recommend(sets, num_classes=4)
    assert r.loss == "MultiLabelSoftMarginLoss"
    assert torch.equal(r.convert(sets), MASK.float())
    assert "num_classes=4" in r.code
    r = recommend(sets)  # num_classes inferred, with a warning in the reason
    assert "lower bound" in r.reason
    csr = L.multi_hot_to_csr(MASK)
    r = recommend(csr)
    assert r.loss == "MultiLabelSoftMarginLoss" and r.convert is L.csr_to_multi_hot
    _loss_accepts(r, csr, torch.randn(3, 4))


def test_class_probabilities():
    r = recommend(torch.tensor([[0.3, 0.7], [0.5, 0.5]]))
    assert r.loss == "CrossEntropyLoss"
    assert recommend(torch.tensor([[0.3, 0.7], [0.5, 0.5]]),
                     multi_label=True).loss == "MultiLabelSoftMarginLoss"


@pytest.mark.parametrize("bad", [torch.tensor([0.5, -2.0]), torch.tensor([]),
                                 torch.tensor([1.0, float("nan")])])
def test_not_labels(bad):
    with pytest.raises(LabelError, match="no label convention"):
        recommend(bad)


def test_bad_hints():
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="prefer"):
        recommend(y, prefer="fast")
    with pytest.raises(TypeError, match="multi_label"):
        recommend(y, multi_label="yes")
    with pytest.raises(ValueError, match="num_classes"):
        recommend(y, num_classes=0)


def test_str_and_code_lines():
    r = recommend(torch.tensor([0, 1, 1]), prefer="margin")
    text = str(r)
    assert "marginloss.SoftMarginLoss" in text and "to_pm1" in text
    assert r.loss_code == "loss_fn = marginloss.SoftMarginLoss()"
    assert recommend(torch.tensor([-1.0, 1.0])).code.startswith("#")


# ---- describe ------------------------------------------------------------------------------

MASK4 = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
SETS4 = [{0, 3}, {1}, set(), {0, 1, 2, 3}]
PADDED4 = torch.tensor([[0, 3, -1, -1], [1, -1, -1, -1], [-1, -1, -1, -1], [0, 1, 2, 3]])


@pytest.mark.parametrize("target, convention", [
    (torch.tensor([0, 1, 1]), "binary_01"),
    (torch.tensor([True, False]), "binary_01"),
    (torch.tensor([[0.0], [1.0]]), "binary_01"),
    (torch.tensor([-1.0, 1.0, 1.0]), "binary_pm1"),
    (torch.tensor([[1.0, -1.0], [-1.0, -1.0]]), "binary_pm1"),
    (torch.tensor([0.2, 0.9]), "soft_binary"),
    (torch.tensor([3, 0, 2]), "class_indices"),
    (torch.tensor([3.0, 0.0, 2.0]), "class_indices"),
    (torch.tensor([[0, 1, 0], [1, 0, 0]]), "one_hot"),
    (MASK4, "multi_hot"),
    (torch.tensor([[0.1, 0.7], [0.9, 0.9]]), "soft_multi_hot"),
    (torch.tensor([[0.3, 0.7], [0.5, 0.5]]), "class_probabilities"),
    (PADDED4, "padded_indices"),
    (torch.tensor([2, 0, -1]), "padded_indices"),
    (L.multi_hot_to_csr(MASK4), "sparse_csr"),
    (SETS4, "label_sets"),
    ([[0, 2], [1]], "label_sets"),
    (torch.tensor([]), "empty"),
    (torch.tensor([0.5, -3.2]), "unknown"),
    (torch.tensor([1.0, float("nan")]), "unknown"),
])
def test_describe(target, convention):
    d = describe(target)
    assert d.convention == convention
    assert d.convention in CONVENTIONS
    text = str(d)
    assert convention in text and d.dtype in text


def test_describe_evidence():
    d = describe(torch.tensor([0, 1, 1, 0]))
    assert d.dtype == "torch.int64" and d.shape == (4,) and d.values == "{0, 1}"
    assert d.ambiguous and "class_indices" in d.alternatives
    d = describe(MASK4)
    assert d.num_classes == 4 and not d.ambiguous
    assert "0 to 4 ones per row" in d.evidence
    d = describe(torch.tensor([1, 2, 3]))
    assert "numbered from 1" in d.evidence and d.num_classes == 4
    assert "long" in describe(torch.tensor([3.0, 1.0])).evidence


def test_describe_numpy_and_lists():
    assert describe(np.array([0, 1, 0])).convention == "binary_01"
    assert describe([[0, 1], [1, 0]]).convention == "one_hot"
    d = describe([{0, 5}, {2}])
    assert d.num_classes == 6 and d.shape == (2,)


def test_describe_padded_with_interior_minus_one_is_flagged():
    d = describe(torch.tensor([[1, -1, 2, -1]]))
    assert d.convention == "padded_indices" and d.ambiguous
    assert "first -1" in d.evidence


def test_describe_unreadable_targets_raise_dtype_error():
    with pytest.raises(DtypeError, match="cannot read"):
        describe(object())
    with pytest.raises(DtypeError, match="cannot read list"):
        describe([["a", "b"], ["c", "d"]])  # equal lengths: read as a table, not as label sets
    with pytest.raises(DtypeError, match="must be real"):
        describe(torch.tensor([1 + 1j]))


# ---- the rule tables --------------------------------------------------------------------------

# One target per rule of the guide, in table order: (target, hints, expected loss).
RULE_CASES = [
    (torch.tensor([0, 1, 1, 0]), {"multi_label": True}, "MultiLabelSoftMarginLoss"),
    (torch.tensor([0, 1, 1, 0]), {"num_classes": 2, "prefer": "probabilistic"},
     "CrossEntropyLoss"),
    (torch.tensor([0, 1, 1, 0]), {"num_classes": 2}, "MultiMarginLoss"),
    (torch.tensor([0, 1, 1, 0]), {"prefer": "margin"}, "SoftMarginLoss"),
    (torch.tensor([0, 1, 1, 0]), {}, "BCEWithLogitsLoss"),
    (torch.tensor([[1, -1], [1, -1]]), {"multi_label": True}, "MultiLabelMarginLoss"),
    (torch.tensor([[1.0, -1.0], [-1.0, 1.0]]), {"multi_label": True}, "MultiLabelSoftMarginLoss"),
    (torch.tensor([-1.0, 1.0]), {"prefer": "probabilistic"}, "BCEWithLogitsLoss"),
    (torch.tensor([[1.0, -1.0], [-1.0, 1.0]]), {}, "SoftMarginLoss"),
    (torch.tensor([-1.0, 1.0]), {}, "SoftMarginLoss"),
    (torch.tensor([0.2, 0.9]), {}, "BCEWithLogitsLoss"),
    (torch.tensor([3, 0, 2]), {"prefer": "probabilistic"}, "CrossEntropyLoss"),
    (torch.tensor([3, 0, 2]), {}, "MultiMarginLoss"),
    (torch.tensor([[0, 1], [1, 0]]), {"multi_label": True}, "MultiLabelSoftMarginLoss"),
    (torch.tensor([[0, 1], [1, 0]]), {"prefer": "probabilistic"}, "CrossEntropyLoss"),
    (torch.tensor([[0, 1], [1, 0]]), {}, "MultiMarginLoss"),
    (torch.tensor([[0.3, 0.7], [0.5, 0.5]]), {}, "CrossEntropyLoss"),
    (MASK, {"prefer": "probabilistic"}, "BCEWithLogitsLoss"),
    (MASK, {}, "MultiLabelSoftMarginLoss"),
    (torch.tensor([[0.1, 0.9], [0.6, 0.2]]), {}, "MultiLabelSoftMarginLoss"),
    (L.multi_hot_to_padded(MASK), {"prefer": "probabilistic"}, "BCEWithLogitsLoss"),
    (L.multi_hot_to_padded(MASK), {}, "MultiLabelMarginLoss"),
    (L.multi_hot_to_csr(MASK), {}, "MultiLabelSoftMarginLoss"),
    ([{0, 3}, {1}], {}, "MultiLabelSoftMarginLoss"),
    (torch.tensor([1, 0, 0, 1]), {"inputs": EMB}, "CosineEmbeddingLoss"),
    (torch.tensor([1.0, -1.0, -1.0, 1.0]), {"inputs": EMB}, "CosineEmbeddingLoss"),
    (torch.tensor([1, 0, -1, 1]), {"inputs": SCORES}, "BCEWithLogitsLoss"),
    (torch.tensor([0.9, 0.2, 0.5, 1.0]), {"inputs": SCORES}, "BCEWithLogitsLoss"),
    (torch.tensor([1.0, -1.0, -1.0, 1.0]), {"inputs": SCORES, "prefer": "probabilistic"},
     "BCEWithLogitsLoss"),
    (torch.tensor([1, 0, 0, 1]), {"inputs": SCORES}, "MarginRankingLoss"),
    (torch.tensor([1.0, -1.0, -1.0, 1.0]), {"inputs": SCORES}, "MarginRankingLoss"),
    (None, {"inputs": TRIPLET}, "TripletMarginLoss"),
]


def _case(target, **hints):
    return guide._Case(describe(target, inputs=hints.get("inputs")), hints.get("multi_label"),
                       hints.get("num_classes"), hints.get("prefer", "auto"))


def test_each_rule_is_reached_in_table_order():
    """RULE_CASES[i] is decided by rule i: every rule is reachable, none is shadowed."""
    assert len(RULE_CASES) == len(guide._RULES)
    for i, (target, hints, loss) in enumerate(RULE_CASES):
        assert guide._first(guide._RULES, _case(target, **hints)) is guide._RULES[i], i
        assert recommend(target, **hints).loss == loss, i


def test_every_convention_has_a_default_rule():
    """Each convention but unknown/empty ends in a rule that always applies: no fall-through."""
    for conv in set(CONVENTIONS) - {"unknown", "empty"}:
        rules = [r for r in guide._RULES if conv in r.conventions]
        assert rules and rules[-1].when is guide._always, conv
    assert {c for r in guide._CONFLICTS for c in r.conventions} <= set(CONVENTIONS)


def test_rules_name_a_loss_and_its_module():
    margin = {"SoftMarginLoss", "MultiLabelSoftMarginLoss", "MultiMarginLoss",
              "MultiLabelMarginLoss", "CosineEmbeddingLoss", "MarginRankingLoss",
              "TripletMarginLoss"}
    for rule in guide._RULES:
        module, _, loss = rule.loss.rpartition(".")
        assert module == ("marginloss" if loss in margin else "torch.nn"), rule.loss
        assert hasattr(torch.nn, loss)


@pytest.mark.parametrize("i", range(len(RULE_CASES)))
def test_code_line_does_what_convert_does(i):
    """``code`` is the conversion written out: running it gives what ``convert`` returns."""
    target, hints, _ = RULE_CASES[i]
    r = recommend(target, **hints)
    scope = {"target": target, "marginloss": marginloss}
    exec(r.code, scope)
    if r.convert is None:
        assert r.code.startswith("#") and scope["target"] is target
    else:
        expected = r.convert(target)
        assert torch.equal(scope["target"], expected) and scope["target"].dtype == expected.dtype


@pytest.mark.parametrize("target, hints, match", [
    (torch.tensor([0.5, -2.0]), {}, "is in no label convention"),
    (torch.tensor([3, 0, 2]), {"multi_label": True}, "multi_label=True was passed"),
    (torch.tensor([1, 2, 3]), {"num_classes": 3}, "index 3, which does not fit num_classes=3 "
                                                 r"\(if classes are numbered from 1"),
    (torch.tensor([1, 5, 3]), {"num_classes": 3}, r"index 5, which does not fit num_classes=3\.$"),
    (MASK, {"multi_label": False}, "several labels"),
    (torch.tensor([[0.1, 0.9], [0.6, 0.2]]), {"multi_label": False}, "multi_label=False"),
    (torch.tensor([[2, 0, -1]]), {"multi_label": False}, "-1-padded class-index lists"),
    (torch.tensor([[2, 0, -1]]), {"num_classes": 4}, "rows of width 3"),
    (L.multi_hot_to_csr(MASK), {"multi_label": False}, "label sets"),
    (L.multi_hot_to_csr(MASK), {"num_classes": 5}, "has 4 columns but num_classes=5"),
    ([{0, 3}, {1}], {"num_classes": 3}, "holds class 3, which does not fit num_classes=3"),
    ([{0, 3}, {1}], {"multi_label": False}, "label sets"),
])
def test_conflicts(target, hints, match):
    with pytest.raises(LabelError, match=match) as info:
        recommend(target, **hints)
    message = str(info.value)
    assert message.startswith("recommend: The target (") and "\n" not in message


def test_class_probabilities_with_single_label_hint_is_no_conflict():
    r = recommend(torch.tensor([[0.3, 0.7], [0.5, 0.5]]), multi_label=False)
    assert r.loss == "CrossEntropyLoss" and r.convert is None


def test_multi_label_hint_accepts_bool_likes():
    y = torch.tensor([[0, 1], [1, 0]])
    assert recommend(y, multi_label=1).loss == recommend(y, multi_label=True).loss
    assert recommend(y, multi_label=np.bool_(True)).loss == "MultiLabelSoftMarginLoss"


def test_per_position_class_indices_are_flattened():
    y = torch.randint(0, 5, (2, 3, 4))
    r = recommend(y)
    assert r.loss == "MultiMarginLoss" and r.convert(y).shape == (24,)
    assert r.code.startswith("target = target.reshape(-1).long()")


def test_binary_column_margin_keeps_its_shape():
    r = recommend(torch.tensor([[0], [1]]), prefer="margin")
    assert r.convert is L.to_pm1 and "(N, 1)" in r.code


# ---- losses that compare several inputs: pairs, ranking preferences, triplets ------------------


@pytest.mark.parametrize("target, inputs, convention, encoding", [
    (torch.tensor([1.0, -1.0, -1.0, 1.0]), EMB, "pair_labels", "pm1"),
    (torch.tensor([1, 0, 0, 1]), EMB, "pair_labels", "01"),
    (torch.tensor([True, False, True, True]), EMB, "pair_labels", "01"),
    (torch.tensor(-1.0), (EMB[0][0], EMB[1][0]), "pair_labels", "pm1"),  # (D,) pair, 0-d label
    (torch.tensor([1.0, -1.0, -1.0, 1.0]), (EMB[0][:1], EMB[1]), "pair_labels", "pm1"),
    (torch.tensor([1.0, -1.0, -1.0, 1.0]), SCORES, "ranking_preferences", "pm1"),
    (torch.tensor([1, 0, 0, 1]), SCORES, "ranking_preferences", "01"),
    (torch.tensor([1, 0, -1, 1]), SCORES, "ranking_preferences", "ties"),
    (torch.tensor([1.0, 0.0, -1.0, 1.0]), SCORES, "ranking_preferences", "ties"),
    (torch.tensor([0.9, 0.2, 0.5, 1.0]), SCORES, "ranking_preferences", "soft"),
    # scores broadcast as torch's margin_ranking_loss does: (N, 1) against (1, M)
    (torch.ones(3, 5), (torch.randn(3, 1), torch.randn(1, 5)), "ranking_preferences", "01"),
    (None, TRIPLET, "triplets", None),
    (None, (TRIPLET[0][:1], TRIPLET[1], TRIPLET[2]), "triplets", None),  # anchor (1, D)
    (torch.tensor([3, 1, 2, 0]), EMB, "unknown", None),  # class labels, not pair labels
    (torch.tensor([0.3, 2.5, 1.0, 4.0]), SCORES, "unknown", None),  # grades, not preferences
    (torch.tensor([0.9, 0.2, 0.5, 1.0]), EMB, "unknown", None),  # no soft pair labels
    (torch.tensor([1.0, float("nan"), 1.0, 1.0]), SCORES, "unknown", None),
    (torch.tensor([]), (torch.randn(0), torch.randn(0)), "empty", None),
])
def test_describe_with_inputs(target, inputs, convention, encoding):
    d = describe(target, inputs=inputs)
    assert (d.convention, d.encoding) == (convention, encoding)
    assert d.inputs == tuple(tuple(x.shape) for x in inputs)
    assert d.convention in CONVENTIONS
    text = str(d)
    assert f"[{convention}]" in text and "inputs " + guide._shapes_text(d.inputs) in text
    assert ("no target" in text) == (target is None)


def test_describe_reads_only_the_inputs_shapes():
    """The inputs' values are never read: meta tensors (no data) and NumPy arrays work."""
    meta = (torch.empty(4, 8, device="meta"), torch.empty(4, 8, device="meta"))
    assert describe(torch.tensor([1, -1, 1, -1]), inputs=meta).convention == "pair_labels"
    arrays = (np.zeros(4), np.zeros(4))
    assert describe(np.array([1, -1, 1, -1]), inputs=arrays).convention == "ranking_preferences"
    assert describe(None, inputs=[torch.empty(2, 3, device="meta")] * 3).convention == "triplets"


def test_describe_triplets_with_a_target_says_it_is_not_used():
    d = describe(torch.tensor([0, 1, 1, 0]), inputs=TRIPLET)
    assert d.convention == "triplets" and "not used" in d.evidence and d.dtype == "torch.int64"
    r = recommend(torch.tensor([0, 1, 1, 0]), inputs=TRIPLET)
    assert r.loss == "TripletMarginLoss" and "not used" in r.reason
    assert "not used" not in recommend(None, inputs=TRIPLET).reason


@pytest.mark.parametrize("target, inputs, match", [
    (torch.tensor([1, -1, 1, 1]), (EMB[0], EMB[1][0]), r"shapes \(4, 8\) and \(8,\); .* one rank"),
    (torch.tensor([1, -1, 1, 1]), (EMB[0], EMB[1][:3]), "sizes that broadcast"),
    (torch.tensor([1, -1]), EMB, r"target of shape \(2,\) fit no loss"),
    (torch.ones(4, 8), (torch.randn(4, 8, 2), torch.randn(4, 8, 2)), "fit no loss"),  # 2-D pairs
    (None, (TRIPLET[0], TRIPLET[1][0], TRIPLET[2]), "one rank for all three"),
    (None, (TRIPLET[0], TRIPLET[1][:, :3], TRIPLET[2]), "one rank for all three"),
])
def test_describe_shapes_that_fit_no_loss(target, inputs, match):
    with pytest.raises(ShapeError, match=match) as info:
        describe(target, inputs=inputs)
    assert str(info.value).startswith("describe: ")
    with pytest.raises(ShapeError):
        recommend(target, inputs=inputs)


@pytest.mark.parametrize("target, inputs, match", [
    (torch.tensor([1, -1]), EMB[0], "must be a tuple .* got Tensor"),
    (torch.tensor([1, -1]), "ab", "must be a tuple .* got str"),
    (torch.tensor([1, -1]), (EMB[0],), "got 1"),
    (torch.tensor([1, -1]), TRIPLET + (EMB[0],), "got 4"),
    (torch.tensor([1, -1]), (EMB[0], [1.0, 2.0]), r"inputs\[1\]. must be a tensor"),
    (None, EMB, "two inputs need a target"),
])
def test_describe_bad_inputs(target, inputs, match):
    with pytest.raises(ValueError, match=match):
        describe(target, inputs=inputs)


def test_pair_labels_01_are_converted_to_pm1():
    y = torch.tensor([1, 0, 0, 1])
    r = recommend(y, inputs=EMB)
    assert r.loss == "CosineEmbeddingLoss" and r.module == "marginloss"
    assert r.convert is L.to_pm1 and r.convert(y).tolist() == [1, -1, -1, 1]
    assert "to_pm1" in r.reason and "[-1, 1]" in r.reason  # the margin is a cosine
    assert "HingeEmbeddingLoss" in r.alternative and "pairwise_distance" in r.alternative
    assert "distance, not a similarity" in r.alternative
    assert r.call == "loss = loss_fn(input1, input2, target)"


def test_ranking_preferences():
    y = torch.tensor([1.0, -1.0, -1.0, 1.0])
    r = recommend(y, inputs=SCORES)
    assert r.loss == "MarginRankingLoss" and r.convert is None
    assert "input1 to score higher" in r.reason and "margin is 0" in r.reason
    assert "to_01" in r.alternative
    r = recommend(torch.tensor([1, 0, 0, 1]), inputs=SCORES)
    assert r.loss == "MarginRankingLoss" and r.convert is L.to_pm1 and "max(0, margin)" in r.reason
    r = recommend(y, inputs=SCORES, prefer="probabilistic")
    assert r.loss == "BCEWithLogitsLoss" and r.convert is L.to_01
    assert r.call == "loss = loss_fn(input1 - input2, target)"
    r = recommend(torch.tensor([1.0, 0.0, 0.0, 1.0]), inputs=SCORES, prefer="probabilistic")
    assert r.loss == "BCEWithLogitsLoss" and r.convert is None


def test_ranking_ties_and_soft_preferences_go_to_ranknet():
    r = recommend(torch.tensor([1, 0, -1, 1]), inputs=SCORES)
    assert r.loss == "BCEWithLogitsLoss" and r.call == "loss = loss_fn(input1 - input2, target)"
    assert r.convert(torch.tensor([1, 0, -1])).tolist() == [1.0, 0.5, 0.0]
    assert "tie" in r.reason and "target != 0" in r.alternative
    r = recommend(torch.tensor([0.9, 0.2, 0.5, 1.0]), inputs=SCORES)
    assert r.loss == "BCEWithLogitsLoss" and r.convert is None and "soft" in r.reason


def test_triplets():
    r = recommend(None, inputs=TRIPLET)
    assert r.loss == "TripletMarginLoss" and r.module == "marginloss" and r.convert is None
    assert r.code.startswith("# no target")
    assert r.call == "loss = loss_fn(anchor, positive, negative)"
    for word in ("p=2", "eps", "swap=True", "distance units"):
        assert word in r.reason
    assert "TripletMarginWithDistanceLoss" in r.alternative


@pytest.mark.parametrize("target, inputs, hints, match", [
    (torch.tensor([3, 1, 2, 0]), EMB, {}, r"neither pair labels .*to_pm1\(c1 == c2\)"),
    (torch.tensor([0.3, 2.5, 1.0, 4.0]), SCORES, {}, r"torch.sign\(t1 - t2\)"),
    (torch.tensor([1, -1, 1, 1]), EMB, {"multi_label": True}, "drop the hint"),
    (torch.tensor([1, -1, 1, 1]), SCORES, {"num_classes": 2}, "drop the hint"),
    (None, TRIPLET, {"multi_label": False}, "drop the hint"),
])
def test_multi_input_conflicts(target, inputs, hints, match):
    with pytest.raises(LabelError, match=match) as info:
        recommend(target, inputs=inputs, **hints)
    message = str(info.value)
    assert message.startswith("recommend: The t") and "\n" not in message
    assert "with inputs of shapes" in message or "The triplet (inputs of shapes" in message


MULTI_INPUT_CASES = [c for c in RULE_CASES if "inputs" in c[1]]


@pytest.mark.parametrize("i", range(len(MULTI_INPUT_CASES)))
def test_recommendation_runs_as_printed(i):
    """``code``, ``loss_code`` and ``call`` run as printed, with the inputs named as ``call``
    names them, and give what the same loss from torch.nn gives on the converted target."""
    target, hints, loss = MULTI_INPUT_CASES[i]
    r = recommend(target, **hints)
    inputs = hints["inputs"]
    names = ("anchor", "positive", "negative") if len(inputs) == 3 else ("input1", "input2")
    scope = {"torch": torch, "marginloss": marginloss, "target": target, **dict(zip(names, inputs))}
    for line in (r.code, r.loss_code, r.call):
        exec(line, scope)
    oracle_scope = {**scope, "loss_fn": getattr(torch.nn, loss)()}
    exec(r.call, oracle_scope)
    assert scope["loss"].shape == () and torch.isfinite(scope["loss"])
    torch.testing.assert_close(scope["loss"], oracle_scope["loss"])


@pytest.mark.parametrize("target, inputs", [
    (torch.tensor([1.0, 0.0, 0.0, 1.0]), EMB),
    (torch.tensor([1.0, 0.0, 0.0, 1.0]), SCORES),
])
def test_the_0_1_pitfall_the_reason_names_is_caught(target, inputs):
    """The reasons of the 0/1 rules say torch learns nothing from a 0 label and marginloss
    raises LabelError: both hold."""
    r = recommend(target, inputs=inputs)
    assert "marginloss raises LabelError" in r.reason and "teach nothing" in r.reason
    ours = getattr(marginloss, r.loss)()
    with pytest.raises(LabelError):
        ours(*inputs, target)
    theirs = getattr(torch.nn, r.loss)(reduction="none")
    x1, x2 = (x.detach().clone().requires_grad_() for x in inputs)
    theirs(x1, x2, target)[target == 0].sum().backward()
    assert not x1.grad.any() and not x2.grad.any()  # the 0 labels move nothing


def test_multi_input_report_has_the_call_line():
    lines = str(recommend(torch.tensor([1, 0, 0, 1]), inputs=SCORES)).splitlines()
    assert lines[1].startswith("evidence:    inputs (4,) and (4,); target dtype torch.int64")
    assert "call:        loss = loss_fn(input1, input2, target)" in lines
    lines = str(recommend(None, inputs=TRIPLET)).splitlines()
    assert lines[1].startswith("evidence:    inputs (4, 8), (4, 8) and (4, 8); no target.")
    assert lines[-2] == "call:        loss = loss_fn(anchor, positive, negative)"


# ---- the Recommendation ------------------------------------------------------------------------


def test_recommendation_carries_each_fact_once():
    names = [f.name for f in dataclasses.fields(Recommendation)]
    assert names == ["loss", "module", "convert", "code", "call", "reason", "alternative",
                     "description"]
    r = recommend(torch.tensor([0, 1, 1]))
    assert r.convention == r.description.convention == "binary_01"
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.loss = "x"
    with pytest.raises(TypeError):
        Recommendation("SoftMarginLoss", "marginloss", None, "#", "l", "", None, r.description)


def test_str_is_the_whole_report():
    r = recommend(torch.tensor([0, 1, 1, 0]), prefer="margin")
    d = r.description
    assert str(r).splitlines() == [
        f"convention:  {d.summary} [binary_01]",
        f"evidence:    dtype torch.int64, shape (4,), values {{0, 1}}. {d.evidence}",
        "could be:    " + "; ".join(CONVENTIONS[a] for a in d.alternatives),
        "loss:        marginloss.SoftMarginLoss",
        f"why:         {r.reason}",
        "convert:     target = marginloss.labels.to_pm1(target)",
        "then:        loss_fn = marginloss.SoftMarginLoss()",
        f"alternative: {r.alternative}",
    ]
    unambiguous = str(recommend(torch.tensor([[0.0], [1.0]])))
    assert "could be:" not in unambiguous
    assert [line[:12] for line in unambiguous.splitlines()] == [
        "convention: ", "evidence:   ", "loss:       ", "why:        ", "convert:    ",
        "then:       ", "alternative:"]


@pytest.mark.parametrize("fn", [describe, recommend])
def test_docstrings_have_every_section(fn):
    doc = inspect.getdoc(fn)
    for section in ("Args:", "Returns:", "Raises:", "Examples:"):
        assert section in doc


# ---- module hygiene ------------------------------------------------------------------------------


def _imports(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module or "")
    return found


def test_guide_and_labels_import_only_torch_and_the_errors():
    assert _imports(guide) <= {"__future__", "functools", "collections.abc", "dataclasses",
                               "typing", "torch", "marginloss", "marginloss.errors",
                               "marginloss.labels"}
    assert _imports(L) <= {"__future__", "warnings", "collections.abc", "torch",
                           "marginloss.errors"}


def test_recommend_module_is_gone():
    with pytest.raises(ImportError):
        __import__("marginloss._recommend")


def test_guide_labels_and_cli_pull_no_optional_dependency():
    """On top of ``import marginloss``, these modules import no optional dependency (what the
    package root imports is tested with the package)."""
    code = ("import sys, marginloss; before = set(sys.modules); "
            "import marginloss.guide, marginloss.labels, marginloss.cli; "
            "from marginloss.cli import _build_parser; _build_parser(); "
            "new = set(sys.modules) - before; "
            "print(sorted(m for m in new if m.split('.')[0] in "
            "('sklearn', 'river', 'matplotlib', 'rich', 'triton', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
