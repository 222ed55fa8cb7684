"""`circuit show | eval | export | draw`: a saved circuit, printed, re-evaluated, exported, drawn."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from circuitbench.cli.common import (
    Subparsers,
    check_suffix,
    print_table,
)
from circuitbench.errors import CircuitbenchError
from circuitbench.results.status import PRUNED


def add_circuit(sub: Subparsers) -> None:
    """Register `circuitbench circuit`."""
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
    ev.set_defaults(handler=_device_checked(_cmd_circuit_eval))
    ex = csub.add_parser("export", help="write a saved circuit for other tools: MIB's circuit format, circuit-tracer's "
                                        "graph JSON, or node and edge tables as Parquet")
    ex.add_argument("result", type=Path, help="a unit file, RESULTS/MODEL/TASK.METHOD.seedN.parquet")
    ex.add_argument("--format", choices=["mib", "graph-json", "parquet"], default="mib",
                    help="mib: EAP-IG Graph JSON (.json); graph-json: circuit-tracer's graph of one test example "
                         "(.json); parquet: a folder with nodes.parquet and edges.parquet (default: %(default)s)")
    ex.add_argument("--out", type=Path, required=True, help="mib: a .json file; graph-json: a folder (it gets "
                    "SLUG.json and graph-metadata.json, as circuit-tracer serves) or a .json file; parquet: a folder")
    ex.add_argument("--example", type=int, default=None, help="graph-json: which test example (default: 0)")
    ex.add_argument("--device", default=None, help="graph-json, parquet: where to measure the nodes when the "
                                                   "unit has no node table yet (default: the unit's device)")
    ex.add_argument("--force", action="store_true", help="replace files already at --out")
    ex.set_defaults(handler=_device_checked(_cmd_circuit_export))
    xp = csub.add_parser("explore", help="write an interactive page that shows what each node of a saved circuit does")
    xp.add_argument("result", type=Path, help="a unit file, RESULTS/MODEL/TASK.METHOD.seedN.parquet")
    xp.add_argument("--out", type=Path, required=True, help="output folder (the page is TASK.METHOD.seedN.html)")
    xp.add_argument("--device", default=None, help="default: the device the unit ran on")
    xp.add_argument("--recompute", action="store_true",
                    help="measure the nodes again even when the unit's node table is current")
    xp.set_defaults(handler=_device_checked(_cmd_circuit_explore))
    im = csub.add_parser("import", help="bring in a circuit found by another tool (MIB / EAP-IG Graph JSON) and "
                                        "measure it on a task as a saved unit")
    im.add_argument("file", type=Path, help="the circuit file (.json)")
    im.add_argument("--format", choices=["mib"], default="mib", help="mib: EAP-IG / MIB Graph JSON (default)")
    im.add_argument("--model", required=True, help="the model the circuit was found on (bundled name, folder, Hub id)")
    im.add_argument("--task", required=True, help="the task to measure it on")
    im.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: %(default)s)")
    im.add_argument("--ablation", choices=["mean", "task-mean", "zero", "counterfactual"], default="mean",
                    help="what pruned nodes or edges take (default: %(default)s)")
    im.add_argument("--percent", type=float, default=None,
                    help="keep the top P %% of this model's edges by the file's scores instead of its in_graph marks "
                         "(MIB's importance-score files)")
    im.add_argument("--device", default="cpu")
    im.add_argument("--force", action="store_true", help="replace a unit already imported there")
    im.set_defaults(handler=_device_checked(_cmd_circuit_import))
    bk = csub.add_parser("backup", help="prune again with a saved circuit's nodes (or edges) excluded: is there a "
                                        "second circuit that meets the target, and how large?")
    bk.add_argument("result", type=Path, help="a unit file, RESULTS/MODEL/TASK.METHOD.seedN.parquet")
    bk.add_argument("--device", default=None, help="default: the device the unit ran on")
    bk.add_argument("--format", choices=["table", "json"], default="table")
    bk.set_defaults(handler=_device_checked(_cmd_circuit_backup))
    dr = csub.add_parser("draw", help="draw a saved circuit as SVG: sites as columns, kept channels, weighted edges")
    dr.add_argument("result", type=Path, help="a unit file, RESULTS/MODEL/TASK.METHOD.seedN.parquet")
    dr.add_argument("--out", type=Path, required=True, help="output .svg file")
    dr.add_argument("--max-edges", type=int, default=400, help="draw at most this many, strongest first "
                                                               "(default: %(default)s)")
    dr.set_defaults(handler=_cmd_circuit_draw)


def _device_checked(handler: Any) -> Any:
    """The handler, after `--device` is checked as `run` checks it (before anything is read or removed)."""
    from circuitbench.runs.config import check_device

    def checked(args: argparse.Namespace) -> int:
        check_device(args.device)
        return int(handler(args))

    return checked


def _cmd_circuit_draw(args: argparse.Namespace) -> int:
    from circuitbench.leaderboard.draw import saved_circuit_svg
    from circuitbench.results.files import atomic_path

    if args.max_edges < 0:
        raise CircuitbenchError(f"--max-edges {args.max_edges}: give zero or a positive number")
    check_suffix(args.out, (".svg",), "an SVG drawing")
    if not args.result.is_file():
        raise CircuitbenchError(f"{args.result}: no such unit file")
    svg = saved_circuit_svg(args.result, max_edges=args.max_edges, standalone=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(svg + "\n", encoding="utf-8")
    print(f"{args.out}: open it in a browser")
    return 0


def _cmd_circuit_explore(args: argparse.Namespace) -> int:
    from circuitbench.leaderboard.explore import write_explorer
    from circuitbench.results.nodes import node_table_path
    from circuitbench.runs.saved import load_saved, load_unit_model

    saved = load_saved(args.result)
    if args.out.exists() and not args.out.is_dir():
        raise CircuitbenchError(f"--out {args.out}: a file is in the way; give a folder")
    models: list = []

    def adapter_of():  # loaded only when the node table must be measured
        models.append(load_unit_model(saved, args.device))
        return models[-1]

    # --recompute measures again and replaces the stored table only once the new one is complete
    path, why = write_explorer(saved, args.out, adapter_of, show_progress=True, recompute=args.recompute)
    if why is not None:
        print(f"warning: the nodes were not measured ({why}); the page shows the circuit's structure and scores only")
    else:
        from circuitbench.results.nodes import read_node_table, strongest_nodes

        table = read_node_table(node_table_path(saved.path))
        print(f"The nodes whose ablation costs the circuit most (task loss on the first {table.meta['ablation_rows']} "
              f"test examples: {table.meta['circuit_loss_ablation_rows']:.3f} with every node):")
        print_table(strongest_nodes(table, 10), "table", floatfmt=".3f")
    print(f"{path}: open it in a browser" + ("" if why else f" (node table: {node_table_path(saved.path)})"))
    return 0


def _cmd_circuit_show(args: argparse.Namespace) -> int:
    from circuitbench.runs.saved import load_saved, show

    print(show(load_saved(args.result)), end="")
    return 0


def _cmd_circuit_eval(args: argparse.Namespace) -> int:
    from circuitbench.runs.saved import compare_stored, load_saved, load_unit_model, reevaluate

    saved = load_saved(args.result)
    adapter = load_unit_model(saved, args.device)
    fresh = reevaluate(saved, adapter, args.split)
    if args.split != "test":
        print_table([{"metric": k, "now": v} for k, v in fresh.items()], args.format, floatfmt=".6f")
        return 0
    rows = compare_stored(saved, fresh)
    print_table(rows, args.format, floatfmt=".6f")
    if args.format == "table":
        import torch

        from circuitbench.hardware import cpu_kind
        from circuitbench.results.reproduce import verdict

        now = {"cpu_kind": cpu_kind(), "threads": torch.get_num_threads(), "device": str(adapter.device),
               "torch_version": torch.__version__}
        print("\n" + verdict(saved.prov, now, [(r["now"], r["stored"]) for r in rows]))
    return 0


def _cmd_circuit_import(args: argparse.Namespace) -> int:
    import circuitbench
    from circuitbench.runs.imported import import_mib
    from circuitbench.tasks.load import get_task

    check_suffix(args.file, (".json",), "an MIB / EAP-IG Graph JSON file")
    if not args.file.is_file():
        raise CircuitbenchError(f"{args.file}: no such file")
    get_task(args.task)  # an unknown task is a one-line error before the model loads
    adapter = circuitbench.load_model(args.model, device=args.device)
    path, result = import_mib(args.file, adapter, args.model, args.task, args.out, args.ablation, args.percent,
                              args.force)
    cols = ["task", "status", "nodes", "edges", "sufficiency_loss", "necessity_loss", "faithfulness"]
    print_table([{c: result.summary().get(c) for c in cols}], "table", floatfmt=".3f")
    print(f"\n{result.unit.level[:-1]}-level circuit imported -> {path}\n(`circuitbench circuit eval {path}` "
          "measures it again; `circuit draw` draws it)")
    return 0


def _cmd_circuit_backup(args: argparse.Namespace) -> int:
    from circuitbench.runs.backup import backup
    from circuitbench.runs.saved import load_saved, load_unit_model

    saved = load_saved(args.result)
    if saved.summary.get("status") not in PRUNED:
        raise CircuitbenchError(f"{args.result}: status {saved.summary.get('status')}, no circuit to exclude")
    row = backup(saved, load_unit_model(saved, args.device), show_progress=args.format == "table")
    print_table([row], args.format, floatfmt=".3f")
    if args.format == "table":
        what = "edges" if row["level"] == "edges" else "nodes"
        first = f"\nWithout the first circuit's {row['first_' + what]} {what}, a second circuit "
        print(first + {
            "solved": f"meets the target with {row['backup_' + what]} {what}, held out too: the first is not the "
                      "only one.",
            "train_only": f"meets the target on the search pairs with {row['backup_' + what]} {what} but not on "
                          "the held-out test pairs: no second circuit that holds was found.",
            "target_missed": "does not meet the target: the task goes through the first circuit's nodes.",
        }[row["backup_status"]])
    return 0


def _check_export_out(args: argparse.Namespace, graph: Path | None) -> None:
    """An export never replaces a file without --force.

    (It never writes over the unit it reads: those are .parquet and .safetensors files, and --out is a .json
    file or a folder for the Parquet tables.)
    """
    there = ([args.out / n for n in ("nodes.parquet", "edges.parquet")] if args.format == "parquet" else
             [graph] if graph is not None else [args.out])
    there = [p for p in there if p.exists()]
    if there and not args.force:
        raise CircuitbenchError(f"--out {args.out}: {', '.join(str(p) for p in there)} already there; pass --force to "
                                "replace it, or choose another --out")


def _cmd_circuit_export(args: argparse.Namespace) -> int:
    from circuitbench.runs.saved import (
        export_graph_json,
        export_mib,
        export_parquet,
        graph_json_path,
        load_saved,
        load_unit_model,
    )

    if args.example is not None and args.format != "graph-json":  # a flag that would change nothing
        raise CircuitbenchError(f"--example {args.example}: only --format graph-json draws one test example; "
                                f"--format {args.format} exports the whole circuit. Drop --example")
    args.example = 0 if args.example is None else args.example
    if args.format == "mib":  # the flags first: a wrong name costs no loading
        check_suffix(args.out, (".json",), "MIB's circuit JSON")
    elif args.format == "graph-json" and args.out.suffix:  # a folder (SLUG.json and its listing) or a .json file
        check_suffix(args.out, (".json",), "circuit-tracer's graph JSON (or give a folder)")
    elif args.out.exists() and not args.out.is_dir():
        raise CircuitbenchError(f"--out {args.out}: a file is in the way; give a folder for the Parquet tables")
    saved = load_saved(args.result)
    _check_export_out(args, graph_json_path(saved, args.example, args.out) if args.format == "graph-json" else None)
    if args.format == "mib":
        path = export_mib(saved, args.out, lambda: load_unit_model(saved, args.device))  # loaded for >10,000 edges
        print(f"MIB circuit (EAP-IG Graph JSON) -> {path}")
        return 0
    from circuitbench.runs.explore import load_or_compute

    table = load_or_compute(saved, lambda: load_unit_model(saved, args.device), show_progress=True)
    if args.format == "graph-json":
        path = export_graph_json(saved, table, args.example, args.out)
        print(f"circuit-tracer graph JSON of test example {args.example} -> {path}, listed in "
              f"{path.parent / 'graph-metadata.json'} (circuit-tracer's server on {path.parent} opens it as "
              f"{path.stem})")
    else:
        nodes, edges = export_parquet(saved, table, args.out)
        print(f"node table -> {nodes}\nedge table -> {edges}")
    return 0

