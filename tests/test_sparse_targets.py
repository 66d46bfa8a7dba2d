"""Sparse multi-label targets (marginloss.sparse): every form equals the dense target.

The oracle is torch's loss on the dense target the sparse one stands for: the 0/1 (or soft)
mask ``to_dense()`` gives for ``multilabel_soft_margin_loss``, the -1-padded rows listing the
same entries for ``multilabel_margin_loss``. Loss and input gradient, every reduction, weights,
empty rows, duplicates, soft values; errors; and that no ``(N, C)`` target is ever built.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import pytest
import torch
import torch.nn.functional as TF
from helpers import REDUCTIONS, assert_close
from torch.profiler import ProfilerActivity, profile

import marginloss
import marginloss.functional as F
from marginloss import sparse
from marginloss.errors import BackendUnavailableError, DtypeError, LabelError, ShapeError

FORMS = ["csr", "list", "pair"]


def csr(crow, col, values, size, check=True) -> torch.Tensor:
    """A CSR tensor without torch's beta warning (check=False: duplicates, bad pointers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(torch.as_tensor(crow), torch.as_tensor(col),
                                       torch.as_tensor(values), size=size,
                                       check_invariants=check)


def sets_of(mask: torch.Tensor) -> list[torch.Tensor]:
    return [row.nonzero().flatten() for row in mask]


def as_form(form: str, mask: torch.Tensor, values: torch.Tensor | None = None):
    """The positives of ``mask`` (rows in order, classes increasing) in one sparse form."""
    rows, cols = mask.nonzero(as_tuple=True)
    if form == "csr":
        crow = torch.zeros(mask.shape[0] + 1, dtype=torch.int64)
        crow[1:] = (mask != 0).sum(1).cumsum(0)
        v = mask[rows, cols] if values is None else values
        return csr(crow, cols, v.to(mask.dtype), tuple(mask.shape))
    if form == "list":
        return sets_of(mask)
    return rows, cols


def padded_of(mask: torch.Tensor) -> torch.Tensor:
    """torch's MultiLabelMarginLoss target listing ``mask``'s classes, padded with -1."""
    out = torch.full(mask.shape, -1, dtype=torch.int64)
    for i, s in enumerate(sets_of(mask)):
        out[i, : s.numel()] = s
    return out


def random_mask(n, c, p=0.3, dtype=torch.float64, soft=False):
    mask = (torch.rand(n, c) < p).to(dtype)
    if n > 2:
        mask[1] = 0  # an empty row
    if soft:
        mask = mask * torch.rand(n, c, dtype=torch.float64).clamp_min(0.05).to(dtype)
    return mask


def grad_of(loss_fn, x, target, up=None, **kw):
    x = x.detach().requires_grad_()
    out = loss_fn(x, target, **kw)
    if up is None:
        up = torch.randn_like(out) + 2.0  # an upstream gradient != 1
    (g,) = torch.autograd.grad(out, x, up)
    return out, g, up


# ----------------------------------------------------------------------------------------------
# multilabel_soft_margin_loss


