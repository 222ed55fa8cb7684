"""Loading a transformers model directory (config.json, weights, tokenizer.json) as an `HFAdapter`.

Only local files are read (`local_files_only`): the Hub's part is `circuitbench.models.hub`'s. The weights
are hashed for provenance, and a checkpoint that lacks parameters the model needs is refused rather than
initialised randomly.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from circuitbench.errors import CheckpointError, CircuitbenchError, ConfigError
from circuitbench.models.hf import ARCHITECTURES, HFAdapter, unsupported_parts, unsupported_type
from circuitbench.models.native import file_sha256, resolve_device, resolve_dtype
from circuitbench.models.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'circuitbench[hf]'"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a transformers model directory (safetensors or pytorch_model*.bin), sorted."""
    found = sorted({p for pattern in WEIGHT_PATTERNS for p in Path(directory).glob(pattern) if p.is_file()})
    safetensors = [p for p in found if p.suffix == ".safetensors"]
    return safetensors or found  # transformers prefers safetensors when both are present


def weights_sha256(files: list[Path]) -> str:
    """sha256 of one weight file; for a sharded model, of the lines "<file name> <sha256>" in name order."""
    if len(files) == 1:
        return file_sha256(files[0])
    lines = "".join(f"{p.name} {file_sha256(p)}\n" for p in sorted(files, key=lambda p: p.name))
    return hashlib.sha256(lines.encode()).hexdigest()


def _read_config(directory: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _known_model_types() -> set[str] | None:
    """The model types transformers knows, or None when it is not installed."""
    try:
        from transformers import CONFIG_MAPPING
    except ImportError:
        return None
    return set(CONFIG_MAPPING.keys())


def is_transformers_dir(directory: Path) -> bool:
    """Whether a directory holds a transformers model: known config.json `model_type`, and weights.

    Without transformers installed, the model types circuitbench has layouts for count, so that loading
    reports the missing extra instead of an unknown format.
    """
    raw = _read_config(directory)
    if raw is None or not isinstance(raw.get("model_type"), str) or not weight_files(directory):
        return False
    known = _known_model_types()
    return raw["model_type"] in (ARCHITECTURES if known is None else known)


def _from_pretrained_dtype_kwarg() -> str:
    import transformers
    from packaging.version import Version

    # transformers 4.56 renamed `torch_dtype` to `dtype`
    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def load_transformers(
    directory: Path,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    name: str | None = None,
    trust_remote_code: bool = False,
    revision_info: dict[str, Any] | None = None,
) -> HFAdapter:
    """Load a local transformers causal-LM directory (config.json, weights, tokenizer.json) as an adapter.

    Args:
        directory: the model directory (e.g. from `save_pretrained` or a Hub snapshot).
        device: "auto", "cpu", "cuda" or "cuda:N".
        dtype: torch dtype or its name; None means float32.
        name: display name (default: the directory's name).
        trust_remote_code: let transformers run the directory's own modeling code.
        revision_info: Hub facts to record in provenance (repo id, revision, commit).

    Returns:
        The adapter, with provenance: model path, weights sha256, format "transformers", model_type.

    Raises:
        CircuitbenchError: when transformers is not installed.
        ConfigError: when config.json is unreadable or its model_type has no hook layout.
        CheckpointError: when the weights are missing, unreadable, or lack parameters the model needs.
        TokenizerError: when tokenizer.json is unreadable or does not fit the model's vocabulary.
    """
    directory = Path(directory)
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as err:
        raise CircuitbenchError(f"{directory}: loading a transformers model needs transformers; {INSTALL_HINT}") \
            from err
    model_type = _check_config(directory)
    files = weight_files(directory)
    if not files:
        raise CheckpointError(f"{directory}: no weights (model.safetensors or pytorch_model.bin) beside config.json")
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    try:
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True, trust_remote_code=trust_remote_code, output_loading_info=True,
            **{_from_pretrained_dtype_kwarg(): dt},
        )
        model, info = loaded
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{directory}: transformers could not load this model ({type(err).__name__}: "
                              f"{err}); check config.json and the weight files.") from err
    _check_loading_info(directory, info)
    model = model.to(device=dev, dtype=dt)
    tokenizer = load_tokenizer(directory, model.config.vocab_size)
    provenance: dict[str, Any] = {
        "model_path": str(directory.resolve()),
        "weights_sha256": weights_sha256(files),
        "weight_files": [p.name for p in files],
        "format": "transformers",
        "model_type": model_type,
        **(revision_info or {}),
    }
    return HFAdapter(model, tokenizer, name or directory.name, provenance)


def _check_config(directory: Path) -> str:
    """The config.json's model_type, once it is a layout circuitbench hooks without approximation.

    Raises:
        ConfigError: for a missing or unreadable config.json, an unknown model_type, or parts refused.
    """
    raw = _read_config(directory)
    if raw is None:
        raise ConfigError(f"{directory / 'config.json'}: missing or not a JSON object; a transformers model "
                          "directory needs the config.json written by save_pretrained.")
    model_type = raw.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ConfigError(f"{directory / 'config.json'}: {unsupported_type(model_type)}")
    refused = unsupported_parts(SimpleNamespace(**raw))
    if refused is not None:
        raise ConfigError(f"{directory / 'config.json'}: {refused}; circuitbench does not approximate it.")
    return str(model_type)


def _check_loading_info(directory: Path, info: dict[str, Any]) -> None:
    """Refuse weights that lack parameters (transformers would initialise them randomly); warn of extra ones.

    Raises:
        CheckpointError: naming the first missing parameters.
    """
    if info.get("missing_keys"):
        raise CheckpointError(
            f"{directory}: the weights lack {len(info['missing_keys'])} parameters the model needs "
            f"({', '.join(sorted(info['missing_keys'])[:10])}); transformers would initialise them randomly. "
            "Use the weights that belong to this config.json."
        )
    if info.get("unexpected_keys"):
        log.warning("%s: ignoring weights the model does not use: %s", directory,
                    ", ".join(sorted(info["unexpected_keys"])[:10]))
