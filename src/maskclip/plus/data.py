"""MaskCLIP+ training data: one training-item type, the deterministic crop stream, and its sampler.

Determinism. The training stream is a pure function of (seed, position): position p = iteration *
global_batch + slot selects the sample (a per-epoch permutation seeded by (seed, epoch)) and seeds its
augmentation. Hence resume needs only the iteration count, and N processes each taking a contiguous slice
of every global batch see exactly the crops one process would (DistributedSampler-equivalent sharding).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.image_io import read_image, read_label
from .augment import UNLABELED, augment, sample_seed, to_image_tensor
from .config import PlusTrainConfig
from .pseudo import check_no_unseen_leak, suppress_classes


@dataclass
class TrainItem:
    """One training image (HxWx3 uint8 RGB), optional ground truth and optional precomputed pseudo labels
    (HxW integer maps). Datasets may return a TrainItem, a tuple (image[, gt[, pseudo]]) or a bare image."""

    image: Any
    label: Any = None
    pseudo: Any = None


def as_item(item: Any) -> TrainItem:
    if isinstance(item, TrainItem):
        return item
    if isinstance(item, tuple):
        if not 1 <= len(item) <= 3:
            raise ValueError(f"dataset items must be (image[, gt[, pseudo]]), got a {len(item)}-tuple")
        return TrainItem(*item)
    if isinstance(item, dict):
        return TrainItem(item["image"], item.get("label"), item.get("pseudo"))
    return TrainItem(item)


def _as_long_map(x: Any, what: str, idx: int) -> Tensor:
    t = torch.as_tensor(np.asarray(x)).long()
    if t.ndim != 2:
        raise ValueError(f"dataset item {idx}: {what} must be an HxW map, got shape {tuple(t.shape)}")
    return t


class TrainCrops(torch.utils.data.Dataset):
    """Global stream position -> augmented crop {"image", "label"[, "pseudo"], "index"}; see module doc."""

    def __init__(self, data: Any, cfg: PlusTrainConfig):
        if len(data) == 0:
            raise ValueError("training dataset is empty")
        self.data, self.cfg, self.aug = data, cfg, cfg.augment_config()
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.data)

    def dataset_index(self, position: int) -> int:
        epoch, k = divmod(position, len(self.data))
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(sample_seed(self.cfg.seed ^ 0x5EED, epoch))
            self._perm, self._perm_epoch = torch.randperm(len(self.data), generator=g), epoch
        return int(self._perm[k])

    def __getitem__(self, position: int) -> dict[str, Tensor]:
        cfg = self.cfg
        idx = self.dataset_index(position)
        s = as_item(self.data[idx])
        image = to_image_tensor(s.image)
        h, w = image.shape[-2:]
        if cfg.mode == "zero-shot":
            if s.label is None:
                raise ValueError(f"dataset item {idx}: zero-shot training needs ground truth for the seen classes")
            gt = _as_long_map(s.label, "ground truth", idx)
            if cfg.suppress_unseen:
                gt = suppress_classes(gt, list(cfg.unseen_ids))
            check_no_unseen_leak(gt, list(cfg.unseen_ids), where=f"dataset item {idx}")
            if cfg.seen_ids is not None:
                allowed = torch.tensor(list(cfg.seen_ids) + [cfg.ignore_index, UNLABELED])
                bad = torch.unique(gt[~torch.isin(gt, allowed)])
                if bad.numel():
                    raise ValueError(f"dataset item {idx}: ground truth has ids {bad.tolist()[:10]} that are "
                                     "neither seen classes nor ignore_index")
        elif cfg.gt_ignore_mask:  # annotation-free, the authors' VOC20/Context-59 form: only the void mask kept
            if s.label is None:
                raise ValueError(f"dataset item {idx}: gt_ignore_mask needs the ground truth (its void pixels)")
            gt = _as_long_map(s.label, "ground truth", idx)
            gt = torch.where(gt == cfg.ignore_index, gt, torch.full_like(gt, UNLABELED))
        else:  # annotation-free: any ground truth is ignored
            gt = torch.full((h, w), UNLABELED, dtype=torch.long)
        maps = [gt]
        if s.pseudo is not None:
            maps.append(_as_long_map(s.pseudo, "pseudo labels", idx))
        for m, name in zip(maps, ("ground truth", "pseudo labels")):
            if tuple(m.shape) != (h, w):
                raise ValueError(f"dataset item {idx}: {name} size {tuple(m.shape)} != image size {(h, w)}")
        g = torch.Generator().manual_seed(sample_seed(cfg.seed, position))
        crop, labels = augment(image, torch.stack(maps), self.aug, g)
        out = {"image": crop, "label": labels[0], "index": torch.tensor(idx)}
        if s.pseudo is not None:
            out["pseudo"] = labels[1]
        return out


class StreamSampler(torch.utils.data.Sampler[int]):
    """Positions of this rank's slice of each global batch, from ``start`` to ``stop`` iterations."""

    def __init__(self, start: int, stop: int, global_batch: int, rank: int = 0, world_size: int = 1):
        self.start, self.stop, self.gb = start, stop, global_batch
        self.local = global_batch // world_size
        self.offset = rank * self.local

    def __iter__(self):
        for it in range(self.start, self.stop):
            base = it * self.gb + self.offset
            yield from range(base, base + self.local)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.local


