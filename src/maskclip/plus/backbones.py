"""Dilated ResNet backbones for the MaskCLIP+ target networks (torch only).

The layout follows mmseg's ``ResNetV1c`` (what the authors trained MaskCLIP+ with): a deep stem of three
3x3 convolutions (widths stem/2, stem/2, stem), "pytorch" style bottlenecks (stride on the 3x3 conv) and
dilated late stages with *contracted* dilation (the first block of a dilated stage uses half the
dilation, as in mmseg's ``contract_dilation=True``).  Parameter names are mmseg's, so open-mmlab
``resnet*_v1c`` checkpoints load without renaming; torchvision checkpoints (plain 7x7 stem) are renamed by
:func:`torchvision_to_ours`.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

# Public ImageNet checkpoints. v1c = deep stem (mmcv's open-mmlab://resnet*_v1c), torchvision = 7x7 stem.
PRETRAINED_URLS: dict[str, str] = {
    "resnet18_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet18_v1c-b5776b93.pth",
    "resnet50_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth",
    "resnet101_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth",
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
}

BLOCKS_PER_STAGE: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}

# strides / dilations of stages 1-4 for each output stride (DeepLab's "d8" and "d16" variants)
OUTPUT_STRIDE_SETTINGS: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    8: ((1, 2, 1, 1), (1, 1, 2, 4)),
    16: ((1, 2, 2, 1), (1, 1, 1, 2)),
    32: ((1, 2, 2, 2), (1, 1, 1, 1)),
}


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    """Two 3x3 convs. Both convs are dilated (mmseg dilates only the first; weights are identical)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int | None = None, downsample: nn.Module | None = None):
        super().__init__()
        d0 = first_dilation or dilation
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=d0, dilation=d0, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1, "pytorch" style (stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int | None = None, downsample: nn.Module | None = None):
        super().__init__()
        d = first_dilation or dilation
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=d, dilation=d, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = _bn(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Dilated ResNet returning the four stage outputs [C1, C2, C3, C4].

    deep_stem=True is the v1c stem (3x3 convs stem/2, stem/2, stem); False is torchvision's 7x7 conv.
    ``base_channels`` scales every stage (64 = the standard width; tests use 8 for speed).
    """

    def __init__(self, depth: int = 101, *, deep_stem: bool = True, stem_channels: int = 64,
                 base_channels: int = 64, output_stride: int = 8, contract_dilation: bool = True):
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth}")
        if output_stride not in OUTPUT_STRIDE_SETTINGS:
            raise ValueError(f"output_stride must be one of {sorted(OUTPUT_STRIDE_SETTINGS)}, got {output_stride}")
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock if depth < 50 else Bottleneck
        strides, dilations = OUTPUT_STRIDE_SETTINGS[output_stride]
        self.depth, self.deep_stem, self.output_stride = depth, deep_stem, output_stride
        self.strides, self.dilations = strides, dilations

        if deep_stem:
            half = stem_channels // 2
            self.stem = nn.Sequential(
                nn.Conv2d(3, half, 3, 2, 1, bias=False), _bn(half), nn.ReLU(inplace=True),
                nn.Conv2d(half, half, 3, 1, 1, bias=False), _bn(half), nn.ReLU(inplace=True),
                nn.Conv2d(half, stem_channels, 3, 1, 1, bias=False), _bn(stem_channels), nn.ReLU(inplace=True),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, stem_channels, 7, 2, 3, bias=False), _bn(stem_channels), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)

        inplanes = stem_channels
        self.out_channels: list[int] = []
        for i, (n, s, d) in enumerate(zip(BLOCKS_PER_STAGE[depth], strides, dilations)):
            planes = base_channels * 2**i
            downsample = None
            if s != 1 or inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes * block.expansion, 1, s, bias=False), _bn(planes * block.expansion))
            first = d // 2 if (contract_dilation and d > 1) else d
            layers = [block(inplanes, planes, s, d, first, downsample)]
            inplanes = planes * block.expansion
            layers += [block(inplanes, planes, 1, d) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            self.out_channels.append(inplanes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.stem(x))
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            outs.append(x)
        return outs


# ----------------------------------------------------------------------------------------------------------
# Pretrained weights: key mapping (pure) and loading (I/O)


def mmseg_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """open-mmlab v1c checkpoints already use our names; drop the ImageNet fc and a 'backbone.' prefix."""
    out = {}
    for k, v in state_dict.items():
        k = k.removeprefix("module.").removeprefix("backbone.")
        if k.startswith("fc."):
            continue
        out[k] = v
    return out


def torchvision_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision ResNet names -> ours: conv1/bn1 become stem.0/stem.1; fc is dropped."""
    out = {}
    for k, v in state_dict.items():
        k = k.removeprefix("module.")
        if k.startswith("fc."):
            continue
        if k.startswith("conv1."):
            k = "stem.0." + k[len("conv1."):]
        elif k.startswith("bn1."):
            k = "stem.1." + k[len("bn1."):]
        out[k] = v
    return out


def detect_format(state_dict: Mapping[str, Tensor]) -> str:
    """'mmseg' (deep stem, stem.N names) or 'torchvision' (conv1/bn1 names)."""
    keys = [k.removeprefix("module.").removeprefix("backbone.") for k in state_dict]
    if any(k.startswith("stem.") for k in keys):
        return "mmseg"
    if any(k.startswith("conv1.") for k in keys):
        return "torchvision"
    raise ValueError("unrecognised ResNet checkpoint: expected 'stem.*' (open-mmlab v1c) or 'conv1.*' "
                     "(torchvision) parameter names")


def load_backbone_state_dict(backbone: ResNet, state_dict: Mapping[str, Tensor], fmt: str = "auto",
                             source: str = "<state dict>") -> None:
    """Load ImageNet weights, requiring every backbone tensor to be provided and every source key used.

    Only ``num_batches_tracked`` (absent from old checkpoints) may be missing; anything else is an error
    naming the keys, so a silently half-initialised backbone cannot happen.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]  # type: ignore[assignment]
    fmt = detect_format(state_dict) if fmt == "auto" else fmt
    if fmt == "mmseg":
        mapped = mmseg_to_ours(state_dict)
    elif fmt == "torchvision":
        mapped = torchvision_to_ours(state_dict)
    else:
        raise ValueError(f"fmt must be 'auto', 'mmseg' or 'torchvision', got {fmt!r}")
    own = backbone.state_dict()
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in mapped if k not in own]
    bad_shape = [f"{k}: {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}"
                 for k in mapped if k in own and mapped[k].shape != own[k].shape]
    if missing or unexpected or bad_shape:
        raise ValueError(
            f"backbone weights from {source} ({fmt} names) do not match a ResNet-{backbone.depth} "
            f"(deep_stem={backbone.deep_stem}): missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}, shape mismatch {bad_shape[:8]}. "
            "Use a v1c (deep stem) checkpoint for the r101 models and a torchvision one for light-r18.")
    with torch.no_grad():
        for k, v in mapped.items():
            own[k].copy_(v.to(own[k].dtype))


def load_pretrained_backbone(backbone: ResNet, pretrained: str, fmt: str = "auto") -> None:
    """``pretrained``: a key of PRETRAINED_URLS, an http(s) URL, or a local file path."""
    url = PRETRAINED_URLS.get(pretrained, pretrained)
    if url.startswith(("http://", "https://")):
        # torchvision names carry a SHA-256 prefix we can verify; open-mmlab's "third_party" files may not
        check = url.startswith("https://download.pytorch.org/")
        sd = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, check_hash=check)
    elif os.path.isfile(url):
        sd = torch.load(url, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(
            f"pretrained backbone {pretrained!r} is neither a known name ({', '.join(PRETRAINED_URLS)}), "
            "a URL, nor an existing file")
    load_backbone_state_dict(backbone, sd, fmt, source=url)
    log.info("loaded ImageNet backbone weights from %s", url)


def output_stride_of(backbone: nn.Module, size: int = 64) -> int:
    """Measured (not declared) stride of the last stage: input size / feature size."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        feat = backbone(torch.zeros(1, 3, size, size))[-1]
    backbone.train(was_training)
    return size // feat.shape[-1]


__all__ = [
    "PRETRAINED_URLS", "BasicBlock", "Bottleneck", "ResNet", "mmseg_to_ours", "torchvision_to_ours",
    "detect_format", "load_backbone_state_dict", "load_pretrained_backbone", "output_stride_of",
]
