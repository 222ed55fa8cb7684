"""Regenerate every number the repository shows from the code at HEAD, with one command.

    python baselines/scripts/regenerate.py              # recompute the baselines, resubmit, rebuild the board, docs
    python baselines/scripts/regenerate.py --readme     # only rewrite the generated tables (README, docs/)
    python baselines/scripts/regenerate.py --bridges    # only retrain the bundled bridges, steer again, rewrite the tables
    python baselines/scripts/regenerate.py --edges      # only recompute the edge-level comparison, rewrite the tables
    python baselines/scripts/regenerate.py --seeds      # only rerun the learned mask with seeds 1 and 2, rewrite the tables

Steps (each one what a user would run):
1. `circuitbench compare` of the six methods on every task, board protocol (mean ablation, target 0.15,
   accuracy bar 0.9, inverted-label control on), for each bundled reference model, into a fresh
   `baselines/results/` (the learned-mask units are exactly `circuitbench run`'s default units);
2. `baselines/scripts/submit_baselines.py` on an emptied `leaderboard/submissions/`: every submission goes through
   `circuitbench submit`'s validation, then the site is rebuilt;
3. `circuitbench bridge train` between the two reference models into `baselines/bridges/tiny/` (evaluated
   as it finishes), then `circuitbench bridge steer` on every task the sparse model prunes, writing each
   `TASK.learned_mask.seed0.steer.parquet` beside its unit (`--bridges` redoes only this step and the tables);
4. `circuitbench compare --level edges` of the edge-level methods on every task the sparse model solves, into
   `baselines/results-edges/` (apart from `results/`: edge-level units are off the board's protocol, which
   is node-level; `--edges` redoes only this step and the tables);
5. `circuitbench run --seeds 0,1,2` of the learned mask on every task the sparse model prunes, into
   `baselines/results-seeds/` (seed 0's units copied from `results/`: the same units, so the run skips them;
   `--seeds` redoes this step, keeping the units already there);
6. the generated tables of the README and the documentation pages (`docs/**/*.md`; between
   `<!-- generated: NAME -->` and `<!-- end generated: NAME -->`; a table may be on several pages) are
   rewritten from `baselines/models/*` (the model cards), `baselines/bridges/tiny/`, `baselines/results/`,
   `baselines/results-edges/` and `baselines/results-seeds/`.

`tests/test_reproduce.py` holds them together: the tables on every page equal what step 6 writes from the
committed files, and a sample of committed units recomputed at HEAD gives the same nodes and edges.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # baselines/
REPO = ROOT.parent
README = REPO / "README.md"


def pages() -> list[Path]:
    """Every page that may hold generated tables: the README and the documentation site's pages."""
    return [README, *sorted((REPO / "docs").rglob("*.md"))]

SPARSE, DENSE = "tiny-sparse", "tiny-dense"
MODELS = (SPARSE, DENSE)
METHODS = "learned-mask,eap,eap-ig,activation-patching,magnitude,random"
COMPARE_ARGS = ["--method-arg", "activation_patching.max_examples=16"]
EDGE_METHODS = "learned-mask,eap,eap-ig,random"
"""The edge-level methods compared (activation patching at the edge level is one pass per edge: ~50,000)."""
EDGES = ROOT / "results-edges"
SEEDS = ROOT / "results-seeds"
SEED_SEEDS = "0,1,2"
"""The seeds of the learned mask's spread, on every task the sparse model prunes (seed 0 is the default run's)."""
BRIDGES = ROOT / "bridges" / "tiny"
BRIDGE_ARGS = ["--steps", "400", "--lr", "1e-3"]
"""The bundled bridges' settings (BENCHMARKS.md, Bridges: the learning rates tried)."""
"""Activation patching runs one forward pass per node and example: 16 examples keep it to minutes."""

_SECTION = re.compile(r"(<!-- generated: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)",
                      re.DOTALL)


# --- the tables -----------------------------------------------------------------------------------------


