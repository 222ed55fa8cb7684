"""Faithfulness curves read back from committed units and drawn (the fast loop's check of the plots module)."""

from pathlib import Path

import pytest

from circuitbench.errors import CircuitbenchError
from circuitbench.results.plots import plot_curves, read_curves
from circuitbench.results.store import read_unit

RESULTS = Path(__file__).resolve().parents[2] / "baselines" / "results"


def test_curves_are_the_units_own_measurements_and_are_drawn_per_task(tmp_path):
    curves = read_curves(RESULTS, "tiny-sparse", ["learned_mask", "random"])
    assert curves and all(set(by) <= {"learned_mask", "random"} for by in curves.values())
    task = sorted(curves)[0]
    table, _, _ = read_unit(RESULTS / "tiny-sparse" / f"{task}.learned_mask.seed0.parquet")
    stored = sorted((float(r["metric"].removeprefix("curve_f_")), r["value"]) for r in table.to_pylist()
                    if r["metric"].startswith("curve_f_") and r["split"] == "test")
    assert curves[task]["learned_mask"] == stored and stored[-1] == (1.0, 1.0)  # the whole model is the model
    svg, png = plot_curves(curves, tmp_path / "c", title="tiny-sparse")
    assert svg.read_text().lstrip().startswith("<?xml") and task in svg.read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(CircuitbenchError, match="no faithfulness curves"):
        plot_curves({}, tmp_path / "none")
