"""`train(TrainConfig)`: the weight-sparse (or dense) training loop, with exact resume.

One step: sample a seeded batch, forward, backward, rescale the gradients to global RMS 1, AdamW at
the scheduled learning rate (times sqrt(L0_final / L0_current) for sparse runs), then project every
weight matrix and bias onto the current L0 budget (`circuitbench.train.recipe`). A checkpoint holds
the model, the optimizer, the batch sampler's generator, the step and the loss curve, written
atomically; resuming from it continues bit-for-bit as if never interrupted (same thread count).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from tqdm import tqdm

from circuitbench.bridges.bridge import Bridges
from circuitbench.bridges.losses import bridge_losses
from circuitbench.errors import CircuitbenchError
from circuitbench.hardware import autocast
from circuitbench.hardware import resolve_precision as _resolve_precision
from circuitbench.models.checkpoint import load_weights
from circuitbench.models.config import GPTConfig
from circuitbench.models.native import resolve_device
from circuitbench.models.sparse_gpt import SparseGPT
from circuitbench.train import recipe
from circuitbench.train.config import TrainConfig, check
from circuitbench.train.data import TokenData, prepare_data, sample_batch, val_windows
from circuitbench.train.joint import bridge_to, start_bridges, write_joint_bridges
from circuitbench.train.release import LOSS_CURVE, clear_old_model, finalize, refuse_overwrite, write_curve
from circuitbench.train.sources import check_tokenizer, load_model_dir
from circuitbench.train.state import (
    checkpoint_name,
    has_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from circuitbench.train.tokenized import is_tokenized, load_tokenized

log = logging.getLogger(__name__)


# The eight node sites of docs/design.md, Node sites (Gao et al. 2025: AbsTopK at all eight).
SPARSE_LOCS = "attn_in,attn_q,attn_k,attn_v,attn_out,mlp_in,mlp_neuron,mlp_out"

# Fields that may differ between an interrupted run and its resumption.
_RUNTIME_FIELDS = {
    "resume", "finish", "stop_after", "target_val_loss", "keep_checkpoints", "quiet", "threads",
    "command", "cache_dir", "out_dir", "force", "device",
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


def _build(cfg: TrainConfig, bridges: Bridges | None = None) -> tuple[SparseGPT, torch.optim.Optimizer]:
    torch.manual_seed(cfg.seed)
    model = SparseGPT(model_config(cfg))
    if cfg.pos_emb == "zero":
        with torch.no_grad():  # positional embeddings are zeroed and frozen (Gao et al. 2025)
            model.transformer.wpe.weight.zero_()
        model.transformer.wpe.weight.requires_grad_(False)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if bridges is not None:  # the bridges train with the model, undecayed
        groups.append({"params": list(bridges.parameters()), "weight_decay": 0.0})
    opt = torch.optim.AdamW(
        groups,
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


def _check_same_shape(cfg: TrainConfig, model: SparseGPT, source: Path) -> None:
    theirs, ours = model.config, model_config(cfg)
    diff = [f"{k} {getattr(theirs, k)} (this run: {getattr(ours, k)})"
            for k in ("n_layer", "d_model", "n_head", "d_mlp", "vocab_size", "block_size", "sink",
                      "enable_bigram_table", "tied_unembed")
            if getattr(theirs, k) != getattr(ours, k)]
    if diff:
        raise CircuitbenchError(f"--init-from {source}: the model has another shape: {', '.join(diff)}; "
                                "give the same --n-layer/--d-model/--n-head/--d-mlp/--ctx as the starting model.")


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
    precision: str = "float32", teacher: SparseGPT | None = None, bridged: tuple[Bridges, SparseGPT] | None = None,
    row: dict[str, Any] | None = None,
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
        bridged: With joint bridge training, the bridges and the frozen dense model; the loss adds
            `bridges.losses.bridge_losses` (the model's own logits come from the same forward pass), and the
            bridges' parameters (in `params` and the optimizer) step with the model's.
        row: Receives the bridge losses of the step (means over locations), for the loss curve.

    Returns:
        (next-token cross-entropy, learning rate used, density after the step, seconds spent in the projection).
    """
    bl = None
    with autocast(precision, x.device):
        if bridged is None:
            logits = model(x)  # (B, T, V), bfloat16 under autocast
        else:
            bl = bridge_losses(bridged[0], bridged[1], model, x)
            logits = bl.sparse_logits
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())  # float32 loss
    total = loss if bl is None else loss + bl.total
    if bl is not None and row is not None:
        row.update({f"bridge_{k}": round(v, 5) for k, v in bl.summary().items() if k != "total"})
    if teacher is not None:
        with torch.no_grad(), autocast(precision, x.device):
            teacher_logits = teacher(x)
        total = loss + cfg.distill_coef * distill_kl(logits, teacher_logits)
    opt.zero_grad(set_to_none=True)
    total.backward()
    recipe.normalize_grads_(params)
    lr = recipe.lr_at(step, cfg.max_steps, cfg.lr, cfg.warmup, cfg.lr_decay)
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
    device = resolve_device(cfg.device)
    replaced = refuse_overwrite(cfg)  # nothing is removed until every input below has been read and checked
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    corpus_hash = None
    if data is None and is_tokenized(cfg.corpus):  # a tokenized corpus folder: nothing to collect or fetch
        data = load_tokenized(Path(cfg.corpus), cfg.vocab_size)  # type: ignore[arg-type]
    elif data is None:
        data, corpus = prepare_data(_cache_dir(cfg), cfg.corpus, cfg.vocab_size, cfg.tokenizer_bytes)
        corpus_hash = corpus.hash
    check_tokenizer("--init-from", cfg.init_from, data)
    check_tokenizer("--distill-from", cfg.distill_from, data)
    check_tokenizer("--bridge-to", cfg.bridge_to, data)
    bridged = bridge_to(cfg)
    model, opt = _build(cfg, None if bridged is None else bridged[0])
    teacher = None if cfg.distill_from is None else load_model_dir(cfg.distill_from, "--distill-from")
    if teacher is not None:
        teacher.requires_grad_(False).to(device)
    model.to(device)  # parameters move in place: the optimizer built on them keeps them
    if bridged is not None:
        bridged[0].to(device), bridged[1].to(device)
    out.mkdir(parents=True, exist_ok=True)  # only now: every input above was read and checked
    clear_old_model(out, replaced)
    run = _Run(cfg, model, opt, torch.Generator().manual_seed(cfg.seed), bridged)
    run.start()
    if bridged is not None and not cfg.resume:
        start_bridges(bridged, model, data, cfg)
    vx, vy = (v.to(device) for v in val_windows(data.val, cfg.ctx, cfg.val_windows))
    reached_target = run.steps(data, vx, vy, teacher)
    if run.step < cfg.max_steps and not reached_target and not cfg.finish:
        log.info("stopped at step %d of %d; continue with --resume", run.step, cfg.max_steps)
        return out
    with torch.no_grad():  # ship the bigram table in bfloat16 (half the disk); measure what ships
        assert model.bigram_table is not None
        model.bigram_table.copy_(model.bigram_table.to(torch.bfloat16).float())
    val_loss = evaluate(model, vx, vy)
    finalize(cfg, model.cpu(), data, run.history, run.elapsed, corpus_hash, val_loss, int(vy.numel()),
             resolve_precision(cfg, device))
    if bridged is not None:
        bridged[0].cpu(), bridged[1].cpu()
        write_joint_bridges(cfg, bridged, run.history, run.elapsed, data)
    return out


