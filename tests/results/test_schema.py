"""The summary schema is derived from UnitResult; old result files are refused, never mixed in."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from circuitbench.errors import CircuitbenchError
from circuitbench.results.report import collect
from circuitbench.results.schema import SUMMARY
from circuitbench.results.store import read_unit
from circuitbench.results.unit import summary_fields


def test_summary_schema_follows_the_unit_result_fields():
    assert SUMMARY.names == ["model", "task", "method", "level", "seed", *summary_fields()]
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


def test_a_poisoned_unit_is_a_one_line_error_naming_the_file(tmp_path, capsys):
    """A unit whose provenance no longer validates (e.g. a NaN target an older version let through)."""
    import json

    from circuitbench.cli import main
    from circuitbench.results.schema import MEASUREMENTS, SCHEMA_VERSION

    bad = tmp_path / "m" / "else_elif.learned_mask.seed0.parquet"
    bad.parent.mkdir()
    meta = {b"circuitbench.schema": b"measurements", b"circuitbench.schema_version": SCHEMA_VERSION.encode(),
            b"circuitbench.summary": json.dumps({"task": "else_elif"}).encode(),
            b"circuitbench.provenance": json.dumps({"unit": {"task": "else_elif"}}).encode()}
    pq.write_table(MEASUREMENTS.empty_table().replace_schema_metadata(meta), bad)
    assert main(["report", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "delete it" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
