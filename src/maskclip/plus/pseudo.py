"""Pseudo labels for MaskCLIP+ (pure tensor functions) and their on-disk form (index JSON + PNGs).

Label-map convention (the authors'): a class id is ground truth; ``ignore_index`` (255) is void/padding and
never trained on; ``UNLABELED`` (-1) marks pixels without ground truth that may receive a pseudo label.
Annotation-free training starts from an all-UNLABELED map. Zero-shot (transductive) training starts from
the ground truth with the unseen classes suppressed to UNLABELED; only those pixels get pseudo labels and
only among the unseen ids, so the network never gets a seen-class label the annotators did not give.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .augment import IMAGENET_MEAN, IMAGENET_STD, UNLABELED, normalize, to_image_tensor

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
            "loader suppress them (TrainConfig.suppress_unseen=True maps them to UNLABELED).")


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


# ----------------------------------------------------------------------------------------------------------
# On-disk pseudo labels: <out>/index.json + <out>/labels/<i>.png (8-bit, or 16-bit when ids exceed 255)

INDEX_FORMAT = "maskclip-pseudo-labels/1"


def save_label_png(path: str | Path, labels: np.ndarray | Tensor) -> None:
    from PIL import Image

    arr = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    if arr.ndim != 2 or arr.min() < 0:
        raise ValueError(f"{path}: labels must be a non-negative HxW map, got shape {arr.shape}")
    arr = arr.astype(np.uint8) if arr.max() <= 255 else arr.astype(np.uint16)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(arr).save(tmp, format="PNG")
    os.replace(tmp, path)


def load_label_png(path: str | Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.array(im).astype(np.int64)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read label PNG {path}: {e}") from e


def write_index(path: str | Path, meta: dict[str, Any], items: dict[int, str]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": INDEX_FORMAT, **meta,
                               "items": {str(k): v for k, v in sorted(items.items())}}, indent=1))
    os.replace(tmp, path)


def read_index(path: str | Path) -> tuple[dict[str, Any], dict[int, Path]]:
    """-> (meta, {dataset index: absolute PNG path})."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read pseudo-label index {path}: {e}") from e
    if data.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path}: not a pseudo-label index (format {data.get('format')!r}, want {INDEX_FORMAT})")
    items = {int(k): path.parent / v for k, v in data.pop("items").items()}
    return data, items


def _image_and_gt(item: Any) -> tuple[Any, Any]:
    """Accepts the dataset item forms train.Sample documents: Sample-like (.image/.label), dict, tuple, image."""
    if hasattr(item, "image"):
        return item.image, getattr(item, "label", None)
    if isinstance(item, dict):
        return item["image"], item.get("label")
    if isinstance(item, tuple):
        return item[0], (item[1] if len(item) > 1 else None)
    return item, None


class PseudoLabelDataset:
    """Wraps an image dataset and adds the precomputed pseudo-label map of each item: returns
    (image, ground truth or None, pseudo labels)."""

    def __init__(self, base: Any, index_path: str | Path):
        self.base = base
        self.meta, self.items = read_index(index_path)
        missing = [i for i in range(len(base)) if i not in self.items]
        if missing:
            raise ValueError(f"{index_path}: no pseudo labels for {len(missing)} of {len(base)} images "
                             f"(first: {missing[:5]}); re-run labelling for them")

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Any, Any, np.ndarray]:
        image, gt = _image_and_gt(self.base[i])
        return image, gt, load_label_png(self.items[i])


@torch.no_grad()
def label_dataset(teacher: Callable[[Tensor], Tensor], dataset: Any, out_dir: str | Path, *,
                  candidate_ids: Sequence[int] | None = None, mean: tuple[float, ...] = IMAGENET_MEAN,
                  std: tuple[float, ...] = IMAGENET_STD, device: str | torch.device = "cpu",
                  skip_existing: bool = True, progress: bool = True) -> dict[str, Any]:
    """Run the teacher once per whole image and store its (candidate-restricted) argmax as PNGs.

    For zero-shot, pass the unseen ids as ``candidate_ids``; the ground truth is merged at training time
    (merge_precomputed), so the files hold the teacher's label for every pixel. Items that fail are
    reported at the end; the index lists the items written so far and is replaced atomically.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    items: dict[int, str] = {}
    failures: list[tuple[int, str]] = []
    num_classes = None
    for i in tqdm(range(len(dataset)), desc="pseudo labels", disable=not progress):
        rel = f"labels/{i:06d}.png"
        if skip_existing and (out / rel).exists():
            items[i] = rel
            continue
        try:
            image, _ = _image_and_gt(dataset[i])
            x = normalize(to_image_tensor(image), mean, std)[None].to(device)
            logits = teacher(x)
            num_classes = int(logits.shape[1])
            labels = restricted_argmax(resize_logits(logits, tuple(x.shape[-2:])), candidate_ids)[0]
            save_label_png(out / rel, labels)
            items[i] = rel
        except Exception as e:  # noqa: BLE001 - batch job: keep going, report at the end
            failures.append((i, f"{type(e).__name__}: {e}"))
    write_index(out / "index.json", {"num_classes": num_classes, "candidate_ids": list(candidate_ids or []) or None,
                                     "mean": list(mean), "std": list(std)}, items)
    for i, msg in failures:
        print(f"pseudo labels: item {i} failed: {msg}", file=sys.stderr)
    return {"written": len(items), "failed": failures, "index": str(out / "index.json")}


__all__ = ["UNLABELED", "resize_logits", "restricted_argmax", "fill_unlabeled", "pseudo_labels_annotation_free",
           "pseudo_labels_zero_shot", "check_no_unseen_leak", "suppress_classes", "merge_precomputed",
           "label_statistics", "save_label_png", "load_label_png", "write_index", "read_index",
           "PseudoLabelDataset", "label_dataset"]
