"""Fused linear heads (marginloss.linear): the loss of input @ W.T + b without the logits.

Oracles: torch's loss on the materialised logits (float64) and our own plain loss on them (the
same kernels, float32). Every comparison covers the loss and the gradients of input,
linear_weight and linear_bias, with a random upstream gradient (kernels skip a multiply by 1).
Hinge inputs are kink-free: features and weights on small dyadic grids, so every logit is exact
in any summation order and the per-chunk gathers (x_y, S_j) equal the matmul's logits bitwise.
"""

from __future__ import annotations

import importlib.util
import math
import os

import pytest
import torch
import torch.nn.functional as F
from helpers import TOL, assert_close

import marginloss
import marginloss.functional as MF
from marginloss import linear
from marginloss.errors import DtypeError, LabelError, ShapeError

LOSSES = ["multilabel_soft_margin_loss", "multi_margin_loss", "multilabel_margin_loss"]
HEAD = {name: getattr(MF, linear.HEADS[name].name) for name in LOSSES}
REDUCTIONS = ["none", "mean", "sum"]


def exact_head(n, h, c, dtype=torch.float64, bias=True, seed=0):
    """Features (multiples of 1/4) and weights (of 1/16) whose logits are exact multiples of
    1/64 in every dtype and summation order (small H): the fused and the unfused head see the
    same logits bitwise, so a hinge at exactly 0 is decided alike (strict z > 0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-4, 5, (n, h), generator=g).to(dtype) / 4
    w = torch.randint(-4, 5, (c, h), generator=g).to(dtype) / 16
    b = (torch.randint(-8, 9, (c,), generator=g).to(dtype) / 16) if bias else None
    return x, w, b


def make_case(loss, n, c, *, seed=0, k=5):
    """Target (and the option kwargs) for ``loss`` on n rows of c classes."""
    g = torch.Generator().manual_seed(seed)
    if loss == "multilabel_soft_margin_loss":
        return (torch.rand(n, c, generator=g) < 0.3).double()
    if loss == "multi_margin_loss":
        return torch.randint(0, c, (n,), generator=g)
    t = torch.full((n, c), -1, dtype=torch.long)
    for r in range(n):
        kr = int(torch.randint(0, k + 1, (), generator=g))
        t[r, :kr] = torch.randperm(c, generator=g)[:kr]
    return t


def oracle(loss, logits, target, reduction, kw):
    if loss == "multilabel_soft_margin_loss":
        return F.multilabel_soft_margin_loss(logits, target.to(logits.dtype), reduction=reduction,
                                             weight=kw.get("weight"))
    if loss == "multi_margin_loss":
        return F.multi_margin_loss(logits, target, reduction=reduction, **kw)
    return F.multilabel_margin_loss(logits, target, reduction=reduction)


def plain(loss, logits, target, reduction, kw):
    return getattr(MF, loss)(logits, target, reduction=reduction, **kw)


def grads_of(fn, tensors, g=None):
    ts = [t.detach().clone().requires_grad_() if t is not None else None for t in tensors]
    out = fn(*ts)
    out.backward(g if g is not None else torch.ones_like(out))
    return out.detach(), [t.grad if t is not None else None for t in ts]


def compare(loss, x, w, b, target, reduction, kw, chunk, dtype, ref_fn, backend="auto"):
    g = torch.randn((x.shape[0],) if reduction == "none" else (), dtype=torch.float64) + 2.0

    def fused(x, w, b):
        return HEAD[loss](x, w, target, linear_bias=b, reduction=reduction, chunk_size=chunk,
                          backend=backend, **kw)

    def unfused(x, w, b):
        return ref_fn(loss, x @ w.t() + (b if b is not None else 0), target, reduction, kw)

    out, grads = grads_of(fused, (x, w, b), g.to(dtype))
    ref, ref_grads = grads_of(unfused, (x, w, b), g.to(dtype))
    assert out.dtype == ref.dtype
    assert_close(out, ref, dtype)
    for got, want in zip(grads, ref_grads):
        if want is not None:
            assert_close(got, want, dtype)


def options(loss):
    if loss == "multilabel_soft_margin_loss":
        return [{}, {"weight": torch.rand(23, dtype=torch.float64) + 0.5}]
    if loss == "multi_margin_loss":
        return [{}, {"p": 2, "margin": 0.75, "weight": torch.rand(23, dtype=torch.float64) + 0.5},
                {"p": 1, "margin": 0.5}]
    return [{}]


CASES = [pytest.param(loss, i, id=f"{loss}-{i}") for loss in LOSSES
         for i in range(len(options(loss)))]


@pytest.mark.parametrize(("loss", "opt"), CASES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("chunk", [1, 5, None])  # 5 does not divide 23; None: one chunk
def test_matches_torch_float64(loss, opt, reduction, chunk):
    x, w, b = exact_head(7, 6, 23)
    x = x + torch.randn_like(x) * 0.01  # off the grid: random (kink-free in practice) logits
    target = make_case(loss, 7, 23)
    compare(loss, x, w, b, target, reduction, options(loss)[opt], chunk, torch.float64, oracle)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("chunk", [7, 64, 300])
def test_matches_our_plain_loss_float32(loss, reduction, chunk):
    """float32 on the CPU runs the native kernels per chunk, as the plain loss does."""
    x, w, b = exact_head(33, 16, 300, torch.float32, seed=1)
    target = make_case(loss, 33, 300, seed=1, k=12)
    if loss == "multilabel_soft_margin_loss":
        target = target.float()
    kw = {"weight": torch.rand(300) + 0.5} if loss != "multilabel_margin_loss" else {}
    compare(loss, x, w, b, target, reduction, kw, chunk, torch.float32, plain)


def test_duplicate_and_full_target_lists():
    """multilabel_margin_loss: a class listed twice counts twice; a row listing every class has
    no non-target; an empty row has no term."""
    x, w, b = exact_head(4, 5, 9)
    t = torch.full((4, 9), -1)
    t[0, :3] = torch.tensor([4, 4, 2])
    t[1] = torch.arange(9)
    t[3, :1] = 8
    for chunk in (2, 9):
        compare("multilabel_margin_loss", x, w, b, t, "none", {}, chunk, torch.float64, oracle)


def test_narrow_target_lists_equal_the_full_ones():
    x, w, b = exact_head(6, 4, 40)
    t = make_case("multilabel_margin_loss", 6, 40, k=3)
    full = MF.linear_multilabel_margin_loss(x, w, t, linear_bias=b, reduction="none",
                                            chunk_size=9)
    narrow = MF.linear_multilabel_margin_loss(x, w, t[:, :5].contiguous(), linear_bias=b,
                                              reduction="none", chunk_size=9)
    assert torch.equal(full, narrow)


@pytest.mark.parametrize("loss", LOSSES)
def test_gradcheck_float64(loss):
    torch.manual_seed(1)
    n, h, c = 3, 4, 11
    x = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c, h, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, dtype=torch.float64, requires_grad=True)
    target = make_case(loss, n, c, k=3)
    for reduction in ("sum", "none"):
        def f(x, w, b, reduction=reduction):
            return HEAD[loss](x, w, target, linear_bias=b, reduction=reduction, chunk_size=4)

        assert torch.autograd.gradcheck(f, (x, w, b))


@pytest.mark.parametrize("loss", LOSSES)
def test_bfloat16_close_to_the_float32_head(loss):
    x, w, b = exact_head(9, 8, 50, torch.float32, seed=2)
    target = make_case(loss, 9, 50, seed=2)
    if loss == "multilabel_soft_margin_loss":
        target = target.to(torch.bfloat16)  # (a float32 mask would promote the loss, as torch)
    args = [t.to(torch.bfloat16) for t in (x, w, b)]
    out, grads = grads_of(lambda x, w, b: HEAD[loss](x, w, target, linear_bias=b, chunk_size=16),
                          args)
    ref, ref_grads = grads_of(lambda x, w, b: HEAD[loss](x.float(), w.float(), target,
                                                         linear_bias=b.float(), chunk_size=16),
                              args)
    assert out.dtype == torch.bfloat16
    assert all(g.dtype == torch.bfloat16 for g in grads)
    rtol, atol = TOL[torch.bfloat16]
    torch.testing.assert_close(out.float(), ref, rtol=rtol, atol=atol)
    for got, want in zip(grads, ref_grads):  # normwise: one bf16 rounding of dlogits and mm
        assert (got.float() - want).norm() <= 2e-2 * want.norm() + 1e-6


@pytest.mark.parametrize("loss", LOSSES)
def test_deterministic_and_chunk_invariant(loss):
    x, w, b = exact_head(16, 8, 97, torch.float32, seed=3)
    target = make_case(loss, 16, 97, seed=3)
    if loss == "multilabel_soft_margin_loss":
        target = target.float()

    def run(chunk):
        return grads_of(lambda x, w, b: HEAD[loss](x, w, target, linear_bias=b,
                                                   chunk_size=chunk), (x, w, b))

    (l1, g1), (l2, g2) = run(10), run(10)
    assert torch.equal(l1, l2) and all(torch.equal(a, c) for a, c in zip(g1, g2))
    l3, g3 = run(97)
    assert_close(l3, l1, torch.float32)
    for a, c in zip(g1, g3):
        assert_close(a, c, torch.float32)


@pytest.mark.parametrize(("loss", "with_options"), [
    *((loss, False) for loss in LOSSES),
    pytest.param("multilabel_soft_margin_loss", True, id="multilabel_soft_margin_loss-options")])
def test_never_holds_the_logits(loss, with_options, monkeypatch):
    """Every tensor the head makes (forward and gradients) is smaller than N x C: recorded
    under a dispatch mode around the chunked pass itself (with the scratch budget scaled down
    to these shapes: 2^12 elements instead of 2^22); soft margin's pos_weight and
    label_smoothing too."""
    from torch.utils._python_dispatch import TorchDispatchMode

    monkeypatch.setattr(linear, "BUDGET", 1 << 12)

    n, h, c, chunk = 64, 8, 4096, 256
    x, w, b = exact_head(n, h, c, torch.float32)
    target = make_case(loss, n, c, k=4)
    if loss == "multilabel_soft_margin_loss":
        target = target.float()
    sizes = []
    pw = torch.rand(c) + 0.5
    extras = (pw, 0.1) if with_options else ()
    given = {t.untyped_storage().data_ptr() for t in (x, w, b, target, pw)}

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                # new memory only: not a view of the arguments, nor a stride-0 expansion
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in given:
                    sizes.append(t.untyped_storage().nbytes() // t.element_size())
            return out

    head = linear.HEADS[loss]
    canon = linear.canonical(head, x, w, target, b, None,
                             (1, 1.0) if loss == "multi_margin_loss" else (), extras)
    with Record():
        out = linear.compute(head, canon, "mean", None, chunk, True, "auto", (True, True, True))
    assert out.linear_weight.shape == (c, h)
    assert max(sizes) <= max(c * h, n * (chunk + 4)) < n * c // 4
    kw = {"pos_weight": pw, "label_smoothing": 0.1} if with_options else {}
    want = MF.__dict__[loss](x @ w.t() + b, target, **kw)
    assert_close(out.loss, want, torch.float32)


@pytest.mark.parametrize("loss", LOSSES)
def test_only_some_parameters_need_grad(loss):
    x, w, b = exact_head(5, 4, 13)
    target = make_case(loss, 5, 13)
    w.requires_grad_()  # frozen features and bias: only the weight's gradient
    out = HEAD[loss](x, w, target, linear_bias=b, chunk_size=4)
    out.backward()
    w2 = w.detach().clone().requires_grad_()
    oracle(loss, x @ w2.t() + b, target, "mean", {}).backward()
    assert_close(w.grad, w2.grad, torch.float64)
    with torch.no_grad():
        assert_close(HEAD[loss](x, w, target, linear_bias=b, chunk_size=4), out.detach())


@pytest.mark.parametrize("loss", LOSSES)
def test_unbatched_input(loss):
    x, w, b = exact_head(1, 4, 10)
    target = make_case(loss, 1, 10)[0]
    for reduction in REDUCTIONS:
        out = HEAD[loss](x[0], w, target, linear_bias=b, reduction=reduction, chunk_size=3)
        want = oracle(loss, x[0] @ w.t() + b, target, reduction, {})
        assert out.shape == want.shape
        assert_close(out, want)


@pytest.mark.parametrize("loss", LOSSES)
def test_second_backward_recomputes(loss):
    x, w, b = (t.requires_grad_() for t in exact_head(4, 3, 9))
    target = make_case(loss, 4, 9)
    out = HEAD[loss](x, w, target, linear_bias=b, chunk_size=4)
    out.backward(torch.tensor(3.0, dtype=torch.float64), retain_graph=True)
    first = [t.grad.clone() for t in (x, w, b)]
    out.backward(torch.tensor(3.0, dtype=torch.float64))
    for t, g in zip((x, w, b), first):
        assert_close(t.grad, 2 * g)


@pytest.mark.parametrize("loss", LOSSES)
def test_module_owns_its_linear_layer(loss):
    cls = {"multilabel_soft_margin_loss": marginloss.LinearMultiLabelSoftMarginLoss,
           "multi_margin_loss": marginloss.LinearMultiMarginLoss,
           "multilabel_margin_loss": marginloss.LinearMultiLabelMarginLoss}[loss]
    torch.manual_seed(0)
    head = cls(6, 17, bias=True, dtype=torch.float64, chunk_size=5)
    assert isinstance(head.linear, torch.nn.Linear)
    assert set(head.state_dict()) >= {"linear.weight", "linear.bias"}
    x = torch.randn(4, 6, dtype=torch.float64)
    target = make_case(loss, 4, 17)
    head(x, target).backward()
    w = head.linear.weight.detach().clone().requires_grad_()
    oracle(loss, F.linear(x, w, head.linear.bias.detach()), target, "mean", {}).backward()
    assert_close(head.linear.weight.grad, w.grad)
    assert "chunk_size=5" in repr(head)


@pytest.mark.parametrize("loss", LOSSES)
def test_bad_labels_raise_like_the_plain_loss(loss):
    x, w, b = exact_head(3, 4, 6, torch.float32)
    bad = {"multilabel_soft_margin_loss": torch.full((3, 6), 2.0),
           "multi_margin_loss": torch.tensor([0, 6, 1]),
           "multilabel_margin_loss": torch.tensor([[0, 7, -1, -1, -1, -1]] * 3)}[loss]
    with pytest.raises(LabelError) as got:
        HEAD[loss](x, w, bad, chunk_size=4)
    with pytest.raises(LabelError) as want:
        getattr(MF, loss)(x @ w.t(), bad)
    assert str(got.value).split(":")[0] == str(want.value).split(":")[0]
    HEAD[loss](x, w, bad, chunk_size=4, validate=False)  # unchecked: runs, result undefined


def test_argument_errors():
    x, w, _ = exact_head(3, 4, 6, torch.float32)
    y = torch.tensor([0, 1, 2])
    with pytest.raises(ShapeError, match="features"):
        MF.linear_multi_margin_loss(x, w[:, :3], y)
    with pytest.raises(DtypeError, match="linear_weight"):
        MF.linear_multi_margin_loss(x, w.double(), y)
    with pytest.raises(ShapeError, match="linear_bias"):
        MF.linear_multi_margin_loss(x, w, y, linear_bias=torch.zeros(5))
    with pytest.raises(ShapeError, match="logits"):
        MF.linear_multi_margin_loss(x, w, y[:2])
    with pytest.raises(ValueError, match="chunk_size"):
        MF.linear_multi_margin_loss(x, w, y, chunk_size=0)
    with pytest.raises(ValueError, match="`p`"):
        MF.linear_multi_margin_loss(x, w, y, p=3)
    with pytest.raises(ShapeError, match="K"):
        MF.linear_multilabel_margin_loss(x, w, torch.zeros(3, 7, dtype=torch.long))


@pytest.mark.parametrize("loss", LOSSES)
def test_compile_fullgraph_matches_eager(loss):
    x, w, b = exact_head(6, 4, 21, torch.float32)
    target = make_case(loss, 6, 21)
    if loss == "multilabel_soft_margin_loss":
        target = target.float()

    def step(x, w, b, reduction):
        return HEAD[loss](x, w, target, linear_bias=b, reduction=reduction, chunk_size=8)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    for reduction in ("mean", "none"):
        g = torch.rand(6) + 1 if reduction == "none" else torch.tensor(2.0)
        out, grads = grads_of(lambda x, w, b: compiled(x, w, b, reduction), (x, w, b), g)
        ref, ref_grads = grads_of(lambda x, w, b: step(x, w, b, reduction), (x, w, b), g)
        assert_close(out, ref)
        for a, c in zip(grads, ref_grads):
            assert_close(a, c)
    assert "linear_" + loss in str(torch.ops.marginloss.__dict__) or hasattr(
        torch.ops.marginloss, "linear_" + loss)


@pytest.mark.interpret
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1"
                    or importlib.util.find_spec("triton") is None,
                    reason="needs Triton's interpreter (TRITON_INTERPRET=1)")
@pytest.mark.parametrize("loss", LOSSES)
def test_triton_chunk_pass_under_the_interpreter(loss):
    """The CUDA path's per-chunk pass (our Triton kernel), on CPU tensors."""
    from kernels.conftest import squeeze_interpreter_index

    squeeze_interpreter_index()
    x, w, b = exact_head(5, 4, 19, torch.float32, seed=4)
    target = make_case(loss, 5, 19, seed=4, k=3)
    if loss == "multilabel_soft_margin_loss":
        target = target.float()
    compare(loss, x, w, b, target, "mean", {}, 8, torch.float32, plain, backend="triton")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("loss", LOSSES)
