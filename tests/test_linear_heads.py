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


def compare(loss, x, w, b, target, reduction, kw, chunk, dtype, ref_fn, backend="auto",
            ref_target=None):
    """The head on ``target`` against ``ref_fn`` on the logits and ``ref_target`` (default:
    the same target): loss and the gradients of input, weight and bias."""
    g = torch.randn((x.shape[0],) if reduction == "none" else (), dtype=torch.float64) + 2.0
    ref_target = target if ref_target is None else ref_target

    def fused(x, w, b):
        return HEAD[loss](x, w, target, linear_bias=b, reduction=reduction, chunk_size=chunk,
                          backend=backend, **kw)

    def unfused(x, w, b):
        return ref_fn(loss, x @ w.t() + (b if b is not None else 0), ref_target, reduction, kw)

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


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_options_gradcheck_float64(sparse):
    """gradcheck of the soft margin head with pos_weight and smoothing, on a dense target and
    on per-sample index lists."""
    torch.manual_seed(1)
    n, h, c = 3, 4, 11
    x = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c, h, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, dtype=torch.float64, requires_grad=True)
    target = [torch.tensor([0, 7]), torch.tensor([10]), torch.tensor([3, 4, 5])] if sparse \
        else make_case(MSM, n, c)
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


# ----------------------------------------------------------------------------------------------
# sparse multi-label targets (marginloss.sparse's forms): the positives alone, never (N, C)


SPARSE_LOSSES = ["multilabel_soft_margin_loss", "multilabel_margin_loss"]
FORMS = ["csr", "list", "pair"]


def csr_tensor(crow, col, values, size, check=True):
    """A CSR tensor without torch's beta warning (check=False: a malformed one)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(torch.as_tensor(crow), torch.as_tensor(col),
                                       torch.as_tensor(values), size=size,
                                       check_invariants=check)


def sparse_form(form, mask):
    """The positives of ``mask`` (rows in order, classes increasing) in one sparse form; a
    CSR keeps the mask's values (soft labels)."""
    rows, cols = mask.nonzero(as_tuple=True)
    if form == "csr":
        crow = torch.zeros(mask.shape[0] + 1, dtype=torch.int64)
        crow[1:] = (mask != 0).sum(1).cumsum(0)
        return csr_tensor(crow, cols, mask[rows, cols], tuple(mask.shape))
    if form == "list":
        return [row.nonzero().flatten() for row in mask]
    return rows, cols


def padded_of(mask):
    """torch's MultiLabelMarginLoss target listing ``mask``'s classes, padded with -1."""
    out = torch.full(mask.shape, -1, dtype=torch.int64)
    for i, row in enumerate(mask):
        s = row.nonzero().flatten()
        out[i, : s.numel()] = s
    return out


def sparse_mask(n, c, seed=0, p=0.3):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, c, generator=g) < p).double()
    mask[1] = 0  # an empty row
    mask[2, -1] = 1  # the last class (the last, narrower chunk)
    return mask


def dense_of(loss, mask):
    return mask if loss == MSM else padded_of(mask)


