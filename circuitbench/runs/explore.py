"""What each node of a saved circuit does, measured on the task's test examples: the explorer's data.

`node_data(saved, adapter)` runs the circuit (kept nodes as they are, every other node at its ablation value,
exactly as the unit measured it) on the test split and records, for the kept nodes only:
- each node's activation at the answer position of every test example, and its mean on each side of the
  contrast (side i: the pair member whose correct answer is `completions[i]`), with their separation;
- along the prompt, the activations on the examples where the node is most active;
- the circuit's task loss with that node alone ablated too, and per example how much the correct answer's
  logit lead drops without it (`ablation_effect`), on the first `ABLATION_PAIRS` test pairs (one forward
  pass per node over them: all 128 pairs would make a page of a 100-node circuit take minutes on 2 cores);
- per example, the circuit's [correct, incorrect] answer logits (calibrated when the unit was).
The table is stored beside the unit (`results.nodes`), so a circuit is measured once; `load_or_compute` reuses
a stored table while it belongs to the same unit.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuitbench.circuits.evaluate import encode_unit_task
from circuitbench.circuits.masks import NodeIndex, check_layout, gate_hook
from circuitbench.circuits.metrics import score
from circuitbench.circuits.problem import Calibration, Problem, whole_pairs
from circuitbench.errors import CircuitbenchError
from circuitbench.protocols import Batch, ModelAdapter
from circuitbench.results.nodes import NodeTable, node_table_path, read_node_table, write_node_table
from circuitbench.runs.saved import SavedUnit

TOP_EXAMPLES = 4
"""Examples shown per node along the prompt: those where it is most active."""
MAX_NODES = 1_000
"""Nodes with data: a circuit of more (a random or dense circuit) keeps its highest-scoring ones."""
MAX_ABLATIONS = 256
"""Nodes ablated one at a time, highest-scoring first."""
ABLATION_PAIRS = 32
"""Test pairs each node's ablation is measured on (the first ones, both members)."""


def load_or_compute(saved: SavedUnit, adapter_of: Any, show_progress: bool = False, store: bool = True,
                    recompute: bool = False) -> NodeTable:
    """The stored node table of a unit when it is current, else `node_data` with `adapter_of()`'s model.

    With `store`, a table measured here is written beside the unit for the next time (atomically: a stored
    one is replaced only by a complete new one). With `recompute`, a stored table is measured again.
    """
    path = node_table_path(saved.path)
    if path.is_file() and not recompute:
        table = read_node_table(path)
        if table.meta.get("unit_key") == saved.prov.unit_key:
            return table
    table = node_data(saved, adapter_of(), show_progress)
    if store:
        write_node_table(path, table)
    return table


def node_data(saved: SavedUnit, adapter: ModelAdapter, show_progress: bool = False) -> NodeTable:
    """Measure what each kept node of the circuit does on the test split (see the module docstring).

    Raises:
        CircuitbenchError: when the model is not the one the circuit was found on.
    """
    u, circuit = saved.prov.unit, saved.circuit
    if circuit.level == "edges":
        raise CircuitbenchError(f"{saved.path}: an edge-level circuit; the explorer ablates nodes one at a time, "
                                "which an edge-level circuit does not define. `circuit show`, `circuit draw` and "
                                "`circuit eval` take it")
    sha = adapter.provenance.get("weights_sha256")
    if u.model.weights_sha256 is not None and sha != u.model.weights_sha256:
        raise CircuitbenchError(f"the circuit was found on weights {u.model.weights_sha256}; this model has {sha}. "
                                "Load the same model (and revision) to explore it.")
    index = NodeIndex.of(adapter)
    check_layout(circuit, index)
    train_enc, test_enc = encode_unit_task(u, adapter)
    rows = Batch.of(test_enc, adapter.device)
    problem = Problem(adapter, index, circuit.ablation_values.to(adapter.device), Batch.of(train_enc, adapter.device),
                      u.seed, False, counterfactual=u.ablation == "counterfactual")
    cal = circuit.calibration
    calibration = None if cal is None else Calibration(cal["scale"], {int(t): v for t, v in cal["shift"].items()})
    gates = circuit.gates().to(adapter.device)
    nodes = _nodes(circuit, index)
    acts = _activations(problem, rows, gates, nodes)  # {node: [N, T]}

    two = problem.two_logits(rows, gates)
    two = two if calibration is None else calibration.apply(two, rows)
    loss = score(two).loss
    few = rows.take(torch.arange(min(len(rows), 2 * ABLATION_PAIRS), device=rows.last.device))
    few_two = two[: len(few)]
    few_loss, base_lead = score(few_two).loss, (few_two[:, 0] - few_two[:, 1]).cpu()
    order = sorted(range(len(nodes)), key=lambda i: -float(nodes[i]["score"]))[:MAX_ABLATIONS]
    each = _ablate_each(problem, few, gates, [nodes[i]["flat"] for i in order], calibration, show_progress)
    ablated = dict(zip(order, each, strict=True))
    _summarise(nodes, acts, rows, ablated, base_lead)
    meta = {"unit_key": saved.prov.unit_key, "task": u.task, "model": u.model.name, "method": u.method,
            "split": "test", "circuit_loss": loss, "circuit_two_logits": two.cpu().tolist(),
            "ablation_rows": len(few), "circuit_loss_ablation_rows": few_loss,
            "circuit_nodes": circuit.k, "nodes_with_data": len(nodes),
            "nodes_ablated": len(ablated), "examples": _examples(adapter, rows, test_enc),
            "sides": _sides(u.task)}
    return NodeTable(nodes, meta)


