"""A board's protocol, and the board's numbers recomputed from what a unit measured.

A benchmark's numbers are only comparable when they were made the same way. A board states one protocol
(`Protocol`; the official board's is `circuitbench run` with no flags, on every bundled task; a board of
one's own may fix another in `BOARD/protocol.json`, never one whose labels would be untrue), and `submit`
refuses a unit run any other way, naming each difference. Every task is in the denominator: a submission
holds one unit per board task, solved or not.

The board never reads a number from a unit's summary row (which anyone can edit): `board_numbers`
recomputes every number it shows from the unit's long table of measurements and its saved circuit,
and the validator refuses a summary that disagrees with them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationError, field_validator, model_validator

from circuitbench.results.status import NOT_PRUNED, status_from_measurements
from circuitbench.results.unit import INTERVAL_NUMBERS, UnitSettings

PROTOCOL_FILE = "protocol.json"
"""A board's protocol file (`BOARD/protocol.json`); a board without one uses the official protocol."""

CHANCE_LOSS = math.log(2)
"""Per-example task loss of a 50/50 guess between the two answers: a target at or above it is met by any
circuit, the empty one included."""

CHANCE_ACCURACY = 0.5
"""Accuracy of a coin flip on a balanced binary task."""


class Protocol(UnitSettings):
    """How every unit on a board was run.

    The defaults are the official board's: `circuitbench run`'s defaults (the `UnitSettings` fields) on every
    bundled task. A protocol never sets a target at or above chance, an accuracy bar at or below it, or
    fewer than one pair of search examples.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    tasks: list[str] | None = None
    """The board's tasks (each submission holds one unit of each); None: every bundled task."""

    @model_validator(mode="after")
    def _labels_true(self) -> Protocol:
        if not (math.isfinite(self.target_loss) and 0 < self.target_loss < CHANCE_LOSS):
            raise ValueError(f"target_loss {self.target_loss}: must be above 0 and below chance (ln 2 = 0.693)")
        if not (CHANCE_ACCURACY < self.min_accuracy <= 1):
            raise ValueError(f"min_accuracy {self.min_accuracy}: must be above chance (0.5) and at most 1")
        if self.search_examples < 2:
            raise ValueError(f"search_examples {self.search_examples}: must be at least one pair (2)")
        return self

    @field_validator("tasks")
    @classmethod
    def _known(cls, tasks: list[str] | None) -> list[str] | None:
        from circuitbench.tasks.load import spec_names

        if tasks is not None:
            unknown = sorted(set(tasks) - set(spec_names()))
            if unknown or not tasks:
                raise ValueError(f"not bundled tasks: {', '.join(unknown) or '(none given)'}")
            twice = sorted({t for t in tasks if tasks.count(t) > 1})
            if twice:  # a task counted twice would score "2 / 3" on a board of 2 distinct tasks
                raise ValueError(f"tasks listed more than once: {', '.join(twice)}; list each task once")
        return tasks

    def board_tasks(self) -> list[str]:
        """The tasks every submission is measured on, sorted."""
        from circuitbench.tasks.load import spec_names

        return sorted(self.tasks if self.tasks is not None else spec_names())

    def text(self) -> str:
        """The protocol in one sentence, as the board states it."""
        n = len(self.board_tasks())
        which = "every one of the bundled tasks" if self.tasks is None else "the tasks " + ", ".join(self.board_tasks())
        return (f"{which} ({n}); target loss {self.target_loss} per example; a task is pruned when the full model's "
                f"test accuracy is at least {self.min_accuracy}; {self.ablation} ablation; inverted-label control "
                f"{'on' if self.control else 'off'}; {'calibrated' if self.calibrate else 'no'} calibration; "
                f"{self.search_examples} search examples")

    def differences(self, unit: Any) -> list[str]:
        """`field = VALUE (the board's protocol: VALUE)` for every setting of a unit that is not the protocol's."""
        return [f"{key} = {getattr(unit, key)!r} (the board's protocol: {want!r})"
                for key, want in self.settings().items() if getattr(unit, key) != want]


