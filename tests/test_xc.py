"""The Extreme Classification Repository's text format (marginloss.xc): reading, writing, errors.

The oracle for reading is a hand-written file and the dense matrices it stands for; for writing,
reading back (the same CSR tensors, bit for bit) and the canonical text. Every kind of malformed
line must raise XCFormatError naming the line; reading must stream (memory of the result's
order, never of the file's).
"""

from __future__ import annotations

import io
import re
import tracemalloc
import warnings

import numpy as np
import pytest
import torch

import marginloss
from marginloss import xc
from marginloss.errors import ShapeError, XCFormatError
from marginloss.xc import XCData, read_xc, write_xc

# 5 samples, 6 features, 4 labels: unsorted features, a line without labels (leading space), one
# without features, a blank line (neither), a tab and a CRLF line ending
SMALL = ("5 6 4\n"
         "3,0 4:2.5 1:-0.5\n"
         " 0:1.0 5:0.25\n"
         "2\n"
         "\n"
         "1\t2:1e-3\t3:4\r\n")
SMALL_FEATURES = [[0, -0.5, 0, 0, 2.5, 0],
                  [1.0, 0, 0, 0, 0, 0.25],
                  [0, 0, 0, 0, 0, 0],
                  [0, 0, 0, 0, 0, 0],
                  [0, 0, 1e-3, 4.0, 0, 0]]
SMALL_LABELS = [[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]]

# read_xc then write_xc reproduces this text exactly: sorted indices, shortest float32 values,
# a leading space for a line without labels, an empty line for an empty sample
CANONICAL = ("4 6 5\n"
             "0,3 1:0.5 4:-2.25\n"
             " 0:1e-10 2:1.0 5:3.4028235e+38\n"
             "2,4\n"
             "\n")


