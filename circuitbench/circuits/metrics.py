"""Task loss, accuracy and logit difference at the answer position; faithfulness; circuit sizes; loss recovered."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from circuitbench.circuits.masks import NodeIndex
from circuitbench.protocols import Batch, Hook, ModelAdapter, forward_at


def answer_logits(logits: Tensor, batch: Batch) -> Tensor:
    """Logits of [correct, incorrect] at each row's last prompt position: [N, 2].

    Accepts full logits [N, T, V] or logits already taken at the last positions [N, V].
    """
    if logits.ndim == 3:
        rows = torch.arange(logits.shape[0], device=logits.device)
        logits = logits[rows, batch.last.to(logits.device)]  # (N, V)
    at_last = logits
    pair = torch.stack([batch.correct, batch.incorrect], dim=1).to(logits.device)  # (N, 2)
    return at_last.gather(1, pair).float()  # (N, 2)


def task_loss(two: Tensor) -> Tensor:
    """Per-example two-token cross-entropy, -log softmax([correct, incorrect])[0] (Gao et al. 2025)."""
    return -F.log_softmax(two, dim=-1)[:, 0]


@dataclass(frozen=True, slots=True)
class Scores:
    """Means over examples (both members of every pair)."""

    loss: float
    accuracy: float
    logit_diff: float
    kl: float | None = None
    """Mean KL(full model || this) of the whole next-token distribution at the answer position, in nats,
    where it was measured (faithfulness curves)."""
    two: Tensor | None = field(default=None, compare=False, repr=False)
    """The per-example [N, 2] candidate logits the means come from (on the CPU): the bootstrap intervals'
    input (`circuitbench.circuits.intervals`)."""

    def as_dict(self, prefix: str) -> dict[str, float]:
        """Named measurements, e.g. {'full_loss': ...}: the summary's column names where they meet."""
        out = {f"{prefix}_loss": self.loss, f"{prefix}_accuracy": self.accuracy,
               f"{prefix}_logit_diff": self.logit_diff}
        if self.kl is not None:
            out[f"{prefix}_kl"] = self.kl
        return out

    def metric(self, name: str) -> float:
        """One of `logit_diff`, `loss`, `accuracy`, `kl` by name (NaN for a KL that was not measured)."""
        value = getattr(self, name)
        return float("nan") if value is None else float(value)


def score(two: Tensor, kl: Tensor | None = None) -> Scores:
    """Loss, accuracy (correct logit strictly larger) and mean logit difference from [N, 2] logits.

    With per-row KLs, their mean too.
    """
    diff = two[:, 0] - two[:, 1]
    return Scores(float(task_loss(two).mean()), float((diff > 0).float().mean()), float(diff.mean()),
                  None if kl is None else float(kl.mean()), two.detach().float().cpu())


def kl_from(reference: Tensor, logits: Tensor) -> Tensor:
    """Per-row KL(reference || softmax(logits)) in nats.

    `reference` is the full model's log-probabilities [N, V], `logits` the circuit's [N, V].
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    return (reference.exp() * (reference - logp)).sum(-1).clamp(min=0.0)


def faithfulness(m_circuit: float, m_full: float, m_empty: float) -> float:
    """MIB faithfulness f = (m(C) - m(empty)) / (m(N) - m(empty)) (Mueller et al. 2025); nan if undefined."""
    denom = m_full - m_empty
    return (m_circuit - m_empty) / denom if abs(denom) > 1e-9 else float("nan")


def count_nodes(index: NodeIndex, gates: Tensor) -> dict[str, int]:
    """Kept nodes in total and per site kind."""
    out = {"nodes": int((gates > 0.5).sum())}
    for kind in dict.fromkeys(s.kind for s in index.sites):
        out[f"nodes_{kind}"] = sum(
            int((index.split(gates)[s.name] > 0.5).sum()) for s in index.sites if s.kind == kind
        )
    return out


def mean_task_loss(adapter: ModelAdapter, rows: Batch, hook: Hook | None = None, batch: int = 256) -> float:
    """Mean two-token task loss of a model (with an optional hook) over rows, in trimmed batches."""
    if not isinstance(rows, Batch):  # an EncodedTask or any object with the four fields
        rows = Batch.of(rows, adapter.device)
    total = 0.0
    with torch.no_grad():
        for part in rows.chunks(batch):
            logits = forward_at(adapter, part.tokens, hook, part.last)
            total += float(task_loss(answer_logits(logits, part)).sum())
    return total / len(rows)


def loss_recovered(adapter: ModelAdapter, rows: Batch, batch: int = 256) -> dict[str, float]:
    """SAEBench's loss recovered of an SAE-augmented model, with circuitbench's two-token task loss.

    (L_zero - L_spliced) / (L_zero - L_clean), where L_clean is the base model's task loss, L_spliced the
    loss with each splice's error removed (the activation replaced by its reconstruction, latents kept),
    and L_zero the loss with the spliced activations set to zero. 1 means the SAEs lose nothing of the
    task; 0 means they do no better than zeroing the activation. NaN when L_zero == L_clean.

    Args:
        adapter: An SAE-augmented adapter (`circuitbench.models.sae.SAEAdapter`): it has `base`, the model
            without SAEs, and `splices`, the hook points the SAEs replace.
        rows: The examples.
        batch: Rows per forward pass.

    Returns:
        `sae_loss_recovered` (all splices at once) with its three losses, and with several SAEs also
        `sae_loss_recovered.{hook}` for each splice alone (the others kept exact).
    """
    base: ModelAdapter = adapter.base  # type: ignore[attr-defined]
    splices: list[str] = list(adapter.splices)  # type: ignore[attr-defined]
    clean = mean_task_loss(base, rows, None, batch)

    def measure(points: set[str]) -> tuple[float, float, float]:
        errors = {f"{p}.sae_error" for p in points}

        def no_error(name: str, x: Tensor) -> Tensor:
            return torch.zeros_like(x) if name in errors else x

        def zero(name: str, x: Tensor) -> Tensor:
            return torch.zeros_like(x) if name in points else x

        spliced = mean_task_loss(adapter, rows, no_error, batch)
        zeroed = mean_task_loss(base, rows, zero, batch)
        denom = zeroed - clean
        return (zeroed - spliced) / denom if abs(denom) > 1e-9 else float("nan"), spliced, zeroed

    value, spliced, zeroed = measure(set(splices))
    out = {"sae_loss_recovered": value, "sae_loss_recovered.loss_clean": clean,
           "sae_loss_recovered.loss_spliced": spliced, "sae_loss_recovered.loss_zero": zeroed}
    if len(splices) > 1:
        for point in splices:
            out[f"sae_loss_recovered.{point}"] = measure({point})[0]
    return out
