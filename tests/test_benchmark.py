"""The benchmark harness: it runs, compares the three implementations and measures memory."""

from __future__ import annotations

import json

import pytest
import torch

from marginloss import benchmark


def test_quick_benchmark_runs_and_reports_every_column(capsys):
    assert benchmark.main(["--device", "cpu", "--quick", "--budget", "0.01", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["environment"]["torch"] == torch.__version__
    rows = report["rows"]
    assert [r["case"] for r in rows] == [c.label for c in benchmark.QUICK_CASES]
    for r in rows:
        assert r["ours_ms"] > 0 and r["eager_ms"] > 0 and r["ours_gbps"] > 0
        assert r["speedup_vs_eager"] > 0
        assert r["ours_peak_mb"] >= 0


def test_markdown_table_has_one_line_per_case(capsys):
    assert benchmark.main(["--device", "cpu", "--quick", "--budget", "0.01"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n| ") == len(benchmark.QUICK_CASES) + 1  # header + rows
    assert "torch 2." in out


def test_peak_extra_bytes_sees_temporaries():
    def step():
        a = torch.empty(1 << 20).fill_(1)  # 4 MiB
        b = torch.empty(1 << 18).fill_(1)  # 1 MiB, both alive at once
        del a, b
        torch.empty(1 << 19).fill_(1)  # 2 MiB after they are freed

    benchmark.exact_rss_allocator()
    peak = benchmark.peak_extra_bytes(step, torch.device("cpu"))
    if peak is None:
        pytest.skip("no /proc/self/clear_refs on this system")
    # both blocks were alive at once; the heap's history may add what it did not hand back
    assert 4.5 * 2**20 <= peak <= 8 * 2**20


def test_case_inputs_follow_each_convention():
    for case in benchmark.CASES:
        x, y, _ = case.inputs("cpu", torch.float32)
        assert x.shape == (case.n, case.c)
        if case.loss == "multilabel_margin_loss":
            assert ((y >= 0).sum(1) == case.k).all()
            assert (y[:, case.k:] == -1).all()
        elif case.loss == "multi_margin_loss":
            assert y.shape == (case.n,) and int(y.max()) < case.c


def test_time_rounds_takes_turns():
    order = []
    steps = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    times = benchmark.time_rounds(steps, torch.device("cpu"), budget_s=0.0, min_rounds=3)
    assert [len(t) for t in times.values()] == [3, 3]
    assert order == ["a", "a", "b", "b"] + ["a", "b"] * 3  # warm-up, then alternating rounds
