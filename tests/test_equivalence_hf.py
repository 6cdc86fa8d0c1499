"""Our ViT CLIP equals Hugging Face `transformers`' CLIPModel (eager attention) on the same random weights.

HF's CLIP is an independent implementation (separate q/k/v projections, explicit eager softmax
attention, its own causal mask and pooling), so agreement to 1e-4 on random, deliberately large
weights pins down every piece of ours: patchify, class token, position embeddings and their bicubic
resize, pre/post LayerNorm, attention head split, QuickGELU, causal text attention, EOT pooling,
and both projections.

Non-square and resized inputs go through HF's `interpolate_pos_encoding=True`, which (transformers 5.x)
resizes the patch position grid with `F.interpolate(size=(H // patch, W // patch), mode="bicubic",
align_corners=False)` and keeps the class position: the same rule as ours, so HF is a valid reference
there too. (tests/test_model.py also checks our resize against a per-token bicubic reimplementation.)
"""

from __future__ import annotations

import pytest
import torch

from conftest import randomize_
from maskclip.clip.hf_convert import config_from_hf_state_dict, hf_config_dict, hf_to_openai, openai_to_hf
from maskclip.clip.model import CLIP, CLIPConfig, build_model
from maskclip.clip.tokenizer import tokenize

transformers = pytest.importorskip("transformers")

ATOL = 1e-4

# Two small ViT CLIPs: patch 16 with a 4x4 grid and patch 8 with a 4x4 grid, different widths/heads/depths.
CONFIGS = {
    "p16": CLIPConfig(embed_dim=48, image_resolution=64, vision_layers=3, vision_width=128, vision_patch_size=16,
                      context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=2,
                      transformer_layers=2, vision_heads=4),
    "p8": CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                     context_length=77, vocab_size=49408, transformer_width=96, transformer_heads=3,
                     transformer_layers=3, vision_heads=2),
}
# (config, image height, width): native square, upsampled square, non-square, and a size not divisible by the patch.
IMAGE_CASES = [
    ("p16", 64, 64), ("p16", 96, 96), ("p16", 48, 112),
    ("p8", 32, 32), ("p8", 56, 40), ("p8", 61, 45),
]
PROMPTS = ["a dog", "a photo of a cat sitting on the red sofa in the living room", "sky",
           "a diagram of a very small and oddly shaped , irregular, rusty bicycle wheel ."]


@pytest.fixture(autouse=True, scope="module")
def _single_thread(single_thread):
    """These models are tiny: thread fan-out costs more than it saves."""



def _pair(name: str, seed: int = 0) -> tuple[CLIP, "transformers.CLIPModel"]:
    cfg = CONFIGS[name]
    ours = randomize_(CLIP(cfg), seed).eval()
    hf_cfg = transformers.CLIPConfig(**hf_config_dict(cfg), attn_implementation="eager")
    hf = transformers.CLIPModel(hf_cfg).eval()
    hf.load_state_dict(openai_to_hf(ours.state_dict()), strict=True)
    assert hf.vision_model.config._attn_implementation == "eager"
    assert hf.text_model.config._attn_implementation == "eager"
    return ours, hf


@pytest.fixture(scope="module")
def pairs() -> dict:
    return {name: _pair(name, seed=i) for i, name in enumerate(CONFIGS)}


