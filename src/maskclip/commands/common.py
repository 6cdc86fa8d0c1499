"""Options shared by the commands that run MaskCLIP (segment, label, eval, robustness, train)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from dataclasses import asdict, fields

from ..dense.inference import MaskCLIPConfig
from ..device import resolve_device  # noqa: F401 - the commands' one device check
from ..errors import SettingsError

DEFAULTS = MaskCLIPConfig()


def _ints(text: str, upper: int = 16384) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) <= 0 or max(vals) > upper:
        raise argparse.ArgumentTypeError(f"expected integers in 1..{upper}, got {text!r}")
    return vals


def bounded_int(lo: int, hi: int):
    """An argparse type: an integer in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}..{hi}, got {v}")
        return v
    return parse


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1] (thresholds on probabilities)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not (math.isfinite(v) and 0 <= v <= 1):
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return v


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return v


def add_model_options(p: argparse.ArgumentParser, default: str = "ViT-B/16") -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=default,
                   help=f"CLIP by name (ViT-B/16, ViT-B/32, ViT-L/14, ViT-L/14@336px, RN50, RN101, RN50x4, "
                        f"RN50x16, RN50x64; toy-rn and toy-vit are bundled) or a checkpoint path; default {default}. "
                        "Named OpenAI models are downloaded once into $MASKCLIP_CACHE (~/.cache/maskclip).")
    g.add_argument("--weights", metavar="PATH",
                   help="a local checkpoint (OpenAI TorchScript .pt, state dict, OpenCLIP checkpoint, "
                        "optionally gzip'd); overrides --model, for offline machines")
    g.add_argument("--random-weights", action="store_true",
                   help="use randomly initialised weights of the --model architecture (pipeline checks only; "
                        "outputs are labelled random and mean nothing)")
    g.add_argument("--gelu", action="store_true",
                   help="the checkpoint uses nn.GELU (OpenCLIP's LAION models not named *-quickgelu); OpenAI's use "
                        "QuickGELU, the default")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")


def add_maskclip_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("MaskCLIP (defaults: the paper)")
    g.add_argument("--path", choices=["authors", "value-only", "baseline"], default=DEFAULTS.path,
                   help="last-layer read-out: 'authors' = value path with residual and FFN as in the authors' "
                        "code (default); 'value-only' = no residual/FFN; 'baseline' = unmodified q-k attention "
                        "(the paper's Table 1a baseline)")
    g.add_argument("--ks", action=argparse.BooleanOptionalAction, default=DEFAULTS.ks,
                   help="key smoothing (paper eq. 5)")
    g.add_argument("--ks-form", choices=["paper", "authors"], default=DEFAULTS.ks_form,
                   help="'paper': keys normalised per position (eq. 5, default); 'authors': normalised along the "
                        "token axis as in the authors' code")
    g.add_argument("--pd", action=argparse.BooleanOptionalAction, default=DEFAULTS.pd, help="prompt denoising")
    g.add_argument("--pd-threshold", type=fraction, default=DEFAULTS.pd_threshold,
                   help="prompt denoising threshold t (paper: 0.5)")
    g.add_argument("--logit-scale", type=positive_float, default=DEFAULTS.logit_scale,
                   help="softmax temperature for probabilities, PD and KS (paper/CLIP: 100; later papers: 40)")
    g.add_argument("--mode", choices=["whole", "slide"], default=DEFAULTS.mode,
                   help="whole image in one pass (paper) or sliding windows")
    g.add_argument("--resize", choices=["fit", "short", "none"], default=DEFAULTS.resize,
                   help="'fit': keep aspect, fit within --size (mmseg keep-ratio rule, the authors' configs); "
                        "'short': short side = first --size value; 'none'")
    g.add_argument("--size", type=_ints, default=DEFAULTS.size, metavar="L[,S]",
                   help="resize target, e.g. 512 or 1024,512 (default 512,512; Pascal Context 520)")
    g.add_argument("--scales", type=_ints, default=None, metavar="S1,S2,...",
                   help="multi-scale ensemble, e.g. 224,336,520 (probabilities averaged; supplement Table 5)")
    g.add_argument("--crop", type=bounded_int(1, 8192), default=DEFAULTS.crop, help="sliding-window size (slide mode)")
    g.add_argument("--stride", type=bounded_int(1, 8192), default=DEFAULTS.stride, help="sliding-window stride (slide mode)")
    g.add_argument("--window-batch", type=bounded_int(1, 4096), default=DEFAULTS.window_batch,
                   help="windows per encoder batch (bounds memory)")
    g.add_argument("--max-pixels", type=bounded_int(1024, 2 ** 31), default=DEFAULTS.max_pixels,
                   help="whole-image inputs larger than this many pixels (after resizing) are encoded in overlapping "
                        "windows, bounding memory on very large images")
    g.add_argument("--normalize", choices=["imagenet", "clip"], default=DEFAULTS.normalize,
                   help="input normalisation: 'imagenet' as the authors' configs (default) or CLIP's own")
    g.add_argument("--interpolation", choices=["bilinear", "bicubic"], default=DEFAULTS.interpolation,
                   help="image resize filter: bilinear as mmseg (default) or bicubic as CLIP's preprocessing")
    g.add_argument("--templates", default="85",
                   help="'85' (the paper's prompt templates, default), 'single' ('a photo of a {}.'), or a file "
                        "with one template per line containing {}")
    g.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32",
                   help="autocast precision of the image encoder (fp16/bf16 are faster on GPUs)")
    g.add_argument("--dense-stride", type=int, choices=[32, 16, 8], default=DEFAULTS.output_stride,
                   help="ResNet CLIPs only: read the dense features at output stride 16 or 8 instead of CLIP's 32 "
                        "(the paper's): same weights, the last strides removed and later layers dilated (a trous), "
                        "a 2x or 4x finer grid (default: 32)")


