"""Bipartite matching of predicted masks to target masks (MaskFormer's HungarianMatcher, without scipy).

`linear_assignment` solves the rectangular linear assignment problem exactly (the shortest augmenting
path form of the Hungarian algorithm with row/column potentials, O(n^2 m) for n <= m), vectorised over
columns in numpy: the training loop needs it once per image and decoder layer, on matrices of a few
dozen queries by a few targets, and scipy is not a runtime dependency of maskclip.

The matching cost is MaskFormer's (its matcher.py): class cost = -p(target class) (softmax over S+1),
mask cost = sigmoid focal loss (alpha 0.25, gamma 2; or plain sigmoid BCE, `CriterionConfig.mask_loss`)
averaged over the pixels, dice cost = 1 - (2|p t| + 1) / (|p| + |t| + 1); weighted by the criterion's
class / mask / dice weights. Unlike MaskFormer, pixels that are not labelled with a seen class (ignore,
unseen classes) are left out of the mask and dice costs, as they are left out of the losses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from .losses import CriterionConfig
    from .targets import SemanticTargets


def linear_assignment(cost: Any) -> tuple[np.ndarray, np.ndarray]:
    """Minimal-cost assignment of a rectangular [n, m] cost matrix: (rows, cols), min(n, m) pairs, rows
    ascending (as scipy.optimize.linear_sum_assignment). Every entry must be finite."""
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"cost matrix must be 2-D, got shape {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("cost matrix must be finite (no NaN or infinity)")
    n, m = c.shape
    if n == 0 or m == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if n > m:
        col_of_row = _assign_rows(c.T)  # the n > m case is the transposed one
        order = np.argsort(col_of_row)
        return col_of_row[order], np.arange(m, dtype=np.int64)[order]
    return np.arange(n, dtype=np.int64), _assign_rows(c)


def _assign_rows(c: np.ndarray) -> np.ndarray:
    """Column of each row for n <= m: rows enter one at a time along a shortest augmenting path in the
    reduced costs c[i, j] - u[i] - v[j] (Dijkstra over columns; potentials keep them non-negative).
    Index 0 of u, v, owner and way is a virtual row/column (1-based as the classical formulation)."""
    n, m = c.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, np.int64)  # owner[j]: the row (1-based) holding column j, 0 = free
    way = np.zeros(m + 1, np.int64)  # the previous column on the shortest path to column j
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            row = owner[j0]
            reduced = np.empty(m + 1)
            reduced[0] = np.inf
            reduced[1:] = c[row - 1] - u[row] - v[1:]
            better = ~used & (reduced < minv)
            minv[better] = reduced[better]
            way[better] = j0
            candidates = np.where(used, np.inf, minv)
            j1 = int(np.argmin(candidates))
            delta = candidates[j1]
            u[owner[used]] += delta  # distinct rows: the owners of the visited columns
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:  # augment along the path
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    col_of_row = np.empty(n, np.int64)
    taken = np.nonzero(owner[1:])[0]
    col_of_row[owner[1:][taken] - 1] = taken
    return col_of_row


# ---------------------------------------------------------------------------------------------- pair costs


def _weights(valid: Tensor | None, like: Tensor) -> Tensor:
    return torch.ones(like.shape[-1], dtype=like.dtype, device=like.device) if valid is None else valid.to(like)


def pairwise_focal(logits: Tensor, targets: Tensor, valid: Tensor | None = None, alpha: float = 0.25,
                   gamma: float = 2.0) -> Tensor:
    """[N, P] mask logits x [T, P] binary targets -> [N, T] sigmoid focal loss, mean over valid pixels
    (RetinaNet's; alpha < 0 means no class weighting)."""
    w = _weights(valid, logits)
    prob = logits.sigmoid()
    pos = (1 - prob) ** gamma * F.softplus(-logits)  # -log p, for target 1
    neg = prob ** gamma * F.softplus(logits)  # -log(1 - p), for target 0
    if alpha >= 0:
        pos, neg = pos * alpha, neg * (1 - alpha)
    t = targets.to(logits)
    cost = (pos * w) @ t.T + (neg * w) @ (1 - t).T
    return cost / w.sum().clamp_min(1)


def pairwise_bce(logits: Tensor, targets: Tensor, valid: Tensor | None = None) -> Tensor:
    """[N, P] x [T, P] -> [N, T] sigmoid binary cross-entropy, mean over valid pixels."""
    return pairwise_focal(logits, targets, valid, alpha=-1.0, gamma=0.0)


def pairwise_dice(logits: Tensor, targets: Tensor, valid: Tensor | None = None) -> Tensor:
    """[N, P] x [T, P] -> [N, T] dice loss 1 - (2 sum(p t) + 1) / (sum p + sum t + 1) over valid pixels."""
    w = _weights(valid, logits)
    prob = logits.sigmoid() * w
    t = targets.to(logits) * w
    num = 2 * prob @ t.T
    den = prob.sum(-1)[:, None] + t.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


def matching_cost(pred_logits: Tensor, pred_masks: Tensor, labels: Tensor, masks: Tensor, valid: Tensor | None,
                  cfg: CriterionConfig) -> Tensor:
    """[N, T] cost of giving target t to query q: pred_logits [N, S+1], pred_masks [N, P] logits,
    labels [T] (seen-class index), masks [T, P] binary, valid [P] or None."""
    prob = pred_logits.float().softmax(-1)
    cost = -cfg.class_weight * prob[:, labels]
    x = pred_masks.float()
    if cfg.mask_loss == "focal":
        mask_cost = pairwise_focal(x, masks, valid, cfg.focal_alpha, cfg.focal_gamma)
    else:
        mask_cost = pairwise_bce(x, masks, valid)
    return cost + cfg.mask_weight * mask_cost + cfg.dice_weight * pairwise_dice(x, masks, valid)


@torch.no_grad()
def hungarian_match(outputs: dict[str, Tensor], targets: list[SemanticTargets],
                    cfg: CriterionConfig) -> list[tuple[Tensor, Tensor]]:
    """Per image (query indices, target indices), min(N, T) pairs. As MaskFormer's matcher, the cost is
    computed at the prediction resolution with the target masks (and valid pixels) resized by nearest."""
    logits, pred = outputs["pred_logits"], outputs["pred_masks"]
    size = pred.shape[-2:]
    out = []
    for b, t in enumerate(targets):
        if len(t.labels) == 0:
            empty = torch.zeros(0, dtype=torch.long)
            out.append((empty, empty))
            continue
        masks = F.interpolate(t.masks[None].float(), size=size, mode="nearest")[0].flatten(1)
        valid = F.interpolate(t.valid[None, None].float(), size=size, mode="nearest")[0, 0].flatten()
        c = matching_cost(logits[b], pred[b].flatten(1), t.labels.to(logits.device), masks, valid, cfg)
        rows, cols = linear_assignment(c.cpu().numpy())
        out.append((torch.from_numpy(rows), torch.from_numpy(cols)))
    return out


__all__ = ["hungarian_match", "linear_assignment", "matching_cost", "pairwise_bce", "pairwise_dice",
           "pairwise_focal"]
