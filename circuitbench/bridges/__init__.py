"""Bridges between a dense model and a weight-sparse model (Gao et al. 2025, section on bridges).

At every residual location both models share (before each attention block, before each MLP block, and the
final residual) a bridge holds a linear encoder dense -> sparse, followed by AbsTopK, and a linear decoder
sparse -> dense. They are trained so that a hybrid forward pass (one model up to a location, through the
bridge, the other model after it) keeps the dense model's next-token distribution, and so that each map
predicts the other model's residual (normalised MSE both ways).

- `bridge`: the `Bridges` module, its files (`bridges.safetensors`, `bridge_config.json`, a card) and the
  checks that refuse models that cannot be bridged.
- `losses`: the losses, shared by `bridge train` (both models frozen) and `circuitbench train --bridge-to`
  (the sparse model trained with its bridges against a frozen dense model).
- `fit`: `bridge train`'s loop, with resume.
- `measure`: `bridge eval`: per location NMSE both ways, and the loss and task accuracy of each hybrid pass
  against the dense model alone and against replacing the residual by its mean.
- `steer`: `bridge steer`: move a sparse circuit's separating nodes towards the other side of the task's
  contrast, decode the change into the dense model, and measure its answer.
"""
