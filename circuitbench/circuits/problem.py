"""A pruning problem: one model, one task's encoded examples, the node layout and ablation values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from circuitbench.circuits.edge_level import EdgeIndex, edge_circuit_of, edge_logits
from circuitbench.circuits.masks import AblationValues, NodeIndex, circuit_of, gate_hook
from circuitbench.circuits.metrics import Scores, answer_logits, kl_from, score, task_loss
from circuitbench.protocols import Batch, Hook, ModelAdapter, forward_at
from circuitbench.results.circuit import Circuit


def whole_pairs(rows: int) -> int:
    """A batch size that splits pair-major rows into whole pairs: `rows` rounded down to even, at least 2."""
    return max(2, rows - rows % 2)


@dataclass(frozen=True, slots=True)
class Problem:
    """Everything a method needs to score nodes for one task."""

    adapter: ModelAdapter
    index: NodeIndex
    ablation_values: Tensor
    """[value_size] float32 values taken by pruned nodes (with counterfactual ablation: by the positions that
    have no counterpart in the pair partner)."""
    train: Batch
    seed: int
    show_progress: bool = True
    eval_batch: int = 256
    counterfactual: bool = False
    """Pruned nodes take the pair partner's activations (`circuitbench.circuits.ablation.partner_values`)."""
    allowed: Tensor | None = None
    """[size] 0/1: the nodes (edges) a circuit may keep; the others stay ablated whatever their gate
    (`circuitbench circuit backup`: pruning again without a circuit's nodes). None: all of them."""

    def gate(self, gates: Tensor) -> Tensor:
        """The gates as applied: multiplied by `allowed` (the last dimension is the node's)."""
        return gates if self.allowed is None else gates * self.allowed.to(gates.device, gates.dtype)

    def values_for(self, rows: Batch) -> AblationValues:
        """What pruned nodes take on these rows.

        The flat `ablation_values`, or, with counterfactual ablation, each row's partner's activations (rows must
        then be whole pairs).
        """
        if not self.counterfactual:
            return self.ablation_values
        from circuitbench.circuits.ablation import partner_values

        return partner_values(self.adapter, self.index, rows, self.ablation_values)

    def hook(self, rows: Batch, gates: Tensor) -> Hook:
        """The gate hook for a forward pass over `rows`."""
        return gate_hook(self.index, self.gate(gates), self.values_for(rows))

    level = "nodes"
    """What the gates gate: `nodes` here, `edges` in `EdgeProblem`."""

    @property
    def size(self) -> int:
        """Length of a gate vector: the nodes."""
        return self.index.size

    def logits_at(self, rows: Batch, gates: Tensor | None) -> Tensor:
        """[N, V] logits at the answer positions with the given gates (None: the full model)."""
        hook = None if gates is None else self.hook(rows, gates)
        return forward_at(self.adapter, rows.tokens, hook, rows.last)

    def circuit_sizes(self, gates: Tensor) -> dict[str, int]:
        """Kept nodes (in all and per kind) and the edges between them."""
        from circuitbench.circuits.edges import count_edges
        from circuitbench.circuits.metrics import count_nodes

        return {**count_nodes(self.index, gates), **count_edges(self.adapter, self.index, gates)}

    def circuit(self, scores: Tensor, k: int, values: Tensor, **meta: Any) -> Circuit:
        """The circuit of a ranking cut at k, as saved (`meta`: `Circuit`'s other fields)."""
        return circuit_of(self.index, scores, k, values, **meta)

    def _answers(self, rows: Batch, gates: Tensor | None, reference: Tensor | None = None,
                 logprobs: bool = False) -> tuple[Tensor, Tensor | None]:
        """[N, 2] candidate logits, and per-row KL from `reference` or the [N, V] log-probabilities.

        `reference` is [N, V] log-probabilities; with `logprobs` the rows' own are returned instead. Runs in
        eval batches of whole pairs.
        """
        twos, extra = [], []
        step = whole_pairs(self.eval_batch)
        with torch.no_grad():
            for i, part in enumerate(rows.chunks(step)):
                logits = self.logits_at(part, gates)
                twos.append(answer_logits(logits, part))
                if logprobs:
                    extra.append(torch.log_softmax(logits.float(), dim=-1))
                elif reference is not None:
                    extra.append(kl_from(reference[i * step : i * step + len(part)], logits))
        return torch.cat(twos), torch.cat(extra) if extra else None

    def two_logits(self, rows: Batch, gates: Tensor | None) -> Tensor:
        """[N, 2] candidate logits with the given gates (None: the full model), in eval batches."""
        return self._answers(rows, gates)[0]

    def answer_logprobs(self, rows: Batch, gates: Tensor | None = None) -> Tensor:
        """[N, V] log-probabilities of the next token at the answer position (the reference of KL)."""
        lp = self._answers(rows, gates, logprobs=True)[1]
        assert lp is not None
        return lp

    def scores(self, rows: Batch, gates: Tensor | None, reference: Tensor | None = None) -> Scores:
        """Loss, accuracy and logit difference with the given gates.

        With `reference` (the full model's `answer_logprobs` on these rows), the KL from it too.
        """
        two, kl = self._answers(rows, gates, reference)
        return score(two, kl)


