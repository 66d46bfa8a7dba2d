"""Where torch.nn is wrong, marginloss is right: overflow, empty batches, half precision on CPU.

Reference values come from float64 math on the same inputs (closed forms computed here, not
torch's losses, which overflow in exactly these cases).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF
from helpers import REDUCTIONS, assert_close, make_inputs
from loss_cases import cases

import marginloss.functional as F

HALF = [torch.float16, torch.bfloat16]
ALL = [torch.float64, torch.float32, *HALF]


def _softplus64(t: torch.Tensor) -> torch.Tensor:
    """log(1 + e^t) in float64, exactly representable branches."""
    t = t.double()
    return t.clamp_min(0) + torch.log1p(torch.exp(-t.abs()))


@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("backend", ["auto", "torch"])  # auto: native kernels for CPU float32
def test_soft_margin_finite_and_exact_for_huge_margins(dtype, backend):
    """|x| up to 1e4 (float16: up to its range); torch gives inf loss and nan gradient here."""
    big = 1e4
    x = torch.tensor([-big, -1e3, -100.0, -89.0, -12.0, 0.0, 12.0, 100.0, big], dtype=dtype)
    y = torch.tensor([1.0, 1, 1, 1, 1, -1, -1, 1, -1], dtype=dtype)
    xa = x.clone().requires_grad_()
    loss = F.soft_margin_loss(xa, y, reduction="none", backend=backend)
    loss.sum().backward()
    m = (x.double() * y.double())
    expected = _softplus64(-m)
    grad = -y.double() * torch.sigmoid(-m)
    assert torch.isfinite(loss).all() and torch.isfinite(xa.grad).all()
    assert_close(loss, expected.to(dtype))
    assert_close(xa.grad, grad.to(dtype))
    # the reduced forms stay finite too
    for reduction in ("mean", "sum"):
        assert torch.isfinite(F.soft_margin_loss(x, y, reduction=reduction, backend=backend))


def test_torch_really_overflows_where_we_do_not():
    """Documents the torch bug we fix (so this test fails if torch ever fixes it: then update
    the docs that claim it)."""
    x, y = torch.tensor([-100.0], requires_grad=True), torch.tensor([1.0])
    TF.soft_margin_loss(x, y).backward()
    assert math.isinf(TF.soft_margin_loss(x.detach(), y).item()) and torch.isnan(x.grad).all()
    assert F.soft_margin_loss(x.detach(), y).item() == 100.0


@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_multilabel_soft_margin_extremes(dtype, backend):
    x = torch.tensor([[-1e4, 1e4, -50.0, 50.0, 0.0]], dtype=dtype)
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.5]], dtype=dtype)
    xa = x.clone().requires_grad_()
    loss = F.multilabel_soft_margin_loss(xa, y, reduction="sum", backend=backend)
    loss.backward()
    xd = x.double()
    expected = ((_softplus64(xd) - y.double() * xd).sum() / 5)
    grad = (torch.sigmoid(xd) - y.double()) / 5
    assert torch.isfinite(loss) and torch.isfinite(xa.grad).all()
    assert_close(loss, expected.to(loss.dtype))
    assert_close(xa.grad, grad.to(dtype))


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("case", cases())
def test_half_precision_works_on_cpu_and_accumulates_in_float32(case, dtype):
    """torch raises for two of these on CPU in half precision; we compute in float32."""
    xs64, y = case.make((64, 300))

    def lower(t, d):
        return t.to(d) if t is not None and t.is_floating_point() else t

    xs = tuple(x.to(dtype).requires_grad_() for x in xs64)
    out = case.run(xs, lower(y, dtype), reduction="sum")
    out.backward()
    assert out.dtype == dtype and all(x.grad.dtype == dtype for x in xs)
    # the float32 computation on the same (rounded) inputs, rounded once at the end
    x32 = tuple(x.detach().float().requires_grad_() for x in xs)
    ref = case.run(x32, lower(y, torch.float32), reduction="sum")
    ref.backward()
    assert_close(out, ref.to(dtype))
    for x, r in zip(xs, x32, strict=True):
        assert_close(x.grad, r.grad.to(dtype))


def test_half_sum_does_not_lose_small_terms():
    """A long float16 sum accumulated in float16 would stall; ours matches the float64 sum."""
    x = torch.full((1 << 16,), 3.0, dtype=torch.float16)
    y = torch.ones_like(x)
    expected = (1 << 16) * math.log1p(math.exp(-3.0))
    assert F.soft_margin_loss(x, y, reduction="sum").float().item() == pytest.approx(expected,
                                                                                     rel=1e-3)


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", cases())
def test_empty_batch(case, reduction, backend):
    """mean -> nan, sum -> 0, none -> empty; the gradients are empty tensors (torch returns
    uninitialised memory for multi_margin_loss / multilabel_margin_loss here)."""
    xs0, y0 = case.make((3, 5), torch.float32)
    xs = tuple(x[:0].clone().requires_grad_() for x in xs0)
    y = None if y0 is None else y0[:0]
    out = case.run(xs, y, reduction=reduction, backend=backend)
    if reduction == "mean":
        assert out.dim() == 0 and torch.isnan(out)
    elif reduction == "sum":
        assert out.dim() == 0 and out.item() == 0
    else:
        assert out.shape == case.run_ref(xs0, y0, reduction="none")[:0].shape
    out.sum().backward()
    assert all(x.grad.shape == x.shape for x in xs)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_multilabel_soft_margin_empty_class_dimension_gives_torchs_nan(reduction, backend):
    """Regression: (N, 0) scores crashed with an internal reshape error; torch returns nan
    (0 / 0) per row, and a gradient of shape (N, 0)."""
    for shape in ((4, 0), (0,), (2, 3, 0)):
        x = torch.empty(shape, requires_grad=True)
        y = torch.empty(shape)
        out = F.multilabel_soft_margin_loss(x, y, reduction=reduction, backend=backend)
        ref = TF.multilabel_soft_margin_loss(x, y, reduction=reduction)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, equal_nan=True)
        out.sum().backward()
        assert x.grad.shape == x.shape


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multilabel_margin_infinite_scores_give_torchs_value(dtype, backend):
    """Regression: masking a class with a -inf score (or +inf) gave nan (0 * inf in the
    sort-based sums); torch gives 0.15 for this row, and finite gradients."""
    x = torch.tensor([[0.5, -float("inf"), 2.0, 0.1]], dtype=dtype)
    t = torch.tensor([[0, 2, -1, -1]])
    for scores in (x, x.flip(1), torch.tensor([[0.5, -float("inf"), -float("inf"), 0.1]]),
                   torch.tensor([[0.5, float("inf"), 2.0, -float("inf")]])):
        scores = scores.to(dtype)
        xa, xb = scores.clone().requires_grad_(), scores.clone().requires_grad_()
        for reduction in REDUCTIONS:
            a = F.multilabel_margin_loss(xa, t, reduction=reduction, backend=backend)
            b = TF.multilabel_margin_loss(xb, t, reduction=reduction)
            torch.testing.assert_close(a, b, equal_nan=True)
        F.multilabel_margin_loss(xa, t, backend=backend).backward()
        TF.multilabel_margin_loss(xb, t).backward()
        torch.testing.assert_close(xa.grad, xb.grad)
    assert F.multilabel_margin_loss(x, t, backend=backend).item() == pytest.approx(0.15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multilabel_margin_large_scores_keep_precision(dtype):
    """The sort-based sums are exact for offsets large enough to cancel catastrophically."""
    x, y = make_inputs("multilabel_margin_loss", 8, 40, dtype=torch.float64)
    x = (x + 1000.0).to(dtype)
    check_x = x.detach().double().clone().requires_grad_()
    ref = TF.multilabel_margin_loss(check_x, y)
    ref.backward()
    xa = x.clone().requires_grad_()
    out = F.multilabel_margin_loss(xa, y)
    out.backward()
    assert_close(out, ref.to(dtype))
    assert_close(xa.grad, check_x.grad.to(dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("scale", [1.0, 25.0])
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_logistic_losses_keep_tiny_tails(reduction, scale, backend):
    """Confident, correct predictions have losses near e^-25; they must not round to 0 (on
    either side of zero), in every reduction: the fast summation of reduced losses hands over to
    the exact one when its absolute error could show."""
    g = torch.Generator().manual_seed(3)
    mags = (torch.rand(300, 257, generator=g, dtype=torch.float64) + 1) * scale
    y = torch.randint(0, 2, (300, 257), generator=g).double()
    x = torch.where(y > 0, mags, -mags)  # every score on the correct side
    sm = F.soft_margin_loss(x.float(), (2 * y - 1).float(), reduction=reduction, backend=backend)
    sm_ref = _softplus64(-mags)
    mlsm = F.multilabel_soft_margin_loss(x.float(), y.float(), reduction=reduction,
                                         backend=backend)
    mlsm_ref = _softplus64(-mags).mean(1)
    if reduction == "sum":
        sm_ref, mlsm_ref = sm_ref.sum(), mlsm_ref.sum()
    elif reduction == "mean":
        sm_ref, mlsm_ref = sm_ref.mean(), mlsm_ref.mean()
    # float32 inputs are exact here (x is a float32 value times a float64 mask), so the
    # reference is the loss of the same numbers; 1e-5 relative leaves room for summation order
    torch.testing.assert_close(sm.double(), sm_ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(mlsm.double(), mlsm_ref, rtol=1e-5, atol=0)
