"""Wraps any adapter and splices SAE latents in at named sites; SAELens-format loading; loss recovered.

An SAE spliced in at hook point h replaces the activation x there by

    decode(latents) + error,    latents = encode(x),    error = x - decode(encode(x)),

with the error computed from the original x, so that with every latent and the error kept the model's
logits are the base model's (up to float rounding). The latents of each splice are one node site
(`{h}.sae`, kind "sae_latent", width d_sae); its error is ONE node (`{h}.sae_error`, kind "sae_error",
width 1) whose gate spans the whole d_in error vector and whose ablation value is a d_in vector
(`Site.value_width`): zero ablation removes the error, mean ablation puts in its mean.

Sites and edges. An `SAEAdapter` exposes only the SAE sites (latents and errors) for pruning, as SAE
circuit work does (Marks et al. 2024, "Sparse Feature Circuits"); the base model's own sites run
unmasked. Where two consecutive splices lie on the residual stream (the later one at resid_in, resid_mid
or final_resid; the earlier one there too, or at a sublayer write), latent a of the first and latent b of
the second are joined by the direct path: a's decoder row writes into the stream that b's encoder column
reads, so their edge weight is (W_dec_a @ W_enc_b)[a, b] and `count_edges` counts the kept pairs with a
nonzero one. Paths through the sublayers between two splices, error nodes, and splices off the stream
(attn.hook_z, mlp.hook_post) have no edges: those would have to be read off the model's Jacobian, which
circuitbench does not estimate. SAE circuits are compared by nodes (`nodes_sae_latent`,
`nodes_sae_error`) and, where splices are adjacent, by these edges.

Matching the model. An SAE names the model it was trained on (`model_name`) and the TransformerLens
weight processing that model was loaded with (`model_from_pretrained_kwargs`); a model of another name
(compared through TransformerLens's aliases: "gpt2-small" is "gpt2") or with differently processed weights
at the SAE's hook point (`center_writing_weights`) is refused. An SAE trained with `prepend_bos` gets the
model's BOS token before every prompt (`BOSTokenizer`).

SAELens releases. `--sae RELEASE/ID` (e.g. `gpt2-small-res-jb/blocks.8.hook_resid_pre`) is looked up in
the registry sae-lens ships and loaded by SAELens itself, with the release's conversion function (Gemma
Scope's npz, Llama Scope, dictionary_learning, ...), config overrides and norm-scaling folding, from the
Hub or the local Hub cache; the result is checked as any SAE is (architectures, options, shapes).

SAELens format (https://github.com/jbloomAus/SAELens): a directory with `cfg.json` and
`sae_weights.safetensors` holding W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]
and, for JumpReLU, threshold [d_sae]. Both cfg.json layouts are read: SAELens >= 6 (`architecture` at the
top, the hook under `metadata` or `meta`, `k` for TopK) and earlier ones (`hook_name` or `hook_point` at
the top, TopK as `activation_fn_str: "topk"` with `activation_fn_kwargs.k`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from circuitbench.errors import CheckpointError, ConfigError, ModelNotFoundError
from circuitbench.models.adapter import HookedForward, ModelAdapter, Site
from circuitbench.models.checkpoint import read_state_dict
from circuitbench.models.native import file_sha256
from circuitbench.models.sparse_gpt import Hook
from circuitbench.protocols import Tokenizer

log = logging.getLogger(__name__)

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
Architecture = Literal["standard", "topk", "jumprelu"]
ARCHITECTURES: tuple[str, ...] = ("standard", "topk", "jumprelu")
_DTYPES = {"float32", "float16", "bfloat16", "float64"}

# TransformerLens hook names (as SAELens records them) -> circuitbench hook names; `resid_post` is handled
# apart because it is the next block's `resid_in`, or `final_resid` after the last block.
_TL_HOOKS = {
    "hook_resid_pre": "{i}.resid_in",
    "hook_resid_mid": "{i}.resid_mid",
    "hook_attn_out": "{i}.attn.resid_delta",
    "hook_mlp_out": "{i}.mlp.resid_delta",
    "attn.hook_z": "{i}.attn.y",
    "mlp.hook_post": "{i}.mlp.post_act",
}
_TL_NAME = re.compile(r"blocks\.(\d+)\.(hook_resid_post|" + "|".join(re.escape(k) for k in _TL_HOOKS) + r")")


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


# --- loading -------------------------------------------------------------------------------------


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

    # SAELens's own defaults for cfg.json files written before 6.0 (handle_pre_6_0_config).
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
    if arch == "topk":
        if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= d_sae:
            raise _cfg_error(path, "k", f"{k!r} is not an integer in 1..d_sae={d_sae}",
                             "TopK SAEs need k (or activation_fn_kwargs.k before SAELens 6)")
    norm = raw.get("normalize_activations")
    if norm not in (None, False, "none"):
        raise _cfg_error(path, "normalize_activations", f"{norm!r} is not supported",
                         "fold the normalisation into the weights (SAELens: fold_activation_norm_scaling_factor) "
                         "and set it to \"none\"")
    for flag in ("finetuning_scaling_factor", "rescale_acts_by_decoder_norm"):
        if raw.get(flag):
            raise _cfg_error(path, flag, "true is not supported", "fold it into the weights and set it to false")
    if pick("hook_head_index") is not None:
        raise _cfg_error(path, "hook_head_index", "per-head SAEs are not supported",
                         "train the SAE on the whole attn.hook_z (all heads)")
    reshape = raw.get("reshape_activations") or "none"
    if reshape not in ("none", "hook_z") or (reshape == "hook_z" and not hook.endswith(("hook_z", "attn.y"))):
        raise _cfg_error(path, "reshape_activations", f"{reshape!r} is not supported at {hook}",
                         "only attn.hook_z SAEs are reshaped (circuitbench's attn.y is already flat)")
    apply_b_dec = raw.get("apply_b_dec_to_input", True)
    if not isinstance(apply_b_dec, bool):
        raise _cfg_error(path, "apply_b_dec_to_input", f"{apply_b_dec!r} is not true or false", "fix the value")
    dtype = str(raw.get("dtype", "float32")).removeprefix("torch.")
    if dtype not in _DTYPES:
        raise _cfg_error(path, "dtype", f"{dtype!r} is not a known dtype", f"use one of {', '.join(sorted(_DTYPES))}")
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
    return dict(hook_name=hook, d_in=d_in, d_sae=d_sae, architecture=arch, k=k if arch == "topk" else None,
                apply_b_dec_to_input=apply_b_dec, model_name=str(model_name) if model_name else None,
                prepend_bos=bos, processing=processing)


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
    return _build_sae(cfg, read_state_dict(weights), directory, str(weights), file_sha256(weights), str(directory))


def _build_sae(cfg: dict[str, Any], sd: dict[str, Tensor], path: Path, where: str, sha: str, spec: str,
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


# --- SAELens releases -------------------------------------------------------------------------------

SAELENS_HINT = "pip install 'circuitbench[saelens]'"


def _saelens_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("sae_lens") is not None


def _release_registry() -> Mapping[str, Any]:
    """SAELens's registry of pretrained releases (its bundled pretrained_saes.yaml), by release name."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()


