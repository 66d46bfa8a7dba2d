"""Property-based parity with torch.nn.functional: random shapes, options and label patterns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from helpers import assert_close

import marginloss.functional as F

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)
reductions = st.sampled_from(["none", "mean", "sum"])


def _scores(draw, n, c, odd: bool):
    """Scores on a 1/16 grid (target scores shifted by 1/32 when ``odd``): kink-free hinges."""
    ks = draw(st.lists(st.integers(-64, 64), min_size=n * c, max_size=n * c))
    x = torch.tensor(ks, dtype=torch.float64).reshape(n, c) / 16
    return x + (1 / 32 if odd else 0)


def _compare(ours, ref, x, y, ours_kw=None, **kw):
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = ours(xa, y, **kw, **(ours_kw or {})), ref(xb, y, **kw)
    assert_close(a, b)
    g = torch.linspace(0.5, 2.0, max(b.numel(), 1), dtype=torch.float64)[: b.numel()]
    a.backward(g.reshape(b.shape))
    b.backward(g.reshape(b.shape))
    assert_close(xa.grad, xb.grad)


@SETTINGS
@given(st.data(), st.integers(0, 5), st.integers(1, 12), reductions)
def test_soft_margin_property(data, n, c, reduction):
    x = _scores(data.draw, n, c, odd=False) * 8
    y = torch.tensor(data.draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=n * c,
                                        max_size=n * c)), dtype=torch.float64).reshape(n, c)
    _compare(F.soft_margin_loss, TF.soft_margin_loss, x, y, reduction=reduction)


@SETTINGS
@given(st.data(), st.integers(1, 5), st.integers(1, 12), reductions, st.booleans())
def test_multilabel_soft_margin_property(data, n, c, reduction, weighted):
    x = _scores(data.draw, n, c, odd=False) * 4
    y = torch.tensor(data.draw(st.lists(st.sampled_from([0.0, 0.25, 1.0]), min_size=n * c,
                                        max_size=n * c)), dtype=torch.float64).reshape(n, c)
    kw = {"weight": torch.linspace(0.1, 2, c, dtype=torch.float64)} if weighted else {}
    _compare(F.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, x, y,
             reduction=reduction, **kw)


@SETTINGS
@given(st.data(), st.integers(1, 6), st.integers(1, 12), reductions, st.sampled_from([1, 2]),
       st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.booleans())
def test_multi_margin_property(data, n, c, reduction, p, margin, weighted):
    y = torch.tensor(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    x = _scores(data.draw, n, c, odd=False)
    x[torch.arange(n), y] += 1 / 32
    kw = {"weight": torch.linspace(0.5, 1.5, c, dtype=torch.float64)} if weighted else {}
    _compare(F.multi_margin_loss, TF.multi_margin_loss, x, y, reduction=reduction, p=p,
             margin=margin, **kw)


@SETTINGS
@given(st.data(), st.integers(1, 6), st.integers(1, 12), reductions)
def test_multilabel_margin_property(data, n, c, reduction):
    """Arbitrary lists: repeats, -1 anywhere (ends the list), entries after the -1 ignored."""
    rows = data.draw(st.lists(st.lists(st.integers(-1, c - 1), min_size=c, max_size=c),
                              min_size=n, max_size=n))
    y = torch.tensor(rows)
    x = _scores(data.draw, n, c, odd=False)
    for r, row in enumerate(rows):  # shift the scores of the active targets off the grid
        for j in row:
            if j < 0:
                break
            x[r, j] = torch.floor(x[r, j] * 16) / 16 + 1 / 32
    _compare(F.multilabel_margin_loss, TF.multilabel_margin_loss, x, y, reduction=reduction,
             ours_kw={"validate": False})
