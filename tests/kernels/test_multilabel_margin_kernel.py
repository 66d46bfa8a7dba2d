"""The multilabel margin Triton kernels on the cases their algorithms single out.

The generic kernel tests (``test_kernels.py``) cover dtypes, reductions, layouts and tracing;
these add what the kernels have to get right, on each of the three ways a launch can go
(:func:`kernel.plan`), forced with the module's size constants so that small inputs take them:

* ``short``: rows of at most ``SHORT_C`` classes, packed several to a program, every pair formed;
* ``rows``: programs that take whole rows (sort the keys, one search per class), several
  chunks per row;
* ``split``: rows cut into many splits (a prepare launch, the splits' launch, a finish launch
  that adds the partial sums in order).

Cases: empty lists and lists of every class, duplicates, entries outside ``[0, C)`` (with the
in-kernel label check on and off), infinite and NaN scores, keys beyond the unrolled search and
beyond one histogram pass (more sweeps), programs that loop over rows, ``C = 1``, narrow
targets, half precision, runs that are bitwise equal, and the check's count against the spec's
``check_labels``. Every value is compared with torch (float64) through autograd.

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

#: The module constants that send a small input down each path.
PATHS = {
    "short": {},
    "rows": {"SHORT_C": 0, "SPLIT_PROGRAMS": 0, "MAX_BLOCK_C": 16},
    "split": {"SHORT_C": 0, "SPLIT_PROGRAMS": 1 << 20, "SPLIT_C": 2, "MAX_BLOCK_C": 2},
}


@pytest.fixture(params=list(PATHS))
def path(request, monkeypatch):
    for name, value in PATHS[request.param].items():
        monkeypatch.setattr(kernel, name, value)
    return request.param


def takes(path, n, c, w=None):
    """Assert that an ``(n, c)`` input (targets ``w`` wide) goes down ``path``."""
    cut = kernel.plan(n, c, w)
    assert cut.short == (path == "short")
    assert (cut.splits > 1) == (path == "split")


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
def test_empty_lists_and_every_class_listed(device, path):
    """K = 0 (loss 0, gradient 0) and K = C (no non-target: loss 0, gradient 0), next to
    ordinary rows in the same launch."""
    g = torch.Generator().manual_seed(0)
    c = 23
    takes(path, 4, c)
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
def test_duplicates(device, path):
    """A class listed twice counts twice in the sum and once in the target set: the documented
    torch values (0.65 and 0.325) and gradients, and duplicates across list tiles."""
    x = torch.tensor([[0.1, 0.2, 0.4, 0.8]], device=device)
    for y, expect in (([[3, 3, -1, 0]], 0.65), ([[3, -1, 0, 0]], 0.325), ([[3, 0, -1, 1]], 0.85)):
        result = check(x, torch.tensor(y, device=device))
        assert result.loss.item() == pytest.approx(expect, rel=1e-6)
    g = torch.Generator().manual_seed(1)
    c = 50
    takes(path, 2, c)
    y = torch.full((2, c), -1, dtype=torch.long)
    y[0, :40] = torch.randint(0, c, (40,), generator=g)  # many repeats, several list tiles
    y[1, :20] = 7
    check(grid_scores(2, c, g, y).to(device), y.to(device), "none")


@device_param
@pytest.mark.parametrize("fast_keys", [kernel.FAST_KEYS, 4])
def test_both_searches(device, path, fast_keys, monkeypatch):
    """The two searches of the sweep paths and their edges: lists of fewer than FAST_KEYS keys
    (an unrolled search over keys padded to FAST_KEYS) and longer ones (the general search),
    also with FAST_KEYS = 4; with HIST_BINS shrunk to 4, lists of more keys than one histogram
    pass holds (counts up to K need K / 4 more sweeps) and than one list tile."""
    monkeypatch.setattr(kernel, "FAST_KEYS", fast_keys)
    monkeypatch.setattr(kernel, "HIST_BINS", 4)
    g = torch.Generator().manual_seed(2)
    c = 40
    ks = (1, 3, fast_keys - 1, fast_keys, 4, 13, 33)
    takes(path, len(ks), c)
    y = torch.cat([lists(1, c, k, g) for k in ks])
    check(grid_scores(len(ks), c, g, y).to(device), y.to(device), "none")


@device_param
def test_long_rows_and_programs_that_loop(device, monkeypatch):
    """Rows of several chunks (MAX_BLOCK_C shrunk to 8), and fewer programs than rows (each
    program loops over rows, reusing its scratch: keys, marks, histogram)."""
    for name, value in PATHS["rows"].items():
        monkeypatch.setattr(kernel, name, value)
    monkeypatch.setattr(kernel, "MAX_BLOCK_C", 8)
    monkeypatch.setattr(kernel, "MAX_PROGRAMS", 2)
    monkeypatch.setattr(kernel, "MIN_PROGRAMS", 2)
    g = torch.Generator().manual_seed(3)
    c = 45
    y = lists(5, c, 6, g)
    y[3] = -1
    y[4, :40] = torch.randperm(c, generator=g)[:40]  # the general search, then fast rows again
    assert kernel.plan(5, c).programs == 2
    for reduction in ("none", "mean"):
        check(grid_scores(5, c, g, y).to(device), y.to(device), reduction)


@device_param
def test_split_long_rows(device, monkeypatch):
    """Rows of 5000 classes cut into splits of 256 (20 per row): the partial losses added in a
    fixed order, the histograms added by the splits, the targets' gradients from the finish
    launch; float32 and half precision."""
    monkeypatch.setattr(kernel, "SPLIT_C", 256)
    g = torch.Generator().manual_seed(9)
    n, c = 2, 5000
    cut = kernel.plan(n, c)
    assert (cut.splits, cut.split_c, cut.block_c) == (20, 256, 256)
    y = lists(n, c, 16, g)
    y[1, 3:] = -1
    x = grid_scores(n, c, g, y)
    check(x.to(device), y.to(device), "none")
    for dtype in (torch.bfloat16, torch.float16):
        check(x.to(device, dtype), y.to(device), "none", rtol=1e-2, atol=1e-6)


@device_param
def test_one_class(device, path):
    """C = 1: the one class listed (loss 0) or not (loss 0); gradient 0."""
    x = torch.tensor([[0.5], [-2.0], [3.0]], device=device)
    y = torch.tensor([[0], [-1], [0]], device=device)
    for reduction in ("none", "sum"):
        check(x, y, reduction)


@device_param
def test_infinite_and_nan_scores(device, path):
    """torch's values: -inf / +inf non-targets, -inf / +inf / NaN targets (the regression row
    [0.5, -inf, 2.0, 0.1] gives 0.15)."""
    takes(path, 1, 4)
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
def test_out_of_range_entries_are_skipped_and_counted(device, path):
    """Entries >= C before the first -1 (validate=False) are skipped, never read: the result is
    torch's on the list without them. With check=True the count is the spec's check's: every
    entry outside [-1, C), after the first -1 too."""
    c = 6
    takes(path, 3, c)
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
    # an int64 entry that is a class modulo 2^32 is out of range, not that class
    wide = torch.tensor([[2, (1 << 32) + 3, 0, -1, -1, -1]])
    result = kernel.launch(call_of(x[:1], wide.to(device), "none"), check=True)
    expect = kernel.launch(call_of(x[:1], clean[:1].to(device), "none"))
    assert torch.equal(result.loss, expect.loss)
    assert torch.equal(result.grads[0], expect.grads[0])
    assert result.bad_labels.item() == 1


def expected_bad(y, c):
    """What the spec's check counts: entries outside [-1, C), plus 1 for a 0/1 mask (C > 2)."""
    bad = int(((y < -1) | (y >= c)).sum())
    mask = y.numel() > 0 and bool(((y == 0) | (y == 1)).all()) and c > 2
    return bad + int(mask)


