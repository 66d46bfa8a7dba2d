"""The native backend (marginloss.backends.native, csrc/*.c): every loss against torch in float64,
edge cases, accuracy, threads, label counts, memory safety, building, caching and forking.

The kernels are called directly, ``native.run(spec, call)``, with canonical calls built here (the
layout every backend receives), so these tests do not depend on the pipeline above the backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types

import pytest
import torch
import torch.nn.functional as TF

from marginloss.backends import native
from marginloss.backends._common import grad_scale
from marginloss.losses import LOSSES, Call

SPECS = {spec.name: spec for spec in LOSSES}
SOFT_MARGIN_LOSS, MULTILABEL_SOFT_MARGIN_LOSS, MULTI_MARGIN_LOSS, MULTILABEL_MARGIN_LOSS = (
    "soft_margin_loss",
    "multilabel_soft_margin_loss",
    "multi_margin_loss",
    "multilabel_margin_loss",
)
REDUCTIONS = ("none", "mean", "sum")
INF, NAN = float("inf"), float("nan")

needs_native = pytest.mark.skipif(
    native.status() is not None, reason=f"native kernels unavailable: {native.status()}"
)
pytestmark = needs_native


# ----------------------------------------------------------------------------------------------
# helpers


def call(x, target, weight=None, options=(), reduction="mean", need_grad=True) -> Call:
    """A canonical call; ``x`` is the input, or a tuple of inputs (pairs, triplets)."""
    inputs = x if isinstance(x, tuple) else (x,)
    return Call(inputs, target, weight, tuple(options), reduction, (need_grad,) * len(inputs))


def run(name, c: Call):
    """``native.run`` after checking that the backend accepts the call."""
    spec = SPECS[name]
    problem = native.unavailable(spec, c)
    assert problem is None, problem
    return native.run(spec, c)


def references(name, c: Call):
    """torch.nn.functional's loss and the gradient of every input (unit upstream), float64.

    Losses other than the four below take their options by the names the spec declares."""
    xs = tuple(x.double().requires_grad_() for x in c.inputs)
    x = xs[0]
    t = None if c.target is None else \
        c.target.double() if c.target.is_floating_point() else c.target
    w = None if c.weight is None else c.weight.double()
    kwargs = {}
    row_weight = None
    if name == MULTI_MARGIN_LOSS:
        kwargs = {"p": c.options[0], "margin": c.options[1]}
        if w is not None and w.dim() == 2:  # a full weight: row n weighs w[n, y_n]
            safe = c.target.clamp(0, x.shape[1] - 1)
            row_weight = w.gather(1, safe.unsqueeze(1)).squeeze(1)
        else:
            kwargs["weight"] = w
    elif name == MULTILABEL_SOFT_MARGIN_LOSS:
        kwargs = {"weight": w}
    elif name not in (SOFT_MARGIN_LOSS, MULTILABEL_MARGIN_LOSS):
        kwargs = {o.name: v for o, v in zip(SPECS[name].options, c.options, strict=True)}
    args = (*xs, t) if SPECS[name].has_target else xs
    rows = getattr(TF, name)(*args, reduction="none", **kwargs)
    if row_weight is not None:
        rows = rows * row_weight
    loss = {"none": rows, "sum": rows.sum(), "mean": rows.mean()}[c.reduction]
    grads = torch.autograd.grad(loss, xs, torch.ones_like(loss), allow_unused=True)
    return loss.detach(), tuple(torch.zeros_like(x) if g is None else g
                                for x, g in zip(xs, grads))


def reference(name, c: Call):
    """torch.nn.functional's loss and input gradient (unit upstream) in float64 (one input)."""
    loss, grads = references(name, c)
    return loss, grads[0]


def assert_matches(name, c: Call, rtol=2e-6, atol=1e-6, bad=0):
    """Loss and gradients of the native kernel match :func:`references`."""
    res = run(name, c)
    ref_loss, ref_grads = references(name, c)
    assert res.loss.dtype == torch.float32 and res.loss.shape == ref_loss.shape
    torch.testing.assert_close(res.loss.double(), ref_loss, rtol=rtol, atol=atol, equal_nan=True)
    assert len(res.grads) == len(c.inputs)
    for x, need, g, ref_grad in zip(c.inputs, c.need_grad, res.grads, ref_grads, strict=True):
        if need:
            assert g.dtype == torch.float32 and g.shape == x.shape
            torch.testing.assert_close(g.double(), ref_grad, rtol=rtol, atol=atol * 1e-2)
        else:
            assert g is None
    assert res.bad_labels == bad
    return res


def grid(shape, scale=24):
    """Scores k/16, |x| <= 4: exact in float32, and every hinge argument is exact."""
    return (torch.randn(shape, dtype=torch.float64) * scale).round().clamp(-64, 64).div(16).float()


def pm1(shape):
    """Random labels -1 / +1."""
    return (torch.randint(0, 2, shape) * 2 - 1).float()


def index_lists(n, c, k=None, *, tail="pad"):
    """-1 terminated class lists (k per row, else random lengths), distinct classes; after the
    terminator, -1 padding or (tail="junk") valid indices that must be ignored."""
    t = torch.full((n, c), -1, dtype=torch.int64)
    for r in range(n):
        kr = int(torch.randint(0, c + 1, ())) if k is None else k
        t[r, :kr] = torch.randperm(c)[:kr]
        if tail == "junk" and kr + 1 < c:
            t[r, kr + 1 :] = torch.randint(0, c, (c - kr - 1,))
    return t


# ----------------------------------------------------------------------------------------------
# the descriptors


def test_every_loss_has_a_kernel_that_matches_its_spec():
    """Every loss that lists the native backend has a kernel, and its descriptor agrees."""
    for spec in LOSSES:
        if "native" not in spec.backends:
            continue
        k = native._kernel(spec.name)
        assert not isinstance(k, str), k
        assert k.elementwise == bool(spec.elementwise)
        assert k.n_opts == len(spec.options) and k.n_inputs == len(spec.inputs)
        assert (k.weight != 0) == spec.weighted
        assert (k.target is not None) == spec.has_target


