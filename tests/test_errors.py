"""Every bad input raises before any work, naming the argument, the expectation and the fix."""

from __future__ import annotations

import pytest
import torch

import marginloss
import marginloss.functional as F
from marginloss import BackendUnavailableError, DtypeError, LabelError, ShapeError

x22 = torch.randn(2, 3)


def test_error_classes_subclass_builtin_exceptions():
    assert issubclass(LabelError, ValueError)
    assert issubclass(ShapeError, ValueError)
    assert issubclass(DtypeError, TypeError)
    assert issubclass(BackendUnavailableError, RuntimeError)


# (function, args, kwargs, exception, regex fragments that must all appear in the message)
CASES = [
    # soft_margin_loss: the {0,1} mistake, soft labels, NaN, shapes
    ("sm-01", F.soft_margin_loss, (x22, torch.tensor([[0.0, 1, 1], [1, 0, 0]])), {}, LabelError,
     ["soft_margin_loss", "`target`", "{-1, +1}", "{0, 1}", "to_pm1", "validate=False"]),
    ("sm-bool", F.soft_margin_loss, (x22, torch.ones(2, 3, dtype=torch.bool)), {}, LabelError,
     ["{0, 1}", "to_pm1"]),
    ("sm-soft", F.soft_margin_loss, (x22, torch.full((2, 3), 0.5)), {}, LabelError,
     ["0.5", "multilabel_soft_margin_loss"]),
    ("sm-nan", F.soft_margin_loss, (x22, torch.tensor([[1.0, float("nan"), 1], [1, 1, 1]])), {},
     LabelError, ["nan", "NaN"]),
    ("sm-shape", F.soft_margin_loss, (x22, torch.ones(3, 2)), {}, ShapeError,
     ["`target`", r"(3, 2)", r"(2, 3)"]),
    ("sm-int-input", F.soft_margin_loss, (torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3)),
     {}, DtypeError, ["`input`", "floating", "torch.int64", "input.float()"]),
    ("sm-not-tensor", F.soft_margin_loss, (x22, [1, -1]), {}, DtypeError,
     ["`target`", "torch.Tensor", "list"]),
    # multilabel_soft_margin_loss: the ±1 mistake, index lists, class indices, weight shape
    ("mlsm-pm1", F.multilabel_soft_margin_loss, (x22, torch.tensor([[1.0, -1, 1], [-1, 1, 1]])),
     {}, LabelError, ["multilabel_soft_margin_loss", "[0, 1]", "±1", "to_01"]),
    ("mlsm-padded", F.multilabel_soft_margin_loss, (x22, torch.tensor([[2, 0, -1], [1, -1, -1]])),
     {}, LabelError, ["-1-padded", "padded_to_multi_hot"]),
    ("mlsm-indices", F.multilabel_soft_margin_loss, (x22, torch.tensor([[2, 0, 1], [1, 2, 2]])),
     {}, LabelError, ["class indices", "indices_to_multi_hot"]),
    ("mlsm-shape", F.multilabel_soft_margin_loss, (x22, torch.tensor([2, 0])), {}, ShapeError,
     ["`target`", r"(2,)", "indices_to_multi_hot", "num_classes=3"]),
    ("mlsm-weight-shape", F.multilabel_soft_margin_loss, (x22, torch.ones(2, 3)),
     {"weight": torch.ones(4)}, ShapeError, ["`weight`", r"(4,)", r"(3,)"]),
    ("mlsm-0d", F.multilabel_soft_margin_loss, (torch.tensor(1.0), torch.tensor(1.0)), {},
     ShapeError, ["0-d", r"(N, C)"]),
    # multi_margin_loss
    ("mm-range", F.multi_margin_loss, (x22, torch.tensor([0, 3])), {}, LabelError,
     ["multi_margin_loss", r"[0, 3)", r"[0, 3]", "target - 1"]),
    ("mm-negative", F.multi_margin_loss, (x22, torch.tensor([0, -1])), {}, LabelError,
     [r"[0, 3)", r"[-1, 0]"]),
    ("mm-float-target", F.multi_margin_loss, (x22, torch.tensor([0.0, 1.0])), {}, DtypeError,
     ["`target`", "integer", "torch.float32", "target.long()"]),
    ("mm-one-hot", F.multi_margin_loss, (x22, torch.tensor([[1, 0, 0], [0, 1, 0]])), {},
     ShapeError, ["one class index per sample", "argmax"]),
    ("mm-p", F.multi_margin_loss, (x22, torch.tensor([0, 1])), {"p": 3}, ValueError,
     ["`p`", "1 or 2", "3"]),
    ("mm-weight", F.multi_margin_loss, (x22, torch.tensor([0, 1])), {"weight": torch.ones(2)},
     ShapeError, ["`weight`", r"(3,)", r"(2,)"]),
    ("mm-3d", F.multi_margin_loss, (torch.randn(2, 2, 3), torch.tensor([0, 1])), {}, ShapeError,
     [r"(C,) or (N, C)", "reshape"]),
    # multilabel_margin_loss
    ("mlm-mask", F.multilabel_margin_loss, (torch.randn(2, 4), torch.tensor([[0, 1, 1, 0],
                                                                            [1, 0, 0, 0]])),
     {}, LabelError, ["multi-hot mask", "multi_hot_to_padded", "multilabel_soft_margin_loss"]),
    ("mlm-range", F.multilabel_margin_loss, (x22, torch.tensor([[0, 3, -1], [1, -1, -1]])), {},
     LabelError, [r"[0, 3)", "-1", r"[-1, 3]"]),
    ("mlm-below", F.multilabel_margin_loss, (x22, torch.tensor([[0, -2, -1], [1, -1, -1]])), {},
     LabelError, [r"[-2, 1]"]),
    ("mlm-float", F.multilabel_margin_loss, (x22, torch.zeros(2, 3)), {}, DtypeError,
     ["integer", "padded with -1", "multi_hot_to_padded"]),
    ("mlm-shape", F.multilabel_margin_loss, (x22, torch.tensor([0, 1])), {}, ShapeError,
     ["`target`", r"(2, 3)", "sets_to_padded"]),
    # options, shared by all
    ("reduction", F.soft_margin_loss, (x22, torch.ones(2, 3)), {"reduction": "avg"}, ValueError,
     ["avg", "reduction"]),
    ("backend", F.multi_margin_loss, (x22, torch.tensor([0, 1])), {"backend": "cuda"},
     ValueError, ["`backend`", "'auto', 'torch', 'triton' or 'native'", "'cuda'"]),
    ("validate", F.multi_margin_loss, (x22, torch.tensor([0, 1])), {"validate": "yes"},
     TypeError, ["`validate`", "True or False"]),
    ("target-grad", F.soft_margin_loss, (x22, torch.ones(2, 3, requires_grad=True)), {},
     ValueError, ["`target` requires grad", "target.detach()"]),
    ("weight-grad", F.multilabel_soft_margin_loss, (x22, torch.ones(2, 3)),
     {"weight": torch.ones(3, requires_grad=True)}, ValueError, ["`weight` requires grad"]),
    ("device", F.soft_margin_loss, (x22, torch.ones(2, 3, device="meta")), {}, ValueError,
     ["same device"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_error_message(case):
    _, fn, args, kwargs, exc, fragments = case
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


VALUE_CASES = [c for c in CASES if c[4] is LabelError]


@pytest.mark.parametrize("case", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_validate_false_skips_value_checks_only(case):
    _, fn, args, kwargs, _, _ = case
    if fn in (F.multi_margin_loss, F.multilabel_margin_loss) and not fn is F.multilabel_margin_loss:
        args = (args[0], args[1].clamp(0, args[0].shape[-1] - 1))  # keep indices in range
    if fn is F.multilabel_margin_loss:
        args = (args[0], args[1].clamp(-1, args[0].shape[-1] - 1))
    out = fn(*args, **kwargs, validate=False)
    assert out.dim() == 0


@pytest.mark.parametrize("case", [c for c in CASES if c[4] in (ShapeError, DtypeError)],
                         ids=[c[0] for c in CASES if c[4] in (ShapeError, DtypeError)])
def test_shape_and_dtype_checks_always_run(case):
    _, fn, args, kwargs, exc, _ = case
    with pytest.raises(exc):
        fn(*args, **kwargs, validate=False)


def test_errors_raise_before_any_work_on_the_input():
    """A failing call leaves no trace: the input's gradient stays None."""
    x = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(LabelError):
        F.soft_margin_loss(x, torch.zeros(2, 3)).backward()
    assert x.grad is None


def test_targets_in_convention_pass_validation():
    F.soft_margin_loss(x22, torch.tensor([[1, -1, 1], [-1, -1, 1]]))  # int ±1 is fine
    F.multilabel_soft_margin_loss(x22, torch.full((2, 3), 0.3))  # soft labels
    F.multilabel_soft_margin_loss(x22, torch.ones(2, 3, dtype=torch.bool))  # bool mask
    F.multi_margin_loss(x22, torch.tensor([2, 0], dtype=torch.int32))
    F.multilabel_margin_loss(x22, torch.tensor([[2, 0, -1], [-1, 1, 2]]))  # -1 ends the list
    F.multilabel_margin_loss(torch.randn(2, 2), torch.tensor([[0, 1], [1, -1]]))  # C = 2


def test_backend_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendUnavailableError, match="input is on cpu.*CUDA"):
        F.soft_margin_loss(x22, torch.ones(2, 3), backend="triton")


def test_backend_triton_rejects_float64_with_reason():
    with pytest.raises(BackendUnavailableError, match="float64"):
        F.multi_margin_loss(x22.double(), torch.tensor([0, 1]), backend="triton")


def test_auto_never_sends_cpu_tensors_to_the_interpreter(monkeypatch):
    from marginloss._dispatch import select_backend

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    name, reason = select_backend("auto", x22)
    assert name == "torch" and "cpu" in reason


@pytest.mark.parametrize("cls, kwargs, exc, fragment", [
    ("MultiMarginLoss", {"p": 3}, ValueError, "`p` must be 1 or 2"),
    ("MultiMarginLoss", {"weight": torch.ones(2, 2)}, ValueError, "1-D"),
    ("SoftMarginLoss", {"backend": "gpu"}, ValueError, "`backend`"),
    ("MultiLabelMarginLoss", {"validate": None}, TypeError, "`validate`"),
])
def test_module_constructor_errors(cls, kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment):
        getattr(marginloss, cls)(**kwargs)
