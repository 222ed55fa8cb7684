"""Circuits found by other tools, brought in and measured on these tasks: `circuitbench circuit import`.

An MIB / EAP-IG `Graph` JSON (`circuitbench.results.mib.read_mib` checks it) becomes a saved unit (method
`imported`), measured exactly as the evaluator measures a found circuit: full model, sufficiency, necessity,
the empty circuit and faithfulness on the test split, and the circuit's loss on the search examples
against the target. `circuit eval`, `circuit show`, `circuit draw` and `submit` take it like any unit.

Two readings of the file:
- **Exact**: a file `circuit export --format mib` wrote carries the circuit at channel level under the key
  `circuitbench` (kept channels per site, or kept edges); it is restored as it was, at its level, so the
  round trip export -> import -> eval reproduces the stored numbers exactly.
- **Component graph** (a file from EAP-IG, MIB or by hand): an edge-level circuit of this model's graph.
  Each channel edge maps to the MIB edge or node it realises: a residual edge from a layer's attention
  (any head) or MLP write to a later read maps to the MIB edges from that component to the heads' q/k/v
  (attention read) or the MLP (MLP read); a weight into a head's q/k/v channels maps to the MIB edges into
  that head's q/k/v; a head's value-to-write weights and an MLP's own weights map to the node. A channel
  edge is kept when what it maps to is `in_graph`, or, with `--percent P`, when it is among the top P % of
  channel edges by |score| of what it maps to (MIB's importance-score files).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuitbench.circuits.ablation import ablation_source
from circuitbench.circuits.edge_level import EdgeIndex, check_edge_level
from circuitbench.circuits.evaluate import full_model_phase, measure_phase, prepare, unit_ablation_values
from circuitbench.circuits.masks import NodeIndex
from circuitbench.errors import CircuitbenchError
from circuitbench.protocols import ModelAdapter
from circuitbench.results.mib import EXTENSION, read_mib
from circuitbench.results.status import circuit_status, effective_target
from circuitbench.results.unit import Unit, UnitResult

IMPORTED = "imported"
"""The method name of an imported circuit's unit."""


def _exact_gates(ext: dict[str, Any], adapter: ModelAdapter, path: Path) -> tuple[str, Tensor]:
    """The gates of a circuit exported by circuitbench, at its level."""
    level = ext.get("level", "nodes")
    index = NodeIndex.of(adapter)
    if level == "nodes":
        gates = torch.zeros(index.size)
        for i, site in enumerate(index.sites):
            chans = ext.get("kept", {}).get(site.name, [])
            if any(not 0 <= c < site.width for c in chans):
                raise CircuitbenchError(f"{path}: kept channels of {site.name} out of range for this model")
            gates[index.offsets[i] + torch.tensor(chans, dtype=torch.long)] = 1.0
        unknown = set(ext.get("kept", {})) - {s.name for s in index.sites}
        if unknown:
            raise CircuitbenchError(f"{path}: sites {sorted(unknown)[:3]} are not this model's; import on the model "
                                    "the circuit was found on")
        return level, gates
    edges = EdgeIndex.of(adapter)
    pos: dict[tuple[str, int, str, int], int] = {}
    for start, block in zip(edges.offsets, edges.blocks, strict=False):
        for j, (s, d) in enumerate(zip(block.src.tolist(), block.dst.tolist(), strict=True)):
            pos[(block.src_site, s, block.dst_site, d)] = start + j
    gates = torch.zeros(edges.size)
    for e in ext.get("kept_edges", []):
        key = (str(e[0]), int(e[1]), str(e[2]), int(e[3]))
        if key not in pos:
            raise CircuitbenchError(f"{path}: edge {key} is not an edge of this model's graph; import on the model "
                                    "the circuit was found on")
        gates[pos[key]] = 1.0
    return level, gates


_CHILD = re.compile(r"^(?P<p>[^-<>]+)->(?P<c>[^-<>]+?)(?:<(?P<l>[qkv])>)?$")


