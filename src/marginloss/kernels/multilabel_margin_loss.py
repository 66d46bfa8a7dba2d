r"""``multilabel_margin_loss``: the multi-label hinge over -1-padded index lists, loss + gradient.

Row :math:`n` lists its target classes :math:`t_1, \dots, t_K` left to right up to the first
negative entry (duplicates allowed: a class listed twice counts twice in the sum, once in the
target set :math:`T`). With :math:`S_j = x_{t_j}` and :math:`z_{jk} = 1 - S_j + x_k`:

.. math::
    \ell_n = \frac{1}{C} \sum_{j=1}^{K} \sum_{k \notin T} [z_{jk}]_+ ,

and, writing :math:`c_k = \#\{j : z_{jk} > 0\}` (the active pairs of a non-target class) and
:math:`d_j = \#\{k \notin T : z_{jk} > 0\}` (those of a target position),

.. math::
    \frac{\partial \ell_n}{\partial x_k} = \frac{c_k}{C} \;(k \notin T), \qquad
    \frac{\partial \ell_n}{\partial x_u} = -\frac{1}{C} \sum_{j : t_j = u} d_j
    = -\frac{m_u\, d(u)}{C} \;(u \in T),

where :math:`m_u` is how often :math:`u` is listed (all its positions share one :math:`d`,
since :math:`d_j` depends on :math:`S_j = x_u` only). The subgradient at :math:`z = 0` is 0
(strict ``z > 0``, as torch).

Algorithm: one program per row, three stages.

1. **List length**: :math:`K` = position of the first negative target (one read of the
   target row).
2. **Class sweep** (loss and non-target gradient): for each chunk of ``BLOCK_C`` classes, a
   loop over the target list in tiles of ``BLOCK_K`` builds the ``BLOCK_K x BLOCK_C`` tile of
   :math:`z_{jk}`; reducing it over :math:`j` gives :math:`c_k`, :math:`\sum_j [z_{jk}]_+` and the
   target mask of the chunk; reducing it over :math:`k` gives the first tile's :math:`d_j`. The
   gradient of the chunk's non-target classes is stored (target classes are masked out).
3. **Target gradient**: the first ``BLOCK_K`` targets' gradient is stored from the :math:`d_j`
   of stage 2. Only when :math:`K >` ``BLOCK_K`` does a further sweep per extra target tile
   recount its :math:`d_j`. Each target class is stored once, by its first listed position.

Cost per row: :math:`O(C \cdot K)` compares while :math:`K \le` ``BLOCK_K`` (16; the usual case:
the benchmark's 16 positives), :math:`O(C \cdot K^2 / \text{BLOCK\_K})` beyond, since each extra
target tile re-sweeps the row and each chunk recomputes its target mask from the list. (The
torch backend's sort-based algorithm is :math:`O(C \log K)`; it is the better choice for rows
with hundreds of positives.) Math in float32; row offsets int64.

Memory traffic per row: read :math:`C` scores and :math:`C` target entries (the list part is
re-read from cache), write :math:`C` gradient entries (each exactly once) and one float32 loss;
rows with :math:`K >` ``BLOCK_K`` re-read their scores once per extra target tile (from cache for
moderate :math:`C`). Extra memory: the ``(N,)`` float32 row losses, reduced by torch afterwards
(fixed order, deterministic; no atomics). List entries outside ``[0, C)`` before the first
negative (possible only with ``validate=False``) are skipped, never dereferenced.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from marginloss.backends._common import grad_scale, reduce_rows
from marginloss.losses._spec import Call, Result
from marginloss.losses.multilabel_margin_loss import SPEC

BLOCK_K = 16  # target positions per tile
MAX_BLOCK_C = 256  # classes per chunk (a BLOCK_K x BLOCK_C tile of pairs lives in registers)


@triton.jit
def _list_length(t_row, n_classes, BLOCK_C: tl.constexpr):
    """Position of the first negative entry of the target row (``n_classes`` when none)."""
    first = tl.zeros([BLOCK_C], tl.int32) + n_classes
    for c0 in range(0, n_classes, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        # padding loads 0, not negative: it never ends the list
        t = tl.load(t_row + offs_c, mask=offs_c < n_classes, other=0)
        first = tl.minimum(first, tl.where(t < 0, offs_c, n_classes))
    return tl.min(first, axis=0)


@triton.jit
def _target_classes(t_row, k0, n_list, n_classes, BLOCK_K: tl.constexpr):
    """List positions ``k0 .. k0 + BLOCK_K``: ``(offs, class, usable)``.

    ``usable`` is False for positions past the list and for out-of-range classes (possible
    only with ``validate=False``); their class is -1.
    """
    offs_k = k0 + tl.arange(0, BLOCK_K)
    in_list = offs_k < n_list
    t = tl.load(t_row + offs_k, mask=in_list, other=-1).to(tl.int64)  # -1: not a class
    usable = in_list & (t >= 0) & (t < n_classes)
    return offs_k, tl.where(usable, t, -1), usable


@triton.jit
def _target_tile(t_row, x_row, k0, n_list, n_classes, BLOCK_K: tl.constexpr):
    """:func:`_target_classes` plus the scores ``S_j`` of those classes (0 where unusable)."""
    offs_k, t, usable = _target_classes(t_row, k0, n_list, n_classes, BLOCK_K)
    s = tl.load(x_row + t, mask=usable, other=0.0).to(tl.float32)  # masked by usable later
    return offs_k, t, usable, s


@triton.jit
def _is_target(t_row, offs_c, n_list, n_classes, BLOCK_K: tl.constexpr,
               BLOCK_C: tl.constexpr):
    """Mask of the ``BLOCK_C`` classes ``offs_c`` that appear in the row's target list."""
    hits = tl.zeros([BLOCK_C], tl.int32)
    for k0 in range(0, n_list, BLOCK_K):
        _, t, _ = _target_classes(t_row, k0, n_list, n_classes, BLOCK_K)
        hits += tl.sum((t[:, None] == offs_c[None, :]).to(tl.int32), axis=0)
    return hits > 0


