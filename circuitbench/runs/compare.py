"""Several methods on one model's tasks, measured the same way: what `circuitbench compare` runs.

Every method's configuration is validated before the model loads; the model loads once; each method is a
`run` into the shared results directory (finished units are skipped, so a rerun resumes). The tables and
the curve plots are read back from what is on disk, so a comparison also covers units of earlier runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circuitbench.errors import CircuitbenchError
from circuitbench.protocols import ModelAdapter
from circuitbench.runs.config import RunConfig, validate


@dataclass(frozen=True)
class Comparison:
    """What a comparison found: every unit's summary, the two tables, and the curve plots."""

    rows: list[dict[str, Any]]
    """The summary of every unit of the compared methods in the results directory."""
    per_task: list[dict[str, Any]]
    """Every method on every pruned task."""
    methods: list[dict[str, Any]]
    """Means over the tasks every method pruned."""
    plots: list[Path] = field(default_factory=list)
    plot_error: str | None = None
    """Why there is no plot (None when there is one)."""
    seeds: list[dict[str, Any]] = field(default_factory=list)
    """The spread over seeds and the circuits' overlap (`circuitbench.results.seeds`), with several seeds."""

    def not_pruned(self, model: str, seed: int) -> list[str]:
        """The tasks the full model does not solve, so no method pruned."""
        return sorted({r["task"] for r in self.rows if r["model"] == model and r["seed"] == seed
                       and r["status"] == "unsolved"})


def compare_methods(base: RunConfig, methods: dict[str, dict[str, Any]],
                    adapter: ModelAdapter | None = None, seeds: list[int] | None = None) -> Comparison:
    """Run every method on `base`'s model and tasks, then tabulate and plot their faithfulness curves.

    Args:
        base: The shared settings (model, tasks, unit settings, out); its method is ignored.
        methods: Registry method names -> their hyperparameters.
        adapter: The model, already loaded; None loads `base.model`.
        seeds: Run every method with each of these seeds (the tables are of the first; `seeds` reports the
            spread); None: `base.seed`.

    Raises:
        CircuitbenchError: for any invalid setting of any method, before any compute.
    """
    from circuitbench.results.report import collect, method_table, method_task_table
    from circuitbench.results.seeds import seed_table
    from circuitbench.runs.runner import run

    configs = [base.model_copy(update={"method": m, "method_kwargs": kw, "seed": s})
               for s in (seeds or [base.seed]) for m, kw in methods.items()]
    for cfg in configs:
        validate(cfg)  # every setting of every method checked before the model loads
    if adapter is None:
        import circuitbench

        adapter = circuitbench.load_model(base.model, device=base.device)
    for cfg in configs:
        run(cfg, adapter)
    first = base.model_copy(update={"seed": (seeds or [base.seed])[0]})
    rows = [r for r in collect(base.out) if r["method"] in methods and r["level"] == base.level]
    per_task = method_task_table(rows, first.model, first.seed, base.level)
    table = method_table(rows, first.model, first.seed, base.level)
    plots, error = _plots(first, list(methods))
    spread = seed_table([r for r in rows if r["model"] == base.model and r["seed"] in set(seeds or [])],
                        Path(base.out)) if seeds and len(seeds) > 1 else []
    return Comparison(rows, per_task, table, plots, error, spread)


def _plots(base: RunConfig, methods: list[str]) -> tuple[list[Path], str | None]:
    from circuitbench.results.plots import plot_curves, read_curves

    model, seed, out, level = base.model, base.seed, Path(base.out), base.level
    tag, where = ("", "") if level == "nodes" else (f"-{level}", ", edge-level circuits")
    stem = out / f"compare-{model.replace('/', '_')}{tag}-seed{seed}"
    try:
        paths = plot_curves(read_curves(out, model, methods, seed, level=level), stem,
                            title=f"{model}: faithfulness (logit difference) by circuit size{where}", level=level)
        paths += plot_curves(read_curves(out, model, methods, seed, "kl", level), stem.with_name(stem.name + "-kl"),
                             ylabel="faithfulness (KL)", level=level,
                             title=f"{model}: faithfulness on KL from the model, 1 - KL(C) / KL(empty){where}")
    except CircuitbenchError as err:
        return [], str(err)
    return paths, None
