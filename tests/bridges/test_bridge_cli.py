"""`circuitbench bridge train | eval | steer` and `circuitbench train --bridge-to`, end to end, as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from circuitbench.cli import main

REFERENCE_UNIT = Path("baselines/results/tiny-sparse/single_double_quote.learned_mask.seed0")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A corpus and a dense and a sparse model trained on it by `circuitbench train` (a few steps each)."""
    root = tmp_path_factory.mktemp("bridge_cli")
    corpus = root / "corpus"
    corpus.mkdir()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in ("argparse.py", "textwrap.py", "fnmatch.py", "ntpath.py"):  # ntpath.py: the validation split
        shutil.copy(stdlib / name, corpus / name)
    common = ["--corpus", str(corpus), "--cache-dir", str(root / "c"), "--vocab-size", "300", "--n-layer", "1",
              "--d-model", "32", "--n-head", "2", "--ctx", "32", "--batch-size", "4", "--max-steps", "4",
              "--eval-every", "4", "--val-windows", "2", "--threads", "1", "--quiet", "--no-card"]
    assert main(["train", "--out", str(root / "dense"), "--dense", *common]) == 0
    assert main(["train", "--out", str(root / "sparse"), *common]) == 0
    corpus_flags = ["--corpus", str(corpus), "--cache-dir", str(root / "c"), "--vocab-size", "300"]
    return root, corpus_flags, common


