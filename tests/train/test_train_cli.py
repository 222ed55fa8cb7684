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
              "train_meta.json", "README.md", "task_eval.json", "config.json", "modeling_circuitbench.py",
              "configuration_circuitbench.py", "tokenizer_config.json"):  # transformers loads the folder too
        assert (out / f).is_file(), f
    meta = json.loads((out / "train_meta.json").read_text())
    assert meta["command"].startswith("circuitbench train --out")
    assert meta["command"] in (out / "README.md").read_text()
    assert len(json.loads((out / "task_eval.json").read_text())) == 20
    assert rc == main(["inspect", str(out), "--format", "json"])
    assert "nonzero" in capsys.readouterr().out
    # An existing model is never overwritten unless asked: refused, byte-identical, non-zero exit.
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "already holds a model" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # val-loss measures the model on the held-out split as training did, and writes the submission's block.
    block_file = tmp_path / "val.json"
    assert main(["val-loss", "--model", str(out), "--corpus", str(corpus), "--cache-dir", str(tmp_path / "c"),
                 "--vocab-size", "300", "--windows", "2", "--json", str(block_file), "--quiet"]) == 0
    block = json.loads(block_file.read_text())["validation"]
    assert block["measured_by"] == "circuitbench" and abs(block["loss"] - meta["val_loss"]) < 1e-4
    from circuitbench.leaderboard.submit import Validation

    assert Validation.model_validate(block).loss == block["loss"]  # drops into submission.json as it is
    # --force removes nothing before every input is checked: a model it cannot start from, or --out as its
    # own input, is refused with the old model byte-identical
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for bad in (["--init-from", str(out)], ["--distill-from", str(tmp_path)], ["--init-from", str(tmp_path / "c")]):
        capsys.readouterr()
        assert main([*argv, "--force", *bad]) == 1, bad
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before, bad
    # --force replaces the model, and no file of the old card is left to describe the new one.
    assert main([*argv, "--force", "--no-card"]) == 0
    assert not (out / "README.md").exists() and not (out / "task_eval.json").exists()
    assert (out / "final_model.pt").is_file()
