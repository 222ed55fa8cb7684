"""A circuit as data: kept channels per site, every node's score, the ablation values, and its edges.

Saved next to its unit, re-evaluable, exportable.

Files written per unit (beside `TASK.METHOD.seedN.parquet`):
- `TASK.METHOD.seedN.circuit.safetensors`: tensors `scores` ([n_nodes] float32, the method's score of
  every node in flat site order), `ablation` ([value_size] float32, the value each pruned node took) and
  `kept.SITE` (int64 channel indices kept at each site, ascending); its metadata `circuitbench.circuit`
  is JSON: format version, unit key, model, task, k, the site layout (name, kind, layer, width,
  value_width), the head count, and the calibration when one was fitted.
- `TASK.METHOD.seedN.edges.parquet`: one row per edge, `src_site`, `src_channel`, `dst_site`,
  `dst_channel`, `weight` (NaN for weightless residual edges) and `kind` (`weighted` or `residual`).
  Its metadata `circuitbench.edges_total` is the unit's `edges`; it holds every edge up to
  `EDGE_TABLE_ROWS` (10,000), and the strongest 10,000 of a larger circuit.

MIB export (`to_mib`): the EAP-IG `Graph` JSON that MIB's circuit track reads: `cfg` (n_layers, n_heads,
parallel_attn_mlp, d_model), `nodes` (input, a{L}.h{H}, m{L}, logits, each with `in_graph`, `score`, and at
neuron level `neurons` / `neurons_scores` over d_model), and `edges` named `src->dst` or `src->a{L}.h{H}<q|k|v>`
with `in_graph` and `score`. Where the mapping loses information:
- A head is in the graph when any of its q, k or v channels is kept; its channels' identities are lost.
- The attention write (`attn.resid_delta`) is shared by all heads of a layer in our site model; every
  head of the layer gets the same `neurons` (the kept write channels).
- MIB's edges are between components, ours between channels: an MIB edge is in the graph when at least one
  channel path (kept write channel -> kept read channel of the same index -> nonzero weight to a kept
  channel of the child) realises it, and its `score` is the number of such paths.
- The embedding is not a node here: `input` edges are those whose child reads a kept residual channel
  that reaches it, whatever wrote it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuitbench.circuits.masks import NodeIndex, keep_top
from circuitbench.errors import CircuitbenchError

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
    ablation: Tensor
    """[value_size] float32: the value each pruned node took."""
    n_head: int | None = None
    calibration: dict[str, Any] | None = None
    """{"scale": float, "shift": {token: float}} when the circuit was scored after a fitted calibration."""
    unit_key: str = ""
    model: str = ""
    task: str = ""

    @classmethod
    def of(cls, index: NodeIndex, scores: Tensor, k: int, ablation: Tensor, **meta: Any) -> Circuit:
        """The circuit of a node ranking cut at k."""
        sites = tuple(SiteLayout(s.name, s.kind, s.layer, s.width, s.value_width) for s in index.sites)
        return cls(sites, scores.detach().float().cpu(), int(k), ablation.detach().float().cpu(), **meta)

    @property
    def n_nodes(self) -> int:
        """Nodes in the model (kept or not)."""
        return sum(s.width for s in self.sites)

    def gates(self) -> Tensor:
        """[n_nodes] 0/1 float32: the kept nodes (top k by score, ties broken by index)."""
        return keep_top(self.scores, self.k)

    def kept(self) -> dict[str, list[int]]:
        """Kept channel indices per site (every site listed, possibly empty)."""
        g, out, start = self.gates(), {}, 0
        for s in self.sites:
            out[s.name] = torch.nonzero(g[start : start + s.width] > 0.5).flatten().tolist()
            start += s.width
        return out

    def check_layout(self, index: NodeIndex) -> None:
        """Raise unless the circuit was found on this model's node layout."""
        mine = [(s.name, s.width) for s in self.sites]
        theirs = [(s.name, s.width) for s in index.sites]
        if mine != theirs:
            diff = next((f"{a} vs {b}" for a, b in zip(mine, theirs, strict=False) if a != b),
                        f"{len(mine)} vs {len(theirs)} sites")
            raise CircuitbenchError(f"the circuit's node layout differs from this model's ({diff}); "
                                    "load the model the circuit was found on.")

    # --- files ----------------------------------------------------------------------------------

    def save(self, path: Path) -> Path:
        """Write the circuit as safetensors with JSON metadata, atomically."""
        from safetensors.torch import save_file

        from circuitbench.results.files import atomic_path

        tensors = {"scores": self.scores.contiguous(), "ablation": self.ablation.contiguous()}
        for name, idx in self.kept().items():
            tensors[f"kept.{name}"] = torch.tensor(idx, dtype=torch.int64)
        meta = {"format": CIRCUIT_FORMAT, "unit_key": self.unit_key, "model": self.model, "task": self.task,
                "k": self.k, "n_head": self.n_head, "calibration": self.calibration,
                "sites": [s.__dict__ for s in self.sites]}
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
        meta = json.loads(meta_text)
        if meta.get("format") != CIRCUIT_FORMAT:
            raise CircuitbenchError(f"{path}: circuit format v{meta.get('format')}, this circuitbench reads "
                                    f"v{CIRCUIT_FORMAT}; rerun the unit with --force")
        c = cls(tuple(SiteLayout(**s) for s in meta["sites"]), tensors["scores"], int(meta["k"]),
                tensors["ablation"], meta.get("n_head"), meta.get("calibration"), meta.get("unit_key", ""),
                meta.get("model", ""), meta.get("task", ""))
        stored = {s.name: tensors[f"kept.{s.name}"].tolist() for s in c.sites}
        if stored != c.kept():
            raise CircuitbenchError(f"{path}: the stored kept channels disagree with scores and k; the file "
                                    "was edited or is corrupt")
        return c


