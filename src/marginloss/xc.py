r"""The Extreme Classification Repository's sparse text format: read it into CSR tensors, write it.

The data sets of the Extreme Classification Repository
(http://manikvarma.org/downloads/XC/XMLRepository.html) come as text files of this form::

    num_points num_features num_labels
    l1,l2,... f:v f:v ...
    ...

The first line, the *header*, holds three non-negative integers. Then come ``num_points`` data
lines, one per sample: its labels, comma-separated, then its features, whitespace-separated
``index:value`` pairs. Indices are 0-based: a label :math:`l \in [0, \text{num\_labels})`, a
feature index :math:`f \in [0, \text{num\_features})`. A sample without labels has a line that
starts with whitespace (or directly with a feature); a sample without features has only its
labels; an empty line is a sample with neither. Features may come in any order.

:func:`read_xc` returns an :class:`XCData`: the features as a ``(num_points, num_features)``
``torch.sparse_csr`` tensor of values (feature indices sorted within each row), the labels as a
``(num_points, num_labels)`` CSR tensor of ones, the sparse target that
:func:`~marginloss.functional.multilabel_soft_margin_loss` and
:func:`~marginloss.functional.multilabel_margin_loss` take (see :mod:`marginloss.sparse`).
It reads line by line into growing arrays: memory is the result's (plus one sort of a CSR's
entries when a file's indices are not in order), never a copy of the file.

What the reader refuses, each with :class:`~marginloss.errors.XCFormatError` (a ``ValueError``)
naming the file, the 1-based line number and the fault:

* a header that is not three non-negative integers, or an empty file;
* fewer data lines than ``num_points``, or more (blank lines after the last data line are
  allowed: they are trailing newlines, not samples);
* a label or a feature index that is not a non-negative decimal integer (``1.5``, ``x``,
  ``+3``), or outside its range (the header's ``num_labels`` / ``num_features``); an empty label
  (``1,,2`` or a trailing comma);
* a feature token without ``:``, or with a value that is not a number;
* a value that is NaN or infinite, or too large for ``dtype`` (it would read as infinity):
  XC feature values are finite weights, and one NaN would spoil every loss computed on it;
* a feature index twice in one line (which of the two values would be meant?), and a label
  twice in one line (labels are a set; the margin loss would count a repeated label twice).

:func:`write_xc` writes the same format: labels in increasing order, then the features in
increasing index order, each value in the shortest form that reads back to the same value of its
dtype (float16 and bfloat16 values are written as float32, which holds them exactly), a line
without labels starting with a space; reading the file back gives the same tensors.

Example:
    >>> import io
    >>> text = "3 5 4\n0,2 1:0.5 4:2.0\n 0:1.5\n3\n"
    >>> data = read_xc(io.StringIO(text))
    >>> data.features.to_dense()
    tensor([[0.0000, 0.5000, 0.0000, 0.0000, 2.0000],
            [1.5000, 0.0000, 0.0000, 0.0000, 0.0000],
            [0.0000, 0.0000, 0.0000, 0.0000, 0.0000]])
    >>> data.labels.to_dense()
    tensor([[1., 0., 1., 0.],
            [0., 0., 0., 0.],
            [0., 0., 0., 1.]])
    >>> out = io.StringIO()
    >>> write_xc(out, data.features, data.labels)
    >>> out.getvalue() == text
    True
    >>> read_xc(io.StringIO("1 5 4\n0 7:1.0\n"))
    Traceback (most recent call last):
    ...
    marginloss.errors.XCFormatError: <stream>, line 2: feature index 7 is out of range [0, 5) ...
"""

from __future__ import annotations

import math
import os
import re
import warnings
from array import array
from collections.abc import Iterable
from typing import IO, NamedTuple

import numpy as np
import torch
from torch import Tensor

from marginloss.errors import ShapeError, XCFormatError

__all__ = ["XCData", "read_xc", "write_xc"]


class XCData(NamedTuple):
    """One XC file's content: ``features`` ``(num_points, num_features)`` and ``labels``
    ``(num_points, num_labels)``, both ``torch.sparse_csr`` with int64 indices sorted within each
    row (labels' values are float32 ones)."""

    features: Tensor
    labels: Tensor
    num_features: int
    num_labels: int


