"""Reading images and label maps, listing image files, writing PNGs atomically.

Everything returns plain numpy arrays so the math elsewhere never touches files.

Conversion rules of ``read_image`` (result is always H x W x 3 uint8 RGB; the same rules apply to
in-memory images, see `maskclip.data.image_inputs`):
- EXIF orientation is applied (phone photos come out upright, as viewers show them).
- Grayscale, 1-bit, palette, CMYK and YCbCr images are converted to RGB.
- Transparency (RGBA, LA, palette with a transparent entry) is composited onto WHITE rather
  than dropped: the colour under fully transparent pixels is arbitrary (often black), and
  white is what a viewer shows on a light page.
- 16-bit images (I;16 PNG/TIFF) are scaled to 8 bit by value * 255 / 65535 (rounded), so
  the full 16-bit range maps onto 0..255 instead of being clipped at 255. 32-bit integer
  ("I") images are treated the same way after clipping to 0..65535; float ("F") images are
  taken as 0..1 when their maximum is <= 1, else as 0..255.

Hostile or unusual files fail with an `ImageReadError` naming the file and what to do, before any pixel
is decoded where the header tells: images above `max_pixels` (default `DEFAULT_MAX_PIXELS`, a
decompression-bomb guard: a 300 KB PNG can claim 90 megapixels) and animated or multi-page files
(GIF, WebP, APNG, TIFF: which frame was meant is unknown). MPO files (camera JPEGs carrying a preview
or depth frame) are read as their first frame, the photo, as viewers show them.

Large JPEGs can be decoded at 1/2, 1/4 or 1/8 size (``read_image(path, reduce_to=(h, w))``, with
``image_size(path)`` for the original size), and `scan_images` lists what a folder holds besides images.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..io.atomic import atomic_write
from .image_inputs import as_rgb_uint8, pil_array, pil_to_rgb

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: above any camera (a 61 MP full frame), far below a bomb's claim
LIMIT_OPTION = "--max-image-pixels"
_HINT = "check that it is a complete JPEG, PNG, WebP, BMP or TIFF file (re-export or re-download it)"
_ORIENTATION = 0x0112  # EXIF tag; values 5..8 swap width and height


class ImageReadError(ValueError):
    """An image or label file that cannot be used; the message names the file and what to do."""

    def __init__(self, path: str | os.PathLike, reason: str, hint: str = _HINT):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read {self.path}: {reason}; {hint}")


def _too_large(path: Path, pixels: int, max_pixels: int, size: tuple[int, int] | None = None) -> ImageReadError:
    dims = f"{size[0]}x{size[1]} = " if size else ""
    return ImageReadError(
        path, f"image is {dims}{pixels / 1e6:.1f} MP, above the limit of {max_pixels / 1e6:g} MP ({LIMIT_OPTION})",
        f"downscale it or raise the limit ({LIMIT_OPTION} N; max_pixels=N in Python)")


def _pil_refused(path: Path, err: Exception, max_pixels: int | None) -> ImageReadError:
    found = re.search(r"\((\d+) pixels\)", str(err))
    return _too_large(path, int(found.group(1)) if found else 0, max_pixels or Image.MAX_IMAGE_PIXELS or 0)


def _let_pil_allow(max_pixels: int | None) -> None:
    """Raise (never lower) PIL's own bomb limit to ours, so its warning or error never comes first."""
    if Image.MAX_IMAGE_PIXELS is None:
        return
    if max_pixels is None:
        Image.MAX_IMAGE_PIXELS = None  # the caller asked for no limit at all
    elif max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _open_header(path: Path, max_pixels: int | None) -> Image.Image:
    """Open `path` reading only its header; the pixel limit is checked here, before any decoding."""
    if not path.exists():
        raise ImageReadError(path, "file does not exist", "check the path")
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file", "give an image file")
    _let_pil_allow(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own check follows
            im = Image.open(path)
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format") from None
    except Image.DecompressionBombError as e:  # over twice our limit: PIL refused it before we saw the size
        raise _pil_refused(path, e, max_pixels) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f"corrupt or truncated image data ({e})") from None
    w, h = im.size
    if max_pixels is not None and w * h > max_pixels:
        im.close()
        raise _too_large(path, w * h, max_pixels, (w, h))
    return im


def _frames(im: Image.Image) -> int:
    if im.format == "MPO":  # a camera JPEG with extra preview/depth frames: the first one is the photo
        return 1
    return int(getattr(im, "n_frames", 1)) if getattr(im, "is_animated", False) else 1


