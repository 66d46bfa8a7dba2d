"""Triton kernels vs each loss's torch compute and torch.nn.functional: values, gradients, edges.

Every loss in :data:`marginloss.losses.LOSSES` whose spec lists ``"triton"`` runs through the
Triton backend's contract, ``marginloss.backends.triton.run(spec, call)`` (every differentiable
input, the target if the loss has one), with calls built by ``spec.prepare``. Each result is
compared with

* ``spec.torch_compute`` on the same call (float32 math; for float16 / bfloat16 inputs, on the
  same inputs upcast to float32, so only the kernels' final rounding differs), and
* ``torch.nn.functional.<loss>`` in float64 (the oracle), through autograd for the gradient.

Every test runs on CPU tensors under Triton's interpreter (marker ``interpret``; needs
``TRITON_INTERPRET=1``, which tests/conftest.py sets when there is no GPU) and on CUDA (marker
``gpu``; skipped without a GPU). Shapes are small because the interpreter is slow; chunking is
exercised by shrinking the kernels' block sizes with ``monkeypatch``. The tests name no loss:
what differs between losses (options, weights, the target's layout) is read from the spec and
from its sampler.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as TF
from helpers import REDUCTIONS, assert_close
from torch import Tensor

pytest.importorskip("triton")

from marginloss.backends import triton as triton_backend  # noqa: E402
from marginloss.errors import LabelError, ShapeError  # noqa: E402
from marginloss.losses import LOSSES, Call  # noqa: E402

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
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
dtype_param = pytest.mark.parametrize("dtype", DTYPES, ids=str)
#: The losses with a Triton kernel (``"triton"`` in their spec's backends).
TRITON_LOSSES = [s for s in LOSSES if "triton" in s.backends]
spec_param = pytest.mark.parametrize("spec", TRITON_LOSSES, ids=lambda s: s.name)

# Scalar options to try, by option name (a spec takes the cases whose names it declares).
# Margins are multiples of 1/16, which keeps the hinge losses' inputs off their kinks.
OPTION_CASES = [{"p": 2}, {"margin": 0.5}, {"p": 2, "margin": -0.25}, {"p": 1, "margin": 0.0}]


# ----------------------------------------------------------------------------------------------
# inputs, calls and references


def kernel_module(spec):
    return importlib.import_module(f"marginloss.kernels.{spec.name}")


def index_target(spec) -> bool:
    """Whether the loss's target holds class indices (the hinge losses) rather than labels."""
    _, target, _ = spec.sample(2, 3)
    return target is not None and not target.is_floating_point()


def label_target(spec) -> bool:
    """Whether the loss's target holds labels (a float tensor) rather than class indices."""
    _, target, _ = spec.sample(2, 3)
    return target is not None and target.is_floating_point()


def takes_lists(spec) -> bool:
    """Whether the target holds a list of class indices per sample (-1-padded rows)."""
    _, target, _ = spec.sample(2, 3)
    return index_target(spec) and target.dim() == 2


def logistic(spec) -> bool:
    """The logistic losses: one input, labels, no scalar options (a softplus of the score)."""
    return label_target(spec) and len(spec.inputs) == 1 and not spec.options


def elementwise_target(spec, target, inputs) -> bool:
    """Whether ``target`` has a label per input element (else per row, or none)."""
    return target is not None and target.dim() == inputs[0].dim()


def kink_free(x, target, generator, margin=1.0):
    """``x`` moved onto a grid on which no hinge argument ``margin - x_t + x_k`` is 0.

    ``target`` rows are lists of class indices ending at the first negative entry (a single
    index per row is a list of one). Target-class scores go to the grid k/16 + 1/32, the others
    to k/16, so every hinge argument (margin a multiple of 1/16) is an odd multiple of 1/32:
    never 0, so rounding cannot flip a subgradient between implementations, and every score is
    exact in every float dtype (|x| < 4), bfloat16 included (the trick of helpers.make_inputs).
    """
    assert margin * 16 == int(margin * 16), "margin must be a multiple of 1/16"
    n_classes = x.shape[-1] if x.dim() else 1
    rows = target.reshape(-1, 1) if target.dim() < x.dim() else target.reshape(-1, n_classes)
    listed = torch.cumprod((rows >= 0).long(), dim=1).bool()  # the prefix before the first -1
    is_target = torch.zeros(rows.shape[0], n_classes, dtype=torch.bool)
    is_target.scatter_(1, rows.clamp_min(0).long(), listed)
    grid = (torch.randn(is_target.shape, generator=generator, dtype=torch.float64) * 24)
    grid = grid.round().clamp(-60, 60) / 16 + torch.where(is_target, 1 / 32, 0.0)
    return grid.reshape(x.shape).to(x.dtype)


