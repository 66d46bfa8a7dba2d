r"""What several kernels share: work-splitting heuristics, the logistic math, one flat kernel.

**Row tiles** (:func:`row_tile`, the hinge kernels). The row kernels give each program a
``BLOCK_N x BLOCK_C`` tile: ``BLOCK_C`` covers a row up to a per-kernel cap (longer rows loop
over chunks of ``BLOCK_C`` classes), and ``BLOCK_N`` packs short rows several to a program so a
tile holds about :data:`TILE` elements. Heuristics rather than autotuning: the losses are
bandwidth-bound, and the choice depends on the shape only (so it is the same under
``torch.compile`` and on FakeTensors).

**Filling the GPU** (:func:`flat_span`, :func:`row_split`, the logistic kernels). Work is cut
so that a launch has about :data:`FILL` programs whenever it has that many chunks of work
(an H200 has 132 SMs, each running a few programs at once): a flat range of elements is cut
into spans of whole ``BLOCK``\ s; rows are packed into tiles sized to the work (down to
:data:`MIN_TILE` elements), and long rows are split into segments whose partial sums torch adds
afterwards (a fixed order: deterministic, no atomics). Every offset that moves inside a program
is an int32 below :data:`MAX_SPAN` (so no loop counter or offset can wrap); program starts are
int64; the grid stays within CUDA's limits (x below 2^31, y below 2^16) for any size.

**Logistic math** (:func:`logistic`), float32, for a score :math:`v`, with
:math:`e = e^{-|v|} \in (0, 1]` (nothing overflows):

.. math::
    \log(1 + e) = 2 \operatorname{atanh}(s), \quad s = \frac{e}{2 + e} \in [0, 1/3], \qquad
    \sigma(|v|) = r = \frac{1}{1 + e}, \quad \sigma(-|v|) = e\, r.

One reciprocal serves both: :math:`D = 1 / ((1 + e)(2 + e))`, :math:`r = (2 + e) D`,
:math:`s = e (1 + e) D` (an approximate reciprocal, ``rcp.approx``: 1 ulp on :math:`[2, 6]`).
:math:`2\operatorname{atanh}(s) = s\, q(s^2)` with :math:`q` the quartic of the native kernels'
``ml_two_atanh`` (``csrc/common.h``; fit error 5e-9, below float32 rounding), so tiny tails keep
their relative accuracy. :math:`e` comes from one ``ex2.approx.ftz`` of :math:`t = v \log_2 e`
plus a Cody-Waite correction of the rounding of :math:`t` (two FMAs with :math:`\ln 2` in two
parts, one more to apply it): without it the error of :math:`e` grows like :math:`|v| 2^{-24}`
(3e-6 at :math:`|v| = 50`). :math:`|v|` is clamped to 110 first (where :math:`e^{-|v|}` rounds to 0 even without flushing) (NaN passes), so an infinite
score gives :math:`e = 0`; results below the smallest normal float flush to 0. Measured against
float64 over :math:`v \in [-110, 110]` and :math:`\pm 10^4`: within about 4e-7 relative for the
softplus tail, the sigmoids and the losses and gradients built from them, wherever the result
is a normal float (the accuracy test in ``tests/kernels/test_logistic_kernels.py``).

**The flat kernel** (:func:`logistic_flat_kernel`): both logistic losses as one elementwise pass
over contiguous ``x``, ``y`` (and a full weight): ``soft_margin_loss`` always, and
``multilabel_soft_margin_loss`` when only the total is asked (its row sums are not needed
then). Each program takes a span of whole ``BLOCK``\ s (unmasked, so the loads and stores are
16-byte vectors whatever ``n`` is) and the last program one masked tail.

Imports: ``triton``, ``triton.language`` and ``torch``; this module is loaded with the kernels,
never by ``import marginloss``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from marginloss.backends._common import reduce_rows
from marginloss.losses._spec import Call, Result

TILE = 4096  # row kernels (row_tile): elements per BLOCK_N x BLOCK_C tile (short rows packed)

FILL = 512  # programs a launch aims at when the work allows (~4 per SM of an H200)
MIN_TILE = 256  # smallest row tile (elements) when a small problem is spread out to FILL
MAX_CHUNKS = 16  # most BLOCKs (flat) or row blocks (rows) per program: amortises its fixed cost
MIN_SEGMENT = 1024  # row kernels: the fewest classes of a segment when a row is split
MIN_CHUNK_C = 1  # row kernels: the narrowest chunk
MAX_SPAN = 1 << 30  # most elements one program walks: its int32 offsets cannot wrap
GRID_X = (1 << 31) - 1  # CUDA's limit on grid x (y and z: 65535)


def row_tile(n_rows: int, n_classes: int, max_block_c: int) -> tuple[int, int, int]:
    """``(BLOCK_N, BLOCK_C, num_warps)`` for a row kernel over an ``(n_rows, n_classes)`` input.

    ``BLOCK_C`` covers the row up to ``max_block_c`` (longer rows loop over chunks);
    ``BLOCK_N`` packs short rows so a tile holds about :data:`TILE` elements. Shapes only, so
    the launch is the same on real and fake tensors.
    """
    block_c = min(triton.next_power_of_2(max(n_classes, 1)), max_block_c)
    block_n = max(1, min(TILE // block_c, triton.next_power_of_2(max(n_rows, 1))))
    num_warps = 8 if block_n * block_c >= 4096 else 4
    return block_n, block_c, num_warps


def flat_span(n: int, block: int) -> int:
    """Elements per program (a multiple of ``block``) for a flat pass over ``n`` elements.

    One ``block`` per program until there are :data:`FILL` programs, then up to
    :data:`MAX_CHUNKS` blocks each (fewer programs, each amortising its final reduction over
    more elements); more when the grid would pass :data:`GRID_X`. At most :data:`MAX_SPAN`.
    """
    n = int(n)  # under symbolic shapes: specialise (the launch config is a heuristic of n)
    n_blocks = triton.cdiv(max(n, 1), block)
    chunks = max(1, min(MAX_CHUNKS, n_blocks // FILL), triton.cdiv(n_blocks, GRID_X))
    span = chunks * block
    if span > MAX_SPAN:  # pragma: no cover - needs more than 2^61 elements
        raise ValueError(f"{n} elements are more than one launch can index")
    return span


class FlatOutputs(NamedTuple):
    """What a flat kernel's launch writes besides the gradients (see :func:`flat_outputs`)."""

    span: int  # elements per program
    n_programs: int
    loss: torch.Tensor | None  # (n,) elementwise loss ("none")
    partial: torch.Tensor | None  # (n_programs,) float32 sums of the loss terms (reduced)
    bad: torch.Tensor | None  # (n_programs,) int32 bad-label counts (check)


