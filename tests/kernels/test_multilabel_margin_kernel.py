"""The multilabel margin Triton kernel on the cases its algorithm singles out.

The generic kernel tests (``test_kernels.py``) cover dtypes, reductions, layouts and tracing;
these add what the sort-and-search algorithm has to get right: empty lists and lists of every
class, duplicates, entries outside ``[0, C)`` (with the in-kernel label check on and off),
infinite and NaN scores, keys beyond one histogram pass (an extra sweep), rows longer than a
chunk and programs that loop over several rows, ``C = 1``, and the check's count against the
spec's ``check_labels``. Every value is compared with torch (float64) through autograd.

CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``, set by tests/conftest.py when
there is no GPU), and CUDA when present.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as TF

pytest.importorskip("triton")

from marginloss.errors import LabelError  # noqa: E402
from marginloss.kernels import multilabel_margin_loss as kernel  # noqa: E402
from marginloss.losses import Call  # noqa: E402
from marginloss.losses.multilabel_margin_loss import SPEC  # noqa: E402

DEVICES = [
    pytest.param("cpu", marks=[
        pytest.mark.interpret,
        pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                           reason="CPU kernel tests need TRITON_INTERPRET=1"),
    ]),
    pytest.param("cuda", marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ]),
]
device_param = pytest.mark.parametrize("device", DEVICES)
INF, NAN = float("inf"), float("nan")


def call_of(x, y, reduction="sum", need_grad=True):
    (x,), y, _, _, _ = SPEC.prepare((x,), y, None, ())
    return Call((x,), y, None, (), reduction, (need_grad,))


def torch_result(x, y, reduction):
    """torch (float64): the loss and the gradient for a unit upstream gradient."""
    xd = x.detach().cpu().double().requires_grad_()
    out = TF.multilabel_margin_loss(xd, y.cpu().long(), reduction=reduction)
    (g,) = torch.autograd.grad(out, xd, torch.ones_like(out))
    return out.detach(), g


def check(x, y, reduction="sum", *, check_labels=False, rtol=1e-5, atol=1e-6):
    """The kernel's loss and gradient == torch's (only entries in [-1, C) are meaningful to
    torch: callers pass valid targets, or compare by hand)."""
    result = kernel.launch(call_of(x, y, reduction), check=check_labels)
    out, g = torch_result(x, y, reduction)
    loss = result.loss.reshape(out.shape).cpu().double()
    torch.testing.assert_close(loss, out, rtol=rtol, atol=atol, equal_nan=True)
    torch.testing.assert_close(result.grads[0].reshape(g.shape).cpu().double(), g,
                               rtol=rtol, atol=atol)
    return result


def grid_scores(n, c, generator, targets=None):
    """Scores on k/16 (non-targets) and k/16 + 1/32 (listed classes): no hinge argument is 0."""
    x = (torch.randn(n, c, generator=generator, dtype=torch.float64) * 24).round() / 16
    if targets is not None:
        listed = torch.cumprod((targets >= 0).long(), dim=1).bool()
        mask = torch.zeros(n, c, dtype=torch.bool)
        mask.scatter_(1, targets.clamp(0, c - 1), listed & (targets < c))
        x = x + mask * (1 / 32)
    return x.float()


def lists(n, c, k, generator):
    y = torch.full((n, c), -1, dtype=torch.long)
    for i in range(n):
        y[i, :k] = torch.randperm(c, generator=generator)[:k]
    return y


@device_param
def test_empty_lists_and_every_class_listed(device):
    """K = 0 (loss 0, gradient 0) and K = C (no non-target: loss 0, gradient 0), next to
    ordinary rows in the same launch."""
    g = torch.Generator().manual_seed(0)
    c = 23
    y = lists(4, c, 5, g)
    y[0] = -1  # K = 0
    y[1] = torch.randperm(c, generator=g)  # K = C
    y[2, 0] = -1  # K = 0, entries after the -1 ignored
    x = grid_scores(4, c, g, y)
    for reduction in ("none", "sum", "mean"):
        result = check(x.to(device), y.to(device), reduction)
    assert result.loss.numel() == 1
    none = kernel.launch(call_of(x.to(device), y.to(device), "none"))
    assert none.loss[:3].cpu().tolist() == [0.0, 0.0, 0.0]
    assert not none.grads[0][:3].cpu().any()


@device_param
def test_duplicates(device):
    """A class listed twice counts twice in the sum and once in the target set: the documented
    torch values (0.65 and 0.325) and gradients, and duplicates across list tiles."""
    x = torch.tensor([[0.1, 0.2, 0.4, 0.8]], device=device)
    for y, expect in (([[3, 3, -1, 0]], 0.65), ([[3, -1, 0, 0]], 0.325), ([[3, 0, -1, 1]], 0.85)):
        result = check(x, torch.tensor(y, device=device))
        assert result.loss.item() == pytest.approx(expect, rel=1e-6)
    g = torch.Generator().manual_seed(1)
    c = 50
    y = torch.full((2, c), -1, dtype=torch.long)
    y[0, :40] = torch.randint(0, c, (40,), generator=g)  # many repeats, several list tiles
    y[1, :20] = 7
    check(grid_scores(2, c, g, y).to(device), y.to(device), "none")


@device_param
def test_long_lists_take_extra_histogram_passes(device, monkeypatch):
    """Lists of more keys than one histogram pass holds (HIST_BINS shrunk to 4: counts up to
    K need K / 4 more sweeps), with more keys than one list tile."""
    monkeypatch.setattr(kernel, "HIST_BINS", 4)
    g = torch.Generator().manual_seed(2)
    c = 40
    y = lists(3, c, 13, g)
    y[1, :33] = torch.randperm(c, generator=g)[:33]
    y[2, :4] = torch.tensor([1, 2, 3, 4])  # K = HIST_BINS exactly
    check(grid_scores(3, c, g, y).to(device), y.to(device), "none")


@device_param
def test_long_rows_and_programs_that_loop(device, monkeypatch):
    """Rows of several chunks (MAX_BLOCK_C shrunk to 8), and fewer programs than rows (each
    program loops over rows, reusing its scratch)."""
    monkeypatch.setattr(kernel, "MAX_BLOCK_C", 8)
    monkeypatch.setattr(kernel, "MAX_PROGRAMS", 2)
    monkeypatch.setattr(kernel, "MIN_PROGRAMS", 2)
    g = torch.Generator().manual_seed(3)
    c = 45
    y = lists(5, c, 6, g)
    y[3] = -1
    assert kernel.plan(5, c).programs == 2
    for reduction in ("none", "mean"):
        check(grid_scores(5, c, g, y).to(device), y.to(device), reduction)


@device_param
def test_one_class(device):
    """C = 1: the one class listed (loss 0) or not (loss 0); gradient 0."""
    x = torch.tensor([[0.5], [-2.0], [3.0]], device=device)
    y = torch.tensor([[0], [-1], [0]], device=device)
    for reduction in ("none", "sum"):
        check(x, y, reduction)


@device_param
def test_infinite_and_nan_scores(device):
    """torch's values: -inf / +inf non-targets, -inf / +inf / NaN targets (the regression row
    [0.5, -inf, 2.0, 0.1] gives 0.15)."""
    t = torch.tensor([[0, 2, -1, -1]], device=device)
    x = torch.tensor([[0.5, -INF, 2.0, 0.1]], device=device)
    result = check(x, t)
    assert result.loss.item() == pytest.approx(0.15, rel=1e-6)
    for row in ([[0.5, -INF, 2.0, 0.1]], [[0.1, 2.0, -INF, 0.5]], [[0.5, -INF, -INF, 0.1]],
                [[0.5, INF, 2.0, -INF]], [[-INF, 0.3, 2.0, 0.1]], [[INF, 0.3, 2.0, 0.1]],
                [[0.5, 0.3, INF, INF]]):
        check(torch.tensor(row, device=device), t, "none")
    # NaN: a NaN target is never active, a NaN non-target neither (loss and gradients as torch)
    for row in ([[NAN, 0.3, 2.0, 0.1]], [[0.5, NAN, 2.0, 0.1]]):
        check(torch.tensor(row, device=device), t, "sum")


@device_param
def test_out_of_range_entries_are_skipped_and_counted(device):
    """Entries >= C before the first -1 (validate=False) are skipped, never read: the result is
    torch's on the list without them. With check=True the count is the spec's check's: every
    entry outside [-1, C), after the first -1 too."""
    c = 6
    y = torch.tensor([[2, 9, 0, -1, 7, -5],    # 9 skipped; 7 and -5 after the -1: counted
                      [1, -1, 3, 3, -1, 0],
                      [40, 4, -1, -1, -1, -1]])
    clean = torch.tensor([[2, 0, -1, -1, -1, -1],
                          [1, -1, 3, 3, -1, 0],
                          [4, -1, -1, -1, -1, -1]])
    g = torch.Generator().manual_seed(4)
    x = grid_scores(3, c, g, clean).to(device)
    for check_labels in (False, True):
        result = kernel.launch(call_of(x, y.to(device), "none"), check=check_labels)
        expect = kernel.launch(call_of(x, clean.to(device), "none"))
        assert torch.equal(result.loss, expect.loss)
        assert torch.equal(result.grads[0], expect.grads[0])
        if check_labels:
            assert result.bad_labels.dtype == torch.int64 and result.bad_labels.dim() == 0
            assert result.bad_labels.device == x.device
            assert result.bad_labels.item() == 4  # 9, 7, -5, 40
        else:
            assert result.bad_labels is None
    check(x, clean.to(device), "none")


def expected_bad(y, c):
    """What the spec's check counts: entries outside [-1, C), plus 1 for a 0/1 mask (C > 2)."""
    bad = int(((y < -1) | (y >= c)).sum())
    mask = y.numel() > 0 and bool(((y == 0) | (y == 1)).all()) and c > 2
    return bad + int(mask)