def _summarise(nodes: list[dict[str, Any]], acts: dict[str, Tensor], rows: Batch,
               ablated: dict[int, tuple[float, Tensor]], base_lead: Tensor) -> None:
    """Fill each node's row: activations at the answer position, side means, top prompts, ablation numbers."""
    side = torch.arange(len(rows)) % 2
    in_prompt = (torch.arange(rows.tokens.shape[1])[None, :] <= rows.last.cpu()[:, None]).float()
    last = rows.last.cpu()
    for i, n in enumerate(nodes):
        full = acts[n["node"]]
        a = full[torch.arange(len(rows)), last]
        n["activation"] = a.tolist()
        m0, m1 = float(a[side == 0].mean()), float(a[side == 1].mean())
        spread = float(torch.cat([a[side == 0] - m0, a[side == 1] - m1]).std()) if len(a) > 2 else 0.0
        n.update(mean_side0=m0, mean_side1=m1, separation=(m0 - m1) / spread if spread > 0 else 0.0)
        peak = (full.abs() * in_prompt).amax(dim=1)  # padding after a prompt is not the prompt
        top = torch.argsort(peak, descending=True, stable=True)[:TOP_EXAMPLES].tolist()
        n["top_rows"] = top
        n["top_activations"] = [full[r, : int(last[r]) + 1].tolist() for r in top]
        if i in ablated:
            n["ablated_loss"], n["ablation_effect"] = ablated[i][0], (base_lead - ablated[i][1]).tolist()
        else:
            n["ablated_loss"], n["ablation_effect"] = float("nan"), []
        del n["flat"]


