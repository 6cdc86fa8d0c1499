"""Geometry of dense inference, apart from any model: resize, windows, padding, stitching, scale averaging.

Used the same way by MaskCLIP (`dense.engine`), the MaskCLIP+ predictor and the training-time teacher:

    size = resized_size(h, w, "fit", (512, 512))                 # mmseg's keep-ratio rule
    plan = plan_windows(*size, mode, crop, step, max_pixels, multiple=16)
    for start, batch in window_batches(x, plan, batch_size): ...  # windows padded to the stride
    scores = stitch(per_window_maps, plan)                         # overlaps averaged
    for rows, probs in average_scales(scales, (h, w), to_probs): ...  # row blocks bound the memory

A whole-mode input larger than `max_pixels` is cut into big overlapping windows, so memory stays
bounded on very large images whatever the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Window = tuple[int, int, int, int]  # (y1, y2, x1, x2) in the resized image


def resized_size(h: int, w: int, resize: str, size: Sequence[int]) -> tuple[int, int]:
    """Target (H', W'): "fit" keeps the aspect ratio within (long, short) = size (mmseg's keep_ratio rule),
    "short" sets the short side to size[0], "squash" resizes to exactly size = (width, height) (mmcv's
    keep_ratio=False, the authors' 224x224 configs), "none" keeps the image as it is."""
    if resize == "none":
        return h, w
    if resize == "squash":  # mmcv's keep_ratio=False: exactly the scale (width, height)
        return max(1, int(size[-1])), max(1, int(size[0]))
    if resize == "short":
        scale = size[0] / min(h, w)
    elif resize == "fit":
        long_edge, short_edge = max(size), min(size)
        scale = min(long_edge / max(h, w), short_edge / min(h, w))
    else:
        raise ValueError(f"resize must be 'fit', 'short', 'squash' or 'none', got {resize!r}")
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def slide_windows(h: int, w: int, crop: int, step: int) -> list[Window]:
    """mmseg's sliding-window grid: windows of crop x crop (smaller if the image is), the last ones flush."""
    rows = max(h - crop + step - 1, 0) // step + 1
    cols = max(w - crop + step - 1, 0) // step + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * step + crop, h), min(c * step + crop, w)
            out.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return out


@dataclass(frozen=True)
class WindowPlan:
    """The windows of one resized image, all of one size, and that size padded to the model's stride."""

    size: tuple[int, int]  # the resized image (H', W')
    windows: list[Window]
    padded: tuple[int, int]  # a window after padding to a multiple of the stride

    @property
    def window(self) -> tuple[int, int]:
        y1, y2, x1, x2 = self.windows[0]
        return y2 - y1, x2 - x1


def plan_windows(h: int, w: int, mode: str, crop: int, step: int, max_pixels: int, multiple: int = 1) -> WindowPlan:
    """Whole image in one window, or crop x crop windows every `step` pixels ("slide"). A whole image of
    more than `max_pixels` pixels gets overlapping windows of about sqrt(max_pixels) instead (memory bound)."""
    if mode == "whole" and h * w <= max_pixels:
        windows = [(0, h, 0, w)]
    elif mode == "whole":
        side = max(multiple, int(max_pixels ** 0.5) // multiple * multiple)
        windows = slide_windows(h, w, side, side * 3 // 4)
    elif mode == "slide":
        windows = slide_windows(h, w, crop, step)
    else:
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    wh, ww = windows[0][1] - windows[0][0], windows[0][3] - windows[0][2]
    padded = (-(-wh // multiple) * multiple, -(-ww // multiple) * multiple)
    return WindowPlan((h, w), windows, padded)


def window_batches(x: torch.Tensor, plan: WindowPlan, batch_size: int, centre: bool = False) -> Iterator[torch.Tensor]:
    """Batches of windows of the resized image x [1, C, H', W'], zero-padded to plan.padded: bottom and right,
    or (`centre`) on both sides with the smaller half first (top = (ph - wh) // 2)."""
    (wh, ww), (ph, pw) = plan.window, plan.padded
    top, left = ((ph - wh) // 2, (pw - ww) // 2) if centre else (0, 0)
    for start in range(0, len(plan.windows), batch_size):
        batch = torch.cat([x[..., y1:y2, x1:x2] for (y1, y2, x1, x2) in plan.windows[start:start + batch_size]])
        if (ph, pw) != (wh, ww):
            batch = F.pad(batch, (left, pw - ww - left, top, ph - wh - top))
        yield batch


def stitch(maps: Sequence[torch.Tensor] | torch.Tensor, plan: WindowPlan) -> torch.Tensor:
    """Per-window maps [K, >=h_i, >=w_i] (extra rows/columns of padding are cut) -> [K, H', W'] over the
    resized image, averaged where windows overlap."""
    if len(plan.windows) == 1:
        y1, y2, x1, x2 = plan.windows[0]
        return maps[0][:, : y2 - y1, : x2 - x1]
    th, tw = plan.size
    first = maps[0]
    acc = first.new_zeros(first.shape[0], th, tw)
    count = first.new_zeros(1, th, tw)
    for m, (y1, y2, x1, x2) in zip(maps, plan.windows):
        acc[:, y1:y2, x1:x2] += m[:, : y2 - y1, : x2 - x1]
        count[:, y1:y2, x1:x2] += 1
    return acc / count


def interp_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """[n_out, n_in] matrix of 1-D linear interpolation (align_corners=False), so that separable bilinear
    upsampling of a row block equals the matching rows of F.interpolate."""
    eye = torch.eye(n_in, device=device)[None]  # 1, n_in (channels), n_in (length)
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T


def average_scales(scales: Sequence[torch.Tensor], size: tuple[int, int],
                   transform: Callable[[torch.Tensor], torch.Tensor] | None,
                   max_bytes: int = 256 * 2 ** 20) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Each scale's map [K, h_s, w_s] upsampled bilinearly to `size`, `transform`ed (e.g. to probabilities)
    and averaged over scales, yielded as row blocks (r0, r1, [K, r1 - r0, W]) of at most `max_bytes`."""
    h, w = size
    k = scales[0].shape[0]
    rows = h if 4 * k * h * w * 2 <= max_bytes else max(1, max_bytes // max(1, 4 * k * w * 2))
    mats = None
    if rows < h:
        mats = [(interp_matrix(s.shape[1], h, s.device), interp_matrix(s.shape[2], w, s.device)) for s in scales]
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        p = 0
        for i, s in enumerate(scales):
            if mats is None:
                block = F.interpolate(s[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            else:
                block = torch.einsum("Hh,khw,Ww->kHW", mats[i][0][r0:r1], s, mats[i][1])
            p = p + (transform(block) if transform is not None else block)
        if len(scales) > 1:
            p = p / len(scales)
        yield r0, r1, p


__all__ = ["Window", "WindowPlan", "average_scales", "interp_matrix", "plan_windows", "resized_size", "slide_windows",
           "stitch", "window_batches"]
