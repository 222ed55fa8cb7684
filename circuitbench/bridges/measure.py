"""`circuitbench bridge eval`: how much of each model a bridge carries, per location.

On held-out corpus windows, per location:
- `nmse_enc` / `nmse_dec`: the encoder's prediction of the sparse residual and the decoder's of the dense one
  (normalised MSE: 0 exact, 1 no better than the target's mean);
- next-token loss of the dense model alone (`loss_dense`), the sparse model alone (`loss_sparse`), the two
  hybrid passes (`loss_s2d`: sparse up to the location, decoded, dense after it; `loss_d2s`: dense up to it,
  encoded, sparse after it), and the dense model with its residual there replaced by its mean over the
  windows at each position (`loss_mean`): a hybrid pass that does worse than that carries no information.
On the tasks' test pairs (the first `pairs` of each task), the accuracy of the same passes, averaged over tasks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from circuitbench.bridges.bridge import Bridges
from circuitbench.bridges.losses import nmse, record, replaced
from circuitbench.protocols import Batch, ModelAdapter

COLUMNS = ["location", "nmse_enc", "nmse_dec", "loss_dense", "loss_sparse", "loss_s2d", "loss_d2s", "loss_mean",
           "acc_dense", "acc_sparse", "acc_s2d", "acc_d2s", "acc_mean", "carries"]


def _ce(logits: Tensor, y: Tensor) -> float:
    return float(F.cross_entropy(logits.flatten(0, 1).float(), y.flatten().to(logits.device), reduction="sum"))


@torch.no_grad()
def _means(dense: ModelAdapter, locations: list[str], x: Tensor, chunk: int) -> dict[str, Tensor]:
    """Per location, the dense residual's mean over windows at each position: [T, d]."""
    sums: dict[str, Tensor] = {}
    for i in range(0, len(x), chunk):
        _, acts = dense.run_with_cache(x[i : i + chunk].to(dense.device), locations)
        for loc in locations:
            s = acts[loc].float().sum(0)
            sums[loc] = s if loc not in sums else sums[loc] + s
    return {loc: v / len(x) for loc, v in sums.items()}


def _mean_at(mean: Tensor, T: int) -> Tensor:
    """The per-position mean for T positions (positions past the windows' length take the overall mean)."""
    if T <= mean.shape[0]:
        return mean[:T]
    return torch.cat([mean, mean.mean(0, keepdim=True).expand(T - mean.shape[0], -1)])


@torch.no_grad()
def evaluate_bridges(bridges: Bridges, dense: ModelAdapter, sparse: ModelAdapter, vx: Tensor, vy: Tensor,
                     tasks: list[str], pairs: int = 32, chunk: int = 8, show_progress: bool = True
                     ) -> list[dict[str, Any]]:
    """One row per location with the columns of `COLUMNS` (module docstring).

    Args:
        bridges: the bridges (eval mode).
        dense: the dense model they join.
        sparse: the sparse model they join.
        vx: held-out windows [N, T].
        vy: their next tokens [N, T].
        tasks: task names whose test pairs give the accuracies (none: accuracies are NaN).
        pairs: test pairs per task (the first ones).
        chunk: windows per forward pass.
        show_progress: show progress bars.
    """
    locs = bridges.locations
    means = _means(dense, locs, vx, chunk)
    n_tok = vy.numel()
    sums = {loc: dict.fromkeys(("loss_s2d", "loss_d2s", "loss_mean"), 0.0) for loc in locs}
    pred: dict[str, dict[str, list[Tensor]]] = {loc: {"enc": [], "dec": [], "s": [], "d": []} for loc in locs}
    loss_dense = loss_sparse = 0.0
    steps = tqdm(range(0, len(vx), chunk), desc="bridge eval: corpus", disable=not show_progress, leave=False)
    for i in steps:
        x, y = vx[i : i + chunk].to(dense.device), vy[i : i + chunk]
        dl, da = record(dense.forward, x, locs)
        sl, sa = record(sparse.forward, x, locs)
        loss_dense += _ce(dl, y)
        loss_sparse += _ce(sl, y)
        for loc in locs:
            e, d = bridges.encode(loc, da[loc]), bridges.decode(loc, sa[loc])
            p = pred[loc]
            p["enc"].append(e.flatten(0, 1).cpu())
            p["s"].append(sa[loc].flatten(0, 1).float().cpu())
            p["dec"].append(d.flatten(0, 1).cpu())
            p["d"].append(da[loc].flatten(0, 1).float().cpu())
            sums[loc]["loss_s2d"] += _ce(dense.forward(x, replaced(loc, d)), y)
            sums[loc]["loss_d2s"] += _ce(sparse.forward(x, replaced(loc, e)), y)
            mean = _mean_at(means[loc], x.shape[1]).to(dl.device)
            sums[loc]["loss_mean"] += _ce(dense.forward(x, replaced(loc, mean.expand(x.shape[0], -1, -1))), y)
    acc = _task_accuracies(bridges, dense, sparse, means, tasks, pairs, chunk, show_progress)
    rows = []
    for loc in locs:
        p = pred[loc]
        row: dict[str, Any] = {"location": loc,
                               "nmse_enc": float(nmse(torch.cat(p["enc"]), torch.cat(p["s"]))),
                               "nmse_dec": float(nmse(torch.cat(p["dec"]), torch.cat(p["d"]))),
                               "loss_dense": loss_dense / n_tok, "loss_sparse": loss_sparse / n_tok,
                               **{k: v / n_tok for k, v in sums[loc].items()}, **acc[loc]}
        row["carries"] = bool(row["loss_s2d"] < row["loss_mean"] and row["loss_d2s"] < row["loss_mean"])
        rows.append({k: row[k] for k in COLUMNS})
    return rows


