"""Training-crop augmentation of the authors' MaskCLIP+ configs (mmseg pipeline), in torch only.

Resize (random ratio 0.5-2.0 of a base scale, keeping aspect ratio) -> random crop (cat_max_ratio 0.75)
-> horizontal flip -> photometric distortion -> normalise -> pad to the crop size.  Every random draw
comes from the ``torch.Generator`` passed in, so a crop is a pure function of (sample, generator seed):
that is what makes resume and multi-process sharding exact.

Differences to mmseg, on purpose: images stay float through the photometric steps (mmseg rounds to uint8
after each step) and hue is shifted in degrees (mmseg's delta 18 on OpenCV's 0-180 hue scale = 36 degrees
here). Resizing uses torch's bilinear (images) / nearest (labels) instead of OpenCV's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..normalization import pixel_mean_std

# The authors' MaskCLIP+ configs normalise with ImageNet statistics (in pixel values), for the target
# network and for the MaskCLIP teacher alike (it sees the same crop).
_MEAN, _STD = pixel_mean_std("imagenet")
UNLABELED = -1  # pixel has no ground truth and may receive a pseudo label (authors' "suppressed" value)


@dataclass
class AugmentConfig:
    crop_size: tuple[int, int] = (512, 512)  # (h, w); Pascal Context uses (480, 480)
    scale: tuple[int, int] = (2048, 512)  # (long, short) base scale; Pascal Context uses (520, 520)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    brightness_delta: float = 32.0
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta_degrees: float = 36.0
    mean: tuple[float, ...] = _MEAN
    std: tuple[float, ...] = _STD
    ignore_index: int = 255


def _u(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _randint(g: torch.Generator, n: int) -> int:
    return int(torch.randint(n, (), generator=g))


def to_image_tensor(image: np.ndarray | Tensor) -> Tensor:
    """HxWx3 uint8 (numpy/torch) -> float32 [3,H,W] on the 0-255 scale."""
    t = torch.as_tensor(np.asarray(image)) if not isinstance(image, Tensor) else image
    if t.ndim != 3 or t.shape[-1] != 3:
        raise ValueError(f"image must be HxWx3 RGB, got shape {tuple(t.shape)}")
    return t.permute(2, 0, 1).float()


def normalize(image: Tensor, mean: tuple[float, ...] = _MEAN, std: tuple[float, ...] = _STD) -> Tensor:
    """[..., 3, H, W] on the 0-255 scale -> normalised."""
    m = torch.tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image - m) / s


def rescale_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv.rescale_size: the largest size keeping aspect ratio that fits (long, short) = scale."""
    long_max, short_max = max(scale), min(scale)
    f = min(long_max / max(h, w), short_max / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


def random_resize(image: Tensor, labels: Tensor, cfg: AugmentConfig, g: torch.Generator) -> tuple[Tensor, Tensor]:
    ratio = _u(g, *cfg.ratio_range)
    target = (int(cfg.scale[0] * ratio), int(cfg.scale[1] * ratio))
    nh, nw = rescale_size(image.shape[-2], image.shape[-1], target)
    image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    if labels.numel():
        labels = F.interpolate(labels[None].float(), size=(nh, nw), mode="nearest")[0].long()
    else:
        labels = labels.new_zeros((0, nh, nw))
    return image, labels


def _crop_box(h: int, w: int, ch: int, cw: int, g: torch.Generator) -> tuple[int, int, int, int]:
    y = _randint(g, max(h - ch, 0) + 1)
    x = _randint(g, max(w - cw, 0) + 1)
    return y, min(y + ch, h), x, min(x + cw, w)


def random_crop(image: Tensor, labels: Tensor, cfg: AugmentConfig, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """mmseg RandomCrop: up to 10 tries for a crop where no class covers >= cat_max_ratio of the labelled
    pixels (checked on the first label map, UNLABELED counting as a class as in the authors' code)."""
    h, w = image.shape[-2:]
    ch, cw = cfg.crop_size
    box = _crop_box(h, w, ch, cw, g)
    if cfg.cat_max_ratio < 1.0 and labels.shape[0] > 0:
        for _ in range(10):
            y0, y1, x0, x1 = box
            crop = labels[0, y0:y1, x0:x1]
            _, cnt = torch.unique(crop[crop != cfg.ignore_index], return_counts=True)
            if len(cnt) > 1 and cnt.max().item() / cnt.sum().item() < cfg.cat_max_ratio:
                break
            box = _crop_box(h, w, ch, cw, g)
    y0, y1, x0, x1 = box
    return image[:, y0:y1, x0:x1], labels[:, y0:y1, x0:x1]


def rgb_to_hsv(img: Tensor) -> Tensor:
    """[3,H,W] RGB in [0,1] -> HSV with H in degrees [0,360), S and V in [0,1]."""
    r, g, b = img[0], img[1], img[2]
    maxc, _ = img.max(0)
    minc, _ = img.min(0)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    safe = delta.clamp_min(1e-12)
    h = torch.where(maxc == r, ((g - b) / safe) % 6,
                    torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(delta > 0, h * 60.0, torch.zeros_like(h))
    return torch.stack([h % 360.0, s, maxc])


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    h, s, v = hsv[0], hsv[1], hsv[2]
    c = v * s
    hp = (h % 360.0) / 60.0
    x = c * (1 - (hp % 2 - 1).abs())
    zero = torch.zeros_like(h)
    i = hp.floor().long().clamp(0, 5)
    r = torch.stack([c, x, zero, zero, x, c])
    g = torch.stack([x, c, c, x, zero, zero])
    b = torch.stack([zero, zero, x, c, c, x])
    idx = i[None]
    rgb = torch.stack([r.gather(0, idx)[0], g.gather(0, idx)[0], b.gather(0, idx)[0]])
    return rgb + (v - c)[None]


def photometric_distortion(image: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    """mmseg PhotoMetricDistortion on a 0-255 float image: brightness, contrast (before or after the HSV
    steps, chosen at random), saturation, hue; each applied with probability 1/2."""
    img = image
    if _randint(g, 2):
        img = (img + _u(g, -cfg.brightness_delta, cfg.brightness_delta)).clamp(0, 255)
    contrast_first = _randint(g, 2) == 1
    if contrast_first and _randint(g, 2):
        img = (img * _u(g, *cfg.contrast_range)).clamp(0, 255)
    do_sat = _randint(g, 2)
    sat = _u(g, *cfg.saturation_range) if do_sat else 1.0
    do_hue = _randint(g, 2)
    hue = _u(g, -cfg.hue_delta_degrees, cfg.hue_delta_degrees) if do_hue else 0.0
    if do_sat or do_hue:
        hsv = rgb_to_hsv(img / 255.0)
        hsv = torch.stack([(hsv[0] + hue) % 360.0, (hsv[1] * sat).clamp(0, 1), hsv[2]])
        img = (hsv_to_rgb(hsv) * 255.0).clamp(0, 255)
    if not contrast_first and _randint(g, 2):
        img = (img * _u(g, *cfg.contrast_range)).clamp(0, 255)
    return img


def augment(image: Tensor, labels: Tensor, cfg: AugmentConfig, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """image float [3,H,W] 0-255, labels long [L,H,W] (L label maps transformed alike, L may be 0)
    -> (normalised image [3,ch,cw], labels [L,ch,cw]) padded with 0 / ignore_index."""
    if labels.shape[-2:] != image.shape[-2:] and labels.numel():
        raise ValueError(f"label size {tuple(labels.shape[-2:])} != image size {tuple(image.shape[-2:])}")
    image, labels = random_resize(image, labels, cfg, g)
    image, labels = random_crop(image, labels, cfg, g)
    if _u(g) < cfg.flip_prob:
        image, labels = image.flip(-1), labels.flip(-1)
    if cfg.photometric:
        image = photometric_distortion(image, cfg, g)
    image = normalize(image, cfg.mean, cfg.std)
    ch, cw = cfg.crop_size
    ph, pw = ch - image.shape[-2], cw - image.shape[-1]
    if ph > 0 or pw > 0:
        image = F.pad(image, (0, pw, 0, ph), value=0.0)
        labels = F.pad(labels, (0, pw, 0, ph), value=cfg.ignore_index)
    return image, labels


def sample_seed(seed: int, position: int) -> int:
    """Independent 63-bit seed per global stream position (splitmix64), so crops do not depend on which
    process or worker makes them, nor on what came before."""
    z = (seed * 0x9E3779B97F4A7C15 + position * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return (z ^ (z >> 31)) & (2**63 - 1)


__all__ = ["UNLABELED", "AugmentConfig", "to_image_tensor", "normalize",
           "rescale_size", "random_resize", "random_crop", "rgb_to_hsv", "hsv_to_rgb", "photometric_distortion",
           "augment", "sample_seed"]
