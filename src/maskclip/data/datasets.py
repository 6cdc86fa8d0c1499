"""The benchmark registry: every dataset by name, with its reader and expected layout.

``open_dataset(name, root, split)`` returns a SegDataset: a sequence of Samples (RGB image,
int64 label map, name, image path) plus the benchmark's official class list. Label maps use
``ignore_index`` for unlabelled pixels; every other value is a class index into ``classes``.

Conventions follow MMSegmentation (what MaskCLIP's evaluation used) unless noted:
- "reduce_zero_label" (voc20, context59, ade150): raw 0 becomes ignore, other ids shift by -1,
  raw 255 stays ignore. context459 and ade847 (more classes than a byte) use 65535 as ignore.
- Images are read without applying EXIF orientation: annotations index the pixel grid as
  stored (mmseg, pycocotools and the dataset tools all work on stored pixels).
- Each reader checks at open time that every image and label file exists; a sample whose
  label does not match its image size, or holds ids outside the class list, raises a
  DatasetError naming the file when it is read.

See ``DATASETS`` (name -> DatasetInfo, aliases included) for the accepted names and the
expected layout of each; ``describe_datasets()`` prints them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .coco_readers import CocoInstances, load_coco_instances, open_coco_object, open_coco_stuff  # noqa: F401
from .readers import (  # noqa: F401
    ADE847_IGNORE,
    CONTEXT459_IGNORE,
    LAYOUTS,
    open_ade20k,
    open_ade847,
    open_camvid,
    open_cityscapes,
    open_context,
    open_context459,
    open_folder,
    open_voc,
)
from .segdataset import (  # noqa: F401
    CITYSCAPES_ID_TO_TRAINID,
    COCO_STUFF_UNUSED_IDS,
    DatasetError,
    Sample,
    SampleRef,
    SegDataset,
    lut_map,
    reduce_zero_label,
)

# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # canonical name
    opener: Callable[..., SegDataset]
    layout: str  # expected files, shown in errors and --help


_INFOS = [
    (DatasetInfo("voc21", lambda r, s="val", **k: open_voc(r, s, background=True, **k), LAYOUTS["voc21"]),
     ("voc", "pascal-voc", "voc2012")),
    (DatasetInfo("voc20", lambda r, s="val", **k: open_voc(r, s, background=False, **k), LAYOUTS["voc21"]), ()),
    (DatasetInfo("context60", lambda r, s="val", **k: open_context(r, s, background=True, **k), LAYOUTS["context59"]),
     ("pc60", "pascal-context60")),
    (DatasetInfo("context59", lambda r, s="val", **k: open_context(r, s, background=False, **k), LAYOUTS["context59"]),
     ("pc59", "pascal-context", "pascal-context59")),
    (DatasetInfo("context459", open_context459, LAYOUTS["context459"]), ("pc459", "pascal-context459")),
    (DatasetInfo("coco-stuff171", open_coco_stuff, LAYOUTS["coco-stuff171"]),
     ("coco-stuff", "cocostuff", "coco-stuff164k")),
    (DatasetInfo("coco-object", open_coco_object, LAYOUTS["coco-object"]), ("coco-object81", "cocoobject")),
    (DatasetInfo("ade150", open_ade20k, LAYOUTS["ade150"]), ("ade20k", "ade")),
    (DatasetInfo("ade847", open_ade847, LAYOUTS["ade847"]), ("ade-full", "a847", "ade20k-full")),
    (DatasetInfo("cityscapes", open_cityscapes, LAYOUTS["cityscapes"]), ("cityscapes19",)),
    (DatasetInfo("camvid", open_camvid, LAYOUTS["camvid"]), ("camvid11",)),
    (DatasetInfo("folder", open_folder, LAYOUTS["folder"]), ("generic",)),
]

DATASETS: dict[str, DatasetInfo] = {}
for _info, _aliases in _INFOS:
    for _n in (_info.name, *_aliases):
        DATASETS[_n] = _info


def canonical_dataset_name(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[key].name


def open_dataset(name: str, root: str | Path, split: str = "val", **kwargs) -> SegDataset:
    """Open benchmark ``name`` (see DATASETS) stored under ``root``.

    Extra keyword arguments go to the reader: voc*: aug; context459: label_dir, image_dir;
    coco-object: annotations, crowd, order; cityscapes: label_type; folder: classes, images,
    labels, ignore_index, reduce_zero_label, label_suffix.
    """
    info = DATASETS[canonical_dataset_name(name)]
    return info.opener(Path(root), split, **kwargs)


def describe_datasets() -> str:
    """Accepted names, aliases and expected layouts, for --help texts."""
    lines = []
    for info, aliases in _INFOS:
        alias = f" (aliases: {', '.join(aliases)})" if aliases else ""
        lines.append(f"{info.name}{alias}\n{info.layout}")
    return "\n".join(lines)