class TrainFiles:
    """Training items from files: image, optional ground truth, optional precomputed pseudo labels.

    Returns TrainItems. Ground truth equal to `unlabeled_id` becomes UNLABELED (may get a pseudo label);
    pseudo-label ids are mapped to the training classes by `pseudo_lut` (others: ignore).
    """

    def __init__(self, images: Sequence[Path], labels: Sequence[Path] | None = None, *,
                 label_reader: Callable[[int], np.ndarray] | None = None, pseudo: Sequence[Path] | None = None,
                 pseudo_lut: np.ndarray | None = None, unlabeled_id: int | None = None, exif: bool = False):
        self.images, self.labels, self.pseudo = list(images), labels, pseudo
        self.label_reader = label_reader  # callable(index) -> HxW ids (dataset readers); else read files
        self.pseudo_lut, self.unlabeled_id, self.exif = pseudo_lut, unlabeled_id, exif

    def __len__(self) -> int:
        return len(self.images)

    def has_labels(self) -> bool:
        return self.labels is not None or self.label_reader is not None

    def label_source(self, i: int) -> str:
        """The file a ground-truth map comes from, for messages."""
        return str(self.labels[i]) if self.labels is not None else str(self.images[i])

    def read_gt(self, i: int) -> np.ndarray | None:
        if self.label_reader is not None:
            gt = np.asarray(self.label_reader(i), dtype=np.int64)
        elif self.labels is not None:
            gt = read_label(self.labels[i]).astype(np.int64)
        else:
            return None
        if self.unlabeled_id is not None:
            gt = np.where(gt == self.unlabeled_id, UNLABELED, gt)
        return gt

    def __getitem__(self, i: int) -> TrainItem:
        image = read_image(self.images[i], exif=self.exif)
        if not image.flags.writeable:
            image = image.copy()
        pseudo = None
        if self.pseudo is not None:
            raw = read_label(self.pseudo[i]).astype(np.int64)
            lut = self.pseudo_lut
            pseudo = lut[np.clip(raw, 0, len(lut) - 1)] if lut is not None else raw
        return TrainItem(image, self.read_gt(i), pseudo)


def pair_labels(images: Sequence[Path], label_dir: Path) -> list[Path]:
    """The label file <stem>.png (.tif, .tiff, .bmp) in `label_dir` of every image; ValueError naming the
    missing ones."""
    out, missing = [], []
    for img in images:
        cands = [label_dir / f"{img.stem}{ext}" for ext in (".png", ".tif", ".tiff", ".bmp")]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            missing.append(img.name)
        out.append(hit or cands[0])
    if missing:
        raise ValueError(f"{label_dir}: no label file <stem>.png for {len(missing)} of {len(images)} images "
                         f"(first: {', '.join(missing[:3])})")
    return out


def check_ground_truth(data: TrainFiles, num_classes: int, unseen: Sequence[int], ignore: int,
                       progress: bool = False) -> None:
    """Zero-shot pre-flight: every label map holds only seen ids, ignore or unlabelled (fails loudly before
    any training, naming the file)."""
    from tqdm import tqdm

    seen = [i for i in range(num_classes) if i not in unseen]
    allowed = np.array(seen + [ignore, UNLABELED])
    for i in tqdm(range(len(data)), desc="checking ground truth", disable=not progress, file=sys.stderr):
        gt = data.read_gt(i)
        where = data.label_source(i)
        check_no_unseen_leak(gt, list(unseen), where=where)
        bad = np.unique(gt[~np.isin(gt, allowed)])
        if bad.size:
            raise ValueError(f"{where}: label values {bad[:10].tolist()} are neither class ids "
                             f"(0..{num_classes - 1}) nor the ignore index {ignore}")


__all__ = ["StreamSampler", "TrainCrops", "TrainFiles", "TrainItem", "as_item", "check_ground_truth", "pair_labels"]
