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
from marginloss.errors import DtypeError, LabelError
from marginloss.guide import CONVENTIONS, Recommendation, describe, recommend

MASK = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0]])


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
]


def _case(target, **hints):
    return guide._Case(describe(target), hints.get("multi_label"), hints.get("num_classes"),
                       hints.get("prefer", "auto"))


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
              "MultiLabelMarginLoss"}
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


# ---- the Recommendation ------------------------------------------------------------------------


def test_recommendation_carries_each_fact_once():
    names = [f.name for f in dataclasses.fields(Recommendation)]
    assert names == ["loss", "module", "convert", "code", "reason", "alternative",
                     "description"]
    r = recommend(torch.tensor([0, 1, 1]))
    assert r.convention == r.description.convention == "binary_01"
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.loss = "x"
    with pytest.raises(TypeError):
        Recommendation("SoftMarginLoss", "marginloss", None, "#", "", None, r.description)


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
