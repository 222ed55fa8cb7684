"""Edge-level circuits: keep a set of edges, ablate every other one (MIB's circuit track, Edge Pruning).

The graph is the one `circuitbench.circuits.edges` counts edges on, taken over the whole model: every
nonzero weight from a source channel to a destination channel inside a block (`weighted`), and every write
channel to the read channel of the same index in each later sublayer (`residual`). An edge-level circuit is
a 0/1 gate per edge. Where an edge is pruned, the destination receives the ablated value of that edge's
contribution instead of its value; every node is still computed, from what its edges deliver:

- a weighted edge j -> i of a linear map W (q/k/v from the attention read, a neuron's pre-activation from
  the MLP read, a write from the neurons or from the attention's head-mixed values y): the destination's
  linear input loses W[i, j] (x_j - mu_j), i.e. it gets W[i, j] mu_j in place of W[i, j] x_j. The
  activation sparsity, the neuron's nonlinearity and the attention are then applied as in the model.
- a residual edge from write w to read r, channel c: the residual stream that r normalises has w's
  channel c at its ablation value mu_w[c] (the stream itself, and every other read, are unchanged).

mu is the ablation value of the edge's source (mean, task mean, zero or counterfactual, as for nodes; for
attention writes, of the head-mixed values y, the write's actual input). With counterfactual ablation mu
differs by row and position: the source's value in the pair partner's clean pass, aligned as for nodes. With
every gate at 1 this is the model exactly; with every gate at 0 every destination gets its sources' ablation
values. The token embedding (no node) reaches every read and the logits, and every write reaches the logits:
those paths are not edges of the graph, so they are never pruned (node-level counting has the same edges, so
a node-level circuit's edges and an edge-level circuit's edges are the same kind of number).

The gates act through forward hooks on the model's linear layers and forward pre-hooks on its norms, so
the gradient of the metric with respect to every edge gate is one backward pass (edge-level EAP). Models:
the native SparseGPT (the reference models, `openai/circuit-sparsity`) with a linear residual stream.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from circuitbench.circuits.edges import EdgeBlock, find_edges
from circuitbench.circuits.masks import AblationValues, NodeIndex, PositionValues
from circuitbench.errors import CircuitbenchError
from circuitbench.protocols import READ_KINDS, WRITE_KINDS, Batch, Hook, ModelAdapter, Site
from circuitbench.results.circuit import Circuit

EDGE_ABLATIONS = ("mean", "task-mean", "zero", "counterfactual")
"""Ablations an edge-level circuit takes: all of the node level's."""
NODE_ONLY_METHODS = ("magnitude",)
"""Built-in methods that score nodes only (a node's activation has no per-edge analogue)."""


def edge_support(adapter: ModelAdapter) -> str | None:
    """Why this model cannot be pruned at the edge level, or None when it can.

    An adapter declares `supports_edges = True` when its `model` is the native SparseGPT module tree (the
    native adapter: the reference models, circuit-sparsity checkpoints, `circuitbench train`'s models).
    """
    if not getattr(adapter, "supports_edges", False) or getattr(adapter, "has_saes", False):
        return (f"{adapter.name} is a {type(adapter).__name__}; edge-level circuits need the native weight-sparse "
                "format (circuit-sparsity / circuitbench train), whose linear layers and norms the edge gates hook")
    cfg = adapter.config  # type: ignore[attr-defined]
    if cfg.residual_activation_type != "identity" or (
            cfg.afrac is not None and {"resid_post_attn", "resid_post_mlp"} & set(cfg.loctypes)):
        return (f"{adapter.name} has a nonlinear residual stream (residual_activation_type or AbsTopK on it), so a "
                "write's contribution to a later read is not an edge")
    return None


def check_edge_level(adapter: ModelAdapter, ablation: str) -> None:
    """Refuse, before any work, a model or ablation that edge-level circuits do not support.

    Raises:
        CircuitbenchError: naming the flag and what to use instead.
    """
    why = edge_support(adapter)
    if why is not None:
        raise CircuitbenchError(f"--level edges: {why}; use --level nodes for this model")
    if ablation not in EDGE_ABLATIONS:
        raise CircuitbenchError(f"--level edges --ablation {ablation}: edge-level circuits take "
                                f"{', '.join(EDGE_ABLATIONS)} ablation; use one of those, or --level nodes")


