"""A saved circuit: kept channels per site, every node's score, the ablation values; its edge table.

Saved next to its unit, re-evaluable, exportable.

Files written per unit (beside `TASK.METHOD.seedN.parquet`):
- `TASK.METHOD.seedN.circuit.safetensors`: tensors `scores` ([n_nodes] float32, the method's score of
  every node in flat site order), `ablation` ([value_size] float32, the value each pruned node took) and
  `kept.SITE` (int64 channel indices kept at each site, ascending); its metadata `circuitbench.circuit`
  is JSON: format version, unit key, model, task, k, the site layout (name, kind, layer, width,
  value_width), the head count, and the calibration when one was fitted.
  An edge-level circuit (`level` `edges` in the metadata) has one score per edge of the model's graph
  instead (`scores` [n_edges]; k edges kept), the graph's hash `graph_sha`, the extra value sites its
  ablation vector also covers (`value_sites`: each attention's head-mixed values), and `kept_edges`
  ([k, 4] int32: source site, source channel, destination site, destination channel; sites index
  `sites`) in place of `kept.SITE`.
- `TASK.METHOD.seedN.edges.parquet`: one row per edge, `src_site`, `src_channel`, `dst_site`,
  `dst_channel`, `weight` (NaN for weightless residual edges) and `kind` (`weighted` or `residual`).
  Its metadata `circuitbench.edges_total` is the unit's `edges`; it holds every edge up to
  `EDGE_TABLE_ROWS` (10,000), and the strongest 10,000 of a larger circuit.

The storage side of a circuit: it is built by `circuitbench.circuits` (`circuit_of`), and read and
written here, where nothing knows how it was found. MIB's graph format: `circuitbench.results.mib`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuitbench.errors import CircuitbenchError
from circuitbench.files import atomic_path

CIRCUIT_FORMAT = "1"
_META_KEY = "circuitbench.circuit"


@dataclass(frozen=True)
class SiteLayout:
    """One site of the node layout a circuit was found on."""

    name: str
    kind: str
    layer: int
    width: int
    value_width: int | None = None


@dataclass(frozen=True)
class Circuit:
    """A found circuit: the top `k` nodes by `scores`, pruned nodes set to `ablation`."""

    sites: tuple[SiteLayout, ...]
    scores: Tensor
    """[n_nodes] float32: the method's score of every node (higher = kept first)."""
    k: int
    """Nodes kept."""
    ablation_values: Tensor
    """[value_size] float32: the value each pruned node took."""
    n_head: int | None = None
    calibration: dict[str, Any] | None = None
    """{"scale": float, "shift": {token: float}} when the circuit was scored after a fitted calibration."""
    unit_key: str = ""
    model: str = ""
    task: str = ""
    level: str = "nodes"
    """`nodes`: scores and gates are per node; `edges`: per edge of the model's graph."""
    graph_sha: str = ""
    """Edge level: the hash of the graph the scores index (`EdgeIndex.sha`)."""
    value_sites: tuple[SiteLayout, ...] = ()
    """Edge level: sites the ablation vector covers after `sites` (each attention's head-mixed values)."""
    kept_edges: Tensor | None = None
    """Edge level: [k, 4] int64 (source site, source channel, destination site, destination channel)."""

    @property
    def n_nodes(self) -> int:
        """Nodes in the model (kept or not)."""
        return sum(s.width for s in self.sites)

    def gates(self) -> Tensor:
        """0/1 float32 over nodes (or edges, at the edge level): the top k by score, ties broken by index."""
        return keep_top(self.scores, self.k)

    def kept(self) -> dict[str, list[int]]:
        """Kept channel indices per site (every site listed, possibly empty).

        At the edge level: the nodes at either end of a kept edge.
        """
        if self.level == "edges":
            assert self.kept_edges is not None
            touched: dict[str, set[int]] = {s.name: set() for s in self.sites}
            for src, sc, dst, dc in self.kept_edges.tolist():
                touched[self.sites[src].name].add(sc)
                touched[self.sites[dst].name].add(dc)
            return {name: sorted(v) for name, v in touched.items()}
        g, out, start = self.gates(), {}, 0
        for s in self.sites:
            out[s.name] = torch.nonzero(g[start : start + s.width] > 0.5).flatten().tolist()
            start += s.width
        return out

    # --- files ----------------------------------------------------------------------------------

    def save(self, path: Path) -> Path:
        """Write the circuit as safetensors with JSON metadata, atomically."""
        from safetensors.torch import save_file

        tensors = {"scores": self.scores.contiguous(), "ablation": self.ablation_values.contiguous()}
        meta = {"format": CIRCUIT_FORMAT, "unit_key": self.unit_key, "model": self.model, "task": self.task,
                "k": self.k, "n_head": self.n_head, "calibration": self.calibration,
                "sites": [s.__dict__ for s in self.sites]}
        if self.level == "edges":
            assert self.kept_edges is not None
            tensors["kept_edges"] = self.kept_edges.to(torch.int32).contiguous()  # half the bytes of int64
            meta.update(level="edges", graph_sha=self.graph_sha, value_sites=[s.__dict__ for s in self.value_sites])
        else:
            for name, idx in self.kept().items():
                tensors[f"kept.{name}"] = torch.tensor(idx, dtype=torch.int64)
        with atomic_path(Path(path)) as tmp:
            save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta)})
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> Circuit:
        """Read a circuit file back, checking its format and that `kept` agrees with `scores` and `k`.

        Raises:
            CircuitbenchError: for a missing, unreadable, foreign or inconsistent file.
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise CircuitbenchError(f"{path}: no circuit file (units written before circuits were saved have none; "
                                    "rerun the unit with --force)")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta_text = (f.metadata() or {}).get(_META_KEY)
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no items())
        except Exception as err:  # safetensors raises its own error types
            raise CircuitbenchError(f"{path}: unreadable circuit file ({err})") from err
        if meta_text is None:
            raise CircuitbenchError(f"{path}: not a circuitbench circuit (no `{_META_KEY}` metadata)")
        try:
            meta = json.loads(meta_text)
        except ValueError:
            raise CircuitbenchError(f"{path}: its `{_META_KEY}` metadata is not valid JSON; the file was edited or "
                                    "is corrupt: rerun the unit with --force") from None
        if not isinstance(meta, dict) or meta.get("format") != CIRCUIT_FORMAT:
            meta = meta if isinstance(meta, dict) else {}
            raise CircuitbenchError(f"{path}: circuit format v{meta.get('format')}, this circuitbench reads "
                                    f"v{CIRCUIT_FORMAT}; rerun the unit with --force")
        try:
            c = cls(tuple(SiteLayout(**s) for s in meta["sites"]), tensors["scores"], int(meta["k"]),
                    tensors["ablation"], meta.get("n_head"), meta.get("calibration"), meta.get("unit_key", ""),
                    meta.get("model", ""), meta.get("task", ""), meta.get("level", "nodes"),
                    meta.get("graph_sha", ""), tuple(SiteLayout(**s) for s in meta.get("value_sites", [])),
                    None if "kept_edges" not in tensors else tensors["kept_edges"].to(torch.int64))
        except (KeyError, TypeError, ValueError) as err:
            raise CircuitbenchError(f"{path}: a circuit file missing or mistyping {err}; the file was edited or is "
                                    "corrupt: rerun the unit with --force") from None
        if c.level == "edges":
            if c.kept_edges is None or len(c.kept_edges) != c.k:
                raise CircuitbenchError(f"{path}: an edge-level circuit whose kept_edges do not number k = {c.k}; "
                                        "the file was edited or is corrupt")
            return c
        stored = {s.name: tensors[f"kept.{s.name}"].tolist() for s in c.sites}
        if stored != c.kept():
            raise CircuitbenchError(f"{path}: the stored kept channels disagree with scores and k; the file "
                                    "was edited or is corrupt")
        return c


def circuit_paths(unit_file: Path) -> tuple[Path, Path]:
    """The circuit and edge files that belong to a unit's Parquet file."""
    stem = Path(unit_file).with_suffix("")
    return stem.with_name(stem.name + ".circuit.safetensors"), stem.with_name(stem.name + ".edges.parquet")


