"""Leaderboard submissions: a documented, versioned format, and a validator that lists every problem.

A submission is one model and one method, in the format of `circuitbench.leaderboard.submission`.

`validate` checks, and reports every failure naming its file and field:
- the board's protocol (`circuitbench.leaderboard.protocol`): every unit run with its settings (target loss,
  accuracy bar, ablation, control, calibration, search examples; each difference named), one unit for every
  board task (solved or not: the denominator), no task outside the board's (custom specs, controls);
- the metadata's format and fields; each unit's result schema version and complete provenance; task hashes
  equal to the current task specs (stale tasks are rejected); test-split numbers for every task;
- every summary number equal to the board's own recomputation from the unit's measurements and saved circuit
  (`board_numbers`: status, sizes, losses, faithfulness, CPR and CMD), so an edited number is caught;
- the model's weights hash and method agreeing with the metadata; no duplicate (by the content of the result
  files, not the metadata's text) of an accepted submission; and, with `--verify`, a sample of saved circuits
  re-evaluated on the model where it loads here.
`accept` copies a valid submission under `BOARD/submissions/<content hash>/`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from circuitbench.errors import CircuitbenchError
from circuitbench.leaderboard.protocol import Protocol, load_protocol
from circuitbench.leaderboard.submission import (
    META_FILE,
    SUBMISSION_FORMAT,
    MethodInfo,
    ModelInfo,
    SubmissionMeta,
    Validation,
)
from circuitbench.results.status import PRUNED

__all__ = ["META_FILE", "SUBMISSION_FORMAT", "MethodInfo", "ModelInfo", "Report", "SubmissionMeta", "Validation",
           "accept", "validate"]

_REQUIRED_PROVENANCE = ("host", "pid")
"""Optional provenance fields (older units may lack them) that every submitted unit must have recorded."""


@dataclass
class Report:
    """The outcome of validating a submission: every problem found, each naming its file and field."""

    problems: list[str] = field(default_factory=list)
    units: int = 0
    content_hash: str = ""
    files: list[Path] = field(default_factory=list)
    """The files the submission is made of (units, circuits, edge tables)."""
    left_out: dict[str, int] = field(default_factory=dict)
    """Units in the results directory of other models or methods, by `model / method`."""
    verified: int = 0
    """Saved circuits re-evaluated on the model (`--verify`)."""
    verified_units: list[str] = field(default_factory=list)
    """Which: the unit files' names, in the order checked."""
    verify_seed: int | None = None
    """The seed that drew them (by default from the submission's content hash)."""

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    def add(self, where: Path | str, what: str) -> None:
        """Record one problem."""
        self.problems.append(f"{where}: {what}")


def submission_files(results: Path, units: list[Path]) -> list[Path]:
    """The files a submission is made of: its units and the circuit, edge table and steering table beside each.

    The steering table (`circuitbench bridge steer`'s, where one was measured) is shown on the unit's explorer
    page as the submitter measured it; the board does not recompute it.
    """
    from circuitbench.bridges.steer import steer_path
    from circuitbench.results.circuit import circuit_paths

    out = []
    for u in units:
        out += [p for p in (u, *circuit_paths(u), steer_path(u)) if p.is_file()]
    return sorted(out)


