"""A user's masks for region classification: one file (or segment-anything folder) -> a `MaskSet`.

Formats, told apart by content (a PNG signature; else JSON; a folder is segment-anything's):
- instance-id PNG: 8/16-bit grayscale or palette PNG, one mask per non-zero value (palette INDEX, not
  colour), records {"id": v}, ascending ids. An RGB PNG instead has one mask per distinct colour, black
  is no mask; its id is R << 16 | G << 8 | B (records also carry "color"), ascending ids.
- COCO JSON: one RLE {"size": [h, w], "counts": str | list}, a list of them, a list of annotations
  ({"segmentation": RLE | polygons, ...}) or an instances file ({"images", "annotations"}), of which
  the annotations of the image whose file_name has `image_name`'s basename are taken. Polygons take the
  size from that image entry or `image_size`. RLE is pycocotools': runs of 0s then 1s over the
  column-major mask, compressed string or list; the runs must cover exactly h*w pixels (else truncated).
- segment-anything's scripts/amg.py: with --convert-to-rle a JSON list of annotations (read as above,
  compressed RLE), otherwise a folder of 0.png, 1.png, ... (non-zero = mask) and metadata.csv.
Records keep `KEPT_FIELDS` (COCO's ids, SAM's predicted_iou, stability_score, ...). Masks are bool
[N, H, W] in file order (annotations, RLEs, metadata.csv rows); N = 0 is allowed.

Files are hostile: nothing in them is run, inputs are only read, and limits are checked before anything
is allocated: `max_masks` per image, `max_pixels` per mask, `max_total_pixels` over all masks,
`max_file_bytes` per JSON or CSV, polygon outlines. Every problem is a one-line `MaskFileError` naming
the file and what to do. A COCO instances file shared by many images is parsed once (kept until another
JSON file is read).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from ..data.coco_masks import polygon_mask, rle_decode, rle_string_to_counts
from ..data.image_io import DEFAULT_MAX_PIXELS, LIMIT_OPTION, ImageReadError, read_image, read_label
from ..errors import SettingsError
from .masks import MaskSet

DEFAULT_MAX_MASKS = 1000
MAX_MASKS_OPTION = "--max-masks"
DEFAULT_MAX_TOTAL_PIXELS = 2_000_000_000  # N x H x W bools: 2 GB
DEFAULT_MAX_FILE_BYTES = 1 << 30  # COCO's largest instances file (train2017) is 448 MB
KEPT_FIELDS = ("id", "category_id", "score", "iscrowd", "area", "bbox",
               "predicted_iou", "stability_score", "point_coords", "crop_box")
SAM_HEADER = ("id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,"
              "stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h")
_SAM_GROUPS = {"bbox": ("bbox_x0", "bbox_y0", "bbox_w", "bbox_h"), "point_coords": ("point_input_x", "point_input_y"),
               "crop_box": ("crop_box_x0", "crop_box_y0", "crop_box_w", "crop_box_h")}
_PNG = b"\x89PNG\r\n\x1a\n"
_IMAGES = {b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}
_PNG_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "RGB")
_MAX_OUTLINE = 64  # a polygon's outline may be this many image perimeters long
_HINT = "give an instance-id PNG, a COCO RLE or annotation JSON, or segment-anything's output (JSON or folder)"


class MaskFileError(SettingsError):
    """Masks that are missing or cannot be used; one line naming the file (or image) and what to do."""


class _Ctx(NamedTuple):
    path: Path
    image_size: tuple[int, int] | None
    max_masks: int
    max_pixels: int
    max_total: int


def _fail(path: Path, reason: str, hint: str = _HINT) -> MaskFileError:
    return MaskFileError(f"cannot read masks from {path}: {reason}; {hint}")


def read_masks(path: str | os.PathLike, image_size: tuple[int, int] | None = None, image_name: str | None = None,
               max_masks: int = DEFAULT_MAX_MASKS, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_total_pixels: int = DEFAULT_MAX_TOTAL_PIXELS,
               max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> MaskSet:
    """The masks of one image from `path` (module docstring: formats, order, limits). Raises MaskFileError.

    ``image_size=(H, W)``: the masks must be that size (checked before decoding where the file says).
    ``image_name``: the image's file name, to pick its annotations from a COCO instances file.
    """
    path = Path(path)
    if image_size is not None:
        image_size = (int(image_size[0]), int(image_size[1]))
    ctx = _Ctx(path, image_size, int(max_masks), int(max_pixels), int(max_total_pixels))
    if path.name == "metadata.csv" and path.is_file():
        return _read_sam_folder(ctx._replace(path=path.parent), max_file_bytes)
    if path.is_dir():
        if (path / "metadata.csv").is_file():
            return _read_sam_folder(ctx, max_file_bytes)
        raise _fail(path, "is a folder without metadata.csv (not a segment-anything output folder)")
    if not path.is_file():
        raise _fail(path, "does not exist" if not path.exists() else "is not a regular file", "check the path")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise _fail(path, f"cannot be opened ({err.strerror or err})", "check its permissions") from None
    if head.startswith(_PNG):
        return _read_instance_png(ctx)
    for magic, kind in _IMAGES.items():
        if head.startswith(magic):
            raise _fail(path, f"is a {kind} image, not masks (a lossy or colour photo cannot hold mask ids)")
    return _from_json(ctx, _load_json(path, max_file_bytes), image_name)


def _check_count(ctx: _Ctx, n: int) -> None:
    if n > ctx.max_masks:
        raise _fail(ctx.path, f"holds {n} masks, above the limit of {ctx.max_masks} per image",
                    f"keep the best masks or raise the limit ({MAX_MASKS_OPTION} N; max_masks=N in Python)")


def _alloc(ctx: _Ctx, n: int, size: tuple[int, int]) -> np.ndarray:
    """The [n, h, w] bool array for the masks, after every limit and the image size are checked."""
    h, w = size
    _check_count(ctx, n)
    if ctx.image_size is not None and (h, w) != ctx.image_size:
        raise _fail(ctx.path, f"the masks are {h}x{w} (height x width) but the image is "
                    f"{ctx.image_size[0]}x{ctx.image_size[1]}", "give the masks made for this image, at its size")
    if h * w > ctx.max_pixels:
        raise _fail(ctx.path, f"the masks are {h}x{w} = {h * w / 1e6:.1f} MP, above the limit of "
                    f"{ctx.max_pixels / 1e6:g} MP", f"check the mask size or raise the limit ({LIMIT_OPTION} N)")
    if n * h * w > ctx.max_total:
        raise _fail(ctx.path, f"{n} masks of {h}x{w} are {n * h * w / 1e9:.2f} G pixels, above the limit of "
                    f"{ctx.max_total / 1e9:g} G", "give fewer masks (max_total_pixels=N in Python)")
    return np.zeros((n, h, w), dtype=bool)


def _read_instance_png(ctx: _Ctx) -> MaskSet:
    mode = ""  # from the header; "" where PIL refuses it (read_label then says why)
    with warnings.catch_warnings(), contextlib.suppress(OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(ctx.path) as im:
            mode = im.mode
    if mode and mode not in _PNG_MODES:
        raise _fail(ctx.path, f"is a PNG of mode {mode}", "instance-id PNGs are 8/16-bit grayscale, palette or RGB "
                    "(no alpha)")
    try:
        if mode == "RGB":
            rgb = read_image(ctx.path, exif=False, max_pixels=ctx.max_pixels)
            ids = rgb[..., 0].astype(np.uint32) << 16 | rgb[..., 1].astype(np.uint32) << 8 | rgb[..., 2]
        else:
            ids = read_label(ctx.path, max_pixels=ctx.max_pixels)
    except ImageReadError as err:
        raise MaskFileError(str(err)) from None
    values, inverse = np.unique(ids, return_inverse=True)
    keep = values != 0
    masks = _alloc(ctx, int(keep.sum()), ids.shape)
    slot = np.where(keep, np.cumsum(keep) - 1, -1)[inverse.reshape(ids.shape)]
    rows, cols = np.nonzero(slot >= 0)
    masks[slot[rows, cols], rows, cols] = True
    records: list[dict] = [{"id": int(v)} for v in values[keep]]
    if mode == "RGB":
        for r in records:
            r["color"] = [r["id"] >> 16, r["id"] >> 8 & 255, r["id"] & 255]
    return MaskSet(masks, records=records, source="instance-rgb" if mode == "RGB" else "instance-png")


class _Coco(NamedTuple):
    """A COCO instances file indexed once: images by basename, annotations by image id (file order)."""

    by_name: dict[str, list[Mapping]]
    annotations: dict[Any, list[Mapping]]
    n_images: int


def _basename(name: object) -> str:
    return str(name).replace("\\", "/").rsplit("/", 1)[-1]


def _check_bytes(path: Path, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise _fail(path, f"is {size / 1e6:.1f} MB, above the limit of {max_bytes / 1e6:.1f} MB for a mask file",
                    "split it per image (max_file_bytes=N in Python)")


def _read_text(path: Path, max_bytes: int, if_binary: str) -> str:
    try:
        _check_bytes(path, path.stat().st_size, max_bytes)
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _fail(path, if_binary) from None
    except OSError as err:
        raise _fail(path, f"cannot be read ({err.strerror or err})", "check its permissions") from None


_LAST_JSON: dict[tuple, object] = {}  # the last JSON parsed, by (path, mtime, size): one COCO file serves a batch


def _load_json(path: Path, max_bytes: int) -> object:
    try:
        st = path.stat()
    except OSError as err:
        raise _fail(path, f"cannot be read ({err.strerror or err})", "check its permissions") from None
    _check_bytes(path, st.st_size, max_bytes)
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key in _LAST_JSON:
        return _LAST_JSON[key]
    text = _read_text(path, max_bytes, "is neither a PNG nor JSON text (binary data)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise _fail(path, f"is not valid JSON ({err.msg}: line {err.lineno} column {err.colno}; truncated?)") from None
    except (RecursionError, ValueError) as err:
        raise _fail(path, f"is not usable JSON ({type(err).__name__}: {err})") from None
    if isinstance(data, dict) and "annotations" in data:
        data = _coco_index(path, data)
    _LAST_JSON.clear()
    _LAST_JSON[key] = data
    return data


def _coco_index(path: Path, data: dict) -> _Coco:
    images, anns = data.get("images"), data.get("annotations")
    if not isinstance(images, list) or not isinstance(anns, list):
        raise _fail(path, 'is a COCO file without "images" and "annotations" lists')
    by_name: dict[str, list[Mapping]] = {}
    by_id: dict[Any, list[Mapping]] = {}
    for im in images:
        if not isinstance(im, Mapping) or not isinstance(im.get("id"), (int, str)) or "file_name" not in im:
            raise _fail(path, 'has an "images" entry without an integer "id" and a "file_name"')
        by_name.setdefault(_basename(im["file_name"]), []).append(im)
        by_id[im["id"]] = []
    for a in anns:
        if not isinstance(a, Mapping):
            raise _fail(path, 'has an "annotations" entry that is not an object')
        key = a.get("image_id")
        if isinstance(key, (int, str)) and key in by_id:
            by_id[key].append(a)
    return _Coco(by_name, by_id, len(images))


def _coco_image(ctx: _Ctx, coco: _Coco, image_name: str | None) -> tuple[tuple[int, int], list[Mapping]]:
    """(size, annotations) of the image named `image_name` in an instances file."""
    if image_name is None:
        raise _fail(ctx.path, f"is a COCO instances file of {coco.n_images} images and no image name was given",
                    "pass image_name= (classify-masks passes each image's file name)")
    hits = coco.by_name.get(_basename(image_name), [])
    if len(hits) > 1:
        hits = [im for im in hits if str(im["file_name"]).replace("\\", "/") == image_name] or hits
    if not hits:
        raise _fail(ctx.path, f"has no image with file_name {_basename(image_name)!r} among its {coco.n_images}",
                    "give the instances file that covers this image, or one mask file per image")
    if len(hits) > 1:
        raise _fail(ctx.path, f"has {len(hits)} images named {_basename(image_name)!r}",
                    "give one mask file per image instead")
    try:
        size = _size([hits[0].get("height"), hits[0].get("width")])
    except ValueError as err:
        raise _fail(ctx.path, f"image {hits[0]['id']}: {err}") from None
    return size, coco.annotations[hits[0]["id"]]


def _size(value: object) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(type(v) is int and v > 0 for v in value)):
        raise ValueError(f"size/height/width must be positive integers [height, width], got {str(value)[:40]}")
    return int(value[0]), int(value[1])


def _items(ctx: _Ctx, data: object, image_name: str | None) -> tuple[list, tuple[int, int] | None, str]:
    """(segmentations-or-annotations, size the file states, source kind) of any JSON form."""
    if isinstance(data, _Coco):
        size, anns = _coco_image(ctx, data, image_name)
        return anns, size, "coco-instances"
    if isinstance(data, Mapping) and ("counts" in data or "segmentation" in data):
        data = [data]
    if not isinstance(data, list):
        raise _fail(ctx.path, f"holds a JSON {type(data).__name__}, not an RLE, a list or a COCO file")
    if all(isinstance(d, Mapping) and "counts" in d for d in data):
        return data, None, "coco-rle"
    sam = any(isinstance(d, Mapping) and ("predicted_iou" in d or "stability_score" in d) for d in data)
    return data, None, "sam-json" if sam else "coco-annotations"


def _from_json(ctx: _Ctx, data: object, image_name: str | None) -> MaskSet:
    items, size, kind = _items(ctx, data, image_name)
    _check_count(ctx, len(items))
    if not all(isinstance(d, Mapping) and ("counts" in d or "segmentation" in d) for d in items):
        raise _fail(ctx.path, 'holds items that are neither RLEs ("counts") nor annotations ("segmentation")')
    segs = [d if "counts" in d else d["segmentation"] for d in items]
    for i, seg in enumerate(segs):
        if isinstance(seg, Mapping):
            try:
                rle_size = _size(seg.get("size"))
            except ValueError as err:
                raise _fail(ctx.path, f"mask {i}: {err}") from None
            if size is not None and rle_size != size:
                raise _fail(ctx.path, f"mask {i} is {rle_size[0]}x{rle_size[1]} but the masks before it (or the "
                            f"image entry) are {size[0]}x{size[1]}", "give masks of one image, at one size")
            size = rle_size
    if size is None and any(isinstance(s, list) for s in segs):
        if ctx.image_size is None:
            raise _fail(ctx.path, "has polygons but no size", "pass image_size=(H, W) (classify-masks does)")
    size = size or ctx.image_size or (0, 0)
    masks = _alloc(ctx, len(segs), size)
    for i, seg in enumerate(segs):
        try:
            masks[i] = _decode(seg, *size)
        except (ValueError, TypeError, OverflowError) as err:
            ident = f" (annotation id {items[i]['id']})" if "id" in items[i] else ""
            raise _fail(ctx.path, f"mask {i}{ident}: {err}") from None
    records = [{k: d[k] for k in KEPT_FIELDS if k in d} for d in items]
    return MaskSet(masks, records=records, source=kind)


def _decode(seg: object, h: int, w: int) -> np.ndarray:
    """One mask from an RLE (compressed or not) or a list of polygons; ValueError/TypeError when invalid."""
    if isinstance(seg, Mapping):
        counts = seg.get("counts")
        if isinstance(counts, str):
            counts = rle_string_to_counts(counts)
        elif not (isinstance(counts, list) and all(type(c) is int for c in counts)):
            raise ValueError("RLE counts must be a compressed string or a list of integers")
        if any(c < 0 for c in counts):
            raise ValueError("RLE has a negative run length")
        if sum(counts) != h * w:
            raise ValueError(f"RLE runs cover {sum(counts)} pixels, not {h}x{w} = {h * w} (truncated or damaged?)")
        return rle_decode(counts, h, w).view(bool)
    if not isinstance(seg, list):
        raise ValueError(f"segmentation is a {type(seg).__name__}, neither an RLE nor a list of polygons")
    for poly in seg:
        _check_polygon(poly, h, w)
    return polygon_mask(seg, h, w).view(bool)


def _check_polygon(poly: object, h: int, w: int) -> None:
    """A flat [x1, y1, ...] list of finite numbers whose outline is of reasonable length: the rasteriser
    walks it in 1/5-pixel steps, so a huge coordinate would otherwise exhaust memory."""
    if not isinstance(poly, list) or len(poly) % 2:
        raise ValueError("polygons must be lists [x1, y1, x2, y2, ...] of an even number of coordinates")
    xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(xy).all():
        raise ValueError("a polygon has a non-finite coordinate")
    if len(xy) < 3:
        return
    steps = float(np.abs(np.rint(5 * xy) - np.rint(5 * np.roll(xy, -1, axis=0))).max(axis=1).sum()) + len(xy)
    if not steps <= 5 * _MAX_OUTLINE * 2 * (h + w):
        raise ValueError(f"a polygon's outline is {steps / 10 / (h + w):.3g} image perimeters long, above "
                         f"{_MAX_OUTLINE} (coordinates far outside the {h}x{w} image?)")


def _read_sam_folder(ctx: _Ctx, max_bytes: int) -> MaskSet:
    records = _sam_rows(ctx, ctx.path / "metadata.csv", max_bytes)
    masks: np.ndarray | None = None
    for i, rec in enumerate(records):
        png = ctx.path / f"{rec['id']}.png"
        if not png.is_file():
            raise _fail(ctx.path, f"metadata.csv lists mask id {rec['id']} but {png.name} is missing",
                        "give the complete folder segment-anything wrote")
        try:
            m = read_label(png, max_pixels=ctx.max_pixels) > 0
        except ImageReadError as err:
            raise MaskFileError(str(err)) from None
        if masks is None:
            masks = _alloc(ctx, len(records), m.shape)
        elif m.shape != masks.shape[1:]:
            raise _fail(png, f"is {m.shape[0]}x{m.shape[1]} but {records[0]['id']}.png is "
                        f"{masks.shape[1]}x{masks.shape[2]}", "give masks of one image, at one size")
        masks[i] = m
    if masks is None:
        masks = _alloc(ctx, 0, ctx.image_size or (0, 0))
    return MaskSet(masks, records=records, source="sam-folder")


def _sam_rows(ctx: _Ctx, meta: Path, max_bytes: int) -> list[dict]:
    """The records of segment-anything's metadata.csv, in row order (one per mask id)."""
    text = _read_text(meta, max_bytes, "is not CSV text (binary data)")
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as err:
        raise _fail(meta, f"is not valid CSV ({err})", f"segment-anything writes the header {SAM_HEADER}") from None
    header = [c.strip() for c in rows[0]] if rows else []
    if header[:1] != ["id"] or len(set(header)) != len(header):
        raise _fail(meta, "does not start with an id column", f"segment-anything writes the header {SAM_HEADER}")
    body = [(n, r) for n, r in enumerate(rows[1:], 2) if r]
    _check_count(ctx, len(body))
    records, seen = [], set()
    for n, row in body:
        if len(row) != len(header):
            raise _fail(meta, f"line {n} has {len(row)} fields, the header {len(header)}", "check the file")
        try:
            rec = _sam_record(dict(zip(header, (c.strip() for c in row))))
        except ValueError as err:
            raise _fail(meta, f"line {n}: {err}", f"segment-anything writes numbers under {SAM_HEADER}") from None
        if rec["id"] in seen:
            raise _fail(meta, f"line {n} repeats mask id {rec['id']}", "check the file")
        seen.add(rec["id"])
        records.append(rec)
    return records


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _sam_record(row: dict[str, str]) -> dict:
    """One metadata.csv row as the record SAM's JSON output would hold (bbox, point_coords, crop_box lists)."""
    if not (row["id"].isascii() and row["id"].isdigit()) or len(row["id"]) > 9:
        raise ValueError(f"mask id {row['id'][:20]!r} is not a non-negative integer")
    num = {k: _number(v) for k, v in row.items()}
    grouped = {c for cols in _SAM_GROUPS.values() for c in cols}
    rec: dict[str, Any] = {k: v for k, v in num.items() if k not in grouped}
    for key, cols in _SAM_GROUPS.items():
        if all(c in num for c in cols):
            rec[key] = [[num[c] for c in cols]] if key == "point_coords" else [num[c] for c in cols]
    return rec


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def find_masks_for(masks_arg: Path, image_path: Path, name: str) -> Path:
    """The masks of one image for ``classify-masks IMAGES --masks PATH``: a file serves every image (a COCO
    instances file is then searched by image file name); in a folder the first of DIR/<name>.png,
    DIR/<name>.json, DIR/<name>/ (with metadata.csv: a segment-anything folder), then the same for the
    image's stem (segment-anything names its outputs so), that is not the image itself.
    ``name``: the image's output name (`maskclip.io.layout.output_names`, e.g. "sub/a"). Raises MaskFileError."""
    masks_arg, image_path = Path(masks_arg), Path(image_path)
    if masks_arg.is_file():
        if _same_file(masks_arg, image_path):
            raise MaskFileError(f"--masks {masks_arg}: is the image itself; give its masks")
        return masks_arg
    if not masks_arg.is_dir():
        raise MaskFileError(f"--masks {masks_arg}: does not exist; give a mask file or a folder of mask files")
    tried: list[str] = []
    for stem in dict.fromkeys((name, image_path.stem)):
        for rel in (f"{stem}.png", f"{stem}.json", f"{stem}/metadata.csv"):
            tried.append(rel)
            cand = masks_arg / rel
            if cand.is_file() and not _same_file(cand, image_path):
                return cand.parent if rel.endswith("/metadata.csv") else cand
    raise MaskFileError(f"no masks for {image_path} in {masks_arg} (looked for {', '.join(tried)}); "
                        "name each image's masks after it, or skip the image")


__all__ = ["DEFAULT_MAX_FILE_BYTES", "DEFAULT_MAX_MASKS", "DEFAULT_MAX_TOTAL_PIXELS", "KEPT_FIELDS",
           "MAX_MASKS_OPTION", "SAM_HEADER", "MaskFileError", "find_masks_for", "read_masks"]