def _fmt_int(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{round(x):,}"


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _card(model: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    d = ROOT / "models" / model
    return (json.loads((d / "train_meta.json").read_text()), json.loads((d / "task_eval.json").read_text()),
            json.loads((d / "beeg_config.json").read_text()))


def solved_tasks(model: str, bar: float = 0.9) -> list[str]:
    """Tasks whose full-model test accuracy in the model card is at least `bar`."""
    return [t["task"] for t in _card(model)[1] if t["accuracy"] >= bar]


def _tokens_seen(meta: dict[str, Any]) -> str:
    """Tokens and wall time in all, counting the run a model was continued from (`started_from`)."""
    start = meta.get("started_from") or {}
    tokens = meta["tokens_seen"] + start.get("tokens_seen", 0)
    minutes = (meta["wall_time_s"] + start.get("wall_time_s", 0)) / 60
    runs = ", in two runs" if start else ""
    return f"{tokens / 1e6:.1f}M ({minutes:.0f} min on {meta['hardware'].split(', ')[1]}{runs})"


def reference_models_table() -> str:
    """The two reference models side by side, from their cards."""
    cols: dict[str, dict[str, str]] = {}
    for model in MODELS:
        meta, tasks, cfg = _card(model)
        c = meta["config"]
        d_mlp = cfg.get("d_mlp") or 4 * cfg["d_model"]
        sp = meta["sparsified"]
        if c["dense"]:
            nonzero = "dense"
        else:
            overall = sum(v["nonzero"] for v in sp.values()) / sum(v["numel"] for v in sp.values())
            worst = max(v["nonzero"] / v["numel"] for v in sp.values())
            nonzero = (f"{overall:.2%} overall, each at most {worst:.2%} (AbsTopK {cfg['afrac']} at eight sites)")
        pk = meta.get("corpus_packages") or {}
        solved = sum(t["accuracy"] >= 0.9 for t in tasks)
        cols[model] = {
            "shape": f"{cfg['n_layer']} layers, d_model {cfg['d_model']}, {cfg['n_head']} heads, d_mlp {d_mlp}, "
                     f"vocab {cfg['vocab_size']}, context {cfg['block_size']}",
            "weight matrices and biases nonzero": nonzero,
            "corpus": f"{len(pk.get('train_packages', []))} pinned PyPI packages + the standard library, "
                      f"{meta['train_tokens_in_corpus'] / 1e6:.0f}M training tokens; validation on "
                      f"{len(pk.get('val_packages', []))} held-out packages",
            "tokens seen": _tokens_seen(meta),
            "validation loss (nats/token, held-out packages)": f"{meta['val_loss']:.3f}",
            "tasks with full-model accuracy >= 0.9": f"**{solved} of {len(tasks)}**",
        }
    a, b = cols[SPARSE], cols[DENSE]
    dense_loss = _card(DENSE)[0]["val_loss"] / _card(SPARSE)[0]["val_loss"] - 1
    b["validation loss (nats/token, held-out packages)"] += f" ({dense_loss:+.1%})"
    lines = [f"| | {SPARSE} | {DENSE} |", "|---|---|---|"]
    for key in a:
        other = "same" if b[key] == a[key] and key in ("shape", "corpus") else b[key].replace("**", "")
        lines.append(f"| {key} | {a[key]} | {other} |")
    return "\n".join(lines)


def _rows(results: Path) -> list[dict[str, Any]]:
    from circuitbench.results.report import collect

    return collect(results)


def _pm(r: dict[str, Any], key: str, spec: str = ".3f") -> str:
    """A number with its 95% bootstrap interval over the test pairs as `±H` where the unit measured one."""
    from circuitbench.results.report import plus_minus

    shown = plus_minus(r, key, spec)
    return shown if isinstance(shown, str) else _fmt(shown, spec)


def default_run_table(rows: list[dict[str, Any]]) -> str:
    """The learned-mask circuits of the sparse model (the default `circuitbench run`'s units)."""
    from circuitbench.results.status import HELD_OUT_TOLERANCE, SPECIFIC_CONTROL_RATIO, control_text, is_specific

    mine = sorted((r for r in rows if r["model"] == SPARSE and r["method"] == "learned_mask" and r["seed"] == 0
                   and r["status"] != "unsolved"), key=lambda r: r["task"])
    lines = ["| task | status | nodes | edges | inverted-label control | test loss (full model) | necessity loss | "
             "faithfulness |", "|---|---|---|---|---|---|---|---|"]
    for r in mine:
        control = control_text(r)
        if control not in ("–", "missed"):
            control += f" ({_fmt_int(r['control_nodes'])} nodes)"
        lines.append(f"| {r['task']} | {r['status']} | {_fmt_int(r['nodes'])} | {_fmt_int(r['edges'])} | {control} | "
                     f"{_pm(r, 'sufficiency_loss')} ({_fmt(r['full_loss'])}) | {_pm(r, 'necessity_loss', '.2f')} | "
                     f"{_pm(r, 'faithfulness', '.2f')} |")
    n = len([r for r in rows if r["model"] == SPARSE and r["method"] == "learned_mask" and r["seed"] == 0])
    solved = [r for r in mine if r["status"] == "solved"]
    train_only = [r["task"] for r in mine if r["status"] == "train_only"]
    specific = [r["task"] for r in solved if is_specific(r)]
    from circuitbench.results.report import geomean

    lines.append("")
    lines.append(f"{len(mine)} of {n} tasks pruned; {len(solved)} to a circuit that holds on the held-out test pairs "
                 f"(test loss at most {HELD_OUT_TOLERANCE:g} x the target), geometric mean over them: "
                 f"{geomean([r['nodes'] for r in solved]):.1f} nodes, {geomean([r['edges'] for r in solved]):.1f} "
                 "edges.")
    if train_only:
        lines[-1] += (f" Met the target on the search pairs only (`train_only`, not counted): "
                      f"{', '.join(train_only)}.")
    lines[-1] += (f" Specific (the inverted-label control misses the target or needs at least "
                  f"{SPECIFIC_CONTROL_RATIO:g}x the nodes): {len(specific)} of the {len(solved)}"
                  + (f" ({', '.join(specific)})." if specific else "."))
    if mine:
        nec = [r["necessity_loss"] for r in mine]
        lines[-1] += (f" Ablating only the circuit gives a necessity loss of {min(nec):.2f}-{max(nec):.2f} "
                      "(chance: ln 2 = 0.69).")
    return "\n".join(lines)


def dense_sparse_table(rows: list[dict[str, Any]]) -> str:
    """Learned-mask circuit edges of the two models on the tasks both solve, and the ratio."""
    from circuitbench.results.report import compare

    c = compare(rows, SPARSE, DENSE, "learned_mask", 0)
    by = {(r["model"], r["task"]): r for r in rows if r["method"] == "learned_mask" and r["seed"] == 0}
    lines = [f"| task | {SPARSE} edges | {DENSE} edges | dense / sparse |", "|---|---|---|---|"]
    for t in sorted(c.tasks):
        a, b = by[(SPARSE, t)]["edges"], by[(DENSE, t)]["edges"]
        lines.append(f"| {t} | {a:,} | {b:,} | {b / max(a, 1):.0f}x |")
    if c.tasks:
        lines.append(f"| **geometric mean** | **{c.geomean_edges_a:,.0f}** | **{c.geomean_edges_b:,.0f}** | "
                     f"**{c.edge_ratio:.1f}x** |")
        lines += ["", f"Over the {len(c.tasks)} task(s) both models solve and prune to the target, the weight-sparse "
                  f"model's circuits have {c.edge_ratio:.1f}x fewer edges than its dense twin's."]
    else:
        lines += ["", "No task is solved and pruned to the target by both models: no ratio to report."]
    return "\n".join(lines)


def methods_table(rows: list[dict[str, Any]]) -> str:
    """Every method on the sparse model, means over the tasks all of them pruned."""
    from circuitbench.results.report import method_table

    table = method_table(rows, SPARSE, 0)
    lines = ["| method | CPR | CMD | CPR (log axis) | CMD (log axis) | log CPR / random's | geomean nodes | "
             "geomean edges | solved at target | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        name = "activation_patching (16 examples)" if r["method"] == "activation_patching" else r["method"]
        lines.append(f"| {name} | {_fmt(r['cpr'])} | {_fmt(r['cmd'])} | {_fmt(r['cpr_log'])} | {_fmt(r['cmd_log'])} | "
                     f"{_fmt(r['cpr_log_over_random'], '.1f')} | {_fmt(r['geomean_nodes'], ',.1f')} | "
                     f"{_fmt_int(r['geomean_edges'])} | {r['solved_at_target']} | {_fmt_int(r['wall_s'])} |")
    n = table[0]["tasks_compared"] if table else 0
    mine = [r for r in rows if r["model"] == SPARSE and r["seed"] == 0]
    lines += ["", f"Means over the {n} task(s) every method pruned; wall s is the sum of their units' wall time on "
              f"the machine that computed them (2 CPU cores); all {len(mine)} units of the comparison took "
              f"{sum(r['wall_s'] or 0 for r in mine) / 60:.1f} minutes."]
    by = {r["method"]: r for r in table}
    attribution = [r for r in table if r["method"] not in ("learned_mask", "random", "magnitude")]
    if "learned_mask" in by and attribution:
        best = max(attribution, key=lambda r: r["cpr_log"])
        lm = by["learned_mask"]
        lines[-1] += (f" The learned mask's circuits are {best['geomean_nodes'] / lm['geomean_nodes']:.1f}x smaller in "
                      f"nodes and {best['geomean_edges'] / lm['geomean_edges']:.1f}x in edges than those of the best "
                      f"attribution method by log-axis CPR ({best['method']}).")
    return "\n".join(lines)


def edge_methods_table(rows: list[dict[str, Any]], edge_rows: list[dict[str, Any]]) -> str:
    """Each edge-level method on the sparse model against the same method at the node level: edges at the target."""
    from circuitbench.results.report import geomean, method_table

    table = method_table(edge_rows, SPARSE, 0, "edges")
    if not table:
        return "No edge-level results (run `python baselines/scripts/regenerate.py --edges`)."
    node = {(r["task"], r["method"]): r for r in rows if r["model"] == SPARSE and r["seed"] == 0}
    edge = {(r["task"], r["method"]): r for r in edge_rows if r["model"] == SPARSE and r["seed"] == 0}
    lines = ["| method | level | CPR | CMD | CPR (log axis) | CMD (log axis) | geomean edges at target | geomean nodes "
             "| solved at target | same method, node level: geomean edges | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    pairs = {}
    for r in table:
        m = r["method"]
        tasks = sorted(t for (t, mm), e in edge.items() if mm == m and e["status"] not in ("unsolved", "no_examples")
                       and (t, m) in node and node[(t, m)]["status"] not in ("unsolved", "no_examples"))
        e_edges = geomean([edge[(t, m)]["edges"] for t in tasks])
        n_edges = geomean([node[(t, m)]["edges"] for t in tasks])
        pairs[m] = (e_edges, n_edges, len(tasks))
        lines.append(f"| {m} | edges | {_fmt(r['cpr'])} | {_fmt(r['cmd'])} | {_fmt(r['cpr_log'])} | "
                     f"{_fmt(r['cmd_log'])} | {_fmt(r['geomean_edges'], ',.1f')} | "
                     f"{_fmt(r['geomean_nodes'], ',.1f')} | "
                     f"{r['solved_at_target']} | {_fmt(n_edges, ',.1f')} | {_fmt_int(r['wall_s'])} |")
    n = table[0]["tasks_compared"]
    lines += ["", f"Means over the {n} task(s) every edge-level method pruned, tiny-sparse, mean ablation, seed 0; "
              "the node-level column is the geometric mean over the same tasks of the node-level circuit's edges "
              "(the edges between its kept nodes), the same kind of number."]
    best = min(pairs, key=lambda m: pairs[m][0])
    node_best = min(pairs, key=lambda m: pairs[m][1])
    e_best, n_best = pairs[best][0], pairs[node_best][1]
    lines[-1] += (f" Fewest edges at the target: **{best} at the edge level** ({e_best:,.1f}); at the node level "
                  f"{node_best} ({n_best:,.1f}), so the edge-level circuits are "
                  f"{n_best / e_best:.1f}x {'smaller' if e_best < n_best else 'larger'}.")
    fewer = [m for m, (e, nn, _) in pairs.items() if e < nn]
    lines[-1] += (f" Per method, pruning edges finds fewer edges than pruning nodes for {', '.join(sorted(fewer))}"
                  if fewer else " No method finds fewer edges by pruning edges") + "."
    for m in ("learned_mask",):
        e_met = [t for (t, mm), r in edge.items() if mm == m and r.get("control_met_target")]
        n_met = [t for (t, mm), r in node.items() if mm == m and r.get("control_met_target")]
        e_all = [t for (t, mm), r in edge.items() if mm == m and r["status"] not in ("unsolved", "no_examples")]
        ratios = [edge[(t, m)]["control_edges"] / max(edge[(t, m)]["edges"], 1) for t in e_met]
        if e_all:
            lines[-1] += (f" The inverted-label control met the target at the edge level on {len(e_met)} of "
                          f"{len(e_all)} tasks ({m}; at the node level on {len(n_met)})"
                          + (f", with {min(ratios):.1f}-{max(ratios):.1f}x the edges of the task's own circuit"
                             if ratios else "") + ": edge masks are freer, "
                          "so they also fit the inverted labels more easily (Drori 2026), and their circuits are "
                          "correspondingly weaker evidence.")
    return "\n".join(lines)


def seed_line(seeds: Path = SEEDS) -> str:
    """The learned mask's headline over seeds: each seed's geometric means, then their mean and spread."""
    import statistics

    from circuitbench.results.report import geomean

    if not seeds.is_dir() or not any(seeds.glob("*/*.parquet")):
        return ""
    rows = [r for r in _rows(seeds) if r["model"] == SPARSE and r["method"] == "learned_mask"]
    by_seed = sorted({r["seed"] for r in rows})
    tasks = set.intersection(*({r["task"] for r in rows if r["seed"] == s and r["status"] == "solved"}
                               for s in by_seed))
    parts = []
    for key in ("nodes", "edges"):
        per = [geomean([r[key] for r in rows if r["seed"] == s and r["task"] in tasks]) for s in by_seed]
        parts.append(f"{statistics.fmean(per):.1f} ± {statistics.stdev(per):.1f} {key}")
    return (f"Over seeds {', '.join(map(str, by_seed))} (`baselines/results-seeds/`), the learned mask's geometric "
            f"means over the {len(tasks)} tasks every seed solved are {parts[0]} and {parts[1]} (mean ± standard "
            "deviation of the seeds' geometric means; per task: Seeds, below); the attribution methods differ "
            "by seed only through the seeded example subsets.")


def seed_spread_table(seeds: Path = SEEDS) -> str:
    """The learned mask's spread over seeds 0, 1, 2 and the overlap of its circuits, per task."""
    from circuitbench.results.seeds import seed_table

    if not seeds.is_dir() or not any(seeds.glob("*/*.parquet")):
        return "No seed results (run `python baselines/scripts/regenerate.py --seeds`)."
    table = seed_table(_rows(seeds), seeds)
    lines = ["| task | seeds solved | nodes | edges | faithfulness | CPR | node overlap | edge overlap |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        cells = " | ".join(f"{_fmt(r[f'{k}_mean'], f)} ± {_fmt(r[f'{k}_std'], f)}"
                           for k, f in (("nodes", ".1f"), ("edges", ".1f"), ("faithfulness", ".2f"), ("cpr", ".2f")))
        lines.append(f"| {r['task']} | {r['solved']} / {r['seeds']} | {cells} | {_fmt(r['node_jaccard'], '.2f')} | "
                     f"{_fmt(r['edge_jaccard'], '.2f')} |")
    lines += ["", "learned_mask on tiny-sparse, board protocol, seeds 0, 1, 2: mean ± standard deviation over seeds; "
              "overlap: the mean pairwise Jaccard index of the circuits' nodes and of their edges."]
    return "\n".join(lines)


def solved_tasks_text(model: str = SPARSE, bar: float = 0.9, near: float = 0.7) -> str:
    """What the sparse model solves, what it nearly solves and what it does not, from its card."""
    tasks = sorted(_card(model)[1], key=lambda t: (-t["accuracy"], t["task"]))

    def listed(rows: list[dict[str, Any]]) -> str:
        items = [f"{t['task']} ({t['accuracy']:.3f})" for t in rows]
        return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else "".join(items)

    solved = [t for t in tasks if t["accuracy"] >= bar]
    close = [t for t in tasks if near <= t["accuracy"] < bar]
    rest = [t["task"] for t in tasks if t["accuracy"] < near]
    text = (f"**What {model} solves** (full-model test accuracy >= {bar} on both members of every pair, from its "
            f"card): {listed(solved)}.")
    if close:
        text += f" Below the bar: {listed(close)}."
    if rest:
        text += f" The other {len(rest)} are at {max(t['accuracy'] for t in tasks if t['accuracy'] < near):.2f} or " \
                f"less: {', '.join(sorted(rest))}."
    return text


def bridges_table(directory: Path = BRIDGES) -> str:
    """Per location, what the bundled bridges carry: their evaluation, from their config."""
    config = json.loads((directory / "bridge_config.json").read_text())
    ev = config["evaluation"]
    lines = ["| location | NMSE dense->sparse | NMSE sparse->dense | loss: sparse->dense hybrid | loss: dense->sparse "
             "hybrid | loss: residual mean-ablated | task accuracy: s->d hybrid | mean-ablated |",
             "|---|---|---|---|---|---|---|---|"]
    for r in ev["rows"]:
        lines.append(f"| `{r['location']}` | {r['nmse_enc']:.3f} | {r['nmse_dec']:.3f} | {r['loss_s2d']:.3f} | "
                     f"{r['loss_d2s']:.3f} | {r['loss_mean']:.3f} | {r['acc_s2d']:.3f} | {r['acc_mean']:.3f} |")
    first = ev["rows"][0]
    carried = sum(r["carries"] for r in ev["rows"])
    t = config["trained"]
    lines += ["", f"The dense model alone: loss {first['loss_dense']:.3f} nats/token, task accuracy "
              f"{first['acc_dense']:.3f}; the sparse model alone: {first['loss_sparse']:.3f} and "
              f"{first['acc_sparse']:.3f} ({ev['windows']} held-out windows of {ev['ctx']} tokens; the first "
              f"{ev['pairs']} test pairs of each of the {len(ev['tasks'])} tasks). Both hybrid passes beat mean "
              f"ablation at **{carried} of {len(ev['rows'])}** locations. Trained in {t['steps']} steps "
              f"({t['tokens'] / 1e3:.0f}K tokens, {t['elapsed_s'] / 60:.1f} min on {t['threads']} CPU threads)."]
    return "\n".join(lines)


def steering_table(results: Path) -> str:
    """Per pruned task of the sparse model, the steer through the bundled bridges against its random controls."""
    from circuitbench.bridges.steer import read_steer
    from circuitbench.cli.bridge import beats_controls

    files = sorted((results / SPARSE).glob("*.learned_mask.seed0.steer.parquet"))
    lines = ["| task | separating channels (of the circuit's residual nodes) | dense via bridge: circuit flips | random flips | random, same size: flips | "
             "circuit P(correct) shift | random, same size: shift | sparse itself: circuit flips | random flips |",
             "|---|---|---|---|---|---|---|---|---|"]
    wins, fails = 0, []
    for f in files:
        res = read_steer(f)
        got = {(r["intervention"], r["model"]): r for r in res.rows}
        task = res.meta["task"]
        if ("circuit", "dense") not in got:
            lines.append(f"| {task} | 0 of {res.meta['residual_nodes']} | – | – | – | – | – | – | – |")
            fails.append(task)
            continue
        c, r, m = got[("circuit", "dense")], got[("random", "dense")], got[("random_matched", "dense")]
        cs, rs = got[("circuit", "sparse")], got[("random", "sparse")]
        win = bool(beats_controls(res.rows))
        wins += win
        if not win:
            fails.append(task)
        b = "**" if win else ""
        lines.append(f"| {task} | {c['channels']} of {res.meta['residual_nodes']} | {b}{c['flip_rate']:.0%}{b} | "
                     f"{r['flip_rate']:.0%} | {m['flip_rate']:.0%} | {c['shift']:+.3f} | "
                     f"{m['shift']:+.3f} ± {m['shift_sd']:.3f} | {cs['flip_rate']:.0%} | {rs['flip_rate']:.0%} |")
    meta = read_steer(files[0]).meta if files else {}
    lines += ["", f"The circuit's separating channels moved the dense model's P(correct) more than both random "
              f"controls (by more than the control's mean shift + 2 sd over its {meta.get('controls', 0)} draws) on "
              f"**{wins} of {len(files)}** tasks" + (f"; not on {', '.join(fails)}." if fails else ".") +
              f" Separating: side means {meta.get('min_separation')} pooled sd apart or more at the answer position; "
              f"strength {meta.get('strength')} (each moved to the other side's mean); flips count the examples "
              "answered correctly before. *Random*: as many channels outside the circuit at the same locations, "
              "each moved to the other side's mean of its own values; *same size*: moved by as much as the circuit "
              "channel it stands in for."]
    return "\n".join(lines)


def sections(results: Path = ROOT / "results", edges: Path = EDGES, seeds: Path = SEEDS) -> dict[str, str]:
    """Every generated section, by name, from the committed cards and results."""
    rows = _rows(results)
    edge_rows = _rows(edges) if edges.is_dir() and any(edges.glob("*/*.parquet")) else []
    return {"reference-models": reference_models_table(), "dense-sparse": dense_sparse_table(rows),
            "solved-tasks": solved_tasks_text(), "default-run": default_run_table(rows),
            "methods": methods_table(rows) + (f"\n\n{line}" if (line := seed_line(seeds)) else ""),
            "edge-methods": edge_methods_table(rows, edge_rows),
            "seed-spread": seed_spread_table(seeds),
            "bridges": bridges_table(), "steering": steering_table(results)}


def render_page(text: str, generated: dict[str, str], page: str = "README") -> str:
    """A page with the body of each generated section it holds replaced.

    Raises:
        ValueError: when the page has a marker of no section.
    """
    unknown = {m.group("name") for m in _SECTION.finditer(text)} - set(generated)
    if unknown:
        raise ValueError(f"{page}: generated sections {sorted(unknown)} are not among {sorted(generated)}")
    return _SECTION.sub(lambda m: m.group(1) + generated[m.group("name")].rstrip("\n") + "\n" + m.group(4), text)


def render_pages(texts: dict[str, str], generated: dict[str, str]) -> dict[str, str]:
    """Every page rendered (`render_page`), by name.

    Raises:
        ValueError: when a section is on no page, or a page has a marker of no section.
    """
    found = {m.group("name") for text in texts.values() for m in _SECTION.finditer(text)}
    if missing := set(generated) - found:
        raise ValueError(f"generated sections {sorted(missing)} are on none of the pages {sorted(texts)}")
    return {name: render_page(text, generated, name) for name, text in texts.items()}


# --- the recomputation -----------------------------------------------------------------------------------


def _circuitbench(*args: str) -> None:
    cmd = [sys.executable, "-m", "circuitbench", *args]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def recompute(results: Path, threads: int) -> None:
    """Every baseline unit, from scratch, at HEAD (a fresh results directory, moved into place at the end)."""
    fresh = results.with_name(results.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    for model in MODELS:
        _circuitbench("compare", "--model", model, "--methods", METHODS, "--tasks", "all", "--out", str(fresh),
                      "--threads", str(threads), *COMPARE_ARGS)
    shutil.rmtree(results, ignore_errors=True)
    fresh.rename(results)


def bridges(results: Path, threads: int) -> None:
    """Retrain the bundled bridges, then steer with every circuit the sparse model's learned mask pruned."""
    from circuitbench.results.report import collect

    _circuitbench("bridge", "train", "--dense", DENSE, "--sparse", SPARSE, "--out", str(BRIDGES.relative_to(REPO)),
                  "--force", *BRIDGE_ARGS, "--threads", str(threads), "--quiet")
    for f in (results / SPARSE).glob("*.steer.parquet"):
        f.unlink()
    for r in sorted(collect(results), key=lambda r: r["task"]):
        if r["model"] == SPARSE and r["method"] == "learned_mask" and r["seed"] == 0 and r["status"] != "unsolved":
            _circuitbench("bridge", "steer", "--task", r["task"], "--bridges", str(BRIDGES), "--results",
                          str(results), "--threads", str(threads), "--quiet")


def edge_level(results: Path, edges: Path, threads: int) -> None:
    """The edge-level comparison on every task the sparse model prunes, into a fresh `edges` folder."""
    from circuitbench.results.report import collect

    tasks = sorted({r["task"] for r in collect(results) if r["model"] == SPARSE and r["seed"] == 0
                    and r["status"] not in ("unsolved", "no_examples")})
    fresh = edges.with_name(edges.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    _circuitbench("compare", "--model", SPARSE, "--level", "edges", "--methods", EDGE_METHODS, "--tasks",
                  ",".join(tasks), "--out", str(fresh), "--threads", str(threads))
    shutil.rmtree(edges, ignore_errors=True)
    fresh.rename(edges)


def seed_runs(results: Path, seeds: Path, threads: int) -> None:
    """The learned mask with `SEED_SEEDS` on every task the sparse model prunes, into a fresh `seeds` folder.

    Seed 0's units are copied from `results` and units already in `seeds` are kept: a unit of the same
    identity is not computed again (the runner checks), so only what is missing runs.
    """
    from circuitbench.results.report import collect

    tasks = sorted({r["task"] for r in collect(results) if r["model"] == SPARSE and r["seed"] == 0
                    and r["method"] == "learned_mask" and r["status"] not in ("unsolved", "no_examples")})
    fresh = seeds.with_name(seeds.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    (fresh / SPARSE).mkdir(parents=True)
    sources = [*(results / SPARSE).glob("*.learned_mask.seed0.*"), *(seeds / SPARSE).glob("*.learned_mask.seed*")]
    for f in sources:
        if f.name.split(".")[0] in tasks and not f.name.endswith((".steer.parquet", ".nodes.parquet")):
            shutil.copy2(f, fresh / SPARSE / f.name)
    _circuitbench("run", "--model", SPARSE, "--tasks", ",".join(tasks), "--seeds", SEED_SEEDS, "--out", str(fresh),
                  "--threads", str(threads), "--quiet")
    shutil.rmtree(seeds, ignore_errors=True)
    fresh.rename(seeds)


def main(argv: list[str] | None = None) -> int:
    """Recompute (unless --readme), resubmit, rebuild the board, rewrite the generated tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readme", action="store_true",
                   help="only rewrite the generated tables (README, docs/) from baselines/")
    p.add_argument("--bridges", action="store_true", help="only retrain the bridges, steer, rewrite the tables")
    p.add_argument("--edges", action="store_true", help="only recompute the edge-level comparison, rewrite the tables")
    p.add_argument("--edge-results", type=Path, default=EDGES)
    p.add_argument("--seeds", action="store_true", help="only rerun the learned mask's seeds, rewrite the tables")
    p.add_argument("--seed-results", type=Path, default=SEEDS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--board", type=Path, default=REPO / "leaderboard")
    args = p.parse_args(argv)
    everything = not (args.readme or args.bridges or args.edges or args.seeds)
    if everything:
        recompute(args.results, args.threads)
    if everything or args.bridges:
        bridges(args.results, args.threads)
    if everything or args.edges:
        edge_level(args.results, args.edge_results, args.threads)
    if everything or args.seeds:
        seed_runs(args.results, args.seed_results, args.threads)
    if everything:
        shutil.rmtree(args.board / "submissions", ignore_errors=True)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "submit_baselines.py"), "--results", str(args.results),
                        "--board", str(args.board)], check=True, cwd=REPO)
    texts = {str(path.relative_to(REPO)): path.read_text() for path in pages()}
    for name, text in render_pages(texts, sections(args.results, args.edge_results, args.seed_results)).items():
        if text != texts[name]:
            (REPO / name).write_text(text)
            print(f"rewrote the generated tables of {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
