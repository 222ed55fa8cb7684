"""Every reader of a file circuitbench reads, fed random, truncated and type-swapped variants of a real file.

The property, for each: the reader returns (the variant was still valid) or raises `CircuitbenchError` with one
line of text (validation errors: one line per field at fault, each naming the file); never another exception. The variants are drawn by hypothesis from the real file: a JSON value
replaced by one of another type (or a non-finite number), a key deleted, the text or the bytes cut short, bytes
overwritten.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuitbench.errors import CircuitbenchError

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "baselines" / "results" / "tiny-sparse" / "if_equals.learned_mask.seed0.parquet"
STEER = REPO / "baselines" / "results" / "tiny-sparse" / "if_equals.learned_mask.seed0.steer.parquet"
MODEL = REPO / "tests" / "fixtures" / "fixture-sparse-sink-bigram"
BRIDGES = REPO / "baselines" / "bridges" / "tiny"
SUBMISSION = sorted((REPO / "leaderboard" / "submissions").glob("*/submission.json"))[0]
SWAPS = [None, True, -1, 0, 2**70, 1.5, math.inf, -math.inf, math.nan, "", "x", [], {}, [1, "a"], {"a": 1}]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                derandomize=True)


def reads_or_refuses(call: Callable[[], Any]) -> None:
    """The reader succeeds, or says what is wrong in one line (a validation error: one line per field at fault,
    each naming the file); any other exception fails the test."""
    try:
        call()
    except CircuitbenchError as err:
        lines = str(err).strip().splitlines()
        where = lines[0].split(":", 1)[0] if lines else ""
        assert lines and all(line.startswith(where) for line in lines), f"not one line per problem: {str(err)!r}"


def _paths(obj: Any, at: tuple = ()) -> list[tuple]:
    out = [at]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*at, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):
            out += _paths(v, (*at, i))
    return out


def _set(obj: Any, path: tuple, value: Any, delete: bool = False) -> Any:
    if not path:
        return value
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return obj


@st.composite
def json_variants(draw: Any, text: str) -> str:
    """A variant of a JSON document: a value swapped, a key or item deleted, or the text cut short."""
    kind = draw(st.sampled_from(["swap", "swap", "delete", "cut"]))
    if kind == "cut":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    obj = json.loads(text)
    path = draw(st.sampled_from(_paths(obj)))
    if kind == "delete" and path:
        return json.dumps(_set(obj, path, None, delete=True))
    return json.dumps(_set(obj, path, draw(st.sampled_from(SWAPS))))


@st.composite
def byte_variants(draw: Any, data: bytes) -> bytes:
    """A variant of a binary file: cut short, or a few bytes overwritten."""
    if draw(st.booleans()):
        return data[: draw(st.integers(0, len(data) - 1))]
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    return bytes(out)


def _copy(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
    (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return dst


@pytest.fixture(scope="module")
def mib_file(tmp_path_factory) -> Path:
    from circuitbench.cli import main

    out = tmp_path_factory.mktemp("mib") / "circuit.json"
    assert main(["circuit", "export", str(UNIT), "--format", "mib", "--out", str(out)]) == 0
    return out


@FUZZ
@given(data=st.data())
def test_the_mib_reader(tmp_path, mib_file, data):
    from circuitbench.results.mib import read_mib

    path = tmp_path / "c.json"
    path.write_text(data.draw(json_variants(mib_file.read_text())))
    reads_or_refuses(lambda: read_mib(path))


@FUZZ
@given(data=st.data())
def test_the_model_config_reader(tmp_path, data):
    from circuitbench.models.config import load_config

    path = tmp_path / "beeg_config.json"
    path.write_text(data.draw(json_variants((MODEL / "beeg_config.json").read_text())))
    reads_or_refuses(lambda: load_config(path))


@FUZZ
@given(data=st.data())
def test_the_protocol_reader(tmp_path, data):
    from circuitbench.leaderboard.protocol import PROTOCOL_FILE, load_protocol

    real = json.dumps(load_protocol(None).model_dump(mode="json"))
    (tmp_path / PROTOCOL_FILE).write_text(data.draw(json_variants(real)))
    reads_or_refuses(lambda: load_protocol(tmp_path))


@FUZZ
@given(data=st.data())
def test_the_submission_reader(tmp_path, data):
    from circuitbench.leaderboard.board import load_board

    board = tmp_path / "board"
    sub = _copy(SUBMISSION.parent, board / "submissions" / SUBMISSION.parent.name)
    (sub / "submission.json").write_text(data.draw(json_variants(SUBMISSION.read_text())))
    reads_or_refuses(lambda: load_board(board))


@FUZZ
@given(data=st.data())
def test_the_bridge_reader(tmp_path, data):
    from circuitbench.bridges.bridge import load_bridges

    folder = _copy(BRIDGES, tmp_path / "bridges")
    if data.draw(st.booleans()):
        (folder / "bridge_config.json").write_text(data.draw(json_variants((BRIDGES / "bridge_config.json").read_text())))
    else:
        (folder / "bridges.safetensors").write_bytes(data.draw(byte_variants((BRIDGES / "bridges.safetensors").read_bytes())))
    reads_or_refuses(lambda: load_bridges(folder))


@FUZZ
@given(data=st.data())
def test_the_unit_reader(tmp_path, data):
    from circuitbench.results.store import read_unit

    path = tmp_path / UNIT.name
    path.write_bytes(data.draw(byte_variants(UNIT.read_bytes())))
    reads_or_refuses(lambda: read_unit(path))


@FUZZ
@given(data=st.data())
def test_the_saved_circuit_reader(tmp_path, data):
    from circuitbench.results.circuit import circuit_paths
    from circuitbench.runs.saved import load_saved

    unit = _copy(UNIT, tmp_path / UNIT.name)
    circuit = circuit_paths(UNIT)[0]
    (tmp_path / circuit.name).write_bytes(data.draw(byte_variants(circuit.read_bytes())))
    reads_or_refuses(lambda: load_saved(unit))


@FUZZ
@given(data=st.data())
def test_the_steering_table_reader(tmp_path, data):
    from circuitbench.bridges.steer import read_steer

    path = tmp_path / STEER.name
    path.write_bytes(data.draw(byte_variants(STEER.read_bytes())))
    reads_or_refuses(lambda: read_steer(path))


@FUZZ
@given(data=st.data())
def test_the_weights_reader(tmp_path, data):
    from circuitbench.models.checkpoint import read_state_dict

    path = tmp_path / "final_model.pt"
    path.write_bytes(data.draw(byte_variants((MODEL / "final_model.pt").read_bytes())))
    reads_or_refuses(lambda: read_state_dict(path))


@FUZZ
@given(data=st.data())
def test_the_tokenized_corpus_reader(tmp_path, data, tokenized):
    from circuitbench.train.tokenized import load_tokenized

    folder = _copy(tokenized, tmp_path / "corpus")
    if data.draw(st.booleans()):
        (folder / "corpus.json").write_text(data.draw(json_variants((tokenized / "corpus.json").read_text())))
    else:
        name = data.draw(st.sampled_from(["train.npy", "val.npy", "tokenizer.json"]))
        (folder / name).write_bytes(data.draw(byte_variants((tokenized / name).read_bytes())))
    reads_or_refuses(lambda: load_tokenized(folder))


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory) -> Path:
    import hashlib

    import numpy as np

    from circuitbench.train.data import TokenData
    from circuitbench.train.tokenized import write_tokenized

    tok = REPO / "baselines" / "models" / "tiny-sparse" / "tokenizer.json"
    ids = np.arange(3000, dtype=np.uint16) % 2048
    data = TokenData(ids, ids[:500], tok, "c" * 64, hashlib.sha256(tok.read_bytes()).hexdigest())
    out = tmp_path_factory.mktemp("tokenized") / "corpus"
    write_tokenized(data, out)
    return out


@st.composite
def yaml_variants(draw: Any, text: str) -> str:
    """A variant of a YAML document, drawn as for JSON (a value swapped, a key deleted, the text cut short)."""
    import yaml

    if draw(st.booleans()):
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    obj = yaml.safe_load(text)
    path = draw(st.sampled_from(_paths(obj)))
    swap = draw(st.sampled_from([v for v in SWAPS if not (isinstance(v, float) and math.isnan(v))]))
    return yaml.safe_dump(_set(obj, path, None, delete=True) if path and draw(st.booleans()) else _set(obj, path, swap))


@FUZZ
@given(data=st.data())
def test_the_task_spec_reader(tmp_path, data):
    from circuitbench.tasks.load import load_spec

    real = REPO / "task_specs" / "bracket_brace.yaml"
    path = tmp_path / "bracket_brace.yaml"
    path.write_text(data.draw(yaml_variants(real.read_text())))
    reads_or_refuses(lambda: load_spec(path))


@FUZZ
@given(data=st.data())
def test_the_sweep_reader(tmp_path, data):
    from circuitbench.runs.sweep import load_sweep

    path = tmp_path / "sweep.yaml"
    path.write_text(data.draw(yaml_variants((REPO / "examples" / "sweep.yaml").read_text())))
    reads_or_refuses(lambda: load_sweep(path, tmp_path / "out"))
