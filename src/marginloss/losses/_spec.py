r"""What a loss declares about itself, and the canonical call every backend receives.

A loss module (one per loss, in this package) builds one :class:`LossSpec`. The shared
pipeline (:mod:`marginloss._pipeline`), the registered operators (:mod:`marginloss._ops`), the
backends (:mod:`marginloss.backends`), the CLI, the benchmark and the tests read everything
loss-specific from it; nothing else keeps a table of loss names.

**The canonical call.** :meth:`LossSpec.prepare` checks the user's tensors (shapes and dtypes,
metadata only) and views them in the loss's canonical layout, a :class:`Call`:

* every differentiable input is 2-D ``(N, C)``: N rows of C entries (classes, or features);
* ``target`` is row-aligned: ``(N, ...)``, its first dimension the input's rows (``(N, C)`` or
  ``(N,)``);
* ``weight`` is what it is: a per-class vector ``(C,)``, or a full ``(N, C)`` weight;
* ``options`` are the loss's scalar options in declared order (``p``, ``margin``, ...);
* ``extras`` are the loss's own keyword-only options beyond torch's (``LossSpec.extras``: a
  scalar, or an optional per-class ``(C,)`` tensor such as ``pos_weight``), canonical
  (``LossSpec.prepare_extras``); ``()`` means every one at its default.

Every backend computes from a :class:`Call` and returns a :class:`Result`: the loss (0-d for
``"mean"``/``"sum"``; per row ``(N,)``, or per element ``(N, C)`` for elementwise losses, for
``"none"``) in :meth:`LossSpec.out_dtype`, and the gradient of each input that needs one, for a
unit upstream gradient, with the reduction's scale folded in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

#: Every backend: what a loss with a C and a Triton kernel lists in ``LossSpec.backends``.
KERNELS = ("triton", "native", "torch")


class Call(NamedTuple):
    """One loss evaluation in canonical layout (see the module docstring)."""

    inputs: tuple[Tensor, ...]
    target: Tensor | None
    weight: Tensor | None
    options: tuple[Any, ...]
    reduction: str
    need_grad: tuple[bool, ...]
    extras: tuple[Any, ...] = ()

    @property
    def input(self) -> Tensor:
        """The first (for most losses the only) differentiable input."""
        return self.inputs[0]


class Result(NamedTuple):
    """What a backend returns for a :class:`Call`.

    ``grads[i]`` is ``d loss / d inputs[i]`` for a unit upstream gradient (None where
    ``need_grad[i]`` is False). ``bad_labels`` is the number of target values outside the
    convention that the backend counted in its own pass (None when it did not look).
    """

    loss: Tensor
    grads: tuple[Tensor | None, ...]
    bad_labels: int | None = None


def input_dtype(call: Call) -> torch.dtype:
    """The default :attr:`LossSpec.out_dtype`: the loss has the (first) input's dtype."""
    return call.inputs[0].dtype


@dataclass(frozen=True)
class Option:
    """An option of a loss: its name, schema type and default. ``LossSpec.options`` (torch's)
    are scalars, ``"int"`` or ``"float"``; ``LossSpec.extras`` (our own) may also be
    ``"Tensor?"``: an optional tensor (None by default), per class ``(C,)`` once canonical."""

    name: str
    type: str
    default: Any


