"""`run`, `sweep`, `compare` and `methods`: finding and measuring circuits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from circuitbench.cli.common import (
    SEEDS_HELP,
    TASKS_HELP,
    Subparsers,
    add_hub_flags,
    add_setting_flags,
    check_address,
    method_args,
    method_name,
    print_table,
    seed_list,
    seed_value,
    set_threads,
    setting_values,
    task_names,
)
from circuitbench.errors import CircuitbenchError

_EXECUTOR_HELP = "where units run: here, one after another, or as Ray tasks (pip install 'circuitbench[ray]')"


def add_run(sub: Subparsers) -> None:
    """Register `circuitbench run`."""
    from circuitbench.results.unit import UnitSettings
    from circuitbench.runs.config import RunOptions

    p = sub.add_parser("run", help="find and measure the smallest circuit of every task")
    p.add_argument("--model", default="tiny-sparse",
                   help="bundled name, model directory, Hub id (owner/name), or FILE.py:FUNCTION / module:FUNCTION "
                        "naming a function that builds a model (a TransformerLens HookedTransformer, an nnsight "
                        "LanguageModel, ...)")
    add_hub_flags(p)
    p.add_argument("--sae", default=None, metavar="SAE[,SAE...]",
                   help="splice SAEs into the model and prune their latents: SAELens-format directories, Hub ids "
                        "(owner/repo[/folder]) or SAELens release ids (RELEASE/ID, with sae-lens installed)")
    p.add_argument("--tasks", nargs="+", default=["all"], help=TASKS_HELP)
    p.add_argument("--method", default="learned-mask",
                   help="learned-mask, eap, eap-ig, activation-patching, magnitude or random, a method an installed "
                        "package registers, or FILE.py:CLASS / module:CLASS (`circuitbench methods` lists them with "
                        "their hyperparameters; - or _) (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="learned-mask optimizer steps (default 400)")
    p.add_argument("--patience", type=int, default=None,
                   help="learned-mask: stop once the set of active nodes is unchanged for N steps (default: off)")
    p.add_argument("--batch-pairs", type=int, default=None,
                   help="learned-mask: pairs per step (default 32; the paper's 64 is the slow path)")
    p.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default=None,
                   help="learned-mask matrix products: bfloat16 autocast where the hardware has it (auto, the "
                        "default), or float32 (the slow path); evaluation is always in the model's --dtype")
    p.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any hyperparameter of the method (repeatable), e.g. --method-arg length_groups=1; "
                        "see `circuitbench methods`")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help=_EXECUTOR_HELP)
    p.add_argument("--address", default=None, help="with --executor ray: the Ray cluster (default: start one here)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (recorded in every unit; circuits can differ slightly across "
                        "thread counts)")
    add_setting_flags(p, UnitSettings)
    p.add_argument("--seed", type=int, default=0, help="seeds the method and the search subset")
    p.add_argument("--seeds", default=None, metavar="S[,S...]", help=SEEDS_HELP)
    add_setting_flags(p, RunOptions, ("device", "dtype", "out", "eval_batch"))
    p.add_argument("--force", action="store_true", help="recompute units already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from circuitbench.results.unit import UnitSettings
    from circuitbench.runs.config import RunOptions
    from circuitbench.runs.executors import make_executor
    from circuitbench.runs.runner import RunConfig, run

    kwargs = {**method_args(args.method_arg),
              **{k: v for k, v in (("steps", args.steps), ("patience", args.patience),
                                   ("batch_pairs", args.batch_pairs), ("precision", args.precision))
                 if v is not None}}
    set_threads(args.threads)
    cfg = RunConfig(model=args.model, saes=args.sae.split(",") if args.sae else [], tasks=task_names(args.tasks),
                    method=method_name(args.method), method_kwargs=kwargs, seed=seed_value(args.seed), force=args.force,
                    show_progress=not args.quiet, **setting_values(args, UnitSettings),
                    **setting_values(args, RunOptions))
    check_address(args)
    seeds = seed_list(args.seeds)
    summaries = run(cfg, executor=make_executor(args.executor, args.address), seeds=seeds)
    # the summary's own column names (the Parquet and the code use the same ones)
    cols = (["task", "status", "full_accuracy", "nodes", "edges", "control", "sufficiency_loss", "necessity_loss",
             "faithfulness"] if args.format == "table" else  # the control as a ratio of sizes (results.status)
            ["task", "status", "full_accuracy", "nodes", "edges", "sufficiency_loss", "necessity_loss", "faithfulness",
             "control_edges" if cfg.level == "edges" else "control_nodes", "control_met_target"])
    if seeds is not None:
        cols.insert(1, "seed")
    from circuitbench.results.report import table_rows

    print_table(table_rows(summaries, cols, args.format), args.format, floatfmt=".3f")
    if args.format == "table":
        first = [s for s in summaries if s.get("seed") == (seeds or [args.seed])[0]]
        _run_notes(first, args.min_accuracy, args.out)
        if seeds is not None and len(seeds) > 1:
            print_seed_table(summaries, args.out)
    return 0


def print_seed_table(summaries: list[dict[str, Any]], out: Path) -> None:
    """The spread over seeds and the circuits' overlap, for the units just run (`circuitbench.results.seeds`)."""
    from circuitbench.results.report import collect
    from circuitbench.results.seeds import seed_table

    keys = {(s["task"], s["method"], s["level"], s["seed"]) for s in summaries}
    rows = [r for r in collect(out) if (r["task"], r["method"], r["level"], r["seed"]) in keys]
    table = seed_table(rows, out)
    if not table:
        print("\nNo task was pruned with two seeds or more: no spread to report.")
        return
    print("\nOver seeds (mean and standard deviation; node_jaccard and edge_jaccard: the mean pairwise overlap of "
          "the circuits' nodes and edges, 1 = the same circuit every time):")
    print_table(table, "table", floatfmt=".3f")


