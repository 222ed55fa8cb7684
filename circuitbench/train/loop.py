"""`train(TrainConfig)`: the weight-sparse (or dense) training loop, with exact resume.

One step: sample a seeded batch, forward, backward, rescale the gradients to global RMS 1, AdamW at
the scheduled learning rate (times sqrt(L0_final / L0_current) for sparse runs), then project every
weight matrix and bias onto the current L0 budget (`circuitbench.train.recipe`). A checkpoint holds
the model, the optimizer, the batch sampler's generator, the step and the loss curve, written
atomically; resuming from it continues bit-for-bit as if never interrupted (same thread count).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from circuitbench.errors import CircuitbenchError
from circuitbench.hardware import autocast
from circuitbench.hardware import resolve_precision as _resolve_precision
from circuitbench.models.checkpoint import load_weights
from circuitbench.models.config import GPTConfig
from circuitbench.models.sparse_gpt import SparseGPT
from circuitbench.train import recipe
from circuitbench.train.config import TrainConfig, check
from circuitbench.train.data import TokenData, prepare_data, sample_batch, val_windows

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOSS_CURVE = "loss_curve.csv"
META = "train_meta.json"

# The eight node sites of docs/design.md, Node sites (Gao et al. 2025: AbsTopK at all eight).
SPARSE_LOCS = "attn_in,attn_q,attn_k,attn_v,attn_out,mlp_in,mlp_neuron,mlp_out"

# Fields that may differ between an interrupted run and its resumption.
_RUNTIME_FIELDS = {
    "resume", "finish", "stop_after", "target_val_loss", "keep_checkpoints", "quiet", "threads",
    "command", "cache_dir", "out_dir", "force",
}


def model_config(cfg: TrainConfig) -> GPTConfig:
    """The `beeg_config.json` of the model a TrainConfig trains."""
    return GPTConfig(
        block_size=cfg.ctx,
        vocab_size=cfg.vocab_size,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        d_model=cfg.d_model,
        d_mlp=cfg.d_mlp,
        bias=True,
        rms_norm=True,
        afrac=None if cfg.dense else cfg.afrac,
        afrac_loctypes=SPARSE_LOCS,
        tied_unembed=False,  # released models untie lm_head (docs/design.md, The model format and the method)
        tokenizer_name="circuitbench_bpe_2k",
        grad_checkpointing=False,
        enable_bigram_table=True,
        learnable_bigram_table=True,
        sink=True,
    )


def resolve_precision(cfg: TrainConfig, device: torch.device | str = "cpu") -> str:
    """`float32` or `bfloat16`: what the config's `precision` (`auto` included) means on this device."""
    return _resolve_precision(cfg.precision, device)


def _identity(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _RUNTIME_FIELDS}


def _build(cfg: TrainConfig) -> tuple[SparseGPT, torch.optim.Optimizer]:
    torch.manual_seed(cfg.seed)
    model = SparseGPT(model_config(cfg))
    if cfg.pos_emb == "zero":
        with torch.no_grad():  # positional embeddings are zeroed and frozen (Gao et al. 2025)
            model.transformer.wpe.weight.zero_()
        model.transformer.wpe.weight.requires_grad_(False)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),  # Gao et al. 2025, App.
        eps=cfg.adam_eps,
    )
    if cfg.init_from is not None:
        start = load_model_dir(cfg.init_from, "--init-from")
        _check_same_shape(cfg, start, cfg.init_from)
        load_weights(model, start.state_dict(), cfg.init_from)
    if not cfg.dense:
        recipe.project_(recipe.sparsifiable(model), _density(cfg, 0))
        if cfg.anneal_afrac:
            model.set_afrac(_afrac(cfg, 0))
    return model, opt


def _density(cfg: TrainConfig, step: int) -> float:
    return recipe.density_at(step, cfg.max_steps, cfg.weight_density, cfg.anneal_end)


def _afrac(cfg: TrainConfig, step: int) -> float:
    return recipe.afrac_at(step, cfg.max_steps, cfg.afrac, cfg.anneal_end)


def load_model_dir(directory: Path, flag: str) -> SparseGPT:
    """A native model directory as a SparseGPT in eval mode, on the CPU (`load_native`'s checks, naming the flag).

    Raises:
        CircuitbenchError: naming the flag when the directory is not a readable native model.
    """
    from circuitbench.models.native import load_native

    try:
        return load_native(Path(directory), device="cpu").model.eval()
    except CircuitbenchError as err:
        raise CircuitbenchError(f"{flag} {directory}: {err}") from err


