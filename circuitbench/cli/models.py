"""`inspect`, `train` and `val-loss`: looking at, training and scoring models."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from circuitbench.cli.common import (
    Subparsers,
    add_hub_flags,
)
from circuitbench.errors import CircuitbenchError


def add_inspect(sub: Subparsers) -> None:
    """Register `circuitbench inspect`."""
    p = sub.add_parser("inspect", help="describe a model: shapes, parameter counts, sparsity")
    p.add_argument("model", help="model directory, bundled name, or Hub id")
    add_hub_flags(p)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=_cmd_inspect)


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


def add_train(sub: Subparsers) -> None:
    """Register `circuitbench train`."""
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
    p.add_argument("--device", default=d["device"].default, help=d["device"].description)
    p.add_argument("--dense", action="store_true", help="dense twin: no weight or activation sparsity")
    for name in ("n_layer", "d_model", "n_head", "d_mlp", "ctx", "vocab_size", "batch_size", "max_steps", "seed",
                 "eval_every", "val_windows", "checkpoint_every", "stop_after", "threads"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=d[name].default,
                       help=(d[name].description or "").replace("%", "%%"))
    p.add_argument("--init-from", default=None, metavar="MODEL_DIR", help=d["init_from"].description)
    p.add_argument("--distill-from", default=None, metavar="MODEL_DIR", help=d["distill_from"].description)
    p.add_argument("--bridge-to", default=None, metavar="DENSE_DIR", help=d["bridge_to"].description)
    p.add_argument("--anneal-afrac", action="store_true", help=d["anneal_afrac"].description)
    for name in ("afrac", "weight_density", "lr", "warmup", "lr_decay", "weight_decay", "adam_eps",
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
    from circuitbench.train.loop import TrainConfig, train
    from circuitbench.train.release import META

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


def add_val_loss(sub: Subparsers) -> None:
    """Register `circuitbench val-loss`."""
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