def make(spec, n, c, dtype, *, device="cpu", weight=None, seed=0, **case):
    """``(inputs, target, weight, options)`` in the user's layout, in the loss's convention.

    ``weight``: None, ``"class"`` (a ``(C,)`` vector), ``"full"`` (``(N, C)``) or ``"row"``
    (``(N, 1)``, broadcast over the classes). ``case`` holds scalar options (and sampler
    arguments).
    """
    g = torch.Generator().manual_seed(seed)
    sample_kwargs = {k: v for k, v in case.items() if k not in {o.name for o in spec.options}}
    inputs, target, kwargs = spec.sample(n, c, dtype=dtype, generator=g, **sample_kwargs)
    kwargs.update(case)
    options = tuple(kwargs.get(o.name, o.default) for o in spec.options)
    if index_target(spec):  # a class-index hinge loss: keep every argument off its kink
        margin = kwargs.get("margin", 1.0)
        inputs = tuple(kink_free(x, target, g, margin) for x in inputs)
    w = None
    if weight is not None:
        assert spec.weighted
        shape = {"class": (c,), "full": (n, c), "row": (n, 1)}[weight]
        w = (torch.rand(shape, generator=g) + 0.5).to(dtype)

    def to(t):
        return None if t is None else t.to(device)

    return tuple(map(to, inputs)), to(target), to(w), options


def make_call(spec, inputs, target, weight, options, reduction, need_grad=True):
    """``(call, none_shape)`` through the loss's own ``prepare``."""
    inputs, target, weight, options, none_shape = spec.prepare(inputs, target, weight, options)
    call = Call(inputs, target, weight, options, reduction, (need_grad,) * len(inputs))
    return call, none_shape


def upcast(t):
    """float16 / bfloat16 -> float32 (the kernels' math), anything else as it is."""
    if t is not None and t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    return t


def oracle(spec, inputs, target, weight, options, reduction):
    """torch.nn.functional in float64: the loss and, for a unit upstream gradient, the input
    gradients."""
    xs = tuple(x.detach().double().requires_grad_() for x in inputs)
    kwargs = {o.name: v for o, v in zip(spec.options, options, strict=True)}
    if spec.weighted:
        kwargs["weight"] = None if weight is None else weight.double()
    if target is None:
        args = xs
    else:
        t = target.double() if target.is_floating_point() or not index_target(spec) else \
            target.long()
        args = (*xs, t)
    out = getattr(TF, spec.name)(*args, reduction=reduction, **kwargs)
    grads = torch.autograd.grad(out, xs, torch.ones_like(out)) if out.numel() else \
        tuple(torch.zeros_like(x) for x in xs)
    return out.detach(), grads


def check_contract(spec, call, result):
    """The Result contract: dtypes, shapes, None gradients where not asked, no label count."""
    assert result.loss.dtype == spec.out_dtype(call)
    assert result.loss.shape == spec.loss_shape(call)
    assert result.bad_labels is None
    assert len(result.grads) == len(call.inputs)
    for x, need, g in zip(call.inputs, call.need_grad, result.grads, strict=True):
        if not need:
            assert g is None
        else:
            assert g.dtype == x.dtype and g.shape == x.shape


def check(spec, inputs, target, weight, options, reduction, *, oracle_too=True):
    """Triton == the loss's torch compute (float32 math) and == torch.nn.functional in float64,
    loss and gradients. Returns the Triton result."""
    call, none_shape = make_call(spec, inputs, target, weight, options, reduction)
    result = triton_backend.run(spec, call)
    check_contract(spec, call, result)

    up_call, _ = make_call(spec, tuple(map(upcast, inputs)), upcast(target), upcast(weight),
                           options, reduction)
    ref = spec.torch_compute(up_call)
    assert_close(result.loss, ref.loss.to(result.loss.dtype))
    for g, g_ref in zip(result.grads, ref.grads, strict=True):
        assert_close(g, g_ref.to(g.dtype))

    if oracle_too:
        out, grads = oracle(spec, inputs, target, weight, options, reduction)
        loss = result.loss.reshape(none_shape) if reduction == "none" else result.loss
        assert_close(loss, out.to(loss.dtype))
        for g, x, g_ref in zip(result.grads, inputs, grads, strict=True):
            assert_close(g.reshape(x.shape), g_ref.to(g.dtype))
    return result