def _check_same_shape(cfg: TrainConfig, model: SparseGPT, source: Path) -> None:
    theirs, ours = model.config, model_config(cfg)
    diff = [f"{k} {getattr(theirs, k)} (this run: {getattr(ours, k)})"
            for k in ("n_layer", "d_model", "n_head", "d_mlp", "vocab_size", "block_size", "sink",
                      "enable_bigram_table", "tied_unembed")
            if getattr(theirs, k) != getattr(ours, k)]
    if diff:
        raise CircuitbenchError(f"--init-from {source}: the model has another shape: {', '.join(diff)}; "
                                "give the same --n-layer/--d-model/--n-head/--d-mlp/--ctx as the starting model.")


def check_tokenizer(flag: str, directory: Path | None, data: TokenData) -> None:
    """Refuse a model (starting point, teacher, model to measure) whose tokenizer is not the corpus's.

    Raises:
        CircuitbenchError: naming the flag and the model, when its tokenizer.json is missing or another one.
    """
    if directory is None:
        return
    from circuitbench.models.native import file_sha256

    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise CircuitbenchError(f"{flag} {directory}: no tokenizer.json; the model must share the corpus's tokenizer.")
    digest = file_sha256(path)
    if digest != data.tokenizer_hash:
        raise CircuitbenchError(
            f"{flag} {directory}: its tokenizer (sha256 {digest[:12]}) is not this corpus's "
            f"({data.tokenizer_hash[:12]}); use a model trained on the same --corpus and --vocab-size."
        )


