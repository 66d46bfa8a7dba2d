"""``marginloss demo``: its report, its output, and the held-out results it must reach.

The thresholds live here, not in the product: the demo reports what it measures, these tests
judge it. The full demo runs once for the module (about 20 s of training on 2 CPU cores, plus
imports); quick mode runs once, through the command line, for the report's structure.
"""

import contextlib
import copy
import io
import json
import subprocess
import sys

import pytest

from marginloss import demo
from marginloss.cli import main

pytest.importorskip("sklearn")
pytest.importorskip("river")
pytest.importorskip("rich")

#: Held-out results the full demo (seed 0) must reach: (task, loss) -> (metric, minimum).
#: Measured on 2026-12-02 (torch 2.13 CPU, seed 0): accuracy 0.965 / 0.971 / 0.973,
#: micro-F1 0.622, nDCG@3 0.695.
REQUIRED = {
    ("binary", "SoftMarginLoss"): ("accuracy", 0.95),
    ("multi-class", "MultiMarginLoss(p=1)"): ("accuracy", 0.95),
    ("multi-class", "MultiMarginLoss(p=2)"): ("accuracy", 0.95),
    ("multi-label", "MultiLabelSoftMarginLoss"): ("micro_f1", 0.60),
    # Measured 0.695 (0.72-0.74 with seeds 1-4: seed 0 is its worst). On the same held-out
    # genes a random ranking scores 0.306 (mean of 200 random score matrices, sd 0.009), and
    # ranking every gene's classes by their training frequency, the same ranking for all
    # genes, scores 0.673: 0.68 asks for a ranking that beats that prior, not just chance.
    ("multi-label", "MultiLabelMarginLoss"): ("ndcg_at_3", 0.68),
    # Measured 0.984 (seeds 1-4: 0.971-0.989).
    ("metric", "TripletMarginLoss"): ("knn_accuracy", 0.96),
    # Measured 0.981 and 0.987 (seeds 1-2: 0.985-0.997).
    ("pairs", "CosineEmbeddingLoss"): ("pair_auc", 0.96),
    ("pairs", "HingeEmbeddingLoss"): ("pair_auc", 0.96),
    # Measured 0.724 (seeds 1-4: 0.713-0.742); a random order scores 0.5.
    ("ranking", "MarginRankingLoss"): ("pairwise_accuracy", 0.69),
}

#: The new tasks' losses against their references without training, from the same report:
#: (task, loss, reference name prefix, metric, by how much it must beat the reference). At seed
#: 0: 1-NN in the 8-D embedding 0.984 vs 0.913 in an 8-D PCA projection (seeds 1-4: +0.03 to
#: +0.07) and 0.982 on the 64 raw pixels (seeds 1-4: -0.013 to +0.007, hence the -0.02: the
#: embedding keeps the raw pixels' neighbourhoods in an eighth of the dimensions); pair AUC
#: 0.98-0.99 vs 0.86-0.87 from the raw pixels; ranking 0.724 vs 0.667 for the best single
#: feature (seeds 1-4: +0.01 to +0.10).
BEATS = [
    ("metric", "TripletMarginLoss", "PCA to 8-D", "knn_accuracy", 0.02),
    ("metric", "TripletMarginLoss", "raw pixels", "knn_accuracy", -0.02),
    ("pairs", "CosineEmbeddingLoss", "raw pixels, cosine", "pair_auc", 0.05),
    ("pairs", "HingeEmbeddingLoss", "raw pixels, distance", "pair_auc", 0.05),
    ("ranking", "MarginRankingLoss", "best single feature", "pairwise_accuracy", 0.005),
]

#: Each margin loss beside its probabilistic baseline, with how close their held-out metric
#: must be (measured at seed 0: 0, 0.000 and +0.002, +0.0002, -0.036).
BASELINES = [
    ("binary", "SoftMarginLoss", "BCEWithLogitsLoss", "accuracy", 0.005),
    ("multi-class", "MultiMarginLoss(p=1)", "CrossEntropyLoss", "accuracy", 0.02),
    ("multi-class", "MultiMarginLoss(p=2)", "CrossEntropyLoss", "accuracy", 0.02),
    ("multi-label", "MultiLabelSoftMarginLoss", "BCEWithLogitsLoss", "micro_f1", 0.005),
    ("multi-label", "MultiLabelMarginLoss", "BCEWithLogitsLoss", "ndcg_at_3", 0.05),
    # measured +0.003 and -0.001 (seeds 1-4: within 0.002)
    ("ranking", "MarginRankingLoss", "MSELoss", "pairwise_accuracy", 0.02),
    ("ranking", "MarginRankingLoss", "BCEWithLogitsLoss", "pairwise_accuracy", 0.02),
]

