"""Strict loading of released-format weights (`final_model.pt` or `model.safetensors`) into SparseGPT.

The official loader uses `load_state_dict(strict=False)`, which silently drops any key that does not
fit: a sink logit, a renamed layer, a whole block. Here every missing, unexpected or mis-shaped key is
an error that lists them.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from circuitbench.errors import CheckpointError
from circuitbench.models.config import GPTConfig
from circuitbench.models.sparse_gpt import SparseGPT

log = logging.getLogger(__name__)

WEIGHT_FILES = ("final_model.pt", "model.safetensors")
# The official non-flash attention registers a causal-mask buffer `attn.bias`; it holds no weights.
_CAUSAL_BUFFER = re.compile(r"transformer\.h\.\d+\.attn\.bias")


def find_weights(directory: Path) -> Path:
    """Return the weight file of a model directory.

    Raises:
        CheckpointError: when no weight file exists, naming the files looked for and found.
    """
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    raise CheckpointError(
        f"{directory}: no weights found; expected one of {', '.join(WEIGHT_FILES)}. "
        f"Files present: {', '.join(found) or '(none)'}"
    )


def _first_line(err: BaseException) -> str:
    """The first line of a foreign error's text, at most 200 characters (torch's and pickle's run to pages)."""
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else ""


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a plain state dict from a torch or safetensors file, safely.

    Raises:
        CheckpointError: when the file is truncated, corrupt, or not a flat dict of tensors.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({type(err).__name__}: {_first_line(err)}). The file "
            "is truncated, corrupt, or not a weights-only torch/safetensors file; download or copy it again."
        ) from err
    except Exception as err:  # safetensors raises its own SafetensorError
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(err).__name__}: {_first_line(err)}); "
                              "the file is truncated or corrupt: download or copy it again") from err
    if not isinstance(sd, dict):
        raise CheckpointError(
            f"{path}: expected a flat state dict of tensors (name -> tensor), got {type(sd).__name__}"
        )
    bad = sorted(str(k) for k, v in sd.items() if not isinstance(v, Tensor))
    if bad:
        nested = [str(k) for k, v in sd.items()
                  if isinstance(v, dict) and v and all(isinstance(t, Tensor) for t in v.values())]
        hint = (f" The weights look nested under {nested[0]!r}: save that entry alone, e.g. "
                f"torch.save(torch.load(path)[{nested[0]!r}], 'final_model.pt')." if nested else "")
        shown = ", ".join(repr(k) for k in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(f"{path}: expected a flat state dict of tensors (name -> tensor); not tensors: "
                              f"{shown}.{hint}")
    return dict(sd)


def load_weights(model: SparseGPT, sd: dict[str, Tensor], source: Path) -> None:
    """Copy a state dict into the model, refusing any key that is missing, unexpected or mis-shaped.

    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped key.
    """
    cfg: GPTConfig = model.config
    sd = {k: v for k, v in sd.items() if not _CAUSAL_BUFFER.fullmatch(k)}
    if "final_logits_bias" not in sd:
        # Older released checkpoints predate this buffer; the official loader fills zeros the same way.
        log.info("%s: no final_logits_bias; using zeros as the official loader does", source)
        sd["final_logits_bias"] = torch.zeros(cfg.vocab_size)
    if cfg.tied_unembed:
        _tie(sd, source)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)}, config expects {tuple(expected[k].shape)}"
        for k in set(sd) & set(expected)
        if sd[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        lines = [f"{source}: the checkpoint does not match its config."]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if shapes:
            lines.append(f"  wrong shapes ({len(shapes)}): {'; '.join(shapes)}")
        lines.append("  Check that beeg_config.json belongs to these weights (n_layer, d_model, "
                     "d_head, d_mlp, sink, enable_bigram_table, tied_unembed, bias).")
        raise CheckpointError("\n".join(lines))
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            tensor.copy_(sd[name].to(tensor.dtype))


def _tie(sd: dict[str, Tensor], source: Path) -> None:
    # A tied model's state dict names the shared matrix twice; checkpoints may hold either or both.
    a, b = sd.get("transformer.wte.weight"), sd.get("lm_head.weight")
    if a is None and b is not None:
        sd["transformer.wte.weight"] = b
    elif b is None and a is not None:
        sd["lm_head.weight"] = a
    elif a is not None and b is not None and (a.shape != b.shape or not torch.equal(a, b)):
        raise CheckpointError(
            f"{source}: tied_unembed is true but transformer.wte.weight and lm_head.weight differ; "
            "set tied_unembed to false in beeg_config.json."
        )


def save_checkpoint(model: SparseGPT, directory: Path, safetensors: bool = False) -> Path:
    """Write `beeg_config.json` and the weights in the released format, atomically.

    Tied weights are written under both names, as the official model's state dict has them.

    Returns:
        The weight file's path.
    """
    import json
    import os
    import tempfile

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = model.config.model_dump(exclude_defaults=False)
    target = directory / ("model.safetensors" if safetensors else "final_model.pt")
    for path, write in (
        (directory / "beeg_config.json", lambda f: f.write(json.dumps(config, indent=1).encode())),
        (target, lambda f: _write_weights(sd, f, safetensors)),
    ):
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return target


def _write_weights(sd: dict[str, Tensor], f: object, safetensors: bool) -> None:
    if safetensors:
        from safetensors.torch import save

        # safetensors refuses shared storage; tied weights become two copies of the same values.
        f.write(save({k: v.clone() for k, v in sd.items()}))  # type: ignore[attr-defined]
    else:
        torch.save(sd, f)  # type: ignore[arg-type]
