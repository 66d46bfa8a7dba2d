"""``marginloss demo``: every loss trained on real data, beside its probabilistic baseline.

Three tasks on data sets that ship inside installed packages (nothing is downloaded):

* **binary**: scikit-learn's breast-cancer data (569 tumours, 30 features, malignant or
  benign); a linear model trained with :class:`marginloss.SoftMarginLoss` on ±1 labels
  (converted with :func:`marginloss.labels.to_pm1`) and with ``torch.nn.BCEWithLogitsLoss`` on
  the original {0, 1} labels. Metric: accuracy.
* **multi-class**: scikit-learn's digits (1,797 8x8 images, 10 classes); a one-hidden-layer
  MLP trained with :class:`marginloss.MultiMarginLoss` (p=1 and p=2) and with
  ``torch.nn.CrossEntropyLoss``. Metric: accuracy.
* **multi-label**: the Yeast gene-function data that river ships (2,417 genes, 103 features,
  14 functional classes, 4.2 per gene on average); a one-hidden-layer MLP trained with
  :class:`marginloss.MultiLabelSoftMarginLoss` and ``torch.nn.BCEWithLogitsLoss`` on the 0/1
  mask (metric: micro-F1 of ``score > 0``), and with :class:`marginloss.MultiLabelMarginLoss`
  on -1-padded index lists (:func:`marginloss.labels.multi_hot_to_padded`). That one is a
  ranking loss, with no threshold, so all three are also compared by a ranking metric, nDCG@3.

Each task is split once (stratified where single-label, fixed seed) into training and held-out
parts; features are standardised with training statistics only; every loss starts from the same
initial weights and is trained full-batch with Adam for the same number of epochs. The
reported metrics are on the held-out part, every few epochs (the curves) and at the end. The
demo reports what it measures and judges nothing: the results it is expected to reach are
asserted by the test suite (``tests/test_demo.py``), not here.

Metrics come from :mod:`sklearn.metrics`: ``accuracy_score``, ``f1_score(average="micro")``
and, for the ranking comparison, ``ndcg_score(k=3)`` (nDCG@3: the gains of the true labels
among a gene's three top-scored classes, discounted by rank, divided by the best possible; 1 is
a perfect top 3). Why nDCG@3:

* scikit-learn has no precision@k for multi-label targets (``top_k_accuracy_score`` is
  single-label), so the former precision@3 would have stayed hand-written; nDCG@k is its
  usual companion in multi-label ranking, over the same top 3 (Yeast genes have 4.2 labels on
  average), and unlike precision@3 it credits the order within the top 3 and lets a gene with
  fewer than three labels score 1;
* ``label_ranking_average_precision_score`` (the "average precision" of the Yeast literature,
  over the whole ranking) was the other candidate, but scikit-learn computes it with a Python
  loop over the samples: ~70 ms per evaluation of the 726 held-out genes, which would add
  ~7 s to the full demo and ~11 s to ``--quick`` for the training curves; ``ndcg_score`` takes
  ~1 ms. It runs with ``ignore_ties=True``: the scores are continuous, so ties do not occur.

For scale, on the seed-0 held-out part a random ranking scores nDCG@3 ≈ 0.31, and ranking every
gene's classes by their frequency in the training part (the same ranking for all) ≈ 0.67.

Progress (one bar per run and one overall, advanced every epoch) is drawn on stderr with
:mod:`rich.progress`; when stderr is not a terminal it is plain text, one line per finished run.
The results are :mod:`rich.table` tables: :func:`print_report` prints them through a
:class:`rich.console.Console`, :func:`format_report` returns them as plain text.

scikit-learn, river and rich (and matplotlib for ``--plot``) are optional dependencies
(``pip install 'marginloss[demo]'``), imported only when the demo runs; without one of them
:func:`run` raises :class:`MissingDependencyError` naming it (there is no degraded mode).
"""

from __future__ import annotations

import importlib.util
import io
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import marginloss

__all__ = ["MissingDependencyError", "format_report", "load_yeast", "print_report", "run",
           "save_plot"]

#: pip's name of each optional module the demo imports.
_PIP_NAMES = {"sklearn": "scikit-learn", "river": "river", "rich": "rich",
              "matplotlib": "matplotlib"}

#: Display names of the metrics (report keys -> table headers and plot legends).
_METRIC_NAMES = {"accuracy": "accuracy", "micro_f1": "micro-F1", "ndcg_at_3": "nDCG@3"}

#: Width of the plain-text report: wide enough that no cell of the results table wraps.
_TEXT_WIDTH = 120


