"""The data an explorer page embeds: packed for size, unpacked as the page's script does, and read back.

A page's per-example numbers are base64 signed bytes with a per-node scale and its edges three base64
columns (`pack_data`); `unpack_data` is the inverse, and `read_page_data` reads a written page (format 1,
plain JSON lists, or 2) back into `explorer_data`'s form. A board's pages share their test prompts, one
script per model and task (`examples_file`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from typing import Any


def _sig(x: Any) -> Any:
    """Floats to 4 significant digits (the page's size), NaN to None (JSON has no NaN); lists and dicts within."""
    if isinstance(x, list):
        return [_sig(v) for v in x]
    if isinstance(x, dict):
        return {k: _sig(v) for k, v in x.items()}
    if isinstance(x, float):
        return None if not math.isfinite(x) else float(f"{x:.4g}")
    return x


PAGE_FORMAT = "2"
"""The version of the data a page embeds. Pages of format 1 (numbers as JSON lists, examples in every page)
are still read (`read_page_data`) and re-rendered in this one; any other version is measured again."""

QUANT = 127
"""Per-example numbers are embedded as signed bytes in [-QUANT, QUANT] times a per-node scale / QUANT (the
node's largest |value|; about two significant digits, what a strip of dots and a colour scale show), base64
encoded; -128 stands for a missing number. The node table keeps full precision."""

_MISSING8, _MISSING16 = -128, -32768
EDGE_QUANT = 32767
"""Edge weights are signed 16-bit integers times the page's largest |weight| / EDGE_QUANT (four digits)."""


def _scale(values: list[float | None]) -> float:
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    return _sig(max(finite, default=0.0) or 1.0)


def _pack(values: list[float | None] | None, scale: float, quant: int = QUANT, fmt: str = "b") -> str | None:
    """Numbers as base64 little-endian integers of `fmt` (b: int8, h: int16) times scale / quant."""
    if values is None:
        return None
    missing = _MISSING8 if fmt == "b" else _MISSING16
    ints = [missing if v is None or not math.isfinite(v) else max(-quant, min(quant, round(v / scale * quant)))
            for v in values]
    return base64.b64encode(struct.pack(f"<{len(ints)}{fmt}", *ints)).decode("ascii")


def _unpack(text: str | None, scale: float, quant: int = QUANT, fmt: str = "b") -> list[float | None] | None:
    """`_pack`'s inverse (up to its rounding)."""
    if text is None:
        return None
    raw = base64.b64decode(text)
    missing = _MISSING8 if fmt == "b" else _MISSING16
    ints = struct.unpack(f"<{len(raw) // struct.calcsize(fmt)}{fmt}", raw)
    return [None if i == missing else i * scale / quant for i in ints]


def _index_fmt(n: int) -> str:
    return "H" if n < 65536 else "I"


def pack_data(data: dict[str, Any]) -> dict[str, Any]:
    """The form a page embeds (`explorer_data`'s, packed).

    Per-example numbers become base64 bytes with a scale per node (`QUANT`), the edges three base64 columns
    (source and destination node numbers, weights as 16-bit integers).
    """
    out = dict(data, format=PAGE_FORMAT)
    nodes = {}
    for name, n in data["nodes"].items():
        scale = _scale([*(n.get("act") or []), *(v for t in n.get("topActs") or [] for v in t)])
        effect_scale = _scale(n.get("effect") or [])
        nodes[name] = {**n, "as": scale, "es": effect_scale, "act": _pack(n.get("act"), scale),
                       "topActs": [_pack(t, scale) for t in n.get("topActs") or []],
                       "effect": _pack(n.get("effect"), effect_scale)}
    out["nodes"] = nodes
    edges = data["edges"]
    index = _index_fmt(len(data["names"]))
    wscale = _scale([e[2] for e in edges])
    out["edges"] = {"n": len(edges), "index": index, "ws": wscale,
                    "src": base64.b64encode(struct.pack(f"<{len(edges)}{index}", *(e[0] for e in edges))).decode(),
                    "dst": base64.b64encode(struct.pack(f"<{len(edges)}{index}", *(e[1] for e in edges))).decode(),
                    "w": _pack([e[2] for e in edges], wscale, EDGE_QUANT, "h")}
    return out


def unpack_data(packed: dict[str, Any]) -> dict[str, Any]:
    """`pack_data`'s inverse (the numbers as the page shows them, after its rounding); reads format 1 too."""
    data = dict(packed)
    nodes = {}
    old = packed.get("format") == "1"  # JSON lists of integers in [-999, 999] times scale / 999

    def un(v: Any, f: float) -> list[float | None] | None:
        if old:
            return None if v is None else [None if x is None else x * f / 999 for x in v]
        return _unpack(v, f)

    for name, n in packed["nodes"].items():
        n = dict(n)
        scale, effect_scale = n.pop("as", 1.0), n.pop("es", 1.0)
        n["act"], n["effect"] = un(n.get("act"), scale), un(n.get("effect"), effect_scale)
        n["topActs"] = [un(t, scale) for t in n.get("topActs") or []]
        nodes[name] = n
    data["nodes"] = nodes
    e = packed["edges"]
    if isinstance(e, dict):
        fmt = e["index"]
        src = struct.unpack(f"<{e['n']}{fmt}", base64.b64decode(e["src"]))
        dst = struct.unpack(f"<{e['n']}{fmt}", base64.b64decode(e["dst"]))
        w = _unpack(e["w"], e["ws"], EDGE_QUANT, "h") or []
        data["edges"] = [[a, b, c] for a, b, c in zip(src, dst, w, strict=True)]
    data["format"] = PAGE_FORMAT
    return data


BOARD_NODES_WITH_DATA = 256
"""A board's explorer page carries per-example numbers for this many of a circuit's highest-scoring nodes (the
others show their place, score and edges, and the page says so); `circuitbench circuit explore` writes a page
with all of them. It keeps a board of baseline circuits (hundreds of nodes each) small."""


def keep_data_for_top(data: dict[str, Any], n: int) -> dict[str, Any]:
    """`data` with per-example numbers only for its `n` highest-scoring measured nodes."""
    measured = [name for name, x in data["nodes"].items() if x.get("act") is not None]
    if len(measured) <= n:
        return data
    keep = set(sorted(measured, key=lambda m: (-float(data["nodes"][m]["score"] or 0.0), m))[:n])
    blank: dict[str, Any] = {"act": None, "topActs": [], "effect": None, "top": None, "m0": None, "m1": None,
                             "sep": None, "ablLoss": None}
    nodes = {name: x if name in keep else {**x, **blank} for name, x in data["nodes"].items()}
    return {**data, "nodes": nodes, "nodesWithData": n}


EXAMPLES_DIR = "examples"
"""Where a board's shared example files lie, beside the submissions' page folders under `explore/`."""


def examples_key(data: dict[str, Any]) -> str:
    """The name of the examples a page shows: its task and a hash of its model, task and examples.

    The hash covers every example's pair, side and answers, not its tokens, so pages of one model and task
    share it whatever rows they show.
    """
    u = data["unit"]
    skeleton = [[e.get("pair"), e.get("side"), e.get("correct"), e.get("incorrect")] for e in data["examples"]]
    digest = hashlib.sha256(json.dumps([u["model"], u["task"], skeleton]).encode()).hexdigest()[:12]
    return f"{u['task'].replace(':', '__').replace('/', '_')}.{digest}"


def examples_file(key: str, examples: list[dict[str, Any]]) -> str:
    """The script a board's pages load their examples from: it adds them to `window.CB_EXAMPLES[key]`."""
    blob = json.dumps(examples, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return f"(window.CB_EXAMPLES = window.CB_EXAMPLES || {{}})[{json.dumps(key)}] = {blob};\n"


def _read_examples_file(path: Any) -> list[dict[str, Any]] | None:
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    head, sep, body = text.partition("] = ")
    try:
        out = json.loads(body.rstrip().removesuffix(";").replace("<\\/", "</")) if sep else None
    except ValueError:
        return None
    return out if isinstance(out, list) else None


def read_page_data(path: Any) -> dict[str, Any] | None:
    """The data an explorer page shows, unpacked (`explorer_data`'s form, examples included).

    None unless the file is a page of a data format this version reads (1 or 2) whose examples are found.
    """
    import re
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    m = re.search(r'<script id="circuit-data" type="application/json">(.*?)</script>', text, re.DOTALL)
    try:
        packed = json.loads(m.group(1).replace("<\\/", "</")) if m else None
    except ValueError:
        return None
    if not isinstance(packed, dict) or packed.get("format") not in ("1", PAGE_FORMAT):
        return None
    try:
        data = unpack_data(packed)
    except (KeyError, TypeError, ValueError, struct.error):
        return None
    if data.get("examplesRef") and data.get("examples") is None:
        src = re.search(r'<script src="([^"]+)"></script>', text)
        examples = _read_examples_file(path.parent / src.group(1)) if src else None
        if examples is None:
            return None
        data["examples"] = examples
    return data