def _task_accuracies(bridges: Bridges, dense: ModelAdapter, sparse: ModelAdapter, means: dict[str, Tensor],
                     tasks: list[str], pairs: int, chunk: int, show_progress: bool) -> dict[str, dict[str, float]]:
    """Per location, the accuracy of each pass on the tasks' first test pairs, averaged over the tasks."""
    from circuitbench.circuits.metrics import answer_logits
    from circuitbench.tasks.encode import encode_task
    from circuitbench.tasks.load import get_task

    locs = bridges.locations
    keys = ("acc_dense", "acc_sparse", "acc_s2d", "acc_d2s", "acc_mean")
    per_task: dict[str, dict[str, list[float]]] = {loc: {k: [] for k in keys} for loc in locs}
    for name in tqdm(tasks, desc="bridge eval: tasks", disable=not show_progress, leave=False):
        spec = get_task(name)
        enc = encode_task(spec, dense.tokenizer, "test", max_len=min(spec.max_tokens, dense.context_length or 10**9))
        if enc.n == 0:
            continue
        rows = Batch.of(enc).take(torch.arange(min(enc.n, 2 * pairs)))
        right: dict[str, dict[str, int]] = {loc: dict.fromkeys(keys, 0) for loc in locs}
        for part in rows.chunks(chunk * 4):
            x = part.tokens.to(dense.device)

            def correct(logits: Tensor, part: Batch = part) -> int:
                two = answer_logits(logits, part)
                return int((two[:, 0] > two[:, 1]).sum())

            dl, da = record(dense.forward, x, locs)
            sl, sa = record(sparse.forward, x, locs)
            base = {"acc_dense": correct(dl), "acc_sparse": correct(sl)}
            for loc in locs:
                r = right[loc]
                for k, v in base.items():
                    r[k] += v
                r["acc_s2d"] += correct(dense.forward(x, replaced(loc, bridges.decode(loc, sa[loc]))))
                r["acc_d2s"] += correct(sparse.forward(x, replaced(loc, bridges.encode(loc, da[loc]))))
                mean = _mean_at(means[loc], x.shape[1]).to(x.device).expand(x.shape[0], -1, -1)
                r["acc_mean"] += correct(dense.forward(x, replaced(loc, mean)))
        for loc in locs:
            for k in keys:
                per_task[loc][k].append(right[loc][k] / len(rows))
    return {loc: {k: (sum(v) / len(v) if v else float("nan")) for k, v in per_task[loc].items()} for loc in locs}