WEIGHTS = {
    "none": lambda n, c: None,
    "class": lambda n, c: torch.rand(c, dtype=torch.float64) + 0.5,
    "sample": lambda n, c: torch.rand(n, 1, dtype=torch.float64) + 0.5,
    "full": lambda n, c: torch.rand(n, c, dtype=torch.float64) + 0.5,
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", list(WEIGHTS))
def test_soft_margin_matches_dense(form, reduction, weighted):
    n, c = 6, 11
    x = torch.randn(n, c, dtype=torch.float64) * 3
    mask = random_mask(n, c)
    w = WEIGHTS[weighted](n, c)
    out, g, up = grad_of(F.multilabel_soft_margin_loss, x, as_form(form, mask), weight=w,
                         reduction=reduction)
    xr = x.detach().requires_grad_()
    ref = TF.multilabel_soft_margin_loss(xr, mask, weight=w, reduction=reduction)
    (gr,) = torch.autograd.grad(ref, xr, up)
    assert_close(out, ref)
    assert_close(g, gr)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_soft_values_csr(reduction):
    """Soft labels in (0, 1] stored in a CSR tensor; float32 values promote float32... as dense."""
    n, c = 5, 9
    x = torch.randn(n, c, dtype=torch.float64)
    mask = random_mask(n, c, soft=True)
    out, g, up = grad_of(F.multilabel_soft_margin_loss, x, as_form("csr", mask),
                         reduction=reduction)
    xr = x.detach().requires_grad_()
    ref = TF.multilabel_soft_margin_loss(xr, mask, reduction=reduction)
    (gr,) = torch.autograd.grad(ref, xr, up)
    assert_close(out, ref)
    assert_close(g, gr)


def test_dtype_promotes_as_the_dense_target():
    x = torch.randn(4, 6)
    mask = random_mask(4, 6, dtype=torch.float64)
    out = F.multilabel_soft_margin_loss(x, as_form("csr", mask))  # float64 values
    assert out.dtype == torch.float64 == TF.multilabel_soft_margin_loss(x, mask).dtype
    assert F.multilabel_soft_margin_loss(x, as_form("pair", mask)).dtype == torch.float32
    half = F.multilabel_soft_margin_loss(x.half(), as_form("list", mask), reduction="none")
    assert half.dtype == torch.float16
    assert_close(half, TF.multilabel_soft_margin_loss(x.half().float(), mask.float(),
                                                       reduction="none"), torch.float16)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("form", ["csr", "pair"])
def test_soft_margin_float32_auto_backend(form, reduction):
    """float32 CPU, backend "auto" (the zero-target pass on the C kernel) vs torch."""
    n, c = 33, 130
    x = torch.randn(n, c) * 3
    mask = random_mask(n, c, dtype=torch.float32)
    out, g, up = grad_of(F.multilabel_soft_margin_loss, x, as_form(form, mask),
                         reduction=reduction)
    xr = x.detach().double().requires_grad_()
    ref = TF.multilabel_soft_margin_loss(xr, mask.double(), reduction=reduction)
    (gr,) = torch.autograd.grad(ref, xr, up.double())
    # the loss is a difference of two rounded terms: absolute error ~ eps * sum(softplus) / C
    torch.testing.assert_close(out.double(), ref, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(g.double(), gr, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_pos_weight_and_label_smoothing(reduction):
    """The options of the dense loss carry over: oracle BCE-with-logits, averaged over C."""
    n, c, eps = 5, 8, 0.1
    x = torch.randn(n, c, dtype=torch.float64) * 3
    mask = random_mask(n, c, soft=True)
    pw = torch.rand(c, dtype=torch.float64) * 3
    w = torch.rand(c, dtype=torch.float64) + 0.5
    out, g, up = grad_of(F.multilabel_soft_margin_loss, x, as_form("csr", mask), weight=w,
                         reduction=reduction, pos_weight=pw, label_smoothing=eps)
    xr = x.detach().requires_grad_()
    t = mask * (1 - eps) + eps / 2
    rows = TF.binary_cross_entropy_with_logits(xr, t, weight=w, pos_weight=pw,
                                               reduction="none").mean(1)
    ref = {"none": rows, "mean": rows.mean(), "sum": rows.sum()}[reduction]
    (gr,) = torch.autograd.grad(ref, xr, up)
    assert_close(out, ref)
    assert_close(g, gr)


@pytest.mark.parametrize("form", FORMS)
def test_soft_margin_empty(form):
    x = torch.randn(4, 5, dtype=torch.float64)
    none = torch.zeros(4, 5, dtype=torch.float64)  # every row empty
    for reduction in REDUCTIONS:
        out, g, up = grad_of(F.multilabel_soft_margin_loss, x, as_form(form, none),
                             reduction=reduction)
        xr = x.detach().requires_grad_()
        ref = TF.multilabel_soft_margin_loss(xr, none, reduction=reduction)
        (gr,) = torch.autograd.grad(ref, xr, up)
        assert_close(out, ref)
        assert_close(g, gr)
    empty_batch = torch.randn(0, 5)
    t = {"csr": as_form("csr", torch.zeros(0, 5)), "list": [],
         "pair": (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))}[form]
    assert F.multilabel_soft_margin_loss(empty_batch, t).isnan()
    assert F.multilabel_soft_margin_loss(empty_batch, t, reduction="sum") == 0
    assert F.multilabel_soft_margin_loss(empty_batch, t, reduction="none").shape == (0,)


def test_soft_duplicates_add_as_to_dense():
    """Duplicates sum (to_dense()); a sum within [0, 1] is a soft label, above 1 an error."""
    x = torch.randn(2, 4, dtype=torch.float64)
    dup = csr([0, 3, 3], [2, 0, 2], torch.tensor([0.25, 1.0, 0.5], dtype=torch.float64),
              (2, 4), check=False)
    assert_close(F.multilabel_soft_margin_loss(x, dup, reduction="none"),
                 TF.multilabel_soft_margin_loss(x, dup.to_dense(), reduction="none"))
    with pytest.raises(LabelError, match=r"class 2 of sample 0 more than once.*to_dense"):
        F.multilabel_soft_margin_loss(x, (torch.tensor([0, 0, 1]), torch.tensor([2, 2, 1])))
    over = csr([0, 2, 2], [1, 1], torch.tensor([0.75, 0.5], dtype=torch.float64), (2, 4),
               check=False)
    with pytest.raises(LabelError, match="more than once"):
        F.multilabel_soft_margin_loss(x, over)
    # validate=False: computed as the dense target with the summed label (2 here)
    two = TF.multilabel_soft_margin_loss(x, torch.tensor([[0, 0, 2.0, 0], [0, 1.0, 0, 0]],
                                                         dtype=torch.float64))
    assert_close(F.multilabel_soft_margin_loss(x, [torch.tensor([2, 2]), torch.tensor([1])],
                                               validate=False), two)


def test_soft_margin_gradcheck():
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    t = csr([0, 2, 2, 3], [0, 3, 4], torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64),
            (3, 5))
    w = torch.rand(5, dtype=torch.float64)
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda x: F.multilabel_soft_margin_loss(x, t, w, reduction=reduction), (x,))


