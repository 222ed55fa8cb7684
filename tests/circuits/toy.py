"""A hand-built SparseGPT with a planted circuit, for tests with known answers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuitbench.models.config import GPTConfig
from circuitbench.models.native import SparseGPTAdapter
from circuitbench.models.sparse_gpt import SparseGPT
from circuitbench.models.tokenizer import MissingTokenizer

# Tokens 0/1 are the cue at the last position; 2/3 the answers (cue 0 -> 2, cue 1 -> 3); 4/5 fillers.
PLANTED = {("0.mlp.act_in", 0), ("0.mlp.post_act", 0), ("0.mlp.post_act", 1), ("0.mlp.resid_delta", 1)}


def toy_adapter() -> SparseGPTAdapter:
    """One layer, d_model 4: the cue is written to channel 0, read by neurons 0/1 (+/- the cue), whose
    difference is written to channel 1, which lm_head turns into the answer logits. Attention is zero;
    neurons 2/3 and channels 2/3 carry a filler-token distractor that never reaches the answers."""
    cfg = GPTConfig(block_size=8, vocab_size=6, n_layer=1, n_head=1, d_head=4, d_model=4, d_mlp=4,
                    rms_norm=True, bias=False, activation_type="gelu", tied_unembed=False)
    model = SparseGPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.h[0].ln_1.weight.fill_(1)
        model.transformer.h[0].ln_2.weight.fill_(1)
        model.transformer.ln_f.weight.fill_(1)
        wte = model.transformer.wte.weight
        wte[0, 0], wte[1, 0] = 1.0, -1.0
        wte[4, 2], wte[5, 2] = 1.0, -1.0
        fc = model.transformer.h[0].mlp.c_fc.weight  # [d_mlp, d_model]
        fc[0, 0], fc[1, 0], fc[2, 2], fc[3, 2] = 3.0, -3.0, 1.0, -1.0
        proj = model.transformer.h[0].mlp.c_proj.weight  # [d_model, d_mlp]
        proj[1, 0], proj[1, 1], proj[3, 2], proj[3, 3] = 1.0, -1.0, 1.0, 1.0
        lm = model.lm_head.weight  # [vocab, d_model]
        lm[2, 1], lm[3, 1] = 5.0, -5.0
        lm[4, 3], lm[5, 3] = 1.0, -1.0
    return SparseGPTAdapter(model, MissingTokenizer(None, 6), "toy")  # type: ignore[arg-type]


@dataclass
class ToyTask:
    tokens: torch.Tensor
    last: torch.Tensor
    correct: torch.Tensor
    incorrect: torch.Tensor


def toy_task(n_pairs: int = 64, seed: int = 0) -> ToyTask:
    """Pairs of 5-token prompts differing only in the final cue token."""
    gen = torch.Generator().manual_seed(seed)
    fill = torch.randint(4, 6, (n_pairs, 4), generator=gen)
    rows, correct, incorrect = [], [], []
    for i in range(n_pairs):
        for cue in (0, 1):
            rows.append(torch.cat([fill[i], torch.tensor([cue])]))
            correct.append(2 + cue)
            incorrect.append(3 - cue)
    tokens = torch.stack(rows)
    return ToyTask(tokens, torch.full((2 * n_pairs,), 4), torch.tensor(correct), torch.tensor(incorrect))
