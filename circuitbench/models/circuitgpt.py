"""The Hub's `openai/circuit-sparsity` layout (transformers-style `config.json`) loaded into the native SparseGPT.

The Hub repository wraps the released GPT in transformers custom code (model_type `circuitgpt`): the
wrapper holds the GPT as `circuit_model`, so its weights carry a prefix such as `circuit_model.` or
`model.circuit_model.` before the released key names (`transformer.h.0.attn.c_attn.weight`, `lm_head.weight`).
The exact weight file name and prefix are not confirmed (docs/design.md, The model format and the method), so
this module loads defensively and never executes the repository's code unless the caller passes `trust_remote_code`:

- config: the GPTConfig keys are read from the top level of `config.json`, or from the one sub-dict
  that holds them (`CONFIG_ALIASES` maps transformers' names such as `hidden_size` onto them);
  transformers' bookkeeping keys (`TRANSFORMERS_KEYS`) are dropped; any other unknown key is logged
  and recorded in the adapter's provenance as `ignored_config_keys`.
- weights: `model.safetensors` (or its sharded index), `pytorch_model.bin` (or its index), or a single
  `*.pt`; the wrapper's prefix is detected from the keys and stripped, and the result is loaded strictly.
- tokenizer: `tokenizer.json` (or tinypython's `vocab.bpe` + `encoder.json`).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from circuitbench.errors import CheckpointError, ConfigError
from circuitbench.models.checkpoint import load_weights, read_state_dict
from circuitbench.models.config import GPTConfig
from circuitbench.models.native import CONFIG_FILE, SparseGPTAdapter, file_sha256, resolve_device, resolve_dtype
from circuitbench.models.sparse_gpt import SparseGPT
from circuitbench.models.tokenizer import load_tokenizer
from circuitbench.validation import format_validation_error

log = logging.getLogger(__name__)

HF_CONFIG_FILE = "config.json"

# transformers' names for GPTConfig fields; used only where the GPTConfig name itself is absent.
CONFIG_ALIASES: dict[str, str] = {
    "n_positions": "block_size",
    "max_position_embeddings": "block_size",
    "n_ctx": "block_size",
    "n_embd": "d_model",
    "hidden_size": "d_model",
    "num_hidden_layers": "n_layer",
    "num_attention_heads": "n_head",
    "head_dim": "d_head",
    "intermediate_size": "d_mlp",
    "n_inner": "d_mlp",
    "tie_word_embeddings": "tied_unembed",
}
# PretrainedConfig's own attributes: they describe the wrapper or generation, not the GPT.
TRANSFORMERS_KEYS = frozenset({
    "architectures", "auto_map", "model_type", "transformers_version", "torch_dtype", "dtype", "use_cache",
    "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id", "return_dict",
    "output_hidden_states", "output_attentions", "is_encoder_decoder", "is_decoder", "add_cross_attention",
    "id2label", "label2id", "problem_type", "chunk_size_feed_forward", "tokenizer_class", "prefix",
    "task_specific_params", "finetuning_task", "cross_attention_hidden_size", "tie_encoder_decoder",
    "pruned_heads", "torchscript", "name_or_path", "_name_or_path", "_commit_hash", "_attn_implementation",
    "attn_implementation", "initializer_range", "layer_norm_epsilon", "layer_norm_eps", "rms_norm_eps",
})
_CORE_KEYS = ("vocab_size", "n_layer", "n_head", "d_model")
# A released key, found anywhere in a wrapper's key: everything before it is the wrapper's prefix.
_ANCHOR = re.compile(r"^(?P<prefix>(?:[^.]+\.)*?)(?P<rest>transformer\.(?:wte|wpe|h|ln_f)\..*|lm_head\.weight"
                     r"|final_logits_bias|bigram_table)$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def is_circuitgpt_dir(directory: Path) -> bool:
    """Whether a directory's `config.json` describes a circuit-sparsity GPT (model_type or GPTConfig keys)."""
    raw = _read_json(directory / HF_CONFIG_FILE)
    if raw is None:
        return False
    if "circuit" in str(raw.get("model_type", "")).lower():
        return True
    return _find_gpt_keys(raw) is not None


def gpt_config_from_hf(raw: dict[str, Any], source: Path) -> tuple[GPTConfig, list[str]]:
    """Map a transformers-style config dict onto GPTConfig.

    Args:
        raw: the parsed `config.json`.
        source: its path, for messages.

    Returns:
        The GPTConfig, and the unknown keys that were ignored.

    Raises:
        ConfigError: when no GPTConfig keys are found, or their values are invalid.
    """
    found = _find_gpt_keys(raw)
    if found is None:
        raise ConfigError(
            f"{source}: no circuit-sparsity GPTConfig keys found (need {', '.join(_CORE_KEYS)} at the top level "
            f"or in one sub-dict, or their transformers names {', '.join(CONFIG_ALIASES)}). Top-level keys: "
            f"{', '.join(sorted(raw))}."
        )
    where, section = found
    fields = set(GPTConfig.model_fields) | {"n_mlp"}
    values = {k: v for k, v in section.items() if k in fields}
    for alias, key in CONFIG_ALIASES.items():
        if alias in section and key not in values and not (key == "d_mlp" and "n_mlp" in values):
            values[key] = section[alias]
    known = fields | set(CONFIG_ALIASES) | TRANSFORMERS_KEYS
    ignored = sorted(
        (f"{where}.{k}" if where else k) for k, v in section.items() if k not in known and not isinstance(v, dict)
    )
    if ignored:
        log.warning("%s: ignoring keys that are not GPTConfig fields: %s", source, ", ".join(ignored))
    try:
        return GPTConfig.model_validate(values), ignored
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(source), GPTConfig)) from err


