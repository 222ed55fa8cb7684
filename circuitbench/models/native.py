"""The adapter over the native weight-sparse GPT, loaded from a released-format model directory."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuitbench.errors import CircuitbenchError
from circuitbench.models.adapter import HookedForward, Site
from circuitbench.models.checkpoint import find_weights, load_weights, read_state_dict
from circuitbench.models.config import GPTConfig, load_config
from circuitbench.models.sparse_gpt import Hook, SparseGPT
from circuitbench.models.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

CONFIG_FILE = "beeg_config.json"


def gpt_sites(cfg: GPTConfig) -> list[Site]:
    """The eight maskable sites per layer of a SparseGPT (docs/design.md, Node sites), in forward order."""
    sites: list[Site] = []
    inner = cfg.n_head * cfg.head_dim
    for i in range(cfg.n_layer):
        attn, mlp = f"transformer.h.{i}.attn", f"transformer.h.{i}.mlp"
        sites += [
            Site(f"{i}.attn.act_in", i, "attn_in", cfg.d_model_in),
            Site(f"{i}.attn.q", i, "q", inner, f"{i}.attn.act_in", f"{attn}.c_attn.weight", (0, inner)),
            Site(f"{i}.attn.k", i, "k", inner, f"{i}.attn.act_in", f"{attn}.c_attn.weight",
                 (inner, 2 * inner)),
            Site(f"{i}.attn.v", i, "v", inner, f"{i}.attn.act_in", f"{attn}.c_attn.weight",
                 (2 * inner, 3 * inner)),
            # y's channel j is head-mixed v channel j (attention mixes positions, not channels).
            Site(f"{i}.attn.resid_delta", i, "attn_out", cfg.d_model, f"{i}.attn.v",
                 f"{attn}.c_proj.weight"),
            Site(f"{i}.mlp.act_in", i, "mlp_in", cfg.d_model_in),
            Site(f"{i}.mlp.post_act", i, "mlp_neuron", cfg.mlp_dim, f"{i}.mlp.act_in",
                 f"{mlp}.c_fc.weight"),
            Site(f"{i}.mlp.resid_delta", i, "mlp_out", cfg.d_model, f"{i}.mlp.post_act",
                 f"{mlp}.c_proj.weight"),
        ]
    return sites


def hook_names(cfg: GPTConfig) -> list[str]:
    """Every official hook name, in forward order."""
    names: list[str] = []
    for i in range(cfg.n_layer):
        names += [f"{i}.resid_in", f"{i}.attn.act_in", f"{i}.attn.q", f"{i}.attn.k", f"{i}.attn.v",
                  f"{i}.attn.y", f"{i}.attn.resid_delta", f"{i}.resid_mid", f"{i}.mlp.act_in",
                  f"{i}.mlp.post_act", f"{i}.mlp.resid_delta"]
    return names + ["final_resid"]


class SparseGPTAdapter(HookedForward):
    """`ModelAdapter` for the native SparseGPT."""

    def __init__(
        self,
        model: SparseGPT,
        tokenizer: Tokenizer,
        name: str,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        self.model = model.eval().requires_grad_(False)  # adapters never train the model
        self.config: GPTConfig = model.config
        self.context_length: int | None = self.config.block_size
        self.n_heads: int | None = self.config.n_head
        self.tokenizer = tokenizer
        self.name = name
        self.sites = gpt_sites(self.config)
        self.hook_names = hook_names(self.config)
        self.provenance = dict(provenance or {})
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._params = dict(model.named_parameters())

    supports_edges = True
    """Edge-level circuits hook this model's linear layers and norms (`circuitbench.circuits.edge_level`)."""

    supports_answer_only = True
    """`forward(..., answer_only=True)` computes the last block only where the logits read it."""

    def forward(self, tokens: Tensor, hook: Hook | None = None, at: Tensor | None = None,
                answer_only: bool = False) -> Tensor:
        """Logits [B, T, V] (or [B, V] at positions `at`) with `hook` applied at every hook point."""
        return self.model(tokens.to(self.device), hook, None if at is None else at.to(self.device), answer_only)

    def site_weight(self, site: Site) -> Tensor | None:
        """The matrix [site.width, source.width] connecting `site.source` to `site`."""
        if site.weight is None:
            return None
        w = self._params[site.weight].detach()
        if site.rows is not None:
            w = w[site.rows[0] : site.rows[1]]
        return w


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" means CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CircuitbenchError(f"--device {device}: CUDA is not available here; use --device cpu or auto")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """None means float32; names as in torch ("float32", "bfloat16", "float16")."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise CircuitbenchError(f"--dtype {dtype}: unknown dtype; use one of {', '.join(table)}")
    return table[dtype]


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """sha256 over named tensors (names, dtypes, shapes, bytes, in name order): for weights held in memory."""
    h = hashlib.sha256()
    for key, t in sorted(tensors.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _check_tokenizer_record(directory: Path) -> None:
    """Refuse a tokenizer.json that is not the one the model's training recorded (train_meta.json).

    A tokenizer of the same size but another model's gives chance accuracy with no other sign.
    """
    import json

    from circuitbench.errors import TokenizerError

    meta, tok = directory / "train_meta.json", directory / "tokenizer.json"
    if not (meta.is_file() and tok.is_file()):
        return
    try:
        recorded = json.loads(meta.read_text()).get("tokenizer_sha256")
    except (ValueError, OSError, AttributeError):
        return  # a damaged card is not the weights' problem; the tokenizer is checked when the card is readable
    actual = file_sha256(tok)
    if recorded and recorded != actual:
        raise TokenizerError(
            f"{tok}: sha256 {actual[:16]}... is not the tokenizer this model was trained with ({meta.name} "
            f"tokenizer_sha256 {recorded[:16]}...); its token ids would mean other strings. Put the model's own "
            "tokenizer.json back (from where the model came), or remove train_meta.json if you changed it on purpose."
        )


def load_native(
    directory: Path,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    name: str | None = None,
) -> SparseGPTAdapter:
    """Load a released-format directory (`beeg_config.json` + weights + optional tokenizer).

    Raises:
        ConfigError: for a malformed config.
        CheckpointError: for missing, corrupt or mismatched weights.
        TokenizerError: for unreadable tokenizer files.
    """
    directory = Path(directory)
    cfg = load_config(directory / CONFIG_FILE)
    weights = find_weights(directory)
    model = SparseGPT(cfg)
    load_weights(model, read_state_dict(weights), weights)
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    model = model.to(device=dev, dtype=dt)
    tokenizer = load_tokenizer(directory, cfg.vocab_size, name=cfg.tokenizer_name)
    _check_tokenizer_record(directory)
    provenance = {
        "model_path": str(directory.resolve()),
        "weights_sha256": file_sha256(weights),
        "format": "circuit-sparsity",
    }
    return SparseGPTAdapter(model, tokenizer, name or directory.name, provenance)
