r"""``multilabel_margin_loss``: the multi-label hinge (ranking) loss over -1-padded index lists.

Row :math:`n` lists its targets :math:`T` left to right up to the first negative entry
(a class listed twice counts twice); :math:`k` runs over the non-target classes:

.. math::
    \ell_n = \frac{1}{C} \sum_{t \in T} \sum_{k \notin T} [1 - x_t + x_k]_+ .

torch loops over all :math:`|T| \cdot C` pairs. Here the cost is :math:`O(C \log |T|)` per row:
sort the target scores :math:`S_1 \le \dots \le S_K`; for each non-target :math:`k`,
:math:`c_k = \#\{j : S_j < 1 + x_k\}` (a binary search) is the number of active pairs it is in,
and :math:`d_j = \#\{k : c_k > j\}` the number target :math:`j` is in. Then

.. math::
    C \ell_n = \sum_{k : c_k > 0} c_k (1 + x_k) - \sum_{j : d_j > 0} d_j S_j, \qquad
    C \frac{\partial \ell_n}{\partial x_k} = c_k, \qquad
    C \frac{\partial \ell_n}{\partial x_{t_j}} = -d_j .

Terms with a zero count are left out rather than multiplied by 0, so scores of :math:`\pm\infty`
(a masked class) give torch's result instead of :math:`0 \cdot \infty = \text{nan}`. The two
sums are accumulated in float64 so their difference keeps full precision.

Canonical call: ``input`` ``(N, C)`` (a 0-d or ``(C,)`` input is one row), ``target`` ``(N, C)``
integer class indices padded with -1, or narrower, ``(N, W)`` with :math:`W \le C` (the same
rows without their padding columns; the torch backend and the Triton kernel take it as it is;
the C kernel reads full rows, so on the CPU such a call runs on the torch backend).
"""

from __future__ import annotations

import torch
from torch import Tensor

from marginloss import _checks
from marginloss.backends._common import grad_scale, reduce_rows
from marginloss.errors import LabelError, ShapeError
from marginloss.losses._spec import KERNELS, Call, LossSpec, Result

NAME = "multilabel_margin_loss"
_BLOCK = 1 << 18  # elements per block of rows


def prepare(inputs: tuple[Tensor, ...], target: Tensor, weight: None, options: tuple):
    """Shapes and dtypes; the canonical ``(N, C)`` views."""
    (input,) = inputs
    _checks.check_input(NAME, input)
    _checks.check_target_tensor(NAME, target, input)
    n_classes = _checks.check_rows_input(NAME, input)
    _checks.check_integer_target(
        NAME, target, "class indices padded with -1",
        "For a 0/1 multi-hot mask use `multilabel_soft_margin_loss`, or convert it with "
        "`marginloss.labels.multi_hot_to_padded(target)`.",
    )
    # a 2-D target may be narrower than the input, (N, W) with 1 <= W <= C: the rows padded
    # with -1 up to C, without the padding (marginloss.sparse builds such targets)
    ok = (target.dim() == 2 and target.shape[0] == input.shape[0]
          and 1 <= target.shape[1] <= n_classes) if input.dim() == 2 else (
        target.dim() <= 1 and target.numel() == n_classes)
    if not ok:
        raise ShapeError(
            f"{NAME}: `target` must have the input's shape {_checks.shape_str(input)} (or be "
            f"narrower: (N, W), W <= C): each row lists the sample's class indices, padded "
            f"with -1; got {_checks.shape_str(target)}. Build it from label sets with "
            f"`marginloss.labels.sets_to_padded(sets, num_classes={n_classes})`, or pass the "
            f"positives as a sparse target (see marginloss.sparse)."
        )
    x = _checks.as_rows(input)
    none_shape = () if target.dim() <= 1 else (x.shape[0],)
    target = target if target.dim() == 2 else target.reshape(x.shape)
    return (x,), target, None, (), none_shape