#: Pairs that are the same loss on differently encoded labels: their curves coincide up to
#: float rounding (measured: a relative 7e-5 at most on the training loss, 0.001 at most on
#: the held-out metrics, which count predictions that flip on a rounding difference).
SAME_LOSS = [
    ("binary", "SoftMarginLoss", "BCEWithLogitsLoss"),  # logistic loss on ±1 vs {0, 1}
    ("multi-label", "MultiLabelSoftMarginLoss", "BCEWithLogitsLoss"),  # mean over classes
    # the drop-in: marginloss's TripletMarginLoss where torch.nn's was, same triplets
    ("metric", "TripletMarginLoss", "TripletMarginLoss (torch.nn)"),
]

RUNS = {
    "binary": ["SoftMarginLoss", "BCEWithLogitsLoss"],
    "multi-class": ["MultiMarginLoss(p=1)", "MultiMarginLoss(p=2)", "CrossEntropyLoss"],
    "multi-label": ["MultiLabelSoftMarginLoss", "BCEWithLogitsLoss", "MultiLabelMarginLoss"],
    "metric": ["TripletMarginLoss", "TripletMarginLoss (torch.nn)"],
    "pairs": ["CosineEmbeddingLoss", "HingeEmbeddingLoss"],
    "ranking": ["MarginRankingLoss", "MSELoss", "BCEWithLogitsLoss"],
}
METRICS = {"binary": {"accuracy"}, "multi-class": {"accuracy"},
           "multi-label": {"micro_f1", "ndcg_at_3"}, "metric": {"knn_accuracy"},
           "pairs": {"pair_auc"}, "ranking": {"pairwise_accuracy"}}
#: The references without training of each task, by name prefix.
REFERENCES = {"metric": ["raw pixels (64-D)", "PCA to 8-D"],
              "pairs": ["raw pixels, cosine", "raw pixels, distance"],
              "ranking": ["best single feature ("]}
N_RUNS = sum(len(r) for r in RUNS.values())


def _runs(report: dict) -> dict:
    """The report's runs by (task, loss)."""
    return {(t["task"], r["loss"]): r for t in report["tasks"] for r in t["runs"]}


def _reference(report: dict, task: str, prefix: str) -> dict:
    """The metrics of the task's one reference without training whose name starts with
    ``prefix``."""
    (found,) = [b for t in report["tasks"] if t["task"] == task for b in t["baselines"]
                if b["name"].startswith(prefix)]
    return found["metrics"]


#: Environment variables that make rich treat a file as a terminal (or not), or set its width.
RICH_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR", "COLUMNS")


@pytest.fixture
def plain_env(monkeypatch):
    """None of :data:`RICH_ENV` (CI systems set FORCE_COLOR, for one)."""
    for name in RICH_ENV:
        monkeypatch.delenv(name, raising=False)


# ---- import hygiene -------------------------------------------------------------------------