def distill_kl(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(teacher || model) of the next-token distributions (nats)."""
    logp = F.log_softmax(logits.flatten(0, 1).float(), dim=-1)
    logq = F.log_softmax(teacher_logits.flatten(0, 1).float(), dim=-1)
    return F.kl_div(logp, logq, log_target=True, reduction="batchmean")


@torch.no_grad()
def evaluate(model: SparseGPT, x: torch.Tensor, y: torch.Tensor, chunk: int = 16) -> float:
    """Mean next-token cross-entropy (nats/token) over fixed windows."""
    was = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(x), chunk):
        logits = model(x[i : i + chunk])  # (b, T, V)
        total += float(F.cross_entropy(logits.flatten(0, 1), y[i : i + chunk].flatten(), reduction="sum"))
    model.train(was)
    return total / y.numel()


def train_step(
    model: SparseGPT, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
    step: int, params: list[torch.nn.Parameter], sparse: list[tuple[str, torch.nn.Parameter]],
    precision: str = "float32", teacher: SparseGPT | None = None,
) -> tuple[torch.Tensor, float, float, float]:
    """One optimizer step of the recipe.

    Args:
        model: The model, in training mode.
        opt: Its AdamW optimizer.
        x: Inputs [B, T].
        y: Next-token targets [B, T].
        cfg: The run's configuration (schedules, dense or sparse).
        step: Steps completed before this one.
        params: The trainable parameters (for gradient normalisation).
        sparse: The parameters the top-|w| projection applies to.
        precision: `float32`, or `bfloat16` for autocast matrix products (resolved, not `auto`).
        teacher: With distillation, the frozen teacher; the loss adds cfg.distill_coef x KL.

    Returns:
        (next-token cross-entropy, learning rate used, density after the step, seconds spent in the projection).
    """
    with autocast(precision):
        logits = model(x)  # (B, T, V), bfloat16 under autocast
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())  # float32 loss
    total = loss
    if teacher is not None:
        with torch.no_grad(), autocast(precision):
            teacher_logits = teacher(x)
        total = loss + cfg.distill_coef * distill_kl(logits, teacher_logits)
    opt.zero_grad(set_to_none=True)
    total.backward()
    recipe.normalize_grads_(params)
    lr = recipe.lr_at(step, cfg.max_steps, cfg.lr, cfg.warmup)
    density = 1.0
    if not cfg.dense:
        lr *= recipe.lr_scale(cfg.weight_density, _density(cfg, step))
    for g in opt.param_groups:
        g["lr"] = lr
    opt.step()
    t_proj = 0.0
    if not cfg.dense:
        t0 = time.perf_counter()
        density = _density(cfg, step + 1)
        recipe.project_(sparse, density)
        if cfg.anneal_afrac:
            model.set_afrac(_afrac(cfg, step + 1))
        t_proj = time.perf_counter() - t0
    return loss.detach(), lr, density, t_proj


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_curve(history: list[dict[str, Any]], path: Path) -> None:
    fields = ["step", "tokens", "train_loss", "val_loss", "lr", "density", "elapsed_s"]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for row in history:
            w.writerow({k: row.get(k, "") for k in fields})
    os.replace(tmp, path)


def _cache_dir(cfg: TrainConfig) -> Path:
    if cfg.cache_dir is not None:
        return cfg.cache_dir
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "circuitbench"


def train(cfg: TrainConfig, data: TokenData | None = None) -> Path:
    """Train a model and write it in the released format.

    Args:
        cfg: The run's configuration.
        data: Pre-tokenized data (tests); None prepares it from cfg.corpus with caching.

    Returns:
        cfg.out_dir, holding `beeg_config.json`, `final_model.pt`, `tokenizer.json`, the loss curve
        and `train_meta.json` once training finished; only the checkpoint when stopped early by
        `stop_after`.

    Raises:
        CircuitbenchError: when out_dir already holds a checkpoint and resume is off, or the
            checkpoint belongs to a different configuration.
    """
    check(cfg)
    _refuse_overwrite(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    corpus_hash = None
    if data is None:
        data, corpus = prepare_data(_cache_dir(cfg), cfg.corpus, cfg.vocab_size, cfg.tokenizer_bytes)
        corpus_hash = corpus.hash
    check_tokenizer("--init-from", cfg.init_from, data)
    check_tokenizer("--distill-from", cfg.distill_from, data)
    model, opt = _build(cfg)
    teacher = None if cfg.distill_from is None else load_model_dir(cfg.distill_from, "--distill-from")
    if teacher is not None:
        teacher.requires_grad_(False)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, history, elapsed = 0, [], 0.0
    if cfg.resume:
        if not ckpt_path.is_file():
            raise CircuitbenchError(f"{ckpt_path}: no checkpoint to resume from; drop --resume.")
        state = torch.load(ckpt_path, weights_only=True)
        stored = {k: v for k, v in json.loads(state["config"]).items() if k not in _RUNTIME_FIELDS}
        if stored != _identity(cfg):
            raise CircuitbenchError(
                f"{ckpt_path}: the checkpoint was written by a different configuration; "
                "resume with the same arguments or use another --out directory."
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, history, elapsed = state["step"], json.loads(state["history"]), state["elapsed_s"]
        if cfg.anneal_afrac and not cfg.dense:
            model.set_afrac(_afrac(cfg, step))
        log.info("resumed %s at step %d", ckpt_path, step)
    elif cfg.finish:
        raise CircuitbenchError("finish needs resume: it finalizes an existing checkpoint.")
    elif ckpt_path.is_file():
        raise CircuitbenchError(
            f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out."
        )

    def checkpoint() -> None:
        _save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "generator": gen.get_state(),
                "step": step,
                "history": json.dumps(history),
                "elapsed_s": elapsed,
                "config": json.dumps(_identity(cfg)),
            },
            ckpt_path,
        )
        if cfg.keep_checkpoints:
            shutil.copyfile(ckpt_path, out / f"checkpoint-{step}.pt")
        _write_curve(history, out / LOSS_CURVE)

    vx, vy = val_windows(data.val, cfg.ctx, cfg.val_windows)
    params = [p for p in model.parameters() if p.requires_grad]
    sparse = recipe.sparsifiable(model)
    tokens_per_step = cfg.batch_size * cfg.ctx
    precision = resolve_precision(cfg)
    log.info("precision: %s (asked: %s)", precision, cfg.precision)
    end = cfg.max_steps if cfg.stop_after is None else min(cfg.max_steps, cfg.stop_after)
    if cfg.finish:
        end = step
    bar = tqdm(total=cfg.max_steps, initial=step, disable=cfg.quiet, unit="step", dynamic_ncols=True)
    model.train()
    reached_target = False
    t_last, s_last = time.perf_counter(), step
    while step < end and not reached_target:
        t0 = time.perf_counter()
        x, y = sample_batch(data.train, cfg.batch_size, cfg.ctx, gen)
        loss, lr, density, _ = train_step(model, opt, x, y, cfg, step, params, sparse, precision, teacher)
        step += 1
        row: dict[str, Any] = {
            "step": step, "tokens": step * tokens_per_step, "train_loss": round(loss.item(), 5),
            "lr": lr, "density": density,
        }
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            row["val_loss"] = round(evaluate(model, vx, vy), 5)
            log.info("step %d: train %.4f, val %.4f", step, row["train_loss"], row["val_loss"])
            if cfg.target_val_loss is not None and row["val_loss"] <= cfg.target_val_loss:
                log.info("validation loss %.4f reached the target %.4f", row["val_loss"], cfg.target_val_loss)
                reached_target = True
        elapsed += time.perf_counter() - t0  # wall time, validation included
        row["elapsed_s"] = round(elapsed, 3)
        history.append(row)
        if step % 10 == 0 or step == end:
            now = time.perf_counter()
            tps = (step - s_last) * tokens_per_step / max(now - t_last, 1e-9)
            t_last, s_last = now, step
            bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tps:,.0f}")
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == end or reached_target:
            checkpoint()
    bar.close()
    if step < cfg.max_steps and not reached_target and not cfg.finish:
        log.info("stopped at step %d of %d; continue with --resume", step, cfg.max_steps)
        return out
    _finalize(cfg, model, data, history, elapsed, corpus_hash, vx, vy)
    return out


MODEL_FILES = ("final_model.pt", "model.safetensors", "beeg_config.json", "tokenizer.json", META, "task_eval.json",
               "README.md", LOSS_CURVE)
"""What a finished training run leaves in its directory (the model and its card)."""


def _refuse_overwrite(cfg: TrainConfig) -> None:
    """An existing model is never replaced unless asked (--force); --resume continues its checkpoint."""
    out = Path(cfg.out_dir)
    present = [n for n in MODEL_FILES if (out / n).is_file()]
    if not any(n in present for n in ("final_model.pt", "model.safetensors", "beeg_config.json")) or cfg.resume:
        return
    if not cfg.force:
        raise CircuitbenchError(
            f"--out {out}: already holds a model ({', '.join(present)}); training would overwrite it and leave its "
            "card describing another model. Choose another --out, --resume its checkpoint, or --force to replace it."
        )
    for name in present:  # replaced on purpose: no file of the old model may describe the new one
        (out / name).unlink()
    for old in out.glob("checkpoint*.pt"):
        old.unlink()


def _finalize(
    cfg: TrainConfig, model: SparseGPT, data: TokenData, history: list[dict[str, Any]],
    elapsed: float, corpus_hash: str | None, vx: torch.Tensor, vy: torch.Tensor,
) -> None:
    """Write the released-format model, its tokenizer, loss curve and training metadata."""
    out = Path(cfg.out_dir)
    with torch.no_grad():  # ship the bigram table in bfloat16 (half the disk); measure what ships
        assert model.bigram_table is not None
        model.bigram_table.copy_(model.bigram_table.to(torch.bfloat16).float())
    val_loss = evaluate(model, vx, vy)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sd["bigram_table"] = sd["bigram_table"].to(torch.bfloat16)
    _save_atomic(sd, out / "final_model.pt")
    (out / "beeg_config.json").write_text(json.dumps(model.config.model_dump(), indent=2) + "\n")
    (out / "tokenizer.json").write_bytes(Path(data.tokenizer_path).read_bytes())
    _write_curve(history, out / LOSS_CURVE)
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
        "val_tokens": int(vy.numel()),
        "params_total": total,
        "params_nonzero": nonzero,
        "sparsified": matrices,
        "wall_time_s": round(elapsed, 1),
        "precision": resolve_precision(cfg),
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "final_model_bytes": (out / "final_model.pt").stat().st_size,
    }
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    log.info("wrote %s: val loss %.4f, %d/%d nonzero parameters", out, val_loss, nonzero, total)


def _package_record(corpus: Path | None) -> dict[str, Any] | None:
    """The package list of a package corpus (for the model card), None for a directory corpus."""
    from circuitbench.train import packages

    if corpus is None:
        return None
    if str(corpus) == packages.PACKAGES:
        return packages.package_list_record(None)
    if Path(corpus).is_file():
        return packages.package_list_record(Path(corpus))
    return None


def tokens_per_second(history: list[dict[str, Any]]) -> float:
    """Mean training throughput of a run from its loss-curve rows."""
    if len(history) < 2:
        return math.nan
    dt = history[-1]["elapsed_s"] - history[0]["elapsed_s"]
    return (history[-1]["tokens"] - history[0]["tokens"]) / dt if dt > 0 else math.nan
