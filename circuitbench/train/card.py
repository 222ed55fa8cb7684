"""Model cards for trained models: provenance, sparsity, and accuracy and task loss on every task.

The task table is measured the way every user measures it: the model directory is loaded through
`circuitbench.load_model` and each task's test split is encoded with `circuitbench.tasks.encode`,
both members of every kept pair scored at the last prompt token.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from circuitbench.protocols import Batch, ModelAdapter
from circuitbench.train.release import META

log = logging.getLogger(__name__)

TASK_EVAL = "task_eval.json"

CARD_NOTE_BIGRAM = (
    "The 2048 x 2048 bigram table is stored in bfloat16 in `final_model.pt` (8.4 MB instead of "
    "16.8 MB; the loader casts it back to float32). The validation loss above is measured after that "
    "rounding, on exactly the weights shipped."
)


@torch.no_grad()
def score_task(adapter: ModelAdapter, encoded: Any, batch: int = 64) -> dict[str, float]:
    """Full-model accuracy and task loss of one encoded task.

    Accuracy: fraction of rows where logit[correct] > logit[incorrect] at `last`. Task loss: mean
    over rows of -log_softmax([logit[correct], logit[incorrect]])[0] (docs/design.md, The model format and the method,
    per-example scale).

    Args:
        adapter: The model.
        encoded: An `EncodedTask` (tokens, last, correct, incorrect).
        batch: Rows per forward pass.

    Returns:
        {"accuracy", "task_loss", "n"}; NaN metrics when no example was kept.
    """
    from circuitbench.circuits.metrics import answer_logits, score

    n = int(encoded.tokens.shape[0])
    if n == 0:
        return {"accuracy": float("nan"), "task_loss": float("nan"), "n": 0}
    # the same scoring as `circuitbench run`, so the card's table and a run's full-model row agree
    two = []
    for part in Batch.of(encoded).chunks(batch):
        logits = adapter.forward(part.tokens, at=part.last)  # (b, V)
        two.append(answer_logits(logits, part))
    s = score(torch.cat(two))
    return {"accuracy": s.accuracy, "task_loss": s.loss, "n": n}


def evaluate_tasks(adapter: ModelAdapter, split: str = "test") -> list[dict[str, Any]]:
    """Accuracy, task loss and kept fraction of the model on every bundled task's split."""
    from circuitbench.tasks.encode import encode_task
    from circuitbench.tasks.load import list_specs

    rows = []
    for spec in list_specs():
        # A model with a shorter context than the task's prompts sees their last context_length tokens.
        max_len = min(spec.max_tokens, adapter.context_length or spec.max_tokens)
        enc = encode_task(spec, adapter.tokenizer, split, max_len=max_len)  # type: ignore[arg-type]
        res = score_task(adapter, enc)
        rows.append({"task": spec.name, "n": res["n"], "kept_fraction": round(enc.kept_fraction, 4),
                     "accuracy": round(res["accuracy"], 4), "task_loss": round(res["task_loss"], 4)})
        log.info("%s: accuracy %.3f, task loss %.3f (%d examples)", spec.name, res["accuracy"],
                 res["task_loss"], res["n"])
    return rows


def _corpus_line(cfg: dict[str, Any], meta: dict[str, Any]) -> str:
    pk = meta.get("corpus_packages")
    if pk:
        return (
            f"| corpus | `{cfg['corpus']}`: {len(pk['train_packages'])} pinned PyPI packages plus the standard "
            f"library (train) and {len(pk['val_packages'])} whole packages held out (validation: "
            f"{', '.join(pk['val_packages'])}); list `{pk['list']}` sha256 `{pk['list_sha256'][:16]}...`, "
            "every pin in `train_meta.json` |"
        )
    if cfg.get("corpus") is None:
        return "| corpus | Python standard library of the training interpreter (deduplicated, split by file) |"
    return f"| corpus | `{cfg['corpus']}` |"


def _table(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers="keys", tablefmt="github", floatfmt=".3f")


def _tokens_row(meta: dict[str, Any]) -> str:
    prior = meta.get("started_from") or {}
    if "tokens_seen" not in prior:
        return f"| tokens seen | {meta['tokens_seen']:,} |"
    total = meta["tokens_seen"] + prior["tokens_seen"]
    return (f"| tokens seen | {total:,} in all: {meta['tokens_seen']:,} in this run, continued from `{prior['path']}` "
            f"after its {prior['tokens_seen']:,} |")


def _wall_row(meta: dict[str, Any]) -> str:
    prior = meta.get("started_from") or {}
    now = f"{meta['wall_time_s'] / 60:.1f} min"
    if "wall_time_s" not in prior:
        return f"| wall time | {now} (training, validation and checkpoints) |"
    return (f"| wall time | {(meta['wall_time_s'] + prior['wall_time_s']) / 60:.1f} min in all: {now} in this run "
            f"(training, validation and checkpoints) after {prior['wall_time_s'] / 60:.1f} min |")


