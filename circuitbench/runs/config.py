"""`RunConfig` (what `circuitbench run` was asked) and its expansion into units."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from circuitbench.circuits.methods import canonical_name, get_method, method_hyperparameters
from circuitbench.protocols import ModelAdapter
from circuitbench.results.unit import ModelRef, Unit, UnitSettings


class RunOptions(BaseModel):
    """How a run loads its model and where it writes: settings that change no number.

    Shared by `RunConfig` and sweep files.
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    def options(self) -> dict[str, Any]:
        """These options alone, by field name."""
        return {name: getattr(self, name) for name in RunOptions.model_fields}

    revision: str | None = None
    """Hub revision (branch, tag or commit) when the model is a Hub id."""
    trust_remote_code: bool = False
    """Let a Hub repository's own model code run (--trust-remote-code); never implied."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """The model's dtype (recorded in every unit)."""
    out: Path = Path("results")
    """Results directory."""
    eval_batch: int = 256
    """Examples per forward pass when scoring circuits; bounds memory (GPU: raise it; numbers unchanged)."""


class RunConfig(UnitSettings, RunOptions):
    """What `circuitbench run` does: one model, its tasks, one method and seed, and the unit settings.

    A sweep is a list of these (`circuitbench.runs.sweep`); `run` is a sweep of one.
    """

    model_config = ConfigDict(extra="forbid", frozen=False, use_attribute_docstrings=True)

    model: str = "tiny-sparse"
    """Bundled name, model directory, Hub id, or FILE.py:FUNCTION / module:FUNCTION."""
    saes: list[str] = Field(default_factory=list)
    """SAE directories or Hub ids to splice into the model (`--sae`); its sites become their latents."""
    tasks: list[str] = Field(default_factory=lambda: ["all"])
    """Task names (NAME:inverted too), spec files, or `all`."""
    method: str = "learned_mask"
    """Registry name of the method."""
    method_kwargs: dict[str, Any] = Field(default_factory=dict)
    """The method's hyperparameters (the rest take their defaults)."""
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    """Seeds the method and the search subset (0 ... 2**63 - 1: units store it as a signed 64-bit integer)."""
    force: bool = False
    """Recompute units already in `out`."""
    show_progress: bool = True
    """Show progress bars."""


def validate(cfg: RunConfig) -> None:
    """Check every setting before any compute: each problem is a one-line error naming the flag.

    Raises:
        CircuitbenchError: for a non-finite or non-positive target, a bad accuracy bar or example count,
            an unknown task, method or hyperparameter, a device string torch cannot parse, or an `--out`
            that is a file or cannot be written.
    """
    import math
    import os

    from circuitbench.errors import CircuitbenchError

    if not (math.isfinite(cfg.target_loss) and cfg.target_loss > 0):
        raise CircuitbenchError(f"--target-loss {cfg.target_loss}: give a finite loss above 0 (the paper uses 0.15)")
    if cfg.target_loss >= math.log(2):
        raise CircuitbenchError(
            f"--target-loss {cfg.target_loss}: at or above chance (ln 2 = 0.693 per example, the loss of a 50/50 "
            "guess), so every circuit, even one of no nodes, would meet it and be called solved; give a target "
            "below 0.693 (the paper uses 0.15)")
    if not (math.isfinite(cfg.min_accuracy) and 0 <= cfg.min_accuracy <= 1):
        raise CircuitbenchError(f"--min-accuracy {cfg.min_accuracy}: give an accuracy in [0, 1] (the default "
                                "0.9; at or below 0.5, chance, tasks the model does not solve are pruned too)")
    if cfg.eval_batch < 1:
        raise CircuitbenchError(f"--eval-batch {cfg.eval_batch}: give a positive number of examples per pass")
    if cfg.search_examples < 2:
        raise CircuitbenchError(f"search_examples {cfg.search_examples}: the search needs at least one pair (2)")
    resolve_tasks(cfg.tasks)
    get_method(cfg.method, **cfg.method_kwargs)
    if cfg.level == "edges":
        from circuitbench.circuits.edge_level import EDGE_ABLATIONS, NODE_ONLY_METHODS

        if cfg.ablation not in EDGE_ABLATIONS:
            raise CircuitbenchError(f"--level edges --ablation {cfg.ablation}: edge-level circuits take "
                                    f"{', '.join(EDGE_ABLATIONS)} ablation; use one of those, or --level nodes")
        if cfg.method in NODE_ONLY_METHODS:
            raise CircuitbenchError(f"--level edges --method {cfg.method}: {cfg.method} scores nodes only; at the "
                                    "edge level use eap, eap_ig, activation_patching, learned_mask or random")
    check_device(cfg.device)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise CircuitbenchError(f"--out {out}: is a file; give a directory for the results")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CircuitbenchError(f"--out {out}: {probe} is not writable; choose another --out")
    from circuitbench.files import check_not_an_input
    from circuitbench.models.hub import model_folder

    folder = model_folder(cfg.model)
    if folder is not None:  # results (and --force's recomputed units) never land inside the model they measure
        check_not_an_input(out, "--out", [("--model", folder)])


