r"""``multilabel_soft_margin_loss``: per-class logistic loss on a 0/1 mask, loss + gradient.

For row :math:`n` of :math:`C` classes, scores :math:`x`, mask :math:`y \in [0, 1]` and weight
:math:`w` (1 without one):

.. math::
    \ell_n = \frac{1}{C} \sum_c w_{nc} \bigl(\operatorname{softplus}(x_{nc}) - y_{nc} x_{nc}\bigr),
    \qquad
    \frac{\partial \ell_n}{\partial x_{nc}} = \frac{w_{nc}}{C}\bigl(\sigma(x_{nc}) - y_{nc}\bigr),

which is torch's :math:`-\frac{1}{C}\sum_c w_{nc}[y \log\sigma(x) + (1-y)\log\sigma(-x)]`
(:math:`-\log\sigma(x) = \operatorname{softplus}(-x) = \operatorname{softplus}(x) - x`). Softplus
and sigmoid share one exponential and never overflow
(:func:`~marginloss.kernels._common.softplus_parts`). Each term is added up as
:math:`(\max(x, 0) - y x) + \log(1 + e^{-|x|})`: the linear part first (exact for a 0/1 label),
so a confident, correct score keeps the tail's relative accuracy. Math runs in float32 whatever
the input dtype; results are rounded once, on the store.

Layout: each program owns a ``BLOCK_N x BLOCK_C`` tile of rows
(:func:`~marginloss.kernels._common.row_tile`) and loops over the classes in ``BLOCK_C``
chunks, so rows of any length run in bounded registers and short rows are packed several to a
program. The target and the weight are read through their strides: a broadcast target, a
per-class ``(C,)`` weight (row stride 0) or a full ``(N, C)`` weight are never materialised.
Row offsets are int64 (``N * C`` may exceed 2^31). The scale :math:`1/C` (times :math:`1/N`
for ``"mean"``) is folded into the gradient in the kernel.

Reductions are deterministic (no atomics): each row's loss is summed inside its program and
written as one float32; torch reduces the ``(N,)`` row losses (fixed order).

Memory traffic per element: read the score and the label (and the weight: one ``(C,)`` vector
re-read from cache, or a full weight), write the gradient; plus one float32 per row. Extra
memory: the ``(N,)`` row losses.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from marginloss.backends._common import grad_scale, reduce_rows
from marginloss.kernels._common import row_tile, softplus_parts
from marginloss.losses._spec import Call, Result
from marginloss.losses.multilabel_soft_margin_loss import SPEC

MAX_BLOCK_C = 4096  # the most classes one program holds at a time


@triton.jit
def _multilabel_soft_margin_loss_kernel(
    # pointers
    x_ptr,  # (N, C) scores, fp16 / bf16 / fp32, unit class stride
    target_ptr,  # (N, C) mask in [0, 1], float / int / bool (stride-0 rows or classes allowed)
    weight_ptr,  # (N, C) weight, float / int, any strides (HAS_WEIGHT; else None)
    row_loss_ptr,  # (N,) float32 per-row loss
    grad_x_ptr,  # (N, C) d loss / d x in x's dtype, contiguous (NEED_GRAD; else None)
    # strides
    stride_xn,
    stride_tn, stride_tc,
    stride_wn, stride_wc,  # (0, 1) for a per-class (C,) weight
    # sizes / scalars
    n_rows,
    n_classes,
    grad_scale,  # 1/C, times 1/N for "mean"
    # meta-parameters
    HAS_WEIGHT: tl.constexpr,
    NEED_GRAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # One program per BLOCK_N rows; the classes are visited in chunks of BLOCK_C.
    pid = tl.program_id(0).to(tl.int64)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)  # int64: row * stride may exceed 2^31
    mask_n = offs_n < n_rows
    x_rows = x_ptr + offs_n[:, None] * stride_xn
    t_rows = target_ptr + offs_n[:, None] * stride_tn
    if HAS_WEIGHT:
        w_rows = weight_ptr + offs_n[:, None] * stride_wn
    if NEED_GRAD:
        g_rows = grad_x_ptr + offs_n[:, None] * n_classes

    acc = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.float32)  # elementwise running sums
    for c0 in range(0, n_classes, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask = mask_n[:, None] & (offs_c < n_classes)[None, :]
        # padding lanes are zeroed out of the sum below, whatever they load
        x = tl.load(x_rows + offs_c[None, :], mask=mask, other=0.0).to(tl.float32)
        y = tl.load(t_rows + offs_c[None, :] * stride_tc, mask=mask, other=0.0).to(tl.float32)
        if HAS_WEIGHT:
            w = tl.load(w_rows + offs_c[None, :] * stride_wc, mask=mask, other=0.0)
            w = w.to(tl.float32)
        linear, tail, sigmoid = softplus_parts(x)
        if NEED_GRAD:  # stored first, its registers free for the loss (< 255 on sm_90)
            grad = sigmoid - y
            if HAS_WEIGHT:
                grad = grad * w
            grad = grad * grad_scale
            tl.store(g_rows + offs_c[None, :], grad.to(grad_x_ptr.dtype.element_ty), mask=mask)
        loss = (linear - y * x) + tail  # the linear part cancels exactly; the tail comes last
        if HAS_WEIGHT:
            loss = loss * w
        acc += tl.where(mask, loss, 0.0)  # 0 is the identity of the sum

    tl.store(row_loss_ptr + offs_n, tl.sum(acc, axis=1) / n_classes, mask=mask_n)


def _unit_or_zero_stride(t: Tensor) -> Tensor:
    """``t`` itself when its class stride is 0 or 1 (a broadcast or dense row), else a copy."""
    return t if t.stride(1) in (0, 1) else t.contiguous()


def launch(call: Call) -> Result:
    """The loss and gradient of ``call`` (the contract of ``SPEC.torch_compute``).

    ``call.input`` and ``call.target`` are ``(N, C)`` (the target possibly a stride-0 view);
    ``call.weight`` is None, a per-class ``(C,)`` vector or a full ``(N, C)`` weight. Target
    and weight are read through their strides, never materialised. Traceable: shapes decide
    everything.
    """
    input, weight = call.input, call.weight
    need_grad = call.need_grad[0]
    out_dtype = SPEC.out_dtype(call)
    n_rows, n_classes = input.shape
    dev = input.device
    # (1) the layout the kernel reads: unit class stride for the scores
    x = input if input.stride(1) == 1 else input.contiguous()
    t = _unit_or_zero_stride(call.target)
    if weight is None:
        stride_wn = stride_wc = 0
    elif weight.dim() == 1:  # per class: every row reads the same vector
        stride_wn, stride_wc = 0, weight.stride(0)
    else:
        weight = _unit_or_zero_stride(weight)
        stride_wn, stride_wc = weight.stride()
    # (2) allocate
    grad = torch.empty((n_rows, n_classes), dtype=input.dtype, device=dev) if need_grad else None
    rows = torch.empty(n_rows, dtype=torch.float32, device=dev)
    # (3) launch
    if n_classes == 0:
        rows.fill_(float("nan"))  # 0 / 0, as torch
    elif n_rows:
        block_n, block_c, num_warps = row_tile(n_rows, n_classes, MAX_BLOCK_C)
        torch.library.wrap_triton(_multilabel_soft_margin_loss_kernel)[
            (triton.cdiv(n_rows, block_n),)
        ](
            x, t, weight, rows, grad,
            x.stride(0), t.stride(0), t.stride(1), stride_wn, stride_wc,
            n_rows, n_classes, grad_scale(SPEC, call) / n_classes,
            HAS_WEIGHT=weight is not None, NEED_GRAD=need_grad,
            BLOCK_N=block_n, BLOCK_C=block_c, num_warps=num_warps,
        )
    return Result(reduce_rows(rows, call.reduction, out_dtype), (grad,))
