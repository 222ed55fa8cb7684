"""Model resolution: a local directory, a bundled short name or a Hub id becomes a `ModelAdapter`.

Hub ids (`owner/name`) are fetched with `huggingface_hub.snapshot_download` into the Hugging Face cache,
taking only configuration, tokenizer and weight files (plus `*.py` with `trust_remote_code`).
huggingface_hub reads `HF_HUB_OFFLINE`, `HF_HOME` and `HF_HUB_CACHE` once, when it is imported
(docs/design.md, Traps); this module reads them again at every call, so setting them later still counts.

The format is detected from the files: the released circuit-sparsity format (`beeg_config.json`), the
Hub's `openai/circuit-sparsity` layout (`config.json` of model_type circuitgpt, see `circuitgpt.py`), or
a standard transformers causal LM (`hf.py`). The `--trust-remote-code` gate lives here and in
`circuitgpt.py`: repository code runs only when the caller asks for it.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from circuitbench.errors import ConfigError, ModelNotFoundError
from circuitbench.models.adapter import ModelAdapter
from circuitbench.models.circuitgpt import HF_CONFIG_FILE, is_circuitgpt_dir, load_circuitgpt
from circuitbench.models.native import CONFIG_FILE, load_native

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Files a model needs: configs and tokenizers (json, txt merges, sentencepiece, tiktoken) and weights.
ALLOW_PATTERNS = [
    "*.json", "*.txt", "*.model", "*.tiktoken", "vocab.bpe", "*.safetensors", "*.bin", "*.pt", "*.pth",
]
# Weights of other frameworks and training state: never needed, sometimes large.
IGNORE_PATTERNS = [
    "optimizer*", "scheduler*", "rng_state*", "training_args.bin", "*.msgpack", "*.h5", "*.onnx", "*.ot",
    "*.gguf", "onnx/*", "flax_model*", "tf_model*", "*/*",
]
FORMATS = (
    f"released circuit-sparsity: {CONFIG_FILE} + final_model.pt (or model.safetensors); "
    f"Hub circuit-sparsity: {HF_CONFIG_FILE} with model_type circuitgpt (or GPTConfig keys) + "
    "model.safetensors / pytorch_model.bin / *.pt + tokenizer.json; "
    f"transformers causal LM: {HF_CONFIG_FILE} with model_type + model.safetensors or pytorch_model.bin"
)


def model_folder(name: str) -> Path | None:
    """The folder a `--model` value names on this machine: a bundled model's, or the directory given; else None."""
    return bundled_models().get(name) or (Path(name) if Path(name).is_dir() else None)


def bundled_models() -> dict[str, Path]:
    """Short name -> directory of every model shipped in `baselines/models/`."""
    root = Path(str(resources.files("circuitbench.baselines"))) / "models"
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / CONFIG_FILE).is_file()}


def is_hub_id(arg: str) -> bool:
    """Whether an argument has the shape of a Hub repository id, `owner/name`."""
    return bool(_HUB_ID.match(arg)) and ".." not in arg


_BARE_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}$")


def is_bare_hub_id(arg: str) -> bool:
    """Whether an argument can be one of the Hub's legacy ids without an owner (`gpt2`, `distilgpt2`)."""
    return bool(_BARE_HUB_ID.match(arg)) and ".." not in arg and not arg.endswith((".pt", ".json", ".safetensors"))


