"""The benchmark scripts keep working: each runs at a tiny size on CPU (their numbers live in BENCHMARKS.md)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_gpu_runs_at_a_tiny_shape_on_cpu(tmp_path):
    out = _script("bench_gpu").main(["--shape", "tiny", "--device", "cpu", "--steps", "3", "--reps", "2",
                                     "--batch-pairs", "4", "--json", str(tmp_path / "gpu.json")])
    assert out["device"] == "cpu" and out["nodes"] == 2 * (64 * 7 + 256)
    assert math.isfinite(out["prune_over_plain"]) and out["prune_over_plain"] > 0
    assert 0 <= out["circuit_nodes"] <= out["nodes"] and out["search_evaluations"] >= 1
    assert out["peak_memory_gib"] > 0
    assert json.loads((tmp_path / "gpu.json").read_text())["mask_steps"] == 3


@pytest.mark.slow
def test_bench_methods_times_each_method_against_one_forward_and_backward_pass(tmp_path):
    out = _script("bench_methods").main(["--tasks", "else_elif", "--methods", "eap,random,magnitude",
                                         "--ablation", "zero", "--json", str(tmp_path / "m.json")])
    assert [r["method"] for r in out] == ["eap", "random", "magnitude"]
    assert all(r["fwd_bwd_s"] > 0 and math.isfinite(r["ratio"]) for r in out)
    eap = out[0]
    assert eap["forward_passes"] == eap["backward_passes"] >= 1  # eap declares a forward and a backward per batch
    assert json.loads((tmp_path / "m.json").read_text()) == out


@pytest.mark.slow
def test_planted_auroc_reports_every_method_under_both_ablations():
    out = _script("planted_auroc").main(["--seeds", "2"])
    by = {r["method"]: r for r in out}
    assert set(by) >= {"learned_mask", "eap", "eap_ig", "activation_patching", "magnitude", "random"}
    for name in ("learned_mask", "eap", "eap_ig", "activation_patching"):
        assert by[name]["task-mean"] >= 0.95 and by[name]["counterfactual"] >= 0.95
        assert by[name]["edges"] >= 0.95  # the planted edges, at --level edges
    assert 0.0 <= by["magnitude"]["task-mean"] <= 1.0 and by["magnitude"]["edges"] is None


def test_bench_adapters_times_every_route_against_the_plain_model(tmp_path):
    out = _script("bench_adapters").main(["--d-model", "64", "--layers", "1", "--batch", "4", "--seq", "6",
                                          "--reps", "1", "--json", str(tmp_path / "a.json")])
    assert [r["adapter"] for r in out] == ["-", "HFAdapter", "HFAdapter", "TLAdapter", "BridgeAdapter"]
    assert out[0]["ratio"] == 1.0 and all(r["seconds"] > 0 and math.isfinite(r["ratio"]) for r in out)
    assert json.loads((tmp_path / "a.json").read_text()) == out


@pytest.mark.slow
def test_bench_explore_times_a_committed_circuits_page_against_one_forward_pass(tmp_path):
    unit = REPO / "baselines" / "results" / "tiny-sparse" / "while_return_true.learned_mask.seed0.parquet"
    out = _script("bench_explore").main([str(unit), "--threads", "1", "--json", str(tmp_path / "x.json")])
    (row,) = out
    assert row["forward s"] > 0 and row["measure s"] > row["forward s"] and row["x forward"] > 1
    assert row["nodes"] > 0 and row["page KB"] > 10 and row["node table KB"] > 1
    assert json.loads((tmp_path / "x.json").read_text())["rows"] == out
    assert not (unit.parent / "while_return_true.learned_mask.seed0.nodes.parquet").exists()  # nothing written there


@pytest.mark.slow
def test_bench_bridges_times_a_bridge_step_and_a_steer_against_a_forward_backward(tmp_path):
    out = _script("bench_bridges").main(["--batch", "2", "--ctx", "32", "--reps", "1", "--threads", "1",
                                         "--controls", "1", "--json", str(tmp_path / "b.json")])
    base, step, steer = out
    assert base["x baseline"] == 1.0 and step["x baseline"] > 1 and steer["s"] > 0
    assert "5 locations" in step["what"] and json.loads((tmp_path / "b.json").read_text())["rows"] == out


def test_bench_edges_times_edge_gates_against_node_gates(tmp_path):
    out = _script("bench_edges").main(["--batch", "8", "--reps", "1", "--threads", "1",
                                       "--json", str(tmp_path / "e.json")])
    assert out[0]["x baseline"] == 1.0 and all(r["s"] > 0 for r in out)
    assert "49920 edges" in out[1]["what"] and out[1]["x baseline"] > 1  # masked products cost more than gating
    assert json.loads((tmp_path / "e.json").read_text())["rows"] == out


def test_bench_train_profiles_a_training_step_by_phase_and_operator():
    bench = _script("bench_train")
    data = bench.batches(None, 6, 2, 16)
    shape = dict(n_layer=1, d_model=32, n_head=4, batch_size=2, ctx=16, max_steps=24, weight_density=0.25)
    out = bench.profile_step(shape, data, warmup=2)
    assert set(out["phases_ms"]) == {"forward and loss", "backward", "gradient normalisation", "optimizer",
                                     "projection"}
    assert math.isclose(sum(out["phases_ms"].values()), out["ms_per_step"], rel_tol=0.01, abs_tol=0.3)
    ops = {o["op"] for o in out["top_ops"]}
    assert "aten::topk" in ops  # AbsTopK and the projection both rank by magnitude
    assert all(o["ms_per_step"] >= 0 for o in out["top_ops"]) and out["precision"] in ("float32", "bfloat16")
