"""Attribution methods at the node (channel) level: magnitude, EAP, EAP-IG and exact activation patching.

All four score nodes through the same gate the evaluator prunes with: a node's activation becomes
x * g + mu * (1 - g), so g = 1 is the model and g = 0 ablates the node to its ablation value mu. The
metric m is the logit difference, logit(correct) - logit(incorrect), at the last prompt position,
averaged over the task's train examples (MIB's and EAP-IG's metric).

- `magnitude`: mean |x - mu| over every prompt position of the train split (no gradients).
- `eap` (attribution patching, Syed et al. 2023; node-level EAP): dm/dg at g = 1, which is
  sum over positions of (x - mu) . dm/dx: the first-order estimate of what ablating the node alone
  costs. One backward pass per batch.
- `eap_ig` (Hanna et al. 2024, EAP-IG; MIB uses 5 steps): the same gradient averaged over gates
  g = k / steps, k = 1..steps, on the straight path from the ablated model to the model: integrated
  gradients, whose attributions sum to m(g = 1) - m(g = 0).
- `activation_patching`: m(model) - m(model with only this node ablated), exactly, for every node:
  one forward pass per node (batched over nodes), so it is for small models and as the oracle the
  tests hold `eap` against.

Scores are |attribution| (a node that hurts the metric matters as much as one that helps), in float32;
the signed attributions are kept as `signed_scores` (positive: keeping the node raises the logit
difference), which MIB's CPR ranks by. Each method states its cost in passes over the examples it uses
(`cost`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Annotated, Any, cast

import torch
from pydantic import Field
from torch import Tensor

from circuitbench.circuits.masks import PositionValues, stacked_gate_hook
from circuitbench.circuits.methods import register_method
from circuitbench.circuits.metrics import answer_logits
from circuitbench.circuits.problem import Problem, search_subset, whole_pairs
from circuitbench.errors import CircuitbenchError
from circuitbench.protocols import Batch, forward_at


def _examples(problem: Problem, max_examples: int | None) -> Batch:
    """The train examples a method uses: all, or a seeded subset of whole pairs."""
    rows = problem.train
    if max_examples is None or len(rows) <= max_examples:
        return rows
    return search_subset(rows, max_examples, problem.seed)


def _logit_diff(problem: Problem, part: Batch, gates: Tensor) -> Tensor:
    """Sum over rows of logit(correct) - logit(incorrect) with the given gates."""
    two = answer_logits(problem.logits_at(part, gates), part)
    return (two[:, 0] - two[:, 1]).sum()


def gate_gradient(problem: Problem, rows: Batch, level: float, batch: int) -> Tensor:
    """D mean-logit-difference / d gates, with every gate at `level`: [problem.size] float32.

    At the edge level (an `EdgeProblem`) the gates are the edges': at `level` 1 the derivative for edge
    j -> i is MIB's EAP score, (upstream activation - its ablation value) times the gradient at the
    downstream input, summed over positions.
    """
    device = rows.last.device
    grad = torch.zeros(problem.size, device=device)
    for part in rows.chunks(whole_pairs(batch)):
        gates = torch.full((problem.size,), float(level), device=device, requires_grad=True)
        (g,) = torch.autograd.grad(_logit_diff(problem, part, gates), gates)
        grad += g.float()
    return grad / len(rows)


@dataclass
class _Base:
    max_examples: Annotated[int, Field(ge=2)] | None = 256
    """Train examples used (whole pairs, seeded); None: all of them."""
    batch: Annotated[int, Field(gt=0)] = 64
    """Rows per pass."""

    def hyperparameters(self) -> dict[str, Any]:
        """The dataclass fields."""
        return asdict(self)

    def _batches(self, n_examples: int) -> int:
        """Batches over the examples actually used (`max_examples` of the `n_examples`)."""
        used = n_examples if self.max_examples is None else min(n_examples, self.max_examples)
        return math.ceil(used / self.batch)


@register_method("magnitude")
@dataclass
class Magnitude(_Base):
    """Mean |activation - ablation value| over every prompt position of the train examples."""

    name = "magnitude"

    def cost(self, n_examples: int, n_nodes: int) -> dict[str, int]:
        """One forward pass over the examples."""
        return {"forward": self._batches(n_examples), "backward": 0}

    def node_scores(self, problem: Problem) -> Tensor:
        """Mean absolute deviation from the ablation value, per node."""
        if problem.level != "nodes":
            raise CircuitbenchError("--method magnitude scores nodes only; at --level edges use eap, eap_ig, "
                                    "activation_patching, learned_mask or random")
        rows = _examples(problem, self.max_examples)
        index = problem.index
        names = [s.name for s in index.sites]
        total = torch.zeros(index.size, dtype=torch.float64)
        count = 0
        for part in rows.chunks(whole_pairs(self.batch)):
            _, cache = problem.adapter.run_with_cache(part.tokens, names=names, at=part.last)
            values = problem.values_for(part)
            mu = values.values if isinstance(values, PositionValues) else index.split_values(values)
            pos = torch.arange(part.tokens.shape[1], device=part.last.device)
            valid = (pos[None, :] <= part.last[:, None]).to(problem.adapter.device)  # (b, T)
            chunks = []
            for site in index.sites:
                dev = (cache[site.name].float() - mu[site.name].to(cache[site.name].device).float()).abs()
                if site.value_width:  # one node gates a vector (SAE error): its mean deviation
                    dev = dev.mean(-1, keepdim=True)
                chunks.append((dev * valid[..., None]).sum(dim=(0, 1)).double().cpu())
            total += torch.cat(chunks)
            count += int(valid.sum())
        return (total / max(count, 1)).float()


@register_method("eap")
@dataclass
class EAP(_Base):
    """Attribution patching: |dm/dg| at g = 1, one backward pass per batch."""

    name = "eap"

    def cost(self, n_examples: int, n_nodes: int) -> dict[str, int]:
        """One forward and one backward pass over the examples."""
        n = self._batches(n_examples)
        return {"forward": n, "backward": n}

    def node_scores(self, problem: Problem) -> Tensor:
        """|attribution| per node."""
        self.signed_scores = gate_gradient(problem, _examples(problem, self.max_examples), 1.0, self.batch).cpu()
        return self.signed_scores.abs()


@register_method("eap_ig")
@dataclass
class EAPIG(_Base):
    """EAP with integrated gradients along the gates from ablated (0) to clean (1)."""

    steps: Annotated[int, Field(gt=0)] = 5
    """Points on the path (MIB: 5)."""
    name = "eap_ig"

    def cost(self, n_examples: int, n_nodes: int) -> dict[str, int]:
        """`steps` forward and backward passes over the examples."""
        n = self.steps * self._batches(n_examples)
        return {"forward": n, "backward": n}

    def node_scores(self, problem: Problem) -> Tensor:
        """|integrated gradient| per node."""
        rows = _examples(problem, self.max_examples)
        total = cast(Tensor, sum(gate_gradient(problem, rows, k / self.steps, self.batch)
                                 for k in range(1, self.steps + 1)))
        self.signed_scores = (total / self.steps).cpu()
        return self.signed_scores.abs()


@register_method("activation_patching")
@dataclass
class ActivationPatching(_Base):
    """Exact effect on the metric of ablating each node alone (one forward pass per node)."""

    max_examples: Annotated[int, Field(ge=2)] | None = 64
    nodes_per_pass: Annotated[int, Field(gt=0)] = 16
    """Nodes ablated side by side in one pass (the examples repeated once per node)."""
    name = "activation_patching"

    def cost(self, n_examples: int, n_nodes: int) -> dict[str, int]:
        """One forward pass over the examples per node, plus one for the model."""
        return {"forward": (n_nodes + 1) * self._batches(n_examples), "backward": 0}

    max_passes: Annotated[int, Field(gt=0)] = 20_000
    """Refuse (with the cost) a run that would take more forward passes than this (edges are many)."""

    @torch.no_grad()
    def node_scores(self, problem: Problem) -> Tensor:
        """|m(model) - m(model without node i)| per node (per edge at the edge level)."""
        rows = _examples(problem, self.max_examples)
        if problem.level == "edges":
            return self._edge_scores(problem, rows)
        index, device = problem.index, rows.last.device
        n = index.size
        ones = torch.ones(n, device=device)
        base = sum(float(_logit_diff(problem, part, ones)) for part in rows.chunks(whole_pairs(self.batch))) / len(rows)
        out = torch.zeros(n)
        c = self.nodes_per_pass
        for part in rows.chunks(whole_pairs(self.batch // c)):
            b = len(part)
            values = problem.values_for(part)
            for start in range(0, n, c):
                nodes = torch.arange(start, min(start + c, n), device=device)
                gates = torch.ones(len(nodes), n, device=device)
                gates[torch.arange(len(nodes), device=device), nodes] = 0.0
                rep = Batch(part.tokens.repeat(len(nodes), 1), part.last.repeat(len(nodes)),
                            part.correct.repeat(len(nodes)), part.incorrect.repeat(len(nodes)))
                hook = stacked_gate_hook(problem.index, problem.gate(gates), values)  # block i ablates nodes[i]
                logits = forward_at(problem.adapter, rep.tokens, hook, rep.last)
                two = answer_logits(logits, rep)
                diff = (two[:, 0] - two[:, 1]).view(len(nodes), b).sum(1)
                out[start : start + len(nodes)] += diff.cpu()
        self.signed_scores = base - out / len(rows)
        return self.signed_scores.abs()

    def _edge_scores(self, problem: Problem, rows: Batch) -> Tensor:
        """One pass per edge and batch, each with that edge alone pruned."""
        parts = list(rows.chunks(whole_pairs(self.batch)))
        passes = (problem.size + 1) * len(parts)
        if passes > self.max_passes:
            raise CircuitbenchError(
                f"--method activation_patching at --level edges: {problem.size} edges x {len(parts)} batches = "
                f"{passes} forward passes, over max_passes {self.max_passes}; use eap or eap_ig (one backward "
                "pass per batch), or raise the bound with --method-arg max_passes=N")
        ones = torch.ones(problem.size, device=rows.last.device)
        base = sum(float(_logit_diff(problem, part, ones)) for part in parts) / len(rows)
        out = torch.zeros(problem.size)
        for e in range(problem.size):
            ones[e] = 0.0
            out[e] = sum(float(_logit_diff(problem, part, ones)) for part in parts) / len(rows)
            ones[e] = 1.0
        self.signed_scores = base - out
        return self.signed_scores.abs()