def _ablate_each(problem: Problem, rows: Batch, gates: Tensor, flats: list[int], calibration: Calibration | None,
                 show_progress: bool) -> list[tuple[float, Tensor]]:
    """For each node, the circuit's (task loss, [N] correct-answer logit lead) with that node ablated too.

    Several nodes per forward pass: the test rows are repeated once per node, each copy gated without its
    node (`stacked_gate_hook`), in passes of about `problem.eval_batch` x 8 rows.
    """
    from tqdm.auto import tqdm

    from circuitbench.circuits.masks import stacked_gate_hook
    from circuitbench.circuits.metrics import answer_logits
    from circuitbench.protocols import forward_at

    per_pass = max(1, (8 * problem.eval_batch) // max(1, len(rows)))
    values = problem.values_for(rows)
    out: list[tuple[float, Tensor]] = []
    bar = tqdm(total=len(flats), desc="ablating nodes", unit="node", disable=not show_progress)
    with torch.no_grad():
        for start in range(0, len(flats), per_pass):
            chunk = flats[start : start + per_pass]
            g = gates.expand(len(chunk), -1).clone()
            g[torch.arange(len(chunk)), torch.tensor(chunk)] = 0.0
            tokens = rows.tokens.repeat(len(chunk), 1)
            last = rows.last.repeat(len(chunk))
            logits = forward_at(problem.adapter, tokens, stacked_gate_hook(problem.index, g, values), last)
            for b in range(len(chunk)):
                block = logits[b * len(rows) : (b + 1) * len(rows)]
                two = answer_logits(block, rows)
                two = two if calibration is None else calibration.apply(two, rows)
                out.append((score(two).loss, (two[:, 0] - two[:, 1]).cpu()))
            bar.update(len(chunk))
    bar.close()
    return out


def _nodes(circuit: Any, index: NodeIndex) -> list[dict[str, Any]]:
    """The kept nodes (the `MAX_NODES` highest-scoring of a larger circuit), in site order."""
    gates = circuit.gates()
    kept = torch.nonzero(gates > 0.5).flatten()
    if len(kept) > MAX_NODES:
        kept = kept[torch.argsort(circuit.scores[kept].float(), descending=True, stable=True)[:MAX_NODES]]
        kept = torch.sort(kept).values
    out = []
    for flat in kept.tolist():
        i = bisect.bisect_right(index.offsets, flat) - 1  # the site whose slice holds this node
        s = index.sites[i]
        ch = flat - index.offsets[i]
        out.append({"node": f"{s.name}:{ch}", "site": s.name, "kind": s.kind, "layer": s.layer, "channel": ch,
                    "score": float(circuit.scores[flat]), "flat": flat})
    return out


def _activations(problem: Problem, rows: Batch, gates: Tensor, nodes: list[dict[str, Any]]) -> dict[str, Tensor]:
    """{node: [N, T] float32}: each kept node's activation at every prompt position, in the circuit's forward pass.

    A node that gates a whole vector (an SAE error node) is measured by the vector's norm.
    """
    by_site: dict[str, list[int]] = {}
    for n in nodes:
        by_site.setdefault(n["site"], []).append(n["channel"])
    width = {s.name: s for s in problem.index.sites}
    parts: dict[str, list[Tensor]] = {name: [] for name in by_site}
    seen: dict[str, Tensor] = {}

    def record(name: str, x: Tensor) -> Tensor:
        if name in by_site:
            site = width[name]
            v = x.float()
            if site.value_width and site.width == 1:
                v = v.norm(dim=-1, keepdim=True)
            seen[name] = v.reshape(v.shape[0], v.shape[1], -1)[..., by_site[name]].cpu()
        return x

    with torch.no_grad():
        for part in rows.chunks(whole_pairs(problem.eval_batch)):
            seen.clear()
            problem.adapter.forward(part.tokens, gate_hook(problem.index, gates, problem.values_for(part), record))
            for name in by_site:
                pad = rows.tokens.shape[1] - seen[name].shape[1]
                parts[name].append(torch.nn.functional.pad(seen[name], (0, 0, 0, pad)))
    out: dict[str, Tensor] = {}
    for name, chans in by_site.items():
        full = torch.cat(parts[name])  # [N, T, len(chans)]
        for j, ch in enumerate(chans):
            out[f"{name}:{ch}"] = full[..., j]
    return out


def _examples(adapter: ModelAdapter, rows: Batch, encoded: Any) -> list[dict[str, Any]]:
    """Each test example: its tokens as text up to the answer position, its pair and side, its two answers."""
    tok = adapter.tokenizer
    out = []
    for r in range(len(rows)):
        ids = rows.tokens[r, : int(rows.last[r]) + 1].tolist()
        out.append({"pair": r // 2, "side": r % 2, "tokens": [tok.decode([t]) for t in ids],
                    "correct": tok.decode([int(rows.correct[r])]), "incorrect": tok.decode([int(rows.incorrect[r])])})
    return out


def _sides(task: str) -> list[str]:
    """What tells the two sides of the task's contrast apart, as the spec states it (one label per side)."""
    from circuitbench.tasks.load import get_task

    spec = get_task(task.split(":")[0])
    swapped = task.endswith(":inverted")  # the control: each side's answer is the other's
    return [", ".join(f"{k} = {v}" for k, v in side.items()) + f" → answer {spec.completions[1 - i if swapped else i]}"
            for i, side in enumerate(spec.contrast.sides)]


def explore_path(out_dir: Path, unit_file: Path) -> Path:
    """The explorer page of a unit in an output folder: `OUT/TASK.METHOD.seedN.html`."""
    return Path(out_dir) / (Path(unit_file).name.removesuffix(".parquet") + ".html")
