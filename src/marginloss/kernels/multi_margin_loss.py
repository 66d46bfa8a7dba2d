r"""``multi_margin_loss``: the multi-class hinge, loss + gradient in one pass.

Row :math:`n` has scores :math:`x \in \mathbb{R}^C`, one target class :math:`y`, a class weight
:math:`w` (1 without one) and :math:`p \in \{1, 2\}`. With
:math:`z_j = \text{margin} - x_y + x_j` (computed as :math:`x_j - (x_y - \text{margin})`, the
rounding ATen and the torch backend use):

.. math::
    \ell_n = \frac{w_y}{C} \sum_{j \ne y} [z_j]_+^p, \qquad
    \frac{\partial \ell_n}{\partial x_j} = \frac{w_y}{C}\, p\, z_j^{p-1}\, [z_j > 0]
    \;(j \ne y), \qquad
    \frac{\partial \ell_n}{\partial x_y} = -\sum_{j \ne y} \frac{\partial \ell_n}{\partial x_j}

(:math:`x_y` enters every :math:`z_j` with sign :math:`-1`). The subgradient at the kink
:math:`z = 0` is 0 (strict ``z > 0``, as torch). The weight is the target class's, applied
after the power; the divisor is :math:`C`, the target included.

Layout: each program owns ``BLOCK_N`` rows (:func:`~marginloss.kernels._common.row_tile`) and
sweeps their classes in ``BLOCK_C`` chunks (so long rows run in bounded registers): it loads
:math:`x_y` once per row (a gather), then in one pass over the row accumulates the hinge sum and
the running :math:`\sum_j \partial \ell/\partial x_j`, writing the gradient of every
:math:`j \ne y` as it goes; the target's entry is written once after the sweep (the sweep's
store masks it out, so no element is written twice). Math in float32; row offsets in int64.

Memory traffic per row: read :math:`C` scores + one target index + one weight, write :math:`C`
gradient entries + one float32 loss. Extra memory: the ``(N,)`` float32 row losses, reduced by
torch afterwards (fixed order, deterministic; no atomics). A target index outside ``[0, C)``
(possible only with ``validate=False``) is never dereferenced: that row's result is undefined
but no memory outside the tensors is touched.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from marginloss.backends._common import grad_scale, reduce_rows
from marginloss.kernels._common import row_tile
from marginloss.losses._spec import Call, Result
from marginloss.losses.multi_margin_loss import SPEC

MAX_BLOCK_C = 4096  # the most classes one program holds at a time


@triton.jit
def _multi_margin_loss_kernel(
    # pointers
    x_ptr,  # (N, C) scores, fp16 / bf16 / fp32, unit class stride
    target_ptr,  # (N,) class indices, int32 / int64
    weight_ptr,  # (C,) float32 class weight, contiguous (HAS_WEIGHT; else None)
    row_loss_ptr,  # (N,) float32 per-row loss
    grad_x_ptr,  # (N, C) d loss / d x in x's dtype, contiguous (NEED_GRAD; else None)
    # strides
    stride_xn,
    stride_tn,
    # sizes / scalars
    n_rows,
    n_classes,
    margin,
    grad_scale,  # 1/C, times 1/N for "mean"
    # meta-parameters
    P: tl.constexpr,  # 1 or 2
    HAS_WEIGHT: tl.constexpr,
    NEED_GRAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # One program per BLOCK_N rows; the classes are visited in chunks of BLOCK_C.
    pid = tl.program_id(0).to(tl.int64)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)  # int64: row * stride may exceed 2^31
    mask_n = offs_n < n_rows
    x_rows = x_ptr + offs_n * stride_xn
    if NEED_GRAD:
        g_rows = grad_x_ptr + offs_n * n_classes

    # The target class of each row, its score and its weight.
    y = tl.load(target_ptr + offs_n * stride_tn, mask=mask_n, other=0).to(tl.int64)
    valid = mask_n & (y >= 0) & (y < n_classes)  # never read outside the row
    shift = tl.load(x_rows + y, mask=valid, other=0.0).to(tl.float32) - margin  # x_y - margin
    if HAS_WEIGHT:
        w_y = tl.load(weight_ptr + y, mask=valid, other=0.0)
    else:
        w_y = tl.full([BLOCK_N], 1.0, tl.float32)
    g_factor = grad_scale * P * w_y  # d loss / d x_j = g_factor * z_j^(p-1), for z_j > 0

    hinge = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.float32)  # running sum of [z]_+^p
    g_sum = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.float32)  # running sum of d loss / d x_j
    for c0 in range(0, n_classes, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask = mask_n[:, None] & (offs_c < n_classes)[None, :]
        is_y = offs_c[None, :] == y[:, None]
        x = tl.load(x_rows[:, None] + offs_c[None, :], mask=mask, other=0.0).to(tl.float32)
        z = x - shift[:, None]
        active = mask & (z > 0) & ~is_y  # strict: the subgradient at z = 0 is 0
        z = tl.where(active, z, 0.0)  # [z]_+, and 0 (the sums' identity) for target, padding
        if P == 1:
            hinge += z
        else:
            hinge += z * z
        if NEED_GRAD:
            if P == 1:  # noqa: SIM108 (constexpr branches read better spelled out)
                g = tl.where(active, 1.0, 0.0) * g_factor[:, None]
            else:
                g = z * g_factor[:, None]
            g_sum += g
            tl.store(g_rows[:, None] + offs_c[None, :], g.to(grad_x_ptr.dtype.element_ty),
                     mask=mask & ~is_y)

    tl.store(row_loss_ptr + offs_n, tl.sum(hinge, axis=1) * w_y / n_classes, mask=mask_n)
    if NEED_GRAD:
        g_y = -tl.sum(g_sum, axis=1)
        tl.store(g_rows + y, g_y.to(grad_x_ptr.dtype.element_ty), mask=valid)


def launch(call: Call) -> Result:
    """The loss and gradient of ``call`` (the contract of ``SPEC.torch_compute``).

    ``call.input`` is ``(N, C)``, ``call.target`` ``(N,)`` int32 / int64, ``call.weight``
    None or ``(C,)``, ``call.options`` ``(p, margin)``. Traceable: shapes and options decide
    everything.
    """
    input, target, weight = call.input, call.target, call.weight
    p, margin = call.options
    need_grad = call.need_grad[0]
    n_rows, n_classes = input.shape
    dev = input.device
    # (1) the layout the kernel reads: unit class stride, a float32 weight vector
    x = input if input.stride(1) == 1 else input.contiguous()
    w = weight.to(torch.float32).contiguous() if weight is not None else None
    # (2) allocate
    grad = torch.empty((n_rows, n_classes), dtype=input.dtype, device=dev) if need_grad else None
    rows = torch.empty(n_rows, dtype=torch.float32, device=dev)
    # (3) launch
    if n_rows and n_classes:
        block_n, block_c, num_warps = row_tile(n_rows, n_classes, MAX_BLOCK_C)
        torch.library.wrap_triton(_multi_margin_loss_kernel)[(triton.cdiv(n_rows, block_n),)](
            x, target, w, rows, grad,
            x.stride(0), target.stride(0),
            n_rows, n_classes, float(margin), grad_scale(SPEC, call) / n_classes,
            P=int(p), HAS_WEIGHT=w is not None, NEED_GRAD=need_grad,
            BLOCK_N=block_n, BLOCK_C=block_c, num_warps=num_warps,
        )
    return Result(reduce_rows(rows, call.reduction, SPEC.out_dtype(call)), (grad,))
