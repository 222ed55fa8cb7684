"""The circuit explorer: one self-contained HTML page per saved circuit (data embedded, no network, `file://`).

The graph is laid out here, as SVG: sites with kept nodes are columns in forward order (layer, then the
site kinds of a block in the model's order), every kept node a circle labelled with its channel under its
site's heading and carrying `data-node="SITE:CHANNEL"`; weighted edges coloured by sign and scaled by
|weight|, residual edges dashed grey, and the answer logits last (every kept write channel reaches them
through the residual stream). The page's script adds what a reader clicks: zoom and pan, a node's details
in `#node-detail` (its activation per test example split by side, the prompts where it fires with their
tokens coloured, its edges, the loss without it), and a colour mode (`#pair-select`): by site kind, by
the mean difference between the two sides of the contrast, or by the difference within one chosen pair.

The measurements come from the unit's node table (`circuitbench.runs.explore`); without one (the model
could not be loaded where the page was built) the page says so and shows the structure and scores only.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from circuitbench.leaderboard.draw import _n
from circuitbench.leaderboard.explore_assets import CSS as _CSS
from circuitbench.leaderboard.explore_assets import JS as _JS
from circuitbench.leaderboard.explore_data import (
    BOARD_NODES_WITH_DATA,
    EXAMPLES_DIR,
    PAGE_FORMAT,
    QUANT,
    _sig,
    examples_file,
    examples_key,
    keep_data_for_top,
    pack_data,
    read_page_data,
)
from circuitbench.results.nodes import NodeTable
from circuitbench.runs.saved import SavedUnit

KIND_COLOURS = {"attn_in": "#9ecae1", "q": "#c6dbef", "k": "#c7e9c0", "v": "#fdd0a2", "attn_out": "#6baed6",
                "mlp_in": "#bcbddc", "mlp_neuron": "#fdae6b", "mlp_out": "#9e9ac8", "sae_latent": "#fcbba1",
                "sae_error": "#d9d9d9"}
"""Node fill per site kind in the default colour mode (reads light blue, writes darker)."""

_COL, _ROW, _TOP, _LEFT = 120.0, 18.0, 48.0, 40.0


def explorer_data(saved: SavedUnit, table: NodeTable | None, why_missing: str = "") -> dict[str, Any]:
    """What the page shows, unpacked: the unit's numbers, the nodes, the edges and, when measured, the node table.

    Numbers per example are plain lists here; `explorer_html` packs them (`pack_data`) and `read_page_data`
    unpacks a page's again.
    """
    s, u = saved.summary, saved.prov.unit
    measured = table.by_node() if table is not None else {}
    nodes: dict[str, dict[str, Any]] = {}
    offset = 0
    kept = saved.circuit.kept()
    for site in saved.circuit.sites:
        for ch in kept[site.name]:
            name = f"{site.name}:{ch}"
            row = measured.get(name, {})
            nodes[name] = _sig({"site": site.name, "kind": site.kind, "layer": site.layer, "channel": ch,
                                "score": float(saved.circuit.scores[offset + ch]), "act": row.get("activation"),
                                "m0": row.get("mean_side0"), "m1": row.get("mean_side1"),
                                "sep": row.get("separation"), "top": row.get("top_rows"),
                                "topActs": row.get("top_activations") or [], "ablLoss": row.get("ablated_loss"),
                                "effect": row.get("ablation_effect")})
        offset += site.width
    number = {name: i for i, name in enumerate(nodes)}
    edges = [[number[f"{e['src_site']}:{e['src_channel']}"], number[f"{e['dst_site']}:{e['dst_channel']}"],
              None if e["kind"] == "residual" else _sig(float(e["weight"]))] for e in saved.edges
             if f"{e['src_site']}:{e['src_channel']}" in number and f"{e['dst_site']}:{e['dst_channel']}" in number]
    numbers = {k: _sig(s.get(k)) for k in ("status", "full_accuracy", "full_loss", "target_loss", "nodes", "edges",
                                           "sufficiency_loss", "sufficiency_accuracy", "necessity_accuracy",
                                           "faithfulness", "cpr", "cmd", "control_nodes")}
    meta = table.meta if table is not None else {}
    shown = {r for n in nodes.values() for r in (n["top"] or [])}
    examples = [{**ex, "tokens": ex["tokens"] if r in shown else None}  # only prompts a node shows
                for r, ex in enumerate(meta.get("examples", []))]
    return {"format": PAGE_FORMAT, "unit": {"task": u.task, "model": u.model.name, "method": u.method, "seed": u.seed,
                     "ablation": u.ablation, "key": saved.prov.unit_key, **numbers},
            "measured": table is not None, "whyMissing": why_missing,
            "circuitLoss": _sig(meta.get("circuit_loss")), "ablationRows": meta.get("ablation_rows", 0),
            "ablationLoss": _sig(meta.get("circuit_loss_ablation_rows")),
            "sides": meta.get("sides", ["side 0", "side 1"]),
            "examples": examples, "nodesWithData": meta.get("nodes_with_data", 0),
            "nodesAblated": meta.get("nodes_ablated", 0), "nodes": nodes, "names": list(nodes), "edges": edges,
            "edgesComplete": saved.edges_complete, "edgesTotal": saved.edges_total,
            "kindColours": KIND_COLOURS, "steering": steering_data(saved.path)}


STEER_COLUMNS = ("intervention", "model", "channels", "p_correct_before", "p_correct_after", "shift", "flip_rate",
                 "shift_sd", "draws")


def steering_data(unit_path: Any) -> dict[str, Any] | None:
    """What `circuitbench bridge steer` measured with this circuit, when its table lies beside the unit."""
    from pathlib import Path

    from circuitbench.bridges.steer import read_steer, steer_path

    path = steer_path(Path(unit_path))
    if not path.is_file():
        return None
    try:
        res = read_steer(path)
    except (OSError, ValueError, KeyError):
        return None
    return {"rows": [{k: _sig(r.get(k)) for k in STEER_COLUMNS} | {"nodes": r.get("nodes", "")} for r in res.rows],
            "separating": [n for c in res.meta.get("separating", []) for n in c.get("nodes", [])],
            "bridges": Path(str(res.meta.get("bridges", ""))).name, "strength": res.meta.get("strength"),
            "minSeparation": res.meta.get("min_separation"), "unitKey": res.meta.get("unit_key")}


def steering_html(steering: dict[str, Any] | None, unit_key: str) -> str:
    """The page's steering section: the table `bridge steer` wrote beside the unit, or nothing."""
    if not steering or steering.get("unitKey") != unit_key:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("steered", "node", "model", "channels", "P(correct) before", "after",
                                              "flip rate"))

    def row(r: dict[str, Any]) -> str:
        node = escape(r["nodes"]) if r["intervention"] == "node" else ""
        draws = f" (mean of {r['draws']} draws)" if r["draws"] > 1 else ""
        return (f"<tr><td>{escape(r['intervention'])}</td><td>{node}</td><td>"
                f"{'dense (via bridge)' if r['model'] == 'dense' else 'sparse'}</td><td>{r['channels']}</td>"
                f"<td>{_fmt(r['p_correct_before'])}</td><td>{_fmt(r['p_correct_after'])}</td>"
                f"<td>{r['flip_rate']:.0%}{draws}</td></tr>")

    rows = steering["rows"]
    body = "".join(row(r) for r in rows if r["intervention"] != "node")
    single = "".join(row(r) for r in rows if r["intervention"] == "node")
    got = {(r["intervention"], r["model"]): r for r in rows}
    c, m = got.get(("circuit", "dense")), got.get(("random_matched", "dense"))
    headline = ("no separating node: nothing steered" if c is None else
                f"the circuit flips {c['flip_rate']:.0%} of the dense model's answers"
                + (f", random channels moved as far {m['flip_rate']:.0%}" if m else ""))
    sep = ", ".join(escape(n) for n in steering["separating"]) or "none"
    return (f'<details id="steering" open><summary>Steering through bridges ({escape(steering["bridges"])}): '
            f"{headline}</summary>"
            f"<p>Separating nodes (ringed in the graph): {sep}. Each moved to the other side's mean at the answer "
            f"position (strength {_fmt(steering['strength'])}), decoded into the dense model; random: as many "
            f"channels outside the circuit at the same locations, moved to their own other-side mean "
            f"(<i>random</i>) or as far as the circuit's (<i>random_matched</i>).</p>"
            f'<table class="numbers steer"><tr>{head}</tr>{body}</table>'
            + (f'<details><summary>each separating node alone</summary><table class="numbers steer"><tr>{head}</tr>'
               f"{single}</table></details>" if single else "")
            + "</details>")


