"""The `marginloss` command: every subcommand runs and prints what it should."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from marginloss.cli import main
from marginloss.guide import recommend


def test_python_m_help():
    out = subprocess.run([sys.executable, "-m", "marginloss", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0
    for cmd in ("demo", "guide", "bench", "info"):
        assert cmd in out.stdout


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_unknown_arguments_are_errors():
    with pytest.raises(SystemExit):
        main(["info", "--bogus"])


# ---- guide ----------------------------------------------------------------------------------


def _guide(capsys, path, *extra):
    rc = main(["guide", str(path), *extra])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_guide_npy_binary_01(tmp_path, capsys):
    np.save(tmp_path / "y.npy", np.array([0, 1, 1, 0, 1]))
    rc, out, _ = _guide(capsys, tmp_path / "y.npy")
    assert rc == 0
    assert "binary_01" in out and "BCEWithLogitsLoss" in out and "SoftMarginLoss" in out
    assert "values {0, 1}" in out and "could be:" in out
    rc, out, _ = _guide(capsys, tmp_path / "y.npy", "--prefer", "margin")
    assert "convert:     target = marginloss.labels.to_pm1(target)" in out
    rc, out, _ = _guide(capsys, tmp_path / "y.npy", "--num-classes", "2")
    assert "loss:        marginloss.MultiMarginLoss" in out


def test_guide_prints_the_recommendation_report(tmp_path, capsys):
    """The CLI prints a file: line, then str(Recommendation): it formats no field itself."""
    y = np.array([[0, 1, 1], [1, 0, 0]])
    np.save(tmp_path / "m.npy", y)
    rc, out, err = _guide(capsys, tmp_path / "m.npy", "--prefer", "probabilistic")
    rec = recommend(torch.from_numpy(y), prefer="probabilistic")
    assert rc == 0 and err == ""
    assert out == f"file:        {tmp_path / 'm.npy'}\n{rec}\n"


def test_guide_pt_padded_and_dict(tmp_path, capsys):
    torch.save(torch.tensor([[2, 0, -1], [1, -1, -1]]), tmp_path / "y.pt")
    rc, out, _ = _guide(capsys, tmp_path / "y.pt")
    assert rc == 0 and "MultiLabelMarginLoss" in out and "padded_indices" in out
    torch.save({"x": torch.randn(2, 3), "labels": torch.tensor([[1, 0, 1], [0, 1, 1]])},
               tmp_path / "d.pt")
    rc, out, _ = _guide(capsys, tmp_path / "d.pt")
    assert rc == 0 and "loss:        marginloss.MultiLabelSoftMarginLoss" in out
    torch.save({"a": torch.zeros(2), "b": torch.ones(2)}, tmp_path / "ab.pt")
    rc, _, err = _guide(capsys, tmp_path / "ab.pt")
    assert rc == 2 and "--key" in err
    rc, out, _ = _guide(capsys, tmp_path / "ab.pt", "--key", "b")
    assert rc == 0


def test_guide_pt_lists(tmp_path, capsys):
    torch.save([torch.tensor([0, 1, 0]), torch.tensor([1, 0, 0])], tmp_path / "rows.pt")
    rc, out, _ = _guide(capsys, tmp_path / "rows.pt")  # rows of one width: stacked
    assert rc == 0 and "one_hot" in out
    torch.save([[0, 3], [1]], tmp_path / "sets.pt")
    rc, out, _ = _guide(capsys, tmp_path / "sets.pt", "--num-classes", "4")
    assert rc == 0 and "label_sets" in out


def test_guide_csv_with_header_pm1(tmp_path, capsys):
    (tmp_path / "y.csv").write_text("label\n-1\n1\n1\n-1\n")
    rc, out, _ = _guide(capsys, tmp_path / "y.csv")
    assert rc == 0 and "binary_pm1" in out and "marginloss.SoftMarginLoss" in out


def test_guide_csv_one_hot_rows(tmp_path, capsys):
    (tmp_path / "y.csv").write_text("0,0,1\n1,0,0\n0,1,0\n")
    rc, out, _ = _guide(capsys, tmp_path / "y.csv")
    assert rc == 0 and "one_hot_to_indices" in out and "MultiMarginLoss" in out
    rc, out, _ = _guide(capsys, tmp_path / "y.csv", "--multi-label")
    assert "loss:        marginloss.MultiLabelSoftMarginLoss" in out


def test_guide_txt_class_indices_and_label_sets(tmp_path, capsys):
    (tmp_path / "idx.txt").write_text("3\n0\n2\n9\n")
    rc, out, _ = _guide(capsys, tmp_path / "idx.txt")
    assert rc == 0 and "class_indices" in out and "MultiMarginLoss" in out
    (tmp_path / "sets.txt").write_text("# labels of each sample\n0 3 5\n1\n2 4\n")
    rc, out, _ = _guide(capsys, tmp_path / "sets.txt", "--num-classes", "6")
    assert rc == 0 and "label_sets" in out
    assert "sets_to_multi_hot(target, num_classes=6)" in out


def _one_line_error(err: str, path, reason: str) -> None:
    """stderr is exactly one line that names the file and says what is wrong."""
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"marginloss guide: {path}: "), err
    assert reason in err, err


def test_guide_labels_in_no_convention_exit_1(tmp_path, capsys):
    (tmp_path / "scores.txt").write_text("0.5\n-2.25\n")
    rc, out, err = _guide(capsys, tmp_path / "scores.txt")
    assert rc == 1 and out == ""
    _one_line_error(err, tmp_path / "scores.txt", "no label convention")
    (tmp_path / "nan.csv").write_text("1\nnan\n")
    rc, _, err = _guide(capsys, tmp_path / "nan.csv")
    assert rc == 1
    _one_line_error(err, tmp_path / "nan.csv", "NaN or infinite")


def test_guide_hint_contradicting_the_labels_exit_1(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("1,0\n0,1,1\n")
    rc, out, err = _guide(capsys, tmp_path / "m.csv", "--single-label")
    assert rc == 1 and out == ""
    _one_line_error(err, tmp_path / "m.csv", "multi_label=False was passed")
    (tmp_path / "idx.txt").write_text("1\n2\n3\n")
    rc, _, err = _guide(capsys, tmp_path / "idx.txt", "--num-classes", "3")
    assert rc == 1
    _one_line_error(err, tmp_path / "idx.txt", "numbered from 1")


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def _npy_bytes(array) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _pt_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _pickle_bytes(obj) -> bytes:
    import pickle

    return pickle.dumps(obj, protocol=4)


def _npz_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, y=np.arange(3))
    return buf.getvalue()


# (file name, content, extra arguments, what stderr must say). Every one: exit 2, one line.
FILE_MISTAKES = [
    ("empty.npy", b"", [], "is empty (0 bytes)"),
    ("empty.pt", b"", [], "is empty (0 bytes)"),
    ("empty.csv", b"", [], "is empty (0 bytes)"),
    ("empty.txt", b"", [], "is empty (0 bytes)"),
    ("comments.txt", "# no labels yet\n\n", [], "holds no numbers"),
    ("header_only.csv", "label\n", [], "holds no numbers"),
    ("text.pt", "0\n1\n1\n", [], "is not a PyTorch file"),
    ("text.npy", "0\n1\n1\n", [], "is not a .npy file"),
    ("truncated.npy", _npy_bytes(np.arange(100))[:100], [], "is not a valid .npy file"),
    ("truncated.pt", _pt_bytes(torch.arange(5))[:60], [], "is not a valid PyTorch file"),
    ("archive.npy", _npz_bytes(), [], "zip archive"),
    ("objects.npy", _npy_bytes(np.array([{0, 1}, {2}], dtype=object)), [], "object array"),
    ("strings.npy", _npy_bytes(np.array(["cat", "dog"])), [], "array of strings"),
    ("complex.npy", _npy_bytes(np.array([1 + 2j])), [], "array of complex numbers"),
    ("zero.npy", _npy_bytes(np.array([], dtype=np.int64)), [], "empty tensor"),
    ("nul.csv", bytes(range(256)), [], "is a binary file"),
    ("latin.csv", b"\x93\xfe\xff label", [], "is not a text file"),
    ("legacy_pickle.pt", _pickle_bytes([0, 1, 1]), [], "torch.load(weights_only=True)"),
    ("numpy_in.pt", _pt_bytes(np.array([0, 1])), [], "pickled numpy"),
    ("int.pt", _pt_bytes(3), [], "holds an int, not a tensor of labels"),
    ("set.pt", _pt_bytes({0, 1}), [], "holds a set, not a tensor of labels"),
    ("strings.pt", _pt_bytes(["cat", "dog"]), [], "holds a list of str"),
    ("empty_list.pt", _pt_bytes([]), [], "holds an empty list"),
    ("empty_tensor.pt", _pt_bytes(torch.tensor([])), [], "holds an empty tensor"),
    ("complex.pt", _pt_bytes(torch.tensor([1 + 1j])), [], "complex tensor"),
    ("dict_no_tensor.pt", _pt_bytes({"a": 1, "b": "x"}), [], "dict without tensors"),
    ("empty_dict.pt", _pt_bytes({}), [], "empty dict"),
    ("dict_no_labels.pt", _pt_bytes({"x": torch.zeros(2), "w": torch.ones(2)}), [],
     "none named target, targets, labels, label, y: pick the labels with --key (keys: w, x)"),
    ("dict_bad_key.pt", _pt_bytes({"y": torch.zeros(2)}), ["--key", "z"],
     "has no entry 'z' (keys: y)"),
    ("dict_labels_str.pt", _pt_bytes({"labels": "cat"}), [], "entry 'labels' holds a str"),
    ("key_not_dict.pt", _pt_bytes(torch.tensor([0, 1])), ["--key", "y"], "not a dict"),
    ("key_on_npy.npy", _npy_bytes(np.array([0, 1])), ["--key", "y"], "--key applies to .pt"),
    ("words.txt", "label\n1\ncat\n", [], "line 3 is not numeric: 'cat'"),
    ("ragged_floats.txt", "0 1.5\n2\n", [], "must hold integer class indices; found 1.5"),
    ("huge.txt", "99999999999999999999999\n1\n", [], "too large"),
    ("labels.json", "[0, 1]", [], "unsupported file type '.json' (use .npy, .pt, .csv or .txt)"),
    ("labels", "0\n1\n", [], "has no extension"),
]


@pytest.mark.parametrize("name, content, extra, reason", FILE_MISTAKES,
                         ids=[m[0] for m in FILE_MISTAKES])
def test_guide_file_mistakes_exit_2_with_one_line(tmp_path, capsys, name, content, extra,
                                                   reason):
    path = tmp_path / name
    _write(path, content)
    rc, out, err = _guide(capsys, path, *extra)
    assert rc == 2 and out == ""
    _one_line_error(err, path, reason)


def test_guide_missing_file_and_directory(tmp_path, capsys):
    rc, out, err = _guide(capsys, tmp_path / "missing.npy")
    assert rc == 2 and out == ""
    _one_line_error(err, tmp_path / "missing.npy", "no such file")
    rc, _, err = _guide(capsys, tmp_path)
    assert rc == 2
    _one_line_error(err, tmp_path, "is a directory")
    rc, _, err = _guide(capsys, tmp_path / "missing_dir" / "y.npy")
    assert rc == 2
    _one_line_error(err, tmp_path / "missing_dir" / "y.npy", "no such file")


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
def test_guide_not_a_regular_file(capsys):
    rc, _, err = _guide(capsys, "/dev/null")
    assert rc == 2
    _one_line_error(err, "/dev/null", "is not a regular file")


def test_guide_unreadable_file(tmp_path, capsys, monkeypatch):
    """Permission denied (simulated: the tests may run as root, who may read anything)."""
    path = tmp_path / "y.npy"
    np.save(path, np.array([0, 1]))

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    rc, out, err = _guide(capsys, path)
    assert rc == 2 and out == ""
    _one_line_error(err, path, "cannot read it: Permission denied")


def test_guide_unexpected_failure_is_one_line(tmp_path, capsys, monkeypatch):
    """Whatever goes wrong, the guide prints one line, never a traceback."""
    import marginloss.guide

    np.save(tmp_path / "y.npy", np.array([0, 1]))

    def broken(*args, **kwargs):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(marginloss.guide, "recommend", broken)
    rc, _, err = _guide(capsys, tmp_path / "y.npy")
    assert rc == 2
    _one_line_error(err, tmp_path / "y.npy", "RuntimeError: something broke")


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_guide_bad_num_classes_is_a_usage_error(tmp_path, capsys, value):
    np.save(tmp_path / "y.npy", np.array([0, 1]))
    with pytest.raises(SystemExit) as info:
        main(["guide", str(tmp_path / "y.npy"), "--num-classes", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--num-classes: must be a positive integer" in err and "Traceback" not in err


def test_guide_help_documents_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["guide", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0 when a loss is recommended; 1 when the labels were read but fit no" \
           " label convention" in out
    assert "2 when FILE cannot be read as labels" in out


# ---- info and bench -----------------------------------------------------------------------


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for text in ("marginloss", "python", "torch", "numpy", "triton", "devices:", "cpu",
                 "soft_margin_loss", "multilabel_margin_loss", "-> torch"):
        assert text in out


def test_bench_quick(capsys):
    pytest.importorskip("marginloss.benchmark")
    assert main(["bench", "--quick", "--device", "cpu"]) == 0
    assert "soft_margin_loss" in capsys.readouterr().out
