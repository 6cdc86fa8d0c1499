"""MaskCLIP and its training-free successors as presets of one engine (facts section 5, their configs).

A method is a last-block read-out plus the inference protocol its paper evaluated with: resize, windows,
geometry, position-embedding rule, score rule, temperature, templates, background threshold and class-name
files, some per dataset. `method_preset("naclip", "voc21")` gives all of it; `maskclip segment/eval --method`
use it, and every option given on the command line overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..data.classes import method_class_names
from .config import MaskCLIPConfig

METHODS = ("maskclip", "sclip", "clearclip", "naclip")
BACKGROUND_DATASETS = ("voc21", "context60", "coco-object")

# what the three successors share: CLIP's normalisation, DINO's position rule, the name softmax, 224 windows
_SUCCESSOR = dict(normalize="clip", pos_embed="dino", score="name-softmax", resize="fit", size=(2048, 336),
                  mode="slide", crop=224, step=112, logit_scale=40.0, pad="floor")
_GENERIC = {
    "maskclip": {},
    "sclip": dict(_SUCCESSOR, readout="sclip"),
    "clearclip": dict(_SUCCESSOR, readout="clearclip", size=(2048, 448), crop=448, step=224, logit_scale=50.0,
                      pad="center"),
    "naclip": dict(_SUCCESSOR, readout="naclip", pamr=True),
}
_PER_DATASET = {
    "sclip": {"coco-stuff171": dict(size=(2048, 448)), "cityscapes": dict(size=(2048, 560)),
              "voc21": dict(logit_scale=65.0, area_threshold=0.1), "context60": dict(logit_scale=50.0),
              "coco-object": dict(logit_scale=50.0)},
    "clearclip": {"cityscapes": dict(crop=224, step=224)},
    "naclip": {"cityscapes": dict(size=(2048, 560)), "voc20": dict(mode="whole"), "voc21": dict(mode="whole")},
}
_BG_THRESHOLD = {
    "sclip": {"voc21": 0.1, "context60": 0.1, "coco-object": 0.1},
    "clearclip": {"voc21": 0.5, "context60": 0.15, "coco-object": 0.4},
    "naclip": {"voc21": 0.1, "context60": 0.1, "coco-object": 0.1},
}


@dataclass(frozen=True)
class MethodPreset:
    """A method's settings: config fields, templates, background threshold, its own class names (if any)."""

    method: str
    fields: dict = field(default_factory=dict)
    templates: str | None = None
    bg_threshold: float | None = None
    classes: list[list[str]] | None = None  # the names it scores for the dataset, in label-id order
    display: list[str] | None = None  # the names shown for them

    def config(self, base: MaskCLIPConfig | None = None) -> MaskCLIPConfig:
        return replace(base or MaskCLIPConfig(), **self.fields)


def method_preset(method: str, dataset: str | None = None) -> MethodPreset:
    """The preset of `method` (one of METHODS), for `dataset` (a canonical dataset name) if given."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    fields = dict(_GENERIC[method])
    if method == "maskclip":
        return MethodPreset(method, fields)
    names = method_class_names(method, dataset) if dataset else None
    fields.update(_PER_DATASET[method].get(dataset or "", {}))
    bg = _BG_THRESHOLD[method].get(dataset or "")
    return MethodPreset(method, fields, "80", bg, names[0] if names else None, names[1] if names else None)


__all__ = ["BACKGROUND_DATASETS", "METHODS", "MethodPreset", "method_preset"]