def _linear_input(site: Site) -> str:
    """The activation a weighted site's linear map reads: its source, or an attention write's y (`L.attn.y`)."""
    assert site.source is not None
    return f"{site.layer}.attn.y" if site.kind == "attn_out" else site.source


@dataclass(frozen=True)
class EdgeIndex:
    """Every edge of a model's graph, in a fixed order: where each block of edges sits in a flat gate vector."""

    nodes: NodeIndex
    blocks: tuple[EdgeBlock, ...]
    offsets: tuple[int, ...]
    """Start of each block's slice; offsets[i + 1] is its end."""
    values: NodeIndex
    """The layout of edge-level ablation values: the node sites, then each attention's y."""

    @classmethod
    def of(cls, adapter: ModelAdapter) -> EdgeIndex:
        """The full graph of a model (every edge, as if every node were kept)."""
        nodes = NodeIndex.of(adapter)
        blocks = tuple(b for b in find_edges(adapter, nodes, torch.ones(nodes.size)) if len(b))
        offsets = [0]
        for b in blocks:
            offsets.append(offsets[-1] + len(b))
        extra = [Site(_linear_input(s), s.layer, "v", next(t.width for t in nodes.sites if t.name == s.source))
                 for s in nodes.sites if s.kind == "attn_out" and s.source is not None]
        sites = nodes.sites + tuple(extra)
        voff = [0]
        for s in sites:
            voff.append(voff[-1] + (s.value_width or s.width))
        return cls(nodes, blocks, tuple(offsets), NodeIndex(sites, tuple(voff), tuple(voff)))

    @property
    def size(self) -> int:
        """Number of edges in the graph."""
        return self.offsets[-1]

    def slice(self, i: int) -> slice:
        """The flat slice of block i."""
        return slice(self.offsets[i], self.offsets[i + 1])

    def sha(self) -> str:
        """A hash of the graph's layout (which edge sits where): a saved circuit checks the model has it."""
        h = hashlib.sha256()
        for b in self.blocks:
            h.update(f"{b.src_site}>{b.dst_site}:{b.kind}:{len(b)}|".encode())
            h.update(b.src.to(torch.int64).numpy().tobytes() + b.dst.to(torch.int64).numpy().tobytes())
        return h.hexdigest()[:16]

    def layout(self) -> Tensor:
        """[size, 4] int64: source site, source channel, destination site, destination channel of every edge.

        Sites are indices into `nodes.sites`.
        """
        pos = {s.name: i for i, s in enumerate(self.nodes.sites)}
        parts = [torch.stack([torch.full((len(b),), pos[b.src_site]), b.src, torch.full((len(b),), pos[b.dst_site]),
                              b.dst], 1) for b in self.blocks]
        return torch.cat(parts) if parts else torch.zeros(0, 4, dtype=torch.int64)

    def kinds(self) -> list[str]:
        """`weighted` or `residual`, per edge."""
        return [b.kind for b in self.blocks for _ in range(len(b))]

    def node_gates(self, gates: Tensor) -> Tensor:
        """[n_nodes] 0/1: the nodes at either end of a kept edge (gates > 0.5)."""
        out = torch.zeros(self.nodes.size)
        start = {s.name: self.nodes.offsets[i] for i, s in enumerate(self.nodes.sites)}
        keep = gates.detach().cpu() > 0.5
        for i, b in enumerate(self.blocks):
            k = keep[self.slice(i)]
            out[start[b.src_site] + b.src[k]] = 1.0
            out[start[b.dst_site] + b.dst[k]] = 1.0
        return out

    def sizes(self, gates: Tensor) -> dict[str, int]:
        """Kept edges (in all, weighted, residual), and the nodes they touch in all and per site kind."""
        from circuitbench.circuits.metrics import count_nodes

        keep = gates.detach().cpu() > 0.5
        by = {"weighted": 0, "residual": 0}
        for i, b in enumerate(self.blocks):
            by[b.kind] += int(keep[self.slice(i)].sum())
        return {**count_nodes(self.nodes, self.node_gates(gates)), "edges": by["weighted"] + by["residual"],
                "edges_weighted": by["weighted"], "edges_residual": by["residual"]}

    def rows(self, gates: Tensor, scores: Tensor | None = None) -> list[dict[str, Any]]:
        """The kept edges as edge-table rows (as `circuitbench.circuits.edges.edge_rows`, plus `score`)."""
        keep = gates.detach().cpu() > 0.5
        out: list[dict[str, Any]] = []
        for i, b in enumerate(self.blocks):
            sl = self.slice(i)
            k = torch.nonzero(keep[sl]).flatten()
            w = b.weight[k].tolist() if b.weight is not None else [float("nan")] * len(k)
            sc = scores[sl][k].tolist() if scores is not None else [float("nan")] * len(k)
            out += [{"src_site": b.src_site, "src_channel": int(b.src[j]), "dst_site": b.dst_site,
                     "dst_channel": int(b.dst[j]), "weight": float(wt), "kind": b.kind, "score": float(s)}
                    for j, wt, s in zip(k.tolist(), w, sc, strict=True)]
        return out


