"""`circuit show | eval | export | draw`: a saved circuit, printed, re-evaluated, exported, drawn."""

from __future__ import annotations

import argparse
from pathlib import Path

from circuitbench.cli.common import (
    Subparsers,
    check_suffix,
    print_table,
)
from circuitbench.errors import CircuitbenchError


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
    check_suffix(args.out, (".svg",), "an SVG drawing")
    if not args.result.is_file():
        raise CircuitbenchError(f"{args.result}: no such unit file")
    svg = saved_circuit_svg(args.result, max_edges=args.max_edges, standalone=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(svg + "\n", encoding="utf-8")
    print(f"{args.out}: open it in a browser")
    return 0


def _cmd_circuit_show(args: argparse.Namespace) -> int:
    from circuitbench.runs.saved import load_saved, show

    print(show(load_saved(args.result)), end="")
    return 0


def _cmd_circuit_eval(args: argparse.Namespace) -> int:
    import circuitbench
    from circuitbench.runs.runner import splice_saes
    from circuitbench.runs.saved import compare_stored, load_saved, reevaluate

    saved = load_saved(args.result)
    u = saved.prov.unit
    model = u.model.name.split("+sae:")[0]
    adapter = circuitbench.load_model(model, device=args.device or saved.prov.device, dtype=u.dtype,
                                      revision=u.model.revision)
    adapter, _ = splice_saes(adapter, model, [str(s.get("spec", s["path"])) for s in saved.prov.saes or ()])
    fresh = reevaluate(saved, adapter, args.split)
    if args.split != "test":
        print_table([{"metric": k, "now": v} for k, v in fresh.items()], args.format, floatfmt=".6f")
        return 0
    rows = compare_stored(saved, fresh)
    print_table(rows, args.format, floatfmt=".6f")
    if args.format == "table":
        same = all(r["equal"] for r in rows)
        print("\nThe saved circuit reproduces its stored numbers exactly." if same else
              "\nSome numbers differ from the stored ones (another device, dtype or torch version?).")
    return 0


def _cmd_circuit_export(args: argparse.Namespace) -> int:
    from circuitbench.runs.saved import export_mib, load_saved

    check_suffix(args.out, (".json",), "MIB's circuit JSON")
    path = export_mib(load_saved(args.result), args.out)
    print(f"MIB circuit (EAP-IG Graph JSON) -> {path}")
    return 0

