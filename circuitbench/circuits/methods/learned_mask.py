"""Learned-mask pruning (Gao et al. 2025, App.): one threshold per node, hard gates, surrogate gradients."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import Tensor
from tqdm.auto import tqdm

from circuitbench.circuits.masks import gate_hook
from circuitbench.circuits.methods import register_method
from circuitbench.circuits.metrics import answer_logits, task_loss
from circuitbench.circuits.problem import Problem

log = logging.getLogger(__name__)


def hard_gate(tau: Tensor, temperature: float) -> Tensor:
    """Heaviside(tau) forward; d/dtau of sigmoid(tau / T), i.e. sigma'(tau/T)/T, backward."""
    soft = torch.sigmoid(tau / temperature)
    return (tau > 0).float() + soft - soft.detach()


@register_method("learned_mask")
@dataclass
class LearnedMask:
    """Train a gate threshold per node on task loss + k_coef * active nodes; rank nodes by threshold."""

    steps: Annotated[int, Field(gt=0)] = 400
    """Optimizer steps (the paper uses up to a few thousand; small models converge sooner)."""
    k_coef: float = 1e-4
    """Penalty per active node (App.: k_coef ~ 1e-4)."""
    lr: float = 3e-3
    """AdamW learning rate (App.), decayed linearly to zero."""
    weight_decay: float = 1e-3
    """AdamW weight decay (App.)."""
    batch_pairs: Annotated[int, Field(gt=0)] = 64
    """Pairs per step (App.: 64); both members of each pair are in the batch."""
    temperature: Annotated[float, Field(gt=0)] = 0.1
    """Surrogate-gradient temperature T; not given in the paper, chosen for taus in [-1, 1]."""
    init_mean: float = 0.1
    """Initial tau mean (App.: N(0.1, 0.01), all nodes on)."""
    init_std: float = 0.01
    """Initial tau standard deviation."""
    patience: Annotated[int, Field(gt=0)] | None = None
    """Stop early once the set of active nodes has stayed the same for this many steps (None: always run
    `steps`). The steps run are recorded (`method_steps_run`)."""

    name = "learned_mask"

    def hyperparameters(self) -> dict[str, Any]:
        """The dataclass fields."""
        return asdict(self)

    def node_scores(self, problem: Problem) -> Tensor:
        """Train the thresholds; return them as node scores (higher = kept longer)."""
        device = problem.train.tokens.device
        gen = torch.Generator(device="cpu").manual_seed(problem.seed)
        n = problem.index.size
        tau = (self.init_mean + self.init_std * torch.randn(n, generator=gen)).to(device).requires_grad_()
        # App.: AdamW betas (0.9, 0.95), weight decay 1e-3, linear decay, gradient RMS clipped to 1.
        opt = torch.optim.AdamW([tau], lr=self.lr, betas=(0.9, 0.95), weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / self.steps)
        ablation = problem.ablation.to(device)
        n_pairs = len(problem.train) // 2
        bar = tqdm(range(self.steps), desc="learned_mask", leave=False, disable=not problem.show_progress)
        active = tau > 0
        unchanged = 0
        self._steps_run = 0
        for _ in bar:
            pairs = torch.randperm(n_pairs, generator=gen)[: self.batch_pairs]
            rows = problem.train.take(torch.stack([2 * pairs, 2 * pairs + 1], 1).flatten().to(device))
            gates = hard_gate(tau, self.temperature)
            logits = problem.adapter.forward(rows.tokens, gate_hook(problem.index, gates, ablation), at=rows.last)
            ce = task_loss(answer_logits(logits, rows)).mean()
            loss = ce + self.k_coef * gates.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                assert tau.grad is not None
                rms = tau.grad.pow(2).mean().sqrt()
                if rms > 1.0:
                    tau.grad.div_(rms)
            opt.step()
            sched.step()
            with torch.no_grad():
                tau.clamp_(-1.0, 1.0)
                now = tau > 0
                unchanged = unchanged + 1 if torch.equal(now, active) else 0
                active = now
            self._steps_run += 1
            bar.set_postfix(ce=f"{ce.item():.3f}", active=int(now.sum()))
            if self.patience is not None and unchanged >= self.patience:
                log.info("learned_mask: active set unchanged for %d steps; stopped at step %d of %d",
                         unchanged, self._steps_run, self.steps)
                break
        return tau.detach()

    def cost(self, n_examples: int, n_nodes: int) -> dict[str, int]:
        """One forward and one backward pass of `batch_pairs` pairs per step."""
        return {"forward": self.steps, "backward": self.steps}

    def diagnostics(self) -> dict[str, float]:
        """What the last `node_scores` call did: the steps it ran."""
        return {"steps_run": float(getattr(self, "_steps_run", 0))}