class MissingDependencyError(RuntimeError):
    """An optional package the demo needs is not installed."""


def _require(*modules: str) -> None:
    """Raise :class:`MissingDependencyError` naming every one of ``modules`` not installed."""
    missing = [_PIP_NAMES.get(m, m) for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"marginloss demo needs {', '.join(missing)}: pip install 'marginloss[demo]'")


# ----------------------------------------------------------------------------------------------
# data


@dataclass
class _Split:
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def _standardise(x_train: Tensor, x_test: Tensor) -> tuple[Tensor, Tensor]:
    """Centre and scale both parts with the training part's mean and standard deviation."""
    mean = x_train.mean(0)
    std = x_train.std(0)
    # Constant training columns (digits' border pixels) are centred, not scaled.
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return (x_train - mean) / std, (x_test - mean) / std


def _split(x, y, seed: int, test_size: float, stratify: bool) -> _Split:
    """Split NumPy arrays once (scikit-learn) and standardise the features."""
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y if stratify else None
    )
    xt = torch.as_tensor(x_tr, dtype=torch.float32)
    xe = torch.as_tensor(x_te, dtype=torch.float32)
    xt, xe = _standardise(xt, xe)
    return _Split(xt, torch.as_tensor(y_tr), xe, torch.as_tensor(y_te))


def _yeast_path() -> Path:
    """The Yeast CSV that river ships (found without importing river, which is slow)."""
    spec = importlib.util.find_spec("river")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            path = Path(root) / "datasets" / "yeast.csv.gz"
            if path.is_file():
                return path
    try:
        from river.datasets import Yeast
    except ImportError:  # river too old to ship Yeast (added in river 0.26)
        raise MissingDependencyError(
            "marginloss demo needs river>=0.26, which ships the Yeast data set: "
            "pip install -U 'marginloss[demo]'"
        ) from None
    return Path(Yeast().path)


def load_yeast() -> tuple[Any, Any]:
    """Yeast (Elisseeff & Weston, 2002) as NumPy arrays: features (2417, 103), labels (2417, 14)."""
    import numpy as np

    data = np.loadtxt(_yeast_path(), delimiter=",", skiprows=1, dtype=np.float64)
    if data.shape != (2417, 117):
        raise RuntimeError(f"unexpected Yeast file layout: shape {data.shape}, expected "
                           f"(2417, 117) (103 features + 14 labels)")
    return data[:, :103], data[:, 103:].astype(np.int64)


# ----------------------------------------------------------------------------------------------
# metrics (scikit-learn); each maps held-out scores and targets to {metric name: value}

_Metrics = Callable[[Tensor, Tensor], dict[str, float]]


def _accuracy(scores: Tensor, target: Tensor) -> dict[str, float]:
    """Accuracy of the top-scoring class (or of the sign, for one score per sample)."""
    from sklearn.metrics import accuracy_score

    pred = (scores > 0).long() if scores.dim() == 1 else scores.argmax(-1)
    return {"accuracy": float(accuracy_score(target.numpy(), pred.numpy()))}


def _ranking(scores: Tensor, mask: Tensor) -> dict[str, float]:
    """nDCG@3 of the scores' ranking of the classes against a 0/1 mask (no threshold)."""
    from sklearn.metrics import ndcg_score

    # ignore_ties: the scores are continuous, so ties do not occur; the exact tie handling is
    # a Python loop over the samples, ~20x slower.
    ndcg = ndcg_score(mask.numpy(), scores.numpy(), k=3, ignore_ties=True)
    return {"ndcg_at_3": float(ndcg)}


def _multilabel(scores: Tensor, mask: Tensor) -> dict[str, float]:
    """Micro-F1 of the predictions ``scores > 0`` against a 0/1 mask, and nDCG@3."""
    from sklearn.metrics import f1_score

    f1 = f1_score(mask.numpy(), (scores > 0).long().numpy(), average="micro", zero_division=0.0)
    return {"micro_f1": float(f1), **_ranking(scores, mask)}


# ----------------------------------------------------------------------------------------------
# models and tasks


def _one_score(n_in: int) -> Callable[[], nn.Module]:
    """A factory of linear models with one score per sample."""
    return lambda: _Squeeze(nn.Linear(n_in, 1))


def _mlp(n_in: int, hidden: int, n_out: int) -> Callable[[], nn.Module]:
    """A factory of one-hidden-layer MLPs (ReLU)."""
    return lambda: nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


