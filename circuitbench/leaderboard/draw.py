"""Pictures for the static board, as plain SVG text: circuit drawings, faithfulness curves, the frontier plot.

Written by hand rather than with matplotlib: the board must be byte-identical from the same inputs and
small enough to inline in a page (matplotlib's SVG carries generated ids and one path per glyph), and
every label here is text a browser renders and searches. Every string that reaches the SVG is
XML-escaped; numbers are formatted with fixed precision, so the output depends on nothing but the inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f")
"""Line colours, in series order (colour-blind-distinguishable in the first four)."""


def _n(x: float) -> str:
    """A coordinate with two decimals and no trailing zeros ("12.5", "3")."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class CircuitNode:
    """A kept channel: its site (column) and channel index."""

    site: str
    channel: int


@dataclass(frozen=True)
class CircuitEdge:
    """An edge between two kept channels; `weight` is NaN for a weightless residual edge."""

    src: CircuitNode
    dst: CircuitNode
    weight: float
    kind: str


SVG_STYLE = """svg text { font: 11px system-ui, sans-serif; fill: #333; }
svg .caption { font-weight: 600; }
svg .site { font-weight: 600; }
svg .count, svg .channel { fill: #666; font-size: 9px; }
svg .node { fill: #fff; stroke: #263238; stroke-width: 1.2; }
svg .frame { fill: none; stroke: #999; }
svg .grid { stroke: #eee; }
svg .tick { stroke: #999; }
svg .twin { stroke: #555; stroke-dasharray: 2 3; stroke-width: 1.2; }
"""
"""How the SVG pictures look: the board's stylesheet includes it, a standalone drawing embeds it."""


def _legend(x: float, y: float) -> list[str]:
    """What the edge colours, widths and dashes mean, in one line."""
    return [f'<g class="legend" transform="translate({_n(x)},{_n(y)})">',
            '<line x1="0" y1="-4" x2="22" y2="-4" stroke="#1f5fbf" stroke-width="2"/>'
            '<text x="26" y="0">positive weight</text>',
            '<line x1="118" y1="-4" x2="140" y2="-4" stroke="#c0392b" stroke-width="2"/>'
            '<text x="144" y="0">negative weight</text>',
            '<line x1="240" y1="-4" x2="262" y2="-4" stroke="#999" stroke-dasharray="3 2"/>'
            '<text x="266" y="0">residual (no weight)</text>',
            '<text x="390" y="0">line width: |weight|</text></g>']