def find_hf_weights(directory: Path) -> list[Path]:
    """The weight file(s) of a Hub-layout directory, preferring safetensors, then `.bin`, then `.pt`.

    Raises:
        CheckpointError: when there is none, or the choice is ambiguous, naming the files present.
    """
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = _read_json(directory / index_name)
        if index is not None:
            shards = sorted(set(index.get("weight_map", {}).values()))
            missing = [s for s in shards if not (directory / s).is_file()]
            if not shards or missing:
                raise CheckpointError(f"{directory / index_name}: shards missing: {', '.join(missing) or '(none)'}")
            return [directory / s for s in shards]
    for name in ("model.safetensors", "pytorch_model.bin", "final_model.pt"):
        if (directory / name).is_file():
            return [directory / name]
    files = _listing(directory)
    candidates = [directory / f for f in files if f.endswith(_WEIGHT_SUFFIXES) and "/" not in f]
    for suffix in _WEIGHT_SUFFIXES:
        same = [p for p in candidates if p.name.endswith(suffix)]
        if len(same) == 1:
            return same
        if len(same) > 1:
            raise CheckpointError(
                f"{directory}: several weight files ({', '.join(p.name for p in same)}) and no index saying "
                "which to load; keep one, or add model.safetensors.index.json."
            )
    raise CheckpointError(
        f"{directory}: no weights found; expected model.safetensors, pytorch_model.bin or one *.pt file. "
        f"Files present: {', '.join(files) or '(none)'}."
    )


def strip_wrapper_prefix(sd: dict[str, Tensor], source: str) -> tuple[dict[str, Tensor], str]:
    """Remove the wrapper's prefix (e.g. `model.circuit_model.`) from a state dict's keys.

    The prefix is whatever precedes the released key names (`transformer.`, `lm_head.weight`,
    `final_logits_bias`, `bigram_table`), taken from the prefix most of them share. Keys without it
    stay as they are, so a strict load reports them as unexpected.

    Returns:
        The renamed state dict and the prefix ("" when there was none).

    Raises:
        CheckpointError: when no key looks like a GPT's, or two prefixes hold equally many GPT keys.
    """
    prefixes: Counter[str] = Counter()
    for key in sd:
        m = _ANCHOR.match(key)
        if m:
            prefixes[m["prefix"]] += 1
    if not prefixes:
        raise CheckpointError(
            f"{source}: no key looks like a circuit-sparsity GPT's (transformer.wte/h/ln_f, lm_head). "
            f"Keys: {_sample(sd)}.{REMOTE_CODE_HINT}"
        )
    ranked = prefixes.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        raise CheckpointError(
            f"{source}: GPT keys under several prefixes ({', '.join(repr(p) for p in sorted(prefixes))}); "
            f"cannot tell which module is the GPT. Keys: {_sample(sd)}.{REMOTE_CODE_HINT}"
        )
    # The GPT is the module with the most GPT-like keys; stray copies elsewhere stay unexpected keys.
    prefix = ranked[0][0]
    return {k.removeprefix(prefix): v for k, v in sd.items()}, prefix


REMOTE_CODE_HINT = (
    " This layout was not foreseen; if you trust the repository's code, pass --trust-remote-code "
    "(trust_remote_code=True) to load it through transformers and take the inner GPT's weights."
)


