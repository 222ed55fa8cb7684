"""HTML table cells of the board's pages: escaped text, numbers with sort keys, and the spread over seeds."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from circuitbench.leaderboard.board import Entry
from circuitbench.results.report import geomean


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
