"""The test table: per registered loss, its inputs, its options and its classic mistakes.

Every generic test (parity, gradients, errors, stability, composability, kernels) reads the
losses from :data:`CASES`, so a loss registered in ``marginloss.losses.LOSSES`` is covered by all
of them at once; ``test_every_registered_loss_has_a_case`` fails until its entry is added here.
The oracle is always torch's own function of the same name.

Losses with several differentiable inputs (pairs, triplets) are covered the same way: a test
builds ``inputs, target = case.make(shape, dtype, **options)`` (``inputs``: a tuple, one tensor
per name in ``spec.inputs``; ``target``: None for a loss without one), calls
``case.run(inputs, target, **kw)`` and ``case.run_ref(...)`` (``fn(*inputs, target, **kw)``),
and compares the loss and the gradient of every input. To add a loss, append a
:class:`LossCase` with its ``spec``, ``shapes`` (the inputs' shape), ``options``, ``mistakes``,
``valid_target`` and, for any loss but the first four, a ``sampler`` (kink-free inputs and a
target in convention for a shape) and, for broadcasting or other ranks, ``layouts``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as TF
from helpers import make_inputs, scores

import marginloss
import marginloss.functional as F
from marginloss.errors import DtypeError, LabelError, ShapeError
from marginloss.losses import LOSSES, LossSpec


@dataclass(frozen=True)
class Mistake:
    """A call that must fail: ``target(x)`` (and ``kwargs``) for the case's default inputs
    (:meth:`LossCase.default_inputs`: each differentiable input of shape (2, 3)), ``x`` being the
    first of them; or ``input`` instead of the default inputs (a tensor for a one-input loss,
    else a tuple with one tensor per input), the error, and fragments of its message.
    ``target`` returns None for a loss without a target."""

    id: str
    target: Callable[[torch.Tensor], torch.Tensor | None]
    error: type[Exception]
    fragments: tuple[str, ...]
    kwargs: dict | None = None
    input: Callable[[], torch.Tensor | tuple[torch.Tensor, ...]] | None = None


Inputs = tuple[torch.Tensor, ...]


def as_inputs(x) -> Inputs:
    """A tensor (one-input losses) or a tuple/list of tensors, as a tuple of inputs."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


