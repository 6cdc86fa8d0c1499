"""The class-agnostic proposal generator: a MaskFormer head on the package's ResNet backbones (torch only).

Why MaskFormer: the decoupled open-vocabulary route (ZegFormer, SimBaseline) needs N masks that do not
depend on the class vocabulary plus, per mask, scores over the seen classes; MaskFormer's "mask
classification" produces exactly that (each query: one mask embedding and one class distribution over
S seen classes + "no object"), and ZegFormer is a MaskFormer trained on the seen classes.

Layout (MaskFormer's, scaled down): backbone res2..res5 -> FPN pixel decoder (lateral 1x1 + GroupNorm,
nearest top-down, 3x3 output convs, a 3x3 ``mask_features`` conv) -> per-pixel embeddings [B, D, H/s, W/s]
(s = 4 as MaskFormer, or 8); a DETR decoder (N learnable queries; per layer self-attention, cross-
attention to the projected res5 (or res4) map with sine positions, FFN; post-norm, MaskFormer's
PRE_NORM=False) -> per query class logits [S+1] and a 3-layer MLP mask embedding;
masks = einsum(mask embedding, per-pixel embeddings). Every decoder layer's output is returned for
deep supervision.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..plus.backbones import PRETRAINED_URLS, ResNet, load_pretrained_backbone

TRANSFORMER_INPUTS = ("res4", "res5")


@dataclass(frozen=True)
class ProposalConfig:
    """Network shape. MaskFormer R50 uses depth 50, width 64, N=100, D=256, 6 layers, 8 heads, FFN 2048,
    dropout 0.1; these defaults are small enough to train on 2 CPU cores at 64-128 px in minutes."""

    depth: int = 18  # ResNet depth (18/34: basic blocks; 50/101: bottlenecks)
    width: int = 32  # backbone base and stem width (64 = the standard ResNet; pretrained weights need 64)
    deep_stem: bool = False  # v1c stem (three 3x3 convs) instead of torchvision's 7x7 conv
    backbone_stride: int = 32  # 32 = plain ResNet as MaskFormer; 16/8 dilate the last stage(s)
    mask_stride: int = 4  # stride of the per-pixel embeddings: 4 (MaskFormer, res2) or 8 (res3)
    conv_dim: int = 64  # pixel-decoder channels (MaskFormer CONVS_DIM 256)
    mask_dim: int = 64  # per-pixel / mask embedding size D (MaskFormer MASK_DIM 256)
    hidden_dim: int = 64  # decoder width (MaskFormer HIDDEN_DIM 256)
    num_queries: int = 20  # N (MaskFormer 100)
    dec_layers: int = 2  # L (MaskFormer 6)
    heads: int = 4  # attention heads (MaskFormer 8)
    ffn_dim: int = 128  # decoder FFN width (MaskFormer 2048)
    dropout: float = 0.0  # MaskFormer 0.1; none for schedules of a few thousand iterations
    transformer_in: str = "res5"  # the feature the queries attend to (MaskFormer TRANSFORMER_IN_FEATURE)

    def validate(self) -> None:
        """ValueError naming the field, before any module is built."""
        if self.depth not in (18, 34, 50, 101, 152):
            raise ValueError(f"ProposalConfig.depth must be 18, 34, 50, 101 or 152, got {self.depth}")
        if self.backbone_stride not in (8, 16, 32) or self.mask_stride not in (4, 8):
            raise ValueError("ProposalConfig.backbone_stride must be 8, 16 or 32 and mask_stride 4 or 8")
        if self.transformer_in not in TRANSFORMER_INPUTS:
            raise ValueError(f"ProposalConfig.transformer_in must be one of {TRANSFORMER_INPUTS}")
        for name in ("width", "conv_dim", "mask_dim", "hidden_dim", "num_queries", "dec_layers", "heads", "ffn_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"ProposalConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_dim % self.heads or self.hidden_dim % 4:
            raise ValueError(f"ProposalConfig.hidden_dim={self.hidden_dim} must be divisible by heads={self.heads} "
                             "and by 4 (sine positions)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"ProposalConfig.dropout must lie in [0, 1), got {self.dropout}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProposalConfig:
        """From stored JSON (unknown keys are an error: a newer file, not silently misread)."""
        names = {f.name for f in fields(cls)}
        extra = sorted(set(d) - names)
        if extra:
            raise ValueError(f"unknown ProposalConfig fields {extra}")
        return cls(**d)


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm as MaskFormer's pixel decoder (32 groups), fewer when the width is not a multiple of 32."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


class PixelDecoder(nn.Module):
    """MaskFormer's BasePixelDecoder (an FPN): coarse-to-fine over res5..res2 (or res3), ending in the
    per-pixel embeddings; sizes come from the laterals, so any input size works."""

    def __init__(self, in_channels: list[int], conv_dim: int, mask_dim: int, levels: int):
        super().__init__()
        chans = in_channels[-levels:]  # finest first
        self.top = nn.Sequential(nn.Conv2d(chans[-1], conv_dim, 3, padding=1, bias=False), _norm(conv_dim),
                                 nn.ReLU(inplace=True))
        self.laterals = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, 1, bias=False), _norm(conv_dim)) for c in chans[:-1])
        self.outputs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(conv_dim, conv_dim, 3, padding=1, bias=False), _norm(conv_dim),
                          nn.ReLU(inplace=True)) for _ in chans[:-1])
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 3, padding=1)
        self.levels = levels

    def forward(self, feats: list[Tensor]) -> Tensor:
        feats = feats[-self.levels:]
        y = self.top(feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            lat = self.laterals[i](feats[i])
            y = self.outputs[i](lat + F.interpolate(y, size=lat.shape[-2:], mode="nearest"))
        return self.mask_features(y)


def sine_positions(h: int, w: int, dim: int, device: torch.device, temperature: float = 10000.0) -> Tensor:
    """DETR's normalised 2-D sine encoding as [h*w, dim]: dim/2 channels for y, dim/2 for x, alternating
    sin/cos over geometric frequencies; attention alone cannot tell where a feature is."""
    half = dim // 2
    k = torch.arange(half, device=device, dtype=torch.float32)
    freqs = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / half)
    even = (torch.arange(half, device=device) % 2) == 0

    def encode(n: int) -> Tensor:
        a = (torch.arange(1, n + 1, device=device, dtype=torch.float32) / n * 2 * math.pi)[:, None] / freqs
        return torch.where(even, a.sin(), a.cos())

    py = encode(h)[:, None, :].expand(h, w, half)
    px = encode(w)[None, :, :].expand(h, w, half)
    return torch.cat([py, px], dim=-1).reshape(h * w, dim)


class DecoderLayer(nn.Module):
    """DETR / MaskFormer decoder layer, post-norm: self-attention, cross-attention, FFN."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, query_pos: Tensor, memory_pos: Tensor) -> Tensor:
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.drop(self.self_attn(q, q, tgt, need_weights=False)[0]))
        attended = self.cross_attn(tgt + query_pos, memory + memory_pos, memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.drop(attended))
        return self.norm3(tgt + self.drop(self.ffn(tgt)))


