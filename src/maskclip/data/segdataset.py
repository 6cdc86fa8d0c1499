"""The dataset type every benchmark reader returns, and the label-map conversions they share.

A SegDataset is a sequence of Samples (RGB image, int64 label map, name, image path) plus the
benchmark's official class list; label maps use ``ignore_index`` for unlabelled pixels and every other
value is a class index into ``classes``. A sample whose label does not match its image size, or holds
ids outside the class list, raises a DatasetError naming the file when it is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import display_names
from .image_io import read_image


class DatasetError(ValueError):
    """A dataset whose files are missing or malformed; the message says what was expected."""


@dataclass
class Sample:
    image: np.ndarray  # H x W x 3 uint8 RGB
    label: np.ndarray  # H x W int64, class index or ignore_index
    name: str  # file stem, unique within the dataset
    path: Path  # image file


@dataclass(frozen=True)
class SampleRef:
    """Where one sample lives; ``label_path`` is None when labels come from elsewhere (COCO JSON)."""

    name: str
    image_path: Path
    label_path: Path | None


class SegDataset(Sequence[Sample]):
    """A list of (image, label) files with a class list and a label decoder."""

    def __init__(
        self,
        name: str,
        classes: list[list[str]],
        refs: Sequence[SampleRef],
        load_label: Callable[[SampleRef], np.ndarray],
        ignore_index: int = 255,
        root: Path | None = None,
    ):
        if not refs:
            raise DatasetError(f"{name}: no samples found under {root}")
        if 0 <= ignore_index < len(classes):
            raise DatasetError(f"{name}: ignore_index {ignore_index} collides with a class id (0..{len(classes) - 1})")
        self.name = name
        self.classes = classes
        self.refs = list(refs)
        self.ignore_index = int(ignore_index)
        self.root = root
        self._load_label = load_label

    @property
    def class_names(self) -> list[str]:
        """Display names (first synonym of each class)."""
        return display_names(self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.refs]

    def __len__(self) -> int:
        return len(self.refs)

    def __repr__(self) -> str:
        return f"SegDataset({self.name!r}, {len(self)} samples, {self.num_classes} classes, root={str(self.root)!r})"

    def read_label(self, index: int) -> np.ndarray:
        """The label map of sample ``index`` (int64, checked), without reading the image."""
        ref = self.refs[index]
        label = np.asarray(self._load_label(ref), dtype=np.int64)
        bad = ~(((label >= 0) & (label < self.num_classes)) | (label == self.ignore_index))
        if bad.any():
            values = np.unique(label[bad])[:10].tolist()
            raise DatasetError(
                f"{self.name}: label {ref.label_path or ref.name} holds values {values} outside the "
                f"{self.num_classes} classes (0..{self.num_classes - 1}) and ignore {self.ignore_index}; "
                "check that the dataset name matches the label files"
            )
        return label

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return self.subset(range(len(self))[index])
        ref = self.refs[index]
        image = read_image(ref.image_path, exif=False)
        label = self.read_label(index)
        if label.shape != image.shape[:2]:
            raise DatasetError(
                f"{self.name}: label {ref.label_path or ref.name} is {label.shape[1]}x{label.shape[0]} "
                f"but image {ref.image_path} is {image.shape[1]}x{image.shape[0]} (width x height)"
            )
        return Sample(image=image, label=label, name=ref.name, path=ref.image_path)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def subset(self, indices: Sequence[int]) -> SegDataset:
        """A dataset with only the given samples (e.g. the first N for a quick run)."""
        refs = [self.refs[i] for i in indices]
        return SegDataset(self.name, self.classes, refs, self._load_label, self.ignore_index, self.root)


def reduce_zero_label(raw: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """mmseg's reduce_zero_label: 0 -> ignore, k -> k-1, ignore (255) stays ignore."""
    raw = np.asarray(raw, dtype=np.int64)
    out = raw - 1
    out[(raw == 0) | (raw == ignore_index)] = ignore_index
    return out


_reduce_zero = reduce_zero_label  # for readers whose keyword argument shadows the name


def lut_map(raw: np.ndarray, lut: np.ndarray, path: Path | str) -> np.ndarray:
    """Map raw ids through a lookup table; ids beyond the table or marked -1 are an error."""
    raw = np.asarray(raw, dtype=np.int64)
    if raw.size and (raw.min() < 0 or raw.max() >= len(lut)):
        raise DatasetError(f"label {path} holds id {int(raw.max())} outside the expected 0..{len(lut) - 1}")
    out = lut[raw]
    if (out < 0).any():
        values = np.unique(raw[out < 0])[:10].tolist()
        raise DatasetError(f"label {path} holds unexpected ids {values}")
    return out


# COCO-Stuff 164k: the 182 raw ids of stuffthingmaps (0-based COCO ids, 0 = person) minus the
# 11 ids no annotation uses, renumbered 0..170 in order (mmseg tools/.../coco_stuff164k.py).
COCO_STUFF_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
_COCO_STUFF_LUT = np.full(256, 255, dtype=np.int64)
_COCO_STUFF_LUT[[i for i in range(182) if i not in COCO_STUFF_UNUSED_IDS]] = np.arange(171)

# Cityscapes labelIds (0..33) -> the 19 train ids
# (cityscapesScripts labels.py); every other value (void classes, 255) is ignore (255).
CITYSCAPES_ID_TO_TRAINID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
_CITYSCAPES_LUT = np.full(256, 255, dtype=np.int64)
for _k, _v in CITYSCAPES_ID_TO_TRAINID.items():
    _CITYSCAPES_LUT[_k] = _v

# CamVid (SegNet): 0..10 classes, 11 = void.
_CAMVID_LUT = np.array([*range(11), 255], dtype=np.int64)


__all__ = ["COCO_STUFF_UNUSED_IDS", "CITYSCAPES_ID_TO_TRAINID", "DatasetError", "Sample", "SampleRef", "SegDataset",
           "lut_map", "reduce_zero_label"]
