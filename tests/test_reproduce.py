"""What the README, the board and the baselines show is what the code at HEAD computes.

The README's tables are generated from the committed cards and results (`baselines/regenerate.py`), and a
sample of the committed units is recomputed here from scratch: a change to the pruning path that moves
the numbers fails this file until `python baselines/regenerate.py` has been run.
"""

import importlib.util
import math
from pathlib import Path

import pytest

from circuitbench.results.store import read_unit, unit_files
from circuitbench.runs.runner import RunConfig, run

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "baselines" / "results"


def _regenerate():
    spec = importlib.util.spec_from_file_location("regenerate", REPO / "baselines" / "regenerate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_readme_tables_are_the_committed_results():
    mod = _regenerate()
    text = (REPO / "README.md").read_text()
    assert mod.render_readme(text, mod.sections(RESULTS)) == text, \
        "the README's tables are stale: python baselines/regenerate.py --readme"


def test_a_readme_without_the_markers_of_a_section_is_refused():
    mod = _regenerate()
    with pytest.raises(ValueError, match="generated sections"):
        mod.render_readme("# no markers\n", {"methods": "x"})


def _committed() -> dict[tuple[str, str, str], tuple]:
    out = {}
    for path in unit_files(RESULTS):
        _, summary, prov = read_unit(path)
        u = prov.unit
        out[(u.model.name, u.task, u.method)] = (u, summary, prov.threads)
    return out


def _sample() -> list[tuple[str, str, str]]:
    """The cheapest pruned learned-mask unit of the sparse model, EAP-IG on the same task, one unpruned unit."""
    units = _committed()
    pruned = sorted((s["wall_s"], task) for (model, task, method), (_, s, _) in units.items()
                    if model == "tiny-sparse" and method == "learned_mask" and s["status"] == "solved")
    task = pruned[0][1]
    unsolved = sorted(task for (model, task, method), (_, s, _) in units.items()
                      if model == "tiny-dense" and method == "eap" and s["status"] == "unsolved")
    return [("tiny-sparse", task, "learned_mask"), ("tiny-sparse", task, "eap_ig"), ("tiny-dense", unsolved[0], "eap")]


@pytest.mark.parametrize("key", _sample(), ids=lambda k: "/".join(k))
def test_committed_units_recompute_to_the_same_circuit_at_head(key, tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("CIRCUITBENCH_CACHE", str(tmp_path / "cache"))
    unit, stored, threads = _committed()[key]
    # The thread count the unit was computed with: measured, a learned mask's control can end a few nodes apart
    # at another thread count (the task's own circuit did not move; README, "Baselines, and reproducing").
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    cfg = RunConfig(model=unit.model.name, tasks=[unit.task], method=unit.method, method_kwargs=unit.method_kwargs,
                    ablation=unit.ablation, seed=unit.seed, target_loss=unit.target_loss,
                    min_accuracy=unit.min_accuracy, control=unit.control, calibrate=unit.calibrate,
                    search_examples=unit.search_examples, dtype=unit.dtype, device="cpu", out=tmp_path / "out",
                    show_progress=False)
    try:
        (now,) = run(cfg)
    finally:
        torch.set_num_threads(before)
    assert now["status"] == stored["status"]
    for key_ in ("nodes", "edges", "control_nodes", "control_met_target"):
        assert now[key_] == stored[key_], f"{key_}: {now[key_]} at HEAD, {stored[key_]} committed"
    for key_ in ("full_accuracy", "full_loss", "sufficiency_loss", "necessity_loss", "faithfulness", "cpr", "cmd"):
        a, b = now[key_], stored[key_]
        assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9), (key_, a, b)


EDGE_RESULTS = REPO / "baselines" / "results-edges"


def test_a_committed_edge_level_unit_recomputes_to_the_same_circuit_at_head(tmp_path, monkeypatch):
    """EAP-IG at the edge level on the task it pruned fastest: the README's edge-level table holds at HEAD."""
    monkeypatch.setenv("CIRCUITBENCH_CACHE", str(tmp_path / "cache"))
    units = [read_unit(p) for p in unit_files(EDGE_RESULTS)]
    _, stored, prov = min((u for u in units if u[2].unit.method == "eap_ig" and u[1]["status"] == "solved"),
                          key=lambda u: u[1]["wall_s"])
    unit = prov.unit
    assert unit.level == "edges"
    cfg = RunConfig(model=unit.model.name, tasks=[unit.task], method=unit.method, method_kwargs=unit.method_kwargs,
                    level="edges", seed=unit.seed, device="cpu", out=tmp_path / "out", show_progress=False)
    (now,) = run(cfg)
    for key_ in ("status", "nodes", "edges", "control_nodes", "control_edges", "control_met_target"):
        assert now[key_] == stored[key_], f"{key_}: {now[key_]} at HEAD, {stored[key_]} committed"
    for key_ in ("sufficiency_loss", "necessity_loss", "faithfulness", "cpr", "cmd"):
        assert math.isclose(now[key_], stored[key_], rel_tol=1e-6, abs_tol=1e-9), (key_, now[key_], stored[key_])
