"""A CLIP survives the two on-disk forms OpenAI-style weights come in: a TorchScript archive and a plain state dict.

OpenAI's released checkpoints are traced TorchScript archives of fp16 weights whose `state_dict()` has
the names checked below; `build_model` must rebuild an identical model from either form.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from maskclip.clip.model import CLIP, CLIPConfig, build_model
from maskclip.clip.tokenizer import tokenize

VIT = CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128, vision_patch_size=16,
                 context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2)
RESNET = CLIPConfig(embed_dim=32, image_resolution=64, vision_layers=(1, 1, 2, 1), vision_width=16,
                    vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=64,
                    transformer_heads=1, transformer_layers=2)
PROMPTS = ["a dog", "a photo of a small cat on a sofa"]


@pytest.fixture(autouse=True, scope="module")
def _single_thread(single_thread):
    """These models are tiny: thread fan-out costs more than it saves."""


def _block_names(prefix: str, layers: int) -> set[str]:
    names = set()
    for i in range(layers):
        b = f"{prefix}{i}."
        names |= {b + "attn.in_proj_weight", b + "attn.in_proj_bias", b + "attn.out_proj.weight",
                  b + "attn.out_proj.bias", b + "ln_1.weight", b + "ln_1.bias", b + "mlp.c_fc.weight",
                  b + "mlp.c_fc.bias", b + "mlp.c_proj.weight", b + "mlp.c_proj.bias", b + "ln_2.weight",
                  b + "ln_2.bias"}
    return names


def _bn(prefix: str) -> set[str]:
    return {prefix + s for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


def openai_names(cfg: CLIPConfig) -> set[str]:
    """The key set of an OpenAI checkpoint of this shape, spelled out from openai/CLIP's naming."""
    names = {"positional_embedding", "text_projection", "logit_scale", "token_embedding.weight",
             "ln_final.weight", "ln_final.bias"} | _block_names("transformer.resblocks.", cfg.transformer_layers)
    if cfg.is_vit:
        names |= {"visual.class_embedding", "visual.positional_embedding", "visual.proj", "visual.conv1.weight",
                  "visual.ln_pre.weight", "visual.ln_pre.bias", "visual.ln_post.weight", "visual.ln_post.bias"}
        return names | _block_names("visual.transformer.resblocks.", cfg.vision_layers)
    for i in (1, 2, 3):
        names |= {f"visual.conv{i}.weight"} | _bn(f"visual.bn{i}.")
    for stage, blocks in enumerate(cfg.vision_layers, start=1):
        for j in range(blocks):
            b = f"visual.layer{stage}.{j}."
            for i in (1, 2, 3):
                names |= {f"{b}conv{i}.weight"} | _bn(f"{b}bn{i}.")
            if j == 0:  # every stage's first block changes channels (and, past stage 1, stride)
                names |= {b + "downsample.0.weight"} | _bn(b + "downsample.1.")
    names.add("visual.attnpool.positional_embedding")
    for p in ("q_proj", "k_proj", "v_proj", "c_proj"):
        names |= {f"visual.attnpool.{p}.weight", f"visual.attnpool.{p}.bias"}
    return names


