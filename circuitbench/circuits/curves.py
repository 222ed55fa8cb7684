"""Faithfulness curves over circuit sizes, summarised as CPR and CMD (MIB, Mueller et al. 2025).

For a node ranking, the circuit of size s keeps the top ceil(s * n_nodes) nodes; its faithfulness is
f = (m(C) - m(empty)) / (m(model) - m(empty)), on the logit difference m (and, as further curves, on the
task loss, the accuracy and the KL from the full model). CPR is the area under f over circuit size
(higher is better), CMD the area under |1 - f| (lower is better), both by the trapezoid rule over MIB's
sizes 0.1 ... 100 % on MIB's linear axis (comparable with MIB's numbers), and again on a log10 axis
normalised to [0, 1], which sees the tiny circuits weight-sparse models have: on the linear axis the
sizes below 10 % span a tenth of the area. As in MIB, CPR ranks nodes by their signed score (a node
that lowers m comes last) and CMD by the absolute score; for a method without signs the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from circuitbench.circuits.masks import keep_top
from circuitbench.circuits.metrics import Scores, faithfulness
from circuitbench.circuits.problem import Problem
from circuitbench.protocols import Batch

MIB_FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Circuit sizes as fractions of all nodes (MIB: 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100 %)."""


def node_grid(n_nodes: int) -> tuple[int, ...]:
    """Absolute circuit sizes 1, 2, 4, 8, ... and finally all nodes."""
    out, k = [], 1
    while k < n_nodes:
        out.append(k)
        k *= 2
    return (*out, n_nodes)


CURVE_METRICS: tuple[str, ...] = ("logit_diff", "loss", "accuracy", "kl")
"""What faithfulness is measured on: the logit difference (MIB's m; CPR and CMD use it), the task loss,
the accuracy, and the KL from the full model's next-token distribution (m(model) = 0)."""


def top_k_scores(problem: Problem, rows: Batch, scores: Tensor, full: Scores, empty: Scores,
                 reference: Tensor | None = None) -> Callable[[int], Scores]:
    """The `Scores` on `rows` of a ranking's top-k circuit, as a function of k (memoised).

    k = n is the full model and k = 0 the empty circuit, which the caller has measured already (all-ones
    gates reproduce the plain forward exactly, and all-zeros gates are the empty circuit), so they cost
    nothing; every curve of one ranking shares the memo, so a size on both grids is evaluated once. With
    `reference` (the full model's log-probabilities on `rows`), each point also has its KL.
    """
    n = problem.size
    memo: dict[int, Scores] = {0: empty, n: full}

    def at(k: int) -> Scores:
        if k not in memo:
            memo[k] = problem.scores(rows, keep_top(scores, k).to(rows.last.device), reference)
        return memo[k]

    return at


def _f(at: Callable[[int], Scores], k: int, full: Scores, empty: Scores, metric: str) -> float:
    return faithfulness(at(k).metric(metric), full.metric(metric), empty.metric(metric))


def node_curve(at: Callable[[int], Scores], n: int, full: Scores, empty: Scores,
               metric: str = "logit_diff") -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Faithfulness on `metric` at the absolute node grid (1, 2, 4, ... nodes)."""
    ks = node_grid(n)
    return ks, tuple(_f(at, k, full, empty, metric) for k in ks)


@dataclass(frozen=True)
class Curve:
    """Faithfulness at each circuit size."""

    fractions: tuple[float, ...]
    k: tuple[int, ...]
    f: tuple[float, ...]

    def cpr(self) -> float:
        """Area under f over size, linear axis (MIB's CPR)."""
        return _area(self.fractions, self.f)

    def cmd(self) -> float:
        """Area under |1 - f| over size, linear axis (MIB's CMD)."""
        return _area(self.fractions, tuple(abs(1 - v) for v in self.f))

    def cpr_log(self) -> float:
        """Area under f over log10(size), normalised by the axis span."""
        return _area(_log_axis(self.fractions), self.f)

    def cmd_log(self) -> float:
        """Area under |1 - f| over log10(size), normalised by the axis span."""
        return _area(_log_axis(self.fractions), tuple(abs(1 - v) for v in self.f))


def _log_axis(fractions: tuple[float, ...]) -> tuple[float, ...]:
    lo, hi = math.log10(fractions[0]), math.log10(fractions[-1])
    return tuple((math.log10(x) - lo) / (hi - lo) for x in fractions)


def _area(x: tuple[float, ...], y: tuple[float, ...]) -> float:
    """Trapezoid rule; NaN if any point is NaN (f is undefined when m(model) == m(empty))."""
    if any(math.isnan(v) for v in y):
        return math.nan
    return sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1))


def faithfulness_curve(at: Callable[[int], Scores], n: int, full: Scores, empty: Scores, metric: str = "logit_diff",
                       fractions: tuple[float, ...] = MIB_FRACTIONS) -> Curve:
    """Faithfulness on `metric` at each size (a fraction of the n nodes), from a ranking's `top_k_scores`."""
    ks = tuple(min(n, math.ceil(frac * n)) for frac in fractions)
    return Curve(tuple(fractions), ks, tuple(_f(at, k, full, empty, metric) for k in ks))
