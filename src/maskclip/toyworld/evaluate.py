"""Score MaskCLIP variants on held-out toy-world scenes: per-class IoU, mIoU and attribute queries.

Everything goes through the package's dense engine (`maskclip.dense.MaskCLIP`), so these numbers
are a regression test of the whole dense path, not of a private re-implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..clip.model import CLIP, VisionTransformer
from ..dense import MaskCLIP, MaskCLIPConfig, TextClassifier, build_text_classifier
from ..dense.preprocess import normalize as _normalize
from ..eval.metrics import ConfusionMatrix
from .captions import TEMPLATES
from .world import (
    CLASSES,
    COLOURS,
    HELDOUT_PAIRS,
    OBJECTS,
    WORLD_SIZE,
    Scene,
    World,
    WorldConfig,
    render_scene,
    scene_rng,
)

# MaskCLIP settings for the toy world: CLIP normalisation (the toy CLIP was trained with it), the
# image at its own size in one pass (or at the model's training input size: see `toy_config`).
TOY_BASE = dict(normalize="clip", resize="none", mode="whole")

# name -> config overrides; "best" is the bundled checkpoint's reference variant
VARIANTS: dict[str, dict] = {
    "baseline": dict(readout="baseline"),
    "authors": dict(readout="authors"),
    "authors+KS": dict(readout="authors", ks=True),
    "authors+PD": dict(readout="authors", pd=True),
    "authors+KS+PD": dict(readout="authors", ks=True, pd=True),
    "value-only": dict(readout="value-only"),
    "value-only+KS": dict(readout="value-only", ks=True),
    "value-only+PD": dict(readout="value-only", pd=True),
    "value-only+KS+PD": dict(readout="value-only", ks=True, pd=True),
    "value-only+PAMR": dict(readout="value-only", pamr=True),
    # ResNets only, our addition: the same features on a finer grid (a trous; maskclip.dense.features)
    "value-only+OS16": dict(readout="value-only", output_stride=16),
    "value-only+OS8": dict(readout="value-only", output_stride=8),
    # ViTs only: the successors' last block, position rule and score rule (dense.successors), at the toy
    # world's own geometry, each with and without PAMR (NACLIP's preset has it on)
    "sclip": dict(readout="sclip", pos_embed="dino", score="name-softmax"),
    "sclip+PAMR": dict(readout="sclip", pos_embed="dino", score="name-softmax", pamr=True),
    "clearclip": dict(readout="clearclip", pos_embed="dino", score="name-softmax"),
    "clearclip+PAMR": dict(readout="clearclip", pos_embed="dino", score="name-softmax", pamr=True),
    "naclip": dict(readout="naclip", pos_embed="dino", score="name-softmax"),
    "naclip+PAMR": dict(readout="naclip", pos_embed="dino", score="name-softmax", pamr=True),
}
_VIT_ONLY = ("sclip", "clearclip", "naclip")
BEST_VARIANT = "value-only"


def variants_for(model: CLIP, paper_only: bool = False) -> dict[str, dict]:
    """The VARIANTS that apply to the model (output-stride ones need a ResNet, successors a ViT);
    `paper_only` keeps the MaskCLIP paper's and the authors' settings (no output stride, successor, PAMR)."""
    resnet = not isinstance(model.visual, VisionTransformer)

    def applies(v: dict) -> bool:
        if paper_only and ("output_stride" in v or v.get("pamr") or v["readout"] in _VIT_ONLY):
            return False
        return ("output_stride" not in v or resnet) and (v["readout"] not in _VIT_ONLY or not resnet)

    return {k: v for k, v in VARIANTS.items() if applies(v)}


def toy_config(model: CLIP | None = None, **overrides) -> MaskCLIPConfig:
    """TOY_BASE + overrides. Given the model, scenes are resized (bilinear) to its input size when that
    differs from the world's, as its training batches were (the toy ResNet sees 64 px scenes at 128 px)."""
    base = dict(TOY_BASE)
    res = model.visual.input_resolution if model is not None else WORLD_SIZE
    if res != WORLD_SIZE:
        base.update(resize="fit", size=(res, res))
    return MaskCLIPConfig(**{**base, **overrides})


def heldout_scenes(n: int, seed: int = 0, size: int = WORLD_SIZE, split: str = "test") -> list[Scene]:
    """Scenes never seen in training (another split), held-out colour-category pairs allowed."""
    world = World(seed, WorldConfig(size=size, heldout=True))
    return world.batch(range(n), split)


