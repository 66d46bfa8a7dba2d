r"""The shared pipeline: every loss call runs these steps, in this order.

::

    functional.<loss>(...)                       torch's signature, the math in the docstring
      -> run(spec, inputs, target, weight, options, ..., reduction, validate, backend)
           1. options      reduction (legacy size_average / reduce), validate, backend
           2. autocast     float16/bfloat16 tensors -> float32, as torch's fp32 ops
           3. prepare      spec.prepare: shape and dtype checks (metadata only), canonical views
           4. operator     eager:  the fused autograd Function (or the kernel alone, no grad)
                           traced: torch.ops.marginloss.<loss> through its autograd Function
                 -> backend selection, label check, kernel: (loss, gradients) in one pass
           5. shape        the "none" loss back to the user's shape

Steps 1-3 and 5 read metadata only, so ``torch.compile(fullgraph=True)`` traces them without a
graph break and guards only on shapes, dtypes and devices (new values of the same shapes never
recompile). Everything that reads values (the label check, the kernels) runs inside the
operator. Eager calls on plain tensors skip the dispatcher: they call the operator's
implementation through a lean autograd Function (the same :func:`marginloss._ops.compute`, the
same gradient).

Small eager calls are dominated by this Python, so an eager call whose tensors are already in
canonical layout leaves a *plan* keyed by everything steps 2-4 read (the tensors' dtypes,
devices, shapes, strides, ``requires_grad``, the options, the grad mode): the next call with the
same key (a training loop's next step) reuses the options, the gradient needs and the backend
the checks established, and goes straight to the kernel. The label check reads values, so it
runs on every call.
"""

from __future__ import annotations

from types import ModuleType
from typing import NamedTuple

import torch
from torch import Tensor

from marginloss import _ops, _reduction, backends
from marginloss.backends import BACKENDS
from marginloss.backends import triton as triton_backend
from marginloss.losses import by_name
from marginloss.losses._spec import Call, LossSpec

_HALF = (torch.float16, torch.bfloat16)


def run(spec: LossSpec, inputs: tuple, target, weight, options: tuple, size_average, reduce,
        reduction: str, validate: bool, backend: str, extras: tuple = ()) -> Tensor:
    """Compute ``spec``'s loss for a public function's arguments (see the module docstring);
    ``extras``: the values of ``spec.extras`` (the loss's own options), in order."""
    # 1. options
    if size_average is not None or reduce is not None or reduction not in _reduction.REDUCTIONS:
        reduction = _reduction.resolve(size_average, reduce, reduction, spec.name)
    if (validate is not True and validate is not False) or backend not in BACKENDS:
        check_options(validate, backend, spec.name)  # raises
    grad_on = torch.is_grad_enabled()
    eager = not torch.compiler.is_compiling() and _plain_mode()
    key = None
    if eager and not torch._C._is_any_autocast_enabled():
        # a plain eager call whose metadata repeats an earlier one (a training loop's next step)
        # skips the checks and the backend choice it passed then: they read only metadata
        key = _signature(spec, inputs, target, weight, options, reduction, validate, backend,
                         grad_on, backends.generation, extras=extras)
        try:
            plan = _PLANS.get(key) if key is not None else None
        except TypeError:  # an unhashable option or extra: no plan
            key = plan = None
        if plan is not None:
            # (tuple.__new__: a NamedTuple's own __new__ is a Python function, 0.3 us)
            call = _new(Call, (inputs, target, weight, plan.options, reduction, plan.need_grad,
                               _plan_extras(plan.extras, extras) if extras else ()))
            if plan.grad:
                return _EAGER_APPLY((spec, call, validate, backend, plan.backend), *inputs)
            return _ops.compute(spec, call, validate, backend, plan.backend).loss
    # 2. autocast: these losses run in float32, as torch's do (in eager code, one cheap
    # "any autocast?" first; traced code asks what torch.compile guards on)
    x = inputs[0]
    if (isinstance(x, Tensor)
            and (not eager or torch._C._is_any_autocast_enabled())
            and torch.amp.is_autocast_available(x.device.type)
            and torch.is_autocast_enabled(x.device.type)):
        inputs, target, weight = (tuple(_fp32(t) for t in inputs), _fp32(target),
                                  _fp32(weight))
    # 3. checks and canonical views
    xs, target_c, weight_c, options_c, none_shape = spec.prepare(inputs, target, weight,
                                                                 options)
    need = tuple(grad_on and t.requires_grad for t in xs)
    call = Call(xs, target_c, weight_c, options_c, reduction, need)
    if spec.extras:
        call = call._replace(extras=spec.prepare_extras(call, extras or tuple(
            o.default for o in spec.extras)))
    # 4. the operator
    if eager and _plain_tensors(call):
        chosen = backends.select(backend, spec, call)
        loss = _eager(spec, call, validate, backend, chosen)
        if (key is not None and backend != "triton" and target_c is target
                and weight_c is weight and all(a is b for a, b in zip(xs, inputs))
                and all(a is b for a, b in zip(call.extras, extras) if isinstance(b, Tensor))):
            if len(_PLANS) >= 256:
                _PLANS.clear()
            if hasattr(chosen, "planned"):  # the backend specialised to this metadata
                chosen = chosen.planned(spec, call)
            _PLANS[key] = _Plan(options_c, need, True in need, chosen,
                                call.extras)  # canonical already
    else:
        triton = _triton_op(spec, call, validate, backend)
        args = _ops.flatten(spec, call, validate, backend)
        if True in need:
            functions = _ops.TRITON_FUNCTIONS if triton else _ops.FUNCTIONS
            loss = functions[spec.name].apply(*args)[0]
        else:
            loss = (_ops.TRITON_OPS if triton else _ops.OPS)[spec.name](*args)[0]
    # 5. the user's shape
    if reduction == "none" and tuple(loss.shape) != none_shape:
        loss = loss.reshape(none_shape)
    return loss


