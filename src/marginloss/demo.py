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
  14 functional classes, 4.2 per gene on average); a linear model trained with
  :class:`marginloss.MultiLabelSoftMarginLoss` and ``torch.nn.BCEWithLogitsLoss`` on the 0/1
  mask (metric: micro-F1 of ``score > 0``), and with :class:`marginloss.MultiLabelMarginLoss`
  on -1-padded index lists (:func:`marginloss.labels.multi_hot_to_padded`). That one is a
  ranking loss, with no threshold, so all three are also compared by precision@3.

Each task is split once (stratified where single-label, fixed seed) into training and held-out
parts; features are standardised with training statistics only; every loss starts from the same
initial weights and is trained full-batch with Adam for the same number of epochs. The
reported metrics are on the held-out part.

scikit-learn and river (and matplotlib for ``--plot``) are optional dependencies
(``pip install 'marginloss[demo]'``), imported only when the demo runs.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["REQUIRED", "format_report", "run", "save_plot"]

#: Held-out results the full demo must reach: (task, loss label) -> (metric, minimum).
REQUIRED: dict[tuple[str, str], tuple[str, float]] = {
    ("binary", "SoftMarginLoss"): ("accuracy", 0.95),
    ("multi-class", "MultiMarginLoss(p=1)"): ("accuracy", 0.95),
    ("multi-class", "MultiMarginLoss(p=2)"): ("accuracy", 0.95),
    ("multi-label", "MultiLabelSoftMarginLoss"): ("micro_f1", 0.60),
}

_MISSING = (
    "marginloss demo needs scikit-learn and river (data sets shipped inside them): "
    "pip install 'marginloss[demo]'  (missing: {})"
)


class MissingDependencyError(RuntimeError):
    """An optional package the demo needs is not installed."""


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(_MISSING.format(", ".join(missing)))


# ----------------------------------------------------------------------------------------------
# data


@dataclass
class _Split:
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def _standardise(x_train: Tensor, x_test: Tensor) -> tuple[Tensor, Tensor]:
    mean = x_train.mean(0)
    std = x_train.std(0)
    # Constant training columns (digits' border pixels) are centred, not scaled.
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return (x_train - mean) / std, (x_test - mean) / std


def _split(x, y, seed: int, test_size: float, stratify: bool) -> _Split:
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
# metrics


def accuracy(scores: Tensor, target: Tensor) -> float:
    """Fraction of samples whose top-scoring class (or sign, for 1-D scores) is the target."""
    pred = (scores > 0).long() if scores.dim() == 1 else scores.argmax(-1)
    return float((pred == target).float().mean())