@dataclass(frozen=True, slots=True)
class EdgeProblem(Problem):
    """A pruning problem over the model's edges (`circuitbench.circuits.edge_level`).

    Gates are one per edge of `edges`; `ablation_values` follow `edges.values` (the node sites, then each
    attention's head-mixed values).
    """

    edges: EdgeIndex | None = None

    level = "edges"

    @property
    def graph(self) -> EdgeIndex:
        """The edge graph (always set)."""
        assert self.edges is not None
        return self.edges

    @property
    def size(self) -> int:
        """Length of a gate vector: the edges."""
        return self.graph.size

    def values_for(self, rows: Batch) -> AblationValues:
        """The flat values, or with counterfactual ablation each row's partner's activations over `edges.values`."""
        if not self.counterfactual:
            return self.ablation_values
        from circuitbench.circuits.ablation import partner_values

        return partner_values(self.adapter, self.graph.values, rows, self.ablation_values)

    def hook(self, rows: Batch, gates: Tensor) -> Hook:
        """Edge gates act through the model's modules, not one hook: use `logits_at`."""
        raise TypeError("an edge-level problem has no node gate hook; use logits_at")

    def logits_at(self, rows: Batch, gates: Tensor | None) -> Tensor:
        """[N, V] logits at the answer positions with the given edge gates (None: the full model)."""
        if gates is None:
            return forward_at(self.adapter, rows.tokens, None, rows.last)
        return edge_logits(self.adapter, self.graph, self.gate(gates), self.values_for(rows), rows)

    def circuit_sizes(self, gates: Tensor) -> dict[str, int]:
        """Kept edges (in all, weighted, residual) and the nodes they touch."""
        return self.graph.sizes(gates)

    def circuit(self, scores: Tensor, k: int, values: Tensor, **meta: Any) -> Circuit:
        """The edge-level circuit of a ranking cut at k, as saved."""
        return edge_circuit_of(self.graph, scores, k, values, **meta)


def make_problem(adapter: ModelAdapter, train: Batch, seed: int, level: str = "nodes", values: Tensor | None = None,
                 counterfactual: bool = False, show_progress: bool = False, eval_batch: int = 256) -> Problem:
    """The problem of a unit at its level; `values` None: zeros of the right layout (set once computed)."""
    index = NodeIndex.of(adapter)
    edges = EdgeIndex.of(adapter) if level == "edges" else None
    size = index.value_size if edges is None else edges.values.value_size
    values = torch.zeros(size, device=adapter.device) if values is None else values.to(adapter.device)
    if edges is None:
        return Problem(adapter, index, values, train, seed, show_progress, eval_batch, counterfactual)
    return EdgeProblem(adapter, index, values, train, seed, show_progress, eval_batch, counterfactual, edges=edges)