def test_bridge_train_then_eval_on_two_trained_models(trained, capsys):
    root, corpus_flags, _ = trained
    out = root / "bridges"
    argv = ["bridge", "train", "--dense", str(root / "dense"), "--sparse", str(root / "sparse"), "--out", str(out),
            *corpus_flags, "--steps", "6", "--batch-size", "2", "--ctx", "32", "--init-windows", "4",
            "--tasks", "single_double_quote", "--pairs", "2", "--windows", "2", "--threads", "1", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "final_resid" in printed and "bridges at 3 locations" in printed
    config = json.loads((out / "bridge_config.json").read_text())
    assert config["locations"] == ["0.resid_in", "0.resid_mid", "final_resid"]
    assert config["trained"]["steps"] == 6 and config["topk"] == 8  # afrac 0.25 x 32
    rows = config["evaluation"]["rows"]
    assert [r["location"] for r in rows] == config["locations"]
    for r in rows:
        assert r["loss_dense"] > 0 and 0 <= r["acc_s2d"] <= 1 and r["carries"] in (True, False)
    card = (out / "README.md").read_text()
    assert "## Evaluation" in card and "sparse->dense" in card and "tiny" not in card.split("\n")[0]
    # eval reads the models the bridges record; its numbers are the ones train stored
    # as a user runs it, in a process of its own: its standard output must be the JSON document alone (in the
    # full suite under xdist, the in-process call once printed the --save message after it; not reproduced alone)
    done = subprocess.run([sys.executable, "-m", "circuitbench", "bridge", "eval", str(out), *corpus_flags, "--tasks",
                           "single_double_quote", "--pairs", "2", "--windows", "2", "--format", "json", "--quiet",
                           "--threads", str(torch.get_num_threads())], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    again = json.loads(done.stdout)["rows"]
    for a, b in zip(again, rows, strict=True):
        assert a["location"] == b["location"] and a["nmse_dec"] == pytest.approx(b["nmse_dec"], rel=1e-5)
        assert a["loss_s2d"] == pytest.approx(b["loss_s2d"], rel=1e-5)
    assert main(["bridge", "eval", str(out), *corpus_flags, "--ctx", "256", "--quiet"]) == 1
    assert "--ctx 256: give a window length from 2 to the models' context (32)" in capsys.readouterr().err
    # bridges already there are never replaced unless asked
    before = (out / "bridges.safetensors").read_bytes()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "--force" in err and len(err.strip().splitlines()) == 1
    assert (out / "bridges.safetensors").read_bytes() == before


def test_models_that_cannot_be_bridged_are_refused_before_any_work(trained, capsys):
    root, corpus_flags, _ = trained
    out = root / "refused"
    rc = main(["bridge", "train", "--dense", "tiny-dense", "--sparse", str(root / "sparse"), "--out", str(out),
               *corpus_flags, "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "different tokenizers" in err and len(err.strip().splitlines()) == 1 and not out.exists()
    assert main(["bridge", "eval", str(root / "nowhere"), "--quiet"]) == 1
    assert "no bundled bridges of that name" in capsys.readouterr().err


def test_joint_training_writes_bridges_with_the_model(trained, capsys):
    root, corpus_flags, common = trained
    out = root / "joint"
    assert main(["train", "--out", str(out), "--bridge-to", str(root / "dense"), *common]) == 0
    config = json.loads((out / "bridges" / "bridge_config.json").read_text())
    assert config["joint"] is True and config["trained"]["steps"] == 4
    assert set(config["trained"]["last"]) >= {"nmse_enc", "nmse_dec", "kl_d2s", "kl_s2d"}
    header = (out / "loss_curve.csv").read_text().splitlines()[0]
    assert "bridge_kl_s2d" in header and "bridge_nmse_enc" in header
    assert "trained with them (joint)" in (out / "bridges" / "README.md").read_text()
    # the bridges belong to the model as written: eval finds both models from their config
    assert main(["bridge", "eval", str(out / "bridges"), *corpus_flags, "--tasks", "if_equals", "--pairs", "1",
                 "--windows", "1", "--save", "--quiet"]) == 0
    assert "beat mean ablation" in capsys.readouterr().out
    saved = json.loads((out / "bridges" / "bridge_config.json").read_text())
    assert saved["evaluation"]["tasks"] == ["if_equals"] and saved["joint"] is True  # recorded, the rest kept
    assert "## Evaluation" in (out / "bridges" / "README.md").read_text()
    deeper = [c if c != "1" or i == 0 or common[i - 1] != "--n-layer" else "2" for i, c in enumerate(common)]
    assert main(["train", "--out", str(root / "deep"), "--bridge-to", str(root / "dense"), *deeper]) == 1
    assert "--n-layer" in capsys.readouterr().err


@pytest.mark.slow
def test_steer_on_the_reference_models_moves_the_circuit_not_random_channels(tmp_path, capsys):
    """The bundled bridges and the committed quote circuit of tiny-sparse: a real steer, end to end."""
    for suffix in (".parquet", ".circuit.safetensors", ".edges.parquet"):
        shutil.copy(f"{REFERENCE_UNIT}{suffix}", tmp_path / f"{REFERENCE_UNIT.name}{suffix}")
    unit = tmp_path / f"{REFERENCE_UNIT.name}.parquet"
    assert main(["bridge", "steer", "--task", "single_double_quote", "--unit", str(unit), "--controls", "4",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "separate the contrast" in printed and "random channels flip" in printed
    out = tmp_path / f"{REFERENCE_UNIT.name}.steer.parquet"
    rows = pq.read_table(out).to_pylist()
    got = {(r["intervention"], r["model"]): r for r in rows}
    for model in ("dense", "sparse"):
        assert got[("none", model)]["shift"] == 0.0 and got[("none", model)]["flip_rate"] == 0.0
        assert got[("random", model)]["draws"] == got[("random_matched", model)]["draws"] == 4
        assert got[("circuit", model)]["channels"] == got[("random", model)]["channels"] >= 1
        assert got[("random_matched", model)]["channels"] == got[("circuit", model)]["channels"]
    # in the sparse model itself, moving the circuit's separating channels moves the answer; random ones barely
    assert got[("circuit", "sparse")]["flip_rate"] > got[("random", "sparse")]["flip_rate"] + 0.2
    # the unit's folder still reads as one unit: the steering table is a side table
    from circuitbench.results.store import unit_files

    assert [p.name for p in unit_files(tmp_path.parent) if p.parent == tmp_path] == [unit.name]
    assert main(["bridge", "steer", "--task", "if_equals", "--unit", str(unit), "--quiet"]) == 1
    assert "is a unit of task single_double_quote" in capsys.readouterr().err
    # the explorer shows the steering table and rings the separating nodes
    from circuitbench.leaderboard.explore import write_explorer
    from circuitbench.runs.saved import load_saved

    saved = load_saved(unit)
    page, _ = write_explorer(saved, tmp_path / "pages")
    html = Path(page).read_text()
    from circuitbench.bridges.steer import read_steer

    separating = [n for c in read_steer(out).meta["separating"] for n in c["nodes"]]
    assert '<details id="steering" open>' in html and "dense (via bridge)" in html
    assert "each separating node alone" in html
    assert html.count('class="node separating"') == len(separating) >= 1
    # a board submission carries the table with its unit, and refuses one measured on another circuit
    from circuitbench.leaderboard.submit import Report, _check_steering, submission_files

    assert out in submission_files(tmp_path, [unit])
    report = Report()
    _check_steering(unit, saved.prov.unit_key, report)
    assert report.ok
    _check_steering(unit, "another-unit", report)
    assert not report.ok and "measured with unit" in report.problems[0]