@device_param
@pytest.mark.parametrize("case", ["valid", "mask", "mask-c2", "range", "below", "after-end",
                                  "int32", "empty"])
def test_check_counts_what_the_spec_check_rejects(case, device, path):
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
def test_forward_only_and_check_agree(device, path):
    """need_grad False (no gradient, no histogram) gives the same loss bitwise, check or not."""
    g = torch.Generator().manual_seed(6)
    y = lists(3, 40, 4, g)
    y[2, :35] = torch.randperm(40, generator=g)[:35]  # the general search on the sweep paths
    x = grid_scores(3, 40, g, y).to(device)
    full = kernel.launch(call_of(x, y.to(device), "none"))
    for check_labels in (False, True):
        fwd = kernel.launch(call_of(x, y.to(device), "none", need_grad=False),
                            check=check_labels)
        assert fwd.grads == (None,)
        assert torch.equal(fwd.loss, full.loss)


@device_param
def test_large_scores_keep_precision(device, path):
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
def test_narrow_targets(device, path):
    """An (N, W) target, W < C (rows without their padding columns): the same result, bitwise,
    as the rows padded with -1 to (N, C); the check counts the W entries, and a narrow target
    of 0s and 1s is not taken for a mask (the spec's rule)."""
    g = torch.Generator().manual_seed(8)
    c, w = 17, 5
    takes(path, 4, c, w)
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