def content_hash(results: Path, files: list[Path]) -> str:
    """sha256 over the submission's result files (names and bytes): the identity that spots duplicates.

    The metadata is not part of it: the same results described twice (another description, re-indented
    JSON) are one submission.
    """
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(results).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def select_units(results: Path, meta: SubmissionMeta) -> tuple[list[Path], dict[str, int], set[str]]:
    """The units of `results` that are the submission's model (by weights hash) and method.

    Returns:
        Those units, the others counted by `model / method`, and the model names the selected units use.
    """
    from circuitbench.results.store import read_unit, unit_files

    mine: list[Path] = []
    others: dict[str, int] = {}
    names: set[str] = set()
    for path in unit_files(results):
        try:
            u = read_unit(path)[2].unit
        except (CircuitbenchError, ValidationError, KeyError):
            mine.append(path)  # unreadable: validated (and refused) as part of the submission
            continue
        if u.model.weights_sha256 == meta.model.weights_sha256 and u.method == meta.method.name:
            mine.append(path)
            names.add(u.model.name)
        else:
            key = f"{u.model.name} / {u.method}"
            others[key] = others.get(key, 0) + 1
    return mine, others, names


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, float) or isinstance(b, float):
        fa, fb = float(a), float(b)
        return (math.isnan(fa) and math.isnan(fb)) or math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def _check_unit(path: Path, meta: SubmissionMeta, report: Report, protocol: Protocol) -> tuple[str, int] | None:
    """Check one unit file; returns its task and seed (None when unreadable) for the denominator check."""
    from circuitbench.leaderboard.protocol import board_numbers
    from circuitbench.results.store import read_unit
    from circuitbench.results.unit import NOT_PRUNED
    from circuitbench.tasks.load import get_task

    try:
        table, summary, prov = read_unit(path)
    except (CircuitbenchError, ValidationError, KeyError) as err:
        report.add(path, f"unreadable or incomplete unit ({str(err).splitlines()[0]})")
        return None
    u = prov.unit
    for difference in protocol.differences(u):
        report.add(path, f"provenance.unit.{difference}: the board compares units run with its protocol only; "
                   "rerun with the protocol's settings (the official board's: `circuitbench run`'s defaults)")
    if u.task not in protocol.board_tasks():
        report.add(path, f"task {u.task!r} is not one of the board's tasks (a custom spec or a control); the board "
                   f"measures {', '.join(protocol.board_tasks())}")
        return u.task, u.seed
    try:
        current = get_task(u.task).task_hash
        if current != u.task_hash:
            report.add(path, f"provenance.unit.task_hash {u.task_hash} is stale: the current {u.task} spec has "
                       f"{current}; rerun on the current tasks")
    except CircuitbenchError:
        report.add(path, f"provenance.unit.task: {u.task!r} is not a task of this circuitbench")
    _check_hyperparameters(path, meta, u.method_kwargs, report)
    missing = [k for k, v in prov.model_dump().items() if v is None and k in _REQUIRED_PROVENANCE]
    if u.model.weights_sha256 is None:
        missing.append("unit.model.weights_sha256")
    if missing:
        report.add(path, f"provenance incomplete: {', '.join(missing)} not recorded; rerun with this circuitbench")
    m = {(r["split"], r["metric"]): r["value"] for r in table.to_pylist()}
    if ("test", "full_accuracy") not in m:
        report.add(path, "no test-split full_accuracy: every claimed task needs its test numbers")
    derived = board_numbers(m, u)
    if derived["status"] not in NOT_PRUNED:
        _check_circuit_files(path, summary, report)
        _check_steering(path, prov.unit_key, report)
    for key, value in derived.items():
        if not _close(summary.get(key), value):
            report.add(path, f"summary {key} = {summary.get(key)!r} does not follow from the unit's measurements "
                       f"({value!r})")
    return u.task, u.seed


def _check_hyperparameters(path: Path, meta: SubmissionMeta, kwargs: dict[str, Any], report: Report) -> None:
    """The hyperparameters submission.json states are the ones the unit recorded."""
    for key, want in sorted(meta.method.hyperparameters.items()):
        if key not in kwargs:
            report.add(path, f"{META_FILE} method.hyperparameters.{key}: the method has no such hyperparameter "
                       f"(it has {', '.join(sorted(kwargs)) or 'none'})")
        elif kwargs[key] != want:
            report.add(path, f"provenance.unit.method_kwargs.{key} = {kwargs[key]!r} differs from "
                       f"{META_FILE} method.hyperparameters.{key} = {want!r}")


def _check_steering(path: Path, unit_key: str, report: Report) -> None:
    """A steering table beside the unit, when there is one, is readable and was measured with this unit's circuit."""
    from circuitbench.bridges.steer import read_steer, steer_path

    spath = steer_path(path)
    if not spath.is_file():
        return
    try:
        res = read_steer(spath)
    except (OSError, ValueError) as err:
        report.add(spath, f"unreadable steering table ({type(err).__name__}); rerun `circuitbench bridge steer` or "
                   "remove it")
        return
    if res.meta.get("unit_key") != unit_key:
        report.add(spath, f"measured with unit {res.meta.get('unit_key')}, not this one ({unit_key}); rerun "
                   "`circuitbench bridge steer` on it or remove it")


