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
