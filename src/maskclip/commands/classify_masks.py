"""`maskclip classify-masks`: name given masks (segment-anything's, COCO RLE, instance ids) with free text."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, replace
from pathlib import Path

from ..annotate import LabelOptions, label_files
from ..dense.config import settings_dict
from ..dense.predictor import MaskCLIPPredictor
from ..errors import SettingsError
from ..io.layout import check_no_overwrite
from ..regions.config import RegionConfig
from ..regions.predictor import RegionPredictor
from .common import (
    add_batch_options,
    add_config_options,
    add_maskclip_options,
    add_model_options,
    bounded_int,
    config_overrides,
    fraction,
    pipeline_from_args,
)
from .segment import plan, predictor_from_args, summary

EPILOG = """examples:
  maskclip classify-masks photos/ --masks sam_out/ --classes "cat,dog,sofa,floor,wall" --out named/
      (sam_out/ as segment-anything's scripts/amg.py writes it: NAME.json with --convert-to-rle, or NAME/ folders)
  maskclip classify-masks img.jpg --masks img_ids.png --classes coco_stuff171 --merge pool --out out/
  maskclip classify-masks val2017/ --masks instances_val2017.json --classes coco_object_expanded --out out/
  maskclip classify-masks photos/ --proposals regions --merge pool --classes "cat,dog" --out out/
  maskclip classify-masks photos/ --proposals runs/props/model.pt --classes voc20 --out out/

masks per image (NAME = its path below the folder holding all inputs, without the extension): --masks FILE
applies to every image (a COCO instances file is looked up by the image's file name); --masks DIR holds
DIR/NAME.png (instance ids), DIR/NAME.json (RLE / SAM records) or DIR/NAME/ (SAM's PNG folder).
outputs: as `maskclip segment` (OUT/labels/NAME.png, .json, OUT/overlays/NAME.png); the sidecar also lists
one record per mask: label, score, top-k classes, area and the mask's own fields (SAM's predicted_iou, ...).
Pixels no mask covers are 'background' with --background, else 'unknown'."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify-masks", help="name masks (segment-anything, COCO RLE, instance ids) with free text",
                       description="Classify each mask with a frozen CLIP (the decoupling paradigm: Ding et al.; "
                                   "Xu et al.) and paint the image with the masks' labels.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIRS", help="image files and/or directories of images")
    p.add_argument("--out", required=True, type=Path, help="output directory (created if needed)")
    src = add_region_options(p, "where the masks come from (one of --masks, --proposals)")
    src.add_argument("--masks", type=Path, default=None, metavar="PATH_OR_DIR",
                     help="a mask file for every image, or a folder with one per image (see below)")
    src.add_argument("--max-masks", type=bounded_int(1, 10 ** 6), default=1000, metavar="N",
                     help="refuse a mask file with more masks than this for one image (default: 1000)")
    add_batch_options(p, "also write a heat map per class (O normalised per pixel)")
    add_model_options(p)
    add_maskclip_options(p)
    p.set_defaults(func=run)


def add_region_options(p: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """--proposals, --min-region and the RegionConfig options (classify-masks and eval --method regions);
    returns the group of mask sources."""
    src = p.add_argument_group(title)
    src.add_argument("--proposals", default=None, metavar="MODEL_OR_regions",
                     help="'regions': the connected regions of MaskCLIP's own labels (training-free); or a proposal "
                          "generator written by `maskclip train-proposals` (its seen-class scores join eq. 1)")
    src.add_argument("--no-object", type=fraction, default=None, metavar="P",
                     help="--proposals MODEL: drop the generator's queries whose no-object probability exceeds P "
                          "(default: keep all N, as MaskFormer's semantic inference does)")
    src.add_argument("--min-region", type=fraction, default=0.001, metavar="FRACTION",
                     help="--proposals regions: smaller regions keep MaskCLIP's label (default: 0.001 of the image)")
    g = p.add_argument_group("region classification")
    add_config_options(g, RegionConfig, prefix="region_")
    return src


def region_predictor(dense, args: argparse.Namespace, cfg: RegionConfig, proposals) -> RegionPredictor:
    """The RegionPredictor over a MaskCLIP predictor: `proposals` None (masks per image), "regions" or a
    proposal-generator file (loaded here, after every option was checked)."""
    if not isinstance(dense, MaskCLIPPredictor):
        raise SettingsError(f"--model {args.model}: a MaskCLIP+ network cannot classify masks; give a CLIP")
    if isinstance(proposals, Path):
        from ..proposals.generator import ProposalGenerator

        proposals = ProposalGenerator.load(proposals, device=dense.device, no_object_threshold=args.no_object)
    return RegionPredictor(dense, cfg, proposals=proposals, min_area=args.min_region)


def region_config(args: argparse.Namespace) -> RegionConfig:
    try:
        return replace(RegionConfig(), **config_overrides(args, RegionConfig, prefix="region_"))
    except ValueError as err:
        raise SettingsError(str(err)) from None


def mask_source(args: argparse.Namespace):
    """The --masks finder or the --proposals source, checked before any model loads."""
    if (args.masks is None) == (args.proposals is None):
        raise SettingsError("give exactly one of --masks PATH_OR_DIR and --proposals MODEL|regions")
    if args.masks is not None:
        if not args.masks.exists():
            raise SettingsError(f"--masks {args.masks}: no such file or folder")
        from ..regions.mask_io import find_masks_for

        return lambda image, name: find_masks_for(args.masks, image, name), None
    if args.proposals == "regions":
        return None, "regions"
    if not Path(args.proposals).is_file():
        raise SettingsError(f"--proposals {args.proposals}: neither 'regions' nor a proposal-generator file")
    return None, Path(args.proposals)


def check_masks(masks: Path | None, finder, job) -> None:
    """No mask file is an input image, and no output would overwrite a mask file (before any work)."""
    if finder is None:
        return
    images = {p.resolve() for p in job.files}
    found = []
    for path, name in zip(job.files, job.names):
        try:
            found.append(finder(path, name))
        except SettingsError:
            continue  # reported for that image when it comes
    for m in found:
        if m.resolve() in images:
            raise SettingsError(f"--masks {masks}: the mask file {m} is also an input image; give the masks apart")
    check_no_overwrite([*job.files, *found], job.layout, job.names)


def run(args: argparse.Namespace) -> int:
    cfg = region_config(args)
    finder, proposals = mask_source(args)
    job = plan(args, exclude=(args.masks,) if args.masks is not None and args.masks.is_dir() else ())
    check_masks(args.masks, finder, job)
    dense = predictor_from_args(args, job)
    predictor = region_predictor(dense, args, cfg, proposals)
    ident = dense.identity()
    meta = {"model": ident.name, "model_sha256": ident.sha256, "kind": "regions", "templates": dense.templates,
            "settings": settings_dict(dense.config), "regions": asdict(cfg),
            "proposals": str(args.proposals or "masks"), "no_object": args.no_object}
    opts = LabelOptions(args.heatmaps, not args.no_resume, not args.quiet, args.max_image_pixels,
                        # masks: the full size
                        reduced_decode_pixels=2 ** 62, max_masks=args.max_masks, save_probs=args.save_probs)
    report = label_files(predictor, job.files, job.layout, job.vocab, meta, opts, names=job.names, masks_for=finder,
                         pipeline=pipeline_from_args(args))
    print(summary(report, job), file=sys.stderr if report.failed else sys.stdout)
    return 1 if report.failed else 0
