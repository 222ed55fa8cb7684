"""Small real models for the model tests, built from a seed and saved in the released format."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from circuitbench.models.checkpoint import save_checkpoint
from circuitbench.models.config import GPTConfig
from circuitbench.models.sparse_gpt import SparseGPT

REPO = Path(__file__).resolve().parents[2]
FIXTURE_MODEL = REPO / "tests" / "fixtures" / "fixture-sparse-sink-bigram"
FIXTURE_EXPECTED = REPO / "tests" / "fixtures" / "sparse_sink_bigram_expected.pt"

BASE = dict(block_size=32, vocab_size=97, n_layer=2, n_head=4, d_model=32, d_mlp=64)


def random_model(cfg: GPTConfig, seed: int = 0, density: float = 0.2) -> SparseGPT:
    """A SparseGPT with random sparse weights and nonzero biases, sinks and tables."""
    torch.manual_seed(seed)
    model = SparseGPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.3 if p.ndim > 1 else 0.1)
            if p.ndim == 2 and "wte" not in name and "lm_head" not in name:
                p.mul_(torch.rand_like(p) < density)
        for _, b in model.named_buffers():
            b.normal_(0, 0.1)
        model.transformer.wpe.weight.zero_()
    return model.eval()


@pytest.fixture
def make_model_dir(tmp_path: Path) -> Callable[..., tuple[Path, dict]]:
    """Write a random model with BASE config plus overrides; returns (dir, raw config dict)."""

    def make(name: str = "m", raw: dict | None = None, seed: int = 0, **over: object) -> tuple[Path, dict]:
        raw_cfg = dict(BASE, **over) if raw is None else raw
        model = random_model(GPTConfig.model_validate(raw_cfg), seed)
        directory = tmp_path / name
        save_checkpoint(model, directory)
        (directory / "beeg_config.json").write_text(json.dumps(raw_cfg))  # keep the raw keys (n_mlp)
        return directory, raw_cfg

    return make