def block_constants(module) -> dict[str, int]:
    """The module's block-size constants (``BLOCK``, ``BLOCK_K``, ``MAX_BLOCK_C``, ...)."""
    return {name: value for name, value in vars(module).items()
            if re.fullmatch(r"(MAX_)?BLOCK(_[A-Z]+)?", name) and isinstance(value, int)}


def shrink_blocks(monkeypatch, spec, size: int) -> None:
    """Set every block size of ``spec``'s kernel module (and the row tile) to ``size``."""
    module = kernel_module(spec)
    for name in block_constants(module):
        monkeypatch.setattr(module, name, size)
    monkeypatch.setattr(importlib.import_module("marginloss.kernels._common"), "TILE", size * 4)


# ----------------------------------------------------------------------------------------------
# every loss, every dtype, reduction, weight, option and target dtype


@device_param
@dtype_param
@pytest.mark.parametrize("reduction", REDUCTIONS)
@spec_param
def test_matches_references(spec, reduction, dtype, device):
    check(spec, *make(spec, 6, 37, dtype, device=device), reduction)


@device_param
@dtype_param
@pytest.mark.parametrize("spec, kind", [
    pytest.param(s, kind, id=f"{s.name}-{kind}") for s in TRITON_LOSSES if s.weighted
    for kind in (("class", "full", "row") if s.full_weight else ("class",))])
def test_weights(spec, kind, dtype, device):
    """A per-class weight and, where the loss takes one, a full (N, C) weight and one broadcast
    from (N, 1)."""
    for reduction in REDUCTIONS:
        check(spec, *make(spec, 6, 37, dtype, device=device, weight=kind), reduction)


def _accepts(spec, case) -> bool:
    """Whether the loss takes these option values at all (torch rejects a triplet margin <= 0,
    and so does the loss's prepare)."""
    inputs, target, kw = spec.sample(2, 3)
    try:
        spec.call(inputs, target, {**kw, **case})
    except ValueError:
        return False
    return True


@device_param
@dtype_param
@pytest.mark.parametrize("spec, case", [
    pytest.param(s, case, id=",".join([s.name, *(f"{k}={v}" for k, v in case.items())]))
    for s in TRITON_LOSSES for case in OPTION_CASES
    if set(case) <= {o.name for o in s.options} and _accepts(s, case)])
def test_options(spec, case, dtype, device):
    weight = "class" if spec.weighted else None
    for reduction in REDUCTIONS:
        check(spec, *make(spec, 6, 37, dtype, device=device, weight=weight, **case), reduction)


@device_param
@pytest.mark.parametrize("spec, target_dtype", [
    pytest.param(s, dtype, id=f"{s.name}-{dtype}") for s in TRITON_LOSSES if s.has_target
    for dtype in ((torch.int64, torch.int32) if index_target(s) else (torch.float32, torch.int8))])
def test_target_dtypes(spec, target_dtype, device):
    """Index targets in int32 / int64; labels in another float dtype than the input's, or in an
    integer dtype (both label conventions hold small integers)."""
    inputs, target, weight, options = make(spec, 6, 37, torch.bfloat16, device=device)
    for reduction in REDUCTIONS:
        check(spec, inputs, target.to(target_dtype), weight, options, reduction)


@device_param
@pytest.mark.parametrize("spec", [s for s in TRITON_LOSSES if takes_lists(s)],
                         ids=lambda s: s.name)
