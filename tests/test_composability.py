"""Every loss behaves like a torch op: torch.compile(fullgraph=True), torch.export, torch.func,
autocast, the meta device, CUDA graphs; TorchScript says what to use instead.

Each test runs every registered loss (tests/loss_cases.py) against torch's own function.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from helpers import REDUCTIONS, assert_close
from loss_cases import CASES, cases
from torch._dynamo.testing import CompileCounterWithBackend
from torch.func import grad, jacrev, vmap

import marginloss
from marginloss.errors import LabelError


def _pair(case, n=6, c=5, dtype=torch.float32, seed=0):
    """``(inputs, target, kwargs)``: a case's call with its last option set."""
    torch.manual_seed(seed)
    kwargs = case.option_sets(c, dtype)[-1]
    xs, y = case.make((n, c), dtype, **kwargs)
    return xs, y, kwargs


def _leaves(xs):
    return tuple(x.detach().clone().requires_grad_() for x in xs)


def _split(case, tensors):
    """``(inputs, target)`` from a flat argument list (the target last, when there is one)."""
    k = case.n_inputs
    return tuple(tensors[:k]), (tensors[k] if case.has_target else None)


# ----------------------------------------------------------------------------------------------
# torch.compile


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("case", cases())
def test_compile_fullgraph_no_recompile_matches_eager(case, validate):
    """One graph (no break) for three steps with new values of the same shapes, each giving
    torch's loss and gradients. aot_eager runs the same capture (Dynamo + AOTAutograd) as
    inductor without its code generation, which one test below covers per loss."""
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    fn = torch.compile(lambda xs, y, kw: case.run(xs, y, validate=validate, **kw),
                       fullgraph=True, backend=counter)
    for step in range(3):
        xs, y, kw = _pair(case, seed=step)
        xa, xb = _leaves(xs), _leaves(xs)
        la, lb = fn(xa, y, kw), case.run_ref(xb, y, **kw)
        la.backward()
        lb.backward()
        assert_close(la, lb)
        for a, b in zip(xa, xb, strict=True):
            assert_close(a.grad, b.grad)
    assert counter.frame_count == 1


