"""marginloss.labels: every converter, round trips, errors (describe is in test_guide.py)."""

import inspect
import warnings

import pytest
import torch

import marginloss
from marginloss import errors
from marginloss import labels as L
from marginloss.errors import DtypeError, LabelError, ShapeError

CONVERTERS = ["to_pm1", "to_01", "indices_to_one_hot", "indices_to_multi_hot",
              "one_hot_to_indices", "multi_hot_to_padded", "padded_to_multi_hot", "padded_to_sets",
              "sets_to_padded", "sets_to_multi_hot", "multi_hot_to_sets", "multi_hot_to_csr",
              "csr_to_multi_hot", "sets_to_csr", "csr_to_sets", "shortlist_target",
              "from_padded"]

MASK = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
SETS = [{0, 3}, {1}, set(), {0, 1, 2, 3}]
PADDED = torch.tensor([[0, 3, -1, -1], [1, -1, -1, -1], [-1, -1, -1, -1], [0, 1, 2, 3]])


def test_exported_from_package():
    assert marginloss.labels is L
    assert "labels" in marginloss.__all__


def test_labels_holds_only_the_converters():
    assert sorted(L.__all__) == sorted(CONVERTERS)
    public = {n for n, v in vars(L).items() if inspect.isfunction(v) and not n.startswith("_")
              and v.__module__ == L.__name__}
    assert public == set(CONVERTERS)
    for moved in ("describe", "LabelDescription", "CONVENTIONS"):
        assert not hasattr(L, moved)  # they live in marginloss.guide


@pytest.mark.parametrize("name", CONVERTERS)
def test_docstrings_have_every_section(name):
    doc = inspect.getdoc(getattr(L, name))
    for section in ("Args:", "Returns:", "Raises:", "Examples:"):
        assert section in doc, (name, section)


def test_errors_are_marginloss_errors_classes():
    """The converters raise the public classes of marginloss.errors (not private copies)."""
    with pytest.raises(errors.LabelError) as info:
        L.to_pm1(torch.tensor([0, 2]))
    assert type(info.value) is errors.LabelError
    with pytest.raises(errors.DtypeError) as info:
        L.to_pm1([0, 1])
    assert type(info.value) is errors.DtypeError
    with pytest.raises(errors.ShapeError) as info:
        L.multi_hot_to_padded(torch.zeros(2, 2, 2))
    assert type(info.value) is errors.ShapeError
    with pytest.raises(errors.DtypeError, match="must be real"):
        L.to_pm1(torch.tensor([1 + 1j]))


# ---- binary -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int64, torch.float32, torch.float64, torch.uint8])
def test_pm1_round_trip(dtype):
    y = torch.tensor([0, 1, 1, 0, 1], dtype=dtype)
    pm = L.to_pm1(y)
    assert pm.tolist() == [-1, 1, 1, -1, 1]
    assert pm.is_floating_point()
    if dtype.is_floating_point:
        assert pm.dtype == dtype
    back = L.to_01(pm)
    assert torch.equal(back, y.to(back.dtype))


def test_pm1_bool_and_dtype():
    out = L.to_pm1(torch.tensor([True, False]), dtype=torch.float64)
    assert out.dtype == torch.float64 and out.tolist() == [1.0, -1.0]


def test_pm1_feeds_soft_margin_loss():
    y01 = torch.tensor([0, 1, 1, 0])
    x = torch.randn(4)
    with pytest.raises(marginloss.LabelError):  # the loss's own check
        marginloss.soft_margin_loss(x, y01.float())
    ref = torch.nn.functional.soft_margin_loss(x, 2 * y01.float() - 1)
    assert torch.allclose(marginloss.soft_margin_loss(x, L.to_pm1(y01)), ref)


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([-1.0, 1.0]), "already in {-1, \\+1}"),
    (torch.tensor([0.2, 0.9]), "Soft labels"),
    (torch.tensor([0, 2]), "only 0 and 1"),
])
def test_to_pm1_errors(bad, match):
    with pytest.raises(LabelError, match=match):
        L.to_pm1(bad)


def test_to_01_errors():
    with pytest.raises(LabelError, match="looks like {0, 1}"):
        L.to_01(torch.tensor([0.0, 1.0]))
    with pytest.raises(DtypeError):
        L.to_01(torch.tensor([True]))
    with pytest.raises(DtypeError):
        L.to_pm1([0, 1])
    with pytest.raises(DtypeError):
        L.to_pm1(torch.tensor([0, 1]), dtype=torch.int64)


def test_empty_binary():
    assert L.to_pm1(torch.tensor([])).numel() == 0
    assert L.to_01(torch.tensor([])).numel() == 0


# ---- indices <-> one-hot / multi-hot ---------------------------------------------------------


