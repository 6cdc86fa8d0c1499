"""Merge operations: one CLIP input per mask (Ding et al.'s mask, crop and mask & crop; seed 003, Fig. 2).

The image is normalised first, so "the mean colour" outside a mask is exactly 0 (the mean of the
normalisation, as zero padding is for MaskCLIP). Each sub-image is resized to size x size (squashed, as
CLIP's 224 x 224 input), bicubic by default as CLIP's preprocessing. Sub-images are built one at a
time at full resolution and batched only at CLIP's size, so memory does not grow with N x image size.
An empty mask has no sub-image: its embedding is zero and its A^c uniform (it paints no pixel anyway).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..clip.model import CLIP
from ..dense.preprocess import float_copy, image_view, normalize_
from ..dense.text import TextClassifier


def mask_box(mask: np.ndarray, expand: float = 1.0) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1), end exclusive, of the mask's pixels, scaled by `expand` about its centre and clipped
    to the image; None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    h, w = mask.shape
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if expand != 1.0:
        cy, cx, hh, hw = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) * expand / 2, (x1 - x0) * expand / 2
        y0, y1 = max(0, int(np.floor(cy - hh))), min(h, int(np.ceil(cy + hh)))
        x0, x1 = max(0, int(np.floor(cx - hw))), min(w, int(np.ceil(cx + hw)))
    return int(y0), int(y1), int(x0), int(x1)


def sub_image(x: torch.Tensor, mask: np.ndarray, merge: str, size: int, expand: float = 1.0,
              interpolation: str = "bicubic") -> torch.Tensor | None:
    """One merged input [3, size, size] from a normalised image x [3, H, W] and a bool mask [H, W]."""
    box = mask_box(mask, expand)
    if box is None:
        return None
    if merge in ("mask", "mask&crop"):
        x = x * torch.from_numpy(np.ascontiguousarray(mask)).to(x.device, x.dtype)
    if merge in ("crop", "mask&crop"):
        y0, y1, x0, x1 = box
        x = x[:, y0:y1, x0:x1]
    return F.interpolate(x[None], size=(size, size), mode=interpolation, align_corners=False)[0]


def sub_image_batches(image: np.ndarray, masks: np.ndarray, merge: str, size: int, normalize: str = "clip",
                      expand: float = 1.0, interpolation: str = "bicubic", batch_size: int = 32,
                      device: torch.device | str = "cpu") -> Iterator[tuple[list[int], torch.Tensor]]:
    """(mask indices, [B, 3, size, size]) batches of the merged inputs of the non-empty masks."""
    x = normalize_(float_copy(image_view(image).to(device)), normalize)[0]
    idx: list[int] = []
    batch: list[torch.Tensor] = []
    for i, m in enumerate(masks):
        s = sub_image(x, m, merge, size, expand, interpolation)
        if s is None:
            continue
        idx.append(i)
        batch.append(s)
        if len(batch) == batch_size:
            yield idx, torch.stack(batch)
            idx, batch = [], []
    if batch:
        yield idx, torch.stack(batch)


def class_probs(embeddings: torch.Tensor, classifier: TextClassifier, temperature: float) -> torch.Tensor:
    """A^c [N, K]: softmax over all classes of temperature x cosine, a class's score the max over its names
    (a zero embedding, an empty mask's, scores every class alike: uniform)."""
    emb = F.normalize(embeddings.float(), dim=-1)
    cos = emb @ classifier.embeddings.to(emb.device, emb.dtype).T
    return torch.softmax(temperature * classifier.class_logits(cos), dim=1)


@torch.no_grad()
def merged_embeddings(model: CLIP, image: np.ndarray, masks: np.ndarray, merge: str, size: int,
                      **kw) -> torch.Tensor:
    """[N, C] CLIP image embeddings of every mask's merged input (zeros for empty masks): computed once per
    image and masks, then classified against any vocabulary (`class_probs`)."""
    device = next(model.parameters()).device
    out = torch.zeros(len(masks), model.embed_dim)
    for idx, batch in sub_image_batches(image, masks, merge, size, device=device, **kw):
        out[idx] = model.encode_image(batch).float().cpu()
    return out


__all__ = ["class_probs", "mask_box", "merged_embeddings", "sub_image", "sub_image_batches"]