def _training_rows(cfg: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """The card's training table: corpus, tokenizer, shape, sparsity, tokens, losses, size, time, hardware."""
    sp_total = sum(v["numel"] for v in meta["sparsified"].values())
    sp_nonzero = sum(v["nonzero"] for v in meta["sparsified"].values())
    return [
    "| | |",
    "|---|---|",
    _corpus_line(cfg, meta),
    f"| corpus hash | `{meta['corpus_hash']}` |",
    f"| corpus tokens | {meta['train_tokens_in_corpus']:,} train, {meta['val_tokens_in_corpus']:,} "
    "validation |",
    f"| tokenizer | byte-level BPE, 2048 tokens, trained on the training split (sha256 "
    f"`{meta['tokenizer_sha256'][:16]}...`) |",
    f"| shape | {cfg['n_layer']} layers, d_model {cfg['d_model']}, {cfg['n_head']} heads, d_mlp "
    f"{cfg['d_mlp'] or 4 * cfg['d_model']}, context {cfg['ctx']}, bigram table, attention sink, "
    f"RMSNorm, {'learned' if cfg.get('pos_emb') == 'learned' else 'zeroed'} positional embeddings |",
    f"| precision | {meta.get('precision', 'float32')} matrix products, float32 weights, optimizer, "
    "projection and loss |",
    f"| sparsity | {'none' if cfg['dense'] else 'weights ' + format(cfg['weight_density'], '.4g') + ' nonzero per matrix and bias (bigram table exempt), AbsTopK ' + format(cfg['afrac'], 'g') + ' at the eight node sites'} |",  # noqa: E501
    f"| steps x batch x context | {meta['steps']:,} x {cfg['batch_size']} x {cfg['ctx']} |",
    _tokens_row(meta),
    f"| validation loss | {meta['val_loss']:.4f} nats/token ({meta['val_tokens']:,} validation "
    "tokens) |",
    f"| parameters | {meta['params_total']:,} total, {meta['params_nonzero']:,} nonzero |",
    f"| of which weight matrices and biases (all but the bigram table, norm gains, sink logits"
    f"{', zeroed positional embeddings' if cfg.get('pos_emb') != 'learned' else ''}) | {sp_total:,} total, "
    f"{sp_nonzero:,} nonzero "
    f"({sp_nonzero / max(sp_total, 1):.2%}) |",
    _wall_row(meta),
    f"| hardware | {meta['hardware']} |",
    f"| size on disk | final_model.pt {meta['final_model_bytes'] / 1e6:.1f} MB |",
    ]


def render_card(name: str, meta: dict[str, Any], tasks: list[dict[str, Any]], notes: str = "") -> str:
    """The README.md text of a trained model."""
    cfg = meta["config"]
    kind = "dense twin" if cfg["dense"] else "weight-sparse"
    n_good = sum(1 for r in tasks if r["accuracy"] >= 0.9)
    sparsity_rows = [
        {"parameter": k, "numel": v["numel"], "nonzero": v["nonzero"],
         "density": v["nonzero"] / v["numel"]}
        for k, v in meta["sparsified"].items()
    ]
    lines = [
        f"# {name}",
        "",
        f"A {kind} GPT trained by `circuitbench train` with the recipe of Gao et al. 2025 "
        "(docs/design.md, The model format and the method), bundled with circuitbench as a reference model.",
        "",
        "## Training",
        "",
        "Command (from the repository root):",
        "",
        "```",
        str(meta.get("command")),
        "```",
        "",
        *_training_rows(cfg, meta),
        "",
        CARD_NOTE_BIGRAM,
        "",
        "The loss curve is in `loss_curve.csv`; `train_meta.json` holds every number above.",
        "",
        "## Tasks (test split, full model)",
        "",
        "Measured through `circuitbench.load_model` and `circuitbench.tasks.encode.encode_task`: accuracy "
        "is the fraction of examples (both members of every pair) where the correct token's logit "
        "beats the incorrect one's at the last prompt token; task loss is the mean of "
        "-log_softmax([correct, incorrect])[0]. `kept_fraction` is the share of the task's examples "
        "that survive the tokenizer boundary checks.",
        "",
        f"Accuracy >= 0.9 on **{n_good} of {len(tasks)}** tasks.",
        "",
        _table(tasks),
        "",
        "## Weight sparsity",
        "",
        _table(sparsity_rows),
        "",
    ]
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    return "\n".join(lines)


def write_card(model_dir: Path, name: str | None = None, notes: str = "") -> Path:
    """Evaluate a trained model on every task and write its README.md and task_eval.json.

    Args:
        model_dir: A directory written by `circuitbench.train.loop.train`.
        name: Title of the card; defaults to the directory name.
        notes: Extra markdown for a Notes section.

    Returns:
        The README.md path.
    """
    import circuitbench

    model_dir = Path(model_dir)
    meta = json.loads((model_dir / META).read_text())
    adapter = circuitbench.load_model(str(model_dir), device="cpu")
    tasks = evaluate_tasks(adapter)
    (model_dir / TASK_EVAL).write_text(json.dumps(tasks, indent=2) + "\n")
    path = model_dir / "README.md"
    path.write_text(render_card(name or model_dir.name, meta, tasks, notes))
    return path
