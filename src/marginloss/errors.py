"""The errors marginloss raises, so that ``except marginloss.errors.LabelError`` reads as it does.

Every message names the function and the argument, says what was expected and what was
received, and gives the fix where there is one. The classes derive from the built-in error a
caller of torch would catch for the same mistake (``ValueError`` for values and shapes,
``TypeError`` for dtypes, ``RuntimeError`` for a backend that cannot run), so code written
against torch.nn keeps working.
"""

from __future__ import annotations

__all__ = ["BackendUnavailableError", "DtypeError", "LabelError", "ShapeError", "XCFormatError"]


class LabelError(ValueError):
    """A target's values break the loss's label convention (e.g. {0, 1} where ±1 is meant)."""


class ShapeError(ValueError):
    """Tensor shapes (or ranks) that the loss cannot accept together."""


class DtypeError(TypeError):
    """A tensor whose dtype the loss cannot accept (e.g. integer scores, float class indices)."""


class BackendUnavailableError(RuntimeError):
    """``backend="triton"`` or ``"native"`` was requested for a call its kernels cannot run."""


class XCFormatError(ValueError):
    """A malformed line in an Extreme Classification Repository file (:mod:`marginloss.xc`);
    the message names the file, the 1-based line number and what is wrong with it."""
