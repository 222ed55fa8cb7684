"""The bridge card (`README.md` in a bridge directory), rendered from `bridge_config.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tabulate import tabulate

from circuitbench.bridges.bridge import CARD, CONFIG
from circuitbench.files import write_text_atomic

EVAL_HEADERS = {
    "location": "location", "nmse_enc": "NMSE enc", "nmse_dec": "NMSE dec", "loss_dense": "dense",
    "loss_s2d": "sparse->dense", "loss_d2s": "dense->sparse", "loss_mean": "mean-ablated",
    "acc_dense": "acc dense", "acc_s2d": "acc s->d", "acc_d2s": "acc d->s", "acc_mean": "acc mean-abl.",
}


def eval_table(rows: list[dict[str, Any]], fmt: str = "github") -> str:
    """The evaluation rows as a table (losses in nats/token, accuracies averaged over tasks)."""
    return tabulate([[r[k] for k in EVAL_HEADERS] for r in rows], headers=list(EVAL_HEADERS.values()),
                    tablefmt=fmt, floatfmt=".3f")


def render_card(config: dict[str, Any]) -> str:
    """The card's Markdown: the two models, the settings, the training, and the evaluation when measured."""
    d, s = config.get("dense", {}), config.get("sparse", {})
    t = config.get("trained", {})
    settings = config.get("settings", {})
    lines = [
        f"# Bridges: {d.get('name')} <-> {s.get('name')}",
        "",
        "Linear encoders (dense -> sparse residual, then AbsTopK) and decoders (sparse -> dense) at every residual "
        "location both models share (Gao et al. 2025, bridges), trained with normalised MSE both ways and the KL "
        "of each hybrid pass to the dense model's output" + (", the sparse model trained with them (joint)."
                                                              if config.get("joint") else ", both models frozen."),
        "",
        f"- Dense model: `{d.get('name')}` (weights sha256 `{str(d.get('weights_sha256'))[:16]}`)",
        f"- Sparse model: `{s.get('name')}` (weights sha256 `{str(s.get('weights_sha256'))[:16]}`)",
        f"- Locations: {', '.join(f'`{loc}`' for loc in config.get('locations', []))}; widths "
        f"{config.get('d_dense')} (dense) and {config.get('d_sparse')} (sparse); encoder AbsTopK k = "
        f"{config.get('topk') if config.get('topk') is not None else 'none'}",
        f"- Settings: {', '.join(f'{k} {v}' for k, v in settings.items() if v is not None)}",
    ]
    if config.get("command"):
        lines.append(f"- Command: `{config['command']}`")
    if config.get("corpus"):
        lines.append(f"- Corpus: {config['corpus']}")
    if t:
        first, last = t.get("first") or {}, t.get("last") or {}
        lines += [f"- Trained: {t.get('steps')} steps, {t.get('tokens'):,} tokens, {t.get('elapsed_s')} s on "
                  f"{t.get('threads')} CPU threads",
                  "", "| loss (mean over locations) | first step | last step |", "|---|---|---|"]
        for k in ("nmse_enc", "nmse_dec", "kl_d2s", "kl_s2d"):
            if k in first:
                lines.append(f"| {k} | {first[k]:.4f} | {last[k]:.4f} |")
    ev = config.get("evaluation")
    if ev:
        lines += ["", "## Evaluation", "",
                  f"On {ev.get('windows')} held-out windows of {ev.get('ctx')} tokens (next-token loss, nats/token) "
                  f"and the first {ev.get('pairs')} test pairs of {len(ev.get('tasks', []))} tasks (accuracy, mean "
                  "over tasks). `sparse->dense`: the sparse model up to the location, decoded, the dense model after "
                  "it; `dense->sparse`: the reverse; `mean-ablated`: the dense model with that residual replaced by "
                  "its mean at each position.", "", eval_table(ev["rows"]), ""]
        carried = [r["location"] for r in ev["rows"] if r.get("carries")]
        first = ev["rows"][0]
        lines.append(f"The sparse model alone: loss {first['loss_sparse']:.3f}, accuracy {first['acc_sparse']:.3f}. "
                     f"Both hybrid passes beat mean ablation at {len(carried)} of {len(ev['rows'])} locations.")
    lines += ["", f"Measured by circuitbench; settings and numbers in `{CONFIG}`.", ""]
    return "\n".join(lines)


def write_card(directory: Path, config: dict[str, Any]) -> Path:
    """Write the card beside the bridges."""
    path = Path(directory) / CARD
    write_text_atomic(path, render_card(config))
    return path
