"""Options shared by the commands that run MaskCLIP (segment, label, eval, robustness, train, demo).

The MaskCLIP options are generated from `MaskCLIPConfig`'s fields (commands.options); each defaults to
"not given", so a run uses the model's recommended settings (or an evaluation protocol) and the user's
options over them.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from ..data.image_io import DEFAULT_MAX_PIXELS
from ..dense.config import MaskCLIPConfig
from ..dense.methods import METHODS, method_preset
from ..device import resolve_device  # noqa: F401 - the commands' one device check
from ..errors import SettingsError
from ..pipeline import PipelineOptions
from .options import add_config_options, bounded_int, config_overrides, fraction, positive_float  # noqa: F401


def add_model_options(p: argparse.ArgumentParser, default: str = "ViT-B/16", shown: str | None = None) -> None:
    """`shown`: the default as the help says it, when `default` is a sentinel (e.g. a recipe's choice)."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default=default,
                   help=f"CLIP by name (ViT-B/16, ViT-B/32, ViT-L/14, ViT-L/14@336px, RN50, RN101, RN50x4, "
                        f"RN50x16, RN50x64; toy-rn and toy-vit are bundled) or a checkpoint path; default "
                        f"{shown or default}. "
                        "Named OpenAI models are downloaded once into $MASKCLIP_CACHE (~/.cache/maskclip).")
    g.add_argument("--weights", metavar="PATH",
                   help="a local checkpoint (OpenAI TorchScript .pt, state dict, OpenCLIP checkpoint, optionally "
                        "gzip'd; .safetensors; or a Hugging Face CLIP folder as CLIPModel.save_pretrained writes it); "
                        "overrides --model, for offline machines. Files are read as data: nothing in them runs")
    g.add_argument("--random-weights", action="store_true",
                   help="use randomly initialised weights of the --model architecture (pipeline checks only; "
                        "outputs are labelled random and mean nothing)")
    g.add_argument("--gelu", action="store_true",
                   help="the checkpoint uses nn.GELU (OpenCLIP's LAION models not named *-quickgelu); OpenAI's use "
                        "QuickGELU, the default")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")


def add_maskclip_options(p: argparse.ArgumentParser, flags: dict[str, str] | None = None, prefix: str = "",
                         regions: bool = False) -> None:
    g = p.add_argument_group("MaskCLIP (defaults: the paper; the bundled toy CLIPs: their recommended settings)")
    g.add_argument("--method", dest=prefix + "method", choices=METHODS + (("regions",) if regions else ()),
                   default=None,
                   help="maskclip (default) or a training-free successor, ViT CLIPs only: sclip, clearclip, naclip, "
                        "each with its paper's settings (read-out, geometry, resize, windows, temperature, score "
                        "rule, templates; NACLIP: PAMR; per dataset in eval); the options below override them"
                        + ("; 'regions': classify --proposals masks with a frozen CLIP (region classification)"
                           if regions else ""))
    add_config_options(g, MaskCLIPConfig, flags, note="; bundled toy CLIPs: their own", prefix=prefix)
    g.add_argument("--templates", dest=prefix + "templates", default=None,
                   help="'85' (the paper's prompt templates, the default), '80' (OpenAI's ImageNet templates, the "
                        "successors'), 'single' ('a photo of a {}.'), a file "
                        "with one template per line containing {}, or one template containing {} (bundled toy "
                        "CLIPs: their caption-style templates)")


def add_vocabulary_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("vocabulary")
    g.add_argument("--classes", required=required,
                   help="comma-separated class names ('cat,dog,red car'), a file with one class per line (synonyms "
                        "comma-separated on a line: the class score is the max over its names), or a packaged "
                        "list (voc20, context59, coco_stuff171, ade150, cityscapes19, camvid11, ...)")
    g.add_argument("--background", default=None,
                   help="comma-separated names merged into one 'background' label, e.g. "
                        "'building,ground,grass,tree,sky' (the paper's web-image demos)")
    g.add_argument("--threshold", type=fraction, default=None,
                   help="pixels whose top probability is below this become background (or 'unknown' without "
                        "--background); default: none")


def add_image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-image-pixels", type=bounded_int(1, 2 ** 40), default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse images with more pixels than this before decoding them (a decompression-bomb "
                        f"guard; default: {DEFAULT_MAX_PIXELS})")


