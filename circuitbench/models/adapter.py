"""The contract every model meets: a tokenizer, logits, a cache of named activations, and node sites."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from circuitbench.errors import CircuitbenchError
from circuitbench.models.sparse_gpt import Hook
from circuitbench.models.tokenizer import Tokenizer

SiteKind = Literal[
    "attn_in",  # residual read into attention (after norm and AbsTopK)
    "q",
    "k",
    "v",
    "attn_out",  # attention write into the residual stream
    "mlp_in",  # residual read into the MLP
    "mlp_neuron",
    "mlp_out",  # MLP write into the residual stream
    "sae_latent",
    "sae_error",
]
READ_KINDS: frozenset[str] = frozenset({"attn_in", "mlp_in"})
WRITE_KINDS: frozenset[str] = frozenset({"attn_out", "mlp_out"})


@dataclass(frozen=True, slots=True)
class Site:
    """A maskable node site: one named activation whose channels are the circuit's nodes.

    `source` and `weight` say how this site's channels are computed from an earlier site's: channel i
    here depends on channel j of `source` iff `weight[i, j] != 0`. Residual reads have no source: they
    are linked to earlier writes of the same channel index through the residual stream (weightless).
    """

    name: str
    """Official hook name, e.g. `3.attn.q`."""
    layer: int
    """Block index."""
    kind: SiteKind
    """What the channels are."""
    width: int
    """Number of channels (nodes)."""
    source: str | None = None
    """The site feeding this one through `weight`, or None."""
    weight: str | None = field(default=None, compare=False)
    """Parameter name of the connecting matrix (rows: this site's channels; columns: the source's)."""
    rows: tuple[int, int] | None = field(default=None, compare=False)
    """Row range of `weight` when it is a fused matrix (q, k, v in `c_attn`)."""
    value_width: int | None = None
    """Channels of the activation when one node gates all of them (an SAE error vector: width 1,
    value_width d_in); ablation values follow the activation's layout. None: one node per channel."""


@runtime_checkable
class ModelAdapter(Protocol):
    """What the tasks, the pruning loop and the metrics need from a model."""

    name: str
    tokenizer: Tokenizer
    sites: list[Site]
    device: torch.device
    dtype: torch.dtype
    provenance: dict[str, Any]

    def logits(self, tokens: Tensor) -> Tensor:
        """Logits [B, T, vocab] for a LongTensor [B, T]."""
        ...

    def run_with_cache(
        self, tokens: Tensor, names: Iterable[str] | None = None, at: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and the named activations (all hook points when `names` is None).

        With `at` (LongTensor [B]), logits only at those positions, as in `forward`.
        """
        ...

    def forward(self, tokens: Tensor, hook: Hook | None = None, at: Tensor | None = None) -> Tensor:
        """Logits with `hook(name, x) -> x` applied at every hook point (masks, ablations, caching).

        With `at` (LongTensor [B]), only the logits at position at[b] of each row: [B, V].
        """
        ...

    def site_weight(self, site: Site) -> Tensor | None:
        """The dense matrix [site.width, source.width] connecting `site.source` to `site`, if any."""
        ...


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


def site_table(adapter: ModelAdapter) -> dict[str, Site]:
    """Sites by name."""
    return {s.name: s for s in adapter.sites}