@functools.cache
def _release_names() -> frozenset[str]:
    """The release names in sae-lens's pretrained_saes.yaml; empty without sae-lens.

    Read off the file's top-level keys without importing sae-lens (which imports TransformerLens: seconds).
    """
    import importlib.util

    spec = importlib.util.find_spec("sae_lens")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    registry = Path(next(iter(spec.submodule_search_locations))) / "pretrained_saes.yaml"
    try:
        text = registry.read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    return frozenset(re.findall(r"^([^\s#][^:\n]*):[ \t]*$", text, flags=re.MULTILINE))


def release_and_id(spec: str) -> tuple[str, str] | None:
    """(release, sae_id) when `spec` is RELEASE/ID of a release SAELens knows; None otherwise (or without it)."""
    release, _, sae_id = spec.partition("/")
    if not sae_id or Path(spec).expanduser().exists():
        return None
    return (release, sae_id) if release in _release_names() else None


@contextmanager
def _hub_settings_now() -> Iterator[None]:
    """HF_HUB_CACHE and HF_HUB_OFFLINE as the environment has them now, for huggingface_hub within the block.

    huggingface_hub reads both once, when imported; SAELens's loaders take no cache_dir, so for their call
    the current values are set on its constants (and restored after).
    """
    from huggingface_hub import constants

    from circuitbench.models.hub import hub_cache_dir, hub_offline

    before = constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE
    constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = str(hub_cache_dir()), hub_offline()
    try:
        yield
    finally:
        constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = before