class _Squeeze(nn.Module):
    """One score per sample: the wrapped model's (N, 1) output as (N,)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x).squeeze(-1)


@dataclass
class _Run:
    """One loss trained on one task."""

    name: str
    module: str
    labels: str
    loss_fn: nn.Module
    target: Tensor
    make_model: Callable[[], nn.Module]
    metrics: _Metrics
    primary: str


@dataclass
class _Task:
    """A data set, its split, and the runs trained on it."""

    name: str
    dataset: str
    split: _Split
    n_classes: int
    runs: list[_Run]


# Settings per task: (epochs, learning rate, weight decay); quick mode divides the epochs.
_SETTINGS = {
    "binary": (150, 0.02, 1e-3),
    "multi-class": (150, 0.01, 1e-4),
    "multi-label": (150, 0.01, 1e-2),
}


def _binary_task(seed: int) -> _Task:
    """Breast cancer: SoftMarginLoss on ±1 labels beside BCEWithLogitsLoss on {0, 1}."""
    from sklearn.datasets import load_breast_cancer

    split = _split(*load_breast_cancer(return_X_y=True), seed, 0.25, stratify=True)
    y01 = split.y_train.float()
    model = _one_score(30)
    return _Task("binary", "breast cancer (scikit-learn)", split, 2, [
        _Run("SoftMarginLoss", "marginloss", "±1 (to_pm1)", marginloss.SoftMarginLoss(),
             marginloss.labels.to_pm1(y01), model, _accuracy, "accuracy"),
        _Run("BCEWithLogitsLoss", "torch.nn", "{0, 1}", nn.BCEWithLogitsLoss(), y01, model,
             _accuracy, "accuracy"),
    ])


def _multiclass_task(seed: int) -> _Task:
    """Digits: MultiMarginLoss (p=1, p=2) beside CrossEntropyLoss, on class indices."""
    from sklearn.datasets import load_digits

    split = _split(*load_digits(return_X_y=True), seed, 0.25, stratify=True)
    split.y_train, split.y_test = split.y_train.long(), split.y_test.long()
    mlp = _mlp(64, 64, 10)
    runs = [_Run(f"MultiMarginLoss(p={p})", "marginloss", "class index",
                 marginloss.MultiMarginLoss(p=p), split.y_train, mlp, _accuracy, "accuracy")
            for p in (1, 2)]
    runs.append(_Run("CrossEntropyLoss", "torch.nn", "class index", nn.CrossEntropyLoss(),
                     split.y_train, mlp, _accuracy, "accuracy"))
    return _Task("multi-class", "digits (scikit-learn)", split, 10, runs)


def _multilabel_task(seed: int) -> _Task:
    """Yeast: MultiLabelSoftMarginLoss and BCEWithLogitsLoss on the 0/1 mask, and
    MultiLabelMarginLoss on -1-padded index lists."""
    split = _split(*load_yeast(), seed, 0.3, stratify=False)
    mask = split.y_train.float()
    padded = marginloss.labels.multi_hot_to_padded(split.y_train)
    mlp = _mlp(103, 128, 14)
    return _Task("multi-label", "Yeast (river)", split, 14, [
        _Run("MultiLabelSoftMarginLoss", "marginloss", "0/1 mask",
             marginloss.MultiLabelSoftMarginLoss(), mask, mlp, _multilabel, "micro_f1"),
        _Run("BCEWithLogitsLoss", "torch.nn", "0/1 mask", nn.BCEWithLogitsLoss(), mask, mlp,
             _multilabel, "micro_f1"),
        _Run("MultiLabelMarginLoss", "marginloss", "-1-padded (multi_hot_to_padded)",
             marginloss.MultiLabelMarginLoss(), padded, mlp, _ranking, "ndcg_at_3"),
    ])


# ----------------------------------------------------------------------------------------------
# progress


class _Progress:
    """Progress on stderr (or ``stream``) with :mod:`rich.progress`.

    On a terminal: a bar for the current run and one for all runs, advanced every epoch, above
    which a line is printed per finished run; the bars vanish at the end. Elsewhere (a file, a
    pipe, a CI log) rich draws no bars, so only the per-run lines appear, as plain text.
    """

    def __init__(self, total_epochs: int, n_runs: int, enabled: bool, stream=None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        console = Console(file=stream, stderr=stream is None, highlight=False)
        self.enabled = enabled
        self.n_runs = n_runs
        self.done_runs = 0
        self.progress = Progress(
            TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("epochs"), TimeElapsedColumn(),
            console=console, transient=True, disable=not enabled,
        )
        self.all_runs = self.progress.add_task("all runs", total=total_epochs)
        self.this_run = self.progress.add_task("", total=1)

    def __enter__(self) -> _Progress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def start_run(self, label: str, epochs: int) -> None:
        """A new run of ``epochs`` epochs begins."""
        self.progress.reset(self.this_run, total=epochs, description=label)

    def epoch_done(self) -> None:
        """One more epoch of the current run is trained."""
        self.progress.advance(self.this_run)
        self.progress.advance(self.all_runs)

    def run_done(self, label: str, seconds: float) -> None:
        """Print the line of a finished run (above the bars on a terminal)."""
        self.done_runs += 1
        if self.enabled:
            self.progress.console.print(
                f"[{self.done_runs}/{self.n_runs}] {label} trained in {seconds:.2f}s",
                markup=False, soft_wrap=True)


# ----------------------------------------------------------------------------------------------
# training


def _evaluate(model: nn.Module, run: _Run, split: _Split) -> dict[str, float]:
    """The run's metrics on the held-out part."""
    model.eval()
    with torch.no_grad():
        return run.metrics(model(split.x_test), split.y_test)


