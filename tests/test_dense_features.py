"""Dense feature paths against straightforward re-derivations from the model's own modules."""

import pytest
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


@torch.no_grad()
@pytest.mark.parametrize("output_stride", [16, 8])
def test_resnet_a_trous_grid_holds_the_stride32_features_of_shifted_windows(output_stride):
    """At output stride 16/8 every position is the stride-32 network on a window shifted by that stride:
    checked against the unmodified network run on shifted copies of the (padded) input, with several
    bottlenecks per stage so the dilation carries over from block to block. The unshifted subgrid is
    exact everywhere; shifted ones away from the border (where the shifted copy's zero padding differs
    from the real neighbours the a trous network sees)."""
    from conftest import randomize
    from maskclip.clip.model import ModifiedResNet
    from maskclip.dense.features import resnet_features

    torch.manual_seed(0)
    visual = randomize(ModifiedResNet((2, 1, 2, 2), 32, 4, 64, 16), seed=3).eval()
    images = torch.randn(1, 3, 288, 256)
    fine = resnet_features(visual, images, output_stride)
    assert fine.shape[-2:] == (288 // output_stride, 256 // output_stride)
    off = (32 - output_stride) // 2
    padded = F.pad(images, (off, 32 - off, off, 32 - off))
    for sy in range(0, 32, output_stride):
        for sx in range(0, 32, output_stride):
            # the unmodified network on the padded input shifted by (sy, sx): its cell (i, j) is the window
            # at (32 i + sy - off, 32 j + sx - off) of the image, i.e. fine position (32 i + sy) / stride
            shifted = F.pad(padded[..., sy:, sx:], (0, sx, 0, sy))
            ref = visual.features(shifted)
            got = fine[..., sy // output_stride::32 // output_stride, sx // output_stride::32 // output_stride]
            h, w = got.shape[-2:]
            b = 0 if sy == sx == 0 else 3
            torch.testing.assert_close(got[..., b:h - b, b:w - b], ref[..., b:h - b, b:w - b], atol=1e-4, rtol=1e-4)
            if b:  # ... and the border cells do differ, so the interior check is not vacuous
                assert not torch.allclose(got[..., 0, :], ref[..., 0, :w], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_output_stride_through_dense_features_and_its_limits(tiny_rn, tiny_vit):
    images = torch.randn(1, 3, 64, 96)
    coarse = dense_features(tiny_rn, images, "value-only", keys=True)
    fine = dense_features(tiny_rn, images, "value-only", keys=True, output_stride=8)
    assert coarse.feats.shape[-2:] == (2, 3) and fine.feats.shape[-2:] == (8, 12)
    assert fine.keys.shape[-2:] == (8, 12)
    # the fine grid holds the coarse one (cell (i, j) = the window at 32 (i, j) shifted back by 12 px)
    torch.testing.assert_close(dense_features(tiny_rn, images, "value-only", output_stride=32).feats,
                               coarse.feats)
    with pytest.raises(ValueError, match="ResNet"):
        dense_features(tiny_vit, images, "value-only", output_stride=8)
    with pytest.raises(ValueError, match="output_stride"):
        dense_features(tiny_rn, images, "value-only", output_stride=4)


def test_maskclip_config_rejects_odd_output_stride(tiny_vit, tiny_rn):
    from maskclip.dense import MaskCLIP, MaskCLIPConfig
    from maskclip.dense.features import SettingsError

    with pytest.raises(ValueError, match="output_stride"):
        MaskCLIPConfig(output_stride=12)
    with pytest.raises(SettingsError, match="patch size"):  # the command line reports it as an error, exit 2
        MaskCLIP(tiny_vit, MaskCLIPConfig(output_stride=8))
    MaskCLIP(tiny_vit, MaskCLIPConfig(output_stride=16))  # = its patch size: nothing to change
    MaskCLIP(tiny_rn, MaskCLIPConfig(output_stride=8))
