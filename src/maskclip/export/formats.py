"""Label maps -> the files annotation tools import: COCO (RLE per class), COCO panoptic, Label Studio, CVAT.

Pure functions from `Labelled` items (a label map, its class names and where the image is) to JSON-ready
objects and arrays; writing them is `maskclip.export.writer`'s job. A label id outside the class list
(e.g. "unknown" left out by the caller, or 255) is unlabelled in every format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..regions.masks import components
from .rle import coco_rle, label_studio_rle

FORMATS = ("coco", "coco-panoptic", "labelstudio", "cvat", "masks")


@dataclass(frozen=True)
class Labelled:
    """One labelled image: `labels` HxW class ids into `classes`; `name` is the output name (OUT/labels/NAME);
    `probs` (optional) KxHxW probabilities, or `scores` (per class), for per-class scores."""

    name: str
    image: str
    labels: np.ndarray
    classes: tuple[str, ...]
    probs: np.ndarray | None = None
    scores: dict[str, float] | None = None  # per class present: mean probability over its pixels (sidecar)


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def class_masks(item: Labelled) -> list[tuple[int, np.ndarray]]:
    """(class id, binary mask) of every class present, in class order."""
    present = np.unique(item.labels)
    return [(int(k), item.labels == k) for k in present if 0 <= k < len(item.classes)]


def _score(item: Labelled, k: int, mask: np.ndarray) -> float | None:
    if item.probs is not None:
        return float(np.asarray(item.probs[k], dtype=np.float32)[mask].mean())
    if item.scores is not None and item.classes[k] in item.scores:
        return float(item.scores[item.classes[k]])
    return None


def categories(classes: Sequence[str], things: Sequence[str] = ()) -> list[dict]:
    """COCO categories, id = class index + 1 (0 stays "nothing"); `isthing` for the classes in `things`."""
    from ..render import label_palette

    colors = label_palette(list(classes))
    return [{"id": i + 1, "name": c, "supercategory": "", "isthing": int(c in set(things)),
             "color": [int(v) for v in colors[i]]} for i, c in enumerate(classes)]


def coco_semantic(items: Sequence[Labelled], classes: Sequence[str]) -> dict:
    """A COCO dataset: images, categories and one RLE annotation per class per image (pycocotools loads it)."""
    images, anns = [], []
    for image_id, item in enumerate(items, 1):
        h, w = item.labels.shape
        images.append({"id": image_id, "file_name": item.image, "width": int(w), "height": int(h),
                       "maskclip_name": item.name})
        for k, mask in class_masks(item):
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": k + 1, "segmentation": coco_rle(mask),
                   "area": int(mask.sum()), "bbox": _bbox(mask), "iscrowd": 0}
            score = _score(item, k, mask)
            if score is not None:
                ann["score"] = score
            anns.append(ann)
    return {"info": {"description": "maskclip pseudo labels"}, "images": images,
            "categories": categories(classes), "annotations": anns}


def panoptic_id_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids -> the COCO panoptic PNG's RGB (id = R + 256 G + 256^2 B)."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def coco_panoptic(items: Sequence[Labelled], classes: Sequence[str],
                  things: Sequence[str] = ()) -> tuple[dict, dict[str, np.ndarray]]:
    """COCO panoptic JSON and one id PNG (RGB array) per image: a stuff class is one segment per image, a
    thing class one segment per 4-connected region."""
    thing_ids = {i for i, c in enumerate(classes) if c in set(things)}
    images, anns, pngs = [], [], {}
    for image_id, item in enumerate(items, 1):
        h, w = item.labels.shape
        seg = np.zeros((h, w), np.int64)
        infos = []
        for k, mask in class_masks(item):
            parts = [mask]
            if k in thing_ids:
                comp = components(np.where(mask, 1, 0))
                parts = [comp == c for c in np.unique(comp[mask])]
            for part in parts:
                sid = len(infos) + 1
                seg[part] = sid
                infos.append({"id": sid, "category_id": k + 1, "area": int(part.sum()), "bbox": _bbox(part),
                              "iscrowd": 0})
        png = f"{item.name}.png"
        images.append({"id": image_id, "file_name": item.image, "width": int(w), "height": int(h)})
        anns.append({"image_id": image_id, "file_name": png, "segments_info": infos})
        pngs[png] = panoptic_id_rgb(seg)
    return {"images": images, "annotations": anns, "categories": categories(classes, things)}, pngs


def label_studio_tasks(items: Sequence[Labelled], model_version: str, from_name: str = "tag",
                       to_name: str = "image", image_url: str = "/data/local-files/?d={path}") -> list[dict]:
    """Label Studio tasks with `brushlabels` pre-annotations (one result per class, its own RLE)."""
    tasks = []
    for item in items:
        h, w = item.labels.shape
        results, scores = [], []
        for k, mask in class_masks(item):
            res = {"id": f"{item.name}-{k}", "from_name": from_name, "to_name": to_name, "type": "brushlabels",
                   "original_width": int(w), "original_height": int(h), "image_rotation": 0,
                   "value": {"format": "rle", "rle": label_studio_rle(mask), "brushlabels": [item.classes[k]]}}
            score = _score(item, k, mask)
            if score is not None:
                res["score"] = score
                scores.append(score)
            results.append(res)
        pred = {"model_version": model_version, "result": results}
        if scores:
            pred["score"] = float(np.mean(scores))
        tasks.append({"data": {"image": image_url.format(path=item.image.lstrip("/"))}, "predictions": [pred],
                      "meta": {"maskclip_name": item.name}})
    return tasks


def labelmap_txt(classes: Sequence[str], palette: np.ndarray) -> str:
    """CVAT / Pascal VOC labelmap: `name:r,g,b::` per class, background black first."""
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    lines += [f"{c}:{','.join(str(int(v)) for v in palette[i])}::" for i, c in enumerate(classes)]
    return "\n".join(lines) + "\n"


def cvat_masks(item: Labelled, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(SegmentationClass RGB, SegmentationObject RGB) of one image: class colours; one colour per region."""
    h, w = item.labels.shape
    cls = np.zeros((h, w, 3), np.uint8)
    obj = np.zeros((h, w, 3), np.uint8)
    n = 0
    for k, mask in class_masks(item):
        cls[mask] = palette[k]
        comp = components(np.where(mask, 1, 0))
        for c in np.unique(comp[mask]):
            n += 1
            obj[comp == c] = panoptic_id_rgb(np.array([n * 7919 % (1 << 24) or 1]))[0]
    return cls, obj


__all__ = ["FORMATS", "Labelled", "categories", "class_masks", "coco_panoptic", "coco_semantic", "cvat_masks",
           "label_studio_tasks", "labelmap_txt", "panoptic_id_rgb"]
