"""``marginloss demo``: every loss trained on real data, beside its probabilistic baseline.

Six tasks on data sets that ship inside installed packages (nothing is downloaded):

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
* **metric** (metric learning): the digits again; a one-hidden-layer MLP maps each image to an
  8-D embedding, trained with :class:`marginloss.TripletMarginLoss` (and, for the same curves,
  ``torch.nn.TripletMarginLoss``) on triplets drawn each epoch: every training digit as the
  anchor, a random other image of its digit as the positive, a random image of another digit
  as the negative. Metric: held-out 1-NN accuracy (each held-out image takes the digit of its
  nearest training image, by Euclidean distance in the embedding), beside 1-NN on the
  64 raw pixels and on their 8-D PCA projection (references without training).
* **pairs**: the digits as pairs, +1 for the same digit and -1 for different ones (half and
  half, one pair per training digit drawn each epoch); the same kind of 8-D embedding, trained
  with :class:`marginloss.CosineEmbeddingLoss` on the two embeddings and with
  :class:`marginloss.HingeEmbeddingLoss` on their Euclidean distance
  (``torch.pairwise_distance``: the input of a hinge embedding loss is a distance, not a
  similarity). Metric: the ROC AUC of the similarity (cosine, or minus the distance) on 900
  fixed held-out pairs (each held-out digit with one of its class and one of another), beside
  the same similarities of the raw pixels.
* **ranking**: scikit-learn's diabetes data (442 patients, 10 features, disease progression
  after a year, a continuous target); a linear score trained with
  :class:`marginloss.MarginRankingLoss` (margin 1) on every pair of training patients with
  different targets, the label ``sign(t_i - t_j)`` saying which should
  score higher, beside ``torch.nn.MSELoss`` regression on the standardised target and
  RankNet (``torch.nn.BCEWithLogitsLoss`` on the score difference, {0, 1} labels). Metric:
  held-out pairwise ranking accuracy, the fraction of held-out pairs (different targets)
  whose scores are in the targets' order (Harrell's concordance index; a tie in the scores
  counts as wrong), beside the single feature that orders the training pairs best.

The pair, ranking and triplet runs of a task see the same pairs or triplets in the same order
(drawn from the seed and the epoch), so that torch.nn's ``TripletMarginLoss`` and marginloss's
give the same curves up to float rounding.

Each task is split once (stratified where single-label, fixed seed) into training and held-out
parts; features are standardised with training statistics only; every loss starts from the same
initial weights and is trained full-batch with Adam for the same number of epochs. The
reported metrics are on the held-out part, every few epochs (the curves) and at the end. The
demo reports what it measures and judges nothing: the results it is expected to reach are
asserted by the test suite (``tests/test_demo.py``), not here.

Metrics come from :mod:`sklearn.metrics`: ``accuracy_score`` (also of the 1-NN predictions),
``roc_auc_score`` (pairs), ``f1_score(average="micro")`` and, for the multi-label ranking
comparison, ``ndcg_score(k=3)`` (nDCG@3: the gains of the true labels
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

The pairwise ranking accuracy is written here (three lines of torch): scikit-learn has no
concordance index for a continuous target.

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
from dataclasses import dataclass, field
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
_METRIC_NAMES = {"accuracy": "accuracy", "micro_f1": "micro-F1", "ndcg_at_3": "nDCG@3",
                 "knn_accuracy": "1-NN accuracy", "pair_auc": "pair AUC",
                 "pairwise_accuracy": "pairwise accuracy"}

#: Width of the plain-text report: wide enough that no cell of the results table wraps.
_TEXT_WIDTH = 120

#: Tasks per row of the plot (each task is a column of two panels).
_PLOT_COLUMNS = 3


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
    raw_train: Tensor  # the features before standardisation
    raw_test: Tensor


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
    raw_t = torch.as_tensor(x_tr, dtype=torch.float32)
    raw_e = torch.as_tensor(x_te, dtype=torch.float32)
    xt, xe = _standardise(raw_t, raw_e)
    return _Split(xt, torch.as_tensor(y_tr), xe, torch.as_tensor(y_te), raw_t, raw_e)


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
# metrics (scikit-learn); each maps a model and the split to {metric name: value} on the
# held-out part

_Metrics = Callable[[nn.Module, _Split], dict[str, float]]


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


def _knn_accuracy(train: Tensor, y_train: Tensor, test: Tensor, y_test: Tensor) -> float:
    """Accuracy of the class of each held-out point's nearest training point (Euclidean)."""
    from sklearn.metrics import accuracy_score

    nearest = torch.cdist(test, train).argmin(-1)
    return float(accuracy_score(y_test.numpy(), y_train[nearest].numpy()))


