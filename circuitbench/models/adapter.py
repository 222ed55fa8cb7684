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

__all__ = ["READ_KINDS", "WRITE_KINDS", "ModelAdapter", "Site", "SiteKind", "cache_through_hooks", "site_table"]


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