def _open(path: Path, max_pixels: int | None, reduce_to: tuple[int, int] | None = None,
          upright: bool = True) -> Image.Image:
    """Open, check (size, frames), optionally draft (JPEG) and decode `path`. Raises ImageReadError."""
    im = _open_header(path, max_pixels)
    try:
        n = _frames(im)
        if n > 1:
            raise ImageReadError(path, f"animated or multi-page image ({n} frames)",
                                 "export one frame as a PNG or JPEG")
        if reduce_to is not None and im.format in ("JPEG", "MPO"):
            h, w = reduce_to
            if upright and _orientation(im) in (5, 6, 7, 8):  # the request is for the upright image
                h, w = w, h
            im.draft(im.mode, (w, h))
        im.load()  # decode now so truncated/corrupt data fails here, not later
    except ImageReadError:
        im.close()
        raise
    except Image.DecompressionBombError as e:  # a GIF frame larger than its header says
        im.close()
        raise _pil_refused(path, e, max_pixels) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        im.close()
        raise ImageReadError(path, f"corrupt or truncated image data ({e})") from None
    return im


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_ORIENTATION, 1))
    except Exception:  # malformed EXIF block: as stored
        return 1


def _check_reduce_to(reduce_to: Sequence[int] | None) -> tuple[int, int] | None:
    if reduce_to is None:
        return None
    try:
        ok = len(reduce_to) == 2 and all(int(v) == v and v >= 1 for v in reduce_to)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"reduce_to must be (height, width) in positive pixels, got {reduce_to!r}")
    return int(reduce_to[0]), int(reduce_to[1])


def read_image(path: str | os.PathLike, exif: bool = True, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               reduce_to: Sequence[int] | None = None) -> np.ndarray:
    """Read an image file as an H x W x 3 uint8 RGB array. Raises ImageReadError.

    ``exif=True`` turns the image upright by its EXIF orientation (what a viewer shows).
    Dataset readers pass ``exif=False``: annotations index the pixel grid as stored.
    ``max_pixels``: larger images (width x height as stored, read from the header) are refused before
    decoding; None = no limit (PIL's own limit is then lifted too).
    ``reduce_to=(h, w)``: JPEG only, otherwise ignored. The JPEG is decoded at 1/2, 1/4 or 1/8 scale in
    the DCT (PIL's ``Image.draft``): the largest reduction that keeps both sides >= (h, w) of the upright
    image, so a working size of (h, w) is reached faster and with up to 64x less memory. Pixels differ
    slightly from a full decode resized; ``image_size(path)`` gives the original size to map labels back.
    """
    path = Path(path)
    with _open(path, max_pixels, _check_reduce_to(reduce_to), upright=exif) as im:
        arr = pil_to_rgb(_upright(im) if exif else im)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(path, "image has zero size")
    return arr


def _upright(im: Image.Image) -> Image.Image:
    """The image turned by its EXIF orientation; `im` itself when none applies (exif_transpose would copy)."""
    if _orientation(im) in (1, 0):
        return im
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # malformed EXIF block: keep the pixels as stored
        return im


def image_size(path: str | os.PathLike, exif: bool = True) -> tuple[int, int]:
    """(height, width) of an image file from its header only (no decoding), upright if ``exif``.

    The size ``read_image(path, exif)`` returns without ``reduce_to``. Raises ImageReadError.
    """
    path = Path(path)
    with _open_header(path, None) as im:
        w, h = im.size
        if exif and _orientation(im) in (5, 6, 7, 8):
            w, h = h, w
    return h, w


def read_label(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a label map as stored: palette indices for "P" PNGs (NOT their colours), raw values
    for 8/16/32-bit single-channel files. Returns a 2-D uint8/uint16/int32 array.

    EXIF orientation is deliberately NOT applied: label files have none, and the datasets
    pair them with images as stored on disk. RGB label files are rejected because mapping
    colours to ids is dataset specific. ``max_pixels`` as in `read_image`.
    """
    path = Path(path)
    with _open(path, max_pixels) as im:
        if im.mode in ("P", "L", "1"):
            return pil_array(im, copy=True).astype(np.uint8, copy=False)
        if im.mode.startswith("I;16"):
            return pil_array(im).astype(np.uint16)
        if im.mode == "I":
            return pil_array(im, copy=True).astype(np.int32, copy=False)
        mode = im.mode
    raise ImageReadError(
        path, f"label map has mode {mode!r} (colour), expected a single-channel index image",
        "labels must be palette or grayscale PNGs whose pixel values are class ids",
    )


def _skip_reason(entry: Path, recursive: bool) -> str | None:
    """Why a folder entry is not an image to read (None: it is one; "" : a folder to descend into)."""
    if entry.name.startswith("."):
        return "hidden folder (not searched)" if entry.is_dir() else "hidden file"
    if entry.is_symlink() and not entry.exists():
        return "broken link"
    if entry.is_dir():
        if entry.is_symlink():
            return "link to a folder (not followed)"
        return "" if recursive else "folder (sub-folders are searched with recursive=True, --recursive)"
    if not entry.is_file():
        return "not a regular file"
    if entry.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image file extension ({entry.suffix or 'none'})"
    return None


def _inside(path: Path, folders: Sequence[Path]) -> bool:
    r = path.resolve()
    return any(r == f or f in r.parents for f in folders)


def _scan_folder(folder: Path, recursive: bool, exclude: Sequence[Path],
                 found: list[Path], skipped: list[tuple[Path, str]]) -> None:
    """Depth first, entries sorted by name: the order of sorted(rglob) of the files."""
    for entry in sorted(folder.iterdir()):
        why = _skip_reason(entry, recursive)
        if why is None:
            found.append(entry)
        elif why == "":
            if not _inside(entry, exclude):
                _scan_folder(entry, recursive, exclude, found, skipped)
        elif not (entry.is_dir() and _inside(entry, exclude)):  # excluded folders are not even listed
            skipped.append((entry, why))


def scan_images(paths: Sequence[str | os.PathLike], recursive: bool = False,
                exclude: Sequence[str | os.PathLike] = ()) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand files and folders into (image files, [(skipped path, reason)]): nothing is dropped unsaid.

    A folder contributes its image files (by extension, sorted; with ``recursive`` also those in
    sub-folders, symlinked folders not followed) and reports every other entry with the reason it is
    skipped: hidden files and folders, other extensions, sub-folders when not recursive, broken links.
    A file named explicitly is kept whatever its extension (reading it reports a clear error if it is not
    an image). ``exclude``: folders whose contents are never listed nor reported (an output folder under
    an input folder; files named explicitly are kept). Duplicates are dropped, order is kept.
    Raises FileNotFoundError naming a missing path, ValueError when no image is found.
    """
    excluded = [Path(e).resolve() for e in exclude]
    images: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    seen_skipped: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"input path does not exist: {p}")
        found: list[Path] = []
        skip: list[tuple[Path, str]] = []
        if not p.is_dir():
            found = [p]
        elif not _inside(p, excluded):
            _scan_folder(p, recursive, excluded, found, skip)
        for f in found:
            if (key := f.resolve()) not in seen:
                seen.add(key)
                images.append(f)
        for f, why in skip:
            if (key := f.absolute()) not in seen_skipped:
                seen_skipped.add(key)
                skipped.append((f, why))
    if not images:
        raise ValueError(_nothing_found(paths, recursive, skipped))
    return images, skipped


