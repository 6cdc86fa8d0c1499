"""MaskCLIP+ training loop: one process, several (torchrun + DistributedDataParallel) or CPU.

Pseudo labels come from a frozen teacher called on every augmented crop (MaskCLIP-guided learning), or
from precomputed PNGs (pseudo.label_dataset / PseudoLabelDataset), and after ``self_train_after`` of the
schedule from the target network itself (self-training). See pseudo.py for the label-map convention.

Determinism. The training stream is a pure function of (seed, position): position p = iteration *
global_batch + slot selects the sample (a per-epoch permutation seeded by (seed, epoch)) and seeds its
augmentation. Hence resume needs only the iteration count, and N processes each taking a contiguous slice
of every global batch see exactly the crops one process would (DistributedSampler-equivalent sharding).
The loss is normalised by the *global* number of labelled pixels (all-reduced), so a DDP step computes the
same gradient as a single process on the whole batch (mmseg averages per-GPU means instead; identical
when every GPU has the same number of labelled pixels).
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .augment import IMAGENET_MEAN, IMAGENET_STD, UNLABELED, AugmentConfig, augment, sample_seed, to_image_tensor
from .pseudo import (check_no_unseen_leak, fill_unlabeled, label_statistics, merge_precomputed, resize_logits,
                     restricted_argmax, suppress_classes)

log = logging.getLogger(__name__)

Teacher = Callable[[Tensor], Tensor]
MODES = ("annotation-free", "zero-shot")


@dataclass
class TrainConfig:
    """Defaults are the paper's (batch 16, SGD 0.01 / 0.9 / 5e-4, poly 0.9, 512x512 crops)."""

    iterations: int = 8000  # paper: annotation-free 2k VOC / 4k Context / 8k COCO-Stuff; zero-shot 20k/40k/80k
    batch_size: int = 16  # GLOBAL batch, split evenly over processes
    crop_size: tuple[int, int] = (512, 512)  # (h, w); Pascal Context: (480, 480)
    scale: tuple[int, int] = (2048, 512)  # random-resize base scale; Pascal Context: (520, 520)
    lr: float = 0.01
    min_lr: float = 1e-4  # mmseg's poly schedule floor
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    mode: str = "annotation-free"  # or "zero-shot" (transductive)
    # fraction of the schedule after which the target network labels its own crops; "auto" = 0.1 for
    # zero-shot (paper) and None (never) for annotation-free (paper)
    self_train_after: float | None | str = "auto"
    # "eval": a separate no-grad forward in eval mode (BN running stats); "shared": the training forward's
    # detached logits (the authors' implementation; no extra pass)
    self_train_source: str = "eval"
    seen_ids: Sequence[int] | None = None  # zero-shot: if given, gt may contain only these (plus ignore)
    unseen_ids: Sequence[int] = ()
    suppress_unseen: bool = False  # zero-shot: map unseen ids in the gt to UNLABELED (authors' loader)
    ignore_index: int = 255
    checkpoint_every: int = 1000
    log_every: int = 50
    amp: bool = True  # CUDA only (autocast fp16 + GradScaler); CPU always runs fp32
    seed: int = 0
    out_dir: str = "runs/maskclip_plus"
    resume: bool = True  # continue from <out_dir>/checkpoint.pt when present
    num_workers: int = 2
    freeze_bn: bool = False  # BN layers in eval mode (running stats frozen, affine still trained)
    sync_bn: bool = True  # convert to SyncBatchNorm when world_size > 1 on CUDA (not possible on CPU/gloo)
    photometric: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    device: str | None = None  # default: cuda:<local rank> when available, else cpu
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, stored in checkpoints

    def self_train_start(self) -> int | None:
        """0-based iteration from which self-training replaces the teacher (None = never)."""
        frac = self.self_train_after
        if frac == "auto":
            frac = 0.1 if self.mode == "zero-shot" else None
        if frac is None:
            return None
        return int(round(float(frac) * self.iterations))

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(
            crop_size=(int(self.crop_size[0]), int(self.crop_size[1])), scale=(int(self.scale[0]), int(self.scale[1])),
            photometric=self.photometric, mean=tuple(self.mean), std=tuple(self.std),  # type: ignore[arg-type]
            ignore_index=self.ignore_index)

    def validate(self, world_size: int = 1) -> None:
        if self.mode not in MODES:
            raise ValueError(f"TrainConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError("TrainConfig.iterations and batch_size must be >= 1")
        if self.batch_size % world_size:
            raise ValueError(f"TrainConfig.batch_size={self.batch_size} (global) is not divisible by the "
                             f"{world_size} processes")
        if self.mode == "zero-shot" and not len(self.unseen_ids):
            raise ValueError("zero-shot training needs TrainConfig.unseen_ids (the classes without annotations)")
        frac = self.self_train_after
        if frac not in ("auto", None) and not (isinstance(frac, (int, float)) and 0 <= frac <= 1):
            raise ValueError(f"TrainConfig.self_train_after must be a fraction in [0, 1], None or 'auto', "
                             f"got {frac!r}")
        if self.self_train_source not in ("eval", "shared"):
            raise ValueError("TrainConfig.self_train_source must be 'eval' or 'shared'")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("TrainConfig.checkpoint_every and log_every must be >= 1")


def poly_lr(cfg: TrainConfig, iteration: int) -> float:
    """mmcv's poly policy: (lr - min_lr) * (1 - it / max_it) ** power + min_lr."""
    return (cfg.lr - cfg.min_lr) * (1 - iteration / cfg.iterations) ** cfg.poly_power + cfg.min_lr


# ----------------------------------------------------------------------------------------------------------
# Data


@dataclass
class Sample:
    """One training image (HxWx3 uint8 RGB), optional ground truth and optional precomputed pseudo labels
    (HxW integer maps). Datasets may return a Sample, a tuple (image[, gt[, pseudo]]) or a bare image."""

    image: Any
    label: Any = None
    pseudo: Any = None


def as_sample(item: Any) -> Sample:
    if isinstance(item, Sample):
        return item
    if isinstance(item, tuple):
        if not 1 <= len(item) <= 3:
            raise ValueError(f"dataset items must be (image[, gt[, pseudo]]), got a {len(item)}-tuple")
        return Sample(*item)
    if isinstance(item, dict):
        return Sample(item["image"], item.get("label"), item.get("pseudo"))
    return Sample(item)


class FileDataset:
    """Images (and optional label PNGs) from paths, loaded with PIL."""

    def __init__(self, image_paths: Sequence[str | Path], label_paths: Sequence[str | Path] | None = None):
        if label_paths is not None and len(label_paths) != len(image_paths):
            raise ValueError(f"{len(image_paths)} images but {len(label_paths)} label files")
        self.image_paths, self.label_paths = list(image_paths), label_paths

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, i: int) -> Sample:
        from PIL import Image

        with Image.open(self.image_paths[i]) as im:
            image = np.asarray(im.convert("RGB"))
        label = None
        if self.label_paths is not None:
            with Image.open(self.label_paths[i]) as im:
                label = np.asarray(im).astype(np.int64)
        return Sample(image, label)


