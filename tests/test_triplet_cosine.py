"""triplet_margin_loss, triplet_margin_with_distance_loss and cosine_embedding_loss against torch.

The oracle is torch's own function (float64 unless said otherwise). Every test compares the
loss and the gradient of every differentiable input (anchor, positive, negative; input1,
input2) for a random upstream gradient, on each backend a CPU call can take: the torch ops, the
native C kernels (float32) and the Triton kernels under the interpreter (marker ``interpret``,
needs ``TRITON_INTERPRET=1``). Inputs are random floats, so no row sits exactly on a hinge kink
or a swap tie; the tests at the kinks and ties are written by hand.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as TF
from helpers import TOL

import marginloss
import marginloss.functional as F
from marginloss.backends import native
from marginloss.errors import DtypeError, LabelError, ShapeError

TRITON = pytest.param("triton", marks=[
    pytest.mark.interpret,
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                       reason="Triton kernels on CPU need TRITON_INTERPRET=1"),
])
NATIVE = pytest.param("native", marks=pytest.mark.skipif(
    native.status() is not None, reason="the native kernels cannot be built here"))
REDUCTIONS = ["none", "mean", "sum"]


def close(a, b, dtype=None):
    rtol, atol = TOL[dtype or a.dtype]
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a.to(b.dtype), b, rtol=rtol, atol=atol, equal_nan=True)


def compare(ours, ref, tensors, *, dtype=None, ref_dtype=torch.float64, upstream=None,
            n_grad=None):
    """Loss and the gradient of every tensor in ``tensors`` (a tuple; the first ``n_grad``
    only, when given): ours on the tensors as they are, torch's on them in ``ref_dtype``;
    compared with ``dtype``'s tolerance."""
    n_grad = len(tensors) if n_grad is None else n_grad
    xa = [t.detach().clone().requires_grad_(i < n_grad) for i, t in enumerate(tensors)]
    xb = [t.detach().to(ref_dtype).requires_grad_(i < n_grad) for i, t in enumerate(tensors)]
    a, b = ours(*xa), ref(*xb)
    g = upstream if upstream is not None else torch.rand(b.shape, dtype=torch.float64) + 0.5
    a.backward(g.to(a.dtype))
    b.backward(g.to(b.dtype))
    tol = dtype or a.dtype
    close(a, b.to(a.dtype), tol)
    for ta, tb in zip(xa, xb):
        assert (ta.grad is None) == (tb.grad is None)  # (a label gets no gradient)
        if ta.grad is not None:
            assert ta.grad.dtype == ta.dtype
            close(ta.grad, tb.grad.to(ta.dtype), tol)
    return a


def triplet(shape, dtype=torch.float64, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=g, dtype=torch.float64)
    p = a + torch.randn(shape, generator=g, dtype=torch.float64)
    n = a + 1.1 * torch.randn(shape, generator=g, dtype=torch.float64)
    return tuple((t * scale).to(dtype) for t in (a, p, n))


def pair(n, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    x2 = x1 + 1.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    y = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).to(torch.float64)
    return x1.to(dtype), x2.to(dtype), y


# ----------------------------------------------------------------------------------------------
# triplet_margin_loss: parity


TRIPLET_OPTIONS = [
    {},
    {"swap": True},
    {"p": 1, "margin": 0.5},
    {"p": 1, "swap": True, "eps": 0.0},
    {"margin": 2.0, "eps": -1e-3},
]


@pytest.mark.parametrize("backend", ["auto", "torch", NATIVE, TRITON])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", TRIPLET_OPTIONS, ids=str)
def test_triplet_matches_torch(opts, reduction, backend):
    dtype = torch.float64 if backend in ("auto", "torch") else torch.float32
    for shape in ((7, 33), (3, 1100), (1, 1)):
        compare(lambda a, p, n: F.triplet_margin_loss(a, p, n, reduction=reduction,
                                                      backend=backend, **opts),
                lambda a, p, n: TF.triplet_margin_loss(a, p, n, reduction=reduction, **opts),
                triplet(shape, dtype))