def resolve_model_dir(path_or_id: str) -> Path:
    """Find the local directory behind a model argument: a path first, then a bundled name.

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
        f"Bundled models: {', '.join(bundled) or '(none)'}. A Hub id is owner/name (or a legacy bare name such "
        "as gpt2)."
    )


def hub_cache_dir() -> Path:
    """The Hugging Face cache as the environment names it now, resolved as huggingface_hub does at import.

    HF_HUB_CACHE, then HUGGINGFACE_HUB_CACHE, then HF_HOME/hub, then XDG_CACHE_HOME/huggingface/hub,
    then ~/.cache/huggingface/hub.
    """
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set now (or was when huggingface_hub was imported)."""
    if "HF_HUB_OFFLINE" in os.environ:
        return os.environ["HF_HUB_OFFLINE"].strip().upper() in {"1", "ON", "YES", "TRUE"}
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def download_model(
    repo_id: str, revision: str | None = None, trust_remote_code: bool = False
) -> tuple[Path, dict[str, Any]]:
    """Fetch (or find in the cache) a Hub model's snapshot.

    Args:
        repo_id: `owner/name`.
        revision: branch, tag or commit (default: main).
        trust_remote_code: also fetch the repository's `*.py` files.

    Returns:
        The snapshot directory, and provenance: `repo_id`, `revision` (as asked) and `commit` (resolved).

    Raises:
        ModelNotFoundError: when the repo, revision or cached copy is missing, gated, or unreachable,
            saying which and how to fix it.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache, offline = hub_cache_dir(), hub_offline()
    rev = revision or "main"
    allow = ALLOW_PATTERNS + (["*.py"] if trust_remote_code else [])
    where = f"{repo_id} (revision {rev})"
    try:
        folder = snapshot_download(repo_id, revision=rev, cache_dir=cache, local_files_only=offline,
                                   allow_patterns=allow, ignore_patterns=IGNORE_PATTERNS)
    except GatedRepoError as err:
        raise ModelNotFoundError(
            f"{where}: the repository is gated. Accept its terms at https://huggingface.co/{repo_id} and log "
            "in (`hf auth login`, or set HF_TOKEN)."
        ) from err
    except RevisionNotFoundError as err:
        raise ModelNotFoundError(
            f"{where}: the Hub has no revision {rev!r} in this repository; --revision takes a branch, tag or "
            "commit hash."
        ) from err
    except RepositoryNotFoundError as err:
        raise ModelNotFoundError(
            f"{repo_id}: no such repository on the Hub, or it is private (log in with `hf auth login` or set "
            f"HF_TOKEN), and no local directory of that name."
        ) from err
    except LocalEntryNotFoundError as err:
        raise ModelNotFoundError(_not_cached_message(repo_id, rev, cache, offline, err)) from err
    except HFValidationError as err:
        raise ModelNotFoundError(f"{repo_id}: not a valid Hub repository id ({err})") from err
    except (HfHubHTTPError, OSError) as err:
        raise ModelNotFoundError(
            f"{where}: download failed ({type(err).__name__}: {str(err)[:300]}). Check the connection, or "
            f"set HF_HUB_OFFLINE=1 to use the cache at {cache}."
        ) from err
    snapshot = Path(folder)
    return snapshot, {"repo_id": repo_id, "revision": rev, "commit": snapshot.name}


def _not_cached_message(repo_id: str, rev: str, cache: Path, offline: bool, err: Exception) -> str:
    from huggingface_hub.constants import REPO_ID_SEPARATOR

    storage = cache / ("models" + REPO_ID_SEPARATOR + repo_id.replace("/", REPO_ID_SEPARATOR))
    refs = storage / "refs"
    cached = sorted(str(p.relative_to(refs)) for p in refs.rglob("*") if p.is_file()) if refs.is_dir() else []
    snaps = sorted(p.name for p in (storage / "snapshots").iterdir()) if (storage / "snapshots").is_dir() else []
    have = (f" Cached: refs {', '.join(cached) or '(none)'}; snapshots {', '.join(snaps) or '(none)'}."
            if storage.is_dir() else "")
    fetch = f"`hf download {repo_id} --revision {rev}`"
    if offline:
        return (f"{repo_id} (revision {rev}): no local directory of that name, not in the Hugging Face cache at "
                f"{cache}, and HF_HUB_OFFLINE=1 forbids downloading.{have} Download it while online with "
                f"{fetch} (same HF_HUB_CACHE/HF_HOME), or unset HF_HUB_OFFLINE.")
    return (f"{repo_id} (revision {rev}): the Hub could not be reached and the model is not in the cache at "
            f"{cache}.{have} Check the connection (or a proxy), then retry or run {fetch}. ({err})")


@dataclass(frozen=True)
class ModelFormat:
    """A model directory layout circuitbench can load: how to recognise it and how to load it."""

    name: str
    detect: Callable[[Path], bool]
    load: Callable[..., ModelAdapter]
    """load(directory, device=, dtype=, name=, trust_remote_code=, revision_info=) -> adapter."""


MODEL_FORMATS: list[ModelFormat] = []
"""The format registry, tried in order; `register_format` adds one."""


def register_format(fmt: ModelFormat, first: bool = False) -> None:
    """Make a directory layout loadable by `load_model` (tried before the built-ins with `first`)."""
    if any(f.name == fmt.name for f in MODEL_FORMATS):
        raise ValueError(f"model format {fmt.name!r} is registered already")
    MODEL_FORMATS.insert(0, fmt) if first else MODEL_FORMATS.append(fmt)


def _load_native_format(directory: Path, *, device: Any, dtype: Any, name: str, trust_remote_code: bool,
                        revision_info: dict[str, Any] | None) -> ModelAdapter:
    adapter: ModelAdapter = load_native(directory, device=device, dtype=dtype, name=name)
    adapter.provenance.update(revision_info or {})
    return adapter


def _load_circuitgpt_format(directory: Path, **kw: Any) -> ModelAdapter:
    return load_circuitgpt(directory, **kw)


def _load_transformers_format(directory: Path, **kw: Any) -> ModelAdapter:
    try:
        from circuitbench.models.hf_load import load_transformers
    except ImportError as err:
        raise ModelNotFoundError(
            f"{directory}: a transformers model ({HF_CONFIG_FILE}), but this build has no transformers adapter "
            "(circuitbench.models.hf)."
        ) from err
    return load_transformers(directory, **kw)


FORMAT_GROUP = "circuitbench.models"
"""The entry-point group of model formats from other packages: each names a `ModelFormat`."""


def _register_format_plugins() -> None:
    """Register the model formats installed packages provide (after the built-ins, which they cannot shadow).

    Raises:
        ConfigError: naming the plugin when it fails to load or is not a `ModelFormat`.
    """
    from circuitbench.plugins import entry_points, load_entry_point

    for name, ep in entry_points(FORMAT_GROUP).items():
        fmt = load_entry_point(ep, "model format")
        if not isinstance(fmt, ModelFormat):
            raise ConfigError(f"model format {name} ({ep.value}): a {type(fmt).__name__}, not a "
                              "circuitbench.models.hub.ModelFormat(name, detect, load)")
        if not any(f.name == fmt.name for f in MODEL_FORMATS):
            register_format(fmt)


def detect_format(directory: Path) -> str:
    """Name the format of a model directory ("circuit-sparsity", "circuit-sparsity-hub", "transformers", ...).

    Formats from installed packages (entry points in `circuitbench.models`) are tried after the built-ins.

    Raises:
        ModelNotFoundError: listing the files found and what each format needs.
    """
    _register_format_plugins()
    for fmt in MODEL_FORMATS:
        if fmt.detect(directory):
            return fmt.name
    found = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    raise ModelNotFoundError(
        f"{directory}: not a model directory this version can load. Files present: "
        f"{', '.join(found[:50]) or '(none)'}{' ...' if len(found) > 50 else ''}. Formats and the files each "
        f"needs: {FORMATS}."
    )


def _is_transformers_dir(directory: Path) -> bool:
    try:
        from circuitbench.models.hf_load import is_transformers_dir
    except ImportError:
        # The transformers adapter is not part of this build; recognise the layout to say so.
        return (directory / HF_CONFIG_FILE).is_file()
    return bool(is_transformers_dir(directory))


def load_model(
    path_or_id: Any,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    tokenizer: Any = None,
) -> ModelAdapter:
    """Load a model by directory, bundled name, Hub id or factory spec, or wrap a model object.

    See `circuitbench.load_model`.

    Raises:
        ModelNotFoundError: when nothing matches, or the directory holds no known model format.
        CheckpointError: when weights do not fit the config (listing keys; offering --trust-remote-code).
    """
    from circuitbench.models.external import is_factory_spec, load_factory, wrap_model

    if not isinstance(path_or_id, str):
        return wrap_model(path_or_id, tokenizer)
    if is_factory_spec(path_or_id) and not Path(path_or_id).expanduser().exists():
        return load_factory(path_or_id, device=device, dtype=dtype)  # type: ignore[arg-type]
    revision_info: dict[str, Any] | None = None
    path = Path(path_or_id).expanduser()
    local = path.is_dir() or path.exists() or path_or_id in bundled_models()
    if local or not (is_hub_id(path_or_id) or is_bare_hub_id(path_or_id)):
        directory = resolve_model_dir(path_or_id)
        if revision is not None:
            log.warning("revision=%s ignored: %s is a local directory", revision, directory)
        name = path_or_id if path_or_id in bundled_models() else directory.name
    elif is_hub_id(path_or_id):
        directory, revision_info = download_model(path_or_id, revision, trust_remote_code)
        name = path_or_id
    else:  # a bare name (`gpt2`): a Hub id without an owner, unless it is a mistyped bundled name
        try:
            directory, revision_info = download_model(path_or_id, revision, trust_remote_code)
        except ModelNotFoundError as err:
            try:
                resolve_model_dir(path_or_id)  # raises the local error, with a did-you-mean
            except ModelNotFoundError as local_err:
                raise ModelNotFoundError(f"{local_err} As a Hub id: {str(err).removeprefix(path_or_id + ': ')}") \
                    from None
            raise
        name = path_or_id
    fmt = next(f for f in MODEL_FORMATS if f.name == detect_format(directory))
    return fmt.load(directory, device=device, dtype=dtype, name=name, trust_remote_code=trust_remote_code,
                    revision_info=revision_info)


register_format(ModelFormat("circuit-sparsity", lambda d: (d / CONFIG_FILE).is_file(), _load_native_format))
register_format(ModelFormat("circuit-sparsity-hub", lambda d: is_circuitgpt_dir(d), _load_circuitgpt_format))
register_format(ModelFormat("transformers", lambda d: _is_transformers_dir(d), _load_transformers_format))
