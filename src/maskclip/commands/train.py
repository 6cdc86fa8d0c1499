"""`maskclip train`: MaskCLIP+ -- train a segmentation network on MaskCLIP's labels (paper section 3.4).

The frozen MaskCLIP teacher (any CLIP and MaskCLIP option of `segment`) labels every augmented training
crop on the fly, or precomputed labels from `maskclip label` are reused; after --self-train-after of the
schedule the network labels its own crops. Zero-shot (transductive): ground truth for the seen classes,
pseudo labels only on pixels without ground truth and only among the unseen classes. All of it is the
library call `maskclip.plus.api.train_maskclip_plus`; this module only maps options onto a PlusJob.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..errors import SettingsError
from ..io.atomic import dumps_json
from ..plus.api import PlusData, PlusJob, TargetSpec, TeacherSpec, train_maskclip_plus
from ..plus.config import PlusTrainConfig
from ..plus.models import MODEL_NAMES
from ..plus.recipes import Recipe, get_recipe, recipe_table
from .common import (
    add_maskclip_options,
    add_model_options,
    method_base,
    overrides_from_args,
    resolve_device,
    templates_from_arg,
    unseen_names,
)
from .options import bounded_int, positive_float, size_pair

SUPPRESS = argparse.SUPPRESS  # options a --recipe may set: absent from the namespace unless given

EPILOG = """examples:
  # the authors' released configs as recipes (list them; show one resolved; train one)
  maskclip train --recipe
  maskclip train --recipe zs-voc20-rn50 --root data/VOCdevkit --print
  maskclip train --recipe af-context59-vit16 --root data/VOCdevkit/VOC2010 --out runs/pc59-af
  # annotation-free (paper: VOC 2k iterations, batch 16, 512x512 crops), MaskCLIP ViT-B/16 teacher
  maskclip train --images VOC2012/JPEGImages --classes voc20 --mode annotation-free \\
      --target deeplabv2-r101 --iterations 2000 --out runs/voc-af
  # reuse labels precomputed (and sharded over machines) with `maskclip label ... --out pseudo/`
  maskclip train --images imgs/ --pseudo-dir pseudo/ --classes voc20 --mode annotation-free --out runs/af
  # transductive zero-shot on Pascal VOC: unseen classes erased from the ground truth by the loader
  maskclip train --dataset voc20 --root data/VOCdevkit --split train --mode zero-shot \\
      --unseen "potted plant,sheep,sofa,train,tv monitor" --suppress-unseen --iterations 20000 --out runs/voc-zs
  # the same on 8 GPUs (the global --batch-size is split over the processes)
  torchrun --nproc_per_node 8 -m maskclip.cli train ... --out runs/voc-zs

--model/--weights (and the MaskCLIP options) choose the teacher: its text encoder also embeds the class
names into the target network's frozen classifier, so --templates must suit that CLIP.