@device_param
@pytest.mark.parametrize("case", ["valid", "mask", "mask-c2", "range", "below", "after-end",
                                  "int32", "empty"])
def test_check_counts_what_the_spec_check_rejects(case, device):
    """check=True: the count is > 0 exactly when SPEC.check_labels raises, and equals the
    entries outside [-1, C) plus one for a 0/1 mask."""
    g = torch.Generator().manual_seed(5)
    c = 7
    y = lists(4, c, 3, g)
    if case == "mask":
        y = torch.randint(0, 2, (4, c), generator=g)
    elif case == "mask-c2":  # C = 2: 0s and 1s are valid index lists
        c, y = 2, torch.tensor([[0, 1], [1, 1], [0, 0], [1, 0]])
    elif case == "range":
        y[1, 0], y[2, 1] = c, c + 5
    elif case == "below":
        y[0, 2] = -3
    elif case == "after-end":
        y[3, c - 1] = 2 * c  # after the first -1: ignored by the loss, still counted
    elif case == "int32":
        y[0, 0] = -(2**31)
        y = y.to(torch.int32)
    elif case == "empty":
        y = y[:0]
    x = grid_scores(y.shape[0], c, g).to(device)
    call = call_of(x, y.to(device), "mean")
    result = kernel.launch(call, check=True)
    count = result.bad_labels.item()
    assert count == expected_bad(y, c)
    try:
        SPEC.check_labels(call)
    except LabelError:
        assert count > 0
    else:
        assert count == 0


