"""multilabel_soft_margin_loss's own options: ``pos_weight`` and ``label_smoothing``.

Each is checked on every backend (torch ops, native C, Triton: under ``TRITON_INTERPRET=1`` on
CPU tensors, or on CUDA) against

* a float64 reference written from the formula, with ``t = y (1 - eps) + eps / 2``:
  ``l_n = (1/C) sum_c w_c [p_c t softplus(-x) + (1 - t) softplus(x)]``, and
* ``torch.nn.BCEWithLogitsLoss(pos_weight=...)`` averaged over the classes (the oracle for
  ``pos_weight``), ``torch.nn.functional.multilabel_soft_margin_loss`` on the smoothed targets
  (the oracle for ``label_smoothing``),

for the loss and the input's gradient; plus gradcheck in float64, stability at large and tiny
losses, the argument checks, and the operator's composability (compile, export, torch.func).
"""

from __future__ import annotations

import importlib.util
import math
import os
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as TF
from helpers import REDUCTIONS, assert_close

import marginloss
import marginloss.functional as F
from marginloss import _pipeline
from marginloss.errors import DtypeError, LabelError, ShapeError

NAME = "multilabel_soft_margin_loss"
HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _triton_param(device: str):
    ok = HAS_TRITON and (torch.cuda.is_available() if device == "cuda" else INTERPRET)
    return pytest.param("triton", device, marks=[
        pytest.mark.interpret if device == "cpu" else pytest.mark.gpu,
        pytest.mark.skipif(not ok, reason="needs triton and TRITON_INTERPRET=1 (CPU) or CUDA"),
    ], id=f"triton-{device}")


# (backend, device): every backend, the Triton kernels on CPU under the interpreter
BACKENDS = [pytest.param("torch", "cpu", id="torch"), pytest.param("native", "cpu", id="native"),
            _triton_param("cpu"), _triton_param("cuda")]


@pytest.fixture(autouse=True, scope="module")
def _interpreter_shim():
    """Triton < 3.7's interpreter with NumPy >= 2.4 (see tests/kernels/conftest.py)."""
    if HAS_TRITON:
        path = Path(__file__).parent / "kernels" / "conftest.py"
        spec = importlib.util.spec_from_file_location("_kernels_conftest", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    yield


# ----------------------------------------------------------------------------------------------
# the reference, from the formula


def softplus64(z: torch.Tensor) -> torch.Tensor:
    """``log(1 + e^z)`` in float64, accurate for every z (torch's softplus cuts off at 20),
    gradient ``sigmoid(z)`` (also at 0)."""
    z = z.double()
    return torch.logaddexp(z, torch.zeros_like(z))


def reference(x, y, weight=None, pos_weight=None, eps=0.0, reduction="mean"):
    """The loss in float64, from the formula (autograd gives its gradient)."""
    t = y.double() * (1 - eps) + eps / 2
    p = 1.0 if pos_weight is None else pos_weight.double()
    w = 1.0 if weight is None else weight.double()
    terms = w * (p * t * softplus64(-x) + (1 - t) * softplus64(x))
    rows = terms.mean(-1)
    return {"none": rows, "mean": rows.mean(), "sum": rows.sum()}[reduction]


def inputs(n=5, c=7, dtype=torch.float32, seed=0, soft=False):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, generator=g, dtype=torch.float64) * 3).to(dtype)
    y = torch.rand(n, c, generator=g) if soft else torch.randint(0, 2, (n, c), generator=g)
    pw = torch.rand(c, generator=g, dtype=torch.float64) * 4
    w = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    return x, y.to(dtype), pw.to(dtype), w.to(dtype)


def both(ours, ref, x, upstream):
    """Loss and input gradient of ``ours`` and of the float64 ``ref``, upstream ``upstream``."""
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().double().requires_grad_()
    a, b = ours(xa), ref(xb)
    g = torch.full_like(b, upstream) if upstream is not None else torch.rand_like(b) + 0.5
    a.backward(g.to(a.dtype))
    b.backward(g)
    return a, b, xa.grad, xb.grad


