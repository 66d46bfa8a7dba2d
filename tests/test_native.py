"""The native CPU kernels (csrc/logistic.c): accuracy, threads, label check, selection, build."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as TF
from helpers import REDUCTIONS, assert_close

import marginloss.functional as F
from marginloss import LabelError, _native
from marginloss._dispatch import BackendUnavailableError, select_backend

needs_native = pytest.mark.skipif(_native.unavailable() is not None,
                                  reason=f"native kernels unavailable: {_native.unavailable()}")


def _softplus64(t: torch.Tensor) -> torch.Tensor:
    t = t.double()
    return t.clamp_min(0) + torch.log1p(torch.exp(-t.abs()))


def _pm1(shape):
    return (torch.randint(0, 2, shape) * 2 - 1).float()


@needs_native
@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 5), (17, 33), (2, 3, 4, 5), (4, 1031)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_soft_margin_native_matches_torch(shape, reduction):
    x, y = torch.randn(shape) * 3, _pm1(shape)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a = F.soft_margin_loss(xa, y, reduction=reduction, backend="native")
    b = TF.soft_margin_loss(xb, y, reduction=reduction)
    g = torch.rand(b.shape) + 0.5  # an upstream gradient != 1
    a.backward(g)
    b.backward(g)
    assert a.dtype == b.dtype == torch.float32
    assert_close(a, b)
    assert_close(xa.grad, xb.grad)


@needs_native
@pytest.mark.parametrize("N, C", [(1, 1), (3, 7), (17, 33), (5, 600), (2, 1500)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, "class", "full"])
def test_multilabel_soft_margin_native_matches_torch(N, C, reduction, weight):
    x = torch.randn(N, C) * 3
    y = torch.rand(N, C).round_()
    y[0, 0] = 0.25  # a soft label
    w = {None: None, "class": torch.rand(C) + 0.5, "full": torch.rand(N, C) + 0.5}[weight]
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a = F.multilabel_soft_margin_loss(xa, y, weight=w, reduction=reduction, backend="native")
    b = TF.multilabel_soft_margin_loss(xb, y, weight=w, reduction=reduction)
    g = torch.rand(b.shape) + 0.5
    a.backward(g)
    b.backward(g)
    assert_close(a, b)
    assert_close(xa.grad, xb.grad)


@needs_native
def test_elementwise_accuracy_over_the_whole_range():
    """Loss and gradient within 5 float32 ulps (2^-23 each) of float64 math, from -1e4 to 1e4
    (tiny tails, denormal results and the kinks of the range reduction included)."""
    m = torch.cat([torch.linspace(-110, 110, 200_001), torch.tensor([-1e4, -1e3, 1e3, 1e4]),
                   torch.logspace(-8, 0, 1000), -torch.logspace(-8, 0, 1000)])
    y = torch.ones_like(m)
    x = m.clone().requires_grad_()
    loss = F.soft_margin_loss(x, y, reduction="none", backend="native")
    loss.sum().backward()
    md = m.double()
    ref_loss, ref_grad = _softplus64(-md), -torch.sigmoid(-md)
    tiny = torch.finfo(torch.float32).tiny
    normal = ref_loss > tiny  # below the normal range only absolute accuracy is meaningful
    rel = ((loss.double() - ref_loss).abs() / ref_loss)[normal]
    assert rel.max() < 6e-7, float(rel.max())
    assert (loss.double() - ref_loss).abs()[~normal].max() < 2 * tiny
    normal_g = ref_grad.abs() > tiny
    rel_g = ((x.grad.double() - ref_grad).abs() / ref_grad.abs())[normal_g]
    assert rel_g.max() < 6e-7, float(rel_g.max())
    # multilabel soft margin: the same pieces with sigmoid(x) - y
    xs = m.reshape(1, -1).clone().requires_grad_()
    t = torch.zeros_like(xs)
    F.multilabel_soft_margin_loss(xs, t, reduction="sum", backend="native").backward()
    ref = torch.sigmoid(md) / m.numel()
    ok = ref > tiny
    assert ((xs.grad[0].double() - ref).abs() / ref)[ok].max() < 6e-7


@needs_native
def test_nan_and_inf_scores_propagate_like_the_formula():
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0], requires_grad=True)
    y = torch.tensor([1.0, 1.0, 1.0, -1.0])
    loss = F.soft_margin_loss(x, y, reduction="none", backend="native")
    loss.sum().backward()
    assert torch.isnan(loss[0]) and torch.isnan(x.grad[0])
    assert loss[1] == 0 and x.grad[1] == 0  # correct and infinitely confident
    assert loss[2] == float("inf") and x.grad[2] == -1
    assert torch.isfinite(loss[3])


@needs_native
@pytest.mark.parametrize("loss", ["soft_margin", "multilabel_soft_margin"])
def test_threads_split_rows_without_changing_results(loss):
    """Large calls run on several threads; the result does not depend on how many (up to the
    order of a few float64 additions), and repeated calls are bitwise identical."""
    N, C = 96, 4099  # several ranges of >= 2^16 elements, boundaries off the row length
    x = torch.randn(N, C) * 4
    y = _pm1((N, C)) if loss == "soft_margin" else torch.rand(N, C).round_()
    fn = getattr(F, f"{loss}_loss")
    saved = torch.get_num_threads()
    results = {}
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            for reduction in REDUCTIONS:
                xa = x.clone().requires_grad_()
                out = fn(xa, y, reduction=reduction, backend="native")
                out.sum().backward()
                again = fn(x, y, reduction=reduction, backend="native")
                assert torch.equal(out.detach(), again)
                results[threads, reduction] = (out.detach(), xa.grad)
    finally:
        torch.set_num_threads(saved)
    for (_, reduction), (out, grad) in results.items():
        ref_out, ref_grad = results[1, reduction]
        torch.testing.assert_close(out, ref_out, rtol=1e-6, atol=0)
        assert torch.equal(grad, ref_grad)  # elementwise: no summation involved
        ref = getattr(TF, f"{loss}_loss")(x, y, reduction=reduction)
        assert_close(out, ref)


@needs_native
@pytest.mark.parametrize("case", ["zero_one", "nan", "soft"])
def test_fused_label_check_raises_the_same_error_as_the_torch_path(case):
    x = torch.randn(300, 700)
    y = _pm1(x.shape)
    if case == "zero_one":
        y = (y + 1) / 2
    elif case == "nan":
        y[123, 456] = float("nan")
    else:
        y[-1, -1] = 0.5
    with pytest.raises(LabelError) as ours:
        F.soft_margin_loss(x.clone().requires_grad_(), y, backend="native")
    with pytest.raises(LabelError) as torch_path:
        F.soft_margin_loss(x, y, backend="torch")
    assert str(ours.value) == str(torch_path.value)
    # validate=False: no check, the formula's value (finite for these labels)
    if case != "nan":
        out = F.soft_margin_loss(x, y, validate=False, backend="native")
        assert_close(out, TF.soft_margin_loss(x, y))


@needs_native
@pytest.mark.parametrize("bad", [-1.0, 2.0, float("nan")])
def test_multilabel_fused_label_check(bad):
    x = torch.randn(64, 2000)
    y = torch.rand(64, 2000).round_()
    y[40, 1999] = bad
    with pytest.raises(LabelError) as ours:
        F.multilabel_soft_margin_loss(x, y, backend="native")
    with pytest.raises(LabelError) as torch_path:
        F.multilabel_soft_margin_loss(x, y, backend="torch")
    assert str(ours.value) == str(torch_path.value)
    if bad == bad:
        out = F.multilabel_soft_margin_loss(x, y, validate=False, backend="native")
        assert_close(out, TF.multilabel_soft_margin_loss(x, y))


@needs_native
def test_integer_targets_are_checked_with_their_own_dtype_hints():
    """An integer target is converted for the kernel; its label error still speaks of indices."""
    x = torch.randn(2, 4)
    padded = torch.tensor([[3, 0, -1, -1], [1, -1, -1, -1]])
    with pytest.raises(LabelError, match="padded_to_multi_hot"):
        F.multilabel_soft_margin_loss(x, padded)
    mask = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]])
    assert_close(F.multilabel_soft_margin_loss(x, mask, backend="native"),
                 TF.multilabel_soft_margin_loss(x, mask.float()))


@needs_native
def test_inputs_are_not_modified_and_empty_batches():
    x, y = torch.randn(5, 9), _pm1((5, 9))
    x0, y0, v = x.clone(), y.clone(), (x._version, y._version)
    F.soft_margin_loss(x.requires_grad_(), y, backend="native").backward()
    F.multilabel_soft_margin_loss(x, (y + 1) / 2, backend="native").backward()
    assert torch.equal(x.detach(), x0) and torch.equal(y, y0) and (x._version, y._version) == v
    e = torch.empty(0, 9)
    assert torch.isnan(F.soft_margin_loss(e, e, backend="native"))
    assert F.soft_margin_loss(e, e, reduction="sum", backend="native") == 0
    assert F.multilabel_soft_margin_loss(e, e, reduction="none", backend="native").shape == (0,)
    assert torch.isnan(F.multilabel_soft_margin_loss(e, e, backend="native"))


@needs_native
def test_auto_picks_native_only_where_it_applies():
    x, y = torch.randn(4, 6), _pm1((4, 6))
    assert select_backend("auto", x, "soft_margin_loss", y)[0] == "native"
    assert select_backend("auto", x, "multilabel_soft_margin_loss", y)[0] == "native"
    for args, why in [
        ((x.double(), "soft_margin_loss", y.double()), "float32 input"),
        ((x.t(), "soft_margin_loss", y.t()), "contiguous"),
        ((x, "soft_margin_loss", y[0]), "broadcast"),
        ((x, "soft_margin_loss", y.double()), "float32 target"),
    ]:
        name, reason = select_backend("auto", *args)
        assert name == "torch" and why in reason, (name, reason)
        with pytest.raises(BackendUnavailableError, match=why):
            select_backend("native", *args)
    assert select_backend("auto", x, "multi_margin_loss")[0] == "torch"
    with pytest.raises(BackendUnavailableError, match="no native kernel for multi_margin_loss"):
        F.multi_margin_loss(x, torch.tensor([0, 1, 2, 3]), backend="native")
    # the module takes the keyword too
    from marginloss import SoftMarginLoss
    assert_close(SoftMarginLoss(backend="native")(x, y), TF.soft_margin_loss(x, y))


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


def test_disabled_or_without_compiler_auto_falls_back_and_native_says_why(tmp_path):
    code = """
        import torch, marginloss.functional as F
        from marginloss._dispatch import select_backend
        x, y = torch.randn(3, 4), torch.ones(3, 4)
        print(select_backend("auto", x, "soft_margin_loss", y)[0])
        F.soft_margin_loss(x, y)
        try:
            F.soft_margin_loss(x, y, backend="native")
        except RuntimeError as e:
            print(e)
    """
    for env, why in [({"MARGINLOSS_NATIVE": "0"}, "MARGINLOSS_NATIVE=0"),
                     ({"CC": "no-such-compiler-xyz"}, "no C compiler")]:
        done = _python(code, MARGINLOSS_CACHE_DIR=str(tmp_path / "c"), **env)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == "torch" and why in lines[1], done.stdout
    assert not (tmp_path / "c").exists()  # nothing was built


@needs_native
def test_built_once_into_the_cache_then_loaded(tmp_path):
    """Importing builds nothing; the first call builds one library; the next process loads it."""
    code = """
        import os, sys, torch, marginloss, marginloss.functional as F
        cache = os.environ["MARGINLOSS_CACHE_DIR"]
        assert not os.path.exists(cache), "import must not build"
        F.multi_margin_loss(torch.randn(2, 3), torch.tensor([0, 1]))  # no native kernel: no build
        assert not os.path.exists(cache)
        F.soft_margin_loss(torch.randn(3), torch.ones(3))
        print(sorted(os.listdir(cache)))
    """
    env = {"MARGINLOSS_CACHE_DIR": str(tmp_path / "cache")}
    first = _python(code, **env)
    assert first.returncode == 0, first.stderr
    (lib,) = (tmp_path / "cache").iterdir()
    assert lib.suffix == ".so"
    stamp = lib.stat().st_mtime_ns
    code2 = code.replace("assert not os.path.exists(cache)", "pass  #")
    second = _python(code2, **env)
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout and lib.stat().st_mtime_ns == stamp


@needs_native
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_runs_serially_instead_of_hanging():
    """libgomp's threads do not survive fork (torch's own ops hang in such a child); the
    kernels notice the fork and run on one thread there."""
    code = """
        import os, torch, marginloss.functional as F
        x, y = torch.randn(1024, 512), torch.ones(1024, 512)
        parent = F.soft_margin_loss(x, y).item()  # the parent's OpenMP team starts
        pid = os.fork()
        if pid == 0:
            ok = F.soft_margin_loss(x, y).item() == parent
            F.multilabel_soft_margin_loss(x, y).item()
            os._exit(0 if ok else 3)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """
    done = _python(code)
    assert done.returncode == 0 and done.stdout.strip() == "0", (done.stdout, done.stderr)
