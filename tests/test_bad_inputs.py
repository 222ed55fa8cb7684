"""Bad input through the CLI, every subcommand: a one-line error naming the flag, file or field, exit 1.

Each case is what a user might type. None may end in a traceback, print more than one line, or write
anything before failing.
"""

import json

import pytest
import yaml

from circuitbench.cli import main

CASES = {
    "run: target nan": (["run", "--target-loss", "nan"], "--target-loss nan"),
    "run: target inf": (["run", "--target-loss", "inf"], "--target-loss inf"),
    "run: target zero": (["run", "--target-loss", "0"], "--target-loss 0.0"),
    "run: negative accuracy bar": (["run", "--min-accuracy", "-1"], "--min-accuracy -1.0"),
    "run: zero steps": (["run", "--steps", "0"], "steps: Input should be greater than 0"),
    "run: negative steps": (["run", "--steps", "-5"], "steps: Input should be greater than 0"),
    "run: zero patience": (["run", "--patience", "0"], "patience: Input should be greater than 0"),
    "run: zero batch pairs": (["run", "--batch-pairs", "0"], "batch_pairs: Input should be greater than 0"),
    "run: steps for a method without them": (["run", "--method", "random", "--steps", "5"], "does not take steps"),
    "run: unknown method": (["run", "--method", "nope"], "unknown method"),
    "run: method-arg without =": (["run", "--method-arg", "length_groups"],
                                  "--method-arg length_groups: write KEY=VALUE"),
    "run: method-arg unknown key": (["run", "--method-arg", "stepz=3"], "stepz"),
    "run: method-arg bad value": (["run", "--method-arg", "length_groups=0"], "length_groups"),
    "run: unknown task": (["run", "--tasks", "no_such_task"], "no_such_task"),
    "run: a seed beyond 64 bits": (["run", "--seed", str(2**70)], f"--seed {2**70}: outside 0 ... 2**63 - 1"),
    "run: a negative seed": (["run", "--seed", "-1"], "--seed -1: outside 0 ... 2**63 - 1"),
    "run: seeds beyond 64 bits": (["run", "--seeds", f"0,{2**64}"], f"--seeds {2**64}: outside 0 ... 2**63 - 1"),
    "run: device torch does not know": (["run", "--device", "tpu"], "--device tpu: not a torch device"),
    "run: device not here": (["run", "--device", "mps"], "--device mps"),
    "run: zero threads": (["run", "--threads", "0"], "--threads 0: give a positive number"),
    "run: zero eval batch": (["run", "--eval-batch", "0"], "--eval-batch 0"),
    "run: mistyped model path": (["run", "--model", "./no_such_model_dir"], "no_such_model_dir"),
    "run: missing spec file": (["run", "--tasks", "specs/no_such_task.yaml"], "specs/no_such_task.yaml: no such spec"),
    "compare: method-arg for a method not compared": (["compare", "--methods", "eap", "--method-arg",
                                                       "random.seed=1"], "random is not one of --methods"),
    "compare: method-arg without a method": (["compare", "--method-arg", "steps=3"], "write METHOD.KEY=VALUE"),
    "compare: method-arg bad value": (["compare", "--methods", "eap", "--method-arg", "eap.max_examples=0"],
                                      "max_examples"),
    "leaderboard build: empty board": (["leaderboard", "build", "--board", "no_board"], "no accepted submissions"),
    "submit: missing metadata": (["submit", "results", "--meta", "no_such.json"], "no_such.json: no such metadata"),
    "circuit draw: negative max edges": (["circuit", "draw", "x.parquet", "--out", "x.svg", "--max-edges", "-1"],
                                         "--max-edges -1"),
    "sweep: missing file": (["sweep", "no_such_sweep.yaml"], "no_such_sweep.yaml: cannot read the sweep file"),
    "tasks show: unknown task": (["tasks", "show", "no_such_task"], "no_such_task"),
    "circuit show: missing file": (["circuit", "show", "no_such_unit.parquet"], "no_such_unit.parquet"),
    "report: missing directory": (["report", "--out", "no_such_results_dir"], "no_such_results_dir"),
    "inspect: missing model": (["inspect", "./no_such_model_dir"], "no_such_model_dir"),
    "train: heads that do not divide d_model": (["train", "--n-head", "3", "--d-model", "128", "--max-steps", "1"],
                                                "n-head"),
    "train: zero steps": (["train", "--max-steps", "0"], "max-steps"),
    "train: negative width": (["train", "--d-model", "-5"], "d-model"),
    # Settings that would make a label untrue, and the smaller items of the trust issue
    "run: target at or above chance": (["run", "--target-loss", "100"], "--target-loss 100.0: at or above chance"),
    "run: target just at chance": (["run", "--target-loss", "0.6932"], "at or above chance"),
    "run: accuracy bar above 1": (["run", "--min-accuracy", "1.5"], "--min-accuracy 1.5: give an accuracy in [0, 1]"),
    "run: empty task list": (["run", "--tasks", ""], "--tasks: the value names no task"),
    "run: address without ray": (["run", "--address", "10.0.0.1:6379"], "--address 10.0.0.1:6379"),
    "sweep: address without ray": (["sweep", "s.yaml", "--address", "10.0.0.1:6379"], "--executor ray"),
    "compare: zero threads": (["compare", "--methods", "eap", "--threads", "0"], "--threads 0"),
    "compare: target above chance": (["compare", "--methods", "eap", "--target-loss", "1"], "--target-loss 1.0"),
    "tasks show: negative count": (["tasks", "show", "if_equals", "-n", "-3"], "-n -3: give a positive number"),
    "circuit draw: png name for an svg": (["circuit", "draw", "x.parquet", "--out", "x.png"], "--out x.png"),
    "circuit export: svg name for json": (["circuit", "export", "x.parquet", "--out", "x.svg"], "ending in .json"),
    "submit: metadata is a folder": (["submit", "results", "--meta", "."], "the metadata file is a directory"),
    "train: anneal end beyond the run": (["train", "--anneal-end", "2"], "--anneal-end 2.0"),
    "train: init-from not a model": (["train", "--init-from", "no_model_here"], "--init-from no_model_here"),
    "train: device torch does not know": (["train", "--device", "tpu"], "--device tpu: not a torch device"),
    "train: a tokenized corpus folder missing its arrays": (["train", "--corpus", "tokfolder"],
                                                            "--corpus tokfolder: a tokenized corpus folder needs"),
    "train: distill-from not a model": (["train", "--distill-from", "no_model_here"], "--distill-from"),
    "val-loss: zero windows": (["val-loss", "--windows", "0"], "--windows 0"),
    "train: bridge-to not a model": (["train", "--bridge-to", "no_model_here"], "--bridge-to no_model_here"),
    "bridge eval: no such bridges": (["bridge", "eval", "no_such_bridges"], "BRIDGES no_such_bridges: no such folder"),
    "bridge eval: zero windows": (["bridge", "eval", "--windows", "0"], "--windows 0: give a positive number"),
    "bridge train: zero steps": (["bridge", "train", "--dense", "tiny-dense", "--sparse", "tiny-sparse", "--out",
                                  "b", "--steps", "0"], "--steps 0: give a positive number"),
    "bridge train: negative topk": (["bridge", "train", "--dense", "tiny-dense", "--sparse", "tiny-sparse", "--out",
                                     "b", "--topk", "-1"], "--topk -1"),
    "bridge steer: strength nan": (["bridge", "steer", "--task", "if_equals", "--strength", "nan"], "--strength nan"),
    "bridge steer: zero controls": (["bridge", "steer", "--task", "if_equals", "--controls", "0"], "--controls 0"),
    "bridge steer: csv out": (["bridge", "steer", "--task", "if_equals", "--out", "s.csv"], "ending in .parquet"),
    "run: edges with a node-only method": (["run", "--level", "edges", "--method", "magnitude"],
                                           "--level edges --method magnitude: magnitude scores nodes only"),
    "compare: edges with a node-only method": (["compare", "--level", "edges", "--methods", "eap,magnitude"],
                                               "--level edges --method magnitude"),
    "circuit import: no such file": (["circuit", "import", "nope.json", "--model", "tiny-sparse", "--task",
                                      "if_equals"], "nope.json: no such file"),
    "circuit import: not json": (["circuit", "import", "afile", "--model", "tiny-sparse", "--task", "if_equals"],
                                 "afile"),
    "circuit import: bad percent": (["circuit", "import", "graph.json", "--model", "tiny-sparse", "--task",
                                     "if_equals", "--percent", "0"], "--percent 0.0"),
    "circuit import: other shape": (["circuit", "import", "graph3.json", "--model", "tiny-sparse", "--task",
                                     "if_equals"], "a graph of 1 layers x 4 heads"),
    "circuit import: truncated json": (["circuit", "import", "cut.json", "--model", "tiny-sparse", "--task",
                                        "if_equals"], "cut.json: not an MIB circuit file: not valid JSON"),
    "circuit import: a json list": (["circuit", "import", "list.json", "--model", "tiny-sparse", "--task",
                                     "if_equals"], "list.json: an MIB circuit file is a JSON object"),
    "circuit import: values of the wrong type": (["circuit", "import", "typed.json", "--model", "tiny-sparse",
                                                  "--task", "if_equals"], "typed.json: a value has the wrong type"),
    "circuit export: --example with mib": (["circuit", "export", "nope.parquet", "--format", "mib", "--out",
                                            "x.json", "--example", "3"], "--example 3: only --format graph-json"),
    "sweep: --num-gpus without ray": (["sweep", "s.yaml", "--num-gpus", "1"], "--num-gpus 1.0: GPUs per unit are Ray's"),
    "export lm-eval: out under a file": (["export", "lm-eval", "--out", "afile/tasks", "--tasks", "if_equals",
                                          "--tokenizer", "tiny-sparse"], "afile"),
}


