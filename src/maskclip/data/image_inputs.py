"""Any accepted in-memory image -> H x W x 3 uint8 RGB, the one form the segmenters take.

Files go through `maskclip.data.image_io.read_image`; these rules cover what a Python caller hands to
`set_image`, so that a float image in [0, 1] is not silently read as 0..255 (almost black).

Conversion rules (PIL images and files share them):
- PIL images: any mode, as `pil_to_rgb` (grayscale/palette/CMYK -> RGB, transparency composited on
  WHITE, 16-bit scaled by 255/65535). EXIF orientation is NOT applied to a PIL image: it is taken as given.
- uint8 H x W x 3: used as is (no copy when contiguous).
- uint16: value * 255 / 65535, rounded (the rule of 16-bit files), so 65535 is white.
- float (numpy float16/32/64, torch float/half/bfloat16): `value_range` "0-1" or "0-255"; None detects it:
  a maximum <= 1.0 means 0-1 (a very dark 0-255 image would be misread: declare the range). NaN, inf,
  negative values and values above the range are errors, never clipped silently.
- H x W and H x W x 1 (grayscale) become three equal channels; H x W x 4 is RGBA and is composited on
  white like an RGBA file.
- `value_range` describes float input only: with a PIL, uint8 or uint16 image it is an error (except
  "0-255" with uint8, which is what uint8 means).
- Everything else is refused: bool masks, other integer types (int64 arrays: `.astype(np.uint8)` if the
  values are 0..255), channels-first 3 x H x W tensors, lists, strings and paths (read files with
  `read_image`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

VALUE_RANGES = ("0-1", "0-255")
EXPECTED = ("expected an RGB image: a PIL image, or a numpy array / torch tensor of shape H x W x 3 "
            "(also H x W, H x W x 1 grayscale or H x W x 4 RGBA) with dtype uint8, uint16 or float")


def uint16_to_uint8(a: np.ndarray) -> np.ndarray:
    """Values 0..65535 (clipped) mapped linearly onto 0..255, rounded: the full 16-bit range is kept."""
    if a.dtype == np.uint16:  # no clipping needed: uint32 holds 65535 * 255 + 32767 (half the memory of int64)
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    a = np.clip(a.astype(np.int64), 0, 65535)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


_STRIP_BYTES = 1 << 24  # 16 MB of pixels per strip


def pil_array(im: Image.Image, copy: bool = False) -> np.ndarray:
    """`np.asarray(im)` (`np.array(im)` if `copy`) without its transient cost on large images.

    PIL hands numpy its pixels through `tobytes`, which joins a list of chunks: two full-size copies
    at once beside the decoded image. A large image is converted in row strips into one array instead.
    """
    w, h = im.size
    rows = max(1, _STRIP_BYTES // max(1, w * len(im.getbands())))
    if rows >= h:
        return np.array(im) if copy else np.asarray(im)
    first = np.asarray(im.crop((0, 0, w, rows)))
    out = np.empty((h, *first.shape[1:]), first.dtype)
    out[:rows] = first
    for y in range(rows, h, rows):
        out[y:y + rows] = np.asarray(im.crop((0, y, w, min(h, y + rows))))
    return out


def _to_uint8_gray(im: Image.Image) -> np.ndarray:
    a = pil_array(im)
    if im.mode == "F":
        a = a.astype(np.float64)
        a = a * 255.0 if np.nanmax(a) <= 1.0 else a
        return np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
    return uint16_to_uint8(a)  # I;16 / I;16B / I;16L / I


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info)


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """H x W x 3 uint8 RGB array from a PIL image (rules in the module docstring).

    An RGB image is not converted (`convert` would copy it): one full-size copy fewer on huge images.
    """
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        g = _to_uint8_gray(im)
        return np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2))
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(pil_array(im), dtype=np.uint8)


def _float_to_uint8(a: np.ndarray, value_range: str | None) -> np.ndarray:
    """Float values checked (finite, >= 0, within the range) and rounded onto 0..255."""
    if a.size == 0:
        return a.astype(np.uint8)
    lo, hi = float(np.min(a)), float(np.max(a))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = "NaN" if np.isnan(a).any() else "infinite"
        raise ValueError(f"float image has {bad} values; expected finite values in 0-1 or 0-255")
    if lo < 0:
        raise ValueError(f"float image has negative values (min {lo:g}); expected 0-1 or 0-255 "
                         "(undo any mean/std normalisation first)")
    rng = value_range or ("0-1" if hi <= 1.0 else "0-255")
    top = 1.0 if rng == "0-1" else 255.0
    if hi > top:
        hint = " (declared)" if value_range else " (detected: the maximum is above 1)"
        raise ValueError(f"float image has values up to {hi:g}, above its range {rng}{hint}; "
                         "pass value_range='0-1' or '0-255' to match the data")
    t = a.astype(np.float64)  # as float ("F") files: value * 255 in float64, rounded half to even
    if rng == "0-1":
        t *= 255.0
    np.rint(t, out=t)
    return np.clip(t, 0, 255, out=t).astype(np.uint8)


def _as_numpy(image: Any) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    import torch

    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        try:
            return t.numpy()
        except (TypeError, RuntimeError):
            raise TypeError(f"{EXPECTED}; got a torch tensor of dtype {t.dtype}") from None
    kind = type(image).__name__
    path_like = isinstance(image, (str, bytes)) or hasattr(image, "__fspath__")
    raise TypeError(f"{EXPECTED}; got {kind}" + ("; read files with maskclip.read_image(path)" if path_like else ""))


def _channels_last(a: np.ndarray) -> np.ndarray:
    """H x W x 3 or x 4 from 2-D / 3-D arrays; channels-first and odd channel counts refused."""
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"{EXPECTED}; got {a.ndim} dimensions (shape {a.shape})")
    c = a.shape[2]
    if c not in (1, 3, 4):
        hint = " (channels first? use image.permute(1, 2, 0) / np.moveaxis(image, 0, -1))" if a.shape[0] in (
            1, 3, 4) else ""
        raise ValueError(f"{EXPECTED}; got shape {a.shape}{hint}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"image has zero size (shape {a.shape})")
    return a


def as_rgb_uint8(image: Any, value_range: str | None = None) -> np.ndarray:
    """H x W x 3 uint8 RGB from a PIL image or an H x W x C array/tensor (rules in the module docstring).

    Raises TypeError for an unsupported type or dtype, ValueError for a bad shape or bad values.
    `value_range` ("0-1", "0-255") declares the scale of float input; None detects it (max <= 1: 0-1).
    """
    if value_range is not None and value_range not in VALUE_RANGES:
        raise ValueError(f"value_range must be None, '0-1' or '0-255', got {value_range!r}")
    if isinstance(image, Image.Image):
        _only_float_range(value_range, "a PIL image")
        return pil_to_rgb(image)
    a = _as_numpy(image)
    if a.dtype == np.bool_:
        raise TypeError(f"{EXPECTED}; got a bool array (a mask is not an image: multiply by 255 and "
                        "use .astype(np.uint8) if it really is one)")
    a = _channels_last(a)
    if not a.dtype.isnative:  # big-endian arrays (some TIFF readers): same values, native order
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype == np.uint8:
        _only_float_range(value_range, "a uint8 image", allowed="0-255")
    elif a.dtype == np.uint16:
        _only_float_range(value_range, "a uint16 image")
        a = uint16_to_uint8(a)
    elif np.issubdtype(a.dtype, np.floating):
        a = _float_to_uint8(a, value_range)
    else:
        raise TypeError(f"{EXPECTED}; got dtype {a.dtype} (if the values are 0..255 use .astype(np.uint8))")
    if a.shape[2] == 1:
        return np.ascontiguousarray(np.broadcast_to(a, (*a.shape[:2], 3)))
    if a.shape[2] == 4:
        return pil_to_rgb(Image.fromarray(np.ascontiguousarray(a), "RGBA"))
    return np.ascontiguousarray(a)


def _only_float_range(value_range: str | None, what: str, allowed: str | None = None) -> None:
    if value_range is not None and value_range != allowed:
        raise ValueError(f"value_range={value_range!r} applies to float images; {what} has a fixed range")


__all__ = ["EXPECTED", "VALUE_RANGES", "as_rgb_uint8", "pil_array", "pil_to_rgb", "uint16_to_uint8"]