def keep_top(scores: Tensor, k: int) -> Tensor:
    """A 0/1 gate keeping the k highest-scoring nodes (ties broken by index, deterministically).

    This is what "the top-k circuit of a ranking" means everywhere: the search, the curves and a saved
    circuit's `gates()`.
    """
    gates = torch.zeros_like(scores, dtype=torch.float32)
    if k > 0:
        order = torch.argsort(scores.float(), descending=True, stable=True)
        gates[order[:k]] = 1.0
    return gates


# --- edges -----------------------------------------------------------------------------------------


EDGE_TABLE_ROWS = 10_000
"""The most rows an edge table holds. A circuit with more edges (a random or a dense model's circuit of
thousands of nodes has up to 10^5-10^6) keeps its strongest weighted edges, then residual ones, and the
table's metadata `circuitbench.edges_total` records how many there are in all; the unit's `edges` is
always the full count."""

_EDGES_TOTAL = b"circuitbench.edges_total"


def strongest_edges(rows: list[dict[str, Any]], limit: int = EDGE_TABLE_ROWS) -> list[dict[str, Any]]:
    """At most `limit` rows: the weighted edges by |weight| (ties by name), then the residual ones, in order."""
    if len(rows) <= limit:
        return rows
    weighted = sorted((r for r in rows if r["kind"] == "weighted"),
                      key=lambda r: (-abs(r["weight"]), r["src_site"], r["src_channel"], r["dst_site"],
                                     r["dst_channel"]))
    residual = [r for r in rows if r["kind"] != "weighted"]
    return (weighted + residual)[:limit]


def write_edges(path: Path, rows: list[dict[str, Any]], limit: int = EDGE_TABLE_ROWS) -> Path:
    """Write an edge table as Parquet, atomically; above `limit` rows, the strongest (see `EDGE_TABLE_ROWS`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("src_site", pa.string()), ("src_channel", pa.int64()), ("dst_site", pa.string()),
                        ("dst_channel", pa.int64()), ("weight", pa.float64()), ("kind", pa.string())],
                       metadata={_EDGES_TOTAL: str(len(rows)).encode()})
    with atomic_path(Path(path)) as tmp:
        pq.write_table(pa.Table.from_pylist(strongest_edges(rows, limit), schema=schema), tmp, compression="zstd")
    return Path(path)


def edges_total(path: Path) -> int:
    """How many edges the circuit has in all (an edge table written before the cap holds every one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        md = pq.read_schema(path).metadata or {}
        return int(md[_EDGES_TOTAL]) if _EDGES_TOTAL in md else pq.read_metadata(path).num_rows
    except (OSError, ValueError, pa.ArrowException) as err:
        raise CircuitbenchError(f"{path}: not a readable edge table ({str(err).splitlines()[0][:200]}); rerun the "
                                "unit with --force to write it again") from None
