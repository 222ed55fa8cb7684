"""Sweeps: a YAML grid of models x tasks x methods x seeds, validated first, resumable, failures isolated."""

import pytest
import yaml

from circuitbench.errors import CircuitbenchError
from circuitbench.results.store import read_unit, unit_files
from circuitbench.runs.executors import LocalExecutor
from circuitbench.runs.runner import RunConfig, run
from circuitbench.runs.sweep import load_sweep, sweep

GRID = dict(models=["tiny-sparse"], tasks=["while_return_true"],
            methods=["random", {"name": "learned_mask", "steps": 3}], seeds=[0, 1], min_accuracy=0.0,
            control=False, ablation="zero", search_examples=32)


def _file(tmp_path, **over):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**GRID, "out": str(tmp_path / "out"), **over}))
    return path


@pytest.mark.parametrize(("over", "needle"), [
    ({"seed": [0]}, "sweep.yaml: seed: unknown field"),
    ({"methods": [{"steps": 3}]}, "needs `name: METHOD`"),
    ({"models": []}, "sweep.yaml: models"),
    ({"target_loss": "low"}, "sweep.yaml: target_loss"),
])
def test_a_bad_sweep_file_is_one_line_per_problem_naming_the_file_and_field(tmp_path, over, needle):
    with pytest.raises(CircuitbenchError) as info:
        load_sweep(_file(tmp_path, **over))
    assert needle in str(info.value), str(info.value)


def test_bad_yaml_and_a_missing_file_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [tiny-sparse\n")
    with pytest.raises(CircuitbenchError, match=r"bad.yaml:\d+:\d+: not valid YAML"):
        load_sweep(bad)
    with pytest.raises(CircuitbenchError, match="cannot read the sweep file"):
        load_sweep(tmp_path / "missing.yaml")


def test_every_configuration_is_validated_before_any_model_loads(tmp_path):
    spec = load_sweep(_file(tmp_path, models=["tiny-sparse", "no/such-model"],
                            methods=["random", {"name": "learned_mask", "stepz": 3}]))
    with pytest.raises(CircuitbenchError, match="method learned_mask.*stepz") as info:
        sweep(spec, show_progress=False)
    assert "tiny-sparse" in str(info.value)
    assert not (tmp_path / "out").exists()  # nothing computed


@pytest.mark.slow
def test_a_sweep_runs_the_grid_gives_a_runs_numbers_and_a_rerun_skips_every_unit(tmp_path, small_model_dir):
    # a small model from a folder (a 1-layer, d_model 32 model with a real BPE): the sweep's plumbing is the same
    # as on the reference model, at a tenth of the cost of its curves
    spec = load_sweep(_file(tmp_path, models=[str(small_model_dir)]))
    rows = sweep(spec, show_progress=False)
    assert [(r["method"], r["seed"]) for r in rows] == [("random", 0), ("random", 1), ("learned_mask", 0),
                                                         ("learned_mask", 1)]
    files = unit_files(tmp_path / "out")
    assert len(files) == 4
    single = run(RunConfig(model=str(small_model_dir), tasks=["while_return_true"], method="learned_mask",
                           method_kwargs={"steps": 3}, seed=1, min_accuracy=0.0, control=False, ablation="zero",
                           search_examples=32, out=tmp_path / "single", show_progress=False))
    keys = ("status", "nodes", "edges", "sufficiency_loss", "necessity_loss", "cpr")
    assert {k: rows[3][k] for k in keys} == {k: single[0][k] for k in keys}
    before = {p: p.stat().st_mtime_ns for p in files}
    again = sweep(spec, show_progress=False)
    assert again == rows and {p: p.stat().st_mtime_ns for p in files} == before


class _FailFor:
    """A unit worker that raises for one task, counting its attempts (fault injection, real computation)."""

    def __init__(self, worker, task):
        self.worker, self.task, self.attempts = worker, task, 0
        self.out, self.force = worker.out, worker.force

    def __call__(self, unit):
        if unit.task == self.task:
            self.attempts += 1
            raise RuntimeError("injected failure")
        return self.worker(unit)


def test_a_failing_unit_is_retried_once_then_reported_while_the_others_finish(tmp_path, small_adapter):
    from circuitbench.circuits.ablation import ablation_source
    from circuitbench.circuits.masks import NodeIndex
    from circuitbench.runs.config import make_units, model_ref
    from circuitbench.runs.runner import UnitWorker, execute

    cfg = RunConfig(model="small", tasks=["while_return_true", "if_equals"], method="random", min_accuracy=0.0,
                    control=False, ablation="zero", search_examples=32, out=tmp_path, show_progress=False)
    units = make_units(cfg, model_ref("small", small_adapter), "float32", "cpu")
    worker = _FailFor(UnitWorker(small_adapter, ablation_source("zero", small_adapter, NodeIndex.of(small_adapter)),
                                 tmp_path), "while_return_true")
    from tqdm import tqdm

    done, failures = execute(units, worker, LocalExecutor(fail_fast=False, retries=1), tqdm(disable=True))
    assert worker.attempts == 2  # tried, retried once
    assert len(failures) == 1 and "while_return_true" in failures[0] and "injected failure" in failures[0]
    assert [u.task for u in units if u.key() in done] == ["if_equals"]
    (path,) = unit_files(tmp_path)
    assert read_unit(path)[1]["task"] == "if_equals"
