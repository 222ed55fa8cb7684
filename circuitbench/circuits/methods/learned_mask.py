"""Learned-mask pruning (Gao et al. 2025, App.): one threshold per node, hard gates, surrogate gradients.

The defaults are the paper's recipe (AdamW at lr 3e-3 with betas (0.9, 0.95), weight decay 1e-3, linear
decay, gradient RMS clipped to 1, thresholds from N(0.1, 0.01) clamped to [-1, 1], k_coef 1e-4) except
where stated: 400 steps (the paper: "a few thousand at most"), 32 pairs per step (the paper: 64), and
bfloat16 matrix products where the hardware has them. Three changes cost no accuracy at all: each batch is
run as sub-batches of similar prompt length (the same loss, less padding), the model's last block runs
only at the answer position (`forward_at`), and the host reads the loop's state only every CHECK_EVERY
steps. The exact previous path is `--precision float32 --batch-pairs 64 --method-arg length_groups=1`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import Tensor
from tqdm.auto import tqdm

from circuitbench.circuits.masks import stacked_gate_hook
from circuitbench.circuits.methods import register_method
from circuitbench.circuits.metrics import task_loss
from circuitbench.circuits.problem import Problem
from circuitbench.hardware import autocast, resolve_precision
from circuitbench.protocols import Batch, forward_at

log = logging.getLogger(__name__)

CHECK_EVERY = 8
"""Steps between the host's looks at the loop (progress bar, stopping rule): the rule is checked at
multiples of it."""


def hard_gate(tau: Tensor, temperature: float) -> Tensor:
    """Heaviside(tau) forward; d/dtau of sigmoid(tau / T), i.e. sigma'(tau/T)/T, backward."""
    soft = torch.sigmoid(tau / temperature)
    return (tau > 0).float() + soft - soft.detach()