@dataclass(frozen=True, slots=True)
class Calibration:
    """A scale and shift of the final logits, fitted to one circuit (Gao et al. 2025, App.: optional).

    logits'[t] = scale * logits[t] + shift[t] for the task's candidate tokens t. The scale is kept positive
    (a negative one would let calibration alone flip every answer, "solving" the inverted control), and a
    shift per candidate token can't favour the correct answer of both members of a pair, since each
    candidate is correct in one member and wrong in the other.
    """

    scale: float
    shift: dict[int, float]

    def apply(self, two: Tensor, rows: Batch) -> Tensor:
        """Calibrated [N, 2] candidate logits."""
        b = torch.zeros(max(max(self.shift, default=0), int(rows.correct.max()), int(rows.incorrect.max())) + 1,
                        device=two.device)
        for tok, v in self.shift.items():
            b[tok] = v
        return self.scale * two + torch.stack([b[rows.correct.to(two.device)], b[rows.incorrect.to(two.device)]], 1)


def fit_calibration(two: Tensor, rows: Batch, steps: int = 16) -> Calibration:
    """Fit scale and per-candidate shift to minimise the mean task loss of [N, 2] logits by LBFGS."""
    tokens = torch.unique(torch.cat([rows.correct, rows.incorrect])).tolist()
    col = {t: i for i, t in enumerate(tokens)}
    ci = torch.tensor([col[int(t)] for t in rows.correct.tolist()], device=two.device)
    ii = torch.tensor([col[int(t)] for t in rows.incorrect.tolist()], device=two.device)
    two = two.detach().float()
    log_scale = torch.zeros((), device=two.device, requires_grad=True)
    shift = torch.zeros(len(tokens), device=two.device, requires_grad=True)
    opt = torch.optim.LBFGS([log_scale, shift], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        cal = log_scale.exp() * two + torch.stack([shift[ci], shift[ii]], 1)
        loss = task_loss(cal).mean()
        loss.backward()
        return loss

    opt.step(closure)
    s = float(log_scale.detach().exp())
    if not torch.isfinite(torch.tensor(s)) or not torch.isfinite(shift).all():
        return Calibration(1.0, {t: 0.0 for t in tokens})
    return Calibration(s, {t: float(v) for t, v in zip(tokens, shift.detach().tolist(), strict=True)})


def search_subset(train: Batch, n_examples: int, seed: int) -> Batch:
    """The seeded subset of whole train pairs the bisection evaluates."""
    gen = torch.Generator().manual_seed(seed)
    n_pairs = min(len(train) // 2, n_examples // 2)
    return train.pairs(torch.randperm(len(train) // 2, generator=gen)[:n_pairs])


def circuit_scorer(
    problem: Problem, rows: Batch, calibrate: bool
) -> Callable[[Tensor], tuple[Scores, Calibration | None]]:
    """Scores of a gate vector on `rows`, after fitting a calibration to them when asked."""

    def at(gates: Tensor) -> tuple[Scores, Calibration | None]:
        two = problem.two_logits(rows, gates)
        if not calibrate:
            return score(two), None
        cal = fit_calibration(two, rows)
        return score(cal.apply(two, rows)), cal

    return at


def measure_circuit(problem: Problem, rows: Batch, gates: Tensor, calibration: Calibration | None,
                    empty: Scores | None = None) -> tuple[Scores, Scores, Scores]:
    """Sufficiency (only the circuit kept, calibrated when it was), necessity (only it ablated), empty circuit.

    `empty`, when the caller has it already for these rows, is returned instead of being measured again.
    """
    two = problem.two_logits(rows, gates)
    suff = score(two if calibration is None else calibration.apply(two, rows))
    nec = problem.scores(rows, 1.0 - gates)
    if empty is None:
        empty = problem.scores(rows, torch.zeros_like(gates))
    return suff, nec, empty
