"""SAEs spliced into any model: the autoencoder, its files, SAELens releases, matching it to a model, the adapter.

One module per job: `autoencoder` (`SAE`: encode, decode), `files` (SAELens-format `cfg.json` and weights,
Hub ids), `releases` (`--sae RELEASE/ID` through sae-lens), `matching` (hook names, the model and weight
processing an SAE was trained on, direct paths between splices) and `adapter` (`SAEAdapter`, `load_saes`).
The package imports only `models` and the ground floor.

An SAE spliced in at hook point h replaces the activation x there by

    decode(latents) + error,    latents = encode(x),    error = x - decode(encode(x)),

with the error computed from the original x, so that with every latent and the error kept the model's
logits are the base model's (up to float rounding). The latents of each splice are one node site
(`{h}.sae`, kind "sae_latent", width d_sae); its error is ONE node (`{h}.sae_error`, kind "sae_error",
width 1) whose gate spans the whole d_in error vector and whose ablation value is a d_in vector
(`Site.value_width`): zero ablation removes the error, mean ablation puts in its mean.

Sites and edges. An `SAEAdapter` exposes only the SAE sites (latents and errors) for pruning, as SAE
circuit work does (Marks et al. 2024, "Sparse Feature Circuits"); the base model's own sites run
unmasked. Where two consecutive splices lie on the residual stream (the later one at resid_in, resid_mid
or final_resid; the earlier one there too, or at a sublayer write), latent a of the first and latent b of
the second are joined by the direct path: a's decoder row writes into the stream that b's encoder column
reads, so their edge weight is (W_dec_a @ W_enc_b)[a, b] and `count_edges` counts the kept pairs with a
nonzero one. Paths through the sublayers between two splices, error nodes, and splices off the stream
(attn.hook_z, mlp.hook_post) have no edges: those would have to be read off the model's Jacobian, which
circuitbench does not estimate. SAE circuits are compared by nodes (`nodes_sae_latent`,
`nodes_sae_error`) and, where splices are adjacent, by these edges.

Matching the model. An SAE names the model it was trained on (`model_name`) and the TransformerLens
weight processing that model was loaded with (`model_from_pretrained_kwargs`); a model of another name
(compared through TransformerLens's aliases: "gpt2-small" is "gpt2") or with differently processed weights
at the SAE's hook point (`center_writing_weights`) is refused. An SAE trained with `prepend_bos` gets the
model's BOS token before every prompt (`BOSTokenizer`).

SAELens releases. `--sae RELEASE/ID` (e.g. `gpt2-small-res-jb/blocks.8.hook_resid_pre`) is looked up in
the registry sae-lens ships and loaded by SAELens itself, with the release's conversion function (Gemma
Scope's npz, Llama Scope, dictionary_learning, ...), config overrides and norm-scaling folding, from the
Hub or the local Hub cache; the result is checked as any SAE is (architectures, options, shapes).

SAELens format (https://github.com/jbloomAus/SAELens): a directory with `cfg.json` and
`sae_weights.safetensors` holding W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]
and, for JumpReLU, threshold [d_sae]. Both cfg.json layouts are read: SAELens >= 6 (`architecture` at the
top, the hook under `metadata` or `meta`, `k` for TopK) and earlier ones (`hook_name` or `hook_point` at
the top, TopK as `activation_fn_str: "topk"` with `activation_fn_kwargs.k`).
"""


from circuitbench.models.sae.adapter import BOSTokenizer, SAEAdapter, load_saes
from circuitbench.models.sae.autoencoder import ARCHITECTURES, CFG_FILE, SAE, WEIGHTS_FILE
from circuitbench.models.sae.files import load_sae, parse_cfg, resolve_sae_dir
from circuitbench.models.sae.matching import check_model_name, check_processing, model_names, splice_point
from circuitbench.models.sae.releases import SAELENS_HINT, load_release_sae, load_sae_spec, release_and_id

__all__ = ["ARCHITECTURES", "CFG_FILE", "SAE", "SAELENS_HINT", "WEIGHTS_FILE", "BOSTokenizer", "SAEAdapter",
           "check_model_name", "check_processing", "load_release_sae", "load_sae", "load_sae_spec", "load_saes",
           "model_names", "parse_cfg", "release_and_id", "resolve_sae_dir", "splice_point"]