def flat_outputs(n: int, block: int, reduce: bool, check: bool, out_dtype: torch.dtype,
                 device) -> FlatOutputs:
    """The grid of a flat pass over ``n`` elements (:func:`flat_span`) and its outputs: the
    elementwise loss (not ``reduce``) or one partial sum per program, and one bad-label slot
    per program (``check``)."""
    span = flat_span(n, block)
    n_programs = triton.cdiv(n, span)
    return FlatOutputs(
        span, n_programs,
        None if reduce else torch.empty(n, dtype=out_dtype, device=device),
        torch.empty(n_programs, dtype=torch.float32, device=device) if reduce else None,
        torch.zeros(n_programs, dtype=torch.int32, device=device) if check else None)


def flat_result(call: Call, out: FlatOutputs, grads: tuple, shape, out_dtype: torch.dtype,
                n: int, all_bad: bool = False) -> Result:
    """A flat launch's :class:`~marginloss.losses._spec.Result`: the loss in ``shape`` (or
    reduced from the per-program sums, in a fixed order) and the bad-label count as a 0-d int64
    (``all_bad``: every one of the ``n`` labels, e.g. a bool target, a mask by its dtype)."""
    bad_labels = None
    if out.bad is not None:  # int32 slots -> 0-d int64
        bad_labels = torch.full((), n, dtype=torch.int64, device=out.bad.device) if all_bad \
            else out.bad.sum()
    if out.partial is None:
        return Result(out.loss.view(shape), grads, bad_labels)
    return Result(reduce_rows(out.partial, call.reduction, out_dtype, count=n), grads,
                  bad_labels)


