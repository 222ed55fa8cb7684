"""Edge-level units through the command line on the reference model: compare, save, re-evaluate, MIB round trip."""

import json

import pyarrow.parquet as pq
import pytest

from circuitbench.cli import main
from circuitbench.results.circuit import Circuit, circuit_paths, edges_total
from circuitbench.results.report import collect
from circuitbench.results.store import read_unit
from circuitbench.results.unit import Unit

pytestmark = pytest.mark.slow  # every test here reads an end-to-end pruning run (`-m "not slow"` skips them)

TASKS = "if_equals,with_as"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """The issue's command: edge-level eap, eap_ig and random on two tasks of the reference model."""
    out = tmp_path_factory.mktemp("edges")
    assert main(["compare", "--model", "tiny-sparse", "--level", "edges", "--methods", "eap,eap-ig,random",
                 "--tasks", TASKS, "--out", str(out), "--quiet", "--search-examples", "64"]) == 0
    return out


def test_edge_units_record_their_level_edge_counts_curves_cpr_and_cmd(compared):
    rows = collect(compared)
    assert {r["level"] for r in rows} == {"edges"} and {r["method"] for r in rows} == {"eap", "eap_ig", "random"}
    pruned = [r for r in rows if r["status"] not in ("unsolved", "no_examples")]
    assert {r["task"] for r in pruned} == {"if_equals"}  # with_as: the full model does not solve it
    for r in pruned:
        path = compared / "tiny-sparse" / f"if_equals.{r['method']}.edges.seed0.parquet"
        table, summary, prov = read_unit(path)
        assert prov.unit.level == "edges" and summary["level"] == "edges"
        m = {(x["split"], x["metric"]): x["value"] for x in table.to_pylist()}
        assert m[("", "edges")] == r["edges"] == m[("", "edges_weighted")] + m[("", "edges_residual")]
        assert 0 < r["edges"] < 49920 and 0 < r["nodes"] <= 2816
        assert any(k[1].startswith("curve_edges_f_") for k in m) and ("test", "curve_f_0.001") in m
        assert all(r[k] is not None for k in ("cpr", "cmd", "cpr_log", "cmd_log"))
        circuit = Circuit.load(circuit_paths(path)[0])
        assert circuit.level == "edges" and circuit.k == r["edges"] and len(circuit.scores) == 49920
        assert pq.read_table(circuit_paths(path)[1]).num_rows == min(r["edges"], 10_000)  # the table's cap
        assert edges_total(circuit_paths(path)[1]) == r["edges"]
    by = {r["method"]: r for r in pruned}
    assert by["eap_ig"]["edges"] < by["random"]["edges"] and by["eap_ig"]["cpr_log"] > by["random"]["cpr_log"]
    assert (compared / "compare-tiny-sparse-edges-seed0.png").is_file()


