"""`bridge train | eval | steer`: bridges between a dense and a weight-sparse model (Gao et al. 2025)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from circuitbench.cli.common import (
    TASKS_HELP,
    Subparsers,
    add_setting_flags,
    print_table,
    set_threads,
    setting_values,
    task_names,
)
from circuitbench.errors import CircuitbenchError

DEFAULT_BRIDGES = "tiny"
"""The bundled bridges between `tiny-dense` and `tiny-sparse`."""


def add_bridge(sub: Subparsers) -> None:
    """Register `circuitbench bridge`."""
    from circuitbench.bridges.fit import BridgeTrainConfig

    p = sub.add_parser("bridge", help="train, measure and steer through bridges between a dense and a sparse model")
    bsub = p.add_subparsers(dest="bridge_command", required=True, metavar="ACTION")
    tr = bsub.add_parser("train", help="learn an encoder and decoder at every residual location both models share")
    tr.add_argument("--dense", required=True, help="the dense model (directory or bundled name)")
    tr.add_argument("--sparse", required=True, help="the weight-sparse model (same tokenizer)")
    tr.add_argument("--out", type=Path, required=True, help="output folder for the bridges and their card")
    add_setting_flags(tr, BridgeTrainConfig)
    _corpus_flags(tr)
    tr.add_argument("--tasks", nargs="*", default=["all"], help="after training, evaluate on these tasks' test "
                    "pairs (" + TASKS_HELP + ")")
    tr.add_argument("--pairs", type=int, default=32, help="test pairs per task in the evaluation")
    tr.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    tr.add_argument("--resume", action="store_true", help="continue OUT's unfinished run")
    tr.add_argument("--force", action="store_true", help="replace bridges already in OUT")
    tr.set_defaults(handler=_cmd_train)
    ev = bsub.add_parser("eval", help="per location: NMSE both ways, hybrid passes' loss and task accuracy against "
                                      "the dense model alone and against mean ablation")
    ev.add_argument("bridges", nargs="?", default=DEFAULT_BRIDGES, help="a bridge folder or bundled name")
    _model_flags(ev)
    _corpus_flags(ev, ctx_flag=True)
    ev.add_argument("--tasks", nargs="*", default=["all"], help=TASKS_HELP)
    ev.add_argument("--pairs", type=int, default=32, help="test pairs per task (the first ones)")
    ev.add_argument("--out", type=Path, default=None, help="also write the rows to this .parquet file")
    ev.add_argument("--save", action="store_true", help="record the evaluation in the bridges' config and card "
                    "(replacing an earlier one)")
    ev.add_argument("--format", choices=["table", "json"], default="table")
    ev.set_defaults(handler=_cmd_eval)
    st = bsub.add_parser("steer", help="move a sparse circuit's separating nodes to the other side of the contrast "
                                       "and decode the change into the dense model")
    st.add_argument("--task", required=True, help="the task whose circuit steers")
    st.add_argument("--bridges", default=DEFAULT_BRIDGES, help="a bridge folder or bundled name")
    _model_flags(st)
    st.add_argument("--unit", type=Path, default=None, help="the sparse model's unit on the task (default: "
                    "RESULTS/*/TASK.METHOD.seedSEED.parquet of the model with the sparse model's weights)")
    st.add_argument("--results", type=Path, default=Path("baselines/results"), help="where to find the unit")
    st.add_argument("--method", default="learned_mask", help="the unit's method")
    st.add_argument("--unit-seed", type=int, default=0, help="the unit's seed")
    st.add_argument("--strength", type=float, default=1.0,
                    help="how far towards the other side's mean (1: all the way, 2: twice as far)")
    st.add_argument("--min-separation", type=float, default=1.0,
                    help="a channel separates when its side means differ by this many pooled standard deviations")
    st.add_argument("--controls", type=int, default=8, help="random-channel draws for each of the two controls")
    st.add_argument("--seed", type=int, default=0, help="seeds the control's draws")
    st.add_argument("--out", type=Path, default=None,
                    help="the results' Parquet file (default: beside the unit, TASK.METHOD.seedN.steer.parquet)")
    st.add_argument("--format", choices=["table", "json"], default="table")
    st.set_defaults(handler=_cmd_steer)
    for q in (tr, ev, st):
        q.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
        q.add_argument("--quiet", action="store_true", help="no progress bars")


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dense", default=None, help="the dense model (default: the one the bridges record)")
    p.add_argument("--sparse", default=None, help="the sparse model (default: the one the bridges record)")


def _corpus_flags(p: argparse.ArgumentParser, ctx_flag: bool = False) -> None:
    p.add_argument("--corpus", default="pypi", help="the corpus both models were trained on: a directory of .py "
                   "files, a pinned package list (*.txt) or `pypi` (default: %(default)s)")
    p.add_argument("--cache-dir", type=Path, default=None, help="tokenizer/token cache (~/.cache/circuitbench)")
    p.add_argument("--vocab-size", type=int, default=2048, help="the corpus tokenizer's size (default: %(default)s)")
    p.add_argument("--tokenizer-bytes", type=int, default=64_000_000,
                   help="the corpus tokenizer's training sample, as trained (default: %(default)s)")
    p.add_argument("--windows", type=int, default=32, help="held-out windows for the evaluation")
    if ctx_flag:  # `bridge train` has its own --ctx: the training windows' length
        p.add_argument("--ctx", type=int, default=None, help="window length (default: the models' context, at "
                       "most 256)")


def _corpus_data(args: argparse.Namespace, models: list[Any]) -> Any:
    """The corpus's token arrays, after checking both models read its tokenizer."""
    from circuitbench.train.config import TrainConfig
    from circuitbench.train.data import prepare_data
    from circuitbench.train.loop import _cache_dir, check_tokenizer

    cache = args.cache_dir or _cache_dir(TrainConfig(out_dir=Path(".")))
    corpus = None if args.corpus in (None, "stdlib") else args.corpus
    data, corpus_obj = prepare_data(cache, corpus, args.vocab_size, args.tokenizer_bytes)
    for flag, m in zip(("--dense", "--sparse"), models, strict=True):
        directory = m.provenance.get("model_path")
        if directory is None:
            raise CircuitbenchError(f"{flag} {m.name}: not a model directory; bridges train on the corpus's tokens, "
                                    "so both models must be directories with the corpus's tokenizer.json")
        check_tokenizer(flag, Path(directory), data)
    return data, corpus_obj