@device_param
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(device, path, dtype):
    """bfloat16 / float16 scores: the loss summed in float32 from the half values and the
    gradient c / C, both rounded to the input's dtype (torch's values to that rounding)."""
    g = torch.Generator().manual_seed(10)
    c = 37
    takes(path, 5, c)
    y = lists(5, c, 6, g)
    y[4, :35] = torch.randperm(c, generator=g)[:35]
    x = grid_scores(5, c, g, y).to(dtype)  # k/16 + 1/32: exact in both
    for reduction in ("none", "mean"):
        result = check(x.to(device), y.to(device), reduction, rtol=1e-2)
        assert result.loss.dtype == result.grads[0].dtype == dtype


@device_param
def test_runs_are_bitwise_equal(device, path):
    """Two launches of the same call give the same bits (no atomics in a floating-point sum;
    the splits' histograms are integers)."""
    g = torch.Generator().manual_seed(11)
    c = 61
    takes(path, 6, c)
    y = lists(6, c, 9, g)
    y[5, :40] = torch.randperm(c, generator=g)[:40]
    x = torch.randn(6, c, generator=g).to(device)
    first = kernel.launch(call_of(x, y.to(device), "none"), check=True)
    second = kernel.launch(call_of(x, y.to(device), "none"), check=True)
    assert torch.equal(first.loss, second.loss)
    assert torch.equal(first.grads[0], second.grads[0])
    assert torch.equal(first.bad_labels, second.bad_labels)
    check(x.to(device), y.to(device), "sum", rtol=1e-5, atol=1e-5)


def test_plan_fills_the_gpu_and_bounds_the_scratch():
    """Shapes only: one row of a million classes is split over about SPLIT_PROGRAMS programs
    of at least SPLIT_C classes; short rows are packed several to a program; many long rows
    take looping programs whose scratch stays under SCRATCH_BYTES."""
    cut = kernel.plan(1, 10**6)
    assert not cut.short and cut.splits >= kernel.SPLIT_PROGRAMS // 2
    assert cut.split_c >= kernel.SPLIT_C and cut.split_c % cut.block_c == 0
    assert (cut.splits - 1) * cut.split_c < 10**6 <= cut.splits * cut.split_c
    cut = kernel.plan(4096, 20)
    assert cut.short and cut.rows * cut.block_c == kernel.SHORT_TILE and cut.rows >= 8
    assert cut.programs * cut.rows >= 4096
    cut = kernel.plan(4096, 2048)
    assert not cut.short and cut.splits == 1 and cut.programs <= kernel.MAX_PROGRAMS
    assert cut.programs * kernel._slot_bytes(2048, 2048) <= kernel.SCRATCH_BYTES
    cut = kernel.plan(4, 8192)
    assert cut.splits > 1 and 4 * cut.splits <= kernel.SPLIT_PROGRAMS
