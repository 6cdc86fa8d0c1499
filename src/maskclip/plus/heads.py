"""Segmentation heads producing CLIP-sized (``embed_dim``) per-pixel features.

Heads never produce class scores: the frozen text classifier (models.TextHead) does, which is what
keeps the trained network open-vocabulary.  Every head takes the backbone's list of stage outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBNReLU(nn.Sequential):
    """mmcv's ConvModule(conv, BN, ReLU) with a bias-free conv."""

    def __init__(self, cin: int, cout: int, k: int = 1, dilation: int = 1, groups: int = 1):
        pad = 0 if k == 1 else dilation * (k // 2)
        super().__init__(nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise 3x3 (BN, ReLU) then pointwise 1x1 (BN, ReLU), as mmcv's DepthwiseSeparableConvModule."""

    def __init__(self, cin: int, cout: int, dilation: int = 1):
        super().__init__(ConvBNReLU(cin, cin, 3, dilation, groups=cin), ConvBNReLU(cin, cout, 1))


class ASPPv2Head(nn.Module):
    """DeepLabv2 ASPP: parallel dilated 3x3 convs on the last stage, summed.

    Follows the authors' ``ASPPHeadV2`` (each branch is conv+BN+ReLU with SyncBN in their configs), so the
    summed feature is what the text classifier scores. Original DeepLabv2 used plain convs with bias
    producing class scores directly; set ``norm_act=False`` for that form (convs with bias, no BN/ReLU).
    """

    def __init__(self, in_channels: int, embed_dim: int, dilations: tuple[int, ...] = (6, 12, 18, 24),
                 norm_act: bool = True):
        super().__init__()
        if norm_act:
            self.branches = nn.ModuleList(ConvBNReLU(in_channels, embed_dim, 3, d) for d in dilations)
        else:
            self.branches = nn.ModuleList(
                nn.Conv2d(in_channels, embed_dim, 3, padding=d, dilation=d) for d in dilations)

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = feats[-1]
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class ASPPv3(nn.Module):
    """DeepLabv3 ASPP: image pooling + 1x1 + separable dilated 3x3 branches, concatenated, fused by 3x3."""

    def __init__(self, in_channels: int, channels: int, dilations: tuple[int, ...] = (1, 12, 24, 36),
                 separable: bool = True):
        super().__init__()
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(in_channels, channels, 1))
        self.branches = nn.ModuleList(
            ConvBNReLU(in_channels, channels, 1) if d == 1
            else (SeparableConvBNReLU(in_channels, channels, d) if separable
                  else ConvBNReLU(in_channels, channels, 3, d))
            for d in dilations)
        self.bottleneck = ConvBNReLU(channels * (len(dilations) + 1), channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.interpolate(self.image_pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.bottleneck(torch.cat([pooled] + [b(x) for b in self.branches], dim=1))


class DeepLabV3PlusHead(nn.Module):
    """DeepLabv3+ decoder (mmseg's DepthwiseSeparableASPPHead): ASPP on C4, 48-channel C1 skip, two
    separable 3x3 convs. Output stride 4 (C1's resolution). Dilations (1, 12, 24, 36) are for an OS-8
    backbone, as in the authors' Pascal Context config."""

    def __init__(self, in_channels: int, low_level_channels: int, embed_dim: int,
                 dilations: tuple[int, ...] = (1, 12, 24, 36), c1_channels: int = 48):
        super().__init__()
        self.aspp = ASPPv3(in_channels, embed_dim, dilations)
        self.c1_bottleneck = ConvBNReLU(low_level_channels, c1_channels, 1)
        self.decoder = nn.Sequential(SeparableConvBNReLU(embed_dim + c1_channels, embed_dim),
                                     SeparableConvBNReLU(embed_dim, embed_dim))

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = self.aspp(feats[-1])
        c1 = self.c1_bottleneck(feats[0])
        x = F.interpolate(x, size=c1.shape[-2:], mode="bilinear", align_corners=False)
        return self.decoder(torch.cat([x, c1], dim=1))


class LightHead(nn.Module):
    """Small head for CPU use: 1x1 + image-pool branches, one 3x3 fuse, then a linear 1x1 projection to
    ``embed_dim`` (no final ReLU, so features can point anywhere in CLIP's embedding space)."""

    def __init__(self, in_channels: int, embed_dim: int, channels: int = 128):
        super().__init__()
        self.local = ConvBNReLU(in_channels, channels, 1)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(in_channels, channels, 1))
        self.fuse = ConvBNReLU(2 * channels, channels, 3)
        self.proj = nn.Conv2d(channels, embed_dim, 1)

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = feats[-1]
        pooled = self.image_pool(x).expand(-1, -1, x.shape[-2], x.shape[-1])
        return self.proj(self.fuse(torch.cat([self.local(x), pooled], dim=1)))


__all__ = ["ConvBNReLU", "SeparableConvBNReLU", "ASPPv2Head", "ASPPv3", "DeepLabV3PlusHead", "LightHead"]
