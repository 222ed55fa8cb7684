"""A unit of work and its result, as types: what the evaluator takes and returns, and the runner stores.

A `Unit` names everything that can change a number it produces: the model (by name *and* weights hash),
the task (by name and content hash), the method and its validated hyperparameters, the ablation, the seed,
and the search settings. Two units with equal identities give equal results on the same device and
dtype; a finished unit whose identity differs from the one asked for is never reused.

A `UnitResult` holds the unit, the summary numbers, the long table of every measurement, and the circuit.
The Parquet summary schema is derived from its fields (`circuitbench.results.schema`), so a field is
declared once.

Names used everywhere (YAML, code, Parquet, CLI and docs):
- `task_hash`: a task's content hash; `pair_seed`: the task YAML's `seed`, which seeds its pair
  generator (part of `task_hash`); `seed`: the unit's seed, which seeds the method and the search subset.
- `split`: which examples of a task (`train`, where the circuit is searched, or `test`, where it is
  measured); nothing else is called a split in results.
- `method`: a registry name with underscores (`learned_mask`); the CLI accepts `learned-mask` too.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from circuitbench.results.status import NOT_PRUNED as NOT_PRUNED  # the statuses' one rule, re-exported
from circuitbench.results.status import PRUNED as PRUNED
from circuitbench.results.status import Status

AblationKind = Literal["mean", "task-mean", "zero", "counterfactual"]

INTERVAL_NUMBERS = ("sufficiency_loss", "necessity_loss", "faithfulness", "cpr", "cmd")
"""The numbers a unit stores with a 95% bootstrap interval over its test pairs, as `NAME_lo` and `NAME_hi`."""


class ModelRef(BaseModel):
    """A model as a unit names it: display name plus the hashes of the weights that produce its numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """Display name (bundled name, directory or Hub id), with an `+sae:...` suffix when SAEs are spliced."""
    weights_sha256: str | None = None
    """sha256 of the weight file (None only for models built in memory)."""
    revision: str | None = None
    """Hub commit or revision, when loaded from the Hub."""
    sae_weights_sha256: tuple[str, ...] = ()
    """sha256 of each spliced SAE's weights, in splice order."""


class UnitSettings(BaseModel):
    """The settings that can change a unit's numbers beyond its model, task, method and seed, declared once.

    `Unit` extends it; `circuitbench.runs.config.RunConfig`, sweep files and a board's protocol extend it
    too, and the CLI's flags for these settings (names, types, choices, defaults and help) are built from
    these fields, so each default is written here and nowhere else.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    ablation: AblationKind = "mean"
    """What pruned nodes take: the pretraining-corpus mean (the paper's), the task mean, zero, or the pair
    partner's activations (counterfactual, MIB's interchange)."""
    target_loss: float = 0.15
    """Per-example task-loss target of the circuit search (Gao et al. 2025: 0.15)."""
    min_accuracy: float = 0.9
    """Tasks the full model solves below this test accuracy are reported, not pruned."""
    control: bool = True
    """Prune the inverted-label control too (Drori 2026); `--no-control` skips it, which takes the results off
    the board's protocol."""
    calibrate: bool = False
    """Fit a scale and shift of the final logits to each circuit (16 LBFGS steps) before scoring it."""
    search_examples: int = 512
    """Train-split examples the bisection evaluates (whole pairs)."""
    level: Literal["nodes", "edges"] = "nodes"
    """What a circuit keeps: nodes (channels; every other node ablated) or edges (every other edge ablated:
    its destination receives the ablated value of that contribution; MIB's circuit track, Edge Pruning)."""

    def settings(self) -> dict[str, Any]:
        """These settings alone, by field name."""
        return {name: getattr(self, name) for name in UnitSettings.model_fields}


