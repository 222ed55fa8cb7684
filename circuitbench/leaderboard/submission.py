"""The submission format: `submission.json`, documented and versioned.

A submission is one model and one method: the units of a results directory written by `circuitbench run`
or `compare` (units, circuits, edge tables) that belong to that model and method, plus a metadata file,
`submission.json`. Units of other models or methods in the same directory are left out (and counted), so
one `compare` folder gives one submission per method:

```json
{
  "submission_format": "1",
  "model": {"name": "tiny-sparse", "hub_id": null, "revision": null, "weights_sha256": "...",
            "kind": "sparse", "dense_twin": "tiny-dense"},
  "validation": {"loss": 3.91, "corpus": "circuitbench pypi (sha256 ...)"},
  "method": {"name": "learned_mask", "hyperparameters": {"steps": 400}},
  "submitter": "Ada Lovelace",
  "description": "What was run, on what, and why."
}
```

`model.kind` (`dense`, `sparse` or `sae`) is what the board filters by, and `model.dense_twin` names the
dense model trained on the same data that a sparse one is compared with (the frontier plot links them).
`validation.loss` is finite and above 0; `validation.measured_by` is `circuitbench` when the block is the
output of `circuitbench val-loss` (with the weights hash it measured, which must be the model's), else
`submitter`, and the board says which.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SUBMISSION_FORMAT = "1"
META_FILE = "submission.json"


class ModelInfo(BaseModel):
    """The submitted model."""

    model_config = ConfigDict(extra="forbid")
    name: str
    hub_id: str | None = None
    revision: str | None = None
    weights_sha256: str
    kind: Literal["dense", "sparse", "sae"] | None = None
    """Dense, weight-sparse, or dense with SAEs spliced in (what the board filters by)."""
    dense_twin: str | None = None
    """For a sparse model: the board name of the dense model trained alike, linked in the frontier plot."""


class Validation(BaseModel):
    """Validation loss on a named corpus, when known, and who measured it."""

    model_config = ConfigDict(extra="forbid")
    loss: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Mean next-token loss (nats per token): finite and above 0."""
    corpus: str | None = None
    measured_by: Literal["circuitbench", "submitter"] = "submitter"
    """`circuitbench`: the number is the output of `circuitbench val-loss` (which writes this block, with the
    weights hash it measured); `submitter`: reported by the submitter. The board shows which."""
    weights_sha256: str | None = None
    """With measured_by circuitbench: the weights `circuitbench val-loss` measured (must be the model's)."""


class MethodInfo(BaseModel):
    """The circuit-finding method and its hyperparameters."""

    model_config = ConfigDict(extra="forbid")
    name: str
    hyperparameters: dict[str, Any] = {}


class SubmissionMeta(BaseModel):
    """`submission.json`."""

    model_config = ConfigDict(extra="forbid")
    submission_format: str
    model: ModelInfo
    validation: Validation = Validation()
    method: MethodInfo
    submitter: str
    description: str
