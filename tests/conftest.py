"""Shared fixtures: tiny random CLIPs of both families, random-weight filling, and ../shared/data."""

from __future__ import annotations

import os
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


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Large, non-trivial random weights: LayerNorm/BatchNorm affine and statistics and every bias too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                continue
            r = torch.randn(p.shape, generator=g)
            if name.endswith(("proj", "text_projection")):  # right-multiplied [width, embed]
                p.copy_(r * p.shape[0] ** -0.5)
            elif p.ndim >= 2 and "embedding" not in name:
                p.copy_(r * p[0].numel() ** -0.5)
            elif "embedding" in name:
                p.copy_(r * 0.5)
            elif any(s in name for s in ("ln", "bn", "downsample.1")) and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * r)
            else:
                p.copy_(0.2 * r)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return model


randomize = randomize_


@pytest.fixture(autouse=True, scope="session")
def _fp32_unless_asked():
    """The equivalence tests compare fp32 numerics to 1e-6: "auto" precision (bf16 on CPUs with native bf16)
    is pinned to fp32 through $MASKCLIP_PRECISION here; tests of the policy itself unset it."""
    old = os.environ.get("MASKCLIP_PRECISION")
    os.environ["MASKCLIP_PRECISION"] = "fp32"
    yield
    if old is None:
        os.environ.pop("MASKCLIP_PRECISION", None)
    else:
        os.environ["MASKCLIP_PRECISION"] = old


@pytest.fixture(scope="module")
def single_thread():
    """These models are tiny: thread fan-out costs more than it saves and stalls on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def one_thread():
    """The same, per test (for modules that use it with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_vit() -> CLIP:
    torch.manual_seed(0)
    return randomize(CLIP(tiny_config(vit=True)), seed=1).eval()


@pytest.fixture(scope="session")
def tiny_rn() -> CLIP:
    torch.manual_seed(0)
    return randomize(CLIP(tiny_config(vit=False)), seed=2).eval()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
