"""The test table: per registered loss, its inputs, its options and its classic mistakes.

Every generic test (parity, gradients, errors, stability, composability, kernels) reads the
losses from :data:`CASES`, so a loss registered in ``marginloss.losses.LOSSES`` is covered by all
of them at once; ``test_every_registered_loss_has_a_case`` fails until its entry is added here.
The oracle is always torch's own function of the same name.
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
    """A call that must fail: ``target(x)`` (and ``kwargs``) for scores ``x`` of shape (2, 3)
    (or ``input`` instead of the default scores), the error, and fragments of its message."""

    id: str
    target: Callable[[torch.Tensor], torch.Tensor]
    error: type[Exception]
    fragments: tuple[str, ...]
    kwargs: dict | None = None
    input: Callable[[], torch.Tensor] | None = None


@dataclass(frozen=True)
class LossCase:
    spec: LossSpec
    shapes: tuple[tuple[int, ...], ...]  # input shapes for the generic parity tests
    options: tuple[Callable[[int, torch.dtype], dict], ...]  # option sets, from C and dtype
    mistakes: tuple[Mistake, ...]
    valid_target: Callable[[torch.Tensor], torch.Tensor]  # a target in convention for x

    @property
    def name(self) -> str:
        return self.spec.name

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

    def make(self, shape: tuple[int, ...], dtype=torch.float64, **opts):
        """Kink-free scores of ``shape`` and a target in the loss's convention."""
        if self.name == "soft_margin_loss" and len(shape) not in (1, 2):
            return scores(shape, dtype), (torch.randint(0, 2, shape) * 2 - 1).to(dtype)
        if self.name == "multilabel_soft_margin_loss" and len(shape) > 2:
            return scores(shape, dtype), torch.randint(0, 2, shape).to(dtype)
        n = shape[0] if len(shape) == 2 else None
        margin = opts.get("margin", 1.0)
        return make_inputs(self.name, n, shape[-1], dtype, margin=margin)

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
