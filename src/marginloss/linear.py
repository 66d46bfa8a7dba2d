r"""Fused linear heads: a margin-family loss of ``input @ linear_weight.T + linear_bias`` that
never holds the ``(N, C)`` logits or their gradient.

For inputs :math:`h \in \mathbb{R}^{N \times H}`, a linear layer :math:`W \in \mathbb{R}^{C
\times H}`, :math:`b \in \mathbb{R}^C` and the logits :math:`X = h W^\top + b`, a head returns
the loss :math:`L(X)` and, from the loss's gradient :math:`D = \partial L / \partial X`,

.. math::
    \frac{\partial L}{\partial h} = D W, \qquad
    \frac{\partial L}{\partial W} = D^\top h, \qquad
    \frac{\partial L}{\partial b} = \mathbf{1}^\top D .

The classes are cut into chunks :math:`c` of :math:`C_c` columns (and the rows into blocks when
a chunk of all rows would be too large). Per chunk: one matmul gives the chunk's logits
:math:`X_c = h W_c^\top + b_c`, the loss's own fused pass (:func:`marginloss._ops.compute`, on
the backend the plain loss would use: native C on CPU, Triton on CUDA) gives its loss terms and
:math:`D_c`, and two matmuls add :math:`D_c W_c` to :math:`\partial L / \partial h` and write
:math:`D_c^\top h` into rows :math:`c` of :math:`\partial L / \partial W`, in a fixed order
(deterministic). Memory: a few chunk-sized buffers, never :math:`N \times C`.

What each loss needs from outside the chunk, computed first (a gather of the target rows of
:math:`W`, :math:`O(N \cdot K \cdot H)`), so that every chunk is independent:

* ``multilabel_soft_margin_loss`` is per element: a chunk's terms are
  :math:`\frac{w_c}{C}(\operatorname{softplus}(x) - y x)`; the chunk pass divides by
  :math:`C_c`, so its terms are scaled by :math:`C_c / C`. Its own options stay per element
  too: with ``pos_weight`` :math:`p` and ``label_smoothing`` :math:`\varepsilon` (smoothed
  label :math:`t = y (1 - \varepsilon) + \varepsilon / 2`) a term is :math:`\frac{w_c}{C}
  (p_c\, t \operatorname{softplus}(-x) + (1 - t) \operatorname{softplus}(x))`, so each chunk's
  pass gets :math:`p_{c_0:c_1}` (sliced as the class weight is) and :math:`\varepsilon`.
* ``multi_margin_loss`` needs the target's score :math:`x_y = h \cdot W_y + b_y` per row. Each
  chunk runs the plain kernel on :math:`[x_y \mid X_c]` (one extra column, the target, in
  front) with the real target column masked to :math:`-\infty` (no term, no gradient); the
  extra column's gradient is the chunk's share of :math:`\partial \ell / \partial x_y`, summed
  over the chunks. :math:`w_y` and the :math:`(C_c + 1) / C` scale are applied per row.
* ``multilabel_margin_loss`` needs the target scores :math:`S_j = h \cdot W_{t_j} + b_{t_j}`.
  Each chunk runs the plain kernel on :math:`[S \mid X_c]` with the row's list pointing at the
  :math:`K` columns in front and the chunk's own target columns masked to :math:`-\infty`: the
  kernel's counts :math:`c_k` are then those of the chunk's non-targets against all targets, and
  its per-target counts :math:`d_j` add up over the chunks.

The loss's per-row values are summed over chunks in float64. The corrections for the target
columns (the gradient of :math:`x_y` or :math:`S_j`) go to :math:`\partial L / \partial h` through
the gathered rows and to the rows of :math:`\partial L / \partial W` with ``index_add_`` on the CPU
and ``index_put_(accumulate=True)`` on CUDA (both deterministic).

Autograd: for ``"mean"`` and ``"sum"`` the gradients are computed in the forward pass and
backward scales them by the upstream gradient (handed over as they are when it is 1, scaled in
place otherwise; a second backward recomputes them). For ``"none"`` the upstream gradient is
per row and :math:`\partial L / \partial W` depends on it, so forward computes the loss only
and backward runs the chunked pass again with the upstream gradient folded in (as torch's
``linear_cross_entropy`` does). Each head is a registered operator,
``torch.ops.marginloss.linear_<loss>``, so ``torch.compile(fullgraph=True)`` traces it whole;
eager calls go through a lean :class:`torch.autograd.Function` around the same implementation.
Differentiable once; ``torch.func`` transforms are not supported.

Label checks run as for the plain losses: on the CPU, in the kernel's pass (soft margin) or once
up front (the hinge losses, reading the target as the plain check does); on CUDA a count on the
device, reported later without a host synchronisation (:mod:`marginloss._deferred`).
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import torch
from torch import Tensor

from marginloss import _checks, _deferred, _ops, _pipeline, _reduction, losses
from marginloss.errors import DtypeError, ShapeError
from marginloss.losses._spec import Call, LossSpec

__all__ = ["HEADS", "run"]

#: Elements of one chunk's logits when ``chunk_size`` is None, on the CPU (16 MiB of float32:
#: wide enough for full-speed matmuls, small next to the unfused logits).
BUDGET = 1 << 22
#: The same on a GPU, where each chunk also costs a few kernel launches and some Python.
BUDGET_GPU = 1 << 25
#: Fewest classes per chunk the default picks (a narrower matmul wastes the machine).
MIN_CHUNK = 128
#: Rows per block: ``BLOCK_ROWS_FACTOR * BUDGET // chunk`` (the batch is cut only when large).
BLOCK_ROWS_FACTOR = 4


class Head(NamedTuple):
    """One fused head: its public name and the loss it computes."""

    name: str  # "linear_multi_margin_loss"
    spec: LossSpec

    @property
    def loss(self) -> str:
        return self.spec.name


HEADS: dict[str, Head] = {
    h.loss: h for h in (
        Head("linear_multilabel_soft_margin_loss", losses.multilabel_soft_margin_loss.SPEC),
        Head("linear_multi_margin_loss", losses.multi_margin_loss.SPEC),
        Head("linear_multilabel_margin_loss", losses.multilabel_margin_loss.SPEC),
    )
}

_MSM, _MM, _MLM = "multilabel_soft_margin_loss", "multi_margin_loss", "multilabel_margin_loss"


# ----------------------------------------------------------------------------------------------
# checks and canonical views (metadata only)


class Canon(NamedTuple):
    """A head call in canonical form: 2-D input, the loss's canonical target and weight."""

    input: Tensor  # (N, H)
    linear_weight: Tensor  # (C, H)
    linear_bias: Tensor | None  # (C,)
    target: Tensor  # msm: (N, C) mask (maybe a broadcast view); mm: (N,); mlm: (N, K) lists
    weight: Tensor | None  # msm: (C,) or (N, C); mm: (C,)
    options: tuple  # mm: (p, margin); else ()
    none_shape: tuple[int, ...]
    extras: tuple = ()  # msm: (pos_weight (C,) or None, label_smoothing); () at the defaults