def micro_f1(scores: Tensor, mask: Tensor) -> float:
    """Micro-averaged F1 of the predictions ``scores > 0`` against a 0/1 mask."""
    pred = scores > 0
    true = mask.bool()
    tp = float((pred & true).sum())
    fp = float((pred & ~true).sum())
    fn = float((~pred & true).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def precision_at_k(scores: Tensor, mask: Tensor, k: int = 3) -> float:
    """Mean fraction of each sample's ``k`` top-scored classes that are true labels."""
    top = scores.topk(k, dim=-1).indices
    return float(mask.gather(-1, top).float().mean())


# ----------------------------------------------------------------------------------------------
# training


@dataclass
class _Run:
    task: str
    name: str
    module: str
    labels: str
    loss_fn: nn.Module
    target: Tensor
    make_model: Any
    metrics: Any  # scores, y_test -> dict
    primary: str
    result: dict = field(default_factory=dict)


class _Progress:
    """Progress on stderr: a bar redrawn in place on a terminal, one line per run elsewhere."""

    def __init__(self, total: int, enabled: bool, stream=None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, n: int, label: str, force: bool = False) -> None:
        self.done += n
        if not self.tty:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.05:
            return
        self._last = now
        frac = min(self.done / self.total, 1.0)
        width = 28
        bar = "#" * int(width * frac) + "." * (width - int(width * frac))
        self.stream.write(f"\r[{bar}] {frac:4.0%} {now - self.start:5.1f}s  {label:<46.46}")
        self.stream.flush()

    def run_done(self, i: int, n: int, label: str, seconds: float) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.update(0, label, force=True)
        else:
            self.stream.write(f"[{i}/{n}] {label} trained in {seconds:.2f}s\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 90 + "\r")
            self.stream.flush()


def _fit(run: _Run, split: _Split, epochs: int, lr: float, weight_decay: float, seed: int,
         eval_every: int, progress: _Progress) -> dict:
    torch.manual_seed(seed)
    model = run.make_model()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    x, x_test, y_test = split.x_train, split.x_test, split.y_test
    curve_epoch, curve_loss, curve_metrics = [], [], {}
    train_seconds = 0.0
    label = f"{run.task} · {run.name}"
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = run.loss_fn(model(x), run.target)
        loss.backward()
        opt.step()
        train_seconds += time.perf_counter() - t0
        if epoch % eval_every == 0 or epoch == epochs or epoch == 1:
            model.eval()
            with torch.no_grad():
                m = run.metrics(model(x_test), y_test)
            curve_epoch.append(epoch)
            curve_loss.append(loss.item())
            for k, v in m.items():
                curve_metrics.setdefault(k, []).append(round(v, 4))
        progress.update(1, label)
    model.eval()
    with torch.no_grad():
        final = run.metrics(model(x_test), y_test)
    return {
        "metrics": {k: round(v, 4) for k, v in final.items()},
        "train_seconds": round(train_seconds, 3),
        "final_train_loss": round(loss.item(), 5),
        "curve": {"epoch": curve_epoch, "train_loss": [round(v, 5) for v in curve_loss],
                  **curve_metrics},
    }


def _linear(n_in: int, n_out: int):
    return lambda: nn.Linear(n_in, n_out)


def _mlp(n_in: int, hidden: int, n_out: int):
    return lambda: nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


class _Squeeze(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x).squeeze(-1)


# Settings per task: (epochs, learning rate, weight decay); quick mode divides the epochs.
_SETTINGS = {
    "binary": (150, 0.02, 1e-3),
    "multi-class": (150, 0.01, 1e-4),
    "multi-label": (150, 0.01, 1e-2),
}


def run(*, quick: bool = False, seed: int = 0, progress: bool = True,
        stream=None) -> dict:
    """Train every model and return the report (a JSON-serialisable dict).

    Args:
        quick: A third of the epochs, for CI (a few seconds, mostly imports).
        seed: Seed of the data splits and of the initial weights.
        progress: Show a progress bar on ``stream`` (default: stderr).

    Raises:
        MissingDependencyError: scikit-learn or river is not installed.
    """
    _require("sklearn", "river")
    from sklearn.datasets import load_breast_cancer, load_digits

    import marginloss
    from marginloss import labels
    from marginloss.nn import (
        MultiLabelMarginLoss,
        MultiLabelSoftMarginLoss,
        MultiMarginLoss,
        SoftMarginLoss,
    )

    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    # The models are tiny: one thread is fastest, and steady when the CPU is shared.
    torch.set_num_threads(1)
    try:
        return _run(quick, seed, progress, stream, t_start, marginloss, labels,
                    (SoftMarginLoss, MultiLabelSoftMarginLoss, MultiMarginLoss,
                     MultiLabelMarginLoss), (load_breast_cancer, load_digits))
    finally:
        torch.set_num_threads(threads)


def _run(quick, seed, progress, stream, t_start, marginloss, labels, losses, loaders) -> dict:
    SoftMarginLoss, MultiLabelSoftMarginLoss, MultiMarginLoss, MultiLabelMarginLoss = losses
    load_breast_cancer, load_digits = loaders
    tasks = []

    # binary: breast cancer ------------------------------------------------------------------
    x, y = load_breast_cancer(return_X_y=True)
    bc = _split(x, y, seed, 0.25, stratify=True)
    y01 = bc.y_train.float()
    binary_metrics = lambda s, t: {"accuracy": accuracy(s, t)}  # noqa: E731
    tasks.append(("binary", "breast cancer (scikit-learn)", bc, 2, [
        _Run("binary", "SoftMarginLoss", "marginloss", "±1 (to_pm1)", SoftMarginLoss(),
             labels.to_pm1(y01), lambda: _Squeeze(nn.Linear(30, 1)), binary_metrics,
             "accuracy"),
        _Run("binary", "BCEWithLogitsLoss", "torch.nn", "{0, 1}", nn.BCEWithLogitsLoss(),
             y01, lambda: _Squeeze(nn.Linear(30, 1)), binary_metrics, "accuracy"),
    ]))

    # multi-class: digits ----------------------------------------------------------------------
    x, y = load_digits(return_X_y=True)
    dg = _split(x, y, seed, 0.25, stratify=True)
    dg.y_train, dg.y_test = dg.y_train.long(), dg.y_test.long()
    mc_metrics = lambda s, t: {"accuracy": accuracy(s, t)}  # noqa: E731
    mlp = _mlp(64, 64, 10)
    tasks.append(("multi-class", "digits (scikit-learn)", dg, 10, [
        _Run("multi-class", "MultiMarginLoss(p=1)", "marginloss", "class index",
             MultiMarginLoss(p=1), dg.y_train, mlp, mc_metrics, "accuracy"),
        _Run("multi-class", "MultiMarginLoss(p=2)", "marginloss", "class index",
             MultiMarginLoss(p=2), dg.y_train, mlp, mc_metrics, "accuracy"),
        _Run("multi-class", "CrossEntropyLoss", "torch.nn", "class index",
             nn.CrossEntropyLoss(), dg.y_train, mlp, mc_metrics, "accuracy"),
    ]))

    # multi-label: yeast -------------------------------------------------------------------------
    x, y = load_yeast()
    ye = _split(x, y, seed, 0.3, stratify=False)
    mask = ye.y_train.float()
    ml_metrics = lambda s, t: {"micro_f1": micro_f1(s, t),  # noqa: E731
                               "precision_at_3": precision_at_k(s, t, 3)}
    rank_metrics = lambda s, t: {"precision_at_3": precision_at_k(s, t, 3)}  # noqa: E731
    mlp = _mlp(103, 128, 14)
    tasks.append(("multi-label", "Yeast (river)", ye, 14, [
        _Run("multi-label", "MultiLabelSoftMarginLoss", "marginloss", "0/1 mask",
             MultiLabelSoftMarginLoss(), mask, mlp, ml_metrics, "micro_f1"),
        _Run("multi-label", "BCEWithLogitsLoss", "torch.nn", "0/1 mask",
             nn.BCEWithLogitsLoss(), mask, mlp, ml_metrics, "micro_f1"),
        _Run("multi-label", "MultiLabelMarginLoss", "marginloss", "-1-padded (multi_hot_to_padded)",
             MultiLabelMarginLoss(), labels.multi_hot_to_padded(ye.y_train), mlp, rank_metrics,
             "precision_at_3"),
    ]))

    def epochs_of(task: str) -> int:
        e = _SETTINGS[task][0]
        return max(e // 3, 10) if quick else e

    n_runs = sum(len(t[4]) for t in tasks)
    bar = _Progress(sum(epochs_of(t[0]) * len(t[4]) for t in tasks), progress, stream)
    report_tasks = []
    i = 0
    for task, dataset, split, n_classes, runs in tasks:
        epochs, lr, wd = _SETTINGS[task]
        epochs = epochs_of(task)
        lr = lr * 2 if quick else lr
        out_runs = []
        for r in runs:
            i += 1
            res = _fit(r, split, epochs, lr, wd, seed, max(epochs // 30, 1), bar)
            bar.run_done(i, n_runs, f"{task} · {r.name}", res["train_seconds"])
            need = REQUIRED.get((task, r.name))
            entry = {"loss": r.name, "module": r.module, "labels": r.labels,
                     "primary_metric": r.primary, **res}
            if need is not None:
                metric, minimum = need
                entry["required"] = {"metric": metric, "min": minimum,
                                     "passed": res["metrics"][metric] >= minimum}
            out_runs.append(entry)
        report_tasks.append({
            "task": task, "dataset": dataset, "n_train": int(split.x_train.shape[0]),
            "n_test": int(split.x_test.shape[0]), "n_features": int(split.x_train.shape[1]),
            "n_classes": n_classes, "epochs": epochs, "optimizer": f"Adam(lr={lr:g}), full batch",
            "runs": out_runs,
        })
    bar.close()
    checks = [r["required"]["passed"] for t in report_tasks for r in t["runs"] if "required" in r]
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
        "passed": all(checks),
        "total_seconds": round(time.perf_counter() - t_start, 2),
    }


_METRIC_NAMES = {"accuracy": "accuracy", "micro_f1": "micro-F1", "precision_at_3": "P@3"}


def format_report(report: dict) -> str:
    """The report as a text table: one row per loss, held-out metrics and training time."""
    lines = [
        f"marginloss {report['marginloss']} demo — held-out results"
        f"{' (quick mode: a third of the epochs)' if report['quick'] else ''}",
        f"torch {report['torch']}, {report['device']}, {report['threads']} threads, "
        f"seed {report['seed']}",
        "",
    ]
    header = f"  {'loss':<26} {'module':<10} {'labels':<32} {'held-out':<30} {'train':>7}"
    for t in report["tasks"]:
        lines.append(f"{t['task']}: {t['dataset']}, {t['n_train']} train / {t['n_test']} "
                     f"held out, {t['n_features']} features, {t['n_classes']} classes, "
                     f"{t['epochs']} epochs of {t['optimizer']}")
        lines.append(header)
        for r in t["runs"]:
            metrics = ", ".join(f"{_METRIC_NAMES.get(k, k)} {v:.3f}"
                                for k, v in r["metrics"].items())
            req = r.get("required")
            mark = ""
            if req:
                ok = "ok" if req["passed"] else "BELOW"
                mark = f"  (need {_METRIC_NAMES[req['metric']]} >= {req['min']:.2f}: {ok})"
            lines.append(f"  {r['loss']:<26} {r['module']:<10} {r['labels']:<32} "
                         f"{metrics:<30} {r['train_seconds']:>6.2f}s{mark}")
        lines.append("")
    verdict = "all required results reached" if report["passed"] else \
        "SOME REQUIRED RESULTS NOT REACHED"
    if report["quick"]:
        verdict += " (the requirements apply to the full demo)"
    lines.append(f"{verdict}; total {report['total_seconds']:.1f}s")
    return "\n".join(lines)


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
        top, bottom = axes[0][col], axes[1][col]
        lows = []
        for j, r in enumerate(t["runs"]):
            c = r["curve"]
            color = f"C{j}"
            style = "-" if r["module"] == "marginloss" else "--"
            for key in (k for k in c if k not in ("epoch", "train_loss")):
                ls = style if key == r["primary_metric"] else ":"
                top.plot(c["epoch"], c[key], ls, color=color,
                         label=f"{r['loss']}: {_METRIC_NAMES.get(key, key)}")
                lows.append(min(c[key][len(c[key]) // 4:]))
            bottom.plot(c["epoch"], c["train_loss"], style, color=color, label=r["loss"])
        top.set_title(f"{t['task']}: {t['dataset']}")
        top.set_ylabel("held-out metric")
        top.set_ylim(max(0.0, min(lows) - 0.05), 1.0)
        top.grid(alpha=0.3)
        top.legend(fontsize=7, loc="best", framealpha=0.8)
        bottom.set_yscale("log")
        bottom.set_xlabel("epoch")
        bottom.set_ylabel("training loss (each loss on its own scale)")
        bottom.grid(alpha=0.3)
        bottom.legend(fontsize=7)
    mode = "quick mode" if report["quick"] else "full demo"
    fig.suptitle(f"marginloss demo ({mode}): solid = marginloss losses, dashed = torch.nn "
                 f"baselines", fontsize=10)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
