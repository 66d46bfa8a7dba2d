r"""``marginloss demo --extreme``: fused heads trained on 100,000 labels read from an XC file.

The demo of :mod:`marginloss.linear` (fused heads), :mod:`marginloss.sparse` (sparse targets)
and :mod:`marginloss.xc` (the Extreme Classification Repository's format), on CPU, in order:

1. **Generate** a power-law labelled data set (:func:`generate`, seeded): label :math:`c` of
   popularity rank :math:`r` is drawn with probability :math:`\propto (r + 10)^{-1}` (Zipf
   with a flattened head; the ranks are shuffled over the label ids), :math:`1 + \text{Poisson}
   (2)` draws per sample (duplicates merged: about 3 labels per sample). Every label has 4
   *signature* features (drawn uniformly from the :math:`F` features, so each feature signs a
   few labels); a sample holds each of its labels' signature features with probability 0.8
   (value 1) and 10 *noise* features drawn from a Zipf law over the features (frequent "stop
   words", values in [0, 0.5)); duplicate features add up and each row is scaled to unit
   :math:`\ell_2` norm, like a tf-idf vector.
2. **Write** it in the XC sparse text format (:func:`marginloss.xc.write_xc`) and **read it
   back** (:func:`marginloss.xc.read_xc`): what is trained on is what was read.
3. **Train**, for each of the three fused heads, the model :math:`x \mapsto h = x E` (an
   ``nn.EmbeddingBag`` of :math:`F \times H`: the sum of the sample's feature embeddings,
   weighted by the feature values) :math:`\mapsto` the fused head's :math:`C \times H` linear
   layer and loss, with Adam on mini-batches, the same initial weights and batch order for
   every head. The targets are the read-back CSR label rows, never a dense :math:`(B, C)`
   mask: :class:`~marginloss.nn.LinearMultiLabelSoftMarginLoss` and
   :class:`~marginloss.nn.LinearMultiLabelMarginLoss` take the batch's ``torch.sparse_csr``
   label rows as they are; :class:`~marginloss.nn.LinearMultiMarginLoss` is a multi-class
   loss, so it gets one label per sample, drawn at random among the sample's labels anew each
   epoch (its other labels count as negatives in that step). The losses are summed over the
   classes instead of averaged (the soft margin head's ``class_reduction="sum"``; the hinge
   heads, which have no such option, are multiplied by :math:`C`, the same thing): averaged
   over :math:`10^5` classes, a rare label's gradient (about :math:`1 / (B C)`) would be of
   the order of Adam's :math:`\epsilon = 10^{-8}` and barely move its weights. The soft
   margin head's bias starts at :math:`\log(k / C)` (:math:`k` the mean number of labels per
   sample), as usual for sigmoid heads with rare positives; every other parameter keeps
   torch's default initialisation.
4. **Evaluate** precision@1, 3 and 5 on the held-out part (the last fifth of the samples; they
   are drawn independently, so this is a random split): the fraction of each sample's top
   :math:`k` scored labels that are its labels, averaged over the samples. The top 5 come from
   a running top-k over chunks of classes (a block of rows times a chunk of classes at a
   time, never the held-out samples' full :math:`N \times C` scores). Beside them, two
   references without training: **popularity** (the :math:`k` most frequent training labels,
   for every sample) and **chance** (a random ranking: precision :math:`\bar{k} / C`, with
   :math:`\bar{k}` the held-out samples' mean number of labels).
5. **Memory** of one training step's head (forward and backward of one batch of :math:`B`
   rows), in two ways, said as such in the report:

   * the dense head, **computed**: the :math:`(B, C)` float32 logits, their gradient and the
     dense target (a float32 mask, int64 class indices padded with -1, or no dense target for
     the multi-class loss, whose target is one index per sample), plus the :math:`(C, H)` and
     :math:`(C)` gradients of the layer that every head writes (at the default sizes this
     equals, within 0.1 MiB, the same profiler's measurement of the unfused head: ``F.linear``
     then marginloss's plain loss, 2026-12-02);
   * the fused head, **measured**: the peak, above what was allocated before, of torch's CPU
     allocator during the head's forward and backward on the first batch
     (:mod:`torch.profiler` with ``profile_memory=True``; the embedding's part of the step is
     outside), which includes the same layer gradients. (The training time includes that
     profiled step.)

The demo reports what it measures and judges nothing: the precision it must reach is asserted
by the tests (``tests/test_demo.py``). It needs only torch; with :mod:`rich` installed
(``pip install 'marginloss[demo]'``) its progress is a live display on a terminal, else lines
of plain text.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import platform
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

import marginloss
from marginloss import linear

__all__ = ["HEADS", "Head", "Settings", "format_report", "generate", "print_report", "run"]


@dataclass(frozen=True)
class Settings:
    """Sizes and training settings of the demo (the defaults are ``marginloss demo --extreme``)."""

    samples: int = 20_000
    labels: int = 100_000
    features: int = 50_000
    hidden: int = 64
    epochs: int = 1
    batch_size: int = 256
    lr: float = 0.02
    held_out: float = 0.2
    seed: int = 0
    chunk_size: int | None = None  # classes per chunk of the fused heads (None: their default)


class Head(NamedTuple):
    """One fused head the demo trains."""

    loss: str  # the loss's name in marginloss.functional
    module: str  # its module in marginloss.nn
    target: str  # what it is trained on
    class_sum: bool  # the head sums over the classes itself (class_reduction="sum")


HEADS = (
    Head("multilabel_soft_margin_loss", "LinearMultiLabelSoftMarginLoss", "CSR label rows",
         True),
    Head("multi_margin_loss", "LinearMultiMarginLoss", "1 random label per sample", False),
    Head("multilabel_margin_loss", "LinearMultiLabelMarginLoss", "CSR label rows", False),
)

#: The precision@k reported.
KS = (1, 3, 5)


# ----------------------------------------------------------------------------------------------
# data


def _make_csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A CSR tensor from parts known to be well formed (torch's "beta" warning silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


def _csr_from_pairs(rows: Tensor, cols: Tensor, values: Tensor,
                    size: tuple[int, int]) -> Tensor:
    """The CSR of ``(rows[i], cols[i], values[i])`` entries; duplicates add up."""
    keys, where = torch.unique(rows * size[1] + cols, return_inverse=True)  # sorted
    summed = torch.zeros(len(keys), dtype=values.dtype).index_add_(0, where, values)
    crow = torch.zeros(size[0] + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(keys // size[1], minlength=size[0]), 0)
    return _make_csr(crow, keys % size[1], summed, size)


def _zipf_draws(n: int, size: int, offset: float, generator: torch.Generator) -> Tensor:
    """``n`` draws of ranks :math:`r \\in [0, \\text{size})`, with probability
    :math:`\\propto (r + 1 + \\text{offset})^{-1}`."""
    p = (torch.arange(size, dtype=torch.float64) + 1 + offset).reciprocal()
    cdf = torch.cumsum(p, 0)
    u = torch.rand(n, dtype=torch.float64, generator=generator) * cdf[-1]
    return torch.searchsorted(cdf, u).clamp_(max=size - 1)


def generate(samples: int = 20_000, labels: int = 100_000, features: int = 50_000, *,
             seed: int = 0) -> tuple[Tensor, Tensor]:
    """A power-law labelled data set with sparse features (see the module doc, step 1).

    Returns:
        ``(features, labels)``: ``torch.sparse_csr`` tensors of shapes ``(samples, features)``
        (float32, rows of unit norm) and ``(samples, labels)`` (float32 ones), column indices
        sorted within each row: what :func:`marginloss.xc.write_xc` writes.
    """
    if min(samples, labels, features) < 1:
        raise ValueError(f"generate: samples, labels and features must be positive, got "
                         f"{samples}, {labels}, {features}.")
    g = torch.Generator().manual_seed(seed)
    # labels: 1 + Poisson(2) Zipf draws per sample, popularity ranks shuffled over the ids
    label_of_rank = torch.randperm(labels, generator=g)
    draws = 1 + torch.poisson(torch.full((samples,), 2.0), generator=g).long()
    rows = torch.repeat_interleave(torch.arange(samples), draws)
    cols = label_of_rank[_zipf_draws(len(rows), labels, 10.0, g)]
    label_csr = _csr_from_pairs(rows, cols, torch.ones(len(rows)), (samples, labels))
    label_csr.values().fill_(1.0)  # a label drawn twice is one label
    # features: each label's 4 signature features (kept with probability 0.8) ...
    signature = torch.randint(0, features, (labels, 4), generator=g)
    lab_rows = torch.repeat_interleave(torch.arange(samples), torch.diff(label_csr.crow_indices()))
    sig_rows = lab_rows.repeat_interleave(4)
    sig_cols = signature[label_csr.col_indices()].reshape(-1)
    kept = torch.rand(len(sig_cols), generator=g) < 0.8
    sig_rows, sig_cols = sig_rows[kept], sig_cols[kept]
    # ... and 10 noise features, Zipf over a shuffled feature order
    feature_of_rank = torch.randperm(features, generator=g)
    noise_rows = torch.arange(samples).repeat_interleave(10)
    noise_cols = feature_of_rank[_zipf_draws(len(noise_rows), features, 0.0, g)]
    noise_values = 0.5 * torch.rand(len(noise_rows), generator=g)
    x = _csr_from_pairs(torch.cat([sig_rows, noise_rows]), torch.cat([sig_cols, noise_cols]),
                        torch.cat([torch.ones(len(sig_rows)), noise_values]),
                        (samples, features))
    v = x.values()
    norms = torch.zeros(samples).index_add_(
        0, torch.repeat_interleave(torch.arange(samples), torch.diff(x.crow_indices())), v * v)
    v.div_(norms.sqrt().repeat_interleave(torch.diff(x.crow_indices())))
    return x, label_csr


class _Rows:
    """Rows of a CSR matrix, selected by index (torch has no ``index_select`` for CSR)."""

    def __init__(self, csr: Tensor) -> None:
        self.crow = csr.crow_indices()
        self.col = csr.col_indices()
        self.values = csr.values()
        self.n_cols = csr.shape[1]

    def take(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(row pointer, column indices, values)`` of ``rows``, in their order."""
        start = self.crow[rows]
        count = self.crow[rows + 1] - start
        ptr = torch.zeros(len(rows) + 1, dtype=torch.int64)
        ptr[1:] = torch.cumsum(count, 0)
        pos = torch.repeat_interleave(start - ptr[:-1], count) + torch.arange(int(ptr[-1]))
        return ptr, self.col[pos], self.values[pos]

    def csr(self, rows: Tensor) -> Tensor:
        ptr, col, val = self.take(rows)
        return _make_csr(ptr, col, val, (len(rows), self.n_cols))


