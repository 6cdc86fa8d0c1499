"""MaskCLIP+ training as one library call: `train_maskclip_plus(PlusJob(...))` (what `maskclip train` runs).

The frozen MaskCLIP teacher (any CLIP and MaskCLIP setting) labels every augmented training crop on the
fly, or precomputed labels from `maskclip label` are reused; after `self_train_after` of the schedule the
network labels its own crops. Zero-shot (transductive): ground truth for the seen classes, pseudo labels
only on pixels without ground truth and only among the unseen classes. Every problem with the inputs is
an ordinary exception (SettingsError, a ValueError, names the option or file) raised before training.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..clip.weights import WeightsInfo, load_weights, random_weights
from ..data.datasets import DatasetError, open_dataset
from ..data.image_io import list_images
from ..dense.config import MaskCLIPConfig
from ..dense.engine import MaskCLIP
from ..dense.text import build_text_classifier, resolve_templates
from ..errors import SettingsError
from ..io.atomic import dumps_json, write_text
from ..io.label_index import read_label_index
from ..io.layout import check_out_dir
from ..vocab import parse_vocabulary
from .config import PlusTrainConfig
from .data import TrainFiles, check_ground_truth, pair_labels
from .distributed import DistInfo, training_device
from .loop import train
from .models import build_target_model
from .teacher import MaskCLIPTeacher, class_embeddings


@dataclass(frozen=True)
class PlusData:
    """Where the training images come from: a folder (`images`, optional `labels`) or a benchmark reader
    (`dataset`, `root`, `split`), optionally with labels precomputed by `maskclip label` (`pseudo_dir`)."""

    classes: str | None = None  # "cat,dog", a class file or a packaged list; default with a dataset: its own
    images: Path | None = None
    labels: Path | None = None
    recursive: bool = False
    dataset: str | None = None
    root: Path | None = None
    split: str = "train"
    ignore_index: int = 255
    unlabeled_id: int | None = None
    pseudo_dir: Path | None = None


@dataclass(frozen=True)
class TeacherSpec:
    """The frozen CLIP (teacher and text encoder of the network's classifier) and its MaskCLIP settings:
    `config` (default: the CLIP's recommended settings, else MaskCLIPConfig's) with `overrides` over it;
    `templates` (default: the CLIP's recommended ones, else the paper's 85)."""

    clip: str = "ViT-B/16"
    config: MaskCLIPConfig | None = None
    templates: str | list[str] | None = None
    random_init: bool = False
    quick_gelu: bool = True
    overrides: dict = field(default_factory=dict)

    def settings(self, info: WeightsInfo) -> tuple[MaskCLIPConfig, str | list[str]]:
        rec = dict(info.recommended)
        templates = self.templates or rec.pop("templates", None) or "85"
        rec.pop("templates", None)
        base = self.config if self.config is not None else MaskCLIPConfig(**rec)
        return replace(base, **self.overrides), templates


@dataclass(frozen=True)
class TargetSpec:
    name: str = "deeplabv2-r101"
    pretrained: str | None = "imagenet"  # None: random initialisation (warned)
    output_stride: int | None = None
    width: int = 64
    head_channels: int = 128
    # a class whose embedding the network learns (the authors' cls_bg, Context-60 zero-shot: "background"),
    # the other classes' text embeddings frozen
    learned_background: str | None = None


@dataclass(frozen=True)
class PlusJob:
    data: PlusData
    teacher: TeacherSpec
    target: TargetSpec
    train: PlusTrainConfig  # the schedule; classes, unseen ids and ignore index are filled in from the data
    unseen: tuple[str, ...] = ()
    use_teacher: bool = True  # False: zero-shot baseline on the seen-class ground truth alone
    options: dict = field(default_factory=dict)  # recorded in run.json (e.g. the command line's)


def _vocabulary(text: str | None) -> tuple[tuple[str, ...], ...] | None:
    return parse_vocabulary(text).classes if text else None


def load_training_data(d: PlusData) -> tuple[TrainFiles, list[list[str]], int]:
    """Training items, the class list (synonym lists) and the ignore index."""
    classes = _vocabulary(d.classes)
    if (d.images is None) == (d.dataset is None):
        raise SettingsError("give the training images with --images DIR or --dataset NAME --root DIR (one of them)")
    ignore = d.ignore_index
    if d.dataset:
        if d.root is None:
            raise SettingsError("--dataset needs --root DIR (the dataset's folder)")
        kw = {"classes": [list(c) for c in classes]} if d.dataset.lower() in ("folder", "generic") and classes else {}
        try:
            ds = open_dataset(d.dataset, d.root, d.split, **kw)
        except (DatasetError, ValueError, FileNotFoundError) as err:
            raise SettingsError(f"--dataset {d.dataset}: {err}") from None
        if classes is not None and len(classes) != ds.num_classes:
            raise SettingsError(f"--classes has {len(classes)} classes but {d.dataset} labels {ds.num_classes}; the "
                                "label ids index into the class list")
        classes = classes or tuple(tuple(c) for c in ds.classes)
        ignore = ds.ignore_index
        data = TrainFiles([r.image_path for r in ds.refs], label_reader=ds.read_label, unlabeled_id=d.unlabeled_id)
    else:
        if classes is None:
            raise SettingsError("--classes is required with --images")
        try:
            images = list_images([d.images], recursive=d.recursive)
            labels = pair_labels(images, d.labels) if d.labels else None
        except (ValueError, FileNotFoundError) as err:
            raise SettingsError(f"--images/--labels: {err}") from None
        # label files index the stored pixel grid; `maskclip label` reads images upright (EXIF)
        data = TrainFiles(images, labels, unlabeled_id=d.unlabeled_id, exif=labels is None)
    if d.pseudo_dir:
        data.pseudo, data.pseudo_lut = read_label_index(d.pseudo_dir, list(data.images), [c[0] for c in classes],
                                                        ignore)
    if ignore < len(classes):
        raise SettingsError(f"--ignore-index {ignore} is a class id ({len(classes)} classes); choose >= {len(classes)}")
    return data, [list(c) for c in classes], ignore


def parse_unseen(names: tuple[str, ...], class_names: list[str]) -> list[int]:
    """Unseen classes by name (or id) -> sorted ids; every class unseen is an error."""
    lower = {n.lower(): i for i, n in enumerate(class_names)}
    ids = []
    for tok in (t.strip() for t in names):
        if not tok:
            continue
        if tok.lower() in lower:
            ids.append(lower[tok.lower()])
        elif tok.isdigit() and int(tok) < len(class_names):
            ids.append(int(tok))
        else:
            more = ", ..." if len(class_names) > 10 else ""
            raise SettingsError(f"--unseen: {tok!r} is not one of the classes ({', '.join(class_names[:10])}{more}) "
                                "nor a class id")
    if len(set(ids)) == len(class_names):
        raise SettingsError("--unseen lists every class; at least one class must be seen")
    return sorted(set(ids))


def _check_mode(job: PlusJob, data: TrainFiles, names: list[str], unseen: list[int], ignore: int,
                progress: bool) -> None:
    if job.train.mode == "zero-shot":
        if not unseen:
            raise SettingsError("--mode zero-shot needs --unseen NAMES (the classes without annotations)")
        if not data.has_labels():
            raise SettingsError("--mode zero-shot needs ground truth for the seen classes (--labels DIR or --dataset)")
        if not job.train.suppress_unseen:
            try:
                check_ground_truth(data, len(names), unseen, ignore, progress)
            except ValueError as err:
                raise SettingsError(f"{err}\n(command line: pass --suppress-unseen to erase them on loading, or "
                                    "--unlabeled-id if they are marked with a special value)") from None
    elif unseen or not job.use_teacher:
        raise SettingsError("--unseen / --no-teacher apply to --mode zero-shot only")


RESUME_KEYS = ("class_names", "mode", "unseen", "target", "width", "output_stride", "head_channels",
               "learned_background", "recipe")


def _check_out_dir(cfg: PlusTrainConfig, record: dict, is_main: bool) -> None:
    """A checkpoint in the output folder is continued only when asked, and only with the same run."""
    import json

    out = Path(cfg.out_dir)
    ckpt, run_json = out / "checkpoint.pt", out / "run.json"
    if ckpt.exists() and not cfg.resume:
        raise SettingsError(f"{ckpt} exists; pass --resume to continue that run, or choose another --out")
    if cfg.resume and run_json.exists():
        try:
            old = json.loads(run_json.read_text())
        except (OSError, ValueError):
            old = {}
        diff = [k for k in RESUME_KEYS if k in old and old[k] != record[k]]
        if diff:
            raise SettingsError(f"--resume: {run_json} was started with different {', '.join(diff)} "
                                f"({', '.join(f'{k}={old[k]!r}' for k in diff)}); use another --out")
    if cfg.resume and not ckpt.exists() and is_main:
        print(f"[maskclip+] --resume: no {ckpt} yet, starting from iteration 0", file=sys.stderr)


def _load_teacher_clip(spec: TeacherSpec, device: torch.device):
    if spec.random_init:
        print(f"warning: --random-weights: a RANDOM {spec.clip} teaches; the result means nothing", file=sys.stderr)
        return random_weights(spec.clip, device=device)
    return load_weights(spec.clip, device=device, quick_gelu=spec.quick_gelu)


def _clip_meta(info: WeightsInfo, spec: TeacherSpec) -> dict:
    name = info.name
    if Path(str(name)).expanduser().is_file():
        name = str(Path(str(name)).expanduser().resolve())
    return {"name": name, "sha256": info.sha256, "quick_gelu": spec.quick_gelu}


@dataclass
class _Plan:
    """What the checks produced: the training items, classes, unseen ids, the full config and run record."""

    data: TrainFiles
    classes: list[list[str]]
    unseen: list[int]
    cfg: PlusTrainConfig
    record: dict
    learned: tuple[int, ...] = ()

    @property
    def names(self) -> list[str]:
        return [c[0] for c in self.classes]


def _plan(job: PlusJob, device: str | torch.device | None, progress: bool, is_main: bool) -> _Plan:
    """Every check before any model loads: the data, the classes, the mode, the output folder."""
    check_out_dir(Path(job.train.out_dir))
    data, classes, ignore = load_training_data(job.data)
    names = [c[0] for c in classes]
    unseen = parse_unseen(job.unseen, names)
    _check_mode(job, data, names, unseen, ignore, progress)
    if job.train.mode != "zero-shot" and job.train.gt_ignore_mask:
        if not data.has_labels():
            raise SettingsError("--gt-ignore-mask (the authors' VOC20/Context-59 recipes set it) needs the ground "
                                "truth: give --labels DIR or --dataset, or pass --no-gt-ignore-mask to label every "
                                "pixel")
        if is_main:
            print("[maskclip+] annotation-free with the ground truth's void mask (the authors' VOC20/Context-59 "
                  "configs): void pixels are not trained on, no class label is used", file=sys.stderr)
    elif job.train.mode != "zero-shot":
        if data.has_labels() and is_main:
            print("[maskclip+] annotation-free: the ground truth given is not used", file=sys.stderr)
        data.labels = data.label_reader = None
    t = job.target
    learned: tuple[int, ...] = ()
    if t.learned_background:
        lower = [n.lower() for n in names]
        if t.learned_background.lower() not in lower:
            raise SettingsError(f"--learned-background {t.learned_background!r} is not one of the classes")
        learned = (lower.index(t.learned_background.lower()),)
        if learned[0] in unseen:
            raise SettingsError(f"--learned-background {t.learned_background!r} is an unseen class; it learns from "
                                "its ground truth, so it must be seen")
    record = {"classes": classes, "class_names": names, "mode": job.train.mode, "unseen": [names[i] for i in unseen],
              "target": t.name, "width": t.width, "output_stride": t.output_stride, "head_channels": t.head_channels,
              "learned_background": t.learned_background, "recipe": job.options.get("recipe"), "options": job.options}
    zero_shot = job.train.mode == "zero-shot"
    cfg = replace(job.train, unseen_ids=unseen, ignore_index=ignore,
                  seen_ids=[i for i in range(len(names)) if i not in unseen] if zero_shot else None,
                  self_train_after=job.train.self_train_after if job.use_teacher else None,
                  extra={"options": job.options})
    _check_out_dir(cfg, record, is_main)
    requested = str(device) if device is not None else cfg.device
    dev = training_device(requested, DistInfo(local_rank=int(os.environ.get("LOCAL_RANK", "0"))))
    return _Plan(data, classes, unseen, replace(cfg, device=str(dev)), record, learned)


def _networks(job: PlusJob, plan: _Plan, is_main: bool) -> tuple[torch.nn.Module, MaskCLIPTeacher | None, str]:
    """The target network (its frozen classifier: the teacher CLIP's text embeddings) and the teacher."""
    cfg, t, dev = plan.cfg, job.target, torch.device(plan.cfg.device)
    clip, info = _load_teacher_clip(job.teacher, dev)
    config, templates = job.teacher.settings(info)
    text = build_text_classifier(clip, plan.classes, templates)
    torch.manual_seed(cfg.seed)
    try:
        model = build_target_model(t.name, clip.embed_dim, class_embeddings(text), t.pretrained,
                                   output_stride=t.output_stride, base_channels=t.width,
                                   head_channels=t.head_channels, warn_random_init=is_main,
                                   learned_classes=plan.learned)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as err:
        raise SettingsError(f"--target {t.name} --pretrained {t.pretrained or 'none'}: {err}") from None
    teacher = None
    if job.use_teacher and job.data.pseudo_dir is None:
        scored = plan.unseen if cfg.mode == "zero-shot" and cfg.teacher_classes == "unseen" else None
        teacher = MaskCLIPTeacher(MaskCLIP(clip, config), text.to(dev), cfg.mean, cfg.std, scored)
    names = plan.names
    model.meta.update(
        classes=plan.classes, class_names=names, templates=list(resolve_templates(templates)), mean=list(cfg.mean),
        std=list(cfg.std), clip=_clip_meta(info, job.teacher), mode=cfg.mode, unseen=[names[i] for i in plan.unseen],
        unseen_ids=plan.unseen, recipe=plan.record["recipe"],
        teacher={"settings": asdict(config), "templates": templates} if teacher else None)
    source = ("precomputed pseudo labels" if job.data.pseudo_dir is not None else
              f"MaskCLIP teacher {info.name}" if job.use_teacher else "ground truth only")
    return model, teacher, source


def train_maskclip_plus(job: PlusJob, device: str | torch.device | None = None,
                        progress: bool = True) -> dict[str, Any]:
    """Check everything, build the teacher, the text classifier and the target network, write run.json,
    and train (see loop.train for the returned summary). Run under torchrun for several processes."""
    is_main = int(os.environ.get("RANK", "0")) == 0
    plan = _plan(job, device, progress and is_main, is_main)
    model, teacher, source = _networks(job, plan, is_main)
    if not job.use_teacher:
        plan.data.pseudo = None
    cfg = plan.cfg
    if is_main:
        write_text(Path(cfg.out_dir) / "run.json", dumps_json({**plan.record, "train_config": asdict(cfg),
                                                               "meta": model.meta}, indent=1))
        st, n_unseen = cfg.self_train_start(), len(plan.unseen)
        print(f"[maskclip+] {cfg.mode}: {len(plan.data)} images, {len(plan.classes)} classes"
              f"{f' ({n_unseen} unseen)' if n_unseen else ''}, {job.target.name} <- {source}; "
              f"self-training {'from iteration ' + str(st) if st is not None else 'off'}", file=sys.stderr)
    return train(replace(cfg, progress=progress and is_main), model, plan.data, teacher)


__all__ = ["PlusData", "PlusJob", "TargetSpec", "TeacherSpec", "load_training_data", "parse_unseen",
           "train_maskclip_plus"]