def test_a_loss_without_a_kernel_is_unavailable_with_the_reason():
    stub = types.SimpleNamespace(
        name="no_such_loss", elementwise=False, options=(), out_dtype=lambda c: torch.float32
    )
    c = call(torch.randn(2, 3), None)
    assert native.unavailable(stub, c) == "there is no native kernel for no_such_loss"
    with pytest.raises(RuntimeError, match="no native kernel"):
        native.run(stub, c)


# ----------------------------------------------------------------------------------------------
# parity with torch (float64 oracle)

# short rows (one or several blocks of rows, a partial last block), long rows, rows of several
# chunks
SHAPES = [
    (1, 1),
    (3, 7),
    (17, 33),
    (64, 10),
    (1000, 7),
    (300, 128),
    (5, 600),
    (2, 1500),
    (1, 40000),
    (3, 17000),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("need_grad", [True, False])
def test_soft_margin_loss(shape, reduction, need_grad):
    x, y = torch.randn(shape) * 3, pm1(shape)
    assert_matches(SOFT_MARGIN_LOSS, call(x, y, reduction=reduction, need_grad=need_grad))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, "class", "full"])
def test_multilabel_soft_margin_loss(shape, reduction, weight):
    x = torch.randn(shape) * 3
    y = torch.rand(shape).round_()
    y[0, 0] = 0.25  # a soft label
    w = {None: None, "class": torch.rand(shape[1]) + 0.5, "full": torch.rand(shape) + 0.5}[weight]
    assert_matches(MULTILABEL_SOFT_MARGIN_LOSS, call(x, y, w, reduction=reduction))
    if weight == "class":  # also expanded over the rows: read as the per-class weight
        assert_matches(
            MULTILABEL_SOFT_MARGIN_LOSS, call(x, y, w.expand(shape), reduction=reduction)
        )
    if weight == "full":  # and without the gradient
        assert_matches(
            MULTILABEL_SOFT_MARGIN_LOSS, call(x, y, w, reduction=reduction, need_grad=False)
        )


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (17, 33), (5, 600), (64, 10), (2, 5000)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("margin", [1.0, 0.5, 0.0, -0.5, 2.0])
def test_multi_margin_loss(shape, reduction, p, margin):
    n, c = shape
    x, t = grid(shape), torch.randint(0, c, (n,))
    assert_matches(MULTI_MARGIN_LOSS, call(x, t, None, (p, margin), reduction))


@pytest.mark.parametrize("weight", ["class", "full"])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multi_margin_loss_weighted(weight, p, reduction):
    n, c = 19, 37
    x, t = grid((n, c)), torch.randint(0, c, (n,))
    w = torch.rand(c) + 0.5 if weight == "class" else torch.rand(n, c) + 0.5
    assert_matches(MULTI_MARGIN_LOSS, call(x, t, w, (p, 1.0), reduction))
    if weight == "class":
        torch.testing.assert_close(
            run(MULTI_MARGIN_LOSS, call(x, t, w.expand(n, c), (p, 1.0), reduction)),
            run(MULTI_MARGIN_LOSS, call(x, t, w, (p, 1.0), reduction)),
        )
    assert_matches(MULTI_MARGIN_LOSS, call(x, t, w, (p, 0.25), reduction, need_grad=False))


def test_multi_margin_loss_ties_use_the_strict_subgradient():
    """z = 0 exactly (x_j = x_y - margin) is inactive: no loss, zero gradient."""
    x = torch.tensor([[1.0, 0.0, 2.0, 0.5]])
    res = assert_matches(MULTI_MARGIN_LOSS, call(x, torch.tensor([0]), None, (1, 1.0), "sum"))
    assert res.grads[0].tolist() == [[-0.5, 0.0, 0.25, 0.25]]  # j = 1 has z = 0


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (17, 33), (5, 600), (64, 10), (3, 3000)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("tail", ["pad", "junk"])
def test_multilabel_margin_loss(shape, reduction, tail):
    n, c = shape
    x, t = grid(shape), index_lists(n, c, tail=tail)
    assert_matches(MULTILABEL_MARGIN_LOSS, call(x, t, reduction=reduction))
    assert_matches(MULTILABEL_MARGIN_LOSS, call(x, t, reduction=reduction, need_grad=False))


@pytest.mark.parametrize("c", [1, 2, 3, 6, 64])
def test_multilabel_margin_loss_every_list_length(c):
    """K = 0 .. C: empty lists, all-target rows, and both sides of the kernel's switches (sorting
    by insertion or radix, counting against all keys or by search)."""
    lengths = range(c + 1) if c <= 6 else [0, 1, 2, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40, 63, 64]
    for k in lengths:
        x, t = grid((4, c)), index_lists(4, c, k, tail="junk")
        assert_matches(MULTILABEL_MARGIN_LOSS, call(x, t, reduction="none"))


def test_multilabel_margin_loss_long_lists_and_ties():
    """Radix-sorted lists of hundreds of targets; every score on a coarse grid, so many keys
    tie and many hinge arguments are exactly 0 (inactive)."""
    for k in (100, 700, 1400):
        x = (torch.randint(-8, 9, (6, 1500)) / 4).float()
        assert_matches(MULTILABEL_MARGIN_LOSS, call(x, index_lists(6, 1500, k), reduction="sum"))
    x = torch.randn(5, 300) * 1e3  # wide range: signs and exponents differ in every byte
    x[:, :50] = -x[:, :50].abs()
    assert_matches(MULTILABEL_MARGIN_LOSS, call(x, index_lists(5, 300, 200), reduction="none"))


def test_multilabel_margin_loss_duplicates_count_once_per_listing():
    x = torch.tensor([[0.1, 0.2, 0.4, 0.3, -0.5]] * 3)
    t = torch.tensor([[2, 2, 0, -1, 4], [1, 1, 1, 1, 1], [4, 0, 4, 0, -1]])
    assert_matches(MULTILABEL_MARGIN_LOSS, call(x, t, reduction="none"))


