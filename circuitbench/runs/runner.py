"""The runner: units from a run, finished ones skipped, the rest computed behind an executor, one reduce.

Each unit is written atomically with its circuit; the reduce step summarises every unit in the directory.

Only this module writes results. A unit's files are written circuit first, edges second and the unit's
Parquet file last, each by an atomic rename, so the Parquet file's presence means the unit is complete:
an interrupted run loses at most the unit in flight, and a rerun resumes after the finished ones.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import circuitbench
from circuitbench.circuits.ablation import AblationSource, ablation_source
from circuitbench.circuits.edge_level import check_edge_level, circuit_edge_rows
from circuitbench.circuits.evaluate import evaluate
from circuitbench.circuits.masks import NodeIndex
from circuitbench.circuits.methods import method_origin
from circuitbench.errors import CircuitbenchError
from circuitbench.hardware import cpu_kind, cpu_model
from circuitbench.protocols import ModelAdapter
from circuitbench.results.circuit import circuit_paths, write_edges
from circuitbench.results.schema import Provenance
from circuitbench.results.store import read_unit, unit_path, write_summary, write_unit
from circuitbench.results.unit import Unit, UnitResult
from circuitbench.runs import claims
from circuitbench.runs.config import RunConfig, make_units, model_ref, resolve_tasks, validate
from circuitbench.runs.executors import Executor, LocalExecutor

log = logging.getLogger(__name__)

HELD = "_held_by"
"""The key of the row a worker returns for a unit another live run has claimed."""

__all__ = ["RunConfig", "UnitWorker", "geometric_means", "reduce", "resolve_tasks", "run", "unit_file"]


def _git_commit() -> str | None:
    """The commit of circuitbench's own checkout, or None when it runs from an installed wheel.

    Only a checkout whose top level holds circuitbench's pyproject.toml counts: an installed package under
    some other repository (a venv inside a user's project) must not record that project's commit.
    """
    root = Path(circuitbench.__file__).resolve().parents[1]
    try:
        if 'name = "circuitbench"' not in (root / "pyproject.toml").read_text():
            return None
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(top) != 2 or Path(top[0]).resolve() != root:
        return None
    return top[1]


def unit_file(out: Path, unit: Unit) -> Path:
    """Where a unit's Parquet file goes."""
    return unit_path(out, unit.model.name, unit.task, unit.method, unit.seed, unit.level)


def finished(out: Path, unit: Unit) -> dict[str, Any] | None:
    """The summary of a finished unit with this identity, or None when it is still to do.

    Raises:
        CircuitbenchError: when the unit's file holds a unit with another identity (naming every
            difference and the two ways out).
    """
    path = unit_file(out, unit)
    if not path.is_file():
        return None
    _, summary, prov = read_unit(path)
    if prov.unit != unit:
        raise CircuitbenchError(
            f"{path}: finished earlier with a different setup: {'; '.join(unit.differences(prov.unit))}. Rerun "
            "with --force to replace it, or choose another --out to keep both."
        )
    if summary.get("nodes") is not None:  # a pruned unit is done only with its circuit beside it
        missing = [p.name for p in circuit_paths(path) if not p.is_file()]
        if missing:
            log.warning("%s: its %s %s missing; computing the unit again", path, " and ".join(missing),
                        "is" if len(missing) == 1 else "are")
            return None
    return summary


@dataclasses.dataclass
class UnitWorker:
    """Computes and writes one unit: what an executor maps over the units (one model, loaded once)."""

    adapter: ModelAdapter
    ablation_source: AblationSource
    out: Path
    show_progress: bool = False
    force: bool = False
    """Recompute a unit even when another run has written it meanwhile."""
    eval_batch: int = 256
    """Examples per forward pass when scoring circuits (`--eval-batch`)."""

    def __call__(self, unit: Unit) -> dict[str, Any]:
        """Claim the unit, evaluate it, write its circuit, edges and measurements; return its summary row.

        When another live run holds the unit's claim, nothing is computed and the row is
        `{HELD: "pid ... on host ..."}`: the driver waits for that run's result instead.
        """
        path = unit_file(self.out, unit)
        held = claims.acquire(path)
        if held is not None:
            return {HELD: held.describe()}
        try:
            _remove_debris(path)  # what a killed run left half-written for this unit (ours now: we hold the claim)
            if not self.force and (done := finished(self.out, unit)) is not None:
                return done  # another run wrote it between this run's look and its claim
            started = datetime.now(UTC).isoformat(timespec="seconds")
            log.debug("computing unit %s (pid %d)", unit.key(), os.getpid())
            result = evaluate(unit, self.adapter, self.ablation_source, self.show_progress, self.eval_batch)
            self.write(result, started)
            return result.summary()
        finally:
            claims.release(path)

    def write(self, result: UnitResult, started: str) -> Path:
        """Write a result's files, circuit first and the unit's Parquet file last.

        A failed write (a full disk, a folder made read-only) removes whatever this unit had written, so
        no circuit is left without its unit, and is a one-line error; units written before stay.

        Raises:
            CircuitbenchError: naming the unit's file and the reason.
        """
        path = unit_file(self.out, result.unit)
        try:
            return self._write(path, result, started)
        except OSError as err:
            from circuitbench.results.files import os_error_reason

            for f in (path, *circuit_paths(path)):
                f.unlink(missing_ok=True)
            raise CircuitbenchError(f"{path}: cannot write this unit's results ({os_error_reason(err)}); units "
                                    "written before are kept, and a rerun computes only what is missing") from None

    def _write(self, path: Path, result: UnitResult, started: str) -> Path:
        if result.circuit is not None:
            cpath, epath = circuit_paths(path)
            result.circuit.save(cpath)
            write_edges(epath, circuit_edge_rows(self.adapter, result.circuit))
        prov = Provenance(
            unit=result.unit, unit_key=result.unit.key(), circuitbench_version=circuitbench.__version__,
            git_commit=_git_commit(), ablation_corpus=self.ablation_source.key, device=str(self.adapter.device),
            torch_version=torch.__version__, threads=torch.get_num_threads(), cpu_kind=cpu_kind(),
            cpu_model=cpu_model(), started_at=started,
            wall_s=result.wall_s, saes=self.adapter.provenance.get("saes"), host=socket.gethostname(),
            pid=os.getpid(), task_spec=_user_spec_record(result.unit.task),
            method_origin=method_origin(result.unit.method),
        )
        write_unit(path, result, prov)
        return path


def _user_spec_record(task: str) -> dict[str, Any] | None:
    from circuitbench.tasks.load import user_spec

    spec = user_spec(task)
    return None if spec is None else spec.model_dump(mode="json")


def _remove_debris(path: Path) -> None:
    for f in (path, *circuit_paths(path)):
        for tmp in f.parent.glob(f".{f.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def reduce(out: Path) -> Path:
    """The single reduce step: the summary of every unit in `out` (several runs may share it)."""
    from circuitbench.results.report import collect

    return write_summary(out, collect(out))


def splice_saes(adapter: ModelAdapter, name: str, saes: list[str]) -> tuple[ModelAdapter, str]:
    """The model with the SAEs these `--sae` values name spliced in, and the name its results are filed under.

    The one place SAEs are spliced for a run, a sweep or a re-evaluation; no SAEs: the model unchanged.
    """
    if not saes:
        return adapter, name
    from circuitbench.models.sae import load_saes

    spliced = load_saes(adapter, saes)
    return spliced, name + spliced.suffix  # the SAE-augmented model's results are filed under a name of their own


def load_run_model(cfg: RunConfig) -> tuple[ModelAdapter, str]:
    """The model a run names, with its SAEs spliced in, and the name its results are filed under."""
    adapter = circuitbench.load_model(cfg.model, device=cfg.device, dtype=cfg.dtype, revision=cfg.revision,
                                      trust_remote_code=cfg.trust_remote_code)
    return splice_saes(adapter, cfg.model, cfg.saes)


def wait_for(worker: UnitWorker, unit: Unit, poll_s: float = 1.0) -> dict[str, Any]:
    """The summary of a unit another run holds: its result once written, or computed here if that run dies."""
    path = unit_file(worker.out, unit)
    while True:
        if claims.holder(path) is None:  # released (written) or its process is gone
            summary = finished(worker.out, unit)
            if summary is not None:
                return summary
            summary = worker(unit)
            if HELD not in summary:
                return summary
        time.sleep(poll_s)


def execute(units: list[Unit], worker: UnitWorker, executor: Executor, bar: Any,
            poll_s: float = 1.0) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every unit's summary: finished ones read back, the rest computed behind `executor`.

    Units another live run holds are waited for at the end (`wait_for`). Returns the summaries by unit
    key, and one line per unit that failed (`task: error`).
    """
    done: dict[str, dict[str, Any]] = {}
    todo: list[Unit] = []
    for unit in units:
        summary = None if worker.force else finished(worker.out, unit)
        if summary is None:
            todo.append(unit)
        else:
            done[unit.key()] = summary
            bar.update(1)
            log.info("%s: done already (%s); --force recomputes", unit.task, unit_file(worker.out, unit))
    failures: list[str] = []
    held: list[tuple[Unit, str]] = []
    for outcome in executor.map(worker, todo):
        if outcome.error is not None:
            failures.append(f"{outcome.unit.model.name} {outcome.unit.task} {outcome.unit.method} "
                            f"seed {outcome.unit.seed}: {outcome.error}")
        elif isinstance(outcome.value, dict) and HELD in outcome.value:
            held.append((outcome.unit, outcome.value[HELD]))
            continue
        else:
            done[outcome.unit.key()] = outcome.value  # type: ignore[assignment]
        bar.update(1)
        bar.set_postfix_str(outcome.unit.task)
    for unit, who in held:  # computed by another run into the same --out: wait for its result
        log.warning("%s: another run is computing this unit (%s); waiting for it", unit.task, who)
        bar.set_postfix_str(f"{unit.task}: waiting for {who.split(' (')[0]}")
        done[unit.key()] = wait_for(worker, unit, poll_s)
        bar.update(1)
    return done, failures


def execute_configs(configs: list[RunConfig], executor: Executor, adapter: ModelAdapter | None = None,
                    desc: str = "units", show_progress: bool = True, method_progress: bool = False,
                    poll_s: float = 1.0) -> tuple[list[dict[str, Any]], list[str]]:
    """The one loop behind `run` and `sweep`: every unit of every configuration, each model loaded once.

    Configurations are grouped by model; each group's units go to `executor` together. Returns the summary
    of every finished unit, in configuration and task order, and one line per unit that failed.

    Args:
        configs: Validated configurations (they share `out`, `ablation`, `eval_batch` and `force` per model).
        executor: Where units run.
        adapter: The model, already loaded, when every configuration names the same one; None loads each.
        desc: The progress bar's label.
        show_progress: Show the progress bar over units.
        method_progress: Show each method's own progress bar too.
        poll_s: How often to look for a unit another run is computing.
    """
    by_model: dict[str, list[RunConfig]] = {}
    for cfg in configs:
        by_model.setdefault(cfg.model, []).append(cfg)
    n_units = sum(len(resolve_tasks(c.tasks)) for c in configs)
    bar: Any = None  # started once the first model has loaded: a model that fails to load is one line
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for cfgs in by_model.values():
        first = cfgs[0]
        model, name = load_run_model(first) if adapter is None else splice_saes(adapter, first.model, first.saes)
        if bar is None:
            bar = tqdm(total=n_units, desc=desc, unit="unit", disable=not show_progress)
        for cfg in cfgs:
            if cfg.level == "edges":
                check_edge_level(model, cfg.ablation)
        ref = model_ref(name, model)
        dtype, device = str(model.dtype).removeprefix("torch."), str(model.device)
        units = [u for cfg in cfgs for u in make_units(cfg, ref, dtype, device)]
        worker = UnitWorker(model, ablation_source(first.ablation, model, NodeIndex.of(model)), first.out,
                            method_progress, first.force, first.eval_batch)
        done, failed = execute(units, worker, executor, bar, poll_s)
        failures += failed
        rows += [done[u.key()] for u in units if u.key() in done]
        del model, worker
    if bar is not None:
        bar.close()
    return rows, failures


def run(cfg: RunConfig, adapter: ModelAdapter | None = None, executor: Executor | None = None,
        poll_s: float = 1.0, seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Find, measure and write the circuit of every task; skip units already in `cfg.out`.

    A sweep of one configuration (`execute_configs`). Several runs may share one `cfg.out` at the same
    time: each claims a unit before computing it (`circuitbench.runs.claims`), skips units another live run
    holds, and at the end waits for their results, so every unit is computed once and every run returns
    every row.

    Args:
        cfg: The run.
        adapter: The model, already loaded (tests, notebooks); None loads `cfg.model`.
        executor: Where units run; None runs them here, one after another.
        poll_s: How often to look for a unit another run is computing.
        seeds: Run every task with each of these seeds (the model loaded once); None: `cfg.seed` alone.

    Returns:
        One summary row per (task, method, seed) asked for, finished now or earlier, in task order (seed by
        seed).
    """
    validate(cfg)  # every setting checked before the model loads
    configs = [cfg] if seeds is None else [cfg.model_copy(update={"seed": int(s)}) for s in dict.fromkeys(seeds)]
    rows, failures = execute_configs(configs, executor or LocalExecutor(), adapter, "units", cfg.show_progress,
                                     cfg.show_progress, poll_s)
    reduce(cfg.out)  # every unit in the directory: several models may share it
    if failures:
        raise CircuitbenchError("some units failed (the others are written):\n  " + "\n  ".join(failures))
    return rows


def geometric_means(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """Geometric means of nodes and edges over solved tasks (circuits that meet the target held out)."""
    from circuitbench.results.report import geomean

    solved = [s for s in summaries if s.get("status") == "solved"]
    out = {"solved": float(len(solved)), "tasks": float(len(summaries))}
    for key in ("nodes", "edges"):
        out[f"geomean_{key}"] = geomean([int(s[key]) for s in solved])
    return out
