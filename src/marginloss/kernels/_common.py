r"""What several kernels share: the row-tile heuristic and the stable logistic building blocks.

**Row tiles.** The row kernels (every loss but ``soft_margin_loss``, which is elementwise) give
each program a ``BLOCK_N x BLOCK_C`` tile: ``BLOCK_C`` covers a row up to a per-kernel cap
(longer rows loop over chunks of ``BLOCK_C`` classes), and ``BLOCK_N`` packs short rows
several to a program so a tile holds about :data:`TILE` elements. Heuristics rather than
autotuning: the losses are bandwidth-bound row reductions, and the choice depends on the
shape only (so it is the same under ``torch.compile``).

**Stable logistic math.** With :math:`e = e^{-|u|} \in (0, 1]` nothing overflows:

.. math::
    \operatorname{softplus}(u) = \log(1 + e^{u}) = \max(u, 0) + \log(1 + e), \qquad
    \sigma(u) = \begin{cases} 1 / (1 + e) & u \ge 0 \\ e / (1 + e) & u < 0. \end{cases}

:math:`\log(1 + e)` is taken by Goldberg's trick (:func:`log1p`), accurate for tiny ``e``, and
added last, so a loss that is only this tail (a confident, correct score) keeps its relative
accuracy.

Only ``triton`` and ``triton.language`` are imported: this module is loaded with the kernels,
never by ``import marginloss``.
"""

from __future__ import annotations

import triton
import triton.language as tl

TILE = 4096  # row kernels: elements per BLOCK_N x BLOCK_C tile (short rows are packed)


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


@triton.jit
def log1p(e):
    """``log(1 + e)``, accurate for small ``e``: ``log(u) * e / (u - 1)`` with ``u = 1 + e``.

    Goldberg's trick: the rounding error of ``u`` cancels in the ratio (``tl.log1p`` is not in
    every Triton version's core language).
    """
    u = 1.0 + e
    exact = u == 1.0  # e below half an ulp of 1: log1p(e) = e to float32 precision
    return tl.where(exact, e, tl.log(u) * (e / tl.where(exact, 1.0, u - 1.0)))


@triton.jit
def softplus_parts(u):
    """``(max(u, 0), log(1 + exp(-|u|)), sigmoid(u))``, all stable for any finite ``u``.

    The softplus is the sum of the first two; they are returned apart so that a caller can add
    the tail last, after any exact cancellation of the linear part (``max(x, 0) - y x``), and
    keep the tail's relative accuracy when it is the whole loss.
    """
    e = tl.exp(-tl.abs(u))  # in (0, 1]: never overflows
    sigmoid = tl.where(u >= 0, 1.0, e) / (1.0 + e)
    return tl.maximum(u, 0.0), log1p(e), sigmoid
