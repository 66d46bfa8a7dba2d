r"""Every loss as a registered PyTorch operator: ``torch.ops.marginloss.<loss>``.

For each :class:`~marginloss.losses._spec.LossSpec` in :data:`~marginloss.losses.LOSSES` this
module registers, with :mod:`torch.library`:

* the operator ``marginloss::<name>`` (``custom_op``), whose schema follows the spec::

      (Tensor input, [Tensor input2, ...], Tensor target, [Tensor? weight], <options>,
       <extras>, str reduction, bool validate, str backend, bool[] need_grad)
      -> (Tensor, Tensor, ...)

  (``<extras>``: the loss's own options beyond torch's, e.g. ``Tensor? pos_weight``.)

  It returns the loss and, for each differentiable input, its gradient for a unit upstream
  gradient (an empty tensor where ``need_grad`` is False): the loss and its gradient come from
  one fused pass. Its implementation picks the backend (``"auto"`` is resolved at run time, so
  an exported program runs wherever it is loaded), checks the labels (a host read; inside the
  operator, so a compiled graph never breaks on it) and runs the kernel;
* a fake implementation (shapes and dtypes only, for FakeTensor tracing: ``torch.compile``,
  ``torch.export``, the meta device);
* a ``vmap`` rule that folds the vmapped dimension into the rows (one call, not a loop), so
  ``torch.func.vmap`` and per-sample gradients (``vmap(grad(...))``) cost one kernel launch;
* its autograd formula (``register_autograd`` with ``setup_context``): backward scales the
  stored gradient by the upstream gradient;
* ``marginloss::<name>_triton`` (``triton_op``), the same operator for the Triton backend
  with its kernels visible to the compiler (``wrap_triton``), used by traced CUDA calls that
  do not check labels.

The autograd formula is also wrapped in a ``setup_context``-style
:class:`torch.autograd.Function` per operator (:data:`FUNCTIONS`), which is what the pipeline
calls in traced code: ``torch.func`` transforms reject the autograd wrapper that
``register_autograd`` generates in torch <= 2.13 (pytorch/pytorch#170834), while they accept
such a Function around the operator. Both routes run the same :func:`setup_context` and
:func:`backward`.

Differentiable once: a backward with ``create_graph=True`` (or nested ``torch.func.grad`` /
``jacrev(grad(...))``) raises instead of returning a second derivative that would silently be
missing its curvature term.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from marginloss import _deferred, backends
from marginloss.backends._common import acc_dtype
from marginloss.errors import LabelError
from marginloss.losses import LOSSES
from marginloss.losses._spec import Call, LossSpec, Result

NAMESPACE = "marginloss"
_TAIL = ("reduction", "validate", "backend", "need_grad")  # the arguments after the options


# ----------------------------------------------------------------------------------------------
# arguments: the operator's flat argument list <-> a Call


def arg_names(spec: LossSpec) -> tuple[str, ...]:
    """The operator's argument names, in order."""
    return (*spec.inputs, *(("target",) if spec.has_target else ()),
            *(("weight",) if spec.weighted else ()), *(o.name for o in spec.options),
            *(o.name for o in spec.extras), *_TAIL)


def flatten(spec: LossSpec, call: Call, validate: bool, backend: str) -> list[Any]:
    """The operator's arguments for ``call``."""
    args: list[Any] = [*call.inputs]
    if spec.has_target:
        args.append(call.target)
    if spec.weighted:
        args.append(call.weight)
    args += call.options
    if spec.extras:
        args += spec.extra_values(call)
    args += [call.reduction, validate, backend, list(call.need_grad)]
    return args


def unflatten(spec: LossSpec, args: tuple) -> tuple[Call, bool, str]:
    """``(call, validate, backend)`` from the operator's arguments."""
    n = len(spec.inputs)
    inputs, i = tuple(args[:n]), n
    target = args[i] if spec.has_target else None
    i += spec.has_target
    weight = args[i] if spec.weighted else None
    i += spec.weighted
    options = tuple(args[i:i + len(spec.options)])
    i += len(spec.options)
    extras = tuple(args[i:i + len(spec.extras)])
    reduction, validate, backend, need_grad = args[i + len(spec.extras):]
    return (Call(inputs, target, weight, options, reduction, tuple(need_grad), extras),
            validate, backend)


