"""`maskclip eval`: mIoU and friends of MaskCLIP (or a trained MaskCLIP+ model) on a benchmark."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from ..dense.config import settings_dict
from ..dense.methods import method_preset
from ..errors import SettingsError
from ..eval.report import pct
from ..io.layout import check_out_dir
from .classify_masks import region_config, region_predictor
from .common import (
    add_maskclip_options,
    add_model_options,
    add_pipeline_options,
    bounded_int,
    fraction,
    overrides_from_args,
    pipeline_from_args,
    resolve_device,
    templates_from_arg,
)

EPILOG = """protocols (each MaskCLIP option given on the command line overrides the preset):
  paper  the authors' configs: whole image resized with keep-ratio img_scale 520x520 (Pascal Context),
         1024x512 (Cityscapes) or 2048x512 (VOC, COCO-Stuff, ADE: short side 512), ImageNet mean/std,
         85 templates, logit scale 100 (add --compat authors for every choice of their code)
  later  SCLIP/ClearCLIP/NACLIP: short side 336 (560 Cityscapes), 224 windows with stride 112, CLIP mean/std,
         logit scale 40, background threshold 0.1 on voc21/context60/coco-object
  sclip, clearclip, naclip   each method's own per-dataset protocol (also set by --method)

examples:
  maskclip eval --dataset context59 --root data/VOCdevkit --model ViT-B/16 --ks --pd
  maskclip eval --dataset coco-object --root coco/ --protocol later --limit 50 --save-vis 8
  maskclip eval --dataset camvid --root camvid/ --corruption gaussian_noise --severity 3
  maskclip eval --dataset voc20 --root VOCdevkit --method regions --proposals runs/props/model.pt --unseen voc20
  maskclip eval --dataset coco-object --root coco/ --method regions --proposals sam_masks/ --merge pool

