"""Training-free refinements of MaskCLIP's coarse predictions (paper section 3.3).

Both work on the patch-grid scores [B, K, h, w] before upsampling, as in the authors' head.
Pure functions: no model, no I/O.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

KSForm = Literal["paper", "authors"]


def prompt_denoising(logits: torch.Tensor, threshold: float = 0.5, logit_scale: float = 100.0,
                     keep_top: bool = True) -> torch.Tensor:
    """Remove classes that are unlikely to be in the image.

    p = softmax(logit_scale * logits) over classes; a class whose p is below `threshold` at every
    position gets its logits set to -100 (the authors' value). The paper is silent on an image where
    every class is below the threshold: with `keep_top` the class with the highest peak confidence is
    kept (otherwise, as in the authors' code, all are removed and the output is flat).
    """
    b, k = logits.shape[:2]
    peak = torch.softmax(logits.float() * logit_scale, dim=1).reshape(b, k, -1).amax(dim=-1)  # B, K
    remove = peak < threshold
    if keep_top:
        top = peak.argmax(dim=1, keepdim=True)
        remove = remove.scatter(1, top, False)
    out = logits.clone()
    out[remove[:, :, None, None].expand_as(out)] = -100.0
    return out


def key_smoothing(logits: torch.Tensor, keys: torch.Tensor, form: KSForm = "paper", logit_scale: float = 100.0,
                  threshold: float = 1.0) -> torch.Tensor:
    """Smooth class confidences with key similarity: pred_i = sum_j cos(k_i, k_j) p_j (paper eq. 5).

    ``paper``: keys L2-normalised per position over channels, so the weights are cosine similarities.
    ``authors``: keys normalised along the token axis (``F.normalize`` with its default dim=1 on a
    [N, HW, C] tensor), as in the authors' code. Only positions whose top confidence is below
    `threshold` are replaced (1.0, the authors' setting, smooths everywhere). Returns smoothed
    confidences (not logits), [B, K, h, w].
    """
    b, k, h, w = logits.shape
    p = torch.softmax(logits.float() * logit_scale, dim=1).reshape(b, k, h * w).transpose(1, 2)  # B, HW, K
    kk = keys.float().reshape(b, keys.shape[1], h * w).transpose(1, 2)  # B, HW, C
    if form == "paper":
        kk = F.normalize(kk, dim=-1)
    elif form == "authors":
        kk = F.normalize(kk, dim=1)
    else:
        raise ValueError(f"unknown key-smoothing form {form!r}; choose 'paper' or 'authors'")
    smoothed = (kk @ kk.transpose(1, 2)) @ p
    select = p.amax(dim=-1, keepdim=True) < threshold
    out = torch.where(select, smoothed, p)
    return out.transpose(1, 2).reshape(b, k, h, w)
