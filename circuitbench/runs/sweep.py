"""Sweeps: a grid of models x tasks x methods x seeds from one YAML file, run as units behind an executor.

A sweep file names lists where a run names one value::

    models: [tiny-sparse, tiny-dense]        # bundled names, model directories or Hub ids
    tasks: [all]                             # task names, NAME:inverted, spec paths, or all
    methods:                                 # a registry name, or a mapping with its hyperparameters
      - learned_mask
      - {name: eap, max_examples: 128}
    seeds: [0, 1]
    out: results/sweep                       # optional: every other run setting, as in `circuitbench run`
    ablation: mean

Every (model, method, seed) becomes a `RunConfig`, validated before any model loads; its units are the
tasks. Each model is loaded once and its units go to the executor together (local: one after another;
Ray: as parallel tasks). Finished units are skipped, so a rerun resumes; a failing unit is retried once,
then reported while the others finish; one reduce step writes the summary at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator

from circuitbench.circuits.methods import canonical_name
from circuitbench.errors import CircuitbenchError
from circuitbench.results.unit import UnitSettings
from circuitbench.runs.config import RunConfig, RunOptions, validate
from circuitbench.runs.executors import Executor, LocalExecutor
from circuitbench.runs.runner import execute_configs, reduce


class SweepSpec(UnitSettings, RunOptions):
    """A sweep file: lists for the grid's axes, single values for everything else.

    The single values are the unit settings and run options, with the names and defaults of `circuitbench run`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    models: list[str] = Field(min_length=1)
    """Models to run: bundled names, model directories or Hub ids."""
    tasks: list[str] = Field(default_factory=lambda: ["all"], min_length=1)
    """Task names (NAME:inverted too), spec paths, or `all`."""
    methods: list[str | dict[str, Any]] = Field(default_factory=lambda: list[str | dict[str, Any]](["learned_mask"]),
                                                min_length=1)
    """Method names, or mappings `{name: NAME, HYPERPARAMETER: VALUE, ...}`."""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    """Seeds (pair subsets, mask initialisation, random rankings)."""

    @field_validator("methods")
    @classmethod
    def _named(cls, methods: list[str | dict[str, Any]]) -> list[str | dict[str, Any]]:
        for m in methods:
            if isinstance(m, dict) and not isinstance(m.get("name"), str):
                raise ValueError(f"a method given as a mapping needs `name: METHOD` (got {m})")
        return methods

    def configs(self, force: bool = False, show_progress: bool = True) -> list[RunConfig]:
        """One `RunConfig` per (model, method, seed), in file order."""
        out = []
        for model in self.models:
            for method in self.methods:
                name, kwargs = (method, {}) if isinstance(method, str) else (
                    method["name"], {k: v for k, v in method.items() if k != "name"})
                for seed in self.seeds:
                    out.append(RunConfig(model=model, tasks=list(self.tasks), method=canonical_name(name),
                                         method_kwargs=kwargs, seed=seed, force=force, show_progress=show_progress,
                                         **self.settings(), **self.options()))
        return out


def load_sweep(path: Path, out: Path | None = None) -> SweepSpec:
    """Read and validate a sweep file; every problem is one line naming the file and field.

    Raises:
        CircuitbenchError: for a missing or unreadable file, bad YAML, or a field that does not validate.
    """
    from circuitbench.validation import format_validation_error

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CircuitbenchError(f"{path}: cannot read the sweep file ({err.strerror})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        pos = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise CircuitbenchError(f"{path}{pos}: not valid YAML: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(data, dict):
        raise CircuitbenchError(f"{path}: expected a mapping with at least `models:` (see `circuitbench sweep -h`)")
    if out is not None:
        data["out"] = str(out)
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        raise CircuitbenchError(format_validation_error(err, str(path), SweepSpec)) from None


def sweep(spec: SweepSpec, executor: Executor | None = None, force: bool = False, show_progress: bool = True,
          where: str = "sweep") -> list[dict[str, Any]]:
    """Run every unit of the grid; return one summary row per unit, in grid order.

    Every configuration is validated before any model loads, so a typo in the last method fails at once.

    Raises:
        CircuitbenchError: for an invalid setting (naming the sweep file's entry), or, after every other
            unit is written, listing the units that failed.
    """
    configs = spec.configs(force, show_progress)
    for cfg in configs:
        try:
            validate(cfg)
        except CircuitbenchError as err:
            raise CircuitbenchError(f"{where}: model {cfg.model}, method {cfg.method}, seed {cfg.seed}: "
                                    f"{err}") from None
    rows, failures = execute_configs(configs, executor or LocalExecutor(fail_fast=False, retries=1),
                                     desc="sweep units", show_progress=show_progress)
    reduce(spec.out)
    if failures:
        raise CircuitbenchError(f"{len(failures)} unit(s) failed after a retry (every other unit is written to "
                                f"{spec.out}):\n  " + "\n  ".join(failures))
    return rows

