"""CLIP model pieces against independent references, architecture read-back, and low-precision runs."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import randomize_
from maskclip.clip.model import (
    ARCHITECTURES,
    CLIP,
    AttentionPool2d,
    CLIPConfig,
    config_from_state_dict,
    resize_pos_embed,
)
from maskclip.clip.tokenizer import tokenize

VIT = CLIPConfig(embed_dim=48, image_resolution=64, vision_layers=2, vision_width=128, vision_patch_size=16,
                 context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=2, transformer_layers=2,
                 vision_heads=4)
RESNET = CLIPConfig(embed_dim=48, image_resolution=64, vision_layers=(1, 2, 1, 1), vision_width=16,
                    vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=64,
                    transformer_heads=2, transformer_layers=2, vision_heads=4)
PROMPTS = ["a dog", "a photo of a cat sitting on the red sofa in the living room", "sky",
           "a diagram of a very small and oddly shaped , irregular, rusty bicycle wheel ."]


@pytest.fixture(autouse=True, scope="module")
def _single_thread(single_thread):
    """These models are tiny: thread fan-out costs more than it saves."""



# ----------------------------------------------------------------------------------------------
# Independent reference for the position-embedding resize: bicubic convolution (Keys, a = -0.75),
# half-pixel centres (align_corners=False), edge samples clamped -- written per output token.

def _cubic_weights(t: float, a: float = -0.75) -> list[float]:
    def near(x: float) -> float:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic_reference(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """pos [g*g, D] -> [h*w, D], one output token at a time."""
    n, d = pos.shape
    g = math.isqrt(n)
    src = pos.double().reshape(g, g, d)
    h, w = grid
    out = torch.empty(h * w, d, dtype=torch.float64)
    for i in range(h):
        sy = (i + 0.5) * g / h - 0.5
        y0 = math.floor(sy)
        wy = _cubic_weights(sy - y0)
        for j in range(w):
            sx = (j + 0.5) * g / w - 0.5
            x0 = math.floor(sx)
            wx = _cubic_weights(sx - x0)
            acc = torch.zeros(d, dtype=torch.float64)
            for a in range(4):
                yy = min(max(y0 - 1 + a, 0), g - 1)
                for b in range(4):
                    xx = min(max(x0 - 1 + b, 0), g - 1)
                    acc += wy[a] * wx[b] * src[yy, xx]
            out[i * w + j] = acc
    return out.to(pos.dtype)


@pytest.mark.parametrize("grid", [(3, 7), (7, 5), (9, 9), (2, 3), (1, 4)])
def test_resize_pos_embed_matches_per_token_bicubic(grid):
    pos = torch.randn(16, 24, generator=torch.Generator().manual_seed(0))  # a 4x4 grid
    ours = resize_pos_embed(pos, grid)
    ref = bicubic_reference(pos, grid)
    diff = (ours - ref).abs().max().item()
    print(f"[resize 4x4->{grid}] max|diff|={diff:.2e}")
    assert ours.shape == (grid[0] * grid[1], 24)
    assert diff < 1e-5


def test_resize_pos_embed_keeps_native_grid():
    pos = torch.randn(16, 8)
    assert resize_pos_embed(pos, (4, 4)) is pos


# ----------------------------------------------------------------------------------------------
# AttentionPool2d against openai/CLIP's original formulation: tokens in (HW+1, N, C) layout, mean token
# first, separate q/k/v weights fed to F.multi_head_attention_forward, c_proj as the output projection.

def attnpool_reference(pool: AttentionPool2d, x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    pos = pool.positional_embedding
    if (h, w) != (math.isqrt(pos.shape[0] - 1),) * 2:
        pos = torch.cat([pos[:1], bicubic_reference(pos[1:], (h, w))], dim=0)
    x = x.flatten(start_dim=2).permute(2, 0, 1)  # (HW)NC
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)  # (HW+1)NC
    x = x + pos[:, None, :].to(x.dtype)
    out, _ = F.multi_head_attention_forward(
        query=x[:1], key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=False, need_weights=False)
    return out.squeeze(0)


@pytest.mark.parametrize("hw", [(4, 4), (3, 6), (7, 5)])
def test_attention_pool_matches_multi_head_attention_forward(hw):
    torch.manual_seed(1)
    pool = randomize_(AttentionPool2d(spacial_dim=4, embed_dim=64, num_heads=4, output_dim=40), seed=2).eval()
    x = torch.randn(3, 64, *hw)
    with torch.no_grad():
        ours, ref = pool(x), attnpool_reference(pool, x)
    diff = (ours - ref).abs().max().item()
    print(f"[attnpool {hw}] max|diff|={diff:.2e} (|out| max {ref.abs().max():.2f})")
    assert ours.shape == ref.shape == (3, 40)
    assert ref.abs().max() > 0.5
    assert diff < 1e-5


# ----------------------------------------------------------------------------------------------
# Architecture read-back.

@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_config_from_state_dict_reads_every_release(name):
    cfg = ARCHITECTURES[name]
    with torch.device("meta"):
        sd = CLIP(cfg).state_dict()
    assert config_from_state_dict(sd) == cfg
    # OpenAI's archives carry three non-parameter entries; they must not disturb the read-back
    extra = dict(sd, input_resolution=torch.tensor(cfg.image_resolution), context_length=torch.tensor(77),
                 vocab_size=torch.tensor(49408))
    assert config_from_state_dict(extra) == cfg


def test_config_read_back_of_small_models():
    for cfg in (VIT, RESNET):
        got = config_from_state_dict(CLIP(cfg).state_dict())
        # heads are not stored in weights: everything else must round-trip
        assert got == dataclasses.replace(cfg, vision_heads=None, transformer_heads=cfg.transformer_width // 64)


def _text_tower_only() -> dict:
    with torch.device("meta"):
        sd = CLIP(ARCHITECTURES["ViT-B/16"]).state_dict()
    return {k: v for k, v in sd.items() if not k.startswith("visual.")}


@pytest.mark.parametrize("make,why", [
    (lambda: {"weight": torch.zeros(3, 3), "bias": torch.zeros(3)}, "missing text_projection"),
    (lambda: {"text_model.embeddings.token_embedding.weight": torch.zeros(10, 4),
              "vision_model.embeddings.class_embedding": torch.zeros(4)}, "missing text_projection"),
    (lambda: {}, "missing"),
    (_text_tower_only, "no image encoder"),
], ids=["plain-module", "hf-names", "empty", "text-tower-only"])
def test_config_from_state_dict_rejects_non_clip(make, why):
    with pytest.raises(ValueError, match=f"not a CLIP state dict: .*{why}"):
        config_from_state_dict(make())


# ----------------------------------------------------------------------------------------------
# Text encoder batch trimming.

def test_encode_text_trim_equals_full_context():
    model = randomize_(CLIP(VIT), seed=4).eval()
    tokens = tokenize(PROMPTS)
    with torch.no_grad():
        trimmed, full = model.encode_text(tokens, trim=True), model.encode_text(tokens, trim=False)
        alone = torch.cat([model.encode_text(tokens[i:i + 1]) for i in range(len(PROMPTS))])
    diff = (trimmed - full).abs().max().item()
    print(f"[trim] trim-vs-full max|diff|={diff:.2e}, batch-vs-one-by-one {(trimmed - alone).abs().max():.2e}")
    assert (trimmed[0] - trimmed[1]).abs().max() > 0.1
    assert diff < 1e-5
    assert (trimmed - alone).abs().max().item() < 1e-5


# ----------------------------------------------------------------------------------------------
# Low precision. Error measure: max |y_dtype - y_fp32| / max |y_fp32| over the batch. fp16 rounds with
# unit roundoff u = 2^-11 ~ 4.9e-4 and bf16 with u = 2^-8 ~ 3.9e-3; a few layers of matmuls, softmax and
# residual adds accumulate a handful of roundings (measured: <= 1.5e-3 fp16, <= 1e-2 bf16, i.e. ~3 u),
# so we allow ~10 u: 5e-3 (fp16) and 4e-2 (bf16).
# fp32 on the same device must agree to 1e-5 relative (only summation order may differ).

REL_TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture(scope="module")
def fp32_models() -> dict:
    return {"vit": randomize_(CLIP(VIT), seed=10).eval(), "resnet": randomize_(CLIP(RESNET), seed=11).eval()}


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.float().cpu() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_low_precision_agrees_with_fp32(fp32_models, arch, dtype, device):
    ref_model = fp32_models[arch]
    image = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    tokens = tokenize(PROMPTS)
    with torch.no_grad():
        ref_img, ref_txt = ref_model.encode_image(image), ref_model.encode_text(tokens)
    model = copy.deepcopy(ref_model).to(device=device, dtype=dtype)
    assert model.dtype == dtype
    prev = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 on CUDA
    try:
        with torch.no_grad():
            img, txt = model.encode_image(image.to(device)), model.encode_text(tokens.to(device))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
    assert img.dtype == txt.dtype == dtype
    assert img.shape == ref_img.shape and txt.shape == ref_txt.shape
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()
    e_img, e_txt = _rel(img, ref_img), _rel(txt, ref_txt)
    print(f"[{arch} {dtype} {device}] rel max err image={e_img:.2e} text={e_txt:.2e}")
    assert e_img < REL_TOL[dtype] and e_txt < REL_TOL[dtype]


def test_build_model_gelu_option_and_no_aliasing():
    from maskclip.clip.model import CLIP, CLIPConfig, build_model

    torch.manual_seed(0)
    cfg = CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
                     context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                     transformer_layers=1)
    src = CLIP(cfg).eval()
    sd = src.state_dict()
    quick, plain = build_model(sd), build_model(sd, quick_gelu=False)
    assert isinstance(plain.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
    assert plain.config.quick_gelu is False and quick.config.quick_gelu is True
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(quick.encode_image(x), src.encode_image(x))
        assert (plain.encode_image(x) - quick.encode_image(x)).abs().max() > 1e-4
        quick.visual.proj.add_(1.0)  # the built model owns its tensors
    torch.testing.assert_close(sd["visual.proj"], src.visual.proj)
    assert not torch.equal(quick.visual.proj, src.visual.proj)
