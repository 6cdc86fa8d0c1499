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


# Pascal VOC's own colours for its class names (background dark grey: black marks ignore)
_VOC_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
              "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
              "tvmonitor")
BACKGROUND_COLOUR = (48, 48, 48)
# conventional colours of common scene names (Cityscapes' for its classes; the rest chosen to look like
# the thing), so that "sky" is blue and "grass" green wherever they appear
_NAMED: dict[str, tuple[int, int, int]] = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70), "wall": (102, 102, 156),
    "fence": (190, 153, 153), "pole": (153, 153, 153), "traffic light": (250, 170, 30),
    "traffic sign": (220, 220, 0), "vegetation": (107, 142, 35), "terrain": (152, 251, 152),
    "sky": (70, 130, 180), "rider": (255, 0, 0), "truck": (0, 0, 70), "motorcycle": (0, 0, 230),
    "water": (30, 90, 200), "grass": (34, 139, 34), "sand": (238, 214, 175), "tree": (60, 110, 30),
}


def name_colour(name: str, salt: int = 0) -> tuple[int, int, int]:
    """One colour per class name, the same in every run and vocabulary: Cityscapes' and a few common scene
    names' conventional colours, VOC's for VOC's names, "unknown" grey, else a colour derived from the name's
    SHA-256 (saturated, mid-bright; `salt` re-draws it)."""
    import colorsys
    import hashlib

    key = name.strip().lower()
    if salt == 0 and key == "unknown":
        return UNKNOWN_COLOUR
    if salt == 0 and key in _NAMED:
        return _NAMED[key]
    if salt == 0 and key.replace(" ", "") in _VOC_NAMES:
        i = _VOC_NAMES.index(key.replace(" ", ""))
        return BACKGROUND_COLOUR if i == 0 else tuple(int(v) for v in voc_palette(21)[i])  # type: ignore[return-value]
    h = hashlib.sha256(f"{key}#{salt}".encode()).digest()
    r, g, b = colorsys.hsv_to_rgb(int.from_bytes(h[:2], "big") / 65536, 0.55 + 0.4 * h[2] / 255,
                                  0.6 + 0.35 * h[3] / 255)
    return int(r * 255), int(g * 255), int(b * 255)


def conventional(name: str) -> bool:
    """Whether the name has a conventional colour (Cityscapes, VOC, a common scene name, "unknown")."""
    key = name.strip().lower()
    return key in _NAMED or key.replace(" ", "") in _VOC_NAMES or key == "unknown"


def label_palette(names: Sequence[str], known: dict[str, Sequence[int]] | None = None) -> np.ndarray:
    """[len(names), 3] colours by name (`name_colour`; `known` overrides, e.g. the toy world's sky blue for
    "sky"); names that would share a colour in this vocabulary get re-drawn ones, so each colour names one
    class (as the label PNGs' palettes and CVAT's labelmap need)."""
    known = {k.lower(): tuple(v) for k, v in (known or {}).items()}
    taken: list[tuple[int, ...]] = [(0, 0, 0)]

    def too_close(c: tuple[int, ...], limit: float) -> bool:
        return any(sum((a - b) ** 2 for a, b in zip(c, t)) < limit ** 2 for t in taken)

    out = []
    for n in names:
        c, salt = known.get(n.lower()) or name_colour(n), 0
        # a derived colour is re-drawn when it is hard to tell from one already used (up to 24 draws)
        derived = n.lower() not in known and not conventional(n)
        while tuple(c) in taken or (derived and salt < 24 and too_close(c, 56) and len(names) <= 64):
            salt += 1
            c = name_colour(n, salt)
        taken.append(tuple(c))
        out.append(c)
    return np.array(out, dtype=np.uint8).reshape(-1, 3)


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


def font(size: int = 12) -> ImageFont.ImageFont:
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
    face = font(row - 4)
    for r, i in enumerate(ids):
        y = 4 + r * row
        draw.rectangle([4, y, 4 + row - 4, y + row - 4], fill=tuple(int(v) for v in colors[i]), outline=(0, 0, 0))
        draw.text((row + 6, y), str(names[i])[:40], fill=(0, 0, 0), font=face)
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
            draw.text((x + 2, 2), titles[i], fill=(0, 0, 0), font=font(12))
        x += im.shape[1] + gap
    return np.asarray(canvas)


def overlay_with_legend(image: np.ndarray, labels: np.ndarray, names: Sequence[str], colors: np.ndarray,
                        ignore_index: int | None = 255, min_side: int = 256) -> np.ndarray:
    """The overlay (small images enlarged to `min_side`) and a legend of the classes present."""
    counts = label_counts(labels, len(names))
    present = [i for i in range(len(names)) if counts[i] and i != ignore_index]
    return hstack([legible(overlay(image, labels, colors, ignore_index=ignore_index), min_side),
                   legend(names, colors, present)])


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
    ImageDraw.Draw(canvas).text((4, 3), text, fill=(0, 0, 0), font=font(12))
    return np.asarray(canvas)


_COLD, _HOT = np.array([30, 60, 200], np.float32), np.array([230, 40, 30], np.float32)


def heatmap(image: np.ndarray, prob: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """One class's probability [H, W] in 0-1 as a blue-to-red map over a greyed image."""
    p = np.clip(prob, 0, 1)[..., None]
    color = _COLD * (1 - p) + _HOT * p
    grey = image.astype(np.float32).mean(axis=2, keepdims=True)
    return (grey * (1 - alpha) + color * alpha).round().clip(0, 255).astype(np.uint8)


def legible(image: np.ndarray, min_side: int = 256) -> np.ndarray:
    """Small pictures enlarged by a whole factor (nearest neighbour: pixels stay pixels) to `min_side`."""
    f = -(-min_side // max(1, min(image.shape[:2])))
    if f <= 1:
        return image
    return np.asarray(Image.fromarray(image).resize((image.shape[1] * f, image.shape[0] * f), Image.NEAREST))


def colour_bar(height: int, width: int = 56) -> np.ndarray:
    """A vertical 0-1 scale in the heat map's colours, ticks 0, 0.5, 1."""
    h = max(height, 48)
    img = Image.new("RGB", (width, h), (255, 255, 255))
    p = np.linspace(1, 0, h - 16, dtype=np.float32)[:, None]
    bar = (_COLD * (1 - p) + _HOT * p).round().astype(np.uint8)[:, None, :].repeat(14, axis=1)
    img.paste(Image.fromarray(bar), (4, 8))
    draw = ImageDraw.Draw(img)
    for v, y in ((1.0, 8), (0.5, 8 + (h - 16) // 2), (0.0, h - 9)):
        draw.line([18, y, 22, y], fill=(0, 0, 0))
        draw.text((24, y - 6), f"{v:g}", fill=(0, 0, 0), font=font(11))
    return np.asarray(img)


def labelled_heatmap(image: np.ndarray, prob: np.ndarray, name: str, min_side: int = 256) -> np.ndarray:
    """The heat map at a legible size, with a colour bar and the class name (and its peak probability)."""
    hm = legible(heatmap(image, prob), min_side)
    out = hstack([hm, colour_bar(hm.shape[0])], gap=2)
    return _with_caption(out, f"{name}  (max p {float(np.max(prob)) if np.size(prob) else 0:.2f})")
