"""The `circuitbench` console script: one thin function per subcommand, all logic in the library."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from circuitbench.errors import CircuitbenchError

Handler = Callable[[argparse.Namespace], int]


def _print_table(rows: list[dict[str, object]], fmt: str, floatfmt: str = ".4g") -> None:
    """Print rows as a tabulate table (people) or JSON (scripts)."""
    if fmt == "json":
        print(json.dumps(rows, indent=2, default=str))
        return
    from tabulate import tabulate

    print(tabulate(rows, headers="keys", floatfmt=floatfmt))


# --- inspect -------------------------------------------------------------------------------------


_TASKS_HELP = ("task names (NAME:inverted for a task's inverted-label control) or spec files (path/to/spec.yaml), "
               "separated by commas or spaces, or all (default: all)")


def _tasks(values: Sequence[str]) -> list[str]:
    """`--tasks` as a list: every value split at commas (`a,b c` is a, b, c), blanks dropped.

    Raises:
        CircuitbenchError: when the values name no task at all (`--tasks ""`).
    """
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if values and not names:
        raise CircuitbenchError("--tasks: the value names no task; give task names, spec files (.yaml) or `all` "
                                "(`circuitbench tasks list` lists them)")
    return names


def _spec_names(values: Sequence[str]) -> list[str] | None:
    """`--tasks` for the task-spec commands: None (every bundled task) for `all`."""
    names = _tasks(values)
    return None if not names or names == ["all"] else names


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="describe a model: shapes, parameter counts, sparsity")
    p.add_argument("model", help="model directory, bundled name, or Hub id")
    _add_hub_flags(p)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=_cmd_inspect)


def _add_hub_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit (Hub ids only; default main)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let a Hub repository's own model code run (never implied); only for layouts the "
                        "native loaders do not recognise")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from circuitbench.models.hub import load_model
    from circuitbench.models.inspect import describe

    adapter = load_model(args.model, device="cpu", revision=args.revision, trust_remote_code=args.trust_remote_code)
    summary, matrices = describe(adapter)
    if args.format == "json":
        print(json.dumps({"model": summary, "weights": matrices}, indent=2, default=str))
        return 0
    from tabulate import tabulate

    print(tabulate(list(summary.items()), tablefmt="plain"))
    print()
    print(tabulate(matrices, headers="keys", floatfmt=".4f", intfmt=","))
    return 0


# --- train ---------------------------------------------------------------------------------------


def _add_train(sub: argparse._SubParsersAction) -> None:
    from circuitbench.train.config import TrainConfig

    d = TrainConfig.model_fields
    p = sub.add_parser(
        "train",
        help="train a weight-sparse model (or its dense twin) with the recipe of Gao et al. 2025",
    )
    p.add_argument("--out", required=True, help="output directory (checkpoints and final model)")
    p.add_argument("--corpus", default=None,
                   help="a directory of .py files, a pinned package list (*.txt), or `pypi` (the bundled "
                        "list, fetched with pip into --cache-dir); default: the standard library")
    p.add_argument("--pos-emb", choices=["zero", "learned"], default="zero",
                   help=d["pos_emb"].description)
    p.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="bfloat16 autocast for matrix products where the hardware has it (auto), or force one")
    p.add_argument("--tokenizer-bytes", type=int, default=d["tokenizer_bytes"].default,
                   help=d["tokenizer_bytes"].description)
    p.add_argument("--cache-dir", default=None, help="tokenizer/token cache (~/.cache/circuitbench)")
    p.add_argument("--dense", action="store_true", help="dense twin: no weight or activation sparsity")
    for name in ("n_layer", "d_model", "n_head", "d_mlp", "ctx", "vocab_size", "batch_size", "max_steps", "seed",
                 "eval_every", "val_windows", "checkpoint_every", "stop_after", "threads"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=d[name].default,
                       help=(d[name].description or "").replace("%", "%%"))
    p.add_argument("--init-from", default=None, metavar="MODEL_DIR", help=d["init_from"].description)
    p.add_argument("--distill-from", default=None, metavar="MODEL_DIR", help=d["distill_from"].description)
    p.add_argument("--anneal-afrac", action="store_true", help=d["anneal_afrac"].description)
    for name in ("afrac", "weight_density", "lr", "warmup", "weight_decay", "adam_eps",
                 "target_val_loss", "anneal_end", "distill_coef"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=d[name].default,
                       help=(d[name].description or "").replace("%", "%%"))
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--force", action="store_true", help=d["force"].description)
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="also keep every checkpoint as OUT/checkpoint-STEP.pt")
    p.add_argument("--finish", action="store_true",
                   help="with --resume: write the final model from the checkpoint, training no further")
    p.add_argument("--no-card", action="store_true", help="skip the model card (task evaluation)")
    p.add_argument("--quiet", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from circuitbench.train.card import write_card
    from circuitbench.train.loop import META, TrainConfig, train

    fields = set(TrainConfig.model_fields) - {"out_dir", "command"}
    kwargs = {k: v for k, v in vars(args).items() if k in fields}
    cfg = TrainConfig(
        out_dir=Path(args.out),
        command="circuitbench " + shlex.join(sys.argv[1:]),
        **kwargs,
    )
    out = train(cfg)
    if (out / META).is_file() and not args.no_card:
        write_card(out)
    print(out)
    return 0


def _add_val_loss(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("val-loss", help="measure a model's validation loss on the corpus's held-out packages "
                       "(the number the leaderboard shows as measured by circuitbench)")
    p.add_argument("--model", default="tiny-sparse", help="bundled name or model directory (default: %(default)s)")
    p.add_argument("--corpus", default="pypi", help="the corpus the model was trained on (default: %(default)s)")
    p.add_argument("--windows", type=int, default=256, help="held-out windows of the model's context "
                   "(default: %(default)s, as the reference models' cards)")
    p.add_argument("--cache-dir", type=Path, default=None, help="tokenizer/token cache (~/.cache/circuitbench)")
    p.add_argument("--vocab-size", type=int, default=2048, help="the corpus tokenizer's size (default: %(default)s)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="also write the submission's `validation` block to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_val_loss)


def _cmd_val_loss(args: argparse.Namespace) -> int:
    from circuitbench.results.files import write_text_atomic
    from circuitbench.train.valloss import measure

    if args.windows < 1:
        raise CircuitbenchError(f"--windows {args.windows}: give a positive number of windows")
    block = measure(args.model, args.corpus, args.windows, cache_dir=args.cache_dir, vocab_size=args.vocab_size,
                    show_progress=not args.quiet)
    print(f"{args.model}: validation loss {block['loss']:.5f} nats/token on {block['corpus']}")
    if args.json is not None:
        write_text_atomic(args.json, json.dumps({"validation": block}, indent=2) + "\n", "--json")
        print(f"wrote {args.json}: put its `validation` block in submission.json")
    return 0


# --- run -----------------------------------------------------------------------------------------


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="find and measure the smallest circuit of every task")
    p.add_argument("--model", default="tiny-sparse",
                   help="bundled name, model directory, Hub id (owner/name), or FILE.py:FUNCTION / module:FUNCTION "
                        "naming a function that builds a model (a TransformerLens HookedTransformer, an nnsight "
                        "LanguageModel, ...)")
    _add_hub_flags(p)
    p.add_argument("--sae", default=None, metavar="SAE[,SAE...]",
                   help="splice SAEs into the model and prune their latents: SAELens-format directories, Hub ids "
                        "(owner/repo[/folder]) or SAELens release ids (RELEASE/ID, with sae-lens installed)")
    p.add_argument("--tasks", nargs="+", default=["all"], help=_TASKS_HELP)
    p.add_argument("--method", default="learned-mask",
                   help="learned-mask, eap, eap-ig, activation-patching, magnitude or random (`circuitbench methods` "
                        "lists them with their hyperparameters; - or _) (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="learned-mask optimizer steps (default 400)")
    p.add_argument("--patience", type=int, default=None,
                   help="learned-mask: stop once the set of active nodes is unchanged for N steps (default: off)")
    p.add_argument("--batch-pairs", type=int, default=None,
                   help="learned-mask: pairs per step (default 32; the paper's 64 is the slow path)")
    p.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default=None,
                   help="learned-mask matrix products: bfloat16 autocast where the hardware has it (auto, the "
                        "default), or float32 (the slow path); evaluation is always in the model's --dtype")
    p.add_argument("--eval-batch", type=int, default=256,
                   help="examples per forward pass when scoring circuits (memory is bounded by it; on a GPU "
                        "raise it; the numbers do not change)")
    p.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any hyperparameter of the method (repeatable), e.g. --method-arg length_groups=1; "
                        "see `circuitbench methods`")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where units run: here, one after another, or as Ray tasks (pip install 'circuitbench[ray]')")
    p.add_argument("--address", default=None, help="with --executor ray: the Ray cluster (default: start one here)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (recorded in every unit; circuits can differ slightly across "
                        "thread counts)")
    p.add_argument("--target-loss", type=float, default=0.15, help="per-example task-loss target")
    p.add_argument("--ablation", choices=["mean", "task-mean", "zero", "counterfactual"], default="mean",
                   help="what pruned nodes take: the pretraining-corpus mean (the paper's), the task mean, zero, or "
                        "the pair partner's activations (counterfactual, MIB's interchange) (default: %(default)s)")
    p.add_argument("--min-accuracy", type=float, default=0.9,
                   help="tasks the full model solves below this accuracy are reported, not pruned")
    p.add_argument("--no-control", action="store_true", help="skip the inverted-label control")
    p.add_argument("--calibrate", action="store_true",
                   help="fit a scale and shift of the final logits to each circuit (16 LBFGS steps) before scoring")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--out", type=Path, default=Path("results"), help="results directory")
    p.add_argument("--force", action="store_true", help="recompute units already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=_cmd_run)


def _method_name(name: str) -> str:
    """The registry's one spelling of a method name (`learned-mask` -> `learned_mask`)."""
    from circuitbench.circuits.methods import canonical_name

    return canonical_name(name)