def test_module_takes_sparse_targets():
    x = torch.randn(3, 4, dtype=torch.float64)
    mask = random_mask(3, 4)
    w = torch.rand(4, dtype=torch.float64)
    loss = marginloss.MultiLabelSoftMarginLoss(weight=w)(x, sets_of(mask))
    assert_close(loss, torch.nn.MultiLabelSoftMarginLoss(weight=w)(x, mask))
    loss = marginloss.MultiLabelMarginLoss(reduction="sum")(x, as_form("pair", mask))
    assert_close(loss, torch.nn.MultiLabelMarginLoss(reduction="sum")(x, padded_of(mask)))


# ----------------------------------------------------------------------------------------------
# multilabel_margin_loss


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_margin_matches_dense(form, reduction, dtype):
    n, c = 7, 12
    x = (torch.randn(n, c, dtype=torch.float64) * 24).round() / 16  # no hinge at exactly 0
    x[:, ::2] += 1 / 32
    x = x.to(dtype)
    mask = random_mask(n, c, p=0.25, dtype=dtype)
    mask[2] = 1  # a row listing every class
    out, g, up = grad_of(F.multilabel_margin_loss, x, as_form(form, mask), reduction=reduction)
    xr = x.detach().requires_grad_()
    ref = TF.multilabel_margin_loss(xr, padded_of(mask), reduction=reduction)
    (gr,) = torch.autograd.grad(ref, xr, up)
    assert_close(out, ref)
    assert_close(g, gr)


def test_margin_duplicates_count_as_listed():
    """A class stored twice counts twice, as in the dense row that lists it twice."""
    x = torch.randn(3, 5, dtype=torch.float64)
    rows, cols = torch.tensor([0, 0, 0, 2]), torch.tensor([3, 1, 3, 4])
    dense = torch.tensor([[3, 1, 3, -1, -1], [-1] * 5, [4, -1, -1, -1, -1]])
    for reduction in REDUCTIONS:
        out, g, up = grad_of(F.multilabel_margin_loss, x, (rows, cols), reduction=reduction)
        xr = x.detach().requires_grad_()
        ref = TF.multilabel_margin_loss(xr, dense, reduction=reduction)
        (gr,) = torch.autograd.grad(ref, xr, up)
        assert_close(out, ref)
        assert_close(g, gr)
    with pytest.raises(LabelError, match="more than the C = 2 classes"):
        F.multilabel_margin_loss(torch.randn(1, 2), [torch.tensor([0, 1, 0])])