def load_release_sae(release: str, sae_id: str) -> SAE:
    """One SAE of an SAELens release, through SAELens's own loader.

    The loader applies the release's conversion function, config overrides and norm-scaling folding; files
    come from the Hub or, with HF_HUB_OFFLINE=1, from the local Hub cache.

    Raises:
        ModelNotFoundError: for an id the release does not have, or files neither cached nor fetchable.
        ConfigError, CheckpointError: as `load_sae`, for what circuitbench does not implement.
    """
    import difflib

    from sae_lens.saes.sae import SAE as LensSAE

    from circuitbench.models.hub import hub_cache_dir
    from circuitbench.models.native import tensors_sha256

    spec = f"{release}/{sae_id}"
    lookup = _release_registry()[release]
    if sae_id not in lookup.saes_map:
        ids = list(lookup.saes_map)
        close = difflib.get_close_matches(sae_id, ids, n=3)
        raise ModelNotFoundError(
            f"--sae {spec}: release {release} has no SAE {sae_id!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
            + f" It has {len(ids)}: {', '.join(ids[:4])}{', ...' if len(ids) > 4 else ''}"
        )
    try:
        with _hub_settings_now():
            lens, cfg_dict, _ = LensSAE.from_pretrained_with_cfg_and_sparsity(release, sae_id, device="cpu")
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # huggingface_hub's errors derive from these
        raise ModelNotFoundError(
            f"--sae {spec}: SAELens could not load it from {lookup.repo_id} ({type(err).__name__}: "
            f"{str(err)[:300]}). With HF_HUB_OFFLINE=1 its files must be in the Hub cache at {hub_cache_dir()}."
        ) from err
    where = f"SAELens release {spec}"
    cfg = parse_cfg(cfg_dict, where)
    sd = {k: v.detach() for k, v in lens.state_dict().items()}
    origin = {"release": release, "sae_id": sae_id, "repo_id": lookup.repo_id,
              "folder": lookup.saes_map[sae_id], "conversion": lookup.conversion_func or "sae_lens",
              "registry_model": lookup.model}
    return _build_sae(cfg, sd, Path(release) / sae_id, where, tensors_sha256(sd), spec, origin)


def load_sae_spec(spec: str) -> SAE:
    """The SAE that a --sae value names: a directory, an SAELens RELEASE/ID, or a Hub id owner/repo[/folder]."""
    ids = release_and_id(spec)
    if ids is not None:
        return load_release_sae(*ids)
    try:
        directory = resolve_sae_dir(spec)
    except ModelNotFoundError as err:
        if "/" in spec and not _saelens_installed():
            raise ModelNotFoundError(f"{err} If {spec.split('/')[0]!r} is an SAELens release, {SAELENS_HINT} "
                                     "to resolve release ids.") from None
        raise
    return dataclasses.replace(load_sae(directory), spec=spec)


# --- matching an SAE to the model ----------------------------------------------------------------------

RESIDUAL_POINTS = ("resid_in", "resid_mid", "final_resid")
WRITE_POINTS = ("attn.resid_delta", "mlp.resid_delta")


def _point_kind(point: str) -> str:
    """A hook point's name without its layer: "3.resid_mid" -> "resid_mid"; "final_resid" as it is."""
    return point.split(".", 1)[1] if point[0].isdigit() else point


