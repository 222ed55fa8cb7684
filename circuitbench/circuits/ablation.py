"""Ablation values for pruned nodes: corpus mean (default), task mean, zero, or counterfactual, in a registry.

Counterfactual values are the pair partner's activations.

An `AblationSource` gives the values pruned nodes take for one model; `ablation_source(kind, adapter,
index)` builds the registered one. The corpus mean is computed on first use (a run whose tasks are all
unsolved needs none) from held-out windows of the standard-library corpus, and cached on disk by model
weights and corpus.

Counterfactual ablation (MIB's and EAP-IG's interchange setting) gives each pruned node, in each row, the
value it has in the clean forward pass of the row's pair partner: the other member of its minimal pair,
whose answer is the opposite one. Positions are aligned from the answer backwards: position t of a row
whose last prompt position is L takes the partner's position t - (L - L'), L' being the partner's. Where
the two members tokenize to equal lengths (most pairs: `counterfactual_aligned_examples` in every
unit's measurements says how many) that is position by position. Where they do not, the longer member's
first |L - L'| positions have no counterpart and take the task mean instead. The partner's activations
are computed batch by batch (one extra forward pass, without gradients, per gated pass), so batches
always hold whole pairs.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from circuitbench.circuits.masks import NodeIndex, PositionValues
from circuitbench.errors import CircuitbenchError
from circuitbench.protocols import Batch, ModelAdapter
from circuitbench.results.unit import AblationKind

log = logging.getLogger(__name__)


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


def task_mean(adapter: ModelAdapter, index: NodeIndex, rows: Batch, batch: int = 256) -> Tensor:
    """Mean over every prompt position of a task's examples."""

    def batches() -> Iterable[tuple[Tensor, Tensor]]:
        for part in rows.chunks(batch):
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
    layout = "" if [s.name for s in index.sites] == [s.name for s in adapter.sites] else \
        "|" + ",".join(s.name for s in index.sites)  # another layout (edge level: + the attention's y) is cached apart
    key = hashlib.sha256(f"{weights}|{corpus_key}|{tuple(windows.shape)}{layout}".encode()).hexdigest()[:24]
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
    _cache_means(means, path)
    return means


def _cache_means(means: Tensor, path: Path) -> None:
    """Keep the means for the next run; a cache that cannot be written costs time, never the run."""
    from circuitbench.files import atomic_path, os_error_reason

    try:
        with atomic_path(path) as tmp:
            torch.save(means, tmp)
    except OSError as err:
        log.warning("cannot cache the mean activations in %s (%s); they are recomputed on every run. Set "
                    "CIRCUITBENCH_CACHE to a folder you can write to.", path.parent.parent, os_error_reason(err))


class AblationSource(Protocol):
    """The values pruned nodes of one model take."""

    kind: str
    """Registry name (`mean`, `task-mean`, `zero`)."""
    key: str | None
    """What the values depend on besides the model and task (the corpus behind `mean`), for provenance."""

    def values(self, train: Batch) -> Tensor:
        """[index.value_size] float32 values, for a task whose train split is `train`."""
        ...


@dataclass
class ZeroAblation:
    """Pruned nodes are zero."""

    index: NodeIndex
    kind: str = "zero"
    key: str | None = None

    def values(self, train: Batch) -> Tensor:
        """Zeros."""
        return torch.zeros(self.index.value_size)


@dataclass
class TaskMeanAblation:
    """Pruned nodes take their mean over every prompt position of the task's train split."""

    adapter: ModelAdapter
    index: NodeIndex
    kind: str = "task-mean"
    key: str | None = None

    def values(self, train: Batch) -> Tensor:
        """The task mean."""
        return task_mean(self.adapter, self.index, train)


def corpus_windows(adapter: ModelAdapter, n: int = 64, ctx: int = 128) -> tuple[Tensor, str]:
    """Windows of the standard-library corpus (held-out split) in the model's tokenizer, and their key."""
    from circuitbench.corpus import collect_corpus

    corpus = collect_corpus()
    ctx = min(ctx, adapter.context_length or ctx)
    ids: list[int] = []
    for text in corpus.val_texts:
        ids.extend(adapter.tokenizer.encode(text))
        if len(ids) >= n * ctx:
            break
    usable = len(ids) // ctx
    if usable == 0:
        raise CircuitbenchError("the corpus is too small for mean ablation; use --ablation task-mean")
    return torch.tensor(ids[: usable * ctx]).view(usable, ctx), f"{corpus.hash}|{adapter.tokenizer.name}|{ctx}"


