r"""``margin_ranking_loss``: the pairwise ranking hinge and both gradients in one pass.

With scores :math:`x_1, x_2`, label :math:`y` and margin :math:`\mu` (torch's definition and
order of operations, any label):

.. math::
    z = -y\,(x_1 - x_2) + \mu, \qquad \ell = [z]_+, \qquad
    \frac{\partial \ell}{\partial x_1} = -y\,[z \ge 0], \qquad
    \frac{\partial \ell}{\partial x_2} = y\,[z \ge 0].

At :math:`z = 0` the gradient is not 0 (torch's ``clamp_min`` passes it). The gradients are
products with :math:`y`, as torch's, so a NaN label gives NaN gradients; :math:`[z]_+` is
``where(z < 0, 0, z)``, so a NaN score gives a NaN loss. Math in float32 whatever the input
dtype (the margin is a float32 kernel argument, torch's rounding); results are rounded once, on
the store. Either gradient may be skipped (``NEED_G1`` / ``NEED_G2``).

Label check (``check=True``), in the same pass: each program counts its labels with
:math:`|y| \ne 1` (NaN included) into an int32 slot; torch adds the slots (``bad_labels``, a 0-d
int64 on the device, no host read).

Layout: both inputs and the target are read as flat vectors of :math:`n = N C` elements (a
non-contiguous or broadcast one is made contiguous first; an integer target is read as it is
and converted in the kernel). Each program takes a span of whole ``BLOCK``\ s
(:func:`~marginloss.kernels._common.flat_span`), read and written without masks, and the last
program one masked block. The ``"mean"`` scale :math:`1/n` is folded into the gradients.
Reductions are deterministic (no atomics): each program writes the float32 sum of its span, and
torch adds those partial sums (fixed order).

Memory traffic per element, the minimum for a fused loss: read two scores and the label, write
two gradients (20 bytes in float32), plus the elementwise loss for ``reduction="none"``; one
float32 (and one int32 with ``check``) per program. About ten instructions per element: the
kernel is bound by memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from marginloss.backends._common import grad_scale
from marginloss.kernels._common import (
    flat_outputs,
    flat_result,
    load_f32,
    program_span,
    ptx_allowed,
    store_block,
    store_program_sums,
)
from marginloss.losses._spec import Call, Result
from marginloss.losses.margin_ranking_loss import SPEC

BLOCK = 2048  # elements per step of a program: 8 per thread at 8 warps


@triton.jit
def _block(x1_ptr, x2_ptr, y_ptr, loss_ptr, g1_ptr, g2_ptr, offs, rem, acc, bad, margin, scale,
           STORE_LOSS: tl.constexpr, REDUCE: tl.constexpr, NEED_G1: tl.constexpr,
           NEED_G2: tl.constexpr, CHECK: tl.constexpr, MASKED: tl.constexpr,
           PTX: tl.constexpr):
    """One block of elements ``offs`` (all of them, or those below ``rem`` when MASKED)."""
    x1 = load_f32(x1_ptr, offs, rem, 0.0, MASKED, PTX)
    x2 = load_f32(x2_ptr, offs, rem, 0.0, MASKED, PTX)
    y = load_f32(y_ptr, offs, rem, 1.0, MASKED, PTX)  # a valid padding label
    z = -y * (x1 - x2) + margin
    if NEED_G1 or NEED_G2:
        g = (-y * scale) * tl.where(z >= 0.0, 1.0, 0.0)
        if NEED_G1:
            store_block(g1_ptr, offs, g, rem, MASKED)
        if NEED_G2:
            store_block(g2_ptr, offs, -g, rem, MASKED)
    loss = tl.where(z < 0.0, 0.0, z)
    if STORE_LOSS:
        store_block(loss_ptr, offs, loss, rem, MASKED)
    if REDUCE:
        if MASKED:
            loss = tl.where(offs < rem, loss, 0.0)
        acc += loss
    if CHECK:
        bad += tl.where(tl.abs(y) == 1.0, 0.0, 1.0)
    return acc, bad


@triton.jit
def margin_ranking_kernel(
    x1_ptr,  # (n,) first scores, fp16 / bf16 / fp32, contiguous
    x2_ptr,  # (n,) second scores, the same dtype, contiguous
    y_ptr,  # (n,) labels, float / int, contiguous
    loss_ptr,  # (n,) elementwise loss in the output dtype (STORE_LOSS; else None)
    partial_ptr,  # (n_programs,) float32 sums of the loss terms (REDUCE; else None)
    bad_ptr,  # (n_programs,) int32 counts of bad labels (CHECK; else None)
    g1_ptr,  # (n,) d loss / d x1 (NEED_G1; else None)
    g2_ptr,  # (n,) d loss / d x2 (NEED_G2; else None)
    n_elements,
    span,  # elements per program: a multiple of BLOCK, at most MAX_SPAN
    margin,
    scale,  # the gradients' factor (1/n for "mean", else 1)
    STORE_LOSS: tl.constexpr,
    REDUCE: tl.constexpr,
    NEED_G1: tl.constexpr,
    NEED_G2: tl.constexpr,
    CHECK: tl.constexpr,
    BLOCK: tl.constexpr,
    PTX: tl.constexpr,
):
    # Program p owns elements [p span, min((p + 1) span, n)): its full BLOCKs unmasked, then at
    # most one masked tail. The start is int64; offsets inside the span are int32.
    pid, start, count = program_span(n_elements, span)
    x1_ptr += start
    x2_ptr += start
    y_ptr += start
    if STORE_LOSS:
        loss_ptr += start
    if NEED_G1:
        g1_ptr += start
    if NEED_G2:
        g2_ptr += start
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    bad = tl.zeros([BLOCK], dtype=tl.float32)  # exact: a lane counts at most 2^19
    n_full = count // BLOCK
    for i in range(0, n_full):
        acc, bad = _block(x1_ptr, x2_ptr, y_ptr, loss_ptr, g1_ptr, g2_ptr, i * BLOCK + offs, 0,
                          acc, bad, margin, scale, STORE_LOSS, REDUCE, NEED_G1, NEED_G2, CHECK,
                          False, PTX)
    rem = count - n_full * BLOCK
    if rem > 0:
        acc, bad = _block(x1_ptr, x2_ptr, y_ptr, loss_ptr, g1_ptr, g2_ptr,
                          n_full * BLOCK + offs, rem, acc, bad, margin, scale, STORE_LOSS,
                          REDUCE, NEED_G1, NEED_G2, CHECK, True, PTX)
    store_program_sums(partial_ptr, bad_ptr, pid, acc, bad, REDUCE, CHECK)


def launch(call: Call, check: bool = False) -> Result:
    """The loss and both gradients of ``call`` (the contract of ``SPEC.torch_compute``); with
    ``check``, also ``bad_labels``: the number of labels with ``|y| != 1`` (NaN included), a
    0-d int64 tensor on the input's device. Traceable: shapes decide everything."""
    (in1, in2), target = call.inputs, call.target
    (margin,) = call.options
    need1, need2 = call.need_grad
    reduce = call.reduction != "none"
    out_dtype = SPEC.out_dtype(call)
    dev = in1.device
    x1 = in1.reshape(-1)  # copies only where an input is not contiguous (or broadcast)
    x2 = in2.reshape(-1)
    y = target.reshape(-1)
    n = x1.numel()
    out = flat_outputs(n, BLOCK, reduce, check, out_dtype, dev)
    g1 = torch.empty(n, dtype=in1.dtype, device=dev) if need1 else None
    g2 = torch.empty(n, dtype=in2.dtype, device=dev) if need2 else None
    if n:
        torch.library.wrap_triton(margin_ranking_kernel)[(out.n_programs,)](
            x1, x2, y, out.loss, out.partial, out.bad, g1, g2, n, out.span, float(margin),
            grad_scale(SPEC, call),
            STORE_LOSS=not reduce, REDUCE=reduce, NEED_G1=need1, NEED_G2=need2, CHECK=check,
            BLOCK=BLOCK, PTX=ptx_allowed(margin_ranking_kernel),
            num_warps=max(1, min(8, BLOCK // 256)),
        )
    grads = (None if g1 is None else g1.view(in1.shape),
             None if g2 is None else g2.view(in2.shape))
    return flat_result(call, out, grads, in1.shape, out_dtype, n)