Re-running the same command resumes where it stopped; the report goes to OUT/report.json and OUT/report.md."""


def register(sub: argparse._SubParsersAction) -> None:
    from ..data.datasets import DATASETS

    p = sub.add_parser("eval", help="evaluate MaskCLIP / MaskCLIP+ on a segmentation benchmark",
                       description="Evaluate on a benchmark: per-class IoU, mIoU, pAcc, mAcc, fwIoU (and seen/unseen "
                                   "mIoU and hIoU with --unseen), with a JSON report and a Markdown table.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_options(p, DATASETS)
    p.add_argument("--corruption", default=None,
                   help="apply an ImageNet-C corruption to every image (gaussian_noise, shot_noise, impulse_noise, "
                        "speckle_noise, gaussian_blur, defocus_blur, spatter, jpeg_compression)")
    p.add_argument("--severity", type=int, default=3, choices=range(1, 6), help="corruption severity 1-5")
    p.set_defaults(func=run)


def folder_options(args: argparse.Namespace) -> dict:
    """The reader options of --dataset folder, checked."""
    mapping = None
    if args.label_map:
        try:
            mapping = {int(k): int(v) for k, v in (item.split(":") for item in args.label_map.split(",") if item)}
        except ValueError:
            raise SettingsError(f"--label-map {args.label_map!r}: expected VALUE:CLASS_ID pairs, e.g. '0:255,1:0'"
                                ) from None
    return {"classes": args.classes, "images": args.image_dir, "labels": args.label_dir,
            "label_suffix": args.label_suffix, "label_map": mapping, "reduce_zero_label": args.reduce_zero_label,
            "ignore_index": args.ignore_index}


def add_eval_options(p: argparse.ArgumentParser, datasets) -> None:
    p.add_argument("--dataset", required=True, help=f"benchmark name: {', '.join(sorted(datasets))}")
    p.add_argument("--root", required=True, type=Path, help="dataset root directory (MMSegmentation layouts)")
    add_pipeline_options(p)
    p.add_argument("--split", default="val", help="split to evaluate (default val)")
    p.add_argument("--classes", default=None,
                   help="for --dataset folder: class names ('a,b,c') or a class file, in label-id order")
    g = p.add_argument_group("--dataset folder (ROOT/IMAGE_DIR/*.jpg|png with ROOT/LABEL_DIR/<stem>SUFFIX.png)")
    g.add_argument("--image-dir", default="images", metavar="NAME", help="image sub-folder of --root (default images)")
    g.add_argument("--label-dir", default="labels", metavar="NAME", help="label sub-folder of --root (default labels)")
    g.add_argument("--label-suffix", default="", help="label file name = image stem + this + .png (default none)")
    g.add_argument("--label-map", default=None, metavar="V:ID,...",
                   help="stored label value -> class id, e.g. '0:255,1:0,2:1' (values not listed are ignored; "
                        "default: values are class ids)")
    g.add_argument("--reduce-zero-label", action="store_true",
                   help="value 0 is background/void: ignored, the others shifted down by one")
    g.add_argument("--ignore-index", type=int, default=255, help="label value that is not scored (default 255)")
    p.add_argument("--protocol", choices=["paper", "later", "custom", "sclip", "clearclip", "naclip"], default=None,
                   help="inference preset (see below); default: the --method's, else paper, or a bundled toy "
                        "CLIP's recommended settings")
    p.add_argument("--limit", type=bounded_int(1, 10 ** 9), default=None,
                   help="only the first N images (quick runs; a different N starts the evaluation over)")
    p.add_argument("--bg-threshold", type=fraction, default=None,
                   help="pixels whose top probability is below this become the background class 0 "
                        "(the later protocol sets 0.1 on voc21/context60/coco-object)")
    p.add_argument("--unseen", default=None,
                   help="unseen classes for zero-shot metrics (mIoU(S), mIoU(U), hIoU): comma-separated names, or a "
                        "packaged split: voc20, coco_stuff171, context60, context59, ade847 (their sources: "
                        "maskclip/assets/splits/SOURCES.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of the corruptions")
    p.add_argument("--save-vis", type=bounded_int(0, 10 ** 9), default=0, metavar="N",
                   help="write image | ground truth | prediction panels for the first N images to OUT/vis")
    p.add_argument("--out", type=Path, default=None, help="output directory (default runs/eval/<dataset>-<protocol>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p)
    add_maskclip_options(p, regions=True)
    from .classify_masks import add_region_options

    add_region_options(p, "--method regions: where the masks come from (--proposals: also a folder of mask files, "
                          "one per image, named as the images)")


def _regions(args: argparse.Namespace) -> tuple[object, Path | None]:
    """(what RegionPredictor takes as proposals, a masks folder) for --method regions; checked up front."""
    if args.method != "regions":
        if args.proposals is not None:
            raise SettingsError("--proposals is for --method regions")
        return None, None
    if args.proposals is None:
        raise SettingsError("--method regions needs --proposals: 'regions', a proposal generator or a masks folder")
    if args.proposals == "regions":
        return "regions", None
    path = Path(args.proposals)
    if path.is_dir():
        return None, path
    if not path.is_file():
        raise SettingsError(f"--proposals {args.proposals}: neither 'regions', a proposal-generator file nor a folder")
    return path, None


def prepare(args: argparse.Namespace):
    """Dataset, predictor, protocol and settings for eval and robustness; every option is checked before
    the model loads (SettingsError)."""
    from ..data.datasets import DatasetError, canonical_dataset_name, open_dataset
    from ..predict import load_predictor, predictor_identity

    try:
        name = canonical_dataset_name(args.dataset)
        extra = folder_options(args) if name == "folder" else {}
        if name == "folder" and not args.classes:
            raise ValueError("--dataset folder needs --classes (names in label-id order)")
        dataset = open_dataset(name, args.root, args.split, **extra)
    except (DatasetError, ValueError, FileNotFoundError) as err:
        raise SettingsError(f"--dataset {args.dataset}: {err}") from None
    proto = _protocol(args, name)
    overrides = overrides_from_args(args)
    proposals, masks_dir = _regions(args)
    region_cfg = region_config(args) if args.method == "regions" else None
    if args.method not in (None, "regions") and proto is not None and proto.name != args.method:  # another geometry
        overrides = {"readout": method_preset(args.method).fields.get("readout", "authors"), **overrides}
    templates = templates_from_arg(args.templates) or (proto.templates if proto else None)
    bg = args.bg_threshold if args.bg_threshold is not None else (proto.bg_threshold if proto else None)
    if bg is not None and not dataset.class_names[0].lower().startswith("background"):
        raise SettingsError(f"--bg-threshold needs a dataset whose class 0 is background; {dataset.name} starts "
                            f"with {dataset.class_names[0]!r}")
    unseen = _unseen_ids(args.unseen, dataset)
    device = resolve_device(args.device)
    if args.out is not None:
        check_out_dir(args.out)
    predictor = load_predictor(args.weights or args.model, device=device, templates=templates,
                               config=proto.config if proto else None, overrides=overrides, quick_gelu=not args.gelu,
                               random_init=args.random_weights)
    ident = predictor_identity(predictor)
    tmpl = getattr(predictor, "templates", templates)
    settings = {**ident, "protocol": proto.name if proto else "model", "config": settings_dict(predictor.config),
                "templates": tmpl if isinstance(tmpl, str) else list(tmpl), "split": args.split}
    settings["method"] = args.method or "maskclip"
    if region_cfg is not None:
        predictor = region_predictor(predictor, args, region_cfg, proposals)
        settings.update(regions=asdict(region_cfg), proposals=str(args.proposals), min_region=args.min_region,
                        no_object=args.no_object)
    return dataset, predictor, settings, bg, unseen, proto, masks_dir


def _protocol(args: argparse.Namespace, dataset: str):
    """The --protocol preset; without one, a bundled toy CLIP's own settings (None), else the paper's."""
    from ..clip.weights import bundled_models
    from ..eval.protocols import protocol

    if args.protocol is None and args.method in ("sclip", "clearclip", "naclip"):
        return protocol(args.method, dataset)
    if args.protocol is None:
        entry = bundled_models().get(args.weights or args.model)
        if entry is not None and entry.recommended and not args.random_weights:
            return None
    return protocol(args.protocol or "paper", dataset)


def _unseen_ids(text: str | None, dataset) -> list[int] | None:
    """--unseen: a packaged zero-shot split's name (voc20, coco_stuff171, context60, context59, ade847) or class
    names, matched by the names the dataset shows first, then by any synonym (the first class naming it)."""
    from ..data.splits import SPLITS, load_split

    if not text:
        return None
    if text.strip().lower() in SPLITS:
        seen, unseen = load_split(text.strip().lower())
        if sorted(seen + unseen) != sorted(dataset.class_names):
            raise SettingsError(f"--unseen {text}: that split is of another class list than {dataset.name}'s")
        return sorted(dataset.class_names.index(n) for n in unseen)
    wanted = [n.strip().lower() for n in text.split(",") if n.strip()]
    lookup = {}
    for i, c in enumerate(dataset.classes):
        for n in c:
            lookup.setdefault(n.lower(), i)
    lookup.update({n.lower(): i for i, n in enumerate(dataset.class_names)})
    missing = [n for n in wanted if n not in lookup]
    if missing or not wanted:
        raise SettingsError(f"--unseen: {missing or text!r} are not classes of {dataset.name}: "
                            f"{', '.join(dataset.class_names)}")
    return sorted({lookup[n] for n in wanted})


def run(args: argparse.Namespace) -> int:
    from ..eval.loop import Corruption
    from ..eval.runner import EvalJob, evaluate

    dataset, predictor, settings, bg, unseen, proto, masks_dir = prepare(args)
    tag = f"{dataset.name}-{settings['protocol']}" + (f"-{args.corruption}{args.severity}" if args.corruption else "")
    out = args.out or Path("runs") / "eval" / tag
    corruption = Corruption(args.corruption, args.severity, args.seed) if args.corruption else None
    report = evaluate(predictor, dataset, out, EvalJob(settings, bg, corruption, args.limit, args.save_vis,
                                                       unseen=unseen, progress=not args.quiet,
                                                       classes=proto.classes if proto else None,
                                                       display=proto.display if proto else None,
                                                       masks_dir=masks_dir, pipeline=pipeline_from_args(args)))
    m = report.metrics
    line = f"{dataset.name}: mIoU {pct(m['mIoU'])}  pAcc {pct(m['pAcc'])}  mAcc {pct(m['mAcc'])}"
    if "hIoU" in m:
        line += f"  mIoU(S) {pct(m['mIoU_seen'])}  mIoU(U) {pct(m['mIoU_unseen'])}  hIoU {pct(m['hIoU'])}"
    print(f"{line}  ({report.num_images} images)\nreport: {out / 'report.md'}")
    for name, err in report.failures:
        print(f"FAILED {name}: {err}", file=sys.stderr)
    return 1 if report.failures else 0
