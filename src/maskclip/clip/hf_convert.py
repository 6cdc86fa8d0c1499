"""Rename a ViT CLIP's weights between OpenAI's layout and Hugging Face `transformers`' `CLIPModel`.

Why: HF's CLIP is the most widely used independent implementation, so converting our weights into
it is how the tests prove our encoders are exact, and it lets users move checkpoints either way.
Only renaming, splitting and transposing happen here: no `transformers` import, no file I/O.

Differences handled (OpenAI -> HF):
- attention `in_proj_weight`/`in_proj_bias` (q, k, v stacked) -> separate `q_proj`/`k_proj`/`v_proj`;
- `visual.proj` and `text_projection` [width, embed] are right-multiplied matrices; HF's
  `visual_projection`/`text_projection` are `nn.Linear` weights, i.e. their transposes;
- `ln_pre` -> `pre_layrnorm` (HF's spelling), `ln_post` -> `post_layernorm`, `ln_final` -> `final_layer_norm`;
- position ids are non-persistent buffers in HF, so they are neither produced nor required.
ResNet CLIPs have no HF `CLIPModel` counterpart and are rejected.
"""

from __future__ import annotations

import re

import torch

from maskclip.clip.model import CLIPConfig, config_from_state_dict

_NON_PARAMS = ("input_resolution", "context_length", "vocab_size")

# (OpenAI name inside a residual block, HF name inside an encoder layer); q/k/v are handled apart.
_BLOCK = (
    ("attn.out_proj.weight", "self_attn.out_proj.weight"),
    ("attn.out_proj.bias", "self_attn.out_proj.bias"),
    ("ln_1.weight", "layer_norm1.weight"),
    ("ln_1.bias", "layer_norm1.bias"),
    ("mlp.c_fc.weight", "mlp.fc1.weight"),
    ("mlp.c_fc.bias", "mlp.fc1.bias"),
    ("mlp.c_proj.weight", "mlp.fc2.weight"),
    ("mlp.c_proj.bias", "mlp.fc2.bias"),
    ("ln_2.weight", "layer_norm2.weight"),
    ("ln_2.bias", "layer_norm2.bias"),
)

# Top-level one-to-one renames (OpenAI, HF); the two projections are handled apart (transposed).
_TOP = (
    ("logit_scale", "logit_scale"),
    ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
    ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
    ("ln_final.weight", "text_model.final_layer_norm.weight"),
    ("ln_final.bias", "text_model.final_layer_norm.bias"),
    ("visual.class_embedding", "vision_model.embeddings.class_embedding"),
    ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
    ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
    ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"),
    ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"),
    ("visual.ln_post.weight", "vision_model.post_layernorm.weight"),
    ("visual.ln_post.bias", "vision_model.post_layernorm.bias"),
)

# (OpenAI block prefix, HF layer prefix) for the text and the vision tower.
_TOWERS = (("transformer.resblocks.", "text_model.encoder.layers."),
           ("visual.transformer.resblocks.", "vision_model.encoder.layers."))


def _block_ids(sd: dict, prefix: str) -> list[int]:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in sd if (m := pat.match(k))})


class _Taker:
    """Hands out a dict's entries by name, remembering which were used, so leftovers can be refused."""

    def __init__(self, sd: dict[str, torch.Tensor], what: str):
        self.sd, self.what, self.used = sd, what, set()

    def __call__(self, key: str) -> torch.Tensor:
        if key not in self.sd:
            raise ValueError(f"not {self.what}: {key!r} is missing")
        self.used.add(key)
        return self.sd[key]

    def check_all_used(self, target: str) -> None:
        left = sorted(set(self.sd) - self.used)
        if left:
            raise ValueError(f"keys with no {target} counterpart: {left[:8]}{'...' if len(left) > 8 else ''}")