writes OUT/checkpoint.pt (every --checkpoint-every iterations and on Ctrl-C / SIGTERM; continue with
--resume, which reproduces the uninterrupted run exactly), OUT/log.jsonl (loss, lr, images/s, labelled
fraction and per-class pixel counts of the training targets), OUT/run.json (the options) and, when done,
OUT/model.pt, which `maskclip segment --model OUT/model.pt --classes ...` and `maskclip eval` accept
(any class names: the CLIP text encoder and templates are recorded in it)."""


# ----------------------------------------------------------------------------------------------------------
# Options


def _fraction_or_word(text: str) -> float | str | None:
    t = text.strip().lower()
    if t == "auto":
        return "auto"
    if t in ("never", "none", "off"):
        return None
    try:
        v = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], 'auto' or 'never', got {text!r}") from None
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"--self-train-after must lie in [0, 1], got {v}")
    return v


def _unit_fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {v}")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    d = PlusTrainConfig()
    p = sub.add_parser("train", help="train MaskCLIP+ (a segmentation network) on MaskCLIP pseudo labels",
                       description="MaskCLIP+: train a target segmentation network whose classifier is the frozen "
                                   "CLIP text embeddings, on MaskCLIP's labels of each augmented crop "
                                   "(annotation-free) or on seen-class ground truth plus MaskCLIP labels of the "
                                   "unseen classes (transductive zero-shot). Defaults are the paper's.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _recipe_options(p)
    _data_options(p)
    _mode_options(p)
    _target_options(p)
    _schedule_options(p, d)
    _run_options(p, d)
    add_model_options(p, default=SUPPRESS, shown="ViT-B/16 (with --recipe: the recipe's CLIP)")
    # the teacher's MaskCLIP settings; its whole/slide --mode is --teacher-mode here
    add_maskclip_options(p, flags={"mode": "--teacher-mode"}, prefix="teacher_")
    p.set_defaults(func=run)


def _recipe_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("recipes (the authors' model zoo)")
    g.add_argument("--recipe", nargs="?", const="list", default=None, metavar="NAME",
                   help="take every setting of a released MaskCLIP+ config (schedule, crop, target network, lr, "
                        "weight decay, unseen split, teacher CLIP and its settings, the authors' training choices); "
                        "options given on the command line override it. Without NAME: list the recipes")
    g.add_argument("--print", action="store_true", dest="print_job",
                   help="print the resolved settings (the library call, as JSON) and exit without training")


def _data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (either --images [--labels] or --dataset --root)")
    g.add_argument("--images", type=Path, metavar="DIR", help="folder of training images")
    g.add_argument("--labels", type=Path, metavar="DIR",
                   help="folder of ground-truth label PNGs named like the images (<stem>.png, pixel value = class "
                        "index into --classes); needed for --mode zero-shot, ignored for annotation-free")
    g.add_argument("--recursive", action="store_true", help="also take images from sub-folders of --images")
    g.add_argument("--dataset", metavar="NAME", default=SUPPRESS,
                   help="a benchmark reader by name (voc20, voc21, context59, coco-stuff171, ade150, cityscapes, ...; "
                        "see `maskclip eval --help`), with --root and --split")
    g.add_argument("--root", type=Path, metavar="DIR", help="dataset root for --dataset")
    g.add_argument("--split", default=SUPPRESS,
                   help="dataset split for --dataset (default: train; the VOC recipes: trainaug, i.e. train + SBD "
                        "with labels in SegmentationClassAug, as the authors)")
    g.add_argument("--ignore-index", type=int, default=255,
                   help="label value that is never trained on (void; default 255; --dataset uses the dataset's)")
    g.add_argument("--unlabeled-id", type=int, default=None, metavar="ID",
                   help="label value in the ground truth that marks pixels WITHOUT annotation which may receive "
                        "pseudo labels (zero-shot; e.g. where unseen classes were erased). Default: none")
    g.add_argument("--pseudo-dir", type=Path, metavar="DIR",
                   help="reuse pseudo labels written by `maskclip label IMAGES --classes ... --out DIR` instead of "
                        "running the teacher during training (matched by image path or file stem, classes by name; "
                        "for zero-shot label with the unseen classes only)")


def _mode_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("classes and mode")
    g.add_argument("--classes", default=None,
                   help="comma-separated names, a file (one class a line, synonyms comma-separated) or a packaged "
                        "list (voc20, context59, coco_stuff171, ...); label ids index into it. Default with "
                        "--dataset: the dataset's classes")
    g.add_argument("--unseen", default=SUPPRESS, metavar="NAMES",
                   help="zero-shot: comma-separated unseen class names (or ids) among --classes, or a packaged "
                        "split: voc20, coco_stuff171, context60, context59, ade847")
    g.add_argument("--suppress-unseen", action=argparse.BooleanOptionalAction, default=SUPPRESS,
                   help="zero-shot: turn unseen-class pixels of the ground truth into unlabelled pixels on loading "
                        "(the authors' loader). Without it, any unseen class id in the ground truth stops training "
                        "with an error (leakage guard)")
    g.add_argument("--no-teacher", action="store_true",
                   help="zero-shot baseline: train on the seen-class ground truth alone (unseen pixels ignored, no "
                        "pseudo labels, no self-training)")
    g.add_argument(
        "--mode", choices=["annotation-free", "zero-shot"], default=SUPPRESS,
        help="annotation-free: MaskCLIP labels every pixel, no ground truth used; zero-shot (transductive): "
             "ground truth for the seen classes, MaskCLIP labels among the --unseen classes on the pixels "
             "without ground truth (default: annotation-free)")


def _target_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("target network")
    g.add_argument("--target", choices=MODEL_NAMES, default=SUPPRESS,
                   help="deeplabv2-r101 (paper: VOC, COCO-Stuff, annotation-free), deeplabv2-r50 (the authors' "
                        "ViT-B/16 annotation-free configs), deeplabv3plus-r101 (paper: Pascal Context zero-shot) or "
                        "light-r18 (ResNet-18 + light head, for CPUs); default deeplabv2-r101")
    g.add_argument("--pretrained", default="imagenet", metavar="imagenet|PATH|none",
                   help="backbone initialisation: 'imagenet' (the public ImageNet checkpoint of the architecture, "
                        "downloaded once; the paper), a local backbone checkpoint, or 'none' (random; warned)")
    g.add_argument("--output-stride", type=int, choices=[8, 16], default=None,
                   help="backbone output stride (default: 8 for the r101 models, 16 for light-r18)")
    g.add_argument("--width", type=bounded_int(1, 1024), default=64,
                   help="backbone base width (64 = the standard ResNet; smaller only with --pretrained none, "
                        "e.g. for CPU experiments)")
    g.add_argument("--head-channels", type=bounded_int(1, 4096), default=128, help="light-r18 head width (default 128)")
    g.add_argument("--learned-background", default=SUPPRESS, metavar="CLASS",
                   help="a (seen) class whose embedding the network learns instead of its text embedding, the others "
                        "frozen: the authors' cls_bg for 'background' in their Context-60 zero-shot config "
                        "(default: none)")


def _schedule_options(p: argparse.ArgumentParser, d: PlusTrainConfig) -> None:
    g = p.add_argument_group("schedule (defaults: the paper)")
    g.add_argument("--iterations", type=bounded_int(1, 10 ** 8), default=SUPPRESS,
                   help=f"training iterations (default {d.iterations}; paper annotation-free: 2000 VOC, 4000 "
                        "Context, 8000 COCO-Stuff; zero-shot: 20000/40000/80000)")
    g.add_argument("--batch-size", type=bounded_int(1, 65536), default=SUPPRESS,
                   help=f"GLOBAL batch size, split evenly over torchrun processes (default {d.batch_size})")
    g.add_argument("--crop-size", type=size_pair, default=SUPPRESS, metavar="N|H,W",
                   help="training crop (default 512; Pascal Context 480)")
    g.add_argument("--scale", type=size_pair, default=SUPPRESS, metavar="L,S",
                   help="base (long, short) size of the random resize by 0.5-2.0 (default 2048,512; Pascal Context "
                        "520,520)")
    g.add_argument("--lr", type=positive_float, default=SUPPRESS,
                   help=f"SGD learning rate, poly decay (default {d.lr})")
    g.add_argument("--weight-decay", type=float, default=SUPPRESS, help=f"default {d.weight_decay}")
    g.add_argument("--self-train-after", type=_fraction_or_word, default=SUPPRESS, metavar="FRACTION|auto|never",
                   help="fraction of the schedule after which the network labels its own crops (self-training); "
                        "'auto' = the paper's: 0.1 for zero-shot, never for annotation-free")
    g.add_argument("--self-train-source", choices=["shared", "eval"], default=SUPPRESS,
                   help="self-training labels from the training pass's own detached logits ('shared', default: the "
                        "authors' code, train-mode BatchNorm, no extra pass) or from a separate eval-mode pass "
                        "('eval': BatchNorm running statistics)")
    g.add_argument("--self-train-switch", choices=["authors", "exact"], default=SUPPRESS,
                   help="where the switch falls: 'authors' (default: their 1-based counter, round(f*N)-1 guided steps, "
                        "1999 of 20000) or 'exact' (round(f*N) guided steps, the paper's 1/10)")
    g.add_argument("--teacher-classes", choices=["unseen", "all"], default=SUPPRESS,
                   help="zero-shot: the teacher scores only the unseen classes, so its softmax, PD and KS see only "
                        "them ('unseen', default: the authors'), or all classes with the argmax restricted afterwards")
    g.add_argument("--pseudo-threshold", type=_unit_fraction, default=d.pseudo_threshold, metavar="P",
                   help="ignore pseudo-labelled pixels whose confidence (max softmax over the candidate classes; the "
                        "teacher's cosine logits at CLIP's scale 100) is below P (default 0: keep every pixel, as the "
                        "paper and the authors' configs)")
    g.add_argument("--loss-norm", choices=["labelled", "all"], default=SUPPRESS,
                   help="cross-entropy averaged over the labelled pixels ('labelled', default) or summed over "
                        "labelled and divided by ALL pixels incl. ignored ones ('all': the authors' mmseg 0.x; with "
                        "many ignored pixels a lower effective learning rate)")
    g.add_argument("--gt-ignore-mask", action=argparse.BooleanOptionalAction, default=SUPPRESS,
                   help="annotation-free: pixels void in the ground truth are not trained on. The authors' VOC20 and "
                        "Context-59 readers make background void, so their student never trains on GT-background "
                        "pixels (their published numbers used it). Default: every pixel gets a teacher label")
    g.add_argument("--snapshot", type=bounded_int(1, 10 ** 8), action="append", default=[], metavar="N",
                   help="also write OUT/model-iterN.pt after iteration N (repeatable), e.g. at the switch")
    g.add_argument("--no-photometric", action="store_true", help="no photometric distortion of the crops")
    g.add_argument("--freeze-bn", action="store_true", help="BatchNorm statistics frozen (eval mode) during training")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision (fp16 autocast + loss scaling) on GPUs; CPUs always train in fp32")
    g.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the crop stream")


def _run_options(p: argparse.ArgumentParser, d: PlusTrainConfig) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", type=Path, default=None, help="output directory (required to train)")
    g.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt (exactly: the same crops and updates as an uninterrupted "
                        "run). Without it an existing checkpoint in OUT is an error")
    g.add_argument("--checkpoint-every", type=bounded_int(1, 10 ** 8), default=d.checkpoint_every,
                   help=f"write OUT/checkpoint.pt every K iterations (default {d.checkpoint_every})")
    g.add_argument("--log-every", type=bounded_int(1, 10 ** 8), default=d.log_every,
                   help=f"log every N iterations (default {d.log_every})")
    g.add_argument("--workers", type=bounded_int(0, 256), default=d.num_workers,
                   help=f"data-loading processes (default {d.num_workers})")
    g.add_argument("--threads", type=bounded_int(1, 1024), default=None,
                   help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")



# ----------------------------------------------------------------------------------------------------------
# Running


def _option_values(t: PlusTrainConfig, *, dataset: str | None, split: str, unseen: str | None, target: str,
                   learned_background: str | None, model: str) -> dict[str, Any]:
    """The recipe-able options (argparse names) of a schedule and its data, target and teacher CLIP."""
    return {"dataset": dataset, "split": split, "unseen": unseen, "suppress_unseen": t.suppress_unseen,
            "mode": t.mode, "target": target, "learned_background": learned_background, "iterations": t.iterations,
            "batch_size": t.batch_size, "crop_size": t.crop_size, "scale": t.scale, "lr": t.lr,
            "weight_decay": t.weight_decay, "self_train_after": t.self_train_after,
            "self_train_source": t.self_train_source, "self_train_switch": t.switch,
            "teacher_classes": t.teacher_classes, "loss_norm": t.loss_norm, "gt_ignore_mask": t.gt_ignore_mask,
            "model": model}


def _builtin_values() -> dict[str, Any]:
    """What the recipe-able options are without a recipe (the paper's defaults)."""
    return _option_values(PlusTrainConfig(), dataset=None, split="train", unseen=None, target=TargetSpec().name,
                          learned_background=None, model="ViT-B/16")


def _recipe_values(r: Recipe) -> dict[str, Any]:
    return _option_values(r.train_config(), dataset=r.dataset, split=r.split, unseen=r.unseen, target=r.target,
                          learned_background=r.learned_background, model=r.clip)


def resolve_options(args: argparse.Namespace) -> Recipe | None:
    """Fill the options the user did not give: from --recipe, else the built-in defaults."""
    recipe = None
    if args.recipe:
        try:
            recipe = get_recipe(args.recipe)
        except KeyError as err:
            raise SettingsError(f"--recipe: {err.args[0]}") from None
    values = {**_builtin_values(), **(_recipe_values(recipe) if recipe else {})}
    if getattr(args, "images", None) is not None:  # the user's own images replace the recipe's dataset
        values["dataset"] = None
    for k, v in values.items():
        if not hasattr(args, k):
            setattr(args, k, v)
    return recipe


def job_from_args(args: argparse.Namespace) -> PlusJob:
    """The options as a PlusJob (settings errors are SettingsErrors: one line, exit 2)."""
    recipe = resolve_options(args)
    data = PlusData(args.classes, args.images, args.labels, args.recursive, args.dataset, args.root, args.split,
                    args.ignore_index, args.unlabeled_id, args.pseudo_dir)
    base, method_templates = method_base(args, "teacher_")
    if recipe is not None and base is None:
        base, method_templates = recipe.teacher_config(), "85"
    teacher = TeacherSpec(args.weights or args.model, base, templates_from_arg(args.teacher_templates) or
                          method_templates, args.random_weights, not args.gelu, overrides_from_args(args, "teacher_"))
    target = TargetSpec(args.target, None if args.pretrained.lower() == "none" else args.pretrained,
                        args.output_stride, args.width, args.head_channels, args.learned_background)
    schedule = PlusTrainConfig(
        iterations=args.iterations, batch_size=args.batch_size, crop_size=args.crop_size, scale=args.scale,
        lr=args.lr, weight_decay=args.weight_decay, mode=args.mode, self_train_after=args.self_train_after,
        self_train_source=args.self_train_source, switch=args.self_train_switch, teacher_classes=args.teacher_classes,
        pseudo_threshold=args.pseudo_threshold, loss_norm=args.loss_norm, gt_ignore_mask=args.gt_ignore_mask,
        snapshots=tuple(args.snapshot), suppress_unseen=args.suppress_unseen,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, amp=args.amp, seed=args.seed,
        out_dir=str(args.out) if args.out else "", resume=args.resume, num_workers=args.workers,
        freeze_bn=args.freeze_bn,
        photometric=not args.no_photometric)
    unseen = unseen_names(args.unseen or "")
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    options["recipe"] = recipe.name if recipe else None
    return PlusJob(data, teacher, target, schedule, unseen, use_teacher=not args.no_teacher, options=options)


def print_job(job: PlusJob) -> None:
    """The resolved library call as JSON: every setting the training would use."""
    out = asdict(job)
    out.pop("options", None)
    recipe = job.options.get("recipe")
    if recipe:
        out = {"recipe": get_recipe(recipe).summary(), **out}
    print(dumps_json(out, indent=1))


def run(args: argparse.Namespace) -> int:
    if args.recipe == "list":
        print(recipe_table())
        print("\nmaskclip train --recipe NAME --root DATA --out DIR   (--print: the resolved settings, no training)")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device) if args.device else None
    job = job_from_args(args)
    if args.print_job:
        print_job(job)
        return 0
    if args.out is None:
        raise SettingsError("--out DIR is required to train (the checkpoint, log and model go there)")
    try:
        res = train_maskclip_plus(job, device=device, progress=not args.quiet)
    except KeyboardInterrupt:
        print("[maskclip+] interrupted; continue with the same command plus --resume", file=sys.stderr)
        return 130
    except SettingsError:
        raise  # the command line prints it: one line, exit 2
    except ValueError as err:  # a training item that breaks the rules (e.g. unseen ids in its ground truth)
        print(f"error: {err}", file=sys.stderr)
        return 1
    if res["status"] != "completed":
        print(f"[maskclip+] stopped at iteration {res['iteration']}: continue with --resume", file=sys.stderr)
        return 143
    if res["rank"] == 0:
        print(f"[maskclip+] done: {res['iteration']} iterations; model {res['model_path']}, log {res['log_path']}")
    return 0
