"""The sparse autoencoder itself: weights, encode and decode (standard ReLU, TopK, JumpReLU)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

log = logging.getLogger(__name__)


CFG_FILE = "cfg.json"


WEIGHTS_FILE = "sae_weights.safetensors"


Architecture = Literal["standard", "topk", "jumprelu"]


ARCHITECTURES: tuple[str, ...] = ("standard", "topk", "jumprelu")


DTYPES = {"float32", "float16", "bfloat16", "float64"}


@dataclass(frozen=True, slots=True, eq=False)
class SAE:
    """A sparse autoencoder read from SAELens files; weights in float32 (activations are cast to it)."""

    path: Path
    """The SAE's directory."""
    hook_name: str
    """Hook point as written in cfg.json (TransformerLens or circuitbench name)."""
    architecture: Architecture
    """standard (ReLU), topk or jumprelu."""
    W_enc: Tensor
    """[d_in, d_sae]."""
    b_enc: Tensor
    """[d_sae]."""
    W_dec: Tensor
    """[d_sae, d_in]."""
    b_dec: Tensor
    """[d_in]."""
    apply_b_dec_to_input: bool
    """Subtract b_dec from the input before encoding (SAELens `apply_b_dec_to_input`)."""
    threshold: Tensor | None = None
    """[d_sae] JumpReLU thresholds."""
    k: int | None = None
    """TopK: latents kept per position."""
    weights_sha256: str = ""
    """Hash of sae_weights.safetensors (of the converted tensors for an SAELens release)."""
    model_name: str | None = None
    """The model it was trained on, as cfg.json names it (a TransformerLens name or a Hub id)."""
    prepend_bos: bool = False
    """It was trained on sequences that start with the BOS token: prompts get one prepended."""
    processing: Mapping[str, Any] = field(default_factory=dict)
    """TransformerLens weight processing its model was loaded with (`model_from_pretrained_kwargs`)."""
    spec: str = ""
    """How it was named: a directory, a Hub id, or RELEASE/ID (what reloads it)."""
    origin: Mapping[str, Any] = field(default_factory=dict)
    """For an SAELens release: release, sae_id, repo_id, folder and conversion function."""

    @property
    def where(self) -> str:
        """Where its config is, for messages: the cfg.json, or the SAELens release and id."""
        if self.origin.get("release"):
            return f"SAELens release {self.origin['release']}/{self.origin['sae_id']}"
        return str(self.path / CFG_FILE)

    @property
    def d_in(self) -> int:
        """Width of the activation the SAE reads and writes."""
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        """Number of latents."""
        return int(self.W_enc.shape[1])

    def to(self, device: torch.device) -> SAE:
        """The same SAE with its tensors on `device`."""
        move = {n: getattr(self, n).to(device) for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
        thr = None if self.threshold is None else self.threshold.to(device)
        return dataclasses.replace(self, threshold=thr, **move)

    def encode(self, x: Tensor) -> Tensor:
        """Latents [..., d_sae] of activations [..., d_in] (float32), as SAELens defines each architecture."""
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = x @ self.W_enc + self.b_enc  # (..., d_sae)
        if self.architecture == "standard":
            return torch.relu(pre)
        if self.architecture == "jumprelu":
            assert self.threshold is not None
            return torch.relu(pre) * (pre > self.threshold)
        assert self.k is not None
        top = pre.topk(self.k, dim=-1)  # SAELens TopK: the k largest pre-activations, then ReLU
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))

    def decode(self, latents: Tensor) -> Tensor:
        """Reconstruction [..., d_in] of latents [..., d_sae]."""
        return latents @ self.W_dec + self.b_dec