class _Run:
    """The state of one training run between steps: where it is, its loss curve, and its checkpoint."""

    def __init__(self, cfg: TrainConfig, model: SparseGPT, opt: torch.optim.Optimizer, gen: torch.Generator,
                 bridged: tuple[Bridges, SparseGPT] | None = None) -> None:
        self.cfg, self.model, self.opt, self.gen, self.bridged = cfg, model, opt, gen, bridged
        self.out = Path(cfg.out_dir)
        self.step, self.history, self.elapsed = 0, cast(list[dict[str, Any]], []), 0.0

    def start(self) -> None:
        """Resume the checkpoint (checking it is this configuration's), or refuse to overwrite one.

        Raises:
            CircuitbenchError: for --resume without a checkpoint or with another configuration's, for
                --finish without --resume, and for a checkpoint present without --resume.
        """
        cfg = self.cfg
        if cfg.resume:
            state = load_checkpoint(self.out)
            stored = {k: v for k, v in json.loads(state["config"]).items() if k not in _RUNTIME_FIELDS}
            now = _identity(cfg)
            for k, v in now.items():  # a setting added since the checkpoint was written, left at its default
                if k not in stored and k in TrainConfig.model_fields and v == TrainConfig.model_fields[k].default:
                    stored[k] = v
            if stored != now:
                diff = "; ".join(f"--{k.replace('_', '-')} {stored.get(k, '(unset)')} there, "
                                 f"{now.get(k, '(unset)')} now"
                                 for k in sorted(set(stored) | set(now)) if stored.get(k) != now.get(k))
                raise CircuitbenchError(
                    f"{checkpoint_name(self.out)}: the checkpoint was written by a different configuration ({diff}); "
                    "resume with the same arguments or use another --out directory."
                )
            self.model.load_state_dict(state["model"])
            if self.bridged is not None:
                self.bridged[0].load_state_dict(state["bridges"])
            self.opt.load_state_dict(state["optimizer"])
            self.gen.set_state(state["generator"])
            self.step, self.history, self.elapsed = state["step"], json.loads(state["history"]), state["elapsed_s"]
            if cfg.anneal_afrac and not cfg.dense:
                self.model.set_afrac(_afrac(cfg, self.step))
            log.info("resumed %s at step %d", checkpoint_name(self.out), self.step)
        elif cfg.finish:
            raise CircuitbenchError("finish needs resume: it finalizes an existing checkpoint.")
        elif has_checkpoint(self.out):
            raise CircuitbenchError(
                f"{checkpoint_name(self.out)} exists: pass --resume to continue that run, or choose another --out."
            )

    def checkpoint(self) -> None:
        """Write the state (atomically; split when large) and the loss curve."""
        state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                 "generator": self.gen.get_state(), "step": self.step, "history": json.dumps(self.history),
                 "elapsed_s": self.elapsed, "config": json.dumps(_identity(self.cfg))}
        if self.bridged is not None:
            state["bridges"] = self.bridged[0].state_dict()
        save_checkpoint(state, self.out, keep=self.cfg.keep_checkpoints)
        write_curve(self.history, self.out / LOSS_CURVE)

    def steps(self, data: TokenData, vx: torch.Tensor, vy: torch.Tensor, teacher: SparseGPT | None) -> bool:
        """Train until `max_steps`, `stop_after` or the target validation loss; True when the target was reached."""
        cfg, model = self.cfg, self.model
        params = [p for p in model.parameters() if p.requires_grad]
        if self.bridged is not None:
            self.bridged[0].train()
            params += list(self.bridged[0].parameters())
        sparse = recipe.sparsifiable(model)
        tokens_per_step = cfg.batch_size * cfg.ctx
        device = next(model.parameters()).device
        precision = resolve_precision(cfg, device)
        log.info("device %s, precision: %s (asked: %s)", device, precision, cfg.precision)
        end = cfg.max_steps if cfg.stop_after is None else min(cfg.max_steps, cfg.stop_after)
        if cfg.finish:
            end = self.step
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=cfg.quiet, unit="step", dynamic_ncols=True)
        model.train()
        reached_target = False
        t_last, s_last = time.perf_counter(), self.step
        while self.step < end and not reached_target:
            t0 = time.perf_counter()
            x, y = (v.to(device, non_blocking=True)
                    for v in sample_batch(data.train, cfg.batch_size, cfg.ctx, self.gen))
            bridge_row: dict[str, Any] = {}
            loss, lr, density, _ = train_step(model, self.opt, x, y, cfg, self.step, params, sparse, precision, teacher,
                                              self.bridged, bridge_row)
            self.step += 1
            row: dict[str, Any] = {"step": self.step, "tokens": self.step * tokens_per_step,
                                   "train_loss": round(loss.item(), 5), "lr": lr, "density": density, **bridge_row}
            if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                row["val_loss"] = round(evaluate(model, vx, vy), 5)
                log.info("step %d: train %.4f, val %.4f", self.step, row["train_loss"], row["val_loss"])
                if cfg.target_val_loss is not None and row["val_loss"] <= cfg.target_val_loss:
                    log.info("validation loss %.4f reached the target %.4f", row["val_loss"], cfg.target_val_loss)
                    reached_target = True
            self.elapsed += time.perf_counter() - t0  # wall time, validation included
            row["elapsed_s"] = round(self.elapsed, 3)
            self.history.append(row)
            if self.step % 10 == 0 or self.step == end:
                now = time.perf_counter()
                tps = (self.step - s_last) * tokens_per_step / max(now - t_last, 1e-9)
                t_last, s_last = now, self.step
                bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tps:,.0f}")
            bar.update(1)
            if self.step % cfg.checkpoint_every == 0 or self.step == end or reached_target:
                self.checkpoint()
        bar.close()
        return reached_target
