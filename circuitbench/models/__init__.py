"""Models behind one adapter protocol (`protocols.ModelAdapter`): the same node sites for every library.

`sparse_gpt`/`native` (the circuit-sparsity GPT and its released format), `hf` (transformers), `tlens`
(TransformerLens), `external` (model objects and FILE.py:FUNCTION factories), `sae` (spliced SAEs), `hub`
(bundled names, directories and Hub ids), `checkpoint`/`config`/`tokenizer` (files). May import
`protocols`, `errors` and `hardware`; never `circuits/`, `runs/` or `results/`.
"""