def _signature(spec: LossSpec) -> inspect.Signature:
    """A typed signature for the operator (torch.library infers the schema from it)."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    types: dict[str, Any] = {"int": int, "float": float, "Tensor?": Tensor | None}
    params = [inspect.Parameter(name, kind, annotation=Tensor) for name in spec.inputs]
    if spec.has_target:
        params.append(inspect.Parameter("target", kind, annotation=Tensor))
    if spec.weighted:
        params.append(inspect.Parameter("weight", kind, annotation=Tensor | None))
    params += [inspect.Parameter(o.name, kind, annotation=types[o.type])
               for o in (*spec.options, *spec.extras)]
    params += [inspect.Parameter("reduction", kind, annotation=str),
               inspect.Parameter("validate", kind, annotation=bool),
               inspect.Parameter("backend", kind, annotation=str),
               inspect.Parameter("need_grad", kind, annotation=list[bool])]
    returns = tuple[(Tensor,) * (1 + len(spec.inputs))]
    return inspect.Signature(params, return_annotation=returns)


def _typed(fn: Callable, spec: LossSpec, name: str) -> Callable:
    def op(*args):
        return fn(*args)

    op.__name__ = op.__qualname__ = name
    op.__signature__ = _signature(spec)  # type: ignore[attr-defined]
    return op


# ----------------------------------------------------------------------------------------------
# implementations


def compute(spec: LossSpec, call: Call, validate: bool, backend: str,
            chosen: ModuleType | None = None) -> Result:
    """The loss on real tensors: pick the backend for ``backend=`` (unless ``chosen`` is the
    module already picked), check the labels, run the kernel.

    Labels are checked inside the kernel's own pass where the backend can
    (``spec.fused_label_check``), else by ``spec.check_labels`` first. A count of bad labels on
    the host raises :class:`~marginloss.errors.LabelError` now; a count on a GPU turns the loss
    into NaN and is reported by a later call (:mod:`marginloss._deferred`), so the call never
    waits for the device.
    """
    if _deferred._pending:
        _deferred.poll()
    be = chosen or backends.select(backend, spec, call)
    fused = validate and be.NAME in spec.fused_label_check
    if validate and not fused:
        spec.check_labels(call)
    try:
        result = be.run(spec, call, fused)
    except Exception as e:  # noqa: BLE001 - a kernel that cannot compile or launch here
        if backend != "auto" or be.NAME == "torch" or isinstance(e, _PROPAGATE):
            raise
        backends.disable(be, spec, f"{type(e).__name__}: {e}")  # warns, once
        return compute(spec, call, validate, backend)
    bad = result.bad_labels
    if fused and bad is not None:
        if isinstance(bad, Tensor) and not bad.is_cpu:
            return result._replace(loss=_deferred.defer(spec, call, result.loss, bad),
                                   bad_labels=None)
        if int(bad):
            spec.check_labels(call)  # raises, with the message of the loss's own check
            raise LabelError(f"{spec.name}: `target` holds {int(bad)} values outside the "
                             f"label convention ({spec.convention}).")  # pragma: no cover
    return result


# errors a kernel raises about the call or the machine, which no other backend would fix
_PROPAGATE = (LabelError, MemoryError, torch.cuda.OutOfMemoryError, KeyboardInterrupt)


def outputs(call: Call, result: Result) -> tuple[Tensor, ...]:
    """The operator's outputs: the loss, then one gradient per input (empty where none)."""
    x = call.inputs[0]
    return (result.loss, *(g if g is not None else x.new_empty(0) for g in result.grads))


def fake(spec: LossSpec, call: Call) -> tuple[Tensor, ...]:
    """Shapes and dtypes of the operator's outputs, for FakeTensor and meta tensors."""
    x = call.inputs[0]
    loss = x.new_empty(spec.loss_shape(call), dtype=spec.out_dtype(call))
    return (loss, *(t.new_empty(t.shape if need else (0,))
                    for t, need in zip(call.inputs, call.need_grad)))


