"""Named inference settings for benchmarks: the authors' ("paper") and the later training-free papers'."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..dense.config import MaskCLIPConfig
from ..dense.methods import (
    BACKGROUND_DATASETS,  # noqa: E402,F401 - class 0 is a background of stuff names
    method_preset,
)


@dataclass(frozen=True)
class EvalProtocol:
    """A named set of inference settings for a benchmark (a method's protocol brings its own class names)."""

    name: str
    config: MaskCLIPConfig
    templates: str
    bg_threshold: float | None
    classes: list[list[str]] | None = None
    display: list[str] | None = None


def paper_size(dataset: str) -> tuple[int, int]:
    """The authors' whole-image test scales, mmcv's keep-ratio img_scale (long, short): Pascal Context
    (520, 520), Cityscapes (1024, 512), VOC, COCO-Stuff and ADE20K (2048, 512): short side 512, long side at
    most 2048 (500x375 -> 683x512)."""
    if dataset.startswith("context"):
        return (520, 520)
    if dataset == "cityscapes":
        return (1024, 512)
    return (2048, 512)


def protocol(name: str, dataset: str, **overrides) -> EvalProtocol:
    """'paper': the authors' configs (whole image, mmseg keep-ratio fit, ImageNet mean/std, 85 templates,
    logit scale 100, no background threshold).
    'later': SCLIP/ClearCLIP/NACLIP (short side 336, 560 for Cityscapes; 224 windows, stride 112;
    CLIP mean/std; logit scale 40; background threshold 0.1 on VOC21, PC60 and COCO-Object).
    'custom': MaskCLIPConfig defaults, to be overridden.
    'sclip', 'clearclip', 'naclip': that method's read-out with its paper's protocol for the dataset."""
    if name in ("sclip", "clearclip", "naclip"):
        m = method_preset(name, dataset)
        p = EvalProtocol(name, m.config(), m.templates, m.bg_threshold, m.classes, m.display)
    elif name == "paper":
        cfg = MaskCLIPConfig(mode="whole", resize="fit", size=paper_size(dataset), normalize="imagenet",
                             logit_scale=100.0)
        p = EvalProtocol("paper", cfg, "85", None)
    elif name == "later":
        short = 560 if dataset == "cityscapes" else 336
        cfg = MaskCLIPConfig(mode="slide", resize="short", size=(short, short), crop=224, step=112,
                             normalize="clip", logit_scale=40.0)
        p = EvalProtocol("later", cfg, "85", 0.1 if dataset in BACKGROUND_DATASETS else None)
    elif name == "custom":
        p = EvalProtocol("custom", MaskCLIPConfig(), "85", None)
    else:
        raise ValueError(f"unknown protocol {name!r}; choose paper, later, custom, sclip, clearclip or naclip")
    return replace(p, **overrides) if overrides else p


__all__ = ["BACKGROUND_DATASETS", "EvalProtocol", "paper_size", "protocol"]