def _component_scores(d: dict[str, Any], edges: EdgeIndex, n_head: int) -> tuple[Tensor, Tensor]:
    """Per channel edge: whether what it maps to is in the graph, and that thing's |score| (module docstring)."""
    sites = {s.name: s for s in edges.nodes.sites}
    in_graph: dict[str, bool] = {}
    score: dict[str, float] = {}
    for name, e in d["edges"].items():
        m = _CHILD.match(name)
        assert m is not None  # read_mib checked every name
        parent = m["p"] if m["p"] == "input" else m["p"].split(".")[0] if m["p"].startswith("a") else m["p"]
        for key in (f"{parent}->{m['c']}<{m['l']}>" if m["l"] else f"{parent}->{m['c']}", f"*->{m['c']}<{m['l']}>"
                    if m["l"] else f"*->{m['c']}"):
            in_graph[key] = in_graph.get(key, False) or bool(e["in_graph"])
            score[key] = max(score.get(key, 0.0), abs(float(e.get("score") or 0.0)))
    for name, node in d["nodes"].items():
        in_graph[name] = bool(node.get("in_graph"))
        value = node.get("score")
        score[name] = abs(float(value)) if value is not None and math.isfinite(value) else 0.0  # NaN: not scored
    keep, value = torch.zeros(edges.size), torch.zeros(edges.size)
    for i, b in enumerate(edges.blocks):
        src, dst = sites[b.src_site], sites[b.dst_site]
        keys = [_key(src, dst, s, t, n_head) for s, t in zip(b.src.tolist(), b.dst.tolist(), strict=True)]
        sl = edges.slice(i)
        keep[sl] = torch.tensor([float(any(in_graph.get(k, False) for k in ks)) for ks in keys])
        value[sl] = torch.tensor([max((score.get(k, 0.0) for k in ks), default=0.0) for ks in keys])
    return keep, value


def _key(src: Any, dst: Any, s: int, t: int, n_head: int) -> list[str]:
    """The MIB edges or nodes one channel edge maps to (any of them in the graph keeps it)."""
    if dst.kind in ("q", "k", "v"):  # a weight into head h's q/k/v: every MIB edge into that input
        return [f"*->a{dst.layer}.h{t // (dst.width // n_head)}<{dst.kind}>"]
    if dst.kind == "attn_out":  # a head's value channel to the write: the head
        return [f"a{dst.layer}.h{s // (src.width // n_head)}"]
    if dst.kind in ("mlp_neuron", "mlp_out"):
        return [f"m{dst.layer}"]
    parent = f"a{src.layer}" if src.kind == "attn_out" else f"m{src.layer}"
    if dst.kind == "mlp_in":  # a residual edge into the MLP read
        return [f"{parent}->m{dst.layer}"]
    return [f"{parent}->a{dst.layer}.h{h}<{x}>" for h in range(n_head) for x in "qkv"]