def _vmap_rule(spec: LossSpec, op: Callable) -> Callable:
    """The batching rule of ``op``: fold the vmapped dimension into the rows.

    Every tensor of a canonical call is row-aligned (its first dimension is the input's rows)
    except a per-class ``(C,)`` weight. So ``B`` vmapped calls on ``(N, C)`` rows are one call
    on ``(B N, C)`` rows with ``reduction="none"``, whose losses are then reduced per ``b``
    (the gradient of a sum of rows is the rows' gradients; of a mean, divided by the count).
    A batched per-class weight of a loss whose kernels take no full weight, or a batched
    tensor extra (per class, e.g. ``pos_weight``), falls back to one call per ``b``.
    """
    n_in = len(spec.inputs)

    def rule(info, in_dims, *args):
        call, validate, backend = unflatten(spec, args)
        b = info.batch_size
        dims = dict(zip(arg_names(spec), in_dims))
        w_dim = dims.get("weight")
        if w_dim is not None and call.weight.dim() == 2 and not spec.full_weight:
            return _vmap_loop(op, b, args, in_dims, n_in)
        if any(dims[o.name] is not None for o in spec.extras):
            return _vmap_loop(op, b, args, in_dims, n_in)

        def fold(t, dim):
            t = t.movedim(dim, 0) if dim is not None else t.expand(b, *t.shape)
            return t.reshape(-1, *t.shape[2:])

        inputs = tuple(fold(t, dims[name]) for t, name in zip(call.inputs, spec.inputs))
        rows = inputs[0].shape[0] // b if b else 0
        target = None if call.target is None else fold(call.target, dims["target"])
        weight = call.weight
        if weight is not None and (w_dim is not None or weight.dim() == 2):
            if weight.dim() == 1 + (w_dim is not None):  # (B, C): one class vector per b
                weight = weight.movedim(w_dim, 0).unsqueeze(1).expand(b, rows, -1)
                weight = weight.reshape(b * rows, -1)
            else:
                weight = fold(weight, w_dim)
        folded = call._replace(inputs=inputs, target=target, weight=weight, reduction="none")
        out = op(*flatten(spec, folded, validate, backend))
        loss = out[0].reshape(b, rows, *out[0].shape[1:])
        flat = loss.reshape(b, -1)
        count = flat.shape[1]
        if call.reduction != "none":
            total = flat.to(acc_dtype(flat.dtype)).sum(1)
            if call.reduction == "mean":
                total = total / count if count else torch.full_like(total, float("nan"))
            loss = total.to(loss.dtype)
        outs, out_dims = [loss], [0]
        for g, need in zip(out[1:], call.need_grad):
            if need:
                g = g.reshape(b, rows, *g.shape[1:])
                if call.reduction == "mean" and count:
                    g = (g / count).to(g.dtype)
            outs.append(g)
            out_dims.append(0 if need else None)
        return tuple(outs), tuple(out_dims)

    return rule


def _vmap_loop(op: Callable, b: int, args: tuple, in_dims: tuple, n_in: int):
    """One operator call per vmapped index, stacked."""
    dims = [d if isinstance(a, Tensor) else None for a, d in zip(args, in_dims)]
    moved = [a.movedim(d, 0) if d is not None else a for a, d in zip(args, dims)]
    outs = [op(*(a[i] if d is not None else a for a, d in zip(moved, dims))) for i in range(b)]
    return tuple(torch.stack(o) for o in zip(*outs)), (0,) * (1 + n_in)


# ----------------------------------------------------------------------------------------------
# autograd


def check_differentiable_once() -> None:
    """Raise when backward runs for a higher-order derivative (create_graph=True, or nested
    grad transforms): the stored gradient carries no graph, so its derivative would be
    silently missing. Eager code only (traced code never takes a second derivative here)."""
    if torch.compiler.is_compiling() or not torch.is_grad_enabled():
        return
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    levels = [str(i.key()) for i in retrieve_all_functorch_interpreters()]
    grads = sum(k.endswith(("Grad", "Jvp")) for k in levels)
    if (not levels) or grads >= 2:
        raise RuntimeError(
            "marginloss losses are differentiable once: backward with create_graph=True "
            "(higher-order gradients, gradient penalties, nested torch.func.grad) is not "
            "supported. Use the torch.nn.functional version of this loss for higher-order "
            "gradients."
        )


