"""Colour maps, overlays and side-by-side panels (image | ground truth | prediction + legend)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# fixed, well-separated colours; the first ten match the toy world's CLASSES order
PALETTE = np.array([
    [135, 206, 250], [128, 128, 128], [34, 139, 34], [238, 214, 175], [25, 25, 160],
    [255, 0, 255], [255, 140, 0], [0, 200, 200], [220, 20, 60], [255, 255, 0],
    [148, 0, 211], [0, 0, 0], [0, 255, 127], [139, 69, 19], [255, 182, 193], [70, 130, 180],
], dtype=np.uint8)


def palette(k: int) -> np.ndarray:
    if k <= len(PALETTE):
        return PALETTE[:k]
    rng = np.random.default_rng(0)
    return np.concatenate([PALETTE, rng.integers(0, 256, (k - len(PALETTE), 3), dtype=np.uint8)])


IGNORE_COLOUR = np.array([60, 60, 60], np.uint8)


def colourise(labels: np.ndarray, k: int | None = None, ignore: int = 255) -> np.ndarray:
    """RGB image of a label map; `ignore` (no ground truth) is dark grey."""
    valid = labels != ignore
    k = (int(labels[valid].max()) + 1 if valid.any() else 1) if k is None else k
    out = palette(max(k, 1))[np.where(valid, labels, 0)]
    out[~valid] = IGNORE_COLOUR
    return out


def overlay(image: np.ndarray, labels: np.ndarray, k: int, alpha: float = 0.55) -> np.ndarray:
    return (image * (1 - alpha) + colourise(labels, k) * alpha).astype(np.uint8)


def panel(image: np.ndarray, gt: np.ndarray | None, pred: np.ndarray, class_names: list[str],
          scale: int = 3, title: str = "") -> Image.Image:
    """image | ground truth | prediction, upscaled (nearest), with a legend of the classes shown.

    Ground-truth pixels labelled 255 (no query applies there) are drawn dark grey.
    """
    k = len(class_names)
    tiles = [image] + ([colourise(gt, k)] if gt is not None else []) + [colourise(pred, k)]
    h, w = image.shape[:2]
    strip = np.concatenate([np.asarray(Image.fromarray(t).resize((w * scale, h * scale), Image.NEAREST))
                            for t in tiles], axis=1)
    font = ImageFont.load_default()
    row_h = 14
    present = sorted(set(np.unique(pred).tolist()) | (set(np.unique(gt).tolist()) - {255} if gt is not None else set()))
    legend_h = row_h * ((len(present) + 2) // 3) + 6
    top = row_h + 4 if title else 0
    canvas = Image.new("RGB", (strip.shape[1], strip.shape[0] + legend_h + top), "white")
    canvas.paste(Image.fromarray(strip), (0, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill="black", font=font)
    col_w = strip.shape[1] // 3
    pal = palette(k)
    for i, c in enumerate(present):
        x, y = 4 + (i % 3) * col_w, top + strip.shape[0] + 3 + (i // 3) * row_h
        draw.rectangle([x, y + 2, x + 10, y + 12], fill=tuple(int(v) for v in pal[c]), outline="black")
        draw.text((x + 14, y + 1), class_names[c], fill="black", font=font)
    return canvas
