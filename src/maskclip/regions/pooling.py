"""One pass instead of N (ours): classify each mask by MaskCLIP's dense features averaged under it.

The per-pixel feature MaskCLIP would give pixel p is a linear map A of the patch-grid features (window
upsampling, stitching, bilinear resize to the input: `MaskCLIP.image_map`). The mean under mask m is
then sum_p m(p) (A F)(p) / |m| = <A^T m, F> / |m|: the adjoint of A applied to the mask gives one weight
per grid cell, so no C x H x W feature map is ever built. A^T m is taken with autograd through the
engine's own geometry (the same code that places the scores), in chunks of masks. Scales are averaged;
KS, PD and PAMR act on class scores, not on features, and do not apply here.
"""

from __future__ import annotations

import numpy as np
import torch

from ..dense.engine import ImageFeatures, MaskCLIP


def grid_weights(engine: MaskCLIP, sf, masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A^T m for masks [n, H, W] (float): weights [N_windows, n, h, w] on sf's patch grids."""
    n_win, _, h, w = sf.feats.shape
    with torch.enable_grad():
        g = torch.zeros(n_win, len(masks), h, w, device=sf.feats.device, requires_grad=True)
        (engine.image_map(g, sf, size) * masks).sum().backward()
    return g.grad


@torch.no_grad()
def pooled_features(engine: MaskCLIP, features: ImageFeatures, masks: np.ndarray,
                    max_bytes: int = 256 * 2 ** 20) -> torch.Tensor:
    """[N, C] mean dense feature under each mask (weights [N, H, W]: bool or float in [0, 1]), averaged over
    scales; an empty mask gives zeros. Masks go through (as floats) in chunks of at most `max_bytes`."""
    size = features.image_size
    chunk = max(1, min(64, max_bytes // (4 * 3 * size[0] * size[1])))
    if masks.shape[1:] != tuple(size):
        raise ValueError(f"masks are {masks.shape[1]}x{masks.shape[2]}, the image {size[0]}x{size[1]}")
    c = features.scales[0].feats.shape[1]
    device = features.scales[0].feats.device
    out = torch.zeros(len(masks), c, device=device)
    for start in range(0, len(masks), chunk):
        m = torch.from_numpy(np.ascontiguousarray(masks[start:start + chunk], dtype=np.float32)).to(device)
        area = m.flatten(1).sum(1).clamp_min(1e-12)
        for sf in features.scales:
            wts = grid_weights(engine, sf, m, size)
            out[start:start + len(m)] += torch.einsum("inhw,ichw->nc", wts, sf.feats) / area[:, None]
    return out / len(features.scales)


__all__ = ["grid_weights", "pooled_features"]
