r"""Label errors found on a GPU, reported without stopping the GPU.

On the CPU a bad label raises :class:`~marginloss.errors.LabelError` from the call itself. On a
CUDA device that would cost a host synchronisation per call (reading the kernel's count of bad
labels back) and make the loss impossible to capture in a CUDA graph. So there:

1. the kernel counts the labels outside the convention in its own pass, into a device tensor;
2. the call's loss becomes NaN on the device when the count is not 0 (``torch.where``: never a
   plausible number, no synchronisation);
3. the count is copied to pinned host memory without blocking, behind a CUDA event, and the call
   is remembered;
4. the error surfaces, with the same message as on the CPU, from the **first marginloss call
   made after the device has finished the bad one** (each call looks, without waiting, at the
   events of the calls still pending), or from :func:`check_labels`, which waits for them (call it
   at the end of an epoch, or in a test).

Inside CUDA-graph capture nothing is remembered (a graph replays the kernels, not this Python):
the loss still turns NaN, and the error surfaces only through the loss.

The message is built from the target when the error is raised: a target modified in place
between the bad call and the report is described as it is then.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from marginloss.losses._spec import Call, LossSpec

__all__ = ["check_labels"]

_MAX_PENDING = 256  # calls remembered at most; beyond that, the oldest are checked (waiting)


class _Pending(NamedTuple):
    spec: LossSpec
    call: Call
    count: Tensor  # pinned host copy of the device's bad-label count
    done: torch.cuda.Event


_pending: list[_Pending] = []


def defer(spec: LossSpec, call: Call, loss: Tensor, bad: Tensor) -> Tensor:
    """The loss, NaN where ``bad`` (a 0-d device count) is not 0; the count is checked later.

    No host synchronisation: the copy to the host is asynchronous, behind an event.
    """
    loss = torch.where(bad > 0, torch.full_like(loss, float("nan")), loss)
    if torch.cuda.is_current_stream_capturing():
        return loss
    if len(_pending) >= _MAX_PENDING:
        _report(_pending.pop(0), wait=True)
    count = torch.empty((), dtype=bad.dtype, pin_memory=bad.is_cuda)
    count.copy_(bad, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    _pending.append(_Pending(spec, call, count, done))
    return loss


def poll() -> None:
    """Report the first finished call whose kernel found bad labels (no waiting)."""
    while _pending and _pending[0].done.query():
        _report(_pending.pop(0), wait=False)


def check_labels() -> None:
    """Wait for every GPU call of a marginloss loss still in flight and raise
    :class:`~marginloss.errors.LabelError` if one of them found labels outside its loss's
    convention (the same message as the CPU's immediate error).

    On the CPU, or with nothing pending, it returns at once. GPU calls report such errors by
    themselves too: from the first marginloss call after the device has finished the bad one
    (see :mod:`marginloss._deferred`); this function is for the end of an epoch, a validation
    step, or a test, where no later call may come.

    Examples:
        >>> import marginloss
        >>> marginloss.check_labels()  # nothing pending: returns None
    """
    while _pending:
        _report(_pending.pop(0), wait=True)


def _report(entry: _Pending, wait: bool) -> None:
    if wait:
        entry.done.synchronize()
    if int(entry.count):
        _pending.clear()  # one error at a time: the rest describe the same mistake
        entry.spec.check_labels(entry.call)  # raises, with the CPU's message
        from marginloss.errors import LabelError

        raise LabelError(f"{entry.spec.name}: `target` holds {int(entry.count)} values outside "
                         f"the label convention ({entry.spec.convention}).")  # pragma: no cover
