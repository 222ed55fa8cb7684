"""Task specs as lm-evaluation-harness tasks: per task a YAML config and local JSON Lines, plus a group.

circuitbench scores only the FIRST token of each completion, at the last prompt position, and that
token depends on the tokenizer; so an export is made for one tokenizer. Each example becomes a
two-way `multiple_choice` doc whose choices are the two candidate tokens (decoded), with no target
delimiter, and the correct choice at index `side` (0 or 1, alternating within every pair) so a
constant or tied prediction scores chance, not 1.0. A model's loglikelihood of a choice is then
log-softmax(logits)[token] at the last prompt position; it differs from circuitbench's two-way
comparison by a constant shared by both choices, so accuracy and logit difference agree exactly.

lm-eval's own models (`hf`, `vllm`, ...) encode prompt + choice together and split at the prompt's
token count (docs/design.md, Traps); where the tokenizer merges across that boundary the choice's
tokens come out wrong, and a choice that vanishes into the prompt scores log-probability 0.0. Every
exported example is therefore checked, for both choices, that

- the prompt's ids are a prefix of prompt + completion (circuitbench's own check, `tasks/encode.py`),
- the decoded choice encodes alone to exactly its token (models that encode the two separately),
- prompt + decoded choice encodes to exactly prompt ids + token (models that encode them together),
- the prompt does not end in whitespace (lm-eval moves trailing whitespace into the continuation),
- a prompt longer than the spec's `max_tokens` is cut, as text, to exactly its last `max_tokens`
  tokens (what circuitbench scores), so a model's own truncation cannot differ.

A pair with a failing side is dropped whole, counted by reason in the printed report and in the
task's YAML `metadata`. This module does not import lm_eval: exporting needs only the tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from circuitbench.errors import TaskError
from circuitbench.models.tokenizer import Tokenizer
from circuitbench.tasks.encode import DROP_REASONS, encode_pairs
from circuitbench.tasks.pairs import Pair, make_pairs
from circuitbench.tasks.spec import SplitName, TaskSpec

log = logging.getLogger(__name__)

GROUP = "circuitbench"
"""The lm-eval group covering every exported task."""

TASK_PREFIX = "circuitbench_"
"""lm-eval task names are `circuitbench_<task>`, clear of lm-eval's own task names."""

EXPORT_DROP_REASONS: dict[str, str] = {
    "choice_not_one_token": "a candidate token, decoded, does not encode back to that one token alone",
    "choice_boundary_merge": "prompt + a decoded candidate token does not encode to prompt ids + that token "
    "(lm-eval's hf model would score the wrong tokens)",
    "prompt_trailing_whitespace": "the prompt ends in whitespace, which lm-eval's hf model moves into the "
    "continuation",
    "truncation_roundtrip": "the prompt is longer than max_tokens and its last max_tokens tokens do not "
    "decode to text that encodes back to them",
}
"""Why the lm-eval export drops a pair beyond `tasks.encode.DROP_REASONS`, by key."""

UTILS_PY = '''\
"""Written by `circuitbench export lm-eval`: accuracy and logit difference of a two-choice task.

Each doc's choices are the two candidate tokens circuitbench scores; `target` is the index of the
correct one. lm-eval passes one (loglikelihood, is_greedy) per choice. The loglikelihoods share the
log-sum-exp over the vocabulary, so their difference is the logit difference of the two tokens.
"""


from pathlib import Path


def load_docs(data_file, split, **_metadata):
    """The task's docs, read from beside this file, so that the exported folder can be moved anywhere."""
    import datasets

    docs = datasets.load_dataset("json", data_files=str(Path(__file__).parent / data_file), split="train")
    return datasets.DatasetDict({split: docs})


def process_results(doc, results):
    """Accuracy (correct choice strictly more likely; a tie is wrong) and logit difference."""
    lls = [ll for ll, _ in results]
    gold = int(doc["target"])
    diff = float(lls[gold] - lls[1 - gold])
    return {"acc": float(diff > 0), "logit_diff": diff}
'''

