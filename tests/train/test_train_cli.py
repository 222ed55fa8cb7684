import json
import shutil
import sys
import sysconfig
from pathlib import Path

from circuitbench.cli import main


def test_a_corpus_without_validation_text_is_a_user_error(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in ("argparse.py", "textwrap.py"):
        shutil.copy(stdlib / name, corpus / name)
    rc = main(["train", "--out", str(tmp_path / "m"), "--corpus", str(corpus), "--cache-dir",
               str(tmp_path / "c"), "--vocab-size", "300", "--quiet"])
    assert rc == 1
    assert "larger corpus" in capsys.readouterr().err


def test_circuitbench_train_writes_a_loadable_model_with_card(tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    # ntpath.py falls in the validation split by its content hash (collect_corpus splits by hash)
    for name in ("argparse.py", "textwrap.py", "fnmatch.py", "ntpath.py"):
        shutil.copy(stdlib / name, corpus / name)
    out = tmp_path / "model"
    argv = ["train", "--out", str(out), "--corpus", str(corpus), "--cache-dir", str(tmp_path / "c"),
               "--vocab-size", "300", "--n-layer", "1", "--d-model", "64", "--n-head", "2",
               "--ctx", "32", "--batch-size", "4", "--max-steps", "4", "--eval-every", "2",
               "--val-windows", "2", "--threads", "1", "--quiet"]
    monkeypatch.setattr(sys, "argv", ["circuitbench", *argv])  # as the console script sees it
    rc = main(argv)
    assert rc == 0
    for f in ("beeg_config.json", "final_model.pt", "tokenizer.json", "loss_curve.csv",
              "train_meta.json", "README.md", "task_eval.json"):
        assert (out / f).is_file(), f
    meta = json.loads((out / "train_meta.json").read_text())
    assert meta["command"].startswith("circuitbench train --out")
    assert meta["command"] in (out / "README.md").read_text()
    assert len(json.loads((out / "task_eval.json").read_text())) == 20
    assert rc == main(["inspect", str(out), "--format", "json"])
    assert "nonzero" in capsys.readouterr().out
