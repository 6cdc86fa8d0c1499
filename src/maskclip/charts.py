"""Charts people would rather look at than read: per-class IoU bars, mIoU against corruption severity.

Drawn with Pillow (no plotting library needed), array in, array out like `maskclip.render`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .render import font, name_colour

# distinct line colours (Tableau 10), in series order
SERIES_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                  (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def bar_chart(names: Sequence[str], values: Sequence[float | None], title: str, width: int = 720,
              row: int = 16) -> np.ndarray:
    """Horizontal bars of values in 0-1 (None: undefined, drawn as '-'), one row per name, in order."""
    label_w, pad = min(220, 8 + 7 * max((len(n) for n in names), default=4)), 8
    h = 34 + row * len(names) + 20
    img = Image.new("RGB", (width, h), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((pad, 6), title, fill=(0, 0, 0), font=font(13))
    x0, x1 = label_w + pad, width - 60
    for v in (0, 0.25, 0.5, 0.75, 1.0):  # grid
        x = x0 + v * (x1 - x0)
        d.line([x, 28, x, h - 18], fill=(225, 225, 225))
        d.text((x - 8, h - 16), f"{int(v * 100)}", fill=(90, 90, 90), font=font(10))
    for i, (name, v) in enumerate(zip(names, values)):
        y = 30 + i * row
        d.text((pad, y), str(name)[:32], fill=(0, 0, 0), font=font(11))
        if v is None or not math.isfinite(v):
            d.text((x0 + 2, y), "-", fill=(120, 120, 120), font=font(11))
            continue
        d.rectangle([x0, y + 2, x0 + max(1.0, v * (x1 - x0)), y + row - 3], fill=name_colour(str(name)))
        d.text((x0 + v * (x1 - x0) + 4, y), f"{100 * v:.1f}", fill=(0, 0, 0), font=font(11))
    return np.asarray(img)


def line_chart(series: Mapping[str, Mapping[int, float]], title: str, x_label: str = "severity",
               y_label: str = "mIoU (%)", reference: float | None = None, width: int = 640,
               height: int = 400) -> np.ndarray:
    """One line per series (x -> y in 0-1), a dashed reference level (e.g. the clean mIoU), a legend."""
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 48, width - 170, 30, height - 40
    xs = sorted({int(x) for s in series.values() for x in s})
    ys = [v for s in series.values() for v in s.values() if math.isfinite(v)] + ([reference] if reference else [])
    y_max = min(1.0, math.ceil(max(ys, default=1.0) * 10 + 1e-9) / 10) or 1.0  # up to the next 10%
    d.text((left, 6), title, fill=(0, 0, 0), font=font(13))

    def px(x: float, y: float) -> tuple[float, float]:
        fx = (x - xs[0]) / max(xs[-1] - xs[0], 1) if xs else 0
        return left + fx * (right - left), bottom - (y / y_max) * (bottom - top)

    ticks = round(y_max * 10)
    for k in range(ticks + 1):
        y = k / 10
        _, py = px(0, y)
        d.line([left, py, right, py], fill=(230, 230, 230))
        d.text((6, py - 6), f"{100 * y:.0f}", fill=(90, 90, 90), font=font(10))
    d.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    for x in xs:
        qx, _ = px(x, 0)
        d.text((qx - 3, bottom + 4), str(x), fill=(90, 90, 90), font=font(10))
    d.text(((left + right) // 2 - 20, bottom + 20), x_label, fill=(0, 0, 0), font=font(11))
    d.text((6, top - 18), y_label, fill=(0, 0, 0), font=font(10))
    if reference is not None:
        ry = px(0, reference)[1]
        for x in range(left, right, 8):
            d.line([x, ry, x + 4, ry], fill=(0, 0, 0))
    for i, (name, pts) in enumerate(series.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        coords = [px(x, y) for x, y in sorted(pts.items()) if math.isfinite(y)]
        if len(coords) > 1:
            d.line(coords, fill=colour, width=2)
        for cx, cy in coords:
            d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
        ly = top + 4 + 15 * i
        d.rectangle([right + 10, ly + 2, right + 22, ly + 12], fill=colour)
        d.text((right + 26, ly), name[:22], fill=(0, 0, 0), font=font(11))
    if reference is not None:
        ly = top + 4 + 15 * len(series)
        d.line([right + 10, ly + 7, right + 22, ly + 7], fill=(0, 0, 0))
        d.text((right + 26, ly), "clean", fill=(0, 0, 0), font=font(11))
    return np.asarray(img)


__all__ = ["bar_chart", "line_chart"]
