"""Shared fixtures: tiny random CLIPs of both families and the location of ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maskclip.clip.model import CLIP, CLIPConfig

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_config(vit: bool = True, embed_dim: int = 32) -> CLIPConfig:
    common = dict(embed_dim=embed_dim, context_length=77, vocab_size=49408, transformer_width=64,
                  transformer_heads=1, transformer_layers=2)
    if vit:
        return CLIPConfig(image_resolution=64, vision_layers=2, vision_width=64, vision_patch_size=16, **common)
    return CLIPConfig(image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=16, vision_patch_size=None,
                      **common)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (LayerNorm and BatchNorm included) non-trivial values so tests can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                continue
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() < 2 else p[0].numel() ** -0.5)
                    + (1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight",
                                              "ln_final.weight")) or "bn" in name and name.endswith("weight")
                       else 0.0))
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_vit() -> CLIP:
    torch.manual_seed(0)
    return randomize(CLIP(tiny_config(vit=True)), seed=1)


@pytest.fixture(scope="session")
def tiny_rn() -> CLIP:
    torch.manual_seed(0)
    return randomize(CLIP(tiny_config(vit=False)), seed=2)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
