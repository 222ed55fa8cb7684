"""A board's accepted submissions, read back: each submission's metadata and its units' recomputed numbers.

`load_board(board)` reads `BOARD/submissions/<content hash>/` (what `circuitbench submit` accepted); every
number an `Entry` reports is recomputed from the units' measurements and saved circuits (`board_numbers`),
never read from a summary row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circuitbench.errors import CircuitbenchError
from circuitbench.leaderboard.protocol import board_numbers
from circuitbench.leaderboard.submit import META_FILE, SubmissionMeta
from circuitbench.results.status import PRUNED, is_specific


@dataclass
class UnitRecord:
    """One submitted unit, read back."""

    path: Path
    summary: dict[str, Any]
    measurements: dict[tuple[str, str], float]
    provenance: dict[str, Any]


@dataclass
class Entry:
    """One accepted submission: a model and a method."""

    content_hash: str
    meta: SubmissionMeta
    path: Path
    units: list[UnitRecord] = field(default_factory=list)
    """The units of the first (lowest) seed: what the board's headline numbers and pages show."""
    seed_units: list[UnitRecord] = field(default_factory=list)
    """Every unit, every seed (one seed: the same as `units`)."""

    @property
    def seeds(self) -> list[int]:
        """The seeds the submission ran (the same for every task: `submit` checks)."""
        return sorted({int(u.summary["seed"]) for u in self.seed_units})

    def spread(self, key: str) -> tuple[float, float] | None:
        """Mean and standard deviation over seeds of the geomean of `key` (nodes, edges) over each seed's solved tasks.

        None with one seed.
        """
        import statistics

        from circuitbench.results.report import geomean

        if len(self.seeds) < 2:
            return None
        per = [geomean([u.summary[key] for u in self.seed_units
                        if u.summary["seed"] == s and u.summary.get("status") == "solved"]) for s in self.seeds]
        per = [v for v in per if v == v]  # a seed that solved nothing has no geomean (NaN)
        return (statistics.fmean(per), statistics.stdev(per)) if len(per) > 1 else None

    @property
    def solved(self) -> list[UnitRecord]:
        """Units whose circuit meets the target on the search pairs and held out (`results.status`)."""
        return [u for u in self.units if u.summary.get("status") == "solved"]

    @property
    def specific(self) -> list[UnitRecord]:
        """Solved units whose inverted-label control misses the target or needs clearly more (`is_specific`)."""
        return [u for u in self.solved if is_specific(u.summary)]

    @property
    def pruned(self) -> list[UnitRecord]:
        """Units whose full model solves the task (pruned, at the target or not)."""
        return [u for u in self.units if u.summary.get("status") in PRUNED]

    @property
    def label(self) -> str:
        """`model · method`."""
        return f"{self.meta.model.name} · {self.meta.method.name}"


def load_board(board: Path) -> list[Entry]:
    """Every accepted submission under BOARD/submissions, sorted by model, method and hash.

    Raises:
        CircuitbenchError: naming the file, when a submission on the board cannot be read.
    """
    from circuitbench.results.store import read_unit, unit_files

    root = Path(board) / "submissions"
    entries = []
    for sub in sorted(p for p in root.glob("*") if p.is_dir() and not p.name.endswith(".tmp")):
        meta_path = sub / META_FILE
        try:
            meta = SubmissionMeta.model_validate_json(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise CircuitbenchError(f"{meta_path}: not a readable submission ({str(err).splitlines()[0]}); "
                                    "remove the folder or resubmit it") from None
        entry = Entry(sub.name, meta, sub)
        for path in unit_files(sub / "results"):
            table, _, prov = read_unit(path)  # the stored summary row is never shown: it is recomputed
            m = {(r["split"], r["metric"]): r["value"] for r in table.to_pylist()}
            u = prov.unit
            numbers = board_numbers(m, u, path)
            summary = {"model": u.model.name, "task": u.task, "method": u.method, "level": u.level, "seed": u.seed,
                       **numbers}
            entry.seed_units.append(UnitRecord(path, summary, m, json.loads(prov.model_dump_json())))
        first = min((u.summary["seed"] for u in entry.seed_units), default=0)
        entry.units = [u for u in entry.seed_units if u.summary["seed"] == first]
        entries.append(entry)
    return sorted(entries, key=lambda e: (e.meta.model.name, e.meta.method.name, e.content_hash))


# --- formatting ----------------------------------------------------------------------------------------
