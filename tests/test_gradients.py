"""Gradients of every loss: gradcheck in float64, upstream gradients, repeated and higher-order
backward, the loss inside a larger graph, forward-only calls."""

from __future__ import annotations

import pytest
import torch
from helpers import REDUCTIONS, assert_close
from loss_cases import CASES, cases

import marginloss.functional as F


def _inputs(case, opt, shape=(3, 4)):
    torch.manual_seed(1)
    kwargs = case.option_sets(shape[-1])[opt]
    x, y = case.make(shape, **kwargs)
    return x, y, kwargs


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case, opt", cases(options=True))
def test_gradcheck_float64(case, opt, reduction):
    for shape in ((3, 4), (6,)):
        x, y, kw = _inputs(case, opt, shape)
        x = x.detach().clone().requires_grad_()
        def loss(t, y=y, kw=kw):
            return case.ours(t, y, reduction=reduction, **kw)

        assert torch.autograd.gradcheck(loss, (x,), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case, opt", cases(options=True))
def test_upstream_gradient_scales_result(case, opt, reduction):
    """grad_output != 1 (scalar 3.5, or a random tensor for 'none') matches torch's gradient."""
    x, y, kw = _inputs(case, opt)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = case.ours(xa, y, reduction=reduction, **kw), case.ref(xb, y, reduction=reduction, **kw)
    g = torch.full_like(b, 3.5) if b.dim() == 0 else torch.rand_like(b) * 4 - 2
    a.backward(g)
    b.backward(g)
    assert_close(xa.grad, xb.grad)


@pytest.mark.parametrize("case", cases())
def test_loss_inside_a_larger_graph(case):
    """The loss is one node among others: gradients flow through ops before and after it."""
    x, y, kw = _inputs(case, -1)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    (case.ours(xa * 2 - 0.25 * xa, y, **kw) * 3 + xa.sum()).backward()
    (case.ref(xb * 2 - 0.25 * xb, y, **kw) * 3 + xb.sum()).backward()
    assert_close(xa.grad, xb.grad)


@pytest.mark.parametrize("case", cases())
def test_retain_graph_backward_twice_accumulates(case):
    """A second backward through the same graph recomputes the (handed-over) gradient."""
    x, y, kw = _inputs(case, -1)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    la, lb = case.ours(xa, y, **kw), case.ref(xb, y, **kw)
    for loss in (la, lb):  # 1 (hands the gradient over), 2 (scales it), 1 again (recomputes)
        loss.backward(retain_graph=True)
        loss.backward(torch.tensor(2.0, dtype=loss.dtype), retain_graph=True)
        loss.backward(torch.tensor(1.0, dtype=loss.dtype))
    assert_close(xa.grad, xb.grad)


@pytest.mark.parametrize("case", cases())
def test_double_backward_raises_instead_of_silently_wrong(case):
    x, y, kw = _inputs(case, -1)
    x = x.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(case.ours(x, y, **kw), x, create_graph=True)


@pytest.mark.parametrize("case", cases())
def test_no_grad_and_eval_paths_give_the_same_loss(case):
    x, y, kw = _inputs(case, -1)
    with torch.no_grad():
        a = case.ours(x, y, **kw)
    b = case.ours(x.clone().requires_grad_(), y, **kw)
    assert not a.requires_grad and b.requires_grad
    assert torch.equal(a, b.detach())


def test_autograd_grad_matches_backward():
    case = CASES["multi_margin_loss"]
    x, y, _ = _inputs(case, 0, (6, 5))
    x.requires_grad_()
    (g,) = torch.autograd.grad(F.multi_margin_loss(x, y), x)
    F.multi_margin_loss(x, y).backward()
    assert torch.equal(g, x.grad)


@pytest.mark.parametrize("case", cases())
def test_gradient_flows_to_parameters_of_a_model(case):
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 5).double()
    lin_ref = torch.nn.Linear(8, 5).double()
    lin_ref.load_state_dict(lin.state_dict())
    feats = torch.randn(16, 8, dtype=torch.float64)
    _, y = case.make((16, 5))
    kw = case.option_sets(5)[-1]
    case.ours(lin(feats), y, **kw).backward()
    case.ref(lin_ref(feats), y, **kw).backward()
    assert_close(lin.weight.grad, lin_ref.weight.grad)
    assert_close(lin.bias.grad, lin_ref.bias.grad)