@pytest.mark.parametrize("p", [3, 0.5, math.inf])
def test_triplet_other_norms(p):
    """Any real p > 0 is a norm degree (on the torch backend; the kernels take p = 1 or 2)."""
    for dtype in (torch.float64, torch.float32):
        for swap in (False, True):
            compare(lambda a, q, n: F.triplet_margin_loss(a, q, n, p=p, swap=swap,
                                                          reduction="none"),
                    lambda a, q, n: TF.triplet_margin_loss(a, q, n, p=p, swap=swap,
                                                           reduction="none"),
                    triplet((6, 9), dtype), dtype=dtype)
    with pytest.raises(marginloss.BackendUnavailableError, match="p = 1 or p = 2"):
        F.triplet_margin_loss(*triplet((2, 3), torch.float32), p=p, backend="native")


@pytest.mark.parametrize("backend", ["torch", NATIVE])
def test_triplet_layouts(backend):
    """Every rank torch takes, broadcast inputs, non-contiguous inputs, mixed dtypes."""
    dtype = torch.float32 if backend == "native" else torch.float64

    def check(a, p, n, **kw):
        for reduction in REDUCTIONS:
            compare(lambda *t: F.triplet_margin_loss(*t, reduction=reduction, backend=backend,
                                                     **kw),
                    lambda *t: TF.triplet_margin_loss(*t, reduction=reduction, **kw),
                    (a, p, n), dtype=dtype, ref_dtype=torch.float64)

    a, p, n = triplet((4, 3, 10), dtype)
    check(a, p, n)  # (A, B, D) -> (A, B)
    check(a[0, 0], p[0, 0], n[0, 0])  # (D,) -> 0-d
    check(a[0, 0, 0], p[0, 0, 0], n[0, 0, 0])  # 0-d
    check(a[0, :1], p[0], n[0], swap=True)  # (1, D) anchor against (N, D)
    check(a[0, :, :1], p[0], n[0])  # (N, 1) broadcast over the features
    check(a[0, :, ::2], p[0, :, ::2], n[0, :, 1::2])  # non-contiguous rows
    if backend == "torch":
        a, p, n = triplet((5, 8), torch.float32)
        check(a, p.double(), n.half())  # promoted, as torch


def test_integer_embeddings_are_refused():
    """torch promotes integer embeddings; here, as for every marginloss input, they are a
    DtypeError whose fix is `.float()`."""
    a, p, n = (torch.randint(-5, 5, (4, 6)) for _ in range(3))
    with pytest.raises(DtypeError, match=r"`positive`.*positive.float\(\)"):
        F.triplet_margin_loss(a.float(), p, n.float())
    with pytest.raises(DtypeError, match=r"`input1`.*input1.float\(\)"):
        F.cosine_embedding_loss(a, p.float(), torch.ones(4))


@pytest.mark.parametrize("backend", ["torch", NATIVE, TRITON])
def test_triplet_kinks_and_ties(backend):
    """The hinge passes the gradient at 0 (clamp_min); a swap tie splits it 1/2 : 1/2, as
    torch.minimum; coincident points have distance sqrt(D) eps and a non-zero gradient."""
    dtype = torch.float32 if backend != "torch" else torch.float64
    # exact distances (eps = 0). Row 0: d(a,p) = d(a,n) = 5, active; row 1: 1 + 1 - 2 = 0,
    # at the kink; row 2: d(a,n) = d(p,n) = sqrt(2), a swap tie; row 3: a = p = n
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=dtype)
    p = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 2.0], [1.0, 1.0]], dtype=dtype)
    n = torch.tensor([[4.0, 3.0], [2.0, 0.0], [1.0, 1.0], [1.0, 1.0]], dtype=dtype)
    for margin, swap, eps in ((1.0, False, 0.0), (1.0, True, 0.0)):
        compare(lambda *t: F.triplet_margin_loss(*t, margin=margin, swap=swap, eps=eps,
                                                 reduction="sum", backend=backend),
                lambda *t: TF.triplet_margin_loss(*t, margin=margin, swap=swap, eps=eps,
                                                  reduction="sum"),
                (a, p, n), dtype=dtype)
    # coincident points with eps: distance sqrt(D) eps, gradient 1/sqrt(D) per component
    compare(lambda *t: F.triplet_margin_loss(*t, reduction="sum", backend=backend),
            lambda *t: TF.triplet_margin_loss(*t, reduction="sum"), (a[3:], p[3:], n[:1]),
            dtype=dtype)
    # exactly at the kink: margin + d(a, p) - d(a, n) = 0 -> gradient passes
    a = torch.zeros(1, 2, dtype=dtype, requires_grad=True)
    p = torch.tensor([[3.0, 4.0]], dtype=dtype)
    n = torch.tensor([[0.0, 6.0]], dtype=dtype)
    F.triplet_margin_loss(a, p, n, eps=0.0, backend=backend).backward()
    assert a.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# cosine_embedding_loss: parity