def check(a, b, ga, gb, dtype):
    assert a.dtype == dtype and ga.dtype == dtype
    assert_close(a, b.to(dtype), dtype)
    assert_close(ga, gb.to(dtype), dtype)


# ----------------------------------------------------------------------------------------------
# values and gradients


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("backend, device", BACKENDS)
def test_matches_the_formula_on_every_backend(backend, device, reduction):
    """Options alone and together, with and without a class or full weight, soft labels, short
    rows and long ones (the native kernel's chunks, the Triton kernel's several chunks)."""
    dtype = torch.float32
    for n, c, soft in ((5, 7, False), (3, 300, True)):
        x, y, pw, w = inputs(n, c, dtype, soft=soft)
        full = torch.rand(n, c, dtype=dtype) + 0.5
        x, y, pw, w, full = (t.to(device) for t in (x, y, pw, w, full))
        for weight, p, eps in ((None, pw, 0.0), (None, None, 0.2), (w, pw, 0.1),
                               (full, pw, 0.3), (w, None, 0.05)):
            kw = dict(weight=weight, pos_weight=p, label_smoothing=eps, reduction=reduction)
            a, b, ga, gb = both(
                lambda t, kw=kw: F.multilabel_soft_margin_loss(t, y, backend=backend, **kw),
                lambda t, kw=kw: reference(t, y, weight=kw["weight"], pos_weight=kw["pos_weight"],
                                           eps=kw["label_smoothing"], reduction=reduction),
                x, upstream=None)
            check(a, b, ga, gb, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("backend, device", BACKENDS)
def test_pos_weight_is_bce_with_logits_averaged_over_classes(backend, device, reduction):
    """The oracle: torch.nn.BCEWithLogitsLoss(weight, pos_weight) per element, mean over the
    classes, then the reduction; the module form too."""
    x, y, pw, w = (t.to(device) for t in inputs(6, 9))
    bce = torch.nn.BCEWithLogitsLoss(weight=w, pos_weight=pw, reduction="none")

    def oracle(t):
        rows = bce(t.float(), y).mean(-1)
        return {"none": rows, "mean": rows.mean(), "sum": rows.sum()}[reduction]

    ours = marginloss.MultiLabelSoftMarginLoss(weight=w, reduction=reduction, backend=backend,
                                               pos_weight=pw)
    for fn in (ours, lambda t: F.multilabel_soft_margin_loss(
            t, y, w, reduction=reduction, backend=backend, pos_weight=pw)):
        a, b, ga, gb = both(lambda t, fn=fn: fn(t, y) if fn is ours else fn(t), oracle, x, 2.5)
        check(a, b, ga, gb, torch.float32)


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_label_smoothing_is_torchs_loss_on_smoothed_targets(backend, device):
    x, y, _, w = (t.to(device) for t in inputs(4, 11))
    for eps in (0.1, 0.5, 0.95):
        a, b, ga, gb = both(
            lambda t, eps=eps: F.multilabel_soft_margin_loss(t, y, w, label_smoothing=eps,
                                                             reduction="sum", backend=backend),
            lambda t, eps=eps: TF.multilabel_soft_margin_loss(t, y.double() * (1 - eps) + eps / 2,
                                                              w.double(), reduction="sum"),
            x, 1.0)
        check(a, b, ga, gb, torch.float32)


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_default_options_change_nothing(backend, device):
    """pos_weight=None, label_smoothing=0 is the plain loss, bit for bit; all-ones pos_weight
    the same values."""
    x, y, _, w = (t.to(device) for t in inputs(5, 13))
    for reduction in REDUCTIONS:
        plain = F.multilabel_soft_margin_loss(x, y, w, reduction=reduction, backend=backend)
        same = F.multilabel_soft_margin_loss(x, y, w, reduction=reduction, backend=backend,
                                             pos_weight=None, label_smoothing=0.0)
        ones = F.multilabel_soft_margin_loss(x, y, w, reduction=reduction, backend=backend,
                                             pos_weight=torch.ones(13, device=device))
        assert torch.equal(plain, same)
        assert_close(ones, plain)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_float64(reduction):
    x, y, pw, w = inputs(3, 5, torch.float64, soft=True)
    for kw in ({"pos_weight": pw}, {"label_smoothing": 0.2}, {"pos_weight": pw,
                                                               "label_smoothing": 0.3}):
        def loss(t, kw=kw):
            return F.multilabel_soft_margin_loss(t, y, w, reduction=reduction, **kw)

        x0 = x.clone().requires_grad_()
        assert torch.autograd.gradcheck(loss, (x0,), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_float64_matches_the_reference_tightly():
    x, y, pw, w = inputs(4, 6, torch.float64)
    for reduction in REDUCTIONS:
        a, b, ga, gb = both(
            lambda t: F.multilabel_soft_margin_loss(t, y, w, reduction=reduction,
                                                    pos_weight=pw, label_smoothing=0.1),
            lambda t: reference(t, y, w, pw, 0.1, reduction), x, None)
        check(a, b, ga, gb, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype):
    """Half scores, a float32 pos_weight: the loss and gradient in the input's dtype, the math
    in float32 (pos_weight does not change the result's dtype, even as float64)."""
    x, y, pw, w = inputs(5, 8, dtype)
    for p in (pw.float(), pw.double()):
        xa = x.clone().requires_grad_()
        a = F.multilabel_soft_margin_loss(xa, y, pos_weight=p, label_smoothing=0.1)
        a.backward()
        xb = x.double().requires_grad_()
        b = reference(xb, y, pos_weight=p, eps=0.1)
        b.backward()
        assert a.dtype == dtype and xa.grad.dtype == dtype
        assert_close(a, b.to(dtype))
        assert_close(xa.grad, xb.grad.to(dtype))


def test_shapes_and_broadcasting():
    """(*, C) inputs with a (C,) pos_weight, a broadcast target, one pos_weight for every
    class (0-d or (1,))."""
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    y = torch.randint(0, 2, (3, 5)).double()
    pw = torch.rand(5, dtype=torch.float64) + 0.5
    out = F.multilabel_soft_margin_loss(x, y, reduction="none", pos_weight=pw,
                                        label_smoothing=0.1)
    assert out.shape == (2, 3)
    assert_close(out, reference(x, y.expand(2, 3, 5), pos_weight=pw, eps=0.1,
                                reduction="none"))
    one = torch.tensor(2.5, dtype=torch.float64)
    for p in (one, one.reshape(1)):
        assert_close(F.multilabel_soft_margin_loss(x, y, pos_weight=p),
                     reference(x, y.expand(2, 3, 5), pos_weight=one.expand(5)))
    vec = torch.randn(5, dtype=torch.float64)  # (C,) input: one sample
    assert_close(F.multilabel_soft_margin_loss(vec, y[0], reduction="none", pos_weight=pw),
                 reference(vec, y[0], pos_weight=pw, reduction="none"))


def test_repeated_eager_calls_use_each_calls_pos_weight():
    """The eager fast path (a plan per signature) must take this call's pos_weight and
    label_smoothing, not those of the call that made the plan."""
    x, y, pw, _ = inputs(4, 6)
    for backend in ("auto", "torch"):
        for p in (pw, pw * 3, pw.flip(0), pw * 3):
            for eps in (0.0, 0.25, 0.25):
                xa = x.clone().requires_grad_()
                a = F.multilabel_soft_margin_loss(xa, y, pos_weight=p, label_smoothing=eps,
                                                  backend=backend)
                a.backward()
                xb = x.double().requires_grad_()
                b = reference(xb, y, pos_weight=p, eps=eps)
                b.backward()
                assert_close(a, b.float())
                assert_close(xa.grad, xb.grad.float())
    p = pw.clone()
    before = F.multilabel_soft_margin_loss(x, y, pos_weight=p)
    p.mul_(2)  # modified in place: the next call sees the new values
    after = F.multilabel_soft_margin_loss(x, y, pos_weight=p)
    assert_close(after, reference(x, y, pos_weight=p).float())
    assert not torch.equal(before, after)


# ----------------------------------------------------------------------------------------------
# stability


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_large_scores_and_tiny_losses(backend, device):
    """|x| up to 1e4: finite, the reference's values; confident, correct scores (tiny losses
    and gradients) keep their relative accuracy with a positive weight."""
    x = torch.tensor([[-1e4, -100.0, -30.0, -5.0, 0.0, 5.0, 30.0, 100.0, 1e4]] * 2)
    y = torch.tensor([[0.0] * 9, [1.0] * 9])
    pw = torch.linspace(0.5, 4.0, 9)
    x, y, pw = x.to(device), y.to(device), pw.to(device)
    for eps in (0.0, 0.1):
        xa = x.clone().requires_grad_()
        a = F.multilabel_soft_margin_loss(xa, y, pos_weight=pw, label_smoothing=eps,
                                          reduction="none", backend=backend)
        a.sum().backward()
        xb = x.double().requires_grad_()
        b = reference(xb, y, pos_weight=pw, eps=eps, reduction="none")
        b.sum().backward()
        assert torch.isfinite(a).all() and torch.isfinite(xa.grad).all()
        assert_close(a, b.float())
        assert_close(xa.grad, xb.grad.float())
    # confident and correct: y = 1 at x = 30 (loss p e^-30 / C), y = 0 at x = -30
    x = torch.tensor([[30.0, 20.0, 15.0], [-30.0, -20.0, -15.0]], device=device)
    y = torch.tensor([[1.0] * 3, [0.0] * 3], device=device)
    pw = torch.tensor([0.5, 2.0, 3.0], device=device)
    xa = x.clone().requires_grad_()
    a = F.multilabel_soft_margin_loss(xa, y, pos_weight=pw, reduction="none", backend=backend)
    a.sum().backward()
    xb = x.double().requires_grad_()
    b = reference(xb, y, pos_weight=pw, reduction="none")
    b.sum().backward()
    assert ((a.double() - b).abs() / b).max() < 1e-5
    assert ((xa.grad.double() - xb.grad).abs() / xb.grad.abs()).max() < 1e-5


# ----------------------------------------------------------------------------------------------
# checks


@pytest.mark.parametrize("kwargs, error, fragments", [
    ({"label_smoothing": 1.0}, ValueError, ["`label_smoothing`", "[0, 1)", "1.0"]),
    ({"label_smoothing": -0.1}, ValueError, ["`label_smoothing`", "[0, 1)"]),
    ({"label_smoothing": math.nan}, ValueError, ["`label_smoothing`", "nan"]),
    ({"label_smoothing": "0.1"}, DtypeError, ["`label_smoothing`", "float", "str"]),
    ({"label_smoothing": torch.tensor(0.1)}, DtypeError, ["`label_smoothing`", "Tensor"]),
    ({"pos_weight": torch.ones(4)}, ShapeError, ["`pos_weight`", "(4,)", "(3,)", "per class"]),
    ({"pos_weight": torch.ones(2, 3)}, ShapeError, ["`pos_weight`", "(2, 3)", "(3,)"]),
    ({"pos_weight": [1.0, 2.0, 3.0]}, DtypeError, ["`pos_weight`", "torch.Tensor", "list"]),
    ({"pos_weight": torch.ones(3, dtype=torch.complex64)}, DtypeError,
     ["`pos_weight`", "real", "complex64"]),
    ({"pos_weight": torch.ones(3, device="meta")}, ValueError, ["`pos_weight`", "same device"]),
    ({"pos_weight": torch.ones(3, requires_grad=True)}, ValueError,
     ["`pos_weight` requires grad", "pos_weight.detach()"]),
])
def test_bad_arguments_name_the_argument(kwargs, error, fragments):
    x, y = torch.randn(2, 3), torch.randint(0, 2, (2, 3)).float()
    for validate in (True, False):  # shapes, dtypes and ranges: checked either way
        with pytest.raises(error) as info:
            F.multilabel_soft_margin_loss(x, y, validate=validate, **kwargs)
        for fragment in fragments:
            assert fragment in str(info.value), (fragment, str(info.value))


# (Triton's interpreter computes with NumPy, which warns about inf * 0 = nan)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("backend, device", BACKENDS)
def test_pos_weight_values_checked_with_validate(backend, device):
    """Negative, infinite or NaN pos_weight: ValueError naming it (validate=True, on every
    backend, the kernels counting it in their pass); validate=False computes the formula."""
    x, y, _, _ = (t.to(device) for t in inputs(3, 4))
    for bad in (-1.0, math.inf, math.nan):
        pw = torch.tensor([1.0, bad, 2.0, 0.0], device=device)
        with pytest.raises(ValueError, match=r"`pos_weight` must be finite and >= 0") as info:
            F.multilabel_soft_margin_loss(x, y, pos_weight=pw, backend=backend)
            marginloss.check_labels()  # CUDA: reported by a later call
        assert not isinstance(info.value, LabelError)
        if not math.isfinite(bad):
            continue  # validate=False: inf and nan make inf or nan terms (which, may differ)
        xa = x.clone().requires_grad_()
        a = F.multilabel_soft_margin_loss(xa, y, pos_weight=pw, backend=backend,
                                          validate=False, reduction="none")
        a.sum().backward()
        xb = x.double().requires_grad_()
        b = reference(xb, y, pos_weight=pw, reduction="none")
        b.sum().backward()
        assert_close(a, b.float())
        assert_close(xa.grad, xb.grad.float())
    # labels are still checked alongside
    with pytest.raises(LabelError, match="to_01"):
        F.multilabel_soft_margin_loss(x, y * 2 - 1, pos_weight=torch.ones(4, device=device),
                                      label_smoothing=0.1, backend=backend)
        marginloss.check_labels()


# ----------------------------------------------------------------------------------------------
# the module, the operator


def test_module_stores_the_options():
    pw = torch.rand(5) + 0.5
    loss = marginloss.MultiLabelSoftMarginLoss(pos_weight=pw, label_smoothing=0.1)
    assert list(loss.state_dict()) == ["pos_weight"]  # a buffer, as BCEWithLogitsLoss's
    assert torch.equal(loss.pos_weight, pw) and loss.label_smoothing == 0.1
    assert "label_smoothing=0.1" in repr(loss) and "pos_weight=(5,)" in repr(loss)
    loss = loss.double()
    assert loss.pos_weight.dtype == torch.float64
    x, y = torch.randn(3, 5, dtype=torch.float64), torch.randint(0, 2, (3, 5)).double()
    assert_close(loss(x, y), reference(x, y, pos_weight=pw, eps=0.1))
    assert list(marginloss.MultiLabelSoftMarginLoss().state_dict()) == []


def test_operator_schema_and_opcheck():
    from marginloss import _ops
    from marginloss.losses import multilabel_soft_margin_loss as mod

    op = getattr(torch.ops.marginloss, NAME)
    schema = str(op.default._schema)
    assert "Tensor? pos_weight, float label_smoothing, str reduction" in schema
    x, y, pw, w = inputs(4, 5, torch.float64)
    call = mod.SPEC.call((x.requires_grad_(),), y,
                         {"weight": w, "pos_weight": pw, "label_smoothing": 0.1})
    # (AOT dispatch with a pos_weight: the compile and export tests below)
    torch.library.opcheck(op.default, tuple(_ops.flatten(mod.SPEC, call, True, "auto")),
                          test_utils=("test_schema", "test_faketensor"))


def test_compile_fullgraph_no_recompile():
    """New values of the same shapes (pos_weight included) reuse one graph."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    fn = torch.compile(lambda x, y, pw: F.multilabel_soft_margin_loss(
        x, y, pos_weight=pw, label_smoothing=0.1), fullgraph=True, backend=counter)
    for seed in range(3):
        x, y, pw, _ = inputs(4, 6, seed=seed)
        xa, xb = x.clone().requires_grad_(), x.double().requires_grad_()
        a, b = fn(xa, y, pw), reference(xb, y, pos_weight=pw, eps=0.1)
        a.backward()
        b.backward()
        assert_close(a, b.float())
        assert_close(xa.grad, xb.grad.float())
    assert counter.frame_count == 1


def test_export_a_module_holding_the_options():
    x, y, pw, _ = inputs(4, 6)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 6)
            self.criterion = marginloss.MultiLabelSoftMarginLoss(pos_weight=pw,
                                                                 label_smoothing=0.2)

        def forward(self, feats, y):
            return self.criterion(self.linear(feats), y)

    model = Model()
    feats = torch.randn(4, 3)
    program = torch.export.export(model, (feats, y))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert f"marginloss.{NAME}.default" in targets
    feats2 = torch.randn(4, 3)
    assert_close(program.module()(feats2, y), model(feats2, y))


def test_func_grad_and_vmap():
    """torch.func.grad, vmap over samples (one call), vmap over pos_weights (a loop)."""
    from torch.func import grad, vmap

    xs, ys, pws = zip(*(inputs(3, 5, torch.float64, seed=s)[:3] for s in range(4)))
    xs, ys, pws = torch.stack(xs), torch.stack(ys), torch.stack(pws)

    def ours(x, y, pw):
        return F.multilabel_soft_margin_loss(x, y, pos_weight=pw, label_smoothing=0.1,
                                             reduction="sum")

    def ref(x, y, pw):
        return reference(x, y, pos_weight=pw, eps=0.1, reduction="sum")

    assert_close(grad(ours)(xs[0], ys[0], pws[0]), grad(ref)(xs[0], ys[0], pws[0]))
    for in_dims in ((0, 0, None), (0, 0, 0)):
        pw = pws if in_dims[2] == 0 else pws[0]
        assert_close(vmap(ours, in_dims)(xs, ys, pw), vmap(ref, in_dims)(xs, ys, pw))
        assert_close(vmap(grad(ours), in_dims)(xs, ys, pw), vmap(grad(ref), in_dims)(xs, ys, pw))


def test_plans_keep_the_fast_path():
    """A repeated eager call with options in canonical form leaves a plan (the fast path)."""
    x, y, pw, _ = inputs(4, 6)
    _pipeline._PLANS.clear()
    for _ in range(2):
        F.multilabel_soft_margin_loss(x, y, pos_weight=pw, label_smoothing=0.1)
    assert len(_pipeline._PLANS) == 1


# ----------------------------------------------------------------------------------------------
# class_reduction="sum": the sum over classes instead of the mean


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("backend, device", BACKENDS)
def test_class_sum_is_bce_with_logits_summed_over_classes(backend, device, reduction):
    """The oracle: BCEWithLogitsLoss(weight, pos_weight) per element, summed over the classes,
    then the reduction over samples; with and without the options, the module form too."""
    x, y, pw, w = (t.to(device) for t in inputs(6, 9))
    for weight, pos_weight in ((None, None), (w, pw)):
        bce = torch.nn.BCEWithLogitsLoss(weight=weight, pos_weight=pos_weight, reduction="none")

        def oracle(t, bce=bce):
            rows = bce(t, y.double()).sum(-1)
            return {"none": rows, "mean": rows.mean(), "sum": rows.sum()}[reduction]

        ours = marginloss.MultiLabelSoftMarginLoss(
            weight=weight, reduction=reduction, backend=backend, pos_weight=pos_weight,
            class_reduction="sum")
        assert "class_reduction='sum'" in repr(ours)
        for fn in (ours, lambda t, weight=weight, pos_weight=pos_weight:
                   F.multilabel_soft_margin_loss(t, y, weight, reduction=reduction,
                                                 backend=backend, pos_weight=pos_weight,
                                                 class_reduction="sum")):
            a, b, ga, gb = both(lambda t, fn=fn: fn(t, y) if fn is ours else fn(t), oracle, x,
                                None)
            check(a, b, ga, gb, torch.float32)


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_class_sum_is_c_times_the_mean(backend):
    """Sum = C x mean, for a large C where the mean's gradient is tiny (C = 10^5: each
    gradient entry of the mean is below 1e-5, of the sum of order 1), with soft labels and
    label smoothing; a full (N, C) weight too."""
    c = 100_000
    x, y, pw, _ = inputs(3, c, soft=True)
    full = torch.rand(3, c, generator=torch.Generator().manual_seed(1)) + 0.5
    for kw in ({}, {"label_smoothing": 0.1, "pos_weight": pw}, {"weight": full}):
        xs = x.clone().requires_grad_()
        xm = x.clone().requires_grad_()
        s = F.multilabel_soft_margin_loss(xs, y, backend=backend, class_reduction="sum", **kw)
        m = F.multilabel_soft_margin_loss(xm, y, backend=backend, **kw)
        s.backward()
        m.backward()
        assert_close(s, m * c, torch.float32)
        assert_close(xs.grad, xm.grad * c, torch.float32)
        assert xs.grad.abs().max() > 0.1 > 1e-4 > xm.grad.abs().max()


def test_class_sum_sparse_targets_and_float64():
    """The sparse forms give the dense target's sum; float64 stays float64 (gradcheck)."""
    x, y, _, w = inputs(4, 11, torch.float64)
    rows, cols = y.nonzero(as_tuple=True)
    dense = F.multilabel_soft_margin_loss(x, y, w, class_reduction="sum", reduction="none")
    with warnings.catch_warnings():  # torch's "sparse CSR is in beta" warning
        warnings.simplefilter("ignore")
        csr = y.to_sparse_csr()
    for target in ((rows, cols), csr, [cols[rows == i] for i in range(x.shape[0])]):
        assert_close(F.multilabel_soft_margin_loss(x, target, w, class_reduction="sum",
                                                   reduction="none"), dense, torch.float64)
    assert dense.dtype == torch.float64
    xg = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: F.multilabel_soft_margin_loss(t, y, w, class_reduction="sum"), (xg,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_class_sum_half_inputs_give_a_float32_loss(dtype):
    """The scaled weight is float32, so a half input's loss comes back in float32 (the sum
    over many classes does not fit a half's precision); the gradient keeps the input's dtype."""
    x, y, _, _ = inputs(5, 300, dtype)
    xa = x.clone().requires_grad_()
    a = F.multilabel_soft_margin_loss(xa, y, class_reduction="sum")
    a.backward()
    xb = x.double().requires_grad_()
    b = reference(xb, y) * 300
    b.backward()
    assert a.dtype == torch.float32 and xa.grad.dtype == dtype
    assert_close(a, b.float(), torch.float32)
    assert_close(xa.grad, xb.grad.to(dtype), dtype)


def test_class_reduction_errors():
    x, y, _, _ = inputs()
    with pytest.raises(ValueError, match=r"`class_reduction` must be 'mean'.*'sum'.*got 'max'"):
        F.multilabel_soft_margin_loss(x, y, class_reduction="max")
    with pytest.raises(ValueError, match="class_reduction"):
        marginloss.MultiLabelSoftMarginLoss(class_reduction="avg")(x, y)


def test_class_sum_compiles_fullgraph():
    x, y, _, _ = inputs(4, 6)
    fn = torch.compile(lambda t: F.multilabel_soft_margin_loss(t, y, class_reduction="sum"),
                       fullgraph=True)
    assert_close(fn(x), F.multilabel_soft_margin_loss(x, y, class_reduction="sum"),
                 torch.float32)