@dataclass(frozen=True, eq=False)
class LossSpec:
    """Everything specific to one loss. Built once, in the loss's own module.

    Attributes:
        name: The loss's one name everywhere: torch.nn.functional's (``"multi_margin_loss"``).
        module: The torch.nn module name (``"MultiMarginLoss"``).
        convention: The label convention, one line (docs, errors, ``marginloss info``).
        prepare: ``(inputs, target, weight, options) -> (inputs, target, weight, options,
            none_shape)``: checks shapes, dtypes and options (metadata only) and returns the
            canonical views of the tensors, the options as the operator takes them, and the
            shape a ``"none"`` loss has for the user.
        check_labels: ``(call) -> None``: raises :class:`~marginloss.errors.LabelError` (with
            the fix) when the target breaks the convention. Reads values: runs inside the
            operator, never in traced code.
        torch_compute: ``(call) -> Result``: the loss and gradients in torch ops (the torch
            backend; runs on any device).
        sample: ``(n, c, *, dtype, device, generator, **case) -> (inputs, target, kwargs)``:
            inputs in the loss's convention, for benchmarks, examples and tests.
        inputs: Names of the differentiable tensor arguments, in order.
        has_target: Whether the loss takes a ``target`` tensor.
        weighted: Whether the loss takes a ``weight`` tensor.
        options: The scalar options, in the order the operator takes them.
        extras: The loss's own keyword-only options beyond torch's signature (e.g.
            ``pos_weight``, ``label_smoothing``), in the order the operator takes them after
            ``options``. Kept apart from ``options`` so that everything that passes
            ``options`` to torch's function (the tests' oracle) stays torch's; a
            :class:`Call` without them (``extras=()``) means their defaults.
        prepare_extras: ``(call, extras) -> extras``: checks ``extras`` against the canonical
            ``call`` (metadata only; values are read in ``check_labels``) and returns them as
            the operator takes them (tensors per class ``(C,)``, in the computation dtype).
        elementwise: ``"none"`` gives one loss per element ``(N, C)`` instead of per row.
        backends: The backends that have a kernel for this loss (``"torch"`` always does).
        fused_label_check: The backends whose kernel counts bad labels in its own pass.
        full_weight: The backends accept a full ``(N, C)`` weight, not only ``(C,)``.
        out_dtype: ``(call) -> dtype`` of the loss (default: the first input's).
        benchmark_cases: The configurations worth timing at scale: dicts of ``n``, ``c`` and
            ``sample``'s keyword arguments (the benchmark's default cases).
    """

    name: str
    module: str
    convention: str
    prepare: Callable[..., Any]
    check_labels: Callable[[Call], None]
    torch_compute: Callable[[Call], Result]
    sample: Callable[..., Any]
    inputs: tuple[str, ...] = ("input",)
    has_target: bool = True
    weighted: bool = False
    options: tuple[Option, ...] = ()
    extras: tuple[Option, ...] = ()
    prepare_extras: Callable[..., tuple] | None = None
    elementwise: bool = False
    backends: tuple[str, ...] = ("torch",)
    fused_label_check: tuple[str, ...] = ()
    full_weight: bool = False
    out_dtype: Callable[[Call], torch.dtype] = input_dtype
    benchmark_cases: tuple[dict, ...] = ({"n": 1024, "c": 4096},)

    def __repr__(self) -> str:
        return f"LossSpec({self.name!r})"

    def call(self, inputs: tuple, target, kwargs: dict, reduction: str = "mean") -> Call:
        """The canonical :class:`Call` of a public call's arguments (``sample``'s output, say):
        checked and viewed by ``prepare``, every input needing its gradient."""
        options = tuple(kwargs.get(o.name, o.default) for o in self.options)
        xs, t, w, opts, _ = self.prepare(tuple(inputs), target, kwargs.get("weight"), options)
        call = Call(xs, t, w, opts, reduction, (True,) * len(xs))
        if self.extras:
            extras = tuple(kwargs.get(o.name, o.default) for o in self.extras)
            call = call._replace(extras=self.prepare_extras(call, extras))
        return call

    def extra_values(self, call: Call) -> tuple:
        """``call.extras``, or every extra at its default when the call has none."""
        return call.extras or tuple(o.default for o in self.extras)

    def loss_shape(self, call: Call) -> tuple[int, ...]:
        """Shape of the operator's loss output for ``call``."""
        if call.reduction != "none":
            return ()
        x = call.inputs[0]
        return tuple(x.shape) if self.elementwise else (x.shape[0],)
