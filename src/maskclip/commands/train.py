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
from pathlib import Path

import torch

from ..errors import SettingsError
from ..plus.api import PlusData, PlusJob, TargetSpec, TeacherSpec, train_maskclip_plus
from ..plus.config import PlusTrainConfig
from ..plus.models import MODEL_NAMES
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

EPILOG = """examples:
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


def register(sub: argparse._SubParsersAction) -> None:
    d = PlusTrainConfig()
    p = sub.add_parser("train", help="train MaskCLIP+ (a segmentation network) on MaskCLIP pseudo labels",
                       description="MaskCLIP+: train a target segmentation network whose classifier is the frozen "
                                   "CLIP text embeddings, on MaskCLIP's labels of each augmented crop "
                                   "(annotation-free) or on seen-class ground truth plus MaskCLIP labels of the "
                                   "unseen classes (transductive zero-shot). Defaults are the paper's.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _data_options(p)
    _mode_options(p)
    _target_options(p)
    _schedule_options(p, d)
    _run_options(p, d)
    add_model_options(p)
    # the teacher's MaskCLIP settings; its whole/slide --mode is --teacher-mode here
    add_maskclip_options(p, flags={"mode": "--teacher-mode"}, prefix="teacher_")
    p.set_defaults(func=run)


def _data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (either --images [--labels] or --dataset --root)")
    g.add_argument("--images", type=Path, metavar="DIR", help="folder of training images")
    g.add_argument("--labels", type=Path, metavar="DIR",
                   help="folder of ground-truth label PNGs named like the images (<stem>.png, pixel value = class "
                        "index into --classes); needed for --mode zero-shot, ignored for annotation-free")
    g.add_argument("--recursive", action="store_true", help="also take images from sub-folders of --images")
    g.add_argument("--dataset", metavar="NAME",
                   help="a benchmark reader by name (voc20, voc21, context59, coco-stuff171, ade150, cityscapes, ...; "
                        "see `maskclip eval --help`), with --root and --split")
    g.add_argument("--root", type=Path, metavar="DIR", help="dataset root for --dataset")
    g.add_argument("--split", default="train", help="dataset split for --dataset (default: train)")
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
    g.add_argument("--unseen", default=None, metavar="NAMES",
                   help="zero-shot: comma-separated unseen class names (or ids) among --classes, or a packaged "
                        "split: voc20, coco_stuff171, context60, context59, ade847")
    g.add_argument("--suppress-unseen", action="store_true",
                   help="zero-shot: turn unseen-class pixels of the ground truth into unlabelled pixels on loading "
                        "(the authors' loader). Without it, any unseen class id in the ground truth stops training "
                        "with an error (leakage guard)")
    g.add_argument("--no-teacher", action="store_true",
                   help="zero-shot baseline: train on the seen-class ground truth alone (unseen pixels ignored, no "
                        "pseudo labels, no self-training)")
    g.add_argument(
        "--mode", choices=["annotation-free", "zero-shot"], default="annotation-free",
        help="annotation-free: MaskCLIP labels every pixel, no ground truth used; zero-shot (transductive): "
             "ground truth for the seen classes, MaskCLIP labels among the --unseen classes on the pixels "
             "without ground truth (default: annotation-free)")


def _target_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("target network")
    g.add_argument("--target", choices=MODEL_NAMES, default="deeplabv2-r101",
                   help="deeplabv2-r101 (paper: VOC, COCO-Stuff, annotation-free), deeplabv3plus-r101 (paper: "
                        "Pascal Context zero-shot) or light-r18 (ResNet-18 + light head, for CPUs); default "
                        "deeplabv2-r101")
    g.add_argument("--pretrained", default="imagenet", metavar="imagenet|PATH|none",
                   help="backbone initialisation: 'imagenet' (the public ImageNet checkpoint of the architecture, "
                        "downloaded once; the paper), a local backbone checkpoint, or 'none' (random; warned)")
    g.add_argument("--output-stride", type=int, choices=[8, 16], default=None,
                   help="backbone output stride (default: 8 for the r101 models, 16 for light-r18)")
    g.add_argument("--width", type=bounded_int(1, 1024), default=64,
                   help="backbone base width (64 = the standard ResNet; smaller only with --pretrained none, "
                        "e.g. for CPU experiments)")
    g.add_argument("--head-channels", type=bounded_int(1, 4096), default=128, help="light-r18 head width (default 128)")


def _schedule_options(p: argparse.ArgumentParser, d: PlusTrainConfig) -> None:
    g = p.add_argument_group("schedule (defaults: the paper)")
    g.add_argument("--iterations", type=bounded_int(1, 10 ** 8), default=d.iterations,
                   help=f"training iterations (default {d.iterations}; paper annotation-free: 2000 VOC, 4000 "
                        "Context, 8000 COCO-Stuff; zero-shot: 20000/40000/80000)")
    g.add_argument("--batch-size", type=bounded_int(1, 65536), default=d.batch_size,
                   help=f"GLOBAL batch size, split evenly over torchrun processes (default {d.batch_size})")
    g.add_argument("--crop-size", type=size_pair, default=d.crop_size, metavar="N|H,W",
                   help="training crop (default 512; Pascal Context 480)")
    g.add_argument("--scale", type=size_pair, default=d.scale, metavar="L,S",
                   help="base (long, short) size of the random resize by 0.5-2.0 (default 2048,512; Pascal Context "
                        "520,520)")
    g.add_argument("--lr", type=positive_float, default=d.lr, help=f"SGD learning rate, poly decay (default {d.lr})")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"default {d.weight_decay}")
    g.add_argument("--self-train-after", type=_fraction_or_word, default="auto", metavar="FRACTION|auto|never",
                   help="fraction of the schedule after which the network labels its own crops (self-training); "
                        "'auto' = the paper's: 0.1 for zero-shot, never for annotation-free")
    g.add_argument("--self-train-source", choices=["eval", "shared"], default=d.self_train_source,
                   help="self-training labels from a separate eval-mode pass ('eval', default) or from the training "
                        "pass's own logits ('shared': the authors' code, no extra pass)")
    g.add_argument("--no-photometric", action="store_true", help="no photometric distortion of the crops")
    g.add_argument("--freeze-bn", action="store_true", help="BatchNorm statistics frozen (eval mode) during training")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision (fp16 autocast + loss scaling) on GPUs; CPUs always train in fp32")
    g.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the crop stream")


def _run_options(p: argparse.ArgumentParser, d: PlusTrainConfig) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", type=Path, required=True, help="output directory")
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


def job_from_args(args: argparse.Namespace) -> PlusJob:
    """The options as a PlusJob (settings errors are SettingsErrors: one line, exit 2)."""
    data = PlusData(args.classes, args.images, args.labels, args.recursive, args.dataset, args.root, args.split,
                    args.ignore_index, args.unlabeled_id, args.pseudo_dir)
    base, method_templates = method_base(args, "teacher_")
    teacher = TeacherSpec(args.weights or args.model, base, templates_from_arg(args.teacher_templates) or
                          method_templates, args.random_weights, not args.gelu, overrides_from_args(args, "teacher_"))
    target = TargetSpec(args.target, None if args.pretrained.lower() == "none" else args.pretrained,
                        args.output_stride, args.width, args.head_channels)
    schedule = PlusTrainConfig(
        iterations=args.iterations, batch_size=args.batch_size, crop_size=args.crop_size, scale=args.scale,
        lr=args.lr, weight_decay=args.weight_decay, mode=args.mode, self_train_after=args.self_train_after,
        self_train_source=args.self_train_source, suppress_unseen=args.suppress_unseen,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, amp=args.amp, seed=args.seed,
        out_dir=str(args.out), resume=args.resume, num_workers=args.workers, freeze_bn=args.freeze_bn,
        photometric=not args.no_photometric)
    unseen = unseen_names(args.unseen or "")
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    return PlusJob(data, teacher, target, schedule, unseen, use_teacher=not args.no_teacher, options=options)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device) if args.device else None
    job = job_from_args(args)
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
