"""`submit`, `leaderboard build` and `report`: results checked, put on a board, summarised."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from circuitbench.cli.common import (
    Subparsers,
    method_name,
    print_table,
)
from circuitbench.errors import CircuitbenchError


def add_submit(sub: Subparsers) -> None:
    """Register `circuitbench submit`."""
    p = sub.add_parser("submit", help="validate a results directory for the leaderboard and add it to a board")
    p.add_argument("results", type=Path, help="a `circuitbench run` results directory")
    p.add_argument("--meta", type=Path, required=True, help="submission.json (format in circuitbench/leaderboard)")
    p.add_argument("--board", type=Path, default=Path("leaderboard"), help="the board directory")
    p.add_argument("--check", action="store_true", help="validate only; do not add it to the board")
    p.add_argument("--verify", action="store_true",
                   help="also re-evaluate 3 saved circuits, drawn at random, on the model (it must load here) and "
                        "compare")
    p.add_argument("--verify-seed", type=int, default=None,
                   help="with --verify: the seed of the draw (default: from the submission's content hash)")
    p.set_defaults(handler=_cmd_submit)


def _cmd_submit(args: argparse.Namespace) -> int:
    from circuitbench.leaderboard.submit import accept, validate

    if args.verify_seed is not None and not args.verify:
        raise CircuitbenchError("--verify-seed draws the units --verify re-evaluates; add --verify")
    report = validate(args.results, args.meta, args.board, args.verify, args.verify_seed)
    left = (f"; left out {sum(report.left_out.values())} unit(s) of other models or methods "
            f"({', '.join(f'{k}: {n}' for k, n in sorted(report.left_out.items()))})" if report.left_out else "")
    if not report.ok:
        if len(report.problems) == 1:
            print(f"circuitbench: submission refused: {report.problems[0]}", file=sys.stderr)
        else:
            print(f"circuitbench: submission refused, {len(report.problems)} problems:\n  "
                  + "\n  ".join(report.problems), file=sys.stderr)
        return 1
    checked = (f", {report.verified} circuit(s) re-evaluated to their stored numbers (drawn with --verify-seed "
               f"{report.verify_seed}: {', '.join(report.verified_units)})" if report.verified else "")
    if args.check:
        print(f"valid: {report.units} unit(s){checked}, content hash {report.content_hash[:16]}{left}")
        return 0
    dest = accept(args.results, args.meta, args.board)  # validated above (with --verify when asked)
    print(f"accepted {report.units} unit(s) -> {dest}{left}\n"
          f"Rebuild the site with `circuitbench leaderboard build --board {args.board}`.")
    return 0


def add_leaderboard(sub: Subparsers) -> None:
    """Register `circuitbench leaderboard`."""
    p = sub.add_parser("leaderboard", help="build the static leaderboard site from a board's accepted submissions")
    lsub = p.add_subparsers(dest="leaderboard_command", required=True, metavar="ACTION")
    b = lsub.add_parser("build", help="write HTML, CSS and JavaScript that open from disk (file://)")
    b.add_argument("--board", type=Path, default=Path("leaderboard"),
                   help="the board directory holding submissions/ (default: %(default)s)")
    b.add_argument("--out", type=Path, default=None, help="where the site goes (default: BOARD/site)")
    b.add_argument("--no-explore", action="store_true",
                   help="skip the circuit explorer pages (they measure every pruned circuit on its model)")
    b.set_defaults(handler=_cmd_leaderboard_build)


def _cmd_leaderboard_build(args: argparse.Namespace) -> int:
    from circuitbench.leaderboard.site import build, load_board

    out = build(args.board, args.out, explore=not args.no_explore)
    entries = load_board(args.board)
    print(f"built {out} from {len(entries)} submission(s); open {out / 'index.html'} in a browser")
    return 0


def add_report(sub: Subparsers) -> None:
    """Register `circuitbench report`."""
    p = sub.add_parser("report", help="summarise a results directory; compare two models' circuit sizes")
    p.add_argument("--out", type=Path, default=Path("results"), help="results directory of `circuitbench run`")
    p.add_argument("--compare", metavar="SPARSE,DENSE", default=None,
                   help="two model names: circuit sizes side by side and the ratio of geometric-mean edges "
                        "over the tasks both solve")
    p.add_argument("--method", default=None,
                   help="only this method's units (with --compare, default: learned-mask)")
    p.add_argument("--seed", type=int, default=None, help="only this seed's units (with --compare, default: 0)")
    p.add_argument("--seeds", action="store_true",
                   help="the spread over seeds of every (model, task, method) run with two seeds or more: nodes, "
                        "edges, faithfulness and CPR (mean, standard deviation), and the circuits' mean pairwise "
                        "Jaccard overlap of nodes and of edges")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from circuitbench.results.report import collect, compare, headline, side_by_side

    rows = collect(args.out)
    if args.seeds and args.seed is not None:
        raise CircuitbenchError("--seeds reports the spread over every seed; --seed picks one: give one of them")
    method = method_name(args.method) if args.method is not None else None
    if method is None and args.compare is not None:
        method = "learned_mask"
    present = sorted({r["method"] for r in rows})
    if rows and method is not None and method not in present:
        given = (f"--method {args.method}" if args.method is not None
                 else "--method learned-mask (the default of --compare)")
        raise CircuitbenchError(f"{given}: no unit of that method in {args.out} (it has {', '.join(present)}); "
                                "name one of those with --method")
    if method is not None:  # honoured in every mode, never ignored
        rows = [r for r in rows if r["method"] == method]
    if args.seed is not None:
        rows = [r for r in rows if r["seed"] == args.seed]
        if not rows:
            raise CircuitbenchError(f"--seed {args.seed}: no unit of that seed in {args.out}")
    if args.seeds:
        from circuitbench.results.seeds import seed_table

        table = seed_table(rows, args.out)
        print_table(table, args.format, floatfmt=".3f")
        if args.format == "table" and not table:
            print(f"No (model, task, method) in {args.out} was pruned with two seeds or more; run with --seeds 0,1,2.")
        return 0
    if args.compare is None:
        table = headline(rows)
        print_table(table, args.format, floatfmt=".1f")
        if args.format == "table" and any(r["solved"] == 0 for r in table):
            print("\nnan: no task was solved by the full model and pruned to a circuit that holds out for that "
                  "model and method, so there is no circuit size to average; each task's status is in the unit files "
                  "(circuitbench circuit show FILE.parquet) and in `circuitbench run`'s table.")
        return 0
    assert method is not None
    seed = args.seed if args.seed is not None else 0
    models = [m.strip() for m in args.compare.split(",")]
    if len(models) != 2:
        raise CircuitbenchError(f"--compare {args.compare}: name exactly two models, e.g. tiny-sparse,tiny-dense")
    c = compare(rows, models[0], models[1], method, seed)
    if args.format == "json":
        print(json.dumps({"a": c.a, "b": c.b, "tasks": list(c.tasks), "geomean_edges_a": c.geomean_edges_a,
                          "geomean_edges_b": c.geomean_edges_b, "edge_ratio": c.edge_ratio}))
        return 0
    print_table(side_by_side(rows, models, method, seed), "table")
    if not c.tasks:
        print(f"\nNo task is solved (and pruned to the target) by both {c.a} and {c.b}: no ratio to report.")
    else:
        print(f"\nOver the {len(c.tasks)} tasks both solve: geometric-mean edges {c.a} {c.geomean_edges_a:.1f}, "
              f"{c.b} {c.geomean_edges_b:.1f}; {c.b} / {c.a} = {c.edge_ratio:.2f}.")
    return 0

