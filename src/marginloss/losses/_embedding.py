r"""What the embedding losses share (``triplet_margin_loss``, ``cosine_embedding_loss``):
checks of their vector inputs, their canonical rows, and overflow-free norms in torch ops.

**Rows.** The inputs are rows of :math:`D` features, broadcast against each other as torch
broadcasts them, promoted to one floating dtype (as torch's arithmetic does) and viewed as
contiguous ``(N, D)``. Broadcasting and dtype
conversion happen before the operator, so autograd reduces and casts the gradients back to the
user's tensors.

**Scaled norms.** A squared norm :math:`\sum_j u_j^2` overflows once :math:`|u_j|` passes
:math:`\sqrt{\text{max}} \approx 1.8 \cdot 10^{19}` in float32/bfloat16 (256 in float16), and
underflows to 0 below :math:`10^{-19}`. With :math:`m = \max_j |u_j|` (1 for a zero row),

.. math::
    \lVert u \rVert_p = m \Bigl(\sum_j (|u_j| / m)^p\Bigr)^{1/p}, \qquad
    \frac{\partial \lVert u \rVert_p}{\partial u_j}
      = \operatorname{sign}(u_j) \frac{(|u_j| / m)^{p-1}}{(\lVert u \rVert_p / m)^{p-1}},

where every term lies in :math:`[0, 1]`: nothing overflows or underflows that the result itself
would not.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from marginloss import _checks
from marginloss.errors import ShapeError


def check_vectors(fn: str, tensors: dict[str, object]) -> None:
    """Each is a floating-point tensor (integer embeddings are a mistake the fix of which is
    ``.float()``, as for every marginloss input), all on one device."""
    first = None
    for arg, t in tensors.items():
        _checks.check_input(fn, t, arg)
        if first is None:
            first = (arg, t)
        elif not (t.is_cpu and first[1].is_cpu) and t.device != first[1].device:
            raise ValueError(
                f"{fn}: `{arg}` is on {t.device} but `{first[0]}` is on {first[1].device}; "
                f"move them to the same device.")


def float_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype torch's arithmetic gives these floating-point tensors."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def broadcast(fn: str, tensors: dict[str, Tensor]) -> torch.Size:
    """The shape the tensors broadcast to, or a :class:`ShapeError` naming them."""
    try:
        return torch.broadcast_shapes(*(t.shape for t in tensors.values()))
    except RuntimeError:
        shapes = ", ".join(f"`{k}` {_checks.shape_str(t)}" for k, t in tensors.items())
        raise ShapeError(
            f"{fn}: the shapes do not broadcast together: {shapes}. Pair row i of each "
            f"tensor with row i of the others (same N and the same feature size D), or give "
            f"one row to be compared with all of them.") from None


def as_rows(x: Tensor, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """``x`` promoted to ``dtype``, broadcast to ``shape`` and viewed as contiguous
    ``(N, D)`` rows (0-d: one row of one; ``(D,)``: one row). The same tensor when it is
    already that."""
    if x.dtype != dtype:
        x = x.to(dtype)
    if x.shape != shape:
        x = x.expand(shape)
    if x.dim() != 2:
        x = x.reshape(1, 1) if x.dim() == 0 else \
            x.reshape(math.prod(shape[:-1]), shape[-1])  # -1 fails for D = 0
    return x.contiguous()


def row_norm(u: Tensor, p: float, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    r"""``(||u_n||_p, d||u_n||_p / du_n)`` of the rows of ``u`` (see the module docstring),
    with torch's subgradients: 0 for a zero row; ``sign(u)`` for ``p = 1``; for
    :math:`p = \infty` the gradient is shared equally by the entries of largest magnitude."""
    au = u.abs()
    n_rows, n_cols = u.shape
    if n_cols == 0:
        return u.new_zeros(n_rows), (u.new_zeros(u.shape) if need_grad else None)
    m = au.amax(dim=1, keepdim=True)
    if p == math.inf:
        d = m.squeeze(1)
        if not need_grad:
            return d, None
        top = ((au == m) | au.isnan()).to(u.dtype)
        return d, u.sign() * top / top.sum(dim=1, keepdim=True)
    if p == 1:
        return au.sum(dim=1), (u.sign() if need_grad else None)
    scale = torch.where((m > 0) & m.isfinite(), m, torch.ones_like(m))
    v = au / scale  # in [0, 1]
    if p == 2:
        r = (v * v).sum(dim=1, keepdim=True).sqrt_()
        d = (r * scale).squeeze(1)
        if not need_grad:
            return d, None
        g = u / scale / r
    else:
        r = v.pow(p).sum(dim=1, keepdim=True).pow_(1.0 / p)
        d = (r * scale).squeeze(1)
        if not need_grad:
            return d, None
        g = u.sign() * (v.pow(p - 1) / r.pow(p - 1)).masked_fill_(u == 0, 0.0)
    return d, g.masked_fill_(r == 0, 0.0)
