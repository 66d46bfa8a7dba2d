"""Gradients: gradcheck in float64, upstream gradients, repeated and higher-order backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from helpers import REDUCTIONS, assert_close, make_inputs

import marginloss.functional as F


def _cases():
    """(name, ours, ref, x, target, kwargs) over every loss and option, float64, kink-free."""
    torch.manual_seed(1)
    x, y = make_inputs("soft_margin", 3, 4)
    yield "soft_margin", F.soft_margin_loss, TF.soft_margin_loss, x, y, {}
    x, y = make_inputs("multilabel_soft_margin", 3, 4)
    yield "mlsm", F.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, x, y, {}
    yield ("mlsm-weight", F.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, x,
           torch.rand(3, 4, dtype=torch.float64), {"weight": torch.rand(4, dtype=torch.float64)})
    x, y = make_inputs("multi_margin", 4, 5, margin=0.5)
    for p in (1, 2):
        yield f"mm-p{p}", F.multi_margin_loss, TF.multi_margin_loss, x, y, {"p": p, "margin": 0.5}
        yield (f"mm-p{p}-weight", F.multi_margin_loss, TF.multi_margin_loss, x, y,
               {"p": p, "margin": 0.5, "weight": torch.rand(5, dtype=torch.float64) + 0.5})
    x, y = make_inputs("multilabel_margin", 4, 6)
    yield "mlm", F.multilabel_margin_loss, TF.multilabel_margin_loss, x, y, {}
    x, y = make_inputs("multilabel_margin", None, 6, n_targets=2)
    yield "mlm-1d", F.multilabel_margin_loss, TF.multilabel_margin_loss, x, y, {}


CASES = list(_cases())
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck_float64(case, reduction):
    _, ours, _, x, y, kw = case
    x = x.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ours(t, y, reduction=reduction, **kw), (x,),
                                    eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_upstream_gradient_scales_result(case, reduction):
    """grad_output != 1 (scalar 3.5, or a random tensor for 'none') matches torch's gradient."""
    _, ours, ref, x, y, kw = case
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = ours(xa, y, reduction=reduction, **kw), ref(xb, y, reduction=reduction, **kw)
    g = torch.full_like(b, 3.5) if b.dim() == 0 else torch.rand_like(b) * 4 - 2
    a.backward(g)
    b.backward(g)
    assert_close(xa.grad, xb.grad)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_loss_inside_a_larger_graph(case):
    """The loss is one node among others: gradients flow through ops before and after it."""
    _, ours, ref, x, y, kw = case
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    (ours(xa * 2 - 0.25 * xa, y, **kw) * 3 + xa.sum()).backward()
    (ref(xb * 2 - 0.25 * xb, y, **kw) * 3 + xb.sum()).backward()
    assert_close(xa.grad, xb.grad)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_retain_graph_backward_twice_accumulates(case):
    """A second backward through the same graph recomputes the (handed-over) gradient."""
    _, ours, ref, x, y, kw = case
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    la, lb = ours(xa, y, **kw), ref(xb, y, **kw)
    la.backward(retain_graph=True)
    la.backward(torch.tensor(2.0, dtype=la.dtype))
    lb.backward(retain_graph=True)
    lb.backward(torch.tensor(2.0, dtype=lb.dtype))
    assert_close(xa.grad, xb.grad)


@pytest.mark.parametrize("case", CASES[:1] + CASES[3:4], ids=IDS[:1] + IDS[3:4])
def test_double_backward_raises_instead_of_silently_wrong(case):
    _, ours, _, x, y, kw = case
    x = x.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(ours(x, y, **kw), x, create_graph=True)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_no_grad_and_eval_paths_give_the_same_loss(case):
    _, ours, _, x, y, kw = case
    with torch.no_grad():
        a = ours(x, y, **kw)
    b = ours(x.clone().requires_grad_(), y, **kw)
    assert not a.requires_grad and b.requires_grad
    assert torch.equal(a, b.detach())


def test_autograd_grad_matches_backward():
    x, y = make_inputs("multi_margin", 6, 5)
    x.requires_grad_()
    (g,) = torch.autograd.grad(F.multi_margin_loss(x, y), x)
    F.multi_margin_loss(x, y).backward()
    assert torch.equal(g, x.grad)


def test_gradient_flows_to_parameters_of_a_model():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 5).double()
    lin_ref = torch.nn.Linear(8, 5).double()
    lin_ref.load_state_dict(lin.state_dict())
    feats = torch.randn(16, 8, dtype=torch.float64)
    y = torch.randint(0, 5, (16,))
    F.multi_margin_loss(lin(feats), y).backward()
    TF.multi_margin_loss(lin_ref(feats), y).backward()
    assert_close(lin.weight.grad, lin_ref.weight.grad)
    assert_close(lin.bias.grad, lin_ref.bias.grad)