@pytest.mark.parametrize("loss", SPARSE_LOSSES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("chunk", [1, 5, None])  # 5 does not divide 23; None: one chunk
def test_sparse_target_matches_the_dense_one(loss, form, reduction, chunk):
    """Loss and the gradients of input, linear_weight and linear_bias against torch's loss on
    the logits with the dense target the sparse one stands for."""
    x, w, b = exact_head(7, 6, 23)
    if loss == MSM:
        x = x + torch.randn_like(x) * 0.01
    mask = sparse_mask(7, 23)
    compare(loss, x, w, b, sparse_form(form, mask), reduction, {}, chunk, torch.float64,
            oracle, ref_target=dense_of(loss, mask))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("chunk", [1, 5, None])
def test_sparse_soft_margin_options_match_the_dense_target(form, reduction, chunk):
    """Class weight, per-class pos_weight and label_smoothing (the corrected form), soft CSR
    values: against the plain loss on the logits and the dense (soft) mask."""
    x, w, b = exact_head(7, 6, C_OPT)
    x = x + torch.randn_like(x) * 0.01
    mask = sparse_mask(7, C_OPT)
    if form == "csr":  # soft labels in (0, 1]
        mask = mask * torch.linspace(0.2, 1.0, C_OPT, dtype=torch.float64)
    kw = soft_margin_options("per-class", 0.1, True)
    for ref in (plain, bce_oracle):
        compare(MSM, x, w, b, sparse_form(form, mask), reduction, kw, chunk, torch.float64, ref,
                ref_target=mask)


@pytest.mark.parametrize("loss", SPARSE_LOSSES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_sparse_float32_matches_the_dense_head(loss, form, reduction):
    """float32 on the CPU (the native kernels per chunk, the stride-0 zero target for soft
    margin): the sparse head against the dense head, chunks of 64 over 300 classes."""
    x, w, b = exact_head(33, 16, 300, torch.float32, seed=1)
    mask = sparse_mask(33, 300, seed=1, p=0.02).float()
    kw = ({"weight": torch.rand(300) + 0.5, "pos_weight": torch.rand(300) * 2}
          if loss == MSM else {})

    def head(target):
        return lambda x, w, b: HEAD[loss](x, w, target, linear_bias=b, reduction=reduction,
                                          chunk_size=64, **kw)

    out, grads = grads_of(head(sparse_form(form, mask)), (x, w, b))
    ref, ref_grads = grads_of(head(dense_of(loss, mask)), (x, w, b))
    assert out.dtype == ref.dtype == torch.float32
    assert_close(out, ref)
    for a, c in zip(grads, ref_grads):
        assert_close(a, c)


def test_sparse_dtypes_follow_the_dense_target():
    """A float CSR's values promote the loss as the dense mask would; index forms do not."""
    x, w, _ = exact_head(4, 3, 10, torch.bfloat16)
    mask = sparse_mask(4, 10).to(torch.bfloat16)
    for form in FORMS:
        out = MF.linear_multilabel_soft_margin_loss(x, w, sparse_form(form, mask), chunk_size=4)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(
            out.float(), MF.linear_multilabel_soft_margin_loss(x.float(), w.float(), mask.float(),
                                                               chunk_size=4),
            rtol=1.6e-2, atol=2e-3)
    csr64 = sparse_form("csr", mask.double())
    assert MF.linear_multilabel_soft_margin_loss(x, w, csr64).dtype == torch.float64


def test_sparse_duplicates_and_empty_targets():
    """Soft margin: duplicate entries add up (as to_dense()); hinge: a class listed twice
    counts twice; no positive at all (nnz = 0)."""
    x, w, b = exact_head(3, 4, 9)
    rows, cols = torch.tensor([0, 0, 2, 2]), torch.tensor([4, 4, 8, 1])
    soft = csr_tensor([0, 2, 2, 4], [4, 4, 8, 1], [0.25, 0.5, 1.0, 1.0], (3, 9), check=False)
    mask = torch.zeros(3, 9, dtype=torch.float64)
    mask[0, 4], mask[2, 8], mask[2, 1] = 0.75, 1.0, 1.0
    for chunk in (2, 9):
        compare(MSM, x, w, b, soft, "none", {}, chunk, torch.float64, oracle, ref_target=mask)
        lists = torch.nn.functional.pad(torch.tensor([[4, 4], [-1, -1], [8, 1]]), (0, 7),
                                        value=-1)
        compare("multilabel_margin_loss", x, w, b, (rows, cols), "none", {}, chunk,
                torch.float64, oracle, ref_target=lists)
        for loss in SPARSE_LOSSES:
            empty = [torch.zeros(0, dtype=torch.long)] * 3
            compare(loss, x, w, b, empty, "sum", {}, chunk, torch.float64, oracle,
                    ref_target=dense_of(loss, torch.zeros(3, 9, dtype=torch.float64)))


@pytest.mark.parametrize("loss", LOSSES)
def test_row_blocks_match_one_block(loss, monkeypatch):
    """A batch cut into blocks of rows (a chunk of all rows over the budget): each block's
    rows and gradients land in their own place; the sparse soft margin target too."""
    monkeypatch.setattr(linear, "BUDGET", 64)  # blocks of 4 * 64 // 8 = 32 rows
    x, w, b = exact_head(40, 4, 30)
    target = make_case(loss, 40, 30)
    assert linear.chunk_sizes(40, 30, 8) == (8, 32)
    compare(loss, x, w, b, target, "none", {}, 8, torch.float64, oracle)
    if loss in SPARSE_LOSSES:
        mask = sparse_mask(40, 30)
        compare(loss, x, w, b, sparse_form("pair", mask), "mean", {}, 8, torch.float64, oracle,
                ref_target=dense_of(loss, mask))


def test_sparse_module_forward():
    torch.manual_seed(0)
    head = marginloss.LinearMultiLabelSoftMarginLoss(6, 17, bias=True, dtype=torch.float64,
                                                     chunk_size=5, reduction="sum")
    hinge = marginloss.LinearMultiLabelMarginLoss(6, 17, dtype=torch.float64, chunk_size=5)
    x = torch.randn(4, 6, dtype=torch.float64)
    mask = sparse_mask(4, 17)
    for module, loss in ((head, MSM), (hinge, "multilabel_margin_loss")):
        want = module(x, dense_of(loss, mask))
        assert_close(module(x, sparse_form("list", mask)), want)
        assert_close(module(x, sparse_form("csr", mask)), want)


def test_sparse_compile_fullgraph_matches_eager():
    """The index forms trace whole (validate=False: the check reads values), through the
    operator's sparse arguments, forward and both backwards."""
    x, w, b = exact_head(6, 4, 21, torch.float32)
    mask = sparse_mask(6, 21).float()
    rows, cols = mask.nonzero(as_tuple=True)
    kw = soft_margin_options("per-class", 0.1, c=21, dtype=torch.float32)

    def step(x, w, b, rows, cols, reduction):
        return MF.linear_multilabel_soft_margin_loss(x, w, (rows, cols), linear_bias=b,
                                                     reduction=reduction, chunk_size=8,
                                                     validate=False, **kw)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    for reduction in ("mean", "none"):
        g = torch.rand(6) + 1 if reduction == "none" else torch.tensor(2.0)
        out, grads = grads_of(lambda x, w, b: compiled(x, w, b, rows, cols, reduction),
                              (x, w, b), g)
        ref, ref_grads = grads_of(lambda x, w, b: bce_oracle(MSM, x @ w.t() + b, mask,
                                                             reduction, kw), (x, w, b), g)
        assert_close(out, ref)
        for a, c in zip(grads, ref_grads):
            assert_close(a, c)
    schema = str(linear.OPS[MSM]._schema)
    assert "Tensor? target_cols" in schema and "Tensor? target_values" in schema


X_SPARSE = torch.randn(2, 3)  # features: the logits are (2, 4)
W_SPARSE = torch.randn(4, 3)
SPARSE_MISTAKES = [
    (torch.tensor([0, 1]), torch.tensor([1, 4])),  # class 4 of 4
    [torch.tensor([0, -1]), torch.tensor([1])],  # -1 padding in a list
    (torch.tensor([0, 2]), torch.tensor([1, 1])),  # row 2 of 2
    [torch.tensor([0])],  # one list for two samples
    (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])),  # a tuple of three
    [torch.tensor([0.0]), torch.tensor([1])],  # float indices
    [torch.tensor([[0]]), torch.tensor([1])],  # 2-D indices
    (torch.tensor([0, 1]), torch.tensor([1])),  # rows and classes of different lengths
    [[0, 3], torch.tensor([1])],  # a plain list
    csr_tensor([0, 3, 2], [0, 1, 2], [1.0, 1.0, 1.0], (2, 4), check=False),  # bad pointer
    csr_tensor([0, 1, 1, 1], [2], [1.0], (3, 4)),  # not the logits' shape
    csr_tensor([0, 1, 1], [2], [0.0], (2, 4)),  # a stored zero
    csr_tensor([0, 1, 1], [2], [0.5], (2, 4)),  # soft: fine for soft margin only
    csr_tensor([0, 2, 2], [2, 2], [1.0, 1.0], (2, 4), check=False),  # a duplicate: 2 > 1
]