@pytest.mark.parametrize("args, needle", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_naming_what_to_fix(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a file where a folder is expected")
    (tmp_path / "tokfolder").mkdir()
    (tmp_path / "tokfolder" / "corpus.json").write_text("{}")  # a tokenized corpus folder that lost its arrays
    for name, layers in (("graph.json", 2), ("graph3.json", 1)):  # well-formed MIB graphs (no edges listed)
        nodes = {"input": {"in_graph": True}, "logits": {"in_graph": True},
                 **{n: {"in_graph": False} for L in range(layers) for n in [f"a{L}.h{h}" for h in range(4)] + [f"m{L}"]}}
        (tmp_path / name).write_text(json.dumps({"cfg": {"n_layers": layers, "n_heads": 4, "parallel_attn_mlp": False,
                                                         "d_model": 128}, "nodes": nodes, "edges": {}}))
    text = (tmp_path / "graph.json").read_text()
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])  # a download cut short
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "typed.json").write_text(text.replace('"n_layers": 2', '"n_layers": "two"'))
    extra = ["--out", str(tmp_path / "out")] if args[0] in ("run", "train") else []
    assert main([*args, *extra]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert needle in err, err
    assert not (tmp_path / "out").exists()  # nothing written before the error


def test_a_sweep_file_with_an_unknown_field_names_it(tmp_path, capsys):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"models": ["tiny-sparse"], "metods": ["eap"]}))
    assert main(["sweep", str(f)]) == 1
    err = capsys.readouterr().err
    assert "s.yaml: metods: unknown field" in err and "methods" in err and "Traceback" not in err