def circuit_svg(sites: Sequence[tuple[str, str, int]], nodes: Sequence[CircuitNode], edges: Sequence[CircuitEdge],
                max_edges: int = 400, title: str = "", n_edges: int | None = None, standalone: bool = False) -> str:
    """Draw a circuit: sites as columns in forward order, kept channels as labelled nodes, edges as lines.

    Weighted edges are drawn with a width proportional to |weight| (blue positive, red negative); residual
    edges (a write channel read back by a later sublayer) are grey and dashed. Above `max_edges`, the
    strongest weighted edges and then the residual ones are drawn, and the caption says how many.

    Args:
        sites: (name, kind, layer) of every site, in forward order.
        nodes: the kept channels.
        edges: the edges between them.
        max_edges: the most edges drawn.
        title: a caption above the drawing.
        n_edges: the circuit's edge count, when `edges` holds only its strongest (default: len(edges)).
        standalone: embed the stylesheet (a file of its own, not a board page).
    """
    kept: dict[str, list[int]] = {}
    for n in nodes:
        kept.setdefault(n.site, []).append(n.channel)
    columns = [(name, kind, layer) for name, kind, layer in sites if kept.get(name)]
    col_w, row_h, top, left = 92.0, 16.0, 72.0, 20.0
    rows = max((len(v) for v in kept.values()), default=1)
    width = max(left * 2 + col_w * max(len(columns), 1), 520.0)  # at least the legend's width
    height = top + row_h * rows + 44
    pos: dict[CircuitNode, tuple[float, float]] = {}
    for c, (name, _, _) in enumerate(columns):
        for r, ch in enumerate(sorted(kept[name])):
            pos[CircuitNode(name, ch)] = (left + col_w * c + col_w / 2, top + row_h * r + row_h / 2)
    drawable = [e for e in edges if e.src in pos and e.dst in pos]
    weighted = sorted((e for e in drawable if not math.isnan(e.weight)),
                      key=lambda e: (-abs(e.weight), e.src.site, e.src.channel, e.dst.site, e.dst.channel))
    residual = sorted((e for e in drawable if math.isnan(e.weight)),
                      key=lambda e: (e.src.site, e.src.channel, e.dst.site, e.dst.channel))
    shown = (weighted + residual)[:max_edges]
    wmax = max((abs(e.weight) for e in weighted), default=1.0) or 1.0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="circuit" width="{_n(width)}" height="{_n(height)}" '
           f'viewBox="0 0 {_n(width)} {_n(height)}" role="img" aria-label="{escape(title or "circuit")}">',
           f'<title>{escape(title or "circuit")}</title>']
    if standalone:
        out.append(f"<style>{SVG_STYLE}svg {{ background: #fff; }}</style>")
    total = len(edges) if n_edges is None else n_edges
    caption = (f"{len(nodes)} nodes, {total} edges"
               + (f" (the {len(shown)} strongest drawn)" if len(shown) < total else "")
               + ("" if nodes else ": the empty circuit (every node ablated) already meets the target"))
    out.append(f'<text x="{_n(left)}" y="16" class="caption">{escape(caption)}</text>')
    for c, (name, kind, layer) in enumerate(columns):
        x = left + col_w * c + col_w / 2
        y = 30 + 25 * (c % 2)  # neighbouring headers on two rows, so long site names never overlap
        out.append(f'<text x="{_n(x)}" y="{y}" text-anchor="middle" class="site">L{layer} {escape(kind)}</text>')
        out.append(f'<text x="{_n(x)}" y="{y + 12}" text-anchor="middle" class="count">{len(kept[name])} kept</text>')
    out.append('<g class="edges">')
    for e in shown:
        (x1, y1), (x2, y2) = pos[e.src], pos[e.dst]
        bend = max((x2 - x1) / 2, 10.0)  # a cubic curve, leaving and entering horizontally, over skipped columns
        d = f"M{_n(x1)},{_n(y1)} C{_n(x1 + bend)},{_n(y1)} {_n(x2 - bend)},{_n(y2)} {_n(x2)},{_n(y2)}"
        label = f"{escape(e.src.site)}[{e.src.channel}] -&gt; {escape(e.dst.site)}[{e.dst.channel}]"
        if math.isnan(e.weight):
            out.append(f'<path d="{d}" fill="none" stroke="#999" stroke-width="0.6" stroke-dasharray="3 2" '
                       f'opacity="0.7"><title>{label} (residual)</title></path>')
        else:
            colour = "#1f5fbf" if e.weight > 0 else "#c0392b"
            w = 0.4 + 2.6 * abs(e.weight) / wmax
            out.append(f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="{_n(w)}" opacity="0.75">'
                       f"<title>{label}: {e.weight:.3g}</title></path>")
    out.append("</g>")
    out.append('<g class="nodes">')
    for node, (nx, ny) in sorted(pos.items(), key=lambda kv: (kv[1][0], kv[1][1])):
        out.append(f'<circle cx="{_n(nx)}" cy="{_n(ny)}" r="5.5" class="node"><title>{escape(node.site)} channel '
                   f'{node.channel}</title></circle>')
        out.append(f'<text x="{_n(nx + 8)}" y="{_n(ny + 3.5)}" class="channel">{node.channel}</text>')
    out.append("</g>")
    out += _legend(left, height - 10)
    out.append("</svg>")
    return "\n".join(out)


