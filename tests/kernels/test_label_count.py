"""The Triton kernels count bad labels in their own pass (``launch(call, check=True)``).

For every loss whose spec lists ``"triton"`` in ``fused_label_check``: the count is a 0-d int64
tensor on the input's device (no host read in the kernel path), 0 for labels in the
convention, the exact number of bad labels otherwise (also when they fall in different
programs of one launch), and through the public function with ``backend="triton"`` the error is
the one the loss's own check raises on the CPU. Runs under Triton's interpreter on CPU tensors
(and on CUDA when there is a GPU).
"""

from __future__ import annotations

import os

import pytest
import torch
from loss_cases import CASES

pytest.importorskip("triton")

from marginloss.backends import triton as triton_backend  # noqa: E402
from marginloss.errors import LabelError  # noqa: E402
from marginloss.losses import LOSSES  # noqa: E402

FUSED = [s for s in LOSSES if "triton" in s.fused_label_check]
spec_param = pytest.mark.parametrize("spec", FUSED, ids=lambda s: s.name)
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


def _label_mistakes(spec):
    return [m for m in CASES[spec.name].mistakes if m.error is LabelError and not m.kwargs]


def _count(spec, inputs, target, **kwargs):
    call = spec.call(inputs, target, kwargs)
    result = triton_backend.run(spec, call, check=True)
    bad = result.bad_labels
    assert isinstance(bad, torch.Tensor) and bad.dim() == 0 and bad.dtype == torch.int64
    assert bad.device == inputs[0].device
    return int(bad)


def _corrupt(spec, target, positions):
    """``target`` with the entries at flat ``positions`` made bad (per the loss's convention)."""
    t = target.clone()
    flat = t.view(-1)
    if t.is_floating_point():  # ±1 labels or a [0, 1] mask: 2 is outside both
        flat[positions] = 2.0
    else:  # class indices: one past the last class
        flat[positions] = 10**6
    return t


@spec_param
def test_every_fused_loss_has_label_mistakes(spec):
    assert _label_mistakes(spec), spec.name


@device_param
@spec_param
@pytest.mark.parametrize("n", [6, 1500])  # one program; several programs (partial slots)
def test_valid_labels_count_zero_and_bad_labels_count_exactly(spec, device, n):
    g = torch.Generator().manual_seed(n)
    inputs, target, kw = spec.sample(n, 11, generator=g)
    inputs = tuple(x.to(device) for x in inputs)
    target = target.to(device)
    kw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    assert _count(spec, inputs, target, **kw) == 0
    if target.dim() == 2 and not target.is_floating_point():
        pytest.skip("index lists: the exact count is the kernel's own test's business")
    positions = torch.randperm(target.numel(), generator=g)[:5].to(device)
    assert _count(spec, inputs, _corrupt(spec, target, positions), **kw) == 5


@device_param
@spec_param
def test_each_mistake_is_counted_and_raises_the_cpu_error(spec, device):
    case = CASES[spec.name]
    for mistake in _label_mistakes(spec):
        inputs, target = case.mistake_call(mistake)  # every differentiable input
        on_device = tuple(x.to(device) for x in inputs)
        assert _count(spec, on_device, target.to(device)) > 0, mistake.id
        with pytest.raises(LabelError) as cpu:
            case.run(inputs, target, backend="torch")
        with pytest.raises(LabelError) as ours:
            case.run(on_device, target.to(device), backend="triton")
        assert str(ours.value) == str(cpu.value), mistake.id