def _short(name: str) -> str:
    return name.rstrip("/").split("/")[-1].lower()


def _official(name: str) -> str:
    """TransformerLens's official name for an alias ("gpt2-small" -> "gpt2"), shortened; the name if unknown."""
    try:
        from transformer_lens.loading_from_pretrained import get_official_model_name
    except ImportError:
        return _short(name)
    try:
        return _short(get_official_model_name(name))
    except (ValueError, KeyError):
        return _short(name)


def model_names(base: ModelAdapter) -> list[str]:
    """The names a model goes by: its display name, Hub repo, directory, and its own config's name."""
    names = [base.name, *(base.provenance.get(k) for k in ("repo_id", "model_path"))]
    cfg = getattr(base, "cfg", None) or getattr(base, "hf_config", None)
    names += [getattr(cfg, "model_name", None), getattr(cfg, "name_or_path", None)]
    return [str(n) for n in dict.fromkeys(names) if n]


def check_model_name(sae: SAE, base: ModelAdapter) -> None:
    """Refuse an SAE whose cfg names another model than `base` (compared by TransformerLens's aliases)."""
    if not sae.model_name:
        return
    names = model_names(base)
    if _short(sae.model_name) in {_short(n) for n in names}:
        return
    wanted = _official(sae.model_name)
    if wanted in {_official(n) for n in names}:
        return
    raise ConfigError(
        f"{sae.where}: model_name: the SAE was trained on {sae.model_name!r} (Hub: {wanted}), but this model is "
        f"{' / '.join(repr(n) for n in names[:3])}. Load the model it was trained on (--model {wanted}); a local "
        "copy is recognised by its directory name or Hub id. If this model is the one (renamed), set model_name "
        "in the SAE's cfg.json to its name."
    )


def writes_are_centred(base: ModelAdapter) -> bool:
    """Whether every MLP write matrix has zero mean over d_model (TransformerLens's center_writing_weights)."""
    ws = [base.site_weight(s) for s in base.sites if s.kind == "mlp_out"]
    ws = [w.float() for w in ws if w is not None]
    return bool(ws) and all(bool((w.mean(0).abs() <= 1e-5 * w.abs().max().clamp_min(1e-12)).all()) for w in ws)


def check_processing(sae: SAE, point: str, base: ModelAdapter) -> None:
    """Refuse an SAE trained on activations of weights processed otherwise than `base`'s, at its hook point.

    TransformerLens's `center_writing_weights` subtracts each write's mean over d_model: the residual stream
    and the sublayer writes change (their per-position mean is removed), so an SAE read there was trained on
    other activations. `fold_value_biases` and `refactor_factored_attn_matrices` change attn.hook_z.
    `fold_ln` and `center_unembed` change no activation an SAE is spliced at (norm outputs and logits).
    """
    kind = _point_kind(point)
    wanted = bool(sae.processing.get("center_writing_weights", False))
    if kind in RESIDUAL_POINTS + WRITE_POINTS and wanted != writes_are_centred(base):
        have = "centred" if not wanted else "not centred"
        fix = ("a HookedTransformer loaded with center_writing_weights=True (circuitbench.load_model(model))"
               if wanted else "the model without center_writing_weights (its checkpoint as published)")
        raise ConfigError(
            f"{sae.where}: model_from_pretrained_kwargs: center_writing_weights={str(wanted).lower()}, but this "
            f"model's writing weights are {have}, so its {point} activations are not the ones the SAE was "
            f"trained on. Use {fix}."
        )
    for flag in ("fold_value_biases", "refactor_factored_attn_matrices"):
        if sae.processing.get(flag) and kind == "attn.y":
            raise ConfigError(f"{sae.where}: model_from_pretrained_kwargs: {flag}=true changes attn.hook_z, and "
                              "circuitbench cannot tell whether this model's weights were processed so; use an SAE "
                              "trained without it")


