"""Name any masks with any vocabulary: a frozen CLIP classifies each mask (the decoupling paradigm).

    p = RegionPredictor("ViT-B/16")
    p.set_image(rgb, masks=read_masks("sam/photo.json"))      # or a proposal generator, or "regions"
    pred = p.predict(["cat", "dog", "sofa"])                   # labels per pixel + one record per mask

Where the masks come from: given to `set_image` (a user's, e.g. segment-anything's), a proposal generator
(`proposals=` anything with `propose(image) -> MaskSet`, e.g. `maskclip.proposals.ProposalGenerator`:
its A^p joins eq. (1)), or `proposals="regions"`: the connected regions of MaskCLIP's own label map for
the same vocabulary (training-free; regions below `min_area` keep MaskCLIP's label). CLIP's embeddings of
the masks are computed once per image and masks; a new vocabulary costs only the text side.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import torch

from ..data.image_inputs import as_rgb_uint8
from ..dense.config import MaskCLIPConfig
from ..dense.predictor import MaskCLIPPredictor, Prediction
from ..vocab import UNKNOWN, Vocabulary, name_key
from .config import RegionConfig
from .ensemble import ensemble, paint
from .masks import MaskSet, connected_regions
from .merge import class_probs, merged_embeddings
from .pooling import pooled_features


class ProposalSource(Protocol):
    def propose(self, image: np.ndarray) -> MaskSet: ...


def seen_columns(seen: tuple[str, ...] | None, vocab: Vocabulary) -> tuple[list[int], list[int]]:
    """(score columns, vocabulary classes): a class is seen when one of its names is a seen class's name (so a
    generator trained on one dataset serves another's vocabulary: the other classes are unseen)."""
    if not seen:
        return [], []
    where = {name_key(n): i for i, c in enumerate(vocab.scored) for n in c}
    first: dict[int, int] = {}  # class -> the first column naming it
    for j, s in enumerate(seen):
        if name_key(s) in where:
            first.setdefault(where[name_key(s)], j)
    return list(first.values()), list(first.keys())


