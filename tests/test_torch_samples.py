"""PyTorch's own sample inputs for each loss pass through marginloss with ``validate=False``.

torch's test suite describes every loss with an OpInfo (``op_db`` in
``torch.testing._internal.common_methods_invocations``: ``sample_inputs``, the calls torch tests
its function with) and every module with a ModuleInfo (``module_db`` in
``torch.testing._internal.common_modules``: constructor and forward arguments). Each sample is
run through marginloss's function (module) of the same name and through torch's, with
``validate=False`` (torch's samples use random labels: marginloss must then compute exactly what
torch computes), comparing the loss and the gradient of every differentiable input. The tests
are keyed by name: every loss in the test table with an entry there is covered.

Targets are detached first: torch's samples make some labels require grad, which marginloss
refuses (labels are constants); the loss and the inputs' gradients do not depend on it.
"""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import TOL
from loss_cases import CASES

import marginloss

DTYPES = [torch.float32, torch.float64]


@functools.cache
def _op_db() -> dict:
    from torch.testing._internal.common_methods_invocations import op_db

    return {op.name: op for op in op_db}


@functools.cache
def _module_db() -> dict:
    from torch.testing._internal.common_modules import module_db

    return {m.module_cls.__name__: m for m in module_db}


def _opinfo(case):
    ops = [op for name, op in _op_db().items() if name == f"nn.functional.{case.name}"]
    if not ops:
        pytest.skip(f"torch has no OpInfo for {case.name}")
    return ops[0]


def _close(a, b, dtype):
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True)


def _compare(case, ours, ref, args, kwargs, dtype):
    """Run both on fresh leaves of the first ``case.n_inputs`` tensors (the differentiable
    inputs); the rest (target, weight) detached. Loss and each input's gradient agree."""
    k = case.n_inputs
    xs = [a.detach().clone().requires_grad_() for a in args[:k]]
    rest = [a.detach() if torch.is_tensor(a) else a for a in args[k:]]
    kw = {n: v.detach() if torch.is_tensor(v) else v for n, v in kwargs.items()}
    xr = [x.detach().clone().requires_grad_() for x in xs]
    a, b = ours(*xs, *rest, **kw), ref(*xr, *rest, **kw)
    assert a.shape == b.shape and a.dtype == b.dtype
    _close(a, b, dtype)
    g = torch.rand(b.shape, dtype=b.dtype) + 0.5
    ga = torch.autograd.grad(a, xs, g, allow_unused=True)
    gb = torch.autograd.grad(b, xr, g, allow_unused=True)
    for u, v, x in zip(ga, gb, xs, strict=True):
        if v is None:
            v = torch.zeros_like(x)
        _close(u if u is not None else torch.zeros_like(x), v, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_opinfo_sample_inputs(name, dtype):
    case = CASES[name]
    op = _opinfo(case)
    samples = list(op.sample_inputs("cpu", dtype, requires_grad=True))
    assert samples
    for sample in samples:
        args = (sample.input, *sample.args)
        _compare(case, lambda *a, **k: case.ours(*a, **k, validate=False), op.op, args,
                 sample.kwargs, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_moduleinfo_inputs(name, dtype):
    case = CASES[name]
    info = _module_db().get(case.spec.module)
    if info is None:
        pytest.skip(f"torch has no ModuleInfo for {case.spec.module}")
    inputs = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                     training=True)
    assert inputs
    for mi in inputs:
        cargs, ckw = mi.constructor_input.args, mi.constructor_input.kwargs
        ours = getattr(marginloss, case.spec.module)(*cargs, **ckw, validate=False).to(dtype)
        ref = info.module_cls(*cargs, **ckw).to(dtype)
        _compare(case, ours, ref, mi.forward_input.args, mi.forward_input.kwargs, dtype)
