"""SAELens releases (`--sae RELEASE/ID`).

Looked up in the registry sae-lens ships, loaded by SAELens itself (with the release's conversion, config
overrides and norm folding), then checked as any SAE is.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from circuitbench.errors import ModelNotFoundError
from circuitbench.models.sae.autoencoder import SAE
from circuitbench.models.sae.files import build_sae, load_sae, parse_cfg, resolve_sae_dir

log = logging.getLogger(__name__)


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
    return build_sae(cfg, sd, Path(release) / sae_id, where, tensors_sha256(sd), spec, origin)


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