def csr(dense: list | torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "sparse CSR support is in beta"
        return torch.as_tensor(dense, dtype=torch.float32).to_sparse_csr()


def assert_same_csr(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.layout == b.layout == torch.sparse_csr and a.shape == b.shape
    for x, y in [(a.crow_indices(), b.crow_indices()), (a.col_indices(), b.col_indices()),
                 (a.values(), b.values())]:
        assert x.dtype == y.dtype and torch.equal(x, y)


def random_csr(rng: np.random.Generator, rows: int, cols: int, per_row: int,
               values: bool) -> torch.Tensor:
    """Random rows with 0..2*per_row sorted distinct columns (some rows empty)."""
    counts = rng.integers(0, 2 * per_row + 1, size=rows)
    col = np.concatenate([np.sort(rng.choice(cols, size=k, replace=False)) for k in counts])
    crow = np.concatenate([[0], np.cumsum(counts)])
    if values:  # magnitudes from 1e-38 to 1e38, signs, a few subnormals and the extremes
        val = (rng.standard_normal(len(col)) * 10.0 ** rng.integers(-38, 38, len(col)))
        val = val.astype(np.float32)
        val[::97] = np.float32(1e-45)
        val[::101] = np.finfo(np.float32).max
    else:
        val = np.ones(len(col), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(torch.from_numpy(crow), torch.from_numpy(col),
                                       torch.from_numpy(val), size=(rows, cols))


# ------------------------------------------------------------------------------ good files

def test_small_file_parses_to_the_dense_matrices():
    data = read_xc(io.StringIO(SMALL))
    assert isinstance(data, XCData)
    assert (data.num_features, data.num_labels) == (6, 4)
    assert torch.equal(data.features.to_dense(), torch.tensor(SMALL_FEATURES))
    assert torch.equal(data.labels.to_dense(), torch.tensor(SMALL_LABELS, dtype=torch.float32))
    for t in data:
        if isinstance(t, torch.Tensor):
            assert t.layout == torch.sparse_csr
            assert t.crow_indices().dtype == t.col_indices().dtype == torch.int64
            assert t.values().dtype == torch.float32
    # indices sorted within each row although the file's features were not
    assert data.features.col_indices().tolist() == [1, 4, 0, 5, 2, 3]
    assert data.labels.col_indices().tolist() == [0, 3, 2, 1]
    assert data.labels.crow_indices().tolist() == [0, 2, 2, 3, 3, 4]
    assert data.features.crow_indices().tolist() == [0, 2, 4, 4, 4, 6]


def test_labels_are_the_sparse_target_the_losses_take():
    data = read_xc(io.StringIO(SMALL))
    x = torch.randn(5, 4)
    dense = torch.tensor(SMALL_LABELS, dtype=torch.float32)
    ours = marginloss.multilabel_soft_margin_loss(x, data.labels, reduction="none")
    ref = torch.nn.functional.multilabel_soft_margin_loss(x, dense, reduction="none")
    torch.testing.assert_close(ours, ref)


def test_a_line_of_features_only_has_no_labels():
    data = read_xc(io.StringIO("2 3 2\n1:0.5\n0:1 2:2\n"))  # no leading space either
    assert data.labels.crow_indices().tolist() == [0, 0, 0]
    assert torch.equal(data.features.to_dense(), torch.tensor([[0, 0.5, 0], [1, 0, 2]]))


def test_path_and_file_object_read_the_same(tmp_path):
    path = tmp_path / "small.txt"
    path.write_bytes(SMALL.encode())
    from_path, from_str_path = read_xc(path), read_xc(str(path))
    with open(path) as f:
        from_file = read_xc(f)
    for other in (from_str_path, from_file):
        assert_same_csr(from_path.features, other.features)
        assert_same_csr(from_path.labels, other.labels)


def test_dtype_sets_the_feature_values_dtype():
    text = "1 2 1\n0 0:0.1 1:1e39\n"  # 1e39 overflows float32, not float64
    data = read_xc(io.StringIO(text), dtype=torch.float64)
    assert data.features.values().tolist() == [0.1, 1e39]
    assert data.labels.values().dtype == torch.float32
    half = read_xc(io.StringIO("1 2 1\n0 0:0.1 1:65504\n"), dtype=torch.float16)
    assert torch.equal(half.features.values(), torch.tensor([0.1, 65504], dtype=torch.float16))
    with pytest.raises(TypeError, match="floating-point"):
        read_xc(io.StringIO(text), dtype=torch.int64)


def test_largest_float32_reads_and_beyond_it_is_refused():
    data = read_xc(io.StringIO("1 1 1\n0 0:3.4028235e38\n"))
    assert data.features.values().item() == torch.finfo(torch.float32).max
    # above max by less than half a unit in the last place: rounds to max, accepted
    assert read_xc(io.StringIO("1 1 1\n0 0:3.40282356e38\n")).features.values().isfinite().all()
    with pytest.raises(XCFormatError, match="line 2: .*too large"):
        read_xc(io.StringIO("1 1 1\n0 0:3.5e38\n"))


def test_trailing_blank_lines_are_not_samples():
    data = read_xc(io.StringIO("1 2 2\n1 0:1\n\n  \n"))
    assert data.features.shape == (1, 2)


def test_empty_data_set():
    data = read_xc(io.StringIO("0 7 3\n"))
    assert data.features.shape == (0, 7) and data.labels.shape == (0, 3)
    out = io.StringIO()
    write_xc(out, data.features, data.labels)
    assert out.getvalue() == "0 7 3\n"


def test_read_then_write_gives_the_canonical_text_back(tmp_path):
    data = read_xc(io.StringIO(CANONICAL))
    out = io.StringIO()
    write_xc(out, data.features, data.labels)
    assert out.getvalue() == CANONICAL
    write_xc(tmp_path / "c.txt", data.features, data.labels)
    assert (tmp_path / "c.txt").read_bytes() == CANONICAL.encode()


def test_write_then_read_gives_the_same_tensors_small():
    features, labels = csr(SMALL_FEATURES), csr(SMALL_LABELS)
    out = io.StringIO()
    write_xc(out, features, labels)
    assert out.getvalue() == ("5 6 4\n0,3 1:-0.5 4:2.5\n 0:1.0 5:0.25\n2\n\n1 2:0.001 3:4.0\n")
    back = read_xc(io.StringIO(out.getvalue()))
    assert_same_csr(back.features, features)
    assert_same_csr(back.labels, labels)


def test_write_then_read_round_trip_random_2000_rows(tmp_path):
    rng = np.random.default_rng(1)
    features = random_csr(rng, 2000, 50_000, 30, values=True)
    labels = random_csr(rng, 2000, 3_000, 5, values=False)
    path = tmp_path / "random.txt"
    write_xc(path, features, labels)
    back = read_xc(path)
    assert (back.num_features, back.num_labels) == (50_000, 3_000)
    assert_same_csr(back.features, features)  # every float32 value bit for bit
    assert_same_csr(back.labels, labels)
    # and the same file again from the tensors read
    again = io.StringIO()
    write_xc(again, back.features, back.labels)
    assert again.getvalue() == path.read_text()


def test_write_float64_round_trips_in_float64():
    x = torch.tensor([[0.1, 0.0, 1 / 3], [0.0, 1e300, 0.0]], dtype=torch.float64)
    out = io.StringIO()
    write_xc(out, x, torch.zeros(2, 1))
    back = read_xc(io.StringIO(out.getvalue()), dtype=torch.float64)
    assert torch.equal(back.features.to_dense(), x)


def test_write_takes_dense_and_unsorted_csr_and_sorts_rows():
    dense = torch.tensor([[0.0, 3.0, 0.0, 1.5]])
    labels = torch.tensor([[True, False, True]])
    out = io.StringIO()
    write_xc(out, dense, labels)
    assert out.getvalue() == "1 4 3\n0,2 1:3.0 3:1.5\n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unsorted = torch.sparse_csr_tensor(torch.tensor([0, 2]), torch.tensor([3, 1]),
                                           torch.tensor([1.5, 3.0]), size=(1, 4))
        unsorted_labels = torch.sparse_csr_tensor(torch.tensor([0, 2]), torch.tensor([2, 0]),
                                                  torch.tensor([1.0, 1.0]), size=(1, 3))
    out2 = io.StringIO()
    write_xc(out2, unsorted, unsorted_labels)
    assert out2.getvalue() == out.getvalue()


def test_write_errors():
    good_x, good_y = torch.ones(2, 3), torch.ones(2, 2)
    with pytest.raises(ShapeError, match="2 rows, labels 3"):
        write_xc(io.StringIO(), good_x, torch.ones(3, 2))
    with pytest.raises(ShapeError, match="2-D"):
        write_xc(io.StringIO(), torch.ones(3), good_y)
    with pytest.raises(TypeError, match="floating point"):
        write_xc(io.StringIO(), torch.ones(2, 3, dtype=torch.int64), good_y)
    with pytest.raises(TypeError, match="torch.Tensor"):
        write_xc(io.StringIO(), [[1.0]], good_y)
    with pytest.raises(ValueError, match="NaN or infinite value in row 1"):
        write_xc(io.StringIO(), torch.tensor([[1.0, 0, 0], [0, float("inf"), 0]]), good_y)
    with pytest.raises(ValueError, match="value 0.5 in row 0"):
        write_xc(io.StringIO(), good_x, torch.tensor([[0.5, 0], [1, 0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        twice = torch.sparse_csr_tensor(torch.tensor([0, 1, 3]), torch.tensor([0, 2, 2]),
                                        torch.ones(3), size=(2, 3))
    with pytest.raises(ValueError, match="column 2 twice in row 1"):
        write_xc(io.StringIO(), twice, good_y)
    with pytest.raises(ValueError, match="column 2 twice in row 1"):
        write_xc(io.StringIO(), good_x, twice)


# ------------------------------------------------------------------------- malformed files

# (text, line number, what the message says)
MALFORMED = [
    ("", 1, "the file is empty"),
    ("3 5\n", 1, "bad header '3 5'"),
    ("3 5 4 1\n", 1, "bad header"),
    ("a 5 4\n", 1, "bad header"),
    ("-1 5 4\n", 1, "bad header"),
    ("1.5 5 4\n", 1, "bad header"),
    ("3 5 4\n0 1:1\n1\n", 4, r"ends after 2 data lines; num_points = 3"),
    ("1 5 4\n0 1:1\n2\n", 3, r"more data lines than num_points = 1"),
    ("2 5 4\n0\n4 1:1\n", 3, r"label 4 is out of range \[0, 4\) \(num_labels = 4"),
    ("1 5 4\n-1 1:1\n", 2, r"label -1 is out of range"),
    ("1 5 4\n0 5:1\n", 2, r"feature index 5 is out of range \[0, 5\) \(num_features = 5"),
    ("1 5 4\n0 -1:1\n", 2, r"feature index -1 is out of range"),
    ("1 5 4\na 1:1\n", 2, r"label 'a' is not a non-negative integer"),
    ("1 5 4\n1.5 1:1\n", 2, r"label '1.5' is not a non-negative integer"),
    ("1 5 4\n+1 1:1\n", 2, r"label '\+1' is not a non-negative integer"),
    ("1 5 4\n0 x:1\n", 2, r"feature index 'x' is not a non-negative integer"),
    ("1 5 4\n0 1.0:1\n", 2, r"feature index '1.0' is not a non-negative integer"),
    ("1 5 4\n0 1:abc\n", 2, r"feature value 'abc' in '1:abc' is not a number"),
    ("1 5 4\n0 1:\n", 2, r"feature value '' in '1:' is not a number"),
    ("1 5 4\n0 1:1 7\n", 2, r"feature '7' has no ':'"),
    ("1 5 4\n0 1:2:3\n", 2, r"feature value '2:3' in '1:2:3' is not a number"),
    ("1 5 4\n0 1:1 3:2 1:0.5\n", 2, r"feature index 1 appears twice \('1:1' and '1:0.5'\)"),
    ("1 5 4\n1,2,1 1:1\n", 2, r"label 1 appears twice in '1,2,1'"),
    ("1 5 4\n1,,2 1:1\n", 2, r"empty label in '1,,2'"),
    ("1 5 4\n1, 1:1\n", 2, r"empty label in '1,'"),
    ("1 5 4\n0 1:nan\n", 2, r"feature value 'nan' in '1:nan' is not finite"),
    ("1 5 4\n0 1:inf\n", 2, r"not finite"),
    ("1 5 4\n0 1:-Infinity\n", 2, r"not finite"),
    ("1 5 4\n0 1:1e39\n", 2, r"feature value '1e39' in '1:1e39' is too large"),
    ("1 5 4\n0 1:-1e39\n", 2, r"too large"),
]


@pytest.mark.parametrize("text, line, what", MALFORMED,
                         ids=[f"{i}-{m[2][:24]}" for i, m in enumerate(MALFORMED)])
def test_malformed_line_names_the_line(text, line, what):
    with pytest.raises(XCFormatError, match=rf"^<stream>, line {line}: .*{what}"):
        read_xc(io.StringIO(text))


def test_fast_path_agrees_with_the_strict_parser_on_random_lines():
    """Lines are parsed by bulk conversions when they look well formed and token by token
    otherwise (to name the fault): on near-miss lines, whatever the fast path accepts must be
    exactly what the strict parser returns (and not something it refuses)."""
    rng = np.random.default_rng(0)
    pieces = ["1", "7", "12", "0", ":", ":", ",", " ", " ", "\t", "-", ".", "e", "x", "nan",
              "1e39", "5"]
    accepted = 0
    for _ in range(20_000):
        line = "".join(rng.choice(pieces, size=rng.integers(1, 12))) + "\n"
        labels_text, features_text = xc._split_line(line)
        fast = xc._parse_fast(labels_text, features_text, 10, 10, xc._overflow_limit(
            torch.float32))
        try:
            strict = xc._parse_strictly(labels_text, features_text, 10, 10,
                                        xc._overflow_limit(torch.float32))
        except xc._BadLine:
            strict = None
        assert fast is None or fast == strict, line
        accepted += fast is not None
    assert accepted > 500  # the fast path did take lines (about 1000)


def test_error_deep_in_a_file_names_its_line_and_the_file(tmp_path):
    good = "".join(f"{i % 4} {i % 5}:1.5 {(i + 2) % 5}:0.5\n" for i in range(1500))
    path = tmp_path / "deep.txt"
    path.write_text("1502 5 4\n" + good + "3 2:1 2:2\n" + "0\n")
    where = re.escape(str(path))
    with pytest.raises(XCFormatError, match=rf"^{where}, line 1502: feature index 2 appears"):
        read_xc(path)


def test_the_first_faulty_line_is_reported():
    text = "3 5 4\n0 1:1\n0 9:1\n0 1:x\n"  # an index out of range before a bad value
    with pytest.raises(XCFormatError, match="line 3: feature index 9"):
        read_xc(io.StringIO(text))


def test_xc_format_error_is_public_and_a_value_error():
    assert marginloss.XCFormatError is XCFormatError
    assert XCFormatError.__module__ == "marginloss.errors"
    assert issubclass(XCFormatError, ValueError)


def test_binary_file_is_refused_with_the_fix():
    with pytest.raises(TypeError, match="binary mode"):
        read_xc(io.BytesIO(b"1 2 3\n0 1:1\n"))


def test_undecodable_bytes_are_reported_with_their_line(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"2 5 4\n0 1:1\n\xe9 1:1\n")
    with pytest.raises(XCFormatError, match="line 3: label .* is not a non-negative integer"):
        read_xc(path)


# ------------------------------------------------------------------------------- streaming

class LazyLines(io.TextIOBase):
    """A text file object that makes each line when it is read: the whole text never exists."""

    def __init__(self, rows: int, features_per_row: int, value_text: str):
        self.rows, self.k, self.value = rows, features_per_row, value_text
        self.next_row = -1  # -1: the header
        self.chars = 0

    def readable(self) -> bool:
        return True

    def readline(self, size: int = -1) -> str:
        row, self.next_row = self.next_row, self.next_row + 1
        if row < 0:
            line = f"{self.rows} {self.rows + self.k} 10\n"
        elif row < self.rows:
            feats = " ".join(f"{row + j}:{self.value}" for j in range(self.k))
            line = f"{row % 10},{(row + 3) % 10} {feats}\n"
        else:
            line = ""
        self.chars += len(line)
        return line


def test_reading_streams_without_holding_the_file():
    # values written with 100 digits: the text is ~9 times the result's index and value arrays,
    # so holding all lines (or the file's text) would exceed the bound below
    source = LazyLines(2000, 30, "0.5" + "0" * 100)
    read_xc(LazyLines(3, 2, "0.5"))  # one-time allocations (first calls into torch and numpy)
    tracemalloc.start()
    try:
        data = read_xc(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out_bytes = sum(t.numel() * t.element_size() for t in (
        data.features.crow_indices(), data.features.col_indices(), data.features.values(),
        data.labels.crow_indices(), data.labels.col_indices(), data.labels.values()))
    assert data.features.shape == (2000, 2030) and data.features._nnz() == 60_000
    assert torch.all(data.features.values() == 0.5)
    assert source.chars > 6 * out_bytes
    assert peak < 2 * out_bytes, (peak, out_bytes, source.chars)  # holding the lines: ~10x


def test_module_is_not_imported_by_the_package():
    """``from marginloss import xc`` on demand: ``import marginloss`` stays as light as it was."""
    import subprocess
    import sys
    code = "import sys, marginloss; print('marginloss.xc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert xc.__all__ == ["XCData", "read_xc", "write_xc"]
