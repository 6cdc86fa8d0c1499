"""Training the proposal generator on seen-class ground truth: `train_proposals(ProposalJob(...))`.

What `maskclip train-proposals` runs. Every check comes first (output folder, images and labels, class
list, unseen names, every label map's values, the resume checkpoint), each a one-line SettingsError.
The data are MaskCLIP+'s: `TrainFiles` folders, `TrainCrops` (the deterministic crop stream: random
resize 0.5-2.0 of the base scale, crop, flip, photometric distortion, ImageNet normalisation) with the
unseen classes suppressed on loading, and `StreamSampler`, so a resumed run sees exactly the crops of an
uninterrupted one. Optimisation is MaskFormer's: AdamW, lr 1e-4, weight decay 1e-4 (none on norms and the
query embeddings), poly schedule (power 0.9, to 0, no warm-up), backbone lr x0.1 (for ImageNet weights;
x1 from scratch), gradient clipping at a total L2 norm of 0.01 (the MaskFormer-family detectron2 configs).

OUT/checkpoint.pt (every `checkpoint_every` iterations, at the end, and on SIGINT/SIGTERM after the step
in progress), OUT/log.jsonl (one JSON line per `log_every`), OUT/run.json, and OUT/model.pt when done.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..device import resolve_device
from ..errors import SettingsError
from ..io.atomic import write_json
from ..io.layout import check_out_dir
from ..io.tensorfile import CheckedFileError
from ..normalization import pixel_mean_std
from ..plus.api import PlusData, load_training_data, parse_unseen
from ..plus.config import PlusTrainConfig
from ..plus.data import StreamSampler, TrainCrops, TrainFiles
from ..plus.state import TrainState, rng_state, seed_all, set_rng_state
from .files import load_train_file, save_model_file, save_train_file
from .losses import CriterionConfig, SetCriterion
from .model import ProposalConfig, ProposalModel, build_proposal_model, imagenet_weights
from .runtime import LogFn, LogWindow, TrainingInterrupted, stop_requests
from .targets import batch_targets, check_labels, seen_lookup

NO_DECAY = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.Embedding)
RESUME_KEYS = ("config", "seen", "input_size", "scale")


@dataclass(frozen=True)
class ProposalSchedule:
    """Optimisation and data settings. MaskFormer ADE20K: batch 16, 160k iterations, 512 crops; the
    defaults here fit a CPU (crops of 128, batch 8); the optimiser numbers are MaskFormer's."""

    iterations: int = 2000
    batch_size: int = 8
    crop_size: tuple[int, int] = (128, 128)  # (h, w)
    scale: tuple[int, int] | None = None  # random-resize base (long, short) side; None: the crop size
    lr: float = 1e-4
    weight_decay: float = 1e-4
    backbone_lr_mult: float | None = None  # None: 0.1 with pretrained weights (MaskFormer), 1.0 from scratch
    poly_power: float = 0.9
    grad_clip: float | None = 0.01  # total L2 norm; None: no clipping
    photometric: bool = True
    amp: bool = False  # fp16 autocast + loss scaling, CUDA only
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 20
    num_workers: int = 0

    def base_scale(self) -> tuple[int, int]:
        return tuple(self.scale) if self.scale else (max(self.crop_size), min(self.crop_size))  # type: ignore

    def validate(self) -> None:
        for name in ("iterations", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if min(self.crop_size) < 1 or (self.scale and min(self.scale) < 1):
            raise ValueError("crop size and scale must be positive")
        if not self.lr > 0 or self.weight_decay < 0 or (self.grad_clip is not None and not self.grad_clip > 0):
            raise ValueError("lr and grad clip must be > 0, weight decay >= 0")


@dataclass(frozen=True)
class ProposalJob:
    """One training run: the data (image and label folders, the class list, the unseen class names), the
    network, the criterion and the schedule."""

    images: Path
    labels: Path
    classes: str  # "cat,dog", a class file or a packaged list; label ids index into it
    out_dir: Path
    unseen: tuple[str, ...] = ()
    model: ProposalConfig = field(default_factory=ProposalConfig)
    criterion: CriterionConfig = field(default_factory=CriterionConfig)
    schedule: ProposalSchedule = field(default_factory=ProposalSchedule)
    pretrained: str | None = None  # None (random init), "imagenet", a PRETRAINED_URLS key, URL or file
    resume: bool = False  # continue from OUT/checkpoint.pt (else an existing one is an error)
    ignore_index: int = 255
    recursive: bool = False
    options: dict = field(default_factory=dict)  # recorded in run.json (e.g. the command line's)


@dataclass
class _Plan:
    """What the checks produced."""

    data: TrainFiles
    seen_ids: list[int]
    unseen_ids: list[int]
    ignore: int
    device: torch.device
    description: dict[str, Any]
    record: dict[str, Any]
    checkpoint: dict[str, Any] | None  # the checkpoint to resume from


def _plan(job: ProposalJob, device: str | torch.device | None, progress: bool) -> _Plan:
    """Every check before any network is built."""
    try:
        job.schedule.validate()
        job.model.validate()
        job.criterion.validate()
    except ValueError as err:
        raise SettingsError(str(err)) from None
    if job.pretrained is not None and job.model.width != 64:
        raise SettingsError(f"--pretrained {job.pretrained}: ImageNet weights need --width 64, got {job.model.width}")
    if job.pretrained == "imagenet":
        try:
            imagenet_weights(job.model)
        except ValueError as err:
            raise SettingsError(f"--pretrained imagenet: {err}") from None
    out = check_out_dir(Path(job.out_dir))
    try:
        data, classes, ignore = load_training_data(PlusData(job.classes, Path(job.images), Path(job.labels),
                                                            job.recursive, ignore_index=job.ignore_index))
    except SettingsError as err:  # MaskCLIP+'s reader names its own options
        raise SettingsError(str(err).replace("--images/--labels: ", "IMAGES_DIR/LABELS_DIR: ")) from None
    names = [c[0] for c in classes]
    unseen = parse_unseen(tuple(job.unseen), names)
    seen = [i for i in range(len(names)) if i not in unseen]
    counts = check_labels(data, len(names), ignore, seen, progress)
    dev = resolve_device(device)
    mean, std = pixel_mean_std("imagenet")  # MaskFormer's and MaskCLIP+'s normalisation
    description = {"config": asdict(job.model), "seen": [names[i] for i in seen], "seen_ids": seen,
                   "classes": names, "unseen": [names[i] for i in unseen], "mean": list(mean), "std": list(std),
                   "input_size": list(job.schedule.crop_size), "scale": list(job.schedule.base_scale()),
                   "ignore_index": ignore}
    record = {"schedule": asdict(job.schedule), "criterion": asdict(job.criterion), "pretrained": job.pretrained,
              "images": str(job.images), "labels": str(job.labels), "classes": classes,
              "class_pixels": {n: int(c) for n, c in zip(names, counts)}, "options": job.options}
    ckpt = _resume_checkpoint(out / "checkpoint.pt", job.resume, description)
    return _Plan(data, seen, unseen, ignore, dev, description, record, ckpt)


def _resume_checkpoint(path: Path, resume: bool, description: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint to continue, only when asked and only for the same network and classes."""
    if not path.exists():
        if resume:
            print(f"[proposals] --resume: no {path} yet, starting from iteration 0", file=sys.stderr)
        return None
    if not resume:
        raise SettingsError(f"{path} exists; pass --resume to continue that run, or choose another --out")
    try:
        ck = load_train_file(path)
    except CheckedFileError as err:
        raise SettingsError(str(err)) from None
    old = ck["description"]

    def same(k: str) -> bool:
        return json.dumps(old.get(k), sort_keys=True) == json.dumps(description[k], sort_keys=True)

    diff = [k for k in RESUME_KEYS if not same(k)]
    if diff:
        raise SettingsError(f"--resume: {path} was trained with different {', '.join(diff)} "
                            f"({'; '.join(f'{k}={old.get(k)!r}' for k in diff)}); use another --out")
    return ck


def param_groups(model: nn.Module, weight_decay: float, backbone_mult: float) -> list[dict[str, Any]]:
    """MaskFormer's optimiser groups: backbone lr x `backbone_mult`; no weight decay on norm layers and
    embeddings (detectron2's WEIGHT_DECAY_NORM 0, MaskFormer's WEIGHT_DECAY_EMBED 0)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for mod_name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                key = (mod_name.split(".")[0] == "backbone", isinstance(module, NO_DECAY))
                groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr_mult": backbone_mult if bb else 1.0, "weight_decay": 0.0 if nd else weight_decay,
             "name": f"{'backbone' if bb else 'head'}{'-no-decay' if nd else ''}"}
            for (bb, nd), ps in sorted(groups.items())]


