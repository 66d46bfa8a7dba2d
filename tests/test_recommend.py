"""marginloss.recommend: the decision guide on each convention, the ambiguous cases and hints."""

import pytest
import torch

import marginloss
from marginloss import LabelError, Recommendation, recommend
from marginloss import labels as L

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
    assert {"recommend", "Recommendation"} <= set(marginloss.__all__)


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