@pytest.mark.parametrize("backend", ["auto", "torch", NATIVE, TRITON])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [0.0, 0.3, -0.5])
def test_cosine_matches_torch(margin, reduction, backend):
    dtype = torch.float64 if backend in ("auto", "torch") else torch.float32
    for n, d in ((9, 40), (3, 1500), (1, 1)):
        x1, x2, y = pair(n, d, dtype)
        compare(lambda a, b: F.cosine_embedding_loss(a, b, y.to(dtype), margin=margin,
                                                     reduction=reduction, backend=backend),
                lambda a, b: TF.cosine_embedding_loss(a, b, y, margin=margin,
                                                      reduction=reduction),
                (x1, x2))


@pytest.mark.parametrize("backend", ["torch", NATIVE])
def test_cosine_layouts(backend):
    """Unbatched pairs (0-d target), broadcast inputs and targets, label dtypes, mixed input
    dtypes, as torch."""
    dtype = torch.float32 if backend == "native" else torch.float64
    x1, x2, y = pair(6, 11, dtype)
    y = y.to(dtype)
    cases = [
        ((x1[0], x2[0]), y[0]),  # (D,) pair, 0-d target -> 0-d
        ((x1[:1], x2), y),  # one vector against N
        ((x1, x2), y[:1]),  # one label for every pair
        ((x1[:1], x2[:1]), y),  # one pair, N labels -> N losses
        ((x1, x2), y.long()),
        ((x1, x2), y.to(torch.int8)),
        ((x1, x2), y.float()),
        ((x1[:, ::2], x2[:, ::2]), y),  # non-contiguous
    ]
    if backend == "torch":
        cases.append(((x1.float(), x2.double()), y))  # promoted, as torch
    for (a, b), t in cases:
        for reduction in REDUCTIONS:
            compare(lambda u, v: F.cosine_embedding_loss(u, v, t, margin=0.1,
                                                         reduction=reduction, backend=backend),
                    lambda u, v: TF.cosine_embedding_loss(u, v, t, margin=0.1,
                                                          reduction=reduction),
                    (a, b), dtype=dtype)


@pytest.mark.parametrize("backend", ["torch", NATIVE, TRITON])
def test_cosine_validate_false_computes_what_torch_computes(backend):
    """Labels outside {-1, +1} give 0, as torch; bool and integer labels too."""
    dtype = torch.float32 if backend != "torch" else torch.float64
    x1, x2, _ = pair(8, 7, dtype)
    for y in (torch.tensor([0.0, 1, 2, -1, 0.5, -2, 1, float("nan")]),
              torch.tensor([0, 1, 1, 0, 1, 0, 0, 1], dtype=torch.bool),
              torch.tensor([3, -1, 1, 0, 1, -1, 1, 1])):
        compare(lambda a, b: F.cosine_embedding_loss(a, b, y, reduction="none",
                                                     validate=False, backend=backend),
                lambda a, b: TF.cosine_embedding_loss(a, b, y, reduction="none"),
                (x1, x2), dtype=dtype)