def _as_long_map(x: Any, what: str, idx: int) -> Tensor:
    t = torch.as_tensor(np.asarray(x)).long()
    if t.ndim != 2:
        raise ValueError(f"dataset item {idx}: {what} must be an HxW map, got shape {tuple(t.shape)}")
    return t


class TrainCrops(torch.utils.data.Dataset):
    """Global stream position -> augmented crop {"image", "label"[, "pseudo"], "index"}; see module doc."""

    def __init__(self, data: Any, cfg: TrainConfig):
        if len(data) == 0:
            raise ValueError("training dataset is empty")
        self.data, self.cfg, self.aug = data, cfg, cfg.augment_config()
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.data)

    def dataset_index(self, position: int) -> int:
        epoch, k = divmod(position, len(self.data))
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(sample_seed(self.cfg.seed ^ 0x5EED, epoch))
            self._perm, self._perm_epoch = torch.randperm(len(self.data), generator=g), epoch
        return int(self._perm[k])

    def __getitem__(self, position: int) -> dict[str, Tensor]:
        cfg = self.cfg
        idx = self.dataset_index(position)
        s = as_sample(self.data[idx])
        image = to_image_tensor(s.image)
        h, w = image.shape[-2:]
        if cfg.mode == "zero-shot":
            if s.label is None:
                raise ValueError(f"dataset item {idx}: zero-shot training needs ground truth for the seen classes")
            gt = _as_long_map(s.label, "ground truth", idx)
            if cfg.suppress_unseen:
                gt = suppress_classes(gt, list(cfg.unseen_ids))
            check_no_unseen_leak(gt, list(cfg.unseen_ids), where=f"dataset item {idx}")
            if cfg.seen_ids is not None:
                allowed = torch.tensor(list(cfg.seen_ids) + [cfg.ignore_index, UNLABELED])
                bad = torch.unique(gt[~torch.isin(gt, allowed)])
                if bad.numel():
                    raise ValueError(f"dataset item {idx}: ground truth has ids {bad.tolist()[:10]} that are "
                                     "neither seen classes nor ignore_index")
        else:  # annotation-free: any ground truth is ignored
            gt = torch.full((h, w), UNLABELED, dtype=torch.long)
        maps = [gt]
        if s.pseudo is not None:
            maps.append(_as_long_map(s.pseudo, "pseudo labels", idx))
        for m, name in zip(maps, ("ground truth", "pseudo labels")):
            if tuple(m.shape) != (h, w):
                raise ValueError(f"dataset item {idx}: {name} size {tuple(m.shape)} != image size {(h, w)}")
        g = torch.Generator().manual_seed(sample_seed(cfg.seed, position))
        crop, labels = augment(image, torch.stack(maps), self.aug, g)
        out = {"image": crop, "label": labels[0], "index": torch.tensor(idx)}
        if s.pseudo is not None:
            out["pseudo"] = labels[1]
        return out


