"""A pruning problem: one model, one task's encoded examples, the node layout and ablation values."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from circuitbench.circuits.masks import NodeIndex, gate_hook
from circuitbench.circuits.metrics import Scores, answer_logits, score, task_loss
from circuitbench.protocols import Batch, ModelAdapter, forward_at


@dataclass(frozen=True, slots=True)
class Problem:
    """Everything a method needs to score nodes for one task."""

    adapter: ModelAdapter
    index: NodeIndex
    ablation: Tensor
    """[n_nodes] float32 values taken by pruned nodes."""
    train: Batch
    seed: int
    show_progress: bool = True
    eval_batch: int = 256

    def two_logits(self, rows: Batch, gates: Tensor | None) -> Tensor:
        """[N, 2] candidate logits with the given gates (None: the full model), in eval batches."""
        hook = None if gates is None else gate_hook(self.index, gates, self.ablation)
        out = []
        with torch.no_grad():
            for part in rows.chunks(self.eval_batch):
                out.append(answer_logits(forward_at(self.adapter, part.tokens, hook, part.last), part))
        return torch.cat(out)

    def scores(self, rows: Batch, gates: Tensor | None) -> Scores:
        """Loss, accuracy and logit difference with the given gates."""
        return score(self.two_logits(rows, gates))


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