def load_circuitgpt(
    directory: Path,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    name: str | None = None,
    trust_remote_code: bool = False,
    revision_info: dict[str, Any] | None = None,
) -> SparseGPTAdapter:
    """Load a Hub-layout circuit-sparsity directory into the native SparseGPT.

    Args:
        directory: the snapshot (or local copy) holding `config.json`, the weights and `tokenizer.json`.
        device: see `circuitbench.load_model`.
        dtype: see `circuitbench.load_model`.
        name: the adapter's name (default: the directory's name).
        trust_remote_code: when the weights do not map onto the released keys, load the repository's
            own model class through transformers (executing its code) and take the inner GPT's weights.
        revision_info: Hub provenance (`repo_id`, `revision`, `commit`) to record.

    Raises:
        ConfigError: for a config without GPTConfig keys.
        CheckpointError: listing the files and keys when the weights do not fit, with the
            --trust-remote-code hint.
    """
    directory = Path(directory)
    config_path = directory / HF_CONFIG_FILE
    raw = _read_json(config_path)
    if raw is None:
        raise ConfigError(f"{config_path}: missing or not a JSON object")
    cfg, ignored = gpt_config_from_hf(raw, config_path)
    weights = find_hf_weights(directory)
    model = SparseGPT(cfg)
    sd: dict[str, Tensor] = {}
    for path in weights:
        sd.update(read_state_dict(path))
    source = ", ".join(str(p) for p in weights)
    prefix = ""
    try:
        sd, prefix = strip_wrapper_prefix(sd, source)
        load_weights(model, sd, Path(source))
        how = "native"
    except CheckpointError as err:
        if not trust_remote_code:
            raise CheckpointError(
                f"{str(err).replace(CONFIG_FILE, HF_CONFIG_FILE)}\n  Files in {directory}: "
                f"{', '.join(_listing(directory))}\n "
                + ("" if REMOTE_CODE_HINT in str(err) else REMOTE_CODE_HINT)
            ) from err
        log.warning("%s; loading through the repository's code (--trust-remote-code)",
                    str(err).splitlines()[0].rstrip("."))
        model, cfg = _load_with_remote_code(directory, cfg)
        how = "trust_remote_code"
    model = model.to(device=resolve_device(device), dtype=resolve_dtype(dtype))
    tokenizer = load_tokenizer(directory, cfg.vocab_size, name=cfg.tokenizer_name)
    provenance: dict[str, Any] = {
        "model_path": str(directory.resolve()),
        "weights_sha256": file_sha256(weights[0]) if len(weights) == 1 else None,
        "format": "circuit-sparsity-hub",
        "loaded_via": how,
        **(revision_info or {}),
    }
    if how == "native":
        provenance["key_prefix"] = prefix
    if ignored:
        provenance["ignored_config_keys"] = ignored
    return SparseGPTAdapter(model, tokenizer, name or directory.name, provenance)


def _load_with_remote_code(directory: Path, cfg: GPTConfig) -> tuple[SparseGPT, GPTConfig]:
    """Build the repository's own model (executing its code) and copy its inner GPT into a SparseGPT."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as err:
        raise CheckpointError(
            "--trust-remote-code loads through transformers, which is not installed: pip install 'circuitbench[hf]'"
        ) from err
    try:
        wrapper = AutoModelForCausalLM.from_pretrained(
            str(directory), trust_remote_code=True, local_files_only=True, dtype=torch.float32
        )
    except (OSError, ValueError, ImportError) as err:
        raise CheckpointError(
            f"{directory}: transformers could not load the repository's model with trust_remote_code "
            f"({type(err).__name__}: {str(err)[:300]})"
        ) from err
    inner = _find_inner_gpt(wrapper)
    if inner is None:
        names = sorted(wrapper.state_dict())
        raise CheckpointError(
            f"{directory}: the repository's model holds no module with a circuit-sparsity GPT's keys "
            f"(transformer.wte.weight, lm_head.weight). Its keys: {', '.join(names[:40])}"
            + (" ..." if len(names) > 40 else "")
        )
    inner_cfg = getattr(inner, "config", None)
    if inner_cfg is not None and not isinstance(inner_cfg, GPTConfig):
        # The official GPT keeps a dataclass GPTConfig; its fields are the authority for its weights.
        raw = {k: v for k, v in vars(inner_cfg).items() if not k.startswith("_")}
        cfg, _ = gpt_config_from_hf(raw, directory / f"{type(inner).__name__}.config")
    elif isinstance(inner_cfg, GPTConfig):
        cfg = inner_cfg
    model = SparseGPT(cfg)
    load_weights(model, dict(inner.state_dict()), directory)
    return model, cfg


def _find_inner_gpt(wrapper: nn.Module) -> nn.Module | None:
    candidate = getattr(wrapper, "circuit_model", None)
    if isinstance(candidate, nn.Module) and _looks_like_gpt(candidate):
        return candidate
    for _, module in wrapper.named_modules():
        if _looks_like_gpt(module):
            return module
    return None


def _looks_like_gpt(module: nn.Module) -> bool:
    keys = module.state_dict().keys()
    return "transformer.wte.weight" in keys and "lm_head.weight" in keys


def _find_gpt_keys(raw: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(where, section): the top level or the one sub-dict that names the GPT's core dimensions."""
    named_circuit = "circuit" in str(raw.get("model_type", "")).lower()

    def has_core(d: dict[str, Any]) -> bool:
        # GPT-2 and T5 configs also carry some of these names; only GPTConfig has both d_model and n_layer.
        canon = {CONFIG_ALIASES.get(k, k) for k in d}
        return all(k in canon for k in _CORE_KEYS) and (("d_model" in d and "n_layer" in d) or named_circuit)

    if has_core(raw):
        return "", raw
    subs = [(k, v) for k, v in raw.items() if isinstance(v, dict) and has_core(v)]
    if len(subs) == 1:
        return subs[0]
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def _sample(sd: dict[str, Tensor], n: int = 30) -> str:
    keys = sorted(sd)
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")
