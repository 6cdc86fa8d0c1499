"""COCO instance masks without pycocotools: RLE decoding, polygon filling, semantic painting.

Formats (COCO "segmentation" field):
- polygons: a list of flat [x1, y1, x2, y2, ...] lists in pixel coordinates, where pixel
  (col, row) covers the square [col, col+1) x [row, row+1). Parts of one object are unioned.
- uncompressed RLE: {"size": [h, w], "counts": [n0, n1, ...]} run lengths of 0s and 1s
  (starting with 0s) over the mask in column-major (Fortran) order; used for crowds.
- compressed RLE: the same runs with "counts" as pycocotools' ASCII string (5 bits per
  character, continuation bit 0x20, sign bit 0x10, runs after the second stored as the
  difference to the run two places earlier).

Polygon rule: the same as pycocotools' rleFrPoly (which made COCO's ``area`` values and the
COCO-Stuff label maps), re-implemented here in numpy: the vertices are snapped to a 5x
finer grid, the outline is walked step by step on that grid, and each crossing of a pixel
column's centre line starts or ends a vertical run (so, roughly, a pixel is inside when its
centre is). The result matched pycocotools' annToMask pixel for pixel on all 1560
annotations of the COCO val2017 sample in shared/data (checked once with pycocotools in a
separate environment; the tests check the ``area`` field, which pycocotools computed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def rle_string_to_counts(s: str | bytes) -> list[int]:
    """Decode pycocotools' compressed RLE string into run lengths."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("compressed RLE string ends in the middle of a number")
            c = ord(s[p]) - 48
            if c < 0 or c > 63:
                raise ValueError(f"invalid character {s[p]!r} in compressed RLE string")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)  # sign-extend
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def counts_to_rle_string(counts: Sequence[int]) -> str:
    """Encode run lengths as pycocotools' compressed RLE string (inverse of rle_string_to_counts)."""
    out = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = x != -1 if ch & 0x10 else x != 0  # stop once the rest is pure sign
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def rle_decode(counts: Sequence[int] | str | bytes, height: int, width: int) -> np.ndarray:
    """Binary H x W uint8 mask from RLE run lengths (or a compressed RLE string)."""
    if isinstance(counts, (str, bytes)):
        counts = rle_string_to_counts(counts)
    runs = np.asarray(counts, dtype=np.int64)
    if runs.size and runs.min() < 0:
        raise ValueError("RLE has a negative run length")
    total = int(runs.sum())
    if total > height * width:
        raise ValueError(f"RLE covers {total} pixels but the mask is {height}x{width}={height * width}")
    values = np.zeros(len(runs), dtype=np.uint8)
    values[1::2] = 1
    flat = np.zeros(height * width, dtype=np.uint8)
    flat[:total] = np.repeat(values, runs)
    return np.ascontiguousarray(flat.reshape(width, height).T)


