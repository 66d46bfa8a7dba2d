r"""The torch backend: each loss and its input gradient in one pass of lean torch ops.

Runs on any device torch supports (it is the CPU path, and the CUDA path when Triton is not
available). Every function has the same contract, used by :mod:`marginloss._autograd`::

    compute(input, target, weight, *options, need_grad) -> (loss, grad)

``input`` and ``target`` arrive validated and shape-normalised by :mod:`marginloss.functional`
(2-D ``(N, C)`` for the three row-wise losses). ``loss`` is reduced (0-d) or per element / per
row for ``reduction="none"``, in ``out_dtype``; ``grad`` is ``d loss / d input`` for a unit
upstream gradient, with the reduction's scale folded in, in ``input``'s dtype and shape
(``None`` when ``need_grad`` is False).

How it stays fast and lean:

* Work is done in blocks of about ``_BLOCK`` elements (whole rows). Each block's temporaries
  live in two scratch buffers that are reused, so the only full-size allocation is the
  gradient itself (plus the elementwise loss for ``reduction="none"``), and the scratch stays
  in cache between the dozen cheap ops that make up the math.
* float16 / bfloat16 inputs are computed in float32 (float64 stays float64); results are
  cast once, on the write.
* Nothing the caller passed is written to.

The math of each loss is in its function's docstring; stability tricks are noted inline.
"""

from __future__ import annotations

import torch
from torch import Tensor

