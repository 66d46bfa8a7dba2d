r"""``margin_ranking_loss``: which of two scores should be higher, elementwise.

For scores :math:`x_1, x_2`, label :math:`y` (+1: :math:`x_1` should rank higher, -1:
:math:`x_2` should) and margin :math:`\mu`, torch's definition is

.. math::
    z = -y\,(x_1 - x_2) + \mu, \qquad \ell = [z]_+, \qquad
    \frac{\partial \ell}{\partial x_1} = -y\,[z \ge 0], \qquad
    \frac{\partial \ell}{\partial x_2} = y\,[z \ge 0]

(computed in that order, as torch does: the difference, the product, then the margin). At the
kink :math:`z = 0` the gradient is not 0 (torch's ``clamp_min`` passes it). A label outside
{-1, +1} is used as it is by torch (:math:`y = 0` gives :math:`[\mu]_+`); with
``validate=True`` it raises :class:`~marginloss.errors.LabelError`, with ``validate=False`` it
computes exactly that. torch also differentiates with respect to the target; here, as for every
marginloss label, a target that requires grad is refused (the labels are constants).

The three tensors must have the same number of dimensions (torch's check) and broadcast
together; the loss has their broadcast shape and their promoted dtype (a float64 target makes a
float32 pair's loss float64, as in torch; the inputs are converted, and autograd converts their
gradients back). float16/bfloat16 are computed in float32 and rounded once.

Canonical call: ``inputs`` ``(input1, input2)``, both viewed as rows ``(N, C)`` of the broadcast
shape in the promoted dtype (an input broadcast up is a stride-0 view), ``target`` the same
``(N, C)`` (any real dtype but bool, compared and multiplied as it is); options ``(margin,)``.
``"none"`` gives one loss per element; ``"mean"`` averages over all elements.
"""

from __future__ import annotations

import torch
from torch import Tensor

from marginloss import _checks
from marginloss.backends._common import acc_dtype, grad_scale, reduce_rows
from marginloss.errors import DtypeError, ShapeError
from marginloss.losses._spec import KERNELS, Call, LossSpec, Option, Result
from marginloss.losses.hinge_embedding_loss import broadcast_shape, check_margin, check_pm1

NAME = "margin_ranking_loss"


def prepare(inputs: tuple[Tensor, ...], target: Tensor, weight: None, options: tuple):
    """Ranks (torch's rule), broadcasting, dtypes; the canonical ``(N, C)`` views."""
    x1, x2 = inputs
    (margin,) = options
    margin = check_margin(NAME, margin)
    _checks.check_input(NAME, x1, "input1")
    _checks.check_input(NAME, x2, "input2")
    _checks.check_same_device(NAME, "input2", x2, x1)
    _checks.check_target_tensor(NAME, target, x1)
    if target.dtype == torch.bool:
        raise DtypeError(
            f"{NAME}: `target` must hold ±1 labels as numbers, got a bool tensor (torch cannot "
            f"negate it). Convert a {{0, 1}} mask with `marginloss.labels.to_pm1(target)`.")
    if not x1.dim() == x2.dim() == target.dim():
        raise ShapeError(
            f"{NAME}: `input1`, `input2` and `target` must have the same number of dimensions "
            f"(torch's rule), got shapes {_checks.shape_str(x1)}, {_checks.shape_str(x2)} and "
            f"{_checks.shape_str(target)}. Reshape them alike, e.g. all (N,) for N pairs.")
    shape = broadcast_shape(NAME, {"input1": x1, "input2": x2, "target": target})
    dtype = _checks.promote_float(_checks.promote_float(x1.dtype, x2.dtype), target.dtype)
    rows = []
    for x in (x1, x2):
        if x.dtype != dtype:
            x = x.to(dtype)
        if x.shape != shape:
            x = x.expand(shape)
        rows.append(_checks.as_rows(x))
    if target.shape != shape:
        target = target.expand(shape)
    t = target if target.dim() == 2 else target.reshape(rows[0].shape)
    return tuple(rows), t, None, (margin,), tuple(shape)


def check_labels(call: Call) -> None:
    """``target`` holds only -1 and +1 (else :class:`LabelError`, with the likely fix)."""
    check_pm1(NAME, call.target, "+1: input1 should rank higher, -1: input2 should",
              "a label of 0 gives the loss [margin]_+ whatever the scores")


def torch_compute(call: Call) -> Result:
    """The loss and both gradients in torch ops, in the accumulation dtype."""
    x1, x2 = call.inputs
    (margin,) = call.options
    acc = acc_dtype(x1.dtype)
    y = call.target.to(acc)
    diff = x1.to(acc) - x2.to(acc)
    z = (-y).mul_(diff).add_(margin)  # -y (x1 - x2) + margin, torch's order
    loss = z.clamp_min(0)
    grads: tuple[Tensor | None, ...] = (None, None)
    if True in call.need_grad:
        g1 = (-y).mul_((z >= 0).to(acc)).mul_(grad_scale(SPEC, call))
        grads = (g1.to(x1.dtype) if call.need_grad[0] else None,
                 g1.neg().to(x2.dtype) if call.need_grad[1] else None)
    if call.reduction == "none":
        return Result(loss.to(x1.dtype), grads)
    total = loss.sum(dtype=torch.float64) if acc == torch.float32 else loss.sum()
    return Result(reduce_rows(total.reshape(1), call.reduction, x1.dtype,
                              count=loss.numel()), grads)


def sample(n: int, c: int, *, dtype=torch.float32, device="cpu", generator=None,
           margin: float = 0.0):
    """Score pairs ``(n, c)`` each and ±1 preferences of the same shape.

    ``input1`` lies on the grid k/16 + 1/32 and ``input2`` on k/16 (|x| < 4: exact in every
    float dtype), so their difference is an odd multiple of 1/32: never at the kink of a margin
    that is a multiple of 1/16."""
    def grid(offset):
        x = (torch.randn(n, c, generator=generator) * 24).round().clamp(-60, 60) / 16 + offset
        return x.to(device=device, dtype=dtype)

    x1, x2 = grid(1 / 32), grid(0.0)
    y = (torch.randint(0, 2, (n, c), generator=generator) * 2 - 1).to(device=device, dtype=dtype)
    return (x1, x2), y, {"margin": margin}


SPEC = LossSpec(
    name=NAME,
    module="MarginRankingLoss",
    convention="the inputs' rank (broadcast with them), values in {-1, +1} "
               "(+1: input1 should rank higher)",
    inputs=("input1", "input2"),
    elementwise=True,
    options=(Option("margin", "float", 0.0),),
    backends=KERNELS,
    fused_label_check=("native", "triton"),  # both kernels count bad labels in their pass
    prepare=prepare,
    check_labels=check_labels,
    torch_compute=torch_compute,
    sample=sample,
    benchmark_cases=({"n": 1024, "c": 4096},),
)