def _read_norms(adapter: ModelAdapter) -> dict[str, nn.Module]:
    """Each read site's norm module (its input is the residual stream the read sees)."""
    blocks = adapter.model.transformer.h  # type: ignore[attr-defined]
    return {s.name: blocks[s.layer].ln_1 if s.kind == "attn_in" else blocks[s.layer].ln_2
            for s in adapter.sites if s.kind in READ_KINDS}


def _at(xw: Tensor, x: Tensor, last: Tensor) -> Tensor:
    """A per-position tensor [B, T, C] cut to x's positions: all, or each row's answer position (answer_only).

    A flat [C] vector (mean, task-mean, zero ablation values) is the same at every position: returned as is.
    """
    if xw.dim() == 1 or xw.shape[1] == x.shape[1]:
        return xw
    return xw[torch.arange(xw.shape[0], device=xw.device), last.to(xw.device)][:, None]


@contextlib.contextmanager
def edge_gates(adapter: ModelAdapter, edges: EdgeIndex, gates: Tensor, values: AblationValues,
               last: Tensor) -> Iterator[Hook]:
    """Install the edge gates on the model for the forward passes inside the block; yields the hook to pass.

    Args:
        adapter: a model `edge_support` accepts.
        edges: its graph.
        gates: [edges.size] in [0, 1] (gradients flow to them).
        values: [edges.values.value_size] ablation values, or `PositionValues` of the batch (counterfactual:
            per row and position, over `edges.values`' sites).
        last: [B] answer positions of the batch run inside the block.
    """
    model: nn.Module = adapter.model  # type: ignore[attr-defined]
    mu = values.values if isinstance(values, PositionValues) else edges.values.split_values(values)
    handles = []
    by_param: dict[str, list[tuple[int, EdgeBlock, Site]]] = {}
    sites = {s.name: s for s in edges.nodes.sites}
    for i, b in enumerate(edges.blocks):
        if b.kind == "weighted":
            site = sites[b.dst_site]
            assert site.weight is not None
            by_param.setdefault(site.weight, []).append((i, b, site))
    for param, blocks in by_param.items():
        module = model.get_submodule(param.rsplit(".", 1)[0])
        w: Tensor = module.weight  # type: ignore[assignment]
        rows = torch.cat([b.dst + (s.rows[0] if s.rows else 0) for _, b, s in blocks]).to(w.device)
        cols = torch.cat([b.src for _, b, _ in blocks]).to(w.device)
        g = torch.cat([gates[edges.slice(i)] for i, _, _ in blocks]).to(w.dtype)
        off = w * (1.0 - torch.ones_like(w).index_put((rows, cols), g))  # W on the pruned edges, 0 elsewhere
        m = mu[_linear_input(blocks[0][2])].to(device=w.device, dtype=w.dtype)
        handles.append(module.register_forward_hook(
            lambda _m, inp, out, off=off, m=m: out - F.linear(inp[0] - _at(m, inp[0], last), off)))
    writes: dict[str, Tensor] = {}
    by_read: dict[str, list[tuple[str, Tensor]]] = {}
    for i, b in enumerate(edges.blocks):
        if b.kind == "residual":
            width = next(s.width for s in edges.nodes.sites if s.name == b.src_site)
            g = torch.ones(width, device=gates.device, dtype=gates.dtype).index_put((b.dst.to(gates.device),),
                                                                                   gates[edges.slice(i)])
            by_read.setdefault(b.dst_site, []).append((b.src_site, 1.0 - g))
    for read, norm in _read_norms(adapter).items():
        if read in by_read:
            def pre(_m: nn.Module, args: tuple[Tensor, ...], terms: list[tuple[str, Tensor]] = by_read[read]
                    ) -> tuple[Tensor, ...]:
                x = args[0]
                for w, drop in terms:
                    xw = _at(writes[w], x, last)
                    x = x + ((_at(mu[w], x, last).to(x.device, x.dtype) - xw) * drop.to(x.dtype))
                return (x, *args[1:])
            handles.append(norm.register_forward_pre_hook(pre))
    recorded = {s.name for s in edges.nodes.sites if s.kind in WRITE_KINDS}

    def hook(name: str, x: Tensor) -> Tensor:
        if name in recorded:
            writes[name] = x
        return x

    try:
        yield hook
    finally:
        for h in handles:
            h.remove()


