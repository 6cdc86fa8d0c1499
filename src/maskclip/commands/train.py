"""`maskclip train`: MaskCLIP+ -- train a segmentation network on MaskCLIP's labels (paper section 3.4).

The frozen MaskCLIP teacher (any CLIP and MaskCLIP option of `segment`) labels every augmented training
crop on the fly, or precomputed labels from `maskclip label` are reused; after --self-train-after of the
schedule the network labels its own crops. Zero-shot (transductive): ground truth for the seen classes,
pseudo labels only on pixels without ground truth and only among the unseen classes. The loop, resume and
torchrun support live in maskclip.plus.train; this module turns files and options into its inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .common import add_maskclip_options, add_model_options, config_from_args, settings_dict, templates_from_arg

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
# The teacher


class MaskCLIPTeacher:
    """Frozen MaskCLIP as a training-crop labeller: crops normalised for the target network ->
    class scores [B, K, H, W] at crop size (argmax = the pseudo label).

    The crops are re-normalised for the CLIP when the two normalisations differ (e.g. the toy CLIP's
    own statistics). Whole-image mode runs the batch in one encoder pass; slide mode goes image by image.
    """

    def __init__(self, engine: Any, classifier: Any, mean: Sequence[float], std: Sequence[float]):
        from ..dense.inference import NORMALIZATIONS

        self.engine, self.classifier = engine, classifier
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        cm, cs = NORMALIZATIONS[engine.config.normalize]
        same = np.allclose(np.asarray(cm) * 255, mean) and np.allclose(np.asarray(cs) * 255, std)
        self.renormalize = not same

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from ..dense.inference import normalize

        eng = self.engine
        x = x.float().to(eng.device)
        if self.renormalize:
            x = normalize(x * self.std.to(x.device) + self.mean.to(x.device), eng.config.normalize)
        if eng.config.mode != "whole":
            return eng.logits(x, self.classifier)
        feats = eng.encode(x, normalized=True)  # whole mode: the batch is one window per image
        out = 0
        for sf in feats.scales:
            s = eng.grid_scores(sf.feats, sf.keys, self.classifier)
            th, tw = sf.size
            s = F.interpolate(s, size=sf.padded, mode="bilinear", align_corners=False)[..., :th, :tw]
            out = out + F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out / len(feats.scales)


# ----------------------------------------------------------------------------------------------------------
# Data


class TrainFiles:
    """Training items from files: image, optional ground truth, optional precomputed pseudo labels.

    Returns maskclip.plus.train.Sample. Ground truth equal to `unlabeled_id` becomes UNLABELED (may get a
    pseudo label); pseudo-label ids are mapped to the training classes by `pseudo_lut` (others: ignore).
    """

    def __init__(self, images: Sequence[Path], labels: Sequence[Path] | None = None, *,
                 label_reader: Any = None, pseudo: Sequence[Path] | None = None,
                 pseudo_lut: np.ndarray | None = None, unlabeled_id: int | None = None, exif: bool = False):
        self.images, self.labels, self.pseudo = list(images), labels, pseudo
        self.label_reader = label_reader  # callable(index) -> HxW ids (dataset readers); else read files
        self.pseudo_lut, self.unlabeled_id, self.exif = pseudo_lut, unlabeled_id, exif

    def __len__(self) -> int:
        return len(self.images)

    def has_labels(self) -> bool:
        return self.labels is not None or self.label_reader is not None

    def read_gt(self, i: int) -> np.ndarray | None:
        from ..data.image_io import read_label
        from ..plus.augment import UNLABELED

        if self.label_reader is not None:
            gt = np.asarray(self.label_reader(i), dtype=np.int64)
        elif self.labels is not None:
            gt = read_label(self.labels[i]).astype(np.int64)
        else:
            return None
        if self.unlabeled_id is not None:
            gt = np.where(gt == self.unlabeled_id, UNLABELED, gt)
        return gt

    def __getitem__(self, i: int):
        from ..data.image_io import read_image, read_label
        from ..plus.train import Sample

        image = read_image(self.images[i], exif=self.exif)
        if not image.flags.writeable:
            image = image.copy()
        pseudo = None
        if self.pseudo is not None:
            raw = read_label(self.pseudo[i]).astype(np.int64)
            lut = self.pseudo_lut
            pseudo = lut[np.clip(raw, 0, len(lut) - 1)] if lut is not None else raw
        return Sample(image, self.read_gt(i), pseudo)


def _pair_labels(images: list[Path], label_dir: Path) -> list[Path]:
    out, missing = [], []
    for img in images:
        cands = [label_dir / f"{img.stem}{ext}" for ext in (".png", ".tif", ".tiff", ".bmp")]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            missing.append(img.name)
        out.append(hit or cands[0])
    if missing:
        raise SystemExit(f"error: --labels {label_dir}: no label file <stem>.png for {len(missing)} of {len(images)} "
                         f"images (first: {', '.join(missing[:3])})")
    return out


def read_pseudo_index(pseudo_dir: Path, images: list[Path], class_names: list[str],
                      ignore_index: int) -> tuple[list[Path], np.ndarray]:
    """Label PNGs of `maskclip label` for `images` (matched by path, else by file stem) and the map from
    their ids to training class ids (by class name; 'background', 'unknown' and unknown names -> ignore).

    Labelling only a subset of the classes is allowed: for zero-shot, `maskclip label --classes <unseen>`
    gives the argmax restricted to the unseen classes, as the on-the-fly teacher does.
    """
    files = sorted(pseudo_dir.glob("index*.json"))
    if not files:
        raise SystemExit(f"error: --pseudo-dir {pseudo_dir}: no index.json (run `maskclip label IMAGES --classes ... "
                         f"--out {pseudo_dir}` first)")
    by_path: dict[str, Path] = {}
    by_stem: dict[str, Path] = {}
    classes: list[str] | None = None
    for f in files:
        try:
            idx = json.loads(f.read_text())
            entries, cls = idx["entries"], list(idx["classes"])
        except (OSError, ValueError, KeyError) as err:
            raise SystemExit(f"error: {f}: not an index written by `maskclip label` ({err})") from None
        if classes is not None and cls != classes:
            raise SystemExit(f"error: {f}: the shards of {pseudo_dir} were labelled with different class lists")
        classes = cls
        for e in entries:
            png = pseudo_dir / e["label"]
            by_path[str(Path(e["image"]).resolve())] = png
            by_stem.setdefault(Path(e["image"]).stem, png)
    out, missing = [], []
    for img in images:
        hit = by_path.get(str(img.resolve())) or by_stem.get(img.stem)
        if hit is None or not hit.is_file():
            missing.append(img.name)
        out.append(hit)
    if missing:
        raise SystemExit(f"error: --pseudo-dir {pseudo_dir}: no pseudo labels for {len(missing)} of {len(images)} "
                         f"images (first: {', '.join(missing[:3])}); label them with `maskclip label` (it resumes)")
    lower = {n.lower(): i for i, n in enumerate(class_names)}
    assert classes is not None
    lut = np.full(max(len(classes), 1) + 1, ignore_index, dtype=np.int64)  # the extra slot catches larger ids
    known = 0
    for j, name in enumerate(classes):
        if name.lower() in lower:
            lut[j] = lower[name.lower()]
            known += 1
    if not known:
        raise SystemExit(f"error: --pseudo-dir {pseudo_dir}: its classes {classes[:5]}... share no name with --classes")
    return out, lut


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


def _size(text: str) -> tuple[int, int]:
    try:
        vals = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        vals = []
    if not 1 <= len(vals) <= 2 or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"expected N or H,W (positive integers), got {text!r}")
    return (vals[0], vals[-1])


def register(sub: argparse._SubParsersAction) -> None:
    from ..plus.models import MODEL_NAMES
    from ..plus.train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train MaskCLIP+ (a segmentation network) on MaskCLIP pseudo labels",
                       description="MaskCLIP+: train a target segmentation network whose classifier is the frozen "
                                   "CLIP text embeddings, on MaskCLIP's labels of each augmented crop "
                                   "(annotation-free) or on seen-class ground truth plus MaskCLIP labels of the "
                                   "unseen classes (transductive zero-shot). Defaults are the paper's.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       conflict_handler="resolve")
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

    g = p.add_argument_group("classes and mode")
    g.add_argument("--classes", default=None,
                   help="comma-separated names, a file (one class a line, synonyms comma-separated) or a packaged "
                        "list (voc20, context59, coco_stuff171, ...); label ids index into it. Default with "
                        "--dataset: the dataset's classes")
    mode_group = g
    g.add_argument("--unseen", default=None, metavar="NAMES",
                   help="zero-shot: comma-separated unseen class names (or ids) among --classes")
    g.add_argument("--suppress-unseen", action="store_true",
                   help="zero-shot: turn unseen-class pixels of the ground truth into unlabelled pixels on loading "
                        "(the authors' loader). Without it, any unseen class id in the ground truth stops training "
                        "with an error (leakage guard)")
    g.add_argument("--no-teacher", action="store_true",
                   help="zero-shot baseline: train on the seen-class ground truth alone (unseen pixels ignored, no "
                        "pseudo labels, no self-training)")

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
    g.add_argument("--width", type=int, default=64,
                   help="backbone base width (64 = the standard ResNet; smaller only with --pretrained none, "
                        "e.g. for CPU experiments)")
    g.add_argument("--head-channels", type=int, default=128, help="light-r18 head width (default 128)")

    g = p.add_argument_group("schedule (defaults: the paper)")
    g.add_argument("--iterations", type=int, default=d.iterations,
                   help=f"training iterations (default {d.iterations}; paper annotation-free: 2000 VOC, 4000 "
                        "Context, 8000 COCO-Stuff; zero-shot: 20000/40000/80000)")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"GLOBAL batch size, split evenly over torchrun processes (default {d.batch_size})")
    g.add_argument("--crop-size", type=_size, default=d.crop_size, metavar="N|H,W",
                   help="training crop (default 512; Pascal Context 480)")
    g.add_argument("--scale", type=_size, default=d.scale, metavar="L,S",
                   help="base (long, short) size of the random resize by 0.5-2.0 (default 2048,512; Pascal Context "
                        "520,520)")
    g.add_argument("--lr", type=float, default=d.lr, help=f"SGD learning rate, poly decay (default {d.lr})")
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

    g = p.add_argument_group("run")
    g.add_argument("--out", type=Path, required=True, help="output directory")
    g.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt (exactly: the same crops and updates as an uninterrupted "
                        "run). Without it an existing checkpoint in OUT is an error")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help=f"write OUT/checkpoint.pt every K iterations (default {d.checkpoint_every})")
    g.add_argument("--log-every", type=int, default=d.log_every, help=f"log every N iterations (default {d.log_every})")
    g.add_argument("--workers", type=int, default=d.num_workers, help=f"data-loading processes (default {d.num_workers})")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    add_model_options(p)
    add_maskclip_options(p)
    # --mode is the training mode here: added after the shared MaskCLIP options so that the parser's
    # "resolve" conflict handler drops their --mode (whole/slide), which becomes --teacher-mode
    mode_group.add_argument(
        "--mode", choices=["annotation-free", "zero-shot"], default="annotation-free",
        help="annotation-free: MaskCLIP labels every pixel, no ground truth used; zero-shot (transductive): "
             "ground truth for the seen classes, MaskCLIP labels among the --unseen classes on the pixels "
             "without ground truth (default: annotation-free)")
    teacher = [gr for gr in p._action_groups if gr.title and gr.title.startswith("MaskCLIP")]
    (teacher[0] if teacher else p).add_argument(
        "--teacher-mode", choices=["whole", "slide"], default="whole",
        help="the teacher's inference on each crop: whole crop in one pass (default) or sliding windows")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------------------------------------
# Running


def _parse_unseen(text: str | None, names: list[str]) -> list[int]:
    if not text:
        return []
    lower = {n.lower(): i for i, n in enumerate(names)}
    ids = []
    for tok in (t.strip() for t in text.split(",")):
        if not tok:
            continue
        if tok.lower() in lower:
            ids.append(lower[tok.lower()])
        elif tok.isdigit() and int(tok) < len(names):
            ids.append(int(tok))
        else:
            raise SystemExit(f"error: --unseen: {tok!r} is not one of the classes ({', '.join(names[:10])}"
                             f"{', ...' if len(names) > 10 else ''}) nor a class id")
    if len(set(ids)) == len(names):
        raise SystemExit("error: --unseen lists every class; at least one class must be seen")
    return sorted(set(ids))


def build_data(args: argparse.Namespace) -> tuple[TrainFiles, list[list[str]], int]:
    """Training items, the class list (synonym lists) and the ignore index."""
    from ..data.classes import display_names
    from ..data.image_io import list_images
    from .segment import classes_from_arg

    classes = None
    if args.classes:
        try:
            classes = classes_from_arg(args.classes)
        except (ValueError, FileNotFoundError) as err:
            raise SystemExit(f"error: --classes: {err}") from None
    if (args.images is None) == (args.dataset is None):
        raise SystemExit("error: give the training images with --images DIR or --dataset NAME --root DIR (one of them)")
    ignore = args.ignore_index
    if args.dataset:
        from ..data.datasets import DatasetError, open_dataset

        if args.root is None:
            raise SystemExit("error: --dataset needs --root DIR (the dataset's folder)")
        kw = {"classes": classes} if args.dataset.lower() in ("folder", "generic") else {}
        try:
            ds = open_dataset(args.dataset, args.root, args.split, **kw)
        except (DatasetError, ValueError, FileNotFoundError) as err:
            raise SystemExit(f"error: --dataset {args.dataset}: {err}") from None
        if classes is None:
            classes = ds.classes
        elif len(classes) != ds.num_classes:
            raise SystemExit(f"error: --classes has {len(classes)} classes but {args.dataset} labels "
                             f"{ds.num_classes}; the label ids index into the class list")
        ignore = ds.ignore_index
        images = [r.image_path for r in ds.refs]
        data = TrainFiles(images, label_reader=ds.read_label, unlabeled_id=args.unlabeled_id, exif=False)
    else:
        if classes is None:
            raise SystemExit("error: --classes is required with --images")
        try:
            images = list_images([args.images], recursive=args.recursive)
        except (ValueError, FileNotFoundError) as err:
            raise SystemExit(f"error: --images: {err}") from None
        labels = _pair_labels(images, args.labels) if args.labels else None
        # label files index the stored pixel grid; `maskclip label` reads images upright (EXIF)
        data = TrainFiles(images, labels, unlabeled_id=args.unlabeled_id, exif=labels is None)
    if args.pseudo_dir:
        data.pseudo, data.pseudo_lut = read_pseudo_index(args.pseudo_dir, list(data.images), display_names(classes),
                                                         ignore)
    if ignore < len(classes):
        raise SystemExit(f"error: --ignore-index {ignore} is a class id ({len(classes)} classes); choose >= {len(classes)}")
    return data, classes, ignore


def check_ground_truth(data: TrainFiles, num_classes: int, unseen: list[int], ignore: int, progress: bool) -> None:
    """Zero-shot pre-flight: every label map holds only seen ids, ignore or unlabelled (fails loudly before
    any training, naming the file)."""
    from tqdm import tqdm

    from ..plus.augment import UNLABELED
    from ..plus.pseudo import check_no_unseen_leak

    seen = [i for i in range(num_classes) if i not in unseen]
    allowed = np.array(seen + [ignore, UNLABELED])
    for i in tqdm(range(len(data)), desc="checking ground truth", disable=not progress, file=sys.stderr):
        gt = data.read_gt(i)
        where = str(data.labels[i]) if data.labels is not None else str(data.images[i])
        try:
            check_no_unseen_leak(gt, unseen, where=where)
        except ValueError as err:
            raise SystemExit(f"error: {err}\n(command line: pass --suppress-unseen to erase them on loading, "
                             "or --unlabeled-id if they are marked with a special value)") from None
        bad = np.unique(gt[~np.isin(gt, allowed)])
        if bad.size:
            raise SystemExit(f"error: {where}: label values {bad[:10].tolist()} are neither class ids "
                             f"(0..{num_classes - 1}) nor --ignore-index {ignore}")


def _device(args: argparse.Namespace) -> torch.device:
    if args.device:
        dev = torch.device(args.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"error: --device {args.device}: CUDA is not available; use --device cpu")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _load_clip(args: argparse.Namespace, device: torch.device):
    from ..clip.weights import WeightsError, load_clip, random_clip

    try:
        if args.random_weights:
            print(f"warning: --random-weights: a RANDOM {args.model} teaches; the result means nothing",
                  file=sys.stderr)
            return random_clip(args.model, device=device)
        return load_clip(args.weights or args.model, device=device, quick_gelu=not args.gelu)
    except WeightsError as err:
        raise SystemExit(f"error: {err}") from None


def class_embeddings(classifier: Any) -> torch.Tensor:
    """One row per class for the target network: the mean of its names' (normalised) embeddings."""
    emb = classifier.embeddings.float().cpu()
    idx = classifier.class_of_name.cpu()
    out = torch.zeros(classifier.num_classes, emb.shape[1]).index_add_(0, idx, emb)
    return F.normalize(out, dim=-1)


