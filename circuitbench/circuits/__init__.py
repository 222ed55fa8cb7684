"""The algorithms: node indexes and gates, ablation values, methods, the search, curves, edges, the evaluator.

`masks` (the flat gate vector over every site; `circuit_of` builds a saved circuit), `ablation` (mean,
task-mean, zero, counterfactual values), `methods/` (the registry and the capability protocols: learned mask,
attribution, patching, random), `problem` (a task on a model with gates), `search` (bisection for the
smallest circuit), `curves` (MIB's faithfulness curves and areas), `metrics`, `edges` (the one definition of
an edge), `evaluate` (one unit, in phases). May import the ground floor (`errors`, `files`, `validation`,
`hardware`, `protocols`), `corpus`, `tasks/` and `results/`; never `models/` (a model is a `ModelAdapter`),
`runs/` or anything above.
"""