def _fit(run: _Run, split: _Split, epochs: int, lr: float, weight_decay: float, seed: int,
         eval_every: int, progress: _Progress) -> dict:
    """Train one run full-batch with Adam; return its metrics, time and training curves."""
    torch.manual_seed(seed)
    model = run.make_model()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    curve: dict[str, list] = {"epoch": [], "train_loss": []}
    train_seconds = 0.0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = run.loss_fn(model(split.x_train), run.target)
        loss.backward()
        opt.step()
        train_seconds += time.perf_counter() - t0
        if epoch % eval_every == 0 or epoch == epochs or epoch == 1:
            curve["epoch"].append(epoch)
            curve["train_loss"].append(round(loss.item(), 5))
            for k, v in _evaluate(model, run, split).items():
                curve.setdefault(k, []).append(round(v, 4))
        progress.epoch_done()
    final = _evaluate(model, run, split)
    return {
        "metrics": {k: round(v, 4) for k, v in final.items()},
        "train_seconds": round(train_seconds, 3),
        "final_train_loss": round(loss.item(), 5),
        "curve": curve,
    }


def _epochs(task: str, quick: bool) -> int:
    epochs = _SETTINGS[task][0]
    return max(epochs // 3, 10) if quick else epochs


def _train_task(task: _Task, quick: bool, seed: int, progress: _Progress) -> dict:
    """Train every run of ``task``; return the task's part of the report."""
    _, lr, weight_decay = _SETTINGS[task.name]
    epochs = _epochs(task.name, quick)
    lr = lr * 2 if quick else lr
    runs = []
    for r in task.runs:
        label = f"{task.name} · {r.name}"
        progress.start_run(label, epochs)
        res = _fit(r, task.split, epochs, lr, weight_decay, seed, max(epochs // 30, 1),
                   progress)
        progress.run_done(label, res["train_seconds"])
        runs.append({"loss": r.name, "module": r.module, "labels": r.labels,
                     "primary_metric": r.primary, **res})
    split = task.split
    return {
        "task": task.name, "dataset": task.dataset, "n_train": int(split.x_train.shape[0]),
        "n_test": int(split.x_test.shape[0]), "n_features": int(split.x_train.shape[1]),
        "n_classes": task.n_classes, "epochs": epochs,
        "optimizer": f"Adam(lr={lr:g}), full batch", "runs": runs,
    }


def run(*, quick: bool = False, seed: int = 0, progress: bool = True, stream=None) -> dict:
    """Train every model and return the report (a JSON-serialisable dict).

    The report holds, per task and run, the held-out metrics, the training time and curves,
    and the environment (versions, threads, seed). It judges nothing: the results the demo is
    expected to reach are asserted in the test suite.

    Args:
        quick: A third of the epochs (at twice the learning rate), for CI: a few seconds.
        seed: Seed of the data splits and of the initial weights.
        progress: Show progress on ``stream``: bars on a terminal, else a line per run.
        stream: Where progress goes (default: stderr).

    Raises:
        MissingDependencyError: scikit-learn, river or rich is not installed.
    """
    _require("sklearn", "river", "rich")
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    # The models are tiny: one thread is fastest, and steady when the CPU is shared.
    torch.set_num_threads(1)
    try:
        tasks = [_binary_task(seed), _multiclass_task(seed), _multilabel_task(seed)]
        n_runs = sum(len(t.runs) for t in tasks)
        total_epochs = sum(_epochs(t.name, quick) * len(t.runs) for t in tasks)
        with _Progress(total_epochs, n_runs, progress, stream) as bar:
            report_tasks = [_train_task(t, quick, seed, bar) for t in tasks]
        return {
            "marginloss": marginloss.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "quick": quick,
            "seed": seed,
            "tasks": report_tasks,
            "total_seconds": round(time.perf_counter() - t_start, 2),
        }
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# report


def _task_heading(task: dict):
    """The line above a task's table: the data set and its split."""
    from rich.text import Text

    heading = Text(f"{task['task']}: ", style="bold")
    heading.append(f"{task['dataset']}, {task['n_train']} train / {task['n_test']} held out, "
                   f"{task['n_features']} features, {task['n_classes']} classes")
    return heading


def _task_table(task: dict):
    """A rich table of one task: a row per loss, a column per held-out metric, training time;
    the training schedule below it."""
    from rich.table import Table
    from rich.text import Text

    metrics = list(dict.fromkeys(k for r in task["runs"] for k in r["metrics"]))
    table = Table("loss", "module", "labels", caption_justify="left",
                  caption=f"{task['epochs']} epochs of {task['optimizer']}")
    for k in metrics:
        table.add_column(_METRIC_NAMES.get(k, k), justify="right")
    table.add_column("train", justify="right")
    for r in task["runs"]:
        values = [f"{r['metrics'][k]:.3f}" if k in r["metrics"] else "–" for k in metrics]
        table.add_row(*map(Text, [r["loss"], r["module"], r["labels"], *values,
                                  f"{r['train_seconds']:.2f}s"]))
    return table


def _renderables(report: dict) -> list:
    """What the report prints: a heading, a table per task, the total time."""
    from rich.text import Text

    quick = " (quick mode: a third of the epochs)" if report["quick"] else ""
    out: list = [Text(
        f"marginloss {report['marginloss']} demo — held-out results{quick}\n"
        f"torch {report['torch']}, {report['device']}, {report['threads']} threads, "
        f"seed {report['seed']}\n")]
    for task in report["tasks"]:
        out += [_task_heading(task), _task_table(task), Text("")]
    out.append(Text(f"total {report['total_seconds']:.1f}s"))
    return out


def print_report(report: dict, console=None) -> None:
    """Print the report's tables through ``console`` (default: a rich Console on stdout, in
    colour on a terminal, plain and :data:`_TEXT_WIDTH` wide elsewhere)."""
    _require("rich")
    from rich.console import Console

    if console is None:
        console = Console()
        if not console.is_terminal:
            console.width = _TEXT_WIDTH
    for item in _renderables(report):
        console.print(item)


def format_report(report: dict) -> str:
    """The report as plain text (the tables :func:`print_report` prints, no ANSI escapes)."""
    _require("rich")
    from rich.console import Console

    console = Console(file=io.StringIO(), width=_TEXT_WIDTH, force_terminal=False,
                      color_system=None, highlight=False)
    print_report(report, console)
    lines = console.file.getvalue().splitlines()
    return "\n".join(line.rstrip() for line in lines)


def save_plot(report: dict, path: str | os.PathLike) -> Path:
    """Save the training curves (held-out metric and training loss per epoch) as an image."""
    _require("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = report["tasks"]
    fig = Figure(figsize=(4.2 * len(tasks), 7.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(tasks), squeeze=False)
    for col, t in enumerate(tasks):
        _plot_task(t, axes[0][col], axes[1][col])
    mode = "quick mode" if report["quick"] else "full demo"
    fig.suptitle(f"marginloss demo ({mode}): solid = marginloss losses, dashed = torch.nn "
                 f"baselines", fontsize=10)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def _plot_task(task: dict, top, bottom) -> None:
    """One task's curves: held-out metrics on ``top``, training loss on ``bottom``."""
    lows = []
    for j, r in enumerate(task["runs"]):
        c = r["curve"]
        color = f"C{j}"
        style = "-" if r["module"] == "marginloss" else "--"
        for key in (k for k in c if k not in ("epoch", "train_loss")):
            ls = style if key == r["primary_metric"] else ":"
            top.plot(c["epoch"], c[key], ls, color=color,
                     label=f"{r['loss']}: {_METRIC_NAMES.get(key, key)}")
            lows.append(min(c[key][len(c[key]) // 4:]))
        bottom.plot(c["epoch"], c["train_loss"], style, color=color, label=r["loss"])
    top.set_title(f"{task['task']}: {task['dataset']}")
    top.set_ylabel("held-out metric")
    top.set_ylim(max(0.0, min(lows) - 0.05), 1.0)
    top.grid(alpha=0.3)
    top.legend(fontsize=7, loc="best", framealpha=0.8)
    bottom.set_yscale("log")
    bottom.set_xlabel("epoch")
    bottom.set_ylabel("training loss (each loss on its own scale)")
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize=7)