def saved_circuit_svg(unit: Path, max_edges: int = 400, title: str = "", standalone: bool = False) -> str:
    """`circuit_svg` of the circuit saved beside a unit file (its `.circuit.safetensors` and `.edges.parquet`).

    Raises:
        CircuitbenchError: when the unit has no saved circuit (it was not pruned) or the file is damaged.
    """
    import pyarrow.parquet as pq

    from circuitbench.results.circuit import Circuit, circuit_paths, edges_total

    cpath, epath = circuit_paths(Path(unit))
    circuit = Circuit.load(cpath)
    nodes = [CircuitNode(site, int(ch)) for site, chans in circuit.kept().items() for ch in chans]
    edges = []
    total = edges_total(epath) if epath.is_file() else 0
    if epath.is_file():
        for r in pq.read_table(epath).to_pylist():
            w = r["weight"]
            edges.append(CircuitEdge(CircuitNode(r["src_site"], int(r["src_channel"])),
                                     CircuitNode(r["dst_site"], int(r["dst_channel"])),
                                     math.nan if w is None else float(w), r["kind"]))
    sites = [(s.name, s.kind, s.layer) for s in circuit.sites]
    return circuit_svg(sites, nodes, edges, max_edges=max_edges, n_edges=total, standalone=standalone,
                       title=title or f"{circuit.task} in {circuit.model}: {circuit.k} nodes")


@dataclass(frozen=True)
class Series:
    """One line of a plot: a label and its (x, y) points."""

    label: str
    points: tuple[tuple[float, float], ...]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values (1, 2 or 5 times a power of ten apart) within [lo, hi]."""
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _ticks_log(lo: float, hi: float) -> list[float]:
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return [10.0**k for k in range(a, b + 1)]


@dataclass(frozen=True)
class _Frame:
    """A plot's data limits and where they land in pixels."""

    ml: float
    mt: float
    pw: float
    ph: float
    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float
    log_x: bool

    @classmethod
    def fit(cls, pts: list[tuple[float, float]], log_x: bool, y_range: tuple[float, float] | None, width: int,
            height: int, margins: tuple[float, float, float, float]) -> _Frame:
        """Limits that hold every point: whole decades on a log x axis; the y data padded by 8 %."""
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        if log_x:
            x_lo, x_hi = min(xs), max(xs)
            if x_lo == x_hi:
                x_lo, x_hi = x_lo / 10, x_hi * 10
            x_lo, x_hi = 10 ** math.floor(math.log10(x_lo)), 10 ** math.ceil(math.log10(x_hi))
        else:
            x_lo, x_hi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        if y_range is not None:
            y_lo, y_hi = y_range
        else:
            y_lo, y_hi = min(ys), max(ys)
            pad = (y_hi - y_lo) * 0.08 or 0.05 * (abs(y_hi) or 1.0)
            y_lo, y_hi = y_lo - pad, y_hi + pad
        ml, mr, mt, mb = margins
        return cls(ml, mt, width - ml - mr, height - mt - mb, x_lo, x_hi, y_lo, y_hi, log_x)

    def sx(self, x: float) -> float:
        """The pixel column of x."""
        lo, hi = self.x_lo, self.x_hi
        f = (math.log10(x) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) if self.log_x else (x - lo) / (hi - lo)
        return self.ml + f * self.pw

    def sy(self, y: float) -> float:
        """The pixel row of y (clipped to the frame)."""
        return self.mt + (1 - (min(max(y, self.y_lo), self.y_hi) - self.y_lo) / (self.y_hi - self.y_lo)) * self.ph


def _axes(f: _Frame, xlabel: str, ylabel: str, height: int) -> list[str]:
    """The frame, ticks, grid and axis labels of a plot."""
    ml, mt, pw, ph, sx, sy = f.ml, f.mt, f.pw, f.ph, f.sx, f.sy
    out = [f'<rect x="{_n(ml)}" y="{_n(mt)}" width="{_n(pw)}" height="{_n(ph)}" class="frame"/>']
    xt = _ticks_log(f.x_lo, f.x_hi) if f.log_x else [f.x_lo + (f.x_hi - f.x_lo) * i / 4 for i in range(5)]
    for t in xt:
        out.append(f'<line x1="{_n(sx(t))}" y1="{_n(mt + ph)}" x2="{_n(sx(t))}" y2="{_n(mt + ph + 4)}" class="tick"/>')
        out.append(f'<text x="{_n(sx(t))}" y="{_n(mt + ph + 16)}" text-anchor="middle" class="ticklabel">{t:g}</text>')
    for t in _nice_ticks(f.y_lo, f.y_hi):
        out.append(f'<line x1="{_n(ml - 4)}" y1="{_n(sy(t))}" x2="{_n(ml + pw)}" y2="{_n(sy(t))}" class="grid"/>')
        out.append(f'<text x="{_n(ml - 6)}" y="{_n(sy(t) + 4)}" text-anchor="end" class="ticklabel">{t:.3g}</text>')
    out.append(f'<text x="{_n(ml + pw / 2)}" y="{_n(height - 8)}" text-anchor="middle" class="axis">'
               f"{escape(xlabel)}</text>")
    out.append(f'<text x="14" y="{_n(mt + ph / 2)}" text-anchor="middle" class="axis" '
               f'transform="rotate(-90 14 {_n(mt + ph / 2)})">{escape(ylabel)}</text>')
    return out