def _run_notes(summaries: list[dict[str, Any]], min_accuracy: float, out: Path) -> None:
    from circuitbench.runs.runner import geometric_means

    g = geometric_means(summaries)
    chance = min_accuracy <= 0.5
    what = ("pruned to a circuit that meets the target held out" if chance else
            "solved by the full model and pruned to a circuit that meets the target held out")
    head = f"\n{int(g['solved'])}/{int(g['tasks'])} tasks {what}"
    empty = [s["task"] for s in summaries if s.get("status") == "solved" and s.get("nodes") == 0]
    if g["solved"] and len(empty) == g["solved"]:  # a mean of sizes of nothing would read as 1 node
        print(f"{head}; every one of them is an empty circuit (0 nodes, 0 edges): see the note on empty "
              "circuits below.")
    elif g["solved"]:
        counted = f" ({len(empty)} empty circuit(s) counted as 1 node, 1 edge)" if empty else ""
        print(f"{head}; geometric mean over them: {g['geomean_nodes']:.1f} nodes, {g['geomean_edges']:.1f} edges"
              f"{counted}.")
    else:
        print(f"{head}: no circuit to report. Tasks marked unsolved have full-model accuracy below "
              f"--min-accuracy {min_accuracy}; the model must solve a task before it can be pruned.")
    report_train_only(summaries)
    report_dropped(summaries)
    unsolved = [s["task"] for s in summaries if s.get("status") == "unsolved"]
    if unsolved and g["solved"]:
        print(f"Not solved by the full model (accuracy < {min_accuracy}), so not pruned: {', '.join(unsolved)}.")
    flag_labels(summaries, min_accuracy)
    print(f"Results: {out}/ (per task: Parquet measurements, circuit .safetensors, edges .parquet; "
          "plus summary.parquet). See one: circuitbench circuit show FILE.parquet")


def flag_labels(summaries: list[dict[str, Any]], min_accuracy: float) -> None:
    """Say where a label above would claim more than was measured (`circuitbench.results.report.label_notes`)."""
    from circuitbench.results.report import label_notes

    for note in label_notes(summaries, min_accuracy):
        print(note)


def report_train_only(summaries: list[dict[str, Any]]) -> None:
    """Name the circuits that met the target on the search pairs only (status `train_only`), with their numbers."""
    from circuitbench.results.status import HELD_OUT_TOLERANCE

    missed = [s for s in summaries if s.get("status") == "train_only"]
    if missed:
        print(f"Met the target on the search pairs but not on the held-out test pairs (status train_only, not "
              f"counted above; the rule: test sufficiency loss at most {HELD_OUT_TOLERANCE:g} x the target): "
              + ", ".join(f"{s['task']} (test loss {s['sufficiency_loss']:.3f}, test target "
                          f"{s['test_target_loss']:.3f})" for s in missed) + ".")