def test_margin_pair_order_and_empty():
    x = torch.randn(4, 6, dtype=torch.float64)
    rows, cols = torch.tensor([3, 0, 3, 0]), torch.tensor([5, 2, 0, 4])  # rows unsorted
    dense = torch.tensor([[2, 4, -1, -1, -1, -1], [-1] * 6, [-1] * 6, [5, 0, -1, -1, -1, -1]])
    assert_close(F.multilabel_margin_loss(x, (rows, cols), reduction="none"),
                 TF.multilabel_margin_loss(x, dense, reduction="none"))
    none = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert_close(F.multilabel_margin_loss(x, none, reduction="none"),
                 torch.zeros(4, dtype=torch.float64))


def test_margin_gradcheck():
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    t = [torch.tensor([1, 3]), torch.tensor([], dtype=torch.long), torch.tensor([4])]
    assert torch.autograd.gradcheck(lambda x: F.multilabel_margin_loss(x, t), (x,))


def test_narrow_dense_target():
    """The canonical call takes (N, W), W <= C: the dense rows without their padding."""
    x = torch.randn(3, 6, dtype=torch.float64)
    narrow = torch.tensor([[2, 5, -1], [-1, -1, -1], [0, 1, 3]], dtype=torch.int32)
    wide = torch.cat([narrow.long(), torch.full((3, 3), -1)], 1)
    for reduction in REDUCTIONS:
        assert_close(F.multilabel_margin_loss(x, narrow, reduction=reduction),
                     TF.multilabel_margin_loss(x, wide, reduction=reduction))
    for backend in ("torch", "native"):
        assert_close(F.multilabel_margin_loss(x.float(), narrow, backend=backend),
                     TF.multilabel_margin_loss(x.float(), wide))
    # a narrow view of wider rows is not contiguous: the C kernel refuses it, "auto" falls back
    view = wide.int()[:, :3]
    with pytest.raises(BackendUnavailableError, match="contiguous target"):
        F.multilabel_margin_loss(x.float(), view, backend="native")
    assert_close(F.multilabel_margin_loss(x.float(), view), TF.multilabel_margin_loss(x.float(),
                                                                                        wide))
    with pytest.raises(ShapeError, match=r"W <= C"):
        F.multilabel_margin_loss(x, torch.full((3, 7), -1))
    # a narrow target of 0s and 1s is an index list, not a mask
    assert_close(F.multilabel_margin_loss(x, torch.tensor([[0, 1]] * 3)),
                 TF.multilabel_margin_loss(x, torch.tensor([[0, 1, -1, -1, -1, -1]] * 3)))


def test_narrow_target_validate_false_is_memory_safe():
    """Out-of-range entries of an unchecked narrow target are skipped, never read, by the C
    kernel ("auto" on a float32 CPU input): the result is that of the lists without them;
    validate=True reports them."""
    x = torch.randn(3, 40)
    bad = torch.tensor([[2**62, 4, -1, 2**40], [7, 40, 3, -(2**62)], [-(2**62), 5, 6, 7]])
    clean = torch.tensor([[4, -1, -1, -1], [7, 3, -1, -1], [-1, -1, -1, -1]])
    ref = F.multilabel_margin_loss(x, clean, reduction="none", backend="torch")
    for backend in ("native", "auto"):
        out = F.multilabel_margin_loss(x, bad, reduction="none", validate=False, backend=backend)
        assert_close(out, ref)
        with pytest.raises(LabelError, match=r"\[0, 40\) or -1"):
            F.multilabel_margin_loss(x, bad, backend=backend)


def test_to_padded_is_narrow():
    st = sparse.parse("f", (torch.tensor([2, 0, 2, 2]), torch.tensor([1, 4, 0, 7])),
                      torch.randn(4, 10))
    assert torch.equal(sparse.to_padded(st), torch.tensor(
        [[4, -1, -1, -1], [-1, -1, -1, -1], [1, 0, 7, -1], [-1, -1, -1, -1]]))


# ----------------------------------------------------------------------------------------------
# float32 on the CPU: both losses run on the C kernels


