"""A circuit as circuit-tracer's graph JSON (`metadata`, `qParams`, `nodes`, `links`), for tools that read it.

The fields follow circuit-tracer's frontend models (`circuit_tracer/frontend/graph_models.py`: `Metadata`,
`QParams`, `Node`, `Link`). The graph is of one prompt, a test example of the task, at its answer position:
- one node per kept channel: `layer` its block, `feature` its index among the block's nodes (sites in forward
  order, then channels), `ctx_idx` the answer position, `feature_type` the site kind (`q`, `mlp_neuron`, ...:
  these are a weight-sparse model's channels, not transcoder features), `activation` its value on this
  prompt in the circuit's forward pass, `clerp` its name `SITE:CHANNEL`;
- two logit nodes, the correct and the incorrect answer, with their probability over the two candidates, in
  the label as circuit-tracer's frontend parses it (`Output "x" (p=0.979)`);
- links: a weighted edge's `weight` is the model's weight; a residual edge's is 1 (the residual stream
  carries the channel unchanged); a residual write channel's link to the correct answer's logit is how much
  the answer's logit lead drops on this prompt when the node alone is ablated from the circuit (a total
  effect, measured on the node table's first `ablation_rows` examples: a later example has no such links).
  `metadata.circuitbench` says so, with the unit.

Written into a folder, a graph is `{slug}.json` and its metadata is added to the folder's `graph-metadata.json`,
which is what circuit-tracer's own server (`circuit_tracer.frontend.local_server.serve(data_dir=FOLDER)`) lists
and fetches.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from circuitbench.errors import CircuitbenchError
from circuitbench.results.circuit import Circuit
from circuitbench.results.nodes import NodeTable

LINK_WEIGHTS = ("weighted edges: the model's weight; residual edges: 1 (identity); write channel -> correct "
                "logit: the drop of the correct answer's logit lead when the node alone is ablated (measured)")


METADATA_FILE = "graph-metadata.json"
"""The list circuit-tracer's server shows (`{"graphs": [metadata, ...]}`); it fetches DATA_DIR/{slug}.json."""


def graph_slug(unit: dict[str, Any], example: int) -> str:
    """A graph's slug (its file name without `.json`): model, task, method, seed and example, URL-safe."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{unit['model']}-{unit['task']}-{unit['method']}-seed{unit['seed']}"
                                          f"-ex{example}").strip("-")


def add_to_listing(folder: Path, metadata: dict[str, Any]) -> Path:
    """Add a graph's metadata to FOLDER/graph-metadata.json, replacing an entry of the same slug, keeping others."""
    from circuitbench.files import read_json
    from circuitbench.results.files import write_text_atomic

    path = Path(folder) / METADATA_FILE
    listing = read_json(path, "circuit-tracer's graph listing") if path.is_file() else {"graphs": []}
    if not isinstance(listing, dict) or not isinstance(listing.get("graphs"), list):
        raise CircuitbenchError(f"{path}: not circuit-tracer's graph listing ({{\"graphs\": [...]}}); move it away")
    slug = metadata["slug"]
    listing["graphs"] = [g for g in listing["graphs"] if not (isinstance(g, dict) and g.get("slug") == slug)]
    listing["graphs"].append(metadata)
    write_text_atomic(path, json.dumps(listing, indent=2), "--out")
    return path


def to_graph_json(circuit: Circuit, edges: list[dict[str, Any]], table: NodeTable, example: int,
                  unit: dict[str, Any], slug: str | None = None) -> dict[str, Any]:
    """The circuit on test example `example` as circuit-tracer graph JSON (see the module docstring).

    `slug` names the graph (circuit-tracer finds it as `{slug}.json`); by default `graph_slug`.

    Raises:
        CircuitbenchError: for an example the node table does not have.
    """
    examples = table.meta.get("examples", [])
    if not 0 <= example < len(examples):
        raise CircuitbenchError(f"--example {example}: the task has test examples 0 to {len(examples) - 1}")
    ex = examples[example]
    pos = len(ex["tokens"]) - 1
    n_layers = 1 + max(s.layer for s in circuit.sites)
    feature: dict[str, int] = {}
    start: dict[int, int] = {}
    for s in circuit.sites:  # a node's index within its block: the block's sites in order, then channels
        start.setdefault(s.layer, 0)
        feature[s.name] = start[s.layer]
        start[s.layer] += s.width
    rows = table.by_node()
    nodes, ids = [], {}
    for name, r in rows.items():
        f = feature[r["site"]] + r["channel"]
        ids[name] = f"{r['layer']}_{f}_{pos}"
        nodes.append(_node(ids[name], f, str(r["layer"]), pos, r["kind"], activation=_finite(r["activation"][example]),
                           clerp=f"{name} ({r['kind']})", js=f"{r['layer']}_{f}-0"))
    lead = table.meta.get("circuit_two_logits", [[0.0, 0.0]] * len(examples))[example]
    p_correct = 1.0 / (1.0 + math.exp(max(-50.0, min(50.0, lead[1] - lead[0]))))
    logit_ids = []
    for i, (token, p) in enumerate(((ex["correct"], p_correct), (ex["incorrect"], 1.0 - p_correct))):
        nid = f"{n_layers + 1}_{i}_{pos}"
        logit_ids.append(nid)
        nodes.append(_node(nid, i, str(n_layers + 1), pos, "logit", token_prob=p, is_target_logit=i == 0,
                           clerp=f'Output "{token}" (p={p:.3f})', js=f"L_{i}-{pos}"))  # p: as the frontend parses
    links = []
    for e in edges:
        src, dst = f"{e['src_site']}:{e['src_channel']}", f"{e['dst_site']}:{e['dst_channel']}"
        if src in ids and dst in ids:
            w = 1.0 if e["kind"] == "residual" else float(e["weight"])
            links.append({"source": ids[src], "target": ids[dst], "weight": w})
    for name, r in rows.items():
        effect = r.get("ablation_effect") or []
        if r["kind"] in ("attn_out", "mlp_out") and len(effect) > example and _finite(effect[example]) is not None:
            links.append({"source": ids[name], "target": logit_ids[0], "weight": float(effect[example])})
    metadata = {"slug": slug or graph_slug(unit, example), "scan": str(unit["model"]), "transcoder_list": [],
                "prompt_tokens": ex["tokens"],
                "prompt": "".join(ex["tokens"]), "node_threshold": None, "schema_version": 1,
                "circuitbench": {**unit, "example": example, "pair": ex["pair"], "side": ex["side"],
                                 "link_weights": LINK_WEIGHTS, "logit_probability": "over the two answers"}}
    q = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": q, "nodes": nodes, "links": links}


def _finite(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _node(node_id: str, feature: int, layer: str, pos: int, kind: str, *, js: str, clerp: str,
          activation: float | None = None, token_prob: float = 0.0, is_target_logit: bool = False) -> dict[str, Any]:
    return {"node_id": node_id, "feature": feature, "layer": layer, "ctx_idx": pos, "feature_type": kind,
            "token_prob": token_prob, "is_target_logit": is_target_logit, "run_idx": 0, "reverse_ctx_idx": 0,
            "jsNodeId": js, "clerp": clerp, "influence": None, "activation": activation}