@pytest.mark.parametrize("loss", SPARSE_LOSSES)
@pytest.mark.parametrize("case", range(len(SPARSE_MISTAKES)))
def test_sparse_errors_are_the_plain_loss_errors(loss, case):
    """The plain loss's sparse path raises, so does the head, with its message (a shape or
    dtype message carries the head's note on what `input` means); unchecked
    (validate=False) out-of-range entries give some result, never a bad access."""
    target = SPARSE_MISTAKES[case]
    plain_loss = getattr(MF, loss)
    try:
        plain_loss(X_SPARSE @ W_SPARSE.t(), target)
    except (LabelError, ShapeError, DtypeError) as e:
        want = e
    else:
        want = None
    if want is None:
        HEAD[loss](X_SPARSE, W_SPARSE, target, chunk_size=3)
        return
    with pytest.raises(type(want)) as got:
        HEAD[loss](X_SPARSE, W_SPARSE, target, chunk_size=3)
    assert str(got.value).startswith(str(want))
    if isinstance(want, LabelError) and case < 3:
        out = HEAD[loss](X_SPARSE, W_SPARSE, target, chunk_size=3, validate=False,
                         reduction="none")
        assert out.shape == (2,)


def test_sparse_target_needs_batched_features():
    with pytest.raises(ShapeError, match=r"unsqueeze\(0\).*linear_multilabel_soft_margin_loss"):
        MF.linear_multilabel_soft_margin_loss(X_SPARSE[0], W_SPARSE, [torch.tensor([1])])
    with pytest.raises(DtypeError):  # multi_margin_loss takes no sparse target
        MF.linear_multi_margin_loss(X_SPARSE, W_SPARSE, [torch.tensor([1]), torch.tensor([0])])


