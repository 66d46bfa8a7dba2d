r"""``multilabel_margin_loss``: the multi-label hinge over -1-padded index lists, loss + gradient
(+ label check) with :math:`O(C \log K)` work per row.

Row :math:`n` lists its target classes :math:`t_1, \dots, t_K` left to right up to the first
negative entry (a class listed twice counts twice in the sum, once in the target set :math:`T`).
With :math:`S_j = x_{t_j}` and the keys :math:`q_j = \mathrm{fl}(S_j - 1)` (ATen's pair test
:math:`(1 - S_j) + x_k > 0`, in float32, holds exactly when :math:`x_k > q_j`):

.. math::
    \ell_n = \frac{1}{C} \sum_{j=1}^{K} \sum_{k \notin T} [1 - S_j + x_k]_+ ,

and with :math:`c_k = \#\{j : q_j < x_k\}` (the active pairs of a non-target class) and
:math:`d_j = \#\{k \notin T : q_j < x_k\}` (those of a list entry),

.. math::
    \frac{\partial \ell_n}{\partial x_k} = \frac{c_k}{C} \;(k \notin T), \qquad
    \frac{\partial \ell_n}{\partial x_u} = -\frac{m_u\, d(u)}{C} \;(u \in T),

:math:`m_u` being how often :math:`u` is listed (its entries share one :math:`d`). The
subgradient at :math:`z = 0` is 0 (strict ``>``, as torch).

**Algorithm** (one program per row; the sorted keys live in a per-program scratch, in cache):

1. **List**: read the target row in tiles of ``LIST_TILE`` entries up to the tile holding the
   first negative one (the rest is not read). Entries outside :math:`[0, C)` (possible only with
   ``validate=False``) are skipped, never dereferenced: their key is :math:`+\infty`, which no
   score exceeds. NaN scores get the key :math:`+\infty` too (never active, as torch).
2. **Sort** the keys by rank (:math:`\mathrm{rank}_j = \#\{i : q_i < q_j\} + \#\{i < j :
   q_i = q_j\}`, pairwise in ``LIST_TILE x PAIR_TILE`` tiles), and per entry its lower rank
   :math:`r_j = \#\{i : q_i < q_j\}` and multiplicity :math:`m_{t_j}`; the listed classes are
   marked in a byte map. Then :math:`A_p = \sum_{i \le p} (q_{(p)} - q_{(i)})` by the stable
   recurrence :math:`A_p = A_{p-1} + p\,(q_{(p)} - q_{(p-1)})` (a scan of non-negative steps).
3. **Class sweep** (chunks of ``BLOCK_C``): :math:`c_k` by a branch-free binary search over the
   sorted keys (:math:`\lceil \log_2 K \rceil + 1` gathers, from L1), the gradient
   :math:`c_k / C` (0 at the marked classes, stored over later), the loss term
   :math:`\sum_{i < c} (x_k - q_{(i)}) = c\,(x_k - q_{(c-1)}) + A_{c-1}` (a sum of non-negative
   parts: no cancellation, whatever the scores' size), and the histogram :math:`h` of
   :math:`c_k` over the non-target classes (``tl.histogram``: integer increments, exact and
   order-free). Bins :math:`\ge` ``HIST_BINS`` (rows with that many keys) take one more sweep per
   ``HIST_BINS`` bins.
4. **Targets**: :math:`d_j = \#\{k \notin T : c_k > r_j\} = \sum_b h_b - \sum_{b \le r_j} h_b`
   (a prefix sum of :math:`h`), then :math:`-m\,d_j / C` is stored at :math:`t_j` (duplicates
   store the same value) and the byte map is cleared.

An infinite score gives torch's value: an active pair with :math:`x_k = +\infty` or
:math:`S_j = -\infty` makes the term (and the loss) :math:`+\infty` (the recurrence's step after
a :math:`-\infty` key is :math:`+\infty`); a term with :math:`c_k = 0` is never formed, so
:math:`0 \cdot \infty` never arises; NaN scores are never active. Math in float32: the row's
terms are summed per lane and then across lanes (a fixed order: deterministic, no atomics in
any floating-point sum).

**Cost** per row: the sweep is :math:`O(C \log K)`; steps 1, 2 and 4 are :math:`O(K^2)` pair
compares (cheap for the usual :math:`K \ll \sqrt{C}`; rows with hundreds of positives pay
:math:`K^2 / C` compares per class), plus one sweep per ``HIST_BINS`` keys beyond the first.
Memory traffic: read :math:`C` scores and the list up to its first -1, write :math:`C`
gradient entries and one float32 loss. The per-program scratch (sorted keys and their scan,
the histogram and its prefix sums, per-entry ranks: about 25 bytes per class, plus a byte map
zeroed by torch once per call) is reused row after row (programs loop over rows: the grid is
:func:`plan` ``.programs``, at most 4096, fewer for long rows), so it stays in cache and its
size is bounded by the program count, not by :math:`N`. Rows are not split across programs:
a batch of few long rows runs on few SMs.

**Label check** (``check=True``), in the same launch: each program counts, over its rows'
whole target rows (past the first -1 too), the entries outside :math:`[-1, C)` and those that
are neither 0 nor 1; torch adds the slots and adds 1 when no entry anywhere is outside
:math:`\{0, 1\}` while :math:`C > 2` (a 0/1 mask, not an index list): the spec's
``check_labels``, as a 0-d int64 count on the device (no host read).

**sm_90 figures** (``benchmarks/sm90_compile_check.py``, Triton 3.9, ptxas 12.x, 2026-12-02;
one warp per program, 8 classes per thread per chunk). At ``4096 x 2048`` with 16 positives:
float32 with gradient 79 instructions per element (71% of 4.8 TB/s at best; 93-97 and 58-60%
with the label check), float32 forward only 65 (43%), float16 / bfloat16 with gradient 78
(36%), forward only 66 (22%): issue-bound. Of the 79: the binary search 27 (5 probes, the first
one shared), the histogram ~7 (``tl.histogram``'s shared-memory increments), the loss terms
and their two gathers ~8, the per-row work (list, ranks, scan, targets) ~12. 60-107 registers,
no spills (``4096 x 2048``, ``4 x 8192``). Short rows pay the per-row work on few classes
(``4096 x 20``: ~1500 instructions per element): rows are not packed several to a program.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from marginloss.backends._common import grad_scale, reduce_rows
from marginloss.losses._spec import Call, Result
from marginloss.losses.multilabel_margin_loss import SPEC

MAX_BLOCK_C = 256  # classes per sweep chunk (8 per thread: one warp per row)
LIST_TILE = 16  # list entries per tile (list scan, ranks, targets)
PAIR_TILE = 16  # list entries compared with a list tile at once (ranks)
HIST_BINS = 64  # the most histogram bins of one pass (bins 0 .. HIST_BINS - 1 in the sweep)
MAX_PROGRAMS = 4096  # programs of a launch (each loops over rows)
SCRATCH_CLASSES = 1 << 23  # programs x classes of scratch a launch aims to stay under
MIN_PROGRAMS = 264  # ... but at least this many programs when there are as many rows


class Plan(NamedTuple):
    """How :func:`launch` cuts an ``(N, C)`` problem (see :func:`plan`)."""

    programs: int  # grid x; program p takes rows p, p + programs, ...
    block_c: int  # classes per sweep chunk
    hist_bins: int  # bins per histogram pass
    num_warps: int


def plan(n_rows: int, n_classes: int) -> Plan:
    """Programs, chunk and histogram sizes for an ``(n_rows, n_classes)`` input (shapes only,
    so the launch is the same on real and fake tensors)."""
    n, c = max(int(n_rows), 1), max(int(n_classes), 1)  # int(): specialise symbolic shapes
    block_c = min(triton.next_power_of_2(c), MAX_BLOCK_C)
    hist_bins = min(triton.next_power_of_2(c + 1), HIST_BINS)
    programs = min(n, max(MIN_PROGRAMS, min(MAX_PROGRAMS, SCRATCH_CLASSES // c)))
    num_warps = max(1, block_c // 256)
    return Plan(programs, block_c, hist_bins, num_warps)


@triton.jit
def _list_length(t_row, width, LIST_TILE: tl.constexpr):
    """Position of the row's first negative entry (``width``, the target row's length, when
    none), reading tiles of ``LIST_TILE`` entries up to the one that holds it."""
    n_list = tl.zeros([], tl.int32) + width
    k0 = tl.zeros([], tl.int32)
    while k0 < n_list:
        offs = k0 + tl.arange(0, LIST_TILE)
        # padding loads 0, not negative: it never ends the list
        t = tl.load(t_row + offs, mask=offs < width, other=0)
        n_list = tl.minimum(n_list, tl.min(tl.where(t < 0, offs, width), axis=0))
        k0 += LIST_TILE
    return n_list


@triton.jit
def _entries(t_row, x_row, offs, n_list, n_classes):
    """List entries ``offs``: ``(class, usable, key)``. ``usable``: inside the list and a class
    in ``[0, C)`` (its class is -1 otherwise); the key is ``fl(S - 1)``, or +inf for an unusable
    entry or a NaN score (never below any score)."""
    inside = offs < n_list
    t = tl.load(t_row + offs, mask=inside, other=-1)
    usable = inside & (t >= 0) & (t < n_classes)  # in the target's own dtype: no truncation
    cls = tl.where(usable, t, -1).to(tl.int32)
    s = tl.load(x_row + cls, mask=usable, other=0.0).to(tl.float32)
    q = s - 1.0
    q = tl.where(usable & (q == q), q, float("inf"))
    return cls, usable, q


@triton.jit
def _count_below(keys, x, n_keys):
    """``#{i < n_keys : keys[2 i] < x}`` for each ``x`` (keys sorted ascending, every other
    float of ``keys``: they are interleaved with their scan): a branch-free
    binary search over the ``n_keys + 1`` possible answers, ``ceil(log2(n_keys + 1))`` probes,
    the first one shared by every ``x`` (a scalar load); never reads past ``n_keys``."""
    n = n_keys + 1  # the answer lies in [base, base + n)
    half = n // 2
    first = tl.load(keys + 2 * (half - 1), mask=half > 0, other=float("inf"))
    base = tl.where(first < x, half, 0)
    n -= half
    while n > 1:
        half = n // 2
        probe = tl.load(keys + 2 * (half - 1) + 2 * base)  # key base + half - 1 < x: move up
        base = tl.where(probe < x, base + half, base)
        n -= half
    return base


@triton.jit
def _multilabel_margin_loss_kernel(
    # pointers
    x_ptr,  # (N, C) scores, fp16 / bf16 / fp32, unit class stride
    t_ptr,  # (N, W) class indices padded with -1, int32 / int64, unit class stride, W <= C
    rows_ptr,  # (N,) float32 row losses
    grad_ptr,  # (N, C) d loss / d x in x's dtype, contiguous (NEED_GRAD; else None)
    bad_ptr,  # (programs, 2) int32: entries outside [-1, C), entries not 0/1 (CHECK; else None)
    pairs_ptr,  # (programs, 2 C + 2) float32 scratch: (0, 0), then (q_(p), A_p) pairs
    ints_ptr,  # (programs, 4 C + 2 HIST_BINS) int32 scratch: (histogram, prefix) pairs per
    #            bin, then (r_j, m_j) pairs per list entry
    mark_ptr,  # (programs, C) int8 scratch, zeroed by torch: 1 at the listed classes
    # strides
    stride_xn,
    stride_tn,
    # sizes / scalars
    n_rows,
    n_classes,
    width,  # W: entries per target row (C, or fewer: rows without their padding columns)
    n_programs,
    grad_scale,  # 1/C, times 1/N for "mean"
    # meta-parameters
    NEED_GRAD: tl.constexpr,
    CHECK: tl.constexpr,
    BLOCK_C: tl.constexpr,
    LIST_TILE: tl.constexpr,
    PAIR_TILE: tl.constexpr,
    HIST_BINS: tl.constexpr,
):
    pid = tl.program_id(0)
    # this program's scratch (int64 starts; offsets inside a row are int32)
    # pairs[2 p], pairs[2 p + 1] = (q_(p-1), A_{p-1}) for p >= 1, and (0, 0) for p = 0 (read by
    # the classes with c = 0); interleaved, so that a class's two reads are neighbours and few
    # pointers stay live
    pairs = pairs_ptr + pid.to(tl.int64) * (2 * n_classes + 2)
    keys = pairs + 2  # key i at keys[2 i], its scan at keys[2 i + 1]
    tl.store(pairs + tl.arange(0, 2), tl.zeros([2], tl.float32))
    # hist[2 b] = the histogram's bin b (tiles past the first), hist[2 b + 1] = its prefix sum;
    # ent[2 j] = r_j (keys strictly below entry j's), ent[2 j + 1] = m (entry j's multiplicity)
    hist_s = ints_ptr + pid.to(tl.int64) * (4 * n_classes + 2 * HIST_BINS)
    ent = hist_s + 2 * (n_classes + HIST_BINS)
    mark = mark_ptr + pid.to(tl.int64) * n_classes
    inv_c = 1.0 / n_classes.to(tl.float32)
    lane = tl.arange(0, BLOCK_C)
    bins = tl.arange(0, HIST_BINS)
    bad = tl.zeros([BLOCK_C], tl.int32)
    not01 = tl.zeros([BLOCK_C], tl.int32)

    for row in range(pid.to(tl.int64), n_rows, n_programs):  # int64: row * stride may pass 2^31
        x_row = x_ptr + row * stride_xn
        t_row = t_ptr + row * stride_tn
        tl.debug_barrier()  # the previous row's reads of the scratch are done

        # 1. the list, up to the first negative entry
        n_list = _list_length(t_row, width, LIST_TILE)

        # 2. ranks -> sorted keys; r_j and m per entry; mark the listed classes
        for i0 in range(0, n_list, LIST_TILE):
            oi = i0 + tl.arange(0, LIST_TILE)
            ci, ui, qi = _entries(t_row, x_row, oi, n_list, n_classes)
            rank = tl.zeros([LIST_TILE], tl.int32)
            r = tl.zeros([LIST_TILE], tl.int32)
            m = tl.zeros([LIST_TILE], tl.int32)
            for j0 in range(0, n_list, PAIR_TILE):
                oj = j0 + tl.arange(0, PAIR_TILE)
                cj, uj, qj = _entries(t_row, x_row, oj, n_list, n_classes)
                inside = (oj < n_list)[None, :]
                below = (qj[None, :] < qi[:, None]) & inside
                tie = (qj[None, :] == qi[:, None]) & (oj[None, :] < oi[:, None]) & inside
                rank += tl.sum((below | tie).to(tl.int32), axis=1)
                r += tl.sum(below.to(tl.int32), axis=1)
                m += tl.sum(((cj[None, :] == ci[:, None]) & uj[None, :]).to(tl.int32), axis=1)
            inside_i = oi < n_list
            tl.store(keys + 2 * rank, qi, mask=inside_i)
            tl.store(ent + 2 * oi, r, mask=inside_i)
            tl.store(ent + 2 * oi + 1, m, mask=inside_i)
            tl.store(mark + ci, tl.full([LIST_TILE], 1, tl.int8), mask=ui)
        tl.debug_barrier()

        # A_p = A_{p-1} + p (q_(p) - q_(p-1)): non-negative steps; +inf after a -inf key
        carry = tl.zeros([], tl.float32)
        for p0 in range(0, n_list, LIST_TILE):
            op = p0 + tl.arange(0, LIST_TILE)
            inside = op < n_list
            q = tl.load(keys + 2 * op, mask=inside, other=float("inf"))
            q_prev = tl.load(keys + 2 * op - 2, mask=inside & (op > 0), other=0.0)
            # finite operands only (no inf - inf); the steps at +inf keys are never read
            finite = (q_prev > -float("inf")) & (q > -float("inf")) & (q < float("inf"))
            step = op.to(tl.float32) * (tl.where(finite, q, 0.0) - tl.where(finite, q_prev, 0.0))
            step = tl.where((op > 0) & (q_prev == -float("inf")), float("inf"), step)
            tl.store(keys + 2 * op + 1, carry + tl.cumsum(step, axis=0), mask=inside)
            carry += tl.sum(tl.where(inside, step, 0.0), axis=0)
        tl.debug_barrier()

        # 3. class sweep: c_k, the gradient c_k / C, the loss terms, the histogram of c_k
        acc = tl.zeros([BLOCK_C], tl.float32)
        hist = tl.zeros([HIST_BINS], tl.int32)
        for c0 in range(0, n_classes, BLOCK_C):
            offs = c0 + lane
            in_row = offs < n_classes
            x = tl.load(x_row + offs, mask=in_row, other=0.0).to(tl.float32)
            free = in_row & (tl.load(mark + offs, mask=in_row, other=1) == 0)  # not a target
            c = _count_below(keys, x, n_list)
            c = tl.where(free, c, 0)
            # sum_{i < c} (x - q_(i)) = c (x - q_(c-1)) + A_{c-1}; c = 0 reads the leading 0s
            q_top = tl.load(pairs + 2 * c)
            a_top = tl.load(pairs + 2 * c + 1)
            cf = c.to(tl.float32)
            acc += cf * (tl.where(c > 0, x, 0.0) - q_top) + a_top
            if NEED_GRAD:
                tl.store(grad_ptr + row * n_classes + offs,
                         (cf * grad_scale).to(grad_ptr.dtype.element_ty), mask=in_row)
                hist += tl.histogram(c, HIST_BINS, mask=free & (c < HIST_BINS))
        tl.store(rows_ptr + row, tl.sum(acc, axis=0) * inv_c)

        if NEED_GRAD:
            # bins HIST_BINS and up (rows with that many keys): one more sweep per HIST_BINS
            for b0 in range(HIST_BINS, n_list + 1, HIST_BINS):
                extra = tl.zeros([HIST_BINS], tl.int32)
                for c0 in range(0, n_classes, BLOCK_C):
                    offs = c0 + lane
                    in_row = offs < n_classes
                    x = tl.load(x_row + offs, mask=in_row, other=0.0).to(tl.float32)
                    free = in_row & (tl.load(mark + offs, mask=in_row, other=1) == 0)
                    c = _count_below(keys, x, n_list) - b0
                    extra += tl.histogram(c, HIST_BINS, mask=free & (c >= 0) & (c < HIST_BINS))
                tl.store(hist_s + 2 * (b0 + bins), extra)
            tl.debug_barrier()
            # inclusive prefix sums of the histogram: #{k not in T : c_k <= b}
            tl.store(hist_s + 2 * bins + 1, tl.cumsum(hist, axis=0))
            total = tl.sum(hist, axis=0)
            for b0 in range(HIST_BINS, n_list + 1, HIST_BINS):
                h = tl.load(hist_s + 2 * (b0 + bins))
                tl.store(hist_s + 2 * (b0 + bins) + 1, total + tl.cumsum(h, axis=0))
                total += tl.sum(h, axis=0)
            tl.debug_barrier()  # the sweep's stores (0 at the targets) before the targets'

            # 4. targets: d_j = #{k not in T : c_k > r_j}; -m d_j / C at t_j
            g_row = grad_ptr + row * n_classes
            for i0 in range(0, n_list, LIST_TILE):
                oi = i0 + tl.arange(0, LIST_TILE)
                inside = oi < n_list
                t = tl.load(t_row + oi, mask=inside, other=-1)
                usable = inside & (t >= 0) & (t < n_classes)
                ci = tl.where(usable, t, 0).to(tl.int32)
                r = tl.load(ent + 2 * oi, mask=usable, other=0)
                m = tl.load(ent + 2 * oi + 1, mask=usable, other=0)
                d = total - tl.load(hist_s + 2 * r + 1, mask=usable, other=0)
                g = -(m * d).to(tl.float32) * grad_scale
                tl.store(g_row + ci, g.to(grad_ptr.dtype.element_ty), mask=usable)
                tl.store(mark + ci, tl.zeros([LIST_TILE], tl.int8), mask=usable)
        else:
            tl.debug_barrier()  # the sweep's reads of the marks are done
            for i0 in range(0, n_list, LIST_TILE):  # clear the marks
                oi = i0 + tl.arange(0, LIST_TILE)
                inside = oi < n_list
                t = tl.load(t_row + oi, mask=inside, other=-1)
                usable = inside & (t >= 0) & (t < n_classes)
                tl.store(mark + tl.where(usable, t, 0).to(tl.int32),
                         tl.zeros([LIST_TILE], tl.int8), mask=usable)

        if CHECK:  # the whole target row, past the first -1 too
            for c0 in range(0, width, BLOCK_C):
                offs = c0 + lane
                in_row = offs < width
                t = tl.load(t_row + offs, mask=in_row, other=0)
                bad += (in_row & ((t < -1) | (t >= n_classes))).to(tl.int32)
                not01 += (in_row & (t != 0) & (t != 1)).to(tl.int32)

    if CHECK:
        tl.store(bad_ptr + 2 * pid, tl.sum(bad, axis=0))
        tl.store(bad_ptr + 2 * pid + 1, tl.sum(not01, axis=0))


def launch(call: Call, check: bool = False) -> Result:
    """The loss and gradient of ``call`` (the contract of ``SPEC.torch_compute``); with
    ``check``, also ``bad_labels``: the spec's label check as a count (a 0-d int64 tensor on the
    input's device).

    ``call.input`` is ``(N, C)``, ``call.target`` ``(N, C)`` or narrower, ``(N, W)`` with
    ``W <= C`` (rows without their padding columns), int32 / int64 class indices, each row's
    list ending at its first negative entry (or at ``W``). Traceable: shapes decide
    everything.
    """
    input, target = call.input, call.target
    need_grad = call.need_grad[0]
    n_rows, n_classes = input.shape
    dev = input.device
    # (1) the layout the kernel reads: unit class stride
    x = input if input.stride(1) == 1 else input.contiguous()
    t = target if target.stride(1) == 1 else target.contiguous()
    # (2) allocate
    cut = plan(n_rows, n_classes)
    run = n_rows > 0 and n_classes > 0
    grad = torch.empty((n_rows, n_classes), dtype=input.dtype, device=dev) if need_grad else None
    rows = torch.empty(n_rows, dtype=torch.float32, device=dev)
    bad = torch.zeros((cut.programs, 2), dtype=torch.int32, device=dev) if check else None
    # (3) launch
    if run:
        p, c = cut.programs, n_classes
        keys = torch.empty((p, 2 * c + 2), dtype=torch.float32, device=dev)
        ints = torch.empty((p, 4 * c + 2 * cut.hist_bins), dtype=torch.int32, device=dev)
        mark = torch.zeros((p, c), dtype=torch.int8, device=dev)
        torch.library.wrap_triton(_multilabel_margin_loss_kernel)[(p,)](
            x, t, rows, grad, bad, keys, ints, mark,
            x.stride(0), t.stride(0),
            n_rows, n_classes, t.shape[1], p, grad_scale(SPEC, call) / n_classes,
            NEED_GRAD=need_grad, CHECK=check, BLOCK_C=cut.block_c, LIST_TILE=LIST_TILE,
            PAIR_TILE=PAIR_TILE, HIST_BINS=cut.hist_bins, num_warps=cut.num_warps,
        )
    bad_labels = None
    if check:
        counts = bad.sum(dim=0, dtype=torch.int64)
        bad_labels = counts[0]
        if n_rows > 0 and n_classes > 2 and t.shape[1] == n_classes:  # a 0/1 mask
            bad_labels = bad_labels + (counts[1] == 0).to(torch.int64)
    return Result(reduce_rows(rows, call.reduction, SPEC.out_dtype(call)), (grad,), bad_labels)
