"""A segment-anything-style predictor: set an image once, ask with as many vocabularies as you like."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..clip.model import CLIP
from ..clip.weights import WeightsInfo, load_weights
from ..data.image_inputs import as_rgb_uint8
from ..device import resolve_device
from ..io.cache import TextCache
from ..vocab import BACKGROUND, UNKNOWN, Vocabulary  # noqa: F401 - BACKGROUND, UNKNOWN re-exported
from .config import MaskCLIPConfig
from .engine import ImageFeatures, MaskCLIP, PreparedImage, prepare_image
from .text import TextClassifier, build_text_classifier


@dataclass
class Prediction:
    """labels [H, W] (indices into `classes`), probs [K, H, W] over `classes` (None if not asked); regions:
    one record per mask when masks were classified (`maskclip.regions`)."""

    labels: np.ndarray
    probs: np.ndarray | None
    classes: list[str]
    regions: list[dict] | None = None


def apply_threshold(labels: torch.Tensor, probs: torch.Tensor, threshold: float, fallback: int) -> torch.Tensor:
    """Pixels whose top probability is below `threshold` get label `fallback` (background or unknown)."""
    return torch.where(probs.amax(dim=0) < threshold, torch.full_like(labels, fallback), labels)


def drop_small_classes(labels: torch.Tensor, probs: torch.Tensor, area: float, background: int) -> torch.Tensor:
    """SCLIP's area rule: every foreground class whose argmax pixels are NOT more than `area` x the
    foreground-argmax pixels gets probability 0 (in place); returns the argmax of what is left."""
    fg = labels != background
    counts = torch.bincount(labels[fg].long().flatten(), minlength=probs.shape[0])[: probs.shape[0]]
    small = counts <= area * int(fg.sum())
    small[background] = False
    probs[small] = 0
    return probs.argmax(dim=0).to(labels.dtype)


def finish_prediction(labels: torch.Tensor, probs: torch.Tensor | None, vocab: Vocabulary,
                      return_probs: bool, area_threshold: float | None = None) -> Prediction:
    """The vocabulary's threshold (and SCLIP's area rule) applied, as numpy, with the display names of every
    possible label."""
    if area_threshold is not None and probs is not None:
        labels = drop_small_classes(labels, probs, area_threshold, vocab.fallback)
    if vocab.threshold is not None:
        labels = apply_threshold(labels, probs, vocab.threshold, vocab.fallback)
    return Prediction(labels.cpu().numpy(), probs.cpu().numpy() if return_probs else None, vocab.output_names)


class MaskCLIPPredictor:
    """Open-vocabulary segmentation of one image at a time.

        p = MaskCLIPPredictor("ViT-B/16")
        p.set_image(rgb)                     # runs the image encoder once
        pred = p.predict(["cat", "dog"])     # cheap: text classifier + refinement only
    """

    def __init__(self, model: str | CLIP = "ViT-B/16", device: str | torch.device | None = None,
                 templates: str | list[str] | None = None, config: MaskCLIPConfig | None = None,
                 weights: WeightsInfo | None = None, **overrides):
        """model: a CLIP, or a name/path for `load_weights`. weights: what a given CLIP holds (its identity
        in sidecars, the key of the text cache; unknown: not cached). config/templates default to the
        model's recommended settings (bundled toy CLIPs) over MaskCLIPConfig's; `overrides` win over both."""
        device = resolve_device(device)
        if isinstance(model, (str, os.PathLike)):
            model, weights = load_weights(model, device=device)
        self.model = model.to(device).eval()
        self.weights = weights or WeightsInfo("<in-memory CLIP>", None, "memory")
        rec = dict(self.weights.recommended)
        rec_templates = rec.pop("templates", None)
        base = config if config is not None else MaskCLIPConfig(**rec)
        self.engine = MaskCLIP(self.model, base, **overrides)
        self.templates = templates if templates is not None else (rec_templates or "85")
        # the text side follows the image side's precision policy; one cache per precision
        prec = self.engine.config.dtype
        self.text_cache = TextCache(self.weights.sha256, precision=prec) if self.weights.sha256 else None
        self.features: ImageFeatures | None = None
        self._classifiers: dict[tuple, TextClassifier] = {}

    @property
    def device(self) -> torch.device:
        return self.engine.device

    def identity(self) -> WeightsInfo:
        """The weights behind every prediction (sidecars and reports record it)."""
        return self.weights

    @property
    def config(self) -> MaskCLIPConfig:
        return self.engine.config

    def set_image(self, image: Any, value_range: str | None = None) -> None:
        """Compute and cache the dense features of an image.

        `image`: a PIL image, or an HxWx3 uint8, uint16 or float numpy array / torch tensor (grayscale HxW and
        RGBA HxWx4 too); anything else is a TypeError/ValueError. A float image is 0-1 or 0-255 as
        `value_range` says ("0-1", "0-255"), detected when None (max <= 1: 0-1). Rules:
        `maskclip.data.image_inputs.as_rgb_uint8`; the lower-level `MaskCLIP.encode` takes arrays as they are.
        """
        self.features = None  # a refused image leaves no stale features behind
        self.features = self.engine.encode(as_rgb_uint8(image, value_range))

    def prepare(self, image: Any, value_range: str | None = None) -> PreparedImage:
        """The encoder's input for `image` on the CPU (`set_image`'s rules), for a DataLoader worker to make
        while the model runs (`predict_batch` takes it)."""
        return prepare_image(as_rgb_uint8(image, value_range), self.config)

    def predict_batch(self, images: list[Any], classes: list[str | list[str]] | Vocabulary,
                      background: list[str] | None = None, threshold: float | None = None,
                      return_probs: bool = True) -> list[Prediction]:
        """`set_image` + `predict` for several images, their windows sharing encoder passes (RGB arrays as
        `set_image` takes them, or `prepare`'s output); the predictions are those of one image at a time.
        The last image stays set."""
        self.features = None
        feats = self.engine.encode_batch([im if isinstance(im, PreparedImage) else as_rgb_uint8(im) for im in images])
        preds = []
        for f in feats:
            self.features = f
            preds.append(self.predict(classes, background, threshold, return_probs))
        return preds

    def classifier(self, classes: list[str | list[str]] | Vocabulary) -> TextClassifier:
        """The text classifier of the scored classes (kept per vocabulary: asking again costs nothing)."""
        vocab = Vocabulary.of(classes)
        key = tuple(tuple(c) for c in vocab.scored)
        if key not in self._classifiers:
            self._classifiers[key] = build_text_classifier(self.model, vocab, self.templates, cache=self.text_cache,
                                                           precision=self.engine.config.dtype)
        return self._classifiers[key]

    def predict(self, classes: list[str | list[str]] | Vocabulary, background: list[str] | None = None,
                threshold: float | None = None, return_probs: bool = True) -> Prediction:
        """Label every pixel with one of `classes` (a class may be a list of synonyms: max over names).

        `background`: names (e.g. building, ground, grass, tree, sky) merged into one "background" label.
        `threshold`: pixels whose top probability is below it become background, or "unknown" if no
        background was given. `classes` may also be a Vocabulary holding all three.
        """
        if self.features is None:
            raise RuntimeError("call set_image(image) before predict(classes)")
        vocab = Vocabulary.of(classes, background, threshold)
        clf = self.classifier(vocab)
        area = self.config.area_threshold
        need_probs = return_probs or vocab.threshold is not None or area is not None
        labels, probs = self.engine.decode(self.features, clf, return_probs=need_probs)
        return finish_prediction(labels, probs, vocab, return_probs, area)
