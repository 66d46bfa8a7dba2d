r"""``multilabel_margin_loss``: the multi-label hinge over -1-padded index lists, loss + gradient
(+ label check) with :math:`O(C \log K)` work per long row.

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

**Three ways** (:func:`plan`, from the shapes only):

* **short rows** (:math:`C \le` ``SHORT_C``): a program takes a tile of whole rows (``rows x
  BLOCK_C``, 256 scores, one warp; the tile is laid out classes x rows with the rows across
  lanes, so a thread holds a few classes of one row) and forms every (entry, class) pair:
  one pass over the list marks the target set with multiplicities, a second adds, per entry
  :math:`j`, the terms :math:`x_k - q_j` of the active pairs, :math:`c_k` and
  :math:`d_j` (a sum within the row's lanes). :math:`O(K C)` per row, no scratch.
* **whole rows** (many long rows): programs loop over rows (program :math:`p` takes rows
  :math:`p, p + P, \dots`), each with its own scratch slot, and run the steps below per row.
* **split rows** (fewer than ``SPLIT_PROGRAMS`` long rows, e.g. :math:`N = 1, C = 10^6`): three
  launches. *Prepare* (a program per row) runs steps 1-2 into the row's slot; *split* (grid
  rows x splits of at least ``SPLIT_C`` classes: about ``SPLIT_PROGRAMS`` programs, 1954 for
  :math:`C = 10^6`) sweeps its classes (step 3), stores its partial loss sum in its own place
  and adds its histogram to the row's (integer atomics: exact in any order); *finish* (a
  program per row) adds the partial sums in a fixed order and runs step 4. Deterministic: no
  floating-point sum depends on timing.

**Algorithm** of the long rows (the keys live in a per-slot scratch, in cache):

1. **List**: read the target row in tiles of ``LIST_TILE`` entries up to the tile holding the
   first negative one (the rest is not read). Entries outside :math:`[0, C)` (possible only with
   ``validate=False``) are skipped, never dereferenced: their key is :math:`+\infty`, which no
   score exceeds. NaN scores get the key :math:`+\infty` too (never active, as torch).
2. **Sort** the keys by rank (:math:`\mathrm{rank}_j = \#\{i : q_i < q_j\} + \#\{i < j :
   q_i = q_j\}`, pairwise in ``LIST_TILE x PAIR_TILE`` tiles, the three counts packed into one
   sum), and per entry its lower rank :math:`r_j = \#\{i : q_i < q_j\}` and multiplicity
   :math:`m_{t_j}`; the listed classes are marked (-1) in a byte map; keys are padded with
   :math:`+\infty` up to ``FAST_KEYS``. Then :math:`A_p = \sum_{i \le p} (q_{(p)} -
   q_{(i)})` by the stable recurrence :math:`A_p = A_{p-1} + p\,(q_{(p)} - q_{(p-1)})` (a scan
   of non-negative steps), stored next to its key: pair :math:`p + 1` is
   :math:`(q_{(p)}, A_p)`, pair 0 is :math:`(0, 0)`.
3. **Class sweep** (chunks of ``BLOCK_C``, 8 classes per thread): a score becomes NaN where the
   byte map marks a target (its bits or-ed with the map's -1 masked to a NaN: two
   instructions, no branch), and a NaN is never above a key. :math:`c_k` by a branch-free
   binary search: rows of fewer than ``FAST_KEYS`` (32) keys search the padded keys held in
   registers, one key per lane, in 5 unrolled probes, the first shared by the whole chunk and
   the others warp shuffles (``tl.gather``); longer rows search the scratch
   (:math:`\lceil \log_2 (K + 1) \rceil` loads). Then the gradient :math:`c_k / C` (0 at the
   marked classes, stored over later), the loss term :math:`\sum_{i < c} (x_k - q_{(i)}) =
   c\,(x_k - q_{(c-1)}) + A_{c-1}` (one 8-byte gather of pair :math:`c`; a sum of
   non-negative parts: no cancellation, whatever the scores' size), and the histogram
   :math:`h` of :math:`c_k` (``tl.histogram``, integer counts: exact and order-free; marked
   classes count in bin 0, which no :math:`d_j` reads): 32 bins without a mask for the short
   lists, else ``HIST_BINS`` bins, one more sweep per ``HIST_BINS`` keys beyond the first.
4. **Targets**: :math:`d_j = \#\{k \notin T : c_k > r_j\} = \sum_b h_b - \sum_{b \le r_j} h_b`
   (prefix sums of :math:`h` over bins :math:`0..K`, in place), then :math:`-m\,d_j / C` is
   stored at :math:`t_j` (duplicates store the same value) and the byte map is cleared.

An infinite score gives torch's value: an active pair with :math:`x_k = +\infty` or
:math:`S_j = -\infty` makes the term (and the loss) :math:`+\infty` (the recurrence's step after
a :math:`-\infty` key is :math:`+\infty`); a term with :math:`c_k = 0` is never formed, so
:math:`0 \cdot \infty` never arises; NaN scores are never active. (The short rows form
:math:`x_k - q_j` with NaN in place of a :math:`-\infty` score or a :math:`+\infty` key: no
:math:`\infty - \infty`, which the interpreter would flag.) Math in
float32: a row's terms are summed per lane and then across lanes, a split row's partial sums
in a fixed order (deterministic: no atomics in any floating-point sum).

**Cost** per long row: the sweep is :math:`O(C \log K)`; steps 1, 2 and 4 are :math:`O(K^2)`
pair compares (cheap for the usual :math:`K \ll \sqrt{C}`; rows with hundreds of positives pay
:math:`K^2 / C` compares per class), plus one sweep per ``HIST_BINS`` keys beyond the first
when :math:`K \ge` ``FAST_KEYS``. Short rows: :math:`O(K C)`. Memory traffic: read :math:`C`
scores and the list up to its first -1, write :math:`C` gradient entries and one float32 loss
(split rows: plus one float32 per split). The scratch of a slot: the (key, scan) pairs, 8 bytes
each for :math:`\max(W, 32) + 1`; :math:`(r_j, m_j)`, 8 bytes per entry; the histogram, 4
bytes per bin for :math:`W + 1` bins rounded up to ``HIST_BINS``; the byte map, one per class:
about 21 bytes per class. Whole rows: at most ``MAX_PROGRAMS`` (2048) programs and about
``SCRATCH_BYTES`` (128 MiB) of slots (at least ``MIN_PROGRAMS``): 89 MB at ``4096 x 2048``
(was 210 MB); split rows: one slot per row, within ``SCRATCH_BYTES`` (else whole rows).

**Label check** (``check=True``), in the launch that reads the whole target rows (the short
kernel; the whole-rows kernel, in a pass of its own after its rows, so that nothing of it is
live during the sweeps; or *prepare*): each program counts, over its rows' whole target rows
(past the first -1 too), the entries outside :math:`[-1, C)` and those that are neither 0 nor 1
(one unsigned compare each); torch adds the slots and adds 1 when no entry anywhere is outside
:math:`\{0, 1\}` while :math:`C > 2` (a 0/1 mask, not an index list): the spec's
``check_labels``, as a 0-d int64 count on the device (no host read).

**sm_90 figures** (``benchmarks/sm90_compile_check.py --cover all``, Triton 3.9, ptxas 12.9,
2026-12-02; one warp per program, 8 classes per thread). 108 variants of the five kernels at
``4096 x 2048``, ``4096 x 20``, ``1 x 10^6``, ``4 x 8192`` and ``9 x 1001``: 25-89 registers,
no spills. At ``4096 x 2048`` with 16 positives (whole rows, 2048 programs): float32 with
gradient 53.4 instructions per element (memory-bound: 100% of 4.8 TB/s at best; 68.8 and 82%
with the label check), forward only 44.8 (63%); bfloat16 / float16 with gradient 50.6 / 50.1
(56-57%: issue time 1.8x the memory time; 66.6 and 43% with the label check), forward only
45.9 (31%). Of the ~50: the sweep ~38 (search 18: five probes, four of them shuffles; loss term
9; histogram 3; gradient 2; scores and marks 4; loop 2), the per-row work (list, ranks, scan,
targets) ~13. ``1 x 10^6``: 1954 splits of 512 classes, 55.1 (float32, memory-bound) and 52.3
(bfloat16, 53%) per element, the prepare and finish launches negligible per element.
``4096 x 20`` (16 of 20 classes listed: 16 pairs per class): 512 programs of 8 rows, about
1200 instructions per element as the check counts them (it weights LLVM's 4x-unrolled marking
pass per source iteration), about 650 by the loop bodies.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from marginloss.backends._common import grad_scale, reduce_rows
from marginloss.losses._spec import Call, Result
from marginloss.losses.multilabel_margin_loss import SPEC

SHORT_C = 128  # rows of at most this many classes: the packed kernel (direct pairs)
SHORT_TILE = 256  # scores per packed tile (rows x classes, 8 per thread: one warp)
MAX_BLOCK_C = 256  # classes per sweep chunk (8 per thread: one warp per program)
LIST_TILE = 16  # list entries per tile (list scan, ranks, targets)
PAIR_TILE = 16  # list entries compared with a list tile at once (ranks)
FAST_KEYS = 32  # rows of fewer keys: an unrolled search over 32 padded keys, 32 bins
HIST_BINS = 64  # the other rows: histogram bins per sweep (one more sweep per HIST_BINS keys)
MAX_PROGRAMS = 2048  # programs of a launch whose programs loop over rows
MIN_PROGRAMS = 264  # ... at least this many when there are as many rows
SCRATCH_BYTES = 1 << 27  # the scratch a launch aims to stay under (programs x slot)
SPLIT_PROGRAMS = 2048  # fewer rows than this: rows are split up to about this many programs
SPLIT_C = 512  # the fewest classes of a split


class Plan(NamedTuple):
    """How :func:`launch` cuts an ``(N, C)`` problem (see :func:`plan`)."""

    short: bool  # the packed kernel (C <= SHORT_C); else the sweep
    programs: int  # grid x: packed tiles; or rows per launch (split), or looping programs
    splits: int  # grid y: programs per row (1: a program takes whole rows)
    split_c: int  # classes per split (a multiple of block_c)
    block_c: int  # classes per chunk (packed: the padded row)
    rows: int  # rows per packed tile (1 for the sweep)
    num_warps: int


def _slot_bytes(n_classes: int, width: int) -> int:
    """Scratch of one slot: the (key, scan) pairs, the per-entry ranks and multiplicities, the
    histogram and the byte map."""
    pairs = 8 * (max(width, FAST_KEYS) + 1)
    return pairs + 8 * width + 4 * _hist_size(width) + n_classes


def _hist_size(width: int) -> int:
    """Bins of a slot's histogram: counts 0 .. W in whole passes, and the short lists' bins."""
    return max(triton.cdiv(width + 1, HIST_BINS) * HIST_BINS, FAST_KEYS)


def plan(n_rows: int, n_classes: int, width: int | None = None) -> Plan:
    """Kernel, grid and block sizes for an ``(n_rows, n_classes)`` input whose target rows
    have ``width`` entries (shapes only, so the launch is the same on real and fake
    tensors)."""
    n, c = max(int(n_rows), 1), max(int(n_classes), 1)  # int(): specialise symbolic shapes
    w = c if width is None else max(int(width), 1)
    if c <= SHORT_C:
        block_c = triton.next_power_of_2(c)
        rows = max(1, SHORT_TILE // block_c)
        return Plan(True, triton.cdiv(n, rows), 1, block_c, block_c, rows, 1)
    block_c = min(triton.next_power_of_2(c), MAX_BLOCK_C)
    splits = min(triton.cdiv(SPLIT_PROGRAMS, n), triton.cdiv(c, max(SPLIT_C, block_c)))
    if n < SPLIT_PROGRAMS and splits > 1 and n * _slot_bytes(c, w) <= SCRATCH_BYTES:
        split_c = triton.cdiv(triton.cdiv(c, splits), block_c) * block_c
        return Plan(False, n, triton.cdiv(c, split_c), split_c, block_c, 1, 1)
    budget = max(MIN_PROGRAMS, SCRATCH_BYTES // _slot_bytes(c, w))
    return Plan(False, min(n, MAX_PROGRAMS, budget), 1, c, block_c, 1, 1)


# ----------------------------------------------------------------------------------------------
# short rows: a tile of whole rows per program, every (entry, class) pair formed


@triton.jit
def _entry(t_rows, j, n_list, n_classes):
    """Entry ``j`` of each row as an int32 class, -1 past the list or outside ``[0, C)``."""
    tj = tl.load(t_rows + j, mask=j < n_list, other=-1)
    return tl.where((tj >= 0) & (tj < n_classes), tj, -1).to(tl.int32)


@triton.jit(do_not_specialize=["unit"])
def _multilabel_margin_short_kernel(
    x_ptr,  # (N, C) scores, unit class stride
    t_ptr,  # (N, W) class indices padded with -1, unit class stride, W <= C
    rows_ptr,  # (N,) float32 row losses
    grad_ptr,  # (N, C) contiguous gradient (NEED_GRAD; else None)
    bad_ptr,  # (programs, 2) int32 label counts (CHECK; else None)
    stride_xn,
    stride_tn,
    unit,  # 1, the class stride, as a value the compiler does not know (see below)
    n_rows,
    n_classes,
    width,
    grad_scale,
    NEED_GRAD: tl.constexpr,
    CHECK: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Rows ``ROWS pid, ..., ROWS pid + ROWS - 1``, whole (``C <= BLOCK_C``).

    The tile is classes x rows with the rows across lanes: a thread holds a few classes of one
    row, so each entry's per-row values are one load per thread and a row's sums stay within a
    few lanes. (Were the classes known to be contiguous, the compiler would lay them across
    lanes for wide loads, and every lane would load every row's values: hence ``unit``.)"""
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    rows = rows.to(tl.int64)
    cls = tl.arange(0, BLOCK_C)
    offs = cls * unit
    in_row = (cls < n_classes)[:, None] & row_ok[None, :]
    x_rows = x_ptr + rows * stride_xn
    t_rows = t_ptr + rows * stride_tn
    x = tl.load(x_rows[None, :] + offs[:, None], mask=in_row, other=0.0).to(tl.float32)
    # the whole target rows (W <= C <= BLOCK_C): the lists end at their first negative entry
    in_t = (cls < width)[:, None] & row_ok[None, :]
    t = tl.load(t_rows[None, :] + offs[:, None], mask=in_t, other=0)
    n_list = tl.min(tl.where(t < 0, cls[:, None], width), axis=0)
    n_list = tl.where(row_ok, n_list, 0)
    k_max = tl.max(n_list, axis=0)
    if CHECK:  # (t is 0 outside the rows)
        zero = tl.zeros([BLOCK_C, ROWS], tl.int32)
        bad, not01 = _count_labels(t, n_classes, zero, zero)
        tl.store(bad_ptr + 2 * pid, tl.sum(tl.sum(bad, axis=0), axis=0))
        tl.store(bad_ptr + 2 * pid + 1, tl.sum(tl.sum(not01, axis=0), axis=0))

    # the target sets, with multiplicities (entries outside [0, C) match no class: skipped)
    mult = tl.zeros([BLOCK_C, ROWS], tl.int32)
    for j in range(0, k_max):
        tj = _entry(t_rows, j, n_list, n_classes)
        mult += (cls[:, None] == tj[None, :]).to(tl.int32)
    # the non-targets' scores; NaN elsewhere and for -inf (never above a key)
    x = tl.where(in_row & (mult == 0) & (x > -float("inf")), x, float("nan"))

    # every pair: active when x_k > q_j = fl(S_j - 1) (ATen's float32 test (1 - S_j) + x_k > 0)
    acc = tl.zeros([BLOCK_C, ROWS], tl.float32)
    cnt = tl.zeros([BLOCK_C, ROWS], tl.int32)  # c_k at non-targets
    d_t = tl.zeros([BLOCK_C, ROWS], tl.int32)  # d(u) at targets
    for j in range(0, k_max):
        tj = _entry(t_rows, j, n_list, n_classes)
        q = tl.load(x_rows + tj, mask=tj >= 0, other=float("nan")).to(tl.float32) - 1.0
        q = tl.where(q < float("inf"), q, float("nan"))  # +inf or NaN: no pair
        z = x - q[None, :]  # NaN only where x or q is NaN (no inf - inf)
        active = x > q[None, :]
        acc += tl.where(active, z, 0.0)
        a = active.to(tl.int32)
        cnt += a
        # every entry of a class has the same d: keep any
        d_t = tl.where(cls[:, None] == tj[None, :], tl.sum(a, axis=0)[None, :], d_t)
    tl.store(rows_ptr + rows, tl.sum(acc, axis=0) / n_classes.to(tl.float32), mask=row_ok)
    if NEED_GRAD:
        g = tl.where(mult > 0, -mult * d_t, cnt).to(tl.float32) * grad_scale
        tl.store(grad_ptr + rows[None, :] * n_classes + offs[:, None],
                 g.to(grad_ptr.dtype.element_ty), mask=in_row)


