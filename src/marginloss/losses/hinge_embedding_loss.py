r"""``hinge_embedding_loss``: distances of pairs labelled similar (+1) or dissimilar (-1).

The input is a distance (or any dissimilarity score) per pair, elementwise. With label
:math:`y` and margin :math:`\mu`, torch's definition is

.. math::
    \ell = [y \ne 1]\,[\mu - x]_+ \;+\; [y \ne -1]\,x, \qquad
    \frac{\partial \ell}{\partial x} = [y \ne -1] - [y \ne 1]\,[\mu - x \ge 0],

so a similar pair (:math:`y = 1`) costs its distance :math:`x` (not clamped: a negative input
gives a negative loss, as in torch) and a dissimilar one (:math:`y = -1`) costs
:math:`[\mu - x]_+`. At the kink :math:`x = \mu` the gradient of the hinge is -1 (torch's
``clamp_min`` passes the gradient at 0). A label outside {-1, +1} (0, 2, 0.5, NaN) adds **both**
terms in torch; with ``validate=True`` it raises :class:`~marginloss.errors.LabelError`
instead, with ``validate=False`` it computes exactly that.

Input and target broadcast against each other both ways (torch's rule: a ``(4,)`` input and a
``(3, 4)`` target give a ``(3, 4)`` loss, and the input's gradient is summed over the broadcast
dimension by autograd). The loss has the input's dtype; float16/bfloat16 are computed in float32
and rounded once. A negative margin is accepted, as torch does.

Canonical call: ``input`` viewed as rows ``(N, C)`` of the broadcast shape (C its last
dimension; an input broadcast up is a stride-0 view), ``target`` the same ``(N, C)`` (a
broadcast target is a stride-0 view), any real dtype (compared with ±1 as it is); options
``(margin,)``. ``"none"`` gives one loss per element; ``"mean"`` averages over all elements.
"""

from __future__ import annotations

import torch
from torch import Tensor

from marginloss import _checks
from marginloss.backends._common import acc_dtype, grad_scale, reduce_rows
from marginloss.errors import LabelError, ShapeError
from marginloss.losses._spec import KERNELS, Call, LossSpec, Option, Result

NAME = "hinge_embedding_loss"


def check_margin(fn: str, margin: object) -> float:
    """The margin as a float (any real number, as torch takes it)."""
    try:
        return float(margin)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: `margin` must be a float, got {margin!r}.") from None


def broadcast_shape(fn: str, tensors: dict[str, Tensor]) -> torch.Size:
    """The shape ``tensors`` broadcast to (torch's rules), or a ShapeError naming them."""
    try:
        return torch.broadcast_shapes(*(t.shape for t in tensors.values()))
    except RuntimeError:
        shapes = ", ".join(f"`{k}` {_checks.shape_str(t)}" for k, t in tensors.items())
        raise ShapeError(
            f"{fn}: the shapes of {shapes} do not broadcast together; give them the same shape "
            f"(or dimensions of size 1 where one value serves all)."
        ) from None


def prepare(inputs: tuple[Tensor, ...], target: Tensor, weight: None, options: tuple):
    """Shapes, dtypes and the margin; the canonical ``(N, C)`` views."""
    (input,) = inputs
    (margin,) = options
    margin = check_margin(NAME, margin)
    _checks.check_input(NAME, input)
    _checks.check_target_tensor(NAME, target, input)
    shape = broadcast_shape(NAME, {"input": input, "target": target})
    if input.shape != shape:
        input = input.expand(shape)
    if target.shape != shape:
        target = target.expand(shape)
    x = _checks.as_rows(input)
    t = target if target.dim() == 2 else target.reshape(x.shape)
    return (x,), t, None, (margin,), tuple(shape)