def test_target_lists(spec, device):
    """For -1-padded target lists: duplicates, rows of only targets, empty lists, entries after
    the first -1, and more targets than one list tile (the extra-tile sweeps)."""
    C, g = 40, torch.Generator().manual_seed(0)
    y = torch.full((5, C), -1, dtype=torch.long)
    y[0, :4] = torch.tensor([3, 3, 7, 3])  # duplicates
    y[1] = torch.randperm(C, generator=g)  # every class a target: loss 0
    y[2, 1:] = 5  # empty list; entries after the -1 are ignored
    y[3, :35] = torch.randperm(C, generator=g)[:35]  # 35 targets: several list tiles
    y[3, 20] = y[3, 2]  # ... with a duplicate across tiles
    y[4, :17] = torch.randperm(C, generator=g)[:17]  # one past a tile of 16
    x = kink_free(torch.empty(5, C), y, g)
    options = tuple(o.default for o in spec.options)
    for reduction in REDUCTIONS:
        check(spec, (x.to(device),), y.to(device), None, options, reduction)


@device_param
@pytest.mark.parametrize("spec", [s for s in TRITON_LOSSES if label_target(s)],
                         ids=lambda s: s.name)
def test_soft_labels(spec, device):
    """Labels anywhere in [0, 1], where the loss's label check accepts them."""
    inputs, target, weight, options = make(spec, 6, 37, torch.float32, device=device)
    soft = torch.rand(target.shape, generator=torch.Generator().manual_seed(1)).to(device)
    try:
        spec.check_labels(make_call(spec, inputs, soft, weight, options, "mean")[0])
    except LabelError:
        pytest.skip(f"{spec.name} takes hard labels only")
    for reduction in REDUCTIONS:
        check(spec, inputs, soft, weight, options, reduction)


# ----------------------------------------------------------------------------------------------
# layouts: broadcast targets, other input ranks, chunked rows, non-contiguous inputs, C = 1,
# empty batches


@device_param
@spec_param
def test_broadcast_target(spec, device):
    """One target row broadcast over the batch (a stride-0 view in the canonical call)."""
    inputs, target, weight, options = make(spec, 6, 37, torch.float32, device=device)
    if not elementwise_target(spec, target, inputs):
        pytest.skip(f"{spec.name} has no target per element")
    try:
        spec.prepare(inputs, target[0], weight, options)
    except ShapeError:
        pytest.skip(f"{spec.name} takes no broadcast target")
    for reduction in REDUCTIONS:
        check(spec, inputs, target[0], weight, options, reduction)


@device_param
@spec_param
def test_unbatched_and_3d_inputs(spec, device):
    """An unbatched input (one row) and, where the loss takes one, a 3-D input."""
    inputs, target, weight, options = make(spec, 6, 12, torch.float32, device=device)
    for reduction in REDUCTIONS:
        check(spec, tuple(x[0] for x in inputs), None if target is None else target[0], weight,
              options, reduction)
    x3 = tuple(x.reshape(2, 3, 12) for x in inputs)
    t3 = None if target is None else target.reshape(2, 3, *target.shape[1:])
    try:
        spec.prepare(x3, t3, weight, options)
    except ShapeError:
        return  # the loss takes (C,) and (N, C) inputs only
    for reduction in REDUCTIONS:
        check(spec, x3, t3, weight, options, reduction)


@device_param
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@spec_param
def test_rows_longer_than_a_block(spec, dtype, device, monkeypatch):
    """Block sizes shrunk to 8, so every kernel loops over chunks of its rows (and of its target
    lists), and packs several rows per program."""
    shrink_blocks(monkeypatch, spec, 8)
    weight = "class" if spec.weighted else None
    for reduction in ("none", "mean"):
        check(spec, *make(spec, 9, 35, dtype, device=device, weight=weight), reduction)


@device_param
@spec_param
def test_rows_longer_than_the_default_block(spec, device):
    """The shipped block sizes: C = 2 * (largest block) + 3, one small batch per loss."""
    C = 2 * max(block_constants(kernel_module(spec)).values()) + 3
    check(spec, *make(spec, 2, C, torch.float32, device=device), "sum")


@device_param
@spec_param
def test_non_contiguous_inputs(spec, device):
    C = 11
    inputs, target, weight, options = make(spec, 4, C, torch.float32, device=device)
    strided = []
    for x in inputs:
        wide = torch.zeros(4, 2 * C, device=device)
        wide[:, 3:3 + C] = x
        strided.append(wide[:, 3:3 + C])  # row stride 2C
        assert not strided[-1].is_contiguous()
    check(spec, tuple(strided), target, weight, options, "none")
    transposed = tuple(x.t().contiguous().t() for x in inputs)  # class stride N
    check(spec, transposed, target, weight, options, "sum")
    if target is not None and target.dim() == 2 and target.dtype.is_floating_point:
        check(spec, inputs, target.t().contiguous().t(), weight, options, "mean")


