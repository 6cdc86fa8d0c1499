"""A finished `segment` / `label` run (OUT/labels/NAME.png + NAME.json) -> OUT/export/ in the chosen formats.

    coco           OUT/export/coco.json                 images, categories, one RLE per class per image
    coco-panoptic  OUT/export/panoptic.json + panoptic/NAME.png (id = R + 256 G + 256^2 B)
    labelstudio    OUT/export/labelstudio.json          tasks with brushlabels predictions
    cvat           OUT/export/cvat.zip                  Segmentation Mask 1.1 (labelmap.txt, class/object PNGs)
    masks          OUT/export/masks/NAME/KKK_CLASS.png  one binary mask (0/255) per class present

Every file is written under a temporary name and renamed; the label maps are only read.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import SettingsError
from ..io.atomic import atomic_write, write_json
from .formats import (
    FORMATS,
    Labelled,
    class_masks,
    coco_panoptic,
    coco_semantic,
    cvat_masks,
    label_studio_tasks,
    labelmap_txt,
)


def parse_formats(text: str) -> tuple[str, ...]:
    """"coco,cvat" -> ("coco", "cvat"); an unknown name is a SettingsError naming the choices."""
    names = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise SettingsError(f"--export/--format: {', '.join(bad) or repr(text)} is not a format; choose from "
                            f"{', '.join(FORMATS)}")
    return names


def read_run(run_dir: Path) -> tuple[list[Labelled], tuple[str, ...], np.ndarray, str]:
    """The run's labelled images, its classes, their palette and the model that labelled them."""
    labels = run_dir / "labels"
    sidecars = sorted(p for p in labels.rglob("*.json")) if labels.is_dir() else []
    if not sidecars:
        raise SettingsError(f"{run_dir}: no OUT/labels/NAME.json sidecars; give the --out folder of a finished "
                            "`maskclip segment` or `maskclip label` run")
    items, classes, palette, model = [], None, None, ""
    for side in sidecars:
        meta = json.loads(side.read_text())
        if "classes" not in meta or "label_png" not in meta:
            continue  # not a label sidecar (e.g. an index file)
        cls = tuple(meta["classes"])
        if classes is None:
            classes, palette, model = cls, np.asarray(meta["palette"], np.uint8), str(meta.get("model", ""))
        elif cls != classes:
            raise SettingsError(f"{side}: another class list than the run's first image ({len(cls)} vs "
                                f"{len(classes)} classes); export runs labelled with one vocabulary")
        name = str(side.relative_to(labels).with_suffix(""))
        lab = np.asarray(Image.open(run_dir / meta["label_png"]))
        probs_path = run_dir / "probs" / f"{name}.npy"
        probs = np.load(probs_path, allow_pickle=False) if probs_path.is_file() else None
        if probs is not None and probs.shape[1:] != lab.shape:
            probs = None  # a reduced decode: probabilities at the decoded size, no per-class scores
        items.append(Labelled(name, str(meta.get("image", name)), lab, cls, probs, meta.get("class_scores")))
    if classes is None:
        raise SettingsError(f"{run_dir}: no label sidecar with classes and label_png found")
    return items, classes, palette, model


def safe_name(name: str) -> str:
    """A class name as a file-name part (letters, digits, - and _ kept)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60] or "class"


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def cvat_zip(items: Sequence[Labelled], classes: Sequence[str], palette: np.ndarray) -> bytes:
    """CVAT's Segmentation Mask 1.1 archive (Pascal VOC layout), in memory."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("labelmap.txt", labelmap_txt(classes, palette))
        z.writestr("ImageSets/Segmentation/default.txt", "\n".join(i.name for i in items) + "\n")
        for item in items:
            cls, obj = cvat_masks(item, palette)
            z.writestr(f"SegmentationClass/{item.name}.png", _png_bytes(cls))
            z.writestr(f"SegmentationObject/{item.name}.png", _png_bytes(obj))
    return buf.getvalue()


def write_cvat(path: Path, items: Sequence[Labelled], classes: Sequence[str], palette: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        f.write(cvat_zip(items, classes, palette))


def export_run(run_dir: str | Path, formats: Sequence[str], out_dir: str | Path | None = None,
               things: Sequence[str] = ()) -> dict[str, Path]:
    """Write the run's labels in every format; returns {format: main file}."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "export"
    items, classes, palette, model = read_run(run_dir)
    unknown = [t for t in things if t not in classes]
    if unknown:
        raise SettingsError(f"--things: {', '.join(unknown)} not among the run's classes ({', '.join(classes)})")
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in formats:
        if fmt == "coco":
            written[fmt] = write_json(out / "coco.json", coco_semantic(items, classes), indent=None)
        elif fmt == "coco-panoptic":
            doc, pngs = coco_panoptic(items, classes, things)
            for png, rgb in pngs.items():
                target = out / "panoptic" / png
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(target, "wb") as f:
                    f.write(_png_bytes(rgb))
            written[fmt] = write_json(out / "panoptic.json", doc, indent=None)
        elif fmt == "labelstudio":
            written[fmt] = write_json(out / "labelstudio.json", label_studio_tasks(items, f"maskclip:{model}"),
                                      indent=None)
        elif fmt == "cvat":
            written[fmt] = out / "cvat.zip"
            write_cvat(written[fmt], items, classes, palette)
        elif fmt == "masks":
            written[fmt] = out / "masks"
            for item in items:
                for k, mask in class_masks(item):
                    target = out / "masks" / item.name / f"{k:03d}_{safe_name(classes[k])}.png"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_write(target, "wb") as f:
                        f.write(_png_bytes(np.where(mask, 255, 0).astype(np.uint8)))
    return written


__all__ = ["cvat_zip", "export_run", "parse_formats", "read_run", "safe_name", "write_cvat"]
