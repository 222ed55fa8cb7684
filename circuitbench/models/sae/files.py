"""SAELens-format files: `cfg.json` in either layout (before and after SAELens 6), the weights, Hub ids.

Every option circuitbench does not implement is refused, naming the file, the field and the fix.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuitbench.errors import CheckpointError, ConfigError, ModelNotFoundError
from circuitbench.models.checkpoint import read_state_dict
from circuitbench.models.native import file_sha256
from circuitbench.models.sae.autoencoder import ARCHITECTURES, CFG_FILE, DTYPES, SAE, WEIGHTS_FILE

log = logging.getLogger(__name__)


def _cfg_error(path: Path | str, field: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{path}: {field}: {problem}; {fix}")


def _positive_int(cfg: Mapping[str, Any], key: str, path: Path | str) -> int:
    if key not in cfg:
        raise _cfg_error(path, key, "missing", "SAELens writes d_in and d_sae into every cfg.json")
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _cfg_error(path, key, f"{value!r} is not a positive integer", "fix the value")
    return value


def _read_cfg(path: Path) -> dict[str, Any]:
    """Parse cfg.json into the fields circuitbench uses; refuse options it does not implement."""
    return parse_cfg(_read_json(path), path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        found = sorted(p.name for p in path.parent.iterdir()) if path.parent.is_dir() else []
        raise ModelNotFoundError(
            f"{path}: missing; an SAELens SAE directory has {CFG_FILE} and {WEIGHTS_FILE}. "
            f"Files present: {', '.join(found) or '(none)'}"
        ) from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object, found {type(raw).__name__}")
    return raw


def parse_cfg(raw: Mapping[str, Any], path: Path | str) -> dict[str, Any]:
    """The fields circuitbench uses from an SAELens config (any layout); `path` names it in errors.

    Refuses options circuitbench does not implement, naming the field and the fix.
    """
    meta = raw.get("metadata") or raw.get("meta") or {}  # SAELens >= 6 keeps hook facts here
    if not isinstance(meta, dict):
        raise _cfg_error(path, "metadata", "expected an object", "fix the value")

    def pick(*keys: str) -> Any:
        for key in keys:
            for where in (raw, meta):
                if where.get(key) is not None:
                    return where[key]
        return None

    hook = pick("hook_name", "hook_point")
    if not isinstance(hook, str) or not hook:
        raise _cfg_error(path, "hook_name", "missing" if hook is None else f"{hook!r} is not a string",
                         "name the hook point, e.g. blocks.0.hook_resid_post or 0.resid_mid")
    d_in, d_sae = _positive_int(raw, "d_in", path), _positive_int(raw, "d_sae", path)
    arch, k = _architecture(raw, path, d_sae)
    _refuse_unimplemented(raw, path, hook, pick("hook_head_index") is not None)
    apply_b_dec = raw.get("apply_b_dec_to_input", True)
    if not isinstance(apply_b_dec, bool):
        raise _cfg_error(path, "apply_b_dec_to_input", f"{apply_b_dec!r} is not true or false", "fix the value")
    dtype = str(raw.get("dtype", "float32")).removeprefix("torch.")
    if dtype not in DTYPES:
        raise _cfg_error(path, "dtype", f"{dtype!r} is not a known dtype", f"use one of {', '.join(sorted(DTYPES))}")
    version = str(pick("sae_lens_version") or "")
    pre6 = not version or not version[:1].isdigit() or int(version.split(".")[0]) < 6
    bos = pick("prepend_bos")
    if bos is None:
        bos = pre6 and "metadata" not in raw  # SAELens's default for configs written before 6.0
    if not isinstance(bos, bool):
        raise _cfg_error(path, "prepend_bos", f"{bos!r} is not true or false", "fix the value")
    processing = pick("model_from_pretrained_kwargs") or {}
    if not isinstance(processing, dict):
        raise _cfg_error(path, "model_from_pretrained_kwargs", "expected an object", "fix the value")
    model_name = pick("model_name")
    return dict(hook_name=hook, d_in=d_in, d_sae=d_sae, architecture=arch, k=k,
                apply_b_dec_to_input=apply_b_dec, model_name=str(model_name) if model_name else None,
                prepend_bos=bos, processing=processing)


def _architecture(raw: Mapping[str, Any], path: Path | str, d_sae: int) -> tuple[str, int | None]:
    """The architecture and, for TopK, k; with SAELens's own defaults for files written before 6.0."""
    arch = raw.get("architecture", "standard")
    act = raw.get("activation_fn_str", raw.get("activation_fn")) or "relu"
    k = raw.get("k")
    if arch == "standard" and act == "topk":  # before 6.0, TopK was an activation function
        arch = "topk"
    if arch == "topk" and k is None:
        kwargs = raw.get("activation_fn_kwargs") or {}
        k = kwargs.get("k") if isinstance(kwargs, dict) else None
    if arch not in ARCHITECTURES:
        raise _cfg_error(path, "architecture", f"{arch!r} is not supported",
                         f"circuitbench splices {', '.join(ARCHITECTURES)} SAEs")
    if arch != "topk" and act != "relu":
        raise _cfg_error(path, "activation_fn", f"{act!r} is not supported for {arch} SAEs", "use relu")
    if arch != "topk":
        return arch, None
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= d_sae:
        raise _cfg_error(path, "k", f"{k!r} is not an integer in 1..d_sae={d_sae}",
                         "TopK SAEs need k (or activation_fn_kwargs.k before SAELens 6)")
    return arch, k