def report_dropped(summaries: list[dict[str, Any]]) -> None:
    """Say which tasks had no example left for this tokenizer (status `no_examples`), so were not measured."""
    empty = [s["task"] for s in summaries if s.get("status") == "no_examples"]
    if empty:
        print(f"No example survives this tokenizer's boundary checks (both answers share a first token, or an "
              f"answer does not start a token), so not measured: {', '.join(empty)}. See why with "
              "`circuitbench tasks encode --tokenizer TOKENIZER --tasks ...`.")


def add_sweep(sub: Subparsers) -> None:
    """Register `circuitbench sweep`."""
    p = sub.add_parser(
        "sweep", help="run a grid of models x tasks x methods x seeds from a YAML file",
        description="Run every (model, task, method, seed) of a sweep file as units. The file lists models, "
                    "tasks, methods (a name, or {name: NAME, HYPERPARAMETER: VALUE}) and seeds, plus any single "
                    "run setting (out, ablation, target_loss, min_accuracy, control, ...). Finished units are "
                    "skipped, so a rerun resumes; a failing unit is retried once, then reported.")
    p.add_argument("file", type=Path, help="the sweep YAML file")
    p.add_argument("--out", type=Path, default=None, help="results directory (default: the file's `out`)")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help=_EXECUTOR_HELP)
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

    check_address(args)
    if args.num_gpus is not None and args.executor != "ray":  # a flag that would change nothing
        raise CircuitbenchError(f"--num-gpus {args.num_gpus}: GPUs per unit are Ray's to schedule; add --executor "
                                "ray (the local executor runs one unit at a time on --device)")
    spec = load_sweep(args.file, args.out)
    set_threads(args.threads)
    num_gpus = args.num_gpus
    if num_gpus is None:
        import torch

        num_gpus = 1.0 if torch.cuda.is_available() and spec.device in ("auto", "cuda") else 0.0
    rows = sweep(spec, make_executor(args.executor, args.address, num_gpus, fail_fast=False), args.force,
                 not args.quiet, where=str(args.file))
    cols = ["model", "task", "method", "level", "seed", "status", "nodes", "edges", "faithfulness", "cpr_log",
            "control_nodes"]
    from circuitbench.results.report import table_rows

    print_table(table_rows(rows, cols, args.format), args.format, floatfmt=".3f")
    if args.format == "table":
        print(f"\n{len(rows)} units in {spec.out}/ (summary.parquet covers every unit there); "
              "`circuitbench report` compares them.")
    return 0


def add_methods(sub: Subparsers) -> None:
    """Register `circuitbench methods`."""
    p = sub.add_parser("methods", help="list the circuit-finding methods and their hyperparameters (defaults)")
    p.set_defaults(handler=_cmd_methods)


def _cmd_methods(args: argparse.Namespace) -> int:
    from circuitbench.circuits.methods import method_rows

    print_table(method_rows(), "table")
    print("\nSet any of them with `circuitbench run --method NAME --method-arg KEY=VALUE`.")
    return 0


def add_compare(sub: Subparsers) -> None:
    """Register `circuitbench compare`."""
    from circuitbench.results.unit import UnitSettings

    p = sub.add_parser("compare", help="run several methods on the same tasks and compare their faithfulness curves")
    p.add_argument("--methods", default="learned-mask,eap,eap-ig,magnitude,random",
                   help="comma-separated method names (registry: learned_mask, eap, eap_ig, magnitude, "
                        "activation_patching, random)")
    p.add_argument("--model", default="tiny-sparse", help="bundled name, model directory or Hub id")
    p.add_argument("--tasks", nargs="+", default=["all"], help=TASKS_HELP)
    add_setting_flags(p, UnitSettings)
    p.add_argument("--steps", type=int, default=None, help="learned-mask optimizer steps")
    p.add_argument("--method-arg", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a hyperparameter of one method (repeatable), e.g. --method-arg "
                        "activation_patching.max_examples=16")
    p.add_argument("--seed", type=int, default=0, help="seeds the methods and the search subset")
    p.add_argument("--seeds", default=None, metavar="S[,S...]", help=SEEDS_HELP)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", type=Path, default=Path("results"), help="results directory (shared with run)")
    p.add_argument("--force", action="store_true", help="recompute units already in --out")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=_cmd_compare)


