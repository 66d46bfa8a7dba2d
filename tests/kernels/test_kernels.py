"""Triton kernels vs the torch backend and torch.nn.functional: values, gradients, edge cases.

Every test runs twice: on CPU tensors under Triton's interpreter (marker ``interpret``; needs
``TRITON_INTERPRET=1``, which tests/conftest.py sets when there is no GPU) and on CUDA (marker
``gpu``; skipped without a GPU). Shapes are small because the interpreter is slow; chunking over
classes is exercised by shrinking the kernels' block sizes with ``monkeypatch``.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as TF
from helpers import REDUCTIONS, assert_close, make_inputs

pytest.importorskip("triton")

import marginloss.functional as F  # noqa: E402
from marginloss import BackendUnavailableError  # noqa: E402
from marginloss.kernels import multi_margin, multilabel_margin, soft_margin  # noqa: E402

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

LOSSES = {
    "soft_margin": F.soft_margin_loss,
    "multilabel_soft_margin": F.multilabel_soft_margin_loss,
    "multi_margin": F.multi_margin_loss,
    "multilabel_margin": F.multilabel_margin_loss,
}


def oracle(loss: str, x, target, **kw):
    """torch.nn.functional on float64 (the kernels' float32 math is compared against it)."""
    x = x.double()
    if loss == "soft_margin":
        return TF.soft_margin_loss(x, target.double(), **kw)
    if loss == "multilabel_soft_margin":
        w = kw.pop("weight", None)
        return TF.multilabel_soft_margin_loss(
            x, target.double(), weight=None if w is None else w.double(), **kw)
    if loss == "multi_margin":
        w = kw.pop("weight", None)
        return TF.multi_margin_loss(x, target.long(), weight=None if w is None else w.double(),
                                    **kw)
    return TF.multilabel_margin_loss(x, target.long(), **kw)


def loss_and_grad(fn, x, *args, upstream=None, **kwargs):
    """``fn``'s loss and input gradient; ``upstream`` is the gradient fed back (default 1)."""
    x = x.detach().clone().requires_grad_()
    out = fn(x, *args, **kwargs)
    g = torch.ones_like(out) if upstream is None else upstream.to(out.device, out.dtype)
    out.backward(g)
    return out.detach(), x.grad


def check(loss, x, target, *, device, **kwargs):
    """Triton == torch backend (same dtype) and == torch.nn.functional in float64, for a random
    upstream gradient and for exactly 1 (the path that returns the stored gradient)."""
    x, target = x.to(device), target.to(device)
    if kwargs.get("weight") is not None:
        kwargs["weight"] = kwargs["weight"].to(device)
    fn = LOSSES[loss]
    ref_out = oracle(loss, x, target, **dict(kwargs))
    for upstream in (torch.rand(ref_out.shape, dtype=torch.float64) + 0.5, None):
        out, grad = loss_and_grad(fn, x, target, backend="triton", upstream=upstream, **kwargs)
        out_t, grad_t = loss_and_grad(fn, x, target, backend="torch", upstream=upstream, **kwargs)
        ref, ref_grad = loss_and_grad(lambda a, *r, **k: oracle(loss, a, *r, **k), x, target,
                                      upstream=upstream, **dict(kwargs))
        assert out.dtype == out_t.dtype and grad.dtype == x.dtype
        assert_close(out, out_t)
        assert_close(grad, grad_t)
        assert_close(out, ref.to(out.dtype))
        assert_close(grad, ref_grad.to(grad.dtype))


# ----------------------------------------------------------------------------------------------
# each loss, every option


@device_param
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_soft_margin(device, dtype, reduction):
    x, y = make_inputs("soft_margin", 6, 37, dtype)
    check("soft_margin", x, y, device=device, reduction=reduction)
    check("soft_margin", x, y[0], device=device, reduction=reduction)  # broadcast target


@device_param
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_multilabel_soft_margin(device, dtype, reduction, weighted):
    x, y = make_inputs("multilabel_soft_margin", 6, 37, dtype)
    w = torch.rand(37, dtype=dtype) + 0.5 if weighted else None
    check("multilabel_soft_margin", x, y, device=device, reduction=reduction, weight=w)


@device_param
def test_multilabel_soft_margin_soft_labels_and_row_weight(device):
    x = torch.randn(2, 3, 9)
    y = torch.rand(2, 3, 9)  # soft labels, 3-D input
    for w in (torch.rand(3, 1) + 0.5, torch.rand(2, 3, 9)):  # per-row and full weights
        check("multilabel_soft_margin", x, y, device=device, weight=w, reduction="none")


@device_param
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p, margin, weighted, tdtype", [
    (1, 1.0, False, torch.int64), (1, 0.5, True, torch.int32),
    (2, 1.0, True, torch.int64), (2, -0.25, False, torch.int32),
])
def test_multi_margin(device, dtype, reduction, p, margin, weighted, tdtype):
    x, y = make_inputs("multi_margin", 6, 37, dtype, margin=margin)
    w = torch.rand(37, dtype=dtype) + 0.5 if weighted else None
    check("multi_margin", x, y.to(tdtype), device=device, p=p, margin=margin, weight=w,
          reduction=reduction)


