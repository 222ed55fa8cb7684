"""A training run's resumable state on disk: the checkpoint, written atomically, split when large, read back.

A checkpoint holds the model, the optimizer, the batch sampler's generator, the step, the loss curve and the
configuration that made it. Up to `PART_BYTES` it is one file, `checkpoint.pt`. A larger one (a model
with a 2048 x 2048 bigram table and Adam's two moments is 62 MB) is written as parts of at most
`PART_BYTES` in `checkpoint-split-STEP/` plus a manifest, `checkpoint.split.json`, holding each part's
sha256: every file then fits a repository's file limit, so a long run's checkpoint can be committed and
resumed on another machine, byte for byte. The manifest is written last and atomically, so an interrupted
write leaves the previous checkpoint readable; a part that does not match its hash is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from circuitbench.errors import CircuitbenchError

CHECKPOINT = "checkpoint.pt"
MANIFEST = "checkpoint.split.json"
PART_BYTES = 30 * 2**20
"""The largest file a checkpoint is written as (30 MiB: under a 32 MB repository file limit)."""


def save_atomic(obj: Any, path: Path) -> None:
    """`torch.save` to a temporary file, then rename: the file is whole or absent."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_bytes_atomic(data: bytes, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_checkpoint(state: dict[str, Any], out: Path, keep: bool = False) -> None:
    """Write a run's state to `out`: `checkpoint.pt`, or split parts and their manifest when it is large.

    Args:
        state: What `load_checkpoint` returns: model, optimizer, generator, step, history, elapsed_s, config.
        out: The run's directory.
        keep: Also keep this state as `checkpoint-STEP.pt` (one file, whatever its size; for scoring).
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    out = Path(out)
    if len(data) <= PART_BYTES:
        _write_bytes_atomic(data, out / CHECKPOINT)
        _remove_split(out)
    else:
        _write_split(data, out, int(state["step"]))
        (out / CHECKPOINT).unlink(missing_ok=True)  # the split checkpoint is the newer one now
    if keep:
        _write_bytes_atomic(data, out / f"checkpoint-{state['step']}.pt")


def _write_split(data: bytes, out: Path, step: int) -> None:
    folder = out / f"checkpoint-split-{step}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    parts = []
    for k, start in enumerate(range(0, len(data), PART_BYTES)):
        chunk = data[start : start + PART_BYTES]
        name = f"part-{k:03d}.bin"
        (folder / name).write_bytes(chunk)
        digest = hashlib.sha256(chunk).hexdigest()
        parts.append({"file": f"{folder.name}/{name}", "bytes": len(chunk), "sha256": digest})
    manifest = {"step": step, "bytes": len(data), "parts": parts}
    _write_bytes_atomic((json.dumps(manifest, indent=2) + "\n").encode(), out / MANIFEST)
    for old in out.glob("checkpoint-split-*"):
        if old.is_dir() and old.name != folder.name:
            shutil.rmtree(old)


def _remove_split(out: Path) -> None:
    (out / MANIFEST).unlink(missing_ok=True)
    for old in out.glob("checkpoint-split-*"):
        if old.is_dir():
            shutil.rmtree(old)


def remove_checkpoints(out: Path) -> None:
    """Delete every checkpoint of a run (`train --force` replacing a model)."""
    for old in Path(out).glob("checkpoint*.pt"):
        old.unlink()
    _remove_split(Path(out))


def has_checkpoint(out: Path) -> bool:
    """Whether `out` holds a checkpoint to resume (either form)."""
    return (Path(out) / CHECKPOINT).is_file() or (Path(out) / MANIFEST).is_file()


def checkpoint_name(out: Path) -> Path:
    """The file that names the checkpoint in messages: the manifest of a split one, else `checkpoint.pt`."""
    single, manifest = Path(out) / CHECKPOINT, Path(out) / MANIFEST
    return manifest if manifest.is_file() and not single.is_file() else single


def load_checkpoint(out: Path) -> dict[str, Any]:
    """A run's state, from `checkpoint.pt` or from its split parts (the newer where both are present).

    Raises:
        CircuitbenchError: when there is none, or a part is missing or does not match its recorded hash.
    """
    out = Path(out)
    single, manifest = out / CHECKPOINT, out / MANIFEST
    if not single.is_file() and not manifest.is_file():
        raise CircuitbenchError(f"{single}: no checkpoint to resume from; drop --resume.")
    if single.is_file() and (not manifest.is_file() or single.stat().st_mtime >= manifest.stat().st_mtime):
        state: dict[str, Any] = torch.load(single, weights_only=True, map_location="cpu")
        return state
    joined: dict[str, Any] = torch.load(io.BytesIO(_read_split(manifest)), weights_only=True,
                                             map_location="cpu")
    return joined


def _read_split(manifest: Path) -> bytes:
    try:
        spec = json.loads(manifest.read_text())
        chunks = []
        for part in spec["parts"]:
            chunk = (manifest.parent / part["file"]).read_bytes()
            if hashlib.sha256(chunk).hexdigest() != part["sha256"]:
                raise CircuitbenchError(f"{manifest.parent / part['file']}: does not match the sha256 in {manifest}; "
                                        "the checkpoint part is corrupt or from another write")
            chunks.append(chunk)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CircuitbenchError(f"{manifest}: unreadable split checkpoint ({err})") from None
    return b"".join(chunks)


def split_existing(out: Path) -> Path:
    """Rewrite an existing single-file `checkpoint.pt` in the split form (byte for byte); returns the manifest."""
    single = Path(out) / CHECKPOINT
    data = single.read_bytes()
    step = int(torch.load(io.BytesIO(data), weights_only=True)["step"])
    _write_split(data, Path(out), step)
    single.unlink()
    return Path(out) / MANIFEST