def _largest_allocation(fn) -> int:
    """The largest number of bytes one torch op allocated (net) while ``fn`` ran."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(e.self_cpu_memory_usage for e in prof.events())


@pytest.mark.parametrize("loss", SPARSE_LOSSES)
def test_sparse_head_builds_no_dense_target(loss):
    """With C = 100,000 classes and a few positives per sample, no allocation is anywhere near
    a dense (N, C) target (4 bytes per logit for a float mask, 8 for int64 lists): the largest
    is the weight's gradient (C x H, H = 4 < N / 4) or a chunk; a dense one would show."""
    n, h, c, chunk = 64, 4, 100_000, 8192
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, h, generator=g, requires_grad=True)
    w = torch.randn(c, h, generator=g, requires_grad=True)
    cols = torch.randint(0, c, (n, 3), generator=g).sort(1).values
    target = [row.unique() for row in cols]
    kw = {"pos_weight": torch.rand(c) + 0.5, "label_smoothing": 0.1} if loss == MSM else {}

    def step(t):
        return lambda: HEAD[loss](x, w, t, chunk_size=chunk, **kw).backward()

    peak = _largest_allocation(step(target))
    # (8 bytes per chunk element: the hinge's per-chunk int64 lists; the logits buffer, 4)
    assert peak <= 8 * max(c * h, n * (chunk + 8)) < n * c

    def step_dense():  # the measure sees a dense target built in the call
        if loss == MSM:
            t = torch.zeros(n, c).scatter_(1, cols, 1.0)
        else:
            t = torch.full((n, c), -1)
            t[:, :3] = cols
        HEAD[loss](x, w, t, chunk_size=chunk, **kw).backward()

    assert _largest_allocation(step_dense) >= 4 * n * c


# ----------------------------------------------------------------------------------------------
# shortlists: candidates=, the loss over given classes per sample


N_SL, H_SL, C_SL, K_SL = 6, 5, 40, 7


def shortlist_case(loss, n=N_SL, c=C_SL, k=K_SL, seed=0):
    """Candidates with padding (-1 and C), a class listed twice, a row of padding only; the
    target in candidate space (pointing at real candidates)."""
    g = torch.Generator().manual_seed(seed)
    cand = torch.stack([torch.randperm(c, generator=g)[:k] for _ in range(n)])
    cand[0, -1] = -1
    cand[1, -2:] = c
    cand[2, 3] = cand[2, 1]  # a duplicate
    cand[3] = -1  # no real candidate
    cand[4, 0] = c
    valid = (cand >= 0) & (cand < c)
    if loss == MSM:
        target = (torch.rand(n, k, generator=g) < 0.4).double()
        target[2, 1] = target[2, 3] = 1.0
        return cand, target
    if loss == "multi_margin_loss":
        target = torch.tensor([int(row.nonzero()[0]) if row.any() else 0 for row in valid])
        target[2] = 3  # the duplicate's second slot
        return cand, target
    target = torch.full((n, 4), -1)
    for r in range(n):
        real = valid[r].nonzero().flatten()
        m = int(torch.randint(0, min(3, real.numel()) + 1, (), generator=g))
        target[r, :m] = real[torch.randperm(real.numel(), generator=g)[:m]]
    target[2, :2] = torch.tensor([1, 3])  # both slots of the duplicate
    return cand, target