def test_at_least_25_kinds_of_bad_input_are_covered():
    assert len(CASES) + 1 >= 25


def test_submit_with_non_utf8_metadata_is_one_line(tmp_path, capsys):
    meta = tmp_path / "submission.json"
    meta.write_bytes(b"\xff\xfe{ not utf-8 \x80")
    assert main(["submit", str(tmp_path), "--meta", str(meta), "--check"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "UTF-8" in err, err


def test_report_with_a_method_the_results_do_not_hold_names_the_ones_they_do(capsys):
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "baselines" / "results"
    assert main(["report", "--out", str(results), "--method", "learned-maks"]) == 1
    err = capsys.readouterr().err
    assert "--method learned-maks: no unit of that method" in err and "learned_mask" in err, err


def test_report_honours_method_and_seed_in_every_mode_and_ignores_no_flag(capsys):
    import json as _json
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "baselines" / "results"
    assert main(["report", "--out", str(results), "--format", "json"]) == 0
    every = {r["method"] for r in _json.loads(capsys.readouterr().out)}
    assert main(["report", "--out", str(results), "--method", "eap", "--format", "json"]) == 0
    only = _json.loads(capsys.readouterr().out)
    assert len(every) > 1 and {r["method"] for r in only} == {"eap"}  # filtered, not ignored
    assert main(["report", "--out", str(results), "--seed", "7"]) == 1
    assert "--seed 7: no unit of that seed" in capsys.readouterr().err
    assert main(["report", "--out", str(results), "--seeds", "--seed", "0"]) == 1
    assert "give one of them" in capsys.readouterr().err
    assert main(["compare", "--methods", "eap,magnitude", "--steps", "5", "--out", "unused"]) == 1
    assert "none of --methods eap,magnitude takes steps" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated edge table", "edge table of another format", "circuit metadata"])
def test_a_damaged_file_beside_a_unit_is_one_line_naming_it(damage, tmp_path, capsys):
    import shutil
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "baselines" / "results" / "tiny-sparse"
    stem = "if_equals.learned_mask.seed0"
    for suffix in (".parquet", ".circuit.safetensors", ".edges.parquet"):
        shutil.copy(src / f"{stem}{suffix}", tmp_path / f"{stem}{suffix}")
    if damage == "truncated edge table":
        bad = tmp_path / f"{stem}.edges.parquet"
        bad.write_bytes(bad.read_bytes()[:300])
    elif damage == "edge table of another format":
        bad = tmp_path / f"{stem}.edges.parquet"
        bad.write_text("src_site,src_channel\n0.attn.q,1\n")
    else:  # circuitbench's metadata inside the (still valid) safetensors header edited into invalid JSON
        bad = tmp_path / f"{stem}.circuit.safetensors"
        raw = bad.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = raw[8 : 8 + n].replace(b'"{\\"format', b'"[\\"format', 1)  # same length: the header stays valid
        assert header != raw[8 : 8 + n]
        bad.write_bytes(raw[:8] + header + raw[8 + n :])
    for argv in (["circuit", "show", str(tmp_path / f"{stem}.parquet")],
                 ["circuit", "draw", str(tmp_path / f"{stem}.parquet"), "--out", str(tmp_path / "c.svg")]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and bad.name in err, err


def test_an_mib_file_is_never_imported_onto_another_model_task_or_shape(tmp_path, capsys):
    from pathlib import Path

    unit = Path(__file__).resolve().parents[1] / "baselines" / "results" / "tiny-sparse" / \
        "if_equals.learned_mask.seed0.parquet"
    graph = tmp_path / "g.json"
    assert main(["circuit", "export", str(unit), "--format", "mib", "--out", str(graph)]) == 0
    capsys.readouterr()
    d = json.loads(graph.read_text())
    assert d["circuitbench"]["model"] == "tiny-sparse" and d["circuitbench"]["task"] == "if_equals"
    wide = tmp_path / "wide.json"
    bare = {n: {k: v for k, v in node.items() if k != "neurons"} for n, node in d["nodes"].items()}
    wide.write_text(json.dumps({**d, "nodes": bare, "cfg": {**d["cfg"], "d_model": 256}}))  # no neurons to tell
    parallel = tmp_path / "parallel.json"
    parallel.write_text(json.dumps({**d, "cfg": {**d["cfg"], "parallel_attn_mlp": True}}))
    for file, model, task, needle in (
            (graph, "tiny-dense", "if_equals", "--model tiny-dense (the file: tiny-sparse)"),  # the same shape
            (graph, "tiny-sparse", "else_elif", "--task else_elif (the file: if_equals)"),
            (wide, "tiny-sparse", "if_equals", "cfg d_model 256"),
            (parallel, "tiny-sparse", "if_equals", "cfg parallel_attn_mlp True")):
        out = tmp_path / "out"
        assert main(["circuit", "import", str(file), "--model", model, "--task", task, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_bridge_train_never_writes_into_a_model_it_reads(tmp_path, capsys):
    import shutil

    from circuitbench.models.hub import bundled_models

    sparse = tmp_path / "sparse"
    shutil.copytree(bundled_models()["tiny-sparse"], sparse)
    before = sorted(p.name for p in sparse.iterdir())
    for out, model in ((sparse / "bridges", str(sparse)), (bundled_models()["tiny-sparse"], "tiny-sparse")):
        assert main(["bridge", "train", "--dense", "tiny-dense", "--sparse", model, "--out", str(out), "--force"]) == 1
        err = capsys.readouterr().err
        assert f"--out {out}: it is, holds or lies inside --sparse" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in sparse.iterdir()) == before


def test_circuit_export_never_replaces_a_file_without_force(tmp_path, capsys):
    from pathlib import Path

    unit = Path(__file__).resolve().parents[1] / "baselines/results/tiny-sparse/if_equals.learned_mask.seed0.parquet"
    graph = tmp_path / "mine.json"
    graph.write_text("a file of the user's")
    assert main(["circuit", "export", str(unit), "--format", "mib", "--out", str(graph)]) == 1
    err = capsys.readouterr().err
    assert f"--out {graph}: {graph} already there; pass --force" in err and len(err.strip().splitlines()) == 1
    assert graph.read_text() == "a file of the user's"
    assert main(["circuit", "export", str(unit), "--format", "mib", "--out", str(graph), "--force"]) == 0
    assert json.loads(graph.read_text())["cfg"]["n_layers"] == 2


def test_run_never_writes_its_results_inside_the_model_it_measures(capsys):
    from circuitbench.models.hub import bundled_models

    inside = bundled_models()["tiny-sparse"] / "results"
    assert main(["run", "--tasks", "if_equals", "--out", str(inside), "--force"]) == 1
    err = capsys.readouterr().err
    assert f"--out {inside}: it is, holds or lies inside --model" in err and len(err.strip().splitlines()) == 1
    assert not inside.exists()
