"""95% bootstrap intervals over a unit's test pairs: each headline number with the spread of its sample.

The test split's pairs are resampled with replacement (both members of a pair together, as the task makes
them: rows 2j and 2j + 1), `RESAMPLES` times, by a generator seeded with the unit's seed, and each number is
recomputed on every resample from the per-example logits already measured (no forward pass). The interval
is the 2.5th and 97.5th percentile of the resampled values. The full model, the empty circuit and the circuit
share each resample, so a ratio (faithfulness) or an area (CPR, CMD) moves as its parts move together.

What it measures: how much a number would move on another draw of test pairs from the same templates.
What it does not: the spread over seeds of the search (`results.seeds`) or over machines (the
reproducibility contract, docs/reference/reproducing.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from circuitbench.circuits.metrics import Scores, task_loss

RESAMPLES = 1000
"""Bootstrap resamples per interval."""
LEVEL = 0.95
"""The intervals' coverage."""

Interval = tuple[float, float]


def pair_resamples(n_rows: int, seed: int, resamples: int = RESAMPLES) -> Tensor:
    """Row indices of `resamples` bootstrap draws of the pairs of an n_rows split: [resamples, 2 * pairs]."""
    pairs = n_rows // 2
    gen = torch.Generator().manual_seed(seed)
    drawn = torch.randint(pairs, (resamples, pairs), generator=gen)
    return torch.stack([2 * drawn, 2 * drawn + 1], dim=-1).flatten(1)


def percentile_interval(values: Tensor) -> Interval:
    """The central `LEVEL` interval of resampled values; NaN where most resamples leave the number undefined."""
    finite = values[torch.isfinite(values)].double()
    if finite.numel() < values.numel() / 2:
        return math.nan, math.nan
    tail = (1 - LEVEL) / 2
    q = torch.quantile(finite, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(q[0]), float(q[1])


def _rows(s: Scores) -> Tensor:
    if s.two is None:
        raise ValueError("these Scores keep no per-example logits: measure them with `score`")
    return s.two


def loss_interval(s: Scores, idx: Tensor) -> Interval:
    """The interval of a mean two-token task loss."""
    return percentile_interval(task_loss(_rows(s))[idx].mean(1))


def _mean_diff(s: Scores, idx: Tensor) -> Tensor:
    two = _rows(s)
    return (two[:, 0] - two[:, 1])[idx].mean(1)


def _faithfulness(circuit: Scores, full: Scores, empty: Scores, idx: Tensor) -> Tensor:
    e = _mean_diff(empty, idx)
    denom = _mean_diff(full, idx) - e
    f = (_mean_diff(circuit, idx) - e) / denom
    return torch.where(denom.abs() > 1e-9, f, torch.full_like(f, math.nan))


def faithfulness_interval(circuit: Scores, full: Scores, empty: Scores, idx: Tensor) -> Interval:
    """The interval of MIB faithfulness on the logit difference, (m(C) - m(empty)) / (m(N) - m(empty))."""
    return percentile_interval(_faithfulness(circuit, full, empty, idx))


def _area(x: tuple[float, ...], y: Tensor) -> Tensor:
    """Trapezoid areas of y [B, P] over x [P] (a NaN point makes its row's area NaN, as `curves._area`)."""
    xs = torch.tensor(x, dtype=y.dtype)
    return ((xs[1:] - xs[:-1]) * (y[:, 1:] + y[:, :-1]) / 2).sum(1)


def area_interval(points: list[Scores], fractions: tuple[float, ...], full: Scores, empty: Scores, idx: Tensor,
                  area: str) -> Interval:
    """The interval of MIB's CPR (`area="cpr"`: area under f) or CMD (`"cmd"`: under |1 - f|) over size.

    Args:
        points: The circuit's scores at each size of the curve, in the order of `fractions`.
        fractions: The sizes as fractions of all nodes (or edges), MIB's linear axis.
        full: The full model's scores on the same rows.
        empty: The empty circuit's.
        idx: `pair_resamples` of those rows.
        area: `cpr` or `cmd`.
    """
    f = torch.stack([_faithfulness(p, full, empty, idx) for p in points], dim=1)
    return percentile_interval(_area(fractions, f if area == "cpr" else (1 - f).abs()))
