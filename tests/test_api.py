"""The drop-in contract: names, signatures, defaults, modules, import hygiene, no side effects."""

from __future__ import annotations

import copy
import inspect
import io
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as TF
from helpers import assert_close, make_inputs
from loss_cases import CASES, NAMES, cases

import marginloss
import marginloss.functional as F
import marginloss.nn as mnn
from marginloss import backends
from marginloss.losses import LOSSES

FUNCS = [spec.name for spec in LOSSES]
MODULES = [spec.module for spec in LOSSES]
NEW_OPTIONS = {"validate": True, "backend": "auto"}


def test_every_registered_loss_has_a_test_case():
    """The losses come from one list; the test table covers each of them."""
    assert FUNCS == NAMES


# keyword-only options a public function turns into the pipeline's arguments before the call
# (not operator arguments): class_reduction="sum" is the mean with every weight times C
FRONT_OPTIONS = {"multilabel_soft_margin_loss": {"class_reduction": "mean"}}


def _params(obj):
    return list(inspect.signature(obj).parameters.values())


def _check_prefix(ours, theirs, spec):
    """Torch's parameters, in order, same kinds and defaults; then the keyword-only options
    (ours, and the loss's own: ``spec.extras``)."""
    mine, ref = _params(ours), _params(theirs)
    ref = [p for p in ref if p.name != "self"]
    mine = [p for p in mine if p.name != "self"]
    assert [(p.name, p.kind, p.default) for p in mine[: len(ref)]] == \
           [(p.name, p.kind, p.default) for p in ref]
    extra = mine[len(ref):]
    assert {p.name: p.default for p in extra} == \
           {**NEW_OPTIONS, **{o.name: o.default for o in spec.extras},
            **FRONT_OPTIONS.get(spec.name, {})}
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extra)


@pytest.mark.parametrize("name", FUNCS)
def test_function_signature_matches_torch(name):
    _check_prefix(getattr(F, name), getattr(TF, name), next(s for s in LOSSES if s.name == name))
    assert getattr(marginloss, name) is getattr(F, name)


@pytest.mark.parametrize("name", MODULES)
def test_module_signature_matches_torch(name):
    ours = getattr(marginloss, name)
    assert ours is getattr(mnn, name)
    assert issubclass(ours, torch.nn.Module)
    _check_prefix(ours.__init__, getattr(torch.nn, name).__init__,
                  next(s for s in LOSSES if s.module == name))


def _module_pair(name, **kwargs):
    return getattr(marginloss, name)(**kwargs), getattr(torch.nn, name)(**kwargs)


@pytest.mark.parametrize("name, kwargs", [
    ("SoftMarginLoss", {}), ("SoftMarginLoss", {"reduction": "sum"}),
    ("MultiLabelSoftMarginLoss", {"weight": torch.rand(7)}),
    ("MultiLabelSoftMarginLoss", {"reduction": "none"}),
    ("MultiMarginLoss", {"p": 2, "margin": 0.5, "weight": torch.rand(7)}),
    ("MultiMarginLoss", {}),
    ("MultiLabelMarginLoss", {"reduction": "sum"}),
    ("HingeEmbeddingLoss", {"margin": 0.5}), ("HingeEmbeddingLoss", {"reduction": "none"}),
    ("MarginRankingLoss", {"margin": 0.25}), ("MarginRankingLoss", {"reduction": "sum"}),
])
def test_module_state_dict_repr_and_results(name, kwargs):
    ours, ref = _module_pair(name, **copy.deepcopy(kwargs))
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]
    assert list(ours.parameters()) == []
    # torch prints a bare `SoftMarginLoss()`; ours names the settings that change the result
    assert repr(ours).startswith(repr(ref)[:-1]) and f"reduction={ref.reduction!r}" in repr(ours)
    for attr in ("reduction", "p", "margin"):
        assert getattr(ours, attr, None) == getattr(ref, attr, None)
    # state_dict round trip between the two libraries
    ours.load_state_dict(ref.state_dict())
    case = next(c for c in CASES.values() if c.spec.module == name)
    xs, y = case.make((5, 7), torch.float32, margin=kwargs.get("margin", 1.0))
    xa = tuple(x.clone().requires_grad_() for x in xs)
    xb = tuple(x.clone().requires_grad_() for x in xs)
    a, b = case.apply(ours, xa, y), case.apply(ref, xb, y)
    assert_close(a, b)
    a.sum().backward()
    b.sum().backward()
    for u, v in zip(xa, xb, strict=True):
        assert_close(u.grad, v.grad)


