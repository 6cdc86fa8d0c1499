"""Pseudo labels for MaskCLIP+: pure tensor functions (their one on-disk form is maskclip.io.label_index).

Label-map convention (the authors'): a class id is ground truth; ``ignore_index`` (255) is void/padding and
never trained on; ``UNLABELED`` (-1) marks pixels without ground truth that may receive a pseudo label.
Annotation-free training starts from an all-UNLABELED map. Zero-shot (transductive) training starts from
the ground truth with the unseen classes suppressed to UNLABELED; only those pixels get pseudo labels and
only among the unseen ids, so the network never gets a seen-class label the annotators did not give.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .augment import UNLABELED

IdList = Sequence[int] | Tensor | None


def _ids(ids: IdList, device: torch.device) -> Tensor | None:
    if ids is None:
        return None
    t = torch.as_tensor(ids, dtype=torch.long, device=device).flatten()
    if t.numel() == 0:
        raise ValueError("candidate class id list is empty")
    return t


def resize_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Teacher logits at feature resolution -> label resolution (bilinear, as the authors)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)


def restricted_argmax(logits: Tensor, candidate_ids: IdList = None) -> Tensor:
    """Per-pixel argmax over classes, optionally only among ``candidate_ids``; returns class ids [B,H,W]."""
    ids = _ids(candidate_ids, logits.device)
    if ids is None:
        return logits.argmax(1)
    if int(ids.max()) >= logits.shape[1] or int(ids.min()) < 0:
        raise ValueError(f"candidate ids {ids.tolist()} out of range for {logits.shape[1]} classes")
    return ids[logits.index_select(1, ids).argmax(1)]


def pseudo_from_logits(logits: Tensor, size: tuple[int, int], candidate_ids: IdList = None, threshold: float = 0.0,
                       scale: float = 1.0, ignore_index: int = 255) -> Tensor:
    """Pseudo labels [B,H,W] from logits [B,K,h,w]: bilinear to `size`, argmax among the candidates, and
    pixels whose confidence max softmax(scale * logits) over the candidates is below `threshold` set to
    ignore_index (threshold 0: none)."""
    logits = resize_logits(logits.float(), size)
    labels = restricted_argmax(logits, candidate_ids)
    if threshold > 0:
        ids = _ids(candidate_ids, logits.device)
        sub = logits if ids is None else logits.index_select(1, ids)
        conf = (sub * scale).softmax(1).amax(1)
        labels = torch.where(conf >= threshold, labels, torch.full_like(labels, ignore_index))
    return labels


def fill_unlabeled(gt: Tensor, labels: Tensor, unlabeled_value: int = UNLABELED) -> Tensor:
    """gt where it has a label (or is ignore), ``labels`` where gt == unlabeled_value."""
    return torch.where(gt == unlabeled_value, labels, gt)


def pseudo_labels_annotation_free(teacher_logits: Tensor) -> Tensor:
    """Annotation-free MaskCLIP-guided learning: the teacher's argmax everywhere. [B,K,H,W] -> [B,H,W]."""
    return teacher_logits.argmax(1)


def pseudo_labels_zero_shot(teacher_logits: Tensor, gt: Tensor, unseen_ids: Sequence[int] | Tensor,
                            ignore_index: int = 255, unlabeled_value: int = UNLABELED) -> Tensor:
    """Transductive zero-shot: pixels with gt == unlabeled_value get the argmax restricted to ``unseen_ids``;
    labelled pixels keep their ground truth and ignore_index stays ignored.

    With unlabeled_value == ignore_index every ignored pixel is treated as unlabeled (for datasets that do
    not distinguish void from unannotated; then padding must use another value).
    """
    if teacher_logits.ndim != 4 or gt.ndim != 3 or teacher_logits.shape[0] != gt.shape[0]:
        raise ValueError(f"expected logits [B,K,H,W] and gt [B,H,W], got {tuple(teacher_logits.shape)} and "
                         f"{tuple(gt.shape)}")
    logits = resize_logits(teacher_logits, tuple(gt.shape[-2:]))
    return fill_unlabeled(gt.long(), restricted_argmax(logits, unseen_ids), unlabeled_value)


def check_no_unseen_leak(gt: Tensor | np.ndarray, unseen_ids: Sequence[int] | Tensor, where: str = "") -> None:
    """Raise if any unseen-class id occurs in the ground truth given to zero-shot training."""
    g = torch.as_tensor(np.asarray(gt) if not isinstance(gt, Tensor) else gt).long()
    ids = torch.as_tensor(unseen_ids, dtype=torch.long, device=g.device).flatten()
    present = ids[torch.isin(ids, g)] if ids.numel() else ids
    if present.numel():
        raise ValueError(
            f"ground-truth leakage{(' in ' + where) if where else ''}: unseen class id(s) {present.tolist()} "
            "appear in the labels given to zero-shot training. Remove them from the annotations or let the "
            "loader suppress them (PlusTrainConfig.suppress_unseen=True maps them to UNLABELED).")


def suppress_classes(gt: Tensor, ids: Sequence[int] | Tensor, unlabeled_value: int = UNLABELED) -> Tensor:
    """Turn the listed classes into unlabeled pixels (the authors' ``suppress_labels`` loading option)."""
    t = torch.as_tensor(ids, dtype=gt.dtype, device=gt.device).flatten()
    return torch.where(torch.isin(gt, t), torch.full_like(gt, unlabeled_value), gt)


def merge_precomputed(gt: Tensor, pseudo: Tensor, candidate_ids: IdList, ignore_index: int = 255,
                      unlabeled_value: int = UNLABELED) -> Tensor:
    """Like pseudo_labels_zero_shot, for pseudo labels read from disk: unlabeled pixels take ``pseudo`` if it
    is one of the candidate ids (else ignore)."""
    pseudo = pseudo.long()
    ids = _ids(candidate_ids, pseudo.device)
    ok = pseudo != ignore_index
    if ids is not None:
        ok &= torch.isin(pseudo, ids)
    return fill_unlabeled(gt.long(), torch.where(ok, pseudo, torch.full_like(pseudo, ignore_index)), unlabeled_value)


def label_statistics(target: Tensor, num_classes: int, ignore_index: int = 255) -> tuple[int, int, Tensor]:
    """(labelled pixels, all pixels, per-class histogram [K]) of a training target."""
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    hist = torch.bincount(target[valid].flatten(), minlength=num_classes)[:num_classes]
    return int(valid.sum()), target.numel(), hist


__all__ = ["UNLABELED", "resize_logits", "restricted_argmax", "pseudo_from_logits", "fill_unlabeled",
           "pseudo_labels_annotation_free",
           "pseudo_labels_zero_shot", "check_no_unseen_leak", "suppress_classes", "merge_precomputed",
           "label_statistics"]