class BOSTokenizer:
    """A tokenizer that starts every encoding with the BOS token (for SAEs trained with prepend_bos)."""

    def __init__(self, base: Tokenizer, bos_id: int) -> None:
        self.base, self.bos_id = base, bos_id
        self.name = f"{base.name}+bos"
        self.vocab_size, self.eot_id = base.vocab_size, base.eot_id

    def encode(self, text: str) -> list[int]:
        """The base tokenizer's ids, after the BOS token."""
        return [self.bos_id, *self.base.encode(text)]

    def decode(self, ids: list[int]) -> str:
        """The text of the ids, the leading BOS token left out."""
        return self.base.decode(list(ids[1:]) if ids[:1] == [self.bos_id] else list(ids))


# --- the adapter ---------------------------------------------------------------------------------


def _identity(name: str, x: Tensor) -> Tensor:
    return x


def _hook_widths(base: ModelAdapter) -> dict[str, int]:
    """Every hook point of the base model and its activation width, in forward order (one 1-token pass)."""
    _, cache = base.run_with_cache(torch.zeros(1, 1, dtype=torch.long, device=base.device))
    return {name: int(x.shape[-1]) for name, x in cache.items()}


def splice_point(hook_name: str, names: Iterable[str]) -> str | None:
    """The circuitbench hook name for an SAELens (TransformerLens) or circuitbench one; None if absent."""
    names = set(names)
    if hook_name in names:
        return hook_name
    m = _TL_NAME.fullmatch(hook_name)
    if m is None:
        return None
    i, kind = int(m.group(1)), m.group(2)
    if kind == "hook_resid_post":  # the stream after block i
        point = f"{i + 1}.resid_in" if f"{i + 1}.resid_in" in names else "final_resid"
        return point if f"{i}.resid_in" in names and point in names else None
    point = _TL_HOOKS[kind].format(i=i)
    return point if point in names else None