def add_vocabulary_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("vocabulary")
    g.add_argument("--classes", required=required,
                   help="comma-separated class names ('cat,dog,red car'), a file with one class per line, or a packaged list (voc20, context59, coco_stuff171, ade150, cityscapes19, camvid11, ...) "
                        "(synonyms comma-separated on a line: the class score is the max over its names)")
    g.add_argument("--background", default=None,
                   help="comma-separated names merged into one 'background' label, e.g. "
                        "'building,ground,grass,tree,sky' (the paper's web-image demos)")
    g.add_argument("--threshold", type=fraction, default=None,
                   help="pixels whose top probability is below this become background (or 'unknown' without "
                        "--background)")


def config_from_args(args: argparse.Namespace) -> MaskCLIPConfig:
    size = tuple(args.size) if len(args.size) > 1 else (args.size[0], args.size[0])
    try:
        return _config(args, size)
    except ValueError as err:
        raise SettingsError(str(err)) from None


def _config(args: argparse.Namespace, size: tuple[int, ...]) -> MaskCLIPConfig:
    return MaskCLIPConfig(
        path=args.path, ks=args.ks, pd=args.pd, ks_form=args.ks_form, pd_threshold=args.pd_threshold,
        logit_scale=args.logit_scale, mode=args.mode, resize=args.resize, size=size, crop=args.crop,
        stride=args.stride, scales=tuple(args.scales) if args.scales else None, normalize=args.normalize,
        interpolation=args.interpolation, window_batch=args.window_batch, max_pixels=args.max_pixels,
        dtype=None if args.dtype == "fp32" else args.dtype, output_stride=args.dense_stride)


def templates_from_arg(text: str) -> str | list[str]:
    """--templates: '85', 'single', a file with one template a line, or one template containing {}."""
    if text in ("85", "single"):
        return text
    if "{}" in text and "\n" not in text and not Path(text).is_file():
        return [text]
    path = Path(text).expanduser()
    try:
        lines = [ln.strip() for ln in path.read_text("utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise SettingsError(f"--templates {text!r}: neither '85', 'single', a template containing {{}}, nor a "
                            f"readable file ({getattr(err, 'strerror', None) or err})") from None
    if not lines:
        raise SettingsError(f"--templates {path}: the file is empty; give one template a line, each with {{}}")
    bad = [i + 1 for i, ln in enumerate(lines) if "{}" not in ln]
    if bad:
        raise SettingsError(f"--templates {path}: line {bad[0]} has no {{}} where the class name goes "
                            f"({len(bad)} such lines)")
    return lines


def settings_dict(config: MaskCLIPConfig) -> dict:
    d = asdict(config)
    return {f.name: (list(d[f.name]) if isinstance(d[f.name], tuple) else d[f.name]) for f in fields(config)}


# argparse dest -> MaskCLIPConfig field, for commands whose presets the user may override option by option
_CONFIG_FIELDS = {"path": "path", "ks": "ks", "ks_form": "ks_form", "pd": "pd", "pd_threshold": "pd_threshold",
                  "logit_scale": "logit_scale", "mode": "mode", "resize": "resize", "size": "size",
                  "scales": "scales", "crop": "crop", "stride": "stride", "window_batch": "window_batch", "max_pixels": "max_pixels",
                  "normalize": "normalize", "interpolation": "interpolation", "dtype": "dtype",
                  "dense_stride": "output_stride"}


def unset_maskclip_defaults(p: argparse.ArgumentParser) -> None:
    """Make every MaskCLIP option default to None, so that a preset fills what the user did not give."""
    p.set_defaults(**{dest: None for dest in _CONFIG_FIELDS}, templates=None)


def config_overrides(args: argparse.Namespace) -> dict:
    out = {}
    for dest, name in _CONFIG_FIELDS.items():
        v = getattr(args, dest, None)
        if v is None:
            continue
        if name == "size":
            v = tuple(v) if len(v) > 1 else (v[0], v[0])
        elif name == "scales":
            v = tuple(v)
        elif name == "dtype":
            v = None if v == "fp32" else v
        out[name] = v
    return out