def _logits_stub(x: Tensor, n_classes: int, dtype: torch.dtype | None = None) -> Tensor:
    """A stride-0 ``(N, C)`` stand-in for the logits (no memory): what the plain loss's checks
    read (shape, dtype, device) without the logits existing."""
    return torch.empty((), dtype=dtype or x.dtype, device=x.device).expand(x.shape[0], n_classes)


def canonical(head: Head, input: Tensor, linear_weight: Tensor, target: Tensor,
              linear_bias: Tensor | None, weight: Tensor | None, options: tuple,
              extras: tuple = ()) -> Canon:
    """Check a head call's arguments (metadata only) and view them canonically. ``extras``:
    the values of the loss's own options (``spec.extras``: soft margin's ``pos_weight`` and
    ``label_smoothing``), checked by the plain loss's ``prepare_extras`` (its errors, as
    they are) and kept only when one differs from its default."""
    fn = head.name
    _checks.check_input(fn, input)
    _checks.check_input(fn, linear_weight, "linear_weight")
    if input.dim() not in (1, 2):
        raise ShapeError(f"{fn}: `input` must have shape (H,) or (N, H), got "
                         f"{_checks.shape_str(input)}.")
    if linear_weight.dim() != 2:
        raise ShapeError(f"{fn}: `linear_weight` must have shape (C, H) (as nn.Linear's weight), "
                         f"got {_checks.shape_str(linear_weight)}.")
    n_classes, hidden = linear_weight.shape
    if input.shape[-1] != hidden:
        raise ShapeError(f"{fn}: `input` has {input.shape[-1]} features but `linear_weight` of "
                         f"shape {_checks.shape_str(linear_weight)} takes {hidden}.")
    if linear_weight.dtype != input.dtype:
        raise DtypeError(f"{fn}: `linear_weight` is {linear_weight.dtype} but `input` is "
                         f"{input.dtype}; convert one of them (as for nn.Linear).")
    _checks.check_same_device(fn, "linear_weight", linear_weight, input)
    if linear_bias is not None:
        _checks.check_input(fn, linear_bias, "linear_bias")
        _checks.check_same_device(fn, "linear_bias", linear_bias, input)
        if tuple(linear_bias.shape) != (n_classes,):
            raise ShapeError(f"{fn}: `linear_bias` must have shape ({n_classes},), got "
                             f"{_checks.shape_str(linear_bias)}.")
        if linear_bias.dtype != input.dtype:
            raise DtypeError(f"{fn}: `linear_bias` is {linear_bias.dtype} but `input` is "
                             f"{input.dtype}.")
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    spec = head.spec
    try:
        if head.loss == _MLM:
            t, none_shape = _mlm_target(fn, target, x, n_classes, unbatched)
            return Canon(x, linear_weight, linear_bias, t, None, (), none_shape)
        # the plain loss's own checks and canonical views, on a stand-in for the logits
        dtype = x.dtype
        for other in (target, weight):
            if isinstance(other, Tensor) and other.dtype == torch.float64 and head.loss == _MSM:
                dtype = torch.float64  # torch computes in float64 then: check as it would
        stub = _logits_stub(x, n_classes, dtype)
        if unbatched:
            stub = stub[0]
        xs, t, w, opts, none_shape = spec.prepare((stub,), target, weight, options)
    except (ShapeError, DtypeError) as e:
        raise type(e)(f"{e} (For {fn}, `input` there means the logits `input @ "
                      f"linear_weight.T`, of shape ({x.shape[0]}, {n_classes}).)") from None
    if spec.extras:
        # (on the logits' stand-in: pos_weight per class (C,), in the chunk pass's dtype)
        pos_weight, eps = spec.prepare_extras(Call(xs, t, w, opts, "none", (False,)),
                                              extras or (None, 0.0))
        extras = (pos_weight, eps) if pos_weight is not None or eps else ()
    return Canon(x, linear_weight, linear_bias, t, w, opts, none_shape, extras)


