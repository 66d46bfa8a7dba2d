r"""Torch-ops building blocks of the two logistic losses (soft margin, multilabel soft margin).

Both losses are a softplus of the score, :math:`\operatorname{softplus}(u) = \max(u, 0) +
\log(1 + e^{-|u|})`, whose tail :math:`\log(1 + e^{-|u|})` is the costly part on a CPU. Their
torch computes work in blocks of about :data:`BLOCK` elements (whole rows), with scratch
buffers that are reused, so the only full-size allocation is the gradient (plus the loss for
``reduction="none"``) and the scratch stays in cache between the dozen cheap ops of the math.
"""

from __future__ import annotations

import torch
from torch import Tensor

from marginloss.backends._common import acc_dtype

BLOCK = 1 << 18  # elements per block: 1 MiB of float32 per scratch buffer


def blocks(n_rows: int, n_cols: int):
    """Yield ``(start, stop)`` row ranges of about :data:`BLOCK` elements each."""
    step = max(1, BLOCK // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def neg_tail_from_sigmoid(q: Tensor, out: Tensor) -> Tensor:
    r"""``out <- -c`` with :math:`c = \min(q, 1 - q)`, from ``q = sigmoid(±z)``; ``q`` is
    overwritten.

    :math:`c = \sigma(-|z|) \in (0, 1/2]` and the softplus tail is
    :math:`\log(1 + e^{-|z|}) = -\log(1 - c)`. ``-c = max(-q, q - 1)``, both terms exact.
    Accurate where ``q`` itself is small; where ``q`` is near 1 (and was rounded there) the tail
    is below float precision *relative to the linear part of the loss*, which is why soft margin
    may use the gradient's sigmoid here (its linear part :math:`-m` dominates exactly there).
    """
    torch.sub(q, 1, out=out)  # q - 1
    return torch.maximum(q.neg_(), out, out=out)


def neg_tail(z: Tensor, out: Tensor) -> Tensor:
    r"""``out <- -\sigma(-|z|)``, accurate for every ``z`` (tiny tails included)."""
    return torch.abs(z, out=out).neg_().sigmoid_().neg_()


def sum_log1p(t: Tensor, u64: Tensor | None) -> Tensor:
    r""":math:`\sum \log(1 + t)` for :math:`t \in [-1/2, 0)` (``t`` is overwritten); 0-d tensor.

    The sum of the softplus tails is all a reduced loss needs, and ``log1p`` is the costliest op
    of the logistic losses on CPU. So on CPU (``u64`` given) the sum is taken as the log of
    float64 products of 64 terms, :math:`\sum_i \log(1 + t_i) = \sum_g \log \prod_{i \in g}
    (1 + t_i)`: every factor lies in [1/2, 1), so no product underflows, and each rounds with
    relative error :math:`2^{-53}`, for an absolute error of about :math:`2.2 \cdot 10^{-16}` per
    term. Only when the tails are so small (mean below 1e-7, a very confident model) that this
    would show in the float32 result is the exact elementwise ``log1p`` used instead.
    """
    n = t.numel()
    if u64 is not None:
        u = u64[:n].copy_(t.reshape(-1)).add_(1.0)
        main = n - n % 64
        total = u[:main].view(-1, 64).prod(1).log_().sum() + u[main:].log_().sum()
        if -float(total) >= 1e-7 * n:
            return total
    return t.log1p_().sum()


def product_scratch(input: Tensor, width: int, reduced: bool) -> Tensor | None:
    """The float64 buffer of :func:`sum_log1p`'s fast path: CPU, float32 math, reduced loss,
    blocks large enough (64Ki elements) for its few extra op calls to pay off."""
    if (reduced and width >= 1 << 16 and input.device.type == "cpu"
            and acc_dtype(input.dtype) == torch.float32):
        return torch.empty(width, dtype=torch.float64)
    return None
