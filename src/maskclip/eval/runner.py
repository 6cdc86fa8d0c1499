"""Evaluate a segmenter (MaskCLIP or a trained MaskCLIP+ network) over a dataset, resumably.

The pure loop (`loop.evaluate_samples`) streams images into a confusion matrix; around it the resume
store (`store`) saves the matrix and the finished images every few images, so an interrupted run goes
on without recomputing them, and the report writer (`report`) writes JSON and Markdown. Corruptions
are applied on the fly; pixels below a background threshold become class 0 inside the predictor.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from ..annotate import settings_key
from ..data.datasets import SegDataset
from ..data.image_io import write_png_atomic
from ..dense.engine import prepare_image
from ..pipeline import BackgroundWriter, Failed, PipelineOptions, prefetched
from ..render import label_palette, panel
from ..vocab import Vocabulary
from .loop import Corruption, Evaluated, evaluate_samples
from .protocols import BACKGROUND_DATASETS, EvalProtocol, paper_size, protocol  # noqa: F401 - re-exported
from .report import EvalReport, markdown_report, pct, write_report  # noqa: F401 - re-exported
from .store import EvalState, ResumeStore


@dataclass(frozen=True)
class EvalJob:
    """What to evaluate besides the predictor and the dataset; `settings` describe the run (model,
    protocol, config) and, with the rest, key the resume state: a changed setting starts over."""

    settings: dict = field(default_factory=dict)
    bg_threshold: float | None = None
    corruption: Corruption | None = None
    limit: int | None = None
    save_vis: int = 0
    seen: Sequence[int] | None = None
    unseen: Sequence[int] | None = None
    classes: list[list[str]] | None = None  # names to score instead of the dataset's (a method's own files)
    display: list[str] | None = None
    checkpoint_every: int = 10
    progress: bool = True
    masks_dir: Path | None = None  # region classification: a mask file per image, named as the images
    pipeline: PipelineOptions = PipelineOptions()  # decoding workers, batch budget, background writes

    def masks_for(self, dataset: SegDataset):
        """(index, name, image) -> the MaskSet of that image from `masks_dir` (None without one)."""
        if self.masks_dir is None:
            return None
        from ..regions.mask_io import find_masks_for, read_masks

        def read(index: int, name: str, image) -> object:
            ref = dataset.refs[index]
            return read_masks(find_masks_for(self.masks_dir, ref.image_path, name), image.shape[:2],
                              ref.image_path.name)

        return read

    def record(self, dataset: SegDataset) -> dict:
        c = self.corruption
        masks = {"masks_dir": str(self.masks_dir.resolve())} if self.masks_dir is not None else {}
        return {**self.settings, "dataset": dataset.name, "corruption": c.name if c else None,
                "severity": c.severity if c else None, "seed": c.seed if c else 0, "bg_threshold": self.bg_threshold,
                **masks}


def vocabulary_of(dataset: SegDataset, bg_threshold: float | None, classes: list[list[str]] | None = None,
                  display: list[str] | None = None) -> Vocabulary:
    """The dataset's classes as published (or a method's names for them); below the threshold a pixel becomes
    class 0 (background)."""
    if bg_threshold is not None and not dataset.class_names[0].lower().startswith("background"):
        raise ValueError(f"--bg-threshold needs a dataset whose class 0 is background; {dataset.name} starts with "
                         f"{dataset.class_names[0]!r}")
    if classes is not None and len(classes) != dataset.num_classes:
        raise ValueError(f"{len(classes)} class names for the {dataset.num_classes} classes of {dataset.name}")
    vocab = Vocabulary.of(classes or dataset.classes, threshold=bg_threshold, allow_shared=True,
                          below_threshold=0 if bg_threshold is not None else None)
    return replace(vocab, display=tuple(display)) if display else vocab


@dataclass(frozen=True)
class SampleReader:
    """Reads sample i of a dataset, corrupts it and makes the encoder's input: picklable, for DataLoader
    workers that run while the model works."""

    dataset: SegDataset
    corruption: Corruption | None
    config: object | None  # a MaskCLIP config: also prepare the encoder's input (None: do not)

    def __call__(self, i: int) -> tuple:
        sample = self.dataset[i]
        image = self.corruption(sample.image, i) if self.corruption is not None else sample.image
        prepared = (prepare_image(image, self.config),) if self.config is not None else ()
        return (image, sample.label, *prepared)


def _samples(dataset: SegDataset, todo: list[int], failures: list, bar, job: EvalJob, config) -> Iterator[tuple]:
    """(index, name, corrupted image, label[, prepared input]), read `job.pipeline.workers` processes ahead."""
    reader = SampleReader(dataset, job.corruption, config)
    for i, got in prefetched(todo, reader, job.pipeline.workers, job.pipeline.prefetch):
        name = dataset.refs[i].name
        if isinstance(got, Failed):
            failures.append((name, got.error))
            bar.write(f"skipped {name}: {got.error}")
            bar.update(1)
            continue
        yield (i, name, *got)


def evaluate(predictor, dataset: SegDataset, out_dir: Path, job: EvalJob | None = None) -> EvalReport:
    """Run the predictor over `dataset` (the first `job.limit` images), resuming from `out_dir/state.json`."""
    job = job or EvalJob()
    job = replace(job, pipeline=job.pipeline.resolve(predictor.device))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary_of(dataset, job.bg_threshold, job.classes, job.display)
    n = len(dataset) if job.limit is None else min(job.limit, len(dataset))
    full = job.record(dataset)
    names = [r.name for r in dataset.refs[:n]]
    store = ResumeStore(out_dir, settings_key(full))
    state = store.load(dataset.num_classes, dataset.ignore_index, names)
    done = set(state.done)
    failures: list[tuple[str, str]] = []
    colors = label_palette(dataset.class_names)
    bar = tqdm(total=n, initial=len(done), desc=f"eval {dataset.name}", unit="img", disable=not job.progress)
    writer = BackgroundWriter(job.pipeline.pending_writes)

    def finished(e: Evaluated) -> None:
        state.seconds += e.seconds
        state.done.append(e.name)
        if e.index < job.save_vis:
            writer.submit(partial(_write_panel, out_dir / "vis" / f"{e.index:05d}_{e.name}.png", e, dataset, colors),
                          lambda err: err and failures.append((e.name, f"vis panel: {err}")))
        if len(state.done) % job.checkpoint_every == 0:
            store.save(state)
        bar.update(1)

    todo = [i for i in range(n) if names[i] not in done]
    masks_for = job.masks_for(dataset)
    pipe = job.pipeline
    prepare = masks_for is None and hasattr(predictor, "predict_batch") and (pipe.workers > 0 or pipe.batch_images > 1)
    with writer:
        evaluate_samples(predictor, _samples(dataset, todo, failures, bar, job, predictor.config if prepare else None),
                         vocab, state.confusion, None, finished, masks_for, failures, job.pipeline.batch_images)
    bar.close()
    store.save(state)
    report = _report(predictor, dataset, job, full, state, failures)
    write_report(out_dir, report)
    return report


def _write_panel(path: Path, e: Evaluated, dataset: SegDataset, colors) -> None:
    write_png_atomic(path, panel(e.image, e.label, e.pred, dataset.class_names, colors, dataset.ignore_index))


def _report(predictor, dataset: SegDataset, job: EvalJob, full: dict, state: EvalState,
            failures: list[tuple[str, str]]) -> EvalReport:
    cm = state.confusion
    metrics = cm.compute(seen=job.seen, unseen=job.unseen) if (job.seen or job.unseen) else cm.compute()
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    timing = {"seconds": round(state.seconds, 3),
              "images_per_second": round(len(state.done) / state.seconds, 4) if state.seconds else None,
              "device": str(getattr(predictor, "device", "cpu")), "host": platform.node(),
              "cuda_peak_bytes": peak or None}
    return EvalReport(dataset.name, job.settings.get("split", "val"), len(state.done), dataset.class_names, metrics,
                      full, timing, failures)


__all__ = ["EvalJob", "EvalReport", "evaluate", "markdown_report", "pct", "protocol", "vocabulary_of"]
