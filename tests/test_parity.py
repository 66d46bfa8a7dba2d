"""Same results as torch.nn.functional (the oracle): values, shapes, dtypes and input gradients."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as TF
from helpers import REDUCTIONS, assert_close, make_inputs

import marginloss.functional as F

SHAPES = [(None, 1), (None, 7), (1, 1), (3, 7), (17, 33), (5, 300)]
DTYPES = [torch.float64, torch.float32]


def run_both(ours, ref, x, *args, upstream="random", ref_dtype=None, **kwargs):
    """Loss and input-gradient of ``ours`` and ``ref`` on the same inputs.

    ``ref_dtype`` runs the oracle on ``x`` upcast (for dtypes torch's CPU kernels lack).
    """
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().to(ref_dtype or x.dtype).requires_grad_()
    a, b = ours(xa, *args, **kwargs), ref(xb, *args, **kwargs)
    if upstream == "random":
        g = torch.rand(b.shape, dtype=torch.float64) + 0.5  # never 1
    elif upstream == "two":
        g = torch.full(b.shape, 2.0, dtype=torch.float64)
    else:
        g = torch.ones(b.shape, dtype=torch.float64)
    a.backward(g.to(a.dtype))
    b.backward(g.to(b.dtype))
    return a, b, xa.grad, xb.grad


def check(ours, ref, x, *args, dtype=None, tol=None, **kwargs):
    """Compare loss and gradient; ``dtype`` is the expected loss dtype when the oracle ran in
    another one, ``tol`` the dtype whose tolerance applies (default: the result's)."""
    for upstream in ("random", "one"):
        a, b, ga, gb = run_both(ours, ref, x, *args, upstream=upstream, **kwargs)
        assert a.dtype == (dtype or b.dtype)
        assert_close(a, b.to(a.dtype) if dtype else b, tol or dtype)
        assert ga.dtype == x.dtype
        assert_close(ga, gb.to(ga.dtype) if dtype else gb, tol or dtype)


# On the CPU, "auto" runs the two logistic losses' float32 calls on the native C kernels (when a
# compiler is available) and float64 on the torch backend; "torch" forces the torch backend.
LOGISTIC_BACKENDS = ["auto", "torch"]


@pytest.mark.parametrize("N, C", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("backend", LOGISTIC_BACKENDS)
def test_soft_margin(N, C, dtype, reduction, backend):
    x, y = make_inputs("soft_margin", N, C, dtype)
    check(partial(F.soft_margin_loss, backend=backend), TF.soft_margin_loss, x, y,
          reduction=reduction)


@pytest.mark.parametrize("shape, tshape", [((4, 5), (5,)), ((2, 3, 4), (3, 1)), ((), ()),
                                           ((2, 3, 4, 5), (2, 3, 4, 5))])
def test_soft_margin_any_rank_and_broadcast_target(shape, tshape):
    x = torch.randn(shape, dtype=torch.float64)
    y = (torch.randint(0, 2, tshape) * 2 - 1).double()
    for reduction in REDUCTIONS:
        check(F.soft_margin_loss, TF.soft_margin_loss, x, y, reduction=reduction)


@pytest.mark.parametrize("N, C", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("backend", LOGISTIC_BACKENDS)
def test_multilabel_soft_margin(N, C, dtype, reduction, weighted, backend):
    x, y = make_inputs("multilabel_soft_margin", N, C, dtype)
    w = torch.rand(C, dtype=dtype) + 0.5 if weighted else None
    check(partial(F.multilabel_soft_margin_loss, backend=backend),
          TF.multilabel_soft_margin_loss, x, y, weight=w, reduction=reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multilabel_soft_margin_soft_labels_nd_and_weight_shapes(reduction):
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    y = torch.rand(2, 3, 6, dtype=torch.float64)  # soft labels
    for w in (None, torch.rand(6, dtype=torch.float64), torch.rand(3, 1, dtype=torch.float64),
              torch.rand(2, 3, 6, dtype=torch.float64)):
        check(F.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, x, y, weight=w,
              reduction=reduction)
    # a (C,) target broadcast over rows, integer target, and dtype promotion f32 + f64 -> f64
    check(F.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, x[0], y[0, 0],
          reduction=reduction)
    check(F.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, x,
          torch.randint(0, 2, (6,)), reduction=reduction)
    # torch takes log-sigmoids of the float32 input in float32 before promoting; we compute in
    # the promoted float64, so the two agree to float32 precision
    check(F.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, x.float(), y,
          reduction=reduction, tol=torch.float32)


@pytest.mark.parametrize("N, C", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p, margin, weighted", [(1, 1.0, False), (1, 0.5, True), (2, 1.0, False),
                                                 (2, 2.0, True), (1, -0.5, False), (2, 0.0, True)])
def test_multi_margin(N, C, dtype, reduction, p, margin, weighted):
    x, y = make_inputs("multi_margin", N, C, dtype, margin=margin)
    w = torch.rand(C, dtype=dtype) + 0.5 if weighted else None
    check(F.multi_margin_loss, TF.multi_margin_loss, x, y, p=p, margin=margin, weight=w,
          reduction=reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multi_margin_unbatched_shapes(reduction):
    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    for t in (torch.tensor(2), torch.tensor([2])):  # 0-d -> 0-d output, (1,) -> (1,)
        check(F.multi_margin_loss, TF.multi_margin_loss, x, t, reduction=reduction)
    check(F.multi_margin_loss, TF.multi_margin_loss, x.reshape(1, 3), torch.tensor(1),
          reduction=reduction)
    check(F.multi_margin_loss, TF.multi_margin_loss, torch.tensor(0.7, dtype=torch.float64),
          torch.tensor(0), reduction=reduction)
    check(F.multi_margin_loss, TF.multi_margin_loss, torch.tensor(0.7, dtype=torch.float64),
          torch.tensor([0]), reduction=reduction)


@pytest.mark.parametrize("N, C", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multilabel_margin(N, C, dtype, reduction):
    x, y = make_inputs("multilabel_margin", N, C, dtype)
    check(F.multilabel_margin_loss, TF.multilabel_margin_loss, x, y, reduction=reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multilabel_margin_padding_duplicates_and_full_rows(reduction):
    x = torch.tensor([[0.1, 0.2, 0.4, 0.8], [0.5, -0.3, 1.7, 0.05], [1.0, 2.0, 3.0, 4.25],
                      [0.3, 0.9, -0.6, 0.45], [2.5, 0.11, 0.2, -1.3]], dtype=torch.float64)
    y = torch.tensor([[3, 0, -1, 1],    # entries after the first -1 are ignored
                      [3, 3, -1, 0],    # a duplicate counts twice
                      [0, 1, 2, 3],     # every class a target: loss 0
                      [-1, 2, 1, 0],    # empty list
                      [2, 0, 1, -1]])
    check(F.multilabel_margin_loss, TF.multilabel_margin_loss, x, y, reduction=reduction)
    check(F.multilabel_margin_loss, TF.multilabel_margin_loss, x[0], y[0], reduction=reduction)
    check(F.multilabel_margin_loss, TF.multilabel_margin_loss,
          torch.tensor(0.5, dtype=torch.float64), torch.tensor(0), reduction=reduction)


@pytest.mark.parametrize("K", [0, 1, 16, 50, 100])
def test_multilabel_margin_many_positives(K):
    x, y = make_inputs("multilabel_margin", 6, 100, torch.float64, n_targets=K)
    check(F.multilabel_margin_loss, TF.multilabel_margin_loss, x, y, reduction="sum")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_half_precision_matches_fp32_math(dtype, reduction):
    """float16/bfloat16 work on CPU for all four losses and agree with float32 math on the same
    inputs (torch's CPU kernels raise for two of them)."""
    x, y = make_inputs("soft_margin", 9, 20, dtype)
    check(F.soft_margin_loss, TF.soft_margin_loss, x, y, reduction=reduction, dtype=dtype,
          ref_dtype=torch.float32)
    x, y = make_inputs("multilabel_soft_margin", 9, 20, dtype)
    check(F.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, x, y,
          reduction=reduction, dtype=dtype, ref_dtype=torch.float32)
    x, y = make_inputs("multi_margin", 9, 20, dtype)
    check(F.multi_margin_loss, TF.multi_margin_loss, x, y, p=2, weight=torch.rand(20) + 0.5,
          reduction=reduction, dtype=dtype, ref_dtype=torch.float32)
    x, y = make_inputs("multilabel_margin", 9, 20, dtype)
    check(F.multilabel_margin_loss, TF.multilabel_margin_loss, x, y, reduction=reduction,
          dtype=dtype, ref_dtype=torch.float32)


def test_non_contiguous_inputs():
    big = torch.randn(8, 40, dtype=torch.float64)
    x = big[:, 3:30]  # row stride 40
    xt = big.t()[5:30]  # column-major
    for xx in (x, xt):
        n, c = xx.shape
        y = (torch.randint(0, 2, (n, c)) * 2 - 1).double()
        check(F.soft_margin_loss, TF.soft_margin_loss, xx, y, reduction="none")
        check(F.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, xx, (y > 0).double())
        check(F.multi_margin_loss, TF.multi_margin_loss, xx, torch.randint(0, c, (n,)), p=2)
        t = torch.stack([torch.randperm(c) for _ in range(n)])
        t[:, 4:] = -1
        check(F.multilabel_margin_loss, TF.multilabel_margin_loss, xx, t)


@pytest.mark.parametrize("size_average, reduce, reduction", [
    (None, None, "sum"), (True, None, "sum"), (False, None, "none"), (None, False, "mean"),
    (True, True, "none"), (False, True, "mean"), (True, False, "sum"),
])
def test_legacy_size_average_reduce_override_reduction(size_average, reduce, reduction):
    legacy = size_average is not None or reduce is not None
    x, y = make_inputs("multi_margin", 4, 5)
    cases = [
        (F.soft_margin_loss, TF.soft_margin_loss, *make_inputs("soft_margin", 4, 5)),
        (F.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss,
         *make_inputs("multilabel_soft_margin", 4, 5)),
        (F.multi_margin_loss, TF.multi_margin_loss, x, y),
        (F.multilabel_margin_loss, TF.multilabel_margin_loss,
         *make_inputs("multilabel_margin", 4, 5)),
    ]
    for ours, ref, xx, yy in cases:
        kw = dict(size_average=size_average, reduce=reduce, reduction=reduction)
        if legacy:
            with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
                a = ours(xx, yy, **kw)
            with pytest.warns(UserWarning):
                b = ref(xx, yy, **kw)
        else:
            a, b = ours(xx, yy, **kw), ref(xx, yy, **kw)
        assert_close(a, b)


def test_hinge_kink_subgradient_is_zero():
    """At exactly z = 0 the hinge contributes nothing and has zero gradient (strict z > 0)."""
    for p in (1, 2):
        x = torch.tensor([[1.0, 0.0, -3.0]], requires_grad=True)
        loss = F.multi_margin_loss(x, torch.tensor([0]), p=p)
        loss.backward()
        assert loss.item() == 0.0
        assert torch.equal(x.grad, torch.zeros(1, 3))
    x = torch.tensor([[1.0, 0.0, -3.0]], requires_grad=True)
    loss = F.multilabel_margin_loss(x, torch.tensor([[0, -1, -1]]))
    loss.backward()
    ref = torch.tensor([[1.0, 0.0, -3.0]], requires_grad=True)
    TF.multilabel_margin_loss(ref, torch.tensor([[0, -1, -1]])).backward()
    assert loss.item() == 0.0
    assert torch.equal(x.grad, ref.grad)
