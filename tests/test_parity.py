"""Same results as torch.nn.functional (the oracle): values, shapes, dtypes and input gradients.

The generic tests run every registered loss (tests/loss_cases.py) over its shapes, both float
dtypes, every reduction and option set, on the backends a CPU call can take; the tests after
them pin loss-specific conventions (broadcast targets, -1 padding, duplicates, unbatched shapes).
"""

from __future__ import annotations

import inspect
from functools import partial

import pytest
import torch
import torch.nn.functional as TF
from helpers import REDUCTIONS, assert_close, make_inputs
from loss_cases import as_inputs, cases

import marginloss.functional as F

DTYPES = [torch.float64, torch.float32]
# On the CPU "auto" runs float32 calls on the native C kernels (when a compiler is available)
# and float64 on the torch backend; "torch" forces the torch backend for both.
BACKENDS = ["auto", "torch"]


def run_both(ours, ref, inputs, *args, upstream="random", ref_dtype=None, **kwargs):
    """Loss and input gradients of ``ours`` and ``ref`` on the same inputs.

    ``inputs`` is a tensor or a tuple of tensors (the differentiable inputs, in order; each
    gets its gradient); ``args`` follow them (the target). ``ref_dtype`` runs the oracle on the
    inputs upcast (for dtypes torch's CPU kernels lack).
    """
    inputs = as_inputs(inputs)
    xa = tuple(x.detach().clone().requires_grad_() for x in inputs)
    xb = tuple(x.detach().to(ref_dtype or x.dtype).requires_grad_() for x in inputs)
    a, b = ours(*xa, *args, **kwargs), ref(*xb, *args, **kwargs)
    if upstream == "random":
        g = torch.rand(b.shape, dtype=torch.float64) + 0.5  # never 1
    else:
        g = torch.ones(b.shape, dtype=torch.float64)
    a.backward(g.to(a.dtype))
    b.backward(g.to(b.dtype))
    return a, b, tuple(x.grad for x in xa), tuple(x.grad for x in xb)


def check(ours, ref, inputs, *args, dtype=None, tol=None, **kwargs):
    """Compare the loss and every input's gradient, for a random upstream gradient and for
    exactly 1 (the path that hands the stored gradient over); ``dtype`` is the expected loss
    dtype when the oracle ran in another one, ``tol`` the dtype whose tolerance applies
    (default: the result's)."""
    for upstream in ("random", "one"):
        a, b, gas, gbs = run_both(ours, ref, inputs, *args, upstream=upstream, **kwargs)
        assert a.dtype == (dtype or b.dtype)
        assert_close(a, b.to(a.dtype) if dtype else b, tol or dtype)
        for x, ga, gb in zip(as_inputs(inputs), gas, gbs, strict=True):
            assert ga.dtype == x.dtype
            assert_close(ga, gb.to(ga.dtype) if dtype else gb, tol or dtype)