def _layout(data: dict[str, Any], site_order: list[str]) -> tuple[dict[str, tuple[float, float]], list[str], float,
                                                                     float]:
    """Node positions and the SVG body of columns and headings; returns (positions, parts, width, height)."""
    columns: dict[str, list[str]] = {}
    for name, n in data["nodes"].items():
        columns.setdefault(n["site"], []).append(name)
    cols = [s for s in site_order if s in columns]
    pos: dict[str, tuple[float, float]] = {}
    parts = []
    tallest = max((len(v) for v in columns.values()), default=1)
    for i, site in enumerate(cols):
        x = _LEFT + i * _COL
        kind = data["nodes"][columns[site][0]]["kind"]
        parts.append(f'<text class="site" x="{_n(x)}" y="18" text-anchor="middle">{escape(site)}</text>'
                     f'<text class="count" x="{_n(x)}" y="32" text-anchor="middle">{escape(kind)} · '
                     f'{len(columns[site])}</text>')
        for j, name in enumerate(sorted(columns[site], key=lambda m: data["nodes"][m]["channel"])):
            pos[name] = (x, _TOP + j * _ROW)
    logits_x = _LEFT + len(cols) * _COL
    height = _TOP + tallest * _ROW + 20
    pos["logits"] = (logits_x, _TOP + (tallest - 1) * _ROW / 2)
    parts.append(f'<text class="site" x="{_n(logits_x)}" y="18" text-anchor="middle">answer logits</text>')
    return pos, parts, logits_x + _LEFT + 240, height