# ---------------------------------------------------------------------------------- reading

# A well-formed line's parts: the fast path checks them with these and converts them in bulk;
# anything else goes to _parse_strictly, which finds the fault (or accepts the line).
_LABELS = re.compile(r"[0-9]+(?:,[0-9]+)*")
_FEATURES = re.compile(r"\s*(?:[0-9]+:[^\s:]+(?:\s+|\Z))*")
_INTEGER = re.compile(r"-?[0-9]+")
_HEADER = "'num_points num_features num_labels' (three non-negative integers)"


def read_xc(path_or_file: str | os.PathLike | IO[str], *,
            dtype: torch.dtype = torch.float32) -> XCData:
    """Read an XC repository file (path, or a text file object) into CSR tensors.

    Args:
        path_or_file: a path, or a text-mode file object (any iterable of lines); it is read
            once, line by line.
        dtype: the floating dtype of the feature values (labels are float32 ones).

    Returns:
        :class:`XCData`.

    Raises:
        XCFormatError: a malformed line (the message names the file and line number).
        TypeError: ``dtype`` not floating point, or a file object open in binary mode.
    """
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"read_xc: dtype must be a floating-point torch.dtype, got {dtype!r}.")
    if isinstance(path_or_file, (str, os.PathLike)):
        name = os.fspath(path_or_file)
        # undecodable bytes become U+FFFD, so that they are reported with their line number
        with open(name, encoding="utf-8", errors="replace") as f:
            return _read(f, str(name), dtype)
    return _read(path_or_file, str(getattr(path_or_file, "name", "<stream>")), dtype)


class _BadLine(Exception):
    """What is wrong with one line (read_xc adds the file and line number)."""


def _read(lines: Iterable[str], name: str, dtype: torch.dtype) -> XCData:
    it = iter(lines)
    first = next(it, None)
    if isinstance(first, bytes):
        raise TypeError(f"read_xc: {name} is open in binary mode; open it in text mode "
                        "(open(path) or open(path, 'r')).")
    if first is None:
        raise XCFormatError(f"{name}, line 1: the file is empty; expected the header {_HEADER}.")
    tokens = first.split()
    if len(tokens) != 3 or not all(t.isascii() and t.isdigit() for t in tokens):
        raise XCFormatError(f"{name}, line 1: bad header {first.strip()!r}; expected {_HEADER}.")
    num_points, num_features, num_labels = map(int, tokens)

    limit = _overflow_limit(dtype)
    label_ptr, label_cols = array("q", [0]), array("q")
    feat_ptr, feat_cols = array("q", [0]), array("q")
    feat_vals = array("f" if dtype == torch.float32 else "d")
    rows = 0
    for lineno, line in enumerate(it, start=2):
        if rows == num_points:
            if line.isspace():
                continue  # trailing newlines
            raise XCFormatError(f"{name}, line {lineno}: more data lines than num_points = "
                                f"{num_points} in the header.")
        try:
            labels, idx, vals = _parse_line(line, num_labels, num_features, limit)
        except _BadLine as e:
            raise XCFormatError(f"{name}, line {lineno}: {e}") from None
        label_cols.extend(labels)
        label_ptr.append(len(label_cols))
        feat_cols.extend(idx)
        feat_vals.extend(vals)
        feat_ptr.append(len(feat_cols))
        rows += 1
    if rows < num_points:
        raise XCFormatError(f"{name}, line {rows + 2}: the file ends after {rows} data lines; "
                            f"num_points = {num_points} in the header.")

    features = _csr(feat_ptr, feat_cols, np.frombuffer(feat_vals, dtype=feat_vals.typecode),
                    num_features)
    if features.values().dtype != dtype:
        values = features.values().to(dtype)
        bad = torch.nonzero(~torch.isfinite(values)).flatten()
        if len(bad):  # rounding from float64 went to infinity: a value at the limit's edge
            row = int(torch.searchsorted(features.crow_indices(), bad[0], right=True)) - 1
            raise XCFormatError(f"{name}, line {row + 2}: feature value "
                                f"{float(features.values()[bad[0]])!r} overflows {dtype}.")
        features = _make_csr(features.crow_indices(), features.col_indices(), values,
                             (num_points, num_features))
    labels = _csr(label_ptr, label_cols, None, num_labels)
    return XCData(features, labels, num_features, num_labels)


