"""The host side of the GPU path, checked without a GPU: deferred label errors, backward's
in-place scaling kernel (under Triton's interpreter), the fallback when a kernel fails."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import assert_close
from loss_cases import CASES

import marginloss
from marginloss import _deferred, _ops, backends
from marginloss.backends import native
from marginloss.errors import LabelError


class _FakeEvent:
    """Stands in for torch.cuda.Event: ``done`` says whether the device has finished."""

    done = False

    def record(self):
        pass

    def query(self):
        return _FakeEvent.done

    def synchronize(self):
        _FakeEvent.done = True


@pytest.fixture
def fake_cuda_events(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    _FakeEvent.done = False
    yield
    _deferred._pending.clear()


def _bad_call(name="soft_margin_loss"):
    case = CASES[name]
    mistake = next(m for m in case.mistakes if m.error is LabelError and not m.kwargs)
    inputs, target = case.mistake_call(mistake)
    return case, case.spec.call(inputs, target, {})


def test_a_device_count_makes_the_loss_nan_and_reports_after_the_device_finishes(
        fake_cuda_events):
    case, call = _bad_call()
    loss = torch.tensor(0.25)
    out = _deferred.defer(case.spec, call, loss, torch.tensor(3))
    assert torch.isnan(out) and loss.item() == 0.25  # never a plausible number; input intact
    _deferred.poll()  # the device has not finished: nothing raised, nothing waited for
    assert len(_deferred._pending) == 1
    _FakeEvent.done = True
    with pytest.raises(LabelError, match=r"\{0, 1\}.*to_pm1"):  # the CPU's message
        _deferred.poll()
    assert not _deferred._pending


def test_check_labels_waits_and_raises(fake_cuda_events):
    case, call = _bad_call("multi_margin_loss")
    _deferred.defer(case.spec, call, torch.tensor(1.0), torch.tensor(1))
    with pytest.raises(LabelError, match=r"\[0, 3\)"):
        marginloss.check_labels()
    marginloss.check_labels()  # nothing pending any more


def test_a_clean_count_keeps_the_loss_and_reports_nothing(fake_cuda_events):
    case, call = _bad_call()
    out = _deferred.defer(case.spec, call, torch.tensor(0.5), torch.tensor(0))
    assert out.item() == 0.5
    _FakeEvent.done = True
    _deferred.poll()
    marginloss.check_labels()


def test_a_later_call_reports_the_error(fake_cuda_events):
    """The report comes from the next marginloss call (its operator looks first)."""
    case, call = _bad_call()
    _deferred.defer(case.spec, call, torch.tensor(0.5), torch.tensor(2))
    _FakeEvent.done = True
    x = torch.randn(4, 5)
    with pytest.raises(LabelError):
        marginloss.functional.soft_margin_loss(x, torch.ones(4, 5))
    marginloss.functional.soft_margin_loss(x, torch.ones(4, 5))  # reported once


def test_nothing_is_remembered_inside_cuda_graph_capture(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    case, call = _bad_call()
    out = _deferred.defer(case.spec, call, torch.tensor(0.5), torch.tensor(1))
    assert torch.isnan(out) and not _deferred._pending


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" or
                    not __import__("importlib").util.find_spec("triton"),
                    reason="needs Triton's interpreter (TRITON_INTERPRET=1)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_scale_kernel_in_place(dtype):
    from marginloss.backends import triton as triton_backend

    g0 = torch.randn(7, 5).to(dtype)
    for go, expected in ((torch.tensor(1.0), g0), (torch.tensor(2.5), g0.float() * 2.5),
                         (torch.arange(7.0), g0.float() * torch.arange(7.0)[:, None]),
                         (torch.full((7, 5), -0.5), g0.float() * -0.5)):
        g = g0.clone()
        ptr = g.data_ptr()
        out = triton_backend.scale_(g, go)
        assert out is g and g.data_ptr() == ptr and g.dtype == dtype  # in place, no temporary
        assert_close(g, expected.to(dtype))


def test_a_failing_kernel_falls_back_with_one_warning(monkeypatch):
    """backend="auto": the failed backend is disabled for that loss, with one warning that
    names the reason, and the call runs on the next one; an explicit backend raises."""
    if native.status() is not None:
        pytest.skip(f"native kernels unavailable: {native.status()}")
    case = CASES["multi_margin_loss"]
    (x,), y = case.make((6, 5), torch.float32)

    def broken(spec, call, check=False):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(native, "run", broken)
    monkeypatch.setattr(backends, "_disabled", {})
    with pytest.raises(RuntimeError, match="no kernel image"):
        case.ours(x, y, backend="native")
    with pytest.warns(RuntimeWarning, match="native kernel of multi_margin_loss failed.*"
                                            "no kernel image"):
        a = case.ours(x.clone().requires_grad_(), y)
    assert_close(a, case.ref(x, y))
    b = case.ours(x, y)  # no second warning: the choice is remembered
    assert_close(b, case.ref(x, y))
    call = case.spec.call((x,), y, {})
    assert backends.select("auto", case.spec, call).NAME == "torch"


def test_kernel_errors_about_the_call_are_not_masked(monkeypatch):
    if native.status() is not None:
        pytest.skip(f"native kernels unavailable: {native.status()}")
    case = CASES["soft_margin_loss"]
    (x,), y = case.make((3, 4), torch.float32)

    def oom(spec, call, check=False):
        raise MemoryError("scratch")

    monkeypatch.setattr(native, "run", oom)
    with pytest.raises(MemoryError):
        _ops.compute(case.spec, case.spec.call((x,), y, {}), True, "auto")
