"""The toy world's colours: one fixed, recognisable colour per class (sky blue for sky, ...).

Drawing itself (overlays, panels, legends) is `maskclip.render`."""

from __future__ import annotations

import numpy as np

# fixed, well-separated colours; the first ten match the toy world's CLASSES order
PALETTE = np.array([
    [135, 206, 250], [128, 128, 128], [34, 139, 34], [238, 214, 175], [25, 25, 160],
    [255, 0, 255], [255, 140, 0], [0, 200, 200], [220, 20, 60], [255, 255, 0],
    [148, 0, 211], [0, 0, 0], [0, 255, 127], [139, 69, 19], [255, 182, 193], [70, 130, 180],
], dtype=np.uint8)


def palette(k: int) -> np.ndarray:
    if k <= len(PALETTE):
        return PALETTE[:k]
    rng = np.random.default_rng(0)
    return np.concatenate([PALETTE, rng.integers(0, 256, (k - len(PALETTE), 3), dtype=np.uint8)])
