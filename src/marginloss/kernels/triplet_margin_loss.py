r"""``triplet_margin_loss``: the loss and the three gradients in one pass, :math:`p \in \{1, 2\}`.

Row :math:`n`: anchor :math:`a`, positive :math:`p`, negative :math:`q` (:math:`D` features),
:math:`u = a - p + \epsilon`, :math:`v = a - q + \epsilon`, :math:`w = p - q + \epsilon` (float32,
rounded as ATen's ``x1 - x2 + eps``), :math:`\ell_n = [\mu + \lVert u \rVert - d^-]_+` with
:math:`d^- = \lVert v \rVert`, or :math:`\min(\lVert v \rVert, \lVert w \rVert)` with swap. The
gradients (the math of :mod:`marginloss.losses.triplet_margin_loss`), for an active row
(:math:`\mu + d^+ - d^- \ge 0`), with :math:`g(u) = u / \lVert u \rVert_2` or
:math:`\operatorname{sign}(u)`:

.. math::
    \partial_a = g(u) - \omega g(v), \quad \partial_p = -g(u) - (1 - \omega) g(w), \quad
    \partial_q = \omega g(v) + (1 - \omega) g(w),

:math:`\omega` being 1 without swap, else 1 / 0 / 1/2 as :math:`\lVert v \rVert` is smaller /
larger / tied (``torch.minimum`` splits a tie). Other ``p`` run on the torch backend.

**Overflow-free in float32.** A sum of squares would overflow from :math:`|u| \approx 1.8
\cdot 10^{19}` and lose tiny vectors. Each row keeps, per distance, its largest magnitude
:math:`m` and :math:`s = \sum (u_j / m)^2` (online: a chunk with a larger maximum rescales the
running sum by :math:`(m / m')^2`), so :math:`\lVert u \rVert = m \sqrt{s}` with :math:`s \in
[1, D]`, and :math:`g(u) = (u / m) / \sqrt{s}`: every factor is bounded.

**Layout.** A program owns ``BLOCK_N`` rows and sweeps them in chunks of ``BLOCK_D`` features:
pass 1 reduces the three distances, pass 2 writes the gradients. A row of at most ``BLOCK_D``
features is loaded once and both passes use the registers; longer rows are read twice (the
second read mostly from L2). Row offsets are int64, offsets inside a chunk int32.

**Cost.** Per row: read :math:`3 D` inputs, write :math:`3 D` gradients and one float32 loss:
the minimum for a fused loss. The row losses are reduced by torch (fixed order: deterministic,
no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from marginloss.backends._common import grad_scale, reduce_rows
from marginloss.losses._spec import Call, Result
from marginloss.losses.triplet_margin_loss import SPEC

MAX_BLOCK_D = 1024  # the most features one chunk holds
TILE = 2048  # elements of one input per tile (8 per thread at 8 warps)
GRID_X = (1 << 31) - 1  # CUDA's limit on grid x


def plan(n_rows: int, n_cols: int) -> tuple[int, int, int]:
    """``(BLOCK_N, BLOCK_D, num_warps)`` from the shape only."""
    n, d = max(int(n_rows), 1), max(int(n_cols), 1)  # int(): specialise symbolic shapes
    block_d = min(triton.next_power_of_2(d), MAX_BLOCK_D)
    block_n = max(1, min(TILE // block_d, triton.next_power_of_2(n)))
    num_warps = max(1, min(8, block_n * block_d // 256))
    return block_n, block_d, num_warps


@triton.jit
def _diffs(a_ptr, p_ptr, q_ptr, offs, mask, eps, SWAP: tl.constexpr):
    """u, v, w of one chunk (0 outside the mask)."""
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    q = tl.load(q_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.where(mask, (a - p) + eps, 0.0)
    v = tl.where(mask, (a - q) + eps, 0.0)
    if SWAP:
        w = tl.where(mask, (p - q) + eps, 0.0)
    else:
        w = v
    return u, v, w


@triton.jit
def _accumulate(m, s, x, P: tl.constexpr):
    """Adds a chunk ``x`` to a row's norm state: for P = 2 the largest magnitude ``m`` and
    ``s = sum (x / m)^2`` (rescaled when ``m`` grows), for P = 1 the sum ``s`` of ``|x|``."""
    if P == 2:
        m_new = tl.maximum(m, tl.max(tl.abs(x), axis=1))
        safe = tl.where(m_new > 0, m_new, 1.0)
        inv = 1.0 / safe
        ratio = m * inv
        xs = x * inv[:, None]
        s = s * ratio * ratio + tl.sum(xs * xs, axis=1)
        m = m_new
    else:
        s += tl.sum(tl.abs(x), axis=1)
    return m, s


@triton.jit
def _norm(m, s, P: tl.constexpr):
    if P == 2:
        return m * tl.sqrt(s)
    else:
        return s


@triton.jit
def _grad_factors(m, s, coef, P: tl.constexpr):
    """``(f, k)``: g(x) coef = (x f) k (P = 2: f = 1/m, k = coef / sqrt(s), 0 for a zero row)
    or sign(x) k (P = 1: k = coef)."""
    if P == 2:
        f = 1.0 / tl.where(m > 0, m, 1.0)
        k = tl.where(s > 0, coef / tl.sqrt(tl.where(s > 0, s, 1.0)), 0.0)
    else:
        f = tl.full(m.shape, 1.0, tl.float32)
        k = coef
    return f, k


@triton.jit
def _g(x, f, k, P: tl.constexpr):
    if P == 2:
        return (x * f[:, None]) * k[:, None]
    else:
        sign = tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))
        return sign * k[:, None]


@triton.jit
def _store_grads(ga_ptr, gp_ptr, gq_ptr, offs, mask, u, v, w, fu, ku, fv, kv, fw, kw,
                 P: tl.constexpr, SWAP: tl.constexpr, NEED_A: tl.constexpr,
                 NEED_P: tl.constexpr, NEED_Q: tl.constexpr):
    gu = _g(u, fu, ku, P)
    gv = _g(v, fv, kv, P)
    if SWAP:
        gw = _g(w, fw, kw, P)
    else:
        gw = tl.zeros_like(gu)
    if NEED_A:
        tl.store(ga_ptr + offs, (gu - gv).to(ga_ptr.dtype.element_ty), mask=mask)
    if NEED_P:
        tl.store(gp_ptr + offs, (-gu - gw).to(gp_ptr.dtype.element_ty), mask=mask)
    if NEED_Q:
        tl.store(gq_ptr + offs, (gv + gw).to(gq_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _triplet_margin_loss_kernel(
    a_ptr, p_ptr, q_ptr,  # (N, D) anchor, positive, negative: contiguous, one dtype
    ga_ptr, gp_ptr, gq_ptr,  # (N, D) gradients in the inputs' dtype (None where not needed)
    loss_ptr,  # (N,) float32 row losses
    n_rows,
    n_cols,
    margin,
    eps,
    grad_scale,  # 1, or 1/N for "mean"
    P: tl.constexpr,  # 1 or 2
    SWAP: tl.constexpr,
    NEED_A: tl.constexpr,
    NEED_P: tl.constexpr,
    NEED_Q: tl.constexpr,
    ONE_CHUNK: tl.constexpr,  # n_cols <= BLOCK_D: one load, both passes on registers
    GRID_X: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rb = tl.program_id(1).to(tl.int64) * GRID_X + tl.program_id(0)
    rows = rb * BLOCK_N + tl.arange(0, BLOCK_N)  # int64
    mask_n = rows < n_rows
    cols = tl.arange(0, BLOCK_D)
    base = rows[:, None] * n_cols  # int64 row offsets
    zero = tl.zeros([BLOCK_N], dtype=tl.float32)
    mu, su, mv, sv, mw, sw = zero, zero, zero, zero, zero, zero

    # pass 1: the three distances
    if ONE_CHUNK:
        mask = mask_n[:, None] & (cols < n_cols)[None, :]
        offs = base + cols[None, :]
        u, v, w = _diffs(a_ptr, p_ptr, q_ptr, offs, mask, eps, SWAP)
        mu, su = _accumulate(mu, su, u, P)
        mv, sv = _accumulate(mv, sv, v, P)
        if SWAP:
            mw, sw = _accumulate(mw, sw, w, P)
    else:
        for c0 in range(0, n_cols, BLOCK_D):
            mask = mask_n[:, None] & ((cols + c0) < n_cols)[None, :]
            offs = base + (cols + c0)[None, :]
            u, v, w = _diffs(a_ptr, p_ptr, q_ptr, offs, mask, eps, SWAP)
            mu, su = _accumulate(mu, su, u, P)
            mv, sv = _accumulate(mv, sv, v, P)
            if SWAP:
                mw, sw = _accumulate(mw, sw, w, P)
    d_pos = _norm(mu, su, P)
    d_neg = _norm(mv, sv, P)
    omega = tl.full([BLOCK_N], 1.0, tl.float32)
    d_min = d_neg
    if SWAP:
        d_swap = _norm(mw, sw, P)
        omega = tl.where(d_neg < d_swap, 1.0, tl.where(d_neg == d_swap, 0.5, 0.0))
        d_min = tl.where((d_neg <= d_swap) | (d_neg != d_neg), d_neg, d_swap)
    z = margin + d_pos - d_min
    tl.store(loss_ptr + rows, tl.where(z < 0, 0.0, z), mask=mask_n)  # NaN stays NaN

    # pass 2: the gradients
    if NEED_A or NEED_P or NEED_Q:
        coef = tl.where(z >= 0, grad_scale, 0.0)  # clamp_min passes the gradient at 0
        fu, ku = _grad_factors(mu, su, coef, P)
        fv, kv = _grad_factors(mv, sv, coef * omega, P)
        fw, kw = _grad_factors(mw, sw, coef * (1.0 - omega), P)
        if ONE_CHUNK:
            _store_grads(ga_ptr, gp_ptr, gq_ptr, offs, mask, u, v, w, fu, ku, fv, kv, fw, kw,
                         P, SWAP, NEED_A, NEED_P, NEED_Q)
        else:
            for c0 in range(0, n_cols, BLOCK_D):
                mask = mask_n[:, None] & ((cols + c0) < n_cols)[None, :]
                offs = base + (cols + c0)[None, :]
                u, v, w = _diffs(a_ptr, p_ptr, q_ptr, offs, mask, eps, SWAP)
                _store_grads(ga_ptr, gp_ptr, gq_ptr, offs, mask, u, v, w, fu, ku, fv, kv, fw,
                             kw, P, SWAP, NEED_A, NEED_P, NEED_Q)


def launch(call: Call, check: bool = False) -> Result:
    """The loss and the three gradients of ``call`` (the contract of ``SPEC.torch_compute``;
    there are no labels, so ``check`` counts nothing: ``bad_labels`` is a 0-d zero).

    ``call.inputs`` are contiguous ``(N, D)`` (the loss's ``prepare`` makes them so),
    ``call.options`` ``(margin, p, eps, swap)``; ``p`` other than 1 or 2 runs the loss's torch
    ops instead. Traceable: shapes and
    options decide everything.
    """
    a, p, q = (x.contiguous() for x in call.inputs)
    margin, degree, eps, swap = call.options
    if degree not in (1.0, 2.0) or not a.numel():  # other norms, empty rows: torch ops
        result = SPEC.torch_compute(call)
        bad = torch.zeros((), dtype=torch.int64, device=a.device) if check else None
        return result._replace(bad_labels=bad)
    n_rows, n_cols = a.shape
    dev = a.device
    grads = tuple(torch.empty_like(x) if need else None
                  for x, need in zip((a, p, q), call.need_grad))
    rows = torch.empty(n_rows, dtype=torch.float32, device=dev)
    block_n, block_d, num_warps = plan(n_rows, n_cols)
    row_blocks = triton.cdiv(n_rows, block_n)
    if n_rows and n_cols:
        grid_x = min(row_blocks, GRID_X)
        torch.library.wrap_triton(_triplet_margin_loss_kernel)[
            (grid_x, triton.cdiv(row_blocks, GRID_X))](
            a, p, q, *grads, rows, n_rows, n_cols, float(margin), float(eps),
            grad_scale(SPEC, call),
            P=int(degree), SWAP=bool(swap), NEED_A=grads[0] is not None,
            NEED_P=grads[1] is not None, NEED_Q=grads[2] is not None,
            ONE_CHUNK=n_cols <= block_d, GRID_X=grid_x, BLOCK_N=block_n, BLOCK_D=block_d,
            num_warps=num_warps,
        )
    loss = reduce_rows(rows, call.reduction, SPEC.out_dtype(call))
    bad = torch.zeros((), dtype=torch.int64, device=dev) if check else None
    return Result(loss, grads, bad)
