"""A segment-anything-style predictor: set an image once, ask with as many vocabularies as you like."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..clip.model import CLIP
from .inference import ImageFeatures, MaskCLIP, MaskCLIPConfig
from .text import TextClassifier, build_text_classifier, normalize_classes

BACKGROUND = "background"
UNKNOWN = "unknown"


@dataclass
class Prediction:
    """labels [H, W] (indices into `classes`), probs [K, H, W] over `classes` (None if not asked)."""

    labels: np.ndarray
    probs: np.ndarray | None
    classes: list[str]


def apply_threshold(labels: torch.Tensor, probs: torch.Tensor, threshold: float, fallback: int) -> torch.Tensor:
    """Pixels whose top probability is below `threshold` get label `fallback` (background or unknown)."""
    return torch.where(probs.amax(dim=0) < threshold, torch.full_like(labels, fallback), labels)


def vocabulary(classes: list[str | list[str]], background: list[str] | None) -> tuple[list[list[str]], list[str]]:
    """The classes to score (the background group appended as one class) and their display names."""
    all_classes = normalize_classes(classes)
    if background:
        all_classes.append(list(background))
    names = [c[0] for c in all_classes]
    if background:
        names[-1] = BACKGROUND
    return all_classes, names


class MaskCLIPPredictor:
    """Open-vocabulary segmentation of one image at a time.

        p = MaskCLIPPredictor("ViT-B/16")
        p.set_image(rgb)                     # runs the image encoder once
        pred = p.predict(["cat", "dog"])     # cheap: text classifier + refinement only
    """

    def __init__(self, model: str | CLIP = "ViT-B/16", device: str | torch.device | None = None,
                 templates: str | list[str] = "85", config: MaskCLIPConfig | None = None, **overrides):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if isinstance(model, str):
            from ..clip.weights import load_clip

            model = load_clip(model, device=device)
        self.model = model.to(device).eval()
        self.engine = MaskCLIP(self.model, config, **overrides)
        self.templates = templates
        self.features: ImageFeatures | None = None
        self._classifiers: dict[tuple, TextClassifier] = {}

    @property
    def config(self) -> MaskCLIPConfig:
        return self.engine.config

    def set_image(self, image: np.ndarray) -> None:
        """Compute and cache the dense features of an HxWx3 uint8 RGB image."""
        self.features = self.engine.encode(image)

    def classifier(self, classes: list[str | list[str]]) -> TextClassifier:
        key = tuple(tuple(c) for c in normalize_classes(classes))
        if key not in self._classifiers:
            self._classifiers[key] = build_text_classifier(self.model, [list(c) for c in key], self.templates)
        return self._classifiers[key]

    def predict(self, classes: list[str | list[str]], background: list[str] | None = None,
                threshold: float | None = None, return_probs: bool = True) -> Prediction:
        """Label every pixel with one of `classes` (a class may be a list of synonyms: max over names).

        `background`: names (e.g. building, ground, grass, tree, sky) merged into one "background" label.
        `threshold`: pixels whose top probability is below it become background, or "unknown" if no
        background was given.
        """
        if self.features is None:
            raise RuntimeError("call set_image(image) before predict(classes)")
        all_classes, names = vocabulary(classes, background)
        clf = self.classifier(all_classes)
        need_probs = return_probs or threshold is not None
        labels, probs = self.engine.decode(self.features, clf, return_probs=need_probs)
        if threshold is not None:
            fallback = len(names) - 1 if background else len(names)
            labels = apply_threshold(labels, probs, threshold, fallback)
            if not background:
                names.append(UNKNOWN)
        return Prediction(labels.cpu().numpy(), probs.cpu().numpy() if return_probs else None, names)