@pytest.mark.parametrize("backend", ["torch", NATIVE, TRITON])
def test_cosine_kink_zero_vectors(backend):
    """cos == margin passes the gradient (clamp_min); zero vectors keep torch's value and its
    finite gradient."""
    dtype = torch.float32 if backend != "torch" else torch.float64
    x1 = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 2.0]], dtype=dtype)
    x2 = torch.tensor([[2.0, 0.0], [1.0, 2.0], [0.0, 0.0], [0.0, 0.0]], dtype=dtype)
    y = torch.tensor([-1.0, 1.0, -1.0, 1.0])
    m = 1.0  # row 0: cos == margin in float32 (eps vanishes in the rounding); just below in
    # float64
    a = compare(lambda u, v: F.cosine_embedding_loss(u, v, y, margin=m, reduction="sum",
                                                     backend=backend),
                lambda u, v: TF.cosine_embedding_loss(u, v, y, margin=m, reduction="sum"),
                (x1, x2), dtype=dtype)
    assert torch.isfinite(a)


# ----------------------------------------------------------------------------------------------
# every input's gradient: gradcheck in float64


def test_gradcheck_every_input():
    a, p, n = (t.requires_grad_() for t in triplet((4, 5)))
    for opts in ({}, {"swap": True}, {"p": 1}, {"p": 3, "swap": True}):
        assert torch.autograd.gradcheck(
            lambda *t: F.triplet_margin_loss(*t, reduction="none", **opts), (a, p, n))
    assert torch.autograd.gradcheck(
        lambda *t: F.triplet_margin_with_distance_loss(
            *t, distance_function=lambda x, y: 1 - TF.cosine_similarity(x, y), margin=1.5),
        (a, p, n))
    x1, x2, y = pair(5, 6)
    x1.requires_grad_()
    x2.requires_grad_()
    for margin in (0.0, -0.3):
        assert torch.autograd.gradcheck(
            lambda u, v: F.cosine_embedding_loss(u, v, y, margin=margin, reduction="none"),
            (x1, x2))


# ----------------------------------------------------------------------------------------------
# empty batches, half precision, stability


@pytest.mark.parametrize("name", ["triplet", "cosine"])
def test_empty(name):
    for n, d in ((0, 4), (3, 0)):
        for reduction in REDUCTIONS:
            if name == "triplet":
                args = tuple(torch.randn(n, d, requires_grad=True) for _ in range(3))
                ours, ref = F.triplet_margin_loss(*args, reduction=reduction), \
                    TF.triplet_margin_loss(*args, reduction=reduction)
            else:
                args = tuple(torch.randn(n, d, requires_grad=True) for _ in range(2))
                y = torch.ones(n)
                ours, ref = F.cosine_embedding_loss(*args, y, reduction=reduction), \
                    TF.cosine_embedding_loss(*args, y, reduction=reduction)
            close(ours, ref)
            grads = torch.autograd.grad(ours.sum(), args, allow_unused=True)
            assert all(g is None or g.shape == x.shape for g, x in zip(grads, args))


@pytest.mark.parametrize("backend", ["torch", TRITON])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_fp32_math(dtype, backend):
    """float16/bfloat16 give the input's dtype and torch's float32 math on the same inputs."""
    for opts in ({}, {"swap": True, "p": 1}):
        compare(lambda *t: F.triplet_margin_loss(*t, reduction="none", backend=backend, **opts),
                lambda *t: TF.triplet_margin_loss(*t, reduction="none", **opts),
                triplet((6, 40), dtype), ref_dtype=torch.float32)
    x1, x2, y = pair(6, 40, dtype)
    compare(lambda a, b: F.cosine_embedding_loss(a, b, y, margin=0.2, backend=backend),
            lambda a, b: TF.cosine_embedding_loss(a, b, y, margin=0.2),
            (x1, x2), ref_dtype=torch.float32)


@pytest.mark.parametrize("backend", ["torch", NATIVE, TRITON])
@pytest.mark.parametrize("dtype, scale", [
    (torch.float32, 1e20), (torch.float32, 1e-25), (torch.bfloat16, 1e30),
    (torch.float16, 300.0), (torch.bfloat16, 1e-30)])
