"""Same results as torch.nn.functional (the oracle): values, shapes, dtypes and input gradients.

The generic tests run every registered loss (tests/loss_cases.py) over its shapes, both float
dtypes, every reduction and option set, on the backends a CPU call can take; the tests after
them pin loss-specific conventions (broadcast targets, -1 padding, duplicates, unbatched shapes).
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as TF
from helpers import REDUCTIONS, assert_close, make_inputs
from loss_cases import cases

import marginloss.functional as F

DTYPES = [torch.float64, torch.float32]
# On the CPU "auto" runs float32 calls on the native C kernels (when a compiler is available)
# and float64 on the torch backend; "torch" forces the torch backend for both.
BACKENDS = ["auto", "torch"]


def run_both(ours, ref, x, *args, upstream="random", ref_dtype=None, **kwargs):
    """Loss and input-gradient of ``ours`` and ``ref`` on the same inputs.

    ``ref_dtype`` runs the oracle on ``x`` upcast (for dtypes torch's CPU kernels lack).
    """
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().to(ref_dtype or x.dtype).requires_grad_()
    a, b = ours(xa, *args, **kwargs), ref(xb, *args, **kwargs)
    if upstream == "random":
        g = torch.rand(b.shape, dtype=torch.float64) + 0.5  # never 1
    else:
        g = torch.ones(b.shape, dtype=torch.float64)
    a.backward(g.to(a.dtype))
    b.backward(g.to(b.dtype))
    return a, b, xa.grad, xb.grad


def check(ours, ref, x, *args, dtype=None, tol=None, **kwargs):
    """Compare loss and gradient, for a random upstream gradient and for exactly 1 (the path
    that hands the stored gradient over); ``dtype`` is the expected loss dtype when the oracle
    ran in another one, ``tol`` the dtype whose tolerance applies (default: the result's)."""
    for upstream in ("random", "one"):
        a, b, ga, gb = run_both(ours, ref, x, *args, upstream=upstream, **kwargs)
        assert a.dtype == (dtype or b.dtype)
        assert_close(a, b.to(a.dtype) if dtype else b, tol or dtype)
        assert ga.dtype == x.dtype
        assert_close(ga, gb.to(ga.dtype) if dtype else gb, tol or dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, opt", cases(options=True))
def test_matches_torch(case, opt, dtype, reduction, backend):
    for shape in case.shapes:
        n_classes = shape[-1] if shape else 1
        kwargs = case.option_sets(n_classes, dtype)[opt]
        x, y = case.make(shape, dtype, **kwargs)
        check(partial(case.ours, backend=backend), case.ref, x, y, reduction=reduction,
              **kwargs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", cases())
def test_half_precision_matches_fp32_math(case, reduction, dtype):
    """float16/bfloat16 work on CPU for every loss (torch's CPU kernels raise for two of them),
    return the input's dtype, and agree with torch's float32 math on the same (rounded) inputs,
    with every option (a weight in the same half dtype)."""
    x, y = case.make((9, 20), dtype)
    kwargs = case.option_sets(20, dtype)[-1]

    def up(v):
        return v.float() if torch.is_tensor(v) and v.is_floating_point() else v

    for upstream in (2.5, 1.0):
        xa = x.clone().requires_grad_()
        xb = x.float().requires_grad_()
        a = case.ours(xa, y, reduction=reduction, **kwargs)
        b = case.ref(xb, up(y), reduction=reduction, **{k: up(v) for k, v in kwargs.items()})
        a.backward(torch.full_like(a, upstream))
        b.backward(torch.full_like(b, upstream))
        assert a.dtype == dtype and xa.grad.dtype == dtype
        assert_close(a, b.to(dtype))
        assert_close(xa.grad, xb.grad.to(dtype))


@pytest.mark.parametrize("case", cases())
def test_non_contiguous_inputs(case):
    big = torch.randn(8, 40, dtype=torch.float64)
    for x in (big[:, 3:30], big.t()[5:30]):  # row stride 40; column-major
        n, c = x.shape
        x0, y = case.make((n, c))
        x = x.copy_(x0)
        for reduction in REDUCTIONS:
            check(case.ours, case.ref, x, y, reduction=reduction)


@pytest.mark.parametrize("size_average, reduce, reduction", [
    (None, None, "sum"), (True, None, "sum"), (False, None, "none"), (None, False, "mean"),
    (True, True, "none"), (False, True, "mean"), (True, False, "sum"),
])
@pytest.mark.parametrize("case", cases())
def test_legacy_size_average_reduce_override_reduction(case, size_average, reduce, reduction):
    x, y = case.make((4, 5))
    kw = dict(size_average=size_average, reduce=reduce, reduction=reduction)
    if size_average is not None or reduce is not None:
        with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
            a = case.ours(x, y, **kw)
        with pytest.warns(UserWarning):
            b = case.ref(x, y, **kw)
    else:
        a, b = case.ours(x, y, **kw), case.ref(x, y, **kw)
    assert_close(a, b)


# ----------------------------------------------------------------------------------------------
# loss-specific conventions


@pytest.mark.parametrize("shape, tshape", [((4, 5), (5,)), ((2, 3, 4), (3, 1)), ((), ()),
                                           ((2, 3, 4, 5), (2, 3, 4, 5))])
def test_soft_margin_any_rank_and_broadcast_target(shape, tshape):
    x = torch.randn(shape, dtype=torch.float64)
    y = (torch.randint(0, 2, tshape) * 2 - 1).double()
    for reduction in REDUCTIONS:
        check(F.soft_margin_loss, TF.soft_margin_loss, x, y, reduction=reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multilabel_soft_margin_soft_labels_nd_and_weight_shapes(reduction):
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    y = torch.rand(2, 3, 6, dtype=torch.float64)  # soft labels
    for w in (None, torch.rand(6, dtype=torch.float64), torch.rand(3, 1, dtype=torch.float64),
              torch.rand(2, 3, 6, dtype=torch.float64), torch.rand((), dtype=torch.float64)):
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
    # a 0-d float64 target does not widen a float32 input (torch's promotion rules)
    check(F.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, x.float(),
          torch.tensor(1.0, dtype=torch.float64), reduction=reduction)


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


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("K", [0, 1, 16, 50, 100])
def test_multilabel_margin_many_positives(K, backend):
    x, y = make_inputs("multilabel_margin_loss", 6, 100, torch.float32, n_targets=K)
    check(partial(F.multilabel_margin_loss, backend=backend), TF.multilabel_margin_loss, x, y,
          reduction="sum")


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


@pytest.mark.parametrize("case", cases())
def test_modules_match_torch_modules(case):
    """The module form of each loss (every option set, every reduction) against torch's."""
    for kwargs in case.option_sets(7, torch.float32):
        for reduction in REDUCTIONS:
            ours = case.module(reduction=reduction, **kwargs)
            ref = case.ref_module(reduction=reduction, **kwargs)
            x, y = case.make((5, 7), torch.float32, **kwargs)
            check(ours, ref, x, y)
