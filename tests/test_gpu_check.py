"""``benchmarks/gpu_check.py``: its ``--interpret`` mode runs end to end on the CPU (one part,
one loss, tiny sizes), and its copy-bandwidth report computes what it says."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.interpret
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_interpret_mode_runs_the_benchmark_end_to_end(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "--interpret", "--only", "bench_float32",
         "--loss", "soft_margin_loss", "--budget", "0.02", "--total", "120"],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (out / "summary.txt").read_text().splitlines()
    assert len(summary) == 1 and summary[0].startswith("== bench float32: OK"), summary
    with (out / "bench.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["loss"], r["backend"], r["dtype"]) for r in rows] == \
        [("soft_margin_loss", "triton", "float32")]
    assert rows[0]["ours_ok"] == "yes" and float(rows[0]["ours_ms"]) > 0
    report = (out / "report.md").read_text().splitlines()
    assert len(report) == 3 and report[2].startswith("| soft_margin_loss N=8 C=16 | float32 |")
    row = rows[0]
    gbps = float(row["min_bytes"]) / (float(row["ours_ms"]) * 1e-3) / 1e9
    assert report[2].split(" | ")[7] == f"{100 * gbps / float(row['copy_gbps']):.1f}%"
    assert "soft_margin_loss N=8 C=16" in (out / "bench.md").read_text()


def test_copy_report_is_percent_of_copy_bandwidth_with_the_goals(tmp_path):
    gpu_check = _load()
    path = tmp_path / "bench.csv"
    fields = ["loss", "case", "n", "c", "dtype", "backend", "ours_ms", "eager_ms",
              "compile_ms", "min_bytes", "copy_gbps"]
    rows = [  # 4 GB in 1.25 ms: 3200 GB/s, 80% of a 4000 GB/s copy; eager (4 ms): 25%
        {"loss": "soft_margin_loss", "case": "sm", "n": 4096, "c": 16384, "dtype": "float32",
         "backend": "triton", "ours_ms": 1.25, "eager_ms": 4, "compile_ms": "",
         "min_bytes": 4e9, "copy_gbps": 4000},
        {"loss": "multilabel_margin_loss", "case": "mlm", "n": 8192, "c": 8192,
         "dtype": "bfloat16", "backend": "triton", "ours_ms": 1.0, "eager_ms": 2,
         "compile_ms": 1, "min_bytes": 2e9, "copy_gbps": 4000},
        {"loss": "soft_margin_loss", "case": "small", "n": 8, "c": 16, "dtype": "float32",
         "backend": "triton", "ours_ms": "", "eager_ms": 1, "compile_ms": "",
         "min_bytes": 1e6, "copy_gbps": 4000},
    ]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    lines = gpu_check.copy_report(path).splitlines()
    cells = [line.strip("| ").split(" | ") for line in lines[2:]]
    assert cells[0][3:] == ["4000", "1.250", "4.000", "n/a", "80.0%", "25.0%", "n/a", ">= 80%: met"]
    assert cells[1][7:] == ["50.0%", "25.0%", "50.0%", ">= 50%: met"]
    assert cells[2][4:] == ["n/a", "1.000", "n/a", "n/a", "0.0%", "n/a", "-"]
    rows[0]["ours_ms"] = 1.3  # 77% < 80%
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    assert gpu_check.copy_report(path).splitlines()[2].endswith("| >= 80%: MISSED |")


def test_only_refuses_an_unknown_part(tmp_path, capsys):
    gpu_check = _load()
    with pytest.raises(SystemExit) as exc:
        gpu_check.main([str(tmp_path), "--only", "bench float64"])
    assert exc.value.code == 2
    assert "no part bench float64" in capsys.readouterr().err
