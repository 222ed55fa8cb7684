"""Saved circuits: written with every unit, shown, re-evaluated exactly, exported to MIB and read back."""

import json
import re

import pyarrow.parquet as pq
import pytest
import torch

from circuitbench.circuits.edges import count_edges
from circuitbench.circuits.masks import NodeIndex
from circuitbench.cli import main
from circuitbench.errors import CircuitbenchError
from circuitbench.results.circuit import Circuit, circuit_paths
from circuitbench.results.mib import read_mib
from circuitbench.runs.runner import RunConfig, run
from circuitbench.runs.saved import compare_stored, export_mib, load_saved, reevaluate, show

pytestmark = pytest.mark.slow  # every test here reads an end-to-end pruning run (`-m "not slow"` skips them)

TASK = "else_elif"


@pytest.fixture(scope="module")
def reference(tiny_sparse):
    """The bundled weight-sparse reference model: a real model whose circuits matter (a random one's do not)."""
    return tiny_sparse


def _run(tmp_path, adapter, **over):
    # 40 steps at lr 3e-2: a circuit of about 55 nodes on the v3 model (5 steps left ~2,000 nodes and more
    # edges than an edge table keeps, which MIB's export refuses)
    base = dict(model="tiny-sparse", tasks=[TASK], method_kwargs={"steps": 40, "lr": 0.03}, ablation="zero",
                min_accuracy=0.0,
                out=tmp_path, show_progress=False, search_examples=64, target_loss=0.15, control=False)
    (summary,) = run(RunConfig(**{**base, **over}), adapter)
    return summary, next(tmp_path.glob("tiny-sparse/*.seed0.parquet"))


@pytest.fixture(scope="module")
def saved_unit(tmp_path_factory, reference):
    out = tmp_path_factory.mktemp("saved")
    summary, path = _run(out, reference)
    assert summary["status"] in ("solved", "train_only") and summary["nodes"] > 0  # met on the search pairs
    return summary, path


def test_every_pruned_unit_writes_its_circuit_and_edge_table(saved_unit, reference):
    summary, path = saved_unit
    cpath, epath = circuit_paths(path)
    circuit = Circuit.load(cpath)
    index = NodeIndex.of(reference)
    assert circuit.k == summary["nodes"] == int(circuit.gates().sum())
    assert circuit.scores.shape == (index.size,) and circuit.ablation_values.shape == (index.value_size,)
    kept = circuit.kept()
    assert sum(len(v) for v in kept.values()) == summary["nodes"]
    edges = pq.read_table(epath)
    assert edges.num_rows == summary["edges"] == count_edges(reference, index, circuit.gates())["edges"]
    assert set(edges.column("kind").to_pylist()) <= {"weighted", "residual"}
    for row in edges.to_pylist():  # every edge joins two kept channels
        assert row["src_channel"] in kept[row["src_site"]] and row["dst_channel"] in kept[row["dst_site"]]


def test_a_saved_circuit_reevaluates_to_its_stored_numbers_exactly(saved_unit, reference):
    _, path = saved_unit
    saved = load_saved(path)
    fresh = reevaluate(saved, reference, "test")
    rows = compare_stored(saved, fresh)
    assert rows and all(r["equal"] for r in rows), rows
    assert fresh["sufficiency_loss"] == saved.summary["sufficiency_loss"]


def test_reevaluation_refuses_another_model(saved_unit, reference):
    from circuitbench.models.native import SparseGPTAdapter

    other = SparseGPTAdapter(reference.model, reference.tokenizer, "tiny-sparse", {"weights_sha256": "other"})
    with pytest.raises(CircuitbenchError, match="this model has other"):
        reevaluate(load_saved(saved_unit[1]), other)


def test_an_edited_circuit_file_is_refused(saved_unit, tmp_path):
    from safetensors.torch import load_file, save_file

    cpath, _ = circuit_paths(saved_unit[1])
    tensors = load_file(str(cpath))
    from safetensors import safe_open

    with safe_open(str(cpath), framework="pt") as f:
        meta = f.metadata()
    first = next(k for k in tensors if k.startswith("kept.") and len(tensors[k]))
    tensors[first] = tensors[first][1:]  # drop a kept channel by hand
    bad = tmp_path / "bad.circuit.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(CircuitbenchError, match="edited or is corrupt"):
        Circuit.load(bad)


