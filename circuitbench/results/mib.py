"""A circuit in MIB's format: `to_mib` writes, `read_mib` reads and checks.

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
- An edge-level circuit is shown through the nodes its kept edges touch (node scores 1 or 0).
- The input node is always in the graph, with all its neurons, and scored with the largest node score (EAP-IG's
  readers need a number; the embedding is not one of our nodes, so it has no score of its own, and it is never
  ablated).
The exact circuit rides along under the top-level key `circuitbench` (`extension`), which MIB's readers
ignore and `circuitbench circuit import` reads back, so export -> import reproduces the circuit exactly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuitbench.errors import CircuitbenchError
from circuitbench.results.circuit import Circuit


def to_mib(circuit: Circuit, edges: list[dict[str, Any]]) -> dict[str, Any]:
    """The circuit as an EAP-IG / MIB `Graph` JSON dict at neuron level (see the module docstring).

    Raises:
        CircuitbenchError: for circuits on sites MIB's graph cannot express (SAE latents) or without a
            known head count.
    """
    if any(s.kind not in {"attn_in", "q", "k", "v", "attn_out", "mlp_in", "mlp_neuron", "mlp_out"}
           for s in circuit.sites):
        raise CircuitbenchError("MIB's graph has attention heads and MLPs only; this circuit has SAE sites. "
                                "Export circuits of models without --sae.")
    if not circuit.n_head:
        raise CircuitbenchError("the circuit file does not record the model's head count; rerun the unit")
    g = _Graph(circuit, edges)
    cfg = {"n_layers": len(g.layers), "n_heads": g.n_head, "parallel_attn_mlp": False, "d_model": g.d_model}
    return {"cfg": cfg, "nodes": g.nodes, "edges": g.edges(), EXTENSION: extension(circuit)}


EXTENSION = "circuitbench"
"""The top-level key of the exact circuit in an exported file (MIB's readers take cfg, nodes and edges only)."""


def extension(circuit: Circuit) -> dict[str, Any]:
    """The circuit at channel level, exactly: what `circuit import` reads back (the component graph loses it).

    `kept`: the kept channels per site (node level), or `kept_edges`: [src site, src channel, dst site, dst
    channel] per kept edge and the graph's hash (edge level).
    """
    out: dict[str, Any] = {"format": "1", "level": circuit.level, "model": circuit.model, "task": circuit.task}
    if circuit.level == "edges":
        assert circuit.kept_edges is not None
        names = [s.name for s in circuit.sites]
        out["kept_edges"] = [[names[a], b, names[c], d] for a, b, c, d in circuit.kept_edges.tolist()]
        out["graph_sha"] = circuit.graph_sha
    else:
        out["kept"] = circuit.kept()
    return out


class _Graph:
    """The MIB nodes of a circuit, and what each reads and writes through the kept channels."""

    def __init__(self, circuit: Circuit, edges: list[dict[str, Any]]) -> None:
        self.circuit, self.by = circuit, {s.name: s for s in circuit.sites}
        self.layers = sorted({s.layer for s in circuit.sites})
        self.n_head = int(circuit.n_head or 0)
        self.d_model = next(s.width for s in circuit.sites if s.kind == "attn_in")
        self.kept = {k: set(v) for k, v in circuit.kept().items()}
        self.score_of: dict[str, Tensor] = {}
        start = 0
        for s in circuit.sites:  # an edge-level circuit scores edges: its nodes score 1 if touched, else 0
            self.score_of[s.name] = (circuit.scores[start : start + s.width] if circuit.level == "nodes" else
                                     torch.zeros(s.width).index_fill_(0, torch.tensor(sorted(self.kept[s.name]),
                                                                                      dtype=torch.long), 1.0))
            start += s.width
        self.nodes = self._nodes()
        self.feeds = self._feeds(edges)

    def site(self, layer: int, kind: str) -> str:
        """The name of a layer's site of this kind."""
        return next(s.name for s in self.circuit.sites if s.layer == layer and s.kind == kind)

    def _nodes(self) -> dict[str, dict[str, Any]]:
        site, kept, score_of, d_model = self.site, self.kept, self.score_of, self.d_model
        nodes: dict[str, dict[str, Any]] = {"input": {"in_graph": True, "score": float("nan")}}
        for L in self.layers:
            d_head = self.by[site(L, "q")].width // self.n_head
            out = site(L, "attn_out")
            for h in range(self.n_head):
                chans = {letter: {c for c in kept[site(L, letter)] if c // d_head == h} for letter in "qkv"}
                sc = torch.cat([score_of[site(L, letter)][h * d_head : (h + 1) * d_head] for letter in "qkv"])
                nodes[f"a{L}.h{h}"] = {"in_graph": any(chans.values()), "score": float(sc.max()),
                                       "neurons": [c in kept[out] for c in range(d_model)],
                                       "neurons_scores": score_of[out].tolist()}
            mout = site(L, "mlp_out")
            nodes[f"m{L}"] = {"in_graph": bool(kept[site(L, "mlp_neuron")]),
                              "score": float(score_of[site(L, "mlp_neuron")].max()),
                              "neurons": [c in kept[mout] for c in range(d_model)],
                              "neurons_scores": score_of[mout].tolist()}
        nodes["logits"] = {"in_graph": True}
        # the input is not scored here (the embedding is no node of ours) and is always in the graph: it takes the
        # largest node score, so a reader that ranks nodes by score (EAP-IG's top-n) keeps it first, as it is kept
        finite = [n["score"] for n in nodes.values() if math.isfinite(n.get("score", math.nan))]
        nodes["input"]["score"] = max(finite, default=0.0)
        # and all of its neurons are in the graph: EAP-IG corrupts the neurons of a node not fully in the graph (at
        # neuron level a node without `neurons` loads with none), and no pruning here ever ablates the embedding
        nodes["input"]["neurons"] = [True] * d_model
        return nodes

    def _feeds(self, edges: list[dict[str, Any]]) -> dict[tuple[str, int], set[str]]:
        """Channel paths: (read site, residual channel) -> the MIB children it reaches through a weight."""
        feeds: dict[tuple[str, int], set[str]] = {}
        for e in edges:
            if e["kind"] != "weighted":
                continue
            src, dst = self.by[e["src_site"]], self.by[e["dst_site"]]
            if src.kind == "attn_in" and dst.kind in "qkv":
                h = e["dst_channel"] // (dst.width // self.n_head)
                feeds.setdefault((src.name, e["src_channel"]), set()).add(f"a{dst.layer}.h{h}<{dst.kind}>")
            elif src.kind == "mlp_in" and dst.kind == "mlp_neuron":
                feeds.setdefault((src.name, e["src_channel"]), set()).add(f"m{dst.layer}")
        return feeds

    def writes(self, parent: str) -> set[int] | None:
        """The kept residual channels a parent writes (None: any, for the input)."""
        if parent == "input":
            return None
        L = int(parent[1:].split(".")[0])
        if not self.nodes[parent]["in_graph"]:
            return set()
        return self.kept[self.site(L, "attn_out" if parent.startswith("a") else "mlp_out")]

    def reads(self, child: str) -> dict[int, bool]:
        """{kept read channel: whether it reaches the child} for a child like a1.h0<q> or m1."""
        base = child.split("<")[0]
        rsite = self.site(int(base[1:].split(".")[0]), "attn_in" if base.startswith("a") else "mlp_in")
        return {c: child in self.feeds.get((rsite, c), set()) for c in self.kept[rsite]}

    def edges(self) -> dict[str, dict[str, Any]]:
        """Every MIB edge: in the graph when a channel path realises it, scored by the number of paths."""
        order: list[str] = ["input"]
        children: list[tuple[str, int]] = []  # (child name with <qkv>, position in order it follows)
        for L in self.layers:
            heads = [f"a{L}.h{h}" for h in range(self.n_head)]
            children += [(f"{h}<{letter}>", len(order)) for h in heads for letter in "qkv"]
            order += heads
            children.append((f"m{L}", len(order)))
            order.append(f"m{L}")
        mib_edges: dict[str, dict[str, Any]] = {}
        for child, upto in children:
            reach = self.reads(child)
            for parent in order[:upto]:
                w = self.writes(parent)
                n = sum(1 for c, ok in reach.items() if ok and (w is None or c in w))
                mib_edges[f"{parent}->{child}"] = {"in_graph": n > 0, "score": float(n)}
        final_reads = set(range(self.d_model))
        for parent in order:
            w = self.writes(parent)
            n = len(final_reads if w is None else w & final_reads)
            mib_edges[f"{parent}->logits"] = {
                "in_graph": n > 0 and (parent == "input" or self.nodes[parent]["in_graph"]), "score": float(n)}
        return mib_edges


def read_mib(path: Path) -> dict[str, Any]:
    """Read an MIB / EAP-IG Graph JSON file and check it against the documented format.

    Checks the keys `cfg` (n_layers, n_heads, parallel_attn_mlp, d_model), `nodes` and `edges`; that the node
    set is input, a{L}.h{H}, m{L} and logits for the configured shape; that every edge name is
    `parent->child` or `parent->a{L}.h{H}<q|k|v>` between known nodes with the parent before the child;
    and that every edge and node carries `in_graph` (and `neurons` of length d_model where present; for an
    attention head also d_head, or n_heads lists of either, as neuron-level graphs lay them out). Neuron masks
    are checked, not used: an imported circuit is mapped at the component level (`circuitbench.runs.imported`).

    Returns:
        The parsed dict.

    Raises:
        CircuitbenchError: naming the first problem found.
    """
    from circuitbench.files import read_json

    d = read_json(path, "an MIB circuit file", "give a file EAP-IG's Graph.to_json or `circuit export --format mib` "
                  "wrote")
    if not isinstance(d, dict):
        raise CircuitbenchError(f"{path}: an MIB circuit file is a JSON object with cfg, nodes and edges; this one "
                                f"is a JSON {type(d).__name__}")
    try:
        return _check_mib(path, d)
    except (TypeError, AttributeError, ValueError) as err:  # a value of the wrong type somewhere in the file
        raise CircuitbenchError(f"{path}: a value has the wrong type for an MIB circuit file ({type(err).__name__}: "
                                f"{err}); cfg values are numbers and booleans, nodes and edges objects with "
                                "in_graph and score") from None


def _neuron_shape_ok(neurons: Any, d_model: int, n_heads: int | None) -> bool:
    """Whether a node's `neurons` has a neuron-level layout.

    d_model values; an attention head's may also be d_head values, or n_heads lists of either (EAP-IG's slice
    of the layer's heads).
    """
    if not isinstance(neurons, list):
        return False
    widths = {d_model} if n_heads is None else {d_model, d_model // n_heads}
    if not any(isinstance(v, list) for v in neurons):
        return len(neurons) in widths
    return n_heads is not None and len(neurons) == n_heads and all(
        isinstance(row, list) and len(row) in widths for row in neurons)


def _check_mib(path: Path, d: dict[str, Any]) -> dict[str, Any]:
    """`read_mib`'s checks of a parsed file (see there)."""
    import re

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
        if "neurons" in node and not _neuron_shape_ok(node["neurons"], dm, nh if name.startswith("a") else None):
            raise CircuitbenchError(f"{path}: node {name}'s neurons are not {dm} values (cfg d_model)"
                                    + (f", {dm // nh} (d_head) or {nh} lists of either" if name.startswith("a")
                                       else ""))
    pat = re.compile(r"^(?P<p>[^-<>]+)->(?P<c>[^-<>]+?)(?:<(?P<l>[qkv])>)?$")
    for name, edge in d["edges"].items():
        m = pat.match(name)
        if m is None or m["p"] not in pos or m["c"] not in pos:
            raise CircuitbenchError(f"{path}: edge {name!r} is not parent->child[<q|k|v>] between known nodes")
        if pos[m["p"]] >= pos[m["c"]] or (m["c"].startswith("a") != bool(m["l"])):
            raise CircuitbenchError(f"{path}: edge {name!r} runs backwards or lacks/has a spurious <q|k|v>")
        if "in_graph" not in edge or "score" not in edge:
            raise CircuitbenchError(f"{path}: edge {name!r} needs in_graph and score")
    for kind, items in (("node", d["nodes"]), ("edge", d["edges"])):
        for name, item in items.items():
            value = item.get("score")
            if kind == "node" and isinstance(value, float) and math.isnan(value):
                continue  # EAP-IG's "not scored" (its default for nodes); read as no score
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not math.isfinite(value)):
                raise CircuitbenchError(f"{path}: {kind} {name!r} has score {value!r}; a score is a finite number "
                                        "(or null where there is none): a NaN or infinite score cannot be ranked")
    return d
