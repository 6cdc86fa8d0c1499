"""The predictor contract, and one entry point from "--model X" to a predictor.

A predictor holds one image at a time and answers any number of vocabularies, like segment-anything's
SamPredictor: `set_image` runs the expensive network once, `predict` labels the pixels, `identity` says
which weights answered (recorded in every sidecar and report). MaskCLIP (a frozen CLIP) and MaskCLIP+
(a trained network) implement it, so every command takes either wherever it takes a model.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .clip.weights import WeightsInfo, load_weights, random_weights
from .dense.config import MaskCLIPConfig
from .dense.predictor import MaskCLIPPredictor, Prediction
from .device import default_device, resolve_device
from .plus.predictor import PlusPredictor, is_plus_checkpoint
from .vocab import Vocabulary


@runtime_checkable
class Predictor(Protocol):
    device: torch.device

    def set_image(self, image: np.ndarray, value_range: str | None = None) -> None: ...

    def predict(self, classes: list | Vocabulary, background: list[str] | None = None, threshold: float | None = None,
                return_probs: bool = True) -> Prediction: ...

    def identity(self) -> WeightsInfo: ...


def load_predictor(model: str, device: str | torch.device | None = None, templates: str | list[str] | None = None,
                   config: MaskCLIPConfig | None = None, overrides: dict | None = None, quick_gelu: bool = True,
                   random_init: bool = False, clip_weights: str | None = None) -> Predictor:
    """A MaskCLIP+ checkpoint path -> PlusPredictor; a CLIP name or checkpoint -> MaskCLIPPredictor.

    config: the base settings (default: the model's recommended ones, else MaskCLIPConfig's); overrides:
    fields the user set, applied over it. For MaskCLIP+ the templates and CLIP recorded in the checkpoint
    embed new vocabularies (`templates` is not used) and `clip_weights` overrides where that CLIP is read
    from. `random_init`: a randomly initialised CLIP of architecture `model` (pipeline checks only).
    Raises WeightsError (clip.weights) when weights cannot be loaded.
    """
    device = resolve_device(device)
    overrides = dict(overrides or {})
    if not random_init and is_plus_checkpoint(model):
        # the activation recorded in the checkpoint unless GELU is forced (quick_gelu=False)
        return PlusPredictor(model, device=device, config=config, clip=clip_weights,
                             quick_gelu=None if quick_gelu else False, overrides=overrides)
    if random_init:
        clip, info = random_weights(model, device=device)
    else:
        clip, info = load_weights(model, device=device, quick_gelu=quick_gelu)
    return MaskCLIPPredictor(clip, device=device, templates=templates, config=config, weights=info, **overrides)


def predictor_identity(predictor: Predictor) -> dict:
    """{"model", "model_sha256", "kind"} for JSON sidecars and reports (the same for every command)."""
    info = predictor.identity()
    out = {"model": info.name, "model_sha256": info.sha256,
           "kind": "maskclip+" if info.source == "maskclip+" else "maskclip"}
    recipe = (getattr(predictor, "meta", None) or {}).get("recipe")
    if recipe:  # a MaskCLIP+ network trained from one of the authors' recipes
        out["recipe"] = recipe
    return out


__all__ = ["MaskCLIPPredictor", "PlusPredictor", "Prediction", "Predictor", "WeightsInfo", "default_device",
           "is_plus_checkpoint", "load_predictor", "predictor_identity"]
