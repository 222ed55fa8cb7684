"""Training reference models: the weight-sparse recipe (and its dense twin), the corpus, the tokenizer, cards.

`config` (every setting, importable without torch), `recipe` (top-|w| projection, L0 and AbsTopK schedules,
lr scaling), `loop` (`train`: one step, exact resume, dense-to-sparse start, distillation), `data`/`packages`/
`corpus` (the pinned corpus, tokenized and cached), `tokenizer`, `card` (the model card and task table),
`valloss` (`circuitbench val-loss`), `state` (checkpoints, split when large), `release` (the released
model). May import the ground floor, `corpus`, `models/`, `tasks/` and `circuits/`; nothing in the package imports it
but the CLI (and the scripts in `benchmarks/` and `baselines/`).
"""