@device_param
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("tdtype", [torch.int64, torch.int32])
def test_multilabel_margin(device, dtype, reduction, tdtype):
    x, y = make_inputs("multilabel_margin", 6, 37, dtype)  # 0 to 12 targets per row
    check("multilabel_margin", x, y.to(tdtype), device=device, reduction=reduction)


@device_param
def test_multilabel_margin_lists(device):
    """Duplicates, rows of only targets, empty lists, entries after the first -1, and more
    targets than one BLOCK_K tile (the extra-tile sweeps)."""
    C = 40
    x, _ = make_inputs("multilabel_margin", 5, C, torch.float32)
    y = torch.full((5, C), -1, dtype=torch.long)
    y[0, :4] = torch.tensor([3, 3, 7, 3])  # duplicates
    y[1] = torch.randperm(C)  # every class a target: loss 0
    y[2, 1:] = 5  # empty list; entries after the -1 are ignored
    y[3, :35] = torch.randperm(C)[:35]  # 35 targets: three list tiles of 16
    y[3, 20] = y[3, 2]  # ... with a duplicate across tiles
    y[4, :17] = torch.randperm(C)[:17]  # one past the first tile
    assert multilabel_margin.BLOCK_K < 17
    # make_inputs' grid keeps hinge arguments away from 0 only for its own targets: re-grid
    x = (torch.randn(5, C) * 24).round() / 16 + torch.where(
        torch.zeros(5, C, dtype=torch.bool).scatter_(1, y.clamp_min(0), y >= 0), 1 / 32, 0.0)
    for reduction in REDUCTIONS:
        check("multilabel_margin", x, y, device=device, reduction=reduction)


# ----------------------------------------------------------------------------------------------
# shapes: C = 1, chunked rows, non-contiguous inputs, empty batches


@device_param
def test_one_class(device):
    for reduction in REDUCTIONS:
        x, y = make_inputs("multilabel_soft_margin", 5, 1, torch.float32)
        check("multilabel_soft_margin", x, y, device=device, reduction=reduction)
        x, y = make_inputs("multi_margin", 5, 1, torch.float32)
        check("multi_margin", x, y, device=device, reduction=reduction)
        x, y = make_inputs("multilabel_margin", 5, 1, torch.float32)
        check("multilabel_margin", x, y, device=device, reduction=reduction)
        x, y = make_inputs("soft_margin", None, 1, torch.float32)
        check("soft_margin", x, y, device=device, reduction=reduction)


@device_param
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_longer_than_a_block(device, dtype, monkeypatch):
    """C = 2 * BLOCK + 3 with small blocks, so every row kernel loops over three chunks."""
    monkeypatch.setattr(soft_margin, "MAX_BLOCK_C", 16)
    monkeypatch.setattr(multi_margin, "MAX_BLOCK_C", 16)
    monkeypatch.setattr(multilabel_margin, "MAX_BLOCK_C", 16)
    monkeypatch.setattr(soft_margin, "BLOCK", 16)
    C = 2 * 16 + 3
    x, y = make_inputs("soft_margin", 3, C, dtype)
    check("soft_margin", x, y, device=device, reduction="sum")
    x, y = make_inputs("multilabel_soft_margin", 3, C, dtype)
    check("multilabel_soft_margin", x, y, device=device, weight=torch.rand(C) + 0.5)
    x, y = make_inputs("multi_margin", 3, C, dtype)
    check("multi_margin", x, y, device=device, p=2, reduction="none")
    x, y = make_inputs("multilabel_margin", 3, C, dtype, n_targets=20)
    check("multilabel_margin", x, y, device=device, reduction="none")


