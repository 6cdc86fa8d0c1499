"""Label image files with MaskCLIP and write the results: the batch job behind `segment` and `label`.

For each image: `<stem>.png` (label ids; a palette PNG up to 256 classes, 16-bit beyond),
`<stem>_overlay.png` (colour overlay with a legend), optional `<stem>_heat/<class>.png`, and last
`<stem>.json` (classes, palette, settings, model hash). The JSON is written last, atomically, so its
presence means the image is done: a resumed run skips exactly those images with the same settings.
A bad image is reported and skipped; the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from .data.image_io import ImageReadError, read_image, write_png_atomic
from .dense.predictor import MaskCLIPPredictor, Prediction
from .render import heatmap, overlay_with_legend, palette


@dataclass
class Vocabulary:
    classes: list[list[str]]
    background: list[str] | None = None
    threshold: float | None = None


@dataclass
class BatchReport:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        s = f"{len(self.written)} written, {len(self.skipped)} already done, {len(self.failed)} failed"
        for path, err in self.failed:
            s += f"\n  FAILED {path}: {err}"
        return s


def write_json_atomic(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def output_stems(files: Sequence[Path]) -> list[str]:
    """A unique output name per input: the file stem, with a counter where stems repeat."""
    seen: dict[str, int] = {}
    out = []
    for f in files:
        stem = f.stem
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        out.append(stem if n == 0 else f"{stem}_{n + 1}")
    return out


def settings_key(meta: dict) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"


def write_outputs(out_dir: Path, stem: str, image: np.ndarray, pred: Prediction, meta: dict,
                  heatmaps: bool = False) -> dict:
    colors = palette(len(pred.classes))
    labels = pred.labels.astype(np.int64)
    write_png_atomic(out_dir / f"{stem}.png", labels, palette=colors if len(colors) <= 256 else None)
    write_png_atomic(out_dir / f"{stem}_overlay.png",
                     overlay_with_legend(image, labels, pred.classes, colors, ignore_index=None))
    if heatmaps and pred.probs is not None:
        for i, name in enumerate(pred.classes[: pred.probs.shape[0]]):
            write_png_atomic(out_dir / f"{stem}_heat" / f"{i:03d}_{_safe(name)}.png", heatmap(image, pred.probs[i]))
    counts = np.bincount(labels.ravel(), minlength=len(pred.classes))
    record = {
        **meta,
        "image_size": [int(labels.shape[0]), int(labels.shape[1])],
        "classes": pred.classes,
        "palette": colors.tolist(),
        "pixel_fraction": {c: round(float(n) / labels.size, 6) for c, n in zip(pred.classes, counts) if n},
        "label_png": f"{stem}.png",
    }
    write_json_atomic(out_dir / f"{stem}.json", record)
    return record


def label_files(predictor: MaskCLIPPredictor, files: Sequence[Path], out_dir: Path, vocab: Vocabulary, meta: dict,
                heatmaps: bool = False, resume: bool = True, progress: bool = True,
                stems: Sequence[str] | None = None) -> BatchReport:
    """Segment `files` into `out_dir`. `meta` (model, settings) goes into every JSON and keys resumption."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = list(stems) if stems is not None else output_stems(files)
    key = settings_key({**meta, "classes": vocab.classes, "background": vocab.background,
                        "threshold": vocab.threshold})
    report = BatchReport()
    bar = tqdm(list(zip(files, stems)), desc="segment", unit="img", disable=not progress)
    for path, stem in bar:
        done = out_dir / f"{stem}.json"
        if resume and done.exists():
            try:
                if json.loads(done.read_text()).get("settings_key") == key:
                    report.skipped.append(str(path))
                    continue
            except (OSError, ValueError):
                pass  # unreadable sidecar: redo the image
        try:
            image = read_image(path)
            t0 = time.perf_counter()
            predictor.set_image(image)
            pred = predictor.predict(vocab.classes, background=vocab.background, threshold=vocab.threshold,
                                     return_probs=heatmaps)
            seconds = time.perf_counter() - t0
            write_outputs(out_dir, stem, image, pred,
                          {**meta, "image": str(path), "settings_key": key, "seconds": round(seconds, 4)},
                          heatmaps)
            report.written.append(str(path))
        except (ImageReadError, OSError, ValueError) as err:
            report.failed.append((str(path), str(err)))
            bar.write(f"skipped {path}: {err}")
    return report
