import math

import pyarrow.parquet as pq
import pytest
import torch

from circuitbench.models.native import SparseGPTAdapter
from circuitbench.results.schema import MEASUREMENTS, SUMMARY
from circuitbench.results.store import read_unit
from circuitbench.runs.runner import RunConfig, geometric_means, run

TASK = "while_return_true"


def _cfg(tmp_path, **over):
    base = dict(model="small", tasks=[TASK], method_kwargs={"steps": 5}, ablation="task-mean",
                min_accuracy=0.0, out=tmp_path, show_progress=False, search_examples=64)
    return RunConfig(**{**base, **over})


def test_run_writes_schema_valid_units_and_a_summary_with_provenance(tmp_path, small_adapter):
    (summary,) = run(_cfg(tmp_path), small_adapter)
    table, unit_summary, prov = read_unit(next(tmp_path.glob("small/*.seed0.parquet")))
    assert table.schema.equals(MEASUREMENTS, check_metadata=False)
    u = prov.unit
    assert u.task == TASK and u.method == "learned_mask" and u.method_kwargs["steps"] == 5
    assert u.model.weights_sha256 == "test-small" and u.ablation == "task-mean" and len(u.task_hash) > 6
    assert prov.unit_key == u.key() and prov.threads >= 1 and prov.torch_version == torch.__version__
    metrics = set(table.column("metric").to_pylist())
    assert {"full_loss", "sufficiency_loss", "necessity_loss", "nodes", "edges", "faithfulness",
            "control_nodes"} <= metrics
    assert pq.read_table(tmp_path / "summary.parquet").schema.equals(SUMMARY, check_metadata=False)
    assert unit_summary == summary
    assert summary["status"] in ("solved", "train_only", "target_missed")
    assert 0 <= summary["nodes"] <= sum(s.width for s in small_adapter.sites)


def test_rerun_skips_finished_units_and_force_recomputes(tmp_path, small_adapter):
    run(_cfg(tmp_path), small_adapter)
    unit = next(tmp_path.glob("small/*.seed0.parquet"))
    before = unit.stat().st_mtime_ns
    run(_cfg(tmp_path), small_adapter)
    assert unit.stat().st_mtime_ns == before
    run(_cfg(tmp_path, force=True), small_adapter)
    assert unit.stat().st_mtime_ns != before


@pytest.mark.parametrize("lost", [".circuit.safetensors", ".edges.parquet"])
def test_a_pruned_unit_whose_circuit_files_were_deleted_is_computed_again(tmp_path, small_adapter, lost, caplog):
    from circuitbench.results.circuit import circuit_paths

    (first,) = run(_cfg(tmp_path), small_adapter)
    unit = next(p for p in tmp_path.glob("small/*.seed0.parquet") if not p.name.endswith(".edges.parquet"))
    assert first["nodes"] is not None
    gone = next(p for p in circuit_paths(unit) if p.name.endswith(lost))
    gone.unlink()
    before = unit.stat().st_mtime_ns
    (again,) = run(_cfg(tmp_path), small_adapter)
    assert gone.is_file() and unit.stat().st_mtime_ns != before  # not taken as done without its circuit
    assert "computing the unit again" in caplog.text and again["nodes"] == first["nodes"]


def test_unsolved_task_is_reported_not_pruned(tmp_path, small_adapter):
    (summary,) = run(_cfg(tmp_path, min_accuracy=1.0), small_adapter)
    assert summary["status"] == "unsolved" and summary.get("nodes") is None
    assert summary["full_accuracy"] <= 1.0


def test_circuit_meets_target_on_the_search_split_when_it_says_solved(tmp_path, small_adapter):
    (summary,) = run(_cfg(tmp_path, target_loss=0.69), small_adapter)  # a loose target (just below chance)
    assert summary["status"] == "solved" and summary["circuit_train_loss"] <= 10.0
    assert summary["nodes"] == 0  # the empty circuit already meets it: bisection finds the smallest