def edge_logits(adapter: ModelAdapter, edges: EdgeIndex, gates: Tensor, values: AblationValues, part: Batch
                ) -> Tensor:
    """[B, V] logits at the answer positions with the edge gates applied."""
    from circuitbench.protocols import forward_at

    with edge_gates(adapter, edges, gates, values, part.last) as hook:
        return forward_at(adapter, part.tokens, hook, part.last)


def edge_circuit_of(edges: EdgeIndex, scores: Tensor, k: int, ablation: Tensor, **meta: Any) -> Circuit:
    """The circuit of an edge ranking cut at k (what the evaluator saves at the edge level)."""
    from circuitbench.results.circuit import SiteLayout, keep_top

    sites = tuple(SiteLayout(s.name, s.kind, s.layer, s.width, s.value_width) for s in edges.nodes.sites)
    extra = tuple(SiteLayout(s.name, s.kind, s.layer, s.width) for s in edges.values.sites[len(sites):])
    kept = torch.nonzero(keep_top(scores.detach().float().cpu(), int(k))).flatten()
    return Circuit(sites, scores.detach().float().cpu(), int(k), ablation.detach().float().cpu(), level="edges",
                   graph_sha=edges.sha(), value_sites=extra, kept_edges=edges.layout()[kept], **meta)


def check_graph(circuit: Circuit, edges: EdgeIndex) -> None:
    """Raise unless an edge-level circuit was found on this model's edge graph.

    Raises:
        CircuitbenchError: when the graphs differ (another model, or other weights).
    """
    if circuit.graph_sha != edges.sha() or len(circuit.scores) != edges.size:
        raise CircuitbenchError(f"the circuit's edge graph ({len(circuit.scores)} edges, {circuit.graph_sha}) is not "
                                f"this model's ({edges.size} edges, {edges.sha()}); load the model it was found on")


def circuit_edge_rows(adapter: ModelAdapter, circuit: Circuit) -> list[dict[str, Any]]:
    """A saved circuit's edge table on its model: the edges between its kept nodes, or its kept edges."""
    if circuit.level == "edges":
        edges = EdgeIndex.of(adapter)
        check_graph(circuit, edges)
        return edges.rows(circuit.gates(), circuit.scores)
    from circuitbench.circuits.edges import edge_rows

    return edge_rows(adapter, NodeIndex.of(adapter), circuit.gates())
