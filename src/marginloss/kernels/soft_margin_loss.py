r"""``soft_margin_loss``: the two-class logistic loss, elementwise, and its gradient in one pass.

With score :math:`x`, label :math:`y \in \{-1, +1\}` and :math:`m = y x`:

.. math::
    \ell = \operatorname{softplus}(-m) = \max(-m, 0) + \log(1 + e^{-|m|}), \qquad
    \frac{\partial \ell}{\partial x} = -y\, \sigma(-m)

(:math:`\partial \operatorname{softplus}(u) / \partial u = \sigma(u)`, and
:math:`\partial(-m)/\partial x = -y`). The right-hand form never overflows; softplus and sigmoid
share one exponential (:func:`~marginloss.kernels._common.softplus_parts`). Math runs in float32
whatever the input dtype (float16 / bfloat16 / float32); results are rounded once, on the store.

Layout: the ``(N, C)`` input and target are read as flat vectors of ``n = N C`` elements, one
program per ``BLOCK`` consecutive elements (a 1-D grid); a non-contiguous input or a broadcast
target is made contiguous first. The ``"mean"`` scale ``1/n`` is folded into the gradient in
the kernel.

Reductions are deterministic (no atomics): for ``"mean"``/``"sum"`` each program writes the
float32 sum of its block, and torch adds those ``n / BLOCK`` partial sums (fixed order).

Memory traffic per element, the minimum for a fused loss: read the score and the label, write
the gradient; plus one float32 per program for a reduced loss, or the elementwise loss for
``reduction="none"``. Extra memory: the partial sums only.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from marginloss.backends._common import grad_scale, reduce_rows
from marginloss.kernels._common import softplus_parts
from marginloss.losses._spec import Call, Result
from marginloss.losses.soft_margin_loss import SPEC

BLOCK = 4096  # elements per program


@triton.jit
def _soft_margin_loss_kernel(
    # pointers
    x_ptr,  # (n,) scores, fp16 / bf16 / fp32, contiguous
    y_ptr,  # (n,) labels in {-1, +1}, float, contiguous
    loss_ptr,  # (n,) elementwise loss in the output dtype (not REDUCE; else None)
    partial_ptr,  # (n_programs,) float32 partial sums (REDUCE; else None)
    grad_x_ptr,  # (n,) d loss / d x in x's dtype (NEED_GRAD; else None)
    # sizes / scalars
    n_elements,
    grad_scale,  # 1/n for "mean", else 1
    # meta-parameters
    REDUCE: tl.constexpr,  # True: one partial sum per program; False: the elementwise loss
    NEED_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One program per BLOCK consecutive elements. The block's start is an int64 scalar (n may
    # exceed 2^31); offsets within the block stay int32.
    pid = tl.program_id(0)
    start = pid.to(tl.int64) * BLOCK
    offs = tl.arange(0, BLOCK)
    mask = offs < n_elements - start
    # padding lanes are zeroed out of the sum below, whatever they load
    x = tl.load(x_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)

    # loss = softplus(-m) = max(-m, 0) + log(1 + exp(-|m|)), m = y x
    # d loss / d x = -y sigmoid(-m)
    linear, tail, sig_neg_m = softplus_parts(-(y * x))
    loss = linear + tail

    if REDUCE:
        tl.store(partial_ptr + pid, tl.sum(tl.where(mask, loss, 0.0), axis=0))
    else:
        tl.store(loss_ptr + start + offs, loss.to(loss_ptr.dtype.element_ty), mask=mask)
    if NEED_GRAD:
        grad = (-grad_scale * sig_neg_m) * y
        tl.store(grad_x_ptr + start + offs, grad.to(grad_x_ptr.dtype.element_ty), mask=mask)


def launch(call: Call) -> Result:
    """The loss and gradient of ``call`` (the contract of ``SPEC.torch_compute``).

    ``call.input`` and ``call.target`` are ``(N, C)`` (the target possibly a stride-0
    broadcast view, or integer / bool). Traceable: shapes decide everything.
    """
    input, target = call.input, call.target
    need_grad, reduce = call.need_grad[0], call.reduction != "none"
    out_dtype = SPEC.out_dtype(call)
    dev = input.device
    # (1) the layout the kernel reads: flat, contiguous, float labels
    if not target.is_floating_point():
        target = target.to(torch.float32)
    x = input.reshape(-1)  # a copy only if the input is not contiguous
    y = target.reshape(-1)  # a copy only if the target is not (a broadcast target)
    n = x.numel()
    # (2) allocate
    n_programs = triton.cdiv(n, BLOCK)
    grad = torch.empty(n, dtype=input.dtype, device=dev) if need_grad else None
    partial = torch.empty(n_programs, dtype=torch.float32, device=dev) if reduce else None
    loss = None if reduce else torch.empty(n, dtype=out_dtype, device=dev)
    # (3) launch
    if n:
        torch.library.wrap_triton(_soft_margin_loss_kernel)[(n_programs,)](
            x, y, loss, partial, grad,
            n, grad_scale(SPEC, call),
            REDUCE=reduce, NEED_GRAD=need_grad, BLOCK=BLOCK, num_warps=8,
        )
    grads = (None if grad is None else grad.view(input.shape),)
    if not reduce:
        return Result(loss.view(input.shape), grads)
    return Result(reduce_rows(partial, call.reduction, out_dtype, count=n), grads)
