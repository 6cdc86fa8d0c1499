"""Every numeric choice of MaskCLIP inference, in one frozen dataclass whose fields also define the
command-line options (flag, help, choices: `commands.options` generates them), so one knob is one edit.

Defaults follow the paper and the authors' configs; later papers' and our additions are options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ..normalization import NORMALIZATIONS
from .features import READOUTS


def option(default: Any, help: str, flag: str | None = None, aliases: tuple[str, ...] = (), **kw: Any) -> Any:
    """A config field with its command-line option: `flag` (default --field-name), `aliases`, `help`
    (the default is appended), and argparse's `choices`/`metavar`/`parse` (a type function)."""
    return field(default=default, metadata={"cli": {"help": help, "flag": flag, "aliases": aliases, **kw}})


def _ints(text: str, upper: int = 16384) -> tuple[int, ...]:
    import argparse

    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) <= 0 or max(vals) > upper:
        raise argparse.ArgumentTypeError(f"expected integers in 1..{upper}, got {text!r}")
    return vals


def _size(text: str) -> tuple[int, int]:
    import argparse

    vals = _ints(text)
    if len(vals) > 2:
        raise argparse.ArgumentTypeError(f"expected L or L,S (long, short), got {text!r}")
    return (vals[0], vals[-1])


@dataclass(frozen=True)
class MaskCLIPConfig:
    """Every numeric choice of MaskCLIP inference; defaults follow the paper (each field's help says more).

    readout: how the last layer is read ("authors": value path + residual + FFN; "value-only"; "baseline").
    ks / pd: key smoothing and prompt denoising; ks_threshold 1.0 smooths everywhere (positions whose
      softmax saturates to exactly 1.0 are kept as they are).
    mode "whole" resizes and runs one pass; "slide" runs crop x crop windows every `step` pixels.
    resize "fit" keeps the aspect ratio within `size` = (long, short) (mmseg's keep-ratio rule).
    scales: multi-scale ensemble (supplement Table 5): each value replaces size with (s, s), the
      probabilities are averaged. max_pixels bounds the memory of whole-image passes on huge inputs.
    output_stride: ResNets only; None = 32 as CLIP, 16 or 8 reads the same features a trous (ours).
    """

    readout: Literal["authors", "value-only", "baseline"] = option(
        "authors", "last-layer read-out: 'authors' = value path with residual and FFN as in the authors' code; "
        "'value-only' = no residual/FFN; 'baseline' = unmodified q-k attention (the paper's Table 1a baseline)",
        aliases=("--path",), choices=READOUTS)
    ks: bool = option(False, "key smoothing (paper eq. 5)")
    pd: bool = option(False, "prompt denoising (paper section 3.3)")
    ks_form: Literal["paper", "authors"] = option(
        "paper", "'paper': keys normalised per position (eq. 5); 'authors': normalised along the token axis as in "
        "the authors' code", choices=("paper", "authors"))
    ks_threshold: float = 1.0
    pd_threshold: float = option(0.5, "prompt denoising threshold t on the softmax (paper: 0.5)", parse="fraction")
    pd_keep_top: bool = True
    logit_scale: float = option(100.0, "softmax temperature for probabilities, PD and KS (paper/CLIP: 100; later "
                                "papers: 40)", parse="positive_float")
    mode: Literal["whole", "slide"] = option("whole", "whole image in one pass (paper) or sliding windows",
                                             choices=("whole", "slide"))
    resize: Literal["fit", "short", "none"] = option(
        "fit", "'fit': keep the aspect ratio, fit within --size (mmseg's keep-ratio rule, the authors' configs); "
        "'short': short side = the first --size value; 'none'", choices=("fit", "short", "none"))
    size: tuple[int, int] = option((512, 512), "resize target, L or L,S (Pascal Context 520, Cityscapes 1024,512)",
                                   metavar="L[,S]", parse=_size)
    crop: int = option(224, "sliding-window size (slide mode)", parse=(1, 8192))
    step: int = option(112, "sliding-window step in pixels (slide mode; mmseg calls it stride)",
                       aliases=("--stride",), parse=(1, 8192))
    scales: tuple[int, ...] | None = option(None, "multi-scale ensemble, e.g. 224,336,520 (probabilities averaged; "
                                            "supplement Table 5)", metavar="S1,S2,...", parse=_ints)
    normalize: Literal["clip", "imagenet"] = option(
        "imagenet", "input normalisation: 'imagenet' as the authors' configs or CLIP's own",
        choices=("imagenet", "clip"))
    interpolation: Literal["bilinear", "bicubic"] = option(
        "bilinear", "image resize filter: bilinear as mmseg or bicubic as CLIP's preprocessing",
        choices=("bilinear", "bicubic"))
    window_batch: int = option(16, "windows per encoder batch (bounds memory)", parse=(1, 4096))
    max_pixels: int = option(1536 * 1536, "whole-image inputs larger than this many pixels (after resizing) are "
                             "encoded in big overlapping windows, bounding memory", parse=(1024, 2 ** 31))
    dtype: Literal["fp16", "bf16"] | None = option(
        None, "autocast precision of the image encoder (fp32 = none; fp16/bf16 are faster on GPUs)",
        choices=("fp32", "fp16", "bf16"), none_as="fp32")
    output_stride: int | None = option(
        None, "ResNet CLIPs only: read the dense features at output stride 16 or 8 instead of CLIP's 32 (the "
        "paper's): the same weights, a 2x or 4x finer grid a trous (ours)", flag="--dense-stride",
        choices=(32, 16, 8), parse=int, none_as=32)

    def __post_init__(self) -> None:
        _check_choice(self, "readout", READOUTS)
        _check_choice(self, "mode", ("whole", "slide"))
        _check_choice(self, "resize", ("fit", "short", "none"))
        _check_choice(self, "normalize", tuple(NORMALIZATIONS))
        _check_choice(self, "ks_form", ("paper", "authors"))
        _check_choice(self, "interpolation", ("bilinear", "bicubic"))
        _check_choice(self, "dtype", (None, "fp16", "bf16"))
        _check_choice(self, "output_stride", (None, 8, 16, 32))
        for name in ("pd_threshold", "ks_threshold"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1):
                raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
        scale = self.logit_scale
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"logit_scale must be a finite number > 0, got {self.logit_scale!r}")
        sizes = [*self.size, self.crop, self.step, *(self.scales or ())]
        if any(not isinstance(v, int) or not 0 < v <= 16384 for v in sizes) or len(self.size) != 2:
            raise ValueError(f"size, crop, step and scales must be integers in 1..16384, got size={self.size}, "
                             f"crop={self.crop}, step={self.step}, scales={self.scales}")
        if not 1 <= self.window_batch <= 4096 or self.max_pixels < 1024:
            raise ValueError("window_batch must lie in 1..4096 and max_pixels be at least 1024")


def _check_choice(cfg: MaskCLIPConfig, name: str, allowed: tuple) -> None:
    if getattr(cfg, name) not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {getattr(cfg, name)!r}")


def settings_dict(config: MaskCLIPConfig) -> dict:
    """The config as JSON-ready values (tuples as lists), for sidecars and reports."""
    return {f.name: (list(v) if isinstance(v := getattr(config, f.name), tuple) else v) for f in fields(config)}


__all__ = ["MaskCLIPConfig", "option", "settings_dict"]