@dataclass
class SegmentationResult:
    confusion: np.ndarray  # K x K, rows = ground truth, cols = prediction
    class_names: list[str]

    @property
    def iou(self) -> np.ndarray:
        cm = self.confusion.astype(np.float64)
        tp = np.diag(cm)
        denom = cm.sum(0) + cm.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, tp / denom, np.nan)

    @property
    def miou(self) -> float:
        return float(np.nanmean(self.iou))

    def per_class(self) -> dict[str, float]:
        return {c: float(v) for c, v in zip(self.class_names, self.iou)}


def images_tensor(images: list[np.ndarray], normalize: str = "clip") -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(np.stack(images))).permute(0, 3, 1, 2).float()
    return _normalize(x, normalize)


@torch.no_grad()
def scene_scores(engine: MaskCLIP, images: list[np.ndarray], classifier: TextClassifier,
                 batch_size: int = 32) -> torch.Tensor:
    """Scores [N, K, H, W] at image size (cosine logits, or KS confidences)."""
    device = engine.device
    out = []
    for i in range(0, len(images), batch_size):
        x = images_tensor(images[i:i + batch_size], engine.config.normalize).to(device)
        out.append(engine.logits(x, classifier).cpu())
    return torch.cat(out)


def class_classifier(model: CLIP, templates: list[str] | None = None, precision: str | None = None) -> TextClassifier:
    return build_text_classifier(model, list(CLASSES), templates or TEMPLATES, precision=precision)


@torch.no_grad()
def evaluate_segmentation(model: CLIP, scenes: list[Scene], config: MaskCLIPConfig,
                          classifier: TextClassifier | None = None,
                          images: list[np.ndarray] | None = None) -> SegmentationResult:
    """mIoU over the world's classes; `images` replaces the scenes' pixels (e.g. corrupted copies)."""
    engine = MaskCLIP(model, config)
    classifier = classifier or class_classifier(model)
    images = images if images is not None else [s.image for s in scenes]
    cm = ConfusionMatrix(len(CLASSES))
    for i in range(0, len(scenes), 32):
        scores = scene_scores(engine, images[i:i + 32], classifier)
        cm.update(scores.argmax(1).numpy(), np.stack([s.labels for s in scenes[i:i + 32]]))
    return SegmentationResult(cm.matrix, list(CLASSES))


# names that never occur in the world: a vocabulary in which most classes are absent from every scene
# (as in Pascal Context-59), where prompt denoising's premise holds
ABSENT_NAMES: tuple[str, ...] = ("cat", "car", "tree", "person", "boat", "bird", "chair", "road", "snow", "cloud")
# words the toy CLIP learned from its captions that name no class: confusers it knows (the colours)
KNOWN_ABSENT_NAMES: tuple[str, ...] = tuple(COLOURS)


@torch.no_grad()
def evaluate_open_vocabulary(model: CLIP, scenes: list[Scene], config: MaskCLIPConfig,
                             extra_names: tuple[str, ...] = ABSENT_NAMES,
                             templates: list[str] | None = None) -> tuple[float, float]:
    """(mIoU over the world's classes, share of pixels labelled with an absent name) when the vocabulary is
    the world's classes plus `extra_names`: a pixel given an absent name is an error for its true class."""
    names = list(CLASSES) + list(extra_names)
    classifier = build_text_classifier(model, names, templates or TEMPLATES)
    engine = MaskCLIP(model, config)
    cm = ConfusionMatrix(len(names))
    for i in range(0, len(scenes), 32):
        scores = scene_scores(engine, [s.image for s in scenes[i:i + 32]], classifier)
        cm.update(scores.argmax(1).numpy(), np.stack([s.labels for s in scenes[i:i + 32]]))
    result = SegmentationResult(cm.matrix, names)
    k = len(CLASSES)
    return float(np.nanmean(result.iou[:k])), float(cm.matrix[:, k:].sum() / max(cm.matrix.sum(), 1))


# ---- free-text queries against the world's truth --------------------------------------------------

IGNORE = 255  # pixels no query denotes


def query_mask(scene: Scene, query: str) -> np.ndarray | None:
    """Pixels a query denotes in a scene: a class ("zebra", "sky") or "COLOUR CATEGORY"; None if the world
    cannot ground it."""
    words = query.lower().split()
    if len(words) == 1 and words[0] in CLASSES:
        return scene.labels == CLASSES.index(words[0])
    if len(words) == 2 and words[0] in COLOURS and words[1] in OBJECTS:
        ids = [o.instance for o in scene.objects if o.colour == words[0] and o.category == words[1]]
        return np.isin(scene.instances, ids)
    return None


