"""NodeMask: every channel of every site as one flat vector, and the hook that gates and ablates them.

A circuit is a 0/1 (or relaxed) gate per node; a pruned node takes its ablation value:
x * g + mu * (1 - g) (docs/design.md, Node sites). Gates and ablation values are flat float32 tensors over all
nodes; each site is a slice of them, so the hot loop does one multiply-add per site and nothing per node.
AblationValues values follow the activations' layout: a site whose single node gates a whole vector (an SAE
error node, `Site.value_width`) has one gate but a vector of ablation values. Counterfactual ablation,
whose values differ by row and position (each row takes its pair partner's activations), passes them per
batch as `PositionValues` instead of the flat vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from circuitbench.errors import CircuitbenchError
from circuitbench.protocols import Hook, ModelAdapter, Site
from circuitbench.results.circuit import Circuit, SiteLayout, keep_top

__all__ = ["AblationValues", "NodeIndex", "PositionValues", "check_layout", "circuit_of", "gate_hook", "keep_top",
           "stacked_gate_hook"]


@dataclass(frozen=True, slots=True)
class NodeIndex:
    """Where each site's channels sit in the flat node vector."""

    sites: tuple[Site, ...]
    offsets: tuple[int, ...]
    """Start of each site's slice; offsets[i + 1] is its end (len(sites) + 1 entries)."""
    value_offsets: tuple[int, ...] | None = None
    """The same for ablation values, when a site's activation is wider than its nodes; None: `offsets`."""

    @classmethod
    def of(cls, adapter: ModelAdapter) -> NodeIndex:
        """Index the adapter's sites in forward order."""
        offsets, values = [0], [0]
        for s in adapter.sites:
            offsets.append(offsets[-1] + s.width)
            values.append(values[-1] + (s.value_width or s.width))
        return cls(tuple(adapter.sites), tuple(offsets), tuple(values))

    @property
    def size(self) -> int:
        """Total number of nodes."""
        return self.offsets[-1]

    @property
    def value_size(self) -> int:
        """Length of an ablation vector (the nodes, with each vector-valued node counted by its width)."""
        return (self.value_offsets or self.offsets)[-1]

    def slice(self, i: int) -> slice:
        """The flat slice of site i."""
        return slice(self.offsets[i], self.offsets[i + 1])

    def split(self, flat: Tensor) -> dict[str, Tensor]:
        """Per-site views of a flat node vector."""
        return {s.name: flat[self.slice(i)] for i, s in enumerate(self.sites)}

    def split_values(self, flat: Tensor) -> dict[str, Tensor]:
        """Per-site views of a flat ablation vector ([value_size])."""
        v = self.value_offsets or self.offsets
        return {s.name: flat[v[i] : v[i + 1]] for i, s in enumerate(self.sites)}

    def kinds(self) -> list[str]:
        """The kind of every node, in flat order."""
        return [s.kind for s in self.sites for _ in range(s.width)]


@dataclass(frozen=True, slots=True)
class PositionValues:
    """AblationValues values that differ by row and position, for one batch (counterfactual ablation).

    `values[site]` is [b, T, value width]: what row r's node takes at position t when pruned. A hook that
    sees one position per row (the last block of an `answer_only` forward) gets each row's value at its
    last prompt position, `last[r]`.
    """

    values: dict[str, Tensor]
    last: Tensor
    """[b] last prompt position of each row."""


AblationValues = Tensor | PositionValues
"""What pruned nodes take: one [value_size] vector for every row and position, or per-batch `PositionValues`."""


def _at_positions(offset: Tensor, x: Tensor, last: Tensor) -> Tensor:
    """A per-position offset [..., b, T, C] cut to x's positions: all of them, or each row's last one."""
    if x.shape[-2] == offset.shape[-2]:
        return offset
    rows = torch.arange(last.shape[0], device=offset.device)
    return offset[..., rows, last.to(offset.device), :].unsqueeze(-2)  # (..., b, 1, C)


