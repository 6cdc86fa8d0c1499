"""A trained proposal generator at inference: image -> MaskSet (N soft masks + A^p over the seen classes).

The image is resized as in training (to fit the base scale the crops were drawn around, keeping its
aspect ratio, bilinear) and normalised with the stored statistics; the mask logits are upsampled
bilinearly to the image size and then squashed (MaskFormer's order), so the masks are float32 [N, H, W] in
[0, 1]. A^p = softmax over the S+1 classes without the "no object" column: each row sums to 1 - p(no
object), which is what MaskFormer's semantic inference weights the masks by. All N queries are kept by
default, as that inference keeps them; `no_object_threshold` drops queries whose no-object probability
exceeds it (a downstream CLIP classifier then sees fewer, surer masks).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..plus.augment import normalize, rescale_size, to_image_tensor
from ..regions.masks import MaskSet
from .files import load_model_file
from .model import ProposalModel


class ProposalGenerator:
    """`propose(image)` -> MaskSet; `semantic(image)` -> [S, H, W] seen-class scores (a sanity check)."""

    def __init__(self, model: ProposalModel, description: dict[str, Any], device: str | torch.device = "cpu",
                 no_object_threshold: float | None = None, resize: bool = True, source: str = "proposals"):
        if no_object_threshold is not None and not 0 <= no_object_threshold <= 1:
            raise ValueError(f"no_object_threshold must lie in [0, 1], got {no_object_threshold}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.description = description
        self.seen: tuple[str, ...] = tuple(description["seen"])
        self.mean, self.std = tuple(description["mean"]), tuple(description["std"])
        self.scale = tuple(description.get("scale") or description["input_size"])
        self.no_object_threshold, self.resize, self.source = no_object_threshold, resize, source

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
             no_object_threshold: float | None = None, resize: bool = True) -> ProposalGenerator:
        """From a `maskclip-proposals/1` model file (or a training checkpoint); anything else -- another
        format, a pickle carrying code, a corrupt file -- is refused with one CheckedFileError line."""
        model, description = load_model_file(path)
        return cls(model, description, device, no_object_threshold, resize, source=f"proposals:{Path(path).name}")

    @torch.no_grad()
    def forward(self, image: np.ndarray) -> tuple[Tensor, Tensor]:
        """(class probabilities [N, S+1], mask logits [N, H, W] at the image size) of one HxWx3 uint8 image."""
        x = to_image_tensor(image).to(self.device)
        h, w = x.shape[-2:]
        if self.resize:
            size = rescale_size(h, w, self.scale)  # type: ignore[arg-type]
            if size != (h, w):
                x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
        out = self.model(normalize(x, self.mean, self.std)[None], aux=False)
        probs = out["pred_logits"][0].float().softmax(-1)
        masks = F.interpolate(out["pred_masks"].float(), size=(h, w), mode="bilinear", align_corners=False)[0]
        return probs, masks

    def propose(self, image: np.ndarray) -> MaskSet:
        """N soft masks float32 [N, H, W], scores A^p [N, S], the seen names, records {"query", "no_object"}."""
        probs, logits = self.forward(image)
        no_object = probs[:, -1]
        keep = torch.arange(len(probs), device=probs.device)
        if self.no_object_threshold is not None:
            keep = keep[no_object[keep] <= self.no_object_threshold]
        masks = logits[keep].sigmoid().cpu().numpy().astype(np.float32)
        scores = probs[keep, :-1].cpu().numpy().astype(np.float32)
        records = [{"query": int(q), "no_object": float(no_object[q])} for q in keep.tolist()]
        return MaskSet(masks, scores, self.seen, records, self.source)

    def semantic(self, image: np.ndarray) -> np.ndarray:
        """MaskFormer's semantic inference, sum_q A^p_q sigmoid(M_q): float32 [S, H, W] (all queries)."""
        probs, logits = self.forward(image)
        return torch.einsum("qc,qhw->chw", probs[:, :-1], logits.sigmoid()).cpu().numpy().astype(np.float32)


__all__ = ["ProposalGenerator"]