def test_import_imports_no_optional_dependency():
    code = ("import sys\nimport marginloss, marginloss.demo\n"
            "bad = [m for m in ('rich', 'sklearn', 'river', 'matplotlib') if m in sys.modules]\n"
            "assert not bad, bad\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_missing_dependency_is_named(monkeypatch):
    find_spec = demo.importlib.util.find_spec
    monkeypatch.setattr(demo.importlib.util, "find_spec",
                        lambda name, *a: None if name == "rich" else find_spec(name, *a))
    with pytest.raises(demo.MissingDependencyError, match=r"needs rich: pip install"):
        demo.run(quick=True, progress=False)


# ---- quick mode, through the command line ---------------------------------------------------


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """``marginloss demo --quick --json --plot FILE``: exit status, report, stderr, plot path."""
    pytest.importorskip("matplotlib")
    png = tmp_path_factory.mktemp("demo") / "curves.png"
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        for name in RICH_ENV:
            mp.delenv(name, raising=False)
        rc = main(["demo", "--quick", "--json", "--plot", str(png)])
    return rc, json.loads(out.getvalue()), err.getvalue(), png


def test_quick_report_structure(quick):
    rc, report, _, png = quick
    assert rc == 0
    assert report["quick"] is True and report["seed"] == 0 and report["plot"] == str(png)
    assert "passed" not in report
    for key in ("marginloss", "torch", "python", "device", "threads", "cpus", "total_seconds"):
        assert key in report
    assert [t["task"] for t in report["tasks"]] == list(RUNS)
    for task in report["tasks"]:
        assert [r["loss"] for r in task["runs"]] == RUNS[task["task"]]
        assert task["epochs"] == 50
        for r in task["runs"]:
            assert "required" not in r
            assert set(r["metrics"]) <= METRICS[task["task"]]
            assert r["primary_metric"] in r["metrics"]
            assert all(0 <= v <= 1 for v in r["metrics"].values())
            assert r["train_seconds"] >= 0 and r["final_train_loss"] > 0
            curve = r["curve"]
            assert curve["epoch"][0] == 1 and curve["epoch"][-1] == task["epochs"]
            assert set(curve) == {"epoch", "train_loss", *r["metrics"]}
            assert all(len(v) == len(curve["epoch"]) for v in curve.values())
    ml = {r["loss"]: r for r in report["tasks"][2]["runs"]}
    assert set(ml["MultiLabelMarginLoss"]["metrics"]) == {"ndcg_at_3"}
    assert report["tasks"][2]["n_train"] + report["tasks"][2]["n_test"] == 2417
    for task in report["tasks"]:
        names = [b["name"] for b in task["baselines"]]
        assert len(names) == len(REFERENCES.get(task["task"], []))
        assert all(n.startswith(p) for n, p in zip(names, REFERENCES.get(task["task"], [])))
        for b in task["baselines"]:
            assert set(b["metrics"]) == METRICS[task["task"]]
            assert all(0 <= v <= 1 for v in b["metrics"].values())
    by_task = {t["task"]: t for t in report["tasks"]}
    assert by_task["ranking"]["n_classes"] is None
    assert by_task["ranking"]["n_train"] + by_task["ranking"]["n_test"] == 442
    assert by_task["metric"]["n_test"] == by_task["pairs"]["n_test"] == 450
    assert "900 held-out pairs" in by_task["pairs"]["setup"]


def test_quick_results_are_sane(quick):
    runs = _runs(quick[1])
    assert runs["binary", "SoftMarginLoss"]["metrics"]["accuracy"] >= 0.9
    assert runs["multi-class", "MultiMarginLoss(p=2)"]["metrics"]["accuracy"] >= 0.9
    assert runs["multi-label", "MultiLabelSoftMarginLoss"]["metrics"]["micro_f1"] >= 0.5
    assert runs["metric", "TripletMarginLoss"]["metrics"]["knn_accuracy"] >= 0.9
    assert runs["pairs", "CosineEmbeddingLoss"]["metrics"]["pair_auc"] >= 0.9
    assert runs["pairs", "HingeEmbeddingLoss"]["metrics"]["pair_auc"] >= 0.9
    assert runs["ranking", "MarginRankingLoss"]["metrics"]["pairwise_accuracy"] >= 0.65


def test_quick_progress_is_plain_off_a_terminal(quick):
    err = quick[2]
    lines = err.strip().splitlines()  # rich ends a progress display off a terminal with "\n"
    assert len(lines) == N_RUNS == 15
    assert lines[0].startswith("[1/15] binary · SoftMarginLoss trained in ")
    assert lines[7].startswith("[8/15] multi-label · MultiLabelMarginLoss trained in ")
    assert lines[-1].startswith("[15/15] ranking · BCEWithLogitsLoss trained in ")
    assert "\x1b" not in err


def test_quick_plot_is_a_png(quick):
    assert quick[3].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_format_report_is_plain_text(quick):
    text = demo.format_report(quick[1])
    assert "\x1b" not in text
    assert max(len(line) for line in text.splitlines()) <= demo._TEXT_WIDTH
    assert text.splitlines()[0].endswith("(quick mode: a third of the epochs)")
    for name in ("SoftMarginLoss", "MultiMarginLoss(p=2)", "MultiLabelSoftMarginLoss",
                 "MultiLabelMarginLoss", "CrossEntropyLoss", "BCEWithLogitsLoss", "accuracy",
                 "micro-F1", "nDCG@3", "multi_hot_to_padded", "50 epochs of Adam",
                 "TripletMarginLoss (torch.nn)", "CosineEmbeddingLoss", "HingeEmbeddingLoss",
                 "MarginRankingLoss", "MSELoss", "1-NN accuracy", "pair AUC",
                 "pairwise accuracy", "no training", "raw pixels (64-D)", "PCA to 8-D",
                 "a continuous target", "900 held-out pairs"):
        assert name in text
    ref = _reference(quick[1], "metric", "PCA to 8-D")["knn_accuracy"]
    assert f"{ref:.3f}" in text
    ml = _runs(quick[1])["multi-label", "MultiLabelSoftMarginLoss"]["metrics"]
    assert f"{ml['micro_f1']:.3f}" in text and f"{ml['ndcg_at_3']:.3f}" in text


def test_print_report_off_a_terminal_is_format_report(quick, plain_env, capsys):
    demo.print_report(quick[1])
    out = capsys.readouterr().out
    assert [line.rstrip() for line in out.splitlines()] == demo.format_report(quick[1]).split("\n")


def test_cli_passes_options_and_prints_the_table(quick, plain_env, monkeypatch, capsys):
    calls = []

    def fake_run(**kwargs):
        calls.append(kwargs)
        return copy.deepcopy(quick[1])

    monkeypatch.setattr(demo, "run", fake_run)
    assert main(["demo", "--quick", "--seed", "3", "--no-progress"]) == 0
    assert calls == [{"quick": True, "seed": 3, "progress": False}]
    out = capsys.readouterr().out
    assert "MultiLabelMarginLoss" in out and "nDCG@3" in out and "\x1b" not in out


# ---- progress ------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _show_progress(stream, enabled: bool) -> str:
    with demo._Progress(total_epochs=4, n_runs=2, enabled=enabled, stream=stream) as bar:
        for label in ("task · first", "task · second"):
            bar.start_run(label, 2)
            bar.epoch_done()
            bar.epoch_done()
            bar.run_done(label, 0.25)
    return stream.getvalue()


def test_progress_on_a_terminal_draws_bars(plain_env):
    out = _show_progress(_Terminal(), enabled=True)
    assert "\x1b[" in out and "all runs" in out  # rich's live display
    assert "[1/2] task · first trained in 0.25s" in out
    assert "[2/2] task · second trained in 0.25s" in out


def test_progress_off_a_terminal_prints_a_line_per_run(plain_env):
    out = _show_progress(io.StringIO(), enabled=True)
    assert out.strip() == ("[1/2] task · first trained in 0.25s\n"
                           "[2/2] task · second trained in 0.25s")


def test_progress_disabled_prints_nothing(plain_env):
    assert _show_progress(_Terminal(), enabled=False) == ""


# ---- the full demo: the held-out results it must reach --------------------------------------


@pytest.fixture(scope="module")
def full():
    """The full demo, seed 0, once for the module."""
    return demo.run(progress=False)


@pytest.mark.slow
@pytest.mark.parametrize(("task", "loss"), list(REQUIRED),
                         ids=[f"{t}/{x}" for t, x in REQUIRED])
def test_full_demo_reaches_required_result(full, task, loss):
    metric, minimum = REQUIRED[task, loss]
    value = _runs(full)[task, loss]["metrics"][metric]
    assert value >= minimum, f"{task} {loss}: held-out {metric} {value} < {minimum}"


@pytest.mark.slow
@pytest.mark.parametrize(("task", "loss", "baseline", "metric", "tol"), BASELINES,
                         ids=[f"{t}/{a}" for t, a, *_ in BASELINES])
def test_full_demo_margin_loss_matches_baseline(full, task, loss, baseline, metric, tol):
    runs = _runs(full)
    ours = runs[task, loss]["metrics"][metric]
    theirs = runs[task, baseline]["metrics"][metric]
    assert ours == pytest.approx(theirs, abs=tol), f"{loss} {ours} vs {baseline} {theirs}"


@pytest.mark.slow
@pytest.mark.parametrize(("task", "loss", "baseline"), SAME_LOSS,
                         ids=[f"{t}/{x}" for t, x, _ in SAME_LOSS])
def test_full_demo_same_loss_same_curves(full, task, loss, baseline):
    ours, theirs = _runs(full)[task, loss]["curve"], _runs(full)[task, baseline]["curve"]
    assert ours["epoch"] == theirs["epoch"]
    assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-3)
    for metric in set(ours) - {"epoch", "train_loss"}:
        assert ours[metric] == pytest.approx(theirs[metric], abs=0.005)