def import_mib(path: Path, adapter: ModelAdapter, model_name: str, task: str, out: Path, ablation: str = "mean",
               percent: float | None = None, force: bool = False) -> tuple[Path, UnitResult]:
    """Measure an MIB / EAP-IG circuit file on a task and save it as a unit (see the module docstring).

    Returns:
        The unit's file and its result.

    Raises:
        CircuitbenchError: for a malformed file, a graph of another shape than the model's, a circuit
            with nothing in it, or a unit file already there (without `force`).
    """
    from circuitbench.runs.config import model_ref
    from circuitbench.runs.runner import UnitWorker, unit_file
    from circuitbench.tasks.load import get_task

    d = read_mib(path)
    cfg, n_layer = d["cfg"], len({s.layer for s in adapter.sites})
    if (cfg["n_layers"], cfg["n_heads"]) != (n_layer, adapter.n_heads):
        raise CircuitbenchError(f"{path}: a graph of {cfg['n_layers']} layers x {cfg['n_heads']} heads; --model "
                                f"{model_name} has {n_layer} x {adapter.n_heads}: import on the model it was found on")
    d_model = next((s.width for s in adapter.sites if s.kind == "attn_in"), None)
    if d_model is not None and cfg["d_model"] != d_model:
        raise CircuitbenchError(f"{path}: cfg d_model {cfg['d_model']}; --model {model_name} has d_model {d_model}: "
                                "import on the model it was found on")
    if cfg["parallel_attn_mlp"] is not False:
        raise CircuitbenchError(f"{path}: cfg parallel_attn_mlp {cfg['parallel_attn_mlp']}; circuitbench's models "
                                "run attention, then the MLP (a parallel block's graph has other edges)")
    if percent is not None and not 0 < percent <= 100:
        raise CircuitbenchError(f"--percent {percent}: give a percentage of the graph's edges in (0, 100]")
    ext = d.get(EXTENSION)
    if isinstance(ext, dict):  # the file says where it was found: never imported onto another model or task
        said = {"--model": ext.get("model") or None, "--task": ext.get("task") or None}
        given = {"--model": model_name, "--task": task}
        wrong = [f"{flag} {given[flag]} (the file: {said[flag]})" for flag in said
                 if said[flag] is not None and said[flag] != given[flag]]
        if wrong:
            raise CircuitbenchError(f"{path}: a circuit found on model {said['--model']}, task {said['--task']}; "
                                    f"importing it as {', '.join(wrong)} would label it untruly. Import it with "
                                    f"--model {said['--model']} --task {said['--task']}")
    if ext is not None and percent is None:
        level, gates = _exact_gates(ext, adapter, path)
        scores = gates.clone()
    else:
        check_edge_level(adapter, ablation)
        level, edges = "edges", EdgeIndex.of(adapter)
        keep, value = _component_scores(d, edges, int(adapter.n_heads or 1))
        if percent is not None:
            from circuitbench.results.circuit import keep_top

            keep = keep_top(value, round(edges.size * percent / 100))
        scores = keep + 0.5 * value / (float(value.max()) + 1e-12)  # kept first, then by the file's scores
        gates = keep
    if level == "edges":
        check_edge_level(adapter, ablation)
    if not gates.any():
        raise CircuitbenchError(f"{path}: nothing of the circuit is in the graph (no in_graph edge maps onto this "
                                "model); for an importance-score file give --percent P to keep the top P %")
    spec = get_task(task)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    unit = Unit(model=model_ref(model_name, adapter), task=task, task_hash=spec.task_hash, method=IMPORTED,
                method_kwargs={"file": Path(path).name, "sha256": digest, "percent": percent},
                ablation=ablation, level=level, control=False,  # type: ignore[arg-type]
                dtype=str(adapter.dtype).removeprefix("torch."))
    target = unit_file(out, unit)
    if target.exists() and not force:
        raise CircuitbenchError(f"{target}: a unit is already there; --force replaces it")
    result = measure_imported(unit, adapter, gates, scores)
    worker = UnitWorker(adapter, ablation_source(ablation, adapter, NodeIndex.of(adapter)), out)
    return worker.write(result, datetime.now(UTC).isoformat(timespec="seconds")), result


def measure_imported(unit: Unit, adapter: ModelAdapter, gates: Tensor, scores: Tensor) -> UnitResult:
    """The evaluator's measurements of a given circuit (no method, no search, no curves)."""
    source = ablation_source(unit.ablation, adapter, NodeIndex.of(adapter))
    state = prepare(unit, adapter, source)
    if len(state.train) < 2 or len(state.test) < 2:
        return state.result("no_examples")
    full_test, full_train = full_model_phase(state)
    if full_test.accuracy < unit.min_accuracy:
        return state.result("unsolved")
    problem = state.problem
    values = unit_ablation_values(state, source).to(adapter.device)
    state.problem = dataclasses.replace(problem, ablation_values=values)
    gates = gates.to(adapter.device)
    target = effective_target(unit.target_loss, full_train.loss)
    test_target = effective_target(unit.target_loss, full_test.loss)
    loss = state.problem.scores(state.search_rows, gates).loss
    sizes = state.problem.circuit_sizes(gates)
    state.rows += [("", k, v) for k, v in sizes.items()]
    state.rows += [("train", "target_loss", target), ("test", "target_loss", test_target),
                   ("train", "circuit_loss", loss)]
    state.fields.update(nodes=sizes["nodes"], edges=sizes["edges"], target_loss=target, test_target_loss=test_target,
                        circuit_train_loss=loss)
    empty = state.problem.scores(state.test, torch.zeros_like(gates))
    t0 = time.perf_counter()
    measure_phase(state, gates, None, full_test, empty)
    state.rows.append(("", "time_measure_s", time.perf_counter() - t0))
    k = int(gates.sum())
    meta = dict(n_head=adapter.n_heads, unit_key=unit.key(), model=unit.model.name, task=unit.task)
    circuit = state.problem.circuit(scores, k, values, **meta)
    return state.result(circuit_status(loss <= target, state.fields["sufficiency_loss"], test_target), circuit)