class MLP(nn.Module):
    """Linear layers with ReLU between (MaskFormer's mask embedding: 3 layers)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, layers: int):
        super().__init__()
        dims = [dim_in] + [hidden] * (layers - 1) + [dim_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class ProposalModel(nn.Module):
    """images [B,3,H,W] (normalised) -> {"pred_logits" [B,N,S+1], "pred_masks" [B,N,H/s,W/s] (logits),
    "aux_outputs": the same for decoder layers 1..L-1}; the last class column is "no object"."""

    def __init__(self, config: ProposalConfig, num_seen: int):
        super().__init__()
        config.validate()
        if num_seen < 1:
            raise ValueError(f"a proposal model needs at least one seen class, got {num_seen}")
        c = self.config = config
        self.num_seen = int(num_seen)
        self.backbone = ResNet(c.depth, deep_stem=c.deep_stem, stem_channels=c.width, base_channels=c.width,
                               output_stride=c.backbone_stride)
        chans = self.backbone.out_channels
        self.pixel_decoder = PixelDecoder(chans, c.conv_dim, c.mask_dim, levels=4 if c.mask_stride == 4 else 3)
        self.feature_index = TRANSFORMER_INPUTS.index(c.transformer_in) + 2  # res4 -> stage 2, res5 -> 3
        self.input_proj = nn.Conv2d(chans[self.feature_index], c.hidden_dim, 1)
        self.query_embed = nn.Embedding(c.num_queries, c.hidden_dim)
        self.layers = nn.ModuleList(DecoderLayer(c.hidden_dim, c.heads, c.ffn_dim, c.dropout)
                                    for _ in range(c.dec_layers))
        self.decoder_norm = nn.LayerNorm(c.hidden_dim)
        self.class_embed = nn.Linear(c.hidden_dim, num_seen + 1)
        self.mask_embed = MLP(c.hidden_dim, c.hidden_dim, c.mask_dim, 3)

    def forward(self, images: Tensor, aux: bool = True) -> dict[str, Any]:
        feats = self.backbone(images)
        pixel = self.pixel_decoder(feats)
        src = self.input_proj(feats[self.feature_index])
        b, d, h, w = src.shape
        memory = src.flatten(2).transpose(1, 2)  # [B, h*w, D]
        memory_pos = sine_positions(h, w, d, src.device).to(src.dtype)[None]
        query_pos = self.query_embed.weight[None].expand(b, -1, -1)
        tgt = torch.zeros_like(query_pos)
        outs = []
        for i, layer in enumerate(self.layers):
            tgt = layer(tgt, memory, query_pos, memory_pos)
            if aux or i == len(self.layers) - 1:
                outs.append(self._predict(self.decoder_norm(tgt), pixel))
        result = dict(outs[-1])
        result["aux_outputs"] = outs[:-1]
        return result

    def _predict(self, hs: Tensor, pixel: Tensor) -> dict[str, Tensor]:
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(hs), pixel)
        return {"pred_logits": self.class_embed(hs), "pred_masks": masks}


def imagenet_weights(config: ProposalConfig) -> str:
    """The public ImageNet checkpoint (a PRETRAINED_URLS key) that fits the backbone, as MaskCLIP+'s models
    use them: torchvision's resnet18 (7x7 stem), open-mmlab's v1c ResNet-18/50/101 (deep stem)."""
    name = f"resnet{config.depth}_v1c" if config.deep_stem else f"resnet{config.depth}"
    if config.width != 64 or name not in PRETRAINED_URLS:
        fits = "ResNet-18 with the 7x7 stem, or ResNet-18/50/101 with the deep stem"
        raise ValueError(f"no public ImageNet weights for a width-{config.width} ResNet-{config.depth} "
                         f"({'deep' if config.deep_stem else '7x7'} stem); they exist for width 64: {fits}")
    return name


def build_proposal_model(config: ProposalConfig, num_seen: int, pretrained: str | None = None,
                         warn_random_init: bool = True) -> ProposalModel:
    """A ProposalModel; `pretrained`: None (random backbone, warned), "imagenet" (`imagenet_weights`), a
    PRETRAINED_URLS key, a URL or a local file."""
    model = ProposalModel(config, num_seen)
    if pretrained is not None:
        load_pretrained_backbone(model.backbone, imagenet_weights(config) if pretrained == "imagenet" else pretrained)
    elif warn_random_init:
        warnings.warn("proposal model: the backbone is RANDOMLY INITIALISED (pretrained=None); MaskFormer and "
                      "ZegFormer start from ImageNet weights (pretrained='imagenet', width 64)", stacklevel=2)
    return model


__all__ = ["MLP", "DecoderLayer", "PixelDecoder", "ProposalConfig", "ProposalModel", "TRANSFORMER_INPUTS",
           "build_proposal_model", "imagenet_weights", "sine_positions"]
