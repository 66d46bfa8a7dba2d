r"""``soft_margin_loss``: the two-class logistic loss, elementwise, and its gradient in one pass.

With score :math:`x`, label :math:`y \in \{-1, +1\}` and :math:`v = -y x`:

.. math::
    \ell = \operatorname{softplus}(v) = \max(v, 0) + \log(1 + e^{-|v|}), \qquad
    \frac{\partial \ell}{\partial x} = -y\, \sigma(v)

(:math:`\partial \operatorname{softplus}(v) / \partial v = \sigma(v)`, :math:`\partial v /
\partial x = -y`). Nothing overflows; softplus and sigmoid share one exponential and one
reciprocal, and the tail :math:`\log(1 + e^{-|v|})` is a polynomial in
:math:`s = e^{-|v|} / (2 + e^{-|v|})` added last, so a confident, correct score keeps its tiny
loss's relative accuracy (:func:`~marginloss.kernels._common.logistic`: within about 4e-7
relative of float64 for the loss and the gradient, wherever they are normal floats). Math runs
in float32 whatever the input dtype (float16 / bfloat16 / float32); results are rounded once,
on the store. NaN propagates; at :math:`v = +\infty` the loss is :math:`\infty` and the gradient
its limit :math:`-y`.

Label check (``check=True``), in the same pass: each program counts its labels with
:math:`|y| \ne 1` (NaN included) into an int32 slot; torch adds the slots (``bad_labels``, a 0-d
int64 on the device, no host read). A bool target is a {0, 1} mask by its dtype: every label
counts as bad (decided from the dtype, not the values).

Layout: input and target are read as flat vectors of :math:`n = N C` elements (a non-contiguous
input or a broadcast target is made contiguous first; an integer or bool target is read as it
is and converted in the kernel). The shared
:func:`~marginloss.kernels._common.logistic_flat_kernel` gives each program a span of whole
``BLOCK``\ s (:func:`~marginloss.kernels._common.flat_span`: one block per program up to about a
thousand programs, up to 16 blocks each beyond), read and written without masks, so every load
and store is a 16-byte vector whatever :math:`n` is; the last program finishes with one masked
block. The ``"mean"`` scale :math:`1/n` is folded into the gradient. Reductions are
deterministic (no atomics): each program writes the float32 sum of its span, and torch adds
those partial sums (fixed order).

Memory traffic per element, the minimum for a fused loss: read the score and the label, write
the gradient (12 bytes in float32, 6 in bfloat16), plus the elementwise loss for
``reduction="none"``; one float32 (and one int32 with ``check``) per program. Extra memory: the
partial sums.

Instruction budget (sm_90 SASS, the main loop per element; ``benchmarks/sm90_compile_check.py``
measures it): about 29 for float32 and 31 for bfloat16, with gradient and a reduced loss, where
the H200's bandwidth leaves 84 and 42 (4.8 TB/s against 1.045e12 warp instructions per second:
``bytes / 4.8e12 * 32 * 1.045e12``), so the kernel is bound by memory, not by issue.
"""

from __future__ import annotations

import torch

from marginloss.backends._common import grad_scale
from marginloss.kernels._common import (
    flat_outputs,
    flat_result,
    logistic_flat_kernel,
    ptx_allowed,
)
from marginloss.losses._spec import Call, Result
from marginloss.losses.soft_margin_loss import SPEC

BLOCK = 2048  # elements per step of a program: 8 per thread at 8 warps


def launch(call: Call, check: bool = False) -> Result:
    """The loss and gradient of ``call`` (the contract of ``SPEC.torch_compute``); with
    ``check``, also ``bad_labels``: the number of labels with ``|y| != 1`` (NaN included), a
    0-d int64 tensor on the input's device.

    ``call.input`` and ``call.target`` are ``(N, C)`` (the target possibly a stride-0
    broadcast view, or integer / bool). Traceable: shapes decide everything.
    """
    input, target = call.input, call.target
    need_grad, reduce = call.need_grad[0], call.reduction != "none"
    out_dtype = SPEC.out_dtype(call)
    dev = input.device
    # (1) the layout the kernel reads: flat and contiguous
    x = input.reshape(-1)  # a copy only if the input is not contiguous
    y = target.reshape(-1)  # a copy only if the target is not (a broadcast target)
    n = x.numel()
    # (2) allocate
    out = flat_outputs(n, BLOCK, reduce, check, out_dtype, dev)
    grad = torch.empty(n, dtype=input.dtype, device=dev) if need_grad else None
    # (3) launch
    if n:
        torch.library.wrap_triton(logistic_flat_kernel)[(out.n_programs,)](
            x, y, None, out.loss, out.partial, out.bad, grad,
            n, out.span, grad_scale(SPEC, call),
            MULTILABEL=False, HAS_WEIGHT=False, STORE_LOSS=not reduce, REDUCE=reduce,
            NEED_GRAD=need_grad, CHECK=check, BLOCK=BLOCK,
            PTX=ptx_allowed(logistic_flat_kernel),
            num_warps=max(1, min(8, BLOCK // 256)), enable_fp_fusion=True,
        )
    grads = (None if grad is None else grad.view(input.shape),)
    # a bool target is a {0, 1} mask by its dtype: every label is bad
    return flat_result(call, out, grads, input.shape, out_dtype, n,
                       all_bad=target.dtype == torch.bool)
