"""HTML table cells of the board's pages: escaped text, numbers with sort keys, and the spread over seeds."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from circuitbench.leaderboard.board import Entry
from circuitbench.results.report import geomean
from circuitbench.results.status import HELD_OUT_TOLERANCE, SPECIFIC_CONTROL_RATIO, STATUS_MEANING

STATUS_NOTE = "; ".join(f"{k}: {v}" for k, v in STATUS_MEANING.items() if k != "no_examples") + "."
"""What each status a task page can show means (`circuitbench.results.status`)."""


def e(value: Any) -> str:
    """HTML-escape anything (quotes too)."""
    return escape("" if value is None else str(value), quote=True)


def _num(x: float | None, fmt: str = ".3f") -> tuple[str, str]:
    """(shown text, sort key) of a number; blank for missing or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–", ""
    return format(x, fmt), repr(float(x))


def _td(x: float | None, fmt: str = ".3f") -> str:
    shown, key = _num(x, fmt)
    return f'<td class="num" data-v="{key}">{shown}</td>'


def interval_td(s: dict[str, Any], key: str, fmt: str = ".3f") -> str:
    """A number with its 95% bootstrap interval over the test pairs (`NAME_lo`, `NAME_hi`) as `±H` beneath."""
    cell = _td(s.get(key), fmt)
    value, lo, hi = s.get(key), s.get(f"{key}_lo"), s.get(f"{key}_hi")
    if value is None or lo is None or hi is None or any(math.isnan(v) for v in (value, lo, hi)):
        return cell
    return cell.replace("</td>", f'<br><span class="spread" title="95% bootstrap interval over the test pairs: '
                                  f'{lo:{fmt}} to {hi:{fmt}}">&plusmn;{max(hi - value, value - lo):{fmt}}</span></td>')


def _mean(values: list[float | None]) -> float:
    good = [v for v in values if v is not None and not math.isnan(v)]
    return sum(good) / len(good) if good else math.nan


def spread_td(entry: Entry, key: str) -> str:
    """The geomean of the first seed's solved tasks; with several seeds, the spread over seeds beneath it."""
    solved = entry.solved
    cell = _td(geomean([u.summary[key] for u in solved]) if solved else None, ".1f")
    spread = entry.spread(key)
    if spread is None:
        return cell
    mean, sd = spread
    return cell.replace("</td>", f'<br><span class="spread" title="mean and standard deviation over seeds '
                                  f'{", ".join(map(str, entry.seeds))}">{mean:.1f} &plusmn; {sd:.1f} over '
                                  f"{len(entry.seeds)} seeds</span></td>")


def seed_section(en: Entry) -> str:
    """Per task, the spread over seeds and the circuits' overlap (empty with one seed)."""
    if len(en.seeds) < 2:
        return ""
    from circuitbench.results.seeds import seed_table

    rows = []
    for r in seed_table([u.summary for u in en.seed_units], en.path / "results"):
        cells = "".join(f"<td class=\"num\">{_num(r[f'{k}_mean'], f)[0]} &plusmn; {_num(r[f'{k}_std'], f)[0]}</td>"
                        for k, f in (("nodes", ".1f"), ("edges", ".1f"), ("faithfulness", ".3f"), ("cpr", ".3f")))
        rows.append(f"<tr><td>{e(r['task'])}</td><td class=\"num\">{r['solved']} / {r['seeds']}</td>{cells}"
                    + _td(r["node_jaccard"]) + _td(r["edge_jaccard"]) + "</tr>")
    return f"""
<h2>Over seeds {e(", ".join(map(str, en.seeds)))}</h2>
<p>Mean &plusmn; standard deviation over the seeds, and the mean pairwise Jaccard overlap of the circuits' nodes and
edges (1: the same circuit every time). The tables above are of seed {en.seeds[0]}.</p>
<table class="sortable"><thead><tr><th>task</th><th>solved</th><th>nodes</th><th>edges</th><th>faithfulness</th>
<th>CPR</th><th>node overlap</th><th>edge overlap</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>"""


def index_legend(n: int) -> str:
    """The index page's paragraph saying what each column of the main table counts, for a board of n tasks."""
    return f"""<p>Each row is one accepted submission: a model and a circuit-finding method. <b>tasks solved</b>:
pruned to a circuit that meets the target task loss on the search pairs and holds on the held-out test pairs
(test loss at most {HELD_OUT_TOLERANCE:g} x the target), out of all {n} tasks; a circuit that meets it on the search
pairs only is marked <code>train_only</code> and not counted. <b>specific</b>: of those, the tasks whose
inverted-label control (the same search on swapped answers) misses the target or needs at least
{SPECIFIC_CONTROL_RATIO:g} x the circuit's size: a circuit that explains the task, not one any labels would give.
<b>geomean nodes / edges</b>: geometric means over the solved tasks (smaller circuits are easier to read).
<b>CPR</b> (higher is better) and <b>CMD</b> (lower is better): MIB's areas under the faithfulness curve on the
linear size axis, averaged over the pruned tasks; the log axis sees circuits far below 10 % of the model.
<b>loss measured by</b>: <code>circuitbench val-loss</code> on the corpus's held-out packages, or reported by the
submitter. Click a column to sort.</p>"""
