"""The shared loop: (model, tasks, method) -> smallest circuits, measured and written as result units."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

import circuitbench
from circuitbench.circuits.ablation import AblationKind, corpus_mean, task_mean
from circuitbench.circuits.masks import NodeIndex, keep_top
from circuitbench.circuits.methods import Method, get_method
from circuitbench.circuits.metrics import Scores, count_edges, count_nodes, faithfulness, score
from circuitbench.circuits.problem import Calibration, Problem, Rows, fit_calibration
from circuitbench.circuits.search import smallest_k
from circuitbench.errors import CircuitbenchError
from circuitbench.models.adapter import ModelAdapter
from circuitbench.models.sae import SAEAdapter, load_saes, loss_recovered
from circuitbench.results.schema import Provenance
from circuitbench.results.store import read_unit, unit_path, write_summary, write_unit

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """What `circuitbench run` does; every field is a CLI flag."""

    model: str = "tiny-sparse"
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `model` is a Hub id."""
    trust_remote_code: bool = False
    """Let a Hub repository's own model code run (--trust-remote-code); never implied."""
    saes: list[str] = field(default_factory=list)
    """SAE directories or Hub ids to splice into the model (`--sae`); its sites become their latents."""
    tasks: list[str] = field(default_factory=lambda: ["all"])
    method: str = "learned_mask"
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    target_loss: float = 0.15  # per-example scale (Gao et al. 2025)
    ablation: AblationKind = "mean"
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    out: Path = Path("results")
    force: bool = False
    min_accuracy: float = 0.9
    control: bool = True
    search_examples: int = 512
    """Train-split examples the bisection evaluates (both members of each pair)."""
    calibrate: bool = False
    """Fit a scale and shift of the final logits to each circuit (16 LBFGS steps) before scoring it."""
    show_progress: bool = True