class RegionPredictor:
    """Region classification with a frozen CLIP; `predict` returns a Prediction with per-mask records."""

    def __init__(self, model: Any = "ViT-B/16", config: RegionConfig | None = None,
                 proposals: ProposalSource | str | None = None, device: str | torch.device | None = None,
                 templates: str | list[str] | None = None, dense_config: MaskCLIPConfig | None = None,
                 min_area: float = 0.001, **overrides):
        """model: a CLIP, a name/path, or a MaskCLIPPredictor (its CLIP, templates, text cache and engine are
        used: the engine for "pool" and "regions"). min_area: with "regions", the smallest region classified,
        as a fraction of the image."""
        self.dense = model if isinstance(model, MaskCLIPPredictor) else MaskCLIPPredictor(
            model, device=device, templates=templates, config=dense_config, **overrides)
        self.config = config or RegionConfig()
        if isinstance(proposals, str) and proposals != "regions":
            raise ValueError(f"proposals must be 'regions', a proposal generator or None, got {proposals!r}")
        self.proposals = proposals
        self.min_area = min_area
        self.image: np.ndarray | None = None
        self.masks: MaskSet | None = None
        self._embeddings: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.dense.device

    def identity(self):
        return self.dense.identity()

    @property
    def sub_image_size(self) -> int:
        return self.config.size or int(self.dense.model.visual.input_resolution)

    def set_image(self, image: Any, value_range: str | None = None, masks: MaskSet | np.ndarray | None = None) -> None:
        """The image and its masks (a MaskSet, or an [N, H, W] bool array); without masks, the proposal
        generator's, or (proposals="regions") MaskCLIP's regions at `predict`."""
        self.image, self.masks, self._embeddings = None, None, None
        image = as_rgb_uint8(image, value_range)
        if masks is None and self.proposals is not None and self.proposals != "regions":
            masks = self.proposals.propose(image)
        if isinstance(masks, np.ndarray):
            masks = MaskSet(masks)
        if masks is not None and masks.size != image.shape[:2]:
            raise ValueError(f"the masks are {masks.size[0]}x{masks.size[1]}, the image {image.shape[0]}x"
                             f"{image.shape[1]}: masks must be at the image's size")
        if masks is None and self.proposals != "regions":
            raise ValueError("no masks: give masks=, a proposal generator, or proposals='regions'")
        if self.config.merge == "pool" or self.proposals == "regions":
            self.dense.set_image(image)
        self.image, self.masks = image, masks

    def embed(self, masks: MaskSet) -> torch.Tensor:
        """[N, C] what each mask is classified by: CLIP embeddings of the merged inputs, or pooled dense features."""
        cfg = self.config
        if cfg.merge == "pool":
            return pooled_features(self.dense.engine, self.dense.features, masks.masks).cpu()
        return merged_embeddings(self.dense.model, self.image, masks.binary(), cfg.merge, self.sub_image_size,
                                 normalize=cfg.normalize, expand=cfg.expand, interpolation=cfg.interpolation,
                                 batch_size=cfg.batch_size)

    def scores(self, vocab: Vocabulary, masks: MaskSet, embeddings: torch.Tensor) -> torch.Tensor:
        """Â [N, K] over the scored classes: A^c, ensembled with A^p (eq. 1) when the masks carry scores."""
        ac = class_probs(embeddings, self.dense.classifier(vocab), self.config.temperature)
        if masks.scores is None:
            return ac
        cols, classes = seen_columns(masks.seen, vocab)
        ap = torch.from_numpy(np.asarray(masks.scores, dtype=np.float32)[:, cols])
        return ensemble(ac, ap, classes, self.config.lam)

    def predict(self, classes: list | Vocabulary, background: list[str] | None = None,
                threshold: float | None = None, return_probs: bool = True) -> Prediction:
        """Labels per pixel (argmax of O = Â^T M; uncovered pixels: background, else "unknown") and one record
        per mask: its label, its top-k classes with Â normalised per mask, its source record."""
        if self.image is None:
            raise RuntimeError("call set_image(image, masks) before predict(classes)")
        vocab = Vocabulary.of(classes, background, threshold)
        names = vocab.output_names + ([] if UNKNOWN in vocab.output_names or vocab.background else [UNKNOWN])
        base = None
        masks = self.masks
        if masks is None:  # MaskCLIP's regions for this vocabulary
            base = self.dense.predict(vocab, return_probs=False).labels
            masks = connected_regions(base, min_area=max(1, int(self.min_area * base.size)))
        if self._embeddings is None or self.masks is None:
            emb = self.embed(masks)
            self._embeddings = emb if self.masks is not None else None
        else:
            emb = self._embeddings
        ahat = self.scores(vocab, masks, emb)
        need_probs = return_probs or vocab.threshold is not None
        labels, probs = paint(ahat, masks.masks, vocab.fallback, need_probs)  # float per row block
        if base is not None:  # pixels of regions too small to classify keep MaskCLIP's label
            covered = masks.binary().any(0)
            labels = torch.where(torch.from_numpy(covered), labels, torch.from_numpy(base.astype(np.int64)))
        if vocab.threshold is not None:
            labels = torch.where(probs.amax(0) < vocab.threshold, torch.full_like(labels, vocab.fallback), labels)
        records = region_records(ahat, masks, vocab.names, self.config.top_k)
        return Prediction(labels.numpy(), probs.numpy() if return_probs else None, names, records)


def region_records(ahat: torch.Tensor, masks: MaskSet, names: list[str], top_k: int) -> list[dict]:
    """One JSON-ready record per mask: the mask's own source record, then (over any field of the same name)
    index, label, score, top-k [name, score] (Â normalised per mask) and area (pixels of the hard mask)."""
    p = ahat / ahat.sum(1, keepdim=True).clamp_min(1e-30)
    k = min(top_k, p.shape[1])
    top = p.topk(k, dim=1) if len(p) else None
    areas = masks.binary().reshape(len(masks), -1).sum(1)
    out = []
    for i in range(len(masks)):
        vals, idx = top.values[i].tolist(), top.indices[i].tolist()
        out.append({**masks.records[i], "index": i, "label": names[idx[0]], "score": round(vals[0], 6),
                    "top": [[names[j], round(v, 6)] for j, v in zip(idx, vals)], "area": int(areas[i])})
    return out


def with_config(predictor: RegionPredictor, **changes) -> RegionPredictor:
    """The same predictor (CLIP, caches) with other region settings; the image must be set again."""
    clone = RegionPredictor.__new__(RegionPredictor)
    clone.__dict__.update(predictor.__dict__)
    clone.config = replace(predictor.config, **changes)
    clone.image, clone.masks, clone._embeddings = None, None, None
    return clone


__all__ = ["ProposalSource", "RegionPredictor", "region_records", "seen_columns", "with_config"]