def _check_circuit_files(path: Path, summary: dict[str, Any], report: Report) -> None:
    """A pruned unit's circuit and edge table are there, and agree with its summary and the table's cap."""
    from circuitbench.files import read_parquet
    from circuitbench.results.circuit import EDGE_TABLE_ROWS, Circuit, circuit_paths, edges_total

    cpath, epath = circuit_paths(path)
    try:
        circuit = Circuit.load(cpath)
        if circuit.k != summary.get("nodes"):
            report.add(cpath, f"k {circuit.k} differs from the summary's nodes {summary.get('nodes')}")
        if not epath.is_file():
            report.add(epath, "missing edge table")
        else:
            total = edges_total(epath)
            rows = read_parquet(epath, "edge table", "rerun the unit with --force").num_rows
            if total != summary.get("edges"):
                report.add(epath, f"{total} edges, the summary says edges {summary.get('edges')}")
            if rows != min(total, EDGE_TABLE_ROWS):
                report.add(epath, f"{rows} edge rows for a circuit of {total} edges: the table holds every edge "
                           f"up to {EDGE_TABLE_ROWS:,} and the strongest {EDGE_TABLE_ROWS:,} beyond")
    except CircuitbenchError as err:
        report.add(cpath, str(err).split(": ", 1)[-1])


def verify_sample(units: list[Path], meta: SubmissionMeta, report: Report, sample: int = 3,
                  seed: int | None = None) -> None:
    """Re-evaluate up to `sample` saved circuits on the submitted model and compare with the stored numbers.

    The units are a random sample of the pruned ones, drawn with `seed` (default: from the submission's content
    hash, so one submission always gets the same sample and any edit draws anew), recorded in the report; the
    model is loaded by its Hub id or name, and must have the submitted weights hash.
    """
    import random

    import circuitbench
    from circuitbench.results.store import read_unit
    from circuitbench.runs.saved import compare_stored, load_saved, reevaluate

    pruned = sorted(p for p in units if read_unit(p)[1].get("status") in PRUNED)
    report.verify_seed = seed if seed is not None else int(report.content_hash[:12] or "0", 16)
    pruned = random.Random(report.verify_seed).sample(pruned, min(sample, len(pruned)))
    if not pruned:
        return
    name = meta.model.hub_id or meta.model.name
    u0 = read_unit(pruned[0])[2]
    try:
        adapter = circuitbench.load_model(name, device="cpu", dtype=u0.unit.dtype, revision=meta.model.revision)
    except CircuitbenchError as err:
        report.add(META_FILE, f"--verify: model {name!r} cannot be loaded here ({str(err).splitlines()[0][:160]}); "
                   "verify where it can, or submit without --verify")
        return
    if adapter.provenance.get("weights_sha256") != meta.model.weights_sha256:
        report.add(META_FILE, f"--verify: {name!r} loads weights {adapter.provenance.get('weights_sha256')}, not "
                   f"model.weights_sha256 {meta.model.weights_sha256}")
        return
    for path in pruned:
        saved = load_saved(path)
        for row in compare_stored(saved, reevaluate(saved, adapter, "test")):
            stored, now = row["stored"], row["now"]
            if stored is None or math.isclose(stored, now, rel_tol=1e-4, abs_tol=1e-5):
                continue
            report.add(path, f"--verify: {row['metric']} re-evaluates to {now:.6g} on this machine, the unit "
                       f"stores {stored:.6g}")
    report.verified = len(pruned)
    report.verified_units = [p.name for p in pruned]


def _check_denominator(units: list[tuple[str, int]], report: Report, protocol: Protocol) -> None:
    """Every board task has one unit per seed, the same seeds for every task: tasks solved count out of all.

    `units` is (task, seed) per unit. Several seeds are welcome (the board shows their spread), but only the
    same seeds for every task: a seed kept where it did well and dropped where it did not is a gamed number.
    """
    from collections import Counter

    seeds: dict[str, list[int]] = {}
    for task, seed in units:
        seeds.setdefault(task, []).append(seed)
    missing = [t for t in protocol.board_tasks() if t not in seeds]
    if missing:
        report.add("results", f"no unit for {len(missing)} of the {len(protocol.board_tasks())} board tasks "
                   f"({', '.join(missing)}): every task is in the denominator, solved or not; run `--tasks all`")
    twice = sorted(t for t, s in seeds.items() if len(s) != len(set(s)))
    if twice:
        report.add("results", f"two units of the same seed for {', '.join(twice)}")
    sets = Counter(tuple(sorted(set(s))) for s in seeds.values())
    if len(sets) > 1:
        by_set = "; ".join(f"seeds {', '.join(map(str, k))}: {n} task(s)" for k, n in sorted(sets.items()))
        odd = sorted(t for t, s in seeds.items() if tuple(sorted(set(s))) != sets.most_common(1)[0][0])
        report.add("results", f"the tasks were run with different seeds ({by_set}; e.g. {', '.join(odd[:3])}): "
                   "submit the same seeds for every task (`--seeds` on run)")


