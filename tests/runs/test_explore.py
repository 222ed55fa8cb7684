"""What each node of a saved circuit does: the node table, measured on a real model, stored, reused, exported."""

import json
import math
import re

import pyarrow.parquet as pq
import pytest
import torch

from circuitbench.circuits.masks import NodeIndex
from circuitbench.circuits.metrics import score
from circuitbench.circuits.problem import Problem
from circuitbench.cli import main
from circuitbench.protocols import Batch
from circuitbench.results.nodes import node_table_path, read_node_table
from circuitbench.runs.explore import load_or_compute, node_data
from circuitbench.runs.saved import load_saved
from circuitbench.tasks.encode import encode_task
from circuitbench.tasks.load import get_task

pytestmark = pytest.mark.slow  # every test here reads an end-to-end pruning run (`-m "not slow"` skips them)

TASK = "single_double_quote"


@pytest.fixture(scope="module")
def adapter(tiny_sparse):
    return tiny_sparse


@pytest.fixture(scope="module")
def unit(quote_unit):
    """A fast learned mask's circuit of single_double_quote (the session's, tests/conftest.py)."""
    return quote_unit[1]


@pytest.fixture(scope="module")
def table(unit, adapter):
    return load_or_compute(load_saved(unit), lambda: adapter)


def test_every_kept_node_has_an_activation_for_every_test_example(unit, table, adapter):
    saved = load_saved(unit)
    n_test = len(encode_task(get_task(TASK), adapter.tokenizer, "test").last)
    kept = {f"{site}:{ch}" for site, chans in saved.circuit.kept().items() for ch in chans}
    assert {r["node"] for r in table.rows} == kept and len(kept) == saved.circuit.k
    for r in table.rows:
        assert len(r["activation"]) == n_test and len(r["ablation_effect"]) == table.meta["ablation_rows"] == 64
        assert len(r["top_rows"]) == len(r["top_activations"]) == 4
        for row, acts in zip(r["top_rows"], r["top_activations"], strict=True):
            assert len(acts) == len(table.meta["examples"][row]["tokens"])
            assert acts[-1] == pytest.approx(r["activation"][row])  # the last prompt token is the answer position
    assert [e["side"] for e in table.meta["examples"][:4]] == [0, 1, 0, 1]
    assert table.meta["examples"][0]["correct"] == '"' and table.meta["examples"][1]["correct"] == "'"


def test_activations_at_the_first_site_equal_the_models_own(unit, table, adapter):
    # nothing upstream of the first site is gated, so its kept channels carry the clean model's values
    saved = load_saved(unit)
    first = saved.circuit.sites[0].name
    rows = [r for r in table.rows if r["site"] == first]
    assert rows, "the circuit keeps no node of the first site; pick another task"
    enc = encode_task(get_task(TASK), adapter.tokenizer, "test")
    batch = Batch.of(enc)
    _, cache = adapter.run_with_cache(batch.tokens, names=[first])
    clean = cache[first][torch.arange(len(batch)), batch.last]
    for r in rows:
        assert r["activation"] == pytest.approx(clean[:, r["channel"]].tolist(), rel=1e-4, abs=1e-5)


def test_ablated_loss_is_the_circuit_measured_without_that_node(unit, table, adapter):
    saved = load_saved(unit)
    index = NodeIndex.of(adapter)
    train, test = (Batch.of(encode_task(get_task(TASK), adapter.tokenizer, s)) for s in ("train", "test"))
    problem = Problem(adapter, index, saved.circuit.ablation_values, train, 0, False)
    gates = saved.circuit.gates()
    assert saved.circuit.calibration is None  # the default: the circuit's loss is its uncalibrated loss
    assert table.meta["circuit_loss"] == pytest.approx(saved.measurements[("test", "sufficiency_loss")], abs=1e-6)
    strongest = max(table.rows, key=lambda r: r["score"])
    flat = index.offsets[[s.name for s in index.sites].index(strongest["site"])] + strongest["channel"]
    g = gates.clone()
    g[flat] = 0.0
    few = test.take(torch.arange(64))
    two = problem.two_logits(few, g)
    assert strongest["ablated_loss"] == pytest.approx(score(two).loss, rel=1e-4)
    lead = problem.two_logits(few, gates)
    assert table.meta["circuit_loss_ablation_rows"] == pytest.approx(score(lead).loss, rel=1e-5)
    drop = (lead[:, 0] - lead[:, 1]) - (two[:, 0] - two[:, 1])
    assert strongest["ablation_effect"] == pytest.approx(drop.tolist(), abs=1e-3)