def _pair_auc(similarity: Tensor, same: Tensor) -> float:
    """ROC AUC of a similarity score for telling same-class pairs (``same``) from others."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(same.numpy(), similarity.numpy()))


def _pairwise_accuracy(scores: Tensor, pairs: tuple[Tensor, Tensor, Tensor]) -> float:
    """The fraction of pairs (i, j, sign(t_i - t_j)) that ``scores`` orders the same way (a
    tie in the scores counts as wrong): Harrell's concordance index over the given pairs."""
    i, j, order = pairs
    return float(((scores[i] - scores[j]).sign() == order).float().mean())


def _held_out(metrics: Callable[[Tensor, Tensor], dict[str, float]]) -> _Metrics:
    """Metrics of the model's held-out scores against the held-out targets."""
    return lambda model, split: metrics(model(split.x_test), split.y_test)


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
    """One loss trained on one task.

    ``loss_args`` gives the loss's arguments from the model, the split and the epoch (default:
    the model's training scores and ``target``); the pair, ranking and triplet runs draw their
    pairs or triplets there. ``metrics`` maps the model and the split to held-out metrics.
    """

    name: str
    module: str
    labels: str
    loss_fn: nn.Module
    target: Tensor | None
    make_model: Callable[[], nn.Module]
    metrics: _Metrics
    primary: str
    loss_args: Callable[[nn.Module, _Split, int], tuple[Tensor, ...]] | None = None

    def loss(self, model: nn.Module, split: _Split, epoch: int) -> Tensor:
        """The training loss of ``model`` at ``epoch`` (counted from 1)."""
        if self.loss_args is None:
            return self.loss_fn(model(split.x_train), self.target)
        return self.loss_fn(*self.loss_args(model, split, epoch))


@dataclass
class _Task:
    """A data set, its split, the runs trained on it, and references that need no training
    (name -> held-out metrics)."""

    name: str
    dataset: str
    split: _Split
    n_classes: int | None  # None: a continuous target
    runs: list[_Run]
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    setup: str = ""  # how the pairs or triplets are drawn, in a few words


# Settings per task: (epochs, learning rate, weight decay); quick mode divides the epochs.
_SETTINGS = {
    "binary": (150, 0.02, 1e-3),
    "multi-class": (150, 0.01, 1e-4),
    "multi-label": (150, 0.01, 1e-2),
    "metric": (150, 0.01, 1e-4),
    "pairs": (150, 0.01, 1e-4),
    "ranking": (150, 0.01, 1e-3),
}


def _binary_task(seed: int) -> _Task:
    """Breast cancer: SoftMarginLoss on ±1 labels beside BCEWithLogitsLoss on {0, 1}."""
    from sklearn.datasets import load_breast_cancer

    split = _split(*load_breast_cancer(return_X_y=True), seed, 0.25, stratify=True)
    y01 = split.y_train.float()
    model = _one_score(30)
    return _Task("binary", "breast cancer (scikit-learn)", split, 2, [
        _Run("SoftMarginLoss", "marginloss", "±1 (to_pm1)", marginloss.SoftMarginLoss(),
             marginloss.labels.to_pm1(y01), model, _held_out(_accuracy), "accuracy"),
        _Run("BCEWithLogitsLoss", "torch.nn", "{0, 1}", nn.BCEWithLogitsLoss(), y01, model,
             _held_out(_accuracy), "accuracy"),
    ])