@device_param
@spec_param
def test_one_class(spec, device):
    for reduction in REDUCTIONS:
        check(spec, *make(spec, 5, 1, torch.float32, device=device), reduction)


@device_param
@spec_param
def test_empty_batch(spec, device):
    inputs, target, weight, options = make(spec, 3, 5, torch.float32, device=device)
    inputs, target = tuple(x[:0] for x in inputs), None if target is None else target[:0]
    for reduction, expect in (("mean", float("nan")), ("sum", 0.0)):
        call, _ = make_call(spec, inputs, target, weight, options, reduction)
        result = triton_backend.run(spec, call)
        check_contract(spec, call, result)
        torch.testing.assert_close(result.loss.cpu(), torch.tensor(expect), equal_nan=True)
    check(spec, inputs, target, weight, options, "none")


@device_param
@spec_param
def test_no_classes(spec, device):
    """C = 0, where the loss allows it: torch's result (a mean over no classes is nan)."""
    inputs, target, weight, options = make(spec, 3, 5, torch.float32, device=device)
    if elementwise_target(spec, target, inputs):
        target = target[..., :0]
    inputs = tuple(x[:, :0] for x in inputs)
    try:
        spec.prepare(inputs, target, weight, options)
    except ShapeError:
        pytest.skip(f"{spec.name} refuses C = 0")
    for reduction in REDUCTIONS:
        check(spec, inputs, target, weight, options, reduction)


# ----------------------------------------------------------------------------------------------
# numerics: the kink rule, stability, determinism, forward-only calls


@device_param
@pytest.mark.parametrize("spec", [s for s in TRITON_LOSSES if index_target(s)],
                         ids=lambda s: s.name)
def test_hinge_kink_gradient_is_zero(spec, device):
    """At z = margin - x_t + x_k = 0 exactly the subgradient is 0 (strict z > 0, as torch)."""
    x = torch.tensor([[1.0, 0.0, 0.5]], device=device)  # z = 1 - 1 + 0 = 0 for class 1
    target = torch.tensor([[0, -1, -1]] if takes_lists(spec) else [0], device=device)
    options = tuple(o.default for o in spec.options)  # margin 1
    call, _ = make_call(spec, (x,), target, None, options, "sum")
    (g,) = triton_backend.run(spec, call).grads
    assert g[0, 1] == 0 and g[0, 2] > 0


@device_param
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("spec", [s for s in TRITON_LOSSES if logistic(s)], ids=lambda s: s.name)
def test_logistic_losses_are_stable(spec, dtype, device):
    """Scores far in both tails, label 1 (valid in both label conventions): finite, and
    relatively accurate down to the exp(-20) = 2e-9 tail (log1p accuracy, and the tail added
    after the linear part cancels)."""
    x = torch.tensor([[-100.0], [-30.0], [20.0], [60000.0]], dtype=dtype, device=device)
    y = torch.ones_like(x)
    call, none_shape = make_call(spec, (x,), y, None, (), "none")
    result = triton_backend.run(spec, call)
    (g,) = result.grads
    assert torch.isfinite(result.loss).all() and torch.isfinite(g).all()
    ref, (g_ref,) = oracle(spec, (x,), y, None, (), "none")
    # that tail rounds to 0 in float16, whose smallest subnormal is 6e-8
    torch.testing.assert_close(result.loss.reshape(none_shape), ref.to(dtype),
                               rtol=2e-3 if dtype == torch.float16 else 2e-6, atol=0)
    assert g[0, 0] == -1 and g[3, 0] == 0
    assert_close(g, g_ref.to(dtype))


@device_param
@spec_param
def test_deterministic(spec, device, monkeypatch):
    """Bitwise the same twice, with several programs per reduction (blocks shrunk)."""
    shrink_blocks(monkeypatch, spec, 16)
    inputs, target, weight, options = make(spec, 9, 70, torch.float32, device=device)
    for reduction in ("sum", "none"):
        call, _ = make_call(spec, inputs, target, weight, options, reduction)
        runs = [triton_backend.run(spec, call) for _ in range(2)]
        assert torch.equal(runs[0].loss, runs[1].loss)
        for a, b in zip(runs[0].grads, runs[1].grads, strict=True):
            assert torch.equal(a, b)


