"""The losses: one module each, and :data:`LOSSES`, the one list every other part reads.

Each module holds everything specific to its loss (shape and label checks, the canonical
view of its tensors, its torch-ops compute, a sampler of inputs in its convention) and builds
its :class:`~marginloss.losses._spec.LossSpec`. The operators, the CLI, the benchmark and the
tests discover the losses from :data:`LOSSES`; adding a loss adds one line here.
"""

from __future__ import annotations

from marginloss.losses import (
    cosine_embedding_loss,
    hinge_embedding_loss,
    margin_ranking_loss,
    multi_margin_loss,
    multilabel_margin_loss,
    multilabel_soft_margin_loss,
    soft_margin_loss,
    triplet_margin_loss,
)
from marginloss.losses._spec import Call, LossSpec, Option, Result

#: Every loss marginloss implements, in the order the docs list them.
LOSSES: tuple[LossSpec, ...] = (
    soft_margin_loss.SPEC,
    multilabel_soft_margin_loss.SPEC,
    multi_margin_loss.SPEC,
    multilabel_margin_loss.SPEC,
    hinge_embedding_loss.SPEC,
    margin_ranking_loss.SPEC,
    triplet_margin_loss.SPEC,
    cosine_embedding_loss.SPEC,
)

__all__ = ["LOSSES", "Call", "LossSpec", "Option", "Result", "by_name"]


def by_name(name: str) -> LossSpec:
    """The spec of the loss called ``name`` (torch.nn.functional's name)."""
    for spec in LOSSES:
        if spec.name == name:
            return spec
    raise KeyError(f"no loss named {name!r}; marginloss has {[s.name for s in LOSSES]}")