def load_protocol(board: Path | None) -> Protocol:
    """The protocol of a board: BOARD/protocol.json, or the official one.

    Raises:
        CircuitbenchError: naming the file and field when the protocol file is not a valid protocol.
    """
    from circuitbench.errors import CircuitbenchError

    path = None if board is None else Path(board) / PROTOCOL_FILE
    if path is None or not path.is_file():
        return Protocol()
    try:
        return Protocol.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, OSError, UnicodeDecodeError) as err:
        first = str(err).splitlines()
        raise CircuitbenchError(f"{path}: not a valid board protocol ({'; '.join(first[:3])})") from None


def _curve_areas(m: dict[tuple[str, str], float]) -> dict[str, float | None]:
    from circuitbench.circuits.curves import MIB_FRACTIONS, Curve

    def curve(prefix: str) -> Curve | None:
        f = [m.get(("test", f"{prefix}{frac:g}")) for frac in MIB_FRACTIONS]
        if any(v is None for v in f):
            return None
        return Curve(MIB_FRACTIONS, (), tuple(float(v) for v in f))  # type: ignore[arg-type]

    absolute = curve("curve_f_")
    signed = curve("curve_signed_f_") or absolute
    return {
        "cpr": None if signed is None else signed.cpr(),
        "cmd": None if absolute is None else absolute.cmd(),
        "cpr_log": None if signed is None else signed.cpr_log(),
        "cmd_log": None if absolute is None else absolute.cmd_log(),
    }


def board_numbers(m: dict[tuple[str, str], float], unit: Any, unit_file: Path | None = None) -> dict[str, Any]:
    """Every number the board shows for a unit, recomputed from its measurements (and saved circuit).

    Args:
        m: The unit's long table as {(split, metric): value}.
        unit: Its `Unit` (the settings: the accuracy bar).
        unit_file: The unit's Parquet file; when given, nodes and edges are read from the saved circuit
            and edge table beside it, not from the measurements.

    Returns:
        status, full_accuracy, full_loss, nodes, edges, faithfulness, sufficiency_loss, necessity_loss,
        target_loss, control_nodes, control_met_target, cpr, cmd, cpr_log, cmd_log, and the 95% intervals
        (`NAME_lo`, `NAME_hi` of `INTERVAL_NUMBERS`) (None where not measured).
    """
    acc = m.get(("test", "full_accuracy"))
    out: dict[str, Any] = {"full_accuracy": acc, "full_loss": m.get(("test", "full_loss"))}
    keys = ("nodes", "edges", "faithfulness", "sufficiency_loss", "necessity_loss", "target_loss", "control_nodes",
            "control_met_target", "cpr", "cmd", "cpr_log", "cmd_log")
    out.update(dict.fromkeys(keys))
    out["status"] = status_from_measurements(m, unit.target_loss, unit.min_accuracy)
    if out["status"] in NOT_PRUNED:
        return out
    nodes, edges = m.get(("", "nodes")), m.get(("", "edges"))
    if unit_file is not None:
        from circuitbench.results.circuit import Circuit, circuit_paths, edges_total

        cpath, epath = circuit_paths(unit_file)
        nodes, edges = Circuit.load(cpath).k, edges_total(epath)
    control = m.get(("", "control_met_target"))
    out.update(
        nodes=None if nodes is None else int(nodes), edges=None if edges is None else int(edges),
        faithfulness=m.get(("test", "faithfulness")), sufficiency_loss=m.get(("test", "sufficiency_loss")),
        necessity_loss=m.get(("test", "necessity_loss")), target_loss=m.get(("train", "target_loss")),
        control_nodes=None if m.get(("", "control_nodes")) is None else int(m[("", "control_nodes")]),
        control_met_target=None if control is None else bool(control), **_curve_areas(m),
        **{f"{k}_{end}": m.get(("test", f"{k}_{end}")) for k in INTERVAL_NUMBERS for end in ("lo", "hi")},
    )
    return out