@pytest.mark.slow
def test_full_demo_report(full):
    assert full["quick"] is False and full["seed"] == 0
    assert [t["epochs"] for t in full["tasks"]] == [150] * len(RUNS)
    assert all(r["curve"]["epoch"][-1] == 150 for r in _runs(full).values())
    json.dumps(full)  # JSON-serialisable


@pytest.mark.slow
@pytest.mark.parametrize(("task", "loss", "reference", "metric", "by"), BEATS,
                         ids=[f"{t}/{x}/{r}" for t, x, r, *_ in BEATS])
def test_full_demo_beats_references_without_training(full, task, loss, reference, metric, by):
    ours = _runs(full)[task, loss]["metrics"][metric]
    theirs = _reference(full, task, reference)[metric]
    assert ours >= theirs + by, f"{loss} {ours} vs {reference} {theirs} (+{by})"


# ---- the new tasks' parts --------------------------------------------------------------------


def test_demo_trains_marginloss_losses_where_it_says_so():
    """Every run labelled marginloss trains marginloss's class, not torch.nn's."""
    import marginloss

    tasks = [demo._metric_task(0), demo._pairs_task(0), demo._ranking_task(0)]
    for task in tasks:
        for run in task.runs:
            ours = type(run.loss_fn).__module__.split(".")[0] == "marginloss"
            assert ours == (run.module == "marginloss"), run.name
            if ours:
                assert type(run.loss_fn) is getattr(marginloss, type(run.loss_fn).__name__)