# ----------------------------------------------------------------------------------------------
# long rows: sort the keys, then one search per class


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
def _prepare(t_row, x_row, n_list, n_classes, pairs, ent, mark,
             LIST_TILE: tl.constexpr, PAIR_TILE: tl.constexpr, FAST_KEYS: tl.constexpr):
    """Sort the row's keys into ``pairs`` (key p at ``pairs[2 p + 2]``, padded with +inf up to
    ``FAST_KEYS``), their scan ``A_p`` at ``pairs[2 p + 3]``; ``(r_j, m_j)`` per entry into
    ``ent``; -1 at the listed classes in ``mark``."""
    keys = pairs + 2
    for i0 in range(0, n_list, LIST_TILE):
        oi = i0 + tl.arange(0, LIST_TILE)
        ci, ui, qi = _entries(t_row, x_row, oi, n_list, n_classes)
        r = tl.zeros([LIST_TILE], tl.int32)  # #{i : q_i < q_j}
        tied = tl.zeros([LIST_TILE], tl.int32)  # #{i < j : q_i = q_j}
        m = tl.zeros([LIST_TILE], tl.int32)  # #{i : t_i = t_j}
        for j0 in range(0, n_list, PAIR_TILE):
            oj = j0 + tl.arange(0, PAIR_TILE)
            cj, uj, qj = _entries(t_row, x_row, oj, n_list, n_classes)
            inside = (oj < n_list)[None, :]
            below = (qj[None, :] < qi[:, None]) & inside
            tie = (qj[None, :] == qi[:, None]) & (oj[None, :] < oi[:, None]) & inside
            same = (cj[None, :] == ci[:, None]) & uj[None, :]
            # one sum for the three counts (at most PAIR_TILE each: 10 bits apiece)
            packed = tl.sum(below.to(tl.int32) + (tie.to(tl.int32) << 10)
                            + (same.to(tl.int32) << 20), axis=1)
            r += packed & 1023
            tied += (packed >> 10) & 1023
            m += packed >> 20
        rank = r + tied
        inside_i = oi < n_list
        tl.store(keys + 2 * rank, qi, mask=inside_i)
        tl.store(ent + 2 * oi, r, mask=inside_i)
        tl.store(ent + 2 * oi + 1, m, mask=inside_i)
        tl.store(mark + ci, tl.full([LIST_TILE], -1, tl.int8), mask=ui)
    pad = tl.arange(0, FAST_KEYS)
    tl.store(keys + 2 * pad, tl.full([FAST_KEYS], float("inf"), tl.float32), mask=pad >= n_list)
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


