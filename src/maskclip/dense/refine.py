"""Training-free refinements of MaskCLIP's coarse predictions (paper section 3.3).

Prompt denoising and key smoothing work on the patch-grid scores [B, K, h, w] before upsampling, as in
the authors' head; PAMR (the successors') on the scores at image size.
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
    `threshold` are replaced (1.0, the authors' setting, smooths everywhere except where the softmax
    saturates to exactly 1.0 in fp32: the rule is max p < threshold, in their code as here). Returns
    smoothed confidences (not logits), [B, K, h, w].
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
    # (K K^T) p as K (K^T p): the same sum, O(HW C k) instead of O(HW^2 C) and no HW x HW matrix (a
    # Cityscapes-size grid of 64 x 128 positions would need 268 MB for it)
    smoothed = kk @ (kk.transpose(1, 2) @ p)
    select = p.amax(dim=-1, keepdim=True) < threshold
    out = torch.where(select, smoothed, p)
    return out.transpose(1, 2).reshape(b, k, h, w)


def _shifted(x: torch.Tensor, d: int, with_centre: bool) -> torch.Tensor:
    """x [B, C, H, W] at the 8 (or 9, with the centre) positions q = p + d * (dy, dx), replicate padding:
    [B, C, P, H, W], the offsets in row-major order of the 3x3 neighbourhood."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (d, d, d, d), mode="replicate")
    out = [padded[..., d + dy * d: d + dy * d + h, d + dx * d: d + dx * d + w]
           for dy in (-1, 0, 1) for dx in (-1, 0, 1) if with_centre or (dy, dx) != (0, 0)]
    return torch.stack(out, dim=2)


def pamr(scores: torch.Tensor, image: torch.Tensor, steps: int = 10, dilations: tuple[int, ...] = (8, 16)
         ) -> torch.Tensor:
    """Pixel-adaptive mask refinement (Araslanov and Roth; NACLIP's default: 10 steps, dilations 8 and 16).

    scores [B, K, H, W] (cosine logits at image size, before the temperature), image [B, 3, H, W] (the
    normalised input at that size). For each pixel p and its 16 neighbours q = p + d * delta (d in the
    dilations, delta in {-1, 0, 1}^2 without 0; replicate padding): sigma_c(p) = unbiased std of channel c
    over the 9 positions of each dilation (18 values), a(p, q) = softmax over q of
    -(1/3) sum_c |I_c(p) - I_c(q)| / (1e-8 + 0.1 sigma_c(p)); then `steps` times S(p) <- sum_q a(p, q) S(q).
    """
    image = image.float()
    std = torch.cat([_shifted(image, d, True) for d in dilations], dim=2).std(dim=2, keepdim=True)
    diff = torch.cat([(_shifted(image, d, False) - image[:, :, None]).abs() for d in dilations], dim=2)
    affinity = torch.softmax((-diff / (1e-8 + 0.1 * std)).mean(dim=1), dim=1)  # [B, 16, H, W]
    offsets = [(d, dy, dx) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    out = scores.float()
    h, w = out.shape[-2:]
    for _ in range(steps):  # one neighbour at a time: no 16-fold copy of the scores
        padded = {d: F.pad(out, (d, d, d, d), mode="replicate") for d in dilations}
        new = torch.zeros_like(out)
        for i, (d, dy, dx) in enumerate(offsets):
            new += padded[d][..., d + dy * d: d + dy * d + h, d + dx * d: d + dx * d + w] * affinity[:, i:i + 1]
        out = new
    return out