def _parse_line(line: str, num_labels: int, num_features: int,
                limit: float) -> tuple[list[int], list[int], list[float]]:
    """One data line's labels, feature indices and values, checked."""
    label_text, feature_text = _split_line(line)
    return (_parse_fast(label_text, feature_text, num_labels, num_features, limit)
            or _parse_strictly(label_text, feature_text, num_labels, num_features, limit))


def _split_line(line: str) -> tuple[str, str]:
    """The label text (``""`` if the line starts with whitespace or a feature) and the rest."""
    parts = line.split(None, 1)
    if not parts or line[0].isspace() or ":" in parts[0]:
        return "", line
    return parts[0], (parts[1] if len(parts) == 2 else "")


def _parse_fast(label_text: str, feature_text: str, num_labels: int, num_features: int,
                limit: float) -> tuple[list[int], list[int], list[float]] | None:
    """A well-formed line's content by bulk conversions; None for anything else (for
    _parse_strictly, which names the fault). Same results as _parse_strictly where not None."""
    labels: list[int] = []
    if label_text:
        if not _LABELS.fullmatch(label_text):
            return None
        labels = list(map(int, label_text.split(",")))
        if max(labels) >= num_labels or len(set(labels)) != len(labels):
            return None
    if not _FEATURES.fullmatch(feature_text):
        return None
    flat = feature_text.replace(":", " ").split()
    idx = list(map(int, flat[0::2]))
    try:
        vals = list(map(float, flat[1::2]))
    except ValueError:
        return None
    if idx:
        total = sum(vals)  # NaN if a value is NaN or infinite (min/max miss NaN)
        if (max(idx) >= num_features or len(set(idx)) != len(idx)
                or not -limit < min(vals) <= max(vals) < limit or total != total):
            return None
    return labels, idx, vals


def _parse_strictly(label_text: str, feature_text: str, num_labels: int, num_features: int,
                    limit: float) -> tuple[list[int], list[int], list[float]]:
    """Token by token, the first fault raised as _BadLine (the reference for _parse_line)."""
    labels: list[int] = []
    if label_text:
        seen: set[int] = set()
        for text in label_text.split(","):
            if not text:
                raise _BadLine(f"empty label in {label_text!r} (two commas in a row, or a "
                               "comma at an end).")
            label = _integer(text, "label", num_labels, "num_labels")
            if label in seen:
                raise _BadLine(f"label {label} appears twice in {label_text!r}.")
            seen.add(label)
            labels.append(label)
    idx: list[int] = []
    vals: list[float] = []
    first_token: dict[int, str] = {}
    for token in feature_text.split():
        index_text, colon, value_text = token.partition(":")
        if not colon:
            raise _BadLine(f"feature {token!r} has no ':' (expected index:value).")
        index = _integer(index_text, "feature index", num_features, "num_features")
        try:
            value = float(value_text)
        except ValueError:
            raise _BadLine(f"feature value {value_text!r} in {token!r} is not a number.") from None
        if not math.isfinite(value):
            raise _BadLine(f"feature value {value_text!r} in {token!r} is not finite (NaN and "
                           "infinities are refused).")
        if not -limit < value < limit:
            raise _BadLine(f"feature value {value_text!r} in {token!r} is too large for the "
                           "dtype (it would read as infinity).")
        if index in first_token:
            raise _BadLine(f"feature index {index} appears twice ({first_token[index]!r} and "
                           f"{token!r}).")
        first_token[index] = token
        idx.append(index)
        vals.append(value)
    return labels, idx, vals


