"""The bridge losses (Gao et al. 2025; Drori's `bridges.py`), for frozen models and for joint training alike.

For a batch of token windows:
- both models run once, recording their residual at every location;
- `nmse_enc`, `nmse_dec`: per location, the normalised MSE of the encoder's prediction of the sparse residual
  and of the decoder's prediction of the dense residual (MSE over the target's variance, so 1.0 is what
  predicting the target's mean scores);
- `kl_d2s`, `kl_s2d`: per location, KL(dense || hybrid) of the next-token distributions, where the hybrid
  runs the dense model up to the location, encodes, and continues in the sparse model (`d2s`), or runs the
  sparse model up to it, decodes, and continues in the dense model (`s2d`).

The regression targets are detached: a map learns to predict the other model's residual; the residual is
not moved towards what the map predicts (in joint training the sparse model learns from the KL terms and its
own language-model loss). The KL is over the full vocabulary (Drori's code keeps the top 64 logits to save
memory; at these vocabularies the full sum is cheap and exact).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from circuitbench.bridges.bridge import Bridges
from circuitbench.protocols import Hook

Forward = Callable[[Tensor, Hook | None], Tensor]
"""A model's forward pass: (tokens [B, T], hook) -> logits [B, T, V]; `adapter.forward` or a `SparseGPT`."""


@dataclass
class BridgeLosses:
    """Per-location loss tensors, each [n_locations]; `total` is their weighted sum."""

    nmse_enc: Tensor
    nmse_dec: Tensor
    kl_d2s: Tensor
    kl_s2d: Tensor
    total: Tensor
    sparse_logits: Tensor
    """The sparse model's own logits (joint training adds its language-model loss on them)."""

    def summary(self) -> dict[str, float]:
        """Mean of each loss over locations, as floats."""
        return {"nmse_enc": float(self.nmse_enc.detach().mean()), "nmse_dec": float(self.nmse_dec.detach().mean()),
                "kl_d2s": float(self.kl_d2s.detach().mean()), "kl_s2d": float(self.kl_s2d.detach().mean()),
                "total": float(self.total.detach())}


def nmse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over the target's variance (both [..., d]); 0 is exact, 1 is predicting the mean."""
    target = target.float()
    flat = target.reshape(-1, target.shape[-1])
    var = (flat - flat.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    return (pred.float() - target).pow(2).sum(-1).mean() / var


def kl_from(reference_logp: Tensor, logits: Tensor) -> Tensor:
    """Mean over tokens of KL(reference || model), reference given as log-probabilities [B, T, V]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return F.kl_div(logp.flatten(0, -2), reference_logp.flatten(0, -2), log_target=True, reduction="batchmean")


def record(forward: Forward, tokens: Tensor, names: list[str]) -> tuple[Tensor, dict[str, Tensor]]:
    """Logits and the residuals at `names`, keeping the graph (gradients flow where the model has them)."""
    wanted, acts = set(names), {}

    def hook(name: str, x: Tensor) -> Tensor:
        if name in wanted:
            acts[name] = x
        return x

    return forward(tokens, hook), acts


def replaced(location: str, value: Tensor) -> Hook:
    """A hook that swaps the residual at `location` for `value`."""
    def hook(name: str, x: Tensor) -> Tensor:
        return value.to(x.dtype) if name == location else x
    return hook


@torch.no_grad()
def least_squares_start(bridges: Bridges, dense: Forward, sparse: Forward, tokens: Tensor) -> None:
    """Start every map at its ridge-regression solution on both models' residuals over `tokens` [B, T]."""
    acts = [record(f, tokens, bridges.locations)[1] for f in (dense, sparse)]
    flat = [{k: v.flatten(0, 1).float().cpu() for k, v in a.items()} for a in acts]
    bridges.fit_least_squares(flat[0], flat[1])


def bridge_losses(bridges: Bridges, dense: Forward, sparse: Forward, tokens: Tensor, nmse_coef: float = 1.0,
                  kl_coef: float = 1.0, dense_grad: bool = False) -> BridgeLosses:
    """The losses of one batch (module docstring); `total` = nmse_coef x (enc + dec) + kl_coef x (d2s + s2d).

    Args:
        bridges: the maps being trained.
        dense: the frozen dense model's forward pass.
        sparse: the sparse model's forward pass (trainable in joint training, frozen otherwise).
        tokens: [B, T] token windows.
        nmse_coef: the weight of the two NMSE terms (the paper's: 1).
        kl_coef: the weight of the two KL terms (the paper's: 1).
        dense_grad: keep the dense model's graph (never needed: it is frozen).
    """
    locs = bridges.locations
    with torch.set_grad_enabled(dense_grad and torch.is_grad_enabled()):
        d_logits, d_acts = record(dense, tokens, locs)
        d_logp = F.log_softmax(d_logits.float(), dim=-1).detach()
    s_logits, s_acts = record(sparse, tokens, locs)
    enc, dec, d2s, s2d = [], [], [], []
    for i, loc in enumerate(locs):
        d_res, s_res = d_acts[loc].detach(), s_acts[loc]
        e = bridges.encode(i, d_res)
        enc.append(nmse(e, s_res.detach()))
        d2s.append(kl_from(d_logp, sparse(tokens, replaced(loc, e))))
        d = bridges.decode(i, s_res)
        dec.append(nmse(d, d_res))
        s2d.append(kl_from(d_logp, dense(tokens, replaced(loc, d))))
    out = [torch.stack(v) for v in (enc, dec, d2s, s2d)]
    total = nmse_coef * (out[0].sum() + out[1].sum()) + kl_coef * (out[2].sum() + out[3].sum())
    return BridgeLosses(out[0], out[1], out[2], out[3], total, s_logits)