def shortlist_oracle(loss, x, w, b, cand, target, reduction, kw):
    """torch's loss, row by row, on the logits (by hand) at the row's real candidates only."""
    logits = x @ w.t() + (b if b is not None else 0)
    c = w.shape[0]
    rows = []
    for r in range(x.shape[0]):
        real = ((cand[r] >= 0) & (cand[r] < c)).nonzero().flatten()
        if real.numel() == 0:
            rows.append(logits.new_zeros(()))
            continue
        s = logits[r, cand[r, real]]
        if loss == MSM:
            eps = kw.get("label_smoothing", 0.0)
            t = target[r, real].to(s.dtype) * (1 - eps) + eps / 2
            cw = kw.get("weight")
            pw = kw.get("pos_weight")
            rows.append(F.binary_cross_entropy_with_logits(
                s, t, weight=None if cw is None else cw[cand[r, real]],
                pos_weight=None if pw is None else pw[cand[r, real]]))
        elif loss == "multi_margin_loss":
            pos = int((real == target[r]).nonzero()[0])
            cw = kw.get("weight")
            rows.append(F.multi_margin_loss(
                s[None], torch.tensor([pos]), p=kw.get("p", 1), margin=kw.get("margin", 1.0),
                weight=None if cw is None else cw[cand[r, real]], reduction="sum"))
        else:
            listed = [int(v) for v in target[r] if v >= 0]
            where = {int(slot): i for i, slot in enumerate(real)}
            t = torch.full((real.numel(),), -1)
            t[: len(listed)] = torch.tensor([where[v] for v in listed], dtype=torch.long)
            rows.append(F.multilabel_margin_loss(s[None], t[None], reduction="sum"))
    out = torch.stack(rows)
    return {"none": out, "mean": out.mean(), "sum": out.sum()}[reduction]


def shortlist_kwargs(loss, with_options):
    g = torch.Generator().manual_seed(3)
    if not with_options:
        return {}
    if loss == MSM:
        return {"weight": torch.rand(C_SL, generator=g, dtype=torch.float64) + 0.5,
                "pos_weight": torch.rand(C_SL, generator=g, dtype=torch.float64) * 3,
                "label_smoothing": 0.1}
    if loss == "multi_margin_loss":
        return {"weight": torch.rand(C_SL, generator=g, dtype=torch.float64) + 0.5, "p": 2,
                "margin": 0.75}
    return {}


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("with_options", [False, True])
def test_shortlist_matches_the_loss_on_the_candidates(loss, reduction, with_options):
    """Loss and the gradients of input, linear_weight and linear_bias (random upstream
    gradient) against torch's loss on the logits computed by hand at each row's real
    candidates: padding slots have no term, a row's mean is over its real candidates, a class
    listed twice is scored (and its weight row updated) twice."""
    x, w, b = exact_head(N_SL, H_SL, C_SL)
    if loss == MSM:
        x = x + torch.randn_like(x) * 0.01
    cand, target = shortlist_case(loss)
    kw = shortlist_kwargs(loss, with_options)
    g = torch.randn((N_SL,) if reduction == "none" else (), dtype=torch.float64) + 2.0
    out, grads = grads_of(lambda x, w, b: HEAD[loss](x, w, target, linear_bias=b,
                                                     candidates=cand, reduction=reduction,
                                                     **kw), (x, w, b), g)
    ref, ref_grads = grads_of(lambda x, w, b: shortlist_oracle(loss, x, w, b, cand, target,
                                                               reduction, kw), (x, w, b), g)
    assert out.dtype == ref.dtype
    assert_close(out, ref)
    for a, c in zip(grads, ref_grads):
        assert_close(a, c)
    if reduction == "none":
        assert out[3] == 0  # a row of padding only


@pytest.mark.parametrize("loss", LOSSES)
def test_shortlist_padding_changes_nothing(loss):
    """More padding slots (-1 or C, anywhere) leave the loss and gradients as they are; the
    full candidate list of every class equals the dense head."""
    x, w, b = exact_head(N_SL, H_SL, C_SL)
    cand, target = shortlist_case(loss)
    pad = torch.tensor([[-1, C_SL]]).expand(N_SL, 2)
    wide = torch.cat([pad, cand], 1)  # every real slot moves two to the right
    if loss == MSM:
        wide_target = torch.cat([torch.ones(N_SL, 2, dtype=torch.float64), target], 1)
    elif loss == "multi_margin_loss":
        wide_target = target + 2
    else:
        wide_target = torch.where(target >= 0, target + 2, -1)
    one, g1 = grads_of(lambda x, w, b: HEAD[loss](x, w, target, linear_bias=b, candidates=cand,
                                                  reduction="none"), (x, w, b))
    two, g2 = grads_of(lambda x, w, b: HEAD[loss](x, w, wide_target, linear_bias=b,
                                                  candidates=wide, reduction="none"), (x, w, b))
    assert_close(two, one)
    for a, c in zip(g2, g1):
        assert_close(a, c)
    every = torch.arange(C_SL).expand(N_SL, C_SL)
    dense = make_case(loss, N_SL, C_SL)
    assert_close(HEAD[loss](x, w, dense, linear_bias=b, candidates=every, reduction="none"),
                 HEAD[loss](x, w, dense, linear_bias=b, reduction="none"))


