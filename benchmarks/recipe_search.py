"""Recipe search under a fixed budget: short training runs of equal wall time, scored by what they solve.

Each candidate is a set of `circuitbench train` options. For each one this script
1. times a few training steps of that shape on this machine (the probe, not counted),
2. sets `--max-steps` so the run takes about `--minutes` of wall time, so every candidate gets the
   same compute, with its learning-rate and L0 schedules laid out over the steps it will really take,
3. trains it with `circuitbench.train.loop.train` (the same code as `circuitbench train`),
4. scores the model as every user would: validation loss on the held-out packages, and full-model
   accuracy and task loss on every task's test split (`circuitbench.train.card.evaluate_tasks`).

One JSON line per candidate goes to `--out/results.jsonl` (a rerun skips candidates already there),
and a markdown table sorted by tasks solved to `--out/results.md`.

    python benchmarks/recipe_search.py --minutes 6 --threads 2 --out runs/search
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

CANDIDATES: dict[str, dict] = {
    # name: TrainConfig overrides (the rest: circuitbench train's defaults with --corpus pypi)
    "s-2x128-zero": dict(n_layer=2, d_model=128, n_head=4, weight_density=1 / 8),
    "s-2x128-learned": dict(n_layer=2, d_model=128, n_head=4, weight_density=1 / 8, pos_emb="learned"),
    "s-2x256-learned": dict(n_layer=2, d_model=256, n_head=8, weight_density=1 / 8, pos_emb="learned"),
    "s-2x128-learned-b16": dict(n_layer=2, d_model=128, n_head=4, weight_density=1 / 8, pos_emb="learned",
                                batch_size=16),
    "s-2x128-learned-lr2.6e-2": dict(n_layer=2, d_model=128, n_head=4, weight_density=1 / 8, pos_emb="learned",
                                     lr=2.56e-2),
}

_MODELS = Path(__file__).resolve().parents[1] / "baselines" / "models"
_REF = dict(n_layer=2, d_model=128, n_head=4, weight_density=1 / 8, batch_size=16)
LEVERS: dict[str, dict] = {
    # The reference models v3 levers (issue: dense-to-sparse, distillation, depth, AbsTopK fraction), each
    # at the same wall-time budget. `prior_min` is the training the starting model already had.
    "continue": dict(_REF, init_from=_MODELS / "tiny-sparse", anneal_end=0.0),
    "d2s": dict(_REF, init_from=_MODELS / "tiny-dense", anneal_afrac=True),
    "d2s-distill": dict(_REF, init_from=_MODELS / "tiny-dense", anneal_afrac=True,
                        distill_from=_MODELS / "tiny-dense"),
    "scratch-2x128": dict(_REF),
    "scratch-3x128": dict(_REF, n_layer=3),
    "d2s-afrac0.5": dict(_REF, init_from=_MODELS / "tiny-dense", anneal_afrac=True, afrac=0.5),
    "scratch-2x256-d1_32": dict(_REF, d_model=256, n_head=8, weight_density=1 / 32),
}
CANDIDATES.update(LEVERS)
V4_SHAPES: dict[str, dict] = {
    # Reference models v4, step 2: the shape chosen over hours (45 minutes each), not over minutes.
    "v4-continue-2x128": dict(_REF, init_from=_MODELS / "tiny-sparse", anneal_end=0.0),
    "v4-deeper-4x128": dict(_REF, n_layer=4),
    "v4-wider-2x256": dict(_REF, d_model=256, n_head=8),
}
CANDIDATES.update(V4_SHAPES)


def prior_minutes(over: dict) -> float:
    """Wall minutes of training the starting model (init_from) already had; 0 from scratch."""
    init = over.get("init_from")
    if init is None:
        return 0.0
    return round(json.loads((Path(init) / "train_meta.json").read_text())["wall_time_s"] / 60, 1)


def step_seconds(cfg, data, steps: int = 6) -> float:
    """Median wall time of a training step of this configuration on this machine."""
    from circuitbench.train import recipe
    from circuitbench.train.data import sample_batch
    from circuitbench.train.loop import _build, load_model_dir, resolve_precision, train_step

    model, opt = _build(cfg)
    teacher = load_model_dir(cfg.distill_from, "--distill-from") if cfg.distill_from else None
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    sparse = recipe.sparsifiable(model)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        x, y = sample_batch(data.train, cfg.batch_size, cfg.ctx, gen)
        t0 = time.perf_counter()
        train_step(model, opt, x, y, cfg, cfg.max_steps // 2, params, sparse, resolve_precision(cfg), teacher)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    """Run every candidate not yet in the results and write the table."""
    from tabulate import tabulate

    import circuitbench
    from circuitbench.train.card import evaluate_tasks
    from circuitbench.train.config import TrainConfig
    from circuitbench.train.data import prepare_data
    from circuitbench.train.loop import _cache_dir, train
    from circuitbench.train.release import META

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=6.0, help="wall time per candidate")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--corpus", default="pypi")
    ap.add_argument("--only", default=None, help="comma-separated candidate names")
    ap.add_argument("--out", type=Path, default=Path("runs/search"))
    ap.add_argument("--plot", type=Path, default=None,
                    help="also draw every candidate's validation loss against wall minutes (a .png)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.jsonl"
    done = {}
    if results_path.is_file():
        done = {r["name"]: r for r in map(json.loads, results_path.read_text().splitlines()) if r}
    base = TrainConfig(out_dir=Path("unused"), corpus=args.corpus)
    data, _ = prepare_data(_cache_dir(base), args.corpus, base.vocab_size, base.tokenizer_bytes)
    names = args.only.split(",") if args.only else list(CANDIDATES)
    for name in names:
        if name in done:
            continue
        over = CANDIDATES[name]
        if (args.out / name / META).is_file():  # trained before the search was interrupted: score it
            meta = json.loads((args.out / name / META).read_text())
            steps, sec, wall = meta["steps"], meta["wall_time_s"] / meta["steps"], meta["wall_time_s"]
        else:
            probe = TrainConfig(out_dir=Path("unused"), corpus=args.corpus, max_steps=1000, **over)
            sec = step_seconds(probe, data)
            steps = max(50, int(args.minutes * 60 / sec))
            cfg = TrainConfig(out_dir=args.out / name, corpus=args.corpus, max_steps=steps, threads=args.threads,
                              eval_every=max(50, steps // 8), checkpoint_every=steps, val_windows=256,
                              quiet=True, command=f"recipe_search {name}", **over)
            t0 = time.perf_counter()
            train(cfg, data=data)
            wall = time.perf_counter() - t0
            meta = json.loads((cfg.out_dir / META).read_text())
        tasks = evaluate_tasks(circuitbench.load_model(str(args.out / name), device="cpu"))
        solved = [t["task"] for t in tasks if t["accuracy"] >= 0.9]
        row = {
            "name": name, **{k: str(v) if isinstance(v, Path) else v for k, v in over.items()},
            "prior_min": prior_minutes(over), "steps": steps, "step_s": round(sec, 3), "tokens": meta["tokens_seen"],
            "wall_min": round(wall / 60, 2), "val_loss": meta["val_loss"], "solved": len(solved),
            "mean_task_loss": round(statistics.fmean(t["task_loss"] for t in tasks), 4),
            "mean_accuracy": round(statistics.fmean(t["accuracy"] for t in tasks), 4),
            "solved_tasks": solved, "nonzero": meta["params_nonzero"],
        }
        print(json.dumps(row), flush=True)
        with open(results_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        done[name] = row
    rows = sorted(done.values(), key=lambda r: (-r["solved"], r["mean_task_loss"]))
    cols = ["name", "prior_min", "steps", "tokens", "wall_min", "val_loss", "solved", "mean_accuracy", "mean_task_loss"]
    table = tabulate([{c: r.get(c, 0.0) for c in cols} for r in rows], headers="keys", tablefmt="github")
    (args.out / "results.md").write_text(table + "\n")
    print(table)
    if args.plot:
        plot_curves(args.out, [n for n in names if (args.out / n / "loss_curve.csv").is_file()], args.plot)


def plot_curves(out: Path, names: list[str], path: Path) -> None:
    """Validation loss against wall minutes (this run's, the starting model's training not counted), one line each."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in names:
        with open(out / name / "loss_curve.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["val_loss"]]
        ax.plot([float(r["elapsed_s"]) / 60 for r in rows], [float(r["val_loss"]) for r in rows], marker="o",
                label=name)
    ax.set_xlabel("wall minutes on 2 CPU cores (this run)")
    ax.set_ylabel("validation loss (10 held-out packages)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
