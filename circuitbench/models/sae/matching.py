"""Matching an SAE to a model.

Hook names (TransformerLens's and circuitbench's), the model an SAE was trained on, the weight processing
it expects, and which splices the residual stream joins directly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import torch

from circuitbench.errors import ConfigError
from circuitbench.models.adapter import ModelAdapter
from circuitbench.models.sae.autoencoder import SAE

log = logging.getLogger(__name__)


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
    found = [base.site_weight(s) for s in base.sites if s.kind == "mlp_out"]
    ws = [w.float() for w in found if w is not None]
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


def hook_widths(base: ModelAdapter) -> dict[str, int]:
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


def direct_path(a: str, b: str) -> bool:
    """Whether splice b (later) reads splice a's output along the residual stream alone.

    True when b is on the stream and a is on it or writes into it; the caller passes consecutive splices.
    """
    return _point_kind(b) in RESIDUAL_POINTS and _point_kind(a) in RESIDUAL_POINTS + WRITE_POINTS
