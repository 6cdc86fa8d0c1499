"""COCO readers: COCO-Stuff 164k label maps and COCO-Object masks painted from instances_*.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import load_class_names
from .coco_masks import paint_semantic
from .image_io import read_label
from .readers import _check_exist, _find_base, _first_existing, _images_in, _layout_error, train_ids_or
from .segdataset import _COCO_STUFF_LUT, DatasetError, SampleRef, SegDataset


def open_coco_stuff(root: str | Path, split: str = "val") -> SegDataset:
    """COCO-Stuff 164k: *_labelTrainIds.png (0..170, 255) or raw stuffthingmaps *.png (182 ids)."""
    dataset = "coco-stuff171"
    root = Path(root)
    img_rel, ann_rel = f"images/{split}2017", f"annotations/{split}2017"
    base = _find_base(root, ["", "coco_stuff164k", "coco-stuff"], [img_rel, ann_rel], dataset)
    refs = []
    for img in _images_in(base / img_rel):
        lab = _first_existing(base / ann_rel, img.stem, ("_labelTrainIds.png", ".png"))
        refs.append(SampleRef(img.stem, img, lab or base / ann_rel / f"{img.stem}_labelTrainIds.png"))
    _check_exist(dataset, root, refs)

    return SegDataset(dataset, load_class_names("coco_stuff171"), refs, train_ids_or(_COCO_STUFF_LUT), 255, base)


@dataclass
class CocoInstances:
    """The parts of an instances_*.json needed for semantic masks."""

    images: dict[str, dict]  # file stem -> image record
    annotations: dict[int, list[dict]]  # image id -> annotations
    category_to_label: dict[int, int]  # COCO category id -> 1..80 (category-id order)
    category_names: list[str]  # names in label order (index 0 = first category)


def load_coco_instances(path: str | Path) -> CocoInstances:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        cats = sorted(data["categories"], key=lambda c: int(c["id"]))
        images = {Path(im["file_name"]).stem: im for im in data["images"]}
        anns: dict[int, list[dict]] = {}
        for a in data["annotations"]:
            anns.setdefault(int(a["image_id"]), []).append(a)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(
            f"cannot read COCO instances file {path}: {e}; expected the official instances_<split>2017.json"
        ) from None
    return CocoInstances(
        images=images,
        annotations=anns,
        category_to_label={int(c["id"]): i + 1 for i, c in enumerate(cats)},
        category_names=[c["name"] for c in cats],
    )


def open_coco_object(
    root: str | Path,
    split: str = "val",
    *,
    annotations: str | Path | None = None,
    crowd: str = "paint",
    order: str = "area",
) -> SegDataset:
    """COCO-Object: 80 COCO classes + background (0).

    Labels come from, in order of preference: the instances JSON given as ``annotations``;
    precomputed ``annotations/<split>2017/*_instanceTrainIds.png`` (GroupViT / SCLIP's files,
    made from COCO-Stuff's stuffthingmaps: objects 1..80, everything else 0); or
    ``annotations/instances_<split>2017.json`` rasterised here.

    Rasterising: category ids map to 1..80 in category-id order, all other pixels are
    background 0 and nothing is ignored (in the GroupViT/SCLIP files unlabelled pixels also
    became background). Larger instances are painted first so smaller ones lying on them stay
    visible (``order="file"``: file order, later wins). Crowd regions are painted as their
    class by default (``crowd="ignore"`` marks them 255, ``"skip"`` leaves them background).
    """
    dataset = "coco-object"
    root = Path(root)
    if not root.exists():
        raise _layout_error(dataset, root, "dataset root does not exist")
    found = [
        (root / b, root / b / d)
        for b in ("", "coco_stuff164k", "coco")
        for d in (f"images/{split}2017", f"{split}2017")
        if (root / b / d).is_dir()
    ]
    if not found:
        raise _layout_error(dataset, root, f"no image folder images/{split}2017 or {split}2017")
    base, img_dir = found[0]
    png_dir = base / "annotations" / f"{split}2017"
    json_path = Path(annotations) if annotations else base / "annotations" / f"instances_{split}2017.json"
    classes = load_class_names("coco_object")

    use_png = annotations is None and png_dir.is_dir() and any(png_dir.glob("*_instanceTrainIds.png"))
    if use_png:
        refs = [SampleRef(p.stem, p, png_dir / f"{p.stem}_instanceTrainIds.png") for p in _images_in(img_dir)]
        _check_exist(dataset, root, refs)
        return SegDataset(dataset, classes, refs, lambda r: read_label(r.label_path).astype(np.int64), 255, base)

    if not json_path.is_file():
        raise _layout_error(dataset, root, f"neither {png_dir}/*_instanceTrainIds.png nor {json_path} found")
    coco = load_coco_instances(json_path)
    if len(coco.category_to_label) != 80:
        raise DatasetError(f"{json_path} has {len(coco.category_to_label)} categories; COCO-Object expects the 80 "
                           "COCO categories")
    refs = [
        SampleRef(stem, img_dir / coco.images[stem]["file_name"], None) for stem in sorted(coco.images)
    ]
    _check_exist(dataset, root, refs)

    def load(ref: SampleRef) -> np.ndarray:
        im = coco.images[ref.name]
        anns = coco.annotations.get(int(im["id"]), [])
        try:
            return paint_semantic(
                anns, int(im["height"]), int(im["width"]), coco.category_to_label, crowd=crowd, order=order
            )
        except (ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{dataset}: bad annotation for image {im['file_name']} in {json_path}: {e}") from None

    return SegDataset(dataset, classes, refs, load, 255, base)