@device_param
@spec_param
def test_forward_only(spec, device):
    """need_grad False: no gradient, and the same loss, bitwise, as with one."""
    inputs, target, weight, options = make(spec, 4, 9, torch.bfloat16, device=device)
    for reduction in REDUCTIONS:
        call, _ = make_call(spec, inputs, target, weight, options, reduction, need_grad=False)
        result = triton_backend.run(spec, call)
        check_contract(spec, call, result)
        with_grad = check(spec, inputs, target, weight, options, reduction, oracle_too=False)
        assert torch.equal(result.loss, with_grad.loss)


# ----------------------------------------------------------------------------------------------
# the backend's contract: what it refuses, and why


@device_param
@spec_param
def test_float64_is_refused(spec, device):
    call, _ = make_call(spec, *make(spec, 2, 3, torch.float64, device=device), "mean")
    assert triton_backend.unavailable(spec, call) == (
        "float64 inputs run on the torch backend (the kernels compute in float32)")


@spec_param
def test_unavailable_reasons(spec, monkeypatch):
    call, _ = make_call(spec, *make(spec, 2, 3, torch.float32), "mean")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert triton_backend.unavailable(spec, call) == (
        "the input is on cpu, and the Triton kernels need a CUDA device")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # CPU tensors allowed from here on
    assert triton_backend.unavailable(spec, call) is None
    fp8 = call._replace(inputs=(torch.zeros(2, 3, dtype=torch.float8_e4m3fn),))
    assert triton_backend.unavailable(spec, fp8) == (
        "the kernels do not support torch.float8_e4m3fn")

    real_find_spec = importlib.util.find_spec
    for missing, reason in (
        ("triton", "triton is not installed (pip install 'marginloss[triton]')"),
        (f"marginloss.kernels.{spec.name}", f"there is no Triton kernel for {spec.name}"),
    ):
        def find_spec(name, *args, missing=missing):
            return None if name == missing else real_find_spec(name, *args)

        with monkeypatch.context() as patch:
            patch.setattr(importlib.util, "find_spec", find_spec)
            triton_backend.missing.cache_clear()
            try:
                assert triton_backend.unavailable(spec, call) == reason
            finally:
                triton_backend.missing.cache_clear()  # looked up once per process: forget


def test_kernel_modules_follow_the_losses():
    """One kernel module per loss that lists the Triton backend, named with the loss's name."""
    kernels = importlib.import_module("marginloss.kernels")
    names = {m.name for m in pkgutil.iter_modules(kernels.__path__)}
    assert {n for n in names if not n.startswith("_")} == \
        {s.name for s in TRITON_LOSSES}
    for spec in TRITON_LOSSES:
        assert triton_backend.launch_for(spec) is kernel_module(spec).launch


# ----------------------------------------------------------------------------------------------
# traceability: triton_op operators, FakeTensors


