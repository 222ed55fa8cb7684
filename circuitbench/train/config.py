"""TrainConfig: every setting of `circuitbench train`, importable without torch (the CLI parser reads it)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict


class TrainConfig(BaseModel):
    """Everything that determines a training run."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    out_dir: Path
    """Directory for checkpoints, the loss curve and the final model."""
    corpus: Path | None = None
    """Directory of Python files, a pinned package list (`*.txt`), or `pypi` (the bundled list);
    None means the standard library."""
    cache_dir: Path | None = None
    """Where the tokenizer and token arrays are cached; None means ~/.cache/circuitbench."""
    dense: bool = False
    """Train the dense twin: no weight or activation sparsity."""
    n_layer: int = 2
    """Transformer blocks."""
    d_model: int = 128
    """Residual width."""
    n_head: int = 4
    """Attention heads."""
    d_mlp: int | None = None
    """MLP width; None means 4 * d_model."""
    ctx: int = 256
    """Context length (Gao et al. 2025: 256)."""
    pos_emb: Literal["zero", "learned"] = "zero"
    """Absolute positional embeddings: `zero` (zeroed and frozen, as Gao et al. 2025) or `learned`
    (trained, and sparsified like every other weight matrix in a sparse run)."""
    vocab_size: int = 2048
    """Tokenizer vocabulary size (tinypython_2k: 2048)."""
    tokenizer_bytes: int | None = 64_000_000
    """Train the tokenizer on an even sample (by content hash) of this many bytes of the training
    split; None uses all of it."""
    afrac: float = 0.25
    """AbsTopK fraction at the eight node sites (Gao et al. 2025: 0.25); ignored with dense."""
    weight_density: float = 1 / 16
    """Target fraction of nonzeros in every weight matrix and bias; ignored with dense."""
    batch_size: int = 32
    """Windows per step."""
    max_steps: int = 1000
    """Planned steps; the lr and L0 schedules are laid out over these."""
    lr: float = 1.28e-2
    """Peak learning rate (Gao et al. 2025, App.: 1.28e-2)."""
    warmup: float = 0.01
    """Fraction of steps of linear warmup (Gao et al. 2025, App.: 1%)."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices (Gao et al. 2025, App.: 0.1)."""
    adam_eps: float = 0.1
    """Adam epsilon (Gao et al. 2025, App.: 0.1, large because gradients are RMS-normalised)."""
    seed: int = 0
    """Seeds the initialisation and the batch sampler."""
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Matrix products in the forward and backward pass: `bfloat16` autocast (float32 master weights,
    optimizer state, L0 projection, loss and validation), `float32`, or `auto`: bfloat16 where the
    hardware multiplies it natively (AMX or AVX512-BF16 CPUs, CUDA GPUs with bf16), else float32."""
    eval_every: int = 200
    """Steps between validation-loss measurements."""
    val_windows: int = 128
    """Validation windows of ctx tokens (fixed, evenly spaced over the validation split)."""
    checkpoint_every: int = 500
    """Steps between checkpoints."""
    target_val_loss: float | None = None
    """Stop at the first validation measurement at or below this loss (to match a twin)."""
    stop_after: int | None = None
    """Stop (with a checkpoint) once this many steps are done, as an interruption would."""
    keep_checkpoints: bool = False
    """Also keep every checkpoint as checkpoint-STEP.pt (to pick a dense twin's stopping point)."""
    resume: bool = False
    """Continue from out_dir/checkpoint.pt."""
    finish: bool = False
    """With resume: write the final model from the checkpoint as it stands, training no further
    (for a run that must stop before max_steps; the card then says so)."""
    threads: int | None = None
    """torch intra-op threads; None leaves torch's default."""
    quiet: bool = False
    """Hide the progress bar."""
    command: str | None = None
    """The command line that started the run, for the model card."""