@pytest.fixture
def no_torch_backend(monkeypatch):
    """The torch backend raises if it runs: what passes ran on the C kernels."""
    from marginloss.backends import native, torch_ops

    if native.status() is not None:
        pytest.skip(f"native kernels unavailable: {native.status()}")

    def refuse(spec, call, check=False):
        raise AssertionError(f"{spec.name} ran on the torch backend")

    monkeypatch.setattr(torch_ops, "run", refuse)


SOFT_OPTIONS = {
    "plain": {},
    "class weight": {"weight": "class"},
    "full weight": {"weight": "full"},
    "pos_weight": {"weight": "class", "pos_weight": True},
    "smoothing": {"label_smoothing": 0.1},
    "both": {"pos_weight": True, "label_smoothing": 0.2},
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", list(SOFT_OPTIONS))
@pytest.mark.parametrize("shape", [(37, 29), (9, 1500)])  # short rows (blocks), long rows
def test_soft_margin_cpu_float32_runs_on_the_c_kernel(no_torch_backend, shape, options,
                                                      reduction):
    """The zero-target pass of every sparse form on the C kernel ("auto" picks it, "native"
    takes it): the dense target's result on the same kernel, within the docstring's
    precision, and torch's (float64 oracle: BCE with logits averaged over the classes)."""
    n, c = shape
    x = torch.randn(n, c) * 3
    mask = random_mask(n, c, p=0.05, dtype=torch.float32)
    opts = SOFT_OPTIONS[options]
    kw = {"reduction": reduction, "label_smoothing": opts.get("label_smoothing", 0.0)}
    if "weight" in opts:
        kw["weight"] = torch.rand(c) + 0.5 if opts["weight"] == "class" else torch.rand(n, c)
    if opts.get("pos_weight"):
        kw["pos_weight"] = torch.rand(c) * 3
    dense, g_dense, up = grad_of(F.multilabel_soft_margin_loss, x, mask, backend="native", **kw)
    xr = x.double().requires_grad_()
    eps = kw["label_smoothing"]
    w = kw.get("weight")
    pw = kw.get("pos_weight")
    rows = TF.binary_cross_entropy_with_logits(
        xr, mask.double() * (1 - eps) + eps / 2, reduction="none",
        weight=None if w is None else w.double(),
        pos_weight=None if pw is None else pw.double()).mean(1)
    ref = {"none": rows, "mean": rows.mean(), "sum": rows.sum()}[reduction]
    (g_ref,) = torch.autograd.grad(ref, xr, up.double())
    for form in FORMS:
        for backend in ("auto", "native"):
            out, g = grad_of(F.multilabel_soft_margin_loss, x, as_form(form, mask), up,
                             backend=backend, **kw)[:2]
            # the loss is a difference of two rounded terms: absolute error ~ eps * sum / C
            torch.testing.assert_close(out, dense, rtol=2e-6, atol=1e-6)
            torch.testing.assert_close(g, g_dense, rtol=2e-6, atol=1e-7)
            torch.testing.assert_close(out.double(), ref, rtol=2e-5, atol=1e-6)
            torch.testing.assert_close(g.double(), g_ref, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(7, 12), (40, 700)])
def test_margin_cpu_float32_runs_on_the_c_kernel(no_torch_backend, shape, reduction):
    """The narrow target of every sparse form on the C kernel: bitwise the dense -1-padded
    target's result on the same kernel, and torch's."""
    n, c = shape
    x = ((torch.randn(n, c, dtype=torch.float64) * 24).round() / 16).float()
    mask = random_mask(n, c, p=0.1, dtype=torch.float32)
    mask[2] = 1  # a row listing every class
    padded = padded_of(mask)
    dense, g_dense, up = grad_of(F.multilabel_margin_loss, x, padded, reduction=reduction,
                                 backend="native")
    xr = x.double().requires_grad_()
    ref = TF.multilabel_margin_loss(xr, padded, reduction=reduction)
    (g_ref,) = torch.autograd.grad(ref, xr, up.double())
    assert_close(dense, ref)
    assert_close(g_dense, g_ref)
    for form in FORMS:
        for backend in ("auto", "native"):
            out, g = grad_of(F.multilabel_margin_loss, x, as_form(form, mask), up,
                             reduction=reduction, backend=backend)[:2]
            assert torch.equal(out, dense) and torch.equal(g, g_dense)