@triton.jit
def _scores(x_row, mark, offs, hi):
    """Scores ``offs`` in float32, NaN at the listed classes and past ``hi`` (a NaN score is
    never above a key: no pair, no count)."""
    in_row = offs < hi
    x = tl.load(x_row + offs, mask=in_row, other=float("nan")).to(tl.float32)
    listed = tl.load(mark + offs, mask=in_row, other=0).to(tl.int32)  # -1 or 0
    nan_bits = listed & 0x7FC00000
    return (x.to(tl.int32, bitcast=True) | nan_bits).to(tl.float32, bitcast=True)


@triton.jit
def _low(v):
    """The first float32 of an 8-byte pair (its low half)."""
    return v.to(tl.int32).to(tl.float32, bitcast=True)


@triton.jit
def _high(v):
    """The second float32 of an 8-byte pair."""
    return (v >> 32).to(tl.int32).to(tl.float32, bitcast=True)


@triton.jit
def _count_below(pairs64, x, n_keys):
    """``#{i < n_keys : q_(i) < x}`` for each ``x`` (the key ``q_(i)`` is the low half of
    ``pairs64[i + 1]``): a branch-free binary search over the ``n_keys + 1`` possible answers,
    ``ceil(log2(n_keys + 1))`` probes, the first one shared by every ``x`` (a scalar load);
    never reads past ``n_keys``."""
    n = n_keys + 1  # the answer lies in [base, base + n)
    half = n // 2
    first = _low(tl.load(pairs64 + half, mask=half > 0, other=0x7F800000))
    base = tl.where(first < x, half, 0)
    n -= half
    while n > 1:
        half = n // 2
        probe = _low(tl.load(pairs64 + base + half))  # key base + half - 1 < x: move up
        base = tl.where(probe < x, base + half, base)
        n -= half
    return base