class StreamSampler(torch.utils.data.Sampler[int]):
    """Positions of this rank's slice of each global batch, from ``start`` to ``stop`` iterations."""

    def __init__(self, start: int, stop: int, global_batch: int, rank: int = 0, world_size: int = 1):
        self.start, self.stop, self.gb = start, stop, global_batch
        self.local = global_batch // world_size
        self.offset = rank * self.local

    def __iter__(self):
        for it in range(self.start, self.stop):
            base = it * self.gb + self.offset
            yield from range(base, base + self.local)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.local


# ----------------------------------------------------------------------------------------------------------
# Distributed helpers


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created_group: bool = False


def setup_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return DistInfo()
    created = False
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        dist.init_process_group("nccl" if use_cuda else "gloo")
        created = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), created)


def _rng_state() -> dict[str, Any]:
    st: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _set_bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any, iteration: int,
                    rng: dict[str, Any], config: TrainConfig) -> None:
    """Atomic: written to <path>.tmp in the same directory, then os.replace."""
    core = getattr(model, "module", model)
    state = {"format": "maskclip-plus-train/1", "iteration": iteration, "model": core.state_dict(),
             "meta": getattr(core, "meta", {}), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
             "rng": rng, "config": asdict(config)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------
# Training


def _targets(cfg: TrainConfig, num_classes: int, gt: Tensor, pseudo: Tensor | None, images: Tensor,
             teacher: Teacher | None, self_phase: bool, core: nn.Module, train_logits: Tensor | None,
             use_amp: bool) -> tuple[Tensor, str]:
    """Training target for one batch and where it came from ("teacher", "pseudo-file", "self", "gt")."""
    cand = list(cfg.unseen_ids) if cfg.mode == "zero-shot" else None
    size = tuple(gt.shape[-2:])
    with torch.no_grad():
        if self_phase:
            if train_logits is not None:
                logits = train_logits.detach()
            else:
                was_training = core.training
                core.eval()
                with torch.autocast(device_type=images.device.type, dtype=torch.float16, enabled=use_amp):
                    logits = core(images)
                core.train(was_training)
                if cfg.freeze_bn:
                    _set_bn_eval(core)
            labels, source = restricted_argmax(resize_logits(logits.float(), size), cand), "self"
        elif teacher is not None:
            logits = teacher(images)
            if logits.ndim != 4 or logits.shape[0] != images.shape[0] or logits.shape[1] != num_classes:
                raise ValueError(f"teacher returned {tuple(logits.shape)}; expected [B={images.shape[0]}, "
                                 f"K={num_classes}, H, W] logits (K = classes of the target's classifier)")
            labels, source = restricted_argmax(resize_logits(logits.float(), size), cand), "teacher"
        elif pseudo is not None:
            return merge_precomputed(gt, pseudo, cand, cfg.ignore_index), "pseudo-file"
        else:
            return torch.where(gt == UNLABELED, torch.full_like(gt, cfg.ignore_index), gt), "gt"
    target = fill_unlabeled(gt, labels)
    return target, source


def train(config: TrainConfig, model: nn.Module, dataset: Any, teacher: Teacher | None = None, *,
          log_fn: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train a MaskCLIP+ target network; returns a summary dict.

    model: a SegmentationModel (or any module mapping normalised images [B,3,H,W] to logits [B,K,H,W] at
    input size with ``num_classes``). dataset: items as described in :class:`Sample`. teacher: frozen
    callable on normalised crops -> [B,K,h,w] logits (any h, w; resized bilinearly), or None when the
    dataset carries precomputed pseudo labels (or for ground-truth-only zero-shot training).
    Run under torchrun for multi-process training; the same call works in one process.

    Returns {"status": "completed" | "interrupted", "iteration", "start_iteration", "losses" (global loss of
    each iteration run by this call), "checkpoint", "model_path", "log_path", "teacher_calls"}.
    On KeyboardInterrupt a checkpoint is written and the exception re-raised; on SIGTERM the current
    iteration finishes, a checkpoint is written and status "interrupted" is returned.
    """
    di = setup_distributed(config.device)
    try:
        return _train(config, model, dataset, teacher, di, log_fn)
    finally:
        if di.created_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, model: nn.Module, dataset: Any, teacher: Teacher | None, di: DistInfo,
           log_fn: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    cfg.validate(di.world_size)
    is_main = di.rank == 0
    if cfg.device is not None:
        device = torch.device(cfg.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", di.local_rank)
    else:
        device = torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    use_amp = bool(cfg.amp and device.type == "cuda")
    if cfg.amp and device.type != "cuda" and is_main:
        log.info("amp requested but device is %s: training in fp32", device)

    if not hasattr(model, "num_classes"):
        raise TypeError("model must expose num_classes (use maskclip.plus.models.build_target_model)")
    num_classes = int(model.num_classes)
    if 0 <= cfg.ignore_index < num_classes:
        raise ValueError(f"ignore_index={cfg.ignore_index} is a class id (model has {num_classes} classes); "
                         "choose an ignore_index >= num_classes")
    bad = [i for i in cfg.unseen_ids if not 0 <= i < num_classes]
    if bad:
        raise ValueError(f"unseen_ids {bad} are not class ids of a {num_classes}-class model")

    out = Path(cfg.out_dir)
    ckpt_path, log_path, model_path = out / "checkpoint.pt", out / "log.jsonl", out / "model.pt"
    if is_main:
        out.mkdir(parents=True, exist_ok=True)

    core = model.to(device)
    if di.world_size > 1 and device.type == "cuda" and cfg.sync_bn:
        core = nn.SyncBatchNorm.convert_sync_batchnorm(core)
    params = [p for p in core.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start = 0
    if cfg.resume and ckpt_path.exists():
        # CPU first: RNG states must stay CPU tensors; load_state_dict moves weights/optimizer state over
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck.get("format") != "maskclip-plus-train/1":
            raise ValueError(f"{ckpt_path}: not a MaskCLIP+ training checkpoint")
        old = ck.get("config", {})
        if old.get("batch_size") != cfg.batch_size or old.get("seed") != cfg.seed:
            log.warning("%s: resumed with a different batch_size/seed: the data stream will differ", ckpt_path)
        core.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        start = int(ck["iteration"])
        if di.rank == 0:
            _set_rng_state(ck["rng"])
        else:  # only rank 0's generators are stored; the others restart from a seed tied to the iteration
            _seed_all(sample_seed(cfg.seed + di.rank, start))
        if is_main:
            print(f"[maskclip+] resumed from {ckpt_path} at iteration {start}", flush=True)
    else:
        _seed_all(cfg.seed + di.rank)

    net: nn.Module = core
    if di.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            core, device_ids=[device.index] if device.type == "cuda" else None)

    self_start = cfg.self_train_start()
    if teacher is None and self_start != 0 and is_main:
        log.info("no teacher given: targets come from precomputed pseudo labels or ground truth")
    local_batch = cfg.batch_size // di.world_size
    crops = TrainCrops(dataset, cfg)
    loader = torch.utils.data.DataLoader(
        crops, batch_size=local_batch, sampler=StreamSampler(start, cfg.iterations, cfg.batch_size, di.rank,
                                                             di.world_size),
        num_workers=cfg.num_workers, pin_memory=device.type == "cuda", drop_last=False)

    stop_flag = {"set": False}
    old_handler = None
    if threading.current_thread() is threading.main_thread():
        def _on_sigterm(signum: int, frame: Any) -> None:
            stop_flag["set"] = True
        old_handler = signal.signal(signal.SIGTERM, _on_sigterm)

    losses: list[float] = []
    teacher_calls = 0
    it = start
    rng_after = _rng_state()
    status = "completed"
    window = {"loss": 0.0, "n": 0, "t": time.perf_counter(), "labelled": 0, "pixels": 0,
              "hist": torch.zeros(num_classes, dtype=torch.long, device=device), "sources": set()}
    bar = None
    if is_main and cfg.progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.iterations, initial=start, desc="maskclip+ train", file=sys.stderr)

    def checkpoint(iteration: int, rng: dict[str, Any]) -> None:
        if is_main:
            save_checkpoint(ckpt_path, core, optimizer, scaler, iteration, rng, cfg)

    try:
        net.train()
        if cfg.freeze_bn:
            _set_bn_eval(core)
        for batch in loader:
            lr = poly_lr(cfg, it)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = batch["image"].to(device, non_blocking=True)
            gt = batch["label"].to(device, non_blocking=True)
            pseudo = batch["pseudo"].to(device, non_blocking=True) if "pseudo" in batch else None
            self_phase = self_start is not None and it >= self_start
            shared = self_phase and cfg.self_train_source == "shared"

            if not shared:  # the teacher runs outside autocast: it manages its own precision
                target, source = _targets(cfg, num_classes, gt, pseudo, images, teacher, self_phase, core,
                                          None, use_amp)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                logits = net(images)
            if shared:
                target, source = _targets(cfg, num_classes, gt, pseudo, images, teacher, True, core, logits, use_amp)
            if source == "teacher":
                teacher_calls += 1
            if logits.shape[-2:] != target.shape[-2:]:
                logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
            loss_sum = F.cross_entropy(logits.float(), target, ignore_index=cfg.ignore_index, reduction="sum")
            n_valid, n_pix, hist = label_statistics(target, num_classes, cfg.ignore_index)
            # one collective for: global labelled-pixel count, stop request, loss sum (for logging)
            red = torch.tensor([float(n_valid), float(stop_flag["set"]), loss_sum.item()], dtype=torch.float64,
                               device=device)
            if di.world_size > 1:
                dist.all_reduce(red)
            global_valid = max(red[0].item(), 1.0)
            loss = loss_sum / global_valid * di.world_size  # DDP averages gradients over processes
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            it += 1
            rng_after = _rng_state()

            global_loss = red[2].item() / global_valid
            losses.append(global_loss)
            window["loss"] += global_loss
            window["n"] += 1
            window["labelled"] += n_valid
            window["pixels"] += n_pix
            window["hist"] += hist
            window["sources"].add(source)
            if bar is not None:
                bar.update(1)
            if it % cfg.log_every == 0 or it == cfg.iterations:
                _log_window(window, it, lr, cfg, di, is_main, log_path, log_fn)
            if it % cfg.checkpoint_every == 0 or it == cfg.iterations:
                checkpoint(it, rng_after)
            if red[1].item() > 0:
                if it != cfg.iterations:
                    checkpoint(it, rng_after)
                status = "interrupted"
                if is_main:
                    print(f"[maskclip+] SIGTERM: checkpoint written at iteration {it} ({ckpt_path})", flush=True)
                break
    except Exception:
        # SIGTERM to the whole process group can kill DataLoader workers before the loop sees the flag;
        # the state after `it` completed iterations is still consistent, so keep it
        if not stop_flag["set"]:
            raise
        checkpoint(it, rng_after)
        status = "interrupted"
        if is_main:
            print(f"[maskclip+] SIGTERM: checkpoint written at iteration {it} ({ckpt_path})", flush=True)
    except KeyboardInterrupt:
        checkpoint(it, rng_after)
        if is_main:
            print(f"\n[maskclip+] interrupted: checkpoint written at iteration {it} ({ckpt_path})", flush=True)
        raise
    finally:
        if bar is not None:
            bar.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)

    if status == "completed" and is_main and getattr(core, "meta", None):
        from .models import save_target_model
        save_target_model(model_path, core, {"iterations": it, "config": asdict(cfg)})
    return {"status": status, "iteration": it, "start_iteration": start, "losses": losses,
            "checkpoint": str(ckpt_path), "model_path": str(model_path) if getattr(core, "meta", None) else None,
            "log_path": str(log_path), "teacher_calls": teacher_calls, "rank": di.rank,
            "world_size": di.world_size}


def _log_window(w: dict[str, Any], it: int, lr: float, cfg: TrainConfig, di: DistInfo, is_main: bool,
                log_path: Path, log_fn: Callable[[dict[str, Any]], None] | None) -> None:
    stats = torch.cat([w["hist"].double(), torch.tensor([w["labelled"], w["pixels"]], dtype=torch.float64,
                                                         device=w["hist"].device)])
    if di.world_size > 1:
        dist.all_reduce(stats)
    elapsed = time.perf_counter() - w["t"]
    rec = {"iter": it, "loss": w["loss"] / max(w["n"], 1), "lr": lr,
           "images_per_s": w["n"] * cfg.batch_size / max(elapsed, 1e-9),
           "source": "+".join(sorted(w["sources"])), "labelled_fraction": stats[-2].item() / max(stats[-1].item(), 1),
           "class_hist": [int(v) for v in stats[:-2].tolist()], "time": time.time()}
    if is_main:
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"[maskclip+] it {it}/{cfg.iterations} loss {rec['loss']:.4f} lr {lr:.2e} "
              f"{rec['images_per_s']:.1f} img/s src {rec['source']} labelled {rec['labelled_fraction']:.2f}",
              flush=True)
        if log_fn is not None:
            log_fn(rec)
    w.update(loss=0.0, n=0, t=time.perf_counter(), labelled=0, pixels=0, sources=set())
    w["hist"].zero_()


__all__ = ["TrainConfig", "Sample", "as_sample", "FileDataset", "TrainCrops", "StreamSampler", "poly_lr",
           "setup_distributed", "save_checkpoint", "train"]
