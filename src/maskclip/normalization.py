"""Input normalisations, defined once in the units they are published in (fractions of 255).

"imagenet" is what the authors' MaskCLIP and MaskCLIP+ configs use (mmseg writes it as 123.675, ...
in pixel values: `pixel_mean_std` gives those), "clip" is CLIP's own preprocessing.
"""

from __future__ import annotations

NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def pixel_mean_std(kind: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of normalisation `kind` in pixel values 0-255 (ImageNet: (123.675, 116.28, 103.53), ...)."""
    if kind not in NORMALIZATIONS:
        raise ValueError(f"normalisation must be one of {', '.join(NORMALIZATIONS)}, got {kind!r}")
    mean, std = NORMALIZATIONS[kind]
    return tuple(v * 255 for v in mean), tuple(v * 255 for v in std)


__all__ = ["NORMALIZATIONS", "pixel_mean_std"]
