"""The last ViT block of MaskCLIP's training-free successors (facts section 5), on the same engine.

With X the last block's input (row 0 the class token), H = ln_1(X), per head m Q_m, K_m, V_m from the one
in-projection, s = d^-1/2 and O(.) = heads concatenated then out_proj; softmaxes run row-wise over all
1+N tokens, the class token included:

- SCLIP:     A_m = softmax(s Q Q^T) + softmax(s K K^T) (rows sum to 2);  Y' = X + O(A V);  Y = Y' + FFN(ln_2 Y')
- ClearCLIP: A_m = softmax(s Q Q^T);                                      Y = O(A V)
- NACLIP:    A_m = softmax(s K K^T + W), W_ij = exp(-|p_i - p_j|^2 / (2 sigma^2)) over patch coordinates
             (zero in the class token's row and column, the same for every head);  Y = O(A V)

Also their position-embedding rule (DINO's: bicubic by the scale factor (rows + 0.1) / 14, which is not the
same as resizing to the grid) and the authors' MMSegmentation ViT ops (exact GELU, LayerNorm eps 1e-6).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..clip.model import QuickGELU, ResidualAttentionBlock, VisionTransformer


def dino_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch position embeddings [g*g, D] for a (rows, cols) grid by DINO's rule: bicubic with
    scale_factor ((rows + 0.1) / g, (cols + 0.1) / g), align_corners=False, unchanged when the grid is g x g."""
    n, d = pos.shape
    g = int(round(math.sqrt(n)))
    if (g, g) == tuple(grid):
        return pos
    p = pos.reshape(1, g, g, d).permute(0, 3, 1, 2).float()
    p = F.interpolate(p, scale_factor=((grid[0] + 0.1) / g, (grid[1] + 0.1) / g), mode="bicubic",
                      align_corners=False, recompute_scale_factor=False)
    if tuple(p.shape[-2:]) != tuple(grid):
        raise ValueError(f"position embeddings resized to {tuple(p.shape[-2:])}, expected {tuple(grid)}")
    return p.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], d).to(pos.dtype)


def vit_tokens(visual: VisionTransformer, images: torch.Tensor, pos_embed: str = "resize"
               ) -> tuple[torch.Tensor, tuple[int, int]]:
    """`visual.tokens` with the chosen position-embedding rule ("resize": MaskCLIP's, "dino": the successors')."""
    return visual.tokens(images, dino_pos_embed if pos_embed == "dino" else None)


def neighbourhood_prior(grid: tuple[int, int], sigma: float, device: torch.device) -> torch.Tensor:
    """NACLIP's W [1+N, 1+N]: a Gaussian of the distance between patch positions, zero for the class token."""
    rows, cols = grid
    y, x = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
    p = torch.stack([y.flatten(), x.flatten()], dim=1).float()
    w = torch.exp(-(p[:, None] - p[None]).pow(2).sum(-1) / (2 * sigma ** 2))  # exact squared distances
    return F.pad(w, (1, 0, 1, 0))


def successor_block(block: ResidualAttentionBlock, x: torch.Tensor, readout: str, grid: tuple[int, int],
                    sigma: float = 5.0) -> torch.Tensor:
    """The last block's output [B, 1+N, D] as SCLIP, ClearCLIP or NACLIP compute it (module docstring)."""
    q, k, v = block.qkv(block.ln_1(x))  # [B, M, 1+N, d]
    s = q.shape[-1] ** -0.5
    if readout == "sclip":
        attn = torch.softmax(s * q @ q.transpose(-2, -1), -1) + torch.softmax(s * k @ k.transpose(-2, -1), -1)
    elif readout == "clearclip":
        attn = torch.softmax(s * q @ q.transpose(-2, -1), -1)
    elif readout == "naclip":
        prior = neighbourhood_prior(grid, sigma, x.device).to(k.dtype)
        attn = torch.softmax(s * k @ k.transpose(-2, -1) + prior, -1)
    else:
        raise ValueError(f"unknown successor read-out {readout!r}; choose sclip, clearclip or naclip")
    b, m, t, d = v.shape
    out = block.attn.out_proj((attn @ v).transpose(1, 2).reshape(b, t, m * d))
    if readout != "sclip":
        return out  # no residual, no FFN
    y = x + out
    return y + block.mlp(block.ln_2(y))


@contextlib.contextmanager
def authors_vit_ops(visual: nn.Module, on: bool = True) -> Iterator[None]:
    """The authors' MMSegmentation ViT inside: exact (erf) GELU and LayerNorm eps 1e-6 in every block of the
    image tower, restored on exit (the text tower is untouched: their text embeddings came from CLIP's code)."""
    if not on:
        yield
        return
    saved: list[tuple[nn.Module, str, object]] = []
    for module in list(visual.modules()):
        if isinstance(module, nn.LayerNorm):
            saved.append((module, "eps", module.eps))
            module.eps = 1e-6
        for name, child in list(module.named_children()):
            if isinstance(child, QuickGELU):
                saved.append((module, name, child))
                setattr(module, name, nn.GELU())
    try:
        yield
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)


__all__ = ["authors_vit_ops", "dino_pos_embed", "neighbourhood_prior", "successor_block", "vit_tokens"]