def _git_commit() -> str | None:
    try:
        root = Path(circuitbench.__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _corpus_windows(adapter: ModelAdapter, n: int = 64, ctx: int = 128) -> tuple[Tensor, str]:
    """Windows of the local Python corpus (held-out split) in the model's tokenizer, and its key."""
    from circuitbench.train.corpus import collect_corpus

    corpus = collect_corpus()
    ctx = min(ctx, getattr(getattr(adapter, "config", None), "block_size", ctx))
    ids: list[int] = []
    for text in corpus.val_texts:
        ids.extend(adapter.tokenizer.encode(text))
        if len(ids) >= n * ctx:
            break
    usable = len(ids) // ctx
    if usable == 0:
        raise CircuitbenchError("the corpus is too small for mean ablation; use --ablation task-mean")
    windows = torch.tensor(ids[: usable * ctx]).view(usable, ctx)
    return windows, f"{corpus.hash}|{adapter.tokenizer.name}|{ctx}"


class _CorpusMean:
    """The corpus-mean ablation, computed on first use: a run whose tasks are all unsolved needs none."""

    def __init__(self, adapter: ModelAdapter, index: NodeIndex) -> None:
        self.adapter, self.index = adapter, index
        self.key: str | None = None
        self._means: Tensor | None = None

    def __call__(self) -> Tensor:
        if self._means is None:
            windows, self.key = _corpus_windows(self.adapter)
            self._means = corpus_mean(self.adapter, self.index, windows.to(self.adapter.device), self.key)
        return self._means


class _Phases:
    """Wall time per phase of one task, recorded as `time.<phase>_s` measurements."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def rows(self) -> list[tuple[str, str, float]]:
        return [("", f"time.{k}_s", v) for k, v in self.seconds.items()]


def _circuit_scorer(
    problem: Problem, rows: Rows, calibrate: bool
) -> Callable[[Tensor], tuple[Scores, Calibration | None]]:
    """Scores of a gate vector on `rows`, after fitting a calibration to them when asked."""

    def at(gates: Tensor) -> tuple[Scores, Calibration | None]:
        two = problem.two_logits(rows, gates)
        if not calibrate:
            return score(two), None
        cal = fit_calibration(two, rows)
        return score(cal.apply(two, rows)), cal

    return at


def resolve_tasks(names: list[str]) -> list[str]:
    """Expand 'all' and check every name (NAME:inverted included) exists."""
    from circuitbench.tasks.load import get_task, spec_names

    out: list[str] = []
    for name in names:
        if name == "all":
            out.extend(spec_names())
        else:
            get_task(name)  # raises TaskError with a did-you-mean
            out.append(name)
    return list(dict.fromkeys(out))


def geometric_means(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """Geometric means of nodes and edges over solved tasks (the paper's headline is edges)."""
    from circuitbench.results.report import geomean

    solved = [s for s in summaries if s.get("status") == "solved"]
    out = {"solved": float(len(solved)), "tasks": float(len(summaries))}
    for key in ("nodes", "edges"):
        out[f"geomean_{key}"] = geomean([int(s[key]) for s in solved])
    return out


def _check_same_setup(path: Path, done: Provenance, adapter: ModelAdapter, method: Method, cfg: RunConfig,
                      task_hash: str) -> None:
    """Refuse to reuse a finished unit computed from other weights, task examples or settings.

    A rerun into the same --out skips finished work; that is only right when the work would be the same.

    Raises:
        CircuitbenchError: naming the file, what differs, and the two ways out (--force or another --out).
    """
    now = {"weights_sha256": adapter.provenance.get("weights_sha256"), "task_hash": task_hash,
           "method_kwargs": method.hyperparameters(), "target_loss": cfg.target_loss, "ablation": cfg.ablation}
    before = {k: getattr(done, k) for k in now}
    if done.calibrate != cfg.calibrate:
        now["calibrate"], before["calibrate"] = cfg.calibrate, done.calibrate
    differs = [f"{k} (then {before[k]!r}, now {now[k]!r})" for k in now if before[k] != now[k]]
    if differs:
        raise CircuitbenchError(
            f"{path}: finished earlier with a different setup: {'; '.join(differs)}. Rerun with --force to "
            "replace it, or choose another --out to keep both."
        )


def run(cfg: RunConfig, adapter: ModelAdapter | None = None) -> list[dict[str, Any]]:
    """Find, measure and write the circuit of every task; skip units already in `cfg.out`.

    Returns:
        One summary row per (task, method, seed), finished now or earlier.
    """
    from circuitbench.tasks.encode import encode_task
    from circuitbench.tasks.load import get_task

    tasks = resolve_tasks(cfg.tasks)
    method = get_method(cfg.method, **cfg.method_kwargs)
    adapter = adapter or circuitbench.load_model(cfg.model, device=cfg.device, dtype=cfg.dtype, revision=cfg.revision,
                                                 trust_remote_code=cfg.trust_remote_code)
    if cfg.saes:  # the SAE-augmented model's results are filed under a name of their own
        adapter = load_saes(adapter, cfg.saes)
        cfg = dataclasses.replace(cfg, model=cfg.model + adapter.suffix)
    index = NodeIndex.of(adapter)
    corpus = _CorpusMean(adapter, index)
    summaries: list[dict[str, Any]] = []
    bar = tqdm(tasks, desc="tasks", disable=not cfg.show_progress)
    for task in bar:
        bar.set_postfix_str(task)
        path = unit_path(cfg.out, cfg.model, task, method.name, cfg.seed)
        spec = get_task(task)
        if path.is_file() and not cfg.force:
            _, done, done_prov = read_unit(path)
            _check_same_setup(path, done_prov, adapter, method, cfg, spec.content_hash)
            summaries.append(done)
            log.info("%s: done already (%s); --force recomputes", task, path)
            continue
        train = encode_task(spec, adapter.tokenizer, "train")
        test = encode_task(spec, adapter.tokenizer, "test")
        started, t0 = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()
        rows, summary = measure_task(adapter, index, method, cfg, train, test, corpus)
        summary["wall_s"] = time.perf_counter() - t0
        prov = Provenance(
            circuitbench_version=circuitbench.__version__, git_commit=_git_commit(), model=cfg.model,
            model_revision=adapter.provenance.get("commit") or adapter.provenance.get("revision"),
            weights_sha256=adapter.provenance.get("weights_sha256"), task=task, task_hash=train.task_hash,
            method=method.name, method_kwargs=method.hyperparameters(), target_loss=cfg.target_loss,
            ablation=cfg.ablation, ablation_corpus=corpus.key, seed=cfg.seed,
            device=str(adapter.device), dtype=str(adapter.dtype).removeprefix("torch."),
            started_at=started, wall_s=summary["wall_s"], calibrate=cfg.calibrate, saes=adapter.provenance.get("saes"),
        )
        base = dict(model=cfg.model, task=task, task_hash=train.task_hash, method=method.name, seed=cfg.seed)
        write_unit(path, [dict(base, split=s, metric=m, value=float(v)) for s, m, v in rows], summary, prov)
        summaries.append(summary)
    from circuitbench.results.report import collect

    write_summary(cfg.out, collect(cfg.out))  # every unit in the directory: several models may share it
    return summaries


def measure_task(
    adapter: ModelAdapter,
    index: NodeIndex,
    method: Method,
    cfg: RunConfig,
    train_enc: Any,
    test_enc: Any,
    corpus: _CorpusMean,
) -> tuple[list[tuple[str, str, float]], dict[str, Any]]:
    """Measure one task: full model, circuit search, sufficiency, necessity, faithfulness, control."""
    train, test = Rows.of(train_enc, adapter.device), Rows.of(test_enc, adapter.device)
    summary: dict[str, Any] = dict(model=cfg.model, task=test_enc.task, method=method.name, seed=cfg.seed,
                                   test_examples=len(test), dropped_examples=test_enc.n_dropped)
    rows: list[tuple[str, str, float]] = [("test", "examples", len(test)), ("test", "dropped", test_enc.n_dropped),
                                          ("train", "examples", len(train))]
    if len(train) < 2 or len(test) < 2:
        summary["status"] = "unsolved"
        log.warning("%s: no usable examples for this tokenizer (%s)", test_enc.task, test_enc.drop_reasons)
        return rows, summary
    phases = _Phases()
    # the search sees a fixed, seeded subset of the train split, whole pairs only
    gen = torch.Generator().manual_seed(cfg.seed)
    n_pairs = min(len(train) // 2, cfg.search_examples // 2)
    pairs = torch.randperm(len(train) // 2, generator=gen)[:n_pairs]
    search_rows = train.take(torch.stack([2 * pairs, 2 * pairs + 1], 1).flatten().to(adapter.device))
    # the full model ignores ablation values; they are computed only for tasks that get pruned
    problem = Problem(adapter, index, torch.zeros(index.value_size, device=adapter.device), train, cfg.seed,
                      cfg.show_progress)
    with phases("full_model"):
        full_test, full_train = problem.scores(test, None), problem.scores(search_rows, None)
    rows += [("test", k, v) for k, v in full_test.as_dict("full").items()]
    rows += [("train", k, v) for k, v in full_train.as_dict("full").items()]
    if isinstance(adapter, SAEAdapter):  # SAEBench's loss recovered, on every task, pruned or not
        rows += [("test", k, v) for k, v in loss_recovered(adapter, test).items()]
    summary.update(full_accuracy=full_test.accuracy, full_loss=full_test.loss)
    if full_test.accuracy < cfg.min_accuracy:
        summary["status"] = "unsolved"
        log.info("%s: full-model accuracy %.3f < %.2f; not pruned", test_enc.task, full_test.accuracy,
                 cfg.min_accuracy)
        return rows + phases.rows(), summary

    with phases("ablation_values"):
        if cfg.ablation == "mean":
            ablation = corpus()
        elif cfg.ablation == "task-mean":
            ablation = task_mean(adapter, index, train)
        else:
            ablation = torch.zeros(index.value_size)
    problem = dataclasses.replace(problem, ablation=ablation.to(adapter.device))
    # The circuit must reach the target loss, or the full model's own loss where the full model is weaker than
    # the target (it solves the task, just less confidently): keeping every node always meets that.
    target = max(cfg.target_loss, full_train.loss)
    rows.append(("train", "target.loss", target))
    summary["target_loss"] = target
    on_search = _circuit_scorer(problem, search_rows, cfg.calibrate)
    with phases("method"):
        scores = method.node_scores(problem)
    with phases("search"):
        found = smallest_k(lambda k: on_search(keep_top(scores, k))[0].loss, index.size, target)
        gates = keep_top(scores, found.k)
        calibration = on_search(gates)[1]
    sizes = {**count_nodes(index, gates), **count_edges(adapter, index, gates)}
    rows += [("", k, v) for k, v in sizes.items()]
    rows += [("train", "circuit.loss", found.loss), ("train", "search.evaluations", found.evaluations)]
    with phases("measure"):
        suff_two = problem.two_logits(test, gates)
        suff = score(suff_two)
        if calibration is not None:
            # the circuit is scored with the calibration fitted to it on the train split
            rows += [("test", k, v) for k, v in suff.as_dict("sufficiency_uncalibrated").items()]
            rows += [("", "calibration.scale", calibration.scale)]
            rows += [("", f"calibration.shift.{t}", v) for t, v in calibration.shift.items()]
            suff = score(calibration.apply(suff_two, test))
        nec = problem.scores(test, 1.0 - gates)
        empty = problem.scores(test, torch.zeros(index.size, device=adapter.device))
    rows += [("test", k, v) for k, v in {**suff.as_dict("sufficiency"), **nec.as_dict("necessity"),
                                          **empty.as_dict("empty")}.items()]
    f = faithfulness(suff.logit_diff, full_test.logit_diff, empty.logit_diff)
    rows.append(("test", "faithfulness", f))
    summary.update(
        status="solved" if found.met_target else "target_missed", nodes=sizes["nodes"], edges=sizes["edges"],
        circuit_train_loss=found.loss, sufficiency_loss=suff.loss, sufficiency_accuracy=suff.accuracy,
        necessity_loss=nec.loss, necessity_accuracy=nec.accuracy, faithfulness=f,
    )
    if cfg.control:
        # Drori 2026: pruning can "solve" nonsense; the inverted-label control measures how easily.
        control = dataclasses.replace(problem, train=train.swapped())
        c_search = search_rows.swapped()
        on_control = _circuit_scorer(control, c_search, cfg.calibrate)
        with phases("control"):
            c_scores = method.node_scores(control)
            c_found = smallest_k(lambda k: on_control(keep_top(c_scores, k))[0].loss, index.size, target)
        rows += [("", "control.nodes", c_found.k), ("train", "control.loss", c_found.loss),
                 ("", "control.met_target", float(c_found.met_target))]
        summary.update(control_nodes=c_found.k, control_met_target=c_found.met_target)
    return rows + phases.rows(), summary