def _multiclass_task(seed: int) -> _Task:
    """Digits: MultiMarginLoss (p=1, p=2) beside CrossEntropyLoss, on class indices."""
    split = _digits(seed)
    mlp = _mlp(64, 64, 10)
    runs = [_Run(f"MultiMarginLoss(p={p})", "marginloss", "class index",
                 marginloss.MultiMarginLoss(p=p), split.y_train, mlp, _held_out(_accuracy),
                 "accuracy")
            for p in (1, 2)]
    runs.append(_Run("CrossEntropyLoss", "torch.nn", "class index", nn.CrossEntropyLoss(),
                     split.y_train, mlp, _held_out(_accuracy), "accuracy"))
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
             marginloss.MultiLabelSoftMarginLoss(), mask, mlp, _held_out(_multilabel),
             "micro_f1"),
        _Run("BCEWithLogitsLoss", "torch.nn", "0/1 mask", nn.BCEWithLogitsLoss(), mask, mlp,
             _held_out(_multilabel), "micro_f1"),
        _Run("MultiLabelMarginLoss", "marginloss", "-1-padded (multi_hot_to_padded)",
             marginloss.MultiLabelMarginLoss(), padded, mlp, _held_out(_ranking),
             "ndcg_at_3"),
    ])


#: Size of the digits embeddings of the metric and pair tasks (8 of the 64 pixels).
_EMBEDDING = 8


