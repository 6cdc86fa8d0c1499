"""Dense, text-aligned features from a frozen CLIP image encoder (paper section 3.3).

Three read-outs of the last layer:

- ``authors``: what the authors' code does. ViT: in the last block the attention is skipped and the
  value path is kept, v = out_proj(V(ln_1(x))); v = v + x; v = v + mlp(ln_2(v)), then ln_post and the
  visual projection. ResNet: the attention pool becomes v_proj then c_proj as 1x1 convolutions, without
  the pool's position embedding.
- ``value-only``: ViT value path without the residual and the FFN (what later training-free papers found
  works better on real CLIP). For ResNets it is the same as ``authors`` (the pool has neither).
- ``baseline``: the unmodified last layer's dense tokens, q-k attention kept (the paper's Table 1a
  baseline).

Keys (for key smoothing) are k_proj(x) for ResNets and out_proj(K(ln_1(x))) for ViTs, as the authors did.
Only the projections a path needs are computed.

ResNets can also be read at output stride 16 or 8 instead of CLIP's 32 (`output_stride`, our addition:
the paper and the authors' code use 32): the last strides are removed and the later 3x3 convolutions
and pools dilated ("a trous"), so every position holds the stride-32 feature of a window shifted by a
multiple of the new stride (exactly, away from the image border, where the shifted window would have
seen zero padding). Same weights, same features, a 2x or 4x finer grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..clip.model import CLIP, Bottleneck, ModifiedResNet, ResidualAttentionBlock, VisionTransformer, resize_pos_embed
from ..errors import SettingsError
from .successors import successor_block, vit_tokens

ReadOut = Literal["authors", "value-only", "baseline", "sclip", "clearclip", "naclip"]
READOUTS: tuple[str, ...] = ("authors", "value-only", "baseline", "sclip", "clearclip", "naclip")
SUCCESSORS: tuple[str, ...] = ("sclip", "clearclip", "naclip")  # ViT only: their attention replaces the last block's


@dataclass
class DenseFeatures:
    """Per-position embeddings in CLIP's joint space (not normalised) and optional keys, both [B, C, h, w]."""

    feats: torch.Tensor
    keys: torch.Tensor | None = None


def check_output_stride(model: CLIP, output_stride: int | None) -> None:
    """A ViT's grid is fixed by its patch size; only ResNets can be read at another output stride."""
    if isinstance(model.visual, VisionTransformer) and output_stride not in (None, model.visual.patch_size):
        raise SettingsError(f"output stride {output_stride} (--dense-stride): a ViT's grid is set by its patch "
                            f"size ({model.visual.patch_size}); other output strides need a ResNet CLIP")


def check_readout(model: CLIP, readout: str, output_stride: int | None = None) -> None:
    """Settings the model cannot honour, as a SettingsError before any image."""
    check_output_stride(model, output_stride)
    if readout in SUCCESSORS and not isinstance(model.visual, VisionTransformer):
        raise SettingsError(f"--readout/--method {readout}: the {readout} attention replaces a ViT's last block; "
                            "a ResNet CLIP ends in an attention pool (use authors, value-only or baseline)")


def stride_of(model: CLIP) -> int:
    """Pixels per output position: the patch size for ViTs, 32 for ResNets."""
    return model.visual.patch_size if isinstance(model.visual, VisionTransformer) else 32


def _to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    n, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(n, c, *grid)


def _linear_slice(x: torch.Tensor, block: ResidualAttentionBlock, which: int) -> torch.Tensor:
    """One of q (0), k (1), v (2) of the block's in-projection, heads concatenated."""
    d = x.shape[-1]
    w = block.attn.in_proj_weight[which * d:(which + 1) * d]
    b = block.attn.in_proj_bias[which * d:(which + 1) * d]
    return F.linear(x, w, b)


def vit_dense(visual: VisionTransformer, images: torch.Tensor, readout: ReadOut = "authors",
              keys: bool = False, pos_embed: str = "resize", naclip_sigma: float = 5.0) -> DenseFeatures:
    x, grid = vit_tokens(visual, images, pos_embed)
    blocks = visual.transformer.resblocks
    for block in blocks[:-1]:
        x = block(x)
    last: ResidualAttentionBlock = blocks[-1]
    k = None
    if readout == "baseline":
        y = last(x)
        out = visual.ln_post(y[:, 1:]) @ visual.proj
    elif readout in SUCCESSORS:
        y = successor_block(last, x, readout, grid, naclip_sigma)
        out = visual.ln_post(y[:, 1:]) @ visual.proj
    else:
        h = last.ln_1(x[:, 1:])
        v = last.attn.out_proj(_linear_slice(h, last, 2))
        if readout == "authors":
            v = v + x[:, 1:]
            v = v + last.mlp(last.ln_2(v))
        elif readout != "value-only":
            raise ValueError(f"unknown read-out {readout!r}; choose from {READOUTS}")
        out = visual.ln_post(v) @ visual.proj
    if keys:
        h = last.ln_1(x[:, 1:])
        k = _to_map(last.attn.out_proj(_linear_slice(h, last, 1)), grid)
    return DenseFeatures(_to_map(out, grid), k)


def _pool2_dilated(x: torch.Tensor, d: int) -> torch.Tensor:
    """The 2x2 stride-2 average pool evaluated at every position of a grid dilated by d (end replicated;
    the positions a stride-2 pool would keep never read the padding)."""
    x = F.pad(x, (0, d, 0, d), mode="replicate")
    return (x[..., :-d, :-d] + x[..., d:, :-d] + x[..., :-d, d:] + x[..., d:, d:]) / 4


