"""The summary schema is derived from UnitResult; old result files are refused, never mixed in."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from circuitbench.circuits.unit import summary_fields
from circuitbench.errors import CircuitbenchError
from circuitbench.results.report import collect
from circuitbench.results.schema import SUMMARY
from circuitbench.results.store import read_unit


def test_summary_schema_follows_the_unit_result_fields():
    assert SUMMARY.names == ["model", "task", "method", "seed", *summary_fields()]
    assert SUMMARY.field("nodes").type == pa.int64() and SUMMARY.field("faithfulness").type == pa.float64()
    assert SUMMARY.field("control_met_target").type == pa.bool_() and SUMMARY.field("status").type == pa.string()


def test_a_result_file_of_the_previous_schema_is_refused_with_the_way_out(tmp_path):
    old = tmp_path / "m" / "else_elif.learned_mask.seed0.parquet"
    old.parent.mkdir()
    table = pa.table({"model": ["m"], "metric": ["sufficiency.loss"], "value": [0.1]})
    pq.write_table(table.replace_schema_metadata({"circuitbench.schema_version": "1"}), old)
    with pytest.raises(CircuitbenchError, match=r"schema v1 .*never mixed: rerun with --force .* another --out"):
        read_unit(old)
    with pytest.raises(CircuitbenchError, match="schema v1"):
        collect(tmp_path)