def line_plot(series: Sequence[Series], xlabel: str, ylabel: str, log_x: bool = True, y_range: tuple[float, float]
              | None = None, width: int = 460, height: int = 300, title: str = "",
              links: Sequence[tuple[int, int]] = (), markers_only: bool = False) -> str:
    """A small line (or scatter) plot with axes, ticks and a legend.

    Args:
        series: the lines, drawn in PALETTE order.
        xlabel: x-axis label.
        ylabel: y-axis label.
        log_x: a log10 x axis (circuit sizes, edge counts).
        y_range: fixed y limits; default: the data's, padded.
        width: pixels.
        height: pixels.
        title: a caption.
        links: pairs of series indices joined by a dotted line between their first points (a sparse model
            and its dense twin).
        markers_only: a scatter plot (each series one or more points, no lines).
    """
    pts = [p for s in series for p in s.points if all(math.isfinite(v) for v in p) and (not log_x or p[0] > 0)]
    ml, mr, mt, mb = 58.0, 34.0, 26.0, 44.0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{width}" height="{height + 18 * len(series)}"'
           f' viewBox="0 0 {width} {height + 18 * len(series)}" role="img" aria-label="{escape(title or ylabel)}">',
           f"<title>{escape(title or ylabel)}</title>"]
    if title:
        out.append(f'<text x="{_n(ml)}" y="16" class="caption">{escape(title)}</text>')
    if not pts:
        out.append(f'<text x="{_n(ml)}" y="{height / 2:.0f}" class="caption">nothing to plot</text></svg>')
        return "\n".join(out)
    f = _Frame.fit(pts, log_x, y_range, width, height, (ml, mr, mt, mb))
    sx, sy = f.sx, f.sy
    out += _axes(f, xlabel, ylabel, height)
    first: dict[int, tuple[float, float]] = {}
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        good = [p for p in s.points if all(math.isfinite(v) for v in p) and (not log_x or p[0] > 0)]
        if good:
            first[i] = (sx(good[0][0]), sy(good[0][1]))
        if len(good) > 1 and not markers_only:
            d = " ".join(f"{_n(sx(x))},{_n(sy(y))}" for x, y in good)
            out.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        for x, y in good:
            out.append(f'<circle cx="{_n(sx(x))}" cy="{_n(sy(y))}" r="{4 if markers_only else 2.4}" fill="{colour}">'
                       f"<title>{escape(s.label)}: ({x:.4g}, {y:.4g})</title></circle>")
            if markers_only:  # a scatter point is named where it is
                out.append(f'<text x="{_n(sx(x) + 7)}" y="{_n(sy(y) - 6)}" class="legend">{escape(s.label)}</text>')
        ly = height + 18 * i + 4
        out.append(f'<rect x="{_n(ml)}" y="{_n(ly)}" width="12" height="10" fill="{colour}"/>')
        out.append(f'<text x="{_n(ml + 18)}" y="{_n(ly + 9)}" class="legend">{escape(s.label)}</text>')
    for a, b in links:
        if a in first and b in first:
            (x1, y1), (x2, y2) = first[a], first[b]
            out.append(f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" class="twin"/>')
    out.append("</svg>")
    return "\n".join(out)