def test_module_repr_shows_non_default_options():
    assert repr(marginloss.SoftMarginLoss(validate=False, backend="torch")) == \
        "SoftMarginLoss(reduction='mean', validate=False, backend='torch')"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_module_to_dtype_moves_weight_buffer_and_works(dtype):
    m = marginloss.MultiMarginLoss(weight=torch.rand(6) + 0.5).to(dtype)
    assert m.weight.dtype == dtype
    x, y = make_inputs("multi_margin_loss", 4, 6, dtype=dtype)
    out = m(x.requires_grad_(), y)
    out.backward()
    assert out.dtype == dtype and x.grad.dtype == dtype
    assert torch.isfinite(out)


def test_module_to_device_meta_moves_buffers():
    m = marginloss.MultiLabelSoftMarginLoss(weight=torch.ones(3)).to("meta")
    assert m.weight.device.type == "meta"


def test_module_weight_none_state_dict_empty_like_torch():
    assert list(marginloss.MultiMarginLoss().state_dict()) == \
           list(torch.nn.MultiMarginLoss().state_dict())


@pytest.mark.parametrize("case", cases())
def test_module_pickles_and_keeps_its_settings(case):
    kwargs = case.option_sets(5, torch.float32)[-1]
    loss = case.module(reduction="sum", validate=False, backend="torch", **kwargs)
    buf = io.BytesIO()
    torch.save(loss, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    assert type(again) is type(loss) and repr(again) == repr(loss)
    xs, y = case.make((4, 5), torch.float32, **kwargs)
    assert torch.equal(case.apply(again, xs, y), case.apply(loss, xs, y))


@pytest.mark.parametrize("name", MODULES)
def test_legacy_constructor_args_map_like_torch(name):
    for size_average, reduce in [(False, None), (None, False), (True, True), (False, True)]:
        with warnings.catch_warnings(record=True) as wo:
            warnings.simplefilter("always")
            ours = getattr(marginloss, name)(size_average=size_average, reduce=reduce)
        with warnings.catch_warnings(record=True) as wr:
            warnings.simplefilter("always")
            ref = getattr(torch.nn, name)(size_average=size_average, reduce=reduce)
        assert ours.reduction == ref.reduction
        assert [str(w.message) for w in wo] == [str(w.message) for w in wr]


def test_import_hygiene_no_triton_no_device_probe():
    """`import marginloss` imports no optional dependency and initialises no CUDA."""
    code = (
        "import sys, torch\n"
        "import marginloss, marginloss.functional, marginloss.nn\n"
        "bad = [m for m in ('triton', 'marginloss.kernels', 'sklearn', 'matplotlib', 'river') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
        "assert not torch.cuda.is_initialized()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("case", cases())
def test_nothing_the_caller_passed_is_modified(case, backend):
    kwargs = case.option_sets(11, torch.float32)[-1]
    xs, y = case.make((9, 11), torch.float32, **kwargs)
    xs = tuple(x.requires_grad_() for x in xs)
    tensors = [*xs, *((y,) if y is not None else ()),
               *(v for v in kwargs.values() if torch.is_tensor(v))]
    before = [t.detach().clone() for t in tensors]
    versions = [t._version for t in tensors]
    case.run(xs, y, reduction="sum", backend=backend, **kwargs).backward()
    for b, a, v in zip(before, tensors, versions):
        assert torch.equal(b, a.detach()) and a._version == v


@pytest.mark.parametrize("case", cases())
def test_deterministic_bitwise(case):
    xs, y = case.make((300, 1000), torch.float32)
    runs = []
    for _ in range(2):
        xa = tuple(x.clone().requires_grad_() for x in xs)
        out = case.run(xa, y)
        out.backward()
        runs.append((out, *(x.grad for x in xa)))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def test_backend_names_are_the_literal_and_the_backend_modules():
    assert backends.BACKENDS == ("auto", "torch", "triton", "native")
    assert {b.NAME for b in backends.AUTO_ORDER} == set(backends.BACKENDS) - {"auto"}


# public names beyond the loss table: torch's loss with a user distance (its default distance
# is the triplet loss's fused kernel) and the fused linear heads (marginloss.linear)
MORE_FUNCS = ["triplet_margin_with_distance_loss", "linear_multilabel_soft_margin_loss",
              "linear_multi_margin_loss", "linear_multilabel_margin_loss"]
MORE_MODULES = ["TripletMarginWithDistanceLoss", "LinearMultiLabelSoftMarginLoss",
                "LinearMultiMarginLoss", "LinearMultiLabelMarginLoss"]


def test_public_api_is_small():
    assert set(marginloss.functional.__all__) == set(FUNCS + MORE_FUNCS)
    assert set(mnn.__all__) == set(MODULES + MORE_MODULES)
    for name in marginloss.__all__:
        assert hasattr(marginloss, name)
    assert marginloss.errors.LabelError is marginloss.LabelError