def check_pm1(name: str, target: Tensor, meaning: str, zero: str) -> None:
    """``target`` holds only -1 and +1, else :class:`LabelError` naming what the values do
    (``meaning``: the convention, ``zero``: what torch silently does with a 0 label)."""
    target = _checks.compact(target)
    if target.numel() == 0:
        return
    if target.dtype != torch.bool:  # a bool target is a {0, 1} mask by construction
        if target.is_floating_point():
            lo, hi = _checks.read_back(*_checks.abs_range(target))
        else:
            lo, hi = _checks.read_back(*torch.aminmax(target.abs()))
        if lo == 1 and hi == 1:
            return
    else:
        lo = hi = 0.0
    seen = _checks.values_preview(target)
    if target.dtype == torch.bool or set(torch.unique(target).tolist()) <= {0, 1}:
        fix = (f"It looks like {{0, 1}} labels, which {name} would silently misread ({zero}). "
               f"Convert them with `marginloss.labels.to_pm1(target)` (that is, "
               f"`2 * target - 1`).")
    elif lo != lo or hi != hi:  # NaN
        fix = "Remove the NaN labels."
    else:
        fix = f"{name} takes hard ±1 labels only."
    raise LabelError(
        f"{name}: `target` must hold labels in {{-1, +1}} ({meaning}), but it holds {seen}. "
        f"{fix} Pass validate=False to skip this check (then any other label counts as torch "
        f"counts it)."
    )


def check_labels(call: Call) -> None:
    """``target`` holds only -1 and +1 (else :class:`LabelError`, with the likely fix)."""
    check_pm1(NAME, call.target, "+1: a similar pair, whose loss is its distance; -1: a "
              "dissimilar pair, whose loss is [margin - distance]_+",
              "a label of 0 adds both terms, [margin - x]_+ + x")


def torch_compute(call: Call) -> Result:
    """The loss and gradient in torch ops, in the accumulation dtype (float32 for half)."""
    input, target = call.input, call.target
    (margin,) = call.options
    acc = acc_dtype(input.dtype)
    x = input if input.dtype == acc else input.to(acc)
    z = margin - x
    dissimilar = target != 1  # the hinge term applies
    similar = target != -1  # the distance term applies
    zero = x.new_zeros(())
    loss = torch.where(dissimilar, z.clamp_min(0), zero) + torch.where(similar, x, zero)
    grad = None
    if call.need_grad[0]:
        g = similar.to(acc) - (dissimilar & (z >= 0)).to(acc)
        grad = g.mul_(grad_scale(SPEC, call)).to(input.dtype)
    if call.reduction == "none":
        return Result(loss.to(input.dtype), (grad,))
    total = loss.sum(dtype=torch.float64) if acc == torch.float32 else loss.sum()
    return Result(reduce_rows(total.reshape(1), call.reduction, input.dtype,
                              count=loss.numel()), (grad,))


def sample(n: int, c: int, *, dtype=torch.float32, device="cpu", generator=None,
           margin: float = 1.0):
    """Distances ``(n, c)`` and ±1 labels of the same shape.

    The distances lie on the grid k/16 + 1/32 in [0, 4): exact in every float dtype, and never
    at the kink of a margin that is a multiple of 1/16."""
    x = (torch.rand(n, c, generator=generator) * 64).floor() / 16 + 1 / 32
    y = (torch.randint(0, 2, (n, c), generator=generator) * 2 - 1)
    return ((x.to(device=device, dtype=dtype),), y.to(device=device, dtype=dtype),
            {"margin": margin})


SPEC = LossSpec(
    name=NAME,
    module="HingeEmbeddingLoss",
    convention="the input's shape (or broadcast with it), values in {-1, +1} "
               "(+1 similar, -1 dissimilar)",
    elementwise=True,
    options=(Option("margin", "float", 1.0),),
    backends=KERNELS,
    fused_label_check=("native", "triton"),  # both kernels count bad labels in their pass
    prepare=prepare,
    check_labels=check_labels,
    torch_compute=torch_compute,
    sample=sample,
    benchmark_cases=({"n": 1024, "c": 4096},),
)
