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


def smallest_k(loss_at: Callable[[int], float], n: int, target: float, native: int | None = None) -> SearchResult:
    """Bisect on k in [0, n] for the smallest k with loss_at(k) <= target.

    Assumes loss_at is non-increasing in k (more nodes, lower loss), as it is for a good ranking; when
    it is not, the k returned still meets the target (it was evaluated), it may just not be the
    smallest.

    `native` is the size of the circuit the method itself found, when it finds one (a learned mask's
    active nodes). The search then starts from it: if it meets the target, the bisection runs in
    [0, native]; if not, in [0, n]. This matters where the full model is the worst circuit of all: on
    the inverted-label control, k = n is the full model, which answers every example wrongly, while the
    mask trained for the inverted labels may meet the target (Drori 2026). If no upper end meets the
    target, returns the native size (else n) with met_target False.
    """
    cache: dict[int, float] = {}

    def f(k: int) -> float:
        if k not in cache:
            cache[k] = loss_at(k)
        return cache[k]

    ends = [k for k in dict.fromkeys([native, n]) if k is not None and 0 <= k <= n]
    top = next((k for k in ends if f(k) <= target), None)
    if top is None:
        return SearchResult(ends[0], f(ends[0]), False, len(cache))
    lo, hi = 0, top  # invariant: f(hi) <= target; every k < lo that was tried missed it
    while lo < hi:
        mid = (lo + hi) // 2
        if f(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return SearchResult(hi, f(hi), True, len(cache))