def test_show_prints_the_circuit_per_site(saved_unit):
    text = show(load_saved(saved_unit[1]))
    assert TASK in text and "kept" in text and ("mlp" in text or "attn" in text)


def test_mib_export_is_read_back_with_the_same_nodes_and_edges(saved_unit, tmp_path, reference):
    saved = load_saved(saved_unit[1])
    out = export_mib(saved, tmp_path / "circuit.json")

    def not_json(constant):
        raise AssertionError(f"{constant} is not JSON")

    strict = json.loads(out.read_text(), parse_constant=not_json)  # no NaN or Infinity: any JSON parser reads it
    # the input is scored as the best node (EAP-IG's reader needs a number there; it is always in the graph)
    assert strict["nodes"]["input"]["score"] == max(v["score"] for k, v in strict["nodes"].items() if "score" in v)
    graph = read_mib(out)
    cfg = reference.config
    d, nh, nl = cfg.d_model, cfg.n_head, cfg.n_layer
    assert graph["cfg"] == {"n_layers": nl, "n_heads": nh, "parallel_attn_mlp": False, "d_model": d}
    kept = saved.circuit.kept()
    d_head = cfg.head_dim
    for L in range(nl):
        for h in range(nh):
            ours = any(c // d_head == h for s in ("q", "k", "v") for c in kept[f"{L}.attn.{s}"])
            assert graph["nodes"][f"a{L}.h{h}"]["in_graph"] == ours
            assert graph["nodes"][f"a{L}.h{h}"]["neurons"] == [c in kept[f"{L}.attn.resid_delta"] for c in range(d)]
        assert graph["nodes"][f"m{L}"]["in_graph"] == bool(kept[f"{L}.mlp.post_act"])
    # an MIB edge into an MLP is in the graph iff one of our channel paths realises it, scored by their number
    L = nl - 1
    reads = {e["src_channel"] for e in saved.edges if e["kind"] == "weighted" and e["src_site"] == f"{L}.mlp.act_in"}
    assert graph["edges"][f"input->m{L}"]["in_graph"] == bool(reads)
    assert graph["edges"][f"input->m{L}"]["score"] == len(reads)
    for h in range(nh):
        writes = set(kept[f"{L}.attn.resid_delta"]) if graph["nodes"][f"a{L}.h{h}"]["in_graph"] else set()
        assert graph["edges"][f"a{L}.h{h}->m{L}"]["score"] == len(reads & writes)
    n_src = 1 + nl * (nh + 1)
    per_layer = sum(3 * nh * (1 + L * (nh + 1)) + (1 + L * (nh + 1) + nh) for L in range(nl))
    assert len(graph["edges"]) == per_layer + n_src  # every MIB edge, plus one from each source to the logits
    assert any(e["in_graph"] for e in graph["edges"].values())


def test_a_malformed_mib_file_is_refused(tmp_path, saved_unit):
    good = json.loads(export_mib(load_saved(saved_unit[1]), tmp_path / "g.json").read_text())
    good["edges"]["m1->a0.h0<q>"] = {"in_graph": True, "score": 1.0}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(good))
    with pytest.raises(CircuitbenchError, match="runs backwards"):
        read_mib(bad)


def test_circuit_cli_show_eval_export(saved_unit, tmp_path, capsys, monkeypatch, reference):
    import circuitbench

    monkeypatch.setattr(circuitbench, "load_model", lambda *a, **k: reference)  # the in-memory test model
    path = str(saved_unit[1])
    assert main(["circuit", "show", path]) == 0
    assert main(["circuit", "eval", path]) == 0
    assert "reproduces its stored numbers exactly" in capsys.readouterr().out
    assert main(["circuit", "export", path, "--out", str(tmp_path / "m.json")]) == 0
    read_mib(tmp_path / "m.json")
    assert main(["circuit", "show", str(tmp_path / "missing.parquet")]) == 1
    assert main(["circuit", "draw", path, "--out", str(tmp_path / "c.svg")]) == 0
    svg = (tmp_path / "c.svg").read_text()
    nodes, edges = saved_unit[0]["nodes"], saved_unit[0]["edges"]
    assert svg.startswith("<svg") and svg.count('class="node"') == nodes and f"{nodes} nodes, {edges} edges" in svg
    assert "<style>" in svg and "positive weight" in svg and "residual (no weight)" in svg  # styled, with a legend
    site_ys = [float(y) for y in re.findall(r'y="([\d.]+)" text-anchor="middle" class="site"', svg)]
    assert len(set(site_ys[:2])) == min(2, len(site_ys))  # neighbouring column headers on different rows
    assert main(["circuit", "draw", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "x.svg")]) == 1