@triton.jit
def _store_target_grads(t_row, g_row, k0, d, n_list, n_classes, grad_scale,
                        BLOCK_K: tl.constexpr):
    """Store ``-m_u d / C`` at the classes of list tile ``k0``, once per class."""
    offs_k, t, usable = _target_classes(t_row, k0, n_list, n_classes, BLOCK_K)
    mult = tl.zeros([BLOCK_K], tl.int32)  # m_u: how often the class is listed
    earlier = tl.zeros([BLOCK_K], tl.int32)  # listed at an earlier position too?
    for i0 in range(0, n_list, BLOCK_K):
        offs_i, ti, usable_i = _target_classes(t_row, i0, n_list, n_classes, BLOCK_K)
        same = (t[:, None] == ti[None, :]) & usable_i[None, :]
        mult += tl.sum(same.to(tl.int32), axis=1)
        earlier += tl.sum((same & (offs_i[None, :] < offs_k[:, None])).to(tl.int32), axis=1)
    g = -(mult.to(tl.float32) * d) * grad_scale
    tl.store(g_row + t, g.to(g_row.dtype.element_ty), mask=usable & (earlier == 0))


@triton.jit
def _multilabel_margin_loss_kernel(
    # pointers
    x_ptr,  # (N, C) scores, fp16 / bf16 / fp32, unit class stride
    target_ptr,  # (N, C) class indices padded with -1, int32 / int64, unit class stride
    row_loss_ptr,  # (N,) float32 per-row loss
    grad_x_ptr,  # (N, C) d loss / d x in x's dtype, contiguous (NEED_GRAD; else None)
    # strides
    stride_xn,
    stride_tn,
    # sizes / scalars
    n_classes,
    grad_scale,  # 1/C, times 1/N for "mean"
    # meta-parameters
    NEED_GRAD: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # One program per row.
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride may exceed 2^31
    x_row = x_ptr + row * stride_xn
    t_row = target_ptr + row * stride_tn
    if NEED_GRAD:
        g_row = grad_x_ptr + row * n_classes

    # 1. The list is the prefix before the first negative entry.
    n_list = _list_length(t_row, n_classes, BLOCK_C)

    # 2. Class sweep: loss, non-target gradient c_k / C, and d_j of the first list tile.
    _, _, usable0, s0 = _target_tile(t_row, x_row, 0, n_list, n_classes, BLOCK_K)
    d0 = tl.zeros([BLOCK_K], tl.float32)
    hinge_sum = tl.zeros([BLOCK_C], tl.float32)
    for c0 in range(0, n_classes, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < n_classes
        # padding classes are not non-targets: left out of every sum below
        x = tl.load(x_row + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        non_target = mask_c & ~_is_target(t_row, offs_c, n_list, n_classes, BLOCK_K,
                                          BLOCK_C)

        # first list tile: z_jk for j < BLOCK_K, reduced both ways
        z = 1.0 - s0[:, None] + x[None, :]
        active = (z > 0) & usable0[:, None]  # strict: the subgradient at z = 0 is 0
        hinge = tl.sum(tl.where(active, z, 0.0), axis=0)
        count = tl.sum(active.to(tl.float32), axis=0)
        d0 += tl.sum((active & non_target[None, :]).to(tl.float32), axis=1)
        # further list tiles (K > BLOCK_K only): reduced over j
        for k0 in range(BLOCK_K, n_list, BLOCK_K):
            _, _, usable, s = _target_tile(t_row, x_row, k0, n_list, n_classes, BLOCK_K)
            z = 1.0 - s[:, None] + x[None, :]
            active = (z > 0) & usable[:, None]
            hinge += tl.sum(tl.where(active, z, 0.0), axis=0)
            count += tl.sum(active.to(tl.float32), axis=0)

        hinge_sum += tl.where(non_target, hinge, 0.0)
        if NEED_GRAD:
            g = count * grad_scale
            tl.store(g_row + offs_c, g.to(grad_x_ptr.dtype.element_ty), mask=non_target)

    tl.store(row_loss_ptr + row, tl.sum(hinge_sum, axis=0) / n_classes)

    # 3. Target gradient -m_u d_j / C: first tile from the sweep, further tiles re-sweep.
    if NEED_GRAD:
        _store_target_grads(t_row, g_row, 0, d0, n_list, n_classes, grad_scale, BLOCK_K)
        for k0 in range(BLOCK_K, n_list, BLOCK_K):
            _, _, usable, s = _target_tile(t_row, x_row, k0, n_list, n_classes, BLOCK_K)
            d = tl.zeros([BLOCK_K], tl.float32)
            for c0 in range(0, n_classes, BLOCK_C):
                offs_c = c0 + tl.arange(0, BLOCK_C)
                mask_c = offs_c < n_classes
                x = tl.load(x_row + offs_c, mask=mask_c, other=0.0).to(tl.float32)
                non_target = mask_c & ~_is_target(t_row, offs_c, n_list, n_classes,
                                                  BLOCK_K, BLOCK_C)
                z = 1.0 - s[:, None] + x[None, :]
                active = (z > 0) & usable[:, None] & non_target[None, :]
                d += tl.sum(active.to(tl.float32), axis=1)
            _store_target_grads(t_row, g_row, k0, d, n_list, n_classes, grad_scale,
                                BLOCK_K)


def launch(call: Call) -> Result:
    """The loss and gradient of ``call`` (the contract of ``SPEC.torch_compute``).

    ``call.input`` and ``call.target`` are ``(N, C)``; the target holds int32 / int64 class
    indices, each row's list ending at its first negative entry. Traceable: shapes decide
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
    grad = torch.empty((n_rows, n_classes), dtype=input.dtype, device=dev) if need_grad else None
    rows = torch.empty(n_rows, dtype=torch.float32, device=dev)
    # (3) launch
    if n_rows and n_classes:
        block_c = min(triton.next_power_of_2(n_classes), MAX_BLOCK_C)
        torch.library.wrap_triton(_multilabel_margin_loss_kernel)[(n_rows,)](
            x, t, rows, grad,
            x.stride(0), t.stride(0),
            n_classes, grad_scale(SPEC, call) / n_classes,
            NEED_GRAD=need_grad, BLOCK_K=BLOCK_K, BLOCK_C=block_c, num_warps=4,
        )
    return Result(reduce_rows(rows, call.reduction, SPEC.out_dtype(call)), (grad,))