def test_stable_where_torch_is_not(dtype, scale, backend):
    """Very large / very small vectors: torch's squared norms overflow (inf, NaN) or underflow
    (0) in the input's dtype; ours match torch's float64 result on the same inputs."""
    if backend == "native" and dtype != torch.float32:
        pytest.skip("the native kernels take float32")
    a, p, n = triplet((5, 16), dtype, scale=scale)
    ref = TF.triplet_margin_loss(a.double(), p.double(), n.double(), margin=scale, eps=0.0,
                                 reduction="none")
    if dtype != torch.float16:
        torch_own = TF.triplet_margin_loss(a, p, n, margin=scale, eps=0.0, reduction="none")
        assert not torch.allclose(torch_own.double(), ref, rtol=1e-2, atol=0), \
            "torch is fine here"
    compare(lambda *t: F.triplet_margin_loss(*t, margin=scale, eps=0.0, reduction="none",
                                             backend=backend),
            lambda *t: TF.triplet_margin_loss(*t, margin=scale, eps=0.0, reduction="none"),
            (a, p, n), ref_dtype=torch.float64)
    x1, x2, y = pair(6, 16, torch.float64)
    x1, x2, y = (x1 * scale).to(dtype), (x2 * scale).to(dtype), y.float()
    compare(lambda u, v: F.cosine_embedding_loss(u, v, y, reduction="none", backend=backend),
            lambda u, v: TF.cosine_embedding_loss(u, v, y, reduction="none"),
            (x1, x2), ref_dtype=torch.float64)


# ----------------------------------------------------------------------------------------------
# errors


def test_triplet_errors():
    a, p, n = triplet((2, 3), torch.float32)
    with pytest.raises(ValueError, match="margin must be greater than 0, got -1.0"):
        F.triplet_margin_loss(a, p, n, margin=-1.0)
    with pytest.raises(ValueError, match="margin must be greater than 0, got 0"):
        F.triplet_margin_loss(a, p, n, margin=0)
    with pytest.raises(ValueError, match="`p`, the degree of the norm, must be greater than 0"):
        F.triplet_margin_loss(a, p, n, p=0)
    for eps in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="`eps` must be a finite number"):
            F.triplet_margin_loss(a, p, n, eps=eps)
    with pytest.raises(ShapeError, match="anchor 2D, positive 1D, and negative 2D"):
        F.triplet_margin_loss(a, p[0], n)
    with pytest.raises(ShapeError, match=r"`anchor` \(2, 3\), `positive` \(2, 4\)"):
        F.triplet_margin_loss(a, torch.randn(2, 4), n)
    with pytest.raises(DtypeError, match="floating-point"):
        F.triplet_margin_loss(a.bool(), p, n)
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        F.triplet_margin_loss(a, p, n, reduction="abc")
    with pytest.raises(ValueError, match="expected margin to be greater than 0, got 0.0"):
        marginloss.TripletMarginLoss(margin=0.0)


@pytest.mark.parametrize("backend", ["torch", NATIVE, TRITON])
def test_cosine_label_errors(backend):
    x1, x2, _ = pair(4, 3, torch.float32)
    for y, fragments in (
        (torch.tensor([0.0, 1, 1, 0]), ("{0, 1}", "to_pm1", "validate=False")),
        (torch.tensor([1, 0, 1, 1], dtype=torch.bool), ("{0, 1}", "to_pm1")),
        (torch.tensor([1.0, 2, -1, 1]), ("{-1, 1, 2}", "torch gives a loss of 0")),
        (torch.tensor([1.0, float("nan"), -1, 1]), ("nan", "NaN")),
    ):
        with pytest.raises(LabelError) as info:
            F.cosine_embedding_loss(x1, x2, y, backend=backend)
        for fragment in ("cosine_embedding_loss", "`target`", *fragments):
            assert fragment in str(info.value)