def check_labels(call: Call) -> None:
    """Entries lie in ``[-1, C)`` and the target is not a 0/1 mask (else :class:`LabelError`)."""
    target, n_classes = call.target, call.input.shape[1]
    if target.numel() == 0:
        return
    lo, hi = _checks.read_back(*torch.aminmax(target))
    mask_like = lo >= 0 and hi <= 1 and n_classes > 2 and target.shape[1] == n_classes
    if lo >= -1 and hi < n_classes and not mask_like:
        return
    if mask_like:
        raise LabelError(
            f"{NAME}: `target` looks like a 0/1 multi-hot mask (only 0 and 1, no -1 padding), "
            f"but this loss takes class-index lists padded with -1 (row [3, 0, -1, -1] means "
            f"classes 3 and 0). Convert with `marginloss.labels.multi_hot_to_padded(target)`, or "
            f"use `multilabel_soft_margin_loss`, which takes the mask directly. If you really "
            f"mean index lists made of 0s and 1s without padding, pass validate=False."
        )
    raise LabelError(
        f"{NAME}: `target` entries must be class indices in [0, {n_classes}) or -1 (padding), "
        f"but its values range over [{int(lo)}, {int(hi)}]. Pass validate=False to skip this "
        f"check (out-of-range indices then give undefined results)."
    )


def torch_compute(call: Call) -> Result:
    """The sort-based algorithm of the module docstring, in blocks of rows."""
    input, target = call.input, call.target
    dev = input.device
    n_rows, n_cols = input.shape
    scale = grad_scale(SPEC, call) / n_cols
    grad = torch.empty_like(input) if call.need_grad[0] else None
    rows = torch.zeros(n_rows, dtype=torch.float64, device=dev)
    cols = torch.arange(n_cols, device=dev)
    step = max(1, _BLOCK // n_cols)
    ubuf = torch.empty(min(n_rows, step), n_cols, dtype=torch.float64, device=dev)
    for s in range(0, n_rows, step):
        e = min(n_rows, s + step)
        t = target[s:e]
        has_end, first = (t < 0).max(dim=1)  # the first -1 of each row (max returns the first)
        first = first.masked_fill_(~has_end, t.shape[1])  # list length per row
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
        cf, df = c.to(torch.float64), d.to(torch.float64)
        # only terms with a non-zero count: a score of -inf with count 0 adds 0, not nan
        pos = torch.where(c > 0, cf * upper, 0.0).sum(1)
        neg = torch.where(d > 0, df * srt, 0.0).sum(1)
        rows[s:e] = pos - neg
        if grad is not None:
            gs = grad[s:e]
            gs.copy_(cf.mul_(scale))  # c_k / C for the non-targets, 0 for the targets
            gs.scatter_add_(1, idx.gather(1, order), df.mul_(-scale).to(gs.dtype))
    rows /= n_cols
    return Result(reduce_rows(rows, call.reduction, input.dtype), (grad,))


def sample(n: int, c: int, *, dtype=torch.float32, device="cpu", generator=None,
           positives: int = 16):
    """Scores ``(n, c)`` and rows of ``positives`` distinct classes each, padded with -1."""
    x = torch.randn(n, c, generator=generator).to(device=device, dtype=dtype)
    k = min(positives, c)
    y = torch.full((n, c), -1, dtype=torch.long)
    y[:, :k] = torch.rand(n, c, generator=generator).argsort(1)[:, :k]
    return (x,), y.to(device), {}


SPEC = LossSpec(
    name=NAME,
    module="MultiLabelMarginLoss",
    convention="integer (N, C), class indices padded with -1 (the list ends at the first -1)",
    backends=KERNELS,
    fused_label_check=("native", "triton"),  # the C and Triton kernels count bad labels
    prepare=prepare,
    check_labels=check_labels,
    torch_compute=torch_compute,
    sample=sample,
    benchmark_cases=({"n": 1024, "c": 1024, "positives": 16},
                     {"n": 256, "c": 2048, "positives": 1024}),
)