class SAEAdapter(HookedForward):
    """`ModelAdapter` of a base model with SAEs spliced in; its sites are the SAE latents and error nodes.

    See the module docstring for the splice, the sites and how edges are (not) counted.
    """

    def __init__(self, base: ModelAdapter, saes: list[SAE]) -> None:
        if not saes:
            raise ConfigError("SAEAdapter needs at least one SAE")
        widths = _hook_widths(base)
        order = list(widths)
        n_layer = 1 + max((int(n.split(".")[0]) for n in order if n.split(".")[0].isdigit()), default=-1)
        splices: dict[str, SAE] = {}
        for sae in saes:
            point = splice_point(sae.hook_name, order)
            if point is None:
                raise ConfigError(
                    f"{sae.where}: hook_name: {sae.hook_name!r} is not a hook point of {base.name}; valid: "
                    f"{', '.join(order)} (or as TransformerLens names: blocks.L.hook_resid_pre, hook_resid_mid, "
                    "hook_resid_post, hook_attn_out, hook_mlp_out, attn.hook_z, mlp.hook_post)"
                )
            if point in splices:
                raise ConfigError(f"{sae.where}: hook_name: {point} already has an SAE ({splices[point].spec})")
            if widths[point] != sae.d_in:
                raise ConfigError(
                    f"{sae.where}: d_in: {sae.d_in}, but {base.name}'s {point} has width {widths[point]}; "
                    "this SAE was trained on another model or hook point"
                )
            check_model_name(sae, base)
            check_processing(sae, point, base)
            splices[point] = sae.to(base.device)
        self.base = base
        self.splices = dict(sorted(splices.items(), key=lambda kv: order.index(kv[0])))
        self.tokenizer: Tokenizer = base.tokenizer
        bos = {s.prepend_bos for s in self.splices.values()}
        if len(bos) > 1:
            raise ConfigError("--sae: some of these SAEs were trained with prepend_bos and some without ("
                              + ", ".join(f"{s.spec}: {s.prepend_bos}" for s in self.splices.values())
                              + "); one run feeds the model one kind of prompt: splice SAEs that agree")
        if bos == {True}:
            bos_id = getattr(base, "bos_token_id", None)
            if bos_id is None:
                first = next(iter(self.splices.values()))
                raise ConfigError(f"{first.where}: prepend_bos: true, but {base.name} names no BOS token "
                                  "(config.json bos_token_id); the SAE's training prompts cannot be reproduced")
            self.tokenizer = BOSTokenizer(base.tokenizer, int(bos_id))
        self.sites: list[Site] = []
        self._virtual: dict[str, tuple[SAE, SAE]] = {}
        previous: str | None = None
        for point, sae in self.splices.items():
            layer = int(point.split(".")[0]) if point[0].isdigit() else n_layer
            source = None
            if previous is not None and _direct_path(previous, point):
                source = f"{previous}.sae"
                self._virtual[f"{point}.sae"] = (self.splices[previous], sae)
            self.sites += [Site(f"{point}.sae", layer, "sae_latent", sae.d_sae, source,
                                "W_dec @ W_enc" if source else None),
                           Site(f"{point}.sae_error", layer, "sae_error", 1, value_width=sae.d_in)]
            previous = point
        self.hook_names = order + [s.name for s in self.sites]
        self.device, self.dtype = base.device, base.dtype
        self.config = getattr(base, "config", None)
        self.context_length: int | None = base.context_length
        self.provenance: dict[str, Any] = dict(base.provenance)
        self.provenance["saes"] = [
            {"spec": s.spec or str(s.path), "path": str(s.path.resolve()) if not s.origin else str(s.path),
             "hook": p, "weights_sha256": s.weights_sha256, "prepend_bos": s.prepend_bos, **s.origin}
            for p, s in self.splices.items()]
        # appended to the model's name (and results directory): SAE folder names and a hash of their weights
        digest = hashlib.sha256(",".join(s.weights_sha256 for s in self.splices.values()).encode()).hexdigest()
        self.suffix = f"+sae:{','.join(s.path.name for s in self.splices.values())}-{digest[:8]}"
        self.name = base.name + self.suffix

    def _splice_hook(self, hook: Hook | None) -> Hook:
        outer = hook or _identity

        def inner(name: str, x: Tensor) -> Tensor:
            sae = self.splices.get(name)
            if sae is not None:
                x0 = x.float()
                latents = sae.encode(x0)  # (..., d_sae)
                error = x0 - sae.decode(latents)  # (..., d_in), from the original x: kept + kept = x
                latents = outer(f"{name}.sae", latents)
                error = outer(f"{name}.sae_error", error)
                x = (sae.decode(latents) + error).to(x.dtype)
            return outer(name, x)

        return inner

    def forward(self, tokens: Tensor, hook: Hook | None = None, at: Tensor | None = None) -> Tensor:
        """Logits of the spliced model; `hook` also sees `{h}.sae` and `{h}.sae_error` at every splice h."""
        return self.base.forward(tokens, self._splice_hook(hook), at)

    def site_weight(self, site: Site) -> Tensor | None:
        """[d_sae_b, d_sae_a] = (W_dec_a @ W_enc_b)^T for latents b read directly off a's splice; else None.

        See the module docstring, on edges.
        """
        pair = self._virtual.get(site.name)
        if pair is None:
            return None
        a, b = pair
        return (a.W_dec @ b.W_enc).T  # (d_sae_b, d_sae_a)


def _direct_path(a: str, b: str) -> bool:
    """Whether splice b (later) reads splice a's output along the residual stream alone.

    True when b is on the stream and a is on it or writes into it; the caller passes consecutive splices.
    """
    return _point_kind(b) in RESIDUAL_POINTS and _point_kind(a) in RESIDUAL_POINTS + WRITE_POINTS


def load_saes(base: ModelAdapter, specs: Iterable[str]) -> SAEAdapter:
    """Splice the SAEs these --sae values name (directories, SAELens RELEASE/ID, Hub ids) into `base`.

    Raises:
        CircuitbenchError: for an SAE that cannot be found, read or fitted to the model.
    """
    return SAEAdapter(base, [load_sae_spec(p) for p in specs])
