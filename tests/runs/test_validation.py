"""Bad run settings are one-line errors naming the flag, before any model is loaded or pruned."""

import pytest

from circuitbench.cli import main


@pytest.mark.parametrize("args, message", [
    (["--target-loss", "nan"], "--target-loss nan: give a finite loss above 0"),
    (["--target-loss", "inf"], "--target-loss inf"),
    (["--target-loss", "0"], "--target-loss 0.0"),
    (["--min-accuracy", "-1"], "--min-accuracy -1.0"),
    (["--steps", "0"], "steps: Input should be greater than 0"),
    (["--steps", "-5"], "steps: Input should be greater than 0"),
    (["--patience", "0"], "patience: Input should be greater than 0"),
    (["--method", "random", "--steps", "5"], "--method random does not take steps"),
    (["--method", "nope"], "unknown method"),
    (["--tasks", "no_such_task"], "no_such_task"),
    (["--device", "tpu"], "--device tpu: not a torch device"),
    (["--threads", "0"], "--threads 0: give a positive number"),
])
def test_bad_run_settings_fail_at_once_with_one_line(args, message, capsys, tmp_path):
    assert main(["run", "--out", str(tmp_path / "out"), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_out_that_is_a_file_or_unwritable_is_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["run", "--out", str(f)]) == 1
    assert "is a file" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("circuitbench ")