@pytest.mark.parametrize("loss", LOSSES)
def test_shortlist_unbatched_and_module(loss):
    x, w, b = exact_head(N_SL, H_SL, C_SL)
    cand, target = shortlist_case(loss)
    for reduction in REDUCTIONS:
        got = HEAD[loss](x[0], w, target[0], linear_bias=b, candidates=cand[0],
                         reduction=reduction)
        want = shortlist_oracle(loss, x[:1], w, b, cand[:1], target[:1], "none", {})[0]
        assert got.shape == ()
        assert_close(got, want)
    cls = {MSM: marginloss.LinearMultiLabelSoftMarginLoss,
           "multi_margin_loss": marginloss.LinearMultiMarginLoss,
           "multilabel_margin_loss": marginloss.LinearMultiLabelMarginLoss}[loss]
    head = cls(H_SL, C_SL, bias=True, dtype=torch.float64)
    with torch.no_grad():
        head.linear.weight.copy_(w)
        head.linear.bias.copy_(b)
    head(x, target, cand).backward()
    ref, (gw,) = grads_of(lambda w: shortlist_oracle(loss, x, w, b, cand, target, "mean", {}),
                          (w,))
    assert_close(head.linear.weight.grad, gw)


def test_shortlist_gradcheck_float64():
    torch.manual_seed(1)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(9, dtype=torch.float64, requires_grad=True)
    cand = torch.tensor([[0, 4, 4, -1], [8, 1, 9, 2], [3, 5, 6, 7], [9, -1, 2, 0]])
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0],
                      [0.0, 0.0, 1.0, 0.0]])
    pw = torch.rand(9, dtype=torch.float64) * 2

    def f(x, w, b):
        return MF.linear_multilabel_soft_margin_loss(x, w, y, linear_bias=b, candidates=cand,
                                                     pos_weight=pw, label_smoothing=0.2,
                                                     reduction="none")

    assert torch.autograd.gradcheck(f, (x, w, b))