def test_one_hot_round_trip():
    idx = torch.tensor([2, 0, 1, 2])
    oh = L.indices_to_one_hot(idx, num_classes=3)
    assert oh.shape == (4, 3) and oh.dtype == torch.get_default_dtype()
    assert torch.equal(oh, torch.nn.functional.one_hot(idx, 3).float())
    assert torch.equal(L.one_hot_to_indices(oh), idx)
    assert L.one_hot_to_indices(oh.bool()).dtype == torch.int64


def test_one_hot_single_sample():
    assert L.indices_to_one_hot(torch.tensor(1), 3).tolist() == [0, 1, 0]
    assert int(L.one_hot_to_indices(torch.tensor([0, 0, 1]))) == 2


def test_indices_to_multi_hot_2d():
    out = L.indices_to_multi_hot(torch.tensor([[0, 3], [1, 1]]), num_classes=4)
    assert out.tolist() == [[1, 0, 0, 1], [0, 1, 0, 0]]


def test_indices_errors():
    with pytest.raises(LabelError, match="numbered from 1"):
        L.indices_to_one_hot(torch.tensor([1, 2, 3]), num_classes=3)
    with pytest.raises(LabelError, match="padded_to_multi_hot"):
        L.indices_to_multi_hot(torch.tensor([[0, -1]]), num_classes=3)
    with pytest.raises(DtypeError, match="long"):
        L.indices_to_one_hot(torch.tensor([1.0]), num_classes=3)
    with pytest.raises(ShapeError, match="indices_to_multi_hot"):
        L.indices_to_one_hot(torch.tensor([[1, 2]]), num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        L.indices_to_one_hot(torch.tensor([1]), num_classes=0)


def test_one_hot_to_indices_errors():
    with pytest.raises(LabelError, match="row 1 has 2"):
        L.one_hot_to_indices(torch.tensor([[1, 0], [1, 1]]))
    with pytest.raises(LabelError, match="row 0 has 0"):
        L.one_hot_to_indices(torch.tensor([[0, 0], [1, 0]]))
    with pytest.raises(LabelError, match="argmax"):
        L.one_hot_to_indices(torch.tensor([[0.3, 0.7]]))
    with pytest.raises(ShapeError):
        L.one_hot_to_indices(torch.zeros(2, 2, 2))


# ---- multi-hot <-> padded <-> sets <-> csr ------------------------------------------------


def test_multi_hot_to_padded_and_back():
    padded = L.multi_hot_to_padded(MASK)
    assert torch.equal(padded, PADDED)
    assert padded.dtype == torch.int64
    assert torch.equal(L.padded_to_multi_hot(padded), MASK.float())
    assert torch.equal(L.multi_hot_to_padded(MASK.bool()), PADDED)


def test_padded_matches_torch_multilabel_margin_loss():
    x = torch.randn(4, 4)
    ref = torch.nn.functional.multilabel_margin_loss(x, PADDED, reduction="none")
    ours = marginloss.multilabel_margin_loss(x, L.multi_hot_to_padded(MASK), reduction="none")
    assert torch.allclose(ours, ref)


def test_padded_reads_up_to_first_minus_one():
    # torch ignores what follows the first -1 of a row
    out = L.padded_to_multi_hot(torch.tensor([[1, -1, 2, -1]]))
    assert out.tolist() == [[0, 1, 0, 0]]
    assert L.padded_to_sets(torch.tensor([2, 0, -1])) == [{0, 2}]


def test_padded_errors():
    with pytest.raises(LabelError, match="row width"):
        L.padded_to_multi_hot(torch.tensor([[0, 5, -1]]))
    with pytest.raises(LabelError):
        L.padded_to_multi_hot(torch.tensor([[0, -2, -1]]))
    with pytest.raises(DtypeError, match="0/1 mask already"):
        L.padded_to_multi_hot(torch.tensor([[0.0, 1.0]]))
    with pytest.raises(LabelError, match="to_01"):
        L.multi_hot_to_padded(torch.tensor([[1, -1]]))
    with pytest.raises(LabelError, match="threshold"):
        L.multi_hot_to_padded(torch.tensor([[0.2, 0.8]]))
    with pytest.raises(ShapeError):
        L.multi_hot_to_padded(torch.zeros(2, 2, 2))


def test_sets_round_trips():
    assert torch.equal(L.sets_to_padded(SETS, num_classes=4), PADDED)
    assert torch.equal(L.sets_to_multi_hot(SETS, num_classes=4), MASK.float())
    assert L.multi_hot_to_sets(MASK) == SETS
    assert L.padded_to_sets(PADDED) == SETS
    # lists, tuples, tensors and duplicates are accepted as label collections
    assert L.sets_to_padded([[3, 0, 3], (1,), torch.tensor([], dtype=torch.long), range(4)],
                            num_classes=4).tolist() == PADDED.tolist()


def test_sets_errors():
    with pytest.raises(LabelError, match="outside \\[0, 4\\)"):
        L.sets_to_multi_hot([{4}], num_classes=4)
    with pytest.raises(DtypeError, match="integer class indices"):
        L.sets_to_padded([{0.5}], num_classes=4)
    with pytest.raises(DtypeError, match="Wrap single labels"):
        L.sets_to_padded([1, 2], num_classes=4)
    with pytest.raises(DtypeError):
        L.sets_to_padded(torch.tensor([[0, 1]]), num_classes=4)
    with pytest.raises(ValueError, match="num_classes"):
        L.sets_to_padded([{0}], num_classes=None)


def test_csr_round_trips():
    csr = L.multi_hot_to_csr(MASK)
    assert csr.layout == torch.sparse_csr and csr.shape == (4, 4)
    assert torch.equal(csr.to_dense(), MASK.float())
    assert torch.equal(L.csr_to_multi_hot(csr), MASK.float())
    assert L.csr_to_sets(csr) == SETS
    csr2 = L.sets_to_csr(SETS, num_classes=4)
    assert torch.equal(csr2.crow_indices(), csr.crow_indices())
    assert torch.equal(csr2.col_indices(), csr.col_indices())
    # CSR -> padded, through the mask
    assert torch.equal(L.multi_hot_to_padded(L.csr_to_multi_hot(csr)), PADDED)


def test_csr_builders_emit_no_warning():
    """torch warns that sparse CSR support is in beta; that is not the caller's concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        csr = L.multi_hot_to_csr(MASK)
        csr2 = L.sets_to_csr(SETS, num_classes=4)
        assert L.csr_to_sets(csr) == L.csr_to_sets(csr2) == SETS


def test_csr_errors():
    with pytest.raises(DtypeError, match="sparse_csr"):
        L.csr_to_multi_hot(MASK)
    with pytest.raises(ShapeError):
        L.multi_hot_to_csr(torch.tensor([1, 0]))
    with pytest.raises(DtypeError, match="csr_to_multi_hot"):
        L.multi_hot_to_padded(L.multi_hot_to_csr(MASK))


def test_random_round_trips():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(50, 9, generator=g) < 0.3).long()
    padded = L.multi_hot_to_padded(mask)
    sets = L.padded_to_sets(padded)
    assert torch.equal(L.sets_to_multi_hot(sets, 9), mask.float())
    assert torch.equal(L.csr_to_multi_hot(L.sets_to_csr(sets, 9)), mask.float())
    assert torch.equal(L.sets_to_padded(L.csr_to_sets(L.multi_hot_to_csr(mask)), 9), padded)


# ---- shortlists: class space -> candidate space; lists padded with -1 and/or C ---------------


def _shortlist_by_hand(sets, candidates, num_classes):
    out = torch.zeros(candidates.shape)
    for n, row in enumerate(candidates.tolist()):
        for k, c in enumerate(row):
            out[n, k] = float(0 <= c < num_classes and c in sets[n])
    return out


def _positive_forms(sets, num_classes):
    """The same positives as a list, a CSR, a padded (N, P) tensor and a (rows, cols) pair."""
    lists = [torch.tensor(sorted(s), dtype=torch.long) for s in sets]
    width = max(len(s) for s in sets) + 2
    padded = torch.full((len(sets), width), -1)
    for n, s in enumerate(sets):
        padded[n, 1: 1 + len(s)] = torch.tensor(sorted(s), dtype=torch.long)  # -1 in front
        padded[n, -1] = num_classes  # and C at the end
    rows = torch.cat([torch.full((len(s),), n) for n, s in enumerate(sets)])
    return {"list": lists, "csr": L.sets_to_csr(sets, num_classes), "padded": padded,
            "pair": (rows, torch.cat(lists))}


def test_shortlist_target_every_form():
    g = torch.Generator().manual_seed(0)
    c, n, k = 30, 6, 8
    sets = [set(torch.randperm(c, generator=g)[:m].tolist()) for m in (3, 0, 5, 1, 7, 2)]
    cand = torch.stack([torch.randperm(c, generator=g)[:k] for _ in range(n)])
    cand[0, :3] = torch.tensor(sorted(sets[0]))  # positives among the candidates
    cand[2, 2] = cand[2, 5] = sorted(sets[2])[0]  # listed twice: both slots
    cand[3, 0], cand[4, -2:] = -1, c  # padding
    want = _shortlist_by_hand(sets, cand, c)
    assert want.sum() >= 5
    for form, positives in _positive_forms(sets, c).items():
        got = L.shortlist_target(positives, cand, c)
        assert torch.equal(got, want), form
    assert L.shortlist_target(_positive_forms(sets, c)["list"], cand, c,
                              dtype=torch.float64).dtype == torch.float64


def test_shortlist_target_keeps_csr_values_and_reads_sets():
    cand = torch.tensor([[3, 1, 0], [2, 2, 4]])
    soft = torch.tensor([[0.0, 0.5, 0.0, 0.25, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0]])
    assert torch.equal(L.shortlist_target(soft.to_sparse_csr(), cand, 5),
                       torch.tensor([[0.25, 0.5, 0.0], [1.0, 1.0, 0.0]]))
    twice = [torch.tensor([1, 1]), torch.tensor([4, 4, 2])]  # an index form is a set
    assert torch.equal(L.shortlist_target(twice, cand, 5),
                       torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))
    empty = [torch.zeros(0, dtype=torch.long)] * 2
    assert torch.equal(L.shortlist_target(empty, cand, 5), torch.zeros(2, 3))


def test_shortlist_target_feeds_the_shortlist_head():
    """The converted target gives the head's shortlist loss of the class-space positives:
    torch's loss on the candidates' logits against the dense class-space mask gathered."""
    import torch.nn.functional as TF

    import marginloss.functional as MF

    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(
        12, 3, generator=g, dtype=torch.float64)
    positives = [torch.tensor([0, 5]), torch.tensor([11]), torch.tensor([3, 4, 7]),
                 torch.tensor([2])]
    cand = torch.tensor([[5, 1, 0, 9], [2, 11, 6, 3], [3, 4, 8, 10], [1, 0, 6, 7]])
    y = L.shortlist_target(positives, cand, 12, dtype=torch.float64)
    mask = L.sets_to_multi_hot([set(p.tolist()) for p in positives], 12, dtype=torch.float64)
    got = MF.linear_multilabel_soft_margin_loss(x, w, y, candidates=cand)
    want = TF.multilabel_soft_margin_loss((x @ w.t()).gather(1, cand), mask.gather(1, cand))
    torch.testing.assert_close(got, want)


def test_shortlist_target_errors():
    cand = torch.tensor([[3, 1, 0], [2, 2, 4]])
    with pytest.raises(LabelError, match="class 6 in sample 1.*-1 and 5 mark padding"):
        L.shortlist_target([torch.tensor([1]), torch.tensor([2])],
                           torch.tensor([[3, 1, 0], [2, 6, 4]]), 5)
    with pytest.raises(LabelError, match="class 5, outside"):
        L.shortlist_target([torch.tensor([1]), torch.tensor([5])], cand, 5)
    with pytest.raises(ShapeError, match="length must be 2"):
        L.shortlist_target([torch.tensor([1])], cand, 5)
    with pytest.raises(ShapeError, match=r"\(N, K\)"):
        L.shortlist_target([torch.tensor([1])], cand[0], 5)
    with pytest.raises(ShapeError, match=r"\(2, 5\)"):
        L.shortlist_target(L.sets_to_csr([{1}, {2}], 6), cand, 5)
    with pytest.raises(DtypeError, match="integer"):
        L.shortlist_target([torch.tensor([1.0]), torch.tensor([2])], cand, 5)
    with pytest.raises(DtypeError, match="`positives` must be"):
        L.shortlist_target({1, 2}, cand, 5)
    with pytest.raises(ValueError, match="num_classes"):
        L.shortlist_target([torch.tensor([1]), torch.tensor([2])], cand, 0)


def test_from_padded():
    rows, cols = L.from_padded(torch.tensor([[4, -1, 0, 4], [-1, -1, -1, -1], [2, 1, -1, 3]]),
                               num_classes=4)
    assert rows.tolist() == [0, 2, 2, 2]  # padding (-1 or C) anywhere in a row
    assert cols.tolist() == [0, 2, 1, 3]
    assert rows.dtype == cols.dtype == torch.int64
    rows, cols = L.from_padded(torch.tensor([[2, 2, 1]], dtype=torch.int32), num_classes=3)
    assert rows.tolist() == [0, 0, 0] and cols.tolist() == [2, 2, 1]  # as listed, duplicates too
    with pytest.raises(LabelError, match="class 5 in sample 0"):
        L.from_padded(torch.tensor([[5, 0]]), num_classes=4)
    with pytest.raises(LabelError, match="class -2"):
        L.from_padded(torch.tensor([[-2, 0]]), num_classes=4)
    with pytest.raises(ShapeError, match="unsqueeze"):
        L.from_padded(torch.tensor([1, 0]), num_classes=4)
    with pytest.raises(DtypeError, match="integer"):
        L.from_padded(torch.tensor([[1.0]]), num_classes=4)