def _check_eval_flags(args: argparse.Namespace) -> None:
    for flag, value in (("--windows", args.windows), ("--pairs", args.pairs)):
        if value < 1:
            raise CircuitbenchError(f"{flag} {value}: give a positive number")


def _evaluate(args: argparse.Namespace, bridges: Any, dense: Any, sparse: Any, data: Any, ctx: int | None
              ) -> dict[str, Any]:
    from circuitbench.bridges.measure import evaluate_bridges
    from circuitbench.corpus import val_windows
    from circuitbench.tasks.load import spec_names

    names = task_names(args.tasks)
    tasks = spec_names() if not names or names == ["all"] else names
    contexts = [m for m in (dense.context_length, sparse.context_length) if m]
    limit = min(contexts) if contexts else None
    if ctx is not None and (ctx < 2 or (limit is not None and ctx > limit)):
        raise CircuitbenchError(f"--ctx {ctx}: give a window length from 2 to the models' context ({limit})")
    length = ctx or min([*contexts, 256])
    vx, vy = val_windows(data.val, length, args.windows)
    rows = evaluate_bridges(bridges, dense, sparse, vx, vy, tasks, args.pairs, show_progress=not args.quiet)
    return {"windows": len(vx), "ctx": length, "pairs": args.pairs, "tasks": tasks, "rows": rows}


def _record(directory: Path, bridges: Any, config: dict[str, Any]) -> None:
    """Rewrite a bridge directory's files with `config` (its shape fields come from the bridges themselves)."""
    from circuitbench.bridges.bridge import save_bridges

    save_bridges(directory, bridges, {k: v for k, v in config.items()
                                      if k not in ("format", "locations", "d_dense", "d_sparse", "topk")})


