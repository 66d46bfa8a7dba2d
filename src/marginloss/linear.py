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

**Sparse targets** (the two multi-label heads; :mod:`marginloss.sparse`'s forms: a
``torch.sparse_csr`` ``(N, C)`` tensor, one index tensor per sample, a ``(rows, cols)`` pair)
cost :math:`O(\text{nnz})` on the target side, never an ``(N, C)`` target:

* ``multilabel_soft_margin_loss``: each chunk's pass runs on the zero target (a stride-0 view
  of one zero in the accumulation dtype, never materialised), and the chunk's positives take
  off their correction (:func:`marginloss.sparse.soft_margin_correction`, on the scores at the
  entries, read from the chunk's logits) from the rows' losses, and its derivative
  :math:`w\,\Delta t\,(p - (p - 1)\sigma(x))` from :math:`D_c`, before the chunk's matmuls
  (``pos_weight`` and ``label_smoothing`` included; duplicates add up, as ``to_dense()``). The
  entries are sorted by class once per block of rows, so that each chunk takes its own as a
  slice (one host read of the chunks' bounds per block).
* ``multilabel_margin_loss``: the entries become the narrow -1-padded lists
  (:func:`marginloss.sparse.to_padded`, :math:`O(N K)`), which the head takes as they are.

Their values are checked as the plain loss's sparse path checks them (its errors), before the
chunks: now on the CPU; on CUDA the soft margin loss turns NaN and the error comes from a
later call (the margin loss's entries are read on every device, as building its lists
does). Under ``torch.compile`` pass ``validate=False`` (the check reads values), as for the
plain loss; the operator takes a sparse target's entries as ``target`` (the rows),
``target_cols`` and ``target_values``.

**Shortlists** (``candidates=``, :func:`shortlist`): the loss over given candidate classes
per sample, :math:`(N, K)` class indices padded with -1 or :math:`C`. No chunks and no
registered operator, but plain autograd: the scores :math:`s_{nk} = h_n \cdot W_{c_{nk}} +
b_{c_{nk}}` from the candidates' rows of :math:`W`, gathered in blocks of rows
(:class:`_CandidateScores`, :math:`O(N K H)` work, never all of :math:`W` at once), then the
plain loss (our pipeline, its checks and errors) on the :math:`(N, K)` scores with the target
in candidate space; each row is rescaled from the plain loss's :math:`1/K` to its number of
real candidates. The gradient of :math:`W` adds each slot's :math:`G_{nk} h_n` to row
:math:`c_{nk}` (``index_add_`` on the CPU, ``index_put_(accumulate=True)`` on CUDA: both
deterministic). Its checks read the candidates (and the hinges' target slots) on the host, on
every device.

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

from marginloss import _checks, _deferred, _ops, _pipeline, _reduction, losses, sparse
from marginloss.errors import DtypeError, LabelError, ShapeError
from marginloss.losses._spec import Call, LossSpec
from marginloss.sparse import SparseTarget

__all__ = ["HEADS", "run", "shortlist"]

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
    # a sparse target's entries (marginloss.sparse); msm: ``target`` is then the zero target
    # (a stride-0 (N, C) view of one 0-d zero); mlm: ``target`` is None until ``run`` turns
    # the entries into -1-padded lists
    sparse: SparseTarget | None = None


def _logits_stub(x: Tensor, n_classes: int, dtype: torch.dtype | None = None) -> Tensor:
    """A stride-0 ``(N, C)`` stand-in for the logits (no memory): what the plain loss's checks
    read (shape, dtype, device) without the logits existing."""
    return torch.empty((), dtype=dtype or x.dtype, device=x.device).expand(x.shape[0], n_classes)


def canonical(head: Head, input: Tensor, linear_weight: Tensor, target: object,
              linear_bias: Tensor | None, weight: Tensor | None, options: tuple,
              extras: tuple = ()) -> Canon:
    """Check a head call's arguments (metadata only) and view them canonically. ``extras``:
    the values of the loss's own options (``spec.extras``: soft margin's ``pos_weight`` and
    ``label_smoothing``), checked by the plain loss's ``prepare_extras`` (its errors, as
    they are) and kept only when one differs from its default. A sparse ``target`` (the
    multi-label losses; :mod:`marginloss.sparse`'s forms, or a parsed
    :class:`~marginloss.sparse.SparseTarget`) is parsed by :func:`marginloss.sparse.parse`
    against the logits' shape; its values are checked by :func:`run`."""
    fn = head.name
    x, unbatched = _check_layer(fn, input, linear_weight, linear_bias)
    n_classes = linear_weight.shape[0]
    spec = head.spec
    st = None
    try:
        if head.loss != _MM and (isinstance(target, SparseTarget)
                                 or sparse.is_sparse_target(target)):
            st = _sparse_target(head, target, x, n_classes, unbatched)
            if head.loss == _MLM:
                return Canon(x, linear_weight, linear_bias, None, None, (), (x.shape[0],),
                             sparse=st)
            # checked and viewed below as a zero target in the dtype the dense target would
            # give (so the weight is canonical as for that one): a float CSR's values
            # promote, index forms do not (the plain loss's sparse path)
            out = x.dtype
            if st.values is not None and st.values.is_floating_point():
                out = _checks.promote_float(out, st.values.dtype)
            target = _logits_stub(x, n_classes, out)
        elif head.loss == _MLM:
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
    if st is not None:
        # the dense pass's zero target (never materialised), in the accumulation dtype (the
        # plain loss's sparse path: the correction is taken off before the one rounding)
        t = torch.zeros((), dtype=_acc(t.dtype), device=x.device).expand(t.shape)
    return Canon(x, linear_weight, linear_bias, t, w, opts, none_shape, extras, st)


def _check_layer(fn: str, input: Tensor, linear_weight: Tensor,
                 linear_bias: Tensor | None) -> tuple[Tensor, bool]:
    """Check the features and the linear layer (metadata only); ``(input as (N, H), whether
    it was unbatched)``."""
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
    return (input.unsqueeze(0) if unbatched else input), unbatched


def _sparse_target(head: Head, target: object, x: Tensor, n_classes: int,
                   unbatched: bool) -> SparseTarget:
    """A sparse target parsed as the plain loss parses it (its errors), against the logits'
    stand-in; an already parsed one (the operator's) takes the logits' shape."""
    if isinstance(target, SparseTarget):
        return target._replace(shape=(x.shape[0], n_classes))
    stub = _logits_stub(x, n_classes)
    return sparse.parse(head.loss, target, stub[0] if unbatched else stub)


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
        state = _STATES[head.loss](c, r0, r1, row_scale, chunk)
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
            rows = rows_total[r0:r1]
            rows.add_(result.loss.to(torch.float64), alpha=scale)
            loss_dtype = state.loss_dtype(result.loss.dtype)
            g = result.grads[0] if any_grad else None
            state.absorb(rows, g, scale)
            if g is None:
                continue
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
    """multilabel_soft_margin_loss: per element, nothing from outside the chunk. A sparse
    target: the zero target's pass on the chunk, then the chunk's positives' correction (see
    the module doc)."""

    extra = 0

    def __init__(self, c: Canon, r0: int, r1: int, row_scale: Tensor | None, chunk: int):
        self.c, self.r0, self.r1 = c, r0, r1
        self.n_classes = c.linear_weight.shape[0]
        self.row_weight = None if row_scale is None else row_scale[r0:r1]
        t = c.target[r0:r1]
        self.target = t
        self.storage: Tensor | None = None  # the chunks' target copies, one buffer
        w = c.weight
        self.weight = None if w is None else (w if w.dim() == 1 else w[r0:r1])
        self.pos_weight, self.eps = c.extras or (None, 0.0)
        self.entries = None if c.sparse is None else _ChunkEntries(c.sparse, r0, r1, chunk)
        self.out_dtype = None
        if c.sparse is not None:  # the dtype the dense target would give (the zero's is wider)
            self.out_dtype = _soft_margin_dtype(c.input, c.sparse.values, w)
        self.chunk: tuple | None = None  # this chunk's entries and their scores (sparse)

    def call(self, buf: Tensor, c0: int, c1: int, grad: bool) -> Call:
        t = self.target[:, c0:c1]
        if not t.is_contiguous() and t.stride() != (0, 0):  # this chunk's columns of the mask
            if self.storage is None:  # (the kernels read rows; a zero target is read as one)
                self.storage = torch.empty(t.numel(), dtype=t.dtype, device=t.device)
            t = self.storage[: t.numel()].view(t.shape).copy_(t)
        w = self.weight
        if w is not None:
            w = w[c0:c1] if w.dim() == 1 else w[:, c0:c1].contiguous()
        pw = self.pos_weight
        pw = None if pw is None else pw[c0:c1]
        extras = () if not self.c.extras else (pw, self.eps)
        if self.entries is not None:
            st = self.entries.chunk(c0, c1)
            # the scores at the positives, read before the pass (O(nnz in the chunk))
            w_full = self.weight
            if w_full is not None:
                w_full = w_full[c0:c1] if w_full.dim() == 1 else w_full[:, c0:c1]
            self.chunk = (st, buf[st.rows, st.cols], w_full, pw, c1 - c0) if st.nnz else None
        return Call((buf,), t, w, (), "none", (grad,), extras)

    def scale(self, width: int) -> float:
        return width / self.n_classes

    def loss_dtype(self, chunk_dtype: torch.dtype) -> torch.dtype:
        return chunk_dtype if self.out_dtype is None else self.out_dtype

    def absorb(self, rows: Tensor, g: Tensor | None, scale: float) -> None:
        """A sparse target: take the chunk's positives' correction off its rows' losses and,
        per positive, its derivative off the chunk pass's gradient ``g`` (in that pass's
        units, a :math:`1 / C_c` mean)."""
        if self.chunk is None:
            return
        st, scores, w, pw, width = self.chunk
        self.chunk = None
        acc = self.target.dtype  # the zero target's: float32 or float64
        corr = sparse.soft_margin_correction(scores, st, w, pos_weight=pw,
                                             label_smoothing=self.eps, dtype=acc)
        rows.sub_(corr.to(torch.float64), alpha=1.0 / self.n_classes)
        if g is not None:
            slope = _correction_slopes(scores, st, w, pw, self.eps, acc)
            g.index_put_((st.rows, st.cols), (slope * (-1.0 / width)).to(g.dtype),
                         accumulate=True)

    def finish_rows(self, rows: Tensor) -> Tensor:
        return rows

    def correct(self, *args) -> None:
        pass


class _MultiMargin:
    """multi_margin_loss: the target's score in front of every chunk (see the module doc)."""

    extra = 1

    def __init__(self, c: Canon, r0: int, r1: int, row_scale: Tensor | None, chunk: int):
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

    def loss_dtype(self, chunk_dtype: torch.dtype) -> torch.dtype:
        return chunk_dtype

    def absorb(self, rows: Tensor, g: Tensor | None, scale: float) -> None:
        if g is not None:
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

    def __init__(self, c: Canon, r0: int, r1: int, row_scale: Tensor | None, chunk: int):
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

    def loss_dtype(self, chunk_dtype: torch.dtype) -> torch.dtype:
        return chunk_dtype

    def absorb(self, rows: Tensor, g: Tensor | None, scale: float) -> None:
        if self.k and g is not None:
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


class _ChunkEntries:
    """A sparse target's entries of one block of rows, grouped by class chunk: sorted by
    class once (stable: a duplicate's entries keep their order), the chunks' bounds read in
    one host read, so that each chunk takes its entries as slices, :math:`O(\text{nnz in
    the chunk})`. Rows and classes are clamped into range (unchecked targets,
    ``validate=False``, stay memory-safe, as in the plain loss)."""

    def __init__(self, st: SparseTarget, r0: int, r1: int, chunk: int):
        n_rows, n_classes = st.shape
        rows = st.rows.clamp(0, max(n_rows - 1, 0))
        cols = st.cols.clamp(0, max(n_classes - 1, 0))
        values = st.values
        if r0 > 0 or r1 < n_rows:  # one block of several: its entries
            keep = ((rows >= r0) & (rows < r1)).nonzero().reshape(-1)
            rows, cols = rows[keep], cols[keep]
            values = None if values is None else values[keep]
        cols, order = cols.sort(stable=True)
        self.rows = rows[order] - r0
        self.cols = cols
        self.values = None if values is None else values[order]
        starts = torch.arange(0, n_classes + chunk, chunk, device=cols.device).clamp_(
            max=n_classes)
        self.bounds = torch.searchsorted(cols, starts).tolist()
        self.n_rows, self.chunk_size = r1 - r0, chunk

    def chunk(self, c0: int, c1: int) -> SparseTarget:
        """The entries of classes ``[c0, c1)``, classes shifted by ``-c0``."""
        i = c0 // self.chunk_size
        lo, hi = self.bounds[i], self.bounds[i + 1]
        v = None if self.values is None else self.values[lo:hi]
        return SparseTarget(self.rows[lo:hi], self.cols[lo:hi] - c0, v,
                            (self.n_rows, c1 - c0), "pair")


def _soft_margin_dtype(x: Tensor, label: Tensor | None, weight: Tensor | None) -> torch.dtype:
    """The soft margin head's loss dtype, from the canonical call: the features', promoted by
    a float target (or a sparse target's float values) and the canonical weight, as torch."""
    out = x.dtype
    for t in (label, weight):
        if t is not None:
            out = _checks.promote_float(out, t.dtype)
    return out


def _correction_slopes(scores: Tensor, st: SparseTarget, weight: Tensor | None,
                       pos_weight: Tensor | None, eps: float, dtype: torch.dtype) -> Tensor:
    r"""Per entry, the derivative of :func:`marginloss.sparse.soft_margin_correction`'s term
    in its score: :math:`w\,\Delta t\,(p - (p - 1)\,\sigma(x))` (:math:`w\,\Delta t` without
    ``pos_weight``), :math:`\Delta t = y (1 - arepsilon)`."""
    n_rows, n_classes = st.shape
    at = (st.rows, st.cols)
    slope = (torch.ones_like(scores, dtype=dtype) if st.values is None
             else st.values.to(dtype))
    if eps:
        slope = slope * (1.0 - eps)
    if weight is not None:
        slope = slope * weight.expand(n_rows, n_classes)[at].to(dtype)
    if pos_weight is not None:
        p = pos_weight.expand(n_rows, n_classes)[at].to(dtype)
        slope = slope * (p - (p - 1) * torch.sigmoid(scores.to(dtype)))
    return slope


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
        ("target_cols", Tensor | None), ("target_values", Tensor | None),
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


def _op_target(target: Tensor, target_cols: Tensor | None,
               target_values: Tensor | None) -> Tensor | SparseTarget:
    """The operator's target: a tensor, or with ``target_cols`` a sparse target's entries
    (``target`` its rows; checked before the operator, by :func:`run`)."""
    if target_cols is None:
        return target
    return SparseTarget(target, target_cols, target_values, (0, 0), "pair")


def _op_target_args(c: Canon) -> tuple:
    """``(target, target_cols, target_values)`` of the operator for ``c``."""
    st = c.sparse
    return (c.target, None, None) if st is None else (st.rows, st.cols, st.values)


def _run_impl(head: Head, input, linear_weight, target, target_cols, target_values,
              linear_bias, weight, pos_weight, row_scale, p, margin, label_smoothing, reduction,
              chunk_size, validate, backend, need_grad) -> tuple:
    c = canonical(head, input, linear_weight, _op_target(target, target_cols, target_values),
                  linear_bias, weight, _options_of(head, p, margin),
                  _extras_of(head, pos_weight, label_smoothing))
    if c.sparse is not None and head.loss == _MLM:  # (run() passes lists; a direct call may not)
        c = c._replace(target=sparse.margin_lists(head.loss, c.sparse, False), sparse=None)
    out = compute(head, c, reduction, row_scale, chunk_size or None, validate, backend,
                  tuple(need_grad))
    return (out.loss, *(g if g is not None else input.new_empty(0) for g in out[1:]))


def _fake(head: Head, input, linear_weight, target, target_cols, target_values, linear_bias,
          weight, pos_weight, row_scale, p, margin, label_smoothing, reduction, chunk_size,
          validate, backend, need_grad) -> tuple:
    n = input.shape[0] if input.dim() == 2 else 1
    loss_dtype = input.dtype
    if head.loss == _MSM:  # (sparse: the values' dtype, not the rows')
        loss_dtype = _soft_margin_dtype(input, target if target_cols is None else target_values,
                                        weight)
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
    (input, linear_weight, target, target_cols, target_values, linear_bias, weight, pos_weight,
     _, p, margin, label_smoothing, reduction, chunk_size, validate, backend, need_grad) = inputs
    ctx.reduction = reduction
    ctx.args = (p, margin, label_smoothing, chunk_size, backend)
    ctx.has_bias = linear_bias is not None
    if reduction == "none":
        ctx.save_for_backward(input, linear_weight, target, target_cols, target_values,
                              linear_bias, weight, pos_weight)
    else:
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(*(g if need else None for g, need in zip(output[1:], need_grad)))


def _make_backward(op):
    def backward(ctx, grad_loss, *_):
        _ops.check_differentiable_once()
        if ctx.reduction == "none":
            (input, linear_weight, target, target_cols, target_values, linear_bias, weight,
             pos_weight) = ctx.saved_tensors
            p, margin, label_smoothing, chunk_size, backend = ctx.args
            need = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                    ctx.has_bias and ctx.needs_input_grad[5]]
            out = op(input, linear_weight, target, target_cols, target_values, linear_bias,
                     weight, pos_weight, grad_loss.reshape(-1), p, margin, label_smoothing,
                     "none", chunk_size, False, backend, need)
            grads = [g if n else None for g, n in zip(out[1:], need)]
        else:
            grads = [None if g is None else _ops.scale(g, grad_loss) for g in ctx.saved_tensors]
        # (input, linear_weight, target, target_cols, target_values, linear_bias, 11 more)
        return (grads[0], grads[1], None, None, None, grads[2], *(None,) * 11)

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
    st = c.sparse
    check_later = False
    if st is not None:  # the sparse target's values, checked as the plain loss checks them
        if head.loss == _MLM:
            c = c._replace(target=sparse.margin_lists(head.loss, st, validate), sparse=None)
            validate = False  # (the lists are the checked entries)
        elif validate:
            check_later = sparse._check_now(head.loss, st, True, c.input)
    pos_weight, label_smoothing = c.extras or (None, 0.0)
    grad_on = torch.is_grad_enabled()
    need = (grad_on and input.requires_grad, grad_on and linear_weight.requires_grad,
            grad_on and linear_bias is not None and linear_bias.requires_grad)
    target_args = _op_target_args(c)
    plain = (not torch.compiler.is_compiling() and _pipeline._plain_mode()
             and all(t is None or (t.__class__ in _pipeline._PLAIN and not t.is_meta)
                     for t in (input, linear_weight, linear_bias, *target_args, weight,
                               pos_weight)))
    if plain:
        if True in need:
            loss = _EAGER_APPLY((head, c, reduction, chunk_size, validate, backend, need),
                                c.input, c.linear_weight, c.linear_bias)
        else:
            loss = compute(head, c, reduction, None, chunk_size, validate, backend, need).loss
    else:
        p, margin = options if head.loss == _MM else (1, 1.0)
        loss = OPS[head_loss](c.input, c.linear_weight, *target_args, c.linear_bias, c.weight,
                              pos_weight, None, p, float(margin), float(label_smoothing),
                              reduction, chunk_size or 0, validate, backend,
                              list(need) if reduction != "none" else [False, False, False])[0]
    if reduction == "none" and tuple(loss.shape) != c.none_shape:
        loss = loss.reshape(c.none_shape)
    if check_later:  # on a GPU: NaN now, the error from a later call (no host wait)
        loss = sparse._check_later(head.loss, st, True, loss)
    return loss


# ----------------------------------------------------------------------------------------------
# shortlist heads: the loss over given candidate classes per sample


def shortlist(head_loss: str, input: Tensor, linear_weight: Tensor, target: Tensor,
              candidates: Tensor, *, linear_bias: Tensor | None, weight: Tensor | None,
              options: tuple, reduction: str, validate: bool, backend: str,
              extras: tuple = (), class_sum: bool = False) -> Tensor:
    r"""A head's loss over the candidate classes of each sample (the public functions'
    ``candidates=``): the ``(N, K)`` scores :math:`s_{nk} = h_n \cdot W_{c_{nk}} + b_{c_{nk}}`
    from the gathered rows of ``linear_weight`` (:class:`_CandidateScores`), then the plain
    loss on them with the target in candidate space, its rows rescaled to the real candidates.

    Padding slots (``-1`` or :math:`C`) are not scored: soft margin gives them weight 0, the
    hinges a score of :math:`-\infty` (no term, no gradient, as the fused heads' masked
    columns); each row's loss is the plain loss's over its :math:`K_n` real candidates alone
    (its :math:`1/K` mean rescaled to :math:`1/K_n`, or with ``class_sum`` to the sum over
    the real candidates; a row without any is 0).
    """
    head = HEADS[head_loss]
    fn = head.name
    if reduction not in _reduction.REDUCTIONS:
        reduction = _reduction.resolve(None, None, reduction, fn)
    if (validate is not True and validate is not False) or backend not in _pipeline.BACKENDS:
        _pipeline.check_options(validate, backend, fn)
    x, unbatched = _check_layer(fn, input, linear_weight, linear_bias)
    n_classes = linear_weight.shape[0]
    cand = _check_candidates(fn, candidates, x, unbatched)
    if sparse.is_sparse_target(target):
        raise DtypeError(
            f"{fn}: with `candidates`, `target` is a tensor in candidate space ({_SPACE[head.loss]}"
            f"), got {type(target).__name__ if not isinstance(target, Tensor) else target.layout}."
            f" Convert class-space positives with `marginloss.labels.shortlist_target(positives, "
            f"candidates, num_classes={n_classes})`.")
    weight, options, pos_weight, eps = _class_options(head, x, n_classes, weight, options,
                                                      extras)
    if validate:
        _check_candidate_values(fn, cand, n_classes)
        if pos_weight is not None:
            losses.multilabel_soft_margin_loss.check_pos_weight(
                Call((x,), x, None, (), "none", (False,), (pos_weight, eps)))
    valid = (cand >= 0) & (cand < n_classes)
    idx = torch.where(valid, cand, 0).long()
    n_rows, k = idx.shape
    fill = 0.0 if head.loss == _MSM else float("-inf")
    s = _CandidateScores.apply(x, linear_weight, linear_bias, idx, valid, fill)
    if unbatched and isinstance(target, Tensor):  # (the plain loss on the one row, batched)
        target = target.unsqueeze(0)
    row_weight = None
    try:
        if head.loss == _MSM:
            w = valid.to(x.dtype if weight is None else weight.dtype)
            if weight is not None:
                w = w * (weight[idx] if weight.dim() == 1 else weight.gather(1, idx))
            rows = _functional().multilabel_soft_margin_loss(
                s, target, w, reduction="none", validate=validate, backend=backend,
                label_smoothing=eps)
            if pos_weight is not None:
                rows = (rows + _pos_weight_term(s, target, w, pos_weight[idx], eps)).to(
                    rows.dtype)
        elif head.loss == _MM:
            p, margin = options
            rows = _functional().multi_margin_loss(s, target, p, margin, reduction="none",
                                                   validate=validate, backend=backend)
            y = target.reshape(-1).long().clamp(0, max(k - 1, 0))
            if validate:  # (a row without a real candidate has no term: any target)
                _check_target_slots(fn, valid, y.unsqueeze(1), valid.any(1, keepdim=True))
            if weight is not None and k:
                row_weight = weight[idx.gather(1, y.unsqueeze(1)).squeeze(1)]
        else:
            rows = _functional().multilabel_margin_loss(s, target, reduction="none",
                                                        validate=validate, backend=backend)
            if validate:
                t = target.reshape(n_rows, -1)
                listed = torch.arange(t.shape[1], device=t.device) < _list_lengths(t)[:, None]
                _check_target_slots(fn, valid, t.long().clamp(0, max(k - 1, 0)), listed)
    except (ShapeError, DtypeError) as e:
        raise type(e)(f"{e} (With `candidates`, `input` there means the candidate scores, of "
                      f"shape ({n_rows}, {k}).)") from None
    count = valid.sum(1)
    per_row = torch.full_like(count, k, dtype=torch.float64) if class_sum else \
        k / count.clamp(min=1).to(torch.float64)  # the 1/K mean -> the real candidates' sum/mean
    factor = torch.where(count > 0, per_row, 0.0)
    if row_weight is not None:
        factor = factor * row_weight.to(torch.float64)
    factor = factor.to(rows.dtype).reshape(rows.shape)
    rows = torch.where(factor != 0, rows * factor, 0.0)
    if reduction == "none":
        return rows[0] if unbatched else rows
    return rows.sum() if reduction == "sum" else rows.mean()


_SPACE = {
    _MSM: "(N, K) multi-hot over the K candidates",
    _MM: "(N,), the index in [0, K) of the true class among the candidates",
    _MLM: "(N, K') positions in [0, K) of the positives among the candidates, padded with -1",
}


def _functional():
    from marginloss import functional  # (functional imports this module)

    return functional


def _check_candidates(fn: str, candidates: object, x: Tensor, unbatched: bool) -> Tensor:
    """``candidates`` as ``(N, K)`` class indices (metadata only)."""
    if not isinstance(candidates, Tensor) or candidates.layout is not torch.strided:
        got = candidates.layout if isinstance(candidates, Tensor) else type(candidates).__name__
        raise DtypeError(f"{fn}: `candidates` must be a dense tensor of class indices, shape "
                         f"(N, K), got {got}.")
    if candidates.is_floating_point() or candidates.is_complex() or \
            candidates.dtype == torch.bool:
        raise DtypeError(f"{fn}: `candidates` must hold integer class indices (int64 or "
                         f"int32), got {candidates.dtype}.")
    _checks.check_same_device(fn, "candidates", candidates, x)
    c = candidates.unsqueeze(0) if unbatched and candidates.dim() == 1 else candidates
    if c.dim() != 2 or c.shape[0] != x.shape[0]:
        want = "(K,) for one sample" if unbatched else f"({x.shape[0]}, K)"
        raise ShapeError(f"{fn}: `candidates` must list each sample's candidate classes, shape "
                         f"{want}, got {_checks.shape_str(candidates)}.")
    return c


def _check_candidate_values(fn: str, cand: Tensor, n_classes: int) -> None:
    """Every candidate is a class in ``[0, C)`` or padding (-1 or C); one host read."""
    if cand.numel() == 0:
        return
    bad = (cand < -1) | (cand > n_classes)
    if not bool(bad.any()):
        return
    n, k = (int(i) for i in bad.nonzero()[0])
    raise LabelError(
        f"{fn}: `candidates` holds class {int(cand[n, k])} in sample {n} (slot {k}), outside "
        f"[0, {n_classes}) for the C = {n_classes} rows of `linear_weight`; -1 and {n_classes} "
        f"mark padding. Pass validate=False to skip this check (out-of-range candidates are then "
        f"treated as padding).")


def _check_target_slots(fn: str, valid: Tensor, slots: Tensor, listed: Tensor) -> None:
    """The hinges' target positions (``listed`` ones) point at real candidates."""
    bad = listed & ~valid.gather(1, slots) if valid.shape[1] else listed & False
    if not bool(bad.any()):
        return
    n, j = (int(i) for i in bad.nonzero()[0])
    raise LabelError(
        f"{fn}: `target` points sample {n} at candidate slot {int(slots[n, j])}, which is "
        f"padding (-1 or C) in `candidates`: a target must be a real candidate. Pass "
        f"validate=False to skip this check.")


def _class_options(head: Head, x: Tensor, n_classes: int, weight, options: tuple,
                   extras: tuple) -> tuple:
    """``(weight, options, pos_weight, label_smoothing)`` checked by the plain loss on a
    stand-in for the class-space logits (its errors) and canonical: a weight per class
    ``(C,)`` (soft margin: or per element ``(N, C)``), ``pos_weight`` ``(C,)`` or None."""
    spec = head.spec
    try:
        if head.loss == _MSM:
            f64 = isinstance(weight, Tensor) and weight.dtype == torch.float64
            stub = _logits_stub(x, n_classes, torch.float64 if f64 else None)
            xs, t, w, _, _ = spec.prepare((stub,), stub, weight, ())
            pos_weight, eps = spec.prepare_extras(Call(xs, t, w, (), "none", (False,)),
                                                  extras or (None, 0.0))
            return w, (), pos_weight, eps
        if head.loss == _MM:
            y = torch.zeros((), dtype=torch.int64, device=x.device).expand(x.shape[0])
            _, _, w, opts, _ = spec.prepare((_logits_stub(x, n_classes),), y, weight, options)
            return w, opts, None, 0.0
        return None, (), None, 0.0
    except (ShapeError, DtypeError) as e:
        raise type(e)(f"{e} (For {head.name}, `input` there means the logits `input @ "
                      f"linear_weight.T`, of shape ({x.shape[0]}, {n_classes}).)") from None


def _pos_weight_term(s: Tensor, target: Tensor, w: Tensor, p: Tensor, eps: float) -> Tensor:
    r"""What ``pos_weight`` :math:`p` adds to the soft margin rows computed without it:
    :math:`\frac{1}{K} \sum_k w_k (p_k - 1)\, t_k \operatorname{softplus}(-s_k)`, with
    :math:`t = y (1 - \varepsilon) + \varepsilon / 2` (the per-element loss is affine in
    :math:`p`). Differentiable in the scores."""
    acc = _acc(s.dtype if not target.is_floating_point()
               else _checks.promote_float(s.dtype, target.dtype))
    t = target.to(acc)
    if eps:
        t = t * (1.0 - eps) + 0.5 * eps
    sp = torch.logaddexp(-s.to(acc), s.new_zeros((), dtype=acc))  # softplus(-s)
    k = s.shape[-1]
    return ((w.to(acc) * (p.to(acc) - 1) * t * sp).sum(-1) / max(k, 1))


class _CandidateScores(torch.autograd.Function):
    r"""``scores[n, k] = h_n . W[idx[n, k]] + b[idx[n, k]]`` where ``valid``, ``fill``
    elsewhere: the candidates' rows of ``W`` gathered in blocks of rows (at most ``BUDGET``
    elements at once; never all of ``W``, never all :math:`N K H`), in float32 for half
    precision. Backward, from the scores' gradient :math:`G` (zero at the padding):
    :math:`\partial h_n = \sum_k G_{nk} W_{c_{nk}}` from the same gathers, and each slot's
    :math:`G_{nk} h_n` (and :math:`G_{nk}`) added to row :math:`c_{nk}` of
    :math:`\partial W` (:math:`\partial b`) by :func:`_index_add` (deterministic; a class
    listed twice gets both). Differentiable once."""

    @staticmethod
    def forward(ctx, x, W, b, idx, valid, fill):
        n, k = idx.shape
        acc = _acc(x.dtype)
        out = torch.empty(n, k, dtype=acc, device=x.device)
        for s0, s1 in _row_blocks(n, k * x.shape[1]):
            wt = W[idx[s0:s1]].to(acc)  # (r, K, H)
            torch.bmm(wt, x[s0:s1].to(acc).unsqueeze(2), out=out[s0:s1].unsqueeze(2))
        if b is not None:
            out += b[idx].to(acc)
        ctx.save_for_backward(x, W, idx, valid)
        ctx.has_bias = b is not None
        return out.masked_fill_(~valid, fill).to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, W, idx, valid = ctx.saved_tensors
        n, k = idx.shape
        hidden = x.shape[1]
        acc = _acc(x.dtype)
        g = grad.to(acc).masked_fill(~valid, 0.0)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = torch.empty(n, hidden, dtype=acc, device=x.device) if need_x else None
        gw = torch.zeros(W.shape, dtype=acc, device=W.device) if need_w else None
        for s0, s1 in _row_blocks(n, k * hidden):
            if need_x:
                wt = W[idx[s0:s1]].to(acc)
                torch.bmm(g[s0:s1].unsqueeze(1), wt, out=gx[s0:s1].unsqueeze(1))
            if need_w:
                vals = g[s0:s1].unsqueeze(2) * x[s0:s1].to(acc).unsqueeze(1)  # (r, K, H)
                _index_add(gw, idx[s0:s1].reshape(-1), vals.reshape(-1, hidden))
        gb = None
        if need_b and ctx.has_bias:
            gb = torch.zeros(W.shape[0], dtype=acc, device=W.device)
            _index_add(gb, idx.reshape(-1), g.reshape(-1))
        return (None if gx is None else gx.to(x.dtype), None if gw is None else gw.to(W.dtype),
                None if gb is None else gb.to(W.dtype), None, None, None)


def _row_blocks(n_rows: int, per_row: int):
    """``(start, stop)`` blocks of rows of about ``BUDGET`` elements."""
    step = max(1, BUDGET // max(per_row, 1))
    for s0 in range(0, n_rows, step):
        yield s0, min(n_rows, s0 + step)
