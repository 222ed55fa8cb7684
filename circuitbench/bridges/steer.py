"""`circuitbench bridge steer`: steer a dense model through its bridges with a sparse model's circuit.

For a task and the sparse model's saved circuit on it:
1. The circuit's nodes on the residual stream (attention and MLP reads and writes: `bridge.location_of`)
   are mapped to their residual channel at a bridge location. On the task's test pairs the sparse model
   runs unpatched; a channel *separates* the contrast when the mean of its value at the answer position
   on the two sides differs by at least `min_separation` pooled standard deviations. A channel that
   separates at several locations is moved once, at the earliest: the residual stream carries it on.
2. Each test example's separating channels are moved from their value towards the other side's mean
   (`strength` 1: all the way), at the answer position, in the sparse residual. The change decodes into the
   dense model through the bridge's linear decoder (dec(s + d e_c) - dec(s) = d W[:, c]) and is added to the
   dense residual at the same location.
3. Measured on both models: P(correct) between the two completions before and after, its shift, and the
   flip rate (of the examples answered correctly before, the share that now prefer the other side's
   completion), for: all separating channels together (`circuit`), each alone (`node`), the same number of
   random channels at the same locations outside the circuit moved the same way, each towards the other
   side's mean of its own values (`random`), the same random channels each moved by as much as its circuit
   channel was (`random_matched`: a control of the same size that points elsewhere), both averaged over
   `controls` draws, and nothing (`none`).
The sparse model's own rows are the reference: what the same move does where the circuit lives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuitbench.bridges.bridge import BridgeError, Bridges, location_of
from circuitbench.bridges.losses import record
from circuitbench.protocols import Batch, Hook, ModelAdapter

STEER_SUFFIX = ".steer.parquet"
MAX_SINGLE = 16
"""Separating channels also steered one at a time (the most separating first)."""


@dataclass
class SteerResult:
    """The rows (one per intervention and model) and what they were measured with."""

    rows: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)


def steer_path(unit_path: Path) -> Path:
    """Where a unit's steering results live: beside it, `TASK.METHOD.seedN.steer.parquet`."""
    return Path(unit_path).with_name(Path(unit_path).name.removesuffix(".parquet") + STEER_SUFFIX)


def check_settings(strength: float, min_separation: float, controls: int) -> None:
    """Refuse steering settings that cannot give a true number.

    Raises:
        BridgeError: naming the flag.
    """
    if not math.isfinite(strength):
        raise BridgeError(f"--strength {strength}: give a finite number (1 moves all the way to the other side)")
    if not (math.isfinite(min_separation) and min_separation >= 0):
        raise BridgeError(f"--min-separation {min_separation}: give a number >= 0 (in pooled standard deviations)")
    if controls < 1:
        raise BridgeError(f"--controls {controls}: give at least 1 random draw")