def check_case(case, inputs, target, ours=None, **kwargs):
    """:func:`check` for a case's call (``ours``: our function, default ``case.ours``)."""
    check(ours or case.ours, case.ref, inputs, *case.args((), target), **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, opt", cases(options=True))
def test_matches_torch(case, opt, dtype, reduction, backend):
    for shape in case.shapes:
        n_classes = shape[-1] if shape else 1
        kwargs = case.option_sets(n_classes, dtype)[opt]
        xs, y = case.make(shape, dtype, **kwargs)
        check_case(case, xs, y, partial(case.ours, backend=backend), reduction=reduction,
                   **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [c for c in cases() if c.values[0].layouts])
def test_layouts_match_torch(case, dtype, reduction, backend):
    """Each case's further layouts: broadcast inputs and targets, other ranks, unbatched."""
    for layout in case.layouts:
        xs, y, kwargs = layout(dtype)
        check_case(case, xs, y, partial(case.ours, backend=backend), reduction=reduction,
                   **kwargs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", cases())
def test_half_precision_matches_fp32_math(case, reduction, dtype):
    """float16/bfloat16 work on CPU for every loss (torch's CPU kernels raise for two of them),
    return the input's dtype, and agree with torch's float32 math on the same (rounded) inputs,
    with every option (a weight in the same half dtype)."""
    xs, y = case.make((9, 20), dtype)
    kwargs = case.option_sets(20, dtype)[-1]

    def up(v):
        return v.float() if torch.is_tensor(v) and v.is_floating_point() else v

    for upstream in (2.5, 1.0):
        xa = tuple(x.clone().requires_grad_() for x in xs)
        xb = tuple(x.float().requires_grad_() for x in xs)
        a = case.run(xa, y, reduction=reduction, **kwargs)
        b = case.run_ref(xb, up(y), reduction=reduction,
                         **{k: up(v) for k, v in kwargs.items()})
        a.backward(torch.full_like(a, upstream))
        b.backward(torch.full_like(b, upstream))
        assert a.dtype == dtype
        assert_close(a, b.to(dtype))
        for ga, gb in zip((x.grad for x in xa), (x.grad for x in xb), strict=True):
            assert ga.dtype == dtype
            assert_close(ga, gb.to(dtype))


@pytest.mark.parametrize("case", cases())
def test_non_contiguous_inputs(case):
    big = torch.randn(case.n_inputs, 8, 40, dtype=torch.float64)
    for layout in (lambda b: b[:, 3:30], lambda b: b.t()[5:30]):  # row stride 40; column-major
        xs = tuple(layout(b) for b in big)
        n, c = xs[0].shape
        xs0, y = case.make((n, c))
        xs = tuple(x.copy_(x0) for x, x0 in zip(xs, xs0, strict=True))
        assert not any(x.is_contiguous() for x in xs)
        for reduction in REDUCTIONS:
            check_case(case, xs, y, reduction=reduction)


@pytest.mark.parametrize("size_average, reduce, reduction", [
    (None, None, "sum"), (True, None, "sum"), (False, None, "none"), (None, False, "mean"),
    (True, True, "none"), (False, True, "mean"), (True, False, "sum"),
])
@pytest.mark.parametrize("case", [
    c for c in cases() if "size_average" in inspect.signature(c.values[0].ref).parameters])
def test_legacy_size_average_reduce_override_reduction(case, size_average, reduce, reduction):
    xs, y = case.make((4, 5))
    kw = dict(size_average=size_average, reduce=reduce, reduction=reduction)
    if size_average is not None or reduce is not None:
        with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
            a = case.run(xs, y, **kw)
        with pytest.warns(UserWarning):
            b = case.run_ref(xs, y, **kw)
    else:
        a, b = case.run(xs, y, **kw), case.run_ref(xs, y, **kw)
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


@pytest.mark.parametrize("backend", BACKENDS)
def test_pair_hinges_pass_the_gradient_at_the_kink_like_torch(backend):
    """hinge_embedding_loss and margin_ranking_loss use torch's clamp_min convention: at
    exactly z = 0 the gradient passes (unlike the class hinges' strict z > 0)."""
    for dtype in DTYPES:
        x = torch.tensor([1.0, 0.5, 2.0, 1.0], dtype=dtype)  # margin 1: z = 0 at x = 1
        y = torch.tensor([-1.0, -1.0, -1.0, 1.0], dtype=dtype)
        check(partial(F.hinge_embedding_loss, backend=backend), TF.hinge_embedding_loss, x, y,
              reduction="sum")
        a = x.clone().requires_grad_()
        F.hinge_embedding_loss(a, y, reduction="sum", backend=backend).backward()
        assert a.grad.tolist() == [-1.0, -1.0, 0.0, 1.0]
        x1, x2 = torch.tensor([1.0, 2.0, 0.5], dtype=dtype), torch.tensor([1.0, 1.0, 1.0],
                                                                           dtype=dtype)
        y = torch.tensor([1.0, 1.0, -1.0], dtype=dtype)
        check(partial(F.margin_ranking_loss, backend=backend), TF.margin_ranking_loss, (x1, x2),
              y, reduction="sum")  # z = 0, -1, -0.5 at margin 0: the first passes


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_pair_hinges_with_validate_false_compute_torchs_eager_value_for_any_label(backend,
                                                                                   compiled):
    """Labels outside {-1, +1} (0, 2, 0.5, -3, NaN, bool), large scores: torch's eager value
    and gradients, also inside torch.compile (where torch's own hinge_embedding_loss has
    differed from eager, pytorch#118175 / #113012: ours is one opaque operator)."""
    torch._dynamo.reset()
    labels = torch.tensor([1.0, -1.0, 0.0, 2.0, 0.5, -3.0, float("nan"), 1.0])
    x = torch.tensor([-668044.5, 3e7, 5.0, -1e8, 0.25, 2.0, 1.5, -0.75])
    x2 = torch.tensor([1e8, 2.0, -5.0, 0.5, 0.125, -1.0, 0.0, 4.0])

    def hinge(x, y, reduction):
        return F.hinge_embedding_loss(x, y, margin=0.11, reduction=reduction, validate=False,
                                      backend=backend)

    def ranking(x1, x2, y, reduction):
        return F.margin_ranking_loss(x1, x2, y, margin=0.5, reduction=reduction,
                                     validate=False, backend=backend)

    if compiled:
        hinge = torch.compile(hinge, fullgraph=True, backend="aot_eager")
        ranking = torch.compile(ranking, fullgraph=True, backend="aot_eager")
    for reduction in REDUCTIONS:
        for y in (labels, labels.to(torch.float64)):
            a, b, ga, gb = run_both(hinge, partial(TF.hinge_embedding_loss, margin=0.11), x, y,
                                    reduction=reduction)
            torch.testing.assert_close(a, b, equal_nan=True, rtol=1e-6, atol=0)
            torch.testing.assert_close(ga, gb, equal_nan=True)
        a, b, ga, gb = run_both(ranking, partial(TF.margin_ranking_loss, margin=0.5), (x, x2),
                                labels, reduction=reduction)
        torch.testing.assert_close(a, b, equal_nan=True, rtol=1e-6, atol=0)
        torch.testing.assert_close(ga, gb, equal_nan=True)
    # a bool target: True is a similar pair, False both terms (as torch's `target != 1`)
    yb = torch.tensor([True, False, False, True, False, True, False, True])
    a, b, ga, gb = run_both(hinge, partial(TF.hinge_embedding_loss, margin=0.11), x, yb,
                            reduction="none")
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ga, gb)


def test_margin_ranking_promotes_like_torch():
    """The loss takes the promoted dtype of both inputs and the target (a float64 target makes
    a float32 pair's loss float64), and each input's gradient comes back in its own dtype."""
    x1 = torch.tensor([0.5, -1.0, 2.0])
    x2 = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    for y in (torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64), torch.tensor([1, -1, 1])):
        check(F.margin_ranking_loss, TF.margin_ranking_loss, (x1, x1.flip(0)), y, margin=0.25)
        check(F.margin_ranking_loss, TF.margin_ranking_loss, (x1, x2), y, margin=0.25)


@pytest.mark.parametrize("case", cases())
def test_modules_match_torch_modules(case):
    """The module form of each loss (every option set, every reduction) against torch's."""
    for kwargs in case.option_sets(7, torch.float32):
        for reduction in REDUCTIONS:
            ours = case.module(reduction=reduction, **kwargs)
            ref = case.ref_module(reduction=reduction, **kwargs)
            xs, y = case.make((5, 7), torch.float32, **kwargs)
            check(ours, ref, xs, *case.args((), y))