class Unit(UnitSettings):
    """One (model, task, method, seed) computation and every setting that can change its numbers."""

    model: ModelRef
    task: str
    """Task name, NAME or NAME:inverted."""
    task_hash: str
    """Content hash of the task spec and generator."""
    method: str
    """Registry name of the method."""
    method_kwargs: dict[str, Any] = Field(default_factory=dict)
    """The method's full hyperparameters, defaults included (validated against the registry)."""
    seed: int = 0
    """Seeds the method and the search subset."""
    dtype: str = "float32"
    """Model dtype."""

    def identity(self) -> dict[str, Any]:
        """Every field, as JSON-ready values: equal identities, equal numbers.

        `level` appears only at the edge level, so node-level units keep the keys they had before it existed.
        """
        out = self.model_dump(mode="json")
        if out.get("level") == "nodes":
            del out["level"]
        return out

    def key(self) -> str:
        """A short hash of the identity (stable across processes and machines)."""
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def differences(self, other: Unit) -> list[str]:
        """`field (then X, now Y)` for every setting that differs, with nested model fields spelled out."""
        a, b = _flat(other.identity()), _flat(self.identity())
        return [f"{k} (then {a.get(k)!r}, now {b.get(k)!r})" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "method_kwargs":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class Measurement(BaseModel):
    """One row of the long table: a named number on a split ("" for sizes, which have no split)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split: Literal["train", "test", ""]
    metric: str
    value: float


class UnitResult(BaseModel):
    """What the evaluator returns for a unit: the summary numbers, every measurement, and the circuit.

    The summary fields below (all but `unit`, `measurements` and `circuit`) are the columns of
    `summary.parquet`, in this order, with these types: the schema is derived from them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    unit: Unit
    status: Status
    """See `Status`."""
    full_accuracy: float | None = None
    full_loss: float | None = None
    target_loss: float | None = None
    """The target the circuit had to meet: max(unit.target_loss, the full model's search-split loss)."""
    test_target_loss: float | None = None
    """The same on the test split, which `status` holds the circuit to (`circuitbench.results.status`)."""
    nodes: int | None = None
    edges: int | None = None
    circuit_train_loss: float | None = None
    sufficiency_loss: float | None = None
    sufficiency_accuracy: float | None = None
    necessity_loss: float | None = None
    necessity_accuracy: float | None = None
    faithfulness: float | None = None
    cpr: float | None = None
    """Area under faithfulness over circuit size, MIB's sizes on MIB's linear axis (higher is better)."""
    cmd: float | None = None
    """Area under |1 - faithfulness| over size, linear axis (lower is better)."""
    cpr_log: float | None = None
    """CPR on a log10 size axis normalised to [0, 1] (sees circuits far below 10 % of the model)."""
    cmd_log: float | None = None
    """CMD on the log10 size axis."""
    sufficiency_loss_lo: float | None = None
    """`NAME_lo` and `NAME_hi`: the 95% bootstrap interval of NAME over the test pairs
    (`circuitbench.circuits.intervals`), for sufficiency and necessity loss, faithfulness, CPR and CMD."""
    sufficiency_loss_hi: float | None = None
    necessity_loss_lo: float | None = None
    necessity_loss_hi: float | None = None
    faithfulness_lo: float | None = None
    faithfulness_hi: float | None = None
    cpr_lo: float | None = None
    cpr_hi: float | None = None
    cmd_lo: float | None = None
    cmd_hi: float | None = None
    control_nodes: int | None = None
    control_edges: int | None = None
    """Edge level: the control circuit's kept edges (`control_nodes`: the nodes they touch)."""
    control_met_target: bool | None = None
    test_examples: int = 0
    dropped_examples: int = 0
    wall_s: float = 0.0
    measurements: tuple[Measurement, ...] = ()
    circuit: Any = Field(default=None, exclude=True)
    """The `circuitbench.results.circuit.Circuit` found (None when the task was not pruned)."""

    def summary(self) -> dict[str, Any]:
        """The summary row: identity columns first, then the numbers (NaN stays NaN)."""
        row: dict[str, Any] = {"model": self.unit.model.name, "task": self.unit.task, "method": self.unit.method,
                               "level": self.unit.level, "seed": self.unit.seed}
        for name in summary_fields():
            row[name] = getattr(self, name)
        return row

    def metric(self, name: str, split: str = "test") -> float:
        """One measurement by name (NaN when absent)."""
        for m in self.measurements:
            if m.metric == name and m.split == split:
                return m.value
        return math.nan


def summary_fields() -> list[str]:
    """The UnitResult fields that are summary columns, in declaration order."""
    skip = {"unit", "measurements", "circuit"}
    return [n for n in UnitResult.model_fields if n not in skip]