def poly_factor(iteration: int, iterations: int, power: float) -> float:
    """detectron2's WarmupPolyLR without warm-up: (1 - it / max_it) ** power."""
    return (1 - iteration / iterations) ** power


@dataclass
class _Context:
    """What every step needs besides the state and the batch."""

    job: ProposalJob
    plan: _Plan
    criterion: SetCriterion
    lookup: torch.Tensor
    use_amp: bool
    paths: dict[str, Path]


def _start(job: ProposalJob, plan: _Plan, use_amp: bool) -> TrainState:
    """The network, AdamW and loss scaler, fresh (seeded) or as the checkpoint left them."""
    s = job.schedule
    torch.manual_seed(s.seed)
    try:
        model = build_proposal_model(job.model, len(plan.seen_ids), job.pretrained)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as err:
        raise SettingsError(f"--pretrained {job.pretrained}: {err}") from None
    model = model.to(plan.device)
    mult = s.backbone_lr_mult if s.backbone_lr_mult is not None else (0.1 if job.pretrained else 1.0)
    opt = torch.optim.AdamW(param_groups(model, s.weight_decay, mult), lr=s.lr, weight_decay=s.weight_decay)
    state = TrainState(model, opt, torch.amp.GradScaler("cuda", enabled=use_amp))
    ck = plan.checkpoint
    if ck is None:
        seed_all(s.seed)
    else:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state.scaler.load_state_dict(ck["scaler"])
        state.iteration = ck["iteration"]
        set_rng_state(ck["rng"])
        print(f"[proposals] resumed from {job.out_dir}/checkpoint.pt at iteration {state.iteration}", file=sys.stderr)
    state.rng = rng_state()
    return state