def _as_triton_op(spec, launch):
    """``launch`` as a ``torch.library.triton_op`` taking ``(*inputs, [target], [weight],
    *options, reduction)`` and returning ``(loss, *grads)``, as marginloss._ops registers it."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    types = {"int": int, "float": float}
    params = [inspect.Parameter(name, kind, annotation=Tensor) for name in spec.inputs]
    if spec.has_target:
        params.append(inspect.Parameter("target", kind, annotation=Tensor))
    if spec.weighted:
        params.append(inspect.Parameter("weight", kind, annotation=Tensor | None))
    params += [inspect.Parameter(o.name, kind, annotation=types[o.type]) for o in spec.options]
    params.append(inspect.Parameter("reduction", kind, annotation=str))
    n = len(spec.inputs)

    def body(*args):
        xs, rest = tuple(args[:n]), list(args[n:])
        target = rest.pop(0) if spec.has_target else None
        weight = rest.pop(0) if spec.weighted else None
        *options, reduction = rest
        result = launch(Call(xs, target, weight, tuple(options), reduction, (True,) * n))
        return (result.loss, *result.grads)

    body.__signature__ = inspect.Signature(params,
                                           return_annotation=tuple[(Tensor,) * (1 + n)])
    body.__name__ = spec.name
    return torch.library.triton_op(f"marginloss_test::{spec.name}", body, mutates_args=())


_OPS: dict[str, object] = {}


@device_param
@spec_param
def test_runs_as_a_triton_op(spec, device):
    """The launcher is the body of a triton_op: called eagerly it gives the backend's result
    (under the interpreter, wrap_triton hands the interpreted kernel back and it runs directly;
    on a GPU, opcheck also traces the op with FakeTensors and checks its registration)."""
    if spec.name not in _OPS:
        _OPS[spec.name] = _as_triton_op(spec, triton_backend.launch_for(spec))
    op = _OPS[spec.name]
    weight = "class" if spec.weighted else None
    inputs, target, w, options = make(spec, 6, 37, torch.float32, device=device, weight=weight)
    call, _ = make_call(spec, inputs, target, w, options, "mean")
    args = (*call.inputs, *((call.target,) if spec.has_target else ()),
            *((call.weight,) if spec.weighted else ()), *call.options, call.reduction)
    loss, *grads = op(*args)
    expect = triton_backend.run(spec, call)
    assert torch.equal(loss, expect.loss)
    for g, e in zip(grads, expect.grads, strict=True):
        assert torch.equal(g, e)
    if device == "cuda":
        torch.library.opcheck(op, args)


_FAKE_SCRIPT = textwrap.dedent("""
    import os
    os.environ.pop("TRITON_INTERPRET", None)  # real @triton.jit kernels: they can be traced
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx
    from marginloss.backends import triton as triton_backend
    from marginloss.losses import LOSSES, Call

    for spec in [s for s in LOSSES if "triton" in s.backends]:
        launch = triton_backend.launch_for(spec)
        g = torch.Generator().manual_seed(0)
        inputs, target, kw = spec.sample(5, 37, dtype=torch.bfloat16, generator=g)
        weight = torch.rand(37) + 0.5 if spec.weighted else None
        options = tuple(kw.get(o.name, o.default) for o in spec.options)
        inputs, target, weight, options, _ = spec.prepare(inputs, target, weight, options)
        n = len(inputs)
        for reduction in ("none", "mean", "sum"):
            for need in (True, False):
                call = Call(inputs, target, weight, options, reduction, (need,) * n)
                ref = spec.torch_compute(call)
                mode = FakeTensorMode()
                fake = lambda t: None if t is None else mode.from_tensor(t)
                with mode:
                    out = launch(call._replace(inputs=tuple(map(fake, inputs)),
                                               target=fake(target), weight=fake(weight)))
                assert out.loss.shape == ref.loss.shape and out.loss.dtype == ref.loss.dtype
                assert all((g is None) == (not need) for g in out.grads)

                present = (target is not None, weight is not None)

                def traced(*tensors):
                    xs, rest = tensors[:n], list(tensors[n:])
                    t, w = (rest.pop(0) if p else None for p in present)
                    r = launch(Call(xs, t, w, options, reduction, (need,) * n))
                    return (r.loss, *(g for g in r.grads if g is not None))

                args = (*inputs, *(t for t in (target, weight) if t is not None))
                for tracing_mode in ("fake", "symbolic"):  # static and dynamic shapes
                    graph = make_fx(traced, tracing_mode=tracing_mode)(*args).graph
                    ops = [str(n.target) for n in graph.nodes if n.op == "call_function"]
                    kernels = [o for o in ops if "triton_kernel_wrapper" in o]
                    assert len(kernels) == 1, (spec.name, ops)
                    assert not [o for o in ops if "local_scalar_dense" in o], (spec.name, ops)
        print("traced", spec.name)
""")


def test_launch_traces_with_fake_tensors():
    """Every launcher runs on FakeTensors and traces (make_fx, static and dynamic shapes) to
    torch ops plus one wrapped kernel launch, with no host read of a tensor value.

    Runs in a fresh process without TRITON_INTERPRET: under the interpreter ``@triton.jit``
    gives interpreted functions, which ``wrap_triton`` hands back unwrapped (eager only), so
    tracing needs the real kernels (tracing compiles nothing, so no GPU is needed).
    """
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _FAKE_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.split() == [w for s in TRITON_LOSSES for w in ("traced", s.name)]