def rle_encode(mask: np.ndarray) -> list[int]:
    """Uncompressed RLE run lengths of a binary mask (column-major, starting with 0s)."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    return runs


def _polygon_toggles(poly: Sequence[float], height: int, width: int) -> np.ndarray:
    """Column-major positions where a polygon's mask flips, following pycocotools' rleFrPoly:
    vertices are scaled by 5 and rounded, the boundary is walked one upsampled step at a time
    (rounding the minor coordinate), and wherever the walk crosses the centre of a pixel
    column the row below the crossing (rounded up) starts or ends a run in that column."""
    scale = 5.0
    xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    xs = np.trunc(scale * xy[:, 0] + 0.5).astype(np.int64)
    ys = np.trunc(scale * xy[:, 1] + 0.5).astype(np.int64)
    xe, ye = np.roll(xs, -1), np.roll(ys, -1)
    dx, dy = np.abs(xe - xs), np.abs(ye - ys)
    major_x = dx >= dy
    flip = (major_x & (xs > xe)) | (~major_x & (ys > ye))
    xs, xe = np.where(flip, xe, xs), np.where(flip, xs, xe)
    ys, ye = np.where(flip, ye, ys), np.where(flip, ys, ye)
    steps = np.maximum(dx, dy)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(major_x, (ye - ys) / dx, (xe - xs) / dy)
    slope = np.where(steps == 0, 0.0, slope)  # repeated vertex: a single point
    n = steps + 1
    e = np.repeat(np.arange(len(n)), n)
    d = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    t = np.where(flip[e], steps[e] - d, d)  # walk every edge in its original direction
    minor = np.trunc(np.where(major_x[e], ys[e], xs[e]) + slope[e] * t + 0.5).astype(np.int64)
    u = np.where(major_x[e], t + xs[e], minor)
    v = np.where(major_x[e], minor, t + ys[e])
    step = u[1:] != u[:-1]
    xd = (np.minimum(u[1:], u[:-1])[step] + 0.5) / scale - 0.5
    yd = (np.minimum(v[1:], v[:-1])[step] + 0.5) / scale - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= width - 1)
    yd = np.ceil(np.clip(yd[keep], 0, height))
    return xd[keep].astype(np.int64) * height + yd.astype(np.int64)


def polygon_mask(polygons: Iterable[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Binary H x W uint8 mask of the union of polygons, pixel-identical to pycocotools.

    Polygons with fewer than 3 points are skipped.
    """
    flat = np.zeros(height * width, dtype=bool)
    for poly in polygons:
        if len(poly) < 6:
            continue
        pos = _polygon_toggles(poly, height, width)
        if pos.size == 0:
            continue
        lo, hi = int(pos.min()), int(pos.max())
        toggles = np.zeros(hi - lo + 1, dtype=np.int32)
        np.add.at(toggles, pos - lo, 1)
        inside = (np.cumsum(toggles) & 1).astype(bool)
        end = min(hi, height * width)
        flat[lo:end] |= inside[: end - lo]
        if inside[-1] and hi < height * width:  # odd number of flips: the run reaches the end
            flat[hi:] = True
    return np.ascontiguousarray(flat.reshape(width, height).T).astype(np.uint8)


def annotation_mask(segmentation: object, height: int, width: int) -> np.ndarray:
    """Binary mask of one COCO annotation's ``segmentation`` (polygons or either RLE form)."""
    if isinstance(segmentation, list):
        return polygon_mask(segmentation, height, width)
    if isinstance(segmentation, Mapping) and "counts" in segmentation:
        size = segmentation.get("size")
        if size is not None and (int(size[0]), int(size[1])) != (height, width):
            raise ValueError(f"RLE size {list(size)} differs from the image size [{height}, {width}]")
        return rle_decode(segmentation["counts"], height, width)
    raise ValueError(f"unsupported COCO segmentation of type {type(segmentation).__name__}")


def paint_semantic(
    annotations: Sequence[Mapping],
    height: int,
    width: int,
    category_to_label: Mapping[int, int],
    *,
    background: int = 0,
    crowd: str = "paint",
    ignore_index: int = 255,
    order: str = "area",
) -> np.ndarray:
    """Semantic label map (H x W int64) from COCO instance annotations of one image.

    ``order="area"`` paints larger instances first (by the ``area`` field, ties in file
    order) so smaller objects lying on top of larger ones stay visible; ``order="file"``
    paints in file order, later annotations overwriting earlier ones (what COCO-Stuff's
    cocoSegmentationToSegmentationMap does). ``crowd``: "paint" treats iscrowd regions as
    their category, "ignore" marks them ``ignore_index`` (painted last, so they win), and
    "skip" leaves them as background.
    """
    if crowd not in ("paint", "ignore", "skip"):
        raise ValueError(f"crowd must be 'paint', 'ignore' or 'skip', got {crowd!r}")
    if order not in ("area", "file"):
        raise ValueError(f"order must be 'area' or 'file', got {order!r}")
    label = np.full((height, width), background, dtype=np.int64)
    anns = list(annotations)
    if crowd == "skip":
        anns = [a for a in anns if not a.get("iscrowd", 0)]
    if order == "area":
        anns = sorted(anns, key=lambda a: -float(a.get("area", 0.0)))  # stable: ties keep file order
    crowds = []
    for a in anns:
        if crowd == "ignore" and a.get("iscrowd", 0):
            crowds.append(a)
            continue
        cat = int(a["category_id"])
        if cat not in category_to_label:
            raise ValueError(f"annotation {a.get('id')} has category_id {cat}, not among the file's categories")
        label[annotation_mask(a["segmentation"], height, width).astype(bool)] = category_to_label[cat]
    for a in crowds:
        label[annotation_mask(a["segmentation"], height, width).astype(bool)] = ignore_index
    return label
