"""The weight-sparse training recipe as pure functions: top-|w| projection, L0 schedule, lr scaling.

Gao et al. 2025 (and the later upstream `train.py`; docs/design.md, The model format and the method) train
with dense gradients and, after every optimizer step, project each weight matrix and bias back onto its L0 budget: keep
the entries of largest magnitude, zero the rest. Zeroed weights may regrow when a later step moves
them past the threshold. The budget anneals linearly from dense to the target, and the learning rate
is scaled by sqrt(L0_final / L0_current) so the per-weight step grows as the weights thin out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

MIN_PER_NEURON = 4
"""Nonzeros every neuron (output row) keeps, whatever the budget (Gao et al. 2025, App.: >= 4)."""

ANNEAL_START = 0.01
"""Fraction of training at which the L0 budget starts to fall from dense (docs/design.md, training recipe)."""

ANNEAL_END = 0.5
"""Fraction of training at which the L0 budget reaches the target (docs/design.md, training recipe)."""


def anneal_progress(step: int, total_steps: int, end: float = ANNEAL_END) -> float:
    """How far the annealing has gone after `step` of `total_steps`, from 0 to 1.

    0 until ANNEAL_START of training, then linear to 1 at `end`, 1 after. With `end` <= ANNEAL_START it
    is 1 from the first step on (a run that starts already sparse keeps its budget).
    """
    frac = step / max(total_steps, 1)
    if frac >= end or end <= ANNEAL_START:
        return 1.0
    if frac <= ANNEAL_START:
        return 0.0
    return (frac - ANNEAL_START) / (end - ANNEAL_START)


def density_at(step: int, total_steps: int, target: float, end: float = ANNEAL_END) -> float:
    """Fraction of nonzero weights allowed after `step` of `total_steps`.

    Dense (1.0) until ANNEAL_START of training, then linear in the fraction of training to `target`
    at `end` (Gao et al. 2025: ANNEAL_END), constant after.

    Args:
        step: Number of optimizer steps completed (0-based step index also works).
        total_steps: Planned length of training.
        target: Final density in (0, 1].
        end: Fraction of training at which the target is reached.

    Returns:
        The density in [target, 1].
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target density must be in (0, 1], got {target}")
    return 1.0 + anneal_progress(step, total_steps, end) * (target - 1.0)


def afrac_at(step: int, total_steps: int, target: float, end: float = ANNEAL_END) -> float:
    """AbsTopK fraction after `step` when it anneals with the L0 budget: 1 (none) down to `target`."""
    return 1.0 + anneal_progress(step, total_steps, end) * (target - 1.0)


def lr_at(step: int, total_steps: int, base_lr: float, warmup: float = 0.01, decay: float = 1.0) -> float:
    """Learning rate with linear warmup over `warmup` of training, a plateau, then linear decay to zero.

    The decay spans the last `decay` of the steps after warmup: 1 decays over all of them (Gao et al. 2025,
    App.: 1% warmup and linear decay); 0.1 holds the peak for 90% of them (warmup-stable-decay), so every
    checkpoint before the decay is a model at the peak rate that a short decay of its own can finish.
    """
    n_warm = max(1, int(warmup * total_steps))
    if step < n_warm:
        return base_lr * (step + 1) / n_warm
    start = total_steps - round(decay * (total_steps - n_warm))
    if step < start:
        return base_lr
    return base_lr * max(0.0, (total_steps - step) / max(1, total_steps - start))


def lr_scale(target: float, current: float) -> float:
    """sqrt(L0_final / L0_current): smaller steps while the weights are still dense (Gao et al. 2025)."""
    return math.sqrt(target / current)


def topk_mask(w: Tensor, k: int, min_per_row: int = MIN_PER_NEURON) -> Tensor:
    """Boolean mask of the k entries of largest |w|, with at least `min_per_row` per row kept.

    The per-row minimum is taken out of the budget, not added to it: each row's top `min_per_row`
    entries are forced in, and the rest of the k slots go to the largest remaining magnitudes. A 1-D
    tensor (a bias) is one row of neurons with no per-row minimum.

    Args:
        w: A weight matrix [out, in] (rows are neurons) or a bias [out].
        k: Number of entries to keep; clamped to [rows * min_per_row, numel].
        min_per_row: Entries each row keeps regardless of magnitude (matrices only).

    Returns:
        A bool tensor shaped like w with exactly clamp(k) True entries.
    """
    n = w.numel()
    score = w.detach().abs().float()
    if w.dim() == 2 and min_per_row > 0:
        m = min(min_per_row, w.shape[1])
        k = max(k, w.shape[0] * m)
        forced = score.topk(m, dim=1, sorted=False).indices  # (out, m)
        score = score.scatter(1, forced, float("inf"))
    k = min(max(k, 1), n)
    mask = torch.zeros(n, dtype=torch.bool, device=w.device)
    if k == n:
        return mask.fill_(True).view_as(w)
    mask[score.flatten().topk(k, sorted=False).indices] = True
    return mask.view_as(w)


def sparsifiable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters the projection applies to: every weight matrix and bias.

    Exempt: the bigram table (Gao et al. 2025 leave it dense), norm gains, attention-sink logits and
    frozen parameters (the positional embeddings when zeroed, as in the paper's recipe; learned
    positional embeddings are a weight matrix and are sparsified).
    """
    out = []
    for name, p in model.named_parameters():
        if not p.requires_grad or name == "bigram_table":  # a frozen (zeroed) wpe has no grad
            continue
        if "ln_" in name or "sink_logit" in name:
            continue
        out.append((name, p))
    return out


@torch.no_grad()
def project_(params: Iterable[tuple[str, nn.Parameter]], density: float) -> dict[str, int]:
    """Zero all but the top-|w| `density` fraction of each parameter, in place.

    Args:
        params: (name, parameter) pairs, e.g. from `sparsifiable(model)`.
        density: Fraction of each tensor's entries to keep.

    Returns:
        Name -> number of nonzeros kept.
    """
    kept: dict[str, int] = {}
    for name, p in params:
        if density >= 1.0:
            kept[name] = p.numel()
            continue
        mask = topk_mask(p, math.ceil(density * p.numel()))
        p.mul_(mask)
        kept[name] = int(mask.sum())
    return kept


@torch.no_grad()
def normalize_grads_(params: Iterable[nn.Parameter]) -> float:
    """Rescale all gradients together to global RMS 1 (Gao et al. 2025, App.); returns the old RMS."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    sq = torch.stack([g.float().pow(2).sum() for g in grads]).sum()
    n = sum(g.numel() for g in grads)
    rms = float((sq / n).sqrt())
    if rms > 0:
        for g in grads:
            g.div_(rms)
    return rms
