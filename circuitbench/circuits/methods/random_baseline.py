"""Random node ranking: the baseline any method should beat by a wide margin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from circuitbench.circuits.methods import register_method
from circuitbench.circuits.problem import Problem


@register_method("random")
@dataclass
class RandomRanking:
    """Scores nodes uniformly at random (seeded); the search then keeps the top-k."""

    name = "random"

    def hyperparameters(self) -> dict[str, Any]:
        """No hyperparameters."""
        return {}

    def cost(self, n_examples: int, n_nodes: int) -> dict[str, int]:
        """No passes at all."""
        return {"forward": 0, "backward": 0}

    def node_scores(self, problem: Problem) -> Tensor:
        """Uniform random scores (one per edge at the edge level)."""
        gen = torch.Generator().manual_seed(problem.seed)
        return torch.rand(problem.size, generator=gen)
