"""Ablation values for pruned nodes: the pretraining mean (default), the task mean, or zero."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from circuitbench.circuits.masks import NodeIndex
from circuitbench.circuits.problem import Rows
from circuitbench.models.adapter import ModelAdapter

log = logging.getLogger(__name__)

AblationKind = Literal["mean", "task-mean", "zero"]


def mean_activations(
    adapter: ModelAdapter, index: NodeIndex, batches: Iterable[tuple[Tensor, Tensor]]
) -> Tensor:
    """Mean of every node over the valid positions of some token batches.

    Args:
        adapter: the model.
        index: the node layout.
        batches: (tokens [B, T], valid [B, T] bool) pairs; padding positions are excluded.

    Returns:
        [index.value_size] float32 means (a vector-valued node, e.g. an SAE error, gets its vector's mean).
    """
    total = torch.zeros(index.value_size, dtype=torch.float64)
    count = 0
    names = [s.name for s in index.sites]
    for tokens, valid in batches:
        last = torch.full((tokens.shape[0],), tokens.shape[1] - 1, dtype=torch.long)
        _, cache = adapter.run_with_cache(tokens, names=names, at=last)  # logits unused: skip them
        v = valid.to(adapter.device)
        parts = [(cache[n].float() * v[..., None]).sum(dim=(0, 1)).double().cpu() for n in names]
        total += torch.cat(parts)
        count += int(v.sum())
    if count == 0:
        raise ValueError("no valid positions to average over")
    return (total / count).float()


def task_mean(adapter: ModelAdapter, index: NodeIndex, rows: Rows, batch: int = 256) -> Tensor:
    """Mean over every prompt position of a task's examples."""

    def batches() -> Iterable[tuple[Tensor, Tensor]]:
        for i in range(0, len(rows), batch):
            part = rows.take(torch.arange(i, min(i + batch, len(rows)), device=rows.last.device))
            pos = torch.arange(part.tokens.shape[1], device=part.last.device)
            yield part.tokens, pos[None, :] <= part.last[:, None]

    return mean_activations(adapter, index, batches())


def corpus_mean(
    adapter: ModelAdapter,
    index: NodeIndex,
    windows: Tensor,
    corpus_key: str,
    cache_dir: Path | None = None,
    batch: int = 32,
) -> Tensor:
    """Mean over pretraining-corpus windows, cached on disk by model weights and corpus.

    Args:
        adapter: the model.
        index: the node layout.
        windows: LongTensor [N, T] of corpus token windows.
        corpus_key: a hash naming the corpus and tokenization (part of the cache key).
        cache_dir: where to keep results (default ~/.cache/circuitbench/ablation).
        batch: windows per forward pass.
    """
    weights = str(adapter.provenance.get("weights_sha256", adapter.name))
    if adapter.provenance.get("saes"):  # an SAE-augmented model: its sites depend on the SAEs' weights too
        weights += "|" + ",".join(s["weights_sha256"] for s in adapter.provenance["saes"])
    key = hashlib.sha256(f"{weights}|{corpus_key}|{tuple(windows.shape)}".encode()).hexdigest()[:24]
    cache_dir = cache_dir or Path(os.environ.get("CIRCUITBENCH_CACHE", "~/.cache/circuitbench")).expanduser()
    path = cache_dir / "ablation" / f"{key}.pt"
    if path.is_file():
        means = torch.load(path, weights_only=True)
        if means.shape == (index.value_size,):
            return means
        log.warning("%s: cached means have the wrong shape; recomputing", path)
    means = mean_activations(
        adapter, index,
        ((windows[i : i + batch], torch.ones_like(windows[i : i + batch], dtype=torch.bool))
         for i in range(0, len(windows), batch)),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        torch.save(means, f)
    os.replace(tmp, path)
    return means
