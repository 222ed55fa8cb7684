"""The static leaderboard: HTML, CSS and a little JavaScript built from the accepted submissions on disk.

`build(board, out)` reads `BOARD/submissions/<content hash>/` (what `circuitbench submit` accepted) and
writes a site that works from `file://`, makes no external request, and is byte-identical when built
again from the same submissions (no clock, no randomness, sorted everywhere):

- `index.html`: models x methods (tasks solved, geometric-mean nodes and edges of the solved tasks, mean
  CPR and CMD over the pruned tasks, validation loss), sortable by any column and filterable to dense,
  sparse or SAE models; and the frontier plot, validation loss against geometric-mean edges (Gao et al.
  2025, Figure 3), each sparse model joined to its dense twin.
- `tasks/TASK.html`: the task's example pair with its two answers, every submission's circuit size and
  areas, its faithfulness curves per model, and a drawing of each circuit.
- `submissions/HASH.html`: the metadata, the units with links to their files, and their provenance.

Every value a submitter controls (names, descriptions, hyperparameters, even task names read from
units) is HTML-escaped.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from circuitbench.errors import CircuitbenchError
from circuitbench.files import OUTPUT_MARKER, check_output_folder
from circuitbench.leaderboard import cells
from circuitbench.leaderboard.board import Entry, UnitRecord, load_board
from circuitbench.leaderboard.cells import _mean, _td, e, interval_td, seed_section, spread_td
from circuitbench.leaderboard.draw import SVG_STYLE, Series, line_plot, saved_circuit_svg
from circuitbench.leaderboard.explore import board_explorers
from circuitbench.leaderboard.protocol import PROTOCOL_FILE, Protocol, load_protocol
from circuitbench.leaderboard.submit import META_FILE
from circuitbench.results.report import geomean
from circuitbench.results.status import PRUNED, control_text


def _page(title: str, body: str, depth: int) -> str:
    up = "../" * depth
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{e(title)}</title>\n'
            '<link rel="icon" href="data:,">\n'
            f'<link rel="stylesheet" href="{up}style.css">\n</head>\n<body>\n'
            f'<header><a href="{up}index.html">circuitbench leaderboard</a></header>\n<main>\n{body}\n</main>\n'
            f'<script src="{up}board.js"></script>\n</body>\n</html>\n')


# --- pages -----------------------------------------------------------------------------------------------


def _entry_row(entry: Entry, depth: int, n_tasks: int) -> str:
    m = entry.meta
    solved, pruned = entry.solved, entry.pruned
    up = "../" * depth
    return (f'<tr data-kind="{e(m.model.kind or "unknown")}">'
            f'<td><a href="{up}submissions/{e(entry.content_hash)}.html">{e(m.model.name)}</a></td>'
            f"<td>{e(m.model.kind or 'unknown')}</td><td>{e(m.method.name)}</td>"
            f'<td class="num" data-v="{len(solved)}">{len(solved)} / {n_tasks}</td>'
            f'<td class="num" data-v="{len(entry.specific)}">{len(entry.specific)}</td>'
            + spread_td(entry, "nodes") + spread_td(entry, "edges")
            + _td(_mean([u.summary.get("cpr") for u in pruned]))
            + _td(_mean([u.summary.get("cmd") for u in pruned]))
            + _td(_mean([u.summary.get("cpr_log") for u in pruned]))
            + _td(m.validation.loss, ".4f")
            + f"<td>{_measured_by(m.validation.measured_by, m.validation.loss)}</td>"
            + f"<td>{e(m.submitter)}</td></tr>")


def _measured_by(who: str, loss: float | None) -> str:
    if loss is None:
        return "–"
    return "circuitbench" if who == "circuitbench" else "reported"


_MAIN_HEAD = ("<tr><th>model</th><th>kind</th><th>method</th><th>tasks solved</th><th>specific</th>"
              "<th>geomean nodes</th><th>geomean edges</th><th>CPR</th><th>CMD</th><th>CPR (log axis)</th>"
              "<th>validation loss</th><th>loss measured by</th><th>submitter</th></tr>")


def _frontier(entries: list[Entry]) -> str:
    """Validation loss against geometric-mean edges, one point per model (learned-mask circuits)."""
    chosen: dict[str, Entry] = {}
    for en in entries:
        if en.meta.method.name == "learned_mask" and en.meta.validation.loss is not None and en.solved:
            chosen.setdefault(en.meta.model.name, en)
    if not chosen:
        return "<p>No model has learned-mask circuits and a validation loss yet: nothing to plot.</p>"
    common = set.intersection(*({u.summary["task"] for u in en.solved} for en in chosen.values()))
    names = sorted(chosen)
    series = []
    for name in names:
        en = chosen[name]
        units = [u for u in en.solved if u.summary["task"] in common] if common else en.solved
        edges = geomean([u.summary["edges"] for u in units])
        loss = en.meta.validation.loss
        assert loss is not None  # chosen only with one
        series.append(Series(f"{name} ({en.meta.model.kind or 'unknown'})", ((edges, loss),)))
    links = [(names.index(n), names.index(str(chosen[n].meta.model.dense_twin)))
             for n in names if chosen[n].meta.model.dense_twin in chosen]
    over = (f"the {len(common)} task(s) every plotted model solves ({', '.join(sorted(common))})" if common else
            "each model's own solved tasks (no task is solved by all)")
    svg = line_plot(series, "geometric-mean edges of the learned-mask circuits (log)", "validation loss",
                    log_x=True, markers_only=True, links=links, width=560, height=340,
                    title="Frontier: lower and further left is better")
    return (f'<figure class="frontier">{svg}<figcaption>Each point is a model; edges are the geometric mean over '
            f"{e(over)}. A dotted line joins a sparse model to its dense twin.</figcaption></figure>")


def _index(entries: list[Entry], tasks: list[str], protocol: Protocol) -> str:
    n = len(protocol.board_tasks())
    rows = "\n".join(_entry_row(en, 0, n) for en in entries)
    task_links = " ".join(f'<a href="tasks/{e(_safe(t))}.html">{e(t)}</a>' for t in tasks)
    body = f"""<h1>Circuit sizes on circuitbench's {n} tasks</h1>