def query_ground_truth(scene: Scene, queries: list[str]) -> tuple[np.ndarray, list[bool]]:
    """Label map over `queries` (IGNORE where no query applies) and which queries are groundable.

    When two queries cover a pixel (e.g. "zebra" and "red zebra"), the more specific one (more words) wins.
    """
    gt = np.full(scene.labels.shape, IGNORE, np.int64)
    masks = [query_mask(scene, q) for q in queries]
    for i in sorted(range(len(queries)), key=lambda j: len(queries[j].split())):
        if masks[i] is not None:
            gt[masks[i]] = i
    return gt, [m is not None for m in masks]


def recommended_settings(model: CLIP, variant: str) -> dict:
    """What a bundled toy CLIP is best run with (its manifest's "recommended"): the toy-world base settings
    at the model's input size, the variant measured best, and the caption-style templates."""
    cfg = toy_config(model, **VARIANTS[variant])
    fields = dict(TOY_BASE, **VARIANTS[variant])
    if cfg.resize != "none":
        fields.update(resize=cfg.resize, size=list(cfg.size))
    return {**fields, "templates": list(TEMPLATES)}


# ---- attribute queries ---------------------------------------------------------------------------

def attribute_scenes(n: int, seed: int = 0, size: int = WORLD_SIZE) -> list[Scene]:
    """Scenes each holding two objects of one category in different colours (plus 0-2 others).

    Every other scene uses a held-out colour-category pair for one of the two, so transfer to pairs
    never captioned in training is measured on as many cases as the seen pairs.
    """
    config = WorldConfig(size=size, heldout=True)
    scenes = []
    for i in range(n):
        rng = scene_rng(seed, "test", 10_000_000 + i)
        if i % 2:
            colour_a, category = HELDOUT_PAIRS[rng.integers(len(HELDOUT_PAIRS))]
        else:
            seen = [(c, o) for o in OBJECTS for c in COLOURS if (c, o) not in HELDOUT_PAIRS]
            colour_a, category = seen[rng.integers(len(seen))]
        others = [c for c in COLOURS if c != colour_a and (c, category) not in HELDOUT_PAIRS]
        colour_b = others[rng.integers(len(others))]
        extra_cats = [o for o in OBJECTS if o != category]
        extra = [(list(COLOURS)[rng.integers(len(COLOURS))], extra_cats[rng.integers(len(extra_cats))])
                 for _ in range(int(rng.integers(0, 3)))]
        extra = [p for p in extra if p not in HELDOUT_PAIRS]
        objs = extra + [(colour_a, category), (colour_b, category)]
        order = rng.permutation(len(objs))
        scene = render_scene(rng, config, [objs[j] for j in order])
        scene.split, scene.index = "attribute", i
        scenes.append(scene)
    return scenes


@dataclass
class AttributeResult:
    """Counts over queries on seen colour-category pairs, and separately on `HELDOUT_PAIRS`."""

    correct: int = 0
    total: int = 0
    heldout_correct: int = 0
    heldout_total: int = 0
    details: list = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    @property
    def heldout_accuracy(self) -> float:
        return self.heldout_correct / self.heldout_total if self.heldout_total else float("nan")


@torch.no_grad()
def evaluate_attributes(model: CLIP, scenes: list[Scene], config: MaskCLIPConfig,
                        min_visible: int = 40) -> AttributeResult:
    """Does "COLOUR CATEGORY" pick the right instance among same-category objects of other colours?

    For every object whose category also appears in another colour (both at least `min_visible`
    pixels), the query's mean score over each same-category instance is compared: correct when the
    queried instance scores highest. Queries on held-out pairs are also counted separately.
    """
    pairs = [(c, o) for o in OBJECTS for c in COLOURS]
    names = [f"{c} {o}" for c, o in pairs]
    engine = MaskCLIP(model, replace(config, pd=False))  # PD would drop absent queries; compare raw scores
    classifier = build_text_classifier(model, names, TEMPLATES)
    result = AttributeResult()
    for i in range(0, len(scenes), 32):
        chunk = scenes[i:i + 32]
        scores = scene_scores(engine, [s.image for s in chunk], classifier)
        for scene, sc in zip(chunk, scores):
            objs = [o for o in scene.objects if o.visible >= min_visible]
            for o in objs:
                rivals = [r for r in objs if r.category == o.category and r.colour != o.colour]
                if not rivals:
                    continue
                q = sc[names.index(f"{o.colour} {o.category}")]
                mean = {r.instance: float(q[torch.from_numpy(scene.instances == r.instance)].mean())
                        for r in [o, *rivals]}
                ok = max(mean, key=mean.get) == o.instance
                held = (o.colour, o.category) in HELDOUT_PAIRS
                if held:
                    result.heldout_correct += ok
                    result.heldout_total += 1
                else:
                    result.correct += ok
                    result.total += 1
                result.details.append((scene.index, f"{o.colour} {o.category}", ok, held))
    return result