def test_an_empty_circuit_is_not_reported_as_a_mean_of_one_node(tmp_path, small_adapter, capsys):
    from circuitbench.cli.run import _run_notes

    (summary,) = run(_cfg(tmp_path, target_loss=0.69), small_adapter)
    assert summary["status"] == "solved" and summary["nodes"] == 0 and summary["edges"] == 0
    capsys.readouterr()
    _run_notes([summary], 0.0, tmp_path)
    out = capsys.readouterr().out
    assert "geometric mean" not in out and "every one of them is an empty circuit (0 nodes, 0 edges)" in out
    assert "Circuits of 0 nodes: " + TASK in out
    _run_notes([summary, {**summary, "task": "other", "nodes": 16, "edges": 100}], 0.0, tmp_path)
    assert "geometric mean over them: 4.0 nodes, 10.0 edges (1 empty circuit(s) counted as 1 node, 1 edge)" in (
        capsys.readouterr().out)


def test_geometric_means_use_solved_tasks_only():
    rows = [{"status": "solved", "nodes": 4, "edges": 10}, {"status": "solved", "nodes": 16, "edges": 1000},
            {"status": "unsolved"}]
    g = geometric_means(rows)
    assert g["solved"] == 2 and math.isclose(g["geomean_nodes"], 8.0) and math.isclose(g["geomean_edges"], 100.0)


def test_all_ones_and_all_zeros_gates_bracket_the_model(small_adapter, python_bpe):
    from circuitbench.circuits.masks import NodeIndex
    from circuitbench.circuits.problem import Problem
    from circuitbench.protocols import Batch
    from circuitbench.tasks.encode import encode_task
    from circuitbench.tasks.load import get_task

    rows = Batch.of(encode_task(get_task(TASK), python_bpe, "test"), small_adapter.device)
    index = NodeIndex.of(small_adapter)
    p = Problem(small_adapter, index, torch.zeros(index.size), rows, 0, show_progress=False)
    assert torch.equal(p.two_logits(rows, torch.ones(index.size)), p.two_logits(rows, None))
    assert not torch.equal(p.two_logits(rows, torch.zeros(index.size)), p.two_logits(rows, None))


def test_mean_ablation_is_computed_only_when_a_task_is_pruned(tmp_path, small_adapter, monkeypatch):
    monkeypatch.setenv("CIRCUITBENCH_CACHE", str(tmp_path / "cache"))
    run(_cfg(tmp_path / "a", ablation="mean", min_accuracy=1.0), small_adapter)  # unsolved: not pruned
    assert not (tmp_path / "cache").exists()
    (summary,) = run(_cfg(tmp_path / "b", ablation="mean"), small_adapter)
    assert len(list((tmp_path / "cache" / "ablation").glob("*.pt"))) == 1
    assert summary["status"] in ("solved", "train_only", "target_missed")