def test_multilabel_margin_loss_infinite_scores_give_torchs_result():
    """Only terms with a non-zero count are added, so 0 * inf never appears (torch: 0.15)."""
    x = torch.tensor([[0.5, -INF, 2.0, 0.1]])
    res = run(MULTILABEL_MARGIN_LOSS, call(x, torch.tensor([[0, 2, -1, -1]]), reduction="none"))
    assert res.loss.item() == pytest.approx(0.15)
    assert res.grads[0].tolist() == [[-0.25, 0.0, 0.0, 0.25]]


VALUES = [INF, -INF, NAN, 0.5, 3.0]


@pytest.mark.parametrize("name", [MULTI_MARGIN_LOSS, MULTILABEL_MARGIN_LOSS])
def test_hinge_losses_with_inf_and_nan_scores_match_torch_float32(name):
    """Every mix of +-inf, NaN and finite scores gives torch's float32 loss and gradient: both
    ignore pairs whose hinge argument is NaN, and both give +inf for an active infinite pair
    (torch gives no NaN in any of these cases)."""
    import itertools

    rows = [list(v) + [0.2] for v in itertools.product(VALUES, repeat=3)]
    x = torch.tensor(rows)
    n = x.shape[0]
    if name == MULTI_MARGIN_LOSS:
        cases = [(torch.full((n,), y), (p, 1.0)) for y in (0, 3) for p in (1, 2)]
    else:
        cases = [
            (torch.tensor([t] * n), ())
            for t in ([0, -1, -1, -1], [0, 1, -1, -1], [2, 0, 0, -1], [3, -1, 0, 0])
        ]
    for target, options in cases:
        res = run(name, call(x, target, None, options, "none"))
        xr = x.clone().requires_grad_()
        kwargs = {"p": options[0], "margin": options[1]} if name == MULTI_MARGIN_LOSS else {}
        ref = getattr(TF, name)(xr, target, reduction="none", **kwargs)
        ref.sum().backward()
        torch.testing.assert_close(res.loss, ref.detach(), equal_nan=True, rtol=1e-6, atol=0)
        torch.testing.assert_close(res.grads[0], xr.grad, equal_nan=True, rtol=1e-6, atol=0)


def test_logistic_losses_with_inf_and_nan_scores():
    """torch's values, except the soft margin gradient at y x = -inf: torch computes inf / inf
    = NaN there, the kernel gives the limit -y."""
    x = torch.tensor([[INF, -INF, NAN, INF, -INF, NAN]])
    y = torch.tensor([[1.0, 1, 1, -1, -1, -1]])
    res = run(SOFT_MARGIN_LOSS, call(x, y, reduction="none"))
    assert res.loss.tolist()[0][:2] == [0, INF] and res.loss.tolist()[0][3:5] == [INF, 0]
    assert res.grads[0].tolist()[0][:2] == [0, -1] and res.grads[0].tolist()[0][3:5] == [1, 0]
    assert res.loss[0, 2].isnan() and res.grads[0][0, 5].isnan()
    y01 = (y + 1) / 2
    res = run(
        MULTILABEL_SOFT_MARGIN_LOSS,
        call(x.reshape(-1, 1).contiguous(), y01.reshape(-1, 1).contiguous(), reduction="none"),
    )
    xr = x.reshape(-1, 1).clone().requires_grad_()
    ref = TF.multilabel_soft_margin_loss(xr, y01.reshape(-1, 1), reduction="none")
    ref.sum().backward()
    torch.testing.assert_close(res.loss, ref.detach(), equal_nan=True)
    torch.testing.assert_close(res.grads[0], xr.grad, equal_nan=True)


@pytest.mark.parametrize(
    "name",
    [SOFT_MARGIN_LOSS, MULTILABEL_SOFT_MARGIN_LOSS, MULTI_MARGIN_LOSS, MULTILABEL_MARGIN_LOSS],
)
def test_one_class_and_no_rows(name):
    target = {
        SOFT_MARGIN_LOSS: pm1((5, 1)),
        MULTILABEL_SOFT_MARGIN_LOSS: torch.ones(5, 1),
        MULTI_MARGIN_LOSS: torch.zeros(5, dtype=torch.int64),
        MULTILABEL_MARGIN_LOSS: torch.tensor([[0], [-1], [0], [0], [-1]]),
    }[name]
    options = (1, 1.0) if name == MULTI_MARGIN_LOSS else ()
    assert_matches(name, call(grid((5, 1)), target, None, options, "none"))
    # N = 0: the kernels handle it (the backend selector normally keeps empty calls away)
    empty_target = {
        SOFT_MARGIN_LOSS: torch.empty(0, 4),
        MULTILABEL_SOFT_MARGIN_LOSS: torch.empty(0, 4),
        MULTI_MARGIN_LOSS: torch.empty(0, dtype=torch.int64),
        MULTILABEL_MARGIN_LOSS: torch.empty(0, 4, dtype=torch.int64),
    }[name]
    for reduction in REDUCTIONS:
        res = run(name, call(torch.empty(0, 4), empty_target, None, options, reduction))
        assert res.bad_labels == 0 and res.grads[0].shape == (0, 4)
        if reduction == "mean":
            assert res.loss.isnan()
        elif reduction == "sum":
            assert res.loss == 0
        else:
            assert res.loss.shape == ((0, 4) if name == SOFT_MARGIN_LOSS else (0,))


@pytest.mark.parametrize(
    "name",
    [SOFT_MARGIN_LOSS, MULTILABEL_SOFT_MARGIN_LOSS, MULTI_MARGIN_LOSS, MULTILABEL_MARGIN_LOSS],
)
def test_no_classes_is_safe(name):
    """C = 0 (refused upstream for most losses): no crash, every output written."""
    target = {
        SOFT_MARGIN_LOSS: torch.empty(3, 0),
        MULTILABEL_SOFT_MARGIN_LOSS: torch.empty(3, 0),
        MULTI_MARGIN_LOSS: torch.zeros(3, dtype=torch.int64),
        MULTILABEL_MARGIN_LOSS: torch.empty(3, 0, dtype=torch.int64),
    }
    options = (1, 1.0) if name == MULTI_MARGIN_LOSS else ()
    weight = torch.empty(0) if name in (MULTILABEL_SOFT_MARGIN_LOSS, MULTI_MARGIN_LOSS) else None
    for reduction in REDUCTIONS:
        res = run(name, call(torch.empty(3, 0), target[name], weight, options, reduction))
        assert res.grads[0].shape == (3, 0)
        assert res.bad_labels == (3 if name == MULTI_MARGIN_LOSS else 0)  # class 0 of 0 classes


