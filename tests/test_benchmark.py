"""The benchmark harness (marginloss.benchmark): cases from the specs, the interleaved timing,
the roofline columns, the compile check, the markdown / CSV / JSON outputs and the options.

Everything runs on CPU with tiny shapes and budgets (a few seconds in all); torch.compile is
replaced by Dynamo's "eager" backend, or by fakes, where a test needs a compile column.
"""

from __future__ import annotations

import ast
import csv
import json
import time
from pathlib import Path

import pytest
import torch

from marginloss import benchmark
from marginloss.losses import LOSSES, by_name

NAMES = [s.name for s in LOSSES]
OPTIONS = ("--device", "--dtype", "--loss", "--n", "--c", "--quick", "--no-compile", "--budget",
           "--json", "--out", "--csv")
TINY = ["--device", "cpu", "--quick", "--n", "6", "--c", "8", "--budget", "0.005"]


@pytest.fixture(autouse=True)
def _small_copy_buffers(monkeypatch):
    """The copy-bandwidth buffers at test size (256 KiB, not 256 MiB)."""
    monkeypatch.setitem(benchmark.COPY_ELEMENTS, "cpu", 1 << 16)


def _dynamo_eager(fn):
    """A real (but fast) fresh torch.compile: Dynamo's capture, eager execution."""
    torch._dynamo.reset()
    return torch.compile(fn, backend="eager", dynamic=False)


def _run_json(capsys, argv, **kwargs) -> dict:
    assert benchmark.run(benchmark.build_parser().parse_args([*argv, "--json"]), **kwargs) == 0
    return json.loads(capsys.readouterr().out)


# ---- outputs -------------------------------------------------------------------------------


