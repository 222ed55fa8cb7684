"""Submit the bundled reference models' results to the board, through the same validation as anyone's.

    circuitbench compare --model tiny-sparse --methods learned-mask,eap,eap-ig,activation-patching,magnitude,random \
        --tasks all --out baselines/results
    circuitbench compare --model tiny-dense  --methods ... --tasks all --out baselines/results
    python baselines/scripts/submit_baselines.py            # writes baselines/submissions/*.json, accepts, builds the site

One submission per (model, method): the metadata files are written to `baselines/submissions/` (committed,
so the board can be rebuilt from the repository), each is validated and accepted into `leaderboard/`
(a submission already on the board is left as it is), and the site is rebuilt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import circuitbench
from circuitbench.errors import CircuitbenchError
from circuitbench.leaderboard.site import build
from circuitbench.leaderboard.submit import SUBMISSION_FORMAT, accept, validate
from circuitbench.results.store import read_unit, unit_files

ROOT = Path(__file__).resolve().parents[1]  # baselines/
TWINS = {"tiny-sparse": "tiny-dense"}
"""Each bundled sparse model's dense twin (same data, shape and steps; `baselines/models/*/train_meta.json`)."""


def metadata(model: str, method: str, hyperparameters: dict, validation: dict | None = None) -> dict:
    """The submission.json of a bundled model and method.

    `validation` is `circuitbench val-loss`'s block (default: the model card's loss, as reported).
    """
    train = json.loads((ROOT / "models" / model / "train_meta.json").read_text())
    adapter = circuitbench.load_model(model, device="cpu")
    dense = bool(train["config"]["dense"])
    return {
        "submission_format": SUBMISSION_FORMAT,
        "model": {"name": model, "hub_id": None, "revision": None,
                  "weights_sha256": adapter.provenance["weights_sha256"], "kind": "dense" if dense else "sparse",
                  "dense_twin": TWINS.get(model)},
        "validation": validation or {"loss": train["val_loss"], "measured_by": "submitter",
                                     "corpus": f"circuitbench pypi corpus, held-out windows (sha256 "
                                               f"{train['corpus_hash'][:16]})"},
        "method": {"name": method, "hyperparameters": hyperparameters},
        "submitter": "circuitbench maintainers",
        "description": (f"The bundled {model} reference model ({'dense' if dense else 'weight-sparse'}, "
                        f"{train['config']['n_layer']} layers, d_model {train['config']['d_model']}, "
                        f"{train['tokens_seen']:,} training tokens) with {method}, every task, mean ablation, "
                        "seed 0: `circuitbench compare` defaults."),
    }


def main(argv: list[str] | None = None) -> int:
    """Write the metadata, accept every baseline submission, build the site."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--board", type=Path, default=ROOT.parent / "leaderboard")
    p.add_argument("--reported-loss", action="store_true",
                   help="use the model cards' validation loss (as reported) instead of measuring it with "
                        "`circuitbench val-loss` (which needs the pypi corpus: a download and about 10 minutes)")
    args = p.parse_args(argv)
    found: dict[tuple[str, str], dict] = {}
    for path in unit_files(args.results):
        u = read_unit(path)[2].unit
        found.setdefault((u.model.name, u.method), dict(u.method_kwargs))
    if not found:
        print(f"no units under {args.results}; run the two compare commands first", file=sys.stderr)
        return 1
    out = ROOT / "submissions"
    out.mkdir(exist_ok=True)
    measured: dict[str, dict] = {}
    for (model, method), hp in sorted(found.items()):
        if model not in measured and not args.reported_loss:
            from circuitbench.train.valloss import measure

            measured[model] = measure(model, "pypi", 256, show_progress=False)  # the board's "measured by circuitbench"
            print(f"{model}: validation loss {measured[model]['loss']} (circuitbench val-loss)")
        meta_path = out / f"{model}.{method}.json"
        meta_path.write_text(json.dumps(metadata(model, method, hp, measured.get(model)), indent=2, sort_keys=True)
                             + "\n")
        report = validate(args.results, meta_path, args.board)
        if not report.ok and any("duplicate of accepted submission" in q for q in report.problems) \
                and len(report.problems) == 1:
            print(f"{model} / {method}: already on the board ({report.content_hash[:16]})")
            continue
        try:
            dest = accept(args.results, meta_path, args.board)
        except CircuitbenchError as err:
            print(f"{model} / {method}: {err}", file=sys.stderr)
            return 1
        print(f"{model} / {method}: accepted, {report.units} units -> {dest}")
    site = build(args.board)
    print(f"site: {site / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