def _conv_dilated(conv: torch.nn.Conv2d, x: torch.Tensor, d: int) -> torch.Tensor:
    if d == 1 or conv.kernel_size == (1, 1):
        return conv(x)
    return F.conv2d(x, conv.weight, conv.bias, 1, d * conv.padding[0], d)


def _bottleneck(b: Bottleneck, x: torch.Tensor, d: int, keep_stride: bool) -> tuple[torch.Tensor, int]:
    """One CLIP Bottleneck with its 3x3 convolution dilated by d and, unless `keep_stride`, its stride-2
    pools replaced by dilated stride-1 ones; returns the output and the dilation of the next block."""
    strided = isinstance(b.avgpool, torch.nn.AvgPool2d)

    def pool(z: torch.Tensor) -> torch.Tensor:
        return b.avgpool(z) if keep_stride else _pool2_dilated(z, d)

    out = b.relu1(b.bn1(b.conv1(x)))
    out = b.relu2(b.bn2(_conv_dilated(b.conv2, out, d)))
    out = b.bn3(b.conv3(pool(out) if strided else out))
    identity = x
    if b.downsample is not None:
        identity = b.downsample[2](b.downsample[1](pool(x) if strided else x))
    return b.relu3(out + identity), d * 2 if strided and not keep_stride else d


def resnet_features(visual: ModifiedResNet, images: torch.Tensor, output_stride: int = 32) -> torch.Tensor:
    """The attention pool's input map at output stride 32 (CLIP's), 16 or 8 (a trous, module docstring).

    At 16 or 8 the input is padded by (32 - stride) / 2 pixels on the top and left, so position i is
    the window centred on pixel stride * (i + 1/2), where bilinear upsampling of the grid puts it; the
    map has H/stride x W/stride positions.
    """
    if output_stride == 32:
        return visual.features(images)
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 32, 16 or 8 for a ResNet, got {output_stride}")
    h, w = images.shape[-2:]
    off = (32 - output_stride) // 2
    x = F.pad(images, (off, 32 - off, off, 32 - off))  # zeros: the mean colour after normalisation
    x = visual.stem(x.to(visual.conv1.weight.dtype))
    stride, d = 4, 1
    for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        for b in layer:
            strided = isinstance(b.avgpool, torch.nn.AvgPool2d)
            keep = not strided or stride < output_stride
            stride *= 2 if strided and keep else 1
            x, d = _bottleneck(b, x, d, keep)
    return x[..., : h // output_stride, : w // output_stride]


def resnet_dense(visual: ModifiedResNet, images: torch.Tensor, readout: ReadOut = "authors",
                 keys: bool = False, output_stride: int = 32) -> DenseFeatures:
    x = resnet_features(visual, images, output_stride)  # N, C, h, w
    pool = visual.attnpool
    n, c, h, w = x.shape
    tokens = x.flatten(2).transpose(1, 2)  # N, hw, C
    if readout == "baseline":
        # every position queries the (position-embedded) tokens, as the unmodified pool would
        t = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        pos = pool.positional_embedding.to(t.dtype)
        t = t + torch.cat([pos[:1], resize_pos_embed(pos[1:], (h, w))], dim=0)
        heads = pool.num_heads
        split = lambda z: z.reshape(n, -1, heads, c // heads).transpose(1, 2)  # noqa: E731
        q, kk, v = split(pool.q_proj(t)), split(pool.k_proj(t)), split(pool.v_proj(t))
        out = F.scaled_dot_product_attention(q, kk, v).transpose(1, 2).reshape(n, -1, c)
        out = pool.c_proj(out[:, 1:])
    elif readout in ("authors", "value-only"):
        out = pool.c_proj(pool.v_proj(tokens))
    else:
        raise ValueError(f"unknown read-out {readout!r}; choose from {READOUTS}")
    k = _to_map(pool.k_proj(tokens), (h, w)) if keys else None
    return DenseFeatures(_to_map(out, (h, w)), k)


class DenseEncoder(torch.nn.Module):
    """The encoder pass of `MaskCLIP` for `config`'s method as one module: normalised windows [B, 3, H, W] ->
    L2-normalised fp32 features [B, C, h, w] (and fp32 keys, with KS). The engine runs `features` under its
    autocast and `normalized` outside it; the ONNX export (`maskclip.onnx_backend`) traces `forward`."""

    def __init__(self, model: CLIP, config):
        super().__init__()
        self.model, self.config = model.eval(), config

    def features(self, x: torch.Tensor) -> DenseFeatures:
        cfg = self.config
        return dense_features(self.model, x, cfg.readout, cfg.ks, cfg.output_stride, cfg.pos_embed, cfg.naclip_sigma)

    @staticmethod
    def normalized(out: DenseFeatures) -> tuple[torch.Tensor, torch.Tensor | None]:
        return F.normalize(out.feats.float(), dim=1), out.keys.float() if out.keys is not None else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats, keys = self.normalized(self.features(x))
        return (feats, keys) if keys is not None else (feats,)


def dense_features(model: CLIP, images: torch.Tensor, readout: ReadOut = "authors", keys: bool = False,
                   output_stride: int | None = None, pos_embed: str = "resize",
                   naclip_sigma: float = 5.0) -> DenseFeatures:
    """Dense features of normalised images [B, 3, H, W] (a size that is not a multiple of `stride_of(model)`
    is floored by the patch embedding or the pools).

    `output_stride` (ResNets only): None or 32 as CLIP, 16 or 8 a trous (module docstring). `pos_embed` and
    `naclip_sigma`: ViTs only (dense.successors).
    """
    check_readout(model, readout, output_stride)
    images = images.to(model.dtype)
    if isinstance(model.visual, VisionTransformer):
        return vit_dense(model.visual, images, readout, keys, pos_embed, naclip_sigma)
    return resnet_dense(model.visual, images, readout, keys, output_stride or 32)
