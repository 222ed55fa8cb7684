"""A circuit's node table: what each kept node does on the test examples, stored beside its unit.

`TASK.METHOD.seedN.nodes.parquet` has one row per kept node (`circuitbench.runs.explore` measures them):

- `node` (string): `SITE:CHANNEL`, the node's name everywhere (explorer, edge tables, exports);
- `site`, `kind`, `layer`, `channel`: where it sits; `score`: the method's score of the node;
- `activation` (list<float>): its activation at the answer position of every test example, in row order;
- `mean_side0`, `mean_side1`, `separation`: its mean activation on each side of the contrast, and their
  difference over the pooled within-side standard deviation;
- `top_rows`, `top_activations`: the examples where it is most active, and its activation along each prompt;
- `ablated_loss`: the circuit's task loss with this node ablated too, on the first `ablation_rows` test
  examples (NaN: not measured; the circuit's own loss there is `circuit_loss_ablation_rows`);
- `ablation_effect` (list<float>): per example of those, how much the correct answer's logit lead drops
  without it.

The table's metadata `circuitbench.nodes` is JSON: the unit key, task, model, method, the circuit's own test
loss, the examples (tokens as text, pair, side, answers) and what the two sides of the contrast are.
A notebook reads it with `pandas.read_parquet` or `pyarrow.parquet.read_table`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuitbench.errors import CircuitbenchError
from circuitbench.files import atomic_path

NODES_FORMAT = "1"
_META_KEY = b"circuitbench.nodes"


@dataclass(frozen=True)
class NodeTable:
    """The rows (one dict per kept node) and the metadata of a node table."""

    rows: list[dict[str, Any]]
    meta: dict[str, Any]

    def by_node(self) -> dict[str, dict[str, Any]]:
        """The rows keyed by node name."""
        return {r["node"]: r for r in self.rows}


def node_table_path(unit_file: Path) -> Path:
    """The node table that belongs to a unit's Parquet file."""
    p = Path(unit_file)
    return p.with_name(p.name.removesuffix(".parquet") + ".nodes.parquet")


def _schema() -> Any:
    import pyarrow as pa

    floats = pa.list_(pa.float32())
    return pa.schema([("node", pa.string()), ("site", pa.string()), ("kind", pa.string()), ("layer", pa.int64()),
                      ("channel", pa.int64()), ("score", pa.float64()), ("activation", floats),
                      ("mean_side0", pa.float64()), ("mean_side1", pa.float64()), ("separation", pa.float64()),
                      ("top_rows", pa.list_(pa.int64())), ("top_activations", pa.list_(floats)),
                      ("ablated_loss", pa.float64()), ("ablation_effect", floats)])


def write_node_table(path: Path, table: NodeTable) -> Path:
    """Write a node table as Parquet, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema().with_metadata({_META_KEY: json.dumps({"format": NODES_FORMAT, **table.meta}).encode()})
    with atomic_path(Path(path)) as tmp:
        pq.write_table(pa.Table.from_pylist(table.rows, schema=schema), tmp)
    return Path(path)


def read_node_table(path: Path) -> NodeTable:
    """Read a node table back.

    Raises:
        CircuitbenchError: for a missing or foreign file, or one of another format version.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        t = pq.read_table(path)
    except (OSError, ValueError) as err:
        raise CircuitbenchError(f"{path}: not a readable node table ({err}); delete it and run "
                                "`circuitbench circuit explore` again") from None
    md = (t.schema.metadata or {}).get(_META_KEY)
    if md is None:
        raise CircuitbenchError(f"{path}: not a circuitbench node table (no `circuitbench.nodes` metadata)")
    meta = json.loads(md)
    if meta.pop("format", None) != NODES_FORMAT:
        raise CircuitbenchError(f"{path}: a node table of another format; delete it and run "
                                "`circuitbench circuit explore` again")
    return NodeTable(t.to_pylist(), meta)


def strongest_nodes(table: NodeTable, n: int = 10) -> list[dict[str, Any]]:
    """The n nodes whose ablation raises the circuit's loss most, as readable rows.

    Each row: the node, its kind and layer, the loss without it, the mean drop of the answer's logit lead, the
    side means and their separation.
    """
    import math

    rows = [r for r in table.rows if r["ablated_loss"] is not None and math.isfinite(r["ablated_loss"])]
    rows.sort(key=lambda r: -r["ablated_loss"])
    return [{"node": r["node"], "kind": r["kind"], "layer": r["layer"], "loss without it": r["ablated_loss"],
             "lead drop": sum(r["ablation_effect"]) / max(1, len(r["ablation_effect"])),
             "mean side 0": r["mean_side0"], "mean side 1": r["mean_side1"], "separation": r["separation"]}
            for r in rows[:n]]
