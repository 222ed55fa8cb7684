"""`circuitbench bridge train`: learn bridges between two frozen models, with resume.

The maps start at their ridge-regression solution on the residuals of `init_windows` training windows
(`Bridges.fit_least_squares`), then AdamW minimises `losses.bridge_losses` on seeded batches of the corpus.
A checkpoint (bridges, optimizer, sampler state, step, curve) is written atomically every
`checkpoint_every` steps; `--resume` continues it bit for bit. The final bridges, their config and card are
written at the end; existing bridges are never overwritten without `--force`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, cast

import torch
from pydantic import BaseModel, ConfigDict
from tqdm import tqdm

from circuitbench.bridges.bridge import (
    CONFIG,
    BridgeError,
    Bridges,
    check_bridgeable,
    default_topk,
    model_record,
    save_bridges,
)
from circuitbench.bridges.losses import bridge_losses, least_squares_start
from circuitbench.corpus import sample_batch
from circuitbench.files import atomic_path
from circuitbench.protocols import ModelAdapter

log = logging.getLogger(__name__)

CHECKPOINT = "bridge_checkpoint.pt"
CURVE = "bridge_curve.csv"


class BridgeTrainConfig(BaseModel):
    """Every setting of `circuitbench bridge train`."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 8
    """Windows per step."""
    ctx: int = 128
    """Window length in tokens."""
    lr: float = 1e-3
    """AdamW learning rate (constant after a 5% warmup)."""
    nmse_coef: float = 1.0
    """Weight of the two normalised-MSE terms (the paper: 1)."""
    kl_coef: float = 1.0
    """Weight of the two hybrid-pass KL terms (the paper: 1)."""
    topk: int | None = None
    """The encoder's AbsTopK k; None: the sparse model's afrac x its width (no AbsTopK for a model without)."""
    init_windows: int = 64
    """Training windows whose residuals give the least-squares starting point; 0 starts from PyTorch's random
    initialisation (seeded) instead."""
    seed: int = 0
    """Seeds the batch sampler."""
    checkpoint_every: int = 50
    """Steps between checkpoints."""


def check_settings(cfg: BridgeTrainConfig) -> None:
    """Refuse settings that cannot train, naming every flag at fault.

    Raises:
        BridgeError: one line for all of them.
    """
    bad = [f"--{k.replace('_', '-')} {getattr(cfg, k)}: give a positive number"
           for k in ("steps", "batch_size", "ctx", "checkpoint_every") if getattr(cfg, k) <= 0]
    if cfg.init_windows < 0:
        bad.append(f"--init-windows {cfg.init_windows}: give a number of windows >= 0 (0: a random start)")
    bad += [f"--{k.replace('_', '-')} {getattr(cfg, k)}: give a number >= 0"
            for k in ("nmse_coef", "kl_coef") if not getattr(cfg, k) >= 0]
    if not cfg.lr > 0:
        bad.append(f"--lr {cfg.lr}: give a positive learning rate")
    if cfg.topk is not None and cfg.topk <= 0:
        bad.append(f"--topk {cfg.topk}: give a positive k (or leave it out)")
    if bad:
        raise BridgeError("; ".join(bad))


def train_bridges(dense: ModelAdapter, sparse: ModelAdapter, train_tokens: Any, out: Path,
                  cfg: BridgeTrainConfig | None = None, resume: bool = False, force: bool = False,
                  show_progress: bool = True, extra: dict[str, Any] | None = None, stop_after: int | None = None
                  ) -> Bridges | None:
    """Train bridges between two frozen models on a token stream and write them to `out`.

    Args:
        dense: the dense model (checked with `check_bridgeable` before anything else).
        sparse: the sparse model.
        train_tokens: a 1-D uint16/int array of token ids (the corpus's training split).
        out: the bridge directory.
        cfg: the settings.
        resume: continue `out`'s checkpoint.
        force: overwrite finished bridges in `out`.
        show_progress: show a progress bar.
        extra: more fields for the config (the corpus, the command).
        stop_after: stop once this many steps are done, leaving only the checkpoint (as an interruption would).

    Returns:
        The trained bridges, or None when `stop_after` stopped the run before `cfg.steps`.

    Raises:
        BridgeError: for models that cannot be bridged, bad settings, or an `out` that holds bridges or a
            checkpoint of another configuration.
    """
    cfg = cfg or BridgeTrainConfig()
    shape, topk = _check_run(dense, sparse, train_tokens, Path(out), cfg, resume, force)
    out = Path(out)
    with torch.random.fork_rng(devices=[]):  # a seeded start that leaves the caller's random state alone
        torch.manual_seed(cfg.seed)
        bridges = Bridges(shape["locations"], shape["d_dense"], shape["d_sparse"], topk).to(dense.device)
    identity = {"settings": cfg.model_dump(mode="json"), "dense": model_record(dense),
                "sparse": model_record(sparse)}
    run = _Run(bridges, torch.optim.AdamW(bridges.parameters(), lr=cfg.lr, weight_decay=0.0),
               torch.Generator().manual_seed(cfg.seed), out / CHECKPOINT, identity)
    if resume:
        run.resume()
    elif cfg.init_windows > 0:
        run.least_squares_start(dense, sparse, train_tokens, cfg)
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    run.steps(dense, sparse, train_tokens, cfg, end, show_progress)
    if run.step < cfg.steps:
        log.info("stopped at step %d of %d; continue with --resume", run.step, cfg.steps)
        return None
    bridges.eval().requires_grad_(False)
    first, last = (run.history[0], run.history[-1]) if run.history else ({}, {})
    config = {**identity, "trained": {"steps": run.step, "tokens": run.step * cfg.batch_size * cfg.ctx,
                                      "elapsed_s": round(run.elapsed, 1), "first": first, "last": last,
                                      "threads": torch.get_num_threads()},
              "joint": False, **(extra or {})}
    save_bridges(out, bridges, config)
    _write_curve(out / CURVE, run.history)
    run.ckpt.unlink(missing_ok=True)
    return bridges


