"""Training targets of the proposal generator from semantic label maps (the MaskCLIP+ training folders).

As MaskFormer's semantic dataset mapper: one binary mask per class present in the crop; as ZegFormer,
only SEEN classes are targets. Pixels of unseen classes, the ignore index (255, also the crop padding)
and MaskCLIP+'s UNLABELED value (-1: the crop stream marks suppressed unseen pixels so) are *invalid*:
no target covers them and they are left out of the mask losses and mask costs (MaskFormer would count
them as background of every mask), so the generator is never told that an unseen object is "nothing".
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import SettingsError
from ..plus.data import TrainFiles


@dataclass
class SemanticTargets:
    """One image's targets: labels [T] (index into the seen classes, ascending), masks [T, H, W] bool,
    valid [H, W] bool (pixels labelled with a seen class)."""

    labels: Tensor
    masks: Tensor
    valid: Tensor

    def to(self, device: torch.device | str) -> SemanticTargets:
        return SemanticTargets(self.labels.to(device), self.masks.to(device), self.valid.to(device))


def seen_lookup(num_classes: int, seen_ids: Sequence[int]) -> Tensor:
    """[K] long: class id -> its index among the seen classes, -1 for unseen ones."""
    lut = torch.full((num_classes,), -1, dtype=torch.long)
    for k, cid in enumerate(sorted(seen_ids)):
        if not 0 <= cid < num_classes:
            raise ValueError(f"seen class id {cid} is not one of the {num_classes} class ids")
        lut[cid] = k
    return lut


def semantic_targets(label: Tensor | np.ndarray, lookup: Tensor) -> SemanticTargets:
    """Targets of one [H, W] label map (class ids; anything outside 0..K-1 or unseen is invalid)."""
    lab = torch.as_tensor(np.asarray(label) if not isinstance(label, Tensor) else label).long()
    if lab.ndim != 2:
        raise ValueError(f"a label map is H x W, got shape {tuple(lab.shape)}")
    lookup = lookup.to(lab.device)
    inside = (lab >= 0) & (lab < len(lookup))
    seen = torch.full_like(lab, -1)
    seen[inside] = lookup[lab[inside]]
    valid = seen >= 0
    labels = torch.unique(seen[valid])  # sorted
    masks = seen[None] == labels[:, None, None]
    return SemanticTargets(labels, masks, valid)


def batch_targets(labels: Tensor, lookup: Tensor) -> list[SemanticTargets]:
    """Targets of a [B, H, W] batch of label maps."""
    return [semantic_targets(lab, lookup) for lab in labels]


def check_labels(data: TrainFiles, num_classes: int, ignore_index: int, seen_ids: Sequence[int],
                 progress: bool = False) -> np.ndarray:
    """Pre-flight over every label map: values must be class ids or the ignore index (a SettingsError
    naming the file otherwise, before any training) and some seen class must appear. Returns the pixel
    count of each class id [K]."""
    from tqdm import tqdm

    counts = np.zeros(num_classes, np.int64)
    for i in tqdm(range(len(data)), desc="checking labels", disable=not progress, file=sys.stderr):
        gt = data.read_gt(i)
        if gt is None:
            raise SettingsError("the proposal generator trains on label maps: give LABELS_DIR")
        ok = (gt == ignore_index) | ((gt >= 0) & (gt < num_classes))
        if not ok.all():
            bad = np.unique(gt[~ok])[:10].tolist()
            raise SettingsError(f"{data.label_source(i)}: label values {bad} are neither class ids "
                                f"(0..{num_classes - 1} of --classes) nor the ignore index {ignore_index}")
        counts += np.bincount(gt[gt != ignore_index].ravel(), minlength=num_classes)[:num_classes]
    if not counts[list(seen_ids)].any():
        raise SettingsError("no pixel of any seen class in the label maps: nothing to train the proposals on "
                            "(check --classes, --unseen and LABELS_DIR)")
    return counts


__all__ = ["SemanticTargets", "batch_targets", "check_labels", "seen_lookup", "semantic_targets"]
