"""From per-mask class scores to pixels: the ensemble of eq. (1) and O = Â^T M (seed 003, section 1).

    Â(c) = A^p(c)^λ · A^c(c)^(1-λ)   for seen classes c (the proposal generator's own classes)
    Â(c) = A^c(c)^λ                  for unseen classes
    O = Â^T · M,  label(p) = argmax_c O(c, p)

Without proposal scores (a user's masks) Â = A^c. Pixels that no mask covers have O = 0 for every class:
they get the vocabulary's fallback label (background or unknown), never an arbitrary class 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def ensemble(ac: torch.Tensor, ap: torch.Tensor | None, seen: Sequence[int], lam: float = 0.7) -> torch.Tensor:
    """Â [N, K] from A^c [N, K] and A^p [N, S], whose column j scores class seen[j]."""
    if ap is None:
        return ac
    if ap.shape != (ac.shape[0], len(seen)):
        raise ValueError(f"A^p is {tuple(ap.shape)}, expected ({ac.shape[0]}, {len(seen)}) for the seen classes")
    out = ac.clamp_min(0) ** lam
    idx = torch.as_tensor(list(seen), dtype=torch.long)
    out[:, idx] = ap.clamp_min(0) ** lam * ac[:, idx].clamp_min(0) ** (1 - lam)
    return out


def paint(ahat: torch.Tensor, masks: np.ndarray, fallback: int, return_probs: bool = False,
          max_bytes: int = 256 * 2 ** 20) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Labels [H, W] (int64) = argmax of O = Â^T M, `fallback` where no mask covers a pixel; with
    `return_probs`, O normalised per pixel [K, H, W] (zero where uncovered). Row blocks bound memory."""
    n, h, w = masks.shape
    k = ahat.shape[1]
    labels = torch.full((h, w), fallback, dtype=torch.long)
    probs = torch.zeros(k, h, w) if return_probs else None
    if n == 0:
        return labels, probs
    rows = max(1, min(h, max_bytes // max(1, 4 * (k + n) * w)))
    a = ahat.float().cpu()
    for r0 in range(0, h, rows):
        m = torch.from_numpy(np.ascontiguousarray(masks[:, r0:r0 + rows], dtype=np.float32))
        o = torch.einsum("nk,nhw->khw", a, m)
        covered = m.sum(0) > 0
        best = o.argmax(0)
        labels[r0:r0 + rows] = torch.where(covered, best, labels[r0:r0 + rows])
        if probs is not None:
            total = o.sum(0, keepdim=True)
            probs[:, r0:r0 + rows] = torch.where(total > 0, o / total.clamp_min(1e-30), 0)
    return labels, probs


__all__ = ["ensemble", "paint"]