@pytest.mark.parametrize("sizes", [[5, 1, 3], [2, 2], [40, 7, 19, 1]])
def test_partners_are_a_positive_and_a_negative(sizes):
    import torch

    y = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])[torch.randperm(sum(sizes))]
    for epoch in range(5):
        positive, negative = demo._partners(y, demo._epoch_generator(0, epoch))
        assert torch.equal(y[positive], y) and (y[negative] != y).all()
        alone = torch.bincount(y)[y] == 1
        index = torch.arange(y.shape[0])
        assert torch.equal(positive == index, alone)  # itself only when alone in its class
    a = demo._partners(y, demo._epoch_generator(3, 1))
    b = demo._partners(y, demo._epoch_generator(3, 1))
    assert all(torch.equal(u, v) for u, v in zip(a, b))  # the same for every run of a task


def test_pairwise_accuracy_is_the_concordance_index():
    import torch

    t = torch.tensor([3.0, 1.0, 2.0, 5.0])
    i, j = torch.triu_indices(4, 4, 1)
    pairs = (i, j, torch.sign(t[i] - t[j]))
    assert demo._pairwise_accuracy(t, pairs) == 1.0
    assert demo._pairwise_accuracy(-t, pairs) == 0.0
    assert demo._pairwise_accuracy(torch.zeros(4), pairs) == 0.0  # ties in the scores: wrong
    # one discordant pair of six: samples 0 and 2 ordered the wrong way
    swapped = torch.tensor([2.0, 1.0, 3.0, 5.0])
    assert demo._pairwise_accuracy(swapped, pairs) == pytest.approx(5 / 6)


# ---- marginloss demo --extreme ---------------------------------------------------------------
#
# A small run (a few seconds): 3,000 samples, 5,000 labels, the heads in chunks of 1,000
# classes (so that the fused path chunks as at 100,000 labels). The default sizes take about a
# minute and are not run here.

EXTREME_SMALL = dict(samples=3000, labels=5000, features=2500, hidden=32, epochs=2,
                     chunk_size=1000)