# ----------------------------------------------------------------------------------------------
# model, training, evaluation


class _Encoder(nn.Module):
    """Sparse features to :math:`h = x E`: the feature-value-weighted sum of embeddings."""

    def __init__(self, n_features: int, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(n_features, hidden, mode="sum")

    def forward(self, ptr: Tensor, col: Tensor, values: Tensor) -> Tensor:
        return self.embedding(col, ptr[:-1], per_sample_weights=values)


def _precision(top: Tensor, labels: _Rows, rows: Tensor) -> Tensor:
    """Hits of ``top`` (``(n, k)`` label indices, best first) among ``rows``' labels, summed
    over the rows, per rank: a ``(k,)`` tensor."""
    ptr, col, _ = labels.take(rows)
    n = len(rows)
    keys = torch.repeat_interleave(torch.arange(n), torch.diff(ptr)) * labels.n_cols + col
    if len(keys) == 0:
        return torch.zeros(top.shape[1], dtype=torch.float64)
    query = torch.arange(n)[:, None] * labels.n_cols + top  # sorted keys: columns are sorted
    pos = torch.searchsorted(keys, query).clamp_(max=len(keys) - 1)
    return (keys[pos] == query).sum(0, dtype=torch.float64)


def _top_k(h: Tensor, weight: Tensor, bias: Tensor | None, k: int) -> Tensor:
    """The ``k`` best-scored classes of each row of ``h``, best first, from chunks of classes."""
    n_classes = weight.shape[0]
    chunk = max(k, linear.BUDGET // max(len(h), 1))
    best = torch.full((len(h), 0), -math.inf)
    best_idx = torch.zeros((len(h), 0), dtype=torch.int64)
    for c0 in range(0, n_classes, chunk):
        scores = h @ weight[c0:c0 + chunk].T
        if bias is not None:
            scores += bias[c0:c0 + chunk]
        v, i = scores.topk(min(k, scores.shape[1]), dim=1)
        best, j = torch.cat([best, v], 1).topk(min(k, best.shape[1] + v.shape[1]), dim=1)
        best_idx = torch.cat([best_idx, i + c0], 1).gather(1, j)
    return best_idx


@torch.no_grad()
def _evaluate(encoder: _Encoder, head: nn.Module, x: _Rows, y: _Rows, rows: Tensor,
              block: int = 1024) -> dict[str, float]:
    """Held-out precision@k of the model, ``block`` rows at a time."""
    k = max(KS)
    hits = torch.zeros(k, dtype=torch.float64)
    for b0 in range(0, len(rows), block):
        r = rows[b0:b0 + block]
        top = _top_k(encoder(*x.take(r)), head.linear.weight, head.linear.bias, k)
        hits[:top.shape[1]] += _precision(top, y, r)  # (fewer than k columns: k > C)
    return _precision_at(hits, len(rows))


def _precision_at(hits: Tensor, n: int) -> dict[str, float]:
    """Precision@k from the hits per rank (fewer ranks than k, with fewer classes: misses)."""
    cum = torch.cumsum(nn.functional.pad(hits, (0, max(KS) - len(hits))), 0)
    return {f"p@{k}": round(float(cum[k - 1]) / (n * k), 4) for k in KS}


def _popularity(y: _Rows, train: Tensor, test: Tensor) -> dict[str, float]:
    """Precision@k of ranking every held-out sample's labels by their training frequency."""
    _, col, _ = y.take(train)
    top = torch.bincount(col, minlength=y.n_cols).topk(min(max(KS), y.n_cols)).indices
    return _precision_at(_precision(top.expand(len(test), -1), y, test), len(test))


def _make_head(spec: Head, hidden: int, n_labels: int, labels_per_sample: float,
               chunk_size: int | None) -> nn.Module:
    options = {"class_reduction": "sum"} if spec.class_sum else {}
    head = getattr(marginloss.nn, spec.module)(hidden, n_labels, bias=True,
                                               chunk_size=chunk_size, **options)
    if spec.loss == "multilabel_soft_margin_loss":
        with torch.no_grad():
            head.linear.bias.fill_(math.log(labels_per_sample / n_labels))
    return head


def _one_label_each(y: _Rows, rows: Tensor, generator: torch.Generator) -> Tensor:
    """One of each row's labels, drawn uniformly (the multi-class head's target; every
    generated sample has at least one label)."""
    ptr, col, _ = y.take(rows)
    count = torch.diff(ptr)
    pick = (torch.rand(len(rows), generator=generator) * count).long().clamp_(max=count - 1)
    return col[ptr[:-1] + pick]


def _dense_bytes(loss: str, batch: int, n_labels: int, hidden: int) -> dict[str, int]:
    """What the unfused head's step holds for one batch (computed, float32 logits)."""
    logits = batch * n_labels * 4
    target = {"multilabel_soft_margin_loss": batch * n_labels * 4,  # float32 0/1 mask
              "multi_margin_loss": 0,  # (B,) class indices: nothing dense
              "multilabel_margin_loss": batch * n_labels * 8}[loss]  # int64, -1 padded
    layer_grads = (n_labels * hidden + n_labels) * 4
    return {"logits": logits, "logits_grad": logits, "target": target,
            "layer_grads": layer_grads, "total": 2 * logits + target + layer_grads}


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ side logs its start and stop there)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _peak_allocated(step: Callable[[], None]) -> int:
    """Run ``step`` under :mod:`torch.profiler` (``profile_memory=True``); return the peak, in
    bytes, of torch's CPU allocator above what was allocated when it began."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_fd2(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        with _quiet_fd2():
            prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    memory = [e["args"] for e in events if e.get("name") == "[memory]"
              and e.get("args", {}).get("Device Type", 0) == 0]
    if not memory:
        return 0
    # "Total Allocated" counts what the profiler saw allocated, so far; before the first event
    # it was the first event's total less that event's bytes.
    base = memory[0]["Total Allocated"] - memory[0]["Bytes"]
    return max(m["Total Allocated"] for m in memory) - base


# ----------------------------------------------------------------------------------------------
# progress


class _Progress:
    """Progress on ``stream`` (stderr): a :mod:`rich` live bar over the training steps on a
    terminal when rich is installed; otherwise (or off a terminal) a line per finished phase."""

    def __init__(self, enabled: bool, stream=None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None
        if enabled and importlib.util.find_spec("rich") is not None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            console = Console(file=self.stream, highlight=False)
            if console.is_terminal:
                self.bar = Progress(
                    TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("steps"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=True)
        self.task = None

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def line(self, text: str) -> None:
        """Print one line of progress (above the bar on a terminal)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.console.print(text, markup=False, soft_wrap=True)
        else:
            print(text, file=self.stream, flush=True)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No live display inside (its refreshes would go where stderr is silenced)."""
        if self.bar is None:
            yield
            return
        self.bar.stop()
        try:
            yield
        finally:
            self.bar.start()

    def start(self, description: str, steps: int) -> None:
        if self.bar is not None:
            if self.task is None:
                self.task = self.bar.add_task(description, total=steps)
            else:
                self.bar.reset(self.task, total=steps, description=description)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)


@contextlib.contextmanager
def _phase(progress: _Progress, what: str, times: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    times[key] = round(time.perf_counter() - t0, 2)
    progress.line(f"{what} in {times[key]:.1f}s")


# ----------------------------------------------------------------------------------------------
# the demo


def _train_one(spec: Head, s: Settings, x: _Rows, y: _Rows, train: Tensor, test: Tensor,
               labels_per_sample: float, progress: _Progress) -> dict[str, Any]:
    """Train the model with one fused head; its precision, time, loss and memory."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)  # the same initial weights for every head
        encoder = _Encoder(x.n_cols, s.hidden)
        head = _make_head(spec, s.hidden, y.n_cols, labels_per_sample, s.chunk_size)
    # fused: one pass over the 10^5 x H weight and its gradient per step, ~10x faster on CPU
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=s.lr, fused=True)
    steps = -(-len(train) // s.batch_size)
    progress.start(f"training {spec.module}", s.epochs * steps)
    memory = None
    losses = []
    t0 = time.perf_counter()
    for epoch in range(s.epochs):
        g = torch.Generator().manual_seed(s.seed * 1000 + epoch)  # the same order for every head
        order = train[torch.randperm(len(train), generator=g)]
        for b0 in range(0, len(order), s.batch_size):
            rows = order[b0:b0 + s.batch_size]
            target = _one_label_each(y, rows, g) if spec.loss == "multi_margin_loss" \
                else y.csr(rows)
            h = encoder(*x.take(rows))
            h_in = h.detach().requires_grad_()

            def head_step(h_in=h_in, target=target) -> None:
                value = head(h_in, target)
                if not spec.class_sum:
                    value = value * y.n_cols  # summed over the classes (see the module doc)
                value.backward()
                losses.append(value.item())

            opt.zero_grad(set_to_none=True)
            if memory is None:  # the first batch: measure the head's forward and backward
                with progress.paused():
                    memory = _peak_allocated(head_step)
            else:
                head_step()
            h.backward(h_in.grad)
            opt.step()
            progress.advance()
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    precision = _evaluate(encoder, head, x, y, test)
    eval_seconds = time.perf_counter() - t1
    batch = min(s.batch_size, len(train))
    progress.line(f"{spec.module}: trained in {train_seconds:.1f}s, evaluated in "
                  f"{eval_seconds:.1f}s: "
                  + ", ".join(f"P@{k} {precision[f'p@{k}']:.3f}" for k in KS))
    return {
        "loss": spec.loss, "head": spec.module, "target": spec.target,
        "precision": precision,
        "train_seconds": round(train_seconds, 2), "eval_seconds": round(eval_seconds, 2),
        "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4),
        "memory": {"batch": batch,
                   "dense_computed": _dense_bytes(spec.loss, batch, y.n_cols, s.hidden),
                   "fused_measured": memory,
                   "fused_classes_per_chunk": linear.chunk_sizes(batch, y.n_cols,
                                                                 s.chunk_size)[0]},
    }


def run(settings: Settings | None = None, *, data_file: str | os.PathLike | None = None,
        progress: bool = True, stream=None) -> dict[str, Any]:
    """Generate, write, read back, train the three fused heads, evaluate; return the report.

    Args:
        settings: Sizes and training settings (default: :class:`Settings`).
        data_file: Where to write the XC file (kept); default: a temporary file, removed.
        progress: Show progress on ``stream`` (stderr by default).

    Returns:
        A JSON-serialisable dict: the data's figures, the references without training, and per
        head its held-out precision@1/3/5, times, first and last training loss, and memory.
    """
    from marginloss import xc

    s = settings or Settings()
    if min(s.samples, s.labels, s.features, s.hidden, s.epochs, s.batch_size) < 1:
        raise ValueError(f"demo --extreme: sizes must be positive, got {s}.")
    if not 0 < s.held_out < 1 or int(s.samples * s.held_out) < 1 or \
            s.samples - int(s.samples * s.held_out) < 1:
        raise ValueError(f"demo --extreme: held_out={s.held_out} must leave at least one "
                         f"training and one held-out sample of {s.samples}.")
    t_start = time.perf_counter()
    times: dict[str, float] = {}
    kept = data_file is not None
    with _Progress(progress, stream) as bar, contextlib.ExitStack() as stack:
        if not kept:
            data_file = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "data.txt"
        with _phase(bar, f"generated {s.samples:,} samples, {s.labels:,} labels", times,
                    "generate"):
            features, labels = generate(s.samples, s.labels, s.features, seed=s.seed)
        with _phase(bar, f"wrote {data_file} (XC format)", times, "write"):
            xc.write_xc(data_file, features, labels)
        file_bytes = os.path.getsize(data_file)
        with _phase(bar, "read it back with marginloss.xc.read_xc", times, "read"):
            data = xc.read_xc(data_file)
        del features, labels
        x, y = _Rows(data.features), _Rows(data.labels)
        n_test = int(s.samples * s.held_out)
        train = torch.arange(s.samples - n_test)
        test = torch.arange(s.samples - n_test, s.samples)
        n_labels_train = int(y.crow[len(train)])
        labels_per_sample = n_labels_train / len(train)
        runs = [_train_one(spec, s, x, y, train, test, labels_per_sample, bar)
                for spec in HEADS]
    test_labels = int(y.crow[-1] - y.crow[len(train)])
    per_sample = test_labels / n_test  # a random ranking's hits in its top k, per sample
    return {
        "marginloss": marginloss.__version__, "torch": torch.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "settings": asdict(s),
        "data": {
            "samples": s.samples, "train": len(train), "held_out": n_test,
            "features": data.num_features, "labels": data.num_labels,
            "feature_entries": int(data.features.values().numel()),
            "label_entries": int(data.labels.values().numel()),
            "labels_per_sample": round(labels_per_sample, 3),
            "labels_in_train": int(torch.unique(y.col[:n_labels_train]).numel()),
            "file": str(data_file) if kept else None,  # None: a temporary file, removed
            "file_bytes": file_bytes,
        },
        "references": {"popularity": _popularity(y, train, test),
                       "chance": {f"p@{k}": per_sample / max(k, s.labels) for k in KS}},
        "runs": runs,
        "seconds": {**times, "total": round(time.perf_counter() - t_start, 2)},
    }


# ----------------------------------------------------------------------------------------------
# report


#: Width of the report's prose lines (the table is about as wide).
_WIDTH = 110


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def format_report(report: dict[str, Any]) -> str:
    """The report as plain text: the data, a table of the heads and the references, notes."""
    d, s = report["data"], report["settings"]
    prose = [
        f"marginloss demo --extreme: {d['samples']:,} samples ({d['train']:,} training, "
        f"{d['held_out']:,} held-out), {d['labels']:,} labels (power law, "
        f"{d['labels_per_sample']:.2f} per sample, {d['labels_in_train']:,} of them seen in "
        f"training), {d['features']:,} sparse features "
        f"({d['feature_entries'] / d['samples']:.1f} per sample)",
        f"XC file: {d['file_bytes'] / 1e6:.1f} MB, written by marginloss.xc.write_xc in "
        f"{report['seconds']['write']:.1f}s and read back by read_xc in "
        f"{report['seconds']['read']:.1f}s" + (f" (kept: {d['file']})" if d["file"] else ""),
        f"model: EmbeddingBag({d['features']:,} -> {s['hidden']}) -> fused head "
        f"({d['labels']:,} x {s['hidden']}, bias); Adam lr {s['lr']:g}, batch "
        f"{s['batch_size']}, {s['epochs']} epoch{'s' if s['epochs'] != 1 else ''}, seed "
        f"{s['seed']}",
    ]
    lines = [line for text in prose for line in textwrap.wrap(text, _WIDTH,
                                                                subsequent_indent="  ")]
    lines.append("")
    batch = report["runs"][0]["memory"]["batch"] if report["runs"] else s["batch_size"]
    header = (f"{'head':<30} {'target':<25} {'P@1':>7} {'P@3':>7} {'P@5':>7} {'train':>7} "
              f"{'dense head':>11} {'fused head':>11}")
    lines += [header, "-" * len(header)]
    for r in report["runs"]:
        p, m = r["precision"], r["memory"]
        dense, fused = m["dense_computed"]["total"], m["fused_measured"]
        lines.append(f"{r['head']:<30} {r['target']:<25} {p['p@1']:>7.3f} {p['p@3']:>7.3f} "
                     f"{p['p@5']:>7.3f} {r['train_seconds']:>6.1f}s {_mib(dense):>11} "
                     f"{_mib(fused):>11}" + (f"  ({dense / fused:.1f}x)" if fused else ""))
    ref = report["references"]
    pop, chance = ref["popularity"], ref["chance"]
    lines += [
        f"{'popularity (no training)':<30} {'top training labels':<25} {pop['p@1']:>7.3f} "
        f"{pop['p@3']:>7.3f} {pop['p@5']:>7.3f}",
        f"{'chance (random ranking)':<30} {'':<25} {chance['p@1']:>7.1e} {chance['p@3']:>7.1e} "
        f"{chance['p@5']:>7.1e}",
        "",
    ]
    notes = [
        "P@k: held-out precision@k (the top k from a running top-k over chunks of classes).",
        f"Memory of the head for one batch of {batch}: dense head computed (the (B, C) float32 "
        "logits, their gradient and the dense target: a float32 mask, int64 -1-padded lists, "
        "none for one class index per sample; plus the layer's weight and bias gradients), "
        "fused head measured (the peak of torch's CPU allocator during its forward and backward "
        "on the first batch, by torch.profiler; the same gradients included).",
        f"total {report['seconds']['total']:.1f}s on {report['threads']} "
        f"thread{'s' if report['threads'] != 1 else ''} "
        f"({report['cpus']} CPUs), torch {report['torch']}, marginloss {report['marginloss']}",
    ]
    lines += [line for text in notes for line in textwrap.wrap(text, _WIDTH)]
    return "\n".join(lines)


def print_report(report: dict[str, Any], file=None) -> None:
    print(format_report(report), file=file if file is not None else sys.stdout)
