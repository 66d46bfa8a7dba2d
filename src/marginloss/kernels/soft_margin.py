r"""Logistic family: ``soft_margin_loss`` and ``multilabel_soft_margin_loss``, loss + gradient.

Both losses are a softplus of the score, so one stable form serves both. With
:math:`\operatorname{softplus}(u) = \log(1 + e^{u}) = \max(u, 0) + \log(1 + e^{-|u|})`:

**soft margin** (elementwise, labels :math:`y \in \{-1, +1\}`, :math:`m = y x`)

.. math::
    \ell = \operatorname{softplus}(-m) = \max(-m, 0) + \log(1 + e^{-|m|}), \qquad
    \frac{\partial \ell}{\partial x} = -y\, \sigma(-m).

**multilabel soft margin** (row :math:`n` of :math:`C` classes, mask :math:`y \in [0, 1]`,
weight :math:`w`)

.. math::
    \ell_n = \frac{1}{C} \sum_c w_{nc} \bigl(\operatorname{softplus}(x_{nc}) - y_{nc} x_{nc}\bigr),
    \qquad
    \frac{\partial \ell_n}{\partial x_{nc}} = \frac{w_{nc}}{C}\bigl(\sigma(x_{nc}) - y_{nc}\bigr).

Stability: with :math:`e = e^{-|u|} \in (0, 1]` nothing overflows; :math:`\log(1 + e)` is
computed as ``log1p`` by Goldberg's trick (:func:`_log1p`) and the sigmoid as
:math:`\sigma(u) = 1/(1+e)` for :math:`u \ge 0`, :math:`e/(1+e)` otherwise. Math runs in float32
whatever the input dtype (float16 / bfloat16 / float32); results are rounded once, on the store.

Reductions are deterministic: a program never adds into another's memory. Soft margin writes one
float32 partial sum per program (``BLOCK`` elements), the multilabel kernel one float32 loss per
row; torch then reduces that small buffer (``sum``, fixed order). The ``"mean"`` scale (``1/numel``,
resp. ``1/(N C)``) is folded into the gradient in the kernel.

Memory traffic per element, the minimum for a fused loss: read the score and the label (and the
weight, usually one ``(C,)`` vector re-read from cache), write the gradient; plus one float32 per
program (soft margin) or per row (multilabel) for the loss, or the elementwise loss for
``reduction="none"``. Extra memory: that buffer only.

Layout: soft margin is a flat 1-D grid of ``BLOCK``-element programs. The multilabel kernel gives
each program a ``BLOCK_N x BLOCK_C`` tile of rows and loops over the classes in ``BLOCK_C``
chunks, so rows of any length (``C`` up to 2^31 - 1) run in bounded registers and short rows
are packed several to a program. Row offsets are int64 (``N * C`` may exceed 2^31).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from marginloss._torch_backend import reduce_rows

BLOCK = 4096  # soft margin: elements per program
MAX_BLOCK_C = 4096  # row kernels: the most classes one program holds at a time
TILE = 4096  # row kernels: elements per BLOCK_N x BLOCK_C tile (short rows are packed)


def row_tile(n_rows: int, n_classes: int, max_block_c: int) -> tuple[int, int, int]:
    """``(BLOCK_N, BLOCK_C, num_warps)`` for a row kernel over an ``(n_rows, n_classes)`` input.

    ``BLOCK_C`` covers the row up to ``max_block_c`` (longer rows loop over chunks);
    ``BLOCK_N`` packs short rows so a tile holds about ``TILE`` elements.
    """
    block_c = min(triton.next_power_of_2(max(n_classes, 1)), max_block_c)
    block_n = max(1, min(TILE // block_c, triton.next_power_of_2(max(n_rows, 1))))
    num_warps = 8 if block_n * block_c >= 4096 else 4
    return block_n, block_c, num_warps


@triton.jit
def _log1p(e):
    """``log(1 + e)``, accurate for small ``e``: ``log(u) * e / (u - 1)`` with ``u = 1 + e``.

    Goldberg's trick: the rounding error of ``u`` cancels in the ratio (tl.log1p is not in
    every Triton version's core language).
    """
    u = 1.0 + e
    exact = u == 1.0  # e below half an ulp of 1: log1p(e) = e to float32 precision
    return tl.where(exact, e, tl.log(u) * (e / tl.where(exact, 1.0, u - 1.0)))


@triton.jit
def _softplus_parts(u):
    """``(max(u, 0) + log(1 + exp(-|u|)), sigmoid(u))``, both stable for any finite ``u``."""
    e = tl.exp(-tl.abs(u))  # in (0, 1]: never overflows
    softplus = tl.maximum(u, 0.0) + _log1p(e)
    sigmoid = tl.where(u >= 0, 1.0, e) / (1.0 + e)
    return softplus, sigmoid


# ----------------------------------------------------------------------------------------------
# soft_margin_loss


@triton.jit
def _soft_margin_fwd_bwd_kernel(
    # pointers
    x_ptr,  # (n,) scores, fp16 / bf16 / fp32, contiguous
    y_ptr,  # (n,) labels in {-1, +1}, float, contiguous
    loss_ptr,  # (n,) elementwise loss in the output dtype (reduction="none" only)
    partial_ptr,  # (n_programs,) float32 partial sums (reduced losses only)
    grad_ptr,  # (n,) d loss / d x in x's dtype (NEED_GRAD only)
    # sizes / scalars
    n_elements,
    grad_scale,  # 1/n for "mean", else 1
    # meta-parameters
    REDUCE: tl.constexpr,  # True: write one partial sum per program; False: the elementwise loss
    NEED_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One program per BLOCK consecutive elements. The block's start is an int64 scalar (n may
    # exceed 2^31); offsets within the block stay int32.
    pid = tl.program_id(0)
    start = pid.to(tl.int64) * BLOCK
    offs = tl.arange(0, BLOCK)
    mask = offs < n_elements - start
    x = tl.load(x_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)

    # loss = softplus(-m), m = y x;  d loss / d x = -y sigmoid(-m)
    loss, sig_neg_m = _softplus_parts(-(y * x))

    if REDUCE:
        tl.store(partial_ptr + pid, tl.sum(tl.where(mask, loss, 0.0), axis=0))
    else:
        tl.store(loss_ptr + start + offs, loss.to(loss_ptr.dtype.element_ty), mask=mask)
    if NEED_GRAD:
        grad = (-grad_scale * sig_neg_m) * y
        tl.store(grad_ptr + start + offs, grad.to(grad_ptr.dtype.element_ty), mask=mask)


def soft_margin_loss(input: Tensor, target: Tensor, reduction: str, need_grad: bool,
                     out_dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """Launch :func:`_soft_margin_fwd_bwd_kernel`; same contract as the torch backend's."""
    if not target.is_floating_point():
        target = target.to(torch.float32)
    x = input.reshape(-1)  # a copy only if the input is not contiguous
    y = target.expand(input.shape).reshape(-1)  # a copy only if the target broadcasts
    n = x.numel()
    dev = input.device
    grad = torch.empty(n, dtype=input.dtype, device=dev) if need_grad else None
    reduce = reduction != "none"
    n_programs = triton.cdiv(n, BLOCK)
    partial = torch.empty(n_programs if reduce else 0, dtype=torch.float32, device=dev)
    out = torch.empty(0 if reduce else n, dtype=out_dtype, device=dev)
    if n:
        scale = 1.0 / n if reduction == "mean" else 1.0
        _soft_margin_fwd_bwd_kernel[(n_programs,)](
            x, y,
            # an unused pointer gets a live tensor (a 0-element one may have no device address)
            out if not reduce else partial,  # loss_ptr: used only for "none"
            partial if reduce else out,  # partial_ptr: used only for "mean" / "sum"
            grad if need_grad else x, n, scale,
            REDUCE=reduce, NEED_GRAD=need_grad, BLOCK=BLOCK, num_warps=8,
        )
    if grad is not None:
        grad = grad.view(input.shape)
    if not reduce:
        return out.view(input.shape), grad
    total = partial.sum()
    if reduction == "mean":
        total = total / n if n else total.new_tensor(float("nan"))
    return total.to(out_dtype), grad