<p><b>Protocol</b>, enforced by <code>circuitbench submit</code>: {e(protocol.text())}. Every number below is
recomputed from the submitted measurements and saved circuits.</p>
{cells.index_legend(n)}
<p><label>Show <select id="kind-filter"><option value="all">all models</option><option value="dense">dense</option>
<option value="sparse">sparse</option><option value="sae">SAE</option></select></label></p>
<table class="sortable" id="board"><thead>{_MAIN_HEAD}</thead>
<tbody>
{rows}
</tbody></table>
{_frontier(entries)}
<h2>Tasks</h2>
<p class="tasks">{task_links}</p>"""
    return _page("circuitbench leaderboard", body, 0)


def _example(task: str) -> str:
    from circuitbench.tasks.load import get_task
    from circuitbench.tasks.pairs import make_pairs

    try:
        spec = get_task(task)
        pair = make_pairs(spec, "test")[0]
    except (CircuitbenchError, IndexError):
        return "<p>(This task is not one of this circuitbench's tasks.)</p>"
    return (f"<p>{e(spec.probes)}</p>\n<div class=\"pair\">"
            + "".join(f'<div><pre class="prompt">{e(pair.prompts[s])}<span class="answer">{e(pair.correct(s))}</span>'
                      f'</pre><p>correct: <code>{e(repr(pair.correct(s)))}</code>, incorrect: '
                      f"<code>{e(repr(pair.incorrect(s)))}</code></p></div>" for s in (0, 1))
            + "</div>")


def _curves_for(entries: list[tuple[Entry, UnitRecord]]) -> str:
    by_model: dict[str, list[tuple[Entry, UnitRecord]]] = {}
    for en, u in entries:
        by_model.setdefault(en.meta.model.name, []).append((en, u))
    figs = []
    for model in sorted(by_model):
        series = []
        for en, u in by_model[model]:
            pts = sorted((100 * float(k[1].removeprefix("curve_f_")), v) for k, v in u.measurements.items()
                         if k[0] == "test" and k[1].startswith("curve_f_"))
            if pts:
                series.append(Series(en.meta.method.name, tuple(pts)))
        if series:
            figs.append("<figure>" + line_plot(series, "circuit size (% of nodes, log)", "faithfulness", log_x=True,
                                               title=f"{model}: faithfulness by circuit size") + "</figure>")
    return "\n".join(figs) or "<p>No pruned units: no curves.</p>"


DRAWN_NODES = 800
"""Circuits of more nodes are not drawn on the board (a picture of thousands of nodes shows nothing)."""


def _drawing(u: UnitRecord, title: str) -> str:
    from circuitbench.results.circuit import circuit_paths

    if not circuit_paths(u.path)[0].is_file():
        return "<p>(no saved circuit)</p>"
    if (u.summary.get("nodes") or 0) > DRAWN_NODES:
        return (f"<p>{u.summary['nodes']:,} nodes: too many to draw here. <code>circuitbench circuit draw "
                f"{e(u.path.name)} --out circuit.svg</code> draws it.</p>")
    return saved_circuit_svg(u.path, title=title)


def _task_page(task: str, entries: list[Entry], pages: dict[str, str]) -> str:
    rows, pruned = [], []
    for en in entries:
        for u in en.units:
            if u.summary["task"] != task:
                continue
            s = u.summary
            rows.append(f'<tr data-kind="{e(en.meta.model.kind or "unknown")}"><td><a href="../submissions/'
                        f'{e(en.content_hash)}.html">{e(en.meta.model.name)}</a></td><td>{e(en.meta.method.name)}</td>'
                        f"<td>{e(s['status'])}</td>" + _td(s.get("full_accuracy")) + _td(s.get("nodes"), "d")
                        + _td(s.get("edges"), "d") + f"<td>{e(control_text(s))}</td>"
                        + "".join(interval_td(s, k) for k in ("sufficiency_loss", "faithfulness", "cpr", "cmd"))
                        + _td(s.get("cpr_log")) + "</tr>")
            if s["status"] in PRUNED:
                pruned.append((en, u))
    drawings = []
    for en, u in pruned:
        s = u.summary
        opened = " open" if en.meta.method.name == "learned_mask" else ""
        page = pages.get(str(u.path))
        link = (f'<p><a class="explore" href="../{e(page)}">open in the circuit explorer</a></p>' if page else
                f"<p>Too many nodes for an explorer page here: <code>circuitbench circuit explore {e(u.path.name)} "
                "--out DIR</code> writes one.</p>" if page == "" else "")
        drawings.append(f"<details{opened}><summary>{e(en.label)}: {s['nodes']} nodes, {s['edges']} edges "
                        f"({e(s['status'])})</summary>{link}{_drawing(u, f'{task}: {en.label}')}</details>")
    unsolved = sorted({en.meta.model.name for en in entries for u in en.units
                       if u.summary["task"] == task and u.summary["status"] == "unsolved"})
    unmeasured = sorted({en.meta.model.name for en in entries for u in en.units
                         if u.summary["task"] == task and u.summary["status"] == "no_examples"})
    note = (f"<p class=\"note\">Not pruned, because the full model does not solve the task: {e(', '.join(unsolved))}."
            "</p>" if unsolved else "")
    note += (f"<p class=\"note\">Not measured, because no example survives the model's tokenizer: "
             f"{e(', '.join(unmeasured))}.</p>" if unmeasured else "")
    body = f"""<h1>{e(task)}</h1>
{_example(task)}
<h2>Circuits</h2>
<table class="sortable"><thead><tr><th>model</th><th>method</th><th>status</th><th>full accuracy</th><th>nodes</th>
<th>edges</th><th>control</th><th>test loss</th><th>faithfulness</th><th>CPR</th><th>CMD</th><th>CPR (log axis)</th>
</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
{note}
<p class="note">Status: {e(cells.STATUS_NOTE)} Test loss: the circuit's sufficiency loss on the held-out test pairs;
&plusmn; is the larger distance to an end of the number's 95% bootstrap interval over those pairs (hover for
the interval).</p>
<h2>Faithfulness curves</h2>
<div class="figs">{_curves_for(pruned)}</div>
<h2>Circuit drawings</h2>
<p>Sites are columns in forward order (layer and kind), kept channels are nodes, weighted edges are drawn
with a width proportional to |weight| (blue positive, red negative), residual edges dashed.</p>
{chr(10).join(drawings) or "<p>No circuit was found for this task.</p>"}"""
    return _page(f"{task}: circuitbench leaderboard", body, 1)


def _submission_page(en: Entry, out: Path) -> str:
    m = en.meta
    files = os.path.relpath(en.path, out / "submissions")
    rows = []
    for u in sorted(en.units, key=lambda u: u.summary["task"]):
        s = u.summary
        rel = f"{files}/{u.path.relative_to(en.path).as_posix()}"
        link = f'<a href="../tasks/{e(_safe(s["task"]))}.html">{e(s["task"])}</a>'
        rows.append(f"<tr><td>{link}</td><td>{e(s['status'])}</td>" + _td(s.get("full_accuracy"))
                    + _td(s.get("nodes"), "d") + _td(s.get("edges"), "d")
                    + _td(s.get("cpr")) + f'<td><a href="{e(rel)}">{e(u.path.name)}</a></td></tr>')
    prov_keys = ("circuitbench_version", "torch_version", "device", "threads", "host", "git_commit")
    prov = {k: sorted({str(u.provenance.get(k)) for u in en.units}) for k in prov_keys}
    hp = json.dumps(m.method.hyperparameters, sort_keys=True)
    body = f"""<h1>{e(m.model.name)} · {e(m.method.name)}</h1>
