r"""``cosine_embedding_loss``: the loss, both gradients and the label check in one pass.

Row :math:`n`: vectors :math:`x_1, x_2` of :math:`D` features, label :math:`y`, margin
:math:`\mu`; the math of :mod:`marginloss.losses.cosine_embedding_loss`: with
:math:`r_i = \lVert x_i \rVert^2 + 10^{-12}` and :math:`c = x_1 \cdot x_2 / \sqrt{r_1 r_2}`,
:math:`\ell_n = 1 - c` (:math:`y = 1`), :math:`[c - \mu]_+` (:math:`y = -1`), 0 otherwise;
:math:`s = \partial \ell / \partial c`,

.. math::
    \partial_{x_1} = s \Bigl(\frac{x_2}{\sqrt{r_1 r_2}} - c \frac{x_1}{r_1}\Bigr), \qquad
    \partial_{x_2} = s \Bigl(\frac{x_1}{\sqrt{r_1 r_2}} - c \frac{x_2}{r_2}\Bigr).

**Overflow-free in float32.** Each vector is scaled by :math:`\sigma_i = \max(\max_j |x_{ij}|,
10^{-6})`, kept online over chunks (a chunk with a larger maximum rescales the running sums):
:math:`S_{11} = \sum (x_1 / \sigma_1)^2`, :math:`S_{22}`, :math:`S_{12} = \sum (x_1 / \sigma_1)
(x_2 / \sigma_2)`. Then :math:`R_i = S_{ii} + (10^{-6} / \sigma_i)^2 \in [1, D + 1]`,
:math:`c = S_{12} / \sqrt{R_1 R_2}` and
:math:`\partial_{x_1} = s (\hat x_2 / \sqrt{R_1 R_2} - c \hat x_1 / R_1) / \sigma_1`
(:math:`\hat x = x / \sigma`): no intermediate overflows, and torch's :math:`\epsilon` is kept
(a zero vector gives :math:`c = 0` and torch's finite gradient).

**Label check** (``check=True``): each program counts its labels other than -1 and +1 (NaN
included) into an int32 slot; torch adds the slots (``bad_labels``, a 0-d int64 on the device,
no host read).

**Layout.** A program owns ``BLOCK_N`` rows, swept in chunks of ``BLOCK_D`` features: pass 1
reduces the three sums, pass 2 writes both gradients; a row of at most ``BLOCK_D`` features is
loaded once and both passes use the registers. Row offsets are int64.

**Cost.** Per row: read :math:`2 D` inputs and one label, write :math:`2 D` gradients and one
float32 loss (plus one int32 per program with the check). Row losses are reduced by torch
(fixed order: deterministic, no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from marginloss.backends._common import grad_scale, reduce_rows
from marginloss.losses._spec import Call, Result
from marginloss.losses.cosine_embedding_loss import SPEC

MAX_BLOCK_D = 1024  # the most features one chunk holds
TILE = 2048  # elements of one input per tile (8 per thread at 8 warps)
GRID_X = (1 << 31) - 1  # CUDA's limit on grid x
SQRT_EPS = tl.constexpr(9.99999998e-07)  # sqrt of torch's float32 1e-12: the least scale


def plan(n_rows: int, n_cols: int) -> tuple[int, int, int]:
    """``(BLOCK_N, BLOCK_D, num_warps)`` from the shape only."""
    n, d = max(int(n_rows), 1), max(int(n_cols), 1)  # int(): specialise symbolic shapes
    block_d = min(triton.next_power_of_2(d), MAX_BLOCK_D)
    block_n = max(1, min(TILE // block_d, triton.next_power_of_2(n)))
    num_warps = max(1, min(8, block_n * block_d // 256))
    return block_n, block_d, num_warps


@triton.jit
def _accumulate(m1, m2, s11, s22, s12, x1, x2):
    """Adds a chunk to a row's scaled sums (rescaling them when a maximum grows)."""
    n1 = tl.maximum(m1, tl.max(tl.abs(x1), axis=1))
    n2 = tl.maximum(m2, tl.max(tl.abs(x2), axis=1))
    i1, i2 = 1.0 / n1, 1.0 / n2
    r1, r2 = m1 * i1, m2 * i2
    h1, h2 = x1 * i1[:, None], x2 * i2[:, None]
    s11 = s11 * r1 * r1 + tl.sum(h1 * h1, axis=1)
    s22 = s22 * r2 * r2 + tl.sum(h2 * h2, axis=1)
    s12 = s12 * r1 * r2 + tl.sum(h1 * h2, axis=1)
    return n1, n2, s11, s22, s12