def test_calibration_recovers_a_known_scale_and_shift_and_cannot_flip_answers():
    from circuitbench.circuits.metrics import score
    from circuitbench.circuits.problem import fit_calibration
    from circuitbench.protocols import Batch

    g = torch.Generator().manual_seed(0)
    n = 200
    # pairs: token 5 correct in even rows, token 7 in odd rows; true logit diff +2 with noise
    correct = torch.tensor([5, 7] * (n // 2))
    incorrect = torch.tensor([7, 5] * (n // 2))
    rows = Batch(torch.zeros(n, 1, dtype=torch.long), torch.zeros(n, dtype=torch.long), correct, incorrect)
    clean = torch.stack([2.0 + 0.3 * torch.randn(n, generator=g), torch.zeros(n)], 1)
    # the circuit's logits: squashed by 0.1 and offset towards token 7 by 0.15
    bias = torch.where(correct == 7, 0.15, 0.0), torch.where(incorrect == 7, 0.15, 0.0)
    squashed = 0.1 * clean + torch.stack(bias, 1)
    cal = fit_calibration(squashed, rows)
    assert score(cal.apply(squashed, rows)).loss < score(squashed).loss
    assert cal.scale > 5  # undoes the squashing (the loss keeps rewarding confidence, so larger is fine)
    assert cal.shift[7] - cal.shift[5] < 0  # undoes the offset towards token 7
    # inverted labels: calibration must not be able to flip the model into solving them
    swapped = Batch(rows.tokens, rows.last, incorrect, correct)
    inv = squashed.flip(1)
    inv_cal = fit_calibration(inv, swapped)
    assert inv_cal.scale > 0
    flipped = score(inv_cal.apply(inv, swapped))
    assert flipped.accuracy <= 0.5 and flipped.loss >= math.log(2) - 1e-3  # chance at best


def test_calibrated_run_records_the_calibration_and_phase_times(tmp_path, small_adapter):
    (summary,) = run(_cfg(tmp_path, calibrate=True, target_loss=0.69), small_adapter)
    table, _, _ = read_unit(next(tmp_path.glob("small/*.seed0.parquet")))
    values = dict(zip(table.column("metric").to_pylist(), table.column("value").to_pylist(), strict=False))
    if summary["status"] != "unsolved":
        assert values["calibration_scale"] > 0
        assert "sufficiency_uncalibrated_loss" in values
    # target 0.69: the empty circuit meets it; calibrated like faithfulness's zero point, it is no more faithful
    assert summary["nodes"] == 0 and summary["faithfulness"] == 0.0 and "empty_calibrated_logit_diff" in values
    assert values["time_full_model_s"] > 0 and values["time_method_s"] > 0 and values["time_control_s"] > 0


@pytest.mark.slow
def test_report_compares_two_models_sharing_a_results_directory(tmp_path, small_adapter):
    from circuitbench.cli import main
    from circuitbench.results.report import collect, compare, geomean

    tasks = [TASK, "else_elif"]
    a = run(_cfg(tmp_path, model="model-a", tasks=tasks, target_loss=0.6, control=False), small_adapter)
    b = run(_cfg(tmp_path, model="model-b", tasks=tasks, target_loss=0.69, control=False), small_adapter)
    rows = collect(tmp_path)
    assert {r["model"] for r in rows} == {"model-a", "model-b"} and len(rows) == 4
    assert pq.read_table(tmp_path / "summary.parquet").num_rows == 4  # both models, not just the last run
    c = compare(rows, "model-a", "model-b")
    both = [t for t in tasks if all(s["status"] == "solved" for s in (a + b) if s["task"] == t)]
    assert sorted(c.tasks) == sorted(both)
    if both:
        ea = geomean([s["edges"] for s in a if s["task"] in both])
        eb = geomean([s["edges"] for s in b if s["task"] in both])
        assert c.edge_ratio == pytest.approx(eb / ea)
    assert main(["report", "--out", str(tmp_path), "--compare", "model-a,model-b"]) == 0
    assert main(["report", "--out", str(tmp_path), "--compare", "model-a,nope"]) == 1
    assert main(["report", "--out", str(tmp_path / "empty")]) == 1


def test_geomean_counts_an_empty_circuit_as_one():
    from circuitbench.results.report import geomean

    assert geomean([0, 4]) == pytest.approx(2.0) and math.isnan(geomean([]))


def test_rerun_with_other_settings_refuses_to_reuse_finished_units(tmp_path, small_adapter):
    from circuitbench.errors import CircuitbenchError

    run(_cfg(tmp_path), small_adapter)
    with pytest.raises(CircuitbenchError, match=r"target_loss.*--force"):
        run(_cfg(tmp_path, target_loss=0.3), small_adapter)
    other = SparseGPTAdapter(small_adapter.model, small_adapter.tokenizer, "small", {"weights_sha256": "other"})
    with pytest.raises(CircuitbenchError, match=r"model\.weights_sha256 \(then 'test-small', now 'other'\)"):
        run(_cfg(tmp_path), other)
    run(_cfg(tmp_path, target_loss=0.3, force=True), small_adapter)  # --force replaces it


def test_target_falls_back_to_the_full_models_loss_when_the_model_is_weaker_than_it(tmp_path, small_adapter):
    # a random model is far from the 0.15 target: the circuit must then match the full model instead
    (summary,) = run(_cfg(tmp_path, target_loss=0.15), small_adapter)
    table, _, _ = read_unit(next(tmp_path.glob("small/*.seed0.parquet")))
    values = dict(zip(table.column("metric").to_pylist(), table.column("value").to_pylist(), strict=False))
    assert summary["target_loss"] == pytest.approx(max(0.15, values["full_loss"]))
    assert summary["status"] == "solved" and summary["circuit_train_loss"] <= summary["target_loss"] + 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kept_nodes_are_exact_and_pruned_nodes_take_their_ablation_value_in_every_dtype(small_adapter, dtype):
    from circuitbench.circuits.masks import NodeIndex, gate_hook

    index = NodeIndex.of(small_adapter)
    model = SparseGPTAdapter(small_adapter.model, small_adapter.tokenizer, "small")
    model.model.to(dtype)
    try:
        tokens = torch.randint(0, 2048, (2, 12), generator=torch.Generator().manual_seed(0))
        ablation = torch.randn(index.value_size, generator=torch.Generator().manual_seed(1))  # nonzero values
        plain = model.forward(tokens)
        assert torch.equal(model.forward(tokens, gate_hook(index, torch.ones(index.size), ablation)), plain)
        site = index.sites[0]
        gates = torch.ones(index.size)
        gates[index.slice(0)] = 0.0
        seen = {}
        record = gate_hook(index, gates, ablation, also=lambda n, x: seen.setdefault(n, x))
        model.forward(tokens, record)
        expect = index.split_values(ablation)[site.name].to(dtype)
        assert torch.equal(seen[site.name], expect.expand_as(seen[site.name]))
    finally:
        model.model.to(torch.float32)


def test_one_and_two_threads_give_the_same_circuit_and_numbers(tmp_path, small_adapter):
    """Thread counts are recorded in every unit; on this path they do not change the circuit (measured)."""
    from circuitbench.results.circuit import Circuit, circuit_paths
    from circuitbench.results.store import unit_files

    before = torch.get_num_threads()
    rows, gates = [], []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = tmp_path / f"t{threads}"
            (row,) = run(_cfg(out, method_kwargs={"steps": 20}, control=False), small_adapter)
            rows.append({k: row[k] for k in ("nodes", "edges", "sufficiency_loss", "necessity_loss", "cpr")})
            (unit,) = unit_files(out)
            assert read_unit(unit)[2].threads == threads
            gates.append(Circuit.load(circuit_paths(unit)[0]).gates())
    finally:
        torch.set_num_threads(before)
    assert rows[0] == rows[1] and torch.equal(gates[0], gates[1])


def test_a_task_whose_every_example_the_tokenizer_drops_is_reported_as_such(tmp_path, small_adapter, capsys):
    """A character-level tokenizer gives both answers of bracket_counting the same first token: every example is
    dropped. The unit says so (no crash deep in the evaluator), and `run` names the task and why."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from circuitbench.cli.run import report_dropped as _report_dropped
    from circuitbench.models.native import SparseGPTAdapter
    from circuitbench.models.tokenizer import HFTokenizer

    chars = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))},
                                 merges=[]))
    chars.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    chars.decoder = decoders.ByteLevel()
    adapter = SparseGPTAdapter(small_adapter.model, HFTokenizer.from_object(chars, name="chars"), "chars",
                               {"weights_sha256": "test-chars"})
    (row,) = run(RunConfig(model="chars", tasks=["bracket_counting"], method="random", ablation="zero",
                           min_accuracy=0.0, control=False, out=tmp_path, show_progress=False), adapter)
    assert row["status"] == "no_examples" and row["test_examples"] == 0 and row["dropped_examples"] == 256
    _report_dropped([row])
    out = capsys.readouterr().out
    assert "No example survives this tokenizer's boundary checks" in out and "bracket_counting" in out


def test_prompts_longer_than_the_context_are_left_truncated(tmp_path, python_bpe):
    """A model with a 16-token context still runs every task: prompts keep their last 16 tokens."""
    from circuitbench.models.config import GPTConfig
    from circuitbench.models.native import SparseGPTAdapter
    from tests.models.conftest import random_model

    cfg = GPTConfig(block_size=16, vocab_size=2048, n_layer=1, n_head=2, d_model=32, d_mlp=64, rms_norm=True)
    adapter = SparseGPTAdapter(random_model(cfg, seed=0), python_bpe, "short", {"weights_sha256": "test-short"})
    (row,) = run(RunConfig(model="short", tasks=["else_elif"], method="random", ablation="zero", min_accuracy=0.0,
                           control=False, out=tmp_path, show_progress=False, search_examples=32), adapter)
    assert row["test_examples"] > 0 and row["status"] in ("solved", "train_only", "target_missed")
    from circuitbench.results.store import read_unit

    (path,) = [p for p in tmp_path.glob("short/*.parquet") if not p.name.endswith(".edges.parquet")]
    assert read_unit(path)[1]["test_examples"] == row["test_examples"]


def test_a_full_disk_is_one_line_leaves_no_orphan_files_and_keeps_finished_units(tmp_path, small_adapter, monkeypatch):
    import errno

    from circuitbench.errors import CircuitbenchError
    from circuitbench.runs import runner

    written = []

    def write_unit(path, result, prov, real=runner.write_unit):
        if written:  # the second unit finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path)
        real(path, result, prov)

    monkeypatch.setattr(runner, "write_unit", write_unit)
    tasks = ["while_return_true", "if_equals"]
    with pytest.raises(CircuitbenchError, match="the disk is full") as err:
        run(_cfg(tmp_path, tasks=tasks, control=False), small_adapter)
    assert "if_equals" in str(err.value) and "\n" not in str(err.value)  # one line, as the CLI prints it
    files = sorted(p.name for p in (tmp_path / "small").iterdir())
    assert files == sorted(p.name for p in written[0].parent.glob("while_return_true.*")), files  # no orphan circuit
    assert read_unit(written[0])[1]["task"] == "while_return_true"  # the finished unit is kept
    monkeypatch.undo()
    rows = run(_cfg(tmp_path, tasks=tasks, control=False), small_adapter)  # a rerun computes only what is missing
    assert [r["task"] for r in rows] == tasks


def test_an_unwritable_cache_costs_time_never_the_run(tmp_path, small_adapter, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("CIRCUITBENCH_CACHE", str(blocker / "cache"))
    (summary,) = run(_cfg(tmp_path / "out", ablation="mean", control=False), small_adapter)
    assert summary["status"] in ("solved", "train_only", "target_missed")
    assert any("cannot cache the mean activations" in r.getMessage() and "CIRCUITBENCH_CACHE" in r.getMessage()
               for r in caplog.records)


def test_a_below_chance_bar_and_a_zero_node_circuit_are_flagged_in_the_run_output(capsys):
    from circuitbench.cli.run import flag_labels as _flag_labels

    _flag_labels([{"task": "if_equals", "status": "solved", "nodes": 0, "control_met_target": True}], 0.0)
    out = capsys.readouterr().out
    assert "--min-accuracy 0.0 is at or below chance" in out and "off the board's protocol" in out
    assert "Circuits of 0 nodes: if_equals" in out and "control also met the target on if_equals" in out
    _flag_labels([{"task": "if_equals", "status": "solved", "nodes": 12, "control_met_target": False}], 0.9)
    assert capsys.readouterr().out == ""


def test_the_ablation_cache_is_readable_by_the_group(tmp_path, small_adapter, monkeypatch):
    import os

    monkeypatch.setenv("CIRCUITBENCH_CACHE", str(tmp_path / "cache"))
    old = os.umask(0o022)
    try:
        run(_cfg(tmp_path / "out", ablation="mean", control=False), small_adapter)
    finally:
        os.umask(old)
    (cached,) = (tmp_path / "cache" / "ablation").glob("*.pt")
    assert cached.stat().st_mode & 0o777 == 0o664