class _Plan(NamedTuple):
    """What an eager call with canonical tensors established: its options as the operator
    takes them, which inputs need a gradient, and the backend that runs it."""

    options: tuple
    need_grad: tuple[bool, ...]
    grad: bool  # True in need_grad
    backend: ModuleType  # or what its ``planned(spec, call)`` returned (same contract)
    extras: tuple = ()  # canonical extras (their tensors: the user's own, see _plan_extras)


_PLANS: dict[tuple, _Plan] = {}
_new = tuple.__new__


def _signature(spec: LossSpec, inputs: tuple, target, weight, options: tuple, *flags,
               extras: tuple = ()):
    """Everything the checks and the backend choice read, or None when a value cannot be
    part of a key (a tensor subclass, a non-tensor argument; an unhashable option or extra
    gives an unhashable key). A tensor
    extra is keyed by its metadata, as the other tensors. (A meta tensor gets a key, whose
    device no stored plan has: plans are kept for real tensors only.)"""
    if len(inputs) == 1 and weight is None and not extras:  # the usual call: one expression
        x = inputs[0]
        if x.__class__ in _PLAIN and target.__class__ in _PLAIN:
            return (spec.name, options, flags, x.dtype, x.shape, x.stride(), x.requires_grad,
                    x.is_cpu or x.device, target.dtype, target.shape, target.stride(),
                    target.requires_grad, target.is_cpu or target.device)
    key = (spec.name, options, flags)
    tensors = (*inputs, target, weight)
    if extras:
        key += (tuple(Tensor if isinstance(e, Tensor) else e for e in extras),)
        tensors += tuple(e for e in extras if isinstance(e, Tensor))
    for t in tensors:
        if t is None:
            key += (None,)
        elif t.__class__ in _PLAIN:
            key += (t.dtype, t.shape, t.stride(), t.requires_grad, t.is_cpu or t.device)
        else:
            return None
    return key  # (unhashable when an option or extra is: then no plan is kept)


def _plan_extras(planned: tuple, given: tuple) -> tuple:
    """A plan's canonical scalar extras with this call's own tensors (a plan is kept only when
    ``prepare_extras`` returned the user's tensors as they were)."""
    return tuple(g if isinstance(g, Tensor) else p for p, g in zip(planned, given))


def _eager(spec: LossSpec, call: Call, validate: bool, backend: str,
           chosen: ModuleType) -> Tensor:
    """Run ``call`` on the ``chosen`` backend: through the fused autograd Function when a
    gradient is needed, else the kernel alone."""
    if True in call.need_grad:
        return _EAGER_APPLY((spec, call, validate, backend, chosen), *call.inputs)
    return _ops.compute(spec, call, validate, backend, chosen).loss


def check_options(validate: object, backend: object, fn: str) -> None:
    """``validate`` is a bool and ``backend`` one of :data:`~marginloss.backends.BACKENDS`."""
    if validate is not True and validate is not False:
        raise TypeError(f"{fn}: `validate` must be True or False, got {validate!r}.")
    if backend not in BACKENDS:
        names = ", ".join(repr(b) for b in BACKENDS[:-1])
        raise ValueError(f"{fn}: `backend` must be {names} or {BACKENDS[-1]!r}, got "
                         f"{backend!r}.")