def per_method_args(items: list[str], methods: list[str]) -> dict[str, dict[str, Any]]:
    """`--method-arg METHOD.KEY=VALUE` flags, by method (each checked against the methods compared)."""
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for item in items:
        head, sep, _ = item.partition("=")
        method, dot, key = head.partition(".")
        method = method_name(method)
        if not sep or not dot or not key:
            raise CircuitbenchError(f"--method-arg {item}: write METHOD.KEY=VALUE, e.g. --method-arg "
                                    "activation_patching.max_examples=16")
        if method not in out:
            raise CircuitbenchError(f"--method-arg {item}: {method} is not one of --methods ({', '.join(methods)})")
        out[method].update(method_args([item.partition(".")[2]]))
    return out


def _cmd_compare(args: argparse.Namespace) -> int:
    from circuitbench.circuits.methods import get_method, hyperparameter_names
    from circuitbench.results.unit import UnitSettings
    from circuitbench.runs.compare import compare_methods
    from circuitbench.runs.config import RunConfig

    methods = [method_name(m) for m in args.methods.split(",") if m.strip()]
    per_method = per_method_args(args.method_arg, methods)
    takers = [m for m in methods if "steps" in hyperparameter_names(m)]
    if args.steps is not None and not takers:  # a flag that would change nothing is an error, not ignored
        raise CircuitbenchError(f"--steps {args.steps}: none of --methods {','.join(methods)} takes steps "
                                "(learned_mask and eap_ig do); drop --steps or add such a method")
    for m in methods:
        if args.steps is not None and m in takers:
            per_method[m].setdefault("steps", args.steps)
        get_method(m, **per_method[m])  # every name and hyperparameter checked before any compute
    set_threads(args.threads)
    base = RunConfig(model=args.model, tasks=task_names(args.tasks), seed=seed_value(args.seed), device=args.device,
                     out=args.out, force=args.force, show_progress=not args.quiet, **setting_values(args, UnitSettings))
    seeds = seed_list(args.seeds)
    c = compare_methods(base, per_method, seeds=seeds)
    if args.format == "json":
        print(json.dumps({"per_task": c.per_task, "methods": c.methods, "seeds": c.seeds}, indent=2, default=str))
        return 0
    from circuitbench.results.report import table_rows

    print_table(table_rows(c.per_task, [k for k in c.per_task[0] if not k.endswith(("_lo", "_hi"))])
                if c.per_task else [], "table", floatfmt=".3f")
    print()
    print_table(c.methods, "table", floatfmt=".3f")
    flag_labels([r for r in c.rows if r["model"] == args.model and r["seed"] == args.seed], args.min_accuracy)
    n = c.methods[0]["tasks_compared"] if c.methods else 0
    unsolved = c.not_pruned(args.model, args.seed)
    note = (f" Not pruned, because the full model does not solve them (below --min-accuracy "
            f"{args.min_accuracy}): {', '.join(unsolved)}." if unsolved else "")
    plot_note = f"\nCurves: {', '.join(map(str, c.plots))}" if c.plots else f"\nNo plot: {c.plot_error}"
    level = "" if args.level == "nodes" else " Edge level: circuits keep edges; sizes are fractions of its edges."
    print("\nFirst table: every method on every pruned task; nodes and edges of its smallest circuit at the "
          "target loss, wall_s the unit's seconds. Second: means over the "
          f"{n} task(s) every method pruned.{note} CPR: area under faithfulness over circuit size, {args.level} "
          "ranked by signed score (higher is better); CMD: area under |1 - faithfulness|, ranked by absolute score "
          "(lower is better); both on MIB's linear size axis and on a log axis (_log) that sees circuits under "
          "10% of the model. Per-task curves: the curve_*_f_* measurements of each unit (logit difference, "
          "loss, accuracy, KL)." + level + plot_note)
    if c.seeds:
        print(f"\nThe tables are of seed {seeds[0] if seeds else args.seed}. Over seeds (mean and standard deviation; "
              "node_jaccard, edge_jaccard: the mean pairwise overlap of the circuits):")
        print_table(c.seeds, "table", floatfmt=".3f")
    return 0
