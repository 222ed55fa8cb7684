"""95% bootstrap intervals over the test pairs: resampled by pair, reproducible, stored, shown."""

import math

import pytest
import torch

from circuitbench.circuits.intervals import (
    RESAMPLES,
    area_interval,
    faithfulness_interval,
    loss_interval,
    pair_resamples,
    percentile_interval,
)
from circuitbench.circuits.metrics import score, task_loss


def _two(n: int, seed: int, shift: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g) + torch.tensor([shift, 0.0])


def test_resamples_draw_whole_pairs_with_replacement_and_repeat_with_the_seed():
    idx = pair_resamples(10, seed=3)
    assert idx.shape == (RESAMPLES, 10)
    assert torch.equal(idx[:, 1::2], idx[:, 0::2] + 1) and bool((idx[:, 0::2] % 2 == 0).all())  # rows 2j, 2j + 1
    assert torch.equal(idx, pair_resamples(10, seed=3)) and not torch.equal(idx, pair_resamples(10, seed=4))
    assert pair_resamples(11, seed=0).shape == (RESAMPLES, 10)  # an odd last row belongs to no pair


def test_the_loss_interval_matches_the_normal_approximation_of_a_mean_over_pairs():
    two = _two(512, 0)
    s = score(two)
    lo, hi = loss_interval(s, pair_resamples(512, seed=0))
    assert lo < s.loss < hi
    pair_means = task_loss(two).view(-1, 2).mean(1)  # the pairs are the independent units
    half = 1.96 * float(pair_means.std()) / math.sqrt(len(pair_means))
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)


def test_faithfulness_of_the_full_model_and_of_the_empty_circuit_is_exact_on_every_resample():
    full, empty, half = score(_two(64, 1, 2.0)), score(_two(64, 2, 0.0)), score(_two(64, 3, 1.0))
    idx = pair_resamples(64, seed=0)
    assert faithfulness_interval(full, full, empty, idx) == pytest.approx((1.0, 1.0))
    assert faithfulness_interval(empty, full, empty, idx) == pytest.approx((0.0, 0.0))
    lo, hi = faithfulness_interval(half, full, empty, idx)
    assert 0.0 < lo < hi < 1.0


def test_cpr_and_cmd_intervals_bracket_the_area_of_the_curve():
    full, empty = score(_two(128, 1, 2.0)), score(_two(128, 2, 0.0))
    points = [score(_two(128, 10 + i, 2.0 * f)) for i, f in enumerate((0.1, 0.5, 0.9, 1.0))]
    fractions = (0.01, 0.1, 0.5, 1.0)
    idx = pair_resamples(128, seed=0)
    lo, hi = area_interval(points, fractions, full, empty, idx, "cpr")
    assert lo <= hi and math.isfinite(lo)
    exact = area_interval([full] * 4, fractions, full, empty, idx, "cmd")  # the full model at every size: CMD 0
    assert exact == pytest.approx((0.0, 0.0))


def test_an_interval_that_most_resamples_leave_undefined_is_nan():
    values = torch.tensor([1.0, math.nan, math.nan, math.inf])
    assert all(math.isnan(v) for v in percentile_interval(values))
    assert percentile_interval(torch.tensor([2.0] * 9 + [math.nan])) == (2.0, 2.0)


def test_a_unit_stores_its_intervals_and_every_table_shows_them(quote_unit):
    from circuitbench.results.report import plus_minus, table_rows
    from circuitbench.results.store import read_unit
    from circuitbench.results.unit import INTERVAL_NUMBERS

    summary, path = quote_unit
    table, read, _ = read_unit(path)
    m = {(r["split"], r["metric"]): r["value"] for r in table.to_pylist()}
    for name in INTERVAL_NUMBERS:
        lo, hi = summary[f"{name}_lo"], summary[f"{name}_hi"]
        assert lo == m[("test", f"{name}_lo")] and hi == m[("test", f"{name}_hi")], name
        assert math.isfinite(lo) and lo <= hi, name
        if name in ("sufficiency_loss", "necessity_loss"):  # a mean's percentile interval holds the mean
            assert lo <= summary[name] <= hi, name
    shown = table_rows([summary], ["sufficiency_loss", "nodes"])[0]
    assert shown["sufficiency_loss"] == plus_minus(summary, "sufficiency_loss") and " ±" in shown["sufficiency_loss"]
    assert table_rows([summary], ["sufficiency_loss"], "json")[0]["sufficiency_loss"] == summary["sufficiency_loss"]
