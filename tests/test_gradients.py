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
    xs, y = case.make(shape, **kwargs)
    return xs, y, kwargs


def _leaves(xs):
    return tuple(x.detach().clone().requires_grad_() for x in xs)


def _assert_grads(xa, xb):
    for a, b in zip(xa, xb, strict=True):
        assert_close(a.grad, b.grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case, opt", cases(options=True))
def test_gradcheck_float64(case, opt, reduction):
    """Every differentiable input at once (each input's gradient is checked)."""
    for shape in ((3, 4), (6,)):
        xs, y, kw = _inputs(case, opt, shape)

        def loss(*ts, y=y, kw=kw):
            return case.run(ts, y, reduction=reduction, **kw)

        assert torch.autograd.gradcheck(loss, _leaves(xs), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case, opt", cases(options=True))
def test_upstream_gradient_scales_result(case, opt, reduction):
    """grad_output != 1 (scalar 3.5, or a random tensor for 'none') matches torch's gradient."""
    xs, y, kw = _inputs(case, opt)
    xa, xb = _leaves(xs), _leaves(xs)
    a = case.run(xa, y, reduction=reduction, **kw)
    b = case.run_ref(xb, y, reduction=reduction, **kw)
    g = torch.full_like(b, 3.5) if b.dim() == 0 else torch.rand_like(b) * 4 - 2
    a.backward(g)
    b.backward(g)
    _assert_grads(xa, xb)


@pytest.mark.parametrize("case", cases())
def test_loss_inside_a_larger_graph(case):
    """The loss is one node among others: gradients flow through ops before and after it."""
    xs, y, kw = _inputs(case, -1)
    xa, xb = _leaves(xs), _leaves(xs)
    (case.run(tuple(x * 2 - 0.25 * x for x in xa), y, **kw) * 3 + xa[0].sum()).backward()
    (case.run_ref(tuple(x * 2 - 0.25 * x for x in xb), y, **kw) * 3 + xb[0].sum()).backward()
    _assert_grads(xa, xb)


@pytest.mark.parametrize("case", cases())
def test_retain_graph_backward_twice_accumulates(case):
    """A second backward through the same graph recomputes the (handed-over) gradient."""
    xs, y, kw = _inputs(case, -1)
    xa, xb = _leaves(xs), _leaves(xs)
    la, lb = case.run(xa, y, **kw), case.run_ref(xb, y, **kw)
    for loss in (la, lb):  # 1 (hands the gradient over), 2 (scales it), 1 again (recomputes)
        loss.backward(retain_graph=True)
        loss.backward(torch.tensor(2.0, dtype=loss.dtype), retain_graph=True)
        loss.backward(torch.tensor(1.0, dtype=loss.dtype))
    _assert_grads(xa, xb)


@pytest.mark.parametrize("case", cases())
def test_double_backward_raises_instead_of_silently_wrong(case):
    xs, y, kw = _inputs(case, -1)
    xs = _leaves(xs)
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(case.run(xs, y, **kw), xs, create_graph=True)


@pytest.mark.parametrize("case", cases())
def test_no_grad_and_eval_paths_give_the_same_loss(case):
    xs, y, kw = _inputs(case, -1)
    with torch.no_grad():
        a = case.run(xs, y, **kw)
    b = case.run(_leaves(xs), y, **kw)
    assert not a.requires_grad and b.requires_grad
    assert torch.equal(a, b.detach())


@pytest.mark.parametrize("case", [c for c in cases() if c.values[0].n_inputs > 1])
def test_only_some_inputs_require_grad(case):
    """Each input alone requires grad: its gradient is torch's, the others get none."""
    xs, y, kw = _inputs(case, -1)
    for i in range(case.n_inputs):
        xa = tuple(x.clone().requires_grad_(j == i) for j, x in enumerate(xs))
        xb = tuple(x.clone().requires_grad_(j == i) for j, x in enumerate(xs))
        case.run(xa, y, reduction="sum", **kw).backward()
        case.run_ref(xb, y, reduction="sum", **kw).backward()
        assert_close(xa[i].grad, xb[i].grad)
        assert all(x.grad is None for j, x in enumerate(xa) if j != i)


def test_autograd_grad_matches_backward():
    case = CASES["multi_margin_loss"]
    (x,), y, _ = _inputs(case, 0, (6, 5))
    x.requires_grad_()
    (g,) = torch.autograd.grad(F.multi_margin_loss(x, y), x)
    F.multi_margin_loss(x, y).backward()
    assert torch.equal(g, x.grad)


@pytest.mark.parametrize("case", cases())
def test_gradient_flows_to_parameters_of_a_model(case):
    """Every input comes out of one linear layer (its own features per input)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 5).double()
    lin_ref = torch.nn.Linear(8, 5).double()
    lin_ref.load_state_dict(lin.state_dict())
    feats = torch.randn(case.n_inputs, 16, 8, dtype=torch.float64)
    _, y = case.make((16, 5))
    kw = case.option_sets(5)[-1]
    case.run(tuple(lin(f) for f in feats), y, **kw).backward()
    case.run_ref(tuple(lin_ref(f) for f in feats), y, **kw).backward()
    assert_close(lin.weight.grad, lin_ref.weight.grad)
    assert_close(lin.bias.grad, lin_ref.bias.grad)
