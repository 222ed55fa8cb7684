"""Runs sharing one --out: claims, waiting for another run's unit, taking over a dead run's claim."""

import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from circuitbench.results.store import read_unit
from circuitbench.runs import claims
from circuitbench.runs.config import make_units, model_ref
from circuitbench.runs.runner import RunConfig, run, unit_file

TASK = "while_return_true"


def _cfg(tmp_path, **over):
    base = dict(model="small", tasks=[TASK], method_kwargs={"steps": 5}, ablation="task-mean", min_accuracy=0.0,
                out=tmp_path, show_progress=False, search_examples=64, control=False)
    return RunConfig(**{**base, **over})


def test_claims_are_exclusive_and_a_dead_holders_claim_is_taken_over(tmp_path):
    path = tmp_path / "m" / "u.parquet"
    assert claims.acquire(path) is None  # ours
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other = tmp_path / "m" / "v.parquet"
        claims.claim_path(other).write_text(json.dumps({"host": os.uname().nodename, "pid": sleeper.pid,
                                                        "since": time.time()}))
        held = claims.acquire(other)
        assert held is not None and held.pid == sleeper.pid and str(sleeper.pid) in held.describe()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert claims.acquire(other) is None  # its process is gone: stale, taken over
    claims.release(path)
    claims.release(other)
    assert not claims.claim_path(path).exists() and not claims.claim_path(other).exists()


def test_a_unit_another_live_run_holds_is_waited_for_then_computed_here_when_that_run_dies(tmp_path, small_adapter):
    cfg = _cfg(tmp_path)
    (unit,) = make_units(cfg, model_ref("small", small_adapter), "float32", "cpu")
    path = unit_file(tmp_path, unit)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    path.parent.mkdir(parents=True)
    claims.claim_path(path).write_text(json.dumps({"host": os.uname().nodename, "pid": sleeper.pid,
                                                   "since": time.time()}))
    killer = threading.Timer(1.5, sleeper.kill)
    killer.start()
    t0 = time.perf_counter()
    (row,) = run(cfg, small_adapter, poll_s=0.2)
    waited = time.perf_counter() - t0
    sleeper.wait()
    assert waited >= 1.4  # it waited for the holder instead of computing the unit beside it
    _, summary, prov = read_unit(path)
    assert prov.pid == os.getpid() and summary == row and row["task"] == TASK
    assert not claims.claim_path(path).exists()


@pytest.mark.slow
def test_two_processes_sharing_one_out_compute_every_unit_once_and_both_report_every_row(tmp_path):
    tasks = "while_return_true,if_equals,with_as,lambda_func"
    cmd = [sys.executable, "-m", "circuitbench", "-v", "run", "--model", "tiny-sparse", "--tasks", tasks,
           "--steps", "8", "--min-accuracy", "0", "--no-control", "--ablation", "task-mean", "--threads", "1",
           "--search-examples", "64",
           "--quiet", "--format", "json", "--out", str(tmp_path / "out")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    computed = [re.findall(r"computing unit (\w+) \(pid (\d+)\)", err) for _, err in outs]
    keys = [k for c in computed for k, _ in c]
    assert len(keys) == 4 and len(set(keys)) == 4, computed  # every unit exactly once, across both runs
    rows = [json.loads(out) for out, _ in outs]
    assert rows[0] == rows[1] and [r["task"] for r in rows[0]] == tasks.split(",")
    pids = {p.pid for p in procs}
    for f in (tmp_path / "out").rglob("*.seed0.parquet"):
        assert read_unit(f)[2].pid in pids
    assert not list((tmp_path / "out").rglob("*.claim"))


_HAMMER = r"""
import os, sys, time
from pathlib import Path
from circuitbench.runs import claims
unit, inside, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
violations = got = 0
for _ in range(n):
    if claims.acquire(unit) is None:
        got += 1
        try:
            fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # only the holder may be inside
            os.close(fd)
            os.unlink(inside)
        except FileExistsError:
            violations += 1
        claims.release(unit)
print(violations, got)
"""


def test_two_processes_racing_for_one_claim_never_both_hold_it(tmp_path):
    """A claim is never read half-written (and so never taken for a stale one) while its holder is alive."""
    unit = tmp_path / "m" / "t.learned_mask.seed0.parquet"
    unit.parent.mkdir()
    script = tmp_path / "hammer.py"
    script.write_text(_HAMMER)
    procs = [subprocess.Popen([sys.executable, str(script), str(unit), str(tmp_path / "inside"), "400"],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [tuple(map(int, p.communicate(timeout=120)[0].split())) for p in procs]
    assert all(v == 0 for v, _ in results), results
    assert sum(g for _, g in results) > 0 and not claims.claim_path(unit).exists()
    assert not list(tmp_path.glob("m/.claim.*"))  # no private claim files left behind