#: Held-out precision@1 each head must reach on EXTREME_SMALL (seed 0), and by how many times
#: it must beat the popularity reference (the 5 most frequent training labels for every
#: sample; chance, a random ranking, is 6e-4 here). Measured on 2026-12-02 (torch 2.13 CPU),
#: seeds 0 / 1 / 2: soft margin 0.525 / 0.473 / 0.553, multi-class hinge 0.363 / 0.338 /
#: 0.370, multi-label hinge 0.473 / 0.408 / 0.458; popularity 0.047 at each seed.
EXTREME_REQUIRED_P1 = {"multilabel_soft_margin_loss": 0.35, "multi_margin_loss": 0.25,
                       "multilabel_margin_loss": 0.30}
EXTREME_BEATS_POPULARITY = 5.0


@pytest.fixture(scope="module")
def extreme(tmp_path_factory):
    """The small extreme run, seed 0, its XC file kept: (report, progress text, file)."""
    from marginloss import demo_extreme

    path = tmp_path_factory.mktemp("extreme") / "data.txt"
    stream = io.StringIO()
    report = demo_extreme.run(demo_extreme.Settings(**EXTREME_SMALL), data_file=path,
                              progress=True, stream=stream)
    return report, stream.getvalue(), path


@pytest.mark.parametrize("loss", ["multilabel_soft_margin_loss", "multi_margin_loss",
                                  "multilabel_margin_loss"])
def test_extreme_precision_well_above_chance(extreme, loss):
    report, _, _ = extreme
    (run,) = [r for r in report["runs"] if r["loss"] == loss]
    p1 = run["precision"]["p@1"]
    chance = report["references"]["chance"]["p@1"]
    popularity = report["references"]["popularity"]["p@1"]
    assert chance == pytest.approx(3 / 5000, rel=0.1)
    assert p1 >= EXTREME_REQUIRED_P1[loss], run["precision"]
    assert p1 >= 100 * chance and p1 >= EXTREME_BEATS_POPULARITY * popularity
    assert run["last_loss"] < run["first_loss"]
    assert all(0 <= v <= 1 for v in run["precision"].values())


def test_extreme_trains_on_what_the_xc_reader_read(extreme):
    """The kept file is the generated data, exactly, in the XC format; the report counts it."""
    import torch

    from marginloss import demo_extreme
    from marginloss.xc import read_xc

    report, _, path = extreme
    s = EXTREME_SMALL
    features, labels = demo_extreme.generate(s["samples"], s["labels"], s["features"], seed=0)
    assert path.read_text().splitlines()[0] == f"{s['samples']} {s['features']} {s['labels']}"
    data = read_xc(path)
    for ours, theirs in ((data.features, features), (data.labels, labels)):
        assert torch.equal(ours.crow_indices(), theirs.crow_indices())
        assert torch.equal(ours.col_indices(), theirs.col_indices())
        assert torch.equal(ours.values(), theirs.values())
    d = report["data"]
    assert d["file"] == str(path) and d["file_bytes"] == path.stat().st_size
    assert d["feature_entries"] == features.values().numel()
    assert d["label_entries"] == labels.values().numel()
    assert (d["train"], d["held_out"]) == (2400, 600)


def test_extreme_generate_is_a_power_law_with_informative_features():
    import torch

    from marginloss import demo_extreme

    features, labels = demo_extreme.generate(4000, 2000, 1000, seed=3)
    again, _ = demo_extreme.generate(4000, 2000, 1000, seed=3)
    other, _ = demo_extreme.generate(4000, 2000, 1000, seed=4)
    assert torch.equal(features.values(), again.values())  # seeded
    assert not torch.equal(features.col_indices()[:100], other.col_indices()[:100])
    counts = torch.diff(labels.crow_indices())
    assert counts.min() >= 1 and 2.5 < counts.float().mean() < 3.5
    assert torch.all(labels.values() == 1)
    freq = torch.bincount(labels.col_indices(), minlength=2000).sort(descending=True).values
    assert freq[:20].sum() > 8 * freq[-1000:].sum() / 50  # the head: 20 labels hold more
    norms = torch.zeros(4000).index_add_(
        0, torch.repeat_interleave(torch.arange(4000), torch.diff(features.crow_indices())),
        features.values() ** 2)
    assert torch.allclose(norms, torch.ones(4000))
    rows = torch.diff(features.crow_indices())
    assert rows.min() >= 1  # every sample has features; and no feature twice in a row:
    keys = torch.repeat_interleave(torch.arange(4000), rows) * 1000 + features.col_indices()
    assert torch.all(keys[1:] > keys[:-1])