def test_the_separation_is_the_sides_difference_in_spread_units(table):
    for r in table.rows:
        a = torch.tensor(r["activation"])
        m0, m1 = float(a[0::2].mean()), float(a[1::2].mean())
        assert r["mean_side0"] == pytest.approx(m0, abs=1e-5) and r["mean_side1"] == pytest.approx(m1, abs=1e-5)
        spread = float(torch.cat([a[0::2] - m0, a[1::2] - m1]).std())
        assert r["separation"] * spread == pytest.approx(m0 - m1, abs=1e-5)


def test_the_table_is_stored_beside_the_unit_and_reused_until_the_unit_changes(unit, table, adapter):
    path = node_table_path(unit)
    assert path.is_file() and read_node_table(path).rows == table.rows

    def no_model():
        raise AssertionError("a current node table must not load the model")

    assert load_or_compute(load_saved(unit), no_model).meta == table.meta
    stale = read_node_table(path)
    from circuitbench.results.nodes import NodeTable, write_node_table

    write_node_table(path, NodeTable(stale.rows[:1], {**stale.meta, "unit_key": "another unit"}))
    again = load_or_compute(load_saved(unit), lambda: adapter)
    assert len(again.rows) == len(table.rows)


def test_counterfactual_ablation_is_measured_with_partner_values(adapter, counterfactual_unit):
    saved = load_saved(counterfactual_unit[1])
    t = node_data(saved, adapter)
    assert t.meta["circuit_loss"] == pytest.approx(saved.measurements[("test", "sufficiency_loss")], abs=1e-6)
    assert all(math.isfinite(r["ablated_loss"]) for r in t.rows[:20])


def test_graph_json_has_circuit_tracers_fields_and_the_circuits_edges(unit, table, tmp_path, capsys):
    out = tmp_path / "graph.json"
    assert main(["circuit", "export", str(unit), "--format", "graph-json", "--out", str(out), "--example", "3"]) == 0
    g = json.loads(out.read_text())
    # circuit-tracer's frontend models (circuit_tracer/frontend/graph_models.py): Metadata, QParams, Node, Link
    meta_fields = {"slug": str, "scan": str, "transcoder_list": list, "prompt_tokens": list, "prompt": str}
    assert all(isinstance(g["metadata"][k], t) for k, t in meta_fields.items())
    assert set(g["qParams"]) == {"pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"}
    node_fields = {"node_id": str, "feature": int, "layer": str, "ctx_idx": int, "feature_type": str,
                   "token_prob": float, "is_target_logit": bool, "run_idx": int, "reverse_ctx_idx": int,
                   "jsNodeId": str, "clerp": str}
    for n in g["nodes"]:
        assert all(isinstance(n[k], t) for k, t in node_fields.items()), n
        assert n["influence"] is None and (n["activation"] is None or isinstance(n["activation"], float))
    ids = [n["node_id"] for n in g["nodes"]]
    assert len(ids) == len(set(ids)) == len(table.rows) + 2
    assert sum(n["is_target_logit"] for n in g["nodes"]) == 1
    assert all(set(link) == {"source", "target", "weight"} and {link["source"], link["target"]} <= set(ids)
               for link in g["links"])
    ex = table.meta["examples"][3]
    assert g["metadata"]["prompt_tokens"] == ex["tokens"] and all(n["ctx_idx"] == len(ex["tokens"]) - 1
                                                                   for n in g["nodes"])
    saved = load_saved(unit)
    weighted = sorted(e["weight"] for e in saved.edges if e["kind"] == "weighted")
    by_id = {n["node_id"]: n for n in g["nodes"]}
    internal = sorted(link["weight"] for link in g["links"] if by_id[link["target"]]["feature_type"] != "logit"
                      and link["weight"] != 1.0)
    assert internal == pytest.approx([w for w in weighted if w != 1.0])
    assert main(["circuit", "export", str(unit), "--format", "graph-json", "--out", str(out), "--example", "9999",
                 "--force"]) == 1  # --force: the file from above is there
    assert "--example 9999" in capsys.readouterr().err