@dataclass(frozen=True)
class LossCase:
    """One loss in the test table.

    Every generic test builds a call as ``inputs, target = case.make(shape, dtype, **options)``
    (``inputs``: one tensor per differentiable input of ``spec.inputs``, in order; ``target``:
    None for a loss without one) and runs it as ``case.run(inputs, target, **kw)`` (ours) and
    ``case.run_ref(inputs, target, **kw)`` (torch's), comparing the loss and the gradient of
    every input.

    Attributes:
        spec: the loss's spec (``marginloss.losses.<name>.SPEC``).
        shapes: input shapes for the generic parity tests (every input gets that shape; the
            ``sampler`` decides the target's).
        options: option sets, each ``(C, dtype) -> kwargs`` (C: the last dimension).
        mistakes: calls that must fail, with the error and fragments of its message.
        valid_target: ``x -> target``: a target in convention for the first input ``x`` (of the
            default shape (2, 3)); None for a loss without a target.
        sampler: ``(shape, dtype, **options) -> (inputs, target)``: kink-free inputs of
            ``shape`` (float64 values exact in every float dtype), a target in convention. None:
            the one-input losses' samplers of ``helpers.make_inputs``.
        layouts: further calls the parity tests run (broadcast inputs, other ranks, unbatched
            inputs), each ``dtype -> (inputs, target, kwargs)``.
    """

    spec: LossSpec
    shapes: tuple[tuple[int, ...], ...]  # input shapes for the generic parity tests
    options: tuple[Callable[[int, torch.dtype], dict], ...]  # option sets, from C and dtype
    mistakes: tuple[Mistake, ...]
    valid_target: Callable[[torch.Tensor], torch.Tensor | None]  # a target in convention for x
    sampler: Callable[..., tuple[Inputs, torch.Tensor | None]] | None = None
    layouts: tuple[Callable[[torch.dtype], tuple[Inputs, torch.Tensor | None, dict]], ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def n_inputs(self) -> int:
        return len(self.spec.inputs)

    @property
    def has_target(self) -> bool:
        return self.spec.has_target

    @property
    def ours(self):
        return getattr(F, self.name)

    @property
    def ref(self):
        return getattr(TF, self.name)

    @property
    def module(self):
        return getattr(marginloss, self.spec.module)

    @property
    def ref_module(self):
        return getattr(torch.nn, self.spec.module)

    def args(self, inputs, target) -> tuple:
        """The positional arguments of a call: the inputs, then the target (if the loss has
        one)."""
        return (*as_inputs(inputs), target) if self.has_target else as_inputs(inputs)

    def apply(self, fn, inputs, target, **kwargs):
        """``fn(*inputs, target, **kwargs)`` (``fn(*inputs, **kwargs)`` without a target)."""
        return fn(*self.args(inputs, target), **kwargs)

    def run(self, inputs, target, **kwargs):
        """Our function on ``inputs`` and ``target``."""
        return self.apply(self.ours, inputs, target, **kwargs)

    def run_ref(self, inputs, target, **kwargs):
        """torch's function (the oracle) on ``inputs`` and ``target``."""
        return self.apply(self.ref, inputs, target, **kwargs)

    def default_inputs(self, dtype=torch.float32) -> Inputs:
        """One (2, 3) tensor of random scores per differentiable input."""
        return tuple(torch.randn(2, 3, dtype=dtype) for _ in range(self.n_inputs))

    def mistake_call(self, mistake: Mistake) -> tuple[Inputs, torch.Tensor | None]:
        """``(inputs, target)`` of a mistake."""
        inputs = as_inputs(mistake.input()) if mistake.input else self.default_inputs()
        return inputs, mistake.target(inputs[0])

    def make(self, shape: tuple[int, ...], dtype=torch.float64, **opts):
        """``(inputs, target)``: kink-free inputs of ``shape``, a target in the convention."""
        if self.sampler is not None:
            inputs, target = self.sampler(shape, dtype, **opts)
            return as_inputs(inputs), target
        if self.name == "soft_margin_loss" and len(shape) not in (1, 2):
            return (scores(shape, dtype),), (torch.randint(0, 2, shape) * 2 - 1).to(dtype)
        if self.name == "multilabel_soft_margin_loss" and len(shape) > 2:
            return (scores(shape, dtype),), torch.randint(0, 2, shape).to(dtype)
        n = shape[0] if len(shape) == 2 else None
        margin = opts.get("margin", 1.0)
        x, y = make_inputs(self.name, n, shape[-1], dtype, margin=margin)
        return (x,), y

    def option_sets(self, n_classes: int, dtype=torch.float64) -> list[dict]:
        return [make(n_classes, dtype) for make in self.options]


def _pm1(x):
    return (torch.randint(0, 2, x.shape) * 2 - 1).to(x.dtype)


def _mask(x):
    return torch.randint(0, 2, x.shape).to(x.dtype)


def _index(x):
    return torch.randint(0, x.shape[-1], x.shape[:-1])


def _padded(x):
    t = torch.full(x.shape, -1, dtype=torch.long)
    t[..., 0] = 0
    return t


def _class_weight(c, dtype):
    return {"weight": torch.rand(c, dtype=dtype) + 0.5}


def _offgrid(shape, dtype, offset=1 / 32):
    """Scores on the grid k/16 + ``offset``, |x| < 4: exact in every float dtype."""
    x = (torch.randn(shape, dtype=torch.float64) * 24).round().clamp(-60, 60) / 16 + offset
    return x.to(dtype)


def _pm1_of(shape, dtype):
    return (torch.randint(0, 2, shape) * 2 - 1).to(dtype)


def _hinge_embedding_sample(shape, dtype, **opts):
    """Distances on the grid k/16 + 1/32 (never at the kink of a margin k/16), ±1 labels."""
    return (_offgrid(shape, dtype),), _pm1_of(shape, dtype)


def _hinge_embedding_layouts():
    """Broadcasting both ways (torch's rule for this loss), ranks, integer labels."""
    def layout(xshape, tshape, tdtype=None, **kw):
        return lambda d: ((_offgrid(xshape, d),), _pm1_of(tshape, tdtype or d), kw)

    return (layout((4, 5), (5,)), layout((5,), (4, 5)), layout((2, 1, 4), (3, 1)),
            layout((), (3,)), layout((3, 4), (3, 4), torch.int64, margin=0.5),
            layout((2, 3, 4, 5), (2, 3, 4, 5), torch.float64, margin=1.5))


def _margin_ranking_sample(shape, dtype, **opts):
    """input1 on the grid k/16 + 1/32, input2 on k/16: their difference is never at a kink of a
    margin k/16; ±1 preferences."""
    return (_offgrid(shape, dtype), _offgrid(shape, dtype, 0.0)), _pm1_of(shape, dtype)


def _margin_ranking_layouts():
    """Broadcasting among equal ranks (torch's rule), mixed dtypes (promoted), int labels."""
    def layout(s1, s2, st, d2=None, dt=None, **kw):
        return lambda d: ((_offgrid(s1, d), _offgrid(s2, d2 or d, 0.0)), _pm1_of(st, dt or d),
                          kw)

    return (layout((3, 1), (1, 4), (3, 4)), layout((5,), (5,), (1,), margin=0.5),
            layout((2, 1, 4), (2, 3, 1), (1, 3, 4)), layout((), (), ()),
            layout((4, 3), (4, 3), (4, 3), dt=torch.int64, margin=0.25),
            layout((4, 3), (4, 3), (4, 3), d2=torch.float64),
            layout((6,), (6,), (6,), dt=torch.float64, margin=-0.5))


def _triplet_sample(shape, dtype, **opts):
    """Anchors on the grid k/16, positives on k/16 + 1/64, negatives on k/16 + 1/32 (exact in
    every float dtype): no hinge kink or swap tie even for one feature. No target."""
    return (_offgrid(shape, dtype, 0.0), _offgrid(shape, dtype, 1 / 64),
            _offgrid(shape, dtype)), None


def _triplet_layouts():
    """Broadcasting among equal ranks (torch's rule), mixed dtypes (promoted), options."""
    def layout(sa, sp, sn, da=None, **kw):
        return lambda d: ((_offgrid(sa, da or d, 0.0), _offgrid(sp, d, 1 / 64),
                           _offgrid(sn, d)), None, kw)

    return (layout((1, 6), (4, 6), (4, 6), swap=True), layout((4, 1), (4, 6), (1, 6)),
            layout((2, 3, 5), (2, 3, 5), (2, 1, 5), p=1), layout((6,), (6,), (6,), eps=0.0),
            # (a float64 anchor: torch computes both distances in float64, as this loss does;
            # it would compute d(a, n) in float32 for a float64 positive only)
            layout((4, 6), (4, 6), (4, 6), da=torch.float64, margin=0.5),
            layout((3, 5), (3, 5), (3, 5), p=3, swap=True))


def _cosine_sample(shape, dtype, **opts):
    """Pairs on the grids k/16 and k/16 + 1/32, ±1 labels: (N,) for (N, D), 0-d for (D,)."""
    return (_offgrid(shape, dtype, 0.0), _offgrid(shape, dtype)), \
        _pm1_of(tuple(shape[:-1]), dtype)


def _cosine_layouts():
    """Broadcast inputs and labels (torch's rules), integer labels, mixed dtypes."""
    def layout(s1, s2, st, d2=None, dt=None, **kw):
        return lambda d: ((_offgrid(s1, d, 0.0), _offgrid(s2, d2 or d)),
                          _pm1_of(st, dt or d), kw)

    return (layout((1, 6), (4, 6), (4,)), layout((4, 6), (4, 6), (1,), margin=0.5),
            layout((1, 6), (1, 6), (4,), margin=-0.25), layout((4, 6), (4, 6), (4,),
                                                              dt=torch.int64),
            layout((4, 6), (4, 6), (4,), d2=torch.float64), layout((6,), (6,), ()))


CASES: dict[str, LossCase] = {c.name: c for c in [
    LossCase(
        spec=marginloss.losses.soft_margin_loss.SPEC,
        shapes=((7,), (1, 1), (3, 7), (17, 33), (5, 300), (), (2, 3, 4)),
        options=(lambda c, d: {},),
        valid_target=_pm1,
        mistakes=(
            Mistake("01", lambda x: torch.tensor([[0.0, 1, 1], [1, 0, 0]]), LabelError,
                    ("soft_margin_loss", "`target`", "{-1, +1}", "{0, 1}", "to_pm1",
                     "validate=False")),
            Mistake("bool", lambda x: torch.ones(2, 3, dtype=torch.bool), LabelError,
                    ("{0, 1}", "to_pm1")),
            Mistake("soft", lambda x: torch.full((2, 3), 0.5), LabelError,
                    ("0.5", "multilabel_soft_margin_loss")),
            Mistake("nan", lambda x: torch.tensor([[1.0, float("nan"), 1], [1, 1, 1]]),
                    LabelError, ("nan", "NaN")),
            Mistake("shape", lambda x: torch.ones(3, 2), ShapeError,
                    ("`target`", "(3, 2)", "(2, 3)")),
        ),
    ),
    LossCase(
        spec=marginloss.losses.multilabel_soft_margin_loss.SPEC,
        shapes=((7,), (1, 1), (3, 7), (17, 33), (5, 300), (2, 3, 6)),
        options=(lambda c, d: {}, _class_weight),
        valid_target=_mask,
        mistakes=(
            Mistake("pm1", lambda x: torch.tensor([[1.0, -1, 1], [-1, 1, 1]]), LabelError,
                    ("multilabel_soft_margin_loss", "[0, 1]", "±1", "to_01")),
            Mistake("padded", lambda x: torch.tensor([[2, 0, -1], [1, -1, -1]]), LabelError,
                    ("-1-padded", "padded_to_multi_hot")),
            Mistake("indices", lambda x: torch.tensor([[2, 0, 1], [1, 2, 2]]), LabelError,
                    ("class indices", "indices_to_multi_hot")),
            Mistake("shape", lambda x: torch.tensor([2, 0]), ShapeError,
                    ("`target`", "(2,)", "indices_to_multi_hot", "num_classes=3")),
            Mistake("weight-shape", lambda x: torch.ones(2, 3), ShapeError,
                    ("`weight`", "(4,)", "(3,)"), kwargs={"weight": torch.ones(4)}),
            Mistake("0d", lambda x: torch.tensor(1.0), ShapeError, ("0-d", "(N, C)"),
                    input=lambda: torch.tensor(1.0)),
        ),
    ),
    LossCase(
        spec=marginloss.losses.multi_margin_loss.SPEC,
        shapes=((7,), (1, 1), (3, 7), (17, 33), (5, 300)),
        options=(
            lambda c, d: {"p": 1, "margin": 1.0},
            lambda c, d: {"p": 1, "margin": 0.5, **_class_weight(c, d)},
            lambda c, d: {"p": 2, "margin": 1.0},
            lambda c, d: {"p": 2, "margin": 2.0, **_class_weight(c, d)},
            lambda c, d: {"p": 1, "margin": -0.5},
            lambda c, d: {"p": 2, "margin": 0.0, **_class_weight(c, d)},
        ),
        valid_target=_index,
        mistakes=(
            Mistake("range", lambda x: torch.tensor([0, 3]), LabelError,
                    ("multi_margin_loss", "[0, 3)", "[0, 3]", "target - 1")),
            Mistake("negative", lambda x: torch.tensor([0, -1]), LabelError,
                    ("[0, 3)", "[-1, 0]")),
            Mistake("float-target", lambda x: torch.tensor([0.0, 1.0]), DtypeError,
                    ("`target`", "integer", "torch.float32", "target.long()")),
            Mistake("one-hot", lambda x: torch.tensor([[1, 0, 0], [0, 1, 0]]), ShapeError,
                    ("one class index per sample", "argmax")),
            Mistake("p", lambda x: torch.tensor([0, 1]), ValueError, ("`p`", "1 or 2", "3"),
                    kwargs={"p": 3}),
            Mistake("weight", lambda x: torch.tensor([0, 1]), ShapeError,
                    ("`weight`", "(3,)", "(2,)"), kwargs={"weight": torch.ones(2)}),
            Mistake("3d", lambda x: torch.tensor([0, 1]), ShapeError,
                    ("(C,) or (N, C)", "reshape"), input=lambda: torch.randn(2, 2, 3)),
        ),
    ),
    LossCase(
        spec=marginloss.losses.multilabel_margin_loss.SPEC,
        shapes=((7,), (1, 1), (3, 7), (17, 33), (5, 300)),
        options=(lambda c, d: {},),
        valid_target=_padded,
        mistakes=(
            Mistake("mask", lambda x: torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0]]), LabelError,
                    ("multi-hot mask", "multi_hot_to_padded", "multilabel_soft_margin_loss"),
                    input=lambda: torch.randn(2, 4)),
            Mistake("range", lambda x: torch.tensor([[0, 3, -1], [1, -1, -1]]), LabelError,
                    ("[0, 3)", "-1", "[-1, 3]")),
            Mistake("below", lambda x: torch.tensor([[0, -2, -1], [1, -1, -1]]), LabelError,
                    ("[-2, 1]",)),
            Mistake("float", lambda x: torch.zeros(2, 3), DtypeError,
                    ("integer", "padded with -1", "multi_hot_to_padded")),
            Mistake("shape", lambda x: torch.tensor([0, 1]), ShapeError,
                    ("`target`", "(2, 3)", "sets_to_padded")),
        ),
    ),
    LossCase(
        spec=marginloss.losses.hinge_embedding_loss.SPEC,
        shapes=((7,), (1, 1), (3, 7), (17, 33), (5, 300), (), (2, 3, 4)),
        options=(lambda c, d: {}, lambda c, d: {"margin": 0.5},
                 lambda c, d: {"margin": -0.25}, lambda c, d: {"margin": 2.0}),
        valid_target=_pm1,
        sampler=_hinge_embedding_sample,
        layouts=_hinge_embedding_layouts(),
        mistakes=(
            Mistake("01", lambda x: torch.tensor([[0.0, 1, 1], [1, 0, 0]]), LabelError,
                    ("hinge_embedding_loss", "`target`", "{-1, +1}", "{0, 1}", "to_pm1",
                     "validate=False")),
            Mistake("bool", lambda x: torch.ones(2, 3, dtype=torch.bool), LabelError,
                    ("{0, 1}", "to_pm1")),
            Mistake("soft", lambda x: torch.full((2, 3), 0.5), LabelError, ("0.5", "±1")),
            Mistake("two", lambda x: torch.tensor([[2, 1, -1], [1, -1, 1]]), LabelError,
                    ("{-1, 1, 2}",)),
            Mistake("nan", lambda x: torch.tensor([[1.0, float("nan"), 1], [1, 1, 1]]),
                    LabelError, ("nan", "NaN")),
            Mistake("shape", lambda x: torch.ones(3, 2), ShapeError,
                    ("`input` (2, 3)", "`target` (3, 2)", "broadcast")),
            Mistake("margin", lambda x: torch.ones(2, 3), TypeError, ("`margin`", "float"),
                    kwargs={"margin": "wide"}),
        ),
    ),
    LossCase(
        spec=marginloss.losses.margin_ranking_loss.SPEC,
        shapes=((7,), (1, 1), (3, 7), (17, 33), (5, 300), (), (2, 3, 4)),
        options=(lambda c, d: {}, lambda c, d: {"margin": 0.5},
                 lambda c, d: {"margin": -0.25}, lambda c, d: {"margin": 1.0}),
        valid_target=_pm1,
        sampler=_margin_ranking_sample,
        layouts=_margin_ranking_layouts(),
        mistakes=(
            Mistake("01", lambda x: torch.tensor([[0.0, 1, 1], [1, 0, 0]]), LabelError,
                    ("margin_ranking_loss", "`target`", "{-1, +1}", "{0, 1}", "to_pm1",
                     "validate=False")),
            Mistake("soft", lambda x: torch.full((2, 3), 0.5), LabelError, ("0.5", "±1")),
            Mistake("int01", lambda x: torch.tensor([[0, 1, 1], [1, 0, 0]]), LabelError,
                    ("{0, 1}", "to_pm1")),
            Mistake("nan", lambda x: torch.tensor([[1.0, float("nan"), 1], [1, 1, 1]]),
                    LabelError, ("nan", "NaN")),
            Mistake("bool", lambda x: torch.ones(2, 3, dtype=torch.bool), DtypeError,
                    ("`target`", "bool", "to_pm1")),
            Mistake("rank", lambda x: torch.ones(2, 3), ShapeError,
                    ("same number of dimensions", "(2, 3), (3,) and (2, 3)"),
                    input=lambda: (torch.randn(2, 3), torch.randn(3))),
            Mistake("shape", lambda x: torch.ones(3, 2), ShapeError,
                    ("`target` (3, 2)", "broadcast")),
        ),
    ),
    LossCase(
        spec=marginloss.losses.triplet_margin_loss.SPEC,
        shapes=((7,), (1, 1), (3, 7), (17, 33), (5, 300), (), (2, 3, 4)),
        options=(lambda c, d: {}, lambda c, d: {"swap": True},
                 lambda c, d: {"p": 1, "margin": 0.5},
                 lambda c, d: {"margin": 2.0, "eps": 0.0, "swap": True}),
        valid_target=lambda x: None,
        sampler=_triplet_sample,
        layouts=_triplet_layouts(),
        mistakes=(
            Mistake("margin", lambda x: None, ValueError,
                    ("margin must be greater than 0, got 0.0",), kwargs={"margin": 0.0}),
            Mistake("p", lambda x: None, ValueError, ("`p`", "greater than 0", "-1"),
                    kwargs={"p": -1}),
            Mistake("eps", lambda x: None, ValueError, ("`eps`", "finite", "nan"),
                    kwargs={"eps": float("nan")}),
            Mistake("rank", lambda x: None, ShapeError,
                    ("same number of dimensions", "anchor 2D, positive 1D, and negative 2D"),
                    input=lambda: (torch.randn(2, 3), torch.randn(3), torch.randn(2, 3))),
            Mistake("shape", lambda x: None, ShapeError,
                    ("do not broadcast", "`negative` (2, 4)"),
                    input=lambda: (torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 4))),
        ),
    ),
    LossCase(
        spec=marginloss.losses.cosine_embedding_loss.SPEC,
        shapes=((7,), (1, 1), (3, 7), (17, 33), (5, 300)),
        options=(lambda c, d: {}, lambda c, d: {"margin": 0.5},
                 lambda c, d: {"margin": -0.25}),
        # integer labels: torch's target is not differentiable (it only selects a branch),
        # so a float target with requires_grad is accepted, not refused (OpInfo's samples)
        valid_target=lambda x: _pm1_of(tuple(x.shape[:-1]), torch.int64),
        sampler=_cosine_sample,
        layouts=_cosine_layouts(),
        mistakes=(
            Mistake("01", lambda x: torch.tensor([0.0, 1.0]), LabelError,
                    ("cosine_embedding_loss", "`target`", "{-1, +1}", "{0, 1}", "to_pm1",
                     "validate=False")),
            Mistake("bool", lambda x: torch.tensor([True, False]), LabelError,
                    ("{0, 1}", "to_pm1")),
            Mistake("two", lambda x: torch.tensor([2.0, -1.0]), LabelError, ("{-1, 2}",)),
            Mistake("nan", lambda x: torch.tensor([1.0, float("nan")]), LabelError,
                    ("nan", "NaN")),
            Mistake("target-2d", lambda x: torch.ones(2, 3), ShapeError,
                    ("0D or 1D target tensor expected",)),
            Mistake("rank", lambda x: torch.ones(2), ShapeError,
                    ("1D target tensor expects 2D input tensors",),
                    input=lambda: (torch.randn(3), torch.randn(3))),
            Mistake("shape", lambda x: torch.ones(2), ShapeError,
                    ("do not broadcast", "`input2` (2, 4)"),
                    input=lambda: (torch.randn(2, 3), torch.randn(2, 4))),
        ),
    ),
]}

NAMES = list(CASES)


def cases(*, options: bool = False):
    """``(id, case[, options-index])`` parameters over every loss (and its option sets)."""
    import pytest

    out = []
    for case in CASES.values():
        if not options:
            out.append(pytest.param(case, id=case.name))
            continue
        for i in range(len(case.options)):
            out.append(pytest.param(case, i, id=f"{case.name}-{i}"))
    return out


def test_every_registered_loss_has_a_case():
    assert [s.name for s in LOSSES] == NAMES