def add_batch_options(p: argparse.ArgumentParser, heatmaps: str = "also write a probability heat map per class"
                      ) -> None:
    """What the labelling commands (segment, label, classify-masks) share: input scanning, resumption, progress,
    the image guard and the vocabulary."""
    p.add_argument("--recursive", action="store_true", help="also look for images in sub-directories")
    p.add_argument("--heatmaps", action="store_true", help=heatmaps)
    p.add_argument("--save-probs", action="store_true",
                   help="also write OUT/probs/NAME.npy: the class probabilities, float16 K x H x W (np.load reads it), "
                        "for post-processing; exports then carry per-class scores")
    p.add_argument("--no-resume", action="store_true",
                   help="recompute images whose outputs already exist with the same settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_image_options(p)
    add_pipeline_options(p)
    add_vocabulary_options(p)


def add_pipeline_options(p: argparse.ArgumentParser) -> None:
    """The batched pipeline's budget (`maskclip.pipeline`): the outputs do not depend on it, memory and speed do."""
    d = PipelineOptions()
    g = p.add_argument_group("pipeline (speed and memory; the outputs do not depend on it)")
    g.add_argument("--workers", type=bounded_int(0, 64), default=None, metavar="N",
                   help="processes decoding the next images while the model runs (default: 2 with CUDA, 0 on a CPU, "
                        "where the model's threads already use every core)")
    g.add_argument("--batch-images", type=bounded_int(1, 1024), default=None, metavar="N",
                   help="images encoded together, their windows sharing encoder passes of --window-batch windows "
                        "(default: 8 with CUDA, 1 on a CPU, where larger batches measured no faster)")
    g.add_argument("--batch-pixels", type=bounded_int(1, 2 ** 40), default=d.batch_pixels, metavar="N",
                   help=f"at most this many decoded input pixels in one batch (bounds memory; an image over it goes "
                        f"alone; default {d.batch_pixels})")


def pipeline_from_args(args: argparse.Namespace) -> PipelineOptions:
    return PipelineOptions(workers=args.workers, batch_images=args.batch_images, batch_pixels=args.batch_pixels)


def add_export_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--export", default=None, metavar="F[,F...]",
                   help="also write the labels as coco, coco-panoptic, labelstudio, cvat and/or masks (binary, one per "
                        "class) into OUT/export/ "
                        "(the same as `maskclip export OUT --format ...` afterwards; see its --help)")


def unseen_names(text: str) -> tuple[str, ...]:
    """--unseen: comma-separated names, or a packaged zero-shot split (voc20, coco_stuff171, context60, ...)."""
    from ..data.splits import SPLITS, load_split

    if text.strip().lower() in SPLITS:
        return tuple(load_split(text.strip().lower())[1])
    return tuple(t.strip() for t in text.split(",") if t.strip())


def method_base(args: argparse.Namespace, prefix: str = "") -> tuple[MaskCLIPConfig | None, str | None]:
    """The --method preset's config and templates (None, None without --method)."""
    method = getattr(args, prefix + "method", None)
    if method is None or method == "regions":  # regions: MaskCLIP's own settings for its dense side
        return None, None
    preset = method_preset(method)
    return preset.config(), preset.templates


def overrides_from_args(args: argparse.Namespace, prefix: str = "") -> dict:
    """The MaskCLIP settings the user gave (checked: a SettingsError names the problem)."""
    over = config_overrides(args, MaskCLIPConfig, prefix)
    try:
        replace(MaskCLIPConfig(), **over)  # every given value valid, before any model loads
    except ValueError as err:
        raise SettingsError(str(err)) from None
    return over


def config_from_args(args: argparse.Namespace, base: MaskCLIPConfig | None = None, prefix: str = "") -> MaskCLIPConfig:
    """`base` (default: MaskCLIPConfig's defaults) with the user's options over it."""
    try:
        return replace(base or MaskCLIPConfig(), **overrides_from_args(args, prefix))
    except ValueError as err:
        raise SettingsError(str(err)) from None


def templates_from_arg(text: str | None) -> str | list[str] | None:
    """--templates: '85', 'single', a file with one template a line, or one template containing {}."""
    if text is None or text in ("85", "80", "single"):
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