def graph_svg(data: dict[str, Any], site_order: list[str]) -> str:
    """The circuit as a layered SVG graph (see the module docstring); every node carries `data-node`."""
    pos, parts, width, height = _layout(data, site_order)
    lx, ly = pos["logits"]
    circles = []  # the edges are drawn by the page's script from the embedded data (half the page's size)
    steering = data.get("steering") or {}
    ringed = set(steering.get("separating", [])) if steering.get("unitKey") == data["unit"]["key"] else set()
    for name, n in data["nodes"].items():
        x, y = pos[name]
        cls = "node separating" if name in ringed else "node"
        circles.append(f'<g class="{cls}" data-node="{escape(name)}" transform="translate({_n(x)},{_n(y)})">'
                       f'<circle r="7" fill="{KIND_COLOURS.get(n["kind"], "#fff")}"/>'
                       f'<text x="9" y="4">{n["channel"]}</text><title>{escape(name)}</title></g>')
    circles.append(f'<g class="logit" transform="translate({_n(lx)},{_n(ly)})"><rect x="-8" y="-8" width="16" '
                   f'height="16"/><text x="12" y="4">{escape(" | ".join(data["sides"]))}</text></g>')
    return (f'<svg id="graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_n(width)} {_n(height)}" '
            f'data-width="{_n(width)}" data-height="{_n(height)}">'
            f'<g id="viewport">{"".join(parts)}<g id="edges"></g>'
            f'<g id="nodes">{"".join(circles)}</g></g></svg>')


