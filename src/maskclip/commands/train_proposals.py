"""`maskclip train-proposals`: train the class-agnostic proposal generator on seen-class ground truth.

The decoupled open-vocabulary route (ZegFormer, SimBaseline): a MaskFormer-style network learns N masks
and their scores over the SEEN classes from semantic label maps (unseen-class pixels left out); a frozen
CLIP later classifies each mask into any vocabulary. All of it is the library call
`maskclip.proposals.train.train_proposals`; this module only maps options onto a ProposalJob.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..errors import SettingsError
from ..proposals.losses import MASK_LOSSES, CriterionConfig
from ..proposals.model import TRANSFORMER_INPUTS, ProposalConfig
from ..proposals.train import ProposalJob, ProposalSchedule, TrainingInterrupted, train_proposals
from .common import unseen_names
from .options import bounded_int, non_negative, positive_float, size_pair

EPILOG = """example (the toy world: PNG folders of images and label maps, label value = index into --classes):
  maskclip train-proposals data/images data/labels --classes classes.txt --unseen turtle,balloon,fish \\
      --crop 64 --iterations 1000 --lr 1e-3 --threads 1 --out runs/proposals

writes OUT/checkpoint.pt (every --checkpoint-every iterations and on Ctrl-C / SIGTERM after the step in
progress; continue with --resume, which reproduces the uninterrupted run exactly), OUT/log.jsonl (losses,
lr, images/s), OUT/run.json (the settings and per-class pixel counts) and, when done, OUT/model.pt
(format maskclip-proposals/1), which maskclip.proposals.ProposalGenerator.load reads."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-proposals", help="train a class-agnostic mask proposal generator on seen classes",
                       description="Train a MaskFormer-style proposal generator (N masks + scores over the seen "
                                   "classes) on image and label folders; unseen-class and ignore pixels are left "
                                   "out of the mask losses. Loss weights and the optimiser are MaskFormer's; the "
                                   "network is small enough for a CPU by default.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", type=Path, metavar="IMAGES_DIR", help="folder of training images")
    p.add_argument("labels", type=Path, metavar="LABELS_DIR",
                   help="folder of label PNGs named like the images (<stem>.png, pixel value = class index)")
    g = p.add_argument_group("classes")
    g.add_argument("--classes", required=True, metavar="FILE_OR_LIST",
                   help="comma-separated names, a file (one class a line) or a packaged list; label ids index it")
    g.add_argument("--unseen", default="", metavar="NAMES",
                   help="comma-separated class names (or ids) held out: never a target, their pixels ignored; or "
                        "a packaged zero-shot split: voc20, coco_stuff171, context60, context59, ade847 (default: "
                        "none)")
    g.add_argument("--ignore-index", type=int, default=255, help="label value never trained on (default: 255)")
    g.add_argument("--recursive", action="store_true", help="also take images from sub-folders of IMAGES_DIR")
    _model_options(p)
    _criterion_options(p)
    _schedule_options(p)
    _run_options(p)
    p.set_defaults(func=run)


def _model_options(p: argparse.ArgumentParser) -> None:
    d = ProposalConfig()
    g = p.add_argument_group("network (MaskFormer R50: depth 50, width 64, 100 queries, dims 256, 6 layers, 8 heads)")
    g.add_argument("--depth", type=int, choices=[18, 34, 50, 101], default=d.depth,
                   help="ResNet depth (default: %(default)s)")
    g.add_argument("--width", type=bounded_int(1, 1024), default=d.width,
                   help="backbone width (64 = the standard ResNet, needed by --pretrained; default: %(default)s)")
    g.add_argument("--deep-stem", action="store_true",
                   help="v1c stem (three 3x3 convs) instead of the 7x7 conv; open-mmlab's ImageNet ResNet-50/101 "
                        "need it (default: off)")
    g.add_argument("--pretrained", default="none", metavar="imagenet|PATH|none",
                   help="backbone initialisation: 'imagenet' (torchvision resnet18 / open-mmlab v1c), a local "
                        "checkpoint, or 'none' (random; default: %(default)s)")
    g.add_argument("--queries", type=bounded_int(1, 1000), default=d.num_queries, help="N (default: %(default)s)")
    g.add_argument("--hidden-dim", type=bounded_int(4, 4096), default=d.hidden_dim,
                   help="decoder width (default: %(default)s)")
    g.add_argument("--mask-dim", type=bounded_int(1, 4096), default=d.mask_dim,
                   help="per-pixel embedding size D (default: %(default)s)")
    g.add_argument("--conv-dim", type=bounded_int(1, 4096), default=d.conv_dim,
                   help="pixel-decoder channels (default: %(default)s)")
    g.add_argument("--decoder-layers", type=bounded_int(1, 64), default=d.dec_layers,
                   help="transformer decoder layers L (default: %(default)s)")
    g.add_argument("--heads", type=bounded_int(1, 64), default=d.heads, help="attention heads (default: %(default)s)")
    g.add_argument("--ffn-dim", type=bounded_int(1, 65536), default=d.ffn_dim,
                   help="decoder FFN width (default: %(default)s)")
    g.add_argument("--dropout", type=float, default=d.dropout, help="decoder dropout (default: %(default)s)")
    g.add_argument("--mask-stride", type=int, choices=[4, 8], default=d.mask_stride,
                   help="stride of the predicted masks (default: %(default)s, MaskFormer's)")
    g.add_argument("--transformer-in", choices=TRANSFORMER_INPUTS, default=d.transformer_in,
                   help="backbone feature the queries attend to (default: %(default)s)")