def resolve_tasks(names: list[str]) -> list[str]:
    """Expand 'all', load spec files (`path/to/spec.yaml`), and check every name (NAME:inverted included)."""
    from circuitbench.tasks.load import spec_names, use_task

    out: list[str] = []
    for name in names:
        if name == "all":
            out.extend(spec_names())
        else:
            out.append(use_task(name))  # raises TaskError with a did-you-mean
    return list(dict.fromkeys(out))


def model_ref(name: str, adapter: ModelAdapter) -> ModelRef:
    """How units name a loaded model."""
    prov = adapter.provenance
    return ModelRef(name=name, weights_sha256=prov.get("weights_sha256"),
                    revision=prov.get("commit") or prov.get("revision"),
                    sae_weights_sha256=tuple(s["weights_sha256"] for s in prov.get("saes") or ()))


def check_device(device: str | None) -> None:
    """Refuse a `--device` torch cannot parse or this machine does not have (None and `auto` pass).

    Raises:
        CircuitbenchError: naming the value and what to use instead.
    """
    import torch

    from circuitbench.errors import CircuitbenchError

    if device is None or str(device) == "auto":
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError) as err:
        raise CircuitbenchError(f"--device {device}: not a torch device ({err}); use auto, cpu or cuda") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise CircuitbenchError(f"--device {device}: this machine has no CUDA device torch can use; "
                                "use --device cpu (or auto)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise CircuitbenchError(f"--device {device}: MPS is not available here; use --device cpu (or auto)")
    if kind not in ("cpu", "cuda", "mps"):
        raise CircuitbenchError(f"--device {device}: circuitbench runs on cpu, cuda or mps")


def make_units(cfg: RunConfig, model: ModelRef, dtype: str, device: str = "cpu") -> list[Unit]:
    """One unit per task of the config, with the method's full (validated) hyperparameters.

    A `precision` of `auto` is resolved for `device` here, so a unit records the precision it runs at
    (bfloat16 on an AMX CPU or a GPU, float32 elsewhere) and a float32 unit is never reused for bfloat16.
    """
    from circuitbench.hardware import resolve_precision
    from circuitbench.tasks.load import get_task

    method = get_method(cfg.method, **cfg.method_kwargs)
    kwargs = method_hyperparameters(method, cfg.method)
    if kwargs.get("precision") == "auto":
        kwargs["precision"] = resolve_precision("auto", device)
    return [Unit(model=model, task=task, task_hash=get_task(task).task_hash, method=canonical_name(cfg.method),
                 method_kwargs=kwargs, seed=cfg.seed, dtype=dtype, **cfg.settings())
            for task in resolve_tasks(cfg.tasks)]
