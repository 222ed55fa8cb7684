"""Pictures of results: faithfulness curves per task, one line per method (matplotlib, an optional extra)."""

from __future__ import annotations

from pathlib import Path

from circuitbench.errors import CircuitbenchError

Curves = dict[str, dict[str, list[tuple[float, float]]]]


def curve_prefix(metric: str = "logit_diff") -> str:
    """The measurement-name prefix of a faithfulness curve at MIB's sizes.

    `curve_f_` (logit difference, nodes ranked by absolute score), `curve_{loss,accuracy,kl}_f_`, or
    `curve_signed_f_` (`signed`: the logit difference with nodes ranked by signed score, which CPR uses).
    """
    return "curve_f_" if metric == "logit_diff" else f"curve_{metric}_f_"


def read_curves(out: Path, model: str, methods: list[str], seed: int = 0, metric: str = "logit_diff",
                level: str = "nodes") -> Curves:
    """Task -> method -> [(fraction of nodes or edges, faithfulness)] from the units' curve measurements."""
    from circuitbench.results.store import read_unit, unit_files

    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for path in unit_files(out):
        table, summary, prov = read_unit(path)
        u = prov.unit
        if u.model.name != model or u.method not in methods or u.seed != seed or u.level != level:
            continue
        prefix = curve_prefix(metric)
        pts = [(float(r["metric"].removeprefix(prefix)), r["value"]) for r in table.to_pylist()
               if r["metric"].startswith(prefix) and r["split"] == "test"]
        if pts:
            curves.setdefault(u.task, {})[u.method] = sorted(pts)
    return curves


def plot_curves(curves: dict[str, dict[str, list[tuple[float, float]]]], path: Path, title: str = "",
                ylabel: str = "faithfulness", level: str = "nodes") -> list[Path]:
    """One panel per task, faithfulness against circuit size (log axis); writes PATH.svg and PATH.png.

    Raises:
        CircuitbenchError: when matplotlib is not installed (it is an optional extra) or there is nothing to plot.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise CircuitbenchError("plots need matplotlib: pip install 'circuitbench[plot]'") from err
    if not curves:
        raise CircuitbenchError("no faithfulness curves to plot (no task was pruned)")
    tasks = sorted(curves)
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        for method, pts in sorted(curves[task].items()):
            ax.plot([100 * x for x, _ in pts], [y for _, y in pts], marker="o", ms=3, label=method)
        ax.set_xscale("log")
        ax.axhline(1.0, color="grey", lw=0.5, ls="--")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel(f"circuit size (% of {level})")
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8 if cols == 1 else None)  # one panel: a narrow figure
    fig.tight_layout()
    out: list[Path] = []
    for ext in ("svg", "png"):
        p = Path(path).with_suffix(f".{ext}")
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=120)
        out.append(p)
    plt.close(fig)
    return out