@torch.no_grad()
def steer(bridges: Bridges, dense: ModelAdapter, sparse: ModelAdapter, saved: Any, strength: float = 1.0,
          min_separation: float = 1.0, controls: int = 8, seed: int = 0) -> SteerResult:
    """Steer through the bridges with the circuit of `saved` (a `runs.saved.SavedUnit` on the sparse model).

    Raises:
        BridgeError: when the circuit is not the sparse model's, or has no node on a bridged location.
    """
    from circuitbench.circuits.evaluate import encode_unit_task

    check_settings(strength, min_separation, controls)
    u, circuit = saved.prov.unit, saved.circuit
    sha = sparse.provenance.get("weights_sha256")
    if u.model.weights_sha256 is not None and sha != u.model.weights_sha256:
        raise BridgeError(f"{saved.path}: the circuit was found on {u.model.name} (weights "
                          f"{str(u.model.weights_sha256)[:12]}), not on the bridges' sparse model {sparse.name} "
                          f"({str(sha)[:12]}); give a unit of the sparse model")
    _, test_enc = encode_unit_task(u, sparse)
    rows = Batch.of(test_enc, sparse.device)
    candidates = _residual_nodes(circuit, bridges)
    if not candidates:
        raise BridgeError(f"{saved.path}: none of the circuit's {circuit.k} nodes is a residual read or write at a "
                          f"bridged location ({', '.join(bridges.locations)}); there is nothing to steer")
    _, acts = record(sparse.forward, rows.tokens, bridges.locations)
    idx = torch.arange(len(rows), device=rows.last.device)
    at_answer = {loc: a[idx, rows.last].float().cpu() for loc, a in acts.items()}  # {loc: [N, d]}
    side = torch.arange(len(rows)) % 2
    stats = {loc: _side_stats(a, side) for loc, a in at_answer.items()}
    separating = _separating(candidates, stats, min_separation, bridges.locations)
    base = _Measure(dense, sparse, bridges, rows, at_answer, stats, side, strength)
    out = [*base.run("none", [], "")]
    if separating:
        chans: list[tuple[str, int]] = [(str(r["location"]), int(r["channel"])) for r in separating]
        out += base.run("circuit", chans, ",".join(n for r in separating for n in r["nodes"]))
        for r in separating[:MAX_SINGLE]:
            out += base.run("node", [(str(r["location"]), int(r["channel"]))], ",".join(r["nodes"]))
        in_circuit = {loc: {ch for (lc, ch) in candidates if lc == loc} for loc in bridges.locations}
        out += _controls(base, chans, in_circuit, controls, seed)
    meta = {"task": u.task, "unit_key": saved.prov.unit_key, "unit": str(saved.path), "method": u.method,
            "circuit_nodes": circuit.k, "residual_nodes": sum(len(v) for v in candidates.values()),
            "separating": separating, "strength": strength, "min_separation": min_separation,
            "controls": controls, "seed": seed, "pairs": len(rows) // 2, "position": "answer"}
    return SteerResult(out, meta)


def _residual_nodes(circuit: Any, bridges: Bridges) -> dict[tuple[str, int], list[str]]:
    """The circuit's kept nodes on the residual stream: {(location, channel): node names}."""
    n_layer = 1 + max(s.layer for s in circuit.sites)
    out: dict[tuple[str, int], list[str]] = {}
    kept = circuit.kept()
    for s in circuit.sites:
        loc = location_of(s.name, s.kind, s.layer, n_layer)
        if loc is None or loc not in bridges.locations:
            continue
        for ch in kept.get(s.name, []):
            out.setdefault((loc, ch), []).append(f"{s.name}:{ch}")
    return out


def _separating(candidates: dict[tuple[str, int], list[str]], stats: dict[str, tuple[Tensor, Tensor, Tensor]],
                min_separation: float, locations: list[str]) -> list[dict[str, Any]]:
    """The residual channels whose side means differ by `min_separation` pooled sd, most separating first.

    The residual stream carries a channel forward: one that separates at several locations is kept once, at
    the earliest (moving it again later, from its unmoved value, would move it twice).
    """
    order = {loc: i for i, loc in enumerate(locations)}
    first: dict[int, dict[str, Any]] = {}
    for (loc, ch), names in sorted(candidates.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        m0, m1, sep = (float(t[ch]) for t in stats[loc])
        if abs(sep) < min_separation:
            continue
        if ch in first:
            first[ch]["nodes"] = [*first[ch]["nodes"], *names]
        else:
            first[ch] = {"location": loc, "channel": ch, "nodes": names, "mean_side0": m0, "mean_side1": m1,
                         "separation": sep}
    return sorted(first.values(), key=lambda r: -abs(float(r["separation"])))


def _controls(base: _Measure, chans: list[tuple[str, int]], in_circuit: dict[str, set[int]], controls: int,
              seed: int) -> list[dict[str, Any]]:
    """Both random controls, `controls` draws each, averaged per model.

    As many channels outside the circuit at the same locations, moved to their own other-side mean (`random`)
    or as far as the circuit's (`random_matched`).
    """
    gen = torch.Generator().manual_seed(seed)
    random_draws, matched_draws = [], []
    for _ in range(controls):
        pairs: list[tuple[tuple[str, int], tuple[str, int]]] = []  # (circuit channel, random stand-in)
        for src in chans:
            loc = src[0]
            taken = {p for _, p in pairs}
            width = base.at_answer[loc].shape[1]
            pool = [c for c in range(width) if c not in in_circuit[loc] and (loc, c) not in taken]
            if pool:
                pairs.append((src, (loc, pool[int(torch.randint(len(pool), (1,), generator=gen))])))
        pick = [p for _, p in pairs]
        random_draws.append(base.run("random", pick, ""))
        matched_draws.append(base.run("random_matched", pick, "", like=[c for c, _ in pairs]))
    return (_average(random_draws, f"{len(chans)} random channels per draw at the same locations, each moved to "
                     "the other side's mean of its own values")
            + _average(matched_draws, f"{len(chans)} random channels per draw at the same locations, each moved by "
                       "its circuit channel's change"))


def _average(draws: list[list[dict[str, Any]]], nodes: str) -> list[dict[str, Any]]:
    """The control's draws averaged per model (a row each), with the spread of the shift over draws."""
    out = []
    for model_i in range(len(draws[0])):
        group = [d[model_i] for d in draws]
        avg = dict(group[0])
        for k in ("p_correct_after", "shift", "flip_rate", "accuracy_after"):
            avg[k] = sum(g[k] for g in group) / len(group)
        avg.update(shift_sd=_sd([g["shift"] for g in group]), draws=len(group), nodes=nodes)
        out.append(avg)
    return out


def _side_stats(a: Tensor, side: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per channel: mean on side 0, mean on side 1, and their difference over the pooled standard deviation."""
    m0, m1 = a[side == 0].mean(0), a[side == 1].mean(0)
    resid = torch.cat([a[side == 0] - m0, a[side == 1] - m1])
    sd = resid.std(0) if len(resid) > 2 else torch.zeros_like(m0)
    sep = torch.where(sd > 0, (m0 - m1) / sd.clamp_min(1e-12), torch.zeros_like(m0))
    return m0, m1, sep


def _sd(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = sum(values) / len(values)
    return (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5


class _Measure:
    """Applies one set of channel moves to both models and scores the answers."""

    def __init__(self, dense: ModelAdapter, sparse: ModelAdapter, bridges: Bridges, rows: Batch,
                 at_answer: dict[str, Tensor], stats: dict[str, tuple[Tensor, Tensor, Tensor]], side: Tensor,
                 strength: float) -> None:
        self.dense, self.sparse, self.bridges, self.rows = dense, sparse, bridges, rows
        self.at_answer, self.stats, self.side, self.strength = at_answer, stats, side, strength
        self.before = {"dense": self._two(dense, None), "sparse": self._two(sparse, None)}

    def _two(self, model: ModelAdapter, deltas: dict[str, Tensor] | None) -> Tensor:
        """[N, 2] answer logits, with each row's change added at its answer position when `deltas` is given."""
        from circuitbench.circuits.metrics import answer_logits

        parts = []
        for i in range(0, len(self.rows), 64):
            part = self.rows.take(torch.arange(i, min(i + 64, len(self.rows)), device=self.rows.last.device))
            hook = None if deltas is None else _adder({k: v[i : i + 64] for k, v in deltas.items()}, part.last)
            logits = model.forward(part.tokens.to(model.device), hook, at=part.last.to(model.device))
            parts.append(answer_logits(logits, part).cpu())
        return torch.cat(parts)

    def _move(self, loc: str, ch: int) -> Tensor:
        """[N] the change that takes channel `ch` at `loc` of each row towards the other side's mean."""
        m0, m1, _ = self.stats[loc]
        other = torch.where(self.side == 0, m1[ch], m0[ch])
        return self.strength * (other - self.at_answer[loc][:, ch])

    def _deltas(self, chans: list[tuple[str, int]], like: list[tuple[str, int]] | None = None) -> dict[str, Tensor]:
        """Per location, the sparse-residual change at the answer position of each row: [N, d_sparse].

        Each channel moves towards the other side's mean of its own values; with `like`, channel i moves by
        the change of channel like[i] instead (a control of the same size that points elsewhere).
        """
        out: dict[str, Tensor] = {}
        for i, (loc, ch) in enumerate(chans):
            d = out.setdefault(loc, torch.zeros_like(self.at_answer[loc]))
            d[:, ch] = self._move(*(like[i] if like is not None else (loc, ch)))
        return out

    def _decoder(self, location: str) -> Tensor:
        """The decoder's matrix [d_dense, d_sparse] at a location."""
        return self.bridges.linear(self.bridges.decoder, location).weight.detach().float().cpu()

    def run(self, intervention: str, chans: list[tuple[str, int]], nodes: str,
            like: list[tuple[str, int]] | None = None) -> list[dict[str, Any]]:
        """Apply the moves of `chans` (see `_deltas`) to both models; a row per model."""
        deltas = self._deltas(chans, like)
        dense_deltas = {loc: d @ self._decoder(loc).T for loc, d in deltas.items()}
        rows = []
        for name, model, add in (("dense", self.dense, dense_deltas), ("sparse", self.sparse, deltas)):
            after = self._two(model, add) if chans else self.before[name]
            rows.append(_score(intervention, name, nodes, len(chans), self.before[name], after,
                               sorted({loc for loc, _ in chans})))
        return rows


def _adder(deltas: dict[str, Tensor], last: Tensor) -> Hook:
    """A hook adding row r's change `deltas[location][r]` to the residual at that location, at position last[r]."""
    def hook(name: str, x: Tensor) -> Tensor:
        d = deltas.get(name)
        if d is None:
            return x
        x = x.clone()
        x[torch.arange(x.shape[0], device=x.device), last.to(x.device)] += d.to(x.device, x.dtype)
        return x
    return hook


def _score(intervention: str, model: str, nodes: str, n: int, before: Tensor, after: Tensor, locations: list[str]
           ) -> dict[str, Any]:
    p0 = torch.softmax(before, dim=1)[:, 0]
    p1 = torch.softmax(after, dim=1)[:, 0]
    right = before[:, 0] > before[:, 1]
    flipped = right & (after[:, 1] > after[:, 0])
    return {"intervention": intervention, "model": model, "nodes": nodes, "channels": n,
            "locations": ",".join(locations), "p_correct_before": float(p0.mean()),
            "p_correct_after": float(p1.mean()), "shift": float((p1 - p0).mean()),
            "flip_rate": float(flipped.sum()) / max(1, int(right.sum())),
            "accuracy_after": float((after[:, 0] > after[:, 1]).float().mean()), "shift_sd": 0.0, "draws": 1}


def write_steer(path: Path, result: SteerResult) -> Path:
    """The rows as Parquet, the metadata (separating channels, settings) in the schema's metadata."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from circuitbench.files import atomic_path

    table = pa.Table.from_pylist(result.rows)
    table = table.replace_schema_metadata({"circuitbench.steer": json.dumps(result.meta)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_steer(path: Path) -> SteerResult:
    """Read `write_steer`'s file back.

    Raises:
        CircuitbenchError: for a file that is not a readable steering table, naming it.
    """
    import json

    import pyarrow as pa

    from circuitbench.errors import CircuitbenchError
    from circuitbench.files import read_parquet

    table = read_parquet(path, "steering table", "run `circuitbench bridge steer` again")
    try:
        meta = json.loads((table.schema.metadata or {}).get(b"circuitbench.steer", b"{}"))
        rows = table.to_pylist()
    except (ValueError, pa.ArrowException) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CircuitbenchError(f"{path}: its steering metadata cannot be read ({str(err).splitlines()[0][:200]}); "
                                "run `circuitbench bridge steer` again") from None
    if not isinstance(meta, dict) or not all(isinstance(r, dict) for r in rows):
        raise CircuitbenchError(f"{path}: not a steering table of this circuitbench; run `circuitbench bridge steer` "
                                "again")
    return SteerResult(rows, meta)
