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
    lr_decay: float = 1.0
    """Fraction of the steps after warmup, at the end, over which the learning rate decays linearly to zero;
    before it the rate holds at its peak. 1: decay over all of them (Gao et al. 2025). 0.1: a long plateau
    and a short decay, so a run stopped on the plateau is finished by `--resume --finish` and a short run of
    its own from that model (`--init-from OUT --warmup 0 --lr-decay 1 --anneal-end 0`)."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices (Gao et al. 2025, App.: 0.1)."""
    adam_eps: float = 0.1
    """Adam epsilon (Gao et al. 2025, App.: 0.1, large because gradients are RMS-normalised)."""
    init_from: Path | None = None
    """Start from this model's weights (a model directory of the same shape and tokenizer), e.g. the
    trained dense twin: dense-to-sparse training. The L0 budget (and, with anneal_afrac, the AbsTopK
    fraction) then anneal from the starting model down to the targets."""
    anneal_afrac: bool = False
    """Anneal the AbsTopK fraction from 1 (no activation sparsity) to afrac on the L0 schedule, so a
    dense starting model is not cut to afrac in one step; ignored with dense."""
    anneal_end: float = 0.5
    """Fraction of training at which the L0 budget (and an annealed afrac) reaches its target
    (Gao et al. 2025's schedule: 0.5); 0 holds the targets from the first step (continuing a sparse model)."""
    distill_from: Path | None = None
    """A teacher model directory (same tokenizer): the loss adds distill_coef x KL(teacher || model)
    of the next-token distributions. The teacher's forward pass runs every step."""
    distill_coef: float = 1.0
    """Weight of the distillation KL term."""
    bridge_to: Path | None = None
    """A frozen dense model directory (same tokenizer, same blocks): train bridges to it jointly with this
    model (Gao et al. 2025's recipe): the loss adds the bridges' normalised MSE both ways and the KL of each
    hybrid pass to the dense model's output, at every residual location; the bridges are written to
    OUT/bridges (`circuitbench bridge eval|steer` read them)."""
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
    force: bool = False
    """Train into an out_dir that already holds a model, replacing it (its old card is removed first)."""
    threads: int | None = None
    """torch intra-op threads; None leaves torch's default."""
    device: str = "auto"
    """Where the model trains: `cpu`, `cuda`, `cuda:N`, or `auto` (CUDA when available, else the CPU). Batches
    are drawn and checkpoints and models written on the CPU, so a run started on one device resumes on another
    (it then continues within float rounding of an uninterrupted run, not bit for bit)."""
    quiet: bool = False
    """Hide the progress bar."""
    command: str | None = None
    """The command line that started the run, for the model card."""


def check(cfg: TrainConfig) -> None:
    """Refuse shapes and schedules that cannot train, before anything is read or written.

    Raises:
        CircuitbenchError: one line naming every flag at fault and what would work.
    """
    from circuitbench.errors import CircuitbenchError

    problems = []
    for flag, value in (("--n-layer", cfg.n_layer), ("--d-model", cfg.d_model), ("--n-head", cfg.n_head),
                        ("--batch-size", cfg.batch_size), ("--max-steps", cfg.max_steps)):
        if value < 1:
            problems.append(f"{flag} {value}: give a positive number")
    if cfg.d_mlp is not None and cfg.d_mlp < 1:
        problems.append(f"--d-mlp {cfg.d_mlp}: give a positive width (or leave it out for 4 x d_model)")
    if cfg.d_model >= 1 and cfg.n_head >= 1 and cfg.d_model % cfg.n_head:
        divisors = [h for h in range(1, min(cfg.d_model, 64) + 1) if cfg.d_model % h == 0]
        near = sorted(divisors, key=lambda h: abs(h - cfg.n_head))[:2]
        problems.append(f"--n-head {cfg.n_head} does not divide --d-model {cfg.d_model} (each head gets "
                        f"d_model / n_head channels): use --n-head {' or '.join(map(str, sorted(near)))}")
    if cfg.ctx < 2:
        problems.append(f"--ctx {cfg.ctx}: a context of at least 2 tokens is needed")
    if not cfg.lr > 0:
        problems.append(f"--lr {cfg.lr}: give a learning rate above 0")
    if not 0 < cfg.weight_density <= 1:
        problems.append(f"--weight-density {cfg.weight_density}: give a fraction in (0, 1]")
    if not 0 < cfg.afrac <= 1:
        problems.append(f"--afrac {cfg.afrac}: give a fraction in (0, 1]")
    if not 0 <= cfg.warmup < 1:
        problems.append(f"--warmup {cfg.warmup}: give a fraction of training in [0, 1)")
    if not 0 < cfg.lr_decay <= 1:
        problems.append(f"--lr-decay {cfg.lr_decay}: give a fraction in (0, 1] of the steps after warmup (1: "
                        "decay over all of them; 0.1: hold the peak, then decay over the last tenth)")
    if not 0 <= cfg.anneal_end <= 1:
        problems.append(f"--anneal-end {cfg.anneal_end}: give a fraction of training in [0, 1] (0: at the "
                        "target from the first step, for a run that starts from a sparse model)")
    if cfg.distill_coef < 0 or cfg.distill_coef != cfg.distill_coef:
        problems.append(f"--distill-coef {cfg.distill_coef}: give a weight >= 0")
    for flag, path in (("--init-from", cfg.init_from), ("--distill-from", cfg.distill_from),
                       ("--bridge-to", cfg.bridge_to)):
        if path is not None and not (Path(path) / "beeg_config.json").is_file():
            problems.append(f"{flag} {path}: not a model directory (no beeg_config.json); give a directory "
                            "written by circuitbench train")
    try:
        from circuitbench.models.native import resolve_device

        resolve_device(cfg.device)
    except (RuntimeError, CircuitbenchError) as err:  # torch's own parse error, or CUDA asked for and absent
        problems.append(str(err) if isinstance(err, CircuitbenchError) else
                        f"--device {cfg.device}: not a torch device; use cpu, cuda, cuda:N or auto")
    if problems:
        raise CircuitbenchError("; ".join(problems))