@triton.jit
def _store_grads(g1_ptr, g2_ptr, offs, mask, x1, x2, i1, i2, k12, k11, k22,
                 NEED_1: tl.constexpr, NEED_2: tl.constexpr):
    h1, h2 = x1 * i1[:, None], x2 * i2[:, None]
    if NEED_1:
        g1 = (h2 * k12[:, None] - h1 * k11[:, None]) * i1[:, None]
        tl.store(g1_ptr + offs, g1.to(g1_ptr.dtype.element_ty), mask=mask)
    if NEED_2:
        g2 = (h1 * k12[:, None] - h2 * k22[:, None]) * i2[:, None]
        tl.store(g2_ptr + offs, g2.to(g2_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _cosine_embedding_loss_kernel(
    x1_ptr, x2_ptr,  # (N, D) contiguous, one dtype
    y_ptr,  # (N,) labels (float32 / float64)
    g1_ptr, g2_ptr,  # (N, D) gradients in the inputs' dtype (None where not needed)
    loss_ptr,  # (N,) float32 row losses
    bad_ptr,  # (programs,) int32 labels outside {-1, +1} (CHECK; else None)
    n_rows,
    n_cols,
    margin,
    grad_scale,  # 1, or 1/N for "mean"
    NEED_1: tl.constexpr,
    NEED_2: tl.constexpr,
    CHECK: tl.constexpr,
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
    m1 = tl.full([BLOCK_N], SQRT_EPS, tl.float32)
    m2 = tl.full([BLOCK_N], SQRT_EPS, tl.float32)
    s11 = tl.zeros([BLOCK_N], dtype=tl.float32)
    s22 = tl.zeros([BLOCK_N], dtype=tl.float32)
    s12 = tl.zeros([BLOCK_N], dtype=tl.float32)

    # pass 1: the scaled sums
    if ONE_CHUNK:
        mask = mask_n[:, None] & (cols < n_cols)[None, :]
        offs = base + cols[None, :]
        x1 = tl.load(x1_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(x2_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        m1, m2, s11, s22, s12 = _accumulate(m1, m2, s11, s22, s12, x1, x2)
    else:
        for c0 in range(0, n_cols, BLOCK_D):
            mask = mask_n[:, None] & ((cols + c0) < n_cols)[None, :]
            offs = base + (cols + c0)[None, :]
            x1 = tl.load(x1_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            x2 = tl.load(x2_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            m1, m2, s11, s22, s12 = _accumulate(m1, m2, s11, s22, s12, x1, x2)
    i1, i2 = 1.0 / m1, 1.0 / m2
    e1, e2 = SQRT_EPS * i1, SQRT_EPS * i2
    big1 = s11 + e1 * e1  # r_1 / sigma_1^2, in [1, D + 1]
    big2 = s22 + e2 * e2
    inv = 1.0 / tl.sqrt(big1 * big2)
    cos = s12 * inv
    y = tl.load(y_ptr + rows, mask=mask_n, other=1.0).to(tl.float32)
    pos = y == 1.0
    neg = y == -1.0
    hinge = cos - margin
    loss = tl.where(pos, 1.0 - cos, tl.where(neg, tl.where(hinge < 0, 0.0, hinge), 0.0))
    tl.store(loss_ptr + rows, loss, mask=mask_n)
    if CHECK:
        tl.store(bad_ptr + rb, tl.sum((mask_n & ~pos & ~neg).to(tl.int32), axis=0))

    # pass 2: the gradients
    if NEED_1 or NEED_2:
        slope = tl.where(pos, -1.0, tl.where(neg & (hinge >= 0), 1.0, 0.0)) * grad_scale
        k12 = slope * inv
        k11 = slope * cos / big1
        k22 = slope * cos / big2
        if ONE_CHUNK:
            _store_grads(g1_ptr, g2_ptr, offs, mask, x1, x2, i1, i2, k12, k11, k22,
                         NEED_1, NEED_2)
        else:
            for c0 in range(0, n_cols, BLOCK_D):
                mask = mask_n[:, None] & ((cols + c0) < n_cols)[None, :]
                offs = base + (cols + c0)[None, :]
                x1 = tl.load(x1_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                x2 = tl.load(x2_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                _store_grads(g1_ptr, g2_ptr, offs, mask, x1, x2, i1, i2, k12, k11, k22,
                             NEED_1, NEED_2)


def launch(call: Call, check: bool = False) -> Result:
    """The loss and both gradients of ``call`` (the contract of ``SPEC.torch_compute``); with
    ``check``, also ``bad_labels``: the number of labels other than -1 and +1, a 0-d int64
    tensor on the input's device.

    ``call.inputs`` are contiguous ``(N, D)``, ``call.target`` ``(N,)`` float32 or float64
    (the loss's ``prepare`` makes them so), ``call.options`` ``(margin,)``. Traceable: shapes
    and options decide everything.
    """
    x1, x2 = (x.contiguous() for x in call.inputs)
    y = call.target.contiguous()
    (margin,) = call.options
    n_rows, n_cols = x1.shape
    dev = x1.device
    if not x1.numel():  # no rows, or rows of no features (cos = 0): the loss's torch ops
        result = SPEC.torch_compute(call)
        if check:
            bad = ((y != 1) & (y != -1)).sum() if y.numel() else torch.zeros((), device=dev)
            result = result._replace(bad_labels=bad.to(torch.int64))
        return result
    grads = tuple(torch.empty_like(x) if need else None
                  for x, need in zip((x1, x2), call.need_grad))
    rows = torch.empty(n_rows, dtype=torch.float32, device=dev)
    block_n, block_d, num_warps = plan(n_rows, n_cols)
    row_blocks = triton.cdiv(n_rows, block_n)
    bad = torch.zeros(row_blocks, dtype=torch.int32, device=dev) if check else None
    if n_rows and n_cols:
        grid_x = min(row_blocks, GRID_X)
        torch.library.wrap_triton(_cosine_embedding_loss_kernel)[
            (grid_x, triton.cdiv(row_blocks, GRID_X))](
            x1, x2, y, *grads, rows, bad, n_rows, n_cols, float(margin),
            grad_scale(SPEC, call),
            NEED_1=grads[0] is not None, NEED_2=grads[1] is not None, CHECK=check,
            ONE_CHUNK=n_cols <= block_d, GRID_X=grid_x, BLOCK_N=block_n, BLOCK_D=block_d,
            num_warps=num_warps,
        )
    loss = reduce_rows(rows, call.reduction, SPEC.out_dtype(call))
    bad_labels = bad.sum() if check else None
    return Result(loss, grads, bad_labels)
