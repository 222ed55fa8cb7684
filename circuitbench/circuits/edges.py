"""The one definition of a circuit's edges, used to count them, to write the edge table, to draw and to export.

Between kept nodes (docs/design.md, "Circuit size"):
- **weighted** edges: a nonzero weight from a kept source channel to a kept channel of a site that has a
  source (q/k/v from the attention read, the attention write from v, MLP neurons from the MLP read, the MLP
  write from the neurons, an SAE's latents from the site it encodes);
- **residual** edges: a kept write channel to the kept read channel of the same index in any later
  sublayer (the residual stream carries it there unchanged).

`find_edges` returns them as blocks of index tensors, one per (source site, destination site): counting is
their lengths, the edge table is their rows, so the two can never disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from circuitbench.circuits.masks import NodeIndex
from circuitbench.protocols import READ_KINDS, WRITE_KINDS, ModelAdapter


@dataclass(frozen=True)
class EdgeBlock:
    """The edges from one site to another: parallel tensors of channel indices (and weights)."""

    src_site: str
    dst_site: str
    src: Tensor
    """LongTensor [E]: source channels."""
    dst: Tensor
    """LongTensor [E]: destination channels."""
    weight: Tensor | None
    """FloatTensor [E] for weighted edges; None for residual ones (they carry no weight)."""
    kind: Literal["weighted", "residual"]

    def __len__(self) -> int:
        return int(self.src.numel())


def find_edges(adapter: ModelAdapter, index: NodeIndex, gates: Tensor) -> list[EdgeBlock]:
    """Every edge between the kept nodes (gates > 0.5), in site order, weighted blocks first."""
    split = index.split(gates)
    kept = {s.name: torch.nonzero(split[s.name] > 0.5).flatten() for s in index.sites}
    blocks: list[EdgeBlock] = []
    for site in index.sites:
        if site.source is None or not len(kept[site.name]) or not len(kept[site.source]):
            continue
        w = adapter.site_weight(site)
        if w is None:
            raise ValueError(f"site {site.name} names a source ({site.source}) but the adapter has no weight for it")
        dst, src = kept[site.name].to(w.device), kept[site.source].to(w.device)
        sub = w[dst][:, src]
        i, j = torch.nonzero(sub != 0, as_tuple=True)
        blocks.append(EdgeBlock(site.source, site.name, src[j].cpu(), dst[i].cpu(), sub[i, j].detach().double().cpu(),
                                "weighted"))
    writes: list[tuple[str, Tensor]] = []
    for site in index.sites:  # forward order: a write reaches every later read
        if site.kind in READ_KINDS:
            read = kept[site.name]
            for name, channels in writes:
                both = read[torch.isin(read, channels)]
                if len(both):
                    blocks.append(EdgeBlock(name, site.name, both, both, None, "residual"))
        elif site.kind in WRITE_KINDS:
            writes.append((site.name, kept[site.name]))
    return blocks


def count_edges(adapter: ModelAdapter, index: NodeIndex, gates: Tensor) -> dict[str, int]:
    """How many edges the kept nodes have: in all, weighted and residual."""
    blocks = find_edges(adapter, index, gates)
    weighted = sum(len(b) for b in blocks if b.kind == "weighted")
    residual = sum(len(b) for b in blocks if b.kind == "residual")
    return {"edges": weighted + residual, "edges_weighted": weighted, "edges_residual": residual}


def edge_rows(adapter: ModelAdapter, index: NodeIndex, gates: Tensor) -> list[dict[str, Any]]:
    """The same edges as table rows (`src_site`, `src_channel`, `dst_site`, `dst_channel`, `weight`, `kind`)."""
    rows: list[dict[str, Any]] = []
    for b in find_edges(adapter, index, gates):
        weights = b.weight.tolist() if b.weight is not None else [math.nan] * len(b)
        rows += [{"src_site": b.src_site, "src_channel": int(s), "dst_site": b.dst_site, "dst_channel": int(d),
                  "weight": float(w), "kind": b.kind}
                 for s, d, w in zip(b.src.tolist(), b.dst.tolist(), weights, strict=True)]
    return rows