def _integer(text: str, what: str, size: int, header_name: str) -> int:
    if not (text.isascii() and _INTEGER.fullmatch(text)):
        raise _BadLine(f"{what} {text!r} is not a non-negative integer.")
    value = int(text)
    if text[0] == "-" or value >= size:  # "-0" too
        raise _BadLine(f"{what} {text} is out of range [0, {size}) ({header_name} = {size} "
                       "in the header).")
    return value


def _overflow_limit(dtype: torch.dtype) -> float:
    """The smallest magnitude that rounds to infinity in ``dtype``: its largest finite value
    plus half a unit in the last place (ties round to even, which is up from the largest)."""
    if dtype == torch.float64:
        return math.inf
    info = torch.finfo(dtype)
    return info.max + info.eps * 2.0 ** (math.frexp(info.max)[1] - 2)


def _csr(ptr: array, cols: array, values: np.ndarray | None, num_cols: int) -> Tensor:
    """The CSR tensor of growing arrays (no copy when each row's indices are already in order;
    else one sort of the entries within their rows). ``values=None``: ones (labels)."""
    crow = np.frombuffer(ptr, dtype=np.int64)
    col = np.frombuffer(cols, dtype=np.int64)
    order = _row_sort_order(crow, col)
    if order is not None:
        col = col[order]
        values = None if values is None else values[order]
    vals = (torch.ones(len(col), dtype=torch.float32) if values is None
            else torch.from_numpy(values))
    return _make_csr(torch.from_numpy(crow), torch.from_numpy(col), vals,
                     (len(crow) - 1, num_cols))


def _row_sort_order(crow: np.ndarray, col: np.ndarray) -> np.ndarray | None:
    """The permutation that sorts ``col`` within each CSR row, or None if it is sorted."""
    if len(col) < 2:
        return None
    falls = np.flatnonzero(col[1:] < col[:-1]) + 1  # positions where the index decreases
    if _starts_a_row(crow, falls).all():  # only where a new row starts
        return None
    rows = np.repeat(np.arange(len(crow) - 1), np.diff(crow))
    return np.lexsort((col, rows))


