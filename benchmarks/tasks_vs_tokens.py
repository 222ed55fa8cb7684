"""Tasks solved against training tokens: every kept checkpoint of a run, scored on every task.

`circuitbench train --keep-checkpoints` keeps `checkpoint-STEP.pt` files; this script loads each into the
native model with the run's tokenizer, measures validation loss on the run's held-out split and
full-model test accuracy on the 20 tasks (the model card's code), and prints one row per checkpoint: the
curve from which the compute a target needs is projected. A checkpoint mid-run has not had its learning
rate decayed yet, so its numbers are a lower bound on what a run of that length would reach.

    python benchmarks/tasks_vs_tokens.py runs/ref-sparse [--bar 0.9] [--json out.json] [--plot out.png]

A run started from a trained model (`--init-from`) counts that model's tokens and wall time too.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

import torch


def main() -> None:
    """Score every checkpoint of a run directory."""
    from tabulate import tabulate

    from circuitbench.models.native import SparseGPTAdapter
    from circuitbench.models.sparse_gpt import SparseGPT
    from circuitbench.models.tokenizer import HFTokenizer
    from circuitbench.train.card import evaluate_tasks
    from circuitbench.train.config import TrainConfig
    from circuitbench.train.data import prepare_data, val_windows
    from circuitbench.train.loop import _cache_dir, evaluate, model_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a `circuitbench train --keep-checkpoints` output directory")
    ap.add_argument("--bar", type=float, default=0.9, help="accuracy that counts as solved")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--target", type=int, default=10, help="tasks solved to project the compute for")
    ap.add_argument("--every", type=int, default=None, metavar="STEPS",
                    help="score only the checkpoints at multiples of STEPS (and the last one)")
    ap.add_argument("--plot", type=Path, default=None, help="also draw tasks solved and mean task loss against "
                    "tokens as a PNG (needs matplotlib); with --from-json, only draw")
    ap.add_argument("--from-json", type=Path, default=None, help="draw --plot from a JSON this script wrote")
    args = ap.parse_args()
    if args.from_json is not None:
        plot(json.loads(args.from_json.read_text())["rows"], args.plot or args.from_json.with_suffix(".png"),
             args.bar)
        return
    torch.set_num_threads(args.threads)
    ckpts = sorted(args.run.glob("checkpoint-*.pt"), key=lambda p: int(re.findall(r"\d+", p.name)[-1]))
    if not ckpts:
        raise SystemExit(f"{args.run}: no checkpoint-STEP.pt files (train with --keep-checkpoints)")
    if args.every:
        ckpts = [c for c in ckpts if int(re.findall(r"\d+", c.name)[-1]) % args.every == 0 or c == ckpts[-1]]
    first = torch.load(ckpts[0], weights_only=True)
    stored = {k: v for k, v in json.loads(first["config"]).items() if k in TrainConfig.model_fields}
    cfg = TrainConfig(**{**stored, "out_dir": args.run})
    data, _ = prepare_data(_cache_dir(cfg), cfg.corpus, cfg.vocab_size, cfg.tokenizer_bytes)
    vx, vy = val_windows(data.val, cfg.ctx, cfg.val_windows)
    tok = HFTokenizer(Path(data.tokenizer_path), name="run")
    prior_tokens, prior_s = 0, 0.0  # a run started from a trained model (--init-from) counts that model's training
    if cfg.init_from is not None and (Path(cfg.init_from) / "train_meta.json").is_file():
        prior = json.loads((Path(cfg.init_from) / "train_meta.json").read_text())
        prior_tokens, prior_s = int(prior["tokens_seen"]), float(prior["wall_time_s"])
    rows = []
    for path in ckpts:
        state = torch.load(path, weights_only=True)
        model = SparseGPT(model_config(cfg))
        model.load_state_dict(state["model"])
        adapter = SparseGPTAdapter(model, tok, path.stem)
        tasks = evaluate_tasks(adapter)
        solved = sorted(t["task"] for t in tasks if t["accuracy"] >= args.bar)
        rows.append({"step": state["step"], "tokens": prior_tokens + state["step"] * cfg.batch_size * cfg.ctx,
                     "wall_min": round((prior_s + state["elapsed_s"]) / 60, 1),
                     "val_loss": round(evaluate(model, vx, vy), 4),
                     "solved": len(solved), "mean_accuracy": round(statistics.fmean(t["accuracy"] for t in tasks), 4),
                     "mean_task_loss": round(statistics.fmean(t["task_loss"] for t in tasks), 4),
                     "solved_tasks": ",".join(solved)})
        print(json.dumps(rows[-1]), flush=True)
    print(tabulate(rows, headers="keys", tablefmt="github"))
    projection = project(rows, args.target)
    print(json.dumps(projection, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "projection": projection}, indent=2) + "\n")
    if args.plot:
        plot(rows, args.plot, args.bar)


def plot(rows: list[dict], out: Path, bar: float = 0.9) -> Path:
    """Tasks solved (left axis) and mean task loss (right axis) against training tokens, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = [r["tokens"] / 1e6 for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    ax.plot(tokens, [r["solved"] for r in rows], "o-", color="#1f77b4", label="tasks solved")
    ax.axhline(10, color="#1f77b4", lw=0.8, ls=":")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel(f"tasks solved (accuracy >= {bar})", color="#1f77b4")
    ax.set_ylim(0, 20)
    ax2 = ax.twinx()
    ax2.plot(tokens, [r["mean_task_loss"] for r in rows], "s--", color="#d62728", label="mean task loss")
    ax2.set_ylabel("mean task loss over the 20 tasks", color="#d62728")
    ax.set_title("Reference model: tasks solved and task loss against tokens", fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    print(f"wrote {out}")
    return out


def project(rows: list[dict], target: int) -> dict:
    """Least-squares line of tasks solved against log10(tokens), extrapolated to `target` tasks.

    Also gives the wall time (and CPU-hours on the run's 2 cores) that many tokens take at the run's
    measured throughput. A straight line in log-tokens is an assumption, stated with the projection: the
    numbers say how far off the bar is, not exactly when it is reached.
    """
    import math

    pts = [(math.log10(r["tokens"]), r["solved"]) for r in rows if r["tokens"] > 0]
    if len(pts) < 2:
        return {"note": "need two checkpoints"}
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else 0.0
    last = rows[-1]
    tok_s = last["tokens"] / max(last["wall_min"] * 60, 1e-9)
    out = {"fit": f"solved = {my - slope * mx:.2f} + {slope:.2f} * log10(tokens)", "slope_per_decade": slope,
           "target_tasks": target, "throughput_tok_s": round(tok_s)}
    if slope <= 0:
        out["note"] = "no upward trend over the checkpoints: no projection"
        return out
    tokens = 10 ** (mx + (target - my) / slope)
    out.update(projected_tokens=float(f"{tokens:.3g}"), projected_wall_h=round(tokens / tok_s / 3600, 1),
               projected_cpu_core_h=round(2 * tokens / tok_s / 3600, 1))
    return out


if __name__ == "__main__":
    main()
