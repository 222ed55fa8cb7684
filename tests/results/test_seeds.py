"""Seeds: one run over several seeds, and the spread and overlap of the circuits it found."""

import itertools
import statistics

import pytest

from circuitbench.results.circuit import Circuit, circuit_paths
from circuitbench.results.report import collect
from circuitbench.results.seeds import jaccard, seed_table
from circuitbench.runs.runner import RunConfig, run


def test_jaccard():
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3) and jaccard(set(), set()) == 1.0
    assert jaccard({1}, set()) == 0.0


def test_a_run_over_three_seeds_reports_their_spread_and_overlap(tmp_path, small_adapter):
    cfg = RunConfig(model="small", tasks=["lambda_func"], method="random", ablation="task-mean", min_accuracy=0.0,
                    target_loss=0.05, control=False, out=tmp_path, show_progress=False, search_examples=32)
    rows = run(cfg, small_adapter, seeds=[0, 1, 2])
    assert [r["seed"] for r in rows] == [0, 1, 2]
    (row,) = seed_table(collect(tmp_path), tmp_path)
    assert (row["model"], row["task"], row["method"], row["seeds"]) == ("small", "lambda_func", "random", 3)
    nodes = [r["nodes"] for r in rows]
    assert row["nodes_mean"] == pytest.approx(statistics.fmean(nodes))
    assert row["nodes_std"] == pytest.approx(statistics.stdev(nodes))
    kept = []
    for seed in (0, 1, 2):
        path = tmp_path / "small" / f"lambda_func.random.seed{seed}.parquet"
        c = Circuit.load(circuit_paths(path)[0])
        kept.append({(s, ch) for s, chans in c.kept().items() for ch in chans})
    expected = statistics.fmean(jaccard(a, b) for a, b in itertools.combinations(kept, 2))
    assert row["node_jaccard"] == pytest.approx(expected) and 0.0 <= row["edge_jaccard"] <= 1.0


def test_report_seeds_from_the_cli(tmp_path, small_adapter, capsys):
    from circuitbench.cli import main

    cfg = RunConfig(model="small", tasks=["lambda_func"], method="random", ablation="zero", min_accuracy=0.0,
                    control=False, out=tmp_path, show_progress=False, search_examples=32)
    run(cfg, small_adapter, seeds=[3, 4])
    assert main(["report", "--out", str(tmp_path), "--seeds", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert '"seeds": 2' in out and '"node_jaccard"' in out
    assert main(["run", "--seeds", "0,x"]) == 1
    assert "--seeds 0,x: give comma-separated whole numbers" in capsys.readouterr().err
