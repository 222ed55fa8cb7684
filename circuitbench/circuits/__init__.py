"""The algorithms: node indexes and gates, ablation values, methods, the search, the evaluator, circuits, edges.

`masks` (the flat gate vector over every site), `ablation` (mean, task-mean, zero, counterfactual values),
`methods/` (the registry: learned mask, attribution, patching, random), `problem` (a task on a model with
gates), `search` (bisection for the smallest circuit), `curves` (MIB's faithfulness curves and areas),
`edges` (the one definition of an edge), `circuit` (the saved circuit), `evaluate` (one unit, end to end).
May import `protocols`, `models/`, `tasks/` and `results/files`.
"""