def test_cuda_matches_cpu(loss):
    x, w, b = exact_head(64, 32, 1000, torch.float32, seed=5)
    target = make_case(loss, 64, 1000, seed=5, k=6)
    if loss == "multilabel_soft_margin_loss":
        target = target.float()
    k = int((target >= 0).sum(1).max()) if loss == "multilabel_margin_loss" else None
    cuda_target = (target[:, :k] if k else target).cuda()

    def on(dev, t):
        return grads_of(lambda x, w, b: HEAD[loss](x, w, t, linear_bias=b, chunk_size=300),
                        [v.to(dev) for v in (x, w, b)])

    out, grads = on("cuda", cuda_target)
    ref, ref_grads = on("cpu", target)
    assert_close(out.cpu(), ref)
    for a, c in zip(grads, ref_grads):
        assert_close(a.cpu(), c)


# ----------------------------------------------------------------------------------------------
# multilabel soft margin's own options: pos_weight and label_smoothing, fused as the rest


MSM = "multilabel_soft_margin_loss"
C_OPT = 23  # chunk 5 does not divide it, 23 is one chunk, 1 is a chunk per class


def soft_margin_options(pos_weight, eps, class_weight=False, c=C_OPT, dtype=torch.float64,
                        seed=7):
    """The option kwargs: pos_weight per class ``(C,)``, one value ``(1,)``, 0-d, or none."""
    g = torch.Generator().manual_seed(seed)
    kw = {}
    if pos_weight == "per-class":
        kw["pos_weight"] = (torch.rand(c, generator=g, dtype=torch.float64) * 3).to(dtype)
    elif pos_weight == "one":
        kw["pos_weight"] = torch.tensor([2.5], dtype=dtype)
    elif pos_weight == "0-d":
        kw["pos_weight"] = torch.tensor(0.4, dtype=dtype)
    if eps:
        kw["label_smoothing"] = eps
    if class_weight:
        kw["weight"] = (torch.rand(c, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    return kw


def bce_oracle(loss, logits, target, reduction, kw):
    """torch.nn.functional.binary_cross_entropy_with_logits (pos_weight) on the smoothed
    targets, mean over the classes, then the reduction."""
    eps = kw.get("label_smoothing", 0.0)
    t = target.to(logits.dtype) * (1 - eps) + eps / 2
    rows = F.binary_cross_entropy_with_logits(logits, t, weight=kw.get("weight"),
                                              pos_weight=kw.get("pos_weight"),
                                              reduction="none").mean(-1)
    return {"none": rows, "mean": rows.mean(), "sum": rows.sum()}[reduction]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("chunk", [1, 5, None])
@pytest.mark.parametrize(("pos_weight", "eps", "class_weight"), [
    ("per-class", 0.0, False), ("per-class", 0.1, True), ("one", 0.3, False),
    ("0-d", 0.0, True), (None, 0.2, False), (None, 0.0, True)])
def test_options_match_the_plain_loss_and_torch_float64(reduction, chunk, pos_weight, eps,
                                                         class_weight):
    """Loss and the gradients of input, linear_weight and linear_bias (random upstream
    gradient) against the unfused loss on the logits and against BCE-with-logits."""
    x, w, b = exact_head(7, 6, C_OPT)
    x = x + torch.randn_like(x) * 0.01
    target = make_case(MSM, 7, C_OPT)
    target[0] = 0.25  # a soft row
    kw = soft_margin_options(pos_weight, eps, class_weight)
    for ref in (plain, bce_oracle):
        compare(MSM, x, w, b, target, reduction, kw, chunk, torch.float64, ref)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("chunk", [7, 64, 300])  # 64 does not divide 300
@pytest.mark.parametrize("backend", ["auto", "torch"])  # auto: the native kernels per chunk
def test_options_match_our_plain_loss_float32(reduction, chunk, backend):
    x, w, b = exact_head(33, 16, 300, torch.float32, seed=1)
    target = make_case(MSM, 33, 300, seed=1).float()
    kw = soft_margin_options("per-class", 0.1, True, c=300, dtype=torch.float32)
    compare(MSM, x, w, b, target, reduction, kw, chunk, torch.float32, plain, backend=backend)


def test_options_per_class_pos_weight_is_sliced_per_chunk():
    """A per-class pos_weight whose classes differ a lot: the same loss for every chunking,
    and not the loss of any scalar pos_weight (so a wrong slice would show)."""
    x, w, b = exact_head(6, 5, 17)
    target = make_case(MSM, 6, 17, seed=2)
    pw = torch.linspace(0.0, 8.0, 17, dtype=torch.float64)
    want = MF.multilabel_soft_margin_loss(x @ w.t() + b, target, pos_weight=pw,
                                          reduction="none")
    for chunk in (1, 3, 4, 16, 17, None):
        got = MF.linear_multilabel_soft_margin_loss(x, w, target, linear_bias=b, pos_weight=pw,
                                                    reduction="none", chunk_size=chunk)
        assert_close(got, want)
        flipped = MF.linear_multilabel_soft_margin_loss(
            x, w, target, linear_bias=b, pos_weight=pw.flip(0), reduction="none",
            chunk_size=chunk)
        assert (flipped - want).abs().max() > 1e-3


def test_options_gradcheck_float64():
    torch.manual_seed(1)
    n, h, c = 3, 4, 11
    x = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c, h, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, dtype=torch.float64, requires_grad=True)
    target = make_case(MSM, n, c)
    pw = torch.rand(c, dtype=torch.float64) * 2
    for reduction in ("sum", "none"):
        def f(x, w, b, reduction=reduction):
            return MF.linear_multilabel_soft_margin_loss(
                x, w, target, linear_bias=b, pos_weight=pw, label_smoothing=0.2,
                reduction=reduction, chunk_size=4)

        assert torch.autograd.gradcheck(f, (x, w, b))


def test_options_unbatched_input():
    x, w, b = exact_head(1, 4, 10)
    target = make_case(MSM, 1, 10)[0]
    kw = soft_margin_options("per-class", 0.1, c=10)
    for reduction in REDUCTIONS:
        out = MF.linear_multilabel_soft_margin_loss(x[0], w, target, linear_bias=b,
                                                    reduction=reduction, chunk_size=3, **kw)
        want = bce_oracle(MSM, x[0] @ w.t() + b, target, reduction, kw)
        assert out.shape == want.shape
        assert_close(out, want)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"label_smoothing": 1.0}, ValueError),
    ({"label_smoothing": -0.1}, ValueError),
    ({"label_smoothing": math.nan}, ValueError),
    ({"label_smoothing": "0.1"}, DtypeError),
    ({"label_smoothing": True}, DtypeError),
    ({"pos_weight": torch.ones(7)}, ShapeError),
    ({"pos_weight": torch.ones(2, 6)}, ShapeError),
    ({"pos_weight": [1.0] * 6}, DtypeError),
    ({"pos_weight": torch.ones(6, dtype=torch.complex64)}, DtypeError),
    ({"pos_weight": torch.ones(6, device="meta")}, ValueError),
    ({"pos_weight": torch.ones(6, requires_grad=True)}, ValueError),
])
def test_bad_options_raise_like_the_plain_loss(kwargs, error):
    """The plain loss's own checks, with its messages; shapes, types and ranges with
    validate=False as well."""
    x, w, _ = exact_head(3, 4, 6, torch.float32)
    y = make_case(MSM, 3, 6).float()
    for validate in (True, False):
        with pytest.raises(error) as got:
            MF.linear_multilabel_soft_margin_loss(x, w, y, chunk_size=4, validate=validate,
                                                  **kwargs)
        with pytest.raises(error) as want:
            MF.multilabel_soft_margin_loss(x @ w.t(), y, validate=validate, **kwargs)
        assert str(got.value) == str(want.value)


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_bad_pos_weight_values_raise_like_the_plain_loss(bad):
    """Checked with validate=True (the whole vector, before the chunks: the same message);
    validate=False computes the formula."""
    x, w, _ = exact_head(3, 4, 6, torch.float32)
    y = make_case(MSM, 3, 6).float()
    pw = torch.tensor([1.0, 2.0, 0.0, 0.5, bad, 3.0])  # the bad value in the second chunk
    with pytest.raises(ValueError, match="`pos_weight` must be finite and >= 0") as got:
        MF.linear_multilabel_soft_margin_loss(x, w, y, pos_weight=pw, chunk_size=4)
    with pytest.raises(ValueError) as want:
        MF.multilabel_soft_margin_loss(x @ w.t(), y, pos_weight=pw)
    assert not isinstance(got.value, LabelError)
    assert str(got.value) == str(want.value)
    if math.isfinite(bad):
        got = MF.linear_multilabel_soft_margin_loss(x, w, y, pos_weight=pw, chunk_size=4,
                                                    validate=False, reduction="none")
        want = MF.multilabel_soft_margin_loss(x @ w.t(), y, pos_weight=pw, validate=False,
                                              reduction="none")
        assert_close(got, want)
    # the labels are still checked alongside
    with pytest.raises(LabelError, match="to_01"):
        MF.linear_multilabel_soft_margin_loss(x, w, y * 2 - 1, pos_weight=torch.ones(6),
                                              label_smoothing=0.1, chunk_size=4)


