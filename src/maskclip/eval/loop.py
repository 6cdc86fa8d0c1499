"""The evaluation loop, free of files: images through a predictor into a ConfusionMatrix.

Usable in memory (`evaluate_samples(predictor, samples, vocab)`); `runner.evaluate` adds resume,
pictures and reports around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..vocab import Vocabulary
from .corruptions import corrupt
from .metrics import ConfusionMatrix


@dataclass(frozen=True)
class Corruption:
    """An ImageNet-C corruption applied to every image, seeded per image index."""

    name: str
    severity: int = 3
    seed: int = 0

    def __call__(self, image: np.ndarray, index: int) -> np.ndarray:
        return corrupt(image, self.name, self.severity, seed=self.seed + index)


@dataclass(frozen=True)
class Evaluated:
    """One image done: its index, name, (corrupted) input, ground truth and predicted labels, seconds."""

    index: int
    name: str
    image: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    seconds: float


def predict_labels(predictor, image: np.ndarray, vocab: Vocabulary, masks=None) -> tuple[np.ndarray, float]:
    """Label ids of one image and the seconds it took (encoder and decoder); `masks` for a region predictor."""
    t0 = time.perf_counter()
    if masks is not None:
        predictor.set_image(image, masks=masks)
    else:
        predictor.set_image(image)
    labels = predictor.predict(vocab, return_probs=False).labels
    return labels, time.perf_counter() - t0


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_many(predictor, inputs: list, vocab: Vocabulary) -> list[tuple[np.ndarray, float]]:
    """Labels and seconds of several images (arrays, or `predictor.prepare`'s output) in one `predict_batch`."""
    t0 = time.perf_counter()
    preds = predictor.predict_batch(inputs, vocab, return_probs=False)
    seconds = (time.perf_counter() - t0) / len(inputs)
    return [(p.labels, seconds) for p in preds]


def evaluate_samples(predictor, samples: Iterable[tuple], vocab: Vocabulary,
                     confusion: ConfusionMatrix | None = None, corruption: Corruption | None = None,
                     on_image: Callable[[Evaluated], None] | None = None,
                     masks_for: Callable[[int, str, np.ndarray], object] | None = None,
                     failures: list[tuple[str, str]] | None = None, batch_images: int = 1) -> ConfusionMatrix:
    """Accumulate (index, name, image, label[, prepared]) samples' predictions into `confusion` (a new one if
    None); `prepared`: the encoder's input made ahead (`predictor.prepare`, of the image as given).
    `masks_for(index, name, image)`: each image's masks for a region predictor; an image whose masks cannot be
    read is listed in `failures` (raised without such a list) and left out. `batch_images` > 1: that many
    images per `predict_batch` where the predictor has one (the same labels as one at a time)."""
    cm = confusion if confusion is not None else ConfusionMatrix(len(vocab.classes))
    batched = batch_images > 1 and masks_for is None and hasattr(predictor, "predict_batch")
    for chunk in _chunks(samples, batch_images if batched else 1):
        items = []
        for index, name, image, label, *prepared in chunk:
            if corruption is not None:
                image, prepared = corruption(image, index), []  # the prepared input was of the clean image
            try:
                masks = masks_for(index, name, image) if masks_for is not None else None
            except ValueError as err:  # SettingsError (a missing or bad mask file) included
                if failures is None:
                    raise
                failures.append((name, str(err)))
                continue
            items.append((index, name, image, label, prepared[0] if prepared else image, masks))
        if items and (batched or all(it[4] is not it[2] for it in items)):  # batches, or inputs made ahead
            results = predict_many(predictor, [it[4] for it in items], vocab)
        else:
            results = [predict_labels(predictor, it[2], vocab, it[5]) for it in items]
        for (index, name, image, label, _, _), (pred, seconds) in zip(items, results):
            cm.update(pred, label)
            if on_image is not None:
                on_image(Evaluated(index, name, image, label, pred, seconds))
    return cm


__all__ = ["Corruption", "Evaluated", "evaluate_samples", "predict_labels", "predict_many"]