def test_non_canonical_targets_still_fall_back():
    """Dense targets the C kernels cannot read (broadcast rows, transposed, a view of wider
    rows) are refused by backend="native" and computed by "auto" on the torch backend."""
    x = torch.randn(4, 6)
    row = (torch.rand(6) < 0.5).float()
    cases = [
        (F.multilabel_soft_margin_loss, row.expand(4, 6), row.expand(4, 6).contiguous(),
         "one value broadcast"),
        (F.multilabel_soft_margin_loss, torch.ones(6, 4).t(), torch.ones(4, 6),
         "one value broadcast"),
        (F.multilabel_margin_loss, padded_of(torch.eye(4, 6))[:, :2],
         padded_of(torch.eye(4, 6)), "contiguous target"),
    ]
    for loss, target, same, why in cases:
        with pytest.raises(BackendUnavailableError, match=why):
            loss(x, target, backend="native")
        assert_close(loss(x, target, reduction="none"),
                     loss(x, same, reduction="none", backend="native"))


# ----------------------------------------------------------------------------------------------
# errors


X = torch.randn(2, 4)
MISTAKES = [
    # (target, error, fragments of the message)
    ((torch.tensor([0, 1]), torch.tensor([1, 4])), LabelError,
     ["class 4 in sample 1", "[0, 4)", "numbered from 1", "validate=False"]),
    ([torch.tensor([0, -1]), torch.tensor([1])], LabelError, ["class -1", "drop the -1"]),
    ((torch.tensor([0, 2]), torch.tensor([1, 1])), LabelError, ["row index 2", "[0, 2)"]),
    ([torch.tensor([0])], ShapeError, ["batch size 2", "got 1"]),
    ((torch.tensor([0]), torch.tensor([1]), torch.tensor([2])), ShapeError,
     ["(rows, cols) pair", "pass a list"]),
    ([torch.tensor([0.0]), torch.tensor([1])], DtypeError, ["`target[0]`", "integer", ".long()"]),
    ([torch.tensor([[0]]), torch.tensor([1])], ShapeError, ["`target[0]`", "1-D"]),
    ((torch.tensor([0, 1]), torch.tensor([1])), ShapeError, ["2 rows and 1 classes"]),
    ([[0, 3], torch.tensor([1])], DtypeError, ["`target[0]` is a list", "torch.tensor(labels)",
                                               "torch.tensor(target)"]),
]


@pytest.mark.parametrize("loss", [F.multilabel_soft_margin_loss, F.multilabel_margin_loss])
@pytest.mark.parametrize("case", range(len(MISTAKES)))
def test_errors(loss, case):
    target, error, fragments = MISTAKES[case]
    with pytest.raises(error) as info:
        loss(X, target)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    name = loss.__name__
    assert str(info.value).startswith(name)


def test_csr_errors():
    good = as_form("csr", torch.tensor([[1.0, 0, 0, 1], [0, 0, 1, 0]]))
    with pytest.raises(ShapeError, match=r"input's shape \(3, 4\)"):
        F.multilabel_soft_margin_loss(torch.randn(3, 4), good)
    with pytest.raises(DtypeError, match="to_sparse_csr"):
        F.multilabel_soft_margin_loss(X, good.to_sparse_coo())
    with pytest.raises(ShapeError, match=r"input` of shape \(N, C\).*unsqueeze"):
        F.multilabel_soft_margin_loss(torch.randn(4), good)
    bad_ptr = csr([0, 3, 2], [0, 1, 2], [1.0, 1.0, 1.0], (2, 4), check=False)
    for loss in (F.multilabel_soft_margin_loss, F.multilabel_margin_loss):
        with pytest.raises(ShapeError, match="malformed row pointer"):
            loss(X, bad_ptr)
    zero = csr([0, 1, 1], [2], [0.0], (2, 4))
    with pytest.raises(LabelError, match=r"stores values \{0\}.*drop stored zeros"):
        F.multilabel_soft_margin_loss(X, zero)
    soft = csr([0, 1, 1], [2], [0.5], (2, 4))
    F.multilabel_soft_margin_loss(X, soft)  # a soft label: fine here ...
    with pytest.raises(LabelError, match=r"hard labels.*value 1"):
        F.multilabel_margin_loss(X, soft)  # ... not for the hinge loss
    with pytest.raises(LabelError, match=r"stores values \{2\}"):
        F.multilabel_soft_margin_loss(X, csr([0, 1, 1], [2], [2.0], (2, 4)))
    with pytest.raises(ValueError, match="requires grad"):
        F.multilabel_soft_margin_loss(X, soft.detach().requires_grad_())