def test_node_level_units_keep_the_keys_they_had(compared):
    """`level` joined the unit's identity at the edge level only: committed node-level units still match."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "baselines/results/tiny-sparse/if_equals.learned_mask.seed0.parquet"
    _, summary, prov = read_unit(path)
    assert prov.unit.level == "nodes" and summary["level"] == "nodes"
    assert prov.unit.key() == prov.unit_key and "level" not in prov.unit.identity()
    edge = Unit(**{**prov.unit.model_dump(), "level": "edges"})
    assert edge.identity()["level"] == "edges" and edge.key() != prov.unit.key()


def test_edge_circuit_eval_and_the_mib_round_trip_reproduce_the_stored_numbers(compared, tmp_path, capsys):
    unit = compared / "tiny-sparse" / "if_equals.eap_ig.edges.seed0.parquet"
    assert main(["circuit", "eval", str(unit)]) == 0
    assert "reproduces its stored numbers exactly" in capsys.readouterr().out
    graph = tmp_path / "c.json"
    assert main(["circuit", "export", str(unit), "--format", "mib", "--out", str(graph)]) == 0
    d = json.loads(graph.read_text())
    assert d["circuitbench"]["level"] == "edges" and any(e["in_graph"] for e in d["edges"].values())
    out = tmp_path / "imported"
    assert main(["circuit", "import", str(graph), "--format", "mib", "--model", "tiny-sparse", "--task", "if_equals",
                 "--out", str(out)]) == 0
    _, original, _ = read_unit(unit)
    imported = out / "tiny-sparse" / "if_equals.imported.edges.seed0.parquet"
    _, again, prov = read_unit(imported)
    for key in ("edges", "nodes", "sufficiency_loss", "necessity_loss", "faithfulness", "full_loss"):
        assert again[key] == original[key], key
    assert prov.method_origin["module"] == "circuitbench.runs.imported"
    assert main(["circuit", "eval", str(imported)]) == 0
    assert "reproduces its stored numbers exactly" in capsys.readouterr().out
    assert main(["circuit", "import", str(graph), "--model", "tiny-sparse", "--task", "if_equals",
                 "--out", str(out)]) == 1  # never overwritten without --force
    assert "--force" in capsys.readouterr().err


def test_a_node_circuit_round_trips_through_mib_exactly(tmp_path):
    """Imported back, the committed circuit is the same circuit, and measures as the committed unit did.

    Bit for bit on the machine kind the unit was made on; across CPU kinds within the reproducibility contract's
    float tolerance (circuitbench.results.reproduce).
    """
    from pathlib import Path

    import torch

    from circuitbench.results.reproduce import close, same_machine_kind

    unit = Path(__file__).resolve().parents[2] / "baselines/results/tiny-sparse/if_equals.learned_mask.seed0.parquet"
    graph = tmp_path / "n.json"
    assert main(["circuit", "export", str(unit), "--format", "mib", "--out", str(graph)]) == 0
    assert main(["circuit", "import", str(graph), "--model", "tiny-sparse", "--task", "if_equals",
                 "--out", str(tmp_path)]) == 0
    _, original, made = read_unit(unit)
    imported = tmp_path / "tiny-sparse" / "if_equals.imported.seed0.parquet"
    _, again, here = read_unit(imported)
    first, second = (Circuit.load(circuit_paths(p)[0]) for p in (unit, imported))
    assert torch.equal(first.gates(), second.gates()) and first.kept() == second.kept()
    for key in ("nodes", "edges"):
        assert again[key] == original[key], key
    assert again["status"] == original["status"] == "solved"  # the evaluator's status rule, held out included
    exact = same_machine_kind(made, here)
    for key in ("sufficiency_loss", "necessity_loss", "faithfulness"):
        assert again[key] == original[key] if exact else close(again[key], original[key]), (key, exact)


def _component_graph(in_graph: set[str], scores: dict[str, float] | None = None) -> dict:
    """An EAP-IG-style Graph JSON for the reference model's shape (2 layers, 4 heads, d_model 128), by hand."""
    nodes = {"input": {"in_graph": True}, "logits": {"in_graph": True}}
    order = ["input"]
    edges = {}
    for L in range(2):
        heads = [f"a{L}.h{h}" for h in range(4)]
        for h in heads:
            nodes[h] = {"in_graph": any(e.startswith(h + "->") or f"->{h}<" in e for e in in_graph)}
            for x in "qkv":
                edges.update({f"{p}->{h}<{x}>": {} for p in order})
        order += heads
        nodes[f"m{L}"] = {"in_graph": any(e.startswith(f"m{L}->") or e.endswith(f"->m{L}") for e in in_graph)}
        edges.update({f"{p}->m{L}": {} for p in order})
        order.append(f"m{L}")
    edges.update({f"{p}->logits": {} for p in order})
    for name in edges:
        edges[name] = {"in_graph": name in in_graph, "score": (scores or {}).get(name, 0.0)}
    assert in_graph <= set(edges)
    return {"cfg": {"n_layers": 2, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 128}, "nodes": nodes,
            "edges": edges}


