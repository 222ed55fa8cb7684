"""A unit's status: the one rule that says whether a circuit was found, and whether it holds on held-out pairs.

Every place that gives a unit a status calls `circuit_status` (the evaluator, `circuit import`, `circuit
backup`) or `status_from_measurements` (the board, which recomputes every number it shows, and `read_unit`,
so a file written under an earlier rule is read under this one).

The rule:
- The **target** on a split is `effective_target(target_loss, full_loss)`: the unit's target loss, or the
  full model's own loss on that split where the full model is weaker than the target (it solves the task, just
  less confidently; keeping every node always meets that).
- The search looks at the search examples (drawn from the train split) only; it never sees the test split.
- `solved`: the circuit meets the target on the search examples **and** on the held-out test pairs, within
  `HELD_OUT_TOLERANCE` (its test sufficiency loss is at most 1.2 x the test target).
- `train_only`: it meets the target on the search examples and misses it on the test pairs by more than that.
- `target_missed`: no circuit the search tried met the target on the search examples.
- `unsolved` (the full model is below the accuracy bar) and `no_examples` (no example survives the model's
  tokenizer): the task was not pruned.

Why a tolerance at all: the test loss is a mean over the test split's prompts and moves with the sample
(docs/tutorials/find-a-circuit.md states the rule beside `circuitbench run`'s steps); a circuit 1.5x or more
over the target (indent_for's learned-mask circuit: 4.4x) misses on any draw.
"""

from __future__ import annotations

import math
from typing import Any, Literal

Status = Literal["solved", "train_only", "target_missed", "unsolved", "no_examples"]
"""See the module docstring."""

HELD_OUT_TOLERANCE = 1.2
"""A circuit holds on the test pairs when its sufficiency loss there is at most this times the test target."""

PRUNED: frozenset[str] = frozenset({"solved", "train_only", "target_missed"})
"""The statuses of a task that was pruned, so has a circuit (met or not)."""

NOT_PRUNED: frozenset[str] = frozenset({"unsolved", "no_examples"})
"""The statuses of a task that was not pruned, so has no circuit."""

STATUS_MEANING: dict[str, str] = {
    "solved": "the circuit meets the target on the search pairs and on the held-out test pairs",
    "train_only": "the circuit meets the target on the search pairs but misses it on the held-out test pairs",
    "target_missed": "no circuit the search tried meets the target on the search pairs",
    "unsolved": "the full model is below the accuracy bar: not pruned",
    "no_examples": "no example survives the model's tokenizer: not measured",
}


def effective_target(target_loss: float, full_loss: float) -> float:
    """The loss a circuit must reach on a split: the unit's target, or the full model's loss there if higher."""
    return max(target_loss, full_loss)


def holds_out(test_loss: float | None, test_target: float) -> bool:
    """Whether a circuit's test sufficiency loss meets the test target within `HELD_OUT_TOLERANCE`."""
    return test_loss is not None and math.isfinite(test_loss) and test_loss <= HELD_OUT_TOLERANCE * test_target


def circuit_status(met_on_search: bool, test_loss: float | None, test_target: float) -> Status:
    """The status of a pruned unit: `solved`, `train_only` or `target_missed` (see the module docstring)."""
    if not met_on_search:
        return "target_missed"
    return "solved" if holds_out(test_loss, test_target) else "train_only"


def test_target(m: dict[tuple[str, str], float], target_loss: float) -> float:
    """The test split's target from a unit's measurements (recorded since the held-out rule; else derived)."""
    return m.get(("test", "target_loss"), effective_target(target_loss, m.get(("test", "full_loss"), math.nan)))


def status_from_measurements(m: dict[tuple[str, str], float], target_loss: float, min_accuracy: float) -> Status:
    """A unit's status recomputed from its long table of measurements, {(split, metric): value}.

    Args:
        m: The measurements.
        target_loss: The unit's configured target loss (`Unit.target_loss`).
        min_accuracy: The unit's accuracy bar (`Unit.min_accuracy`).
    """
    if m.get(("test", "examples"), 2) < 2 or m.get(("train", "examples"), 2) < 2:
        return "no_examples"
    acc = m.get(("test", "full_accuracy"))
    loss, target = m.get(("train", "circuit_loss")), m.get(("train", "target_loss"))
    if acc is None or acc < min_accuracy or loss is None or target is None:
        return "unsolved"
    return circuit_status(loss <= target, m.get(("test", "sufficiency_loss")), test_target(m, target_loss))


def with_status(summary: dict[str, Any], m: dict[tuple[str, str], float], target_loss: float,
                min_accuracy: float) -> dict[str, Any]:
    """The summary row with its status recomputed by this rule (a file from an earlier rule reads as today's)."""
    return {**summary, "status": status_from_measurements(m, target_loss, min_accuracy),
            "test_target_loss": test_target(m, target_loss)}


SPECIFIC_CONTROL_RATIO = 2.0
"""A circuit is specific when its inverted-label control misses the target, or needs at least this many times
its size to meet it (Drori 2026: pruning can fit nonsense labels; a task circuit should be clearly cheaper)."""


def control_ratio(summary: dict[str, Any]) -> float | None:
    """The control circuit's size over the task circuit's (edges at the edge level, else nodes).

    None where no control ran or no task circuit met the target on the search pairs; `inf` where the control
    missed the target (no circuit the search tried fits the inverted labels).
    """
    key = "edges" if summary.get("level") == "edges" else "nodes"
    size, control = summary.get(key), summary.get(f"control_{key}")
    met = summary.get("control_met_target")
    if summary.get("status") not in ("solved", "train_only") or size is None or control is None or met is None:
        return None
    if not met:
        return math.inf
    return control / max(size, 1)


def is_specific(summary: dict[str, Any]) -> bool | None:
    """Whether a unit's circuit counts as specific: `solved` (met held out) and its control clearly dearer or missed.

    None where no control ran (nothing to judge by).
    """
    ratio = control_ratio(summary)
    if ratio is None:
        return None
    return summary.get("status") == "solved" and ratio >= SPECIFIC_CONTROL_RATIO


def control_text(summary: dict[str, Any]) -> str:
    """The control against the circuit, as tables show it: `missed`, `3.1x`, or `–` where none ran."""
    ratio = control_ratio(summary)
    if ratio is None:
        return "–"
    return "missed" if math.isinf(ratio) else f"{ratio:.1f}x"
