"""Dense, text-aligned features from a frozen CLIP image encoder (paper section 3.3).

Three ways to read the last layer:

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..clip.model import CLIP, ModifiedResNet, ResidualAttentionBlock, VisionTransformer, resize_pos_embed

Path = Literal["authors", "value-only", "baseline"]
PATHS: tuple[str, ...] = ("authors", "value-only", "baseline")


@dataclass
class DenseFeatures:
    """Per-position embeddings in CLIP's joint space (not normalised) and optional keys, both [B, C, h, w]."""

    feats: torch.Tensor
    keys: torch.Tensor | None = None


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


def vit_dense(visual: VisionTransformer, images: torch.Tensor, path: Path = "authors",
              keys: bool = False) -> DenseFeatures:
    x, grid = visual.tokens(images)
    blocks = visual.transformer.resblocks
    for block in blocks[:-1]:
        x = block(x)
    last: ResidualAttentionBlock = blocks[-1]
    k = None
    if path == "baseline":
        y = last(x)
        out = visual.ln_post(y[:, 1:]) @ visual.proj
    else:
        h = last.ln_1(x[:, 1:])
        v = last.attn.out_proj(_linear_slice(h, last, 2))
        if path == "authors":
            v = v + x[:, 1:]
            v = v + last.mlp(last.ln_2(v))
        elif path != "value-only":
            raise ValueError(f"unknown dense path {path!r}; choose from {PATHS}")
        out = visual.ln_post(v) @ visual.proj
    if keys:
        h = last.ln_1(x[:, 1:])
        k = _to_map(last.attn.out_proj(_linear_slice(h, last, 1)), grid)
    return DenseFeatures(_to_map(out, grid), k)


def resnet_dense(visual: ModifiedResNet, images: torch.Tensor, path: Path = "authors",
                 keys: bool = False) -> DenseFeatures:
    x = visual.features(images)  # N, C, h, w
    pool = visual.attnpool
    n, c, h, w = x.shape
    tokens = x.flatten(2).transpose(1, 2)  # N, hw, C
    if path == "baseline":
        # every position queries the (position-embedded) tokens, as the unmodified pool would
        t = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        pos = pool.positional_embedding.to(t.dtype)
        t = t + torch.cat([pos[:1], resize_pos_embed(pos[1:], (h, w))], dim=0)
        heads = pool.num_heads
        split = lambda z: z.reshape(n, -1, heads, c // heads).transpose(1, 2)  # noqa: E731
        q, kk, v = split(pool.q_proj(t)), split(pool.k_proj(t)), split(pool.v_proj(t))
        out = F.scaled_dot_product_attention(q, kk, v).transpose(1, 2).reshape(n, -1, c)
        out = pool.c_proj(out[:, 1:])
    elif path in ("authors", "value-only"):
        out = pool.c_proj(pool.v_proj(tokens))
    else:
        raise ValueError(f"unknown dense path {path!r}; choose from {PATHS}")
    k = _to_map(pool.k_proj(tokens), (h, w)) if keys else None
    return DenseFeatures(_to_map(out, (h, w)), k)


def dense_features(model: CLIP, images: torch.Tensor, path: Path = "authors", keys: bool = False) -> DenseFeatures:
    """Dense features of normalised images [B, 3, H, W]; H and W should be multiples of `stride_of(model)`."""
    images = images.to(model.dtype)
    if isinstance(model.visual, VisionTransformer):
        return vit_dense(model.visual, images, path, keys)
    return resnet_dense(model.visual, images, path, keys)
