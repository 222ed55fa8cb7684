"""Model resolution: a bundled short name or a local directory becomes a `ModelAdapter`."""

from __future__ import annotations

import difflib
import logging
from importlib import resources
from pathlib import Path

import torch

from circuitbench.errors import ModelNotFoundError
from circuitbench.models.adapter import ModelAdapter
from circuitbench.models.native import CONFIG_FILE, load_native

log = logging.getLogger(__name__)


def bundled_models() -> dict[str, Path]:
    """Short name -> directory of every model shipped in `baselines/models/`."""
    root = Path(str(resources.files("circuitbench.baselines"))) / "models"
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / CONFIG_FILE).is_file()}


def resolve_model_dir(path_or_id: str) -> Path:
    """Find the directory behind a model argument: a local path first, then a bundled name.

    Raises:
        ModelNotFoundError: naming what was tried, the bundled names and the closest match.
    """
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelNotFoundError(f"{path_or_id}: is a file; pass the model's directory instead")
    bundled = bundled_models()
    if path_or_id in bundled:
        return bundled[path_or_id]
    close = difflib.get_close_matches(path_or_id, list(bundled), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ModelNotFoundError(
        f"{path_or_id}: no such directory and no bundled model of that name.{hint} "
        f"Bundled models: {', '.join(bundled) or '(none)'}."
    )


def load_model(
    path_or_id: str,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
) -> ModelAdapter:
    """Load a model by bundled name or directory; see `circuitbench.load_model`.

    Raises:
        ModelNotFoundError: when nothing matches, or the directory holds no known model format.
    """
    directory = resolve_model_dir(path_or_id)
    if (directory / CONFIG_FILE).is_file():
        if revision is not None:
            log.warning("revision=%s ignored: %s is a local directory", revision, directory)
        return load_native(directory, device=device, dtype=dtype, name=_display_name(path_or_id, directory))
    found = sorted(p.name for p in directory.iterdir())
    raise ModelNotFoundError(
        f"{directory}: not a model directory this version can load. A released circuit-sparsity model "
        f"has {CONFIG_FILE} and final_model.pt (or model.safetensors). Files present: "
        f"{', '.join(found) or '(none)'}."
    )


def _display_name(arg: str, directory: Path) -> str:
    return arg if arg in bundled_models() else directory.name
