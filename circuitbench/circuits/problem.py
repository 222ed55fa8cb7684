"""A pruning problem: one model, one task's encoded examples, the node layout and ablation values."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from circuitbench.circuits.masks import NodeIndex, gate_hook
from circuitbench.circuits.metrics import Scores, answer_logits, score
from circuitbench.models.adapter import ModelAdapter


@dataclass(frozen=True, slots=True)
class Rows:
    """A batch of encoded examples: tokens [N, T] right-padded, and per-row last/correct/incorrect."""

    tokens: Tensor
    last: Tensor
    correct: Tensor
    incorrect: Tensor

    @classmethod
    def of(cls, encoded: object, device: torch.device) -> Rows:
        """Copy the tensors of an EncodedTask (or any object with these fields) onto a device."""
        last = encoded.last  # type: ignore[attr-defined]
        width = int(last.max()) + 1  # nothing after the last prompt token can affect it (causal)
        return cls(encoded.tokens[:, :width].to(device), last.to(device),  # type: ignore[attr-defined]
                   encoded.correct.to(device), encoded.incorrect.to(device))  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def take(self, idx: Tensor) -> Rows:
        """The rows at idx, trimmed to their longest prompt."""
        last = self.last[idx]
        width = int(last.max()) + 1
        return Rows(self.tokens[idx, :width], last, self.correct[idx], self.incorrect[idx])

    def swapped(self) -> Rows:
        """The inverted-label control: the same prompts with the two answers exchanged."""
        return Rows(self.tokens, self.last, self.incorrect, self.correct)


@dataclass(frozen=True, slots=True)
class Problem:
    """Everything a method needs to score nodes for one task."""

    adapter: ModelAdapter
    index: NodeIndex
    ablation: Tensor
    """[n_nodes] float32 values taken by pruned nodes."""
    train: Rows
    seed: int
    show_progress: bool = True
    eval_batch: int = 256

    def two_logits(self, rows: Rows, gates: Tensor | None) -> Tensor:
        """[N, 2] candidate logits with the given gates (None: the full model), in eval batches."""
        hook = None if gates is None else gate_hook(self.index, gates, self.ablation)
        out = []
        with torch.no_grad():
            for i in range(0, len(rows), self.eval_batch):
                part = rows.take(torch.arange(i, min(i + self.eval_batch, len(rows)), device=rows.last.device))
                out.append(answer_logits(self.adapter.forward(part.tokens, hook, at=part.last), part))
        return torch.cat(out)

    def scores(self, rows: Rows, gates: Tensor | None) -> Scores:
        """Loss, accuracy and logit difference with the given gates."""
        return score(self.two_logits(rows, gates))
