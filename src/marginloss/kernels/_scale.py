r"""Backward's only work: the stored gradient times the upstream gradient, in place, on the GPU.

The fused losses compute their gradient in the forward pass; backward multiplies it by the
upstream gradient :math:`g_o` (a scalar for ``"mean"``/``"sum"``, one value per row or per
element for ``"none"``), broadcast over the dimensions it lacks. On the CPU the common
``loss.backward()`` (:math:`g_o = 1`) is recognised by reading it; on a GPU that read would be a
host synchronisation. This kernel reads :math:`g_o` on the device instead: with a scalar
:math:`g_o = 1` every program masks off its loads and stores (no traffic but the one read of
:math:`g_o`), otherwise it scales in place (float32 math, one rounding, no temporary: a
half-precision gradient stays half precision).

Element ``i`` of the contiguous gradient takes :math:`g_o` at index ``i // per_go``, with
``per_go = numel(grad) / numel(g_o)``: the whole tensor for a scalar, a row of ``C`` for
per-row losses, 1 for per-element losses.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK = 4096  # elements per program


@triton.jit
def _scale_kernel(
    # pointers
    grad_ptr,  # (n,) gradient, fp16 / bf16 / fp32 / fp64, contiguous, scaled in place
    go_ptr,  # (n / per_go,) upstream gradient, contiguous
    # sizes / scalars
    n_elements,
    per_go,  # gradient elements per upstream value
    # meta-parameters
    SCALAR: tl.constexpr,  # one upstream value for the whole gradient: skip it when it is 1
    BLOCK: tl.constexpr,
):
    start = tl.program_id(0).to(tl.int64) * BLOCK  # int64: n may exceed 2^31
    offs = start + tl.arange(0, BLOCK)
    mask = offs < n_elements
    if SCALAR:
        go = tl.zeros([BLOCK], tl.float32) + tl.load(go_ptr).to(tl.float32)  # broadcast
        mask = mask & (go != 1.0)  # exactly 1: no load, no store
    else:
        go = tl.load(go_ptr + offs // per_go, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(grad_ptr + offs, (g * go).to(grad_ptr.dtype.element_ty), mask=mask)


def scale_(grad: Tensor, grad_output: Tensor) -> Tensor:
    """``grad *= grad_output`` (broadcast over the dimensions ``grad_output`` lacks), in place,
    on ``grad``'s device, without reading ``grad_output`` on the host. ``grad`` must be
    contiguous and ``grad_output.numel()`` divide ``grad.numel()``."""
    n = grad.numel()
    if n == 0:
        return grad
    go = grad_output.reshape(-1)
    if not go.is_contiguous():
        go = go.contiguous()
    with torch.cuda.device(grad.device) if grad.is_cuda else contextlib.nullcontext():
        _scale_kernel[(triton.cdiv(n, BLOCK),)](
            grad, go, n, n // go.numel(), SCALAR=go.numel() == 1, BLOCK=BLOCK, num_warps=8)
    return grad
