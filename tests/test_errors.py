"""Every bad input raises before any work, naming the argument, the expectation and the fix.

The generic mistakes (non-tensor or integer scores, bad options, a target that requires grad or
lives on another device) run for every registered loss; each loss's own label and shape
mistakes come from its entry in tests/loss_cases.py.
"""

from __future__ import annotations

import pytest
import torch
from loss_cases import CASES, cases

import marginloss
import marginloss.errors
from marginloss import BackendUnavailableError, DtypeError, LabelError, ShapeError


def test_error_classes_are_public_and_subclass_builtin_exceptions():
    assert marginloss.errors.LabelError is LabelError
    assert LabelError.__module__ == "marginloss.errors"
    assert issubclass(LabelError, ValueError)
    assert issubclass(ShapeError, ValueError)
    assert issubclass(DtypeError, TypeError)
    assert issubclass(BackendUnavailableError, RuntimeError)


MISTAKES = [pytest.param(case, m, id=f"{case.name}-{m.id}")
            for case in CASES.values() for m in case.mistakes]


def _call(case, mistake, **extra):
    inputs, target = case.mistake_call(mistake)
    return case.run(inputs, target, **(mistake.kwargs or {}), **extra)


@pytest.mark.parametrize("case, mistake", MISTAKES)
def test_error_message(case, mistake):
    with pytest.raises(mistake.error) as info:
        _call(case, mistake)
    for fragment in mistake.fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


VALUE_MISTAKES = [p for p in MISTAKES if p.values[1].error is LabelError]


@pytest.mark.parametrize("case, mistake", VALUE_MISTAKES)
def test_validate_false_skips_value_checks_only(case, mistake):
    """validate=False computes what torch computes for the same (in-range) values."""
    inputs, target = case.mistake_call(mistake)
    x = inputs[0]
    if not target.is_floating_point() and target.dtype != torch.bool:
        target = target.clamp(-1 if case.name == "multilabel_margin_loss" else 0,
                              x.shape[-1] - 1)  # out-of-range indices are undefined
    ours = case.run(inputs, target, validate=False)
    ref = case.run_ref(inputs, target.to(x.dtype) if target.dtype == torch.bool else target)
    torch.testing.assert_close(ours, ref, equal_nan=True)


@pytest.mark.parametrize("case, mistake", [p for p in MISTAKES
                                           if p.values[1].error in (ShapeError, DtypeError)])
def test_shape_and_dtype_checks_always_run(case, mistake):
    with pytest.raises(mistake.error):
        _call(case, mistake, validate=False)


@pytest.mark.parametrize("case", cases())
def test_generic_mistakes(case):
    xs = case.default_inputs()
    x = xs[0]
    y = case.valid_target(x)

    def with_input(i, value):
        return tuple(value if j == i else t for j, t in enumerate(xs))

    expected = []
    for i, arg in enumerate(case.spec.inputs):  # every differentiable input is checked
        expected += [
            (lambda i=i: case.run(with_input(i, torch.ones(2, 3, dtype=torch.long)), y),
             DtypeError, [f"`{arg}`", "floating", "torch.int64", f"{arg}.float()"]),
            (lambda i=i: case.run(with_input(i, xs[i].tolist()), y), DtypeError,
             [f"`{arg}`", "torch.Tensor", "list"]),
        ]
        if i:
            expected.append((lambda i=i: case.run(with_input(i, xs[i].to("meta")), y),
                             ValueError, ["same device"]))
    expected += [
        (lambda: case.run(xs, y, reduction="avg"), ValueError, ["avg", "reduction"]),
        (lambda: case.run(xs, y, backend="cuda"), ValueError,
         ["`backend`", "'auto', 'torch', 'triton' or 'native'", "'cuda'"]),
        (lambda: case.run(xs, y, validate="yes"), TypeError, ["`validate`", "True or False"]),
    ]
    if case.has_target:
        expected += [
            (lambda: case.run(xs, y.tolist()), DtypeError, ["`target`", "torch.Tensor", "list"]),
            (lambda: case.run(xs, y.to("meta")), ValueError, ["same device"]),
        ]
        if y.is_floating_point():
            expected.append((lambda: case.run(xs, y.clone().requires_grad_()), ValueError,
                             ["`target` requires grad", "target.detach()"]))
    if case.spec.weighted:
        expected.append((lambda: case.run(xs, y, weight=torch.ones(3, requires_grad=True)),
                         ValueError, ["`weight` requires grad"]))
    for call, error, fragments in expected:
        with pytest.raises(error) as info:
            call()
        for fragment in fragments:
            assert fragment in str(info.value), (fragment, str(info.value))