def _starts_a_row(crow: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Whether each entry position (in ``[1, nnz)``) is the first of a row."""
    return crow[np.searchsorted(crow, positions)] == positions


def _make_csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    # checked while parsing; explicit check_invariants=False avoids the "implicitly disabled"
    # warning, the filter torch's "beta" UserWarning (a warning about torch, not the data)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


# ---------------------------------------------------------------------------------- writing

_CHUNK_ROWS = 4096  # rows formatted (in bulk) and written per step


def write_xc(path_or_file: str | os.PathLike | IO[str], features: Tensor, labels: Tensor) -> None:
    """Write ``features`` ``(N, F)`` and ``labels`` ``(N, L)`` as an XC repository file.

    Args:
        path_or_file: a path (the file is created or replaced) or a text file object.
        features: floating point, ``torch.sparse_csr`` (each stored entry written, explicit
            zeros included) or dense (its non-zero entries written); no NaN or infinity.
        labels: ``torch.sparse_csr`` whose stored values are all 1, or dense with entries in
            {0, 1} (any dtype).

    Each row is written in increasing index order, values in their dtype's shortest exact form
    (float32 for float16 / bfloat16). Rows are formatted and written a few thousand at a time.

    Raises:
        ShapeError: not 2-D, or different numbers of rows.
        TypeError: not a tensor, an unsupported layout, or non-floating features.
        ValueError: a non-finite feature value, a label value other than 0/1, or an index
            stored twice in one row of a CSR tensor.
    """
    f_crow, f_col, f_val = _csr_parts(features, "features")
    l_crow, l_col, l_val = _csr_parts(labels, "labels")
    if features.shape[0] != labels.shape[0]:
        raise ShapeError(f"write_xc: features has {features.shape[0]} rows, labels "
                         f"{labels.shape[0]}; they must have one row per sample each.")
    if not features.dtype.is_floating_point:
        raise TypeError(f"write_xc: features must be floating point, got {features.dtype}.")
    not_finite = np.flatnonzero(~np.isfinite(f_val))
    if len(not_finite):
        raise ValueError(f"write_xc: features has a NaN or infinite value in row "
                         f"{_row_of(f_crow, not_finite[0])}; the format (and read_xc) takes "
                         "finite values only.")
    not_one = np.flatnonzero(l_val != 1)
    if len(not_one):
        raise ValueError(f"write_xc: labels has the value {l_val[not_one[0]].item()!r} in row "
                         f"{_row_of(l_crow, not_one[0])}; labels are 0/1 (a CSR's stored "
                         "entries are the labels, each 1).")
    f_col, f_val = _sorted_rows(f_crow, f_col, f_val, "features")
    l_col, _ = _sorted_rows(l_crow, l_col, None, "labels")
    if f_val.dtype not in (np.float32, np.float64):
        f_val = f_val.astype(np.float32)  # holds float16 / bfloat16 exactly

    header = f"{features.shape[0]} {features.shape[1]} {labels.shape[1]}\n"
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "w", encoding="utf-8", newline="\n") as f:
            _write_rows(f, header, f_crow, f_col, f_val, l_crow, l_col)
    else:
        _write_rows(path_or_file, header, f_crow, f_col, f_val, l_crow, l_col)


def _csr_parts(t: object, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """crow, col and values (numpy, on the host) of a CSR, COO or dense 2-D tensor."""
    if not isinstance(t, Tensor):
        raise TypeError(f"write_xc: {name} must be a torch.Tensor, got {type(t).__name__}.")
    if t.dim() != 2:
        raise ShapeError(f"write_xc: {name} must be 2-D (samples, columns), got shape "
                         f"{tuple(t.shape)}.")
    t = t.detach().cpu()
    if t.layout == torch.sparse_coo:
        t = t.coalesce().to_sparse_csr()
    elif t.layout == torch.strided:
        t = t.to_sparse_csr()
    elif t.layout != torch.sparse_csr:
        raise TypeError(f"write_xc: {name} must be dense, sparse_csr or sparse_coo, got "
                        f"{t.layout}.")
    values = t.values()
    if values.dtype == torch.bfloat16:  # numpy has no bfloat16
        values = values.float()
    return (t.crow_indices().to(torch.int64).numpy(), t.col_indices().to(torch.int64).numpy(),
            values.numpy())


def _row_of(crow: np.ndarray, position: int) -> int:
    return int(np.searchsorted(crow, position, side="right")) - 1


def _sorted_rows(crow: np.ndarray, col: np.ndarray, values: np.ndarray | None,
                 name: str) -> tuple[np.ndarray, np.ndarray | None]:
    order = _row_sort_order(crow, col)
    if order is not None:
        col = col[order]
        values = None if values is None else values[order]
    if len(col) > 1:
        repeats = np.flatnonzero(col[1:] == col[:-1]) + 1
        repeats = repeats[~_starts_a_row(crow, repeats)]  # equal indices in one row
        if len(repeats):
            raise ValueError(f"write_xc: {name} stores column {col[repeats[0]]} twice in row "
                             f"{_row_of(crow, repeats[0])}; coalesce it first.")
    return col, values


def _write_rows(out: IO[str], header: str, f_crow: np.ndarray, f_col: np.ndarray,
                f_val: np.ndarray, l_crow: np.ndarray, l_col: np.ndarray) -> None:
    out.write(header)
    num_rows = len(f_crow) - 1
    for start in range(0, num_rows, _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, num_rows)
        fa, fb, la, lb = f_crow[start], f_crow[stop], l_crow[start], l_crow[stop]
        # numpy's str of a float is the shortest text that reads back to the same value
        feats = [c + ":" + v for c, v in zip(f_col[fa:fb].astype(str).tolist(),
                                              f_val[fa:fb].astype(str).tolist())]
        labs = l_col[la:lb].astype(str).tolist()
        lines = []
        for row in range(start, stop):
            line = ",".join(labs[l_crow[row] - la:l_crow[row + 1] - la])
            if f_crow[row + 1] > f_crow[row]:
                line += " " + " ".join(feats[f_crow[row] - fa:f_crow[row + 1] - fa])
            lines.append(line + "\n")
        out.write("".join(lines))