@register_method("learned_mask")
@dataclass
class LearnedMask:
    """Train a gate threshold per node on task loss + k_coef * active nodes; rank nodes by threshold.

    At `--level edges` a threshold per edge, on task loss + k_coef * active edges: Edge Pruning's objective
    with the paper's Heaviside gate and sigmoid surrogate.
    """

    steps: Annotated[int, Field(gt=0)] = 400
    """Optimizer steps (the paper uses up to a few thousand; small models converge sooner)."""
    k_coef: float = 1e-4
    """Penalty per active node (App.: k_coef ~ 1e-4)."""
    lr: float = 3e-3
    """AdamW learning rate (App.), decayed linearly to zero."""
    weight_decay: float = 1e-3
    """AdamW weight decay (App.)."""
    batch_pairs: Annotated[int, Field(gt=0)] = 32
    """Pairs per step; both members of each pair are in the batch. The paper uses 64; 32 halves the
    default run's time with circuits within a few percent of 64's on the reference model (BENCHMARKS.md,
    `benchmarks/bench_run.py`); `--batch-pairs 64` restores the paper's."""
    temperature: Annotated[float, Field(gt=0)] = 0.1
    """Surrogate-gradient temperature T; not given in the paper, chosen for taus in [-1, 1]."""
    init_mean: float = 0.1
    """Initial tau mean (App.: N(0.1, 0.01), all nodes on)."""
    init_std: float = 0.01
    """Initial tau standard deviation."""
    init: Literal["constant", "eap"] = "constant"
    """Initial thresholds: `constant`, N(init_mean, init_std) for every node (the paper's: all nodes on); or
    `eap`, warm-started from an attribution ranking (|EAP| over `warm_examples` train examples, one gradient
    pass): the top `warm_keep` nodes start at N(init_mean, init_std), the others at N(-init_mean, init_std),
    off but within the surrogate gradient's reach."""
    warm_keep: Annotated[int, Field(gt=0)] = 256
    """With `init eap`: the nodes (edges) that start on."""
    warm_examples: Annotated[int, Field(ge=2)] = 256
    """With `init eap`: the train examples (whole pairs, seeded) the ranking is measured on."""
    patience: Annotated[int, Field(gt=0)] | None = None
    """Stop early once the set of active nodes has stayed the same for this many steps (None: always run
    `steps`), checked every `CHECK_EVERY` steps. The steps run are recorded (`method_steps_run`)."""

    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Matrix products of the frozen model's forward and backward: `bfloat16` autocast (gates, thresholds,
    optimizer and loss stay float32), `float32`, or `auto`: bfloat16 where the hardware multiplies it
    natively (AMX CPUs, CUDA). A run resolves `auto` before recording the unit. Evaluation is float32."""
    length_groups: Annotated[int, Field(gt=0)] = 2
    """Each step's batch is run as this many sub-batches of similar prompt length, each padded only to
    its own longest prompt. The loss and gradient are those of the whole batch (a sum of the parts), so
    this changes no number beyond float rounding, only how much padding is computed."""

    name = "learned_mask"

    def __post_init__(self) -> None:
        self.native_ks: list[int] = []
        """After a call: each problem's active nodes (tau > 0), the size the masks chose themselves."""
        self.native_k: int = 0
        """After a call: the first problem's active nodes."""
        self.trace: list[tuple[float, int]] = []
        """After a call: (task loss, active nodes) at every step."""
        self._steps_run = 0

    def hyperparameters(self) -> dict[str, Any]:
        """The dataclass fields."""
        return asdict(self)

    def node_scores(self, problem: Problem) -> Tensor:
        """Train the thresholds; return them as node scores (higher = kept longer)."""
        return self.joint_scores([problem])[0]

    def joint_scores(self, problems: list[Problem]) -> list[Tensor]:
        """Masks for problems that differ only in their labels (a task and its inverted-label control).

        Each problem gets its own thresholds, optimizer state and gradient clipping, exactly as if trained
        alone (same seed: the same initial thresholds and the same pairs at every step), but every step
        runs all of them in one batch: the prompts are stacked once per problem, each block gated by its
        own thresholds. That is the separate runs' arithmetic (up to float rounding), in fewer, larger
        passes. With `patience`, training stops once every problem's active set has settled.
        """
        first = problems[0]
        for p in problems[1:]:
            shared = p.train.tokens is first.train.tokens and p.ablation_values is first.ablation_values
            if not shared or p.seed != first.seed:
                raise ValueError("joint_scores: problems must share prompts, seed and ablation values")
        device = first.train.tokens.device
        n_problems = len(problems)
        gen = torch.Generator(device="cpu").manual_seed(first.seed)
        tau = self._initial(first, gen).repeat(n_problems, 1).to(device).requires_grad_()  # (P, n): a row each
        # App.: AdamW betas (0.9, 0.95), weight decay 1e-3, linear decay, gradient RMS clipped to 1. AdamW is
        # element-wise, so one optimizer over the P rows is P independent ones.
        opt = torch.optim.AdamW([tau], lr=self.lr, betas=(0.9, 0.95), weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / self.steps)
        ablation = first.ablation_values.to(device)
        n_pairs = len(first.train) // 2
        bar = tqdm(range(self.steps), desc="learned_mask", leave=False, disable=not first.show_progress)
        active = tau > 0
        unchanged = torch.zeros(n_problems, dtype=torch.long, device=device)
        precision = resolve_precision(self.precision, device)
        trace: list[Tensor] = []
        self._steps_run = 0
        last = first.train.last.cpu()  # lengths on the host: slicing a batch to its longest prompt needs no sync
        labels = [(p.train.correct, p.train.incorrect) for p in problems]
        for step in bar:
            pairs = torch.randperm(n_pairs, generator=gen)[: self.batch_pairs]
            rows = torch.stack([2 * pairs, 2 * pairs + 1], 1).flatten()
            gates = hard_gate(tau, self.temperature)  # (P, n)
            ce = self._task_losses(problems, gates, ablation, rows, last, labels, precision)
            loss = ce.sum() + self.k_coef * gates.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                assert tau.grad is not None
                # RMS clipped to 1 per problem, with no host sync
                tau.grad.div_(tau.grad.pow(2).mean(1, keepdim=True).sqrt().clamp(min=1.0))
            opt.step()
            sched.step()
            with torch.no_grad():
                tau.clamp_(-1.0, 1.0)
                now = tau > 0
                unchanged = (unchanged + 1) * (now == active).all(1)
                active = now
                trace.append(torch.stack([ce[0].detach().float(), now[0].sum().float()]))
            self._steps_run = step + 1
            # The host looks at the loop every CHECK_EVERY steps only (the progress bar, the stopping
            # rule), so on a GPU the steps in between queue without a synchronisation.
            if self._steps_run % CHECK_EVERY == 0 or self._steps_run == self.steps:
                ce_now, active_now = trace[-1].tolist()
                bar.set_postfix(ce=f"{ce_now:.3f}", active=int(active_now))
                if self.patience is not None and int(unchanged.min()) >= self.patience:
                    log.info("learned_mask: active set unchanged for %d steps; stopped at step %d of %d",
                             int(unchanged.min()), self._steps_run, self.steps)
                    break
        self.trace = [(float(c), int(a)) for c, a in torch.stack(trace).tolist()] if trace else []
        self.native_ks = [int(k) for k in (tau > 0).sum(1).tolist()]
        self.native_k = self.native_ks[0]
        return list(tau.detach().unbind(0))

    def _initial(self, problem: Problem, gen: torch.Generator) -> Tensor:
        """[n] initial thresholds (one per node, or per edge at the edge level: Edge Pruning's objective)."""
        init = self.init_mean + self.init_std * torch.randn(problem.size, generator=gen)
        if self.init == "eap":
            init = init - 2 * self.init_mean * ~self._warm_on(problem)
        return init

    def _warm_on(self, problem: Problem) -> Tensor:
        """[n] bool: the top `warm_keep` nodes by |EAP| on the train examples.

        The same for an inverted-label control: swapping the labels flips the logit difference's sign, not
        its magnitude.
        """
        from circuitbench.circuits.methods.attribution import gate_gradient
        from circuitbench.circuits.problem import search_subset

        rows = problem.train if len(problem.train) <= self.warm_examples else search_subset(
            problem.train, self.warm_examples, problem.seed)
        scores = gate_gradient(problem, rows, 1.0, 64).abs().cpu()
        on = torch.zeros(problem.size, dtype=torch.bool)
        on[scores.topk(min(self.warm_keep, problem.size)).indices] = True
        return on

    def _task_losses(self, problems: list[Problem], gates: Tensor, ablation: Tensor, rows: Tensor, last: Tensor,
                     labels: list[tuple[Tensor, Tensor]], precision: str) -> Tensor:
        """[P] each problem's mean task loss on `rows` under its gates: one stacked pass per length group."""
        first, n_problems = problems[0], len(problems)
        train, device = first.train, first.train.tokens.device
        if first.level == "edges":
            return self._edge_losses(problems, gates, rows, last, labels, precision)
        gates = first.gate(gates)  # nodes a backup circuit may not keep stay ablated
        hook = None if first.counterfactual else stacked_gate_hook(first.index, gates, ablation)
        ce = gates.new_zeros(n_problems)
        for idx, width in length_groups(last, rows, self.length_groups, device, keep_pairs=first.counterfactual):
            tokens = train.tokens[idx, :width].repeat(n_problems, 1)  # (P * b, width): block i is problem i
            at = train.last[idx].repeat(n_problems)
            with autocast(precision, device):
                if first.counterfactual:  # each group's pair partners' activations, shared by the blocks
                    part = Batch(train.tokens[idx, :width], train.last[idx], train.correct[idx],
                                 train.incorrect[idx])
                    hook = stacked_gate_hook(first.index, gates, first.values_for(part))
                logits = forward_at(first.adapter, tokens, hook, at)
            pair = torch.cat([torch.stack([c[idx], w[idx]], 1) for c, w in labels])  # (P * b, 2)
            two = logits.gather(1, pair).float()
            ce = ce + task_loss(two).view(n_problems, -1).sum(1)
        return ce / len(rows)

    def _edge_losses(self, problems: list[Problem], gates: Tensor, rows: Tensor, last: Tensor,
                     labels: list[tuple[Tensor, Tensor]], precision: str) -> Tensor:
        """`_task_losses` over edge gates: one pass per problem and length group.

        The edge gates act on the model's weights, so problems are not stacked in one pass.
        """
        first = problems[0]
        train, device = first.train, first.train.tokens.device
        ce = []
        for i, p in enumerate(problems):
            total = gates.new_zeros(())
            for idx, width in length_groups(last, rows, self.length_groups, device, keep_pairs=first.counterfactual):
                part = Batch(train.tokens[idx, :width], train.last[idx], labels[i][0][idx], labels[i][1][idx])
                with autocast(precision, device):
                    logits = p.logits_at(part, gates[i])
                two = logits.gather(1, torch.stack([part.correct, part.incorrect], 1)).float()
                total = total + task_loss(two).sum()
            ce.append(total)
        return torch.stack(ce) / len(rows)

    def cost(self, n_examples: int, n_nodes: int) -> dict[str, int]:
        """One forward and one backward pass of `batch_pairs` pairs per step."""
        return {"forward": self.steps, "backward": self.steps}

    def diagnostics(self) -> dict[str, float]:
        """What the last call did: the steps it ran, each mask's active nodes (the control's second)."""
        out = {"steps_run": float(self._steps_run), "active_nodes": float(self.native_k)}
        if len(self.native_ks) == 2:
            out["control_active_nodes"] = float(self.native_ks[1])
        return out


def length_groups(last: Tensor, rows: Tensor, n: int, device: torch.device | str,
                  keep_pairs: bool = False) -> list[tuple[Tensor, int]]:
    """Rows `rows` as at most `n` sub-batches of consecutive prompt lengths: (row indices on `device`, width).

    Each sub-batch is to be padded only to its own longest prompt (`width` tokens). `last` is the batch's
    last prompt positions on the host, so nothing here waits for the device. With `keep_pairs` (rows come
    as pairs, 2j and 2j + 1), pairs are sorted by their longer member and never split.
    """
    units = rows.view(-1, 2) if keep_pairs else rows[:, None]  # what is never split: a pair, or a row
    key = last[units].max(1).values
    order = units[torch.argsort(key, stable=True)] if n > 1 else units
    return [(part.flatten().to(device, non_blocking=True), int(last[part].max()) + 1)
            for part in order.chunk(n) if len(part)]