def _label_mistake(case, **extra):
    """The case's first label mistake (skips the test for a loss without labels)."""
    mistake = next((m for m in case.mistakes if m.error is LabelError
                    and (not m.kwargs or not extra.get("plain"))), None)
    if mistake is None:
        pytest.skip(f"{case.name} has no label convention")
    return mistake


@pytest.mark.parametrize("case", cases())
def test_errors_raise_before_any_work_on_the_input(case):
    """A failing call leaves no trace: the inputs' gradients stay None."""
    mistake = _label_mistake(case)
    inputs, target = case.mistake_call(mistake)
    inputs = tuple(x.requires_grad_() for x in inputs)
    with pytest.raises(LabelError):
        case.run(inputs, target).backward()
    assert all(x.grad is None for x in inputs)


def test_targets_in_convention_pass_validation():
    x22 = torch.randn(2, 3)
    F = marginloss.functional
    F.soft_margin_loss(x22, torch.tensor([[1, -1, 1], [-1, -1, 1]]))  # int ±1 is fine
    F.multilabel_soft_margin_loss(x22, torch.full((2, 3), 0.3))  # soft labels
    F.multilabel_soft_margin_loss(x22, torch.ones(2, 3, dtype=torch.bool))  # bool mask
    F.multi_margin_loss(x22, torch.tensor([2, 0], dtype=torch.int32))
    F.multilabel_margin_loss(x22, torch.tensor([[2, 0, -1], [-1, 1, 2]]))  # -1 ends the list
    F.multilabel_margin_loss(torch.randn(2, 2), torch.tensor([[0, 1], [1, -1]]))  # C = 2


@pytest.mark.parametrize("case", cases())
def test_backend_triton_on_cpu_without_interpreter_says_why(case, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    xs = case.default_inputs()
    with pytest.raises(BackendUnavailableError, match="input is on cpu.*CUDA"):
        case.run(xs, case.valid_target(xs[0]), backend="triton")


@pytest.mark.parametrize("case", cases())
def test_backend_triton_rejects_float64_with_reason(case):
    xs = case.default_inputs(torch.float64)
    with pytest.raises(BackendUnavailableError, match="float64"):
        case.run(xs, case.valid_target(xs[0]), backend="triton")


@pytest.mark.parametrize("case", cases())
def test_auto_never_sends_cpu_tensors_to_the_interpreter(case, monkeypatch):
    from marginloss import backends

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    xs = case.default_inputs(torch.float64)
    call = case.spec.call(xs, case.valid_target(xs[0]), {})
    backend = backends.select("auto", case.spec, call._replace(
        need_grad=(False,) * case.n_inputs))
    assert backend.NAME == "torch"


@pytest.mark.parametrize("cls, kwargs, exc, fragment", [
    ("MultiMarginLoss", {"p": 3}, ValueError, "`p` must be 1 or 2"),
    ("MultiMarginLoss", {"weight": torch.ones(2, 2)}, ValueError, "1-D"),
    ("SoftMarginLoss", {"backend": "gpu"}, ValueError, "`backend`"),
    ("MultiLabelMarginLoss", {"validate": None}, TypeError, "`validate`"),
])
def test_module_constructor_errors(cls, kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment):
        getattr(marginloss, cls)(**kwargs)


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("case", cases())
def test_a_repeated_call_still_checks_its_labels(case, backend):
    """Eager calls that repeat an earlier call's shapes skip the metadata checks they passed
    (pipeline plans), never the label check: it reads this call's values."""
    mistake = _label_mistake(case, plain=True)
    xs, bad = case.mistake_call(mistake)
    good = case.valid_target(xs[0]).to(bad.dtype)
    for _ in range(3):
        case.run(xs, good, backend=backend)
        case.run(tuple(x.requires_grad_() for x in xs), good, backend=backend).backward()
    with pytest.raises(LabelError):
        case.run(xs, bad, backend=backend)
    # and a target that requires grad is still refused when the shapes repeat
    if good.is_floating_point():
        with pytest.raises(ValueError, match="requires grad"):
            case.run(xs, good.clone().requires_grad_(), backend=backend)
