"""Label image files and write the results: the batch job behind `segment` and `label`.

For each input (names and folders: `maskclip.io.layout`): the label ids (a palette PNG up to 256
classes, 16-bit beyond), an overlay with a legend, optional heat maps, and last a JSON sidecar
(classes, palette, settings, model hash, and the source file's path, size and modification time).
The sidecar is written last, atomically, so its presence means the image is done: a resumed run skips
exactly the images whose sidecar has the same settings and the same source file and whose label map
decodes; a changed or replaced input is recomputed. A bad image is reported and skipped; the run
goes on and the failures are listed at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from .data.image_io import DEFAULT_MAX_PIXELS, image_size, read_image, write_png_atomic
from .dense.config import MaskCLIPConfig
from .dense.engine import PreparedImage, prepare_image, scale_sizes
from .dense.predictor import Prediction
from .io.atomic import write_bytes, write_json
from .io.layout import OutputLayout, output_names
from .pipeline import BackgroundWriter, Failed, PipelineOptions, batches, prefetched
from .render import label_counts, label_palette, labelled_heatmap, overlay_with_legend
from .tiling import resized_size
from .vocab import Vocabulary

REDUCED_DECODE_PIXELS = 16_000_000  # ordinary photos are decoded in full, as the authors' pipeline does


@dataclass
class BatchReport:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    done_names: list[str] = field(default_factory=list)  # output names of written + skipped inputs

    def summary(self) -> str:
        s = f"{len(self.written)} written, {len(self.skipped)} already done, {len(self.failed)} failed"
        for path, err in self.failed:
            s += f"\n  FAILED {path}: {err}"
        return s


def settings_key(meta: dict) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_id(path: Path) -> dict:
    """What identifies an input file's contents cheaply: absolute path, size and modification time."""
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"


def decodes(path: Path) -> bool:
    """True when `path` is a complete PNG (checked without decoding the pixels)."""
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except (OSError, ValueError, SyntaxError):
        return False