def test_shortlist_gathers_only_the_candidates(monkeypatch):
    """Forward never makes a tensor anywhere near linear_weight's size (the candidates' rows
    are gathered in blocks of rows), and only the gradient of linear_weight is (C, H)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    monkeypatch.setattr(linear, "BUDGET", 1 << 10)
    n, h, c, k = 32, 16, 4096, 8
    x, w, b = exact_head(n, h, c, torch.float32)
    cand = torch.randint(0, c, (n, k))
    target = (torch.rand(n, k) < 0.3).float()
    given = {t.untyped_storage().data_ptr() for t in (x, w, b, cand, target)}
    sizes = {}  # new storage -> its elements

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in given:
                    storage = t.untyped_storage()
                    sizes[storage.data_ptr()] = storage.nbytes() // t.element_size()
            return out

    with Record(), torch.no_grad():
        MF.linear_multilabel_soft_margin_loss(x, w, target, linear_bias=b, candidates=cand)
    assert max(sizes.values()) <= max(1 << 10, n * k * 4) < c * h // 8
    w.requires_grad_()
    sizes.clear()
    with Record():
        MF.linear_multilabel_soft_margin_loss(x, w, target, linear_bias=b,
                                              candidates=cand).backward()
    largest = sorted(sizes.values())
    assert largest[-1] == c * h and largest[-2] < c * h // 8  # the gradient, then small ones


def test_shortlist_errors():
    x, w, b = exact_head(3, 4, 6, torch.float32)
    cand = torch.tensor([[0, 5, -1], [6, 2, 3], [1, 1, 4]])
    y = torch.zeros(3, 3)
    msm = MF.linear_multilabel_soft_margin_loss
    with pytest.raises(LabelError, match=r"class 7 in sample 1 \(slot 0\).*-1 and 6 mark"):
        msm(x, w, y, candidates=torch.tensor([[0, 5, -1], [7, 2, 3], [1, 1, 4]]))
    with pytest.raises(LabelError, match="class -2"):
        msm(x, w, y, candidates=cand - 2)
    assert msm(x, w, y, candidates=cand + 10, validate=False).isfinite()  # all padding
    with pytest.raises(ShapeError, match=r"shape \(3, K\)"):
        msm(x, w, y, candidates=cand[:2])
    with pytest.raises(ShapeError, match=r"shape \(3, K\)"):
        msm(x, w, y, candidates=cand[0])
    with pytest.raises(DtypeError, match="integer"):
        msm(x, w, y, candidates=cand.float())
    with pytest.raises(DtypeError, match="dense tensor"):
        msm(x, w, y, candidates=[0, 1])
    with pytest.raises(DtypeError, match=r"candidate space.*shortlist_target"):
        msm(x, w, [torch.tensor([0]), torch.tensor([2]), torch.tensor([])], candidates=cand)
    with pytest.raises(ShapeError, match=r"candidate scores, of shape \(3, 3\)"):
        msm(x, w, torch.zeros(3, 6), candidates=cand)  # a class-space target
    with pytest.raises(LabelError, match="multilabel_soft_margin_loss"):
        msm(x, w, y + 2, candidates=cand)  # the plain loss's own label check
    with pytest.raises(ShapeError, match="pos_weight"):
        msm(x, w, y, candidates=cand, pos_weight=torch.ones(3))  # per class (C,), not (K,)
    with pytest.raises(ValueError, match="finite and >= 0"):
        msm(x, w, y, candidates=cand, pos_weight=-torch.ones(6))
    with pytest.raises(LabelError, match="slot 2, which is padding"):
        MF.linear_multi_margin_loss(x, w, torch.tensor([2, 0, 1]), candidates=cand)
    with pytest.raises(LabelError, match="multi_margin_loss"):
        MF.linear_multi_margin_loss(x, w, torch.tensor([3, 0, 1]), candidates=cand)
    with pytest.raises(LabelError, match="slot 0, which is padding"):
        MF.linear_multilabel_margin_loss(x, w, torch.tensor([[1, -1], [0, 1], [2, -1]]),
                                         candidates=cand)
    # a padding slot after the list's end is not read
    MF.linear_multilabel_margin_loss(x, w, torch.tensor([[1, -1], [1, -1, ], [2, -1]]),
                                     candidates=cand)


@pytest.mark.interpret
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1"
                    or importlib.util.find_spec("triton") is None,
                    reason="needs Triton's interpreter (TRITON_INTERPRET=1)")
def test_sparse_triton_chunk_pass_under_the_interpreter():
    """The CUDA path's per-chunk pass (our Triton kernel) on the stride-0 zero target, with
    pos_weight's slice and the positives' correction."""
    from kernels.conftest import squeeze_interpreter_index

    squeeze_interpreter_index()
    x, w, b = exact_head(5, 4, 19, torch.float32, seed=4)
    mask = sparse_mask(5, 19, seed=4).float()
    kw = soft_margin_options("per-class", 0.1, True, c=19, dtype=torch.float32)
    compare(MSM, x, w, b, sparse_form("pair", mask), "mean", kw, 8, torch.float32, plain,
            backend="triton", ref_target=mask)


def assert_cuda_matches_cpu(on):
    """``on(device) -> (loss, grads)``: CUDA equals the CPU, and is deterministic."""
    out, grads = on("cuda")
    ref, ref_grads = on("cpu")
    assert_close(out.cpu(), ref)
    for a, c in zip(grads, ref_grads):
        assert_close(a.cpu(), c)
    again = on("cuda")
    assert all(torch.equal(a, c) for a, c in zip(grads, again[1]))  # deterministic


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("loss", SPARSE_LOSSES)
@pytest.mark.parametrize("form", FORMS)
def test_sparse_cuda_matches_cpu(loss, form):
    x, w, b = exact_head(64, 32, 1000, torch.float32, seed=5)
    mask = sparse_mask(64, 1000, seed=5, p=0.01).float()
    kw = {"pos_weight": torch.rand(1000) + 0.5, "label_smoothing": 0.1} if loss == MSM else {}
    target = sparse_form(form, mask)

    def to(t, dev):
        if isinstance(t, list | tuple):
            return type(t)(v.to(dev) for v in t)
        return t.to(dev)

    def on(dev):
        kw_dev = {k: to(v, dev) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        return grads_of(lambda x, w, b: HEAD[loss](x, w, to(target, dev), linear_bias=b,
                                                   chunk_size=300, **kw_dev),
                        [v.to(dev) for v in (x, w, b)])

    assert_cuda_matches_cpu(on)
    bad = (torch.tensor([0, 3]).cuda(), torch.tensor([5, 1000]).cuda())
    with pytest.raises(LabelError, match="class 1000"):
        HEAD[loss](x.cuda(), w.cuda(), bad, chunk_size=300)
        marginloss.check_labels()  # (soft margin: reported by a later call, no host wait)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("loss", LOSSES)
def test_shortlist_cuda_matches_cpu(loss):
    x, w, b = exact_head(N_SL, H_SL, C_SL, torch.float32)
    cand, target = shortlist_case(loss)

    def on(dev):
        return grads_of(lambda x, w, b: HEAD[loss](x, w, target.to(dev), linear_bias=b,
                                                   candidates=cand.to(dev)),
                        [v.to(dev) for v in (x, w, b)])

    assert_cuda_matches_cpu(on)


# ----------------------------------------------------------------------------------------------
# class_reduction="sum" (the sum over classes, for very many classes)


@pytest.mark.parametrize("chunk", [None, 7])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_class_sum_head_matches_the_plain_loss(reduction, chunk):
    """The head with class_reduction="sum" equals the plain loss on the logits with the same
    option (and C times the mean), for loss and the gradients of input, weight and bias, dense
    and sparse targets, with a class weight and pos_weight; the module form too."""
    g = torch.Generator().manual_seed(5)
    n, h, c = 6, 5, 23
    x = torch.randn(n, h, generator=g, dtype=torch.float64)
    w = torch.randn(c, h, generator=g, dtype=torch.float64)
    b = torch.randn(c, generator=g, dtype=torch.float64)
    y = (torch.rand(n, c, generator=g) < 0.3).double()
    cw = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    pw = torch.rand(c, generator=g, dtype=torch.float64) * 3
    rows, cols = y.nonzero(as_tuple=True)
    for target in (y, (rows, cols)):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        ours = MF.linear_multilabel_soft_margin_loss(
            leaves[0], leaves[1], target, linear_bias=leaves[2], weight=cw, pos_weight=pw,
            reduction=reduction, chunk_size=chunk, class_reduction="sum")
        refs = [t.clone().requires_grad_() for t in (x, w, b)]
        ref = MF.multilabel_soft_margin_loss(F.linear(*refs), y, cw, reduction=reduction,
                                             pos_weight=pw, class_reduction="sum")
        up = torch.rand_like(ref) + 0.5
        ours.backward(up)
        ref.backward(up)
        assert_close(ours, ref, torch.float64)
        for a, r in zip(leaves, refs):
            assert_close(a.grad, r.grad, torch.float64)
    mean = MF.linear_multilabel_soft_margin_loss(x, w, y, linear_bias=b, reduction=reduction)
    total = MF.linear_multilabel_soft_margin_loss(x, w, y, linear_bias=b, reduction=reduction,
                                                  class_reduction="sum")
    assert_close(total, mean * c, torch.float64)
    head = marginloss.LinearMultiLabelSoftMarginLoss(h, c, bias=True, dtype=torch.float64,
                                                     reduction=reduction, chunk_size=chunk,
                                                     class_reduction="sum")
    with torch.no_grad():
        head.linear.weight.copy_(w)
        head.linear.bias.copy_(b)
    assert "class_reduction='sum'" in repr(head)
    assert_close(head(x, y), total, torch.float64)


def test_class_sum_shortlist_sums_over_the_real_candidates():
    """With candidates, "sum" adds each row's terms over its real candidates (padding slots
    have none): C_n times the shortlist's mean, row by row."""
    g = torch.Generator().manual_seed(6)
    n, h, c = 4, 5, 30
    x, w = torch.randn(n, h, generator=g), torch.randn(c, h, generator=g)
    cand = torch.tensor([[3, 7, 29, -1], [0, 1, 2, 5], [c, c, 8, 9], [4, -1, c, -1]])
    y = (torch.rand(n, 4, generator=g) < 0.5).float()
    mean = MF.linear_multilabel_soft_margin_loss(x, w, y, candidates=cand, reduction="none")
    total = MF.linear_multilabel_soft_margin_loss(x, w, y, candidates=cand, reduction="none",
                                                  class_reduction="sum")
    real = ((cand >= 0) & (cand < c)).sum(1).float()
    assert_close(total, mean * real, torch.float32)


def test_class_reduction_head_errors():
    x, w, y = torch.randn(2, 3), torch.randn(5, 3), torch.zeros(2, 5)
    with pytest.raises(ValueError, match=r"linear_multilabel_soft_margin_loss: `class_reduction`"):
        MF.linear_multilabel_soft_margin_loss(x, w, y, class_reduction="total")
    with pytest.raises(ValueError, match="class_reduction"):
        MF.linear_multilabel_soft_margin_loss(x, w, y, candidates=torch.zeros(2, 1).long(),
                                              class_reduction="avg")
