"""Reading images and label maps, listing image files, writing PNGs atomically.

Everything returns plain numpy arrays so the math elsewhere never touches files.

Conversion rules of ``read_image`` (result is always H x W x 3 uint8 RGB):
- EXIF orientation is applied (phone photos come out upright, as viewers show them).
- Grayscale, 1-bit, palette, CMYK and YCbCr images are converted to RGB.
- Transparency (RGBA, LA, palette with a transparent entry) is composited onto WHITE rather
  than dropped: the colour under fully transparent pixels is arbitrary (often black), and
  white is what a viewer shows on a light page.
- 16-bit images (I;16 PNG/TIFF) are scaled to 8 bit by value * 255 / 65535 (rounded), so
  the full 16-bit range maps onto 0..255 instead of being clipped at 255. 32-bit integer
  ("I") images are treated the same way after clipping to 0..65535; float ("F") images are
  taken as 0..1 when their maximum is <= 1, else as 0..255.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
_HINT = "check that it is a complete JPEG, PNG, WebP, BMP or TIFF file (re-export or re-download it)"


class ImageReadError(ValueError):
    """An image or label file that cannot be used; the message names the file and what to do."""

    def __init__(self, path: str | os.PathLike, reason: str, hint: str = _HINT):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read {self.path}: {reason}; {hint}")


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageReadError(path, "file does not exist", "check the path")
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file", "give an image file")
    try:
        im = Image.open(path)
        im.load()  # decode now so truncated/corrupt data fails here, not later
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, f"image too large ({e})", "downscale it first") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f"corrupt or truncated image data ({e})") from None
    return im


def _to_uint8_gray(im: Image.Image) -> np.ndarray:
    a = np.asarray(im)
    if im.mode == "F":
        a = a.astype(np.float64)
        a = a * 255.0 if np.nanmax(a) <= 1.0 else a
        return np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
    # I;16 / I;16B / I;16L / I: a 16-bit range mapped linearly onto 0..255
    a = np.clip(a.astype(np.int64), 0, 65535)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info)


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """H x W x 3 uint8 RGB array from a loaded PIL image (rules in the module docstring)."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        g = _to_uint8_gray(im)
        return np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2))
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def read_image(path: str | os.PathLike, exif: bool = True) -> np.ndarray:
    """Read an image file as an H x W x 3 uint8 RGB array. Raises ImageReadError.

    ``exif=True`` turns the image upright by its EXIF orientation (what a viewer shows).
    Dataset readers pass ``exif=False``: annotations index the pixel grid as stored.
    """
    path = Path(path)
    im = _open(path)
    if exif:
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # malformed EXIF block: keep the pixels as stored
            pass
    arr = pil_to_rgb(im)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(path, "image has zero size")
    return arr


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a label map as stored: palette indices for "P" PNGs (NOT their colours), raw values
    for 8/16/32-bit single-channel files. Returns a 2-D uint8/uint16/int32 array.

    EXIF orientation is deliberately NOT applied: label files have none, and the datasets
    pair them with images as stored on disk. RGB label files are rejected because mapping
    colours to ids is dataset specific.
    """
    path = Path(path)
    im = _open(path)
    if im.mode in ("P", "L"):
        return np.array(im, dtype=np.uint8)
    if im.mode == "1":
        return np.array(im, dtype=np.uint8)
    if im.mode.startswith("I;16"):
        return np.array(im).astype(np.uint16)
    if im.mode == "I":
        return np.array(im, dtype=np.int32)
    raise ImageReadError(
        path, f"label map has mode {im.mode!r} (colour), expected a single-channel index image",
        "labels must be palette or grayscale PNGs whose pixel values are class ids",
    )


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def list_images(paths: Sequence[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Expand files and directories into image files.

    A directory contributes its image files (by extension, sorted; with ``recursive`` also
    those in sub-directories). A file named explicitly is kept whatever its extension (reading
    it reports a clear error if it is not an image). Duplicates are dropped, order is kept.
    Raises FileNotFoundError naming a missing path, ValueError when nothing is found.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"input path does not exist: {p}")
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            found = sorted(f for f in it if f.is_file() and _is_image(f))
        else:
            found = [p]
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    if not out:
        where = ", ".join(str(p) for p in paths) or "(no paths given)"
        raise ValueError(
            f"no images found in {where}; supported extensions: {' '.join(IMAGE_EXTENSIONS)}"
            + ("" if recursive else " (sub-directories are only searched with recursive=True)")
        )
    return out


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
    """Write ``array`` as a PNG via a temporary file in the same directory and os.replace, so a
    crash never leaves a half-written file under the final name.

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

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            im.save(f, format="PNG")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