def _method_args(items: list[str]) -> dict[str, Any]:
    """`--method-arg KEY=VALUE` flags as keyword arguments (VALUE read as JSON when it parses: 1, 0.5, null)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CircuitbenchError(f"--method-arg {item}: write KEY=VALUE, e.g. --method-arg length_groups=1")
        name = key.replace("-", "_")  # a hyperparameter's flag spelling (batch-pairs) to its field (batch_pairs)
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    from circuitbench.runs.runner import RunConfig, geometric_means, run

    kwargs = {**_method_args(args.method_arg),
              **{k: v for k, v in (("steps", args.steps), ("patience", args.patience),
                                   ("batch_pairs", args.batch_pairs), ("precision", args.precision))
                 if v is not None}}
    _set_threads(args.threads)
    cfg = RunConfig(model=args.model, saes=args.sae.split(",") if args.sae else [],
                    tasks=_tasks(args.tasks), method=_method_name(args.method),
                    method_kwargs=kwargs, target_loss=args.target_loss, ablation=args.ablation,
                    seed=args.seed, device=args.device, dtype=args.dtype, out=args.out, force=args.force,
                    min_accuracy=args.min_accuracy, control=not args.no_control, calibrate=args.calibrate,
                    show_progress=not args.quiet, revision=args.revision, trust_remote_code=args.trust_remote_code,
                    eval_batch=args.eval_batch)
    from circuitbench.runs.executors import make_executor

    _check_address(args)
    summaries = run(cfg, executor=make_executor(args.executor, args.address))
    # the summary's own column names (the Parquet and the code use the same ones)
    cols = ["task", "status", "full_accuracy", "nodes", "edges", "sufficiency_loss", "necessity_loss",
            "faithfulness", "control_nodes", "control_met_target"]
    _print_table([{c: s.get(c) for c in cols} for s in summaries], args.format, floatfmt=".3f")
    if args.format == "table":
        g = geometric_means(summaries)
        chance = args.min_accuracy <= 0.5
        what = "pruned to the target" if chance else "solved by the full model and pruned to the target"
        head = f"\n{int(g['solved'])}/{int(g['tasks'])} tasks {what}"
        if g["solved"]:
            print(f"{head}; geometric mean over them: {g['geomean_nodes']:.1f} nodes, {g['geomean_edges']:.1f} edges.")
        else:
            print(f"{head}: no circuit to report. Tasks marked unsolved have full-model accuracy below "
                  f"--min-accuracy {args.min_accuracy}; the model must solve a task before it can be pruned.")
        empty = _report_dropped(summaries)
        unsolved = [s["task"] for s in summaries if s.get("status") == "unsolved" and s["task"] not in empty]
        if unsolved and g["solved"]:
            print(f"Not solved by the full model (accuracy < {args.min_accuracy}), so not pruned: "
                  f"{', '.join(unsolved)}.")
        _flag_labels(summaries, args.min_accuracy)
        print(f"Results: {args.out}/ (per task: Parquet measurements, circuit .safetensors, edges .parquet; "
              "plus summary.parquet). See one: circuitbench circuit show FILE.parquet")
    return 0


def _flag_labels(summaries: list[dict[str, Any]], min_accuracy: float) -> None:
    """Say where a label above would claim more than was measured."""
    if min_accuracy <= 0.5:
        print(f"Note: --min-accuracy {min_accuracy} is at or below chance (0.5), so tasks were pruned whether or not "
              "the full model solves them: `solved` above means only that a circuit met the target loss. These results "
              "are off the board's protocol.")
    zero = list(dict.fromkeys(s["task"] for s in summaries if s.get("status") == "solved" and s.get("nodes") == 0))
    if zero:
        print(f"Circuits of 0 nodes: {', '.join(zero)}. No node was needed to meet the target: the direct path from "
              "the token embedding (and the bigram table) to the logits decides these tasks alone, so they say nothing "
              "about a circuit.")
    missed = list(dict.fromkeys(s["task"] for s in summaries if s.get("control_met_target")))
    if missed:
        print(f"The inverted-label control also met the target on {', '.join(missed)}: pruning can fit these labels "
              "either way, so their circuits are weaker evidence (Drori 2026).")


def _check_address(args: argparse.Namespace) -> None:
    if args.address is not None and args.executor != "ray":
        raise CircuitbenchError(f"--address {args.address}: names a Ray cluster, used only with --executor ray; add "
                                "--executor ray or drop --address")


def _report_dropped(summaries: list[dict[str, Any]]) -> list[str]:
    """Say which tasks had no example left for this tokenizer (so they were not measured); returns them."""
    empty = [s["task"] for s in summaries if s.get("status") == "unsolved" and not s.get("test_examples")]
    if empty:
        print(f"No example survives this tokenizer's boundary checks (both answers share a first token, or an "
              f"answer does not start a token), so not measured: {', '.join(empty)}. See why with "
              "`circuitbench tasks encode --tokenizer TOKENIZER --tasks ...`.")
    return empty


# --- sweep ---------------------------------------------------------------------------------------


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="run a grid of models x tasks x methods x seeds from a YAML file",
        description="Run every (model, task, method, seed) of a sweep file as units. The file lists models, "
                    "tasks, methods (a name, or {name: NAME, HYPERPARAMETER: VALUE}) and seeds, plus any single "
                    "run setting (out, ablation, target_loss, min_accuracy, control, ...). Finished units are "
                    "skipped, so a rerun resumes; a failing unit is retried once, then reported.")
    p.add_argument("file", type=Path, help="the sweep YAML file")
    p.add_argument("--out", type=Path, default=None, help="results directory (default: the file's `out`)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where units run: here, one after another, or as Ray tasks (pip install 'circuitbench[ray]')")
    p.add_argument("--address", default=None, help="with --executor ray: the Ray cluster (default: start one here)")
    p.add_argument("--num-gpus", type=float, default=None,
                   help="with --executor ray: GPUs per unit (default: 1 when this machine has CUDA, else 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per unit")
    p.add_argument("--force", action="store_true", help="recompute units already in the results directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from circuitbench.runs.executors import make_executor
    from circuitbench.runs.sweep import load_sweep, sweep

    _check_address(args)
    spec = load_sweep(args.file, args.out)
    _set_threads(args.threads)
    num_gpus = args.num_gpus
    if num_gpus is None:
        import torch

        num_gpus = 1.0 if torch.cuda.is_available() and spec.device in ("auto", "cuda") else 0.0
    rows = sweep(spec, make_executor(args.executor, args.address, num_gpus, fail_fast=False), args.force,
                 not args.quiet, where=str(args.file))
    cols = ["model", "task", "method", "seed", "status", "nodes", "edges", "faithfulness", "cpr_log", "control_nodes"]
    _print_table([{c: r.get(c) for c in cols} for r in rows], args.format, floatfmt=".3f")
    if args.format == "table":
        print(f"\n{len(rows)} units in {spec.out}/ (summary.parquet covers every unit there); "
              "`circuitbench report` compares them.")
    return 0


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise CircuitbenchError(f"--threads {threads}: give a positive number of threads")
    import torch

    torch.set_num_threads(threads)


# --- methods -------------------------------------------------------------------------------------


def _add_methods(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="list the circuit-finding methods and their hyperparameters (defaults)")
    p.set_defaults(handler=_cmd_methods)


def _cmd_methods(args: argparse.Namespace) -> int:
    import dataclasses

    from circuitbench.circuits.methods import get_method, method_names

    rows = []
    for name in method_names():
        method = get_method(name)
        doc = (type(method).__doc__ or "").strip().splitlines()[0]
        fields = {f.name: f for f in dataclasses.fields(method)} if dataclasses.is_dataclass(method) else {}
        params = ", ".join(f"{k}={v!r}" for k, v in method.hyperparameters().items() if k in fields)
        rows.append({"method": name.replace("_", "-"), "what": doc, "hyperparameters (defaults)": params})
    _print_table(rows, "table")
    print("\nSet any of them with `circuitbench run --method NAME --method-arg KEY=VALUE`.")
    return 0


# --- compare -------------------------------------------------------------------------------------


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="run several methods on the same tasks and compare their faithfulness curves")
    p.add_argument("--methods", default="learned-mask,eap,eap-ig,magnitude,random",
                   help="comma-separated method names (registry: learned_mask, eap, eap_ig, magnitude, "
                        "activation_patching, random)")
    p.add_argument("--model", default="tiny-sparse", help="bundled name, model directory or Hub id")
    p.add_argument("--tasks", nargs="+", default=["all"], help=_TASKS_HELP)
    p.add_argument("--ablation", choices=["mean", "task-mean", "zero", "counterfactual"], default="mean",
                   help="what pruned nodes take: the pretraining-corpus mean (the paper's), the task mean, zero, or "
                        "the pair partner's activations (counterfactual, MIB's interchange) (default: %(default)s)")
    p.add_argument("--min-accuracy", type=float, default=0.9)
    p.add_argument("--target-loss", type=float, default=0.15)
    p.add_argument("--steps", type=int, default=None, help="learned-mask optimizer steps")
    p.add_argument("--method-arg", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a hyperparameter of one method (repeatable), e.g. --method-arg "
                        "activation_patching.max_examples=16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("results"), help="results directory (shared with run)")
    p.add_argument("--force", action="store_true", help="recompute units already in --out")
    p.add_argument("--no-control", action="store_true",
                   help="skip the inverted-label control (results are then off the board's protocol)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=_cmd_compare)


def _per_method_args(items: list[str], methods: list[str]) -> dict[str, dict[str, Any]]:
    """`--method-arg METHOD.KEY=VALUE` flags, by method (each checked against the methods compared)."""
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for item in items:
        head, sep, _ = item.partition("=")
        method, dot, key = head.partition(".")
        method = _method_name(method)
        if not sep or not dot or not key:
            raise CircuitbenchError(f"--method-arg {item}: write METHOD.KEY=VALUE, e.g. --method-arg "
                                    "activation_patching.max_examples=16")
        if method not in out:
            raise CircuitbenchError(f"--method-arg {item}: {method} is not one of --methods ({', '.join(methods)})")
        out[method].update(_method_args([item.partition(".")[2]]))
    return out


def _cmd_compare(args: argparse.Namespace) -> int:
    import circuitbench
    from circuitbench.circuits.methods import get_method, hyperparameter_names
    from circuitbench.results.report import collect, method_table, method_task_table
    from circuitbench.runs.config import validate
    from circuitbench.runs.runner import RunConfig, run

    methods = [_method_name(m) for m in args.methods.split(",") if m.strip()]
    per_method = _per_method_args(args.method_arg, methods)
    for m in methods:
        if args.steps is not None and "steps" in hyperparameter_names(m):
            per_method[m].setdefault("steps", args.steps)
        get_method(m, **per_method[m])  # every name and hyperparameter checked before any compute
    _set_threads(args.threads)
    configs = [RunConfig(model=args.model, tasks=_tasks(args.tasks), method=m, method_kwargs=per_method[m],
                         ablation=args.ablation, min_accuracy=args.min_accuracy, target_loss=args.target_loss,
                         seed=args.seed, device=args.device, out=args.out, control=not args.no_control,
                         force=args.force, show_progress=not args.quiet) for m in methods]
    for cfg in configs:
        validate(cfg)  # every setting of every method checked before the model loads
    adapter = circuitbench.load_model(args.model, device=args.device)
    for cfg in configs:
        run(cfg, adapter)
    rows = [r for r in collect(args.out) if r["method"] in methods]
    per_task = method_task_table(rows, args.model, args.seed)
    table = method_table(rows, args.model, args.seed)
    if args.format == "json":
        print(json.dumps({"per_task": per_task, "methods": table}, indent=2, default=str))
    else:
        _print_table(per_task, "table", floatfmt=".3f")
        print()
        _print_table(table, "table", floatfmt=".3f")
    plot_note = ""
    try:
        from circuitbench.results.plots import plot_curves, read_curves

        stem = args.out / f"compare-{args.model.replace('/', '_')}-seed{args.seed}"
        paths = plot_curves(read_curves(args.out, args.model, methods, args.seed), stem,
                            title=f"{args.model}: faithfulness (logit difference) by circuit size")
        paths += plot_curves(read_curves(args.out, args.model, methods, args.seed, "kl"),
                             stem.with_name(stem.name + "-kl"), ylabel="faithfulness (KL)",
                             title=f"{args.model}: faithfulness on KL from the model, 1 - KL(C) / KL(empty)")
        plot_note = f"\nCurves: {', '.join(map(str, paths))}"
    except CircuitbenchError as err:
        plot_note = f"\nNo plot: {err}"
    if args.format == "table":
        _flag_labels([r for r in rows if r["model"] == args.model and r["seed"] == args.seed], args.min_accuracy)
        n = table[0]["tasks_compared"] if table else 0
        unsolved = sorted({r["task"] for r in rows if r["model"] == args.model and r["seed"] == args.seed
                           and r["status"] == "unsolved"})
        note = (f" Not pruned, because the full model does not solve them (below --min-accuracy "
                f"{args.min_accuracy}): {', '.join(unsolved)}." if unsolved else "")
        print("\nFirst table: every method on every pruned task; nodes and edges of its smallest circuit at the "
              "target loss, wall_s the unit's seconds. Second: means over the "
              f"{n} task(s) every method pruned.{note} CPR: area under faithfulness over circuit size, nodes ranked "
              "by signed score (higher is better); CMD: area under |1 - faithfulness|, ranked by absolute score "
              "(lower is better); both on MIB's linear size axis and on a log axis (_log) that sees circuits under "
              "10% of the model. Per-task curves: the curve_*_f_* measurements of each unit (logit difference, "
              "loss, accuracy, KL)." + plot_note)
    return 0


# --- submit --------------------------------------------------------------------------------------


def _add_submit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="validate a results directory for the leaderboard and add it to a board")
    p.add_argument("results", type=Path, help="a `circuitbench run` results directory")
    p.add_argument("--meta", type=Path, required=True, help="submission.json (format in circuitbench/leaderboard)")
    p.add_argument("--board", type=Path, default=Path("leaderboard"), help="the board directory")
    p.add_argument("--check", action="store_true", help="validate only; do not add it to the board")
    p.add_argument("--verify", action="store_true",
                   help="also re-evaluate up to 3 saved circuits on the model (it must load here) and compare")
    p.set_defaults(handler=_cmd_submit)


def _cmd_submit(args: argparse.Namespace) -> int:
    from circuitbench.leaderboard.submit import accept, validate

    report = validate(args.results, args.meta, args.board, args.verify)
    left = (f"; left out {sum(report.left_out.values())} unit(s) of other models or methods "
            f"({', '.join(f'{k}: {n}' for k, n in sorted(report.left_out.items()))})" if report.left_out else "")
    if not report.ok:
        if len(report.problems) == 1:
            print(f"circuitbench: submission refused: {report.problems[0]}", file=sys.stderr)
        else:
            print(f"circuitbench: submission refused, {len(report.problems)} problems:\n  "
                  + "\n  ".join(report.problems), file=sys.stderr)
        return 1
    checked = f", {report.verified} circuit(s) re-evaluated to their stored numbers" if report.verified else ""
    if args.check:
        print(f"valid: {report.units} unit(s){checked}, content hash {report.content_hash[:16]}{left}")
        return 0
    dest = accept(args.results, args.meta, args.board)  # validated above (with --verify when asked)
    print(f"accepted {report.units} unit(s) -> {dest}{left}\n"
          f"Rebuild the site with `circuitbench leaderboard build --board {args.board}`.")
    return 0


# --- leaderboard ---------------------------------------------------------------------------------


def _add_leaderboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="build the static leaderboard site from a board's accepted submissions")
    lsub = p.add_subparsers(dest="leaderboard_command", required=True, metavar="ACTION")
    b = lsub.add_parser("build", help="write HTML, CSS and JavaScript that open from disk (file://)")
    b.add_argument("--board", type=Path, default=Path("leaderboard"),
                   help="the board directory holding submissions/ (default: %(default)s)")
    b.add_argument("--out", type=Path, default=None, help="where the site goes (default: BOARD/site)")
    b.set_defaults(handler=_cmd_leaderboard_build)


def _cmd_leaderboard_build(args: argparse.Namespace) -> int:
    from circuitbench.leaderboard.site import build, load_board

    out = build(args.board, args.out)
    entries = load_board(args.board)
    print(f"built {out} from {len(entries)} submission(s); open {out / 'index.html'} in a browser")
    return 0


# --- circuit -------------------------------------------------------------------------------------


def _add_circuit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("circuit", help="show, re-evaluate or export a saved circuit")
    csub = p.add_subparsers(dest="circuit_command", required=True, metavar="ACTION")
    show = csub.add_parser("show", help="print a saved circuit: kept channels per site, strongest edges")
    show.add_argument("result", type=Path, help="a unit file, RESULTS/MODEL/TASK.METHOD.seedN.parquet")
    show.set_defaults(handler=_cmd_circuit_show)
    ev = csub.add_parser("eval", help="re-evaluate a saved circuit and compare with its stored numbers")
    ev.add_argument("result", type=Path, help="a unit file, RESULTS/MODEL/TASK.METHOD.seedN.parquet")
    ev.add_argument("--split", choices=["train", "test"], default="test")
    ev.add_argument("--device", default=None, help="default: the device the unit ran on")
    ev.add_argument("--format", choices=["table", "json"], default="table")
    ev.set_defaults(handler=_cmd_circuit_eval)
    ex = csub.add_parser("export", help="write a saved circuit in MIB's circuit format (EAP-IG Graph JSON)")
    ex.add_argument("result", type=Path, help="a unit file, RESULTS/MODEL/TASK.METHOD.seedN.parquet")
    ex.add_argument("--format", choices=["mib"], default="mib")
    ex.add_argument("--out", type=Path, required=True, help="output .json file")
    ex.set_defaults(handler=_cmd_circuit_export)
    dr = csub.add_parser("draw", help="draw a saved circuit as SVG: sites as columns, kept channels, weighted edges")
    dr.add_argument("result", type=Path, help="a unit file, RESULTS/MODEL/TASK.METHOD.seedN.parquet")
    dr.add_argument("--out", type=Path, required=True, help="output .svg file")
    dr.add_argument("--max-edges", type=int, default=400, help="draw at most this many, strongest first "
                                                               "(default: %(default)s)")
    dr.set_defaults(handler=_cmd_circuit_draw)


def _cmd_circuit_draw(args: argparse.Namespace) -> int:
    from circuitbench.leaderboard.draw import saved_circuit_svg
    from circuitbench.results.files import atomic_path

    if args.max_edges < 0:
        raise CircuitbenchError(f"--max-edges {args.max_edges}: give zero or a positive number")
    _check_suffix(args.out, (".svg",), "an SVG drawing")
    if not args.result.is_file():
        raise CircuitbenchError(f"{args.result}: no such unit file")
    svg = saved_circuit_svg(args.result, max_edges=args.max_edges, standalone=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(svg + "\n", encoding="utf-8")
    print(f"{args.out}: open it in a browser")
    return 0


def _check_suffix(out: Path, suffixes: tuple[str, ...], what: str) -> None:
    """Refuse an --out whose suffix promises another format than the one written."""
    if Path(out).suffix.lower() not in suffixes:
        raise CircuitbenchError(f"--out {out}: this writes {what}; give a file name ending in "
                                f"{' or '.join(suffixes)}")


def _cmd_circuit_show(args: argparse.Namespace) -> int:
    from circuitbench.runs.saved import load_saved, show

    print(show(load_saved(args.result)), end="")
    return 0


def _cmd_circuit_eval(args: argparse.Namespace) -> int:
    import circuitbench
    from circuitbench.runs.saved import compare_stored, load_saved, reevaluate

    saved = load_saved(args.result)
    u = saved.prov.unit
    model = u.model.name.split("+sae:")[0]
    adapter = circuitbench.load_model(model, device=args.device or saved.prov.device, dtype=u.dtype,
                                      revision=u.model.revision)
    if saved.prov.saes:
        from circuitbench.models.sae import load_saes

        adapter = load_saes(adapter, [s.get("spec", s["path"]) for s in saved.prov.saes])
    fresh = reevaluate(saved, adapter, args.split)
    if args.split != "test":
        _print_table([{"metric": k, "now": v} for k, v in fresh.items()], args.format, floatfmt=".6f")
        return 0
    rows = compare_stored(saved, fresh)
    _print_table(rows, args.format, floatfmt=".6f")
    if args.format == "table":
        same = all(r["equal"] for r in rows)
        print("\nThe saved circuit reproduces its stored numbers exactly." if same else
              "\nSome numbers differ from the stored ones (another device, dtype or torch version?).")
    return 0


def _cmd_circuit_export(args: argparse.Namespace) -> int:
    from circuitbench.runs.saved import export_mib, load_saved

    _check_suffix(args.out, (".json",), "MIB's circuit JSON")
    path = export_mib(load_saved(args.result), args.out)
    print(f"MIB circuit (EAP-IG Graph JSON) -> {path}")
    return 0


# --- tasks ---------------------------------------------------------------------------------------


def _add_tasks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="list, show, export, check and encode the task specs")
    tsub = p.add_subparsers(dest="tasks_command", required=True, metavar="ACTION")

    ls = tsub.add_parser("list", help="one line per task: what it probes, provenance, sizes, check")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls.set_defaults(handler=_cmd_tasks_list)

    show = tsub.add_parser("show", help="print sample pairs of a task")
    show.add_argument("name", help="task name (NAME:inverted for the control)")
    show.add_argument("--split", choices=["train", "test"], default="test")
    show.add_argument("-n", type=int, default=3, help="number of pairs (default 3)")
    show.set_defaults(handler=_cmd_tasks_show)

    ex = tsub.add_parser("export", help="write every example, one row each, as JSON Lines or Parquet")
    ex.add_argument("--format", choices=["jsonl", "parquet"], required=True)
    ex.add_argument("--out", required=True, help="output file, or a folder (DIR/) to write tasks.FORMAT in")
    ex.add_argument("--tasks", nargs="+", default=["all"], help=_TASKS_HELP)
    ex.add_argument("--splits", nargs="+", choices=["train", "test"], default=["train", "test"])
    ex.set_defaults(handler=_cmd_tasks_export)

    ck = tsub.add_parser("check", help="run every example's validity check (compile / exec)")
    ck.add_argument("--tasks", nargs="+", default=["all"], help=_TASKS_HELP)
    ck.add_argument("--format", choices=["table", "json"], default="table")
    ck.set_defaults(handler=_cmd_tasks_check)

    en = tsub.add_parser("encode", help="how many examples a tokenizer keeps, and why it drops any")
    en.add_argument("--tokenizer", required=True,
                    help="a bundled model name (tiny-sparse), a model directory, or a tokenizer.json")
    en.add_argument("--tasks", nargs="+", default=["all"], help=_TASKS_HELP)
    en.add_argument("--split", choices=["train", "test"], default="test")
    en.add_argument("--format", choices=["table", "json"], default="table")
    en.set_defaults(handler=_cmd_tasks_encode)

    sc = tsub.add_parser("schema", help="print the JSON Schema of a task spec")
    sc.set_defaults(handler=_cmd_tasks_schema)


def _cmd_tasks_list(args: argparse.Namespace) -> int:
    from circuitbench.tasks.export import summary_rows
    from circuitbench.tasks.load import list_specs

    _print_table(summary_rows(list_specs()), args.format)
    return 0


def _cmd_tasks_show(args: argparse.Namespace) -> int:
    from circuitbench.tasks.export import format_pair
    from circuitbench.tasks.load import get_task, use_task
    from circuitbench.tasks.pairs import make_pairs

    if args.n < 1:
        raise CircuitbenchError(f"-n {args.n}: give a positive number of pairs to show")
    spec = get_task(use_task(args.name))
    print(f"{spec.name} ({spec.provenance}, task_hash {spec.task_hash}): {spec.probes}")
    print(f"contrast: {spec.contrast.detail}\n")
    for pair in make_pairs(spec, args.split)[: args.n]:
        print(format_pair(pair) + "\n")
    return 0


def _cmd_tasks_export(args: argparse.Namespace) -> int:
    from circuitbench.tasks.export import export_examples, resolve_tasks

    out = Path(args.out)
    if args.out.endswith(("/", os.sep)) or out.is_dir():  # a folder: the file goes inside it
        out = out / f"tasks.{args.format}"
    n = export_examples(out, args.format, resolve_tasks(_spec_names(args.tasks)), args.splits)
    print(f"{n} examples -> {out}")
    return 0


def _cmd_tasks_check(args: argparse.Namespace) -> int:
    from circuitbench.tasks.export import check_rows, resolve_tasks

    rows = check_rows(resolve_tasks(_spec_names(args.tasks)))
    _print_table(rows, args.format)
    return 1 if any(r["failures"] for r in rows) else 0


def _cmd_tasks_encode(args: argparse.Namespace) -> int:
    from circuitbench.integrations.lm_eval_tasks import resolve_tokenizer
    from circuitbench.tasks.export import encode_rows, resolve_tasks

    tok = resolve_tokenizer(args.tokenizer)
    _print_table(encode_rows(resolve_tasks(_spec_names(args.tasks)), tok, args.split), args.format)
    return 0


def _cmd_tasks_schema(args: argparse.Namespace) -> int:
    from circuitbench.tasks.spec import schema_json

    sys.stdout.write(schema_json())
    return 0


# --- report --------------------------------------------------------------------------------------


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="summarise a results directory; compare two models' circuit sizes")
    p.add_argument("--out", type=Path, default=Path("results"), help="results directory of `circuitbench run`")
    p.add_argument("--compare", metavar="SPARSE,DENSE", default=None,
                   help="two model names: circuit sizes side by side and the ratio of geometric-mean edges "
                        "over the tasks both solve")
    p.add_argument("--method", default="learned-mask")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from circuitbench.results.report import collect, compare, headline, side_by_side

    rows = collect(args.out)
    method = _method_name(args.method)
    present = sorted({r["method"] for r in rows})
    if rows and method not in present:
        raise CircuitbenchError(f"--method {args.method}: no unit of that method in {args.out} (it has "
                                f"{', '.join(present)})")
    if args.compare is None:
        table = headline(rows)
        _print_table(table, args.format, floatfmt=".1f")
        if args.format == "table" and any(r["solved"] == 0 for r in table):
            print("\nnan: no task was solved by the full model and pruned to the target for that model and method, "
                  "so there is no circuit size to average; each task's status is in the unit files "
                  "(circuitbench circuit show FILE.parquet) and in `circuitbench run`'s table.")
        return 0
    models = [m.strip() for m in args.compare.split(",")]
    if len(models) != 2:
        raise CircuitbenchError(f"--compare {args.compare}: name exactly two models, e.g. tiny-sparse,tiny-dense")
    c = compare(rows, models[0], models[1], method, args.seed)
    if args.format == "json":
        print(json.dumps({"a": c.a, "b": c.b, "tasks": list(c.tasks), "geomean_edges_a": c.geomean_edges_a,
                          "geomean_edges_b": c.geomean_edges_b, "edge_ratio": c.edge_ratio}))
        return 0
    _print_table(side_by_side(rows, models, method, args.seed), "table")
    if not c.tasks:
        print(f"\nNo task is solved (and pruned to the target) by both {c.a} and {c.b}: no ratio to report.")
    else:
        print(f"\nOver the {len(c.tasks)} tasks both solve: geometric-mean edges {c.a} {c.geomean_edges_a:.1f}, "
              f"{c.b} {c.geomean_edges_b:.1f}; {c.b} / {c.a} = {c.edge_ratio:.2f}.")
    return 0


# --- export --------------------------------------------------------------------------------------


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the tasks for other harnesses (lm-evaluation-harness)")
    esub = p.add_subparsers(dest="export_command", required=True, metavar="TARGET")
    lm = esub.add_parser(
        "lm-eval",
        help="lm-eval task configs + local data + group `circuitbench`, for one model's tokenizer",
        description="Write one lm-eval multiple-choice task per circuitbench task (YAML + JSON Lines) and a "
        "group `circuitbench`; then `lm_eval --include_path OUT --tasks circuitbench ...` runs offline. "
        "circuitbench scores the first completion token, which depends on the tokenizer, so the export is "
        "made for the tokenizer of the model you will evaluate.",
    )
    lm.add_argument("--out", type=Path, required=True, help="output directory")
    lm.add_argument("--tokenizer", required=True,
                    help="the evaluated model's tokenizer: a bundled model name (tiny-sparse), a model "
                    "directory, or a tokenizer.json")
    lm.add_argument("--tasks", nargs="+", default=["all"], help=_TASKS_HELP)
    lm.add_argument("--split", choices=["train", "test"], default="test")
    lm.add_argument("--format", choices=["table", "json"], default="table")
    lm.set_defaults(handler=_cmd_export_lm_eval)


def _cmd_export_lm_eval(args: argparse.Namespace) -> int:
    from circuitbench.integrations.lm_eval_tasks import export_lm_eval, resolve_tokenizer
    from circuitbench.tasks.export import resolve_tasks

    specs = resolve_tasks(_spec_names(args.tasks))
    exported = export_lm_eval(args.out, specs, resolve_tokenizer(args.tokenizer), args.split)
    _print_table([t.report_row() for t in exported], args.format)
    if args.format == "table":
        n = sum(1 for t in exported if t.docs)
        print(f"\n{n} task(s) and group `circuitbench` -> {args.out}; run them with an lm-eval model,\n"
              f"  lm_eval --model hf --model_args pretrained=MODEL_DIR --device cpu "
              f"--include_path {args.out} --tasks circuitbench\n"
              "or with circuitbench's (anything circuitbench.load_model loads),\n"
              "  python -m circuitbench.integrations.lm_eval --model circuitbench --model_args model=MODEL "
              f"--device cpu --batch_size 64 --include_path {args.out} --tasks circuitbench")
    return 0


# --- entry point ---------------------------------------------------------------------------------

_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_inspect,
    _add_run,
    _add_sweep,
    _add_methods,
    _add_compare,
    _add_leaderboard,
    _add_circuit,
    _add_submit,
    _add_report,
    _add_train,
    _add_val_loss,
    _add_tasks,
    _add_export,
]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("circuitbench")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows every option's default (unless the help already says it, or there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text or default is None or default is False
                or default == argparse.SUPPRESS or isinstance(action, argparse._HelpAction | argparse._VersionAction)):
            return text.strip()
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})".strip()


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows defaults, for every subcommand too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """As argparse's; an option without help still gets a help line, to show its default."""
        default = kwargs.get("default")
        if args and str(args[0]).startswith("-") and kwargs.get("help") is None and default is not None \
                and default is not False:
            kwargs["help"] = "(default: %(default)s)"  # argparse prints no line at all for an option without help
        return super().add_argument(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand registered."""
    parser = _Parser(
        prog="circuitbench",
        description="Circuit-size benchmark for mechanistic interpretability.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("--version", action="version", version=f"circuitbench {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user-fixable errors print one message and exit 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except CircuitbenchError as err:
        print(f"circuitbench: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("circuitbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # a full disk, a folder that cannot be written: one line, never a traceback
        from circuitbench.results.files import os_error_reason

        where = f"{err.filename}: " if err.filename else ""
        print(f"circuitbench: error: {where}{os_error_reason(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