@device_param
def test_forward_only_and_check_agree(device):
    """need_grad False (no gradient, no histogram) gives the same loss bitwise, check or not."""
    g = torch.Generator().manual_seed(6)
    y = lists(3, 19, 4, g)
    x = grid_scores(3, 19, g, y).to(device)
    full = kernel.launch(call_of(x, y.to(device), "none"))
    for check_labels in (False, True):
        fwd = kernel.launch(call_of(x, y.to(device), "none", need_grad=False),
                            check=check_labels)
        assert fwd.grads == (None,)
        assert torch.equal(fwd.loss, full.loss)


@device_param
def test_large_scores_keep_precision(device):
    """Scores near 1000: each class's term is a sum of non-negative parts, so the float32 loss
    keeps its relative precision (no large sums that cancel)."""
    g = torch.Generator().manual_seed(7)
    y = lists(3, 30, 5, g)
    x = grid_scores(3, 30, g, y) + 1000.0
    check(x.to(device), y.to(device), "none", rtol=2e-6, atol=0)
    # well separated rows: every pair inactive, loss exactly 0
    x = grid_scores(3, 30, g, y)
    listed = torch.zeros_like(x, dtype=torch.bool).scatter_(1, y[:, :5], True)
    x = torch.where(listed, x + 1e4, x)
    result = check(x.to(device), y.to(device), "none")
    assert not result.loss.any()


@device_param
def test_narrow_targets(device):
    """An (N, W) target, W < C (rows without their padding columns): the same result, bitwise,
    as the rows padded with -1 to (N, C); the check counts the W entries, and a narrow target
    of 0s and 1s is not taken for a mask (the spec's rule)."""
    g = torch.Generator().manual_seed(8)
    c, w = 17, 5
    y = lists(4, c, 4, g)[:, :w].clone()
    y[1, :] = torch.tensor([3, 3, 9, 0, 16])  # no -1: the list ends at W
    y[2, 0] = -1
    full = torch.nn.functional.pad(y, (0, c - w), value=-1)
    x = grid_scores(4, c, g, full).to(device)
    for reduction in ("none", "sum"):
        for check_labels in (False, True):
            call = Call((x,), y.to(device), None, (), reduction, (True,))
            narrow = kernel.launch(call, check=check_labels)
            wide = kernel.launch(call._replace(target=full.to(device)), check=check_labels)
            assert torch.equal(narrow.loss, wide.loss)
            assert torch.equal(narrow.grads[0], wide.grads[0])
            if check_labels:
                assert narrow.bad_labels.item() == 0
    bits = torch.randint(0, 2, (4, w), generator=g)
    call = Call((x,), bits.to(device), None, (), "sum", (True,))
    assert kernel.launch(call, check=True).bad_labels.item() == 0
    check(x, torch.nn.functional.pad(y, (0, c - w), value=-1).to(device), "none")
