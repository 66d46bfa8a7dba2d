r"""``cosine_embedding_loss``: pairs labelled similar (+1) or dissimilar (-1), by cosine.

For row :math:`n` with vectors :math:`x_1, x_2` of :math:`D` features, label :math:`y` and
margin :math:`\mu`, with torch's :math:`\epsilon = 10^{-12}` (rounded to float32, as ATen's
constant) added to each squared norm,

.. math::
    c = \frac{\sum_j x_{1j} x_{2j}}{\sqrt{(\lVert x_1 \rVert^2 + \epsilon)
        (\lVert x_2 \rVert^2 + \epsilon)}}, \qquad
    \ell_n = \begin{cases} 1 - c & y = 1 \\ [c - \mu]_+ & y = -1 \\ 0 & \text{otherwise}
    \end{cases}

(the last case is what torch computes for a label outside {-1, +1}; with ``validate=True``
such labels raise instead). With :math:`s = \partial \ell_n / \partial c` (-1 for
:math:`y = 1`; 1 for :math:`y = -1` when :math:`c \ge \mu`, torch's ``clamp_min`` passing the
gradient at 0; else 0) and :math:`r_i = \lVert x_i \rVert^2 + \epsilon`,

.. math::
    \frac{\partial \ell_n}{\partial x_1} = s \Bigl(\frac{x_2}{\sqrt{r_1 r_2}}
        - c\,\frac{x_1}{r_1}\Bigr), \qquad
    \frac{\partial \ell_n}{\partial x_2} = s \Bigl(\frac{x_1}{\sqrt{r_1 r_2}}
        - c\,\frac{x_2}{r_2}\Bigr).

**Stable.** Each vector is scaled by :math:`\sigma_i = \max(\max_j |x_{ij}|, \sqrt\epsilon)`
first: :math:`r_i = \sigma_i^2 (\lVert x_i / \sigma_i \rVert^2 + \epsilon / \sigma_i^2)` with both
terms in :math:`[0, D]`, so nothing overflows (torch's :math:`\lVert x \rVert^2` is ``inf``,
and the loss NaN, from :math:`|x| \approx 2 \cdot 10^{19}` in float32 and bfloat16, 256 in
float16) and the :math:`\epsilon` semantics stay torch's: a zero vector has :math:`c = 0` and a
finite gradient (:math:`x_2 / (10^{-6} \lVert x_2 \rVert)` for :math:`x_1 = 0`, as torch).

The margin is a cosine, so it lives in [-1, 1] (0 to 0.5 is usual); torch takes any float and so
does this loss (:math:`\mu \ge 1` makes every dissimilar pair's loss 0; :math:`\mu < -1` makes
it :math:`c - \mu`, never 0).

Canonical call: ``inputs`` ``(input1, input2)`` contiguous ``(N, D)`` of one floating dtype
(broadcast together; a 1-D pair is one row); ``target`` ``(N,)``, contiguous, float32 when the
user's labels convert exactly (integers, bool, float16/bfloat16; float64 stays float64);
options ``(margin,)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from marginloss import _checks
from marginloss.backends._common import acc_dtype, grad_scale, reduce_rows
from marginloss.errors import LabelError, ShapeError
from marginloss.losses import _embedding
from marginloss.losses._spec import KERNELS, Call, LossSpec, Option, Result

NAME = "cosine_embedding_loss"
EPS = 9.999999960041972e-13  # torch's EPSILON (1e-12 rounded to float32), added to r_i
SQRT_EPS = math.sqrt(EPS)  # about 1e-6: the smallest scale of a vector


def prepare(inputs: tuple[Tensor, ...], target: Tensor, weight, options: tuple):
    """Ranks (torch's rules), broadcasting, dtypes; the canonical rows and labels."""
    x1, x2 = inputs
    (margin,) = options
    _embedding.check_vectors(NAME, {"input1": x1, "input2": x2})
    _checks.check_target_tensor(NAME, target, x1)
    if target.dim() > 1:
        raise ShapeError(
            f"{NAME}: 0D or 1D target tensor expected, multi-target not supported: `target` "
            f"has shape {_checks.shape_str(target)}. Give one label (+1 similar, -1 "
            f"dissimilar) per pair: shape (N,) for (N, D) inputs.")
    want = target.dim() + 1
    if x1.dim() != want or x2.dim() != want:
        raise ShapeError(
            f"{NAME}: {target.dim()}D target tensor expects {want}D input tensors, but found "
            f"inputs with sizes {list(x1.shape)} and {list(x2.shape)}. Use (N, D) inputs with "
            f"an (N,) target, or (D,) inputs with a 0-d target.")
    shape = _embedding.broadcast(NAME, {"input1": x1, "input2": x2})
    if want == 2:
        try:
            n_rows = torch.broadcast_shapes(target.shape, shape[:1])
        except RuntimeError:
            raise ShapeError(
                f"{NAME}: `target` of shape {_checks.shape_str(target)} does not fit "
                f"{shape[0]} pairs of inputs; give one label per pair.") from None
        shape = torch.Size((*n_rows, shape[1]))
    dtype = _embedding.float_dtype(x1, x2)
    rows = (_embedding.as_rows(x1, shape, dtype), _embedding.as_rows(x2, shape, dtype))
    t = target
    if t.dtype != torch.float32 and t.dtype != torch.float64:
        t = t.to(torch.float32)  # exact for every integer (no other value rounds to +-1)
    t = t.reshape(1) if t.dim() == 0 else t
    if t.shape[0] != rows[0].shape[0]:
        t = t.expand(rows[0].shape[0])
    return rows, t.contiguous(), None, (float(margin),), tuple(shape[:-1])


def check_labels(call: Call) -> None:
    """``target`` holds only -1 and +1 (else :class:`LabelError`, with the likely fix)."""
    target = call.target
    if target.numel() == 0:
        return
    lo, hi = _checks.read_back(*_checks.abs_range(target))
    if lo == 1 and hi == 1:
        return
    seen = _checks.values_preview(target)
    values = set(torch.unique(target).tolist())
    if values <= {0, 1}:
        fix = ("It looks like {0, 1} labels, for which torch's loss is silently 0 at every "
               "label 0 (those pairs are never pushed apart). Convert them with "
               "`marginloss.labels.to_pm1(target)` (that is, `2 * target - 1`).")
    elif lo != lo or hi != hi:
        fix = "Remove the NaN labels."
    else:
        fix = ("Each pair is either similar (+1: loss 1 - cos) or dissimilar (-1: loss "
               "max(0, cos - margin)); torch gives a loss of 0 to any other label.")
    raise LabelError(
        f"{NAME}: `target` must hold labels in {{-1, +1}} (+1: similar pair, -1: dissimilar), "
        f"but it holds {seen}. {fix} Pass validate=False to skip this check.")


def torch_compute(call: Call) -> Result:
    """The loss and both gradients in torch ops, with scaled (overflow-free) norms."""
    x1, x2 = call.inputs
    (margin,) = call.options
    out = x1.dtype
    acc = acc_dtype(out)
    x1, x2 = x1.to(acc), x2.to(acc)
    y = call.target
    n_rows, n_cols = x1.shape
    s1 = x1.abs().amax(dim=1, keepdim=True).clamp_min_(SQRT_EPS) if n_cols else \
        x1.new_full((n_rows, 1), SQRT_EPS)
    s2 = x2.abs().amax(dim=1, keepdim=True).clamp_min_(SQRT_EPS) if n_cols else \
        x2.new_full((n_rows, 1), SQRT_EPS)
    h1, h2 = x1 / s1, x2 / s2
    r1 = (h1 * h1).sum(dim=1, keepdim=True) + (SQRT_EPS / s1) ** 2  # r_1 / s_1^2
    r2 = (h2 * h2).sum(dim=1, keepdim=True) + (SQRT_EPS / s2) ** 2
    inv = (r1 * r2).rsqrt()
    cos = (h1 * h2).sum(dim=1, keepdim=True) * inv
    pos, neg = y == 1, y == -1
    c = cos.squeeze(1)
    hinge = c - margin
    rows = torch.where(pos, 1 - c, 0.0) + torch.where(neg, hinge.clamp_min(0), 0.0)
    loss = reduce_rows(rows.to(acc), call.reduction, out)
    if not any(call.need_grad):
        return Result(loss, (None, None))
    slope = torch.where(pos, -1.0, torch.where(neg & (hinge >= 0), 1.0, 0.0)).to(acc)
    slope = (slope * grad_scale(SPEC, call)).unsqueeze(1)
    g1 = slope * (h2 * inv - cos * h1 / r1) / s1 if call.need_grad[0] else None
    g2 = slope * (h1 * inv - cos * h2 / r2) / s2 if call.need_grad[1] else None
    return Result(loss, tuple(None if g is None else g.to(out) for g in (g1, g2)))


def sample(n: int, c: int, *, dtype=torch.float32, device="cpu", generator=None):
    """Pairs of ``c``-dimensional embeddings (the second a noisy copy of the first) and ±1
    labels, about half of each."""
    x1 = torch.randn(n, c, generator=generator)
    x2 = x1 + 1.5 * torch.randn(n, c, generator=generator)
    y = (torch.randint(0, 2, (n,), generator=generator) * 2 - 1).float()
    return (x1.to(device=device, dtype=dtype), x2.to(device=device, dtype=dtype)), \
        y.to(device=device), {}


SPEC = LossSpec(
    name=NAME,
    module="CosineEmbeddingLoss",
    convention="float (N,), +1 (similar pair) or -1 (dissimilar pair)",
    inputs=("input1", "input2"),
    options=(Option("margin", "float", 0.0),),
    backends=KERNELS,
    fused_label_check=("native", "triton"),
    prepare=prepare,
    check_labels=check_labels,
    torch_compute=torch_compute,
    sample=sample,
    benchmark_cases=({"n": 4096, "c": 512},),
)