class RowSplit(NamedTuple):
    """How a row kernel cuts an ``(N, C)`` problem (see :func:`row_split`)."""

    block_n: int  # rows per tile
    block_c: int  # classes per chunk
    num_warps: int
    row_steps: int  # row blocks per program (an outer loop)
    seg_len: int  # classes per segment (a multiple of block_c)
    n_seg: int  # segments per row (grid y)
    row_programs: int  # grid x: cdiv(row_blocks, row_steps)


def row_split(n_rows: int, n_classes: int, tile: int = 2048, warp_c: int = 128,
              elems_per_thread: int = 8, min_tile: int = MIN_TILE) -> RowSplit:
    """Tiles, segments and row steps for a row kernel over ``(n_rows, n_classes)``.

    * The tile is ``block_n x block_c`` (up to ``tile`` elements). With enough rows a chunk is
      ``warp_c`` classes (what one warp covers in 16-byte vectors: 128 float32, 256 bfloat16),
      so a warp owns a row and a row's sum stays in its warp; with fewer rows the chunk widens
      to fill the tile. A short row takes the widest power of two that pads it by at most 1/8
      (``C = 20``: chunks of 4, no padding lanes; ``C = 1000``: 128), and rows are packed.
      When even the most segments leave under :data:`FILL` programs, the tile halves (down to
      ``min_tile`` elements, :data:`MIN_TILE` by default) while that still halves a program's
      work.
    * ``num_warps`` gives each thread about ``elems_per_thread`` elements of a tile.
    * Segments: when the row blocks give fewer than :data:`FILL` programs, each row is cut into
      ``n_seg`` segments of ``seg_len`` classes (a multiple of ``block_c`` and at least
      :data:`MIN_SEGMENT`, at most :data:`MAX_SPAN`), one program each; torch adds their
      partial sums afterwards.
    * Row steps: when there are more than :data:`FILL` row blocks, each program takes
      ``row_steps`` of them in turn (up to :data:`MAX_CHUNKS`), so its fixed costs spread over
      more elements.

    The grid is ``(row_programs, n_seg)``. Shapes only, so the launch is the same on real and
    fake tensors.
    """
    # int(): under symbolic shapes the split specialises on the shape (a heuristic of it;
    # symbolic arithmetic through these loops would grow without bound)
    n, c = max(int(n_rows), 1), max(int(n_classes), 1)
    block_c = min(triton.next_power_of_2(c), max(warp_c, tile // triton.next_power_of_2(n)))
    while block_c > MIN_CHUNK_C and 8 * triton.cdiv(c, block_c) * block_c > 9 * c:
        block_c //= 2  # a narrower chunk pads the row less
    block_n = max(1, min(tile // block_c, triton.next_power_of_2(n)))

    def most_programs(bn, bc):
        return triton.cdiv(n, bn) * triton.cdiv(c, max(bc, MIN_SEGMENT))

    while block_n * block_c > min_tile and 2 * most_programs(block_n, block_c) <= FILL:
        if block_n > 1:
            block_n //= 2
        else:
            block_c //= 2
    num_warps = max(1, min(8, block_n * block_c // (32 * elems_per_thread)))
    row_blocks = triton.cdiv(n, block_n)
    n_seg = min(triton.cdiv(c, max(block_c, MIN_SEGMENT)), max(1, FILL // row_blocks))
    n_seg = max(n_seg, triton.cdiv(c, MAX_SPAN))
    seg_len = triton.cdiv(triton.cdiv(c, n_seg), block_c) * block_c
    n_seg = triton.cdiv(c, seg_len)
    row_steps = max(1, min(MAX_CHUNKS, row_blocks // FILL), triton.cdiv(row_blocks, GRID_X))
    row_programs = triton.cdiv(row_blocks, row_steps)
    if n_seg > 65535:  # pragma: no cover - needs C > 2^46
        raise ValueError(f"({n_rows}, {n_classes}) is more than one launch can index")
    return RowSplit(block_n, block_c, num_warps, row_steps, seg_len, n_seg, row_programs)


def ptx_allowed(kernel) -> bool:
    """Whether ``kernel`` is compiled for an NVIDIA GPU, so that its math may use inline PTX
    (not under Triton's interpreter, where ``@triton.jit`` gives an interpreted function, and
    not on ROCm)."""
    return isinstance(kernel, triton.runtime.JITFunction) and torch.version.hip is None


# ----------------------------------------------------------------------------------------------
# logistic math (float32)

# (globals a kernel reads must be constexpr)
LOG2E = tl.constexpr(1.4426950408889634)
LN2_HI = tl.constexpr(0.693145751953125)  # ln 2 = LN2_HI + LN2_LO
LN2_LO = tl.constexpr(1.4286068203094173e-06)
# 2 atanh(s) = s q(s^2): the fitted quartic of csrc/common.h (ml_two_atanh), 2 folded in
Q4 = tl.constexpr(0.28027810280802646)
Q3 = tl.constexpr(0.27998141249825976)
Q2 = tl.constexpr(0.40021792633095776)
Q1 = tl.constexpr(0.666664104406210)
Q0 = tl.constexpr(2.0)


@triton.jit
def exp2_ftz(t, PTX: tl.constexpr):
    """``2^t`` in float32: one ``ex2.approx.ftz.f32`` (2 ulp; a denormal result is 0) on an
    NVIDIA GPU, ``tl.exp2`` elsewhere (the interpreter, ROCm)."""
    if PTX:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [t],
                                         dtype=tl.float32, is_pure=True, pack=1)
    else:
        return tl.exp2(t)


@triton.jit
def rcp(d, PTX: tl.constexpr):
    """``1 / d`` in float32 for ``d`` in ``[2^-126, 2^126]``: one ``rcp.approx.ftz.f32`` (1 ulp)
    on an NVIDIA GPU (``div.approx.f32`` would add a rescaling for tiny ``d``), a plain division
    elsewhere (the interpreter, ROCm)."""
    if PTX:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [d],
                                         dtype=tl.float32, is_pure=True, pack=1)
    else:
        return 1.0 / d  # (tl.math.fdiv(approx=) is not in Triton 3.6)


@triton.jit
def to_f32(v, PTX: tl.constexpr):
    """``v`` as float32. bfloat16 on an NVIDIA GPU: one instruction per element (``shl`` for the
    low half of a 32-bit pair, ``and`` for the high half), where the compiler's conversion takes
    1.5 (``prmt`` + shift for the high half). ``v`` must have at least 2 elements."""
    if PTX and v.dtype == tl.bfloat16:
        return tl.inline_asm_elementwise("{ shl.b32 $0, $2, 16; and.b32 $1, $2, 0xffff0000; }",
                                         "=r,=r,r", [v], dtype=tl.float32, is_pure=True, pack=2)
    else:
        return v.to(tl.float32)


@triton.jit
def load_f32(ptr, offs, rem, other, MASKED: tl.constexpr, PTX: tl.constexpr):
    """``ptr[offs]`` as float32: every lane, or (MASKED) the lanes with ``offs < rem``, the
    others ``other``."""
    if MASKED:
        return to_f32(tl.load(ptr + offs, mask=offs < rem, other=other), PTX)
    else:
        return to_f32(tl.load(ptr + offs), PTX)


@triton.jit
def store_block(ptr, offs, value, rem, MASKED: tl.constexpr):
    """``ptr[offs] = value`` in ``ptr``'s dtype: every lane, or (MASKED) those with
    ``offs < rem``."""
    if MASKED:
        tl.store(ptr + offs, value.to(ptr.dtype.element_ty), mask=offs < rem)
    else:
        tl.store(ptr + offs, value.to(ptr.dtype.element_ty))


@triton.jit
def program_span(n_elements, span):
    """This program's share of a flat kernel's ``n_elements``: ``(pid, start, count)``, the
    elements ``[start, start + count)``, ``start = pid span`` in int64, ``count <= span`` in
    int32 (``span <= 2^30``: offsets inside the span never wrap)."""
    pid = tl.program_id(0)
    start = pid.to(tl.int64) * span
    return pid, start, tl.minimum(n_elements - start, span).to(tl.int32)


@triton.jit
def store_program_sums(partial_ptr, bad_ptr, pid, acc, bad, REDUCE: tl.constexpr,
                       CHECK: tl.constexpr):
    """A flat kernel's per-program results: the float32 sum of its loss terms (REDUCE) and its
    int32 count of bad labels (CHECK), each in this program's slot."""
    if REDUCE:
        tl.store(partial_ptr + pid, tl.sum(acc, axis=0))
    if CHECK:
        tl.store(bad_ptr + pid, tl.sum(bad.to(tl.int32), axis=0))


@triton.jit
def logistic(v, PTX: tl.constexpr):
    """The logistic pieces of ``v`` (float32, any value): ``(e, r, s, q)`` with
    ``e = exp(-|v|)``, ``r = sigmoid(|v|) = 1 / (1 + e)``, and ``log(1 + e) = s q`` (so a caller
    adds the softplus tail as one FMA, ``fma(s, q, linear)``). ``e r = sigmoid(-|v|)``.

    About 18 instructions on sm_90: 2 MUFU (ex2, rcp), the rest FMA-pipe.
    """
    a = tl.maximum(-tl.abs(v), -110.0, propagate_nan=tl.PropagateNan.ALL)  # -|v|, NaN stays
    t = a * LOG2E
    e = exp2_ftz(t, PTX)
    c = tl.fma(-t, LN2_HI, a)  # a - t ln 2, exact: the rounding of t, in natural-log units
    c = tl.fma(-t, LN2_LO, c)
    e = tl.fma(e, c, e)  # e^a = 2^t e^c, e^c = 1 + c to float32 (|c| < 1e-5)
    d2 = e + 2.0
    d = rcp(tl.fma(d2, e, d2), PTX)  # 1 / ((1 + e)(2 + e)): one reciprocal for both quotients
    r = d2 * d  # 1 / (1 + e) (the rounding of d2 cancels)
    s = tl.fma(e, e, e) * d  # e (1 + e) d = e / (2 + e)
    u = s * s
    q = tl.fma(u, Q4, Q3)
    q = tl.fma(q, u, Q2)
    q = tl.fma(q, u, Q1)
    q = tl.fma(q, u, Q0)
    return e, r, s, q


@triton.jit
def soft_margin_terms(x, y, PTX: tl.constexpr):
    """``(loss, sigmoid(-m))`` of ``soft_margin_loss`` at score ``x``, label ``y``, ``m = y x``:
    ``loss = softplus(-m) = max(-m, 0) + log(1 + exp(-|m|))``; the gradient is
    ``-y sigmoid(-m)``. NaN propagates; ``m = -inf`` gives ``inf`` and gradient ``-y``."""
    m = y * x  # the negations below are operand modifiers, not instructions
    e, r, s, q = logistic(m, PTX)
    sig = tl.where(m <= 0, r, e * r)  # sigmoid(-m)
    loss = tl.fma(s, q, tl.maximum(-m, 0.0, propagate_nan=tl.PropagateNan.ALL))
    return loss, sig


@triton.jit
def multilabel_terms(x, y, PTX: tl.constexpr):
    """``(loss, grad)`` of ``multilabel_soft_margin_loss`` at score ``x``, label ``y``, before
    the weight and the ``1/C`` scale: ``loss = softplus(x) - y x``, ``grad = sigmoid(x) - y``.

    With ``a = [x >= 0] - y``: ``max(x, 0) - y x = a x`` (exact for a 0/1 label) and
    ``sigmoid(x) - y = a - e r`` (x >= 0) or ``a + e r`` (x < 0): no ``1 - 1`` cancellation,
    so a confident, correct score keeps the relative accuracy of its tiny gradient (the native
    kernels' form). ``x = +inf`` with ``y = 1`` gives NaN, as torch.
    """
    e, r, s, q = logistic(x, PTX)
    h = tl.where(x >= 0, 1.0, 0.0)  # one compare that writes 1.0 / 0.0
    a = h - y
    grad = tl.fma(e * r, 1.0 - 2.0 * h, a)  # a -+ sigmoid(-|x|), exact sign flip
    loss = tl.fma(s, q, a * x)
    return loss, grad


@triton.jit
def bad_label(y, MULTILABEL: tl.constexpr):
    """1.0 where ``y`` breaks the label convention (NaN included), else 0.0: ``|y| != 1`` for
    soft margin; ``y`` outside ``[0, 1]`` for the multilabel loss, as ``y (1 - y) < 0`` or
    unordered (``fma(-y, y, y)`` keeps the sign of ``y (1 - y)``: one comparison, not two).

    Counted in float32 (a compare that writes 1.0 and one add: two instructions, where an int
    count takes three); a lane adds at most 2^19 of them, exact, and is converted to int32
    before the program's sum.
    """
    if MULTILABEL:
        return tl.where(tl.fma(-y, y, y) >= 0.0, 0.0, 1.0)
    else:
        return tl.where(tl.abs(y) == 1.0, 0.0, 1.0)


# Softplus pieces in the old form, kept for kernels that import them: the new math, portable.
@triton.jit
def log1p(e):
    """``log(1 + e)`` for ``e`` in ``[0, 1]``, with full relative accuracy for tiny ``e``
    (``2 atanh(e / (2 + e))``, the fitted quartic)."""
    s = e / (2.0 + e)
    u = s * s
    q = tl.fma(tl.fma(tl.fma(tl.fma(u, Q4, Q3), u, Q2), u, Q1), u, Q0)
    return s * q


@triton.jit
def softplus_parts(u):
    """``(max(u, 0), log(1 + exp(-|u|)), sigmoid(u))``, all stable for any finite ``u``
    (portable: no inline PTX)."""
    e, r, s, q = logistic(u, False)
    return tl.maximum(u, 0.0), s * q, tl.where(u >= 0, r, e * r)


# ----------------------------------------------------------------------------------------------
# the flat kernel


@triton.jit
def _flat_block(
    x_ptr, y_ptr, w_ptr, loss_ptr, grad_ptr,  # at this program's start
    offs, rem, acc, bad, grad_scale,
    MULTILABEL: tl.constexpr, HAS_WEIGHT: tl.constexpr, STORE_LOSS: tl.constexpr,
    REDUCE: tl.constexpr, NEED_GRAD: tl.constexpr, CHECK: tl.constexpr,
    MASKED: tl.constexpr, PTX: tl.constexpr,
):
    """One block of elements ``offs`` (all of them, or those below ``rem`` when MASKED)."""
    x = load_f32(x_ptr, offs, rem, 0.0, MASKED, PTX)
    # the padding label is a valid one (0 / +1), so the label count needs no mask
    y = load_f32(y_ptr, offs, rem, 0.0 if MULTILABEL else 1.0, MASKED, PTX)
    if MULTILABEL:
        loss, grad = multilabel_terms(x, y, PTX)
        grad = grad * grad_scale
    else:
        loss, sig = soft_margin_terms(x, y, PTX)
        grad = sig * (y * -grad_scale)
    if HAS_WEIGHT:
        w = load_f32(w_ptr, offs, rem, 0.0, MASKED, PTX)
        loss = loss * w
        grad = grad * w
    if NEED_GRAD:
        store_block(grad_ptr, offs, grad, rem, MASKED)
    if STORE_LOSS:
        store_block(loss_ptr, offs, loss, rem, MASKED)
    if REDUCE:
        if MASKED:
            loss = tl.where(offs < rem, loss, 0.0)
        acc += loss
    if CHECK:
        bad += bad_label(y, MULTILABEL)
    return acc, bad


@triton.jit
def logistic_flat_kernel(
    # pointers
    x_ptr,  # (n,) scores, fp16 / bf16 / fp32, contiguous
    y_ptr,  # (n,) labels, float / int / bool, contiguous
    w_ptr,  # (n,) weight, contiguous (HAS_WEIGHT; else None)
    loss_ptr,  # (n,) elementwise loss in the output dtype (STORE_LOSS; else None)
    partial_ptr,  # (n_programs,) float32 sums of the loss terms (REDUCE; else None)
    bad_ptr,  # (n_programs,) int32 counts of bad labels (CHECK; else None)
    grad_ptr,  # (n,) d loss / d x in x's dtype (NEED_GRAD; else None)
    # sizes / scalars
    n_elements,
    span,  # elements per program: a multiple of BLOCK, at most MAX_SPAN
    grad_scale,  # the gradient's factor (1/n for "mean"; 1/C, 1/(N C) for multilabel)
    # meta-parameters
    MULTILABEL: tl.constexpr,  # False: soft_margin_loss; True: multilabel_soft_margin_loss
    HAS_WEIGHT: tl.constexpr,
    STORE_LOSS: tl.constexpr,  # the elementwise loss ("none" of soft margin)
    REDUCE: tl.constexpr,  # one partial sum per program
    NEED_GRAD: tl.constexpr,
    CHECK: tl.constexpr,  # count the labels outside the convention
    BLOCK: tl.constexpr,
    PTX: tl.constexpr,  # inline PTX allowed (compiled for an NVIDIA GPU)
):
    # Program p owns elements [p span, min((p + 1) span, n)): its full BLOCKs unmasked (vector
    # loads and stores whatever n is), then at most one masked tail. The start is int64; the
    # offsets inside the span are int32 (span <= 2^30: nothing wraps).
    pid, start, count = program_span(n_elements, span)
    x_ptr += start
    y_ptr += start
    if HAS_WEIGHT:
        w_ptr += start
    if STORE_LOSS:
        loss_ptr += start
    if NEED_GRAD:
        grad_ptr += start
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.float32)  # per-lane running sums of the loss
    bad = tl.zeros([BLOCK], dtype=tl.float32)  # per-lane counts of bad labels (exact)
    n_full = count // BLOCK
    for i in range(0, n_full):
        acc, bad = _flat_block(x_ptr, y_ptr, w_ptr, loss_ptr, grad_ptr, i * BLOCK + offs, 0,
                               acc, bad, grad_scale, MULTILABEL, HAS_WEIGHT, STORE_LOSS, REDUCE,
                               NEED_GRAD, CHECK, False, PTX)
    rem = count - n_full * BLOCK
    if rem > 0:
        acc, bad = _flat_block(x_ptr, y_ptr, w_ptr, loss_ptr, grad_ptr, n_full * BLOCK + offs,
                               rem, acc, bad, grad_scale, MULTILABEL, HAS_WEIGHT, STORE_LOSS,
                               REDUCE, NEED_GRAD, CHECK, True, PTX)
    store_program_sums(partial_ptr, bad_ptr, pid, acc, bad, REDUCE, CHECK)