# ----------------------------------------------------------------------------------------------
# multilabel_soft_margin_loss


@triton.jit
def _multilabel_soft_margin_fwd_bwd_kernel(
    # pointers
    x_ptr,  # (N, C) scores, fp16 / bf16 / fp32, unit class stride
    target_ptr,  # (N, C) mask in [0, 1], float (stride-0 rows / classes allowed)
    weight_ptr,  # (N, C) float weight, usually a stride-0 view of a (C,) vector (HAS_WEIGHT only)
    row_loss_ptr,  # (N,) float32 per-row loss
    grad_ptr,  # (N, C) d loss / d x in x's dtype, contiguous (NEED_GRAD only)
    # strides
    stride_xn,
    stride_tn, stride_tc,
    stride_wn, stride_wc,
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
    w_rows = weight_ptr + offs_n[:, None] * stride_wn
    g_rows = grad_ptr + offs_n[:, None] * n_classes

    acc = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.float32)  # elementwise running sums
    for c0 in range(0, n_classes, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask = mask_n[:, None] & (offs_c < n_classes)[None, :]
        x = tl.load(x_rows + offs_c[None, :], mask=mask, other=0.0).to(tl.float32)
        y = tl.load(t_rows + offs_c[None, :] * stride_tc, mask=mask, other=0.0).to(tl.float32)
        softplus, sigmoid = _softplus_parts(x)
        loss = softplus - y * x
        grad = sigmoid - y
        if HAS_WEIGHT:
            w = tl.load(w_rows + offs_c[None, :] * stride_wc, mask=mask, other=0.0)
            loss = loss * w.to(tl.float32)
            grad = grad * w.to(tl.float32)
        acc += tl.where(mask, loss, 0.0)  # 0 is the identity of the sum
        if NEED_GRAD:
            g = grad * grad_scale
            tl.store(g_rows + offs_c[None, :], g.to(grad_ptr.dtype.element_ty), mask=mask)

    tl.store(row_loss_ptr + offs_n, tl.sum(acc, axis=1) / n_classes, mask=mask_n)


def _unit_or_zero_stride(t: Tensor) -> Tensor:
    """``t`` itself when its class stride is 0 or 1 (a broadcast or dense row), else a copy."""
    return t if t.stride(1) in (0, 1) else t.contiguous()


def multilabel_soft_margin_loss(input: Tensor, target: Tensor, weight: Tensor | None,
                                reduction: str, need_grad: bool,
                                out_dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """Launch :func:`_multilabel_soft_margin_fwd_bwd_kernel`; the torch backend's contract.

    ``input``, ``target`` and ``weight`` are ``(N, C)``; target and weight may be broadcast views
    (stride 0), which are read through their strides, never materialised.
    """
    n_rows, n_classes = input.shape
    dev = input.device
    x = input if input.stride(1) == 1 else input.contiguous()
    t = _unit_or_zero_stride(target)
    w = _unit_or_zero_stride(weight) if weight is not None else None
    grad = torch.empty((n_rows, n_classes), dtype=input.dtype, device=dev) if need_grad else None
    rows = torch.empty(n_rows, dtype=torch.float32, device=dev)
    if n_classes == 0:
        rows.fill_(float("nan"))  # 0 / 0, as torch
    elif n_rows:
        scale = (1.0 / n_rows if reduction == "mean" else 1.0) / n_classes
        block_n, block_c, num_warps = row_tile(n_rows, n_classes, MAX_BLOCK_C)
        _multilabel_soft_margin_fwd_bwd_kernel[(triton.cdiv(n_rows, block_n),)](
            x, t, w if w is not None else x, rows, grad if need_grad else x,
            x.stride(0), t.stride(0), t.stride(1),
            w.stride(0) if w is not None else 0, w.stride(1) if w is not None else 0,
            n_rows, n_classes, scale,
            HAS_WEIGHT=w is not None, NEED_GRAD=need_grad, BLOCK_N=block_n, BLOCK_C=block_c,
            num_warps=num_warps,
        )
    return reduce_rows(rows, reduction, out_dtype), grad
