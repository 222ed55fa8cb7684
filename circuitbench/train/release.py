"""What a finished training run leaves: the released-format model, its tokenizer, loss curve and metadata.

Also the rule that an existing model is never overwritten unless asked (`--force`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
from pathlib import Path
from typing import Any

import torch

from circuitbench.errors import CircuitbenchError
from circuitbench.models.hf_files import FILES as HF_FILES
from circuitbench.models.hf_files import write_hf_files
from circuitbench.models.sparse_gpt import SparseGPT
from circuitbench.train import recipe
from circuitbench.train.config import TrainConfig
from circuitbench.train.data import TokenData
from circuitbench.train.state import remove_checkpoints, save_atomic

log = logging.getLogger(__name__)

LOSS_CURVE = "loss_curve.csv"
META = "train_meta.json"

def write_curve(history: list[dict[str, Any]], path: Path) -> None:
    """Write the loss curve as CSV, atomically."""
    fields = ["step", "tokens", "train_loss", "val_loss", "lr", "density", "elapsed_s"]
    fields += sorted({k for row in history[:1] for k in row if k.startswith("bridge_")})  # joint bridge training
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for row in history:
            w.writerow({k: row.get(k, "") for k in fields})
    os.replace(tmp, path)


MODEL_FILES = ("final_model.pt", "model.safetensors", "beeg_config.json", "tokenizer.json", META, "task_eval.json",
               "README.md", LOSS_CURVE, *HF_FILES)
"""What a finished training run leaves in its directory (the model and its card)."""


def refuse_overwrite(cfg: TrainConfig) -> list[str]:
    """An existing model is never replaced unless asked (--force); --resume continues its checkpoint.

    Nothing is removed here: returns the old model's files for `clear_old_model`, which `train` calls once
    every input (the corpus, --init-from, --distill-from, --bridge-to) has been read and checked. `--out` may
    not be, hold or lie inside one of those inputs.

    Raises:
        CircuitbenchError: for a model in --out without --force or --resume, and for --out an input.
    """
    from circuitbench.files import check_not_an_input

    out = Path(cfg.out_dir)
    check_not_an_input(out, "--out", [(flag, Path(str(src))) for flag, src in (
        ("--init-from", cfg.init_from), ("--distill-from", cfg.distill_from), ("--bridge-to", cfg.bridge_to))
        if src is not None and Path(str(src)).exists()])
    present = [n for n in MODEL_FILES if (out / n).is_file()]
    if not any(n in present for n in ("final_model.pt", "model.safetensors", "beeg_config.json")) or cfg.resume:
        return []
    if not cfg.force:
        raise CircuitbenchError(
            f"--out {out}: already holds a model ({', '.join(present)}); training would overwrite it and leave its "
            "card describing another model. Choose another --out, --resume its checkpoint, or --force to replace it."
        )
    return present


def clear_old_model(out: Path, present: list[str]) -> None:
    """With --force, once every input was checked: remove the old model's files and its checkpoints.

    No file of the old model may describe the new one.
    """
    if not present:
        return
    for name in present:
        (out / name).unlink(missing_ok=True)
    remove_checkpoints(out)


def finalize(
    cfg: TrainConfig, model: SparseGPT, data: TokenData, history: list[dict[str, Any]],
    elapsed: float, corpus_hash: str | None, val_loss: float, val_tokens: int, precision: str,
) -> None:
    """Write the released-format model, its tokenizer, loss curve and training metadata.

    `val_loss` is measured on the model as it ships (its bigram table rounded to bfloat16).
    """
    out = Path(cfg.out_dir)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sd["bigram_table"] = sd["bigram_table"].to(torch.bfloat16)
    save_atomic(sd, out / "final_model.pt")
    (out / "beeg_config.json").write_text(json.dumps(model.config.model_dump(), indent=2) + "\n")
    (out / "tokenizer.json").write_bytes(Path(data.tokenizer_path).read_bytes())
    write_hf_files(out)  # transformers' AutoModelForCausalLM and lm-eval's hf model read the folder too
    write_curve(history, out / LOSS_CURVE)
    total = sum(p.numel() for _, p in model.named_parameters())
    nonzero = sum(int((p != 0).sum()) for _, p in model.named_parameters())
    matrices = {n: {"numel": p.numel(), "nonzero": int((p != 0).sum())} for n, p in recipe.sparsifiable(model)}
    step = history[-1]["step"] if history else 0
    meta = {
        "config": cfg.model_dump(mode="json", exclude={"resume", "finish", "stop_after", "quiet"}),
        "command": cfg.command,
        "corpus_hash": corpus_hash or data.corpus_hash,
        "corpus_packages": _package_record(cfg.corpus),
        "tokenizer_sha256": data.tokenizer_hash,
        "train_tokens_in_corpus": int(len(data.train)),
        "val_tokens_in_corpus": int(len(data.val)),
        "steps": step,
        "planned_steps": cfg.max_steps,
        "tokens_seen": step * cfg.batch_size * cfg.ctx,
        "val_loss": round(val_loss, 5),
        "val_tokens": val_tokens,
        "params_total": total,
        "params_nonzero": nonzero,
        "sparsified": matrices,
        "wall_time_s": round(elapsed, 1),
        "started_from": started_from(cfg.init_from),
        "precision": precision,
        "hardware": _hardware(cfg.device),
        "final_model_bytes": (out / "final_model.pt").stat().st_size,
    }
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    log.info("wrote %s: val loss %.4f, %d/%d nonzero parameters", out, val_loss, nonzero, total)


def _hardware(device: str) -> str:
    """Where the model trained: the GPU's name on CUDA; the CPU, its core count and torch's threads otherwise."""
    from circuitbench.models.native import resolve_device

    where = resolve_device(device)
    chip = torch.cuda.get_device_name(where) if where.type == "cuda" else platform.processor() or platform.machine()
    return f"{chip}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"


def started_from(init_from: Path | None) -> dict[str, Any] | None:
    """What a continued run started from (`--init-from`): the model's path, weights hash, tokens and wall time.

    Recorded in the new model's metadata, so its card can state all the training it has had even after the
    starting model is gone or replaced.
    """
    if init_from is None:
        return None
    from circuitbench.models.native import file_sha256

    directory = Path(init_from)
    out: dict[str, Any] = {"path": str(init_from)}
    weights = directory / "final_model.pt"
    if weights.is_file():
        out["weights_sha256"] = file_sha256(weights)
    meta_path = directory / META
    if meta_path.is_file():
        prior = json.loads(meta_path.read_text())
        earlier = prior.get("started_from") or {}
        out["tokens_seen"] = int(prior["tokens_seen"]) + int(earlier.get("tokens_seen", 0))
        out["wall_time_s"] = float(prior["wall_time_s"]) + float(earlier.get("wall_time_s", 0.0))
    return out


def _package_record(corpus: Path | None) -> dict[str, Any] | None:
    """The package list of a package corpus (for the model card), None for a directory corpus."""
    from circuitbench.train import packages

    if corpus is None:
        return None
    if str(corpus) == packages.PACKAGES:
        return packages.package_list_record(None)
    if Path(corpus).is_file():
        return packages.package_list_record(Path(corpus))
    from circuitbench.train.tokenized import is_tokenized, read_manifest

    if is_tokenized(corpus):  # the package list the folder was tokenized from, as it recorded it
        return read_manifest(Path(corpus)).get("packages")
    return None


def tokens_per_second(history: list[dict[str, Any]]) -> float:
    """Mean training throughput of a run from its loss-curve rows."""
    if len(history) < 2:
        return math.nan
    dt = history[-1]["elapsed_s"] - history[0]["elapsed_s"]
    return (history[-1]["tokens"] - history[0]["tokens"]) / dt if dt > 0 else math.nan
