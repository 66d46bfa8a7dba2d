"""The pipeline, the operators and the autograd registration serve losses with several
differentiable inputs (pairs, triplets) on the same code path as the one-input losses.

A pairwise loss is declared here the way a loss module declares itself (a LossSpec with a
torch-ops compute), registered through the same factory as the shipped losses, and checked
against torch's margin_ranking_loss: both inputs' gradients, torch.compile, torch.func.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from helpers import REDUCTIONS, assert_close
from torch.func import grad, vmap

from marginloss import _checks, _ops, _pipeline
from marginloss.backends._common import grad_scale, reduce_rows
from marginloss.losses._spec import Call, LossSpec, Option, Result

NAME = "test_pair_ranking_loss"


def _prepare(inputs, target, weight, options):
    x1, x2 = inputs
    for name, x in (("input1", x1), ("input2", x2)):
        _checks.check_input(NAME, x, name)
    (margin,) = options
    return (x1.reshape(-1, 1), x2.reshape(-1, 1)), target.reshape(-1), None, \
        (float(margin),), tuple(x1.shape)


def _torch_compute(call: Call) -> Result:
    x1, x2 = call.inputs
    (margin,) = call.options
    y = call.target.to(x1.dtype).unsqueeze(1)
    z = margin - y * (x1 - x2)
    active = (z > 0).to(x1.dtype)
    rows = (z.clamp_min(0)).squeeze(1)
    g = -y * active * grad_scale(SPEC, call)
    grads = (g if call.need_grad[0] else None, -g if call.need_grad[1] else None)
    return Result(reduce_rows(rows, call.reduction, x1.dtype), grads)


SPEC = LossSpec(
    name=NAME, module="TestPairRankingLoss", convention="±1 per pair",
    prepare=_prepare, check_labels=lambda call: None, torch_compute=_torch_compute,
    sample=None, inputs=("input1", "input2"), options=(Option("margin", "float", 0.0),),
)
_ops.OPS[NAME], _ops.FUNCTIONS[NAME] = _ops._register(SPEC)


def ours(x1, x2, y, margin=0.0, reduction="mean"):
    return _pipeline.run(SPEC, (x1, x2), y, None, (margin,), None, None, reduction, True,
                         "auto")


def _data(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x1 = (torch.randint(-40, 40, (n,), generator=g) / 16).double()
    x2 = (torch.randint(-40, 40, (n,), generator=g) / 16 + 1 / 32).double()  # no kinks
    y = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).double()
    return x1, x2, y


def test_the_operator_has_one_gradient_output_per_input():
    schema = str(getattr(torch.ops.marginloss, NAME).default._schema)
    assert schema.startswith(f"marginloss::{NAME}(Tensor input1, Tensor input2, Tensor target")
    assert schema.endswith("-> (Tensor, Tensor, Tensor)")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_both_gradients_match_torch(reduction):
    x1, x2, y = _data()
    a1, a2 = x1.clone().requires_grad_(), x2.clone().requires_grad_()
    b1, b2 = x1.clone().requires_grad_(), x2.clone().requires_grad_()
    a = ours(a1, a2, y, 0.5, reduction)
    b = TF.margin_ranking_loss(b1, b2, y, margin=0.5, reduction=reduction)
    g = torch.rand_like(b) + 0.5
    a.backward(g)
    b.backward(g)
    assert_close(a, b)
    assert_close(a1.grad, b1.grad)
    assert_close(a2.grad, b2.grad)
    # only one input differentiable
    a1 = x1.clone().requires_grad_()
    ours(a1, x2, y, 0.5, reduction).sum().backward()
    assert_close(a1.grad, torch.autograd.grad(
        TF.margin_ranking_loss(b1, b2, y, margin=0.5, reduction=reduction).sum(), b1)[0])


def test_gradcheck_both_inputs():
    x1, x2, y = _data()
    assert torch.autograd.gradcheck(lambda a, b: ours(a, b, y, 0.25, "sum"),
                                    (x1.requires_grad_(), x2.requires_grad_()))


def test_compile_and_func():
    torch._dynamo.reset()
    x1, x2, y = _data()
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    a1, a2 = x1.clone().requires_grad_(), x2.clone().requires_grad_()
    compiled(a1, a2, y, 0.5).backward()
    expected = grad(lambda a, b: TF.margin_ranking_loss(a, b, y, margin=0.5),
                    argnums=(0, 1))(x1, x2)
    assert_close(a1.grad, expected[0])
    assert_close(a2.grad, expected[1])
    ga = grad(lambda a, b: ours(a, b, y, 0.5), argnums=(0, 1))(x1, x2)
    assert_close(ga[0], expected[0])
    assert_close(ga[1], expected[1])
    xs1, xs2, ys = (torch.stack(t) for t in zip(*(_data(seed=s) for s in range(3))))
    per = vmap(grad(lambda a, b, t: ours(a, b, t, 0.5), argnums=(0, 1)))(xs1, xs2, ys)
    ref = vmap(grad(lambda a, b, t: TF.margin_ranking_loss(a, b, t, margin=0.5),
                    argnums=(0, 1)))(xs1, xs2, ys)
    assert_close(per[0], ref[0])
    assert_close(per[1], ref[1])