def test_validate_false_is_memory_safe():
    """Unchecked out-of-range entries give some result, never a crash or an out-of-bounds read."""
    bad = (torch.tensor([0, 5, -3]), torch.tensor([9, 1, -7]))
    for loss in (F.multilabel_soft_margin_loss, F.multilabel_margin_loss):
        out = loss(X, bad, validate=False, reduction="none")
        assert out.shape == (2,)


# ----------------------------------------------------------------------------------------------
# cost: the target side is O(nnz), never (N, C)


def _largest_allocation(fn) -> int:
    """The largest number of bytes one torch op allocated (net) while ``fn`` ran."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(e.self_cpu_memory_usage for e in prof.events())


def test_no_dense_target_is_built():
    """With C = 250,000, nothing target-sized is allocated: the largest tensor is the gradient
    (float16 scores: 2 bytes per score; a dense float mask or int64 lists would be 4 or 8)."""
    n, c = 8, 250_000
    rows = torch.arange(n).repeat_interleave(3)
    cols = torch.randint(0, c, (3 * n,))
    target = [cols[3 * i : 3 * i + 3] for i in range(n)]
    x16 = torch.randn(n, c, dtype=torch.float16, requires_grad=True)
    peak = _largest_allocation(
        lambda: F.multilabel_soft_margin_loss(x16, target).backward())
    assert peak <= 2 * n * c
    x32 = torch.randn(n, c, requires_grad=True)
    peak = _largest_allocation(lambda: F.multilabel_margin_loss(x32, (rows, cols)).backward())
    assert peak <= 4 * n * c
    # the measure sees a dense target: the -1-padded int64 one is 8 bytes per score
    dense = sparse.to_padded(sparse.parse("f", (rows, cols), x32))
    assert dense.shape == (n, 4)
    peak = _largest_allocation(
        lambda: F.multilabel_margin_loss(x32, torch.nn.functional.pad(dense, (0, c - 4),
                                                                      value=-1)))
    assert peak >= 8 * n * c


def test_compile_fullgraph():
    """torch.compile(fullgraph=True) traces the index forms (validate=False: the check reads
    values), with the eager values and gradient."""
    x = torch.randn(6, 9, requires_grad=True)
    rows, cols = torch.tensor([0, 0, 2, 5]), torch.tensor([1, 3, 8, 0])

    def f(x, r, c):
        return F.multilabel_soft_margin_loss(x, (r, c), validate=False)

    out = torch.compile(f, fullgraph=True, backend="aot_eager")(x, rows, cols)
    ref = f(x, rows, cols)
    (g,) = torch.autograd.grad(out, x)
    (gr,) = torch.autograd.grad(ref, x)
    assert_close(out, ref)
    assert_close(g, gr)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1"
                    or importlib.util.find_spec("triton") is None,
                    reason="needs Triton's interpreter (TRITON_INTERPRET=1)")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_soft_margin_triton_reads_the_zero_target_in_place(reduction):
    """The Triton kernel (under the interpreter on CPU tensors) takes the stride-0 zero."""
    n, c = 5, 37
    x = torch.randn(n, c) * 3
    mask = random_mask(n, c, dtype=torch.float32)
    w = torch.rand(c) + 0.5
    out, g, up = grad_of(F.multilabel_soft_margin_loss, x, as_form("pair", mask), weight=w,
                         reduction=reduction, backend="triton")
    xr = x.detach().double().requires_grad_()
    ref = TF.multilabel_soft_margin_loss(xr, mask.double(), weight=w.double(),
                                         reduction=reduction)
    (gr,) = torch.autograd.grad(ref, xr, up.double())
    torch.testing.assert_close(out.double(), ref, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(g.double(), gr, rtol=2e-5, atol=1e-7)
