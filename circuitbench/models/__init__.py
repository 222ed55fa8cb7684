"""Models behind one adapter protocol (`protocols.ModelAdapter`): the same node sites for every library.

`sparse_gpt`/`native` (the circuit-sparsity GPT and its released format), `hf`/`hf_hooks`/`hf_load`
(transformers: the adapter, its hooks, loading a directory), `tlens` (TransformerLens), `external` (model
objects and FILE.py:FUNCTION factories), `sae/` (spliced SAEs: the autoencoder, files, releases, matching,
the adapter), `hub` (bundled names, directories and Hub ids), `checkpoint`/`config`/`tokenizer` (files).
May import the ground floor only (`errors`, `files`, `validation`, `hardware`, `protocols`); never
`tasks/`, `circuits/`, `runs/` or `results/`.
"""
