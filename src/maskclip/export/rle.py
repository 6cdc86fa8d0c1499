"""Run-length encodings of binary masks, as two annotation tools read them (pure functions, no I/O).

COCO: column-major runs starting with a background run, stored as pycocotools' compressed string (the
encoders of `maskclip.data.coco_masks`, which reads COCO's masks). Label Studio: the
`brush` format, thi.ng's rle-pack of the mask's RGBA bytes (row-major; value 255 in every channel where
the mask is set): a 32-bit value count, a 5-bit word size - 1, four 4-bit run-length sizes - 1, then
blocks of (repeat flag, 2-bit size index, run length - 1, value(s)), most significant bit first.
"""

from __future__ import annotations

import numpy as np

from ..data.coco_masks import counts_to_rle_string, rle_encode


def coco_rle(mask: np.ndarray) -> dict:
    """{"size": [h, w], "counts": str}: a COCO RLE that pycocotools' mask.decode reads."""
    h, w = np.asarray(mask).shape
    return {"size": [int(h), int(w)], "counts": counts_to_rle_string(rle_encode(np.asarray(mask, dtype=bool)))}


class _BitWriter:
    def __init__(self) -> None:
        self.bits: list[str] = []

    def write(self, value: int, size: int) -> None:
        self.bits.append(format(int(value), f"0{size}b"))

    def to_bytes(self) -> list[int]:
        s = "".join(self.bits)
        s += "0" * (-len(s) % 8)
        return [int(s[i:i + 8], 2) for i in range(0, len(s), 8)]


RLE_SIZES = (3, 4, 8, 16)  # run-length field widths (bits), Label Studio's choice


def label_studio_rle(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE (a list of bytes) of a binary HxW mask: RGBA bytes, every run a repeat block."""
    values = np.repeat(np.where(np.asarray(mask, dtype=bool).ravel(), 255, 0).astype(np.uint8), 4)
    w = _BitWriter()
    w.write(values.size, 32)
    w.write(8 - 1, 5)  # 8-bit words
    for size in RLE_SIZES:
        w.write(size - 1, 4)
    if values.size:
        change = np.flatnonzero(values[1:] != values[:-1]) + 1
        starts = np.concatenate([[0], change])
        lengths = np.diff(np.concatenate([starts, [values.size]]))
        for start, length in zip(starts.tolist(), lengths.tolist()):
            while length > 0:
                n = min(length, 1 << RLE_SIZES[-1])
                idx = next(i for i, s in enumerate(RLE_SIZES) if n - 1 < (1 << s))
                w.write(1, 1)
                w.write(idx, 2)
                w.write(n - 1, RLE_SIZES[idx])
                w.write(int(values[start]), 8)
                length -= n
    return w.to_bytes()


__all__ = ["RLE_SIZES", "coco_rle", "label_studio_rle"]