@pytest.mark.parametrize("name,h,w", IMAGE_CASES)
def test_image_features_match_hf(pairs, name, h, w):
    ours, hf = pairs[name]
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h * 1000 + w))
    with torch.no_grad():
        out = hf.get_image_features(pixel_values=x, interpolate_pos_encoding=True)
        theirs_pooled, theirs_tokens = out.pooler_output, out.last_hidden_state
        mine_pooled = ours.encode_image(x)
        tokens, grid = ours.visual.tokens(x)
        mine_tokens = ours.visual.transformer(tokens)
    p = CONFIGS[name].vision_patch_size
    assert grid == (h // p, w // p)
    assert mine_tokens.shape == theirs_tokens.shape == (2, 1 + grid[0] * grid[1], CONFIGS[name].vision_width)
    # the weights are large enough that features are far from zero and differ across images
    assert mine_pooled.abs().max() > 0.5 and (mine_pooled[0] - mine_pooled[1]).abs().max() > 0.1
    tok_diff = (mine_tokens - theirs_tokens).abs().max().item()
    pooled_diff = (mine_pooled - theirs_pooled).abs().max().item()
    print(f"[hf-image {name} {h}x{w}] tokens max|diff|={tok_diff:.2e} pooled max|diff|={pooled_diff:.2e}")
    assert tok_diff < ATOL
    assert pooled_diff < ATOL


def test_hf_pools_the_same_eot_token():
    tokens = tokenize(PROMPTS)
    eos = hf_config_dict(CONFIGS["p16"])["text_config"]["eos_token_id"]
    assert eos == 49407
    # HF takes the first eos_token_id position; we take the highest id: the same index for every row
    assert torch.equal((tokens == eos).int().argmax(dim=-1), tokens.argmax(dim=-1))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_text_features_match_hf_with_mixed_lengths(pairs, name):
    ours, hf = pairs[name]
    tokens = tokenize(PROMPTS)
    lengths = (tokens != 0).sum(dim=-1)
    assert len(set(lengths.tolist())) == len(PROMPTS)  # really different lengths in one batch
    with torch.no_grad():
        out = hf.get_text_features(input_ids=tokens)
        theirs, theirs_hidden = out.pooler_output, out.last_hidden_state
        trimmed = ours.encode_text(tokens, trim=True)
        full = ours.encode_text(tokens, trim=False)
        x = ours.token_embedding(tokens) + ours.positional_embedding
        hidden = ours.ln_final(ours.transformer(x))
    assert (trimmed[0] - trimmed[1]).abs().max() > 0.1
    trim_diff = (trimmed - full).abs().max().item()
    hf_diff = (trimmed - theirs).abs().max().item()
    hidden_diff = (hidden - theirs_hidden).abs().max().item()
    print(f"[hf-text {name}] trim-vs-full={trim_diff:.2e} ours-vs-hf pooled={hf_diff:.2e} "
          f"all 77 positions={hidden_diff:.2e}")
    assert trim_diff < 1e-5
    assert hf_diff < ATOL
    assert (full - theirs).abs().max().item() < ATOL
    assert hidden_diff < ATOL


def test_hf_weights_convert_back_to_ours():
    """The other direction: HF's own random init, renamed to OpenAI names, runs identically in our CLIP."""
    cfg = CONFIGS["p8"]
    hf_cfg = transformers.CLIPConfig(**hf_config_dict(cfg), attn_implementation="eager")
    torch.manual_seed(5)
    hf = transformers.CLIPModel(hf_cfg).eval()
    randomize_(hf, seed=7)  # HF zero-inits biases; make them non-trivial
    sd = hf_to_openai(hf.state_dict())
    ours = build_model(sd, config=cfg)
    x = torch.randn(1, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    tokens = tokenize(PROMPTS[:2])
    with torch.no_grad():
        img_diff = (ours.encode_image(x) - hf.get_image_features(pixel_values=x, interpolate_pos_encoding=True)
                    .pooler_output).abs().max().item()
        txt_diff = (ours.encode_text(tokens) - hf.get_text_features(input_ids=tokens).pooler_output).abs().max().item()
    print(f"[hf->ours] image max|diff|={img_diff:.2e} text max|diff|={txt_diff:.2e}")
    assert img_diff < ATOL and txt_diff < ATOL


def test_a_hugging_face_folder_loads_as_weights(tmp_path):
    """`--weights FOLDER` / load_weights(FOLDER): what CLIPModel.save_pretrained writes (config.json +
    model.safetensors), read without running code, gives HF's own embeddings; its config sets the activation."""
    from maskclip.clip.weights import load_weights

    cfg = CONFIGS["p8"]
    hf_cfg = transformers.CLIPConfig(**hf_config_dict(cfg), attn_implementation="eager")
    torch.manual_seed(6)
    hf = randomize_(transformers.CLIPModel(hf_cfg).eval(), seed=8)
    hf.save_pretrained(tmp_path / "clip-hf")
    assert (tmp_path / "clip-hf" / "model.safetensors").is_file()
    ours, info = load_weights(tmp_path / "clip-hf")
    assert info.source == "huggingface" and info.path.endswith("model.safetensors") and len(info.sha256) == 64
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    tokens = tokenize(PROMPTS[:2])
    with torch.no_grad():
        assert (ours.encode_image(x) - hf.get_image_features(pixel_values=x).pooler_output).abs().max() < ATOL
        assert (ours.encode_text(tokens) - hf.get_text_features(input_ids=tokens).pooler_output).abs().max() < ATOL
    single, _ = load_weights(tmp_path / "clip-hf" / "model.safetensors")  # the file alone: HF names converted
    assert all(torch.equal(a, b) for a, b in zip(single.state_dict().values(), ours.state_dict().values()))
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="without model.safetensors"):
        load_weights(tmp_path / "empty")


def test_conversion_round_trip_is_exact():
    model = randomize_(CLIP(CONFIGS["p16"]), seed=3)
    sd = model.state_dict()
    back = hf_to_openai(openai_to_hf(sd))
    assert set(back) == set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k
    # heads are not stored in weights: the HF dict reads back as OpenAI's width // 64 rule
    cfg = config_from_hf_state_dict(openai_to_hf(sd))
    assert (cfg.vision_width, cfg.vision_layers, cfg.vision_patch_size, cfg.image_resolution) == (128, 3, 16, 64)
    assert (cfg.transformer_width, cfg.transformer_layers, cfg.embed_dim) == (64, 2, 48)


def test_conversion_refuses_wrong_inputs():
    rn = CLIPConfig(embed_dim=32, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=16,
                    vision_patch_size=None, context_length=77, vocab_size=100, transformer_width=64,
                    transformer_heads=1, transformer_layers=1)
    with pytest.raises(ValueError, match="ResNet"):
        openai_to_hf(CLIP(rn).state_dict())
    with pytest.raises(ValueError, match="ResNet"):
        hf_config_dict(rn)
    sd = CLIP(CONFIGS["p8"]).state_dict()
    sd["visual.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match="visual.extra"):
        openai_to_hf(sd)
    with pytest.raises(ValueError, match="not a Hugging Face CLIPModel"):
        hf_to_openai(CLIP(CONFIGS["p8"]).state_dict())