RESUME_KEYS = ("classes", "mode", "unseen", "target", "width", "output_stride", "head_channels")


def _check_out_dir(args: argparse.Namespace, record: dict, is_main: bool) -> None:
    ckpt, run_json = args.out / "checkpoint.pt", args.out / "run.json"
    if ckpt.exists() and not args.resume:
        raise SystemExit(f"error: {ckpt} exists; pass --resume to continue that run, or choose another --out")
    if args.resume and run_json.exists():
        try:
            old = json.loads(run_json.read_text())
        except (OSError, ValueError):
            old = {}
        diff = [k for k in RESUME_KEYS if k in old and old[k] != record[k]]
        if diff:
            raise SystemExit(f"error: --resume: {run_json} was started with different {', '.join(diff)} "
                             f"({', '.join(f'{k}={old[k]!r}' for k in diff)}); use another --out")
    if args.resume and not ckpt.exists() and is_main:
        print(f"[maskclip+] --resume: no {ckpt} yet, starting from iteration 0", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ..clip.weights import WeightsError
    from ..data.classes import display_names
    from ..dense import MaskCLIP, build_text_classifier
    from ..dense.text import resolve_templates
    from ..plus.models import build_target_model
    from ..plus.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    is_main = int(os.environ.get("RANK", "0")) == 0
    progress = not args.quiet and is_main
    data, classes, ignore = build_data(args)
    names = display_names(classes)
    unseen = _parse_unseen(args.unseen, names)
    if args.mode == "zero-shot":
        if not unseen:
            raise SystemExit("error: --mode zero-shot needs --unseen NAMES (the classes without annotations)")
        if not data.has_labels():
            raise SystemExit("error: --mode zero-shot needs ground truth for the seen classes (--labels DIR or --dataset)")
        if not args.suppress_unseen:
            check_ground_truth(data, len(names), unseen, ignore, progress)
    else:
        if unseen or args.no_teacher:
            raise SystemExit("error: --unseen / --no-teacher apply to --mode zero-shot only")
        if data.has_labels() and is_main:
            print("[maskclip+] annotation-free: the ground truth given is not used", file=sys.stderr)
        data.labels = data.label_reader = None
    try:
        config = config_from_args(argparse.Namespace(**{**vars(args), "mode": args.teacher_mode}))
        templates = templates_from_arg(args.templates)
        tmpl = list(resolve_templates(templates))
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None

    record = {"classes": names, "class_names": classes, "mode": args.mode, "unseen": [names[i] for i in unseen],
              "target": args.target, "width": args.width, "output_stride": args.output_stride,
              "head_channels": args.head_channels,
              "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}}
    _check_out_dir(args, record, is_main)

    device = _device(args)
    clip = _load_clip(args, device)
    text = build_text_classifier(clip, classes, templates)
    pretrained = None if args.pretrained.lower() == "none" else args.pretrained
    torch.manual_seed(args.seed)
    try:
        model = build_target_model(args.target, clip.embed_dim, class_embeddings(text), pretrained,
                                   output_stride=args.output_stride, base_channels=args.width,
                                   head_channels=args.head_channels, warn_random_init=is_main)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as err:
        raise SystemExit(f"error: --target {args.target} --pretrained {args.pretrained}: {err}") from None
    clip_name = getattr(clip, "weights_name", args.weights or args.model)
    if Path(str(clip_name)).expanduser().is_file():
        clip_name = str(Path(str(clip_name)).expanduser().resolve())
    tc = TrainConfig()
    model.meta.update(
        classes=names, class_names=classes, templates=tmpl, mean=list(tc.mean), std=list(tc.std),
        clip={"name": clip_name, "sha256": getattr(clip, "weights_sha256", None), "quick_gelu": not args.gelu},
        mode=args.mode, unseen=[names[i] for i in unseen], unseen_ids=unseen,
        teacher=None if (args.no_teacher or args.pseudo_dir) else {"settings": settings_dict(config),
                                                                   "templates": args.templates})

    teacher = None
    if not args.no_teacher and not args.pseudo_dir:
        teacher = MaskCLIPTeacher(MaskCLIP(clip, config), text.to(device), tc.mean, tc.std)
    elif args.no_teacher:
        data.pseudo = None
    self_after = None if args.no_teacher else args.self_train_after
    cfg = TrainConfig(
        iterations=args.iterations, batch_size=args.batch_size, crop_size=args.crop_size, scale=args.scale,
        lr=args.lr, weight_decay=args.weight_decay, mode=args.mode, self_train_after=self_after,
        self_train_source=args.self_train_source,
        seen_ids=[i for i in range(len(names)) if i not in unseen] if args.mode == "zero-shot" else None,
        unseen_ids=unseen, suppress_unseen=args.suppress_unseen, ignore_index=ignore,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, amp=args.amp, seed=args.seed,
        out_dir=str(args.out), resume=args.resume, num_workers=args.workers, freeze_bn=args.freeze_bn,
        photometric=not args.no_photometric, device=str(device), progress=progress,
        extra={"options": record["options"]})
    if is_main:
        args.out.mkdir(parents=True, exist_ok=True)
        tmp = args.out / "run.json.tmp"
        tmp.write_text(json.dumps({**record, "train_config": asdict(cfg), "meta": model.meta}, indent=1, default=str))
        os.replace(tmp, args.out / "run.json")
        src = "precomputed pseudo labels" if args.pseudo_dir else ("ground truth only" if args.no_teacher else
                                                                     f"MaskCLIP teacher {clip_name}")
        print(f"[maskclip+] {args.mode}: {len(data)} images, {len(names)} classes"
              f"{f' ({len(unseen)} unseen)' if unseen else ''}, {args.target} <- {src}; "
              f"self-training {'from iteration ' + str(st) if (st := cfg.self_train_start()) is not None else 'off'}",
              file=sys.stderr)
    try:
        res = train(cfg, model, data, teacher)
    except KeyboardInterrupt:
        if is_main:
            print(f"[maskclip+] interrupted; continue with the same command plus --resume", file=sys.stderr)
        return 130
    except (ValueError, WeightsError) as err:
        raise SystemExit(f"error: {err}") from None
    if res["status"] != "completed":
        if is_main:
            print(f"[maskclip+] stopped at iteration {res['iteration']}: continue with --resume", file=sys.stderr)
        return 143
    if is_main:
        print(f"[maskclip+] done: {res['iteration']} iterations; model {res['model_path']}, log {res['log_path']}")
    return 0
