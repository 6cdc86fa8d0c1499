"""Every numeric choice of region classification, one frozen dataclass whose fields define the options.

The decoupling paradigm (Ding et al., ZegFormer; Xu et al., SimBaseline; seed 003 section 1): N masks, a
frozen CLIP classifies a sub-image per mask (A^c), ensembled with a proposal generator's seen-class
scores (A^p) as eq. (1). "pool" is ours: one encoder pass, MaskCLIP's dense features pooled per mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..dense.config import option

MERGES = ("mask", "crop", "mask&crop", "pool")


@dataclass(frozen=True)
class RegionConfig:
    """merge: how a mask becomes what CLIP classifies ("mask": the whole image, pixels outside the mask set
      to the mean colour; "crop": the mask's box; "mask&crop": both, the seed's best; "pool": ours).
    size: side of the square sub-images (None: the CLIP's input resolution, 224 for OpenAI's models).
    lam: λ of eq. (1): Â = A^p^λ · A^c^(1-λ) for seen classes, A^c^λ for unseen (the literature 0.6-0.8)."""

    merge: Literal["mask", "crop", "mask&crop", "pool"] = option(
        "mask&crop", "how a mask becomes what CLIP classifies: 'mask' (whole image, outside = mean colour), 'crop' "
        "(its box), 'mask&crop' (both: the best of the three in Ding et al.), 'pool' (ours: MaskCLIP's dense "
        "features averaged under the mask, one encoder pass for all masks)", choices=MERGES)
    size: int | None = option(None, "side of the square sub-images fed to CLIP (default: the CLIP's input "
                              "resolution, 224 for OpenAI's)", flag="--sub-image-size", parse=(16, 1024),
                              none_as="model")
    expand: float = option(1.0, "crop/mask&crop: the box scaled by this factor about its centre (clipped to the "
                           "image)", flag="--box-expand", parse="positive_float")
    interpolation: Literal["bicubic", "bilinear"] = option(
        "bicubic", "sub-image resize filter (bicubic: CLIP's preprocessing)", flag="--sub-image-interpolation",
        choices=("bicubic", "bilinear"))
    normalize: Literal["clip", "imagenet"] = option(
        "clip", "sub-image normalisation ('clip': CLIP's own preprocessing); 'pool' uses the MaskCLIP settings",
        flag="--sub-image-normalize", choices=("clip", "imagenet"))
    temperature: float = option(100.0, "A^c = softmax(temperature x cosine) over all classes (CLIP's 100)",
                                flag="--region-temperature", parse="positive_float")
    lam: float = option(0.7, "ensemble weight λ of eq. (1) (used with proposal scores A^p)", flag="--ensemble-lambda",
                        parse="fraction")
    batch_size: int = option(32, "sub-images per CLIP batch", flag="--region-batch", parse=(1, 4096))
    top_k: int = option(5, "scores kept per mask in the JSON records", flag="--top-k", parse=(1, 100))

    def __post_init__(self) -> None:
        if self.merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {self.merge!r}")
        if self.size is not None and not 16 <= self.size <= 1024:
            raise ValueError(f"size must lie in 16..1024, got {self.size}")
        for name in ("expand", "temperature"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        if not 0 <= self.lam <= 1:
            raise ValueError(f"lam must lie in [0, 1], got {self.lam}")
        if not 1 <= self.batch_size <= 4096 or not 1 <= self.top_k <= 100:
            raise ValueError("batch_size must lie in 1..4096 and top_k in 1..100")


__all__ = ["MERGES", "RegionConfig"]
