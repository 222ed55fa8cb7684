"""Adapter helpers shared by every model implementation; the contract itself lives in `circuitbench.protocols`.

`Site`, `SiteKind`, `READ_KINDS`, `WRITE_KINDS` and `ModelAdapter` are re-exported here for callers that
import them from the models package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from circuitbench.errors import CircuitbenchError
from circuitbench.protocols import READ_KINDS, WRITE_KINDS, Hook, ModelAdapter, Site, SiteKind

__all__ = ["READ_KINDS", "WRITE_KINDS", "HookedForward", "ModelAdapter", "ResidMidShift", "Site", "SiteKind",
           "block_hook_names", "block_sites", "cache_through_hooks", "flat_heads", "fold_gqa_write", "site_table"]


def cache_through_hooks(
    forward: Callable[[Tensor, Hook | None, Tensor | None], Tensor],
    hook_names: list[str],
    tokens: Tensor,
    names: Iterable[str] | None = None,
    at: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """`run_with_cache` for any adapter whose `forward` calls a hook at every hook point.

    Raises:
        CircuitbenchError: for a name that is not one of `hook_names`.
    """
    wanted = set(hook_names if names is None else names)
    unknown = wanted - set(hook_names)
    if unknown:
        raise CircuitbenchError(
            f"unknown hook names {sorted(unknown)}; this model has {', '.join(hook_names[:12])}"
            + (", ..." if len(hook_names) > 12 else "")
        )
    cache: dict[str, Tensor] = {}

    def record(name: str, x: Tensor) -> Tensor:
        if name in wanted:
            cache[name] = x.detach()
        return x

    with torch.no_grad():
        logits = forward(tokens, record, at)
    return logits, cache


class HookedForward:
    """`logits` and `run_with_cache` from an adapter's `forward`.

    For an adapter whose `forward(tokens, hook, at)` calls `hook` at every name in `hook_names`: each
    adapter writes only its forward pass.
    """

    hook_names: list[str]
    forward: Callable[..., Tensor]
    """The adapter's own `forward(tokens, hook=None, at=None)`; the mixin only uses it."""
    has_saes: bool = False
    """No SAEs spliced in (`circuitbench.models.sae.SAEAdapter` says True)."""

    def logits(self, tokens: Tensor) -> Tensor:
        """Logits [B, T, V], without gradients."""
        with torch.no_grad():
            return self.forward(tokens)

    def run_with_cache(
        self, tokens: Tensor, names: Iterable[str] | None = None, at: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and the named activations (all hook points when `names` is None), without gradients.

        With `at`, logits only at those positions.

        Raises:
            CircuitbenchError: for a name that is not a hook point of this model.
        """
        return cache_through_hooks(self.forward, self.hook_names, tokens, names, at)


class ResidMidShift:
    """A replaced resid_mid, for blocks whose residual add uses the stream as it was before the hook.

    The MLP reads the replaced value, but the block adds its write to the original: the difference is
    carried to the block's MLP write, so the stream after the block is as if resid_mid itself had changed.
    """

    def __init__(self) -> None:
        self._pending: dict[int, Tensor] = {}

    def replaced(self, layer: int, old: Tensor, new: Tensor) -> Tensor:
        """Record what the hook at resid_mid did to `old`; returns `new`."""
        if new is not old:
            self._pending[layer] = new - old
        return new

    def carried(self, layer: int, write: Tensor) -> Tensor:
        """The block's MLP write plus the recorded difference, if any."""
        shift = self._pending.pop(layer, None)
        return write if shift is None else write + shift


def flat_heads(hook: Hook, name: str, out: Tensor) -> Tensor:
    """`hook` on a per-head activation [B, T, heads, d_head] seen as [B, T, heads*d_head]; back in its shape."""
    if out.ndim == 3:
        return hook(name, out)
    x = out.reshape(*out.shape[:2], -1)
    new = hook(name, x)
    return out if new is x else new.reshape(out.shape)


def site_table(adapter: ModelAdapter) -> dict[str, Site]:
    """Sites by name."""
    return {s.name: s for s in adapter.sites}


def block_sites(
    layer: int,
    widths: dict[str, int],
    parallel: bool,
    weights: dict[str, str],
    rows: dict[str, tuple[int, int] | None] | None = None,
) -> list[Site]:
    """The eight maskable sites of one pre-norm residual block, in forward order (docs/design.md, Node sites).

    Args:
        layer: the block index.
        widths: `d_model`, `q`, `kv` (the key and value width) and `d_mlp`.
        parallel: the MLP reads the block's input, as the attention does (GPT-NeoX, GPT-J): the MLP read and
            neurons then come before the attention write, so `count_edges`, which links a write to every
            read after it, sees no residual edge from the block's attention to its own MLP.
        weights: for q, k, v, attn_out, mlp_neuron and mlp_out, the parameter name of the connecting matrix.
        rows: for a fused matrix, the row range of q, k and v in it (None where rows interleave).
    """
    i, d = layer, widths["d_model"]
    rows = rows or {}
    attn_in = f"{i}.attn.act_in"
    attn = [Site(attn_in, i, "attn_in", d)]
    for kind in ("q", "k", "v"):
        attn.append(Site(f"{i}.attn.{kind}", i, kind, widths["q" if kind == "q" else "kv"], attn_in, weights[kind],
                         rows.get(kind)))
    write = [Site(f"{i}.attn.resid_delta", i, "attn_out", d, f"{i}.attn.v", weights["attn_out"])]
    mlp = [Site(f"{i}.mlp.act_in", i, "mlp_in", d),
           Site(f"{i}.mlp.post_act", i, "mlp_neuron", widths["d_mlp"], f"{i}.mlp.act_in", weights["mlp_neuron"])]
    mlp_write = [Site(f"{i}.mlp.resid_delta", i, "mlp_out", d, f"{i}.mlp.post_act", weights["mlp_out"])]
    return attn + (mlp + write if parallel else write + mlp) + mlp_write


def block_hook_names(parallel: list[bool]) -> list[str]:
    """Every hook point of a stack of pre-norm residual blocks, in forward order (`parallel[i]` per block)."""
    names: list[str] = []
    for i, par in enumerate(parallel):
        names += [f"{i}.resid_in", f"{i}.attn.act_in", f"{i}.attn.q", f"{i}.attn.k", f"{i}.attn.v",
                  f"{i}.attn.y", f"{i}.attn.resid_delta"]
        names += [] if par else [f"{i}.resid_mid"]
        names += [f"{i}.mlp.act_in", f"{i}.mlp.post_act", f"{i}.mlp.resid_delta"]
    return names + ["final_resid"]


def fold_gqa_write(w: Tensor, n_heads: int, n_kv_heads: int, d_head: int) -> Tensor:
    """An attention write matrix [d_model, n_heads*d_head] as seen from the value channels [d_model, nkv*d_head].

    Query head h reads kv head h // (n_heads // n_kv_heads) (transformers' repeat_kv): the folded matrix sums
    |w| over the query heads sharing a kv head, so it is nonzero iff some connection exists.
    """
    if n_kv_heads == n_heads:
        return w
    rep = n_heads // n_kv_heads
    folded = w.float().abs().view(-1, n_kv_heads, rep, d_head).sum(2)  # (d_model, nkv, hs)
    return folded.reshape(w.shape[0], n_kv_heads * d_head)
