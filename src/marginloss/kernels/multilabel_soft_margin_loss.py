r"""``multilabel_soft_margin_loss``: per-class logistic loss on a 0/1 mask, loss + gradient.

For row :math:`n` of :math:`C` classes, scores :math:`x`, mask :math:`y \in [0, 1]` and weight
:math:`w` (1 without one):

.. math::
    \ell_n = \frac{1}{C} \sum_c w_{nc} \bigl(\operatorname{softplus}(x_{nc}) - y_{nc} x_{nc}\bigr),
    \qquad
    \frac{\partial \ell_n}{\partial x_{nc}} = \frac{w_{nc}}{C}\bigl(\sigma(x_{nc}) - y_{nc}\bigr),

which is torch's :math:`-\frac{1}{C}\sum_c w_{nc}[y \log\sigma(x) + (1-y)\log\sigma(-x)]`
(:math:`-\log\sigma(x) = \operatorname{softplus}(x) - x`). Per element, with
:math:`e = e^{-|x|}`, :math:`r = 1/(1 + e)` and :math:`a = [x \ge 0] - y`
(:func:`~marginloss.kernels._common.multilabel_terms`):

.. math::
    \operatorname{softplus}(x) - y x = a\, x + \log(1 + e), \qquad
    \sigma(x) - y = a \mp e\, r \quad (x \ge 0 \text{ or not}),

so the linear part is exact for a 0/1 label and the tail is added last (a confident, correct
score keeps its tiny loss's relative accuracy), and the gradient has no :math:`1 - 1`
cancellation (a confident, correct score keeps its tiny gradient's relative accuracy). The
exponential, one shared reciprocal and the tail's polynomial are
:func:`~marginloss.kernels._common.logistic`'s: within about 4e-7 relative of float64 wherever
the results are normal floats. Math in float32 whatever the input dtype; results are rounded
once, on the store. When every result is a 16-bit float (float16 / bfloat16 scores and a
16-bit loss: ``HALF_OUT``), the rows layout takes a cheaper logistic (:func:`_logistic_half`:
no Cody-Waite step, a cubic tail, 5 instructions fewer): within about 4e-6 relative, far below
a float16 rounding (:math:`2^{-11}`).

Label check (``check=True``), in the same pass: each program counts its labels outside
:math:`[0, 1]` (NaN included) into an int32 slot; torch adds the slots (``bad_labels``, a 0-d
int64 on the device, no host read). In the rows layout float16 labels are checked in float16:
:math:`y^2 - y` rounded once has the sign of :math:`y (y - 1)` (two labels per instruction).

Two layouts, chosen from the shapes:

* **Flat** (a reduced loss, ``x`` and ``y`` contiguous, no weight or a contiguous full one):
  only the total :math:`\frac{1}{C}\sum_{n,c} w \ell` is needed, so the elements are one flat
  range through the shared :func:`~marginloss.kernels._common.logistic_flat_kernel`, as
  ``soft_margin_loss``: spans of whole ``BLOCK``\ s without masks (16-byte vectors whatever
  :math:`C` is, no padding lanes for short rows) and one masked tail; one float32 partial sum
  per program.
* **Rows** (``"none"``, a per-class weight, a broadcast or strided target): each program owns
  a ``BLOCK_N x BLOCK_C`` tile of rows and loops over one segment of their classes in
  ``BLOCK_C`` chunks (:func:`~marginloss.kernels._common.row_split`): short rows are packed
  many to a tile (and tiles shrink, down to 256 elements, so a small problem still makes about
  a thousand programs); rows too long for the row blocks to fill the GPU are cut into segments
  (``N = 1``, ``C = 10^6``: about 490 programs), whose partial row sums torch adds in a fixed
  order. Rows are clamped to :math:`N - 1` (a partial last row block recomputes that row), so
  full chunks have no masks; when :math:`C` is not a multiple of ``BLOCK_C`` (``TAIL``, a
  constexpr: otherwise that code is not compiled) one masked chunk ends the last segment. The
  target and the weight are read through their strides: a broadcast target, a per-class
  ``(C,)`` weight (read in the tile's own layout, every row of the tile from the same vector:
  the repeats hit L1) or a full ``(N, C)`` weight are never materialised. Row strides and
  :math:`C` are passed with their largest power-of-two divisor up to 16 (``ALIGN``), so rows
  whose length is a multiple of 4 (float32) or 8 (bfloat16) classes still get 16-byte vectors
  (Triton only specialises multiples of 16).
  Row offsets are int64; in-segment offsets int32 below 2^30.

Both fold the scale :math:`1/C` (times :math:`1/N` for ``"mean"``) into the gradient in the
kernel. Reductions are deterministic (no atomics).

**Options** (``pos_weight`` :math:`p`, ``label_smoothing`` :math:`\varepsilon`; constexpr
flags, so a call without them compiles the kernel above): the rows layout only. The label
becomes :math:`t = y (1 - \varepsilon) + \varepsilon/2` (without :math:`p`, folded into
:math:`a = [x \ge 0] - t`: one FMA); with :math:`p` (a ``(C,)`` float32 vector, read as a
per-class weight), :math:`u = p t`,
:math:`v = 1 - t` and :math:`a = v` (:math:`x \ge 0`) or :math:`-u`, the loss is
:math:`a x + (v + u) \log(1 + e)` and the gradient :math:`a \mp (v + u)\, e r`: the same
cancellation-free form. With the label check, the launcher adds the entries of :math:`p`
that are negative or not finite to the count (torch ops on the device, no host read).

**Registers**: tiles give each thread 8 elements when every tensor is read in 16-byte vectors,
else 4 in tiles of half the size (an odd :math:`C` or stride: each element then needs its
own 64-bit address), which keeps every variant within 128 registers (at most 114) without
spills on sm_90.

Memory traffic per element: read the score and the label (and a full weight), write the
gradient: 12 bytes in float32, 6 in bfloat16 with a bfloat16 mask; plus one float32 per row
and segment (rows) or per program (flat). Extra memory: those partial sums.

Instruction budget (sm_90 SASS, main loop per element; ``benchmarks/sm90_compile_check.py``
measures it): flat about 28 (float32) and 30 (bfloat16 with a bfloat16 mask). Rows, every
training-step variant at 4096 x 2048 (whole program per element): 34-40 in float32, 27-34
with 16-bit scores and labels, 32-40 with a ``pos_weight`` too (with the per-class weight,
label check and smoothing: 40); the H200's bandwidth leaves 84 and 42 instructions per element
(``bytes / 4.8e12 * 32 * 1.045e12``), so the kernel is bound by memory, not by issue.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from marginloss.backends._common import grad_scale, reduce_rows
from marginloss.kernels._common import (
    LOG2E,
    MIN_TILE,
    bad_label,
    exp2_ftz,
    flat_span,
    logistic,
    logistic_flat_kernel,
    ptx_allowed,
    rcp,
    row_split,
    to_f32,
)
from marginloss.losses._spec import Call, Result
from marginloss.losses.multilabel_soft_margin_loss import SPEC

BLOCK = 2048  # flat layout: elements per step of a program (8 per thread at 8 warps)
BLOCK_TILE = 2048  # rows layout: the most elements of a BLOCK_N x BLOCK_C tile (8 per thread)
_FLOAT_MAX = torch.finfo(torch.float32).max


# 2 atanh(s) = s h(s^2) for s in [0, 1/3]: a cubic fitted for the least relative error (1.7e-7;
# the quartic Q0..Q4 of kernels._common: 5e-9)
H3 = tl.constexpr(0.34226008)
H2 = tl.constexpr(0.39589411)
H1 = tl.constexpr(0.66676009)
H0 = tl.constexpr(1.99999967)


@triton.jit
def _logistic_half(v, PTX: tl.constexpr):
    """``(e r, s, q)`` of :func:`~marginloss.kernels._common.logistic` (``e r = sigmoid(-|v|)``,
    ``log(1 + e) = s q``) for results rounded to 16-bit floats, 5 instructions fewer:

    * ``e = 2^(-|v| log2 e)`` without the Cody-Waite correction: the rounding of the exponent
      makes a relative error of at most ``|v| 7.3e-8`` (4e-6 wherever ``e`` is a normal float),
      far below a float16 half-ulp (2^-11) or a bfloat16 one (2^-8); and so without the clamp
      that kept that correction finite (an infinite score gives ``e = 0``; NaN passes);
    * ``e r`` and ``s`` from one product ``e D``, ``D = 1 / ((1 + e)(2 + e))``:
      ``e r = (e D)(2 + e)``, ``s = (e D)(1 + e)``;
    * ``q`` a cubic (relative error 1.7e-7).

    ``e r`` and ``s q`` are within 4e-6 relative of float64 (float32 simulation over
    ``|v| <= 87``)."""
    e = exp2_ftz(-tl.abs(v) * LOG2E, PTX)
    d2 = e + 2.0
    ed = e * rcp(tl.fma(d2, e, d2), PTX)  # e / ((1 + e)(2 + e))
    er = ed * d2  # e / (1 + e) (the rounding of d2 cancels)
    s = tl.fma(ed, e, ed)  # e / (2 + e)
    u = s * s
    q = tl.fma(u, H3, H2)
    q = tl.fma(q, u, H1)
    q = tl.fma(q, u, H0)
    return er, s, q


@triton.jit
def _terms(x, y, pw, smooth_a, smooth_b, POS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr,
           HALF_OUT: tl.constexpr, PTX: tl.constexpr):
    """``(loss, grad)`` at score ``x``, label ``y`` (before the weight and the ``1/C`` scale),
    with the options: the smoothed label ``t = y smooth_a + smooth_b`` (SMOOTH) and the
    positive-class weight ``pw`` (POS_WEIGHT): ``loss = pw t softplus(-x) + (1 - t)
    softplus(x)``, ``grad = (1 - t) sigmoid(x) - pw t sigmoid(-x)``.

    With ``u = pw t``, ``v = 1 - t``, ``lw = v + u`` and ``a = v`` (x >= 0) or ``-u``:
    ``loss = a x + lw log(1 + e)`` and ``grad = fma(e r, -+lw, a)`` (``multilabel_terms``'
    form, exact for hard labels). Without a positive weight ``lw = 1`` and
    ``a = [x >= 0] - t``, the smoothing folded into it as one FMA. HALF_OUT: the logistic
    pieces of :func:`_logistic_half`."""
    if HALF_OUT:
        er, s, q = _logistic_half(x, PTX)
    else:
        e, r, s, q = logistic(x, PTX)
        er = e * r
    pos = x >= 0
    if POS_WEIGHT:
        t = y
        if SMOOTH:
            t = tl.fma(y, smooth_a, smooth_b)
        u = t * pw
        v = 1.0 - t
        lw = v + u
        a = tl.where(pos, v, -u)
        grad = tl.fma(er, tl.where(pos, -lw, lw), a)
        loss = tl.fma(s * q, lw, a * x)
    else:  # multilabel_terms, with the smoothing folded into a = [x >= 0] - t: one FMA
        if SMOOTH:
            a = tl.fma(y, -smooth_a, tl.where(pos, 1.0 - smooth_b, -smooth_b))
        else:
            a = tl.where(pos, 1.0, 0.0) - y
        grad = tl.fma(er, tl.where(pos, -1.0, 1.0), a)
        loss = tl.fma(s, q, a * x)
    return loss, grad


@triton.jit
def _count_bad(y_in, y, bad, PTX: tl.constexpr):
    """``bad`` plus 1 where the label is outside [0, 1] (NaN included): ``y_in`` as loaded,
    ``y`` in float32.

    Float16 labels compiled for an NVIDIA GPU are checked in float16, two per instruction
    (``HFMA2``, ``HSETP2``, then one predicated add each): ``y^2 - y`` rounded once has the sign
    of ``y (y - 1)`` (it is not 0 unless ``y`` is 0 or 1, and float16 keeps its subnormals), is
    NaN for an infinite or NaN label and overflows to ``+inf`` for a huge one; so the label is
    valid exactly when it is ``<= 0`` (every float16 value checked against ``0 <= y <= 1``).
    Other labels: :func:`~marginloss.kernels._common.bad_label` in float32 (bfloat16 pairs
    would need their negation as an instruction of its own)."""
    if PTX and y_in.dtype == tl.float16:
        t = tl.fma(y_in, y_in, -y_in)
        return tl.where(t <= 0, bad, bad + 1.0)
    else:
        return bad + bad_label(y, True)


@triton.jit
def _rows_chunk(
    x_rows, t_rows, w_rows, g_rows,  # [BLOCK_N, 1] row pointers at the segment (WEIGHT 1: the
    o,  # [1, BLOCK_C] class offsets in the segment        (C,) vector's pointer in every row)
    col_mask,  # [1, BLOCK_C] (MASKED: the segment's last chunk) or None
    pw_seg,  # [BLOCK_N, 1] the positive weight's pointer at the segment (POS_WEIGHT; or unused)
    stride_tc, stride_wc, acc, bad, scale, smooth_a, smooth_b,
    WEIGHT: tl.constexpr, NEED_GRAD: tl.constexpr, CHECK: tl.constexpr, MASKED: tl.constexpr,
    POS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr, HALF_OUT: tl.constexpr, PTX: tl.constexpr,
):
    """One chunk of the tile: stores the gradient, adds the loss terms and bad labels. Rows are
    all valid (clamped), so only the last chunk of a segment has a mask, on the classes."""
    if MASKED:  # padding classes load x = y = 0 (a valid label)
        x = to_f32(tl.load(x_rows + o, mask=col_mask, other=0.0), PTX)
        y_in = tl.load(t_rows + o * stride_tc, mask=col_mask, other=0.0)
    else:
        x = to_f32(tl.load(x_rows + o), PTX)
        y_in = tl.load(t_rows + o * stride_tc)
    y = to_f32(y_in, PTX)
    pw = x  # POS_WEIGHT False: unused
    if POS_WEIGHT:  # per class: the same float32 vector in every row of the tile
        if MASKED:
            pw = tl.load(pw_seg + o, mask=col_mask, other=0.0)
        else:
            pw = tl.load(pw_seg + o)
    loss, grad = _terms(x, y, pw, smooth_a, smooth_b, POS_WEIGHT, SMOOTH, HALF_OUT, PTX)
    grad = grad * scale
    if WEIGHT != 0:
        if WEIGHT == 1:  # per class: the same vector in every row of the tile
            w_ptrs = w_rows + o
        else:
            w_ptrs = w_rows + o * stride_wc
        if MASKED:
            w = to_f32(tl.load(w_ptrs, mask=col_mask, other=0.0), PTX)
        else:
            w = to_f32(tl.load(w_ptrs), PTX)
        loss = loss * w
        grad = grad * w
    if NEED_GRAD:
        if MASKED:
            tl.store(g_rows + o, grad.to(g_rows.dtype.element_ty), mask=col_mask)
        else:
            tl.store(g_rows + o, grad.to(g_rows.dtype.element_ty))
    if MASKED:  # padding classes would add log 2 each
        loss = tl.where(col_mask, loss, 0.0)
    acc += loss
    if CHECK:
        bad = _count_bad(y_in, y, bad, PTX)
    return acc, bad


@triton.jit
def _multilabel_soft_margin_loss_rows_kernel(
    # pointers
    x_ptr,  # (N, C) scores, fp16 / bf16 / fp32, unit class stride
    t_ptr,  # (N, C) mask in [0, 1], float / int / bool (row or class stride 0 allowed)
    w_ptr,  # WEIGHT 1: (C,) contiguous; 2: (N, C) with strides; else None
    pw_ptr,  # (C,) float32 positive-class weight, contiguous (POS_WEIGHT; else None)
    rows_ptr,  # (n_seg, N) float32: each segment's share of the row losses (already / C)
    bad_ptr,  # (n_seg, row_programs) int32 bad-label counts (CHECK; else None)
    g_ptr,  # (N, C) d loss / d x in x's dtype, contiguous (NEED_GRAD; else None)
    # strides (elements; each a multiple of ALIGN where it is a row stride)
    stride_xn,
    stride_tn, stride_tc,  # stride_tc: 1, or 0 for a target broadcast over the classes
    stride_wn, stride_wc,  # WEIGHT 2
    # sizes / scalars
    n_rows,
    n_classes,  # a multiple of ALIGN
    seg_chunks,  # classes per segment / BLOCK_C (seg_len is a multiple of BLOCK_C, <= 2^30)
    row_steps,  # row blocks per program
    grad_scale,  # 1/C, times 1/N for "mean"
    inv_c,  # 1/C
    smooth_a, smooth_b,  # label smoothing eps: 1 - eps, eps / 2 (SMOOTH)
    # meta-parameters
    WEIGHT: tl.constexpr,  # 0: none; 1: per class; 2: full
    NEED_GRAD: tl.constexpr,
    CHECK: tl.constexpr,
    POS_WEIGHT: tl.constexpr,
    SMOOTH: tl.constexpr,
    HALF_OUT: tl.constexpr,  # every result (gradient, loss) is a float16 / bfloat16
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    TAIL: tl.constexpr,  # C is not a multiple of BLOCK_C: the last segment ends in a partial chunk
    ALIGN: tl.constexpr,  # a power of two dividing C and the row strides (vector loads)
    PTX: tl.constexpr,
):
    # Program (p, seg): row blocks [p row_steps, (p + 1) row_steps), classes
    # [c_lo, c_lo + count) of each row, c_lo = seg seg_len: the segment's full chunks, then at
    # most one masked chunk. Row indices are clamped to N - 1 (a partial last block recomputes
    # and rewrites row N - 1, same values), so no load or store needs a row mask. Tell the
    # compiler what ALIGN divides (x // A * A == x): 16-byte vectors when A * itemsize >= 16.
    n_classes = n_classes // ALIGN * ALIGN
    stride_xn = stride_xn // ALIGN * ALIGN
    stride_tn = stride_tn // ALIGN * ALIGN
    stride_wn = stride_wn // ALIGN * ALIGN
    seg_len = seg_chunks * BLOCK_C  # known to be a multiple of BLOCK_C
    pid = tl.program_id(0)
    seg = tl.program_id(1)
    c_lo = seg.to(tl.int64) * seg_len
    count = tl.minimum(n_classes - c_lo, seg_len).to(tl.int32)  # classes in this segment
    n_full = count // BLOCK_C
    rem = count - n_full * BLOCK_C
    offs_c = tl.arange(0, BLOCK_C)
    rb0 = pid.to(tl.int64) * row_steps
    steps = tl.minimum(tl.cdiv(n_rows, BLOCK_N) - rb0, row_steps).to(tl.int32)
    n_bad = tl.zeros([BLOCK_N], dtype=tl.int32)
    for k in range(0, steps):
        rows = (rb0 + k) * BLOCK_N + tl.arange(0, BLOCK_N)  # int64: row * stride > 2^31
        mask_n = rows < n_rows
        rows_c = tl.minimum(rows, n_rows - 1)
        # per-class vectors get a pointer per row (all the same): they are then read in the
        # tile's own layout (16-byte vectors, repeats from L1), not as one [1, BLOCK_C] row
        # that Triton would spread one element per thread and move through shared memory
        zero_rows = rows_c * 0
        x_rows = x_ptr + (rows_c * stride_xn + c_lo)[:, None]
        t_rows = t_ptr + (rows_c * stride_tn + c_lo * stride_tc)[:, None]
        w_rows = w_ptr  # WEIGHT 0: unused
        if WEIGHT == 1:
            w_rows = w_ptr + (c_lo + zero_rows)[:, None]
        elif WEIGHT == 2:
            w_rows = w_ptr + (rows_c * stride_wn + c_lo * stride_wc)[:, None]
        g_rows = g_ptr  # NEED_GRAD False: unused
        if NEED_GRAD:
            g_rows = g_ptr + (rows_c * n_classes + c_lo)[:, None]
        pw_seg = pw_ptr  # POS_WEIGHT False: unused
        if POS_WEIGHT:
            pw_seg = pw_ptr + (c_lo + zero_rows)[:, None]
        acc = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.float32)  # per-lane running sums
        bad = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.float32)  # per-lane bad labels (exact)
        o = offs_c[None, :]  # (carried, not i * BLOCK_C: the loop counts in 32 bits)
        for _ in range(0, n_full):
            acc, bad = _rows_chunk(x_rows, t_rows, w_rows, g_rows, o, None, pw_seg, stride_tc,
                                   stride_wc, acc, bad, grad_scale, smooth_a, smooth_b, WEIGHT,
                                   NEED_GRAD, CHECK, False, POS_WEIGHT, SMOOTH, HALF_OUT, PTX)
            o += BLOCK_C
        if TAIL and rem > 0:  # (the mask made here, not kept live through the loop)
            col_mask = (offs_c < rem)[None, :]
            acc, bad = _rows_chunk(x_rows, t_rows, w_rows, g_rows,
                                   (n_full * BLOCK_C + offs_c)[None, :], col_mask, pw_seg,
                                   stride_tc, stride_wc, acc, bad, grad_scale, smooth_a,
                                   smooth_b, WEIGHT, NEED_GRAD, CHECK, True, POS_WEIGHT, SMOOTH,
                                   HALF_OUT, PTX)
        tl.store(rows_ptr + seg.to(tl.int64) * n_rows + rows, tl.sum(acc, axis=1) * inv_c,
                 mask=mask_n)
        if CHECK:  # a clamped (repeated) row is not counted twice
            n_bad += tl.where(mask_n, tl.sum(bad.to(tl.int32), axis=1), 0)
    if CHECK:
        tl.store(bad_ptr + seg.to(tl.int64) * tl.num_programs(0) + pid, tl.sum(n_bad, axis=0))


def _unit_or_zero_stride(t: Tensor) -> Tensor:
    """``t`` itself when its class stride is 0 or 1 (a broadcast or dense row), else a copy."""
    return t if t.stride(1) in (0, 1) else t.contiguous()


def _align(*values: int) -> int:
    """The largest power of two up to 16 dividing every value (0 divides by anything)."""
    a = 16
    for v in map(int, values):
        while v % a:
            a //= 2
    return a


def _flat(call: Call) -> bool:
    """Whether ``call`` takes the flat layout: a reduced loss over contiguous ``x`` and ``y``
    (and a contiguous full weight, or none), without the options (the rows layout has them)."""
    if call.reduction == "none" or not call.input.is_contiguous():
        return False
    if call.extras and (call.extras[0] is not None or call.extras[1]):
        return False
    t, w = call.target, call.weight
    if not t.is_contiguous():  # a broadcast target: the rows layout reads it in place
        return False
    return w is None or (w.dim() == 2 and w.is_contiguous())


def launch(call: Call, check: bool = False) -> Result:
    """The loss and gradient of ``call`` (the contract of ``SPEC.torch_compute``); with
    ``check``, also ``bad_labels``: the number of labels outside ``[0, 1]`` (NaN included), a
    0-d int64 tensor on the input's device.

    ``call.input`` and ``call.target`` are ``(N, C)`` (the target possibly a stride-0 view);
    ``call.weight`` is None, a per-class ``(C,)`` vector or a full ``(N, C)`` weight;
    ``call.extras`` ``(pos_weight, label_smoothing)`` (or ``()``): None or a ``(C,)`` vector,
    and a float in [0, 1). Target and weight are read through their strides, never
    materialised. With ``check``, the entries of ``pos_weight`` that are negative or not finite
    are counted too. Traceable: shapes (and whether there are options) decide everything.
    """
    input, weight = call.input, call.weight
    need_grad = call.need_grad[0]
    out_dtype = SPEC.out_dtype(call)
    n_rows, n_classes = input.shape
    dev = input.device
    grad = torch.empty((n_rows, n_classes), dtype=input.dtype, device=dev) if need_grad else None
    scale = grad_scale(SPEC, call) / n_classes if n_classes else 1.0
    if n_classes == 0:  # 0 / 0, as torch
        rows = torch.full((n_rows,), float("nan"), dtype=torch.float32, device=dev)
        bad = torch.zeros((), dtype=torch.int64, device=dev) if check else None
        return Result(reduce_rows(rows, call.reduction, out_dtype), (grad,), bad)
    if _flat(call):
        return _launch_flat(call, grad, scale, out_dtype, check)
    return _launch_rows(call, grad, scale, out_dtype, check)


def _launch_flat(call: Call, grad: Tensor | None, scale: float, out_dtype, check: bool):
    """The flat layout: one partial sum of ``w (softplus(x) - y x)`` per program."""
    x, t, w = call.input, call.target, call.weight
    n_rows, n_classes = x.shape
    n = x.numel()
    span = flat_span(n, BLOCK)
    n_programs = triton.cdiv(n, span)
    partial = torch.empty(n_programs, dtype=torch.float32, device=x.device)
    bad = torch.zeros(n_programs, dtype=torch.int32, device=x.device) if check else None
    if n:
        torch.library.wrap_triton(logistic_flat_kernel)[(n_programs,)](
            x, t, w, None, partial, bad, grad,
            n, span, scale,
            MULTILABEL=True, HAS_WEIGHT=w is not None, STORE_LOSS=False, REDUCE=True,
            NEED_GRAD=grad is not None, CHECK=check, BLOCK=BLOCK,
            PTX=ptx_allowed(logistic_flat_kernel),
            num_warps=max(1, min(8, BLOCK // 256)), enable_fp_fusion=True,
        )
    total = partial.sum() / n_classes  # the sum of the row losses
    if call.reduction == "mean":
        total = total / n_rows if n_rows else total.new_tensor(float("nan"))
    loss = total.to(out_dtype)
    return Result(loss, (grad,), bad.sum() if check else None)


def _launch_rows(call: Call, grad: Tensor | None, scale: float, out_dtype, check: bool):
    """The rows layout: each row's loss, from ``n_seg`` segments' partial sums."""
    input, weight = call.input, call.weight
    n_rows, n_classes = input.shape
    dev = input.device
    pos_weight, eps = SPEC.extra_values(call)
    if pos_weight is not None:
        pos_weight = pos_weight.to(torch.float32).contiguous()
    # (1) the layout the kernel reads: unit class stride for the scores
    x = input if input.stride(1) == 1 else input.contiguous()
    t = _unit_or_zero_stride(call.target)
    if weight is None:
        mode, stride_wn, stride_wc = 0, 0, 0
    elif weight.dim() == 1:  # per class: every row reads the same vector
        mode, stride_wn, stride_wc = 1, 0, 1
        weight = weight.contiguous()
    else:
        weight = _unit_or_zero_stride(weight)
        mode, (stride_wn, stride_wc) = 2, weight.stride()
    align = _align(n_classes, x.stride(0), t.stride(0) if t.stride(1) else 0,
                   stride_wn if stride_wc else 0)
    # 8 elements per thread when every tensor is read in 16-byte vectors; else (an odd C, a
    # misaligned stride) each element needs its own 64-bit address: 4 per thread in tiles of
    # half the size (same warps), which keeps every variant within 128 registers without
    # spills (up to 218 registers with 8; 2 warps on a 256-element tile spill predicates).
    # A pos_weight (float32, read in the tile's layout) fits in the 8 as well (at most 114).
    wide = align * min(x.element_size(), t.element_size()) >= 16
    split = row_split(n_rows, n_classes, BLOCK_TILE if wide else BLOCK_TILE // 2,
                      32 * 16 // x.element_size(), 8 if wide else 4,
                      MIN_TILE if wide else MIN_TILE // 2)
    # (2) allocate
    rows = torch.empty((split.n_seg, n_rows), dtype=torch.float32, device=dev)
    bad = torch.zeros((split.n_seg, split.row_programs), dtype=torch.int32, device=dev) \
        if check else None
    # (3) launch
    if n_rows:
        torch.library.wrap_triton(_multilabel_soft_margin_loss_rows_kernel)[
            (split.row_programs, split.n_seg)
        ](
            x, t, weight, pos_weight, rows, bad, grad,
            x.stride(0), t.stride(0), t.stride(1), stride_wn, stride_wc,
            n_rows, n_classes, split.seg_len // split.block_c, split.row_steps, scale,
            1.0 / n_classes, 1.0 - eps, 0.5 * eps,
            WEIGHT=mode, NEED_GRAD=grad is not None, CHECK=check,
            POS_WEIGHT=pos_weight is not None, SMOOTH=bool(eps),
            HALF_OUT=x.element_size() == 2 and out_dtype.itemsize == 2,
            BLOCK_N=split.block_n, BLOCK_C=split.block_c,
            TAIL=int(n_classes) % split.block_c != 0, ALIGN=align,
            PTX=ptx_allowed(_multilabel_soft_margin_loss_rows_kernel),
            num_warps=split.num_warps, enable_fp_fusion=True,
        )
    row_loss = rows[0] if split.n_seg == 1 else rows.sum(0)  # segments in a fixed order
    bad_labels = bad.sum() if check else None
    if check and pos_weight is not None:  # negative or not finite (NaN included)
        bad_labels = bad_labels + (~((pos_weight >= 0) & (pos_weight <= _FLOAT_MAX))).sum()
    return Result(reduce_rows(row_loss, call.reduction, out_dtype), (grad,), bad_labels)