def test_quick_run_covers_every_loss_with_sane_values(capsys, tmp_path):
    out_csv, out_md = tmp_path / "bench.csv", tmp_path / "results.md"
    report = _run_json(capsys, [*TINY, "--csv", str(out_csv), "--out", str(out_md)])
    env, rows = report["environment"], report["rows"]
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    assert report["copy_gbps"] > 0
    assert [r["loss"] for r in rows] == NAMES  # every loss, in LOSSES order, once (one size)
    for r in rows:
        assert (r["n"], r["c"], r["dtype"]) == (6, 8, "float32")
        assert r["ours_ms"] > 0 and r["eager_ms"] > 0 and r["exp_ms"] > 0
        assert r["speedup_vs_eager"] > 0 and r["rounds"] >= 1
        assert "compile_ms" not in r and "speedup_vs_compile" not in r  # --quick: no compile
        assert r["ours_ok"] is True and r["errors"] == {}
        spec = by_name(r["loss"])
        options = benchmark.Case.from_dict(spec, spec.benchmark_cases[0]).options
        inputs, target, kwargs = spec.sample(6, 8, dtype=torch.float32, device="cpu",
                                             generator=torch.Generator().manual_seed(0),
                                             **dict(options))
        assert r["min_bytes"] == benchmark.min_bytes(inputs, target, kwargs)
        assert r["ours_gbps"] == pytest.approx(r["min_bytes"] / (r["ours_ms"] * 1e6))
        assert r["limit_bound"] in ("memory", "exp") and r["limit_pct"] > 0
        assert r["ours_peak_mb"] is None or r["ours_peak_mb"] >= 0
    with out_csv.open(newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == benchmark.CSV_FIELDS
    assert [t["loss"] for t in table] == NAMES
    for t in table:
        assert t["torch"] == torch.__version__ and t["threads"] == str(torch.get_num_threads())
        assert t["date"] and t["device"] == "cpu" and t["marginloss"]
        assert float(t["ours_ms"]) > 0 and float(t["limit_pct"]) > 0
        assert t["compile_ms"] == "" and t["ours_ok"] == "yes"
    assert out_md.read_text().count("| case") == 1

    # a second run: the markdown table on stdout; --csv and --out append
    assert benchmark.main([*TINY, "--loss", NAMES[-1], "--csv", str(out_csv),
                           "--out", str(out_md)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(ln for ln in lines if ln.startswith("| case"))
    assert [h.strip() for h in header.strip("|").split("|")] == list(benchmark.TABLE_HEADER)
    body = [ln for ln in lines if ln.startswith("| ") and ln != header]
    assert [ln.split("|")[1].split()[0] for ln in body] == [NAMES[-1]]
    assert body[0].count("|") == len(benchmark.TABLE_HEADER) + 1
    assert any("Copy bandwidth" in ln for ln in lines)
    assert any(f"torch {torch.__version__}" in ln for ln in lines)
    assert out_md.read_text().count("| case") == 2
    with out_csv.open(newline="") as f:
        assert [t["loss"] for t in csv.DictReader(f)] == [*NAMES, NAMES[-1]]


def test_csv_with_other_columns_is_refused(capsys, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert benchmark.main([*TINY, "--csv", str(other)]) == 2
    assert "other columns" in capsys.readouterr().err


def test_no_cuda_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert benchmark.main(["--device", "cuda", "--quick"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


# ---- the compile column --------------------------------------------------------------------


def test_compile_column_matches_eager():
    case = benchmark.Case.from_dict(LOSSES[0], {"n": 6, "c": 8})
    row = benchmark.run_case(case, torch.device("cpu"), torch.float32, compiler=_dynamo_eager,
                             budget_s=0.005, memory=True)
    assert row["compile_ms"] > 0 and row["speedup_vs_compile"] > 0
    assert row["compile_ok"] is True and row["compile_peak_mb"] is not None


def test_compile_mismatch_is_reported(capsys, tmp_path):
    def wrong(fn):
        return lambda *args, **kwargs: fn(*args, **kwargs) * 1.5

    out_csv = tmp_path / "bench.csv"
    argv = ["--device", "cpu", "--loss", NAMES[1], "--n", "6", "--c", "8", "--budget", "0.005",
            "--csv", str(out_csv)]
    assert benchmark.run(benchmark.build_parser().parse_args(argv), compiler=wrong) == 0
    printed = capsys.readouterr().out
    row_line = next(ln for ln in printed.splitlines() if ln.startswith(f"| {NAMES[1]}"))
    assert row_line.rstrip(" |").endswith("yes / **no**")
    with out_csv.open(newline="") as f:
        (row,) = csv.DictReader(f)
    assert (row["ours_ok"], row["compile_ok"]) == ("yes", "no")


def test_compile_failure_is_reported_not_fatal():
    def broken(fn):
        def compiled(*args, **kwargs):
            raise RuntimeError("inductor fell over\nsecond line")
        return compiled

    case = benchmark.Case.from_dict(LOSSES[0], {"n": 4, "c": 8})
    row = benchmark.run_case(case, torch.device("cpu"), torch.float32, compiler=broken,
                             budget_s=0.005)
    assert row["errors"] == {"compile": "RuntimeError: inductor fell over"}
    assert row["ours_ms"] > 0 and "compile_ms" not in row and "compile_ok" not in row
    table = benchmark.format_table([row], {"torch": torch.__version__})
    assert "compile failed: RuntimeError: inductor fell over" in table


def test_a_case_that_cannot_start_is_reported_and_fails_the_run(capsys, monkeypatch):
    def no_room(self, *args, **kwargs):
        raise MemoryError("no room for the inputs")

    monkeypatch.setattr(benchmark.Case, "sample", no_room)
    assert benchmark.main([*TINY, "--loss", NAMES[2]]) == 1
    printed = capsys.readouterr().out
    assert f"{NAMES[2]} N=6 C=8" in printed
    assert "ours failed: MemoryError: no room for the inputs" in printed


# ---- pieces --------------------------------------------------------------------------------


def test_roofline_on_hand_made_numbers():
    # 48 MB at 12 GB/s take 4 ms; exp takes 2.5 ms: memory-bound; ours at 8 ms reaches 50 %
    r = benchmark.roofline(48_000_000, 12.0, 2.5, 8.0)
    assert r["ours_gbps"] == pytest.approx(6.0)
    assert (r["limit_bound"], r["limit_ms"]) == ("memory", pytest.approx(4.0))
    assert r["limit_pct"] == pytest.approx(50.0)
    r = benchmark.roofline(48_000_000, 12.0, 6.0, 8.0)  # exp is slower than the traffic
    assert (r["limit_bound"], r["limit_ms"], r["limit_pct"]) == ("exp", 6.0, 75.0)
    assert benchmark.roofline(1000, None, None, None)["limit_pct"] is None


def test_min_bytes_counts_inputs_twice_target_and_weight_once():
    x = torch.zeros(4, 8)  # 128 B: read, and its gradient written
    y = torch.zeros(4, dtype=torch.long)  # 32 B
    w = torch.zeros(8)  # 32 B
    assert benchmark.min_bytes((x,), y, {"weight": w, "p": 2}) == 2 * 128 + 32 + 32
    assert benchmark.min_bytes((x,), None, {}) == 256


def test_matches_uses_the_dtypes_precision():
    a = (torch.tensor(1.0), torch.tensor([1.0, -2.0]))
    near = (torch.tensor(1.00001), torch.tensor([1.0, -2.0001]))
    assert benchmark.matches(near, a, torch.float32)
    assert not benchmark.matches((torch.tensor(1.5), a[1]), a, torch.float32)
    assert benchmark.matches((torch.tensor(1.01), a[1]), a, torch.bfloat16)
    assert not benchmark.matches(a[:1], a, torch.float32)


def test_time_interleaved_gives_slow_steps_fewer_rounds_and_drops_failures():
    def fail():
        raise ValueError("nope")

    errors: dict = {}
    times = benchmark.time_interleaved(
        {"fast": lambda: None, "slow": lambda: time.sleep(0.02), "bad": fail},
        torch.device("cpu"), budget_s=0.02, rounds=4, errors=errors)
    assert len(times["fast"]) == 4 and len(times["slow"]) == 1
    assert times["slow"][0] >= 0.02 and "bad" not in times
    assert errors == {"bad": "ValueError: nope"}
    assert benchmark.ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0]) == 3.0


def test_cases_come_from_the_specs():
    default = benchmark.select_cases()
    declared = [(s.name, dict(d)) for s in LOSSES for d in s.benchmark_cases]
    assert [(c.loss, {"n": c.n, "c": c.c, **dict(c.options)}) for c in default] == declared
    cuda = benchmark.select_cases(device="cuda")
    assert set(default) <= set(cuda)
    extra = [c for c in cuda if c not in default]
    assert sorted(c.loss for c in extra) == sorted(NAMES)  # one larger case per loss
    for c in extra:
        base = max(c.spec.benchmark_cases, key=lambda d: d["n"] * d["c"])
        assert (c.n, c.c) == (base["n"] * benchmark.GPU_SCALE, base["c"] * benchmark.GPU_SCALE)
    quick = benchmark.select_cases(quick=True)
    assert {(c.n, c.c) for c in quick} == set(benchmark.QUICK_SIZES)
    assert sorted({c.loss for c in quick}) == sorted(NAMES)
    only = benchmark.select_cases([NAMES[2]], n=32, c=16)
    assert {(c.loss, c.n, c.c) for c in only} == {(NAMES[2], 32, 16)}
    assert len(only) == len({c.options for c in only})  # duplicates dropped


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


# ---- options -------------------------------------------------------------------------------


def test_help_lists_every_option(capsys):
    parser = benchmark.build_parser()
    text = parser.format_help()
    for action in parser._actions:
        for option in action.option_strings:
            assert option in text
    for option in OPTIONS:
        assert option in text
    for name in NAMES:
        assert name in text
    with pytest.raises(SystemExit):
        benchmark.main(["--help"])
    assert "--csv" in capsys.readouterr().out


def test_cli_bench_help_lists_every_option(capsys, monkeypatch):
    from marginloss import cli

    used = []
    add = benchmark.add_arguments
    monkeypatch.setattr(benchmark, "add_arguments", lambda p: used.append(p) or add(p))
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    if not used:
        pytest.skip("cli.py's bench subparser does not use benchmark.add_arguments yet")
    text = capsys.readouterr().out
    for option in OPTIONS:
        assert option in text


def test_importing_the_module_imports_no_optional_dependency():
    tree = ast.parse(Path(benchmark.__file__).read_text())
    top = {alias.name.split(".")[0] for node in tree.body
           if isinstance(node, ast.Import | ast.ImportFrom)
           for alias in (node.names if isinstance(node, ast.Import) else
                         [ast.alias(node.module or "")])}
    assert not top & {"rich", "triton", "numpy", "pandas"}