<p class="description">{e(m.description)}</p>
<table class="meta">
<tr><th>submitter</th><td>{e(m.submitter)}</td></tr>
<tr><th>model kind</th><td>{e(m.model.kind or "unknown")}</td></tr>
<tr><th>Hub id</th><td>{e(m.model.hub_id or "–")} {e(m.model.revision or "")}</td></tr>
<tr><th>weights sha256</th><td><code>{e(m.model.weights_sha256)}</code></td></tr>
<tr><th>dense twin</th><td>{e(m.model.dense_twin or "–")}</td></tr>
<tr><th>validation loss</th><td>{e(m.validation.loss if m.validation.loss is not None else "–")}
 {e(("on " + m.validation.corpus) if m.validation.corpus else "")}</td></tr>
<tr><th>method</th><td>{e(m.method.name)} <code>{e(hp)}</code></td></tr>
<tr><th>content hash</th><td><code>{e(en.content_hash)}</code>
 (<a href="{e(files)}/{META_FILE}">submission.json</a>)</td></tr>
{"".join(f"<tr><th>{e(k)}</th><td>{e(', '.join(v))}</td></tr>" for k, v in prov.items())}
</table>
<h2>Units</h2>
<table class="sortable"><thead><tr><th>task</th><th>status</th><th>full accuracy</th><th>nodes</th><th>edges</th>
<th>CPR</th><th>file</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>{seed_section(en)}"""
    return _page(f"{m.model.name} · {m.method.name}: circuitbench leaderboard", body, 1)


_CSS = """body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #263238; padding: 10px 24px; }
header a { color: #fff; text-decoration: none; font-weight: 600; }
main { padding: 12px 24px 40px; max-width: 1280px; }
table { border-collapse: collapse; margin: 8px 0 16px; background: #fff; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; }
th { background: #eceff1; }
table.sortable th { cursor: pointer; user-select: none; }
th[data-dir="asc"]::after { content: " \\25B2"; }
th[data-dir="desc"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.hidden { display: none; }
.pair { display: flex; gap: 16px; flex-wrap: wrap; }
pre.prompt { background: #fff; border: 1px solid #ddd; padding: 8px; max-width: 560px; overflow-x: auto; }
.answer { background: #c8e6c9; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 8px 0; }
""" + SVG_STYLE + """details { margin: 6px 0; background: #fff; border: 1px solid #ddd; padding: 4px 8px;
  overflow-x: auto; }
.note { color: #8a6d3b; }
.spread { color: #607d8b; font-size: 12px; }
"""

_JS = """// Sorting by column and filtering by model kind; no external requests, works from file://.
(function () {
  function key(row, col) {
    var cell = row.cells[col];
    var v = cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent.trim();
    if (v === "") return null;
    var n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  function sortBy(table, col, th) {
    var dir = th.getAttribute("data-dir") === "asc" ? "desc" : "asc";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-dir"); });
    th.setAttribute("data-dir", dir);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, col), y = key(b, col);
      if (x === null || y === null) return (x === null) - (y === null);  // blanks last
      var c = x < y ? -1 : x > y ? 1 : 0;
      return dir === "asc" ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, col) {
      th.addEventListener("click", function () { sortBy(table, col, th); });
    });
  });
  var filter = document.getElementById("kind-filter");
  if (filter) {
    filter.addEventListener("change", function () {
      document.querySelectorAll("#board tbody tr").forEach(function (r) {
        var show = filter.value === "all" || r.getAttribute("data-kind") === filter.value;
        r.classList.toggle("hidden", !show);
      });
    });
  }
})();
"""


def build(board: Path, out: Path | None = None, explore: bool = True) -> Path:
    """Write the static site of a board's accepted submissions (default: BOARD/site); returns its folder.

    With `explore`, every pruned circuit gets an explorer page (`circuitbench.leaderboard.explore`), linked
    from its task page; a page measured before, in `out` or in the board's own site, is reused.

    The site is written beside `out` and moved into place when complete, so a failed build leaves the old
    one untouched.

    Raises:
        CircuitbenchError: when the board has no submissions, or one cannot be read.
    """
    board = Path(board)
    out = Path(out) if out is not None else board / "site"
    # the site is replaced whole: never the board's submissions, nor a folder circuitbench did not build
    check_output_folder(out, "--out", [("--board", board / "submissions"), ("--board", board / PROTOCOL_FILE)],
                        _an_older_site)
    entries = load_board(board)
    if not entries:
        raise CircuitbenchError(f"{board / 'submissions'}: no accepted submissions; add one with "
                                "`circuitbench submit RESULTS --meta submission.json --board "
                                f"{board}` first")
    tasks = sorted({u.summary["task"] for en in entries for u in en.units})
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "tasks").mkdir(parents=True)
    (tmp / "submissions").mkdir()
    files = {"index.html": _index(entries, tasks, load_protocol(board)), "style.css": _CSS, "board.js": _JS}
    # explorer pages already measured are reused: from the site this build replaces, else the board's own
    previous = [out] + ([board / "site"] if (board / "site").resolve() != out.resolve() else [])
    pages = (board_explorers([(en.content_hash, u.path) for en in entries for u in en.pruned], tmp, DRAWN_NODES,
                             previous) if explore else {})
    for t in tasks:
        files[f"tasks/{_safe(t)}.html"] = _task_page(t, entries, pages)
    for en in entries:
        files[f"submissions/{en.content_hash}.html"] = _submission_page(en, out)
    for name, text in files.items():
        (tmp / name).write_text(text, encoding="utf-8")
    (tmp / OUTPUT_MARKER).write_text("a board's site, written by `circuitbench leaderboard build`; rebuilding "
                                     "replaces this folder whole\n", encoding="utf-8")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def _an_older_site(folder: Path) -> bool:
    """A site built before sites carried `OUTPUT_MARKER`: its index, script and stylesheet, pages and nothing else."""
    names = {p.name for p in folder.iterdir()}
    return {"index.html", "board.js", "style.css"} <= names and names <= {"index.html", "board.js", "style.css",
                                                                          "tasks", "submissions", "explore"}


def _safe(task: str) -> str:
    """A task's page name (the `:inverted` control spelled with `__`, as unit files do)."""
    return task.replace(":", "__").replace("/", "_")