def test_circuit_tracers_own_server_lists_and_serves_an_exported_folder(unit, table, tmp_path):
    """`--out DIR`: DIR/SLUG.json and DIR/graph-metadata.json, read by circuit-tracer's own handler (127.0.0.1)."""
    import functools
    import threading
    import urllib.request

    from circuit_tracer.frontend.graph_models import Model
    from circuit_tracer.frontend.local_server import CircuitGraphHandler, ReusableTCPServer

    data = tmp_path / "graphs"
    for example in (0, 2):
        assert main(["circuit", "export", str(unit), "--format", "graph-json", "--out", str(data),
                     "--example", str(example)]) == 0
    # the handler as circuit-tracer 0.5's serve() builds it; serve() binds every interface, a test must not
    handler = functools.partial(CircuitGraphHandler, frontend_dir=tmp_path, data_dir=str(data))
    server = ReusableTCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        listing = json.loads(urllib.request.urlopen(f"{base}/data/graph-metadata.json").read())
        slugs = [g["slug"] for g in listing["graphs"]]
        assert len(slugs) == 2 and slugs[0].endswith("-ex0") and slugs[1].endswith("-ex2")
        for slug in slugs:
            graph = Model.model_validate_json(urllib.request.urlopen(f"{base}/graph_data/{slug}.json").read())
            assert graph.metadata.slug == slug
            (answer,) = [n for n in graph.nodes if n.is_target_logit]
            shown = float(re.search(r"\(p=([0-9.]+)\)$", answer.clerp).group(1))  # what the frontend parses
            assert shown == pytest.approx(answer.token_prob, abs=5e-4)
    finally:
        server.shutdown()
        server.server_close()
    assert main(["circuit", "export", str(unit), "--format", "graph-json", "--out", str(data)]) == 1  # no --force
    assert main(["circuit", "export", str(unit), "--format", "graph-json", "--out", str(data), "--force"]) == 0
    assert len(json.loads((data / "graph-metadata.json").read_text())["graphs"]) == 2  # replaced, not repeated


def test_parquet_export_round_trips(unit, table, tmp_path):
    out = tmp_path / "tables"
    assert main(["circuit", "export", str(unit), "--format", "parquet", "--out", str(out)]) == 0
    assert read_node_table(out / "nodes.parquet").rows == table.rows
    saved = load_saved(unit)
    edges = pq.read_table(out / "edges.parquet").to_pylist()

    def plain(e):  # NaN (a residual edge's weight) is not equal to itself
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in e.items() if k not in ("src", "dst")}

    assert [plain(e) for e in edges] == [plain(e) for e in saved.edges] and edges
    nodes = {r["node"] for r in table.rows}
    assert all(e["src"] in nodes and e["dst"] in nodes for e in edges)  # the two tables join on node names


def test_a_node_table_beside_a_unit_is_not_taken_for_a_unit(unit, table, capsys):
    from circuitbench.results.store import unit_files

    assert node_table_path(unit).is_file()
    assert unit_files(unit.parents[1]) == [unit]
    assert main(["report", "--out", str(unit.parents[1])]) == 0  # the results directory still reads as one unit
    out = capsys.readouterr().out
    assert "tiny-sparse" in out and "learned_mask" in out and "1         1" in out  # one task, solved


def test_a_device_circuitbench_cannot_use_is_refused_before_anything_is_read_or_removed(unit, table, tmp_path, capsys):
    from circuitbench.cli import main

    path = node_table_path(unit)
    before = path.read_bytes()
    bad = "cuda:0" if not torch.cuda.is_available() else "nonsense"
    for argv in (["circuit", "explore", str(unit), "--out", str(tmp_path / "p"), "--recompute", "--device", bad],
                 ["circuit", "eval", str(unit), "--device", "nonsense"],
                 ["circuit", "backup", str(unit), "--device", bad],
                 ["circuit", "export", str(unit), "--format", "parquet", "--out", str(tmp_path / "x"), "--device", bad]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "--device" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert path.read_bytes() == before, argv  # --recompute replaces the table only with a complete new one
    assert not (tmp_path / "p").exists() and not (tmp_path / "x").exists()