def test_an_unpruned_unit_has_no_circuit_and_says_why(tmp_path, reference):
    _, path = _run(tmp_path, reference, min_accuracy=1.0)
    assert not circuit_paths(path)[0].exists()
    with pytest.raises(CircuitbenchError, match="not pruned"):
        load_saved(path)


def test_circuit_gates_break_ties_by_index():
    from circuitbench.results.circuit import SiteLayout

    c = Circuit((SiteLayout("s", "mlp_neuron", 0, 4),), torch.tensor([1.0, 2.0, 2.0, 0.0]), 2, torch.zeros(4))
    assert c.kept() == {"s": [1, 2]}


def test_a_counterfactual_circuit_is_found_measured_and_reevaluates_exactly(counterfactual_unit, saved_unit,
                                                                           reference):
    """Counterfactual ablation end to end: the learned mask trains on whole pairs, the unit says how many
    examples are patched position by position, and the saved circuit re-evaluates to its stored numbers."""
    summary, path = counterfactual_unit  # _run's settings with ablation="counterfactual" (tests/conftest.py)
    assert summary["status"] in ("solved", "train_only", "target_missed") and summary["nodes"] > 0
    saved = load_saved(path)
    aligned = saved.measurements[("test", "counterfactual_aligned_examples")]
    assert 0 <= aligned <= summary["test_examples"]
    from circuitbench.tasks.export import encode_rows
    from circuitbench.tasks.load import get_task

    (row,) = encode_rows([get_task(TASK)], reference.tokenizer, "test")  # `tasks encode` says the same, by name
    assert row["counterfactual_aligned_examples"] == aligned
    rows = compare_stored(saved, reevaluate(saved, reference, "test"))
    assert rows and all(r["equal"] for r in rows), rows
    zero = load_saved(saved_unit[1])  # the same unit under zero ablation
    assert saved.summary["sufficiency_loss"] != zero.summary["sufficiency_loss"]  # a different ablation


def test_a_circuit_of_more_than_10000_edges_keeps_its_strongest_and_says_so(tmp_path, reference):
    """A random ranking keeps thousands of nodes (tens of thousands of edges): the table holds the strongest
    10,000, its metadata the full count, and everything that reads it knows."""
    from circuitbench.results.circuit import EDGE_TABLE_ROWS, edges_total

    summary, path = _run(tmp_path, reference, method="random", method_kwargs={})
    _, epath = circuit_paths(path)
    assert summary["edges"] > EDGE_TABLE_ROWS
    assert pq.read_metadata(epath).num_rows == EDGE_TABLE_ROWS and edges_total(epath) == summary["edges"]
    rows = pq.read_table(epath).to_pylist()
    weights = [abs(r["weight"]) for r in rows if r["kind"] == "weighted"]
    assert weights == sorted(weights, reverse=True)  # the strongest first
    saved = load_saved(path)
    assert not saved.edges_complete and "keeps the strongest 10,000 of" in show(saved)
    with pytest.raises(CircuitbenchError, match="its model is needed to find them all"):
        export_mib(saved, tmp_path / "m.json")
    # with the model, MIB's component graph is exact at any size: the exported edges are those of every channel
    # edge, and the import reads back the same circuit
    graph = json.loads(export_mib(saved, tmp_path / "m.json", lambda: reference).read_text())
    from circuitbench.circuits.edge_level import circuit_edge_rows
    from circuitbench.results.mib import to_mib

    full = circuit_edge_rows(reference, saved.circuit)
    assert len(full) == summary["edges"] and graph["edges"] == to_mib(saved.circuit, full)["edges"]
    assert sum(e["in_graph"] for e in graph["edges"].values()) > 0
    assert to_mib(saved.circuit, saved.edges)["edges"] != graph["edges"]  # the strongest 10,000 count fewer paths
