"""Dense feature paths against straightforward re-derivations from the model's own modules."""

import torch
import torch.nn.functional as F

from maskclip.clip.model import resize_pos_embed
from maskclip.dense import dense_features


def _vit_block_input(model, images):
    v = model.visual
    x = v.conv1(images)
    grid = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], 1)
    pos = torch.cat([v.positional_embedding[:1], resize_pos_embed(v.positional_embedding[1:], tuple(grid))])
    x = v.ln_pre(x + pos)
    for blk in v.transformer.resblocks[:-1]:
        x = blk(x)
    return x, grid


@torch.no_grad()
def test_vit_authors_value_only_and_baseline_paths(tiny_vit):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 48, 80)  # non-square: 3x5 grid, position embeddings resized
    x, grid = _vit_block_input(tiny_vit, images)
    last = tiny_vit.visual.transformer.resblocks[-1]
    d = x.shape[-1]
    attn = last.attn
    y = last.ln_1(x)
    qkv = y @ attn.in_proj_weight.T + attn.in_proj_bias
    v = attn.out_proj(qkv[..., 2 * d:])
    k = attn.out_proj(qkv[..., d:2 * d])
    ref_value_only = tiny_vit.visual.ln_post(v) @ tiny_vit.visual.proj
    vv = v + x
    vv = vv + last.mlp(last.ln_2(vv))
    ref_authors = tiny_vit.visual.ln_post(vv) @ tiny_vit.visual.proj
    # baseline: the unmodified block, with PyTorch's own multi-head attention module
    a, _ = attn(y, y, y, need_weights=False)
    z = x + a
    z = z + last.mlp(last.ln_2(z))
    ref_baseline = tiny_vit.visual.ln_post(z) @ tiny_vit.visual.proj

    def as_map(t):
        return t[:, 1:].transpose(1, 2).reshape(2, -1, *grid)

    out = dense_features(tiny_vit, images, "authors", keys=True)
    assert out.feats.shape == (2, 32, 3, 5)
    torch.testing.assert_close(out.feats, as_map(ref_authors), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.keys, as_map(k), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dense_features(tiny_vit, images, "value-only").feats, as_map(ref_value_only),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dense_features(tiny_vit, images, "baseline").feats, as_map(ref_baseline),
                               atol=1e-5, rtol=1e-5)
    # the paths really differ (a test that cannot fail would not)
    assert (ref_authors - ref_value_only).abs().max() > 1e-2


@torch.no_grad()
def test_vit_baseline_class_token_is_clip_image_embedding(tiny_vit):
    images = torch.randn(1, 3, 64, 64)
    x, _ = _vit_block_input(tiny_vit, images)
    y = tiny_vit.visual.transformer.resblocks[-1](x)
    cls = tiny_vit.visual.ln_post(y[:, 0]) @ tiny_vit.visual.proj
    torch.testing.assert_close(cls, tiny_vit.encode_image(images), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_resnet_authors_path_is_two_1x1_convolutions(tiny_rn):
    images = torch.randn(2, 3, 64, 96)
    fmap = tiny_rn.visual.features(images)
    pool = tiny_rn.visual.attnpool
    v = F.conv2d(fmap, pool.v_proj.weight[:, :, None, None], pool.v_proj.bias)
    ref = F.conv2d(v, pool.c_proj.weight[:, :, None, None], pool.c_proj.bias)
    k = F.conv2d(fmap, pool.k_proj.weight[:, :, None, None], pool.k_proj.bias)
    out = dense_features(tiny_rn, images, "authors", keys=True)
    assert out.feats.shape == (2, 32, 2, 3)
    torch.testing.assert_close(out.feats, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.keys, k, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_resnet_baseline_tokens_use_the_pool_attention(tiny_rn):
    """Baseline dense tokens: every position is a query of the unmodified pool (with position embedding).

    Checked against torch's multi_head_attention_forward in the LND layout of openai/CLIP."""
    images = torch.randn(1, 3, 64, 64)
    fmap = tiny_rn.visual.features(images)
    pool = tiny_rn.visual.attnpool
    t = fmap.flatten(2).permute(2, 0, 1)  # HW, N, C
    t = torch.cat([t.mean(dim=0, keepdim=True), t]) + pool.positional_embedding[:, None]
    out, _ = F.multi_head_attention_forward(
        query=t, key=t, value=t, embed_dim_to_check=t.shape[-1], num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0, out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias, use_separate_proj_weight=True, training=False, need_weights=False)
    ref = out[1:].permute(1, 2, 0).reshape(1, -1, 2, 2)
    torch.testing.assert_close(dense_features(tiny_rn, images, "baseline").feats, ref, atol=1e-5, rtol=1e-4)
    # and its first (mean) token is exactly CLIP's pooled image embedding
    torch.testing.assert_close(out[0], tiny_rn.encode_image(images), atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_unknown_path_is_rejected(tiny_vit):
    import pytest

    with pytest.raises(ValueError, match="value-only"):
        dense_features(tiny_vit, torch.randn(1, 3, 32, 32), "values")
