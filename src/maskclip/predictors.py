"""One entry point from "--model X" to a predictor: MaskCLIP (a CLIP) or MaskCLIP+ (a trained network).

Commands (segment, label, eval) call `load_predictor`, so a MaskCLIP+ checkpoint goes wherever a CLIP
name goes and both are reported through the same code.
"""

from __future__ import annotations

import torch

from .dense.inference import MaskCLIPConfig
from .dense.predictor import MaskCLIPPredictor
from .plus.predictor import PlusPredictor, is_plus_checkpoint


def load_predictor(model: str, device: str | torch.device | None, templates: str | list[str],
                   config: MaskCLIPConfig, quick_gelu: bool = True, random_weights: bool = False,
                   clip_weights: str | None = None) -> MaskCLIPPredictor | PlusPredictor:
    """A MaskCLIP+ checkpoint path -> PlusPredictor; a CLIP name or checkpoint -> MaskCLIPPredictor.

    For MaskCLIP+ the templates and CLIP recorded in the checkpoint embed new vocabularies (`templates`
    is not used); `clip_weights` overrides where that CLIP is read from (e.g. on another machine).
    `random_weights`: a randomly initialised CLIP of architecture `model` (pipeline checks only).
    Raises WeightsError (clip.weights) when a CLIP cannot be loaded.
    """
    from .clip.weights import load_clip, random_clip

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not random_weights and is_plus_checkpoint(model):
        # the activation recorded in the checkpoint unless GELU is forced (quick_gelu=False)
        return PlusPredictor(model, device=device, config=config, clip=clip_weights,
                             quick_gelu=None if quick_gelu else False)
    clip = random_clip(model, device=device) if random_weights else load_clip(model, device=device,
                                                                            quick_gelu=quick_gelu)
    return MaskCLIPPredictor(clip, device=device, templates=templates, config=config)


def predictor_identity(predictor: MaskCLIPPredictor | PlusPredictor) -> dict:
    """{"model", "model_sha256", "kind"} for JSON sidecars and reports."""
    if isinstance(predictor, PlusPredictor):
        return {"model": predictor.model_name, "model_sha256": predictor.model_sha256, "kind": "maskclip+"}
    m = predictor.model
    return {"model": getattr(m, "weights_name", None), "model_sha256": getattr(m, "weights_sha256", None),
            "kind": "maskclip"}


__all__ = ["load_predictor", "predictor_identity", "is_plus_checkpoint", "PlusPredictor", "MaskCLIPPredictor"]
