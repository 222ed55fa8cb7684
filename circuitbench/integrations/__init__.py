"""Bridges to other harnesses.

`lm_eval_tasks`: the task specs as lm-evaluation-harness tasks (needs no lm-eval to export);
`lm_eval`: the lm-eval model `circuitbench` (imports lm-eval; `pip install 'circuitbench[lm-eval]'`).
"""