def test_a_hand_written_eap_ig_circuit_imports_as_an_edge_circuit(tmp_path, capsys):
    from circuitbench import load_model
    from circuitbench.circuits.edge_level import EdgeIndex

    path = tmp_path / "eap_ig.json"
    path.write_text(json.dumps(_component_graph({"input->a0.h1<q>", "a0.h1->m1", "m1->logits"})))
    assert main(["circuit", "import", str(path), "--model", "tiny-sparse", "--task", "if_equals",
                 "--out", str(tmp_path), "--ablation", "zero"]) == 0
    unit = tmp_path / "tiny-sparse" / "if_equals.imported.edges.seed0.parquet"
    _, summary, prov = read_unit(unit)
    assert prov.unit.level == "edges" and prov.unit.ablation == "zero"
    circuit = Circuit.load(circuit_paths(unit)[0])
    names = [s.name for s in circuit.sites]
    rows = [{"src_site": names[a], "src_channel": b, "dst_site": names[c], "dst_channel": d}
            for a, b, c, d in circuit.kept_edges.tolist()]  # all of them (the edge table keeps the strongest 10,000)
    kept = {(r["src_site"], r["dst_site"]) for r in rows}
    adapter = load_model("tiny-sparse", device="cpu")
    edges = EdgeIndex.of(adapter)
    # a0.h1 -> m1: every residual edge from layer 0's attention write to layer 1's MLP read, and m1's own weights
    assert ("0.attn.resid_delta", "1.mlp.act_in") in kept and ("1.mlp.act_in", "1.mlp.post_act") in kept
    assert ("1.mlp.post_act", "1.mlp.resid_delta") in kept
    # input -> a0.h1<q>: the weights into head 1's q channels only (32 per head)
    q = [r for r in rows if r["dst_site"] == "0.attn.q"]
    assert q and all(32 <= r["dst_channel"] < 64 for r in q)
    assert not any(d == "0.attn.k" or d.startswith("0.mlp") or d == "1.attn.q" for _, d in kept)
    assert summary["edges"] == len(rows) < edges.size
    assert sum(1 for r in rows if r["src_site"] == "0.attn.resid_delta" and r["dst_site"] == "1.mlp.act_in") == 128
    assert main(["circuit", "eval", str(unit)]) == 0
    assert "reproduces its stored numbers exactly" in capsys.readouterr().out


def test_an_importance_score_file_imports_at_a_percentage_of_the_edges(tmp_path):
    scores = {"a0.h2->m0": 3.0, "input->a1.h0<k>": -2.0, "m0->m1": 1.0}
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(_component_graph(set(), scores)))
    assert main(["circuit", "import", str(path), "--model", "tiny-sparse", "--task", "if_equals",
                 "--out", str(tmp_path)]) == 1  # nothing in_graph: say to give --percent
    assert main(["circuit", "import", str(path), "--model", "tiny-sparse", "--task", "if_equals",
                 "--out", str(tmp_path), "--percent", "0.1"]) == 0
    unit = tmp_path / "tiny-sparse" / "if_equals.imported.edges.seed0.parquet"
    _, summary, _ = read_unit(unit)
    assert summary["edges"] == round(49920 * 0.001)
    rows = pq.read_table(circuit_paths(unit)[1]).to_pylist()
    assert {(r["src_site"], r["dst_site"]) for r in rows} == {("0.attn.resid_delta", "0.mlp.act_in")}  # |3| first


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "3.0", True])
def test_a_score_that_cannot_be_ranked_is_refused_by_name(tmp_path, capsys, bad):
    graph = _component_graph(set(), {"a0.h2->m0": 3.0, "m0->m1": 1.0})
    graph["edges"]["m0->m1"]["score"] = bad  # json writes NaN and Infinity, as Python's json reads them
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(graph))
    assert main(["circuit", "import", str(path), "--model", "tiny-sparse", "--task", "if_equals",
                 "--out", str(tmp_path), "--percent", "0.1"]) == 1
    assert f"edge 'm0->m1' has score {bad!r}; a score is a finite number" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.parquet"))


def test_counterfactual_edge_units_run_and_reevaluate_exactly(tmp_path, capsys):
    assert main(["run", "--model", "tiny-sparse", "--level", "edges", "--ablation", "counterfactual", "--method",
                 "eap", "--tasks", "if_equals", "--out", str(tmp_path), "--quiet", "--search-examples", "64"]) == 0
    unit = tmp_path / "tiny-sparse" / "if_equals.eap.edges.seed0.parquet"
    table, summary, prov = read_unit(unit)
    assert prov.unit.ablation == "counterfactual" and prov.unit.level == "edges"
    assert summary["status"] in ("solved", "train_only")  # met the target on the search pairs
    assert any(r["metric"] == "counterfactual_aligned_examples" for r in table.to_pylist())
    capsys.readouterr()
    assert main(["circuit", "eval", str(unit)]) == 0
    assert "reproduces its stored numbers exactly" in capsys.readouterr().out