def _step(state: TrainState, batch: dict[str, torch.Tensor], ctx: _Context) -> dict[str, float]:
    """One AdamW step on one batch; the state's iteration and RNG record advance with it."""
    s, device = ctx.job.schedule, ctx.plan.device
    factor = poly_factor(state.iteration, s.iterations, s.poly_power)
    for group in state.optimizer.param_groups:
        group["lr"] = s.lr * group["lr_mult"] * factor
    images = batch["image"].to(device, non_blocking=True)
    targets = batch_targets(batch["label"].to(device, non_blocking=True), ctx.lookup)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=ctx.use_amp):
        outputs = state.model(images, aux=ctx.job.criterion.deep_supervision)
    losses = ctx.criterion(outputs, targets)
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(losses["loss"]).backward()
    if s.grad_clip is not None:
        state.scaler.unscale_(state.optimizer)
        nn.utils.clip_grad_norm_(state.model.parameters(), s.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.iteration += 1
    state.rng = rng_state()
    out = {k: float(losses[k].detach()) for k in ("loss", "loss_ce", "loss_mask", "loss_dice")}
    out["targets_per_image"] = sum(len(t.labels) for t in targets) / len(targets)
    return out


def _save(state: TrainState, ctx: _Context) -> None:
    save_train_file(ctx.paths["checkpoint"], iteration=state.iteration,
                    model={k: v.detach().cpu() for k, v in state.model.state_dict().items()},
                    description=ctx.plan.description, optimizer=state.optimizer.state_dict(),
                    scaler=state.scaler.state_dict(), rng=state.rng, config=ctx.plan.record)


def _loop(state: TrainState, loader: Any, ctx: _Context, progress: bool, log_fn: LogFn | None) -> None:
    """Steps until the schedule ends; a signal ends it early with a checkpoint (TrainingInterrupted)."""
    s, stop, window = ctx.job.schedule, {}, LogWindow()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=s.iterations, initial=state.iteration, desc="proposals", file=sys.stderr)
    between_steps, saved = True, -1
    try:
        with stop_requests(stop):
            for batch in loader:
                between_steps = False
                result = _step(state, batch, ctx)
                between_steps = True
                it = state.iteration
                window.add(result)
                if bar is not None:
                    bar.update(1)
                if it % s.log_every == 0 or it == s.iterations:
                    lr = s.lr * poly_factor(it - 1, s.iterations, s.poly_power)
                    window.flush(it, s.iterations, lr, s.batch_size, ctx.paths["log"], log_fn)
                if it % s.checkpoint_every == 0 or it == s.iterations:
                    _save(state, ctx)
                    saved = it
                if stop and it < s.iterations:
                    raise TrainingInterrupted(it, ctx.paths["checkpoint"], stop["signal"])
    except TrainingInterrupted:
        if saved != state.iteration:
            _save(state, ctx)
        raise
    except KeyboardInterrupt:
        if between_steps and saved != state.iteration:
            _save(state, ctx)
        raise
    except Exception:
        if not (stop and between_steps):  # a signal can kill DataLoader workers before the loop sees it
            raise
        _save(state, ctx)
        raise TrainingInterrupted(state.iteration, ctx.paths["checkpoint"], stop["signal"]) from None
    finally:
        if bar is not None:
            bar.close()