def explorer_html(data: dict[str, Any], site_order: list[str], back: str | None = None,
                  examples_src: str | None = None) -> str:
    """The whole page: numbers, controls, the graph, the detail panel, and the data and script inline.

    `data` is `explorer_data`'s (unpacked) form. With `examples_src`, the examples are not embedded: the page
    loads them from that script (a board's pages share one file per task, `examples_file`), under the key
    `data["examplesRef"]`; without it the page is self-contained.
    """
    u = data["unit"]
    title = f"{u['task']} · {u['model']} · {u['method']}"
    packed = pack_data(data)
    if examples_src is not None:
        packed.pop("examples", None)
    else:
        packed.pop("examplesRef", None)
    blob = json.dumps(packed, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    shared = f'<script src="{escape(examples_src)}"></script>\n' if examples_src is not None else ""
    nums = "".join(f"<tr><th>{escape(k.replace('_', ' '))}</th><td>{escape(_fmt(v))}</td></tr>"
                   for k, v in u.items() if k not in ("task", "model", "method", "key") and v is not None)
    back_link = f' · <a id="back" href="{escape(back)}">back to the board</a>' if back else ""
    note = "" if data["measured"] else (f'<p class="note" id="not-measured">Activations were not measured for this '
                                        f"page: {escape(data['whyMissing'])}</p>")
    pairs = len(data["examples"]) // 2
    options = ['<option value="kind">site kind</option>',
               '<option value="contrast">contrast: mean side 0 − side 1</option>']
    options += [f'<option value="pair:{j}">pair {j}: side 0 − side 1</option>' for j in range(pairs)]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}: circuit explorer</title>
<style>{_CSS}</style></head><body>
<header><b>circuit explorer</b> · {escape(title)} · seed {u['seed']} · {escape(u['ablation'])} ablation
{back_link}</header>
<main><section id="left">
<table class="numbers">{nums}</table>{note}
<div class="controls"><label>colour nodes by <select id="pair-select">{''.join(options)}</select></label>
<button id="zoom-in" type="button">+</button><button id="zoom-out" type="button">−</button>
<button id="zoom-reset" type="button">fit</button>
<span class="hint">wheel: zoom · drag: pan · click a node</span></div>
<div id="graph-box">{graph_svg(data, site_order)}</div>
<p class="legend"><span class="sw pos"></span> positive weight <span class="sw neg"></span> negative weight
<span class="sw res"></span> residual (weightless) · width ∝ |weight|</p>
{steering_html(data.get("steering"), u["key"])}
</section><aside id="node-detail"><p>Click a node to see what it does.</p></aside></main>
<script id="circuit-data" type="application/json">{blob}</script>
{shared}<script>{_JS.replace("QUANT", str(QUANT))}</script></body></html>
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)





def write_explorer(saved: SavedUnit, out_dir: Any, adapter_of: Any = None, back: str | None = None,
                   show_progress: bool = False, store: bool = True, recompute: bool = False) -> tuple[Any, str | None]:
    """Write `OUT/TASK.METHOD.seedN.html` for a saved circuit; returns its path, and why nodes were not measured.

    `adapter_of()` gives the model to measure the nodes with (the unit's stored node table is used when it
    is current, and with `store` one measured here is stored beside the unit); None, or a model that cannot be
    loaded, gives a page of structure and scores only, saying why.
    """
    from pathlib import Path

    from circuitbench.errors import CircuitbenchError
    from circuitbench.files import write_text_atomic
    from circuitbench.runs.explore import explore_path, load_or_compute

    table, why = None, "no model was given to measure the nodes with"
    if adapter_of is not None:
        try:
            table = load_or_compute(saved, adapter_of, show_progress, store, recompute)
        except CircuitbenchError as err:
            why = str(err)
    data = explorer_data(saved, table, why)
    path = explore_path(Path(out_dir), saved.path)
    write_text_atomic(path, explorer_html(data, [s.name for s in saved.circuit.sites], back))
    return path, None if table is not None else why


