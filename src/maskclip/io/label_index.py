"""The one on-disk pseudo-label format: `maskclip label`'s label PNGs and the index that lists them.

    OUT/index.json (or index.shard<i>of<n>.json)  {"format", "classes", "shard", "total_images",
                                                   "entries": [{"image", "label", "json"}, ...], model, settings}
    OUT/labels/<name>.png                          label ids: index i = classes[i]

The writer (`write_label_index`, used by `maskclip label`) and the reader (`read_label_index`, used by
MaskCLIP+ training) live side by side so that they cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import SettingsError
from .atomic import write_json

INDEX_FORMAT = "maskclip-labels/2"


def index_path(root: Path, shard: tuple[int, int] = (0, 1)) -> Path:
    i, n = shard
    return root / ("index.json" if n == 1 else f"index.shard{i}of{n}.json")


def write_label_index(root: Path, entries: list[dict], classes: list[str], shard: tuple[int, int] = (0, 1),
                      total: int | None = None, meta: dict | None = None) -> Path:
    """The index of one shard: entries {"image", "label", "json"} (paths of the label files relative to root)."""
    path = index_path(root, shard)
    write_json(path, {"format": INDEX_FORMAT, "classes": list(classes), "shard": list(shard),
                      "total_images": total if total is not None else len(entries), "entries": entries,
                      **(meta or {})})
    return path


def _read_shards(root: Path, option: str) -> tuple[list[str], list[dict]]:
    files = sorted(root.glob("index*.json"))
    if not files:
        raise SettingsError(f"{option} {root}: no index.json (run `maskclip label IMAGES --classes ... --out {root}` "
                            "first)")
    classes: list[str] | None = None
    entries: list[dict] = []
    for f in files:
        try:
            idx = json.loads(f.read_text())
            part, cls = list(idx["entries"]), [str(c) for c in idx["classes"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SettingsError(f"{option}: {f} is not an index written by `maskclip label` ({err})") from None
        if classes is not None and cls != classes:
            raise SettingsError(f"{option} {root}: its shards were labelled with different class lists")
        classes = cls
        entries += part
    return classes or [], entries


def _class_lut(classes: list[str], class_names: Sequence[str], ignore_index: int, where: str) -> np.ndarray:
    """Label id in the index -> training class id (by name; 'background', 'unknown' and others -> ignore)."""
    lower = {n.lower(): i for i, n in enumerate(class_names)}
    lut = np.full(max(len(classes), 1) + 1, ignore_index, dtype=np.int64)  # the extra slot catches larger ids
    known = 0
    for j, name in enumerate(classes):
        if name.lower() in lower:
            lut[j] = lower[name.lower()]
            known += 1
    if not known:
        raise SettingsError(f"{where}: its classes {classes[:5]}... share no name with --classes")
    return lut


def read_label_index(root: Path, images: Sequence[Path], class_names: Sequence[str], ignore_index: int,
                     option: str = "--pseudo-dir") -> tuple[list[Path], np.ndarray]:
    """The label PNG of every image in `images` (matched by path, else by a file stem that is unique in the
    index) and the map from their ids to the training classes.

    Labelling only a subset of the classes is allowed: for zero-shot, `maskclip label --classes <unseen>`
    gives the argmax restricted to the unseen classes, as the on-the-fly teacher does.
    """
    classes, entries = _read_shards(root, option)
    by_path: dict[str, Path] = {}
    by_stem: dict[str, list[Path]] = {}
    for e in entries:
        png = root / e["label"]
        by_path[str(Path(e["image"]).resolve())] = png
        by_stem.setdefault(Path(e["image"]).stem, []).append(png)
    out, missing = [], []
    for img in images:
        stem_hits = by_stem.get(img.stem, [])
        hit = by_path.get(str(img.resolve())) or (stem_hits[0] if len(stem_hits) == 1 else None)
        if hit is None or not hit.is_file():
            missing.append(img.name)
        out.append(hit)
    if missing:
        raise SettingsError(f"{option} {root}: no pseudo labels for {len(missing)} of {len(images)} images (first: "
                            f"{', '.join(missing[:3])}); label them with `maskclip label` (it resumes)")
    return out, _class_lut(classes, class_names, ignore_index, f"{option} {root}")


__all__ = ["INDEX_FORMAT", "index_path", "read_label_index", "write_label_index"]