def _random_model(cfg: CLIPConfig, dtype: torch.dtype, seed: int) -> CLIP:
    torch.manual_seed(seed)
    model = CLIP(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # non-trivial biases, norms and BN statistics
            if p.ndim == 1 and name != "visual.class_embedding":
                p.add_(0.2 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                b.fill_(seed + 1)
    return model.to(dtype).eval()


def _inputs(cfg: CLIPConfig) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.randn(2, 3, cfg.image_resolution, cfg.image_resolution, generator=torch.Generator().manual_seed(0))
    return image, tokenize(PROMPTS)


def _outputs(model: CLIP, image: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model.encode_image(image), model.encode_text(tokens)


CASES = [("vit", VIT, torch.float16), ("vit", VIT, torch.float32), ("resnet", RESNET, torch.float32),
         ("resnet", RESNET, torch.float16)]


@pytest.mark.parametrize("arch,cfg,dtype", CASES, ids=[f"{a}-{str(d)[6:]}" for a, _, d in CASES])
@pytest.mark.filterwarnings("ignore:`torch.jit.(save|load)` is deprecated:DeprecationWarning")
def test_torchscript_archive_round_trip(tmp_path, arch, cfg, dtype):
    model = _random_model(cfg, dtype, seed=1)
    image, tokens = _inputs(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the data-dependent text trim
        traced = torch.jit.trace(model, (image.to(dtype), tokens), check_trace=False)
    path = tmp_path / "clip.pt"
    torch.jit.save(traced, str(path))

    archive = torch.jit.load(str(path), map_location="cpu")
    sd = archive.state_dict()
    assert set(sd) == openai_names(cfg)
    assert set(sd) == set(model.state_dict())
    rebuilt = build_model(dict(sd))
    assert rebuilt.config == model.config
    assert rebuilt.dtype == dtype
    for mine, back in zip(_outputs(model, image, tokens), _outputs(rebuilt, image, tokens), strict=True):
        assert back.dtype == mine.dtype
        assert torch.equal(mine, back)
    with torch.no_grad():  # the archive's own graph computes what the eager model does
        diff = (archive(image, tokens)[0].float() - model(image, tokens)[0].float()).abs().max().item()
    print(f"[jit {arch} {dtype}] traced-graph vs eager logits max|diff|={diff:.2e}")
    assert diff <= (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("arch,cfg,dtype", CASES, ids=[f"{a}-{str(d)[6:]}" for a, _, d in CASES])
def test_plain_state_dict_round_trip(tmp_path, arch, cfg, dtype):
    model = _random_model(cfg, dtype, seed=2)
    image, tokens = _inputs(cfg)
    sd = dict(model.state_dict())
    # OpenAI's archives also carry these three non-parameter entries
    sd.update(input_resolution=torch.tensor(cfg.image_resolution), context_length=torch.tensor(77),
              vocab_size=torch.tensor(49408))
    path = tmp_path / "clip.pth"
    torch.save(sd, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    rebuilt = build_model(loaded)
    assert rebuilt.config == model.config and rebuilt.dtype == dtype
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v), k
    for mine, back in zip(_outputs(model, image, tokens), _outputs(rebuilt, image, tokens), strict=True):
        assert torch.equal(mine, back)


def test_build_model_refuses_a_mismatched_state_dict():
    sd = dict(_random_model(VIT, torch.float32, seed=3).state_dict())
    del sd["visual.ln_post.bias"]
    with pytest.raises(ValueError, match=r"missing \['visual.ln_post.bias'\]"):
        build_model(sd)
    sd = dict(_random_model(VIT, torch.float32, seed=3).state_dict(), **{"visual.extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected.*visual.extra"):
        build_model(sd)


def test_openai_mixed_precision_dict_builds_an_fp32_model():
    """OpenAI's archives keep LayerNorm/BatchNorm, embeddings and logit_scale in fp32 and only matmul/conv
    weights in fp16; such a mixed dict gives an fp32 model holding exactly the fp16 values, upcast."""
    model = _random_model(VIT, torch.float32, seed=4)
    sd = {}
    for k, v in model.state_dict().items():
        half = k.endswith(("in_proj_weight", "in_proj_bias", "proj", "text_projection", "conv1.weight")) or (
            v.ndim == 2 and k.endswith("weight") and "embedding" not in k) or ".mlp." in k or "out_proj" in k
        sd[k] = v.half() if half else v
    assert {v.dtype for v in sd.values()} == {torch.float16, torch.float32}
    rebuilt = build_model(sd)
    assert rebuilt.dtype == torch.float32
    for k, v in rebuilt.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, sd[k].float()), k
