"""`maskclip segment`: open-vocabulary masks for image files."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ..annotate import LabelOptions, label_files
from ..clip.tokenizer import CONTEXT_LENGTH
from ..data.image_io import scan_images
from ..dense.config import MaskCLIPConfig, settings_dict
from ..dense.predictor import MaskCLIPPredictor
from ..dense.text import resolve_templates
from ..errors import SettingsError
from ..io.layout import OutputLayout, check_no_overwrite, check_out_dir, output_names
from ..predict import is_plus_checkpoint, load_predictor, predictor_identity
from ..vocab import Vocabulary, parse_vocabulary
from .common import (
    add_batch_options,
    add_export_option,
    add_maskclip_options,
    add_model_options,
    method_base,
    overrides_from_args,
    pipeline_from_args,
    resolve_device,
    templates_from_arg,
)

EPILOG = """examples:
  maskclip segment photo.jpg --classes "cat,dog" --out masks/
  maskclip segment photos/ --classes "red car,yellow car" --background "building,ground,grass,tree,sky" --out out/
  maskclip segment img.png --classes classes.txt --ks --pd --mode slide --heatmaps --out out/
  maskclip segment photos/ --model runs/voc/model.pt --classes voc20 --out out/   (MaskCLIP+ from `maskclip train`;
      any class names work: they are embedded with the CLIP and templates recorded in the checkpoint)

for each image (NAME = its path below the folder holding all inputs, without the extension):
  OUT/labels/NAME.png    label ids (palette PNG; index i = i-th class, then 'background' or 'unknown')
  OUT/labels/NAME.json   classes, palette, settings, model hash, source file (written last: marks it done)
  OUT/overlays/NAME.png  colour overlay with a legend       OUT/heatmaps/NAME/  with --heatmaps
Re-running skips images done with the same settings from the same (unchanged) file. Outputs never
overwrite an input: an --out that would is refused before any work."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment images with free-text class names (MaskCLIP, no training)",
                       description="Per-pixel labels for any list of class names, from a frozen CLIP (MaskCLIP).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIRS",
                   help="image files (JPEG/PNG/WebP/BMP/TIFF) and/or directories of images")
    p.add_argument("--out", required=True, type=Path, help="output directory (created if needed)")
    add_export_option(p)
    add_batch_options(p)
    add_model_options(p)
    add_maskclip_options(p)
    p.set_defaults(func=run)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass
class Job:
    """Everything `segment` and `label` checked before the model loads: what to label, where, with what."""

    vocab: Vocabulary
    files: list[Path]
    names: list[str]
    skipped: list[tuple[Path, str]]
    layout: OutputLayout
    overrides: dict  # the MaskCLIP settings the user gave (over the model's recommended ones)
    templates: str | list[str] | None
    base: MaskCLIPConfig | None = None  # a --method's preset (None: the model's recommended settings)


def plan(args: argparse.Namespace, exclude: tuple[Path, ...] = ()) -> Job:
    """Every option and input checked once, before the model loads or any image is read (SettingsError);
    `exclude`: more folders never scanned for images (e.g. the masks of classify-masks)."""
    vocab = parse_vocabulary(args.classes, args.background, args.threshold, warn=warn)
    if getattr(args, "export", None):
        from ..export.writer import parse_formats

        parse_formats(args.export)  # a wrong name fails now, not after labelling
    overrides = overrides_from_args(args)
    if overrides.get("backend", "torch") != "torch":  # a missing extra fails now, not after loading the model
        from ..onnx_backend import require_onnx

        require_onnx(overrides["backend"])
    base, method_templates = method_base(args)
    templates = templates_from_arg(args.templates) or method_templates
    vocab.check_prompts(resolve_templates(templates or "85"), CONTEXT_LENGTH)
    resolve_device(args.device)
    layout = OutputLayout(check_out_dir(args.out))
    try:
        files, skipped = scan_images(args.inputs, recursive=args.recursive, exclude=[*layout.folders(), *exclude])
    except (FileNotFoundError, ValueError) as err:
        raise SettingsError(str(err)) from None
    names = output_names(files)
    check_no_overwrite(files, layout, names)
    for path, why in skipped:
        warn(f"skipped {path}: {why}")
    return Job(vocab, files, names, skipped, layout, overrides, templates, base)


def prepare(args: argparse.Namespace):
    """Shared by segment and label: the checked job, the predictor and the metadata every sidecar carries."""
    job = plan(args)
    return (job, *load(args, job))


def load(args: argparse.Namespace, job: Job):
    """The predictor of a checked job and the metadata every sidecar carries (what each Ray actor runs)."""
    predictor = predictor_from_args(args, job)
    if isinstance(predictor, MaskCLIPPredictor):  # the real context (toy CLIPs have a shorter one than 77)
        job.vocab.check_prompts(resolve_templates(predictor.templates), predictor.model.context_length)
    ident = predictor_identity(predictor)
    # what the run really uses: the model's recommended settings with the user's over them; a MaskCLIP+
    # network embeds new names with its checkpoint's templates
    meta = {**ident, "settings": settings_dict(predictor.config), "templates": predictor.templates}
    return predictor, meta


def predictor_from_args(args: argparse.Namespace, job: Job):
    """MaskCLIP for a CLIP --model/--weights; MaskCLIP+ when --model is a checkpoint written by `maskclip train`
    (then --weights, if given, is the CLIP whose text encoder embeds new class names)."""
    device = resolve_device(args.device)
    plus = is_plus_checkpoint(args.model)
    if args.random_weights and not plus:
        warn(f"--random-weights: {args.model} with RANDOM weights; the labels mean nothing")
    if plus:
        return load_predictor(args.model, device, job.templates, job.base, job.overrides, quick_gelu=not args.gelu,
                              clip_weights=args.weights)
    return load_predictor(args.weights or args.model, device, job.templates, job.base, job.overrides,
                          quick_gelu=not args.gelu, random_init=args.random_weights)


def run(args: argparse.Namespace) -> int:
    job, predictor, meta = prepare(args)
    report = label_files(predictor, job.files, job.layout, job.vocab, meta,
                         LabelOptions(args.heatmaps, not args.no_resume, not args.quiet, args.max_image_pixels,
                                      save_probs=args.save_probs, class_scores=bool(args.export)),
                         names=job.names, pipeline=pipeline_from_args(args))
    print(summary(report, job), file=sys.stderr if report.failed else sys.stdout)
    export_after(args, job)
    return 1 if report.failed else 0


def export_after(args: argparse.Namespace, job: Job) -> None:
    """--export: the finished run's labels in the formats asked for (checked in `plan`, before any work)."""
    if args.export:
        from ..export.writer import export_run, parse_formats

        for fmt, path in export_run(job.layout.root, parse_formats(args.export)).items():
            print(f"export {fmt}: {path}")


def summary(report, job: Job) -> str:
    text = report.summary() + f"\noutputs: {job.layout.root}/labels, overlays" + (", heatmaps" if any(
        job.layout.heatmaps(n).exists() for n in report.done_names[:1]) else "")
    if job.skipped:
        text += f"\n{len(job.skipped)} files in the input folders were not images and were skipped (listed above)"
    return text
