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
unmasked. SAE sites have no connecting weight matrix (`Site.source` is None), so `count_edges` reports 0
edges for them: a latent-to-latent edge would have to be read off the whole model between two splices,
not off one matrix, and circuitbench does not estimate it. SAE circuits are compared by nodes
(`nodes_sae_latent`, `nodes_sae_error` in the results); their `edges` rows are 0 by this definition.

SAELens format (https://github.com/jbloomAus/SAELens): a directory with `cfg.json` and
`sae_weights.safetensors` holding W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]
and, for JumpReLU, threshold [d_sae]. Both cfg.json layouts are read: SAELens >= 6 (`architecture` at the
top, the hook under `metadata` or `meta`, `k` for TopK) and earlier ones (`hook_name` or `hook_point` at
the top, TopK as `activation_fn_str: "topk"` with `activation_fn_kwargs.k`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from circuitbench.errors import CheckpointError, ConfigError, ModelNotFoundError
from circuitbench.models.adapter import ModelAdapter, Site, cache_through_hooks
from circuitbench.models.checkpoint import read_state_dict
from circuitbench.models.native import file_sha256
from circuitbench.models.sparse_gpt import Hook

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
    """Hash of sae_weights.safetensors."""

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
        return SAE(self.path, self.hook_name, self.architecture, apply_b_dec_to_input=self.apply_b_dec_to_input,
                   threshold=thr, k=self.k, weights_sha256=self.weights_sha256, **move)

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


def _cfg_error(path: Path, field: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{path}: {field}: {problem}; {fix}")


def _positive_int(cfg: Mapping[str, Any], key: str, path: Path) -> int:
    if key not in cfg:
        raise _cfg_error(path, key, "missing", "SAELens writes d_in and d_sae into every cfg.json")
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _cfg_error(path, key, f"{value!r} is not a positive integer", "fix the value")
    return value


def _read_cfg(path: Path) -> dict[str, Any]:
    """Parse cfg.json into the fields circuitbench uses; refuse options it does not implement."""
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
    return dict(hook_name=hook, d_in=d_in, d_sae=d_sae, architecture=arch, k=k if arch == "topk" else None,
                apply_b_dec_to_input=apply_b_dec)


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
    sd = read_state_dict(weights)
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
            f"{weights}: a {cfg['architecture']} SAE has {', '.join(shapes)}; missing: {', '.join(missing) or '-'}; "
            f"unexpected: {', '.join(unexpected) or '-'}"
        )
    for key, shape in shapes.items():
        if tuple(sd[key].shape) != shape:
            raise CheckpointError(
                f"{weights}: {key} has shape {list(sd[key].shape)}, but {directory / CFG_FILE} "
                f"(d_in={d_in}, d_sae={d_sae}) needs {list(shape)}"
            )
    t = {key: sd[key].float().contiguous() for key in shapes}
    return SAE(directory, cfg["hook_name"], cfg["architecture"], t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"],
               cfg["apply_b_dec_to_input"], t.get("threshold"), cfg["k"], file_sha256(weights))


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


class SAEAdapter:
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
            cfg = sae.path / CFG_FILE
            point = splice_point(sae.hook_name, order)
            if point is None:
                raise ConfigError(
                    f"{cfg}: hook_name: {sae.hook_name!r} is not a hook point of {base.name}; valid: "
                    f"{', '.join(order)} (or as TransformerLens names: blocks.L.hook_resid_pre, hook_resid_mid, "
                    "hook_resid_post, hook_attn_out, hook_mlp_out, attn.hook_z, mlp.hook_post)"
                )
            if point in splices:
                raise ConfigError(f"{cfg}: hook_name: {point} already has an SAE ({splices[point].path})")
            if widths[point] != sae.d_in:
                raise ConfigError(
                    f"{cfg}: d_in: {sae.d_in}, but {base.name}'s {point} has width {widths[point]}; "
                    "this SAE was trained on another model or hook point"
                )
            splices[point] = sae.to(base.device)
        self.base = base
        self.splices = dict(sorted(splices.items(), key=lambda kv: order.index(kv[0])))
        self.sites: list[Site] = []
        for point, sae in self.splices.items():
            layer = int(point.split(".")[0]) if point[0].isdigit() else n_layer
            self.sites += [Site(f"{point}.sae", layer, "sae_latent", sae.d_sae),
                           Site(f"{point}.sae_error", layer, "sae_error", 1, value_width=sae.d_in)]
        self.hook_names = order + [s.name for s in self.sites]
        self.tokenizer = base.tokenizer
        self.device, self.dtype = base.device, base.dtype
        self.config = getattr(base, "config", None)
        self.context_length: int | None = base.context_length
        self.provenance: dict[str, Any] = dict(base.provenance)
        self.provenance["saes"] = [{"path": str(s.path.resolve()), "hook": p, "weights_sha256": s.weights_sha256}
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

    def logits(self, tokens: Tensor) -> Tensor:
        """Logits [B, T, V], without gradients."""
        with torch.no_grad():
            return self.forward(tokens)

    def run_with_cache(
        self, tokens: Tensor, names: Iterable[str] | None = None, at: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and the named activations (base hook points as spliced, plus the SAE sites)."""
        return cache_through_hooks(self.forward, self.hook_names, tokens, names, at)

    def site_weight(self, site: Site) -> Tensor | None:
        """None: SAE sites have no connecting matrix (see the module docstring on edges)."""
        return None


def load_saes(base: ModelAdapter, paths_or_ids: Iterable[str]) -> SAEAdapter:
    """Splice the SAEs at these paths (or Hub ids) into `base`.

    Raises:
        CircuitbenchError: for an SAE that cannot be found, read or fitted to the model's hook points.
    """
    return SAEAdapter(base, [load_sae(resolve_sae_dir(p)) for p in paths_or_ids])