def _nothing_found(paths: Sequence[str | os.PathLike], recursive: bool, skipped: list[tuple[Path, str]]) -> str:
    where = ", ".join(str(p) for p in paths) or "(no paths given)"
    text = f"no images found in {where}; supported extensions: {' '.join(IMAGE_EXTENSIONS)}"
    if skipped:
        text += f"; {len(skipped)} entries skipped, e.g. {skipped[0][0]} ({skipped[0][1]})"
    return text + ("" if recursive else " (sub-directories are only searched with recursive=True)")


def list_images(paths: Sequence[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """The image files of `scan_images` (same rules, same errors), without the skipped entries."""
    return scan_images(paths, recursive)[0]


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (n x 3 uint8): id 0 black, 1 dark red, ..., 255 cream."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def write_png_atomic(path: str | os.PathLike, array: np.ndarray, palette: np.ndarray | Sequence | None = None) -> Path:
    """Write ``array`` as a PNG through `maskclip.io.atomic.atomic_write` (a temporary file in the same
    directory, then os.replace), so a crash never leaves a half-written file under the final name.

    - H x W x 3 uint8: RGB PNG.
    - H x W integers with ``palette`` (N x 3, N <= 256): palette ("P") PNG whose indices are
      the array values (values must be < 256).
    - H x W integers without palette: 8-bit grayscale if all values fit 0..255, else 16-bit.
    """
    path = Path(path)
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 3:
        if a.dtype != np.uint8:
            raise ValueError(f"RGB array for {path} must be uint8, got {a.dtype}")
        if palette is not None:
            raise ValueError(f"a palette only applies to 2-D index arrays, got shape {a.shape} for {path}")
        im = Image.fromarray(np.ascontiguousarray(a), "RGB")
    elif a.ndim == 2:
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise ValueError(f"index array for {path} must be integer, got {a.dtype}")
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0:
            raise ValueError(f"index array for {path} has negative values (min {lo})")
        if palette is not None:
            pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
            if len(pal) > 256:
                raise ValueError(f"palette for {path} has {len(pal)} entries, at most 256 allowed")
            if hi > 255:
                raise ValueError(f"palette PNG {path} can hold ids 0..255, array has {hi}")
            im = Image.fromarray(a.astype(np.uint8), "L")
            im.putpalette(pal.flatten().tolist(), rawmode="RGB")  # makes it a "P" image, indices kept
        elif hi <= 255:
            im = Image.fromarray(a.astype(np.uint8), "L")
        elif hi <= 65535:
            im = Image.fromarray(a.astype(np.uint16))
        else:
            raise ValueError(f"index array for {path} has values up to {hi}; PNG holds at most 65535")
    else:
        raise ValueError(f"cannot write array of shape {a.shape} to {path}; expected H x W or H x W x 3")

    with atomic_write(path, "wb") as f:  # permissions as open() gives; the temporary file never outlives a failure
        im.save(f, format="PNG")
    return path


__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "LIMIT_OPTION", "ImageReadError", "as_rgb_uint8", "image_size",
           "list_images", "pil_to_rgb", "read_image", "read_label", "scan_images", "voc_palette", "write_png_atomic"]