def _criterion_options(p: argparse.ArgumentParser) -> None:
    d = CriterionConfig()
    g = p.add_argument_group("loss and matching (defaults: MaskFormer's; Mask2Former: --mask-loss bce with 2/5/5)")
    g.add_argument("--mask-loss", choices=MASK_LOSSES, default=d.mask_loss, help="mask loss (default: %(default)s)")
    g.add_argument("--class-weight", type=non_negative, default=d.class_weight, help="default: %(default)s")
    g.add_argument("--mask-weight", type=non_negative, default=d.mask_weight, help="default: %(default)s")
    g.add_argument("--dice-weight", type=non_negative, default=d.dice_weight, help="default: %(default)s")
    g.add_argument("--no-object-weight", type=non_negative, default=d.no_object_weight,
                   help="CE weight of the no-object class (default: %(default)s)")
    g.add_argument("--deep-supervision", action=argparse.BooleanOptionalAction, default=d.deep_supervision,
                   help="losses on every decoder layer (default: on)")


def _schedule_options(p: argparse.ArgumentParser) -> None:
    d = ProposalSchedule()
    g = p.add_argument_group("schedule (optimiser: MaskFormer's AdamW, poly 0.9)")
    g.add_argument("--iterations", type=bounded_int(1, 10 ** 8), default=d.iterations, help="default: %(default)s")
    g.add_argument("--batch-size", type=bounded_int(1, 65536), default=d.batch_size, help="default: %(default)s")
    g.add_argument("--crop", type=size_pair, default=d.crop_size, metavar="N|H,W", help="training crop (default: 128)")
    g.add_argument("--scale", type=size_pair, default=None, metavar="L,S",
                   help="base (long, short) size of the random resize by 0.5-2.0 (default: the crop size)")
    g.add_argument("--lr", type=positive_float, default=d.lr, help="AdamW learning rate (default: %(default)s)")
    g.add_argument("--weight-decay", type=non_negative, default=d.weight_decay, help="default: %(default)s")
    g.add_argument("--backbone-lr-mult", type=non_negative, default=None,
                   help="backbone lr multiplier (default: 0.1 with --pretrained, 1 from scratch)")
    g.add_argument("--grad-clip", type=non_negative, default=d.grad_clip,
                   help="clip the total gradient L2 norm to this, 0 = off (default: %(default)s)")
    g.add_argument("--no-photometric", action="store_true", help="no photometric distortion of the crops")
    g.add_argument("--amp", action="store_true", help="fp16 mixed precision (CUDA only; default: off)")
    g.add_argument("--seed", type=int, default=d.seed,
                   help="initialisation and crop-stream seed (default: %(default)s)")


def _run_options(p: argparse.ArgumentParser) -> None:
    d = ProposalSchedule()
    g = p.add_argument_group("run")
    g.add_argument("--out", type=Path, required=True, help="output directory")
    g.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt (exactly); without it an existing checkpoint is an error")
    g.add_argument("--checkpoint-every", type=bounded_int(1, 10 ** 8), default=d.checkpoint_every,
                   help="write OUT/checkpoint.pt every K iterations (default: %(default)s)")
    g.add_argument("--log-every", type=bounded_int(1, 10 ** 8), default=d.log_every,
                   help="log every N iterations (default: %(default)s)")
    g.add_argument("--workers", type=bounded_int(0, 256), default=d.num_workers,
                   help="data-loading processes (default: %(default)s)")
    g.add_argument("--threads", type=bounded_int(1, 1024), default=None, help="CPU threads (default: torch's)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def job_from_args(args: argparse.Namespace) -> ProposalJob:
    """The options as a ProposalJob."""
    model = ProposalConfig(depth=args.depth, width=args.width, deep_stem=args.deep_stem, num_queries=args.queries,
                           hidden_dim=args.hidden_dim, mask_dim=args.mask_dim, conv_dim=args.conv_dim,
                           dec_layers=args.decoder_layers, heads=args.heads, ffn_dim=args.ffn_dim, dropout=args.dropout,
                           mask_stride=args.mask_stride, transformer_in=args.transformer_in)
    criterion = CriterionConfig(class_weight=args.class_weight, mask_weight=args.mask_weight,
                                dice_weight=args.dice_weight, no_object_weight=args.no_object_weight,
                                mask_loss=args.mask_loss, deep_supervision=args.deep_supervision)
    schedule = ProposalSchedule(
        iterations=args.iterations, batch_size=args.batch_size, crop_size=args.crop, scale=args.scale, lr=args.lr,
        weight_decay=args.weight_decay, backbone_lr_mult=args.backbone_lr_mult, grad_clip=args.grad_clip or None,
        photometric=not args.no_photometric, amp=args.amp, seed=args.seed, checkpoint_every=args.checkpoint_every,
        log_every=args.log_every, num_workers=args.workers)
    unseen = unseen_names(args.unseen)
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    pretrained = None if args.pretrained.lower() == "none" else args.pretrained
    return ProposalJob(args.images, args.labels, args.classes, args.out, unseen, model, criterion, schedule,
                       pretrained, args.resume, args.ignore_index, args.recursive, options)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    job = job_from_args(args)
    try:
        path = train_proposals(job, device=args.device, progress=not args.quiet)
    except TrainingInterrupted as stop:
        print(f"[proposals] {stop}: run the same command with --resume", file=sys.stderr)
        return 143 if stop.reason == "SIGTERM" else 130
    except KeyboardInterrupt:
        print("[proposals] interrupted; continue with the same command plus --resume", file=sys.stderr)
        return 130
    except SettingsError:
        raise  # the command line prints it: one line, exit 2
    except ValueError as err:  # a training item that breaks the rules (e.g. a label map of another size)
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"[proposals] done: model {path}")
    return 0