def is_finished(layout: OutputLayout, name: str, source: dict, key: str, heatmaps: int = 0,
                probs: bool = False, scores: bool = False) -> bool:
    """An earlier run finished this input with these settings, from this very file."""
    try:
        rec = json.loads(layout.sidecar(name).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(rec, dict) or rec.get("settings_key") != key or rec.get("source") != source:
        return False
    if heatmaps and len(list(layout.heatmaps(name).glob("*.png"))) < heatmaps:
        return False  # asked for heat maps this time
    if probs and not layout.probs(name).is_file():
        return False  # asked for the probabilities this time
    if scores and "class_scores" not in rec:
        return False  # asked for per-class scores (an export) this time
    return layout.overlay(name).is_file() and decodes(layout.label(name))


def _as_numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def class_scores(pred: Prediction) -> dict[str, float]:
    """Each class present: its mean probability over the pixels labelled with it (the exports' scores)."""
    probs, labels = _as_numpy(pred.probs), np.asarray(pred.labels, dtype=np.int64)
    k = len(probs)
    scored = labels < k  # labels past the probabilities (e.g. "unknown") have no score
    own = np.take_along_axis(probs, np.where(scored, labels, 0)[None], 0)[0]  # each pixel's own class probability
    counts = np.bincount(labels[scored], minlength=k)
    sums = np.bincount(labels[scored], weights=own[scored].astype(np.float64), minlength=k)
    return {c: round(float(sums[i] / counts[i]), 6) for i, c in enumerate(pred.classes[:k]) if counts[i]}


def save_probs(path: Path, probs: np.ndarray) -> None:
    """KxHxW probabilities as a float16 .npy (np.load(path) reads it; no pickle), written atomically."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(probs, dtype=np.float16), allow_pickle=False)
    write_bytes(path, buf.getvalue())


def write_outputs(layout: OutputLayout, name: str, image: np.ndarray, pred: Prediction, meta: dict,
                  heatmaps: bool = False, labels: np.ndarray | None = None, probs: bool = False,
                  scores: bool = False) -> dict:
    """Label PNG, overlay, heat maps, probabilities, then the sidecar (last: it marks the image done). `pred`
    is at the size of `image` (the pictures); `labels`, if given, the label map at the file's full size."""
    colors = label_palette(pred.classes)
    labels = pred.labels if labels is None else labels
    write_png_atomic(layout.label(name), labels, palette=colors if len(colors) <= 256 else None)
    write_png_atomic(layout.overlay(name), overlay_with_legend(image, pred.labels, pred.classes, colors,
                                                               ignore_index=None))
    if heatmaps and pred.probs is not None:
        for i, cls in enumerate(pred.classes[: pred.probs.shape[0]]):
            write_png_atomic(layout.heatmaps(name) / f"{i:03d}_{_safe(cls)}.png",
                             labelled_heatmap(image, _as_numpy(pred.probs[i]), cls))
    if probs and pred.probs is not None:
        save_probs(layout.probs(name), _as_numpy(pred.probs))
    counts = label_counts(labels, len(pred.classes))
    record = {
        **meta,
        "image_size": [int(labels.shape[0]), int(labels.shape[1])],
        "classes": pred.classes,
        "palette": colors.tolist(),
        "pixel_fraction": {c: round(float(n) / labels.size, 6) for c, n in zip(pred.classes, counts) if n},
        **({"class_scores": class_scores(pred)} if scores and pred.probs is not None else {}),
        "label_png": layout.relative(layout.label(name)),
        "overlay_png": layout.relative(layout.overlay(name)),
        **({"regions": pred.regions} if pred.regions is not None else {}),
    }
    write_json(layout.sidecar(name), record)
    return record


def run_key(meta: dict, vocab: Vocabulary) -> str:
    """The settings a finished output must share to be reused (not the source: checked per image)."""
    return settings_key({**meta, **vocab.to_json()})


@dataclass(frozen=True)
class LabelOptions:
    heatmaps: bool = False
    resume: bool = True
    progress: bool = True
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS
    reduced_decode_pixels: int = REDUCED_DECODE_PIXELS  # larger JPEGs are decoded at reduced size
    max_masks: int = 1000  # region classification: masks per image at most (`regions.mask_io.read_masks`)
    save_probs: bool = False  # OUT/probs/NAME.npy, float16 K x H x W (at the decoded image's size)
    class_scores: bool = False  # the sidecar's "class_scores": each class's mean probability over its pixels


def working_size(config: Any, size: tuple[int, int]) -> tuple[int, int] | None:
    """The largest size a MaskCLIP config resizes an image of `size` to (None: the image is kept as it is, or
    the predictor resizes otherwise)."""
    if not isinstance(config, MaskCLIPConfig) or config.resize == "none":
        return None
    return max((resized_size(*size, config.resize, s) for s in scale_sizes(config)), key=lambda t: t[0] * t[1])


def read_input(path: Path, config: Any, opts: LabelOptions) -> tuple[np.ndarray, tuple[int, int]]:
    """The image and its full size. A JPEG of more than `reduced_decode_pixels` is decoded at the smallest DCT
    scale still at least the predictor's working size (`config`; up to 64x less memory; its labels are brought
    back to the full size); ordinary photos are decoded in full, as the authors' pipeline does."""
    size = image_size(path)
    big = size[0] * size[1] > opts.reduced_decode_pixels
    work = working_size(config, size) if big else None
    return read_image(path, max_pixels=opts.max_image_pixels, reduce_to=work), size


def full_size(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Labels of a reduced decode brought back to the file's size (nearest: each full-size pixel takes the
    label of the reduced pixel it falls in)."""
    h, w = labels.shape
    if (h, w) == tuple(size):
        return labels
    return labels[(np.arange(size[0]) * h // size[0])][:, (np.arange(size[1]) * w // size[1])]


@dataclass(frozen=True)
class Job:
    """One input to label: its file, output name, source identity and mask file (region predictors)."""

    path: Path
    name: str
    source: dict
    mask_path: Path | None = None


@dataclass(frozen=True)
class Loaded:
    """A job's decoded inputs: the image, the file's full size, its masks, the encoder's input (or None)."""

    image: np.ndarray
    size: tuple[int, int]
    masks: Any = None
    prepared: PreparedImage | None = None


@dataclass(frozen=True)
class InputReader:
    """Reads a job's inputs; picklable, so that DataLoader workers run it while the model works."""

    config: Any  # the predictor's settings: its working size bounds a reduced decode
    opts: LabelOptions
    prepare: bool = False  # also make the encoder's input (predictors with `predict_batch`)

    def __call__(self, job: Job) -> Loaded:
        image, size = read_input(job.path, self.config, self.opts)
        masks = None
        if job.mask_path is not None:
            from .regions.mask_io import read_masks

            masks = read_masks(job.mask_path, image.shape[:2], job.path.name, self.opts.max_masks)
        return Loaded(image, size, masks, prepare_image(image, self.config) if self.prepare else None)


def predict_loaded(predictor, loaded: Sequence[Loaded], vocab: Vocabulary, return_probs: bool
                   ) -> list[tuple[Prediction | None, str | None, float]]:
    """(prediction, error, seconds) of each input: one batch through `predict_batch` where the predictor has
    it, else (or if the batch raises a ValueError) one at a time, each failure its own."""
    t0 = time.perf_counter()
    if loaded and all(x.prepared is not None for x in loaded):
        try:
            preds = predictor.predict_batch([x.prepared for x in loaded], vocab, return_probs=return_probs)
            return [(p, None, (time.perf_counter() - t0) / len(loaded)) for p in preds]
        except ValueError:
            pass  # find the input that fails, alone
    out = []
    for x in loaded:
        t0 = time.perf_counter()
        try:
            if x.masks is not None:
                predictor.set_image(x.image, masks=x.masks)
            else:
                predictor.set_image(x.image)
            out.append((predictor.predict(vocab, return_probs=return_probs), None, time.perf_counter() - t0))
        except ValueError as err:
            out.append((None, str(err), 0.0))
    return out


def pending_jobs(files: Sequence[Path], names: Sequence[str], layout: OutputLayout, key: str, opts: LabelOptions,
                 masks_for: Callable[[Path, str], Path] | None, n_heat: int, report: BatchReport) -> list[Job]:
    """The inputs still to label; those an earlier run finished (`is_finished`) go to report.skipped."""
    jobs = []
    for path, name in zip(files, names):
        try:
            mask_path = masks_for(path, name) if masks_for is not None else None
            source = source_id(path) | ({"masks": source_id(mask_path)} if mask_path is not None else {})
        except (OSError, ValueError) as err:
            report.failed.append((str(path), str(err)))
            continue
        if opts.resume and is_finished(layout, name, source, key, n_heat, opts.save_probs, opts.class_scores):
            report.skipped.append(str(path))
            report.done_names.append(name)
        else:
            jobs.append(Job(path, name, source, mask_path))
    return jobs


def label_files(predictor, files: Sequence[Path], layout: OutputLayout, vocab: Vocabulary, meta: dict,
                opts: LabelOptions = LabelOptions(), names: Sequence[str] | None = None,
                masks_for: Callable[[Path, str], Path] | None = None,
                pipeline: PipelineOptions = PipelineOptions()) -> BatchReport:
    """Segment `files` into `layout`. `meta` (model, settings) goes into every sidecar and keys resumption.

    `names`: output names (default `output_names(files)`; pass the whole collection's names when
    labelling a shard of it, so that every shard agrees). `masks_for(image, name)`: the mask file of each
    image for a region predictor (`maskclip.regions`): read at the image's size, part of the source identity.
    `pipeline`: decoding workers, batch budget and background writes (`maskclip.pipeline`); the files written
    do not depend on it.
    """
    names = list(names) if names is not None else output_names(files)
    key = run_key(meta, vocab)
    pipeline = pipeline.resolve(predictor.device)
    report = BatchReport()
    n_heat = len(vocab.names) if opts.heatmaps else 0  # one heat map per scored class
    jobs = pending_jobs(files, names, layout, key, opts, masks_for, n_heat, report)
    bar = tqdm(total=len(files), initial=len(files) - len(jobs), desc="segment", unit="img",
               disable=not opts.progress)
    batched = masks_for is None and hasattr(predictor, "predict_batch")
    # the encoder's input made ahead where it is used: by decoding workers, or for batches
    ahead = batched and (pipeline.workers > 0 or pipeline.batch_images > 1)
    reader = InputReader(predictor.config, opts, prepare=ahead)
    stream = prefetched(jobs, reader, pipeline.workers, pipeline.prefetch)
    return_probs = opts.heatmaps or opts.save_probs or opts.class_scores

    def done(job: Job, err: BaseException | None) -> None:
        if err is None:
            report.written.append(str(job.path))
            report.done_names.append(job.name)
        else:
            report.failed.append((str(job.path), str(err)))
            bar.write(f"skipped {job.path}: {err}")
        bar.update(1)

    with BackgroundWriter(pipeline.pending_writes) as writer:
        for batch in batches(stream, pipeline.batch_images if batched else 1, pipeline.batch_pixels, _pixels):
            ok = [(job, x) for job, x in batch if not isinstance(x, Failed)]
            for job, x in batch:
                if isinstance(x, Failed):
                    done(job, ValueError(x.error))
            for (job, x), (pred, err, seconds) in zip(ok, predict_loaded(predictor, [x for _, x in ok], vocab,
                                                                         return_probs)):
                if err is not None:
                    done(job, ValueError(err))
                    continue
                writer.submit(partial(_write, layout, job, x, pred, meta, key, seconds, opts), partial(done, job))
    bar.close()
    return report


def _pixels(x: Loaded | Failed) -> int:
    return 0 if isinstance(x, Failed) else int(x.image.shape[0] * x.image.shape[1])


def _write(layout: OutputLayout, job: Job, x: Loaded, pred: Prediction, meta: dict, key: str, seconds: float,
           opts: LabelOptions) -> None:
    labels = full_size(pred.labels, x.size)
    extra = {"decoded_size": list(x.image.shape[:2])} if labels.shape != x.image.shape[:2] else {}
    write_outputs(layout, job.name, x.image, pred, {**meta, "image": str(job.path), "source": job.source, **extra,
                                                    "settings_key": key, "seconds": round(seconds, 4)},
                  opts.heatmaps, labels, opts.save_probs, opts.class_scores)


__all__ = ["BatchReport", "InputReader", "Job", "LabelOptions", "Loaded", "PipelineOptions", "decodes", "full_size",
           "is_finished", "label_files", "output_names", "pending_jobs", "predict_loaded", "read_input", "run_key",
           "settings_key", "source_id", "write_outputs"]
