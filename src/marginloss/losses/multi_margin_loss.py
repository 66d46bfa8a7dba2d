r"""``multi_margin_loss``: the multi-class hinge (torch's definition, Weston-Watkins style).

For row :math:`n` with target class :math:`y`, :math:`C` classes, class weight :math:`w` and
:math:`z_j = \text{margin} - x_y + x_j` (computed as :math:`x_j - (x_y - \text{margin})`, ATen's
rounding):

.. math::
    \ell_n = \frac{w_y}{C} \sum_{j \ne y} [z_j]_+^p, \qquad
    \frac{\partial \ell_n}{\partial x_j} = \frac{w_y}{C}\, p\, z_j^{p-1}\, [z_j > 0]
    \;(j \ne y), \qquad
    \frac{\partial \ell_n}{\partial x_y} = -\sum_{j \ne y} \frac{\partial \ell_n}{\partial x_j}.

The weight is the target class's and multiplies after the power (as ATen does; older torch docs
put it inside). The subgradient at :math:`z = 0` is 0 (strict ``z > 0``).

Canonical call: ``input`` ``(N, C)`` (a 0-d or ``(C,)`` input is one row), ``target`` ``(N,)``
integer class indices, ``weight`` ``(C,)`` or None, options ``(p, margin)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from marginloss import _checks
from marginloss.backends._common import acc_dtype, grad_scale, reduce_rows
from marginloss.errors import LabelError, ShapeError
from marginloss.losses._spec import KERNELS, Call, LossSpec, Option, Result

NAME = "multi_margin_loss"
_BLOCK = 1 << 18  # elements per block of rows


def check_p(fn: str, p: object) -> int:
    if p != 1 and p != 2:
        raise ValueError(f"{fn}: `p` must be 1 or 2, got {p!r}.")
    return int(p)


def prepare(inputs: tuple[Tensor, ...], target: Tensor, weight: Tensor | None, options: tuple):
    """Shapes, dtypes and options; the canonical views."""
    (input,) = inputs
    p, margin = options
    p = check_p(NAME, p)
    _checks.check_input(NAME, input)
    _checks.check_target_tensor(NAME, target, input)
    n_classes = _checks.check_rows_input(
        NAME, input, " Flatten the leading dimensions first, e.g. `input.reshape(-1, C)` and "
                     "`target.reshape(-1)`.")
    n_rows = input.shape[0] if input.dim() == 2 else 1
    _checks.check_integer_target(
        NAME, target, "class indices",
        "If these are class indices stored as floats, use `target.long()`; if they are one-hot "
        "rows, use `target.argmax(-1)`.",
    )
    if target.dim() > 1 or target.numel() != n_rows:
        hint = ""
        if target.shape == input.shape and input.dim() == 2:
            hint = (
                " A target with the input's shape looks like one-hot/multi-hot rows: use "
                "`target.argmax(-1)` for one class per row, or `multilabel_margin_loss` / "
                "`multilabel_soft_margin_loss` for several."
            )
        raise ShapeError(
            f"{NAME}: `target` must hold one class index per sample, shape ({n_rows},), for "
            f"`input` of shape {_checks.shape_str(input)}; got {_checks.shape_str(target)}."
            f"{hint}"
        )
    if weight is not None:
        _checks.check_weight_tensor(NAME, weight, input)
        if weight.dim() != 1 or weight.numel() != n_classes:
            raise ShapeError(
                f"{NAME}: `weight` must be one-dimensional with one entry per class, shape "
                f"({n_classes},); got {_checks.shape_str(weight)}."
            )
    x = _checks.as_rows(input)
    none_shape = () if target.dim() == 0 else (n_rows,)
    target = target if target.dim() == 1 else target.reshape(-1)
    return (x,), target, weight, (p, float(margin)), none_shape


def check_labels(call: Call) -> None:
    """Every index lies in ``[0, C)`` (else :class:`LabelError`)."""
    target, n_classes = call.target, call.input.shape[1]
    if target.numel() == 0:
        return
    lo, hi = _checks.read_back(*torch.aminmax(target))
    if lo >= 0 and hi < n_classes:
        return
    hint = " If your classes are numbered from 1, use `target - 1`." if hi == n_classes else ""
    raise LabelError(
        f"{NAME}: `target` must hold class indices in [0, {n_classes}) for C = {n_classes} "
        f"classes, but its values range over [{int(lo)}, {int(hi)}].{hint} "
        f"Pass validate=False to skip this check (out-of-range indices then give undefined "
        f"results)."
    )


def torch_compute(call: Call) -> Result:
    """The loss and gradient in blocks of rows, one scratch buffer reused across blocks."""
    input, target, weight = call.input, call.target, call.weight
    p, margin = call.options
    acc = acc_dtype(input.dtype)
    n_rows, n_cols = input.shape
    scale = grad_scale(SPEC, call) / n_cols
    grad = torch.empty_like(input) if call.need_grad[0] else None
    rows = torch.empty(n_rows, dtype=acc, device=input.device)
    w = weight.to(acc) if weight is not None else None
    step = max(1, _BLOCK // n_cols)
    zbuf = torch.empty(min(step, n_rows), n_cols, dtype=acc, device=input.device)
    for s in range(0, n_rows, step):
        e = min(n_rows, s + step)
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
        if grad is not None:
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
    return Result(reduce_rows(rows, call.reduction, input.dtype), (grad,))


def sample(n: int, c: int, *, dtype=torch.float32, device="cpu", generator=None, p: int = 1,
           margin: float = 1.0, weighted: bool = False):
    """Scores ``(n, c)``, one class index per row, and the options."""
    x = torch.randn(n, c, generator=generator).to(device=device, dtype=dtype)
    y = torch.randint(0, c, (n,), generator=generator).to(device)
    kwargs = {"p": p, "margin": margin}
    if weighted:
        kwargs["weight"] = (torch.rand(c, generator=generator) + 0.5).to(device=device,
                                                                         dtype=dtype)
    return (x,), y, kwargs


SPEC = LossSpec(
    name=NAME,
    module="MultiMarginLoss",
    convention="integer (N,), one class index in [0, C) per sample",
    weighted=True,
    options=(Option("p", "int", 1), Option("margin", "float", 1.0)),
    backends=KERNELS,
    fused_label_check=("native", "triton"),  # the C and Triton kernels count bad labels
    prepare=prepare,
    check_labels=check_labels,
    torch_compute=torch_compute,
    sample=sample,
    benchmark_cases=({"n": 1024, "c": 1024}, {"n": 1024, "c": 4096},
                     {"n": 1024, "c": 1024, "p": 2}),
)