def test_extreme_memory_is_computed_and_measured(extreme):
    report, _, _ = extreme
    b, c, h = 256, 5000, 32
    for run in report["runs"]:
        m = run["memory"]
        dense = m["dense_computed"]
        assert m["batch"] == b and m["fused_classes_per_chunk"] == 1000
        assert dense["logits"] == dense["logits_grad"] == b * c * 4
        assert dense["target"] == {"multilabel_soft_margin_loss": b * c * 4,
                                   "multi_margin_loss": 0,
                                   "multilabel_margin_loss": b * c * 8}[run["loss"]]
        assert dense["total"] == 2 * b * c * 4 + dense["target"] + (c * h + c) * 4
        # the fused step writes the layer's gradients (c x h + c floats) and chunk buffers
        assert (c * h + c) * 4 <= m["fused_measured"] < dense["total"]


def test_extreme_peak_memory_is_measured():
    """The measurement sees a known allocation, and the fused head's chunking."""
    import torch

    import marginloss
    from marginloss import demo_extreme

    assert demo_extreme._peak_allocated(lambda: torch.empty(2_500_000).fill_(1.0)) == 10_000_000
    n, c, h = 256, 40_000, 8
    x = torch.randn(n, h, requires_grad=True)
    y = torch.randint(0, c, (n,))
    head = marginloss.LinearMultiMarginLoss(h, c, chunk_size=4000)
    fused = demo_extreme._peak_allocated(lambda: head(x, y).backward())
    logits = n * c * 4
    assert c * h * 4 < fused < logits / 2  # its weight gradient, not the (n, c) logits


def test_extreme_top_k_is_exact_across_chunks(monkeypatch):
    import torch

    from marginloss import demo_extreme, linear

    g = torch.Generator().manual_seed(0)
    h, w, b = torch.randn(37, 6, generator=g), torch.randn(1001, 6, generator=g), \
        torch.randn(1001, generator=g)
    expected = (h @ w.T + b).topk(5, dim=1).indices
    for budget in (37 * 7, 37 * 100, 1 << 22):  # chunks of 7 and 100 classes, and one chunk
        monkeypatch.setattr(linear, "BUDGET", budget)
        assert torch.equal(demo_extreme._top_k(h, w, b, 5), expected)
    assert torch.equal(demo_extreme._top_k(h, w[:3], None, 5), (h @ w[:3].T).topk(3).indices)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_extreme_precision_counts_hits():
    import torch

    from marginloss import demo_extreme

    labels = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.float32)
    rows = demo_extreme._Rows(labels.to_sparse_csr())
    top = torch.tensor([[2, 1, 0], [0, 3, 1], [3, 2, 1]])
    hits = demo_extreme._precision(top, rows, torch.tensor([0, 1, 2]))
    assert hits.tolist() == [1, 1, 1]  # per rank: row 0 at rank 1 and 3, row 1 at rank 2
    assert demo_extreme._precision_at(hits, 3) == {"p@1": round(1 / 3, 4),
                                                   "p@3": round(3 / 9, 4),
                                                   "p@5": round(3 / 15, 4)}


def test_extreme_progress_lines(extreme):
    _, text, _ = extreme
    lines = text.splitlines()
    assert "\x1b[" not in text  # a StringIO is no terminal: plain lines, no live display
    assert lines[0].startswith("generated 3,000 samples, 5,000 labels in ")
    assert lines[2].startswith("read it back with marginloss.xc.read_xc in ")
    for head in ("LinearMultiLabelSoftMarginLoss", "LinearMultiMarginLoss",
                 "LinearMultiLabelMarginLoss"):
        assert any(line.startswith(f"{head}: trained in ") and "P@1 " in line for line in lines)


def test_extreme_is_deterministic():
    from marginloss import demo_extreme

    s = demo_extreme.Settings(samples=1200, labels=3000, features=1500, hidden=16,
                              chunk_size=700)
    a, b = (demo_extreme.run(s, progress=False)["runs"] for _ in range(2))
    for ra, rb in zip(a, b, strict=True):
        assert (ra["precision"], ra["first_loss"], ra["last_loss"]) == \
               (rb["precision"], rb["first_loss"], rb["last_loss"])