def scale(grad: Tensor, grad_output: Tensor) -> Tensor:
    """``grad * grad_output``, the upstream gradient broadcast over the dimensions it lacks
    (the classes of a per-row loss), in the gradient's dtype."""
    go = grad_output.reshape(*grad_output.shape, *(1,) * (grad.dim() - grad_output.dim()))
    return (grad * go).to(grad.dtype)


def _make_autograd(spec: LossSpec):
    """``(setup_context, backward)`` of ``spec``'s operator. They close over plain values only
    (Dynamo traces them when it compiles a call)."""
    name, input_names = spec.name, spec.inputs
    n_in, n_args = len(spec.inputs), len(arg_names(spec))

    def setup_context(ctx, inputs, output):
        need = inputs[-1]
        for x, needed, arg in zip(inputs[:n_in], need, input_names):
            if x.requires_grad and not needed and torch.is_grad_enabled():
                raise RuntimeError(
                    f"{name}: `{arg}` requires grad, but this call was traced (compiled or "
                    f"exported) with need_grad=False for it; trace again with the inputs' "
                    f"requires_grad as they are when it runs.")
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(*(g if needed else None for g, needed in zip(output[1:], need)))

    def backward(ctx, grad_loss, *_):
        check_differentiable_once()
        grads = tuple(None if g is None else scale(g, grad_loss) for g in ctx.saved_tensors)
        return (*grads, *(None,) * (n_args - n_in))

    return setup_context, backward


# ----------------------------------------------------------------------------------------------
# registration


def _register(spec: LossSpec):
    qualname = f"{NAMESPACE}::{spec.name}"

    def impl(*args):
        call, validate, backend = unflatten(spec, args)
        return outputs(call, compute(spec, call, validate, backend))

    op = torch.library.custom_op(qualname, _typed(impl, spec, spec.name), mutates_args=())
    op.register_fake(lambda *args: fake(spec, unflatten(spec, args)[0]))
    op.register_vmap(_vmap_rule(spec, op))
    setup_context, backward = _make_autograd(spec)
    op.register_autograd(backward, setup_context=setup_context)
    return op._opoverload, _function(spec, op, setup_context, backward)


def _function(spec: LossSpec, op, setup_context, backward) -> type[torch.autograd.Function]:
    """The ``setup_context``-style autograd Function around ``op`` (see the module docstring)."""

    overload = op._opoverload  # torch.ops.marginloss.<name>.default (what Dynamo traces)

    class Function(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(*args):
            return overload(*args)

        @staticmethod
        def setup_context(ctx, inputs, output):
            setup_context(ctx, inputs, output)

        @staticmethod
        def backward(ctx, *grads):
            return backward(ctx, *grads)

    Function.__name__ = Function.__qualname__ = f"{spec.module}Function"
    return Function


def _register_triton(spec: LossSpec, setup_context, backward):
    """``marginloss::<name>_triton``: the Triton kernels, visible to ``torch.compile``."""
    from marginloss.backends import triton as triton_backend

    def impl(*args):
        call, _, _ = unflatten(spec, args)
        return outputs(call, triton_backend.run(spec, call))

    name = f"{spec.name}_triton"
    op = torch.library.triton_op(f"{NAMESPACE}::{name}", _typed(impl, spec, name),
                                 mutates_args=())
    op.register_vmap(_vmap_rule(spec, op))
    op.register_autograd(backward, setup_context=setup_context)
    return op._opoverload, _function(spec, op, setup_context, backward)


#: ``torch.ops.marginloss.<name>.default`` and its autograd Function, by loss name.
OPS: dict[str, Any] = {}
FUNCTIONS: dict[str, type[torch.autograd.Function]] = {}
#: The same for ``torch.ops.marginloss.<name>_triton.default``, registered on first use
#: (:func:`register_triton`): ``torch.library.triton_op`` imports triton.
TRITON_OPS: dict[str, Any] = {}
TRITON_FUNCTIONS: dict[str, type[torch.autograd.Function]] = {}

for _spec in LOSSES:
    OPS[_spec.name], FUNCTIONS[_spec.name] = _register(_spec)
del _spec


def register_triton(spec: LossSpec) -> None:
    """Register ``marginloss::<name>_triton`` (once; it needs triton installed)."""
    if spec.name not in TRITON_OPS:
        TRITON_OPS[spec.name], TRITON_FUNCTIONS[spec.name] = _register_triton(
            spec, *_make_autograd(spec))