def _mlm_target(fn: str, target: object, x: Tensor, n_classes: int, unbatched: bool):
    """multilabel_margin_loss's target for a head: the -1-padded lists, ``(N, C)`` as torch's,
    or any width ``(N, K)`` with ``K <= C`` (the same lists with less padding)."""
    _checks.check_target_tensor(fn, target, x)
    _checks.check_integer_target(
        fn, target, "class indices padded with -1",
        "For a 0/1 multi-hot mask use `linear_multilabel_soft_margin_loss`, or convert it with "
        "`marginloss.labels.multi_hot_to_padded(target)`.")
    t = target.unsqueeze(0) if unbatched and target.dim() == 1 else target
    if t.dim() != 2 or t.shape[0] != x.shape[0] or t.shape[1] > n_classes:
        raise ShapeError(
            f"{fn}: `target` must list each sample's class indices padded with -1, shape "
            f"({x.shape[0]}, {n_classes}) as torch's multilabel_margin_loss, or ({x.shape[0]}, K) "
            f"with K <= {n_classes}; got {_checks.shape_str(target)}.")
    return t, (() if unbatched else (x.shape[0],))


def check_chunk_size(fn: str, chunk_size: object) -> None:
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(
            chunk_size, int) or chunk_size < 1):
        raise ValueError(f"{fn}: `chunk_size` must be None or a positive int (classes per "
                         f"chunk), got {chunk_size!r}.")