_METRICS = [
    {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
    {"metric": "logit_diff", "aggregation": "mean", "higher_is_better": True},
]


@dataclass(frozen=True)
class ExportedTask:
    """One task's lm-eval docs for a tokenizer, and what was dropped."""

    task: str
    """circuitbench task name (`NAME:inverted` for the control)."""
    split: str
    """The split exported."""
    docs: list[dict[str, Any]]
    """One lm-eval doc per kept example (both members of each kept pair)."""
    n_total: int
    """Examples before dropping (2 per pair)."""
    drop_reasons: dict[str, int] = field(default_factory=dict)
    """Dropped examples by reason (keys of `DROP_REASONS` and `EXPORT_DROP_REASONS`)."""

    @property
    def lm_eval_name(self) -> str:
        """The task's name in lm-eval."""
        return TASK_PREFIX + self.task.replace(":", "_")

    @property
    def n_dropped(self) -> int:
        """Examples dropped."""
        return sum(self.drop_reasons.values())

    def report_row(self) -> dict[str, Any]:
        """One row of the export report."""
        return {
            "task": self.lm_eval_name,
            "split": self.split,
            "examples": self.n_total,
            "kept": len(self.docs),
            "dropped": self.n_dropped,
            "why": ", ".join(f"{n} {r}" for r, n in self.drop_reasons.items()) or "-",
        }


def _export_problem(tokenizer: Tokenizer, prompt: str, ids: list[int], max_len: int,
                    tokens: tuple[int, int]) -> tuple[str, str]:
    """The prompt text lm-eval gets (cut to the scored ids) and "" — or "" and why the example fails."""
    if len(ids) > max_len:
        ids = ids[-max_len:]
        prompt = tokenizer.decode(ids)
        if tokenizer.encode(prompt) != ids:
            return "", "truncation_roundtrip"
    if prompt != prompt.rstrip():
        return "", "prompt_trailing_whitespace"
    for tok in tokens:
        choice = tokenizer.decode([tok])
        if tokenizer.encode(choice) != [tok]:
            return "", "choice_not_one_token"
        if tokenizer.encode(prompt + choice) != ids + [tok]:
            return "", "choice_boundary_merge"
    return prompt, ""


def export_docs(pairs: Sequence[Pair], tokenizer: Tokenizer, max_len: int) -> ExportedTask:
    """lm-eval docs for pairs of one task and split, with circuitbench's and the export's checks.

    Args:
        pairs: The pairs (one task, one split), from `make_pairs`.
        tokenizer: The tokenizer of the model to be evaluated.
        max_len: Prompts are cut to their last `max_len` tokens, as `encode_task` does.

    Returns:
        The docs of every kept example, pair-major, and the drop counts by reason.

    Raises:
        TaskError: when pairs is empty or mixes tasks or splits.
    """
    enc = encode_pairs(pairs, tokenizer, max_len)
    by_id = {p.pair_id: p for p in pairs}
    reasons: Counter[str] = Counter(enc.drop_reasons)
    docs: list[dict[str, Any]] = []
    for k in range(0, enc.n, 2):  # rows are pair-major: 2k and 2k+1 are the two sides of one pair
        pair = by_id[int(enc.pair_id[k])]
        kept: list[dict[str, Any]] = []
        why = ""
        for row in (k, k + 1):
            side = int(enc.side[row])
            good, bad = int(enc.correct[row]), int(enc.incorrect[row])
            ids = tokenizer.encode(pair.prompts[side])  # encode_pairs keeps only the truncated ids
            prompt, why = _export_problem(tokenizer, pair.prompts[side], ids, max_len, (good, bad))
            if why:
                break
            # choices[i] is the candidate of answers[i], so the correct one sits at index `side`
            tokens = (good, bad) if side == 0 else (bad, good)
            kept.append({
                "task": pair.task, "split": pair.split, "pair_id": pair.pair_id, "side": side,
                "template": pair.template, "prompt": prompt,
                "choices": [tokenizer.decode([t]) for t in tokens], "target": side,
                "choice_tokens": list(tokens), "correct": pair.correct(side), "incorrect": pair.incorrect(side),
                "task_hash": pair.task_hash,
            })
        if why:
            reasons[why] += 2
            continue
        docs.extend(kept)
    exported = ExportedTask(enc.task, enc.split, docs, enc.n_total, dict(sorted(reasons.items())))
    if exported.n_dropped:
        log.warning("%s [%s]: lm-eval export dropped %d of %d examples (%s)", exported.task, exported.split,
                    exported.n_dropped, exported.n_total, exported.report_row()["why"])
    return exported


def tokenizer_sha256(tokenizer: Tokenizer) -> str:
    """A content hash of a tokenizer: its serialized form where it has one (tokenizers' JSON), else its vocabulary."""
    inner = getattr(tokenizer, "_tok", None)
    if inner is not None and hasattr(inner, "to_str"):
        blob = inner.to_str()
    else:
        blob = "\0".join(tokenizer.decode([i]) for i in range(tokenizer.vocab_size))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def task_config(exported: ExportedTask, data_file: str, tokenizer: Tokenizer) -> dict[str, Any]:
    """The lm-eval task config (without `custom_dataset` and `process_results`, which are YAML tags).

    `data_file` is relative to the exported folder: `utils.load_docs` reads it from beside itself.
    """
    return {
        "task": exported.lm_eval_name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_file": data_file, "split": exported.split},
        "test_split": exported.split,
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",
        "doc_to_choice": "choices",
        "doc_to_target": "target",
        # the choice is the token itself, leading space included: nothing goes in front of it
        "target_delimiter": "",
        "metric_list": _METRICS,
        "metadata": {
            "version": 1.0,
            "circuitbench_task": exported.task,
            "tokenizer": tokenizer.name,
            "tokenizer_sha256": tokenizer_sha256(tokenizer),
            "examples": exported.n_total,
            "kept": len(exported.docs),
            "drop_reasons": exported.drop_reasons,
        },
    }


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    tmp.replace(path)


def export_lm_eval(
    out: Path,
    specs: Sequence[TaskSpec],
    tokenizer: Tokenizer,
    split: SplitName = "test",
) -> list[ExportedTask]:
    """Write lm-eval task configs, their data and the `circuitbench` group into a directory.

    `lm_eval --include_path OUT --tasks circuitbench ...` then runs offline. Data paths in the
    YAML files are relative to OUT (`utils.load_docs` reads them), so the folder can be moved. Files
    of an earlier export (`circuitbench*.yaml`, `data/circuitbench_*.jsonl`) are replaced.

    Args:
        out: Output directory (created).
        specs: Tasks to export, in order.
        tokenizer: The tokenizer of the model to be evaluated: it fixes the candidate tokens.
        split: The split to export.

    Returns:
        Every task asked for, with its drop counts; a task that keeps no example gets no files.

    Raises:
        TaskError: when no task is given, or no task keeps any example.
    """
    if not specs:
        raise TaskError("no tasks to export; pass task names to --tasks, or `all`.")
    out = Path(out).resolve()
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob(f"{GROUP}*.yaml"), *data_dir.glob(f"{TASK_PREFIX}*.jsonl")]:
        old.unlink()
    _write_text(out / "utils.py", UTILS_PY)
    exported: list[ExportedTask] = []
    for spec in specs:
        task = export_docs(make_pairs(spec, split), tokenizer, spec.max_tokens)
        exported.append(task)
        if not task.docs:
            log.warning("%s [%s]: not exported: every example fails the boundary checks for tokenizer %s (%s)",
                        spec.name, split, tokenizer.name, task.report_row()["why"])
            continue
        data_file = data_dir / f"{task.lm_eval_name}.{split}.jsonl"
        _write_text(data_file, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in task.docs))
        config = yaml.safe_dump(task_config(task, data_file.relative_to(out).as_posix(), tokenizer), sort_keys=False,
                                allow_unicode=True)
        _write_text(out / f"{task.lm_eval_name}.yaml", config + "custom_dataset: !function utils.load_docs\n"
                    "process_results: !function utils.process_results\n")
    usable = [t.lm_eval_name for t in exported if t.docs]
    if not usable:
        raise TaskError(
            f"no task keeps any example for tokenizer {tokenizer.name}: every prompt/answer boundary fails the "
            "checks (see the warnings); this tokenizer cannot be evaluated on these tasks through lm-eval."
        )
    group = {
        "group": GROUP,
        "task": usable,
        "aggregate_metric_list": [
            {"metric": m["metric"], "aggregation": "mean", "weight_by_size": False} for m in _METRICS
        ],
        "metadata": {"version": 1.0, "tokenizer": tokenizer.name, "split": split},
    }
    _write_text(out / f"{GROUP}.yaml", yaml.safe_dump(group, sort_keys=False))
    log.info("wrote %d lm-eval task(s) and group %r to %s", len(exported), GROUP, out)
    return exported


def resolve_tokenizer(arg: str) -> Tokenizer:
    """A tokenizer from a `tokenizer.json`, a model directory, or a bundled model's name.

    Raises:
        TokenizerError: when the file or directory holds no tokenizer.
        ModelNotFoundError: when the argument is neither a path nor a bundled model.
    """
    from circuitbench.errors import TokenizerError
    from circuitbench.models.hub import resolve_model_dir
    from circuitbench.models.tokenizer import load_tokenizer_path

    path = Path(arg).expanduser()
    if not path.exists() and path.suffix == ".json":
        raise TokenizerError(f"{arg}: no such tokenizer file; give a tokenizer.json, a model directory, or a "
                             "bundled model name (tiny-sparse)")
    return load_tokenizer_path(path if path.exists() else resolve_model_dir(arg))


ALL_DROP_REASONS: dict[str, str] = {**DROP_REASONS, **EXPORT_DROP_REASONS}
"""Every reason an example can be missing from an lm-eval export."""