def openai_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An OpenAI-named ViT CLIP state dict renamed for HF `CLIPModel.load_state_dict(..., strict=True)`."""
    sd = {k: v for k, v in sd.items() if k not in _NON_PARAMS}
    if "visual.proj" not in sd:
        if any(k.startswith("visual.attnpool.") for k in sd):
            raise ValueError("ResNet CLIPs have no Hugging Face CLIPModel counterpart; only ViT CLIPs convert")
        raise ValueError("not an OpenAI-named ViT CLIP state dict: 'visual.proj' is missing")
    take = _Taker(sd, "an OpenAI-named ViT CLIP state dict")
    out = {theirs: take(ours) for ours, theirs in _TOP}
    out["visual_projection.weight"] = take("visual.proj").t().contiguous()
    out["text_projection.weight"] = take("text_projection").t().contiguous()
    for src, dst in _TOWERS:
        for i in _block_ids(sd, src):
            a, b = f"{src}{i}.", f"{dst}{i}."
            ws = take(a + "attn.in_proj_weight").chunk(3, dim=0)
            bs = take(a + "attn.in_proj_bias").chunk(3, dim=0)
            for name, w, bias in zip(("q_proj", "k_proj", "v_proj"), ws, bs, strict=True):
                out[f"{b}self_attn.{name}.weight"] = w.contiguous()
                out[f"{b}self_attn.{name}.bias"] = bias.contiguous()
            for ours, theirs in _BLOCK:
                out[b + theirs] = take(a + ours)
    take.check_all_used("Hugging Face")
    return out


def hf_to_openai(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face `CLIPModel` state dict renamed to OpenAI's names (loadable by `build_model`)."""
    sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    if "vision_model.embeddings.class_embedding" not in sd or "text_projection.weight" not in sd:
        raise ValueError("not a Hugging Face CLIPModel state dict: expected 'vision_model.embeddings.class_embedding' "
                         "and 'text_projection.weight' (a CLIPTextModel or CLIPVisionModel alone cannot convert)")
    take = _Taker(sd, "a Hugging Face CLIPModel state dict")
    out = {ours: take(theirs) for ours, theirs in _TOP}
    out["visual.proj"] = take("visual_projection.weight").t().contiguous()
    out["text_projection"] = take("text_projection.weight").t().contiguous()
    for dst, src in _TOWERS:
        for i in _block_ids(sd, src):
            a, b = f"{dst}{i}.", f"{src}{i}."
            qkv = [f"{b}self_attn.{n}_proj" for n in ("q", "k", "v")]
            out[a + "attn.in_proj_weight"] = torch.cat([take(p + ".weight") for p in qkv], dim=0)
            out[a + "attn.in_proj_bias"] = torch.cat([take(p + ".bias") for p in qkv], dim=0)
            for ours, theirs in _BLOCK:
                out[a + ours] = take(b + theirs)
    take.check_all_used("OpenAI")
    return out


def hf_config_dict(config: CLIPConfig, eos_token_id: int | None = None) -> dict:
    """Keyword arguments for `transformers.CLIPConfig(**d)` describing the same ViT CLIP.

    `eos_token_id` defaults to the last vocabulary id (49407 for OpenAI's vocabulary): HF then pools at
    the first EOT token and we pool at the highest id, which is the same position for tokenizer output.
    """
    if not config.is_vit:
        raise ValueError("ResNet CLIPs have no Hugging Face CLIPModel counterpart; only ViT CLIPs convert")
    eos = config.vocab_size - 1 if eos_token_id is None else eos_token_id
    text = dict(vocab_size=config.vocab_size, hidden_size=config.transformer_width,
                intermediate_size=4 * config.transformer_width, num_hidden_layers=config.transformer_layers,
                num_attention_heads=config.transformer_heads, max_position_embeddings=config.context_length,
                hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=config.embed_dim,
                bos_token_id=eos - 1, eos_token_id=eos, pad_token_id=0)
    vision = dict(hidden_size=config.vision_width, intermediate_size=4 * config.vision_width,
                  num_hidden_layers=config.vision_layers, num_attention_heads=config.heads_visual,
                  image_size=config.image_resolution, patch_size=config.vision_patch_size,
                  hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=config.embed_dim)
    return dict(text_config=text, vision_config=vision, projection_dim=config.embed_dim)


def config_from_hf_state_dict(sd: dict[str, torch.Tensor]) -> CLIPConfig:
    """The `CLIPConfig` of an HF CLIPModel state dict (heads follow OpenAI's width // 64 rule)."""
    return config_from_state_dict(hf_to_openai(sd))