@pytest.mark.parametrize("case", cases())
def test_compile_inductor_module_in_a_model(case):
    """The default backend, a model holding the loss module (every input out of the model),
    every reduction's shape."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    kwargs = case.option_sets(5, torch.float32)[-1]
    model = torch.nn.Linear(4, 5)
    criterion = case.module(**kwargs)
    ref = case.ref_module(**kwargs)

    def step(feats, y):
        return case.apply(criterion, tuple(model(feats).unbind(0)), y)

    compiled = torch.compile(step, fullgraph=True)
    for seed in range(2):
        feats = torch.randn(case.n_inputs, 6, 4)
        _, y, _ = _pair(case, seed=seed)
        model.zero_grad()
        loss = compiled(feats, y)
        loss.backward()
        got = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        expected = case.apply(ref, tuple(model(feats).unbind(0)), y)
        expected.backward()
        assert_close(loss, expected)
        for g, p in zip(got, model.parameters()):
            assert_close(g, p.grad)


@pytest.mark.parametrize("case", cases())
def test_label_check_inside_a_compiled_graph(case):
    """validate=True in a fullgraph-compiled function: the check runs inside the operator (no
    graph break, no host read in the graph) and still raises LabelError on a bad target."""
    torch._dynamo.reset()
    bad = next((m for m in case.mistakes if m.error is LabelError and not m.kwargs), None)
    if bad is None:
        pytest.skip(f"{case.name} has no label convention")
    fn = torch.compile(lambda xs, y: case.run(xs, y), fullgraph=True, backend="aot_eager")
    xs, y = case.mistake_call(bad)
    with pytest.raises(LabelError):
        fn(xs, y)


# ----------------------------------------------------------------------------------------------
# torch.export


@pytest.mark.parametrize("case", cases())
def test_export_a_module_holding_the_loss(case):
    torch.manual_seed(0)
    kwargs = case.option_sets(5, torch.float32)[-1]

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 5)
            self.criterion = case.module(**kwargs)

        def forward(self, feats, *y):
            return case.apply(self.criterion, tuple(self.linear(feats).unbind(0)),
                              y[0] if y else None)

    model = Model()
    _, y, _ = _pair(case)
    args = (torch.randn(case.n_inputs, 6, 4), *((y,) if case.has_target else ()))
    program = torch.export.export(model, args)
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert f"marginloss.{case.name}.default" in targets
    _, y2, _ = _pair(case, seed=1)
    args2 = (torch.randn(case.n_inputs, 6, 4), *((y2,) if case.has_target else ()))
    assert_close(program.module()(*args2), model(*args2))


# ----------------------------------------------------------------------------------------------
# torch.func


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", cases())
def test_func_grad(case, reduction):
    xs, y, kw = _pair(case, dtype=torch.float64)
    argnums = tuple(range(case.n_inputs))

    def ours(*xs):
        return case.run(xs, y, reduction=reduction, **kw).sum()

    def ref(*xs):
        return case.run_ref(xs, y, reduction=reduction, **kw).sum()

    for a, b in zip(grad(ours, argnums)(*xs), grad(ref, argnums)(*xs), strict=True):
        assert_close(a, b)


def _assert_all_close(a, b):
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,),
                    strict=True):
        assert_close(u, v)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", cases())
def test_func_vmap_and_per_sample_gradients(case, reduction):
    calls = [_pair(case, dtype=torch.float64, seed=s) for s in range(3)]
    xs = tuple(torch.stack(t) for t in zip(*(c[0] for c in calls)))
    ys = (torch.stack([c[1] for c in calls]),) if case.has_target else ()
    kw = _pair(case, dtype=torch.float64)[2]
    argnums = tuple(range(case.n_inputs))

    def ours(*tensors):
        return case.run(*_split(case, tensors), reduction=reduction, **kw).sum()

    def ref(*tensors):
        return case.run_ref(*_split(case, tensors), reduction=reduction, **kw).sum()

    _assert_all_close(vmap(ours)(*xs, *ys), vmap(ref)(*xs, *ys))
    _assert_all_close(vmap(grad(ours, argnums))(*xs, *ys), vmap(grad(ref, argnums))(*xs, *ys))
    if case.has_target:  # one target for every vmapped call
        dims = (0,) * case.n_inputs + (None,)
        _assert_all_close(vmap(grad(ours, argnums), in_dims=dims)(*xs, ys[0][0]),
                          vmap(grad(ref, argnums), in_dims=dims)(*xs, ys[0][0]))
    # per-sample gradients: one row per sample, as torch.func's tutorial computes them
    rows = (*(x[0] for x in xs), *(y[0] for y in ys))

    def one(f):
        return lambda *ts: f(*(t.unsqueeze(0) for t in ts))

    _assert_all_close(vmap(grad(one(ours), argnums))(*rows),
                      vmap(grad(one(ref), argnums))(*rows))


@pytest.mark.parametrize("case", cases())
def test_func_jacrev(case):
    xs, y, kw = _pair(case, dtype=torch.float64)
    argnums = tuple(range(case.n_inputs))
    a = jacrev(lambda *xs: case.run(xs, y, reduction="none", **kw), argnums)(*xs)
    b = jacrev(lambda *xs: case.run_ref(xs, y, reduction="none", **kw), argnums)(*xs)
    _assert_all_close(a, b)


@pytest.mark.parametrize("case", cases())
def test_func_higher_order_raises(case):
    xs, y, kw = _pair(case, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="differentiable once"):
        jacrev(grad(lambda *xs: case.run(xs, y, **kw)))(*xs)


def test_vmap_over_a_batched_class_weight():
    """A class weight that differs per vmapped sample: folded into a full weight where the
    kernels take one (multilabel soft margin), one call per sample otherwise (multi margin)."""
    for case in (CASES["multilabel_soft_margin_loss"], CASES["multi_margin_loss"]):
        xs = torch.randn(3, 6, 5, dtype=torch.float64)
        ys = torch.stack([case.make((6, 5))[1] for _ in range(3)])
        ws = torch.rand(3, 5, dtype=torch.float64) + 0.5
        assert_close(vmap(lambda x, y, w, case=case: case.ours(x, y, weight=w))(xs, ys, ws),
                     vmap(lambda x, y, w, case=case: case.ref(x, y, weight=w))(xs, ys, ws))


# ----------------------------------------------------------------------------------------------
# autocast, meta, TorchScript, the torch.nn base classes


@pytest.mark.parametrize("case", cases())
def test_autocast_returns_torchs_dtype(case):
    xs, y, kw = _pair(case)
    linear = torch.nn.Linear(5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = tuple(linear(x) for x in xs)
        assert scores[0].dtype == torch.bfloat16
        ours, ref = case.run(scores, y, **kw), case.run_ref(scores, y, **kw)
    assert ours.dtype == ref.dtype == torch.float32
    # float32 math on the bfloat16 scores (torch's composite multilabel soft margin keeps some
    # of its intermediate results in bfloat16, so it is only compared to bfloat16 precision)
    assert_close(ours, case.run_ref(tuple(s.float() for s in scores), y, **kw))
    assert_close(ours, ref, torch.bfloat16)


@pytest.mark.parametrize("case", cases())
def test_meta_tensors_give_shapes(case):
    xs, y, kw = _pair(case)
    meta = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in kw.items()}
    y_meta = None if y is None else y.to("meta")
    for reduction in REDUCTIONS:
        out = case.run(tuple(x.to("meta") for x in xs), y_meta, reduction=reduction, **meta)
        assert out.device.type == "meta"
        assert out.shape == case.run_ref(xs, y, reduction=reduction, **kw).shape


@pytest.mark.parametrize("case", cases())
def test_modules_subclass_torchs_loss_bases(case):
    ref_bases = [b.__name__ for b in case.ref_module.__mro__]
    base = torch.nn.modules.loss._WeightedLoss if "_WeightedLoss" in ref_bases else \
        torch.nn.modules.loss._Loss
    assert isinstance(case.module(), base)
    assert isinstance(case.module(), torch.nn.modules.loss._Loss)


@pytest.mark.parametrize("case", cases())
def test_torchscript_says_to_use_compile(case):
    model = torch.nn.Sequential(torch.nn.Linear(3, 3))
    model.criterion = case.module()
    with pytest.raises(RuntimeError, match=r"torch\.compile.*torch\.export"):
        torch.jit.script(model)


@pytest.mark.parametrize("case", cases())
def test_operator_is_registered(case):
    op = getattr(torch.ops.marginloss, case.name)
    xs, y, kw = _pair(case, dtype=torch.float64)
    schema = str(op.default._schema)
    assert schema.startswith(f"marginloss::{case.name}(Tensor {case.spec.inputs[0]}")
    torch.library.opcheck(op.default, _op_args(case, xs, y, kw),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


def _op_args(case, xs, y, kw):
    from marginloss import _ops
    from marginloss.losses import Call

    inputs, target, weight, options, _ = case.spec.prepare(
        tuple(x.requires_grad_() for x in xs), y, kw.get("weight"),
        tuple(kw.get(o.name, o.default) for o in case.spec.options))
    call = Call(inputs, target, weight, options, "mean", (True,) * len(inputs))
    return tuple(_ops.flatten(case.spec, call, True, "auto"))


# ----------------------------------------------------------------------------------------------
# CUDA graphs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", cases())
def test_cuda_graph_capture_without_host_sync(case):
    xs, y, kw = _pair(case)
    xs = tuple(x.cuda().requires_grad_() for x in xs)
    y = None if y is None else y.cuda()
    kw = {k: v.cuda() if torch.is_tensor(v) else v for k, v in kw.items()}
    case.run(xs, y, validate=False, **kw).backward()  # warm up (kernel compilation)
    graph = torch.cuda.CUDAGraph()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.cuda.graph(graph):
            loss = case.run(xs, y, validate=False, **kw)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graph.replay()
    torch.cuda.synchronize()
    assert_close(loss.detach().cpu(), case.run_ref(
        tuple(x.detach().cpu() for x in xs), None if y is None else y.cpu(),
        **{k: v.cpu() if torch.is_tensor(v) else v for k, v in kw.items()}))


# ----------------------------------------------------------------------------------------------
# a new user's training script


def test_training_script_as_a_new_user_writes_it():
    """Compile the model with fullgraph=True, train it with MultiLabelSoftMarginLoss, compute
    per-sample gradients with torch.func, export it: as with torch.nn's loss."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    feats, labels = torch.randn(32, 8), torch.randint(0, 2, (32, 4)).float()

    class Model(torch.nn.Module):
        def __init__(self, criterion):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                           torch.nn.Linear(16, 4))
            self.criterion = criterion

        def forward(self, x, y):
            return self.criterion(self.net(x), y)

    results = {}
    for lib, criterion in (("ours", marginloss.MultiLabelSoftMarginLoss()),
                           ("torch", torch.nn.MultiLabelSoftMarginLoss())):
        torch.manual_seed(1)
        model = Model(criterion)
        compiled = torch.compile(model, fullgraph=True)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        losses = []
        for _ in range(5):
            opt.zero_grad()
            loss = compiled(feats, labels)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        params = {k: v.detach() for k, v in model.named_parameters()}

        def sample_loss(p, x, y, model=model):
            return torch.func.functional_call(model, p, (x.unsqueeze(0), y.unsqueeze(0)))

        per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, feats, labels)
        program = torch.export.export(model, (feats, labels))
        results[lib] = (losses, per_sample, program.module()(feats, labels))
    (la, ga, ea), (lb, gb, eb) = results["ours"], results["torch"]
    torch.testing.assert_close(torch.tensor(la), torch.tensor(lb), rtol=2e-5, atol=2e-6)
    for k in ga:
        assert_close(ga[k], gb[k])
    assert_close(ea, eb)


def test_constant_marking_is_the_one_torch_compile_uses():
    """The pipeline marks its Triton check as a trace-time constant the way
    torch.compiler.assume_constant_result does, without importing torch._dynamo."""
    from marginloss import _pipeline

    def f():
        return True

    assert getattr(torch.compiler.assume_constant_result(f), "_dynamo_marked_constant", False)
    assert _pipeline._triton_ready._dynamo_marked_constant is True