def _check_validation(meta: SubmissionMeta, meta_path: Path, report: Report) -> None:
    v = meta.validation
    if v.measured_by == "circuitbench" and v.weights_sha256 != meta.model.weights_sha256:
        report.add(meta_path, f"validation.weights_sha256 {v.weights_sha256!r} is not model.weights_sha256: a loss "
                   "measured by circuitbench must be of the submitted weights (rerun `circuitbench val-loss`), or "
                   "set validation.measured_by to submitter")


def validate(results: Path, meta_path: Path, board: Path | None = None, verify: bool = False,
             verify_seed: int | None = None) -> Report:
    """Check a submission; the report lists every problem (an empty list means it can be accepted).

    The protocol is the board's (`BOARD/protocol.json`, or the official one when the board has none or no
    board is given). With `verify`, a sample of the saved circuits is also re-evaluated on the model
    (`verify_sample`).
    """
    report = Report()
    results, meta_path = Path(results), Path(meta_path)
    try:
        meta = SubmissionMeta.model_validate_json(meta_path.read_text())
    except FileNotFoundError:
        report.add(meta_path, "no such metadata file")
        return report
    except ValidationError as err:
        for e in err.errors():
            report.add(meta_path, f"{'.'.join(map(str, e['loc']))}: {e['msg']}")
        return report
    except (OSError, UnicodeDecodeError) as err:
        why = "a directory" if meta_path.is_dir() else f"unreadable ({type(err).__name__})"
        report.add(meta_path, f"the metadata file is {why}; give --meta a UTF-8 submission.json")
        return report
    if meta.submission_format != SUBMISSION_FORMAT:
        report.add(meta_path, f"submission_format {meta.submission_format!r}: this board reads "
                   f"{SUBMISSION_FORMAT!r}")
    units, report.left_out, names = select_units(results, meta)
    if not units:
        found = "; found " + ", ".join(sorted(report.left_out)) if report.left_out else ""
        report.add(results, f"no units of model {meta.model.name!r} (weights {meta.model.weights_sha256[:12]}) with "
                   f"method {meta.method.name!r} (RESULTS/MODEL/TASK.METHOD.seedN.parquet){found}; run "
                   "`circuitbench run` first, or fix model.weights_sha256 / method.name")
    if len(names) > 1:
        report.add(results, f"the units name the model differently ({', '.join(sorted(names))}); one submission is "
                   "one model")
    try:
        protocol = load_protocol(board)
    except CircuitbenchError as err:
        report.add(board or "board", str(err))
        return report
    _check_validation(meta, meta_path, report)
    tasks = [t for path in units if (t := _check_unit(path, meta, report, protocol)) is not None]
    if units:
        _check_denominator(tasks, report, protocol)
    report.units = len(units)
    if verify and units and report.ok:
        verify_sample(units, meta, report, seed=verify_seed)
    report.files = submission_files(results, units)
    report.content_hash = content_hash(results, report.files) if units else ""
    if board is not None and report.content_hash and (Path(board) / "submissions" / report.content_hash).exists():
        report.add(results, f"a duplicate of accepted submission {report.content_hash[:16]}")
    return report


def accept(results: Path, meta_path: Path, board: Path, verify: bool = False) -> Path:
    """Validate a submission and copy it under BOARD/submissions/<content hash>/.

    With `verify`, a sample of its circuits is re-evaluated first (`verify_sample`).

    Raises:
        CircuitbenchError: listing every problem found, when the submission is not valid.
    """
    report = validate(results, meta_path, board, verify)
    if not report.ok:
        raise CircuitbenchError(f"submission refused ({len(report.problems)} problem(s)):\n  "
                                + "\n  ".join(report.problems))
    dest = Path(board) / "submissions" / report.content_hash
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for f in report.files:  # only this model's and method's units, with their circuits and edges
        target = tmp / "results" / f.relative_to(results)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    shutil.copyfile(meta_path, tmp / META_FILE)  # validated: readable UTF-8 JSON
    (tmp / "accepted.json").write_text(json.dumps({"content_hash": report.content_hash, "units": report.units,
                                                   "submission_format": SUBMISSION_FORMAT}, indent=2) + "\n")
    tmp.rename(dest)
    return dest
