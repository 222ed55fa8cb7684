"""Discretisation: the smallest top-k circuit whose task loss meets the target, by bisection."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The smallest k found, its loss, and whether any k met the target."""

    k: int
    loss: float
    met_target: bool
    evaluations: int


def smallest_k(loss_at: Callable[[int], float], n: int, target: float) -> SearchResult:
    """Bisect on k in [0, n] for the smallest k with loss_at(k) <= target.

    Assumes loss_at is non-increasing in k (more nodes, lower loss), as it is for a good ranking; when
    it is not, the k returned still meets the target (it was evaluated), it may just not be the
    smallest. If even k = n misses the target, returns k = n with met_target False.
    """
    cache: dict[int, float] = {}

    def f(k: int) -> float:
        if k not in cache:
            cache[k] = loss_at(k)
        return cache[k]

    if f(n) > target:
        return SearchResult(n, f(n), False, len(cache))
    lo, hi = 0, n  # invariant: f(hi) <= target; every k < lo that was tried missed it
    while lo < hi:
        mid = (lo + hi) // 2
        if f(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return SearchResult(hi, f(hi), True, len(cache))
