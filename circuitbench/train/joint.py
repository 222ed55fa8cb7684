"""Joint training of a sparse model with its bridges to a frozen dense model (`circuitbench train --bridge-to`).

The loop (`train.loop`) adds `bridges.losses.bridge_losses` to each step; this module builds the bridges and the
frozen dense model, starts the maps at their least-squares solution, and writes them with their card to
OUT/bridges at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from circuitbench.bridges.bridge import Bridges
from circuitbench.corpus import sample_batch
from circuitbench.errors import CircuitbenchError
from circuitbench.models.sparse_gpt import SparseGPT
from circuitbench.train.config import TrainConfig
from circuitbench.train.data import TokenData

BRIDGES_DIR = "bridges"
"""Where `--bridge-to` writes the jointly trained bridges, inside the model's directory."""


def bridge_to(cfg: TrainConfig) -> tuple[Bridges, SparseGPT] | None:
    """With --bridge-to: the frozen dense model and fresh bridges at every residual location both models share.

    Raises:
        CircuitbenchError: when the dense model's blocks differ from this run's (the locations must match).
    """
    if cfg.bridge_to is None:
        return None
    from circuitbench.bridges.bridge import residual_locations
    from circuitbench.models.native import hook_names
    from circuitbench.train.loop import model_config
    from circuitbench.train.sources import load_model_dir

    dense = load_model_dir(cfg.bridge_to, "--bridge-to").requires_grad_(False)
    ours = model_config(cfg)
    if dense.config.n_layer != ours.n_layer:
        raise CircuitbenchError(f"--bridge-to {cfg.bridge_to}: {dense.config.n_layer} blocks, this run trains "
                                f"{ours.n_layer}; bridges join the same residual location of both models, so give "
                                "--n-layer equal to the dense model's")
    locations = residual_locations(hook_names(ours))
    topk = None if cfg.dense else max(1, int(cfg.afrac * ours.d_model))
    torch.manual_seed(cfg.seed + 1)
    return Bridges(locations, dense.config.d_model, ours.d_model, topk), dense


def start_bridges(bridged: tuple[Bridges, SparseGPT], model: SparseGPT, data: TokenData, cfg: TrainConfig,
                   windows: int = 64) -> None:
    """Start the bridges at their least-squares solution between the dense model and the starting model.

    On windows of their own generator, so the run's batches are the same as without bridges.
    """
    from circuitbench.bridges.losses import least_squares_start

    bridges, dense = bridged
    x, _ = sample_batch(data.train, windows, cfg.ctx, torch.Generator().manual_seed(cfg.seed + 1))
    least_squares_start(bridges, dense, model, x)


def write_joint_bridges(cfg: TrainConfig, bridged: tuple[Bridges, SparseGPT], history: list[dict[str, Any]],
                         elapsed: float, data: TokenData) -> None:
    """Save the jointly trained bridges and their card in OUT/bridges."""
    from circuitbench.bridges.bridge import save_bridges
    from circuitbench.bridges.card import write_card
    from circuitbench.models.native import file_sha256

    bridges = bridged[0]
    out = Path(cfg.out_dir)
    keys = ("nmse_enc", "nmse_dec", "kl_d2s", "kl_s2d")
    rows = [r for r in history if "bridge_kl_d2s" in r]

    def losses(r: dict[str, Any]) -> dict[str, Any]:
        return {k: r[f"bridge_{k}"] for k in keys} | {"step": r["step"]}

    weights = out / "final_model.pt"
    config = {"settings": {"nmse_coef": 1.0, "kl_coef": 1.0, "lr": cfg.lr, "batch_size": cfg.batch_size,
                           "ctx": cfg.ctx, "seed": cfg.seed},
              "dense": {"name": Path(cfg.bridge_to or "").name, "path": str(Path(cfg.bridge_to or "").resolve()),
                        "weights_sha256": file_sha256(_weights_file(Path(cfg.bridge_to or "")))},
              "sparse": {"name": out.name, "path": str(out.resolve()), "weights_sha256": file_sha256(weights)},
              "trained": {"steps": rows[-1]["step"] if rows else 0,
                          "tokens": (rows[-1]["step"] if rows else 0) * cfg.batch_size * cfg.ctx,
                          "elapsed_s": round(elapsed, 1), "first": losses(rows[0]) if rows else {},
                          "last": losses(rows[-1]) if rows else {}, "threads": torch.get_num_threads()},
              "joint": True, "command": cfg.command,
              "corpus": f"{cfg.corpus} (tokenizer {data.tokenizer_hash[:12]})"}
    bridges.eval().requires_grad_(False)
    save_bridges(out / BRIDGES_DIR, bridges, config)
    full = json.loads((out / BRIDGES_DIR / "bridge_config.json").read_text())
    write_card(out / BRIDGES_DIR, full)


def _weights_file(directory: Path) -> Path:
    from circuitbench.models.checkpoint import find_weights

    return find_weights(directory)
