"""Pictures of label maps: colour overlays with a legend, side-by-side panels, heat maps.

Pure array in, array out (HxWx3 uint8), so that the same drawing serves `segment`, `label`, `eval
--save-vis` and the demo, and can be tested without files.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .data.image_io import voc_palette


def palette(n: int, first: np.ndarray | None = None) -> np.ndarray:
    """[n, 3] uint8 distinct colours: `first` (e.g. the toy world's sky blue for sky), then the PASCAL VOC
    colour map without its black (black marks ignore); past 255 classes, colours from a fixed-seed generator."""
    base = voc_palette(256)[1:]
    if first is not None:
        first = np.asarray(first, dtype=np.uint8).reshape(-1, 3)
        taken = {tuple(c) for c in first.tolist()}
        base = np.concatenate([first, np.array([c for c in base if tuple(c.tolist()) not in taken], np.uint8)])
    if n <= len(base):
        return base[:n].copy()
    extra = np.random.default_rng(0).integers(32, 256, size=(n - len(base), 3), dtype=np.uint8)
    return np.concatenate([base, extra])


UNKNOWN_COLOUR = (150, 150, 150)  # never a VOC colour map entry (those are sums of powers of two >= 32)


def label_palette(names: Sequence[str]) -> np.ndarray:
    """`palette(len(names))` with "unknown" (pixels below a threshold, or that no mask covers) in a neutral
    grey, so that it never looks like a class."""
    colors = palette(len(names))
    for i, n in enumerate(names):
        if n == "unknown":
            colors[i] = UNKNOWN_COLOUR
    return colors


_BLOCK = 1 << 20  # pixels per block: large label maps are drawn in row blocks, so memory stays bounded


def _row_blocks(shape: tuple[int, ...]) -> list[slice]:
    rows = max(1, _BLOCK // max(1, shape[1]))
    return [slice(r, min(shape[0], r + rows)) for r in range(0, shape[0], rows)]


def colorize(labels: np.ndarray, colors: np.ndarray, ignore_index: int | None = 255) -> np.ndarray:
    """Label map [H, W] -> RGB; out-of-range and ignore pixels are black."""
    out = np.zeros((*labels.shape, 3), dtype=np.uint8)
    for rows in _row_blocks(labels.shape):
        lab = labels[rows].astype(np.int64)
        valid = (lab >= 0) & (lab < len(colors))
        if ignore_index is not None:
            valid &= lab != ignore_index
        out[rows][valid] = colors[lab[valid]]
    return out


def overlay(image: np.ndarray, labels: np.ndarray, colors: np.ndarray, alpha: float = 0.55,
            ignore_index: int | None = 255) -> np.ndarray:
    """Blend the colourised labels over the image."""
    out = np.empty(image.shape, dtype=np.uint8)
    for rows in _row_blocks(labels.shape):
        color = colorize(labels[rows], colors, ignore_index).astype(np.float32)
        blend = image[rows].astype(np.float32) * (1 - alpha) + color * alpha
        out[rows] = blend.round().clip(0, 255).astype(np.uint8)
    return out


def label_counts(labels: np.ndarray, n: int) -> np.ndarray:
    """Pixels per label 0..n-1 (bincount in row blocks: no full-size int64 copy of a large map)."""
    counts = np.zeros(n, dtype=np.int64)
    for rows in _row_blocks(labels.shape):
        counts += np.bincount(labels[rows].ravel(), minlength=n)[:n]
    return counts


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def legend(names: Sequence[str], colors: np.ndarray, present: Sequence[int] | None = None, width: int = 200,
           row: int = 16) -> np.ndarray:
    """A white column listing the classes (only `present` ones if given) with their colour swatches."""
    ids = list(range(len(names))) if present is None else list(present)
    img = Image.new("RGB", (width, max(row, row * len(ids) + 8)), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font(row - 4)
    for r, i in enumerate(ids):
        y = 4 + r * row
        draw.rectangle([4, y, 4 + row - 4, y + row - 4], fill=tuple(int(v) for v in colors[i]), outline=(0, 0, 0))
        draw.text((row + 6, y), str(names[i])[:40], fill=(0, 0, 0), font=font)
    return np.asarray(img)


def hstack(images: Sequence[np.ndarray], gap: int = 4, titles: Sequence[str] | None = None) -> np.ndarray:
    """Images side by side (top-aligned, white background), with optional titles above each."""
    title_h = 16 if titles else 0
    h = max(im.shape[0] for im in images) + title_h
    w = sum(im.shape[1] for im in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for i, im in enumerate(images):
        canvas.paste(Image.fromarray(im), (x, title_h))
        if titles:
            draw.text((x + 2, 2), titles[i], fill=(0, 0, 0), font=_font(12))
        x += im.shape[1] + gap
    return np.asarray(canvas)


def overlay_with_legend(image: np.ndarray, labels: np.ndarray, names: Sequence[str], colors: np.ndarray,
                        ignore_index: int | None = 255) -> np.ndarray:
    counts = label_counts(labels, len(names))
    present = [i for i in range(len(names)) if counts[i] and i != ignore_index]
    return hstack([overlay(image, labels, colors, ignore_index=ignore_index), legend(names, colors, present)])


def panel(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, names: Sequence[str], colors: np.ndarray,
          ignore_index: int | None = 255, scale: int = 1, title: str = "") -> np.ndarray:
    """image | ground truth | prediction | legend, for looking at what the numbers mean.

    `scale` enlarges small images (nearest neighbour) so that label boundaries stay visible."""
    ids = set(np.unique(pred).tolist())
    parts, titles = [image], ["image"]
    if truth is not None:
        ids |= set(np.unique(truth).tolist())
        parts.append(colorize(truth, colors, ignore_index))
        titles.append("ground truth")
    parts.append(colorize(pred, colors, ignore_index))
    titles.append("prediction")
    if scale > 1:
        parts = [np.asarray(Image.fromarray(p).resize((p.shape[1] * scale, p.shape[0] * scale), Image.NEAREST))
                 for p in parts]
    present = sorted(i for i in ids if 0 <= i < len(names) and i != ignore_index)
    parts.append(legend(names, colors, present))
    titles.append("")
    out = hstack(parts, titles=titles)
    return _with_caption(out, title) if title else out


def _with_caption(image: np.ndarray, text: str) -> np.ndarray:
    canvas = Image.new("RGB", (image.shape[1], image.shape[0] + 18), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 18))
    ImageDraw.Draw(canvas).text((4, 3), text, fill=(0, 0, 0), font=_font(12))
    return np.asarray(canvas)


def heatmap(image: np.ndarray, prob: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """One class's probability [H, W] in 0-1 as a blue-to-red map over a greyed image."""
    p = np.clip(prob, 0, 1)[..., None]
    cold, hot = np.array([30, 60, 200], np.float32), np.array([230, 40, 30], np.float32)
    color = cold * (1 - p) + hot * p
    grey = image.astype(np.float32).mean(axis=2, keepdims=True)
    return (grey * (1 - alpha) + color * alpha).round().clip(0, 255).astype(np.uint8)
