r"""``hinge_embedding_loss``: the elementwise hinge on distances and its gradient in one pass.

With distance :math:`x`, label :math:`y` and margin :math:`\mu` (torch's definition, any label):

.. math::
    z = \mu - x, \qquad \ell = [y \ne 1]\,[z]_+ + [y \ne -1]\,x, \qquad
    \frac{\partial \ell}{\partial x} = [y \ne -1] - [y \ne 1]\,[z \ge 0]

(a similar pair, :math:`y = 1`, costs :math:`x`; a dissimilar one :math:`[\mu - x]_+`; any
other label both, as torch). At :math:`z = 0` the hinge's gradient is -1 (torch's
``clamp_min``). :math:`[z]_+` is ``where(z < 0, 0, z)``, so a NaN distance gives a NaN loss and
a zero hinge gradient, as torch. Math in float32 whatever the input dtype (the margin is a
float32 kernel argument, torch's rounding); results are rounded once, on the store.

Label check (``check=True``), in the same pass: each program counts its labels with
:math:`|y| \ne 1` (NaN included) into an int32 slot; torch adds the slots (``bad_labels``, a 0-d
int64 on the device, no host read). A bool target is a {0, 1} mask by its dtype: every label
counts as bad (decided from the dtype, not the values).

Layout: input and target are read as flat vectors of :math:`n = N C` elements (a non-contiguous
or broadcast input, or a broadcast target, is made contiguous first; an integer or bool target
is read as it is and converted in the kernel). Each program takes a span of whole ``BLOCK``\ s
(:func:`~marginloss.kernels._common.flat_span`), read and written without masks, and the last
program one masked block. The ``"mean"`` scale :math:`1/n` is folded into the gradient.
Reductions are deterministic (no atomics): each program writes the float32 sum of its span, and
torch adds those partial sums (fixed order).

Memory traffic per element, the minimum for a fused loss: read the distance and the label,
write the gradient (12 bytes in float32), plus the elementwise loss for ``reduction="none"``;
one float32 (and one int32 with ``check``) per program. About ten instructions per element: the
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
from marginloss.losses.hinge_embedding_loss import SPEC

BLOCK = 2048  # elements per step of a program: 8 per thread at 8 warps


@triton.jit
def _block(x_ptr, y_ptr, loss_ptr, grad_ptr, offs, rem, acc, bad, margin, scale,
           STORE_LOSS: tl.constexpr, REDUCE: tl.constexpr, NEED_GRAD: tl.constexpr,
           CHECK: tl.constexpr, MASKED: tl.constexpr, PTX: tl.constexpr):
    """One block of elements ``offs`` (all of them, or those below ``rem`` when MASKED)."""
    x = load_f32(x_ptr, offs, rem, 0.0, MASKED, PTX)
    y = load_f32(y_ptr, offs, rem, 1.0, MASKED, PTX)  # a valid padding label
    z = margin - x
    dissimilar = y != 1.0  # NaN: both terms, as torch
    similar = y != -1.0
    loss = tl.where(dissimilar, tl.where(z < 0.0, 0.0, z), 0.0) + tl.where(similar, x, 0.0)
    if NEED_GRAD:
        grad = tl.where(similar, scale, 0.0) - tl.where(dissimilar & (z >= 0.0), scale, 0.0)
        store_block(grad_ptr, offs, grad, rem, MASKED)
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
def hinge_embedding_kernel(
    x_ptr,  # (n,) distances, fp16 / bf16 / fp32, contiguous
    y_ptr,  # (n,) labels, float / int / bool, contiguous
    loss_ptr,  # (n,) elementwise loss in the output dtype (STORE_LOSS; else None)
    partial_ptr,  # (n_programs,) float32 sums of the loss terms (REDUCE; else None)
    bad_ptr,  # (n_programs,) int32 counts of bad labels (CHECK; else None)
    grad_ptr,  # (n,) d loss / d x in x's dtype (NEED_GRAD; else None)
    n_elements,
    span,  # elements per program: a multiple of BLOCK, at most MAX_SPAN
    margin,
    scale,  # the gradient's factor (1/n for "mean", else 1)
    STORE_LOSS: tl.constexpr,
    REDUCE: tl.constexpr,
    NEED_GRAD: tl.constexpr,
    CHECK: tl.constexpr,
    BLOCK: tl.constexpr,
    PTX: tl.constexpr,
):
    # Program p owns elements [p span, min((p + 1) span, n)): its full BLOCKs unmasked, then at
    # most one masked tail. The start is int64; offsets inside the span are int32.
    pid, start, count = program_span(n_elements, span)
    x_ptr += start
    y_ptr += start
    if STORE_LOSS:
        loss_ptr += start
    if NEED_GRAD:
        grad_ptr += start
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    bad = tl.zeros([BLOCK], dtype=tl.float32)  # exact: a lane counts at most 2^19
    n_full = count // BLOCK
    for i in range(0, n_full):
        acc, bad = _block(x_ptr, y_ptr, loss_ptr, grad_ptr, i * BLOCK + offs, 0, acc, bad,
                          margin, scale, STORE_LOSS, REDUCE, NEED_GRAD, CHECK, False, PTX)
    rem = count - n_full * BLOCK
    if rem > 0:
        acc, bad = _block(x_ptr, y_ptr, loss_ptr, grad_ptr, n_full * BLOCK + offs, rem, acc,
                          bad, margin, scale, STORE_LOSS, REDUCE, NEED_GRAD, CHECK, True, PTX)
    store_program_sums(partial_ptr, bad_ptr, pid, acc, bad, REDUCE, CHECK)


def launch(call: Call, check: bool = False) -> Result:
    """The loss and gradient of ``call`` (the contract of ``SPEC.torch_compute``); with
    ``check``, also ``bad_labels``: the number of labels with ``|y| != 1`` (NaN included), a
    0-d int64 tensor on the input's device. Traceable: shapes decide everything."""
    input, target = call.input, call.target
    (margin,) = call.options
    need_grad, reduce = call.need_grad[0], call.reduction != "none"
    out_dtype = SPEC.out_dtype(call)
    dev = input.device
    x = input.reshape(-1)  # a copy only if the input is not contiguous (or broadcast)
    y = target.reshape(-1)  # a copy only if the target is not (a broadcast target)
    n = x.numel()
    out = flat_outputs(n, BLOCK, reduce, check, out_dtype, dev)
    grad = torch.empty(n, dtype=input.dtype, device=dev) if need_grad else None
    if n:
        torch.library.wrap_triton(hinge_embedding_kernel)[(out.n_programs,)](
            x, y, out.loss, out.partial, out.bad, grad, n, out.span, float(margin),
            grad_scale(SPEC, call),
            STORE_LOSS=not reduce, REDUCE=reduce, NEED_GRAD=need_grad, CHECK=check,
            BLOCK=BLOCK, PTX=ptx_allowed(hinge_embedding_kernel),
            num_warps=max(1, min(8, BLOCK // 256)),
        )
    grads = (None if grad is None else grad.view(input.shape),)
    # a bool target is a {0, 1} mask by its dtype: every label is bad
    return flat_result(call, out, grads, input.shape, out_dtype, n,
                       all_bad=target.dtype == torch.bool)
