"""The `Bridges` module, its files, and the checks that refuse models that cannot be bridged.

A bridge directory holds:
- `bridges.safetensors`: per location i, `encoder.{i}.weight` [d_sparse, d_dense], `encoder.{i}.bias`,
  `decoder.{i}.weight` [d_dense, d_sparse], `decoder.{i}.bias`;
- `bridge_config.json`: the locations (hook names, in forward order), the widths, the encoder's AbsTopK k,
  both models (name, path, weights sha256), the tokenizer check, the training settings and loss curve
  summary, and the evaluation when measured;
- `README.md`: the card, rendered from the config.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from circuitbench.errors import CircuitbenchError
from circuitbench.files import atomic_path
from circuitbench.models.sparse_gpt import abs_topk
from circuitbench.protocols import ModelAdapter

WEIGHTS = "bridges.safetensors"
CONFIG = "bridge_config.json"
CARD = "README.md"
FORMAT = 1
"""The bridge directory's format version (`bridge_config.json`'s `format`)."""

_LOCATION = re.compile(r"^(\d+\.resid_in|\d+\.resid_mid|final_resid)$")


class BridgeError(CircuitbenchError):
    """Two models that cannot be bridged, or a bridge directory that cannot be used as asked."""


def residual_locations(hook_names: list[str]) -> list[str]:
    """The residual locations among a model's hook points, in forward order.

    `{i}.resid_in` (before block i's attention), `{i}.resid_mid` (before its MLP) and `final_resid`.
    """
    return [n for n in hook_names if _LOCATION.match(n)]


def location_of(site_name: str, kind: str, layer: int, n_layer: int) -> str | None:
    """The residual location whose channels a node site's channels are, or None for a site off the residual.

    A read (`attn_in`, `mlp_in`) reads the residual before its block's norm: channel c of `{i}.attn.act_in`
    is channel c of `{i}.resid_in`. A write (`attn_out`, `mlp_out`) adds channel c to the residual after it:
    `{i}.attn.resid_delta` lands in `{i}.resid_mid`, `{i}.mlp.resid_delta` in `{i+1}.resid_in` (the final
    residual after the last block). Queries, keys, values and MLP neurons are not residual channels.
    """
    if kind == "attn_in":
        return f"{layer}.resid_in"
    if kind in ("attn_out", "mlp_in"):
        return f"{layer}.resid_mid"
    if kind == "mlp_out":
        return f"{layer + 1}.resid_in" if layer + 1 < n_layer else "final_resid"
    return None


def _tokenizer_fingerprint(adapter: ModelAdapter) -> tuple[int, list[str]]:
    tok = adapter.tokenizer
    return int(tok.vocab_size), [tok.decode([i]) for i in range(int(tok.vocab_size))]


def check_bridgeable(dense: ModelAdapter, sparse: ModelAdapter, flags: tuple[str, str] = ("--dense", "--sparse")
                     ) -> dict[str, Any]:
    """Refuse, with the reason, two models a bridge cannot join; else their shared locations and widths.

    Bridged models must read the same tokens (a hybrid pass feeds one model's residual for a token into the
    other's at the same position): the same vocabulary, every id decoding to the same text. They must share
    their residual locations one to one (the same number of blocks, each with attention and MLP in sequence).
    Their residual widths may differ: each map is linear between the two widths.

    Returns:
        {"locations": [...], "d_dense": int, "d_sparse": int}

    Raises:
        BridgeError: naming both models and what differs.
    """
    fd, fs = flags
    names = f"{fd} {dense.name} and {fs} {sparse.name}"
    (vd, td), (vs, ts) = _tokenizer_fingerprint(dense), _tokenizer_fingerprint(sparse)
    if vd != vs:
        raise BridgeError(f"{names}: different tokenizers ({vd} and {vs} tokens); a bridge passes one model's "
                          "residual for a token to the other model at the same position, so both must read the "
                          "same tokens. Bridge models trained with the same tokenizer.")
    differ = [i for i, (a, b) in enumerate(zip(td, ts, strict=True)) if a != b]
    if differ:
        i = differ[0]
        raise BridgeError(f"{names}: different tokenizers ({len(differ)} of {vd} ids decode differently, e.g. id "
                          f"{i}: {td[i]!r} vs {ts[i]!r}). Bridge models trained with the same tokenizer.")
    ld = residual_locations(list(getattr(dense, "hook_names", [])))
    ls = residual_locations(list(getattr(sparse, "hook_names", [])))
    if not ld or not ls:
        which = fd if not ld else fs
        raise BridgeError(f"{which} {(dense if not ld else sparse).name}: exposes no residual stream hook points "
                          "({i}.resid_in, {i}.resid_mid, final_resid), so there is nowhere to attach a bridge.")
    if ld != ls:
        raise BridgeError(f"{names}: their residual locations differ ({len(ld)}: {', '.join(ld)} vs {len(ls)}: "
                          f"{', '.join(ls)}); bridges join the same location of both models, so both need the "
                          "same number of blocks with attention then MLP.")
    probe = torch.zeros(1, 2, dtype=torch.long)
    _, cd = dense.run_with_cache(probe.to(dense.device), [ld[0]])
    _, cs = sparse.run_with_cache(probe.to(sparse.device), [ls[0]])
    return {"locations": ld, "d_dense": int(cd[ld[0]].shape[-1]), "d_sparse": int(cs[ls[0]].shape[-1])}


def default_topk(sparse: ModelAdapter, d_sparse: int) -> int | None:
    """The encoder's AbsTopK k: the sparse model's activation sparsity (`afrac` x width), None for a model without."""
    afrac = getattr(getattr(sparse, "config", None), "afrac", None)
    return None if afrac is None else max(1, int(afrac * d_sparse))


class Bridges(nn.Module):
    """One encoder (linear, then AbsTopK) and one decoder (linear) per residual location."""

    def __init__(self, locations: list[str], d_dense: int, d_sparse: int, topk: int | None) -> None:
        super().__init__()
        self.locations = list(locations)
        self.d_dense, self.d_sparse, self.topk = d_dense, d_sparse, topk
        self.encoder = nn.ModuleList([nn.Linear(d_dense, d_sparse) for _ in locations])
        self.decoder = nn.ModuleList([nn.Linear(d_sparse, d_dense) for _ in locations])
        self._index = {loc: i for i, loc in enumerate(locations)}

    def index(self, location: str) -> int:
        """The position of a location in `locations`.

        Raises:
            BridgeError: for a location these bridges do not cover.
        """
        if location not in self._index:
            raise BridgeError(f"no bridge at {location}; these bridges cover {', '.join(self.locations)}")
        return self._index[location]

    def encode(self, location: str | int, x: Tensor) -> Tensor:
        """Dense residual [..., d_dense] -> sparse residual [..., d_sparse] (AbsTopK when `topk` is set)."""
        lin = self.linear(self.encoder, location)
        y = lin(x.to(lin.weight.dtype))
        return y if self.topk is None else abs_topk(y, self.topk)

    def decode(self, location: str | int, x: Tensor) -> Tensor:
        """Sparse residual [..., d_sparse] -> dense residual [..., d_dense]."""
        lin = self.linear(self.decoder, location)
        return lin(x.to(lin.weight.dtype))

    def linear(self, maps: nn.ModuleList, location: str | int) -> nn.Linear:
        """The map of `maps` (`encoder` or `decoder`) at a location (a name or its index)."""
        lin = maps[location if isinstance(location, int) else self.index(location)]
        assert isinstance(lin, nn.Linear)
        return lin

    @torch.no_grad()
    def fit_least_squares(self, dense_acts: dict[str, Tensor], sparse_acts: dict[str, Tensor], ridge: float = 1e-3
                          ) -> None:
        """Start every map at its ridge-regression solution on cached residuals ([N, d] per location).

        Training from there converges in a few hundred steps; from a random start the KL terms see garbage
        residuals for most of the run.
        """
        for i, loc in enumerate(self.locations):
            for lin, x, y in ((self.encoder[i], dense_acts[loc], sparse_acts[loc]),
                              (self.decoder[i], sparse_acts[loc], dense_acts[loc])):
                assert isinstance(lin, nn.Linear)
                x, y = x.double(), y.double()
                mx, my = x.mean(0), y.mean(0)
                xc, yc = x - mx, y - my
                gram = xc.T @ xc
                gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
                w = torch.linalg.solve(gram, xc.T @ yc)  # [d_in, d_out]
                lin.weight.copy_(w.T.to(lin.weight.dtype))
                lin.bias.copy_((my - mx @ w).to(lin.bias.dtype))

    @classmethod
    def identity(cls, locations: list[str], width: int) -> Bridges:
        """Encoder and decoder the identity at every location (a model bridged to itself passes through exactly)."""
        b = cls(locations, width, width, None)
        with torch.no_grad():
            for lin in [*b.encoder, *b.decoder]:
                lin.weight.copy_(torch.eye(width))
                lin.bias.zero_()
        return b


@dataclass
class BridgeFiles:
    """A bridge directory read back: the module and its config."""

    path: Path
    bridges: Bridges
    config: dict[str, Any] = field(default_factory=dict)


def save_bridges(directory: Path, bridges: Bridges, config: dict[str, Any]) -> None:
    """Write `bridges.safetensors` and `bridge_config.json` atomically (the card is `card.write_card`'s)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in bridges.state_dict().items()}
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": str(FORMAT)})
    full = {"format": FORMAT, "locations": bridges.locations, "d_dense": bridges.d_dense,
            "d_sparse": bridges.d_sparse, "topk": bridges.topk, **config}
    with atomic_path(directory / CONFIG) as tmp:
        tmp.write_text(json.dumps(full, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def bundled_bridges() -> dict[str, Path]:
    """Short name -> directory of every bridge set shipped in `baselines/bridges/`."""
    from importlib import resources

    root = Path(str(resources.files("circuitbench.baselines"))) / "bridges"
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / CONFIG).is_file()}


def resolve_bridges_dir(arg: str | Path, flag: str = "--bridges") -> Path:
    """A bridge directory from a path or a bundled name.

    Raises:
        BridgeError: naming the flag, what was tried and the bundled names.
    """
    path = Path(arg)
    if (path / CONFIG).is_file():
        return path
    bundled = bundled_bridges()
    if str(arg) in bundled:
        return bundled[str(arg)]
    what = "a folder without " + CONFIG if path.is_dir() else "no such folder"
    raise BridgeError(f"{flag} {arg}: {what}, and no bundled bridges of that name "
                      f"(bundled: {', '.join(bundled) or 'none'}). Train some with `circuitbench bridge train`.")


def load_bridges(arg: str | Path, flag: str = "--bridges") -> BridgeFiles:
    """Read a bridge directory (a path or a bundled name).

    Raises:
        BridgeError: for a missing or unreadable directory, or files that do not fit their config.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = resolve_bridges_dir(arg, flag)
    try:
        config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        tensors = load_file(str(directory / WEIGHTS))
    except (OSError, ValueError, SafetensorError) as err:  # a truncated file is a SafetensorError
        raise BridgeError(f"{flag} {directory}: unreadable bridge files ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); train the bridges again") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise BridgeError(f"{flag} {directory}/{CONFIG}: not a format-{FORMAT} bridge config; retrain the bridges "
                          "with this version of circuitbench")
    try:
        bridges = Bridges(list(config["locations"]), int(config["d_dense"]), int(config["d_sparse"]),
                          None if config.get("topk") is None else int(config["topk"]))
        bridges.load_state_dict(tensors)
    except (KeyError, TypeError, RuntimeError) as err:
        raise BridgeError(f"{flag} {directory}: {WEIGHTS} does not fit {CONFIG} ({str(err).splitlines()[0]})") from err
    return BridgeFiles(directory, bridges.eval().requires_grad_(False), config)


def model_record(adapter: ModelAdapter) -> dict[str, Any]:
    """What a bridge records of a model: its name, where it was loaded from, its weights' sha256."""
    return {"name": adapter.name, "path": adapter.provenance.get("model_path"),
            "weights_sha256": adapter.provenance.get("weights_sha256")}


def check_models_match(files: BridgeFiles, dense: ModelAdapter, sparse: ModelAdapter) -> None:
    """Refuse models other than the ones the bridges were trained between (compared by weights' sha256).

    Raises:
        BridgeError: naming the side, both hashes and the fix.
    """
    for side, adapter in (("dense", dense), ("sparse", sparse)):
        want = (files.config.get(side) or {}).get("weights_sha256")
        have = adapter.provenance.get("weights_sha256")
        if want is not None and have != want:
            raise BridgeError(f"--{side} {adapter.name}: these bridges ({files.path}) were trained with the {side} "
                              f"model of weights {str(want)[:12]}, this one has {str(have)[:12]}; give that model "
                              "or train bridges for this one.")


def load_bridged_models(files: BridgeFiles, dense: str | None, sparse: str | None, device: str = "cpu"
                        ) -> tuple[ModelAdapter, ModelAdapter]:
    """The two models of a bridge set: the ones named, else the ones its config records, checked against it."""
    import circuitbench

    out = []
    for side, arg in (("dense", dense), ("sparse", sparse)):
        rec = files.config.get(side) or {}
        name = arg
        if name is None:
            path = rec.get("path")
            name = path if path and Path(path).is_dir() else rec.get("name")
        if name is None:
            raise BridgeError(f"{files.path}/{CONFIG} names no {side} model; pass --{side}")
        out.append(circuitbench.load_model(name, device=device))
    check_models_match(files, out[0], out[1])
    return out[0], out[1]