def test_module_holds_the_options():
    torch.manual_seed(0)
    pw = torch.rand(17, dtype=torch.float64) * 2
    head = marginloss.LinearMultiLabelSoftMarginLoss(
        6, 17, bias=True, dtype=torch.float64, chunk_size=5, reduction="sum", pos_weight=pw,
        label_smoothing=0.1)
    assert set(head.state_dict()) == {"linear.weight", "linear.bias", "pos_weight"}
    assert "pos_weight=(17,)" in repr(head) and "label_smoothing=0.1" in repr(head)
    x = torch.randn(4, 6, dtype=torch.float64)
    target = make_case(MSM, 4, 17)
    out = head(x, target)
    out.backward()
    w = head.linear.weight.detach().clone().requires_grad_()
    want = bce_oracle(MSM, F.linear(x, w, head.linear.bias.detach()), target, "sum",
                      {"pos_weight": pw, "label_smoothing": 0.1})
    want.backward()
    assert_close(out.detach(), want.detach())
    assert_close(head.linear.weight.grad, w.grad)
    with pytest.raises(ValueError, match="label_smoothing"):
        marginloss.LinearMultiLabelSoftMarginLoss(6, 17, label_smoothing=1.0)(
            x.float(), target.float())


def test_options_compile_fullgraph_matches_eager():
    """The registered operator carries pos_weight and label_smoothing (the "none" backward
    runs it again with them)."""
    x, w, b = exact_head(6, 4, 21, torch.float32)
    target = make_case(MSM, 6, 21).float()
    kw = soft_margin_options("per-class", 0.1, c=21, dtype=torch.float32)

    def step(x, w, b, reduction):
        return MF.linear_multilabel_soft_margin_loss(x, w, target, linear_bias=b,
                                                     reduction=reduction, chunk_size=8, **kw)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    for reduction in ("mean", "none"):
        g = torch.rand(6) + 1 if reduction == "none" else torch.tensor(2.0)
        out, grads = grads_of(lambda x, w, b: compiled(x, w, b, reduction), (x, w, b), g)
        ref, ref_grads = grads_of(lambda x, w, b: bce_oracle(MSM, x @ w.t() + b, target,
                                                             reduction, kw), (x, w, b), g)
        assert_close(out, ref)
        for a, c in zip(grads, ref_grads):
            assert_close(a, c)
    schema = str(linear.OPS[MSM]._schema)
    assert "Tensor? pos_weight" in schema and "float label_smoothing" in schema