def gate_hook(index: NodeIndex, gates: Tensor, ablation: AblationValues, also: Hook | None = None) -> Hook:
    """A hook that replaces each site's activation x by x * gate + ablation * (1 - gate).

    Args:
        index: the node layout.
        gates: [n_nodes] in [0, 1]; 1 keeps a node, 0 replaces it by its ablation value.
        ablation: [index.value_size] values taken by pruned nodes (a width-1 gate spans its site's vector),
            or `PositionValues` for the batch the hook runs on.
        also: an optional second hook run after gating (e.g. to record activations).
    """
    g = index.split(gates)
    per_position = isinstance(ablation, PositionValues)
    mu = ablation.values if isinstance(ablation, PositionValues) else index.split_values(ablation)
    # x * g + mu * (1 - g): exact for a 0/1 gate in every dtype (a kept node is x itself, also in bfloat16,
    # and a pruned one exactly mu), one fused multiply-add per site; the gradient reaches g through both terms.
    offset = {name: mu[name] * (1.0 - m) for name, m in g.items()}

    def hook(name: str, x: Tensor) -> Tensor:
        if name in g:
            off = offset[name]
            if per_position:
                off = _at_positions(off, x, ablation.last)  # type: ignore[union-attr]
            x = torch.addcmul(off.to(x.dtype), x, g[name].to(x.dtype))
        return also(name, x) if also is not None else x

    return hook


def stacked_gate_hook(index: NodeIndex, gates: Tensor, ablation: AblationValues) -> Hook:
    """`gate_hook` for P gate vectors at once: rows come in P equal blocks, block i gated by `gates[i]`.

    With P equal to the batch size, each row has its own gates (activation patching); with P = 2, a task
    and its control train side by side (the learned mask).

    Args:
        index: the node layout.
        gates: [P, n_nodes].
        ablation: [index.value_size], or `PositionValues` of one block's b rows, shared by every block.
    """
    if gates.shape[0] == 1:
        return gate_hook(index, gates[0], ablation)
    g = {s.name: gates[:, index.slice(i)] for i, s in enumerate(index.sites)}  # (P, width)
    n_blocks = gates.shape[0]
    if isinstance(ablation, PositionValues):
        mu = ablation.values  # (b, T, C), the same for every block
        offset = {name: mu[name][None] * (1.0 - m)[:, None, None, :] for name, m in g.items()}  # (P, b, T, C)
    else:
        flat = index.split_values(ablation)
        offset = {name: flat[name] * (1.0 - m) for name, m in g.items()}  # (P, value width)

    def hook(name: str, x: Tensor) -> Tensor:
        if name not in g:
            return x
        xs = x.unflatten(0, (n_blocks, x.shape[0] // n_blocks))  # (P, b, ..., C): a view
        shape = (n_blocks,) + (1,) * (xs.dim() - 2) + (-1,)
        off = offset[name]
        if isinstance(ablation, PositionValues):
            off = _at_positions(off, xs, ablation.last)
        else:
            off = off.view(shape)
        return torch.addcmul(off.to(x.dtype), xs, g[name].to(x.dtype).view(shape)).flatten(0, 1)

    return hook


def circuit_of(index: NodeIndex, scores: Tensor, k: int, ablation: Tensor, **meta: Any) -> Circuit:
    """The circuit of a node ranking cut at k, on the layout of `index` (what the evaluator saves)."""
    sites = tuple(SiteLayout(s.name, s.kind, s.layer, s.width, s.value_width) for s in index.sites)
    return Circuit(sites, scores.detach().float().cpu(), int(k), ablation.detach().float().cpu(), **meta)


def check_layout(circuit: Circuit, index: NodeIndex) -> None:
    """Raise unless the circuit was found on this model's node layout.

    Raises:
        CircuitbenchError: naming the first site that differs.
    """
    mine = [(s.name, s.width) for s in circuit.sites]
    theirs = [(s.name, s.width) for s in index.sites]
    if mine != theirs:
        diff = next((f"{a} vs {b}" for a, b in zip(mine, theirs, strict=False) if a != b),
                    f"{len(mine)} vs {len(theirs)} sites")
        raise CircuitbenchError(f"the circuit's node layout differs from this model's ({diff}); "
                                "load the model the circuit was found on.")
