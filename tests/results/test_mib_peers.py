"""What `circuit export --format mib` writes, EAP-IG's own reader loads: the graph code MIB's circuit track uses.

The oracle is EAP-IG's `eap/graph.py` as the workplace keeps it (`../shared/peers/eap`, hannamw/EAP-IG at
795f560), imported from there, never copied into circuitbench.
"""

import json
import sys
from pathlib import Path

import pytest

from circuitbench.cli import main

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO.parent / "shared" / "peers"


@pytest.fixture(scope="module")
def eap_graph():
    """EAP-IG's `Graph` class."""
    assert (PEERS / "eap" / "graph.py").is_file(), (
        f"EAP-IG's graph code is expected at {PEERS / 'eap'} (the workplace's shared peers, beside the repository)")
    sys.path.insert(0, str(PEERS))
    try:
        from eap.graph import Graph
    finally:
        sys.path.remove(str(PEERS))
    return Graph


@pytest.mark.parametrize("unit", ["results/tiny-sparse/if_equals.learned_mask.seed0.parquet",
                                  "results-edges/tiny-sparse/if_equals.eap_ig.edges.seed0.parquet"],
                         ids=["node level", "edge level"])
def test_eap_igs_own_reader_loads_the_export_with_the_same_nodes_and_edges(eap_graph, unit, tmp_path):
    out = tmp_path / "graph.json"
    assert main(["circuit", "export", str(REPO / "baselines" / unit), "--format", "mib", "--out", str(out)]) == 0
    ours = json.loads(out.read_text())
    graph = eap_graph.from_json(str(out))  # before the fix: TypeError on the input node's null score
    nodes = {name: bool(node.in_graph) for name, node in graph.nodes.items() if name != "logits"}
    assert nodes == {name: v["in_graph"] for name, v in ours["nodes"].items() if name != "logits"}
    edges = {name: bool(edge.in_graph) for name, edge in graph.edges.items()}
    assert edges == {name: v["in_graph"] for name, v in ours["edges"].items()}
    assert 0 < sum(edges.values()) < len(edges) and sum(nodes.values()) > 1
    assert graph.nodes["input"].score == max(v["score"] for v in ours["nodes"].values() if "score" in v)
    # the embedding is never ablated here: EAP-IG must not corrupt any of the input's neurons (before: none in graph)
    assert bool(graph.neurons_in_graph[graph.forward_index(graph.nodes["input"])].all())
    before = (int(graph.nodes_in_graph.sum()), int(graph.in_graph.sum()))
    graph.prune()  # what EAP-IG's evaluate_graph runs first (benchmarks/mib_prune.py measures it on every unit)
    assert bool(graph.nodes["input"].in_graph) and int(graph.in_graph.sum()) <= before[1]


def test_a_neuron_level_graph_imports(eap_graph, tmp_path, capsys):
    """A neuron-level graph of EAP-IG's names (attention neurons as n_heads lists of d_head, unscored nodes NaN).

    Written by hand: EAP-IG's own `to_json` cannot write a neuron-level graph at 795f560 (the logits node has no
    row in its neuron table: IndexError).
    """
    g = eap_graph.from_model({"n_layers": 2, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 128},
                             neuron_level=True, node_scores=True)
    kept = {"input->a0.h1<q>", "a0.h1->m1", "m1->logits"}
    nodes = {name: {"in_graph": name in ("input", "logits", "a0.h1", "m1"), "score": float("nan")}
             for name in g.nodes}
    for name, node in nodes.items():
        if name.startswith("a"):
            node["neurons"] = [[True] * 32 for _ in range(4)]
        elif name != "logits":
            node["neurons"] = [True] * 128
    edges = {name: {"in_graph": name in kept, "score": 1.0 if name in kept else 0.0} for name in g.edges}
    path = tmp_path / "neurons.json"
    path.write_text(json.dumps({"cfg": {"n_layers": 2, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 128},
                                "nodes": nodes, "edges": edges}))
    assert main(["circuit", "import", str(path), "--model", "tiny-sparse", "--task", "if_equals",
                 "--out", str(tmp_path / "out")]) == 0
    assert "edge-level circuit imported" in capsys.readouterr().out