def _digits(seed: int) -> _Split:
    """Digits, split as the multi-class task splits them, with int64 class labels."""
    from sklearn.datasets import load_digits

    split = _split(*load_digits(return_X_y=True), seed, 0.25, stratify=True)
    split.y_train, split.y_test = split.y_train.long(), split.y_test.long()
    return split


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random source of one epoch's pairs or triplets: the same for every run of a task."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _partners(y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """For each sample, a random other sample of its class (a positive) and a random sample of
    another class (a negative), as indices."""
    n = y.shape[0]
    order = torch.argsort(y, stable=True)
    counts = torch.bincount(y)
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n)
    own = rank - starts[y]  # each sample's place among its class
    size = counts[y]
    offset = (torch.rand(n, generator=generator) * (size - 1)).long()
    offset += ((offset >= own) & (size > 1)).long()  # skip the sample itself
    positive = order[starts[y] + offset]
    negative = torch.randint(0, n, (n,), generator=generator)
    same = y[negative] == y
    while bool(same.any()):  # draw again where the negative has the anchor's class
        negative[same] = torch.randint(0, n, (int(same.sum()),), generator=generator)
        same = y[negative] == y
    return positive, negative


def _metric_task(seed: int) -> _Task:
    """Digits: an 8-D embedding trained with TripletMarginLoss (marginloss's, and torch.nn's for
    the same curves), scored by held-out 1-NN accuracy beside 1-NN on the 64 raw pixels and on
    an unsupervised 8-D projection (PCA)."""
    from sklearn.decomposition import PCA

    split = _digits(seed)
    net = _mlp(64, 64, _EMBEDDING)

    def triplets(model: nn.Module, s: _Split, epoch: int) -> tuple[Tensor, ...]:
        positive, negative = _partners(s.y_train, _epoch_generator(seed, epoch))
        emb = model(s.x_train)
        return emb, emb.index_select(0, positive), emb.index_select(0, negative)

    def knn(model: nn.Module, s: _Split) -> dict[str, float]:
        return {"knn_accuracy": _knn_accuracy(model(s.x_train), s.y_train, model(s.x_test),
                                              s.y_test)}

    pca = PCA(_EMBEDDING, svd_solver="full").fit(split.x_train.numpy())
    projected = [torch.as_tensor(pca.transform(x.numpy())) for x in (split.x_train, split.x_test)]
    labels = "triplets: same digit, other"
    return _Task("metric", "digits (scikit-learn)", split, 10, [
        _Run("TripletMarginLoss", "marginloss", labels, marginloss.TripletMarginLoss(), None,
             net, knn, "knn_accuracy", triplets),
        _Run("TripletMarginLoss (torch.nn)", "torch.nn", labels, nn.TripletMarginLoss(), None,
             net, knn, "knn_accuracy", triplets),
    ], baselines={
        "raw pixels (64-D)": {"knn_accuracy": round(_knn_accuracy(
            split.raw_train, split.y_train, split.raw_test, split.y_test), 4)},
        f"PCA to {_EMBEDDING}-D": {"knn_accuracy": round(_knn_accuracy(
            projected[0], split.y_train, projected[1], split.y_test), 4)},
    }, setup=f"a positive and a negative drawn per training digit each epoch; 1-NN in the "
             f"{_EMBEDDING}-D embedding")


def _pairs_task(seed: int) -> _Task:
    """Digits as pairs (same digit or not): a siamese 8-D embedding trained with
    CosineEmbeddingLoss, and with HingeEmbeddingLoss on the pair's Euclidean distance; scored by
    the ROC AUC of the similarity on fixed held-out pairs."""
    split = _digits(seed)
    net = _mlp(64, 64, _EMBEDDING)
    # Held-out pairs: each test digit with one of its class and one of another.
    positive, negative = _partners(split.y_test, torch.Generator().manual_seed(seed + 1))
    first = torch.arange(split.y_test.shape[0]).repeat(2)
    second = torch.cat([positive, negative])
    same = split.y_test[first] == split.y_test[second]

    def pairs(model: nn.Module, s: _Split, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        g = _epoch_generator(seed, epoch)
        positive, negative = _partners(s.y_train, g)
        similar = torch.rand(positive.shape[0], generator=g) < 0.5
        emb = model(s.x_train)
        other = emb.index_select(0, torch.where(similar, positive, negative))
        return emb, other, marginloss.labels.to_pm1(similar)

    def distances(model: nn.Module, s: _Split, epoch: int) -> tuple[Tensor, Tensor]:
        x1, x2, y = pairs(model, s, epoch)
        return torch.pairwise_distance(x1, x2), y

    def cosine_auc(emb: Tensor) -> dict[str, float]:
        cos = torch.nn.functional.cosine_similarity(emb[first], emb[second])
        return {"pair_auc": _pair_auc(cos, same)}

    def distance_auc(emb: Tensor) -> dict[str, float]:
        return {"pair_auc": _pair_auc(-torch.pairwise_distance(emb[first], emb[second]), same)}

    return _Task("pairs", "digits (scikit-learn)", split, 10, [
        _Run("CosineEmbeddingLoss", "marginloss", "±1 same digit (to_pm1)",
             marginloss.CosineEmbeddingLoss(), None, net,
             lambda model, s: cosine_auc(model(s.x_test)), "pair_auc", pairs),
        _Run("HingeEmbeddingLoss", "marginloss", "±1, on the distance",
             marginloss.HingeEmbeddingLoss(), None, net,
             lambda model, s: distance_auc(model(s.x_test)), "pair_auc", distances),
    ], baselines={
        "raw pixels, cosine": {"pair_auc": round(cosine_auc(split.raw_test)["pair_auc"], 4)},
        "raw pixels, distance": {
            "pair_auc": round(distance_auc(split.raw_test)["pair_auc"], 4)},
    }, setup="one pair per training digit each epoch, half of them same-digit; "
             f"{first.shape[0]} held-out pairs, half same-digit")


def _ranking_task(seed: int) -> _Task:
    """Diabetes: a linear score trained with MarginRankingLoss on every training pair, beside
    MSELoss regression and RankNet (BCEWithLogitsLoss on the score difference); scored by the
    held-out pairwise ranking accuracy."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    split = _split(data.data, data.target, seed, 0.25, stratify=False)
    split.y_train, split.y_test = split.y_train.float(), split.y_test.float()

    def ordered_pairs(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        i, j = torch.triu_indices(t.shape[0], t.shape[0], 1)
        keep = t[i] != t[j]  # ties have no order
        i, j = i[keep], j[keep]
        return i, j, torch.sign(t[i] - t[j])

    train_pairs, test_pairs = ordered_pairs(split.y_train), ordered_pairs(split.y_test)
    i, j, order = train_pairs
    order_01 = marginloss.labels.to_01(order)
    y_std = (split.y_train - split.y_train.mean()) / split.y_train.std()

    # index_select: its backward (index_add) is about twice as fast as that of scores[i]
    def score_pairs(model: nn.Module, s: _Split, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        scores = model(s.x_train)
        return scores.index_select(0, i), scores.index_select(0, j), order

    def difference(model: nn.Module, s: _Split, epoch: int) -> tuple[Tensor, Tensor]:
        scores = model(s.x_train)
        return scores.index_select(0, i) - scores.index_select(0, j), order_01

    def accuracy(model: nn.Module, s: _Split) -> dict[str, float]:
        return {"pairwise_accuracy": _pairwise_accuracy(model(s.x_test), test_pairs)}

    # The reference without training: the single feature that orders the training pairs best.
    by_feature = [_pairwise_accuracy(split.x_train[:, k], train_pairs)
                  for k in range(split.x_train.shape[1])]
    best = max(range(len(by_feature)), key=by_feature.__getitem__)
    model = _one_score(split.x_train.shape[1])
    metric = "pairwise_accuracy"
    return _Task("ranking", "diabetes (scikit-learn)", split, None, [
        _Run("MarginRankingLoss", "marginloss", "±1 which is higher (sign)",
             marginloss.MarginRankingLoss(margin=1.0), None, model, accuracy, metric,
             score_pairs),
        _Run("MSELoss", "torch.nn", "the values (standardised)", nn.MSELoss(), y_std, model,
             accuracy, metric),
        _Run("BCEWithLogitsLoss", "torch.nn", "{0, 1} on the difference", nn.BCEWithLogitsLoss(),
             None, model, accuracy, metric, difference),
    ], baselines={
        f"best single feature ({data.feature_names[best]})": {
            metric: round(_pairwise_accuracy(split.x_test[:, best], test_pairs), 4)},
    }, setup=f"all {i.shape[0]} training pairs with different targets each epoch; "
             f"{test_pairs[0].shape[0]} held-out pairs")


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
        return run.metrics(model, split)


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
        loss = run.loss(model, split, epoch)
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
        "optimizer": f"Adam(lr={lr:g}), full batch", "setup": task.setup, "runs": runs,
        "baselines": [{"name": k, "metrics": v} for k, v in task.baselines.items()],
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
        tasks = [_binary_task(seed), _multiclass_task(seed), _multilabel_task(seed),
                 _metric_task(seed), _pairs_task(seed), _ranking_task(seed)]
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
    target = ("a continuous target" if task["n_classes"] is None
              else f"{task['n_classes']} classes")
    heading.append(f"{task['dataset']}, {task['n_train']} train / {task['n_test']} held out, "
                   f"{task['n_features']} features, {target}")
    return heading


def _task_table(task: dict):
    """A rich table of one task: a row per loss, a column per held-out metric, training time,
    then a row per reference that needs no training; the training schedule below it."""
    from rich.table import Table
    from rich.text import Text

    metrics = list(dict.fromkeys(k for r in task["runs"] for k in r["metrics"]))
    setup = f"; {task['setup']}" if task.get("setup") else ""
    table = Table("loss", "module", "labels", caption_justify="left",
                  caption=f"{task['epochs']} epochs of {task['optimizer']}{setup}")
    for k in metrics:
        table.add_column(_METRIC_NAMES.get(k, k), justify="right")
    table.add_column("train", justify="right")
    rows = [(r["loss"], r["module"], r["labels"], r["metrics"], f"{r['train_seconds']:.2f}s")
            for r in task["runs"]]
    rows += [(b["name"], "–", "no training", b["metrics"], "–")
             for b in task.get("baselines", [])]
    for i, (loss, module, labels, values, seconds) in enumerate(rows):
        cells = [f"{values[k]:.3f}" if k in values else "–" for k in metrics]
        table.add_row(*map(Text, [loss, module, labels, *cells, seconds]),
                      end_section=i == len(task["runs"]) - 1)
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
    cols = min(len(tasks), _PLOT_COLUMNS)
    rows = -(-len(tasks) // cols)
    fig = Figure(figsize=(4.2 * cols, 7.0 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 * rows, cols, squeeze=False)
    for k, t in enumerate(tasks):
        row, col = divmod(k, cols)
        _plot_task(t, axes[2 * row][col], axes[2 * row + 1][col])
    for k in range(len(tasks), rows * cols):  # empty cells of the last row
        row, col = divmod(k, cols)
        axes[2 * row][col].set_visible(False)
        axes[2 * row + 1][col].set_visible(False)
    mode = "quick mode" if report["quick"] else "full demo"
    fig.suptitle(f"marginloss demo ({mode}): solid = marginloss losses, dashed = torch.nn "
                 f"baselines, grey = references without training", fontsize=10)
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
    for j, b in enumerate(task.get("baselines", [])):
        for key, value in b["metrics"].items():
            top.axhline(value, color="0.45", ls=(0, (1, 1 + 2 * j)), lw=1.2,
                        label=f"{b['name']}: {_METRIC_NAMES.get(key, key)}")
            lows.append(value)
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