def _refuse_unimplemented(raw: Mapping[str, Any], path: Path | str, hook: str, per_head: bool) -> None:
    """Refuse the options that change what the SAE computes and that circuitbench does not implement."""
    norm = raw.get("normalize_activations")
    if norm not in (None, False, "none"):
        raise _cfg_error(path, "normalize_activations", f"{norm!r} is not supported",
                         "fold the normalisation into the weights (SAELens: fold_activation_norm_scaling_factor) "
                         "and set it to \"none\"")
    for flag in ("finetuning_scaling_factor", "rescale_acts_by_decoder_norm"):
        if raw.get(flag):
            raise _cfg_error(path, flag, "true is not supported", "fold it into the weights and set it to false")
    if per_head:
        raise _cfg_error(path, "hook_head_index", "per-head SAEs are not supported",
                         "train the SAE on the whole attn.hook_z (all heads)")
    reshape = raw.get("reshape_activations") or "none"
    if reshape not in ("none", "hook_z") or (reshape == "hook_z" and not hook.endswith(("hook_z", "attn.y"))):
        raise _cfg_error(path, "reshape_activations", f"{reshape!r} is not supported at {hook}",
                         "only attn.hook_z SAEs are reshaped (circuitbench's attn.y is already flat)")


def load_sae(directory: Path | str) -> SAE:
    """Load one SAELens-format SAE directory (`cfg.json` + `sae_weights.safetensors`).

    Raises:
        ConfigError: for a missing or unsupported cfg.json field, naming the file and the field.
        CheckpointError: for missing, unexpected or mis-shaped weights.
        ModelNotFoundError: when the directory or its files do not exist.
    """
    directory = Path(directory)
    cfg = _read_cfg(directory / CFG_FILE)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelNotFoundError(f"{weights}: missing; an SAELens SAE directory has {CFG_FILE} and {WEIGHTS_FILE}")
    return build_sae(cfg, read_state_dict(weights), directory, str(weights), file_sha256(weights), str(directory))


def build_sae(cfg: dict[str, Any], sd: dict[str, Tensor], path: Path, where: str, sha: str, spec: str,
               origin: Mapping[str, Any] | None = None) -> SAE:
    """An `SAE` from parsed config fields and a state dict, refusing missing, unexpected or mis-shaped tensors."""
    sd = dict(sd)
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if cfg["architecture"] == "jumprelu":
        shapes["threshold"] = (d_sae,)
    # SAELens drops an all-ones `scaling_factor` on load; any other one is an unfolded scaling.
    if "scaling_factor" in sd and torch.equal(sd["scaling_factor"], torch.ones_like(sd["scaling_factor"])):
        del sd["scaling_factor"]
    missing, unexpected = sorted(set(shapes) - set(sd)), sorted(set(sd) - set(shapes))
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: a {cfg['architecture']} SAE has {', '.join(shapes)}; missing: {', '.join(missing) or '-'}; "
            f"unexpected: {', '.join(unexpected) or '-'}"
        )
    for key, shape in shapes.items():
        if tuple(sd[key].shape) != shape:
            raise CheckpointError(
                f"{where}: {key} has shape {list(sd[key].shape)}, but its config "
                f"(d_in={d_in}, d_sae={d_sae}) needs {list(shape)}"
            )
    t = {key: sd[key].float().contiguous() for key in shapes}
    return SAE(path, cfg["hook_name"], cfg["architecture"], t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"],
               cfg["apply_b_dec_to_input"], t.get("threshold"), cfg["k"], sha, cfg["model_name"],
               cfg["prepend_bos"], cfg["processing"], spec, dict(origin or {}))


def resolve_sae_dir(path_or_id: str) -> Path:
    """A local SAE directory, or a Hub id `owner/repo[/folder]` fetched with huggingface_hub (cfg + weights only).

    Respects HF_HUB_OFFLINE and the Hub cache variables, read at call time (as `models.hub` does).

    Raises:
        ModelNotFoundError: when neither a directory nor a fetchable Hub id.
    """
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelNotFoundError(f"--sae {path_or_id}: is a file; pass the SAE's directory (with {CFG_FILE})")
    parts = path_or_id.split("/")
    if len(parts) < 2 or path_or_id.startswith((".", "/", "~")) or not all(parts):
        raise ModelNotFoundError(f"--sae {path_or_id}: no such directory, and not a Hub id (owner/repo[/folder])")
    from huggingface_hub import snapshot_download

    from circuitbench.models.hub import hub_cache_dir, hub_offline

    repo, folder = "/".join(parts[:2]), "/".join(parts[2:])
    prefix = f"{folder}/" if folder else ""
    cache = hub_cache_dir()
    try:
        root = snapshot_download(repo, allow_patterns=[prefix + CFG_FILE, prefix + WEIGHTS_FILE], cache_dir=cache,
                                 local_files_only=hub_offline())
    except (OSError, ValueError) as err:  # huggingface_hub's errors derive from these
        raise ModelNotFoundError(
            f"--sae {path_or_id}: no such directory, and the Hub repo {repo} could not be fetched "
            f"({type(err).__name__}: {str(err)[:300]}). With HF_HUB_OFFLINE=1 it must be in the cache at {cache}."
        ) from err
    return Path(root) / folder
