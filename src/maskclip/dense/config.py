"""Every numeric choice of MaskCLIP inference, in one frozen dataclass whose fields also define the
command-line options (flag, help, choices: `commands.options` generates them), so one knob is one edit.

Defaults follow the paper and the authors' configs; later papers' and our additions are options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
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

    readout: Literal["authors", "value-only", "baseline", "sclip", "clearclip", "naclip"] = option(
        "authors", "last-layer read-out: 'authors' = value path with residual and FFN as in the authors' code; "
        "'value-only' = no residual/FFN; 'baseline' = unmodified q-k attention (the paper's Table 1a baseline); "
        "ViTs also 'sclip' (q-q + k-k attention, residual, FFN), 'clearclip' (q-q, no residual/FFN), 'naclip' "
        "(k-k + a Gaussian neighbourhood prior, no residual/FFN); --method sets one with its paper's settings",
        aliases=("--path",), choices=READOUTS)
    naclip_sigma: float = option(5.0, "NACLIP's neighbourhood prior: the Gaussian's sigma in patches",
                                 parse="positive_float")
    pos_embed: Literal["resize", "dino"] = option(
        "resize", "patch position embeddings for another grid: 'resize' bicubic to the grid (MaskCLIP); 'dino' "
        "bicubic by the scale factor (rows + 0.1) / 14 (SCLIP, ClearCLIP, NACLIP)", choices=("resize", "dino"))
    vit_ops: Literal["clip", "authors"] = option(
        "clip", "the image tower's GELU and LayerNorm: CLIP's (QuickGELU, eps 1e-5) or the authors' MMSegmentation "
        "ViT (exact GELU, eps 1e-6)", choices=("clip", "authors"))
    ks: bool = option(False, "key smoothing (paper eq. 5)")
    pd: bool = option(False, "prompt denoising (paper section 3.3)")
    ks_form: Literal["paper", "authors"] = option(
        "paper", "'paper': keys normalised per position (eq. 5); 'authors': normalised along the token axis as in "
        "the authors' code", choices=("paper", "authors"))
    ks_threshold: float = 1.0
    pd_threshold: float = option(0.5, "prompt denoising threshold t on the softmax (paper: 0.5)", parse="fraction")
    pd_keep_top: bool = option(True, "prompt denoising keeps the best class when every class is below the "
                               "threshold (the paper is silent; the authors' code removes all: --no-pd-keep-top)")
    logit_scale: float = option(100.0, "softmax temperature for probabilities, PD and KS (paper/CLIP: 100; later "
                                "papers: 40)", parse="positive_float")
    mode: Literal["whole", "slide"] = option("whole", "whole image in one pass (paper) or sliding windows",
                                             choices=("whole", "slide"))
    resize: Literal["fit", "short", "squash", "none"] = option(
        "fit", "'fit': keep the aspect ratio within --size L,S (mmseg's keep-ratio rule, the authors' configs); "
        "'short': short side = the first --size value; 'squash': exactly --size W,H (the authors' 224x224 "
        "configs); 'none'", choices=("fit", "short", "squash", "none"))
    size: tuple[int, int] = option(
        (2048, 512), "resize target L or L,S: with fit, long side <= L and short side <= S (the authors: 2048,512 = "
        "short side 512; Pascal Context 520,520; Cityscapes 1024,512)", metavar="L[,S]", parse=_size)
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
    pad: Literal["crop", "stretch", "floor", "center"] = option(
        "crop", "sizes that are not a multiple of the stride: 'crop' pads bottom/right and crops the upsampled "
        "scores back; 'stretch' (the authors) upsamples the padded ViT grid (floored ResNet grid) to the size; "
        "'floor' (SCLIP, NACLIP) drops the remainder and stretches; 'center' (ClearCLIP) pads both sides and crops",
        choices=("crop", "stretch", "floor", "center"))
    score: Literal["class-max", "name-softmax"] = option(
        "class-max", "probabilities of synonym classes: 'class-max' = max logit over a class's names, then softmax "
        "over classes; 'name-softmax' (SCLIP, ClearCLIP, NACLIP) = softmax over all names, then max per class",
        choices=("class-max", "name-softmax"))
    multiscale: Literal["probs", "mmseg"] = option(
        "probs", "--scales: average the probabilities at --logit-scale, or mmseg's softmax at temperature 1 "
        "(the authors)", choices=("probs", "mmseg"))
    pamr: bool = option(False, "PAMR refinement of the scores at image size (NACLIP's default)")
    pamr_steps: int = option(10, "PAMR iterations", parse=(1, 100))
    pamr_dilations: tuple[int, ...] = option((8, 16), "PAMR neighbourhood dilations", metavar="D1,D2", parse=_ints)
    area_threshold: float | None = option(
        None, "SCLIP's area rule: a foreground class whose argmax covers at most this share of the foreground "
        "pixels is dropped (VOC21: 0.1)", parse="fraction")
    compat: Literal["clip", "authors"] = option(
        "clip", "'authors' = every choice of the authors' MaskCLIP code (readout authors, KS as their code, PD "
        "removes all, their ViT ops, stretched geometry, mmseg's multi-scale): recorded in every sidecar and "
        "report; other options given override it", choices=("clip", "authors"))
    dtype: Literal["auto", "fp32", "fp16", "bf16"] | None = option(
        "auto", "precision of the image encoder (autocast; softmax, normalisation, KS, PD and the text side stay "
        "fp32): auto = fp16 on CUDA, bf16 on CPUs with native bf16 (AVX512-BF16/AMX; measured safe on the toy "
        "ladder: <= 0.01 mIoU, >= 99.88%% of pixels unchanged), fp32 elsewhere; $MASKCLIP_PRECISION overrides "
        "auto", flag="--precision", aliases=("--dtype",), choices=("auto", "fp32", "fp16", "bf16"), none_as="fp32")
    backend: Literal["torch", "onnx", "openvino"] = option(
        "torch", "image encoder runtime: torch, or on the CPU the exported graph (`maskclip export-onnx`, exported "
        "from the loaded weights in this process, one per window shape) run by ONNX Runtime (fp32; the [onnx] "
        "extra) or OpenVINO (fp32, or bf16 where --precision resolves to it: on ViT-B/16 here about 1.3x torch "
        "bf16; the [openvino] extra)", choices=("torch", "onnx", "openvino"))
    output_stride: int | None = option(
        None, "ResNet CLIPs only: read the dense features at output stride 16 or 8 instead of CLIP's 32 (the "
        "paper's): the same weights, a 2x or 4x finer grid a trous (ours)", flag="--dense-stride",
        choices=(32, 16, 8), parse=int, none_as=32)

    def __post_init__(self) -> None:
        _check_choice(self, "readout", READOUTS)
        _check_choice(self, "mode", ("whole", "slide"))
        _check_choice(self, "resize", ("fit", "short", "squash", "none"))
        _check_choice(self, "normalize", tuple(NORMALIZATIONS))
        _check_choice(self, "ks_form", ("paper", "authors"))
        _check_choice(self, "interpolation", ("bilinear", "bicubic"))
        _check_choice(self, "dtype", (None, "auto", "fp32", "fp16", "bf16"))
        _check_choice(self, "output_stride", (None, 8, 16, 32))
        _check_choice(self, "pos_embed", ("resize", "dino"))
        _check_choice(self, "vit_ops", ("clip", "authors"))
        _check_choice(self, "pad", ("crop", "stretch", "floor", "center"))
        _check_choice(self, "score", ("class-max", "name-softmax"))
        _check_choice(self, "multiscale", ("probs", "mmseg"))
        _check_choice(self, "compat", ("clip", "authors"))
        _check_choice(self, "backend", ("torch", "onnx", "openvino"))
        if self.area_threshold is not None and not 0 <= self.area_threshold <= 1:
            raise ValueError(f"area_threshold must lie in [0, 1], got {self.area_threshold}")
        if not 1 <= self.pamr_steps <= 100 or not self.pamr_dilations or min(self.pamr_dilations) < 1:
            raise ValueError("pamr_steps must lie in 1..100 and pamr_dilations be positive")
        if not (math.isfinite(self.naclip_sigma) and self.naclip_sigma > 0):
            raise ValueError(f"naclip_sigma must be a finite number > 0, got {self.naclip_sigma}")
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


# every choice of the authors' MaskCLIP code where it differs from the paper or CLIP (facts section 2)
AUTHORS = dict(readout="authors", ks_form="authors", pd_keep_top=False, vit_ops="authors", pad="stretch",
               multiscale="mmseg", compat="authors")


def with_compat(config: MaskCLIPConfig, given: dict | None = None) -> MaskCLIPConfig:
    """`config` with compat="authors" spelled out (every AUTHORS choice), then the fields in `given` over it."""
    given = dict(given or {})
    if given.get("compat", config.compat) != "authors":
        return replace(config, **given)
    return replace(config, **{**AUTHORS, **given})


def settings_dict(config: MaskCLIPConfig) -> dict:
    """The config as JSON-ready values (tuples as lists), for sidecars and reports."""
    return {f.name: (list(v) if isinstance(v := getattr(config, f.name), tuple) else v) for f in fields(config)}


__all__ = ["AUTHORS", "MaskCLIPConfig", "option", "settings_dict", "with_compat"]
