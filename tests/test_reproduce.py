"""What the README, the board and the baselines show is what the code at HEAD computes.

The tables of the README and the documentation pages are generated from the committed cards and results
(`baselines/scripts/regenerate.py`), and a sample of the committed units is recomputed here from scratch: a change to the pruning path that moves
the numbers fails this file until `python baselines/scripts/regenerate.py` has been run.
"""

import importlib.util
from pathlib import Path

import pytest

from circuitbench.results.circuit import Circuit, circuit_paths
from circuitbench.results.reproduce import differences, machine, same_machine_kind
from circuitbench.results.store import read_unit, unit_files
from circuitbench.results.unit import NOT_PRUNED
from circuitbench.runs.runner import RunConfig, run

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "baselines" / "results"


def _regenerate():
    spec = importlib.util.spec_from_file_location("regenerate", REPO / "baselines" / "scripts" / "regenerate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_tables_of_the_readme_and_the_docs_are_the_committed_results():
    mod = _regenerate()
    texts = {str(path.relative_to(REPO)): path.read_text() for path in mod.pages()}
    assert "README.md" in texts and "docs/tutorials/compare-methods.md" in texts
    rendered = mod.render_pages(texts, mod.sections(RESULTS))
    stale = [name for name, text in texts.items() if rendered[name] != text]
    assert not stale, f"the tables of {stale} are stale: python baselines/scripts/regenerate.py --readme"


def test_a_section_on_no_page_and_a_marker_of_no_section_are_refused():
    mod = _regenerate()
    with pytest.raises(ValueError, match=r"sections \['methods'\] are on none of the pages"):
        mod.render_pages({"README.md": "# no markers\n"}, {"methods": "x"})
    with pytest.raises(ValueError, match=r"docs/x.md: generated sections \['nope'\]"):
        mod.render_pages({"docs/x.md": "<!-- generated: nope -->\n<!-- end generated: nope -->"}, {})
    page = "<!-- generated: methods -->\nold\n<!-- end generated: methods -->"
    assert mod.render_pages({"a.md": page, "b.md": page}, {"methods": "new"})["b.md"] == page.replace("old", "new")


def _committed() -> dict[tuple[str, str, str], tuple]:
    out = {}
    for path in unit_files(RESULTS):
        _, summary, prov = read_unit(path)
        u = prov.unit
        out[(u.model.name, u.task, u.method)] = (path, summary, prov)
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


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory):
    """An empty ablation cache for this file: the first recomputation fills it from the corpus, the others read it."""
    return tmp_path_factory.mktemp("cache")


def _recompute(path, prov, tmp_path, **over):
    """The unit at `path` computed again at HEAD, at the thread count it was made with: (summary, file)."""
    import torch

    unit = prov.unit
    before = torch.get_num_threads()
    torch.set_num_threads(prov.threads)
    cfg = RunConfig(model=unit.model.name, tasks=[unit.task], method=unit.method, method_kwargs=unit.method_kwargs,
                    ablation=unit.ablation, seed=unit.seed, target_loss=unit.target_loss, level=unit.level,
                    min_accuracy=unit.min_accuracy, control=unit.control, calibrate=unit.calibrate,
                    search_examples=unit.search_examples, dtype=unit.dtype, device="cpu", out=tmp_path / "out",
                    show_progress=False, **over)
    try:
        (now,) = run(cfg)
    finally:
        torch.set_num_threads(before)
    again = tmp_path / "out" / path.relative_to(path.parents[1])
    return now, again


def _holds_the_contract(path, stored, prov, now, again):
    """The reproducibility contract (circuitbench.results.reproduce) between a committed unit and its rerun."""
    _, _, now_prov = read_unit(again)
    exact = same_machine_kind(prov, now_prov)
    same_circuit = stored["status"] in NOT_PRUNED or torch_equal_gates(path, again)
    problems = differences(stored, now, exact, same_circuit)
    assert not problems, (f"made on {machine(prov)}, rerun on {machine(now_prov)}"
                          f"{'' if same_circuit else ' (another circuit)'}: " + "; ".join(problems))
    return exact, same_circuit


def torch_equal_gates(a, b) -> bool:
    import torch

    return torch.equal(Circuit.load(circuit_paths(a)[0]).gates(), Circuit.load(circuit_paths(b)[0]).gates())


@pytest.mark.slow
@pytest.mark.parametrize("key", _sample(), ids=lambda k: "/".join(k))
def test_committed_units_recompute_to_the_same_circuit_at_head(key, tmp_path, monkeypatch, fresh_cache):
    """Bit for bit on the machine kind the unit was made on; within the stated tolerances on another CPU kind."""
    monkeypatch.setenv("CIRCUITBENCH_CACHE", str(fresh_cache))
    path, stored, prov = _committed()[key]
    # The thread count the unit was computed with: a learned mask's control can end a few nodes apart at
    # another thread count (docs/reference/reproducing.md).
    now, again = _recompute(path, prov, tmp_path)
    _holds_the_contract(path, stored, prov, now, again)


EDGE_RESULTS = REPO / "baselines" / "results-edges"


@pytest.mark.slow
def test_a_committed_edge_level_unit_recomputes_to_the_same_circuit_at_head(tmp_path, monkeypatch, fresh_cache):
    """EAP-IG at the edge level on the task it pruned fastest: the README's edge-level table holds at HEAD."""
    monkeypatch.setenv("CIRCUITBENCH_CACHE", str(fresh_cache))
    path, stored, prov = min(((p, *read_unit(p)[1:]) for p in unit_files(EDGE_RESULTS)),
                             key=lambda u: (u[2].unit.method != "eap_ig" or u[1]["status"] != "solved", u[1]["wall_s"]))
    assert prov.unit.level == "edges" and prov.unit.method == "eap_ig"
    now, again = _recompute(path, prov, tmp_path)
    _holds_the_contract(path, stored, prov, now, again)
