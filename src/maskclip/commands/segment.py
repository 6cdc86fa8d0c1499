"""`maskclip segment`: open-vocabulary masks for image files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (add_maskclip_options, add_model_options, add_vocabulary_options, config_from_args,
                     resolve_device, settings_dict, templates_from_arg)

EPILOG = """examples:
  maskclip segment photo.jpg --classes "cat,dog" --out masks/
  maskclip segment photos/ --classes "red car,yellow car" --background "building,ground,grass,tree,sky" --out out/
  maskclip segment img.png --classes classes.txt --ks --pd --mode slide --heatmaps --out out/
  maskclip segment photos/ --model runs/voc/model.pt --classes voc20 --out out/   (MaskCLIP+ from `maskclip train`;
      any class names work: they are embedded with the CLIP and templates recorded in the checkpoint)

for each image OUT/<stem>.png holds label ids (palette PNG; index i = i-th class, then 'background' or
'unknown'), OUT/<stem>_overlay.png a colour overlay with a legend, OUT/<stem>.json the classes, palette,
settings and model hash."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment images with free-text class names (MaskCLIP, no training)",
                       description="Per-pixel labels for any list of class names, from a frozen CLIP (MaskCLIP).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIRS",
                   help="image files (JPEG/PNG/WebP/BMP/TIFF) and/or directories of images")
    p.add_argument("--out", required=True, type=Path, help="output directory (created if needed)")
    p.add_argument("--recursive", action="store_true", help="also look for images in sub-directories")
    p.add_argument("--heatmaps", action="store_true", help="also write a probability heat map per class")
    p.add_argument("--no-resume", action="store_true",
                   help="recompute images whose outputs already exist with the same settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_vocabulary_options(p)
    add_model_options(p)
    add_maskclip_options(p)
    p.set_defaults(func=run)


def classes_from_arg(text: str) -> list[list[str]]:
    """'cat,dog', a class file, or a packaged list name (voc20, context59, coco_stuff171, ade150, ...)."""
    from ..data.classes import CLASS_LISTS, load_class_names, parse_class_arg

    if text.strip().lower().replace("-", "_") in CLASS_LISTS and not Path(text).exists():
        return load_class_names(text)
    return parse_class_arg(text)


def prepare(args: argparse.Namespace):
    """Shared by segment and label: vocabulary, files, predictor and the metadata every sidecar carries."""
    from ..annotate import Vocabulary
    from ..data.image_io import list_images
    from ..predictors import predictor_identity

    try:
        classes = classes_from_arg(args.classes)
        background = [n.strip() for n in args.background.split(",") if n.strip()] if args.background else None
        if args.background is not None and not background:
            raise ValueError("--background is empty; give names like 'building,ground,grass,tree,sky'")
        files = list_images(args.inputs, recursive=args.recursive)
        config = config_from_args(args)
        templates = templates_from_arg(args.templates)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}") from None
    predictor = predictor_from_args(args, config, templates)
    ident = predictor_identity(predictor)
    meta = {"model": ident["model"] or args.model, "model_sha256": ident["model_sha256"],
            "settings": settings_dict(config), "templates": args.templates}
    if ident["kind"] == "maskclip+":  # new names are embedded with the checkpoint's templates, not --templates
        meta.update(kind="maskclip+", templates=predictor.templates)
    return Vocabulary(classes, background, args.threshold), files, predictor, meta


def predictor_from_args(args: argparse.Namespace, config, templates):
    """MaskCLIP for a CLIP --model/--weights; MaskCLIP+ when --model is a checkpoint written by `maskclip train`
    (then --weights, if given, is the CLIP whose text encoder embeds new class names)."""
    from ..clip.weights import WeightsError
    from ..predictors import is_plus_checkpoint, load_predictor

    device = resolve_device(args.device)
    plus = is_plus_checkpoint(args.model)
    if args.random_weights and not plus:
        print(f"warning: --random-weights: {args.model} with RANDOM weights; the labels mean nothing",
              file=sys.stderr)
    try:
        if plus:
            return load_predictor(args.model, device, templates, config, quick_gelu=not args.gelu,
                                  clip_weights=args.weights)
        return load_predictor(args.weights or args.model, device, templates, config, quick_gelu=not args.gelu,
                              random_weights=args.random_weights)
    except WeightsError as err:
        raise SystemExit(f"error: {err}") from None


def run(args: argparse.Namespace) -> int:
    from ..annotate import label_files

    vocab, files, predictor, meta = prepare(args)
    report = label_files(predictor, files, args.out, vocab, meta, heatmaps=args.heatmaps,
                         resume=not args.no_resume, progress=not args.quiet)
    print(report.summary(), file=sys.stderr if report.failed else sys.stdout)
    return 1 if report.failed else 0