@pytest.mark.parametrize(
    "name",
    [SOFT_MARGIN_LOSS, MULTILABEL_SOFT_MARGIN_LOSS, MULTI_MARGIN_LOSS, MULTILABEL_MARGIN_LOSS],
)
def test_gradient_is_for_a_unit_upstream_with_the_reduction_folded_in(name):
    n, c = 12, 9
    x = grid((n, c))
    target = {
        SOFT_MARGIN_LOSS: pm1((n, c)),
        MULTILABEL_SOFT_MARGIN_LOSS: torch.rand(n, c).round(),
        MULTI_MARGIN_LOSS: torch.randint(0, c, (n,)),
        MULTILABEL_MARGIN_LOSS: index_lists(n, c),
    }[name]
    options = (2, 1.0) if name == MULTI_MARGIN_LOSS else ()
    results = {r: run(name, call(x, target, None, options, r)) for r in REDUCTIONS}
    n_terms = x.numel() if name == SOFT_MARGIN_LOSS else n
    torch.testing.assert_close(results["sum"].grads[0], results["none"].grads[0])
    torch.testing.assert_close(results["mean"].grads[0] * n_terms, results["sum"].grads[0])
    torch.testing.assert_close(results["mean"].loss * n_terms, results["sum"].loss)
    torch.testing.assert_close(results["none"].loss.double().sum().float(), results["sum"].loss)
    assert grad_scale(SPECS[name], call(x, target, None, options, "mean")) == 1 / n_terms


def test_inputs_are_not_modified_and_outputs_are_fresh():
    x, y = torch.randn(5, 9), pm1((5, 9))
    x0, y0 = x.clone(), y.clone()
    a = run(SOFT_MARGIN_LOSS, call(x, y))
    b = run(SOFT_MARGIN_LOSS, call(x, y))
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert a.grads[0].data_ptr() != b.grads[0].data_ptr() != x.data_ptr()


@pytest.mark.parametrize("name", [MULTI_MARGIN_LOSS, MULTILABEL_MARGIN_LOSS])
def test_other_integer_target_dtypes_are_converted(name):
    x = grid((6, 5))
    t = torch.randint(0, 5, (6,)) if name == MULTI_MARGIN_LOSS else index_lists(6, 5)
    options = (1, 1.0) if name == MULTI_MARGIN_LOSS else ()
    ref = run(name, call(x, t, None, options, "none"))
    for dtype in (torch.int32, torch.int16, torch.uint8):
        if dtype == torch.uint8 and name == MULTILABEL_MARGIN_LOSS:
            continue  # no -1 in uint8
        res = run(name, call(x, t.to(dtype), None, options, "none"))
        assert torch.equal(res.loss, ref.loss) and torch.equal(res.grads[0], ref.grads[0])


def test_large_shapes():
    torch.manual_seed(1)
    x = torch.randn(256, 4096) * 2
    assert_matches(SOFT_MARGIN_LOSS, call(x, pm1(x.shape)))
    assert_matches(
        MULTILABEL_SOFT_MARGIN_LOSS, call(x, torch.rand(x.shape).round(), torch.rand(4096))
    )
    assert_matches(
        MULTI_MARGIN_LOSS, call(grid((256, 4096)), torch.randint(0, 4096, (256,)), None, (1, 1.0))
    )
    for k in (16, 1024):
        xm = grid((8, 2048))
        assert_matches(MULTILABEL_MARGIN_LOSS, call(xm, index_lists(8, 2048, k), reduction="none"))


@pytest.mark.parametrize(
    "name", [MULTILABEL_SOFT_MARGIN_LOSS, MULTI_MARGIN_LOSS, MULTILABEL_MARGIN_LOSS]
)
def test_float64_row_losses_through_the_abi(name):
    """The optional ``rows`` output of the C ABI: each row's loss in float64 (run() itself asks
    only for the float32 loss)."""
    n, c = 40, 300  # long rows; and below, short rows in blocks
    for shape in ((n, c), (n, 7)):
        x = grid(shape)
        target = {
            MULTILABEL_SOFT_MARGIN_LOSS: torch.rand(shape),
            MULTI_MARGIN_LOSS: torch.randint(0, shape[1], (n,)),
            MULTILABEL_MARGIN_LOSS: index_lists(*shape),
        }[name]
        options = (2, 0.5) if name == MULTI_MARGIN_LOSS else ()
        k = native._kernel(name)
        loss, rows = torch.empty(n), torch.empty(n, dtype=torch.float64)
        args = native._CALL.pack(
            x.data_ptr(),
            0,
            0,
            0,
            0,
            0,
            target.data_ptr(),
            0,
            0,
            n,
            shape[1],
            shape[1],  # t_cols: the full target (ignored by a 1-D target's kernel)
            *options,
            *(0.0,) * (4 - len(options)),
            1.0,
            0,
            1,
            loss.data_ptr(),
            rows.data_ptr(),
        )
        assert k.fn(args) == 0
        ref, _ = reference(name, call(x, target, None, options, "none"))
        torch.testing.assert_close(rows, ref, rtol=1e-6, atol=1e-9)  # float32 terms
        assert torch.equal(loss, rows.float())


# ----------------------------------------------------------------------------------------------
# accuracy of the logistic math