@pytest.mark.interpret
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1"
                    or importlib.util.find_spec("triton") is None,
                    reason="needs Triton's interpreter (TRITON_INTERPRET=1)")
def test_options_triton_chunk_pass_under_the_interpreter():
    """The CUDA path's per-chunk pass (our Triton kernel, with pos_weight's slice)."""
    from kernels.conftest import squeeze_interpreter_index

    squeeze_interpreter_index()
    x, w, b = exact_head(5, 4, 19, torch.float32, seed=4)
    target = make_case(MSM, 5, 19, seed=4).float()
    kw = soft_margin_options("per-class", 0.1, True, c=19, dtype=torch.float32)
    compare(MSM, x, w, b, target, "mean", kw, 8, torch.float32, plain, backend="triton")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_options_cuda_matches_cpu():
    x, w, b = exact_head(64, 32, 1000, torch.float32, seed=5)
    target = make_case(MSM, 64, 1000, seed=5).float()
    kw = soft_margin_options("per-class", 0.1, True, c=1000, dtype=torch.float32)

    def on(dev):
        kw_dev = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        return grads_of(lambda x, w, b: MF.linear_multilabel_soft_margin_loss(
            x, w, target.to(dev), linear_bias=b, chunk_size=300, **kw_dev),
            [v.to(dev) for v in (x, w, b)])

    out, grads = on("cuda")
    ref, ref_grads = on("cpu")
    assert_close(out.cpu(), ref)
    for a, c in zip(grads, ref_grads):
        assert_close(a.cpu(), c)
    bad = kw["pos_weight"].cuda().clone()
    bad[700] = -1.0  # in the third chunk: reported by a later call (no host wait)
    with pytest.raises(ValueError, match="`pos_weight` must be finite and >= 0"):
        MF.linear_multilabel_soft_margin_loss(x.cuda(), w.cuda(), target.cuda(),
                                              pos_weight=bad, chunk_size=300)
        marginloss.check_labels()