def _cmd_train(args: argparse.Namespace) -> int:
    import circuitbench
    from circuitbench.bridges.bridge import CONFIG
    from circuitbench.bridges.card import eval_table, write_card
    from circuitbench.bridges.fit import BridgeTrainConfig, check_settings, train_bridges

    set_threads(args.threads)
    cfg = BridgeTrainConfig(**setting_values(args, BridgeTrainConfig))
    check_settings(cfg)  # before any model or corpus is read
    _check_eval_flags(args)
    from circuitbench.files import check_not_an_input
    from circuitbench.models.hub import model_folder

    folders = [(flag, model_folder(v)) for flag, v in (("--dense", args.dense), ("--sparse", args.sparse))]
    check_not_an_input(args.out, "--out", [(flag, f) for flag, f in folders if f is not None])
    dense = circuitbench.load_model(args.dense, device="cpu")
    sparse = circuitbench.load_model(args.sparse, device="cpu")
    from circuitbench.bridges.bridge import check_bridgeable

    check_bridgeable(dense, sparse)  # before the corpus is read: a refusal costs nothing
    data, corpus = _corpus_data(args, [dense, sparse])
    extra = {"command": "circuitbench " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bridge"] else None,
             "corpus": f"{args.corpus} (hash {corpus.hash[:16]}, tokenizer {data.tokenizer_hash[:12]})"}
    bridges = train_bridges(dense, sparse, data.train, args.out, cfg, resume=args.resume, force=args.force,
                            show_progress=not args.quiet, extra=extra)
    assert bridges is not None  # only stop_after, which the command line does not offer, stops a run early
    config = json.loads((args.out / CONFIG).read_text())
    if not args.no_eval:
        config["evaluation"] = _evaluate(args, bridges, dense, sparse, data, None)
        _record(args.out, bridges, config)
        print(eval_table(config["evaluation"]["rows"], "simple"))
    write_card(args.out, config)
    print(f"{args.out}: bridges at {len(bridges.locations)} locations; card {args.out / 'README.md'}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from circuitbench.bridges.bridge import load_bridged_models, load_bridges
    from circuitbench.bridges.card import eval_table

    set_threads(args.threads)
    _check_eval_flags(args)
    if args.out is not None and args.out.suffix != ".parquet":
        raise CircuitbenchError(f"--out {args.out}: this writes Parquet; give a file name ending in .parquet")
    files = load_bridges(args.bridges, "BRIDGES")
    dense, sparse = load_bridged_models(files, args.dense, args.sparse)
    data, _ = _corpus_data(args, [dense, sparse])
    ev = _evaluate(args, files.bridges, dense, sparse, data, args.ctx)
    if args.format == "json":
        print(json.dumps(ev, indent=2))
    else:
        print(eval_table(ev["rows"], "simple"))
        carried = sum(r["carries"] for r in ev["rows"])
        print(f"\nboth hybrid passes beat mean ablation at {carried} of {len(ev['rows'])} locations "
              f"({ev['windows']} windows of {ev['ctx']} tokens; {len(ev['tasks'])} tasks x {ev['pairs']} pairs)")
    if args.out is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from circuitbench.files import atomic_path

        with atomic_path(args.out) as tmp:
            pq.write_table(pa.Table.from_pylist(ev["rows"]), tmp)
        print(f"wrote {args.out}")
    if args.save:
        from circuitbench.bridges.bridge import CONFIG
        from circuitbench.bridges.card import write_card

        _record(files.path, files.bridges, {**files.config, "evaluation": ev})
        write_card(files.path, json.loads((files.path / CONFIG).read_text()))
        print(f"recorded the evaluation in {files.path / CONFIG} and its card")
    return 0


def _cmd_steer(args: argparse.Namespace) -> int:
    from circuitbench.bridges.bridge import load_bridged_models, load_bridges
    from circuitbench.bridges.steer import check_settings, steer, steer_path, write_steer
    from circuitbench.cli.common import method_name
    from circuitbench.runs.saved import load_saved

    set_threads(args.threads)
    check_settings(args.strength, args.min_separation, args.controls)
    if args.out is not None and args.out.suffix != ".parquet":
        raise CircuitbenchError(f"--out {args.out}: this writes Parquet; give a file name ending in .parquet")
    files = load_bridges(args.bridges)
    dense, sparse = load_bridged_models(files, args.dense, args.sparse)
    unit = args.unit or _find_unit(args.results, args.task, method_name(args.method), args.unit_seed, sparse)
    saved = load_saved(unit)
    if saved.prov.unit.task != args.task:
        raise CircuitbenchError(f"--unit {unit}: is a unit of task {saved.prov.unit.task}, not --task {args.task}")
    result = steer(files.bridges, dense, sparse, saved, args.strength, args.min_separation, args.controls, args.seed)
    result.meta["bridges"] = str(files.path)
    out = args.out or steer_path(saved.path)
    write_steer(out, result)
    if args.format == "json":
        print(json.dumps({"meta": result.meta, "rows": result.rows}, indent=2))
        return 0
    sep = result.meta["separating"]
    print(f"{args.task}: {len(sep)} residual channels ({sum(len(c['nodes']) for c in sep)} of the circuit's "
          f"{result.meta['residual_nodes']} residual nodes) separate the contrast (|separation| >= "
          f"{args.min_separation}); steered at the answer position, strength {args.strength}")
    shown = [{k: r[k] for k in ("intervention", "model", "channels", "p_correct_before", "p_correct_after", "shift",
                                "flip_rate")} | {"nodes": _short(r["nodes"])} for r in result.rows]
    print_table(shown, "table", ".3f")
    _verdict(result.rows)
    print(f"wrote {out}")
    return 0


def _find_unit(results: Path, task: str, method: str, seed: int, sparse: Any) -> Path:
    """The unit of `task` under `results` whose model has the sparse model's weights (whatever its folder's name).

    Raises:
        CircuitbenchError: when there is none, with the command that makes one.
    """
    from circuitbench.results.store import read_unit

    sha = sparse.provenance.get("weights_sha256")
    name = f"{task.replace(':', '__')}.{method}.seed{seed}.parquet"
    for path in sorted(Path(results).glob(f"*/{name}")):
        if read_unit(path)[2].unit.model.weights_sha256 == sha:
            return path
    where = sparse.provenance.get("model_path") or sparse.name
    raise CircuitbenchError(f"--task {task}: no unit {name} of the sparse model {sparse.name} under {results}; run "
                            f"`circuitbench run --model {where} --tasks {task} --out {results}` first, or give --unit")


def _short(nodes: str, n: int = 48) -> str:
    return nodes if len(nodes) <= n else nodes[: n - 3] + "..."


def beats_controls(rows: list[dict[str, Any]], model: str = "dense") -> bool | None:
    """Whether the circuit's steer moved P(correct) more than both random controls (beyond their mean + 2 sd).

    None when nothing was steered (no separating channel).
    """
    get = {(r["intervention"], r["model"]): r for r in rows}
    c = get.get(("circuit", model))
    if c is None:
        return None
    controls = [get[(k, model)] for k in ("random", "random_matched") if (k, model) in get]
    return all(abs(c["shift"]) > abs(r["shift"]) + 2 * r["shift_sd"] for r in controls)


def _verdict(rows: list[dict[str, Any]]) -> None:
    """One line saying whether the circuit's steer beat the random controls in the dense model, as measured."""
    get = {(r["intervention"], r["model"]): r for r in rows}
    better = beats_controls(rows)
    if better is None:
        print("no channel of the circuit separates the contrast: nothing was steered")
        return
    c, r, m = get[("circuit", "dense")], get[("random", "dense")], get[("random_matched", "dense")]
    print(f"dense model through the bridges: circuit flips {c['flip_rate']:.1%} of answers (P(correct) "
          f"{c['shift']:+.3f}); random channels flip {r['flip_rate']:.1%} ({r['shift']:+.3f} +- {r['shift_sd']:.3f}), "
          f"random channels moved as far {m['flip_rate']:.1%} ({m['shift']:+.3f} +- {m['shift_sd']:.3f}): "
          + ("the circuit's channels steer, the random ones do not" if better
             else "the circuit's channels do not steer more than random ones"))
