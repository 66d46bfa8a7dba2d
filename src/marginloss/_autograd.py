"""The autograd Function behind every loss: forward computes the loss *and* its input gradient.

All four losses are cheap elementwise or per-row maps whose gradient falls out of the same
quantities as the loss. So the forward pass (a backend: lean torch ops, or a Triton kernel)
returns ``(loss, grad)`` where ``grad = d loss / d input`` for a unit upstream gradient, and
backward only scales it:

    d L / d input = grad * grad_output        (broadcast over the reduced class dimension)

When ``grad_output`` is exactly 1 (the usual ``loss.backward()`` on a reduced loss, checked only
for CPU tensors, where reading it costs no device synchronisation) the stored tensor is returned
as is. The stored gradient is handed over to autograd on the first backward call; a second call
(``retain_graph=True``) recomputes it from the saved inputs, so repeated backward stays correct.

The functions are differentiable once: a backward pass with ``create_graph=True`` (needed for
higher-order gradients, e.g. a gradient penalty) raises an error instead of returning a
gradient that silently carries no graph.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Compute = Callable[..., tuple[Tensor, Tensor | None]]


class FusedLossFunction(torch.autograd.Function):
    """``apply(compute, go_shape, input, target, weight, *options)`` -> loss.

    ``compute(input, target, weight, *options, need_grad=...)`` returns ``(loss, grad)``;
    ``go_shape`` is the shape ``grad_output`` is viewed as before it multiplies ``grad``.
    """

    @staticmethod
    def forward(ctx, compute: Compute, go_shape: tuple[int, ...], input: Tensor, target: Tensor,
                weight: Tensor | None, *options):
        need_grad = ctx.needs_input_grad[2]
        loss, grad = compute(input, target, weight, *options, need_grad=need_grad)
        if need_grad:
            ctx.compute, ctx.options, ctx.go_shape = compute, options, go_shape
            ctx.save_for_backward(input, target, weight)
            ctx.grad = grad
        return loss

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: a higher-order gradient was asked for
            raise RuntimeError(
                "marginloss losses are differentiable once: backward with create_graph=True "
                "(higher-order gradients, gradient penalties) is not supported. Use the "
                "torch.nn.functional version of this loss for higher-order gradients."
            )
        grad = getattr(ctx, "grad", None)
        if grad is None:  # second backward through the same graph: recompute
            input, target, weight = ctx.saved_tensors
            _, grad = ctx.compute(input, target, weight, *ctx.options, need_grad=True)
        else:
            del ctx.grad  # hand the tensor over: autograd may then use it as .grad without a copy
        if not (grad_output.device.type == "cpu" and grad_output.numel() == 1
                and grad_output.item() == 1):
            grad = (grad * grad_output.reshape(ctx.go_shape)).to(grad.dtype)
        return None, None, grad, None, None, *([None] * len(ctx.options))


def run(function: type[FusedLossFunction], compute: Compute, go_shape: tuple[int, ...],
        input: Tensor, target: Tensor, weight: Tensor | None, *options) -> Tensor:
    """``function.apply(...)`` when a gradient may be asked for; otherwise the loss alone,
    without autograd's bookkeeping (evaluation loops, ``torch.no_grad()``)."""
    if input.requires_grad and torch.is_grad_enabled():
        return function.apply(compute, go_shape, input, target, weight, *options)
    return compute(input, target, weight, *options, need_grad=False)[0]


class SoftMarginLossFunction(FusedLossFunction):
    """Fused forward+gradient of :func:`marginloss.functional.soft_margin_loss`."""


class MultiLabelSoftMarginLossFunction(FusedLossFunction):
    """Fused forward+gradient of :func:`marginloss.functional.multilabel_soft_margin_loss`."""


class MultiMarginLossFunction(FusedLossFunction):
    """Fused forward+gradient of :func:`marginloss.functional.multi_margin_loss`."""


class MultiLabelMarginLossFunction(FusedLossFunction):
    """Fused forward+gradient of :func:`marginloss.functional.multilabel_margin_loss`."""