def test_cosine_shape_errors():
    x1, x2, y = pair(4, 3, torch.float32)
    with pytest.raises(ShapeError, match="0D or 1D target tensor expected"):
        F.cosine_embedding_loss(x1, x2, y.reshape(2, 2))
    with pytest.raises(ShapeError, match="1D target tensor expects 2D input tensors"):
        F.cosine_embedding_loss(x1[0], x2[0], y)
    with pytest.raises(ShapeError, match="0D target tensor expects 1D input tensors"):
        F.cosine_embedding_loss(x1, x2, y[0])
    with pytest.raises(ShapeError, match="do not broadcast"):
        F.cosine_embedding_loss(x1, torch.randn(4, 5), y)
    with pytest.raises(ShapeError, match="one label per pair"):
        F.cosine_embedding_loss(x1, x2, y[:3])


def test_cosine_target_requiring_grad_is_refused():
    """torch's target only selects a branch (it gets no gradient); as for every marginloss
    target, one that requires grad is refused with the fix rather than silently ignored."""
    x1, x2, y = pair(4, 3)
    with pytest.raises(ValueError, match=r"`target` requires grad.*target.detach\(\)"):
        F.cosine_embedding_loss(x1, x2, y.requires_grad_())


# ----------------------------------------------------------------------------------------------
# triplet_margin_with_distance_loss


def test_with_distance_default_is_the_fused_triplet_loss():
    a, p, n = triplet((6, 12))
    for swap in (False, True):
        for fn in (None, torch.pairwise_distance, torch.nn.PairwiseDistance()):
            compare(lambda *t: F.triplet_margin_with_distance_loss(
                        *t, distance_function=fn, swap=swap, reduction="none"),
                    lambda *t: TF.triplet_margin_with_distance_loss(
                        *t, distance_function=fn, swap=swap, reduction="none"),
                    (a, p, n))
    fn = torch.nn.PairwiseDistance(p=1.0, eps=0.0)
    compare(lambda *t: F.triplet_margin_with_distance_loss(*t, distance_function=fn),
            lambda *t: TF.triplet_margin_with_distance_loss(*t, distance_function=fn),
            (a, p, n))
    assert marginloss.losses.triplet_margin_loss.pairwise_degree(fn) == (1.0, 0.0)
    assert marginloss.losses.triplet_margin_loss.pairwise_degree(
        torch.nn.PairwiseDistance(keepdim=True)) is None


def test_with_distance_user_function():
    a, p, n = triplet((6, 12))

    def cos_dist(x, y):
        return 1 - TF.cosine_similarity(x, y)

    for swap in (False, True):
        for reduction in REDUCTIONS:
            compare(lambda *t: F.triplet_margin_with_distance_loss(
                        *t, distance_function=cos_dist, margin=0.5, swap=swap,
                        reduction=reduction),
                    lambda *t: TF.triplet_margin_with_distance_loss(
                        *t, distance_function=cos_dist, margin=0.5, swap=swap,
                        reduction=reduction),
                    (a, p, n))


def test_with_distance_errors_and_module():
    a, p, n = triplet((2, 3))
    with pytest.raises(ValueError, match="elementwise_mean is not a valid value"):
        F.triplet_margin_with_distance_loss(a, p, n, reduction="elementwise_mean")
    with pytest.raises(ValueError, match="margin must be greater than 0"):
        F.triplet_margin_with_distance_loss(a, p, n, margin=0.0)
    with pytest.raises(ShapeError, match="anchor 1D"):
        F.triplet_margin_with_distance_loss(a[0], p, n)
    with pytest.raises(TypeError):
        F.triplet_margin_with_distance_loss(a, p, n, None)  # keyword-only, as torch
    ours = marginloss.TripletMarginWithDistanceLoss(margin=0.5, swap=True)
    ref = torch.nn.TripletMarginWithDistanceLoss(margin=0.5, swap=True)
    assert isinstance(ours.distance_function, torch.nn.PairwiseDistance)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    close(ours(a, p, n), ref(a, p, n))
    with pytest.raises(ValueError, match="expected margin to be greater than 0"):
        marginloss.TripletMarginWithDistanceLoss(margin=-1.0)


# ----------------------------------------------------------------------------------------------
# modules, legacy arguments