def board_explorers(units: list[tuple[str, Any]], out: Any, max_nodes: int = 800,
                    previous: Any = None) -> dict[str, str]:
    """Explorer pages of a board's pruned units under `OUT/explore/<submission>/`; {unit path: page path in OUT}.

    `units` is (submission content hash, unit file) pairs. Each model is loaded once, when it is on this
    machine (a local folder or a bundled name); the submission's files are never written to (the node tables
    are measured into the pages). A unit whose model is not here gets a page of structure and scores only,
    saying so. A circuit of more than `max_nodes` nodes (a random ranking's, a dense model's) gets no page
    here, to keep the site small: its entry is "" and `circuitbench circuit explore` writes one.

    Each page carries per-example numbers for its `BOARD_NODES_WITH_DATA` highest-scoring nodes. The examples
    (each test prompt's tokens) are written once per model and task, in
    `OUT/explore/examples/KEY.js`, holding every row some page of them shows; the pages load it.

    `previous` is a site (or a list of sites, first match wins) this build may reuse: a measured page there
    of the same unit is re-rendered from its own data, not measured again (a rebuild takes seconds, and gives
    the same bytes; pages of the previous data format are read and re-rendered in this one).
    """
    from pathlib import Path

    from circuitbench.errors import CircuitbenchError
    from circuitbench.runs.explore import load_or_compute
    from circuitbench.runs.saved import load_saved

    sites = [] if previous is None else [Path(p) for p in (previous if isinstance(previous, list) else [previous])]
    models = _ModelCache()
    pages: dict[str, str] = {}
    rendered: list[tuple[str, dict[str, Any], list[str], str]] = []
    for content_hash, unit_file in units:
        saved = load_saved(unit_file)
        if saved.circuit.k > max_nodes:
            pages[str(unit_file)] = ""
            continue
        u = saved.prov.unit
        back = f"../../tasks/{u.task.replace(':', '__').replace('/', '_')}.html"
        page = f"explore/{content_hash}/{Path(unit_file).name.removesuffix('.parquet')}.html"
        data = None
        for site in sites:
            old = read_page_data(site / page)
            if old is not None and old.get("unit", {}).get("key") == saved.prov.unit_key and old.get("measured"):
                data = old
                data["steering"] = steering_data(saved.path)  # steered since, or again: what lies beside it now
                break
        if data is None:
            table, why = None, "no model was given to measure the nodes with"
            try:
                table = load_or_compute(saved, lambda saved=saved: models.of(saved), False, store=False)
            except CircuitbenchError as err:
                why = str(err)
            data = explorer_data(saved, table, why)
        rendered.append((page, keep_data_for_top(data, BOARD_NODES_WITH_DATA), [x.name for x in saved.circuit.sites],
                         back))
        pages[str(unit_file)] = page

    _write_board_pages(rendered, Path(out))
    return pages


class _ModelCache:
    """Each unit's model, loaded once per model (and dtype and SAEs) when it is on this machine."""

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}

    def of(self, saved: SavedUnit) -> Any:
        """The unit's model; raises CircuitbenchError (every time) when it is not here or does not load."""
        from circuitbench.errors import CircuitbenchError
        from circuitbench.runs.saved import load_unit_model, model_is_local

        u = saved.prov.unit
        key = json.dumps([u.model.name, u.dtype, [str(x.get("spec", x["path"])) for x in saved.prov.saes or ()]])
        if key not in self._models:
            if not model_is_local(u.model.name):
                self._models[key] = CircuitbenchError(
                    f"the model {u.model.name} is not on the machine that built the board; "
                    "`circuitbench circuit explore` measures it where it is")
            else:
                try:
                    self._models[key] = load_unit_model(saved, "cpu")
                except CircuitbenchError as err:
                    self._models[key] = err
        if isinstance(self._models[key], Exception):
            raise self._models[key]
        return self._models[key]


def _write_board_pages(rendered: list[tuple[str, dict[str, Any], list[str], str]], out: Any) -> None:
    """Write the shared examples (one file per model and task: the union of the rows shown), then the pages.

    A file whose bytes would not change is not written.
    """
    from pathlib import Path

    from circuitbench.files import write_text_atomic

    shared: dict[str, list[dict[str, Any]]] = {}
    for _, data, _, _ in rendered:
        if not data["examples"]:
            continue
        data["examplesRef"] = key = examples_key(data)
        rows = shared.setdefault(key, [dict(e, tokens=None) for e in data["examples"]])
        shown = {r for x in data["nodes"].values() for r in x.get("top") or []}
        for r in shown:
            if data["examples"][r].get("tokens") is not None:
                rows[r]["tokens"] = data["examples"][r]["tokens"]
    folder = Path(out) / "explore" / EXAMPLES_DIR
    files = {folder / f"{key}.js": examples_file(key, rows) for key, rows in shared.items()}
    for page, data, order, back in rendered:
        src = f"../{EXAMPLES_DIR}/{data['examplesRef']}.js" if data.get("examplesRef") else None
        files[Path(out) / page] = explorer_html(data, order, back, src)
    for path, text in files.items():
        if not (path.is_file() and path.read_text(encoding="utf-8") == text):
            write_text_atomic(path, text)