def train_proposals(job: ProposalJob, device: str | torch.device | None = None, progress: bool = True, *,
                    log_fn: LogFn | None = None) -> Path:
    """Check everything, train (or continue) the proposal generator and write OUT/model.pt; returns its
    path. Raises SettingsError (one line) before any work when an input or setting cannot work, and
    TrainingInterrupted after checkpointing on SIGINT/SIGTERM. `log_fn` gets each log record."""
    plan = _plan(job, device, progress)
    out = Path(job.out_dir)
    paths = {"checkpoint": out / "checkpoint.pt", "log": out / "log.jsonl", "model": out / "model.pt"}
    use_amp = bool(job.schedule.amp and plan.device.type == "cuda")
    write_json(out / "run.json", {"description": plan.description, **plan.record})
    state = _start(job, plan, use_amp)
    s = job.schedule
    crops = TrainCrops(plan.data, PlusTrainConfig(
        mode="zero-shot", suppress_unseen=True, unseen_ids=plan.unseen_ids, seen_ids=plan.seen_ids,
        ignore_index=plan.ignore, crop_size=s.crop_size, scale=s.base_scale(), photometric=s.photometric,
        seed=s.seed, batch_size=s.batch_size, iterations=s.iterations))
    loader = torch.utils.data.DataLoader(
        crops, batch_size=s.batch_size, sampler=StreamSampler(state.iteration, s.iterations, s.batch_size),
        num_workers=s.num_workers, pin_memory=plan.device.type == "cuda")
    lookup = seen_lookup(len(plan.description["classes"]), plan.seen_ids).to(plan.device)
    ctx = _Context(job, plan, SetCriterion(job.criterion, len(plan.seen_ids)), lookup, use_amp, paths)
    print(f"[proposals] {len(plan.data)} images, {len(plan.seen_ids)} seen classes"
          f"{f', {len(plan.unseen_ids)} unseen left out' if plan.unseen_ids else ''}; {job.model.num_queries} "
          f"queries, ResNet-{job.model.depth} (width {job.model.width}), {s.iterations} iterations x "
          f"batch {s.batch_size} on {plan.device}", file=sys.stderr)
    state.model.train()
    _loop(state, loader, ctx, progress, log_fn)
    extra = {"iterations": state.iteration, "schedule": asdict(s), "criterion": asdict(job.criterion)}
    model: ProposalModel = state.model  # type: ignore[assignment]
    save_model_file(paths["model"], model, plan.description, extra)
    return paths["model"]


__all__ = ["ProposalJob", "ProposalSchedule", "TrainingInterrupted", "param_groups", "poly_factor",
           "train_proposals"]
