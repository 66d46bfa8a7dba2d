r"""``multi_margin_loss``: the multi-class hinge, loss + gradient (+ label check) in one pass.

Row :math:`n` has scores :math:`x \in \mathbb{R}^C`, one target class :math:`y`, a class weight
:math:`w` (1 without one) and :math:`p \in \{1, 2\}`. With
:math:`z_j = \text{margin} - x_y + x_j` (computed as :math:`x_j - (x_y - \text{margin})`, the
rounding ATen and the torch backend use):

.. math::
    \ell_n = \frac{w_y}{C} \sum_{j \ne y} [z_j]_+^p, \qquad
    \frac{\partial \ell_n}{\partial x_j} = \frac{w_y}{C}\, p\, z_j^{p-1}\, [z_j > 0]
    \;(j \ne y), \qquad
    \frac{\partial \ell_n}{\partial x_y} = -\frac{w_y}{C}\, p\, S_{p-1}

with :math:`S_{p-1} = \sum_{j \ne y} z_j^{p-1} [z_j > 0]` (the number of active classes for
:math:`p = 1`, the sum of the active :math:`z_j` for :math:`p = 2`): :math:`x_y` enters every
:math:`z_j` with sign :math:`-1`, and summing :math:`S_{p-1}` before scaling it keeps the
target's gradient from being a sum of rounded terms. The subgradient at the kink :math:`z = 0`
is 0 (strict ``z > 0``, as torch). The weight is the target class's, applied after the power;
the divisor is :math:`C`, the target included.

**Layout.** A program owns a ``BLOCK_N x BLOCK_C`` tile of rows and classes (:func:`plan`):
short rows are packed ``BLOCK_N`` to a program, long rows are swept in chunks of ``BLOCK_C``
classes, and when the rows alone would leave the GPU idle (fewer than :data:`FILL` programs:
``N = 1, C = 10^6`` say) each row is cut into ``n_seg`` segments of whole chunks, one program
each (grid axis 1). Per chunk the program reduces each row at once to two per-row scalars,
:math:`\sum [z]_+^p` and :math:`S_{p-1}` (no ``BLOCK_N x BLOCK_C`` accumulators: about 40
registers), and stores the chunk's gradient with the bounds mask only (the target's entry gets
0 there, so the stores stay 16-byte vectors). Then:

* one segment per row: after a barrier, the program stores the target's gradient
  :math:`-\frac{w_y}{C} p S_{p-1}` over that 0;
* several segments: each writes its partial :math:`\sum [z]_+^p w_y / C` and
  :math:`-\frac{w_y}{C} p S_{p-1}` to ``(N, n_seg)`` float32 buffers, and torch adds them in a
  fixed order (deterministic, no atomics) and scatters the target's gradient.

Row offsets, chunk starts and the target's position are int64; what moves per element is an
int32 offset inside one chunk, and the chunk loop counts chunks (at most ``C / BLOCK_C``), so
nothing wraps for any ``C``. The grid is ``(row blocks, n_seg, row blocks / (2^31 - 1))``: within
CUDA's limits for any ``N``.

**Label check** (``check=True``): the segment-0 program of each row block counts its targets
outside ``[0, C)`` into an int32 slot (one per row block, no atomics); torch adds the slots into
``bad_labels``, a 0-d int64 on the device (no host read). A bad target is never dereferenced
(its score, weight and gradient entry are masked): that row's loss is finite and its gradient 0
except at class 0 when split (where the target's scatter is clamped).

**Cost.** Memory traffic per row: read :math:`C` scores, one target index and one weight, write
:math:`C` gradient entries and one float32 partial loss (plus one float32 per segment when
split): the minimum for a fused loss (8 bytes per class in float32, 4 in bfloat16). The main
loop issues about 14 instructions per class for float32 with gradient (sm_90 SASS, 16 classes
per thread), where the H200's bandwidth leaves 56 (``bytes / 4.8e12 * 32 * 1.045e12``): bound
by memory, not by issue.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from marginloss.backends._common import grad_scale, reduce_rows
from marginloss.losses._spec import Call, Result
from marginloss.losses.multi_margin_loss import SPEC

MAX_BLOCK_C = 4096  # the most classes one chunk holds
TILE = 4096  # elements per tile of one row: 16 per thread at 8 warps
PACKED_TILE = 2048  # elements per tile of packed rows: 8 per thread (their per-row registers)
MIN_TILE = 1024  # the smallest tile a small problem is cut into to fill the GPU
FILL = 1024  # programs a launch aims at when the work allows (~8 per SM of an H200)
MIN_SEGMENT = 4096  # the fewest classes of one segment of a split row
GRID_X = (1 << 31) - 1  # CUDA's limit on grid x (y and z: 65535)


class Plan(NamedTuple):
    """How :func:`launch` cuts an ``(N, C)`` problem (see :func:`plan`)."""

    block_n: int  # rows per tile
    block_c: int  # classes per chunk
    num_warps: int
    seg_len: int  # classes per segment: a multiple of block_c
    n_seg: int  # segments per row (grid axis 1)
    row_blocks: int  # cdiv(N, block_n)


def plan(n_rows: int, n_classes: int) -> Plan:
    """Tile, warps and segments for an ``(n_rows, n_classes)`` input (shapes only, so the launch
    is the same on real and fake tensors).

    ``BLOCK_C`` covers the row up to :data:`MAX_BLOCK_C`; ``BLOCK_N`` packs short rows up to
    :data:`TILE` elements, halved (down to :data:`MIN_TILE`) while the launch has fewer than
    :data:`FILL` programs. When the row blocks still number under :data:`FILL`, rows of
    several chunks are split into up to ``FILL / row_blocks`` segments of at least
    :data:`MIN_SEGMENT` classes. ``num_warps`` gives each thread 16 elements of a row's tile,
    8 of a packed tile, and at most 4 packed rows.
    """
    n, c = max(int(n_rows), 1), max(int(n_classes), 1)  # int(): specialise symbolic shapes
    block_c = min(triton.next_power_of_2(c), MAX_BLOCK_C)
    block_n = max(1, min(TILE // block_c, triton.next_power_of_2(n)))
    if block_n > 1:
        block_n = max(1, PACKED_TILE // block_c)
        block_n = min(block_n, triton.next_power_of_2(n))
    while block_n > 1 and block_n * block_c > MIN_TILE and triton.cdiv(n, block_n) < FILL:
        block_n //= 2
    row_blocks = triton.cdiv(n, block_n)
    n_seg = 1
    if row_blocks < FILL:
        n_seg = min(triton.cdiv(c, max(block_c, MIN_SEGMENT)), triton.cdiv(FILL, row_blocks))
    seg_len = triton.cdiv(triton.cdiv(c, n_seg), block_c) * block_c
    n_seg = triton.cdiv(c, seg_len)
    per_thread = 16 if block_n == 1 else 8
    num_warps = block_n * block_c // (32 * per_thread)
    # a warp covers 32 / min(32, BLOCK_C) rows (one class per lane when C is not a multiple of
    # the vector width): at most 4 rows per thread, each with its own pointers and sums
    num_warps = max(1, min(8, max(num_warps, block_n * min(32, block_c) // 128)))
    return Plan(block_n, block_c, num_warps, seg_len, n_seg, row_blocks)


@triton.jit
def _chunk(x_chunk, g_chunk, offs, width, y_off, shift, g_factor, mask_n, hinge, lower,
           P: tl.constexpr, NEED_GRAD: tl.constexpr, BLOCK_C: tl.constexpr):
    """One chunk of ``BLOCK_C`` classes (the first ``width`` real) of each row of the tile: adds
    its ``sum [z]_+^p`` and ``S_{p-1}`` to ``hinge`` and ``lower``, stores its gradient."""
    mask = mask_n[:, None] & (offs < width)[None, :]
    y_in = tl.where((y_off >= 0) & (y_off < BLOCK_C), y_off, -1).to(tl.int32)
    x = tl.load(x_chunk[:, None] + offs[None, :], mask=mask, other=0.0).to(tl.float32)
    z = x - shift[:, None]
    # strict: the subgradient at z = 0 is 0; the target class is not a competitor
    active = mask & (z > 0) & (offs[None, :] != y_in[:, None])
    zp = tl.where(active, z, 0.0)  # [z]_+, and 0 (the sums' identity) elsewhere
    if P == 1:
        hinge += tl.sum(zp, axis=1)
        if NEED_GRAD:
            lower += tl.sum(tl.where(active, 1.0, 0.0), axis=1)
            g = tl.where(active, g_factor[:, None], 0.0)
    else:
        hinge += tl.sum(zp * zp, axis=1)
        if NEED_GRAD:
            lower += tl.sum(zp, axis=1)
            g = zp * g_factor[:, None]
    if NEED_GRAD:  # the target's entry gets 0 here (a vector store), its value after the sweep
        tl.store(g_chunk[:, None] + offs[None, :], g.to(g_chunk.dtype.element_ty), mask=mask)
    return hinge, lower


@triton.jit
def _multi_margin_loss_kernel(
    # pointers
    x_ptr,  # (N, C) scores, fp16 / bf16 / fp32, unit class stride
    target_ptr,  # (N,) class indices, int32 / int64
    weight_ptr,  # (C,) float32 class weight, contiguous (HAS_WEIGHT; else None)
    loss_ptr,  # (N, n_seg) float32: each segment's sum_j [z_j]_+^p w_y / C
    grad_ptr,  # (N, C) d loss / d x in x's dtype, contiguous (NEED_GRAD; else None)
    grad_y_ptr,  # (N, n_seg) float32: each segment's -(w_y / C) p S_{p-1} (SPLIT; else None)
    bad_ptr,  # (row blocks,) int32: targets outside [0, C) per row block (CHECK; else None)
    # strides
    stride_xn,
    stride_tn,
    # sizes / scalars
    n_rows,
    n_classes,
    seg_len,  # classes per segment, a multiple of BLOCK_C
    n_seg,
    margin,
    grad_scale,  # 1/C, times 1/N for "mean"
    # meta-parameters
    P: tl.constexpr,  # 1 or 2
    HAS_WEIGHT: tl.constexpr,
    NEED_GRAD: tl.constexpr,
    SPLIT: tl.constexpr,  # n_seg > 1: partial results, the target's gradient left to torch
    CHECK: tl.constexpr,  # count the targets outside [0, C)
    ONE_CHUNK: tl.constexpr,  # seg_len == BLOCK_C: no chunk loop (short rows, short segments)
    GRID_X: tl.constexpr,  # CUDA's grid x limit: row block = z GRID_X + x (a constant: no recompile)
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # Program (row block, segment): rows [rb BLOCK_N, +BLOCK_N), classes [seg seg_len, +seg_len).
    rb = tl.program_id(2).to(tl.int64) * GRID_X + tl.program_id(0)
    seg = tl.program_id(1)
    rows = rb * BLOCK_N + tl.arange(0, BLOCK_N)  # int64: row * stride may exceed 2^31
    mask_n = rows < n_rows
    offs = tl.arange(0, BLOCK_C)  # int32 offsets inside a chunk

    # The target class of each row, its score and its weight; a bad target is never read.
    y = tl.load(target_ptr + rows * stride_tn, mask=mask_n, other=0).to(tl.int64)
    valid = mask_n & (y >= 0) & (y < n_classes)
    x_rows = x_ptr + rows * stride_xn
    shift = tl.load(x_rows + y, mask=valid, other=0.0).to(tl.float32) - margin  # x_y - margin
    if HAS_WEIGHT:
        w_y = tl.load(weight_ptr + y, mask=valid, other=0.0)
    else:
        w_y = tl.full([BLOCK_N], 1.0, tl.float32)
    g_factor = grad_scale * P * w_y  # d loss / d x_j = g_factor z_j^(p-1), for z_j > 0

    # This segment's classes, chunk by chunk: pointers and the target's offset move per chunk.
    start = seg.to(tl.int64) * seg_len
    rem = tl.minimum(n_classes - start, seg_len)  # classes left in the segment (int64)
    x_chunk = x_rows + start
    g_chunk = x_chunk  # (unused without a gradient)
    if NEED_GRAD:
        g_rows = grad_ptr + rows * n_classes
        g_chunk = g_rows + start
    y_off = y - start  # the target's offset from the chunk (int64)
    hinge = tl.zeros([BLOCK_N], dtype=tl.float32)  # sum [z]_+^p of each row
    lower = tl.zeros([BLOCK_N], dtype=tl.float32)  # S_{p-1} of each row
    if ONE_CHUNK:
        hinge, lower = _chunk(x_chunk, g_chunk, offs, rem.to(tl.int32), y_off, shift, g_factor,
                              mask_n, hinge, lower, P, NEED_GRAD, BLOCK_C)
    else:
        n_chunks = tl.cdiv(rem, BLOCK_C).to(tl.int32)  # at most 2^31 / BLOCK_C: cannot wrap
        for _ in range(0, n_chunks):
            width = tl.minimum(rem, BLOCK_C).to(tl.int32)
            hinge, lower = _chunk(x_chunk, g_chunk, offs, width, y_off, shift, g_factor, mask_n,
                                  hinge, lower, P, NEED_GRAD, BLOCK_C)
            x_chunk += BLOCK_C
            g_chunk += BLOCK_C
            y_off -= BLOCK_C
            rem -= BLOCK_C

    tl.store(loss_ptr + rows * n_seg + seg, hinge * w_y / n_classes, mask=mask_n)
    if NEED_GRAD:
        g_y = -(lower * g_factor)  # -(w_y / C) p S_{p-1}
        if SPLIT:
            tl.store(grad_y_ptr + rows * n_seg + seg, g_y, mask=mask_n)
        else:
            tl.debug_barrier()  # after every thread's store of 0 at the target
            tl.store(g_rows + y, g_y.to(grad_ptr.dtype.element_ty), mask=valid)
    if CHECK:
        if seg == 0:  # (the last z slab of a huge grid has row blocks past the end)
            tl.store(bad_ptr + rb, tl.sum((mask_n & ~valid).to(tl.int32), axis=0),
                     mask=rb * BLOCK_N < n_rows)


def launch(call: Call, check: bool = False) -> Result:
    """The loss and gradient of ``call`` (the contract of ``SPEC.torch_compute``); with
    ``check``, also ``bad_labels``: the number of targets outside ``[0, C)``, a 0-d int64
    tensor on the input's device.

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
    cut = plan(n_rows, n_classes)
    split = cut.n_seg > 1
    run = n_rows > 0 and n_classes > 0
    new = torch.empty if run else torch.zeros  # a launch writes every slot
    grad = torch.empty((n_rows, n_classes), dtype=input.dtype, device=dev) if need_grad else None
    losses = new((n_rows, cut.n_seg), dtype=torch.float32, device=dev)
    grad_y = new((n_rows, cut.n_seg), dtype=torch.float32, device=dev) \
        if need_grad and split else None
    bad = new(cut.row_blocks, dtype=torch.int32, device=dev) if check else None
    # (3) launch
    if run:
        grid_x = min(cut.row_blocks, GRID_X)
        grid = (grid_x, cut.n_seg, triton.cdiv(cut.row_blocks, GRID_X))
        torch.library.wrap_triton(_multi_margin_loss_kernel)[grid](
            x, target, w, losses, grad, grad_y, bad,
            x.stride(0), target.stride(0),
            n_rows, n_classes, cut.seg_len, cut.n_seg, float(margin),
            grad_scale(SPEC, call) / n_classes,
            P=int(p), HAS_WEIGHT=w is not None, NEED_GRAD=need_grad, SPLIT=split, CHECK=check,
            ONE_CHUNK=cut.seg_len == cut.block_c, GRID_X=GRID_X, BLOCK_N=cut.block_n,
            BLOCK_C=cut.block_c, num_warps=cut.num_warps,
        )
    # (4) finish: the segments' partial sums, in a fixed order
    if grad is not None and split:
        y = target.to(torch.int64).clamp(0, n_classes - 1).unsqueeze(1)  # bad targets: anywhere
        grad.scatter_(1, y, grad_y.sum(dim=1, keepdim=True).to(grad.dtype))
    out_dtype = SPEC.out_dtype(call)
    if call.reduction == "none":
        loss = reduce_rows(losses.sum(dim=1) if split else losses.view(-1), "none", out_dtype)
    else:
        loss = reduce_rows(losses.view(-1), call.reduction, out_dtype, count=n_rows)
    bad_labels = None
    if check:  # C = 0 (refused by prepare) would make every target bad
        bad_labels = bad.sum() if n_classes else torch.full((), n_rows, device=dev)
    return Result(loss, (grad,), bad_labels)