_BLOCK = 1 << 18  # elements per block: 1 MiB of float32 per scratch buffer


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the math runs in: float64 stays float64, everything else runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _blocks(n_rows: int, n_cols: int):
    """Yield ``(start, stop)`` row ranges of about ``_BLOCK`` elements each."""
    step = max(1, _BLOCK // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def _divide(total: Tensor, count: int) -> Tensor:
    """``total / count``, and nan for ``count == 0`` (the mean of nothing)."""
    return total / count if count else total.new_tensor(float("nan"))


def reduce_rows(rows: Tensor, reduction: str, out_dtype: torch.dtype) -> Tensor:
    """Per-row losses (N,) -> the requested reduction, in ``out_dtype`` (the mean of an empty
    batch is nan). ``torch.sum`` reduces in a fixed order: deterministic. Shared with the
    Triton launchers, which reduce their per-row buffers the same way."""
    if reduction == "none":
        return rows.to(out_dtype)
    total = rows.sum()
    if reduction == "mean":
        total = _divide(total, rows.numel())
    return total.to(out_dtype)


def _neg_tail_from_sigmoid(q: Tensor, out: Tensor) -> Tensor:
    r"""``out <- -c`` with :math:`c = \min(q, 1 - q)`, from ``q = sigmoid(±z)``; ``q`` is overwritten.

    :math:`c = \sigma(-|z|) \in (0, 1/2]` and the softplus tail is
    :math:`\log(1 + e^{-|z|}) = -\log(1 - c)`. ``-c = max(-q, q - 1)``, both terms exact. Accurate
    where ``q`` itself is small; where ``q`` is near 1 (and was rounded there) the tail is below
    float precision *relative to the linear part of the loss*, which is why soft margin may use
    the gradient's sigmoid here (its linear part :math:`-m` dominates exactly there).
    """
    torch.sub(q, 1, out=out)  # q - 1
    return torch.maximum(q.neg_(), out, out=out)


def _neg_tail(z: Tensor, out: Tensor) -> Tensor:
    r"""``out <- -\sigma(-|z|)``, accurate for every ``z`` (tiny tails included)."""
    return torch.abs(z, out=out).neg_().sigmoid_().neg_()


def _sum_log1p(t: Tensor, u64: Tensor | None) -> Tensor:
    r""":math:`\sum \log(1 + t)` for :math:`t \in [-1/2, 0)` (``t`` is overwritten); 0-d tensor.

    The sum of the softplus tails is all a reduced loss needs, and ``log1p`` is the costliest op
    of the logistic losses on CPU. So on CPU (``u64`` given) the sum is taken as the log of
    float64 products of 64 terms, :math:`\sum_i \log(1 + t_i) = \sum_g \log \prod_{i \in g}
    (1 + t_i)`: every factor lies in [1/2, 1), so no product underflows, and each rounds with
    relative error :math:`2^{-53}`, for an absolute error of about :math:`2.2 \cdot 10^{-16}` per
    term. Only when the tails are so small (mean below 1e-7, a very confident model) that this
    would show in the float32 result is the exact elementwise ``log1p`` used instead.
    """
    n = t.numel()
    if u64 is not None:
        u = u64[:n].copy_(t.reshape(-1)).add_(1.0)
        main = n - n % 64
        total = u[:main].view(-1, 64).prod(1).log_().sum() + u[main:].log_().sum()
        if -float(total) >= 1e-7 * n:
            return total
    return t.log1p_().sum()


# ----------------------------------------------------------------------------------------------


def soft_margin_loss(input: Tensor, target: Tensor, weight: None, reduction: str,
                     out_dtype: torch.dtype, *, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    r"""Logistic loss on ±1 labels, elementwise.

    With :math:`m = y x`:

    .. math::
        \ell = \log(1 + e^{-m}) = \max(-m, 0) + \log(1 + e^{-|m|}), \qquad
        \frac{\partial \ell}{\partial x} = -y\, \sigma(-m).

    The right-hand form never overflows (torch's ``log1p(exp(-m))`` is ``inf`` once
    :math:`-m > 88.7` in float32, and its gradient ``nan``). Per block: one product, one
    sigmoid (shared by gradient and loss), the tail's logarithm (:func:`_sum_log1p` for reduced
    losses) and a few cheap ops, all in cache.
    """
    acc = acc_dtype(input.dtype)
    if not target.is_floating_point():
        target = target.to(acc)
    x = input.reshape(-1)
    y = target.expand(input.shape).reshape(-1)
    n = x.numel()
    scale = 1.0 / n if (reduction == "mean" and n) else 1.0
    grad = torch.empty(n, dtype=input.dtype, device=input.device) if need_grad else None
    out = torch.empty(n, dtype=out_dtype, device=input.device) if reduction == "none" else None
    total = torch.zeros((), dtype=torch.float64, device=input.device)
    zero = torch.zeros((), dtype=acc, device=input.device)
    width = min(_BLOCK, n)
    m, q, t = (torch.empty(width, dtype=acc, device=input.device) for _ in range(3))
    u64 = _product_scratch(input, width, out is None)
    for s, e in _blocks(n, 1):
        ys, mb, qb, tb = y[s:e], m[: e - s], q[: e - s], t[: e - s]
        if x.dtype == acc:
            torch.mul(x[s:e], ys, out=mb)  # m = y x
        else:
            mb.copy_(x[s:e]).mul_(ys)  # m = y x, widened to the accumulation dtype
        torch.neg(mb, out=qb).sigmoid_()  # sigma(-m)
        if need_grad:
            torch.addcmul(zero, qb, ys, value=-scale, out=grad[s:e])  # -y sigma(-m) / n
        _neg_tail_from_sigmoid(qb, tb)  # -sigma(-|m|)
        mb.clamp_(max=0)  # min(m, 0) = -max(-m, 0)
        if out is not None:
            out[s:e].copy_(mb.add_(tb.log1p_()).neg_())
        else:
            total -= mb.sum() + _sum_log1p(tb, u64)
    if grad is not None:
        grad = grad.view(input.shape)
    if out is not None:
        return out.view(input.shape), grad
    if reduction == "mean":
        total = _divide(total, n)
    return total.to(out_dtype), grad


def _product_scratch(input: Tensor, width: int, reduced: bool) -> Tensor | None:
    """The float64 buffer of :func:`_sum_log1p`'s fast path: CPU, float32 math, reduced loss,
    blocks large enough (64Ki elements) for its few extra op calls to pay off."""
    if (reduced and width >= 1 << 16 and input.device.type == "cpu"
            and acc_dtype(input.dtype) == torch.float32):
        return torch.empty(width, dtype=torch.float64)
    return None


def multilabel_soft_margin_loss(input: Tensor, target: Tensor, weight: Tensor | None,
                                reduction: str, out_dtype: torch.dtype, *,
                                need_grad: bool) -> tuple[Tensor, Tensor | None]:
    r"""Per-class logistic loss on a 0/1 mask, averaged over the C classes of each row.

    .. math::
        \ell_n = \frac{1}{C} \sum_c w_{nc} \bigl(\operatorname{softplus}(x_{nc}) - y_{nc} x_{nc}
        \bigr), \qquad
        \frac{\partial \ell_n}{\partial x_{nc}} = \frac{w_{nc}}{C}\bigl(\sigma(x_{nc}) - y_{nc}\bigr),

    which equals torch's :math:`-[y \log\sigma(x) + (1-y)\log\sigma(-x)]`, with
    :math:`\operatorname{softplus}(x) = \max(x, 0) + \log(1 + e^{-|x|})`.
    ``input``, ``target`` and ``weight`` (if any) are ``(N, C)``; ``weight`` may be a
    stride-0 broadcast view in the accumulation dtype. An unweighted reduced loss needs only the
    total: :math:`\sum (\max(x, 0) - y x)` (summed per element, where it is exact; the two sums
    apart would cancel catastrophically) plus the tails' sum from :func:`_sum_log1p`.
    """
    acc = acc_dtype(input.dtype)
    n_rows, n_cols = input.shape
    scale = (1.0 / n_rows if (reduction == "mean" and n_rows) else 1.0) / max(n_cols, 1)
    grad = torch.empty_like(input) if need_grad else None
    by_row = reduction == "none" or weight is not None
    rows = torch.empty(n_rows, dtype=acc, device=input.device) if by_row else None
    total = torch.zeros((), dtype=torch.float64, device=input.device)
    width = min(_BLOCK // max(n_cols, 1), n_rows) if n_cols <= _BLOCK else 1
    a, q, t = (torch.empty(max(width, 1), n_cols, dtype=acc, device=input.device)
               for _ in range(3))
    u64 = _product_scratch(input, a.numel(), not by_row)
    for s, e in _blocks(n_rows, n_cols):
        xs, ys = input[s:e], target[s:e]
        if xs.dtype != acc:  # float16/bfloat16: widen the block once
            xs = xs.to(acc)
        if ys.dtype != acc:
            ys = ys.to(acc)
        ab, qb, tb = a[: e - s], q[: e - s], t[: e - s]
        if need_grad:
            torch.sigmoid(xs, out=qb)  # sigma(x)
            gs = grad[s:e]
            if weight is None and gs.dtype == acc:
                torch.sub(qb, ys, out=gs).mul_(scale)  # (sigma(x) - y) / C
            else:
                torch.sub(qb, ys, out=ab)
                if weight is not None:
                    ab.mul_(weight[s:e])
                torch.mul(ab, scale, out=gs)
        _neg_tail(xs, tb)  # -sigma(-|x|)
        torch.clamp(xs, min=0, out=ab).addcmul_(xs, ys, value=-1)  # max(x, 0) - y x, exact
        if not by_row:
            total += ab.sum() - _sum_log1p(tb, u64)
            continue
        ab.sub_(tb.log1p_())  # + log(1 + exp(-|x|))
        if weight is not None:
            ab.mul_(weight[s:e])
        torch.sum(ab, dim=1, out=rows[s:e])
    if by_row:
        rows /= max(n_cols, 1) if n_cols else float("nan")
        return reduce_rows(rows, reduction, out_dtype), grad
    total = _divide(total, n_cols)
    if reduction == "mean":
        total = _divide(total, n_rows)
    return total.to(out_dtype), grad


def multi_margin_loss(input: Tensor, target: Tensor, weight: Tensor | None, p: int,
                      margin: float, reduction: str, out_dtype: torch.dtype, *,
                      need_grad: bool) -> tuple[Tensor, Tensor | None]:
    r"""Multi-class hinge loss (Weston-Watkins / Crammer-Singer style, torch's definition).

    For row :math:`n` with target class :math:`y` and :math:`z_j = \text{margin} - x_y + x_j`:

    .. math::
        \ell_n = \frac{w_y}{C} \sum_{j \ne y} [z_j]_+^p, \qquad
        \frac{\partial \ell_n}{\partial x_j} = \frac{w_y}{C}\, p\, z_j^{p-1}\, [z_j > 0]
        \;(j \ne y), \qquad
        \frac{\partial \ell_n}{\partial x_y} = -\sum_{j \ne y} \frac{\partial \ell_n}{\partial x_j}.

    The weight is the target class's and multiplies after the power (as ATen does; older torch
    docs put it inside). The subgradient at :math:`z = 0` is 0 (strict ``z > 0``).
    """
    acc = acc_dtype(input.dtype)
    n_rows, n_cols = input.shape
    scale = (1.0 / n_rows if (reduction == "mean" and n_rows) else 1.0) / n_cols
    grad = torch.empty_like(input) if need_grad else None
    rows = torch.empty(n_rows, dtype=acc, device=input.device)
    w = weight.to(acc) if weight is not None else None
    width = max(1, min(_BLOCK // n_cols, n_rows))
    zbuf = torch.empty(width, n_cols, dtype=acc, device=input.device)
    for s, e in _blocks(n_rows, n_cols):
        ts = target[s:e].long().unsqueeze(1)  # (r, 1)
        z = zbuf[: e - s]
        z.copy_(input[s:e])
        shift = z.gather(1, ts) - margin  # x_y - margin
        z.sub_(shift)  # z_j = margin - x_y + x_j (same rounding as ATen)
        z.scatter_(1, ts, 0.0)  # the target class is not a competitor
        z.clamp_min_(0)  # [z]_+
        wy = w.gather(0, ts.squeeze(1)) if w is not None else None
        if p == 1:
            torch.sum(z, dim=1, out=rows[s:e])
        else:
            torch.linalg.vecdot(z, z, out=rows[s:e])
        if wy is not None:
            rows[s:e] *= wy
        if need_grad:
            gscale = torch.full((e - s, 1), scale * p, dtype=acc, device=input.device)
            if wy is not None:
                gscale *= wy.unsqueeze(1)
            if p == 1:
                z.sign_()  # [z > 0]
            z.mul_(gscale)  # p z^(p-1) [z > 0] w_y / C
            gs = grad[s:e]
            gs.copy_(z)
            gs.scatter_(1, ts, z.sum(dim=1, keepdim=True).neg_().to(gs.dtype))
    rows /= n_cols
    return reduce_rows(rows, reduction, out_dtype), grad


def multilabel_margin_loss(input: Tensor, target: Tensor, weight: None, reduction: str,
                           out_dtype: torch.dtype, *,
                           need_grad: bool) -> tuple[Tensor, Tensor | None]:
    r"""Multi-label hinge (ranking) loss over -1-padded class-index lists.

    Row :math:`n` lists its targets :math:`T` left to right up to the first negative entry
    (duplicates count once per occurrence); :math:`k` runs over the non-target classes:

    .. math::
        \ell_n = \frac{1}{C} \sum_{t \in T} \sum_{k \notin T} [1 - x_t + x_k]_+ .

    torch loops over all :math:`|T| \cdot C` pairs. Here the cost is :math:`O(C \log |T|)` per
    row: sort the target scores :math:`S_1 \le \dots \le S_K`; for each non-target :math:`k`,
    :math:`c_k = \#\{j : S_j < 1 + x_k\}` (a binary search) is the number of active pairs it is
    in, and :math:`d_j = \#\{k : c_k > j\}` the number target :math:`j` is in. Then

    .. math::
        C \ell_n = \sum_k c_k (1 + x_k) - \sum_j d_j S_j, \qquad
        C \frac{\partial \ell_n}{\partial x_k} = c_k, \qquad
        C \frac{\partial \ell_n}{\partial x_{t_j}} = -d_j .

    The two sums are accumulated in float64 so their difference keeps full precision.
    """
    dev = input.device
    n_rows, n_cols = input.shape
    scale = (1.0 / n_rows if (reduction == "mean" and n_rows) else 1.0) / n_cols
    grad = torch.empty_like(input) if need_grad else None
    rows = torch.zeros(n_rows, dtype=torch.float64, device=dev)
    cols = torch.arange(n_cols, device=dev)
    ubuf = torch.empty(min(n_rows, max(1, _BLOCK // n_cols)), n_cols, dtype=torch.float64,
                       device=dev)
    for s, e in _blocks(n_rows, n_cols):
        t = target[s:e]
        has_end, first = (t < 0).max(dim=1)  # the first -1 of each row (max returns the first)
        first = first.masked_fill_(~has_end, n_cols)  # list length per row
        k_max = int(first.max())
        if k_max == 0:
            if grad is not None:
                grad[s:e] = 0
            continue
        valid = cols[:k_max] < first.unsqueeze(1)  # (r, K): entry j belongs to the list
        # padding entries point at the row's first target (or class 0 in a row with none):
        # harmless below, where they are masked or where the row has no targets at all
        idx = torch.where(valid, t[:, :k_max], t[:, :1]).clamp_min_(0).long()
        xt = input[s:e].gather(1, idx).to(torch.float64)
        srt, order = xt.masked_fill_(~valid, float("inf")).sort(dim=1)  # padding sorts last
        upper = ubuf[: e - s].copy_(input[s:e]).add_(1.0)  # 1 + x_k, float64
        c = torch.searchsorted(srt, upper, side="left")  # #{j : S_j < 1 + x_k}
        c.scatter_(1, idx, 0)  # targets are not competitors
        hist = torch.zeros(e - s, k_max + 1, dtype=torch.int64, device=dev)
        hist.scatter_add_(1, c, torch.ones_like(c))
        d = hist[:, 1:].flip(1).cumsum(1).flip(1)  # d_j = #{k : c_k > j}
        cf = c.to(torch.float64)
        rows[s:e] = torch.linalg.vecdot(cf, upper) - torch.linalg.vecdot(
            d.to(torch.float64), srt.masked_fill(~valid.gather(1, order), 0))
        if grad is not None:
            gs = grad[s:e]
            gs.copy_(cf.mul_(scale))  # c_k / C for the non-targets, 0 for the targets
            gs.scatter_add_(1, idx.gather(1, order), d.to(gs.dtype).mul_(-scale))
    rows /= n_cols
    return reduce_rows(rows, reduction, out_dtype), grad