def circuit_paths(unit_file: Path) -> tuple[Path, Path]:
    """The circuit and edge files that belong to a unit's Parquet file."""
    stem = Path(unit_file).with_suffix("")
    return stem.with_name(stem.name + ".circuit.safetensors"), stem.with_name(stem.name + ".edges.parquet")


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

    from circuitbench.results.files import atomic_path

    schema = pa.schema([("src_site", pa.string()), ("src_channel", pa.int64()), ("dst_site", pa.string()),
                        ("dst_channel", pa.int64()), ("weight", pa.float64()), ("kind", pa.string())],
                       metadata={_EDGES_TOTAL: str(len(rows)).encode()})
    with atomic_path(Path(path)) as tmp:
        pq.write_table(pa.Table.from_pylist(strongest_edges(rows, limit), schema=schema), tmp)
    return Path(path)


def edges_total(path: Path) -> int:
    """How many edges the circuit has in all (an edge table written before the cap holds every one)."""
    import pyarrow.parquet as pq

    md = pq.read_schema(path).metadata or {}
    return int(md[_EDGES_TOTAL]) if _EDGES_TOTAL in md else pq.read_metadata(path).num_rows


# --- MIB export ------------------------------------------------------------------------------------


def to_mib(circuit: Circuit, edges: list[dict[str, Any]]) -> dict[str, Any]:
    """The circuit as an EAP-IG / MIB `Graph` JSON dict at neuron level (see the module docstring).

    Raises:
        CircuitbenchError: for circuits on sites MIB's graph cannot express (SAE latents) or without a
            known head count.
    """
    by = {s.name: s for s in circuit.sites}
    if any(s.kind not in {"attn_in", "q", "k", "v", "attn_out", "mlp_in", "mlp_neuron", "mlp_out"}
           for s in circuit.sites):
        raise CircuitbenchError("MIB's graph has attention heads and MLPs only; this circuit has SAE sites. "
                                "Export circuits of models without --sae.")
    if not circuit.n_head:
        raise CircuitbenchError("the circuit file does not record the model's head count; rerun the unit")
    layers = sorted({s.layer for s in circuit.sites})
    n_head = circuit.n_head
    d_model = next(s.width for s in circuit.sites if s.kind == "attn_in")
    kept = {k: set(v) for k, v in circuit.kept().items()}
    flat = circuit.scores
    score_of: dict[str, Tensor] = {}
    start = 0
    for s in circuit.sites:
        score_of[s.name] = flat[start : start + s.width]
        start += s.width

    def site(layer: int, kind: str) -> str:
        return next(s.name for s in circuit.sites if s.layer == layer and s.kind == kind)

    nodes: dict[str, dict[str, Any]] = {"input": {"in_graph": True, "score": float("nan")}}
    head_channels: dict[str, dict[str, set[int]]] = {}
    for L in layers:
        q = by[site(L, "q")]
        d_head = q.width // n_head
        out = site(L, "attn_out")
        for h in range(n_head):
            name = f"a{L}.h{h}"
            chans = {letter: {c for c in kept[site(L, letter)] if c // d_head == h} for letter in "qkv"}
            head_channels[name] = chans
            sc = torch.cat([score_of[site(L, letter)][h * d_head : (h + 1) * d_head] for letter in "qkv"])
            nodes[name] = {"in_graph": any(chans.values()), "score": float(sc.max()),
                           "neurons": [c in kept[out] for c in range(d_model)],
                           "neurons_scores": score_of[out].tolist()}
        mout = site(L, "mlp_out")
        nodes[f"m{L}"] = {"in_graph": bool(kept[site(L, "mlp_neuron")]),
                          "score": float(score_of[site(L, "mlp_neuron")].max()),
                          "neurons": [c in kept[mout] for c in range(d_model)],
                          "neurons_scores": score_of[mout].tolist()}
    nodes["logits"] = {"in_graph": True}

    # channel paths: residual channel c read at a read site -> kept channel of a child through a weight
    feeds: dict[tuple[str, int], set[str]] = {}  # (read site, channel) -> MIB children it reaches
    for e in edges:
        if e["kind"] != "weighted":
            continue
        src, dst = by[e["src_site"]], by[e["dst_site"]]
        if src.kind == "attn_in" and dst.kind in "qkv":
            h = e["dst_channel"] // (by[e["dst_site"]].width // n_head)
            feeds.setdefault((src.name, e["src_channel"]), set()).add(f"a{dst.layer}.h{h}<{dst.kind}>")
        elif src.kind == "mlp_in" and dst.kind == "mlp_neuron":
            feeds.setdefault((src.name, e["src_channel"]), set()).add(f"m{dst.layer}")

    def writes(parent: str) -> set[int] | None:  # kept residual channels a parent writes (None: any)
        if parent == "input":
            return None
        L = int(parent[1:].split(".")[0])
        if parent.startswith("a"):
            return kept[site(L, "attn_out")] if nodes[parent]["in_graph"] else set()
        return kept[site(L, "mlp_out")] if nodes[parent]["in_graph"] else set()

    def reads(child: str) -> tuple[str, dict[int, bool]]:
        """(read site, {channel: reaches child}) for a child node name like a1.h0<q> or m1."""
        base = child.split("<")[0]
        L = int(base[1:].split(".")[0])
        rsite = site(L, "attn_in" if base.startswith("a") else "mlp_in")
        return rsite, {c: child in feeds.get((rsite, c), set()) for c in kept[rsite]}

    order: list[str] = ["input"]
    children: list[tuple[str, int]] = []  # (child name with <qkv>, position in order it follows)
    mib_edges: dict[str, dict[str, Any]] = {}
    for L in layers:
        heads = [f"a{L}.h{h}" for h in range(n_head)]
        for h in heads:
            for letter in "qkv":
                children.append((f"{h}<{letter}>", len(order)))
        order += heads
        children.append((f"m{L}", len(order)))
        order.append(f"m{L}")
    for child, upto in children:
        rsite, reach = reads(child)
        for parent in order[:upto]:
            w = writes(parent)
            n = sum(1 for c, ok in reach.items() if ok and (w is None or c in w))
            mib_edges[f"{parent}->{child}"] = {"in_graph": n > 0, "score": float(n)}
    final_reads = set(range(d_model))
    for parent in order:
        w = writes(parent)
        n = len(final_reads if w is None else w & final_reads)
        mib_edges[f"{parent}->logits"] = {"in_graph": n > 0 and (parent == "input" or nodes[parent]["in_graph"]),
                                          "score": float(n)}
    cfg = {"n_layers": len(layers), "n_heads": n_head, "parallel_attn_mlp": False, "d_model": d_model}
    return {"cfg": cfg, "nodes": nodes, "edges": mib_edges}


def read_mib(path: Path) -> dict[str, Any]:
    """Read an MIB / EAP-IG Graph JSON file and check it against the documented format.

    Checks the keys `cfg` (n_layers, n_heads, parallel_attn_mlp, d_model), `nodes` and `edges`; that the node
    set is input, a{L}.h{H}, m{L} and logits for the configured shape; that every edge name is
    `parent->child` or `parent->a{L}.h{H}<q|k|v>` between known nodes with the parent before the child;
    and that every edge and node carries `in_graph` (and `neurons` of length d_model where present).

    Returns:
        The parsed dict.

    Raises:
        CircuitbenchError: naming the first problem found.
    """
    import re

    d = json.loads(Path(path).read_text())
    for key in ("cfg", "nodes", "edges"):
        if key not in d:
            raise CircuitbenchError(f"{path}: missing key {key!r}")
    cfg = d["cfg"]
    for key in ("n_layers", "n_heads", "parallel_attn_mlp", "d_model"):
        if key not in cfg:
            raise CircuitbenchError(f"{path}: cfg has no {key!r}")
    nl, nh, dm = cfg["n_layers"], cfg["n_heads"], cfg["d_model"]
    expected = ["input"] + [n for L in range(nl) for n in [f"a{L}.h{h}" for h in range(nh)] + [f"m{L}"]] + ["logits"]
    if set(d["nodes"]) != set(expected):
        raise CircuitbenchError(f"{path}: nodes {sorted(set(d['nodes']) ^ set(expected))[:5]} do not fit the cfg")
    pos = {n: i for i, n in enumerate(expected)}
    for name, node in d["nodes"].items():
        if "in_graph" not in node:
            raise CircuitbenchError(f"{path}: node {name} has no in_graph")
        if "neurons" in node and len(node["neurons"]) != dm:
            raise CircuitbenchError(f"{path}: node {name} has {len(node['neurons'])} neurons, cfg d_model is {dm}")
    pat = re.compile(r"^(?P<p>[^-<>]+)->(?P<c>[^-<>]+?)(?:<(?P<l>[qkv])>)?$")
    for name, edge in d["edges"].items():
        m = pat.match(name)
        if m is None or m["p"] not in pos or m["c"] not in pos:
            raise CircuitbenchError(f"{path}: edge {name!r} is not parent->child[<q|k|v>] between known nodes")
        if pos[m["p"]] >= pos[m["c"]] or (m["c"].startswith("a") != bool(m["l"])):
            raise CircuitbenchError(f"{path}: edge {name!r} runs backwards or lacks/has a spurious <q|k|v>")
        if "in_graph" not in edge or "score" not in edge:
            raise CircuitbenchError(f"{path}: edge {name!r} needs in_graph and score")
    return d