def test_logistic_accuracy_over_the_whole_range():
    """Loss and gradient within 6e-7 relative of float64 math from -1e4 to 1e4 (tiny tails, the
    flush below the normal range and the kinks of the range reduction included)."""
    m = torch.cat(
        [
            torch.linspace(-110, 110, 400_001),
            torch.tensor([-1e4, -1e3, 1e3, 1e4, 0.0]),
            torch.logspace(-8, 0, 2000),
            -torch.logspace(-8, 0, 2000),
        ]
    )
    md = m.double()
    tiny = torch.finfo(torch.float32).tiny

    def check(got, ref):
        got = got.double()
        normal = ref.abs() > tiny  # below the normal range only absolute accuracy is meaningful
        assert torch.isfinite(got).all()
        rel = ((got - ref).abs() / ref.abs())[normal]
        assert rel.max() < 6e-7, float(rel.max())
        assert (got - ref).abs()[~normal].max() < tiny

    x = m.reshape(1, -1)
    for y in (1.0, -1.0):
        res = run(SOFT_MARGIN_LOSS, call(x, torch.full_like(x, y), reduction="none"))
        ym = y * md
        check(res.loss[0], ym.neg().clamp_min(0) + torch.log1p(torch.exp(-ym.abs())))
        check(res.grads[0][0], -y * torch.sigmoid(-ym))
    xc = m.reshape(-1, 1)  # one class per row: the row loss is the element's loss
    for y in (0.0, 1.0):
        res = run(MULTILABEL_SOFT_MARGIN_LOSS, call(xc, torch.full_like(xc, y), reduction="none"))
        check(res.loss, (md.clamp_min(0) - y * md) + torch.log1p(torch.exp(-md.abs())))
        check(res.grads[0][:, 0], (1 - y) * torch.sigmoid(md) - y * torch.sigmoid(-md))


# ----------------------------------------------------------------------------------------------
# threads


@pytest.mark.parametrize(
    "name",
    [SOFT_MARGIN_LOSS, MULTILABEL_SOFT_MARGIN_LOSS, MULTI_MARGIN_LOSS, MULTILABEL_MARGIN_LOSS],
)
def test_any_thread_count_gives_bitwise_identical_results(name):
    shapes = (
        [(96, 4099), (1, 300_000), (5000, 20)]
        if name in (SOFT_MARGIN_LOSS, MULTILABEL_SOFT_MARGIN_LOSS)
        else [(96, 4099)]
    )
    saved = torch.get_num_threads()
    try:
        for n, c in shapes:
            x = torch.randn(n, c) * 4
            target = {
                SOFT_MARGIN_LOSS: pm1((n, c)),
                MULTILABEL_SOFT_MARGIN_LOSS: torch.rand(n, c).round(),
                MULTI_MARGIN_LOSS: torch.randint(0, c, (n,)),
                MULTILABEL_MARGIN_LOSS: index_lists(n, c, 40),
            }[name]
            options = (2, 0.5) if name == MULTI_MARGIN_LOSS else ()
            results = {}
            for threads in (1, 2, 3):
                torch.set_num_threads(threads)
                for reduction in REDUCTIONS:
                    a = run(name, call(x, target, None, options, reduction))
                    b = run(name, call(x, target, None, options, reduction))
                    assert torch.equal(a.loss, b.loss) and torch.equal(a.grads[0], b.grads[0])
                    results[threads, reduction] = a
            for (_, reduction), res in results.items():
                ref = results[1, reduction]
                assert torch.equal(res.loss, ref.loss), reduction
                assert torch.equal(res.grads[0], ref.grads[0]), reduction
    finally:
        torch.set_num_threads(saved)


# ----------------------------------------------------------------------------------------------
# target forms besides the full one: one broadcast value, narrow index lists


def same(a, b):
    """Bitwise equal results: loss, gradient, bad-label count."""
    assert torch.equal(a.loss, b.loss)
    for ga, gb in zip(a.grads, b.grads, strict=True):
        assert (ga is None and gb is None) or torch.equal(ga, gb)
    assert a.bad_labels == b.bad_labels