@dataclass
class CorpusMeanAblation:
    """Pruned nodes take their mean over pretraining-like text (Gao et al. 2025), computed once per model."""

    adapter: ModelAdapter
    index: NodeIndex
    kind: str = "mean"
    key: str | None = None
    _means: Tensor | None = field(default=None, repr=False)

    def values(self, train: Batch) -> Tensor:
        """The corpus mean (the same for every task)."""
        if self._means is None:
            windows, self.key = corpus_windows(self.adapter)
            self._means = corpus_mean(self.adapter, self.index, windows.to(self.adapter.device), self.key)
        return self._means


@dataclass
class CounterfactualAblation:
    """Pruned nodes take the pair partner's activations (see the module docstring).

    This source's flat values are the task mean, which the few positions without a counterpart take.
    """

    adapter: ModelAdapter
    index: NodeIndex
    kind: str = "counterfactual"
    key: str | None = "pair partner, aligned at the answer; unaligned positions: task mean"

    def values(self, train: Batch) -> Tensor:
        """The task mean (the fallback of unaligned positions)."""
        return task_mean(self.adapter, self.index, train)


def partner_rows(n: int, device: torch.device | str) -> Tensor:
    """Each row's pair partner (rows 2j and 2j + 1 are each other's)."""
    if n % 2:
        raise ValueError(f"counterfactual ablation needs whole pairs (rows 2j, 2j + 1) in every batch, got {n} rows")
    return torch.arange(n, device=device) ^ 1


def aligned_examples(rows: Batch) -> int:
    """Rows whose pair partner has the same prompt length (patched position by position)."""
    last = rows.last
    return int((last == last[partner_rows(len(rows), last.device)]).sum())


def partner_values(adapter: ModelAdapter, index: NodeIndex, rows: Batch, fallback: Tensor) -> PositionValues:
    """The counterfactual ablation values of a batch of whole pairs: each row's partner's clean activations.

    Args:
        adapter: the model.
        index: the node layout.
        rows: whole pairs, pair-major (rows 2j and 2j + 1 are partners).
        fallback: [index.value_size] values for positions with no counterpart in the partner.

    Returns:
        Per site [b, T, value width], aligned from the answer position backwards.
    """
    n, width = rows.tokens.shape
    device = rows.last.device
    partner = partner_rows(n, device)
    names = [s.name for s in index.sites]
    with torch.no_grad():
        _, cache = adapter.run_with_cache(rows.tokens, names=names, at=rows.last)  # logits unused
    shift = rows.last - rows.last[partner]  # position t here is position t - shift in the partner
    src = torch.arange(width, device=device)[None, :] - shift[:, None]  # (n, T)
    has = (src >= 0)[..., None]
    src = src.clamp(0, width - 1)
    fb = index.split_values(fallback)
    out = {}
    for name in names:
        act = cache[name]  # (n, T, C)
        out[name] = torch.where(has.to(act.device), act[partner[:, None], src],
                                fb[name].to(device=act.device, dtype=act.dtype))
    return PositionValues(out, rows.last)


ABLATIONS: dict[str, Callable[[ModelAdapter, NodeIndex], AblationSource]] = {
    "mean": lambda adapter, index: CorpusMeanAblation(adapter, index),
    "task-mean": lambda adapter, index: TaskMeanAblation(adapter, index),
    "zero": lambda adapter, index: ZeroAblation(index),
    "counterfactual": lambda adapter, index: CounterfactualAblation(adapter, index),
}
"""Ablation registry: `--ablation NAME`."""


def ablation_source(kind: AblationKind | str, adapter: ModelAdapter, index: NodeIndex) -> AblationSource:
    """The registered ablation source of that name for a model.

    Raises:
        CircuitbenchError: for an unknown name, listing the registered ones.
    """
    if kind not in ABLATIONS:
        raise CircuitbenchError(f"--ablation {kind}: unknown ablation; choose one of {', '.join(ABLATIONS)}")
    return ABLATIONS[kind](adapter, index)
