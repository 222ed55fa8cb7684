"""Ray sweeps on a local cluster give the units, and the numbers, the local executor gives."""

import pytest

ray = pytest.importorskip("ray")  # ray is a test dependency: installed in CI, so this never skips there

from circuitbench.runs.executors import RayExecutor  # noqa: E402
from circuitbench.runs.runner import RunConfig, run  # noqa: E402

TASKS = ["lambda_func", "else_elif"]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _cfg(out):
    return RunConfig(model="small", tasks=TASKS, method_kwargs={"steps": 3}, ablation="zero", min_accuracy=0.0,
                     control=False, out=out, show_progress=False, search_examples=32)


@pytest.mark.slow
def test_a_ray_sweep_writes_the_units_and_numbers_of_a_local_run(cluster, tmp_path, small_adapter):
    local = run(_cfg(tmp_path / "local"), small_adapter)
    swept = run(_cfg(tmp_path / "ray"), small_adapter, executor=RayExecutor())
    keys = ("task", "status", "nodes", "edges", "full_loss", "sufficiency_loss", "necessity_loss", "cpr")
    assert [{k: s[k] for k in keys} for s in swept] == [{k: s[k] for k in keys} for s in local]
    files = sorted(p.name for p in (tmp_path / "ray" / "small").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "local" / "small").iterdir())
    assert (tmp_path / "ray" / "summary.parquet").is_file()


def test_a_rerun_on_ray_skips_finished_units(cluster, tmp_path, small_adapter):
    run(_cfg(tmp_path), small_adapter, executor=RayExecutor())
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "small").glob("*.seed0.parquet")}
    run(_cfg(tmp_path), small_adapter, executor=RayExecutor())
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "small").glob("*.seed0.parquet")} == before


class _DieOnce:
    """A unit worker whose process dies in the middle of one unit, once (fault injection, real computation).

    Dying means what a killed Ray worker leaves: the unit claimed, a half-written temporary file beside it,
    no result. The marker file makes only the first attempt die.
    """

    def __init__(self, worker, task, marker):
        self.worker, self.task, self.marker = worker, task, marker
        self.out, self.force = worker.out, worker.force

    def __call__(self, unit):
        import os

        from circuitbench.runs import claims
        from circuitbench.runs.runner import unit_file

        if unit.task == self.task and not self.marker.exists():
            self.marker.touch()
            path = unit_file(self.out, unit)
            assert claims.acquire(path) is None
            path.with_name(f".{path.name}.half.tmp").write_bytes(b"PAR1 half a file")
            os._exit(1)  # the worker process is gone mid-unit
        return self.worker(unit)


@pytest.mark.slow
def test_a_worker_killed_mid_sweep_is_retried_and_every_unit_is_written_once_and_whole(cluster, tmp_path,
                                                                                       small_adapter):
    from tqdm import tqdm

    from circuitbench.circuits.ablation import ablation_source
    from circuitbench.circuits.masks import NodeIndex
    from circuitbench.results.store import read_unit, unit_files
    from circuitbench.runs.config import make_units, model_ref
    from circuitbench.runs.runner import UnitWorker, execute

    cfg = _cfg(tmp_path / "out")
    units = make_units(cfg, model_ref("small", small_adapter), "float32", "cpu")
    inner = UnitWorker(small_adapter, ablation_source("zero", small_adapter, NodeIndex.of(small_adapter)), cfg.out)
    worker = _DieOnce(inner, TASKS[0], tmp_path / "died")
    done, failures = execute(units, worker, RayExecutor(max_retries=1), tqdm(disable=True))
    assert (tmp_path / "died").exists()  # the first attempt really died
    assert failures == [] and set(done) == {u.key() for u in units}
    files = unit_files(cfg.out)
    assert sorted(read_unit(f)[1]["task"] for f in files) == sorted(TASKS)  # one file per unit, each readable
    assert not list(cfg.out.rglob("*.claim"))  # the dead worker's claim was taken over and released
    assert not list(cfg.out.rglob("*.tmp"))  # and its half-written file removed
    local = run(_cfg(tmp_path / "local"), small_adapter)
    assert [done[u.key()]["nodes"] for u in units] == [r["nodes"] for r in local]
