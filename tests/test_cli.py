"""The `marginloss` command: every subcommand runs and prints what it should."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from marginloss.cli import main


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


# ---- demo (quick mode keeps CI fast) ------------------------------------------------------


@pytest.fixture(scope="module")
def demo_deps():
    pytest.importorskip("sklearn")
    pytest.importorskip("river")


def test_demo_quick_json_and_plot(demo_deps, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    assert main(["demo", "--quick", "--json", "--plot", str(png), "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quick"] is True and report["plot"] == str(png)
    tasks = {t["task"]: t for t in report["tasks"]}
    assert set(tasks) == {"binary", "multi-class", "multi-label"}
    runs = {(t, r["loss"]): r for t, task in tasks.items() for r in task["runs"]}
    assert 0.9 <= runs["binary", "SoftMarginLoss"]["metrics"]["accuracy"] <= 1
    assert 0.9 <= runs["multi-class", "MultiMarginLoss(p=1)"]["metrics"]["accuracy"] <= 1
    assert 0.9 <= runs["multi-class", "MultiMarginLoss(p=2)"]["metrics"]["accuracy"] <= 1
    ml = runs["multi-label", "MultiLabelSoftMarginLoss"]["metrics"]
    assert 0.5 <= ml["micro_f1"] <= 1 and 0.5 <= ml["precision_at_3"] <= 1
    assert 0.5 <= runs["multi-label", "MultiLabelMarginLoss"]["metrics"]["precision_at_3"] <= 1
    assert ("multi-label", "BCEWithLogitsLoss") in runs
    assert ("multi-class", "CrossEntropyLoss") in runs
    assert tasks["multi-label"]["n_train"] + tasks["multi-label"]["n_test"] == 2417
    assert all(r["train_seconds"] >= 0 and r["curve"]["epoch"] for r in runs.values())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_quick_table_and_progress(demo_deps, capsys):
    assert main(["demo", "--quick"]) == 0
    captured = capsys.readouterr()
    for name in ("SoftMarginLoss", "MultiMarginLoss(p=2)", "MultiLabelSoftMarginLoss",
                 "MultiLabelMarginLoss", "CrossEntropyLoss", "micro-F1", "P@3", "accuracy"):
        assert name in captured.out
    assert "[8/8]" in captured.err  # progress on stderr (one line per run when not a TTY)


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
    assert rc == 1 and "--key" in err
    rc, out, _ = _guide(capsys, tmp_path / "ab.pt", "--key", "b")
    assert rc == 0


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


def test_guide_errors(tmp_path, capsys):
    rc, _, err = _guide(capsys, tmp_path / "missing.npy")
    assert rc == 2 and "no such file" in err
    (tmp_path / "scores.txt").write_text("0.5\n-2.25\n")
    rc, _, err = _guide(capsys, tmp_path / "scores.txt")
    assert rc == 1 and "no label convention" in err
    (tmp_path / "y.json").write_text("[0, 1]")
    rc, _, err = _guide(capsys, tmp_path / "y.json")
    assert rc == 1 and "unsupported file type" in err
    (tmp_path / "m.csv").write_text("1,0\n0,1,1\n")
    rc, out, _ = _guide(capsys, tmp_path / "m.csv", "--single-label")
    assert rc == 1


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