@triton.jit
def _term(pairs64, x, c):
    """``sum_{i < c} (x - q_(i)) = c (x - q_(c-1)) + A_{c-1}`` (0 when ``c = 0``: pair 0 is
    ``(0, 0)``): one 8-byte gather of the pair ``(q_(c-1), A_{c-1})``."""
    top = tl.load(pairs64 + c)
    return c.to(tl.float32) * (tl.where(c > 0, x, 0.0) - _low(top)) + _high(top)


@triton.jit
def _put_hist(hist_s, bins, h, ATOMIC: tl.constexpr):
    if ATOMIC:  # splits of one row add their counts (integers: exact in any order)
        tl.atomic_add(hist_s + bins, h, mask=h != 0)
    else:
        tl.store(hist_s + bins, h)


@triton.jit
def _sweep_fast(x_row, g_row, pairs64, mark, hist_s, lo, hi, grad_scale,
                NEED_GRAD: tl.constexpr, ATOMIC: tl.constexpr, BLOCK_C: tl.constexpr,
                FAST_KEYS: tl.constexpr, FAST_PROBES: tl.constexpr):
    """:func:`_sweep` for rows of fewer than ``FAST_KEYS`` keys (padded with +inf up to
    ``FAST_KEYS``): ``FAST_PROBES = log2(FAST_KEYS)`` unrolled probes, the first one shared,
    answers in ``[0, FAST_KEYS)``, one histogram of ``FAST_KEYS`` bins (no mask: every answer
    is a bin)."""
    lane = tl.arange(0, BLOCK_C)
    acc = tl.zeros([BLOCK_C], tl.float32)
    hist = tl.zeros([FAST_KEYS], tl.int32)
    # the keys in registers, one per lane: a probe is a warp shuffle (tl.gather), where a
    # load from the scratch would take an address computation and a load
    keys = _low(tl.load(pairs64 + 1 + tl.arange(0, FAST_KEYS)))
    middle = _low(tl.load(pairs64 + FAST_KEYS // 2))  # key FAST_KEYS / 2 - 1
    for c0 in range(lo, hi, BLOCK_C):
        offs = c0 + lane
        x = _scores(x_row, mark, offs, hi)
        c = tl.where(middle < x, FAST_KEYS // 2, 0)
        for i in tl.static_range(1, FAST_PROBES):  # steps FAST_KEYS / 4, ..., 1
            probe = tl.gather(keys, c + ((FAST_KEYS >> (i + 1)) - 1), 0)
            c = tl.where(probe < x, c + (FAST_KEYS >> (i + 1)), c)
        acc += _term(pairs64, x, c)
        if NEED_GRAD:
            tl.store(g_row + offs, (c.to(tl.float32) * grad_scale).to(g_row.dtype.element_ty),
                     mask=offs < hi)
            hist += tl.histogram(c, FAST_KEYS)
    if NEED_GRAD:
        _put_hist(hist_s, tl.arange(0, FAST_KEYS), hist, ATOMIC)
    return tl.sum(acc, axis=0)


@triton.jit
def _sweep_general(x_row, g_row, pairs64, mark, hist_s, n_list, lo, hi, grad_scale,
                   NEED_GRAD: tl.constexpr, ATOMIC: tl.constexpr, BLOCK_C: tl.constexpr,
                   HIST_BINS: tl.constexpr):
    """:func:`_sweep` for any number of keys: a search of ``ceil(log2(n_list + 1))`` probes,
    histograms of ``HIST_BINS`` bins, one more sweep per ``HIST_BINS`` keys beyond the
    first."""
    lane = tl.arange(0, BLOCK_C)
    bins = tl.arange(0, HIST_BINS)
    acc = tl.zeros([BLOCK_C], tl.float32)
    hist = tl.zeros([HIST_BINS], tl.int32)
    for c0 in range(lo, hi, BLOCK_C):
        offs = c0 + lane
        x = _scores(x_row, mark, offs, hi)
        c = _count_below(pairs64, x, n_list)
        acc += _term(pairs64, x, c)
        if NEED_GRAD:
            tl.store(g_row + offs, (c.to(tl.float32) * grad_scale).to(g_row.dtype.element_ty),
                     mask=offs < hi)
            hist += tl.histogram(c, HIST_BINS, mask=c < HIST_BINS)
    if NEED_GRAD:
        _put_hist(hist_s, bins, hist, ATOMIC)
        # bins HIST_BINS and up (rows with that many keys): one more sweep per HIST_BINS
        for b0 in range(HIST_BINS, n_list + 1, HIST_BINS):
            extra = tl.zeros([HIST_BINS], tl.int32)
            for c0 in range(lo, hi, BLOCK_C):
                x = _scores(x_row, mark, c0 + lane, hi)
                c = _count_below(pairs64, x, n_list) - b0
                extra += tl.histogram(c, HIST_BINS, mask=(c >= 0) & (c < HIST_BINS))
            _put_hist(hist_s, b0 + bins, extra, ATOMIC)
    return tl.sum(acc, axis=0)


@triton.jit
def _sweep(x_row, g_row, pairs64, mark, hist_s, n_list, lo, hi, grad_scale,
           NEED_GRAD: tl.constexpr, ATOMIC: tl.constexpr, BLOCK_C: tl.constexpr,
           FAST_KEYS: tl.constexpr, FAST_PROBES: tl.constexpr, HIST_BINS: tl.constexpr):
    """Classes ``[lo, hi)`` of a row: ``c_k`` by binary search, the gradient ``c_k / C``
    (0 at the listed classes: the targets' values come later), the histogram of ``c_k``
    (stored into ``hist_s``, or added with ``ATOMIC``); returns the sum of the loss terms."""
    if n_list < FAST_KEYS:
        loss = _sweep_fast(x_row, g_row, pairs64, mark, hist_s, lo, hi, grad_scale, NEED_GRAD,
                           ATOMIC, BLOCK_C, FAST_KEYS, FAST_PROBES)
    else:
        loss = _sweep_general(x_row, g_row, pairs64, mark, hist_s, n_list, lo, hi, grad_scale,
                              NEED_GRAD, ATOMIC, BLOCK_C, HIST_BINS)
    return loss


@triton.jit
def _finish(t_row, g_row, ent, hist_s, mark, n_list, n_classes, grad_scale,
            NEED_GRAD: tl.constexpr, LIST_TILE: tl.constexpr, HIST_BINS: tl.constexpr):
    """The targets' gradients, ``-m_j d_j / C`` at ``t_j`` with ``d_j = #{k not in T : c_k >
    r_j}`` (from the prefix sums of the histogram), and the byte map cleared."""
    if NEED_GRAD:
        # inclusive prefix sums of bins 0 .. n_list, in place: #{k : c_k <= b}
        carry = tl.zeros([], tl.int32)
        for b0 in range(0, n_list + 1, HIST_BINS):
            b = b0 + tl.arange(0, HIST_BINS)
            h = tl.load(hist_s + b, mask=b <= n_list, other=0)
            tl.store(hist_s + b, carry + tl.cumsum(h, axis=0), mask=b <= n_list)
            carry += tl.sum(h, axis=0)
        tl.debug_barrier()
    for i0 in range(0, n_list, LIST_TILE):
        oi = i0 + tl.arange(0, LIST_TILE)
        inside = oi < n_list
        t = tl.load(t_row + oi, mask=inside, other=-1)
        usable = inside & (t >= 0) & (t < n_classes)
        ci = tl.where(usable, t, 0).to(tl.int32)
        if NEED_GRAD:
            r = tl.load(ent + 2 * oi, mask=usable, other=0)
            m = tl.load(ent + 2 * oi + 1, mask=usable, other=0)
            d = carry - tl.load(hist_s + r, mask=usable, other=0)
            g = -(m * d).to(tl.float32) * grad_scale
            tl.store(g_row + ci, g.to(g_row.dtype.element_ty), mask=usable)
        tl.store(mark + ci, tl.zeros([LIST_TILE], tl.int8), mask=usable)


@triton.jit
def _check_row(t_row, width, n_classes, BLOCK_C: tl.constexpr):
    """The label check's counts over a whole target row (past the first -1 too)."""
    bad = tl.zeros([BLOCK_C], tl.int32)
    not01 = tl.zeros([BLOCK_C], tl.int32)
    for c0 in range(0, width, BLOCK_C):
        offs = c0 + tl.arange(0, BLOCK_C)
        bad, not01 = _count_labels(tl.load(t_row + offs, mask=offs < width, other=0), n_classes,
                                   bad, not01)
    return tl.sum(bad, axis=0), tl.sum(not01, axis=0)


@triton.jit
def _count_labels(t, n_classes, bad, not01):
    """Add the entries of ``t`` outside ``[-1, C)`` to ``bad`` and those outside ``{0, 1}`` to
    ``not01`` (one unsigned compare each; 0, the padding, is neither)."""
    t = t.to(tl.int64)
    bad += ((t + 1).to(tl.uint64, bitcast=True) > n_classes).to(tl.int32)
    not01 += (t.to(tl.uint64, bitcast=True) > 1).to(tl.int32)
    return bad, not01


@triton.jit
def _multilabel_margin_loss_kernel(
    # pointers
    x_ptr,  # (N, C) scores, fp16 / bf16 / fp32, unit class stride
    t_ptr,  # (N, W) class indices padded with -1, int32 / int64, unit class stride, W <= C
    rows_ptr,  # (N,) float32 row losses
    grad_ptr,  # (N, C) d loss / d x in x's dtype, contiguous (NEED_GRAD; else None)
    bad_ptr,  # (programs, 2) int32: entries outside [-1, C), entries not 0/1 (CHECK; else None)
    pairs_ptr,  # (slots, P + 1) pairs of float32 scratch, P = max(W, FAST_KEYS): (0, 0), then
    #             (q_(p), A_p) (pairs64_ptr: the same memory as int64, one pair each)
    pairs64_ptr,
    ents_ptr,  # (slots, 2 W) int32 scratch: (r_j, m_j) per list entry
    hist_ptr,  # (slots, H) int32 scratch: the histogram, then its prefix sums
    mark_ptr,  # (slots, C) int8 scratch, zeroed by torch: -1 at the listed classes
    # strides
    stride_xn,
    stride_tn,
    # sizes / scalars
    n_rows,
    n_classes,
    width,  # W: entries per target row (C, or fewer: rows without their padding columns)
    n_pairs,  # P + 1: pairs per slot
    hist_stride,  # H
    n_programs,
    grad_scale,  # 1/C, times 1/N for "mean"
    # meta-parameters
    NEED_GRAD: tl.constexpr,
    CHECK: tl.constexpr,
    BLOCK_C: tl.constexpr,
    LIST_TILE: tl.constexpr,
    PAIR_TILE: tl.constexpr,
    FAST_KEYS: tl.constexpr,
    FAST_PROBES: tl.constexpr,
    HIST_BINS: tl.constexpr,
):
    """Whole rows: program p takes rows p, p + n_programs, ... with its own scratch slot."""
    pid = tl.program_id(0)
    pairs = pairs_ptr + pid.to(tl.int64) * (2 * n_pairs)
    pairs64 = pairs64_ptr + pid.to(tl.int64) * n_pairs
    tl.store(pairs + tl.arange(0, 2), tl.zeros([2], tl.float32))  # pair 0: c = 0 reads it
    ent = ents_ptr + pid.to(tl.int64) * (2 * width)
    hist_s = hist_ptr + pid.to(tl.int64) * hist_stride
    mark = mark_ptr + pid.to(tl.int64) * n_classes
    for row in range(pid.to(tl.int64), n_rows, n_programs):  # int64: row * stride may pass 2^31
        x_row = x_ptr + row * stride_xn
        t_row = t_ptr + row * stride_tn
        g_row = grad_ptr + row * n_classes if NEED_GRAD else grad_ptr
        tl.debug_barrier()  # the previous row's reads of the scratch are done
        n_list = _list_length(t_row, width, LIST_TILE)
        _prepare(t_row, x_row, n_list, n_classes, pairs, ent, mark, LIST_TILE, PAIR_TILE,
                 FAST_KEYS)
        loss = _sweep(x_row, g_row, pairs64, mark, hist_s, n_list, 0, n_classes, grad_scale,
                      NEED_GRAD, False, BLOCK_C, FAST_KEYS, FAST_PROBES, HIST_BINS)
        tl.store(rows_ptr + row, loss / n_classes.to(tl.float32))
        tl.debug_barrier()  # the sweep's stores (0 at the targets, the histogram) are done
        _finish(t_row, g_row, ent, hist_s, mark, n_list, n_classes, grad_scale, NEED_GRAD,
                LIST_TILE, HIST_BINS)
    if CHECK:  # a pass of its own: nothing of it is live during the sweeps
        bad = tl.zeros([], tl.int32)
        not01 = tl.zeros([], tl.int32)
        for row in range(pid.to(tl.int64), n_rows, n_programs):
            row_bad, row_not01 = _check_row(t_ptr + row * stride_tn, width, n_classes, BLOCK_C)
            bad += row_bad
            not01 += row_not01
        tl.store(bad_ptr + 2 * pid, bad)
        tl.store(bad_ptr + 2 * pid + 1, not01)


# ----------------------------------------------------------------------------------------------
# split rows: prepare (a program per row), sweep (rows x splits), finish (a program per row)


@triton.jit
def _multilabel_margin_prepare_kernel(
    x_ptr, t_ptr, bad_ptr, pairs_ptr, ents_ptr, mark_ptr, nlist_ptr,
    stride_xn, stride_tn, n_classes, width, n_pairs,
    CHECK: tl.constexpr, BLOCK_C: tl.constexpr, LIST_TILE: tl.constexpr,
    PAIR_TILE: tl.constexpr, FAST_KEYS: tl.constexpr,
):
    """Row ``program_id(0)``'s list length, sorted keys and scan, ranks and byte map, into its
    own slot (and its label counts)."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xn
    t_row = t_ptr + row * stride_tn
    pairs = pairs_ptr + row * (2 * n_pairs)
    tl.store(pairs + tl.arange(0, 2), tl.zeros([2], tl.float32))
    n_list = _list_length(t_row, width, LIST_TILE)
    tl.store(nlist_ptr + row, n_list)
    _prepare(t_row, x_row, n_list, n_classes, pairs, ents_ptr + row * (2 * width),
             mark_ptr + row * n_classes, LIST_TILE, PAIR_TILE, FAST_KEYS)
    if CHECK:
        bad, not01 = _check_row(t_row, width, n_classes, BLOCK_C)
        tl.store(bad_ptr + 2 * row, bad)
        tl.store(bad_ptr + 2 * row + 1, not01)


@triton.jit
def _multilabel_margin_split_kernel(
    x_ptr, grad_ptr, part_ptr, pairs64_ptr, hist_ptr, mark_ptr, nlist_ptr,
    stride_xn, n_classes, split_c, n_pairs, hist_stride, grad_scale,
    NEED_GRAD: tl.constexpr, BLOCK_C: tl.constexpr, FAST_KEYS: tl.constexpr,
    FAST_PROBES: tl.constexpr, HIST_BINS: tl.constexpr,
):
    """Split ``program_id(1)`` of row ``program_id(0)``: its classes' gradients, its partial
    loss (into ``part``) and its counts added to the row's histogram."""
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    lo = split * split_c
    hi = tl.minimum(lo + split_c, n_classes)
    g_row = grad_ptr + row * n_classes if NEED_GRAD else grad_ptr
    loss = _sweep(x_ptr + row * stride_xn, g_row, pairs64_ptr + row * n_pairs,
                  mark_ptr + row * n_classes, hist_ptr + row * hist_stride,
                  tl.load(nlist_ptr + row), lo, hi, grad_scale, NEED_GRAD, True, BLOCK_C,
                  FAST_KEYS, FAST_PROBES, HIST_BINS)
    tl.store(part_ptr + row * tl.num_programs(1) + split, loss)


@triton.jit
def _multilabel_margin_finish_kernel(
    t_ptr, rows_ptr, grad_ptr, part_ptr, ents_ptr, hist_ptr, mark_ptr, nlist_ptr,
    stride_tn, n_classes, width, n_splits, hist_stride, grad_scale,
    NEED_GRAD: tl.constexpr, LIST_TILE: tl.constexpr, HIST_BINS: tl.constexpr,
    SPLIT_TILE: tl.constexpr,
):
    """Row ``program_id(0)``: the loss (its splits' partial sums added in a fixed order: a
    reduction over one tile of them) and the targets' gradients."""
    row = tl.program_id(0).to(tl.int64)
    acc = tl.zeros([SPLIT_TILE], tl.float32)
    for s0 in range(0, n_splits, SPLIT_TILE):
        s = s0 + tl.arange(0, SPLIT_TILE)
        acc += tl.load(part_ptr + row * n_splits + s, mask=s < n_splits, other=0.0)
    tl.store(rows_ptr + row, tl.sum(acc, axis=0) / n_classes.to(tl.float32))
    g_row = grad_ptr + row * n_classes if NEED_GRAD else grad_ptr
    _finish(t_ptr + row * stride_tn, g_row, ents_ptr + row * (2 * width),
            hist_ptr + row * hist_stride, mark_ptr + row * n_classes, tl.load(nlist_ptr + row),
            n_classes, grad_scale, NEED_GRAD, LIST_TILE, HIST_BINS)


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
    width = target.shape[1]
    dev = input.device
    # (1) the layout the kernels read: unit class stride
    x = input if input.stride(1) == 1 else input.contiguous()
    t = target if target.stride(1) == 1 else target.contiguous()
    # (2) allocate
    cut = plan(n_rows, n_classes, width)
    run = n_rows > 0 and n_classes > 0
    grad = torch.empty((n_rows, n_classes), dtype=input.dtype, device=dev) if need_grad else None
    rows = torch.empty(n_rows, dtype=torch.float32, device=dev)
    checked = cut.programs if cut.splits == 1 else n_rows  # who counts: a program or a row
    bad = torch.zeros((checked, 2), dtype=torch.int32, device=dev) if check else None
    scale = grad_scale(SPEC, call) / n_classes
    # (3) launch
    if run and cut.short:
        torch.library.wrap_triton(_multilabel_margin_short_kernel)[(cut.programs,)](
            x, t, rows, grad, bad, x.stride(0), t.stride(0), 1, n_rows, n_classes, width, scale,
            NEED_GRAD=need_grad, CHECK=check, ROWS=cut.rows, BLOCK_C=cut.block_c,
            num_warps=cut.num_warps,
        )
    elif run:
        slots = cut.programs
        n_pairs = max(width, FAST_KEYS) + 1
        hist_stride = _hist_size(width)
        pairs64 = torch.empty((slots, n_pairs), dtype=torch.int64, device=dev)
        pairs = pairs64.view(torch.float32)
        ents = torch.empty((slots, 2 * max(width, 1)), dtype=torch.int32, device=dev)
        hist = (torch.zeros if cut.splits > 1 else torch.empty)(
            (slots, hist_stride), dtype=torch.int32, device=dev)
        mark = torch.zeros((slots, n_classes), dtype=torch.int8, device=dev)
        common = dict(LIST_TILE=LIST_TILE, num_warps=cut.num_warps)
        fast = dict(FAST_KEYS=FAST_KEYS, FAST_PROBES=FAST_KEYS.bit_length() - 1)
        if cut.splits == 1:
            torch.library.wrap_triton(_multilabel_margin_loss_kernel)[(slots,)](
                x, t, rows, grad, bad, pairs, pairs64, ents, hist, mark,
                x.stride(0), t.stride(0), n_rows, n_classes, width, n_pairs, hist_stride,
                slots, scale, NEED_GRAD=need_grad, CHECK=check, BLOCK_C=cut.block_c,
                PAIR_TILE=PAIR_TILE, HIST_BINS=HIST_BINS, **fast, **common,
            )
        else:
            # zeroed: a sweep launched without its prepare launch (the sm_90 check's trip
            # counts run one program of each) reads empty lists, never past its scratch
            nlist = torch.zeros(n_rows, dtype=torch.int32, device=dev)
            part = torch.empty((n_rows, cut.splits), dtype=torch.float32, device=dev)
            torch.library.wrap_triton(_multilabel_margin_prepare_kernel)[(n_rows,)](
                x, t, bad, pairs, ents, mark, nlist, x.stride(0), t.stride(0), n_classes,
                width, n_pairs, CHECK=check, BLOCK_C=cut.block_c, PAIR_TILE=PAIR_TILE,
                FAST_KEYS=FAST_KEYS, **common,
            )
            torch.library.wrap_triton(_multilabel_margin_split_kernel)[(n_rows, cut.splits)](
                x, grad, part, pairs64, hist, mark, nlist, x.stride(0), n_classes, cut.split_c,
                n_pairs, hist_stride, scale, NEED_GRAD=need_grad, BLOCK_C=cut.block_c,
                HIST_BINS=HIST_BINS, num_warps=cut.num_warps, **fast,
            )
            torch.library.wrap_triton(_multilabel_margin_finish_kernel)[(n_rows,)](
                t, rows, grad, part, ents, hist, mark, nlist, t.stride(0), n_classes, width,
                cut.splits, hist_stride, scale, NEED_GRAD=need_grad, HIST_BINS=HIST_BINS,
                SPLIT_TILE=min(triton.next_power_of_2(cut.splits), 1024), **common,
            )
    bad_labels = None
    if check:
        counts = bad.sum(dim=0, dtype=torch.int64)
        bad_labels = counts[0]
        if n_rows > 0 and n_classes > 2 and width == n_classes:  # a 0/1 mask
            bad_labels = bad_labels + (counts[1] == 0).to(torch.int64)
    return Result(reduce_rows(rows, call.reduction, SPEC.out_dtype(call)), (grad,), bad_labels)
