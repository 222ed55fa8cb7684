"""`beeg_config.json`, the released circuit-sparsity model configuration, as a strict pydantic model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from circuitbench.errors import ConfigError
from circuitbench.validation import format_validation_error

# The ten places AbsTopK can act (official inference/gpt.py, `maybe_activation_sparsity`).
LOCTYPES = (
    "attn_in",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_out",
    "mlp_in",
    "mlp_neuron",
    "mlp_out",
    "resid_post_attn",
    "resid_post_mlp",
)


class GPTConfig(BaseModel):
    """Every key the released `beeg_config.json` format allows; unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    block_size: int = 1024
    """Maximum context length (positions in `wpe`)."""
    vocab_size: int = 2048
    """Number of token ids (tinypython_2k: 2048)."""
    n_layer: int = 12
    """Number of transformer blocks."""
    n_head: int = 12
    """Attention heads per block."""
    d_head: int | None = None
    """Width of one head; defaults to d_model // n_head and may differ from it."""
    d_model: int = 768
    """Residual stream width."""
    dropout: float = 0.0
    """Dropout probability (training only; inference ignores it)."""
    bias: bool = True
    """Biases in the attention and MLP linear layers."""
    ln_bias: bool = True
    """Bias in LayerNorm (ignored with rms_norm, which has none)."""
    rms_norm: bool = False
    """RMSNorm instead of LayerNorm."""
    residual_activation_type: Literal["identity", "relu"] = "identity"
    """Nonlinearity applied to the residual stream after each sublayer."""
    activation_type: Literal["gelu", "relu"] = "gelu"
    """MLP nonlinearity."""
    afrac: float | None = None
    """Fraction of activations AbsTopK keeps at each location in afrac_loctypes; None disables it."""
    afrac_loctypes: str = "attn_in,attn_out,mlp_in,mlp_out"
    """Comma-separated AbsTopK locations, from LOCTYPES."""
    debug_nans: bool = False
    """Official debugging switch; has no effect here."""
    tied_unembed: bool = True
    """lm_head shares its weight with wte."""
    tokenizer_name: str = "tinypython_2k"
    """Name of the tokenizer the model was trained with."""
    grad_checkpointing: bool = True
    """Training-time memory switch; has no effect on results."""
    d_mlp: int | None = None
    """MLP hidden width; defaults to 4 * d_model. The legacy key `n_mlp` is read as this."""
    enable_bigram_table: bool = False
    """Add a vocab x vocab table, indexed by the input token, to the logits."""
    learnable_bigram_table: bool = False
    """The bigram table is a parameter rather than a buffer (same state-dict key either way)."""
    d_pos_emb: int | None = None
    """Width of positional embeddings concatenated to every sublayer's input; None adds them instead."""
    dropout_cat_pos_emb: bool = False
    """Dropout on the concatenated positional embeddings (training only)."""
    sinusoidal_cat_pos_emb: bool = False
    """The concatenated positional embeddings were fixed sinusoids (stored in wpe either way)."""
    enable_sparse_kernels: bool = False
    """Official kernel switch; has no effect on results."""
    flash: bool = True
    """Official kernel switch; has no effect here (the sink is honoured either way)."""
    sink: bool = False
    """One learnable attention-sink logit per head on a zero-valued dummy key."""
    bigram_table_rank: int | None = None
    """Legacy key of some released configs; only None (full-rank table) is supported."""
    use_tied_aux_matrix: bool = False
    """Legacy key of some released configs; only False is supported."""

    @model_validator(mode="before")
    @classmethod
    def _legacy_keys(cls, data: object) -> object:
        if isinstance(data, dict) and "n_mlp" in data:
            data = dict(data)
            if "d_mlp" in data and data["d_mlp"] != data["n_mlp"]:
                raise ValueError("both d_mlp and its legacy name n_mlp are set, to different values")
            data["d_mlp"] = data.pop("n_mlp")
        return data

    @model_validator(mode="after")
    def _check(self) -> GPTConfig:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "d_model"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_head is None and self.d_model % self.n_head:
            raise ValueError(
                f"d_model ({self.d_model}) is not divisible by n_head ({self.n_head}): choose an n_head that "
                "divides d_model (`circuitbench train --n-head`), or give d_head in the model's config file"
            )
        if self.afrac is not None and not 0.0 < self.afrac <= 1.0:
            raise ValueError(f"afrac must be in (0, 1], got {self.afrac}")
        unknown = set(self.loctypes) - set(LOCTYPES)
        if unknown:
            raise ValueError(
                f"afrac_loctypes has unknown locations {sorted(unknown)}; allowed: {', '.join(LOCTYPES)}"
            )
        if self.bigram_table_rank is not None:
            raise ValueError("low-rank bigram tables (bigram_table_rank) are not supported; use null")
        if self.use_tied_aux_matrix:
            raise ValueError("use_tied_aux_matrix=true is not supported (the official loader rejects it too)")
        return self

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_head if self.d_head is not None else self.d_model // self.n_head

    @property
    def mlp_dim(self) -> int:
        """MLP hidden width."""
        return self.d_mlp if self.d_mlp is not None else 4 * self.d_model

    @property
    def d_model_in(self) -> int:
        """Width of each sublayer's input (d_model, plus d_pos_emb when positions are concatenated)."""
        return self.d_model + (self.d_pos_emb or 0)

    @property
    def loctypes(self) -> tuple[str, ...]:
        """AbsTopK locations as a tuple, empty when afrac is None."""
        if self.afrac is None:
            return ()
        return tuple(s.strip() for s in self.afrac_loctypes.split(",") if s.strip())


def load_config(path: Path) -> GPTConfig:
    """Read and validate a `beeg_config.json`.

    Raises:
        ConfigError: naming the file and the offending key when the JSON is malformed, a key is
            unknown or ill-typed, or values are inconsistent.
    """
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: file not found") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object of config keys, got {type(raw).__name__}")
    try:
        return GPTConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path), GPTConfig)) from err