def test_modules_match_torch():
    a, p, n = triplet((5, 7), torch.float32)
    for kw in ({}, {"margin": 2.0, "p": 1.0, "eps": 0.0, "swap": True}):
        ours, ref = marginloss.TripletMarginLoss(**kw), torch.nn.TripletMarginLoss(**kw)
        close(ours(a, p, n), ref(a, p, n))
    assert repr(marginloss.TripletMarginLoss(swap=True)) == (
        "TripletMarginLoss(margin=1.0, p=2.0, eps=1e-06, swap=True, reduction='mean')")
    x1, x2, y = pair(5, 7, torch.float32)
    ours, ref = marginloss.CosineEmbeddingLoss(margin=0.2), torch.nn.CosineEmbeddingLoss(0.2)
    close(ours(x1, x2, y), ref(x1, x2, y))
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        out = F.cosine_embedding_loss(x1, x2, y, size_average=False)
    close(out, TF.cosine_embedding_loss(x1, x2, y, reduction="sum"))
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        out = F.triplet_margin_loss(a, p, n, reduce=False)
    close(out, TF.triplet_margin_loss(a, p, n, reduction="none"))


# ----------------------------------------------------------------------------------------------
# the native kernels: thread count, extreme rows


@pytest.mark.skipif(native.status() is not None, reason="the native kernels cannot be built")
def test_native_results_do_not_depend_on_threads():
    a, p, n = (t.requires_grad_() for t in triplet((64, 300), torch.float32))
    x1, x2, y = pair(64, 300, torch.float32)
    x1.requires_grad_()
    x2.requires_grad_()
    y = y.float()
    threads = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            la = F.triplet_margin_loss(a, p, n, swap=True, reduction="sum", backend="native")
            lb = F.cosine_embedding_loss(x1, x2, y, reduction="sum", backend="native")
            outs.append((la, lb, *torch.autograd.grad(la, (a, p, n)),
                         *torch.autograd.grad(lb, (x1, x2))))
    finally:
        torch.set_num_threads(threads)
    for u, v in zip(*outs):
        assert torch.equal(u, v)


# ----------------------------------------------------------------------------------------------
# Triton kernels: chunked rows (blocks shrunk), label counts


@pytest.mark.interpret
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1")
def test_triton_chunked_rows_and_label_count(monkeypatch):
    import importlib

    from marginloss.backends import triton as triton_backend
    from marginloss.losses import cosine_embedding_loss, triplet_margin_loss

    for name in ("triplet_margin_loss", "cosine_embedding_loss"):
        module = importlib.import_module(f"marginloss.kernels.{name}")
        monkeypatch.setattr(module, "MAX_BLOCK_D", 8)
        monkeypatch.setattr(module, "TILE", 16)
    for dtype in (torch.float32, torch.bfloat16):
        for opts in ({"swap": True}, {"p": 1}):
            compare(lambda *t: F.triplet_margin_loss(*t, reduction="none", backend="triton",
                                                     **opts),
                    lambda *t: TF.triplet_margin_loss(*t, reduction="none", **opts),
                    triplet((5, 29), dtype), ref_dtype=torch.float32)
        x1, x2, y = pair(5, 29, dtype)
        compare(lambda u, v: F.cosine_embedding_loss(u, v, y, margin=-0.1, backend="triton"),
                lambda u, v: TF.cosine_embedding_loss(u, v, y, margin=-0.1),
                (x1, x2), ref_dtype=torch.float32)
    x1, x2, _ = pair(5, 29, torch.float32)
    call = cosine_embedding_loss.SPEC.call((x1, x2), torch.tensor([1.0, 0, 2, -1, 1]), {})
    assert int(triton_backend.run(cosine_embedding_loss.SPEC, call, check=True).bad_labels) == 2
    call = triplet_margin_loss.SPEC.call(triplet((3, 4), torch.float32), None, {})
    assert int(triton_backend.run(triplet_margin_loss.SPEC, call, check=True).bad_labels) == 0


# ----------------------------------------------------------------------------------------------
# PyTorch's own sample inputs (OpInfo / ModuleInfo), validate=False


def _opinfo(name):
    pytest.importorskip("expecttest")  # torch.testing._internal imports it
    from torch.testing._internal.common_methods_invocations import op_db

    return next(op for op in op_db if op.name == name and not op.variant_test_name)


