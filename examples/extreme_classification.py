"""Extreme multi-label classification with a fused head, from a file in the XC format.

Generates a power-law labelled data set (20,000 samples, 100,000 labels, sparse features),
writes it in the Extreme Classification Repository's text format, reads it back, trains a
feature embedding and a :class:`marginloss.LinearMultiLabelSoftMarginLoss` head on the sparse
label rows (the ``(batch, 100,000)`` logits never exist), and prints held-out precision@1/3/5.

To train on a real data set instead, read its file (for example EURLex-4K's ``train.txt``)
with ``read_xc`` and skip ``generate`` and ``write_xc``.

    python examples/extreme_classification.py       # about 20 s on a CPU core

``marginloss demo --extreme`` does the same with all three fused heads, and reports memory.
"""

import math
import tempfile
from pathlib import Path

import torch
from torch import nn

import marginloss
from marginloss.demo_extreme import generate
from marginloss.xc import read_xc, write_xc


def take_rows(csr: torch.Tensor, rows: torch.Tensor):
    """Rows of a CSR matrix as (row pointer, column indices, values): torch's CSR tensors
    have no index_select."""
    crow, col, val = csr.crow_indices(), csr.col_indices(), csr.values()
    start, count = crow[rows], crow[rows + 1] - crow[rows]
    ptr = torch.zeros(len(rows) + 1, dtype=torch.int64)
    ptr[1:] = torch.cumsum(count, 0)
    pos = torch.repeat_interleave(start - ptr[:-1], count) + torch.arange(int(ptr[-1]))
    return ptr, col[pos], val[pos]


def main(samples=20_000, labels=100_000, features=50_000, hidden=64, batch_size=256, seed=0):
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        write_xc(path, *generate(samples, labels, features, seed=seed))
        data = read_xc(path)  # XCData: features and labels as torch.sparse_csr tensors
    n_train = samples * 4 // 5  # the samples are drawn independently: the last fifth held out

    # model: sparse features -> the sum of their embeddings (weighted by value) -> fused head
    encoder = nn.EmbeddingBag(data.num_features, hidden, mode="sum")
    # summed over the labels, not averaged: with 10^5 labels the mean's gradients vanish
    head = marginloss.LinearMultiLabelSoftMarginLoss(hidden, data.num_labels, bias=True,
                                                     class_reduction="sum")
    with torch.no_grad():  # start every label at its average frequency: sigmoid(b) = 3 / C
        head.linear.bias.fill_(math.log(3 / data.num_labels))
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=0.02,
                                 fused=True)  # one pass over the 10^5 x H weight per step

    def embed(rows):
        ptr, col, val = take_rows(data.features, rows)
        return encoder(col, ptr[:-1], per_sample_weights=val)

    order = torch.randperm(n_train)
    for step, b0 in enumerate(range(0, n_train, batch_size)):
        rows = order[b0:b0 + batch_size]
        ptr, col, _ = take_rows(data.labels, rows)
        # the batch's labels as a sparse (row, label) pair: no dense (batch, C) target either
        target = (torch.repeat_interleave(torch.arange(len(rows)), torch.diff(ptr)), col)
        loss = head(embed(rows), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            print(f"step {step:3d}  loss {loss.item():.2f}")

    # held-out precision@k: the top 5 labels by a running top-k over chunks of labels
    hits, n_test = torch.zeros(5), samples - n_train
    with torch.no_grad():
        for b0 in range(n_train, samples, 1024):
            rows = torch.arange(b0, min(b0 + 1024, samples))
            h = embed(rows)
            best = torch.empty(len(rows), 0)
            best_idx = torch.empty(len(rows), 0, dtype=torch.int64)
            for c0 in range(0, data.num_labels, 4096):
                scores = h @ head.linear.weight[c0:c0 + 4096].T + head.linear.bias[c0:c0 + 4096]
                v, i = scores.topk(min(5, scores.shape[1]), dim=1)
                best, j = torch.cat([best, v], 1).topk(min(5, best.shape[1] + v.shape[1]), dim=1)
                best_idx = torch.cat([best_idx, i + c0], 1).gather(1, j)
            ptr, col, _ = take_rows(data.labels, rows)
            for r in range(len(rows)):
                hits += torch.isin(best_idx[r], col[ptr[r]:ptr[r + 1]]).float()
    for k in (1, 3, 5):
        print(f"precision@{k}: {hits[:k].sum().item() / (n_test * k):.3f}")


if __name__ == "__main__":
    main()