def _check_run(dense: ModelAdapter, sparse: ModelAdapter, train_tokens: Any, out: Path, cfg: BridgeTrainConfig,
               resume: bool, force: bool) -> tuple[dict[str, Any], int | None]:
    """Every refusal before any work: settings, models, `out`'s state, the corpus and context lengths.

    Returns:
        The models' shared locations and widths (`check_bridgeable`), and the encoder's AbsTopK k.
    """
    check_settings(cfg)
    shape = check_bridgeable(dense, sparse)
    topk = cfg.topk if cfg.topk is not None else default_topk(sparse, shape["d_sparse"])
    if topk is not None and topk > shape["d_sparse"]:
        raise BridgeError(f"--topk {topk}: more than the sparse residual's width {shape['d_sparse']}")
    if (out / CONFIG).is_file() and not force and not resume:
        raise BridgeError(f"--out {out}: holds trained bridges; pass --force to replace them or choose another --out")
    ckpt = out / CHECKPOINT
    if ckpt.is_file() and not resume:
        raise BridgeError(f"--out {out}: holds an unfinished run ({CHECKPOINT}); pass --resume to continue it or "
                          "choose another --out")
    if resume and not ckpt.is_file():
        raise BridgeError(f"--resume: {ckpt} does not exist; start without --resume")
    if len(train_tokens) < cfg.ctx + 2:
        raise BridgeError(f"the corpus has {len(train_tokens)} training tokens, fewer than one --ctx {cfg.ctx} window")
    for m in (dense, sparse):
        if m.context_length is not None and cfg.ctx > m.context_length:
            raise BridgeError(f"--ctx {cfg.ctx}: longer than {m.name}'s context ({m.context_length})")
    return shape, topk


class _Run:
    """One bridge training run between steps: the maps, the optimizer, the sampler, the curve, the checkpoint."""

    def __init__(self, bridges: Bridges, opt: torch.optim.Optimizer, gen: torch.Generator, ckpt: Path,
                 identity: dict[str, Any]) -> None:
        self.bridges, self.opt, self.gen, self.ckpt, self.identity = bridges, opt, gen, ckpt, identity
        self.step, self.history, self.elapsed = 0, cast(list[dict[str, Any]], []), 0.0

    def resume(self) -> None:
        """Continue the checkpoint, refusing one written with other settings or models."""
        state = torch.load(self.ckpt, map_location="cpu", weights_only=False)
        if state["identity"] != json.loads(json.dumps(self.identity)):
            raise BridgeError(f"--resume: {self.ckpt} was written with other settings or models; resume with the "
                              "same arguments or choose another --out")
        self.bridges.load_state_dict(state["bridges"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        self.step, self.history, self.elapsed = state["step"], state["history"], state["elapsed_s"]

    def least_squares_start(self, dense: ModelAdapter, sparse: ModelAdapter, tokens: Any,
                            cfg: BridgeTrainConfig) -> None:
        """Start every map at its ridge-regression solution on `init_windows` windows' residuals."""
        x, _ = sample_batch(tokens, cfg.init_windows, cfg.ctx, self.gen)
        least_squares_start(self.bridges, dense.forward, sparse.forward, x.to(dense.device))

    def steps(self, dense: ModelAdapter, sparse: ModelAdapter, tokens: Any, cfg: BridgeTrainConfig, end: int,
              show_progress: bool) -> None:
        """Train until step `end`, checkpointing every `checkpoint_every` steps and at an early end."""
        warm = max(1, cfg.steps // 20)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not show_progress, unit="step", desc="bridges",
                   dynamic_ncols=True)
        self.bridges.train()
        while self.step < end:
            t0 = time.perf_counter()
            x, _ = sample_batch(tokens, cfg.batch_size, cfg.ctx, self.gen)
            for g in self.opt.param_groups:
                g["lr"] = cfg.lr * min(1.0, (self.step + 1) / warm)
            losses = bridge_losses(self.bridges, dense.forward, sparse.forward, x.to(dense.device), cfg.nmse_coef,
                                   cfg.kl_coef)
            self.opt.zero_grad(set_to_none=True)
            losses.total.backward()
            self.opt.step()
            self.step += 1
            self.elapsed += time.perf_counter() - t0
            row = {"step": self.step, **{k: round(v, 6) for k, v in losses.summary().items()},
                   "elapsed_s": round(self.elapsed, 3)}
            self.history.append(row)
            bar.set_postfix(kl=f"{row['kl_d2s'] + row['kl_s2d']:.3f}", nmse=f"{row['nmse_enc'] + row['nmse_dec']:.3f}")
            bar.update(1)
            if (self.step % cfg.checkpoint_every == 0 or self.step == end) and self.step < cfg.steps:
                _checkpoint(self.ckpt, {"identity": self.identity, "bridges": self.bridges.state_dict(),
                                        "optimizer": self.opt.state_dict(), "generator": self.gen.get_state(),
                                        "step": self.step, "history": self.history, "elapsed_s": self.elapsed})
        bar.close()


def _checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _write_curve(path: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    keys = list(history[0])
    lines = [",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in history]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