@pytest.mark.parametrize("name", ["nn.functional.triplet_margin_loss",
                                  "nn.functional.triplet_margin_with_distance_loss",
                                  "nn.functional.cosine_embedding_loss"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torch_opinfo_samples(name, dtype):
    op = _opinfo(name)
    ours = getattr(F, name.rsplit(".", 1)[1])
    count = 0
    for sample in op.sample_inputs("cpu", dtype, requires_grad=True):
        tensors = (sample.input, *sample.args)
        # the cosine samples' labels require grad: torch gives them no gradient, marginloss
        # refuses such a target (pass target.detach()): compared detached
        n_grad = 2 if "cosine" in name else 3

        def run(fn, *ts, sample=sample):
            kwargs = dict(sample.kwargs)
            if fn is ours:
                kwargs["validate"] = False
            return fn(*ts, **kwargs)

        compare(lambda *t: run(ours, *t), lambda *t: run(op.op, *t), tensors, dtype=dtype,
                ref_dtype=dtype, n_grad=n_grad)
        count += 1
    assert count >= 5


def test_torch_moduleinfo_samples():
    pytest.importorskip("expecttest")  # torch.testing._internal imports it
    from torch.testing._internal.common_modules import module_db

    info = next(m for m in module_db if m.module_cls is torch.nn.CosineEmbeddingLoss)
    for mi in info.module_inputs_func(info, device="cpu", dtype=torch.float64,
                                      requires_grad=True, training=True):
        kwargs = mi.constructor_input.kwargs
        ours = marginloss.CosineEmbeddingLoss(*mi.constructor_input.args, **kwargs,
                                              validate=False)
        ref = torch.nn.CosineEmbeddingLoss(*mi.constructor_input.args, **kwargs)
        x1, x2, y = mi.forward_input.args
        compare(lambda u, v: ours(u, v, y), lambda u, v: ref(u, v, y), (x1, x2))


# ----------------------------------------------------------------------------------------------
# composability: compile, torch.func


def test_compile_and_func_every_input():
    from torch.func import grad

    torch._dynamo.reset()
    a, p, n = triplet((4, 6))
    x1, x2, y = pair(4, 6)
    f = torch.compile(lambda *t: F.triplet_margin_loss(*t, swap=True), fullgraph=True,
                      backend="aot_eager")
    g = torch.compile(lambda u, v: F.cosine_embedding_loss(u, v, y, margin=0.1),
                      fullgraph=True, backend="aot_eager")
    compare(f, lambda *t: TF.triplet_margin_loss(*t, swap=True), (a, p, n))
    compare(g, lambda u, v: TF.cosine_embedding_loss(u, v, y, margin=0.1), (x1, x2))
    ours = grad(lambda *t: F.triplet_margin_loss(*t), argnums=(0, 1, 2))(a, p, n)
    ref = grad(lambda *t: TF.triplet_margin_loss(*t), argnums=(0, 1, 2))(a, p, n)
    for u, v in zip(ours, ref):
        close(u, v)


def test_with_distance_signatures_match_torch():
    """The with-distance variant is not in the loss table (it is the triplet loss's operator, or
    torch ops around the user's distance): its drop-in signatures are checked here."""
    import inspect

    for ours, ref in ((F.triplet_margin_with_distance_loss, TF.triplet_margin_with_distance_loss),
                      (marginloss.TripletMarginWithDistanceLoss.__init__,
                       torch.nn.TripletMarginWithDistanceLoss.__init__)):
        mine = list(inspect.signature(ours).parameters.values())
        theirs = list(inspect.signature(ref).parameters.values())
        assert [(p.name, p.kind, p.default) for p in mine[:len(theirs)]] == \
            [(p.name, p.kind, p.default) for p in theirs]
        assert [(p.name, p.kind, p.default) for p in mine[len(theirs):]] == [
            ("validate", inspect.Parameter.KEYWORD_ONLY, True),
            ("backend", inspect.Parameter.KEYWORD_ONLY, "auto")]
    assert marginloss.triplet_margin_with_distance_loss is F.triplet_margin_with_distance_loss