def chunk_sizes(n_rows: int, n_classes: int, chunk_size: int | None,
                gpu: bool = False) -> tuple[int, int]:
    """``(classes per chunk, rows per block)`` for a call; from shapes only (``int()`` first,
    so that symbolic sizes specialise)."""
    n_rows, n_classes = int(n_rows), int(n_classes)
    budget = BUDGET_GPU if gpu else BUDGET
    if chunk_size is None:
        chunk = max(MIN_CHUNK, budget // max(n_rows, 1))
    else:
        chunk = int(chunk_size)
    chunk = max(1, min(chunk, n_classes))
    rows = max(1, min(n_rows, BLOCK_ROWS_FACTOR * budget // chunk))
    return chunk, rows


# ----------------------------------------------------------------------------------------------
# the chunked pass


class Grads(NamedTuple):
    loss: Tensor
    input: Tensor | None
    linear_weight: Tensor | None
    linear_bias: Tensor | None


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def compute(head: Head, c: Canon, reduction: str, row_scale: Tensor | None, chunk_size,
            validate: bool, backend: str, need: tuple[bool, bool, bool]) -> Grads:
    """The loss (``reduction``) and, where ``need`` says, the gradients of ``input``,
    ``linear_weight`` and ``linear_bias`` for an upstream gradient of 1, or per row
    ``row_scale`` (the ``"none"`` backward; its loss is then the per-row loss)."""
    spec = head.spec
    x, W, b = c.input, c.linear_weight, c.linear_bias
    n_rows, hidden = x.shape
    n_classes = W.shape[0]
    dev = x.device
    need_x, need_w, need_b = need[0], need[1], need[2] and b is not None
    any_grad = need_x or need_w or need_b
    red = 1.0 / n_rows if reduction == "mean" and row_scale is None and n_rows else 1.0
    label_call = None
    if validate:
        label_call = Call((_logits_stub(x, n_classes),), c.target, None, c.options, "none",
                          (False,), c.extras)
        if x.is_cpu and head.loss != _MSM:
            spec.check_labels(label_call)  # raises now, with the plain loss's message
        elif x.is_cpu and c.extras and c.extras[0] is not None:
            # the whole pos_weight once, first (as the plain loss; the chunks see slices)
            losses.multilabel_soft_margin_loss.check_pos_weight(label_call)
    chunk_validate = validate and x.is_cpu and head.loss == _MSM  # in the kernel's own pass
    chunk, block = chunk_sizes(n_rows, n_classes, chunk_size, not x.is_cpu)

    acc = _acc(x.dtype)
    rows_total = torch.zeros(n_rows, dtype=torch.float64, device=dev)
    gx = torch.zeros(n_rows, hidden, dtype=acc, device=dev) if need_x else None
    # (written by the first block of rows; no rows: no term, a zero gradient)
    gw = (torch.empty_like if n_rows else torch.zeros_like)(W) if need_w else None
    gb = (torch.empty if n_rows else torch.zeros)(n_classes, dtype=acc, device=dev) \
        if need_b else None
    loss_dtype = x.dtype
    for r0 in range(0, n_rows, block):
        r1 = min(n_rows, r0 + block)
        state = _STATES[head.loss](c, r0, r1, row_scale, need_x)
        xs = x[r0:r1]
        r = state.row_weight  # per-row factor of every gradient term (None: 1)
        xr = xs if r is None else (xs * r.unsqueeze(1).to(xs.dtype))
        ones = None
        beta = 0.0 if r0 == 0 else 1.0
        # one logits buffer for every chunk of the block (the last, narrower one views its head)
        storage = torch.empty((r1 - r0) * (state.extra + min(chunk, n_classes)), dtype=x.dtype,
                              device=dev)
        for c0 in range(0, n_classes, chunk):
            c1 = min(n_classes, c0 + chunk)
            width = state.extra + (c1 - c0)
            buf = storage[: (r1 - r0) * width].view(r1 - r0, width)
            logits = buf[:, state.extra:]
            if b is not None:
                torch.addmm(b[c0:c1], xs, W[c0:c1].t(), out=logits)
            else:
                torch.mm(xs, W[c0:c1].t(), out=logits)
            call = state.call(buf, c0, c1, any_grad)
            result = _ops.compute(spec, call, chunk_validate, backend)
            scale = state.scale(c1 - c0)  # the chunk pass's 1/width -> 1/C
            rows_total.add_(result.loss.to(torch.float64), alpha=scale)
            loss_dtype = result.loss.dtype
            if not any_grad:
                continue
            g = result.grads[0]
            state.absorb(g, scale)
            d = g[:, state.extra:]  # this chunk's dL/dlogits, up to the row factors
            if d.dtype != x.dtype:
                d = d.to(x.dtype)
            alpha = scale * red
            if need_x:
                if gx.dtype == x.dtype:
                    gx[r0:r1].addmm_(d, W[c0:c1], alpha=alpha)
                else:  # half precision: accumulate the chunks in float32
                    gx[r0:r1].add_(torch.mm(d, W[c0:c1]), alpha=alpha)
            if need_w:
                gw[c0:c1].addmm_(d.t(), xr, beta=beta, alpha=alpha)
            if need_b:
                if r is None:
                    if ones is None:
                        ones = torch.ones(r1 - r0, dtype=x.dtype, device=dev)
                    v = torch.mv(d.t(), ones)
                else:
                    v = torch.mv(d.t(), r.to(x.dtype))
                if beta == 0.0:
                    torch.mul(v, alpha, out=gb[c0:c1])
                else:
                    gb[c0:c1].add_(v, alpha=alpha)
            del result, g, d  # this chunk's gradient: gone before the next one is made
        rows_total[r0:r1] = state.finish_rows(rows_total[r0:r1])
        if any_grad:
            state.correct(xs, xr, W, gx[r0:r1] if need_x else None, gw, gb, red)
        if need_x and r is not None:
            gx[r0:r1].mul_(r.unsqueeze(1).to(gx.dtype))
    if head.loss == _MSM and n_classes == 0:
        rows_total.fill_(float("nan"))  # the mean over no classes, as torch
    loss = _reduce(rows_total, reduction if row_scale is None else "none", loss_dtype)
    if label_call is not None and not x.is_cpu:
        loss = _deferred.defer(spec, label_call, loss, _bad_labels(head, c, n_classes))
    return Grads(loss,
                 gx.to(x.dtype) if gx is not None else None,
                 gw,
                 gb.to(b.dtype) if gb is not None else None)


def _reduce(rows: Tensor, reduction: str, dtype: torch.dtype) -> Tensor:
    if reduction == "none":
        return rows.to(dtype)
    total = rows.sum()
    if reduction == "mean":
        total = total / rows.numel() if rows.numel() else total.new_tensor(float("nan"))
    return total.to(dtype)


_FLOAT_MAX = torch.finfo(torch.float32).max


def _bad_labels(head: Head, c: Canon, n_classes: int) -> Tensor:
    """The number of target values outside the loss's convention (and of ``pos_weight``
    entries that are negative or not finite), as a 0-d device tensor (no host read): the CUDA
    label check."""
    t = c.target
    if t.numel() == 0 and not c.extras:
        return torch.zeros((), dtype=torch.int64, device=t.device)
    if head.loss == _MSM:
        pw = c.extras[0] if c.extras else None
        bad_pw = 0 if pw is None else (~((pw >= 0) & (pw <= _FLOAT_MAX))).sum()
        t = _checks.compact(t)
        if t.dtype == torch.bool:
            return torch.zeros((), dtype=torch.int64, device=t.device) + bad_pw
        return ((t < 0) | (t > 1) | (t != t)).sum() + bad_pw
    lo, hi = torch.aminmax(t)
    if head.loss == _MM:
        return ((lo < 0) | (hi >= n_classes)).to(torch.int64)
    mask = (lo >= 0) & (hi <= 1) if n_classes > 2 else torch.zeros_like(lo, dtype=torch.bool)
    return ((lo < -1) | (hi >= n_classes) | mask).to(torch.int64)


# ----------------------------------------------------------------------------------------------
# per loss: what a chunk needs from outside it


class _SoftMargin:
    """multilabel_soft_margin_loss: per element, nothing from outside the chunk."""

    extra = 0

    def __init__(self, c: Canon, r0: int, r1: int, row_scale: Tensor | None, need_x: bool):
        self.c, self.r0, self.r1 = c, r0, r1
        self.n_classes = c.linear_weight.shape[0]
        self.row_weight = None if row_scale is None else row_scale[r0:r1]
        t = c.target[r0:r1]
        self.target = t
        self.storage: Tensor | None = None  # the chunks' target copies, one buffer
        w = c.weight
        self.weight = None if w is None else (w if w.dim() == 1 else w[r0:r1])
        self.pos_weight, self.eps = c.extras or (None, 0.0)

    def call(self, buf: Tensor, c0: int, c1: int, grad: bool) -> Call:
        t = self.target[:, c0:c1]
        if not t.is_contiguous():  # this chunk's columns of the mask (the kernels read rows)
            if self.storage is None:
                self.storage = torch.empty(t.numel(), dtype=t.dtype, device=t.device)
            t = self.storage[: t.numel()].view(t.shape).copy_(t)
        w = self.weight
        if w is not None:
            w = w[c0:c1] if w.dim() == 1 else w[:, c0:c1].contiguous()
        pw = self.pos_weight
        extras = () if not self.c.extras else (None if pw is None else pw[c0:c1], self.eps)
        return Call((buf,), t, w, (), "none", (grad,), extras)

    def scale(self, width: int) -> float:
        return width / self.n_classes

    def absorb(self, g: Tensor, scale: float) -> None:
        pass

    def finish_rows(self, rows: Tensor) -> Tensor:
        return rows

    def correct(self, *args) -> None:
        pass


class _MultiMargin:
    """multi_margin_loss: the target's score in front of every chunk (see the module doc)."""

    extra = 1

    def __init__(self, c: Canon, r0: int, r1: int, row_scale: Tensor | None, need_x: bool):
        x, W, b = c.input[r0:r1], c.linear_weight, c.linear_bias
        self.n_classes = W.shape[0]
        # unchecked labels (validate=False) stay in bounds: undefined results, no bad access
        y = c.target[r0:r1].long().clamp(0, max(self.n_classes - 1, 0))
        self.y = y
        self.wy = W.index_select(0, y)  # (R, H): the target rows of W
        xy = torch.linalg.vecdot(x.to(_acc(x.dtype)), self.wy.to(_acc(x.dtype)))
        if b is not None:
            xy = xy + b.index_select(0, y).to(xy.dtype)
        self.xy = xy.to(x.dtype)
        p, margin = c.options
        self.options = (p, margin)
        weight = None
        if c.weight is not None:
            weight = c.weight.index_select(0, y).to(_acc(x.dtype))
        self.w_rows = weight
        rw = weight
        if row_scale is not None:
            rs = row_scale[r0:r1].to(_acc(x.dtype))
            rw = rs if rw is None else rw * rs
        self.row_weight = rw
        self.zeros = torch.zeros(r1 - r0, dtype=torch.int64, device=x.device)
        self.t = torch.zeros(r1 - r0, dtype=torch.float64, device=x.device)  # dl/dx_y, summed

    def call(self, buf: Tensor, c0: int, c1: int, grad: bool) -> Call:
        inside = (self.y >= c0) & (self.y < c1)
        col = torch.where(inside, self.y - c0 + 1, 0)
        buf.scatter_(1, col.unsqueeze(1), float("-inf"))  # the target is no competitor
        buf[:, 0] = self.xy  # (after the scatter: it also landed on column 0)
        return Call((buf,), self.zeros, None, self.options, "none", (grad,))

    def scale(self, width: int) -> float:
        return (width + 1) / self.n_classes

    def absorb(self, g: Tensor, scale: float) -> None:
        self.t.add_(g[:, 0].to(torch.float64), alpha=scale)

    def finish_rows(self, rows: Tensor) -> Tensor:
        return rows if self.w_rows is None else rows * self.w_rows.to(rows.dtype)

    def correct(self, xs, xr, W, gx, gw, gb, red) -> None:
        t = self.t.mul_(red)
        if gx is not None:
            gx.add_(self.wy.to(gx.dtype) * t.unsqueeze(1).to(gx.dtype))
        if gw is not None:
            _index_add(gw, self.y, xr * t.unsqueeze(1).to(xr.dtype))
        if gb is not None:
            r = self.row_weight
            _index_add(gb, self.y, (t if r is None else t * r.to(t.dtype)).to(gb.dtype))


class _MultiLabelMargin:
    """multilabel_margin_loss: the target scores in front of every chunk (see the module doc)."""

    def __init__(self, c: Canon, r0: int, r1: int, row_scale: Tensor | None, need_x: bool):
        x, W, b = c.input[r0:r1], c.linear_weight, c.linear_bias
        dev = x.device
        n = r1 - r0
        self.n_classes = W.shape[0]
        t = c.target[r0:r1]
        lengths = _list_lengths(t)
        k = t.shape[1]
        if x.is_cpu and n:
            k = int(lengths.max())  # the longest list (a host read on the CPU only)
        cols = torch.arange(k, device=dev)
        self.valid = cols < lengths.unsqueeze(1)  # (R, K)
        idx = t[:, :k].long().clamp(0, max(self.n_classes - 1, 0))
        self.idx = torch.where(self.valid, idx, 0)
        self.k = k
        self.extra = k
        # S = h . W[t] + b[t] per entry, in blocks of rows (the gathered rows: R x K x H)
        acc = _acc(x.dtype)
        s = torch.empty(n, k, dtype=acc, device=dev)
        step = max(1, BUDGET // max(k * x.shape[1], 1))
        for s0 in range(0, n, step):
            s1 = min(n, s0 + step)
            wt = W[self.idx[s0:s1]]  # (r, K, H)
            s[s0:s1] = torch.bmm(wt.to(acc), x[s0:s1].to(acc).unsqueeze(2)).squeeze(2)
        if b is not None:
            s += b[self.idx].to(acc)
        self.s = s.to(x.dtype).masked_fill_(~self.valid, float("-inf"))  # padding: no term
        self.row_weight = None if row_scale is None else row_scale[r0:r1]
        self.targets: dict[int, Tensor] = {}
        self.d = torch.zeros(n, k, dtype=torch.float64, device=dev)  # dl/dS_j, summed

    def _target(self, width: int) -> Tensor:
        """The chunk's target rows: the row's list points at the K columns in front."""
        t = self.targets.get(width)
        if t is None:
            t = torch.full((self.valid.shape[0], width), -1, dtype=torch.int64,
                           device=self.valid.device)
            t[:, :self.k] = torch.where(self.valid, torch.arange(self.k, device=t.device), -1)
            if len(self.targets) >= 2:  # (the full chunks' width and the last one's)
                self.targets.clear()
            self.targets[width] = t
        return t

    def call(self, buf: Tensor, c0: int, c1: int, grad: bool) -> Call:
        if self.k:
            inside = self.valid & (self.idx >= c0) & (self.idx < c1)
            col = torch.where(inside, self.idx - c0 + self.k, 0)
            buf.scatter_(1, col, float("-inf"))  # the row's targets are no competitors
            buf[:, :self.k] = self.s  # (after the scatter: it also landed on column 0)
        return Call((buf,), self._target(buf.shape[1]), None, (), "none", (grad,))

    def scale(self, width: int) -> float:
        return (width + self.k) / self.n_classes

    def absorb(self, g: Tensor, scale: float) -> None:
        if self.k:
            self.d.add_(g[:, :self.k].to(torch.float64), alpha=scale)

    def finish_rows(self, rows: Tensor) -> Tensor:
        return rows

    def correct(self, xs, xr, W, gx, gw, gb, red) -> None:
        if not self.k:
            return
        d = self.d.mul_(red).masked_fill_(~self.valid, 0.0)  # (R, K)
        n = d.shape[0]
        idx = self.idx
        if gx is not None:
            step = max(1, BUDGET // max(self.k * xs.shape[1], 1))
            for s0 in range(0, n, step):
                s1 = min(n, s0 + step)
                wt = W[idx[s0:s1]].to(gx.dtype)  # (r, K, H)
                gx[s0:s1] += torch.bmm(d[s0:s1].to(gx.dtype).unsqueeze(1), wt).squeeze(1)
        if gw is not None:
            step = max(1, BUDGET // max(self.k * xs.shape[1], 1))
            for s0 in range(0, n, step):
                s1 = min(n, s0 + step)
                vals = d[s0:s1].to(xr.dtype).unsqueeze(2) * xr[s0:s1].unsqueeze(1)  # (r,K,H)
                _index_add(gw, idx[s0:s1].reshape(-1), vals.reshape(-1, xr.shape[1]))
        if gb is not None:
            r = self.row_weight
            v = d if r is None else d * r.to(d.dtype).unsqueeze(1)
            _index_add(gb, idx.reshape(-1), v.reshape(-1).to(gb.dtype))


def _list_lengths(t: Tensor) -> Tensor:
    """Entries before the first negative one, per row of ``t`` (``(R, K)`` lists), scanning
    blocks of columns (no ``(R, K)`` temporary). On the CPU the scan stops once every row has
    ended (short lists padded to C: one block); on CUDA it reads no value on the host."""
    n, width = t.shape
    lengths = torch.full((n,), width, dtype=torch.int64, device=t.device)
    step = max(1, BUDGET // max(n, 1))
    for c0 in range(0, width, step):
        has_end, first = (t[:, c0:c0 + step] < 0).max(dim=1)
        lengths = torch.where(has_end & (lengths == width), first + c0, lengths)
        if t.is_cpu and bool((lengths < width).all()):
            break
    return lengths


_STATES: dict[str, Any] = {_MSM: _SoftMargin, _MM: _MultiMargin, _MLM: _MultiLabelMargin}


def _index_add(out: Tensor, index: Tensor, values: Tensor) -> None:
    """``out[index] += values`` with repeated indices, deterministically: ``index_add_`` on
    the CPU (a serial loop), ``index_put_(accumulate=True)`` on CUDA (sorted; ``index_add_``
    there uses atomics)."""
    values = values.to(out.dtype)
    if out.is_cpu:
        out.index_add_(0, index, values)
    else:
        out.index_put_((index,), values, accumulate=True)


# ----------------------------------------------------------------------------------------------
# operators and autograd


def _op_signature() -> inspect.Signature:
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    names_types: list[tuple[str, Any]] = [
        ("input", Tensor), ("linear_weight", Tensor), ("target", Tensor),
        ("linear_bias", Tensor | None), ("weight", Tensor | None),
        ("pos_weight", Tensor | None), ("row_scale", Tensor | None), ("p", int),
        ("margin", float), ("label_smoothing", float), ("reduction", str),
        ("chunk_size", int), ("validate", bool), ("backend", str), ("need_grad", list[bool])]
    params = [inspect.Parameter(n, kind, annotation=t) for n, t in names_types]
    return inspect.Signature(params, return_annotation=tuple[Tensor, Tensor, Tensor, Tensor])


def _options_of(head: Head, p: int, margin: float) -> tuple:
    return (p, margin) if head.loss == _MM else ()


def _extras_of(head: Head, pos_weight: Tensor | None, label_smoothing: float) -> tuple:
    return (pos_weight, label_smoothing) if head.spec.extras else ()


def _run_impl(head: Head, input, linear_weight, target, linear_bias, weight, pos_weight,
              row_scale, p, margin, label_smoothing, reduction, chunk_size, validate, backend,
              need_grad) -> tuple:
    c = canonical(head, input, linear_weight, target, linear_bias, weight,
                  _options_of(head, p, margin), _extras_of(head, pos_weight, label_smoothing))
    out = compute(head, c, reduction, row_scale, chunk_size or None, validate, backend,
                  tuple(need_grad))
    return (out.loss, *(g if g is not None else input.new_empty(0) for g in out[1:]))


def _fake(head: Head, input, linear_weight, target, linear_bias, weight, pos_weight, row_scale,
          p, margin, label_smoothing, reduction, chunk_size, validate, backend,
          need_grad) -> tuple:
    n = input.shape[0] if input.dim() == 2 else 1
    loss_dtype = input.dtype
    if head.loss == _MSM:
        for t in (target, weight):
            if t is not None and t.dtype == torch.float64:
                loss_dtype = torch.float64
    if reduction == "none" or row_scale is not None:
        shape: tuple = (n,) if input.dim() == 2 else ()
    else:
        shape = ()
    loss = input.new_empty(shape, dtype=loss_dtype)
    tensors = (input, linear_weight, linear_bias)
    grads = tuple(t.new_empty(t.shape) if need and t is not None else input.new_empty(0)
                  for t, need in zip(tensors, need_grad))
    return (loss, *grads)


def _setup_context(ctx, inputs, output) -> None:
    (input, linear_weight, target, linear_bias, weight, pos_weight, _, p, margin,
     label_smoothing, reduction, chunk_size, validate, backend, need_grad) = inputs
    ctx.reduction = reduction
    ctx.args = (p, margin, label_smoothing, chunk_size, backend)
    ctx.has_bias = linear_bias is not None
    if reduction == "none":
        ctx.save_for_backward(input, linear_weight, target, linear_bias, weight, pos_weight)
    else:
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(*(g if need else None for g, need in zip(output[1:], need_grad)))


def _make_backward(op):
    def backward(ctx, grad_loss, *_):
        _ops.check_differentiable_once()
        if ctx.reduction == "none":
            input, linear_weight, target, linear_bias, weight, pos_weight = ctx.saved_tensors
            p, margin, label_smoothing, chunk_size, backend = ctx.args
            need = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                    ctx.has_bias and ctx.needs_input_grad[3]]
            out = op(input, linear_weight, target, linear_bias, weight, pos_weight,
                     grad_loss.reshape(-1), p, margin, label_smoothing, "none", chunk_size, False,
                     backend, need)
            grads = [g if n else None for g, n in zip(out[1:], need)]
        else:
            grads = [None if g is None else _ops.scale(g, grad_loss) for g in ctx.saved_tensors]
        return (grads[0], grads[1], None, grads[2], *(None,) * 11)

    return backward


def _register(head: Head):
    def impl(*args):
        return _run_impl(head, *args)

    def fake(*args):
        return _fake(head, *args)

    impl.__name__ = impl.__qualname__ = head.name
    impl.__signature__ = _op_signature()  # type: ignore[attr-defined]
    op = torch.library.custom_op(f"{_ops.NAMESPACE}::{head.name}", impl, mutates_args=())
    op.register_fake(fake)
    op.register_autograd(_make_backward(op._opoverload), setup_context=_setup_context)
    return op._opoverload


#: ``torch.ops.marginloss.linear_<loss>.default``, by loss name.
OPS: dict[str, Any] = {name: _register(head) for name, head in HEADS.items()}


class _Eager(torch.autograd.Function):
    """A head in plain eager mode: forward runs the operator's implementation and keeps the
    gradients; backward hands them over (upstream gradient exactly 1, read on the CPU only) or
    scales them in place, or, for ``"none"`` or a second backward, runs the pass again."""

    @staticmethod
    def forward(ctx, state, input, linear_weight, linear_bias):
        head, c, reduction, chunk_size, validate, backend, need = state
        grads_now = reduction != "none"
        out = compute(head, c, reduction, None, chunk_size, validate, backend,
                      need if grads_now else (False, False, False))
        ctx.state = state
        ctx.grads = list(out[1:]) if grads_now else None
        return out.loss

    @staticmethod
    def backward(ctx, grad_loss):
        if torch.is_grad_enabled():
            _ops.check_differentiable_once()
        head, c, reduction, chunk_size, _, backend, need = ctx.state
        if reduction == "none":
            out = compute(head, c, "none", grad_loss.reshape(-1), chunk_size, False, backend,
                          need)
            return (None, *out[1:])
        grads = ctx.grads
        if grads is None:  # a second backward through the same graph: compute them again
            grads = list(compute(head, c, reduction, None, chunk_size, False, backend, need)[1:])
        ctx.grads = None
        if grad_loss.is_cpu and grad_loss.numel() == 1 and grad_loss.item() == 1:
            return (None, *grads)  # handed over: autograd keeps them as .grad (no copy)
        go = grad_loss.reshape(())
        return (None, *(None if g is None else g.mul_(go.to(g.dtype)) for g in grads))


_EAGER_APPLY = super(torch.autograd.Function, _Eager).apply


# ----------------------------------------------------------------------------------------------
# the public entry


def run(head_loss: str, input: Tensor, linear_weight: Tensor, target: Tensor, *,
        linear_bias: Tensor | None, weight: Tensor | None, options: tuple, reduction: str,
        chunk_size: int | None, validate: bool, backend: str, extras: tuple = ()) -> Tensor:
    """A head's loss for a public function's arguments (see the module docstring);
    ``extras``: the values of the loss's own options (``spec.extras``), in order."""
    head = HEADS[head_loss]
    if reduction not in _reduction.REDUCTIONS:
        reduction = _reduction.resolve(None, None, reduction, head.name)
    if (validate is not True and validate is not False) or backend not in _pipeline.BACKENDS:
        _pipeline.check_options(validate, backend, head.name)
    check_chunk_size(head.name, chunk_size)
    c = canonical(head, input, linear_weight, target, linear_bias, weight, options, extras)
    pos_weight, label_smoothing = c.extras or (None, 0.0)
    grad_on = torch.is_grad_enabled()
    need = (grad_on and input.requires_grad, grad_on and linear_weight.requires_grad,
            grad_on and linear_bias is not None and linear_bias.requires_grad)
    plain = (not torch.compiler.is_compiling() and _pipeline._plain_mode()
             and all(t is None or (t.__class__ in _pipeline._PLAIN and not t.is_meta)
                     for t in (input, linear_weight, linear_bias, target, weight, pos_weight)))
    if plain:
        if True in need:
            loss = _EAGER_APPLY((head, c, reduction, chunk_size, validate, backend, need),
                                c.input, c.linear_weight, c.linear_bias)
        else:
            loss = compute(head, c, reduction, None, chunk_size, validate, backend, need).loss
    else:
        p, margin = options if head.loss == _MM else (1, 1.0)
        loss = OPS[head_loss](c.input, c.linear_weight, c.target, c.linear_bias, c.weight,
                              pos_weight, None, p, float(margin), float(label_smoothing),
                              reduction, chunk_size or 0, validate, backend,
                              list(need) if reduction != "none" else [False, False, False])[0]
    if reduction == "none" and tuple(loss.shape) != c.none_shape:
        loss = loss.reshape(c.none_shape)
    return loss

