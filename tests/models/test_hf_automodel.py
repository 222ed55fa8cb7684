"""A circuitbench model folder loads in transformers as openai/circuit-sparsity does (config.json + remote code)."""

import shutil

import pytest
import torch

import circuitbench
from circuitbench.models.hf_files import FILES, write_hf_files
from circuitbench.models.hub import bundled_models


@pytest.mark.parametrize("name", ["tiny-sparse", "tiny-dense"])
def test_automodel_gives_the_native_logits_and_autotokenizer_the_native_tokens(name):
    import transformers

    folder = bundled_models()[name]
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    native = circuitbench.load_model(name, device="cpu", dtype="float32")
    text = "def area(r):\n    return 3.14 * r * r\n\nfor x in items:"
    ids = tok(text, return_tensors="pt").input_ids
    assert ids[0].tolist() == native.tokenizer.encode(text)
    with torch.no_grad():
        theirs, ours = model(ids).logits, native.model(ids)
    assert theirs.shape == ours.shape == (1, ids.shape[1], 2048)
    assert torch.allclose(theirs, ours, atol=1e-4, rtol=0)
    assert model.config.model_type == "circuitbench_gpt" and tok.eos_token == "<|endoftext|>"
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    greedy = ids
    for _ in range(3):  # the same tokens, one greedy step at a time through the native model
        with torch.no_grad():
            greedy = torch.cat([greedy, native.model(greedy)[:, -1:].argmax(-1)], dim=1)
    assert out.tolist() == greedy.tolist()


def test_the_bundled_folders_carry_the_files_their_configs_write(tmp_path):
    for name, folder in bundled_models().items():
        copy = tmp_path / name
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns(*FILES))
        write_hf_files(copy)
        for f in FILES:
            assert (copy / f).read_bytes() == (folder / f).read_bytes(), (name, f)
