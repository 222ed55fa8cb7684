"""Running units: settings to units, the one loop that skips, computes, writes and reduces, and its drivers.

`config` (`RunOptions`, `RunConfig` -> units), `runner` (the loop, `run`: a sweep of one configuration; SAE
splicing), `sweep` (a YAML grid), `compare` (several methods on one model), `executors` (local, Ray),
`claims` (one run per unit at a time), `saved` (show, re-evaluate, export saved circuits). May import the
ground floor, `tasks/`, `models/`, `results/` and `circuits/`.
"""