def _fp32(t):
    return t.float() if isinstance(t, Tensor) and t.dtype in _HALF else t


def _plain_mode() -> bool:
    """No torch.func transform, torch function mode or dispatch mode (FakeTensorMode, tracing,
    a device context) is active: plain eager mode."""
    return not (torch._C._are_functorch_transforms_active()
                or torch._C._len_torch_dispatch_stack()
                or torch._C._is_torch_function_mode_enabled())


def _plain_tensors(call: Call) -> bool:
    """Every tensor is a plain (or Parameter) tensor, not meta: the operator's implementation
    may be called directly."""
    for t in (*call.inputs, call.target, call.weight):
        if t is not None and (t.__class__ not in _PLAIN or t.is_meta):
            return False
    for t in call.extras:
        if isinstance(t, Tensor) and (t.__class__ not in _PLAIN or t.is_meta):
            return False
    return True


_PLAIN = (Tensor, torch.nn.Parameter)


def _triton_op(spec: LossSpec, call: Call, validate: bool, backend: str) -> bool:
    """Whether a traced call runs on ``marginloss::<loss>_triton`` (kernels visible to the
    compiler): CUDA tensors of a Triton dtype, Triton installed, and no label check (which reads
    values, so it stays inside the opaque operator)."""
    x = call.inputs[0]
    return (not validate and backend in ("auto", "triton") and x.device.type == "cuda"
            and x.dtype in triton_backend.DTYPES and _triton_ready(spec.name))


def _triton_ready(name: str) -> bool:
    """Triton and this loss's kernels can be imported; if so, the loss's Triton operator is
    registered (once per process; at trace time, never inside a graph)."""
    spec = by_name(name)
    if "triton" not in spec.backends or triton_backend.missing(name):
        return False
    _ops.register_triton(spec)
    return True


# What torch.compiler.assume_constant_result does: Dynamo calls the function while tracing
# and keeps its result as a constant. Set directly, because importing torch.compiler's helper
# imports torch._dynamo, which imports triton: `import marginloss` must import neither.
_triton_ready._dynamo_marked_constant = True  # type: ignore[attr-defined]


class _Eager(torch.autograd.Function):
    """The fused loss in plain eager mode: forward runs the operator's implementation and keeps
    the gradients; backward scales them by the upstream gradient, or hands them over as they are
    when it is exactly 1 (no extra pass, no extra memory), and recomputes them if a second
    backward comes (``retain_graph=True``). A legacy (``ctx``-in-``forward``) Function: about 15
    microseconds cheaper per call than the ``setup_context`` form, which only transforms need."""

    @staticmethod
    def forward(ctx, state, *inputs):
        result = _ops.compute(*state)  # state: (spec, call, validate, backend, chosen module)
        ctx.state, ctx.grads = state, result.grads
        return result.loss

    @staticmethod
    def backward(ctx, grad_loss):
        grads = ctx.grads
        if (grads is not None and grad_loss.is_cpu and not torch.is_grad_enabled()
                and grad_loss.numel() == 1 and grad_loss.item() == 1):
            # the usual first backward of a loss on the CPU, exactly 1 upstream: hand the
            # gradients over, autograd may keep the tensor itself as .grad (no pass, no copy)
            ctx.grads = None
            return (None, *grads)
        if torch.is_grad_enabled():
            _ops.check_differentiable_once()
        spec, call, _, backend, chosen = ctx.state
        if grads is None:  # a second backward through the same graph: compute them again
            grads = _ops.compute(spec, call, False, backend, chosen).grads
        if grad_loss.is_cpu:
            if grad_loss.numel() == 1 and grad_loss.item() == 1:
                # exactly 1: hand the gradients over, autograd may keep the tensor itself as
                # .grad (no pass, no copy)
                ctx.grads = None
            else:
                grads = [None if g is None else _ops.scale(g, grad_loss) for g in grads]
        elif hasattr(chosen, "scale_"):
            # on the device, in place: skipped there when the upstream gradient is 1, no host
            # read (a CUDA graph can capture it), no temporary; then handed over
            grads = [None if g is None else chosen.scale_(g, grad_loss) for g in grads]
            ctx.grads = None
        else:
            grads = [None if g is None else _ops.scale(g, grad_loss) for g in grads]
        return (None, *grads)


# Function.apply's Python wrapper only adds torch.func handling, which plain eager calls do
# not need: call the C implementation it ends in directly (a microsecond per call).
_EAGER_APPLY = super(torch.autograd.Function, _Eager).apply