@device_param
def test_rows_longer_than_the_default_block(device):
    """The shipped block sizes: C = 2 * MAX_BLOCK_C + 3 (one small batch per loss)."""
    C = 2 * soft_margin.MAX_BLOCK_C + 3
    x, y = make_inputs("multilabel_soft_margin", 2, C, torch.float32)
    check("multilabel_soft_margin", x, y, device=device)
    x, y = make_inputs("soft_margin", 2, C, torch.float32)  # 2 * C > 2 * BLOCK
    check("soft_margin", x, y, device=device)
    C = 2 * multi_margin.MAX_BLOCK_C + 3
    x, y = make_inputs("multi_margin", 2, C, torch.float32)
    check("multi_margin", x, y, device=device)
    C = 2 * multilabel_margin.MAX_BLOCK_C + 3
    x, y = make_inputs("multilabel_margin", 2, C, torch.float32, n_targets=5)
    check("multilabel_margin", x, y, device=device)


@device_param
def test_non_contiguous_inputs(device):
    C = 11
    for loss in LOSSES:
        x, y = make_inputs(loss, 4, C, torch.float32)
        wide = torch.zeros(4, 2 * C)
        wide[:, 3:3 + C] = x
        strided = wide[:, 3:3 + C]  # row stride 2C
        assert not strided.is_contiguous()
        check(loss, strided, y, device=device, reduction="none")
        transposed = x.t().contiguous().t()  # class stride N
        check(loss, transposed, y, device=device, reduction="sum")


@device_param
@pytest.mark.parametrize("loss", list(LOSSES))
def test_empty_batch(device, loss):
    x, y = make_inputs(loss, 3, 5, torch.float32)
    x, y = x[:0].to(device), y[:0].to(device)
    for reduction, expect in (("mean", float("nan")), ("sum", 0.0)):
        out, grad = loss_and_grad(LOSSES[loss], x, y, reduction=reduction, backend="triton")
        assert out.shape == () and grad.shape == x.shape
        torch.testing.assert_close(out.cpu(), torch.tensor(expect), equal_nan=True)
    out = LOSSES[loss](x, y, reduction="none", backend="triton")
    assert out.shape == (0, 5) if loss == "soft_margin" else out.shape == (0,)


# ----------------------------------------------------------------------------------------------
# numerics: the kink rule, stability, determinism, forward-only calls


@device_param
def test_hinge_kink_gradient_is_zero(device):
    x = torch.tensor([[1.0, 0.0, 0.5]], device=device)  # z = 1 - 1 + 0 = 0 for class 1
    _, g = loss_and_grad(F.multi_margin_loss, x, torch.tensor([0], device=device),
                         backend="triton", reduction="sum")
    assert g[0, 1] == 0 and g[0, 2] > 0
    _, g = loss_and_grad(F.multilabel_margin_loss, x, torch.tensor([[0, -1, -1]], device=device),
                         backend="triton", reduction="sum")
    assert g[0, 1] == 0 and g[0, 2] > 0


@device_param
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_soft_margin_is_stable(device, dtype):
    x = torch.tensor([-100.0, -30.0, 20.0, 60000.0], dtype=dtype, device=device)
    y = torch.ones(4, dtype=dtype, device=device)
    out, grad = loss_and_grad(F.soft_margin_loss, x, y, reduction="none", backend="triton")
    ref = TF.soft_margin_loss(x.double(), y.double(), reduction="none")
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    # relative, also at exp(-20) = 2e-9 (log1p accuracy; that one rounds to 0 in float16)
    torch.testing.assert_close(out, ref.to(dtype), rtol=2e-3 if dtype == torch.float16 else 2e-6,
                               atol=0)
    assert grad[0] == -1 and grad[3] == 0


@device_param
def test_deterministic(device, monkeypatch):
    monkeypatch.setattr(soft_margin, "BLOCK", 64)
    for loss in LOSSES:
        x, y = make_inputs(loss, 9, 70, torch.float32)
        runs = [loss_and_grad(LOSSES[loss], x.to(device), y.to(device), backend="triton",
                              reduction="sum") for _ in range(2)]
        assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@device_param
@pytest.mark.parametrize("loss", list(LOSSES))
def test_forward_only(device, loss):
    x, y = make_inputs(loss, 4, 9, torch.bfloat16)
    x, y = x.to(device), y.to(device)
    for reduction in REDUCTIONS:
        with torch.no_grad():
            out = LOSSES[loss](x, y, reduction=reduction, backend="triton")
        assert_close(out, LOSSES[loss](x, y, reduction=reduction, backend="torch"))


@device_param
def test_float64_is_refused(device):
    x, y = make_inputs("soft_margin", 2, 3, torch.float64)
    with pytest.raises(BackendUnavailableError, match="float64"):
        F.soft_margin_loss(x.to(device), y.to(device), backend="triton")