# short rows (blocks of rows), long rows, rows of several chunks
@pytest.mark.parametrize("shape", [(7, 5), (33, 128), (9, 300), (3, 40_000)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multilabel_soft_margin_broadcast_value_is_the_full_target(shape, reduction):
    """A target of all strides 0 (marginloss.sparse's zero target) is read as its one value:
    bitwise the full target holding it, with weights, pos_weight and label smoothing, with
    and without the gradient; a bad value counts once per element."""
    n, c = shape
    x = torch.randn(shape) * 4
    pw = torch.rand(c) * 3
    for value in (0.0, 0.25, 1.0):
        one = torch.tensor(value).expand(shape)
        assert one.stride() == (0, 0)
        full = torch.full(shape, value)
        for w in (None, torch.rand(c) + 0.5, torch.rand(shape) + 0.5):
            for extras in ((), (pw, 0.0), (None, 0.1), (pw, 0.2)):
                for need in (True, False):
                    a = call(x, one, w, reduction=reduction, need_grad=need)._replace(
                        extras=extras)
                    b = a._replace(target=full)
                    same(run(MULTILABEL_SOFT_MARGIN_LOSS, a), run(MULTILABEL_SOFT_MARGIN_LOSS, b))
    zero = call(x, torch.tensor(0.0).expand(shape), reduction=reduction)
    assert_matches(MULTILABEL_SOFT_MARGIN_LOSS, zero._replace(target=torch.zeros(shape)))
    assert_matches(MULTILABEL_SOFT_MARGIN_LOSS, zero)
    for bad in (2.0, NAN, -0.5):
        res = run(MULTILABEL_SOFT_MARGIN_LOSS, call(x, torch.tensor(bad).expand(shape)))
        assert res.bad_labels == n * c


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multilabel_margin_narrow_target_is_the_padded_one(reduction):
    """An (N, W) index target, W <= C, is read as the -1-padded (N, C) one: bitwise, short and
    long lists (counted or searched), rows that fill all W entries (no -1), junk after a -1."""
    for n, c, k in ((6, 9, None), (40, 300, 8), (12, 2048, 200), (5, 64, 64)):
        x = grid((n, c))
        full = index_lists(n, c, k, tail="junk")
        lengths = (full < 0).int().argmax(1).where((full < 0).any(1), torch.tensor(c))
        for w in sorted({1, int(lengths.max()), int(lengths.max()) + 1, c - 1}):
            if not 1 <= w < c:
                continue
            narrow = full[:, :w].contiguous()
            padded = torch.cat([narrow, torch.full((n, c - w), -1)], 1)  # the same lists
            for need in (False, True):
                a = run(MULTILABEL_MARGIN_LOSS, call(x, narrow, reduction=reduction,
                                                     need_grad=need))
                same(a, run(MULTILABEL_MARGIN_LOSS, call(x, padded, reduction=reduction,
                                                         need_grad=need)))
            loss, grad = reference(MULTILABEL_MARGIN_LOSS, call(x, padded, reduction=reduction))
            torch.testing.assert_close(a.loss.double(), loss, rtol=2e-6, atol=1e-6)
            torch.testing.assert_close(a.grads[0].double(), grad, rtol=2e-6, atol=1e-8)


def test_multilabel_margin_narrow_bad_entries_are_counted_and_never_read():
    """Out-of-range entries of a narrow target: counted (in all W entries of a row), skipped
    before the first -1, never read; a narrow target of 0s and 1s is a list, not a mask."""
    c = 50
    x = grid((3, c))
    t = torch.tensor([[2**62, 4, -(2**62)], [7, c, 3], [1, 0, 1]])
    res = run(MULTILABEL_MARGIN_LOSS, call(x, t, reduction="none"))
    assert res.bad_labels == 3  # 2**62, c, -(2**62); row 2 (only 0 and 1) is a list
    clean = torch.tensor([[4, -1, -1], [7, 3, -1], [1, 0, 1]])  # what the rows list
    same(res._replace(bad_labels=0), run(MULTILABEL_MARGIN_LOSS, call(x, clean, reduction="none")))
    huge = torch.full((3, c - 1), 2**62)  # no -1 at all: every entry skipped, none read
    res = run(MULTILABEL_MARGIN_LOSS, call(x, huge, reduction="none"))
    assert res.bad_labels == 3 * (c - 1) and (res.loss == 0).all() and (res.grads[0] == 0).all()


def test_target_forms_are_accepted_exactly_where_declared():
    """What the forms allow (metadata only): the broadcast value for the multilabel soft margin
    loss only, the narrow target for the multilabel margin loss only; nothing else."""
    soft, mlsm, mlm = (SPECS[SOFT_MARGIN_LOSS], SPECS[MULTILABEL_SOFT_MARGIN_LOSS],
                       SPECS[MULTILABEL_MARGIN_LOSS])
    x = torch.randn(4, 6)
    zero = torch.tensor(0.0).expand(4, 6)
    lists = index_lists(4, 6, 2)
    accepted = [(mlsm, zero), (mlm, lists[:, :3].contiguous()), (mlm, lists[:, :1].int())]
    for spec, t in accepted:
        assert native.unavailable(spec, call(x, t)) is None
    refused = [
        (soft, zero, "contiguous target"),  # no forms declared
        (mlsm, torch.rand(6).expand(4, 6), "one value broadcast"),  # stride (0, 1)
        (mlsm, torch.rand(4, 1).expand(4, 6), "one value broadcast"),  # stride (1, 0)
        (mlsm, torch.rand(6, 4).t(), "one value broadcast"),
        (mlsm, torch.tensor(0.0, dtype=torch.float64).expand(4, 6), "torch.float32 target"),
        (mlsm, torch.rand(4, 3), "target of shape (4, 6) (not broadcast)"),  # not narrow
        (mlm, lists[:, :3], "contiguous target"),  # a view of the wide rows
        (mlm, lists.t().contiguous().t(), "contiguous target"),
        (mlm, torch.tensor(-1).expand(4, 6), "contiguous target"),  # no broadcast form
        (mlm, torch.full((4, 7), -1), "(N, W) with 1 <= W <= C"),  # wider than C
        (mlm, torch.full((4, 0), -1), "(N, W) with 1 <= W <= C"),
        (mlm, torch.full((3, 2), -1), "(N, W) with 1 <= W <= C"),
    ]
    for spec, t, why in refused:
        problem = native.unavailable(spec, call(x, t))
        assert problem is not None and why in problem, (why, problem)


# ----------------------------------------------------------------------------------------------
# the fused label check: counts, and memory safety


def test_soft_margin_bad_labels():
    y = pm1((40, 50))
    bad = [0.0, 2.0, -2.0, 0.5, NAN, INF, -0.0]
    y.view(-1)[torch.randperm(y.numel())[: len(bad)]] = torch.tensor(bad)
    assert run(SOFT_MARGIN_LOSS, call(torch.randn(40, 50), y)).bad_labels == len(bad)
    assert run(SOFT_MARGIN_LOSS, call(torch.randn(40, 50), pm1((40, 50)))).bad_labels == 0


def test_multilabel_soft_margin_bad_labels():
    y = torch.rand(40, 50)
    y[0, :3] = torch.tensor([0.0, 1.0, -0.0])  # fine
    bad = [-0.1, 1.1, NAN, INF, -INF]
    y[1, : len(bad)] = torch.tensor(bad)
    assert run(MULTILABEL_SOFT_MARGIN_LOSS, call(torch.randn(40, 50), y)).bad_labels == len(bad)


def test_multi_margin_bad_targets_are_counted_and_never_read():
    n, c = 8, 5
    x = grid((n, c))
    t = torch.randint(0, c, (n,))
    t[[1, 3, 4, 6]] = torch.tensor([-1, c, 2**62, -(2**63)])
    good = torch.tensor([0, 2, 5, 7])
    for weight in (None, torch.rand(c), torch.rand(n, c)):
        res = run(MULTI_MARGIN_LOSS, call(x, t, weight, (1, 1.0), "none"))
        assert res.bad_labels == 4
        assert (res.loss[[1, 3, 4, 6]] == 0).all() and (res.grads[0][[1, 3, 4, 6]] == 0).all()
        w_good = weight[good].contiguous() if weight is not None and weight.dim() == 2 else weight
        ref = run(
            MULTI_MARGIN_LOSS,
            call(x[good].contiguous(), t[good].contiguous(), w_good, (1, 1.0), "none"),
        )
        assert torch.equal(res.loss[good], ref.loss)
        assert torch.equal(res.grads[0][good], ref.grads[0])


def test_multilabel_margin_bad_entries_are_counted_and_never_read():
    c = 6
    t = torch.tensor(
        [
            [0, 2**62, 3, -1, 7, -2],  # 2**62 before the -1: skipped; 3 counted
            [1, -1, 2**62, -(2**62), 0, 0],  # bad entries after the -1 count too
            [-5, 1, 2, -1, -1, -1],  # -5 ends the list, and is bad
            [c, -1, -1, -1, -1, -1],
        ]
    )
    x = grid((4, c))
    res = run(MULTILABEL_MARGIN_LOSS, call(x, t, reduction="none"))
    assert res.bad_labels == 3 + 2 + 1 + 1
    # the out-of-range entries are skipped: row 0 is the list [0, 3]
    clean = torch.tensor([[0, 3, -1, -1, -1, -1]])
    ref = run(MULTILABEL_MARGIN_LOSS, call(x[:1].contiguous(), clean, reduction="none"))
    assert torch.equal(res.loss[:1], ref.loss) and torch.equal(res.grads[0][:1], ref.grads[0])


@pytest.mark.parametrize(
    "target, c, expected",
    [
        ([[0, 0, 0], [0, 0, 0]], 3, 1),  # only 0s and 1s with C > 2: a 0/1 mask, one more
        ([[1, 0, 1, 1], [0, 1, 1, 0]], 4, 1),
        ([[1, 0], [0, 1]], 2, 0),  # C = 2: a valid list
        ([[1, 0, -1], [0, 1, 1]], 3, 0),  # a -1: not a mask
        ([[1, 0, 2], [0, 1, 1]], 3, 0),
        ([[1, 0, 5], [0, 1, 1]], 3, 1),  # one out of range, not all 0/1
    ],
)
def test_multilabel_margin_mask_rule(target, c, expected):
    t = torch.tensor(target)
    assert run(MULTILABEL_MARGIN_LOSS, call(grid(t.shape), t)).bad_labels == expected


# ----------------------------------------------------------------------------------------------
# what the backend accepts


def test_unavailable_says_why():
    x, y = torch.randn(4, 6), pm1((4, 6))
    soft, multi, multilabel_soft = (
        SPECS[SOFT_MARGIN_LOSS],
        SPECS[MULTI_MARGIN_LOSS],
        SPECS[MULTILABEL_SOFT_MARGIN_LOSS],
    )
    t = torch.randint(0, 6, (4,))
    cases = [
        (soft, call(x.double(), y.double()), "float32 inputs"),
        (soft, call(torch.empty(4, 6, device="meta"), y), "run on the CPU"),
        (soft, call(x.t(), y.t()), "contiguous inputs"),
        (soft, call(x, y[:1].expand(4, 6)), "contiguous target"),
        (soft, call(x, y[0]), "target of shape (4, 6)"),
        (soft, call(x, y.double()), "torch.float32 target"),
        (soft, call(x, y, torch.ones(6)), "takes no weight"),
        (multi, call(x, t.float(), None, (1, 1.0)), "torch.int64 target"),
        (multi, call(x, t, torch.ones(6).double(), (1, 1.0)), "float32 CPU weight"),
        (multi, call(x, t, torch.ones(5), (1, 1.0)), "weight of shape (C,) or (N, C)"),
        (multi, call(x, t, None, (3, 1.0)), "p = 1 or p = 2"),
        (multi, call(x, t, None, (1,)), "takes 2 options"),
        (multilabel_soft, call(x, y.abs(), torch.ones(6, 4).t()), "contiguous weight"),
        (multilabel_soft, call(x, y.abs(), torch.ones(4, 12)[:, ::2]), "contiguous weight"),
    ]
    for spec, c, why in cases:
        problem = native.unavailable(spec, c)
        assert problem is not None and why in problem, (why, problem)
    assert native.unavailable(multi, call(x, t.int(), None, (2, 0.0))) is None
    assert native.unavailable(multilabel_soft, call(x, y.abs(), torch.ones(4, 6))) is None


# ----------------------------------------------------------------------------------------------
# building, caching, forking (in fresh processes)


def _python(code: str, **env) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


_PROBE = """
    import torch
    from marginloss.backends import native
    from marginloss.losses import LOSSES, Call
    spec = LOSSES[0]
    x = torch.randn(3, 4)
    print(native.status())
    print(native.unavailable(spec, Call((x,), torch.ones(3, 4), None, (), "mean", (True,))))
"""


@pytest.mark.parametrize(
    "env, why",
    [
        ({"MARGINLOSS_NATIVE": "0"}, "MARGINLOSS_NATIVE=0"),
        ({"CC": "no-such-compiler-xyz"}, "no C compiler"),
    ],
)
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths")
def test_disabled_or_without_compiler_is_unavailable_and_says_why(tmp_path, env, why):
    done = _python(_PROBE, MARGINLOSS_CACHE_DIR=str(tmp_path / "c"), **env)
    assert done.returncode == 0, done.stderr
    status, problem = done.stdout.splitlines()
    assert why in status and problem == status
    assert not (tmp_path / "c").exists()  # nothing was built


def test_built_once_into_the_cache_then_loaded(tmp_path):
    """Importing builds nothing; the first need builds one library; the next process loads it."""
    code = """
        import os
        cache = os.environ["MARGINLOSS_CACHE_DIR"]
        import marginloss, marginloss.backends.native as native
        assert not os.path.exists(cache), "import must not build"
        assert native.status() is None
        print(sorted(os.listdir(cache)))
    """
    env = {"MARGINLOSS_CACHE_DIR": str(tmp_path / "cache")}
    first = _python(code, **env)
    assert first.returncode == 0, first.stderr
    (lib,) = (tmp_path / "cache").iterdir()
    assert lib.suffix == ".so"
    stamp = lib.stat().st_mtime_ns
    second = _python(
        code.replace('assert not os.path.exists(cache), "import must not build"', "pass"), **env
    )
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout and lib.stat().st_mtime_ns == stamp


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_runs_serially_instead_of_hanging():
    """libgomp's threads do not survive fork (torch's own ops hang in such a child); the
    backend notices the fork and runs on one thread there, with the same results."""
    code = """
        import os, torch
        from marginloss.backends import native
        from marginloss.losses import LOSSES, Call
        torch.set_num_threads(2)
        spec = {s.name: s for s in LOSSES}["soft_margin_loss"]
        x, y = torch.randn(1024, 512), torch.ones(1024, 512)
        c = Call((x,), y, None, (), "mean", (True,))
        parent = native.run(spec, c)  # the parent's OpenMP team starts
        pid = os.fork()
        if pid == 0:
            child = native.run(spec, c)  # torch still says 2 threads
            torch.set_num_threads(1)  # torch's own ops would hang here with 2
            ok = torch.equal(child.loss, parent.loss) and torch.equal(child.grads[0],
                                                                       parent.grads[0])
            os._exit(0 if ok else 3)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """
    done = _python(code)
    assert done.returncode == 0 and done.stdout.strip() == "0", (done.stdout, done.stderr)


# ----------------------------------------------------------------------------------------------
# the elementwise pair losses: hinge embedding (one input), margin ranking (two inputs)

HINGE_EMBEDDING_LOSS, MARGIN_RANKING_LOSS = "hinge_embedding_loss", "margin_ranking_loss"
PAIR_LOSSES = (HINGE_EMBEDDING_LOSS, MARGIN_RANKING_LOSS)


def pair_inputs(name, shape):
    """The loss's inputs: grid scores, the second input of a pair off by 1/32 (no kinks)."""
    if name == HINGE_EMBEDDING_LOSS:
        return grid(shape) + 1 / 32
    return (grid(shape) + 1 / 32, grid(shape))


@pytest.mark.parametrize("need", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (64, 300), (2, 70_000)])
@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_pair_losses(name, shape, reduction, need):
    """Loss and every input's gradient (each one alone, both, none) for several chunk counts."""
    xs = pair_inputs(name, shape)
    c = call(xs, pm1(shape), None, (0.5,), reduction)
    c = c._replace(need_grad=need[: len(c.inputs)])
    assert_matches(name, c)


@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_pair_losses_compute_torchs_value_for_any_label(name):
    """Labels outside {-1, +1} (validate=False): torch's value, and each one counted."""
    shape = (4, 6)
    y = torch.tensor([1.0, -1.0, 0.0, 2.0, 0.5, -3.0]).repeat(4, 1)
    xs = pair_inputs(name, shape)
    assert_matches(name, call(xs, y, None, (0.25,), "none"), bad=16)
    assert_matches(name, call(xs, y, None, (0.25,), "sum"), bad=16)
    y[:, 5] = NAN  # NaN where torch has NaN (margin ranking's gradients are products with y)
    res = run(name, call(xs, y, None, (0.25,), "none"))
    ref_loss, ref_grads = references(name, call(xs, y, None, (0.25,), "none"))
    assert res.bad_labels == 16
    torch.testing.assert_close(res.loss.double(), ref_loss, equal_nan=True)
    for g, r in zip(res.grads, ref_grads, strict=True):
        torch.testing.assert_close(g.double(), r, equal_nan=True)


@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_pair_losses_kink_passes_the_gradient_like_torch(name):
    """At z = 0 exactly torch's clamp_min passes the gradient (unlike the class hinges)."""
    if name == HINGE_EMBEDDING_LOSS:
        c = call(torch.tensor([[1.0, 0.5, 2.0]]), torch.tensor([[-1.0, -1.0, -1.0]]),
                 None, (1.0,), "sum")
        res = assert_matches(name, c)
        assert res.grads[0].tolist() == [[-1.0, -1.0, 0.0]]
    else:
        c = call((torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 1.0]])),
                 torch.tensor([[1.0, 1.0]]), None, (0.0, ), "sum")
        res = assert_matches(name, c)
        assert res.grads[0].tolist() == [[-1.0, 0.0]] and res.grads[1].tolist() == [[1.0, 0.0]]


