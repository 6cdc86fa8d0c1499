"""A set of N masks over one image, the unit every region-classification step passes along.

Masks come from a user's file (instance-id PNG, COCO RLE, segment-anything's output: `regions.mask_io`),
from a trained class-agnostic proposal generator (`maskclip.proposals`, which also gives A^p, its scores
for the seen classes) or from MaskCLIP's own label map (`connected_regions`, training-free).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class MaskSet:
    """masks [N, H, W]: bool (hard masks) or float in [0, 1] (a generator's soft masks).
    scores [N, S]: A^p, a proposal generator's probabilities over its S seen classes (None for user masks).
    seen: the S seen class names the score columns refer to, in order.
    records: one dict per mask from its source (ids, SAM's predicted_iou/stability_score, bbox, ...)."""

    masks: np.ndarray
    scores: np.ndarray | None = None
    seen: tuple[str, ...] | None = None
    records: list[dict] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        m = self.masks
        if not isinstance(m, np.ndarray) or m.ndim != 3:
            raise ValueError(f"masks must be an [N, H, W] array, got {getattr(m, 'shape', type(m))}")
        if m.dtype != np.bool_ and not np.issubdtype(m.dtype, np.floating):
            raise ValueError(f"masks must be bool or float in [0, 1], got {m.dtype}")
        if self.scores is not None:
            if self.scores.ndim != 2 or self.scores.shape[0] != len(m):
                raise ValueError(f"scores must be [N={len(m)}, S], got {self.scores.shape}")
            if self.seen is None or len(self.seen) != self.scores.shape[1]:
                raise ValueError("scores need `seen`: one class name per score column")
        if self.records and len(self.records) != len(m):
            raise ValueError(f"{len(self.records)} records for {len(m)} masks")
        if not self.records:
            self.records = [{} for _ in range(len(m))]

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.masks.shape[1]), int(self.masks.shape[2]))

    def binary(self, threshold: float = 0.5) -> np.ndarray:
        """Hard masks [N, H, W] bool (soft masks above `threshold`)."""
        return self.masks if self.masks.dtype == np.bool_ else self.masks > threshold



def masks_from_instance_map(ids: np.ndarray, ignore: tuple[int, ...] = (0,)) -> MaskSet:
    """One mask per distinct id of an instance-id map (the ids in `ignore`, default 0, are no mask);
    records carry the id."""
    if ids.ndim != 2:
        raise ValueError(f"an instance-id map is H x W, got shape {ids.shape}")
    values = [int(v) for v in np.unique(ids) if int(v) not in ignore]
    masks = np.stack([ids == v for v in values]) if values else np.zeros((0, *ids.shape), bool)
    return MaskSet(masks, records=[{"id": v} for v in values], source="instance-ids")


def connected_regions(labels: np.ndarray, min_area: int = 1, ignore: tuple[int, ...] = ()) -> MaskSet:
    """Training-free proposals: the 4-connected regions of a label map (MaskCLIP's), each one mask;
    regions smaller than `min_area` pixels are dropped; records carry the label and the area."""
    labels = np.asarray(labels)
    comp = components(labels)
    masks, records = [], []
    for c in range(1, int(comp.max()) + 1 if comp.size else 1):
        m = comp == c
        area = int(m.sum())
        lab = int(labels[m][0])
        if area < min_area or lab in ignore:
            continue
        masks.append(m)
        records.append({"label": lab, "area": area})
    stack = np.stack(masks) if masks else np.zeros((0, *labels.shape), bool)
    return MaskSet(stack, records=records, source="connected-regions")


def components(labels: np.ndarray) -> np.ndarray:
    """4-connected components of equal labels, numbered 1..K in raster order of their first pixel
    (union-find over horizontal and vertical neighbours, vectorised per row pair)."""
    h, w = labels.shape
    parent = np.arange(h * w)

    def find(a: np.ndarray) -> np.ndarray:
        while True:
            p = parent[a]
            if np.array_equal(p, a):
                return a
            parent[a] = parent[p]
            a = parent[a]

    idx = np.arange(h * w).reshape(h, w)
    pairs = [(idx[:, :-1][labels[:, :-1] == labels[:, 1:]], idx[:, 1:][labels[:, :-1] == labels[:, 1:]]),
             (idx[:-1][labels[:-1] == labels[1:]], idx[1:][labels[:-1] == labels[1:]])]
    for a, b in pairs:
        while a.size:
            ra, rb = find(a), find(b)
            diff = ra != rb
            if not diff.any():
                break
            lo, hi = np.minimum(ra, rb)[diff], np.maximum(ra, rb)[diff]
            parent[hi] = lo  # some writes collide; the loop repeats until every pair shares a root
            a, b = a[diff], b[diff]
    roots = find(np.arange(h * w))
    _, first = np.unique(roots, return_index=True)
    order = np.argsort(first)
    numbered = np.empty(len(first), np.int64)
    numbered[order] = np.arange(1, len(first) + 1)
    return numbered[np.searchsorted(np.unique(roots), roots)].reshape(h, w)


__all__ = ["MaskSet", "components", "connected_regions", "masks_from_instance_map"]