def test_extreme_report_text(extreme):
    from marginloss import demo_extreme

    report, _, _ = extreme
    text = demo_extreme.format_report(report)
    for needle in ("3,000 samples (2,400 training, 600 held-out), 5,000 labels",
                   "LinearMultiLabelSoftMarginLoss", "1 random label per sample",
                   "popularity (no training)", "chance (random ranking)",
                   "dense head computed", "fused head measured", "read back by read_xc"):
        assert needle in text
    (header,) = [line for line in text.splitlines() if line.startswith("head ")]
    assert header.split()[2:5] == ["P@1", "P@3", "P@5"]


def test_extreme_cli(tmp_path, capsys):
    path = tmp_path / "small.txt"
    rc = main(["demo", "--extreme", "--samples", "800", "--labels", "1500", "--features",
               "700", "--hidden", "8", "--epochs", "1", "--batch-size", "100", "--json",
               "--no-progress", "--data-file", str(path), "--seed", "2"])
    out, err = capsys.readouterr()
    assert rc == 0 and err == ""
    report = json.loads(out)
    assert report["settings"]["seed"] == 2 and report["settings"]["batch_size"] == 100
    assert report["data"]["labels"] == 1500 and report["data"]["file"] == str(path)
    assert path.read_text().startswith("800 700 1500\n")
    assert [r["head"] for r in report["runs"]] == [
        "LinearMultiLabelSoftMarginLoss", "LinearMultiMarginLoss", "LinearMultiLabelMarginLoss"]


@pytest.mark.parametrize("argv, message", [
    (["demo", "--samples", "100"], "--samples only apply with --extreme"),
    (["demo", "--extreme", "--quick"], "do not apply to --extreme"),
    (["demo", "--extreme", "--samples", "4", "--labels", "10"], "held_out"),
])
def test_extreme_cli_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_extreme_cli_help(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert "--extreme" in out and "--data-file PATH" in out and "precision@1/3/5" in out


def test_extreme_imports_no_optional_dependency():
    code = ("import sys\nimport marginloss.demo_extreme\n"
            "bad = [m for m in ('rich', 'sklearn', 'triton') if m in sys.modules]\n"
            "assert not bad, bad\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_extreme_example_script_runs(capsys):
    import runpy
    from pathlib import Path

    script = Path(__file__).parents[1] / "examples" / "extreme_classification.py"
    example = runpy.run_path(str(script), run_name="example")
    example["main"](samples=2000, labels=3000, features=1500, hidden=32, batch_size=100)
    out = capsys.readouterr().out
    p = {int(line.split("@")[1].split(":")[0]): float(line.split()[-1])
         for line in out.splitlines() if line.startswith("precision@")}
    assert sorted(p) == [1, 3, 5]
    assert p[1] > 0.1  # chance (a random ranking): 3 / 3000


def _extreme_progress(stream, enabled: bool) -> str:
    from marginloss import demo_extreme

    with demo_extreme._Progress(enabled, stream) as bar:
        bar.start("training LinearMultiMarginLoss", 3)
        for _ in range(3):
            bar.advance()
        bar.line("LinearMultiMarginLoss: trained in 1.0s")
    return stream.getvalue()


def test_extreme_progress_on_a_terminal_draws_a_bar(plain_env):
    out = _extreme_progress(_Terminal(), enabled=True)
    assert "\x1b[" in out and "training LinearMultiMarginLoss" in out  # rich's live display
    assert "LinearMultiMarginLoss: trained in 1.0s" in out


def test_extreme_progress_without_rich_prints_lines(plain_env, monkeypatch):
    from marginloss import demo_extreme

    find_spec = demo_extreme.importlib.util.find_spec
    monkeypatch.setattr(demo_extreme.importlib.util, "find_spec",
                        lambda name, *a: None if name == "rich" else find_spec(name, *a))
    assert _extreme_progress(_Terminal(), enabled=True) == \
        "LinearMultiMarginLoss: trained in 1.0s\n"
    assert _extreme_progress(_Terminal(), enabled=False) == ""