@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_pair_losses_with_inf_and_nan_scores_match_torch(name):
    x = torch.tensor([[-INF, INF, NAN, 0.0, 1e30, -1e30]])
    y = torch.tensor([[1.0, -1.0, -1.0, 1.0, -1.0, 1.0]])
    xs = x if name == HINGE_EMBEDDING_LOSS else (x, x.flip(1))
    for y_ in (y, -y):
        res = run(name, call(xs, y_, None, (1.0,), "none"))
        ref_loss, ref_grads = references(name, call(xs, y_, None, (1.0,), "none"))
        torch.testing.assert_close(res.loss.double(), ref_loss, equal_nan=True)
        for g, r in zip(res.grads, ref_grads, strict=True):
            torch.testing.assert_close(g.double(), r, equal_nan=True)


@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_pair_losses_any_thread_count_gives_bitwise_identical_results(name):
    saved = torch.get_num_threads()
    try:
        for shape in ((96, 4099), (1, 300_000)):
            xs = pair_inputs(name, shape)
            y = pm1(shape)
            results = {}
            for threads in (1, 2, 3):
                torch.set_num_threads(threads)
                for reduction in REDUCTIONS:
                    results[threads, reduction] = run(name, call(xs, y, None, (0.5,), reduction))
            for (_, reduction), res in results.items():
                ref = results[1, reduction]
                assert torch.equal(res.loss, ref.loss), reduction
                assert all(torch.equal(a, b) for a, b in zip(res.grads, ref.grads, strict=True))
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_pair_losses_empty(name):
    xs = pair_inputs(name, (0, 4))
    for reduction in REDUCTIONS:
        res = run(name, call(xs, torch.empty(0, 4), None, (1.0,), reduction))
        assert res.bad_labels == 0 and all(g.shape == (0, 4) for g in res.grads)
        if reduction == "mean":
            assert res.loss.isnan()
        elif reduction == "sum":
            assert res.loss == 0
        else:
            assert res.loss.shape == (0, 4)
