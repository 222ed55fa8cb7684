"""`tasks list | show | export | check | encode | schema` and `export lm-eval`: the task specs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from circuitbench.cli.common import (
    TASKS_HELP,
    Subparsers,
    print_table,
    spec_names,
)
from circuitbench.errors import CircuitbenchError


def add_tasks(sub: Subparsers) -> None:
    """Register `circuitbench tasks`."""
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
    ex.add_argument("--tasks", nargs="+", default=["all"], help=TASKS_HELP)
    ex.add_argument("--splits", nargs="+", choices=["train", "test"], default=["train", "test"])
    ex.set_defaults(handler=_cmd_tasks_export)

    ck = tsub.add_parser("check", help="run every example's validity check (compile / exec)")
    ck.add_argument("--tasks", nargs="+", default=["all"], help=TASKS_HELP)
    ck.add_argument("--format", choices=["table", "json"], default="table")
    ck.set_defaults(handler=_cmd_tasks_check)

    en = tsub.add_parser("encode", help="how many examples a tokenizer keeps, and why it drops any")
    en.add_argument("--tokenizer", required=True,
                    help="a bundled model name (tiny-sparse), a model directory, or a tokenizer.json")
    en.add_argument("--tasks", nargs="+", default=["all"], help=TASKS_HELP)
    en.add_argument("--split", choices=["train", "test"], default="test")
    en.add_argument("--format", choices=["table", "json"], default="table")
    en.set_defaults(handler=_cmd_tasks_encode)

    sc = tsub.add_parser("schema", help="print the JSON Schema of a task spec")
    sc.set_defaults(handler=_cmd_tasks_schema)


def _cmd_tasks_list(args: argparse.Namespace) -> int:
    from circuitbench.tasks.export import summary_rows
    from circuitbench.tasks.load import list_specs

    print_table(summary_rows(list_specs()), args.format)
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
    from circuitbench.tasks.export import export_examples, load_specs

    out = Path(args.out)
    if args.out.endswith(("/", os.sep)) or out.is_dir():  # a folder: the file goes inside it
        out = out / f"tasks.{args.format}"
    n = export_examples(out, args.format, load_specs(spec_names(args.tasks)), args.splits)
    print(f"{n} examples -> {out}")
    return 0


def _cmd_tasks_check(args: argparse.Namespace) -> int:
    from circuitbench.tasks.export import check_rows, load_specs

    rows = check_rows(load_specs(spec_names(args.tasks)))
    print_table(rows, args.format)
    return 1 if any(r["failures"] for r in rows) else 0


def _cmd_tasks_encode(args: argparse.Namespace) -> int:
    from circuitbench.integrations.lm_eval_tasks import resolve_tokenizer
    from circuitbench.tasks.export import encode_rows, load_specs

    tok = resolve_tokenizer(args.tokenizer)
    print_table(encode_rows(load_specs(spec_names(args.tasks)), tok, args.split), args.format)
    return 0


def _cmd_tasks_schema(args: argparse.Namespace) -> int:
    from circuitbench.tasks.spec import schema_json

    sys.stdout.write(schema_json())
    return 0


def add_export(sub: Subparsers) -> None:
    """Register `circuitbench export`."""
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
    lm.add_argument("--tasks", nargs="+", default=["all"], help=TASKS_HELP)
    lm.add_argument("--split", choices=["train", "test"], default="test")
    lm.add_argument("--format", choices=["table", "json"], default="table")
    lm.set_defaults(handler=_cmd_export_lm_eval)


def _cmd_export_lm_eval(args: argparse.Namespace) -> int:
    from circuitbench.integrations.lm_eval_tasks import export_lm_eval, resolve_tokenizer
    from circuitbench.tasks.export import load_specs

    specs = load_specs(spec_names(args.tasks))
    exported = export_lm_eval(args.out, specs, resolve_tokenizer(args.tokenizer), args.split)
    print_table([t.report_row() for t in exported], args.format)
    if args.format == "table":
        n = sum(1 for t in exported if t.docs)
        print(f"\n{n} task(s) and group `circuitbench` -> {args.out}; run them with an lm-eval model,\n"
              f"  lm_eval --model hf --model_args pretrained=MODEL_DIR --device cpu "
              f"--include_path {args.out} --tasks circuitbench\n"
              "or with circuitbench's (anything circuitbench.load_model loads),\n"
              "  python -m circuitbench.integrations.lm_eval --model circuitbench --model_args model=MODEL "
              f"--device cpu --batch_size 64 --include_path {args.out} --tasks circuitbench")
    return 0

