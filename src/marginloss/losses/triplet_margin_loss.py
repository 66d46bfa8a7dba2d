r"""``triplet_margin_loss``: an anchor should be nearer its positive than its negative by a margin.

For row :math:`n` with anchor :math:`a`, positive :math:`p`, negative :math:`q` (vectors of
:math:`D` features), norm degree :math:`P`, ``eps`` :math:`\epsilon` and margin :math:`\mu > 0`,
with torch's pairwise distance (``eps`` added to the difference, with its sign)

.. math::
    d(u, v) = \lVert u - v + \epsilon \rVert_P, \qquad
    d^+ = d(a, p), \quad d^- = d(a, q) \;\;\text{(swap: } d^- = \min(d(a, q), d(p, q))\text{)},

.. math::
    \ell_n = [\mu + d^+ - d^-]_+ .

Gradients, for an active row (:math:`\mu + d^+ - d^- \ge 0`: torch's ``clamp_min`` passes the
gradient at 0) and :math:`g(u) = \partial \lVert u \rVert_P / \partial u`
(:mod:`~marginloss.losses._embedding`):

.. math::
    \frac{\partial \ell_n}{\partial a} = g(a - p + \epsilon) - \omega\, g(a - q + \epsilon),
    \quad
    \frac{\partial \ell_n}{\partial p} = -g(a - p + \epsilon) - (1 - \omega)\, g(p - q + \epsilon),
    \quad
    \frac{\partial \ell_n}{\partial q} = \omega\, g(a - q + \epsilon)
        + (1 - \omega)\, g(p - q + \epsilon),

where :math:`\omega = 1` without swap; with swap :math:`\omega` is 1 when :math:`d(a, q)` is
the smaller distance, 0 when :math:`d(p, q)` is, and 1/2 on a tie (``torch.minimum`` splits its
gradient). An inactive row has zero gradients.

Torch's rules kept: ``margin <= 0`` raises (as ``torch.nn.functional.triplet_margin_loss``);
any real ``p > 0`` (``inf`` included) is a norm degree; the three inputs have one rank and
broadcast together; ``(*, D)`` inputs give ``(*)`` losses (a 0-d input is one feature). Beyond
torch: ``p <= 0`` (not a norm) and a non-finite ``eps`` raise, and the distances are computed
without overflow (:mod:`~marginloss.losses._embedding`), where torch's squared norms overflow to
``inf`` for large float16 / bfloat16 / float32 vectors.

Mixed input dtypes are promoted together, so every distance is computed in the promoted dtype
(torch computes each distance in its own pair's dtype: with a float64 positive and float32
anchor and negative, its :math:`d(a, q)` is float32).

Canonical call: ``inputs`` ``(anchor, positive, negative)``, each contiguous ``(N, D)`` of one
floating dtype; no target; options ``(margin, p, eps, swap)`` (``swap`` 0 or 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from marginloss.backends._common import acc_dtype, grad_scale, reduce_rows
from marginloss.errors import ShapeError
from marginloss.losses import _embedding
from marginloss.losses._spec import KERNELS, Call, LossSpec, Option, Result

NAME = "triplet_margin_loss"
_ARGS = ("anchor", "positive", "negative")


def check_options(fn: str, margin: object, p: object, eps: object) -> None:
    """``margin > 0`` (torch's rule and message), ``p > 0`` and a finite ``eps``."""
    if not margin > 0:  # type: ignore[operator]
        raise ValueError(f"margin must be greater than 0, got {margin} ({fn}: the hinge "
                         f"max(0, margin + d(a, p) - d(a, n)) needs a positive margin).")
    if not p > 0:  # type: ignore[operator]
        raise ValueError(f"{fn}: `p`, the degree of the norm, must be greater than 0, got {p} "
                         f"(p = 2: Euclidean distance; p = 1: Manhattan).")
    if not math.isfinite(eps):  # type: ignore[arg-type]
        raise ValueError(f"{fn}: `eps` must be a finite number (it is added to every "
                         f"difference), got {eps}.")


def check_ranks(fn: str, anchor: Tensor, positive: Tensor, negative: Tensor) -> None:
    """Torch's rule: the three tensors have one number of dimensions."""
    a, p, n = anchor.dim(), positive.dim(), negative.dim()
    if not a == p == n:
        raise ShapeError(
            f"{fn}: The anchor, positive, and negative tensors are expected to have the same "
            f"number of dimensions, but got: anchor {a}D, positive {p}D, and negative {n}D "
            f"inputs. Give each triplet's three vectors as row i of each tensor ((N, D) each, "
            f"or (D,) each for one triplet).")


def prepare(inputs: tuple[Tensor, ...], target, weight, options: tuple):
    """Options, ranks, broadcasting, dtype; the canonical ``(N, D)`` rows."""
    margin, p, eps, swap = options
    check_options(NAME, margin, p, eps)
    tensors = dict(zip(_ARGS, inputs, strict=True))
    _embedding.check_vectors(NAME, tensors)
    check_ranks(NAME, *inputs)
    shape = _embedding.broadcast(NAME, tensors)
    dtype = _embedding.float_dtype(*inputs)
    rows = tuple(_embedding.as_rows(x, shape, dtype) for x in inputs)
    none_shape = tuple(shape[:-1])
    return rows, None, None, (float(margin), float(p), float(eps), int(bool(swap))), none_shape


def check_labels(call: Call) -> None:
    """No labels: nothing to check."""


def torch_compute(call: Call) -> Result:
    """The loss and the three gradients in torch ops (float32 math for half inputs, float64
    for float64), with overflow-free distances."""
    a, p, n = call.inputs
    margin, degree, eps, swap = call.options
    out = a.dtype
    acc = acc_dtype(out)
    if out != acc:
        a, p, n = a.to(acc), p.to(acc), n.to(acc)
    need = any(call.need_grad)
    d_pos, g_pos = _embedding.row_norm(a - p + eps, degree, need)
    d_neg, g_neg = _embedding.row_norm(a - n + eps, degree, need)
    if swap:
        d_swap, g_swap = _embedding.row_norm(p - n + eps, degree, need)
        d_min = torch.minimum(d_neg, d_swap)
    else:
        d_min = d_neg
    z = margin + d_pos - d_min
    rows = z.clamp_min(0)
    loss = reduce_rows(rows, call.reduction, out)
    if not need:
        return Result(loss, (None, None, None))
    coef = ((z >= 0).to(acc) * grad_scale(SPEC, call)).unsqueeze(1)
    if swap:
        w = torch.where(d_neg < d_swap, 1.0, torch.where(d_neg == d_swap, 0.5, 0.0))
        w = w.to(acc).unsqueeze(1)
        g_neg = g_neg * w
        g_swap = g_swap * (1 - w)
    grads = [None, None, None]
    if call.need_grad[0]:
        grads[0] = coef * (g_pos - g_neg)
    if call.need_grad[1]:
        grads[1] = -coef * (g_pos + g_swap) if swap else -coef * g_pos
    if call.need_grad[2]:
        grads[2] = coef * (g_neg + g_swap) if swap else coef * g_neg
    return Result(loss, tuple(None if g is None else g.to(out) for g in grads))


def pairwise_degree(distance_function: object) -> tuple[float, float] | None:
    """``(p, eps)`` when ``distance_function`` is torch's pairwise distance (None, the function
    ``torch.pairwise_distance``, or a hook-free ``torch.nn.PairwiseDistance`` module without
    ``keepdim``): that distance is fused. None for any other function."""
    if distance_function is None or distance_function is torch.pairwise_distance:
        return 2.0, 1e-6
    if (type(distance_function) is torch.nn.PairwiseDistance and not distance_function.keepdim
            and not distance_function._forward_hooks
            and not distance_function._forward_pre_hooks):
        return float(distance_function.norm), float(distance_function.eps)
    return None


def with_distance(anchor: Tensor, positive: Tensor, negative: Tensor, distance_function,
                  margin: float, swap: bool, reduction: str, validate: bool,
                  backend: str) -> Tensor:
    r"""``triplet_margin_with_distance_loss``: torch's checks in torch's order, then the fused
    triplet loss for torch's pairwise distance, else the hinge
    :math:`[\mu + d(a, p) - d(a, q)]_+` and the reduction in torch ops on the user's distances
    (autograd differentiates through the user's function)."""
    from marginloss import _pipeline  # (the pipeline imports the losses)

    fn = "triplet_margin_with_distance_loss"
    if reduction not in ("mean", "sum", "none"):  # no legacy arguments, no "elementwise_mean"
        raise ValueError(f"{reduction} is not a valid value for reduction ({fn}: expected "
                         f"'none', 'mean' or 'sum').")
    _pipeline.check_options(validate, backend, fn)
    if not margin > 0:
        raise ValueError(f"margin must be greater than 0, got {margin} ({fn}).")
    check_ranks(fn, anchor, positive, negative)
    fused = pairwise_degree(distance_function)
    if fused is not None:
        options = (margin, fused[0], fused[1], swap)
        return _pipeline.run(SPEC, (anchor, positive, negative), None, None, options, None,
                             None, reduction, validate, backend)
    d_pos = distance_function(anchor, positive)
    d_neg = distance_function(anchor, negative)
    if swap:
        d_neg = torch.minimum(d_neg, distance_function(positive, negative))
    loss = torch.clamp_min(margin + d_pos - d_neg, 0)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def sample(n: int, c: int, *, dtype=torch.float32, device="cpu", generator=None):
    """Triplets of ``c``-dimensional embeddings: positives and negatives are noisy copies of
    the anchors at about the same distance, so the hinge is active for some rows only."""
    a = torch.randn(n, c, generator=generator)
    pos = a + torch.randn(n, c, generator=generator)
    neg = a + 1.05 * torch.randn(n, c, generator=generator)
    return tuple(t.to(device=device, dtype=dtype) for t in (a, pos, neg)), None, {}


SPEC = LossSpec(
    name=NAME,
    module="TripletMarginLoss",
    convention="no labels: (anchor, positive, negative) rows of D features",
    inputs=_ARGS,
    has_target=False,
    options=(Option("margin", "float", 1.0), Option("p", "float", 2.0),
             Option("eps", "float", 1e-6), Option("swap", "int", False)),
    backends=KERNELS,
    prepare=prepare,
    check_labels=check_labels,
    torch_compute=torch_compute,
    sample=sample,
    benchmark_cases=({"n": 4096, "c": 512},),
)
