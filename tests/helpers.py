"""Shared test helpers: dtype tolerances, comparisons, kink-free inputs per label convention."""

from __future__ import annotations

import torch

# (rtol, atol) by the dtype of the result under test; starts from torch's _DTYPE_PRECISIONS.
TOL = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (2e-5, 2e-6),  # torch's 1.3e-6: our summation order differs from ATen's
    torch.float16: (2e-3, 2e-4),  # one fp16 rounding of the fp32 result
    torch.bfloat16: (1.6e-2, 2e-3),
}

REDUCTIONS = ["none", "mean", "sum"]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype=None) -> None:
    """Compare ``actual`` with ``expected`` (shape exactly, values by ``dtype``'s tolerance)."""
    rtol, atol = TOL[dtype or actual.dtype]
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    torch.testing.assert_close(actual.to(expected.dtype), expected, rtol=rtol, atol=atol,
                               equal_nan=True)


def scores(shape, dtype=torch.float64, scale=2.0) -> torch.Tensor:
    return (torch.randn(shape, dtype=torch.float64) * scale).to(dtype)


def _grid(shape, offset: float) -> torch.Tensor:
    """Scores on the grid k/16 + offset, |x| < 4: exact in every float dtype, bfloat16 included."""
    return (torch.randn(shape, dtype=torch.float64) * 24).round().clamp(-60, 60) / 16 + offset


def make_inputs(loss: str, N: int | None, C: int, dtype=torch.float64, *, margin=1.0,
                n_targets: int | None = None):
    """Scores and targets in ``loss``'s convention. ``N=None`` gives unbatched inputs.

    For the two hinge losses, target-class scores lie on the grid k/16 + 1/32 and the others on
    k/16, so every hinge argument margin - x_t + x_k (margin a multiple of 1/16) is an odd
    multiple of 1/32: never 0, so rounding cannot flip a subgradient between implementations.
    """
    shape = (C,) if N is None else (N, C)
    rows = 1 if N is None else N
    if loss == "soft_margin_loss":
        return scores(shape, dtype), (torch.randint(0, 2, shape) * 2 - 1).to(dtype)
    if loss == "multilabel_soft_margin_loss":
        return scores(shape, dtype), torch.randint(0, 2, shape).to(dtype)
    assert (margin * 16) == int(margin * 16), "margin must be a multiple of 1/16"
    is_target = torch.zeros(rows, C, dtype=torch.bool)
    if loss == "multi_margin_loss":
        t = torch.randint(0, C, (rows,))
        is_target[torch.arange(rows), t] = True
        t = t.reshape(()) if N is None else t
    elif loss == "multilabel_margin_loss":
        k = n_targets if n_targets is not None else max(1, C // 3)
        t = torch.full((rows, C), -1, dtype=torch.long)
        for r in range(rows):
            kr = int(torch.randint(0, k + 1, ())) if n_targets is None else k
            t[r, :kr] = torch.randperm(C)[:kr]
            is_target[r, t[r, :kr]] = True
        t = t.reshape(shape)
    else:
        raise KeyError(loss)
    x = torch.where(is_target, _grid((rows, C), 1 / 32), _grid((rows, C), 0.0))
    return x.reshape(shape).to(dtype), t
