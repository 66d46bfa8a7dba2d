"""Checks every loss module shares: tensor types, devices, dtypes, broadcasting, value previews.

The metadata checks (everything but :func:`values_preview` and :func:`read_back`) read no tensor
values, so they run in traced code (``torch.compile``, ``torch.export``) without a graph break.
Every message names the function and the argument, says what was expected and what was
received, and gives the fix where there is one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from marginloss.errors import DtypeError, ShapeError

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_WEIGHT_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def shape_str(t: Tensor) -> str:
    return str(tuple(t.shape))


def check_input(fn: str, input: object, arg: str = "input") -> None:
    """``input`` is a floating-point torch.Tensor (scores)."""
    if not isinstance(input, Tensor):
        raise DtypeError(f"{fn}: `{arg}` must be a torch.Tensor, got {type(input).__name__}.")
    if input.dtype not in FLOAT_DTYPES:
        raise DtypeError(
            f"{fn}: `{arg}` must hold floating-point scores (float16, bfloat16, float32 or "
            f"float64), got {input.dtype}. Convert it with `{arg}.float()`."
        )


def check_real_tensor(fn: str, t: object, arg: str) -> None:
    """``t`` is a real-valued torch.Tensor (the first check on any label tensor)."""
    if not isinstance(t, Tensor):
        raise DtypeError(f"{fn}: `{arg}` must be a torch.Tensor, got {type(t).__name__}.")
    if t.is_complex():
        raise DtypeError(f"{fn}: `{arg}` must be real, got {t.dtype}.")


def check_no_grad(fn: str, name: str, t: Tensor) -> None:
    """marginloss differentiates with respect to the inputs only; say so instead of returning 0."""
    if t.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"{fn}: `{name}` requires grad, but marginloss computes the gradient with respect to "
            f"the scores only. Pass `{name}.detach()` (or compute this loss under "
            f"torch.no_grad() for evaluation)."
        )


def check_same_device(fn: str, name: str, t: Tensor, input: Tensor) -> None:
    if not (t.is_cpu and input.is_cpu) and t.device != input.device:
        raise ValueError(
            f"{fn}: `{name}` is on {t.device} but `input` is on {input.device}; "
            f"move them to the same device (e.g. `{name}.to(input.device)`)."
        )


def check_target_tensor(fn: str, target: object, input: Tensor) -> None:
    """A real tensor on the input's device that does not require grad."""
    check_real_tensor(fn, target, "target")
    check_same_device(fn, "target", target, input)
    check_no_grad(fn, "target", target)


def check_weight_tensor(fn: str, weight: object, input: Tensor) -> None:
    """A real (float or integer) tensor on the input's device that does not require grad."""
    if not isinstance(weight, Tensor):
        raise DtypeError(
            f"{fn}: `weight` must be a torch.Tensor or None, got {type(weight).__name__}.")
    if not (weight.is_floating_point() or weight.dtype in _WEIGHT_INT_DTYPES):
        raise DtypeError(f"{fn}: `weight` must be a real tensor, got {weight.dtype}.")
    check_same_device(fn, "weight", weight, input)
    check_no_grad(fn, "weight", weight)


def check_integer_target(fn: str, target: Tensor, what: str, fix: str) -> None:
    if target.is_floating_point() or target.dtype == torch.bool:
        raise DtypeError(
            f"{fn}: `target` must hold integer {what} (int64 or int32), got {target.dtype}. {fix}"
        )


def check_rows_input(fn: str, input: Tensor, hint: str = "") -> int:
    """``input`` is ``(C,)`` or ``(N, C)`` with C > 0 (0-d counts as one class); returns C."""
    if input.dim() > 2:
        raise ShapeError(f"{fn}: `input` must have shape (C,) or (N, C), got "
                         f"{shape_str(input)}.{hint}")
    n_classes = input.shape[-1] if input.dim() > 0 else 1
    if n_classes == 0:
        raise ShapeError(f"{fn}: `input` of shape {shape_str(input)} has no classes (C = 0).")
    return n_classes


def broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """Whether a tensor of ``shape`` broadcasts to exactly ``target`` (torch's rules)."""
    if len(shape) > len(target):
        return False
    return all(a == b or a == 1 for a, b in zip(reversed(shape), reversed(target)))


def promote_float(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    """``torch.promote_types`` for a floating ``a`` and any ``b``, in plain Python (a function
    ``torch.compile`` traces without a graph break)."""
    if not b.is_floating_point or a == b:
        return a
    if {a, b} == {torch.float16, torch.bfloat16}:
        return torch.float32
    return max(a, b, key=FLOAT_DTYPES.index)


def result_float(input: Tensor, other: Tensor) -> torch.dtype:
    """``torch.result_type(input, other)`` for a floating ``input``: a 0-d ``other`` does not
    widen a dimensioned ``input`` of the same category."""
    if other.dim() == 0 and input.dim() > 0:
        return input.dtype
    return promote_float(input.dtype, other.dtype)


def as_rows(input: Tensor) -> Tensor:
    """View ``input`` as ``(N, C)``: 0-d -> (1, 1), (C,) -> (1, C), (*, C) -> (prod(*), C)."""
    if input.dim() == 2:
        return input
    if input.dim() == 0:
        return input.reshape(1, 1)
    return input.reshape(math.prod(input.shape[:-1]), input.shape[-1])  # -1 fails for C = 0


# ----------------------------------------------------------------------------------------------
# value reads: only inside the operators (eager code), never in traced code


def read_back(*scalars: Tensor) -> list[float]:
    """Read several 0-d results of one dtype back to the host with a single synchronisation."""
    return torch.stack(scalars).tolist()


def values_preview(t: Tensor, limit: int = 6) -> str:
    """A short, readable sample of the distinct values of ``t`` (for error messages)."""
    flat = t.detach().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    vals = torch.unique(flat[~torch.isnan(flat)] if flat.is_floating_point() else flat)
    shown = [v if not float(v).is_integer() else int(v) for v in vals[:limit].tolist()]
    more = f", ... ({vals.numel()} distinct)" if vals.numel() > limit else ""
    nan = ", nan" if flat.is_floating_point() and bool(torch.isnan(flat).any()) else ""
    return "{" + ", ".join(str(v) for v in shown) + more + nan + "}"


def compact(t: Tensor) -> Tensor:
    """``t`` without its broadcast (stride-0) dimensions: the same values, each stored once, so
    that reading them costs no expanded copy."""
    if 0 not in t.stride() or t.numel() == 0:
        return t
    return t[tuple(slice(None) if s else slice(0, 1) for s in t.stride())]


def abs_range(t: Tensor, block: int = 1 << 18) -> tuple[Tensor, Tensor]:
    """``(min |t|, max |t|)`` as 0-d tensors, in blocks: no full-size temporary, no sync."""
    flat = t.reshape(-1)
    if flat.numel() <= block:
        return torch.aminmax(flat.abs())
    scratch = torch.empty(block, dtype=flat.dtype, device=flat.device)
    lows, highs = [], []
    for s in range(0, flat.numel(), block):
        chunk = flat[s : s + block]
        lo, hi = torch.aminmax(torch.abs(chunk, out=scratch[: chunk.numel()]))
        lows.append(lo)
        highs.append(hi)
    return torch.stack(lows).min(), torch.stack(highs).max()
