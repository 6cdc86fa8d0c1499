"""The MaskCLIP+ training loop: a step function, and a thin loop that owns signals, logging and checkpoints.

Targets come from a frozen teacher called on every augmented crop (MaskCLIP-guided learning), from
precomputed label maps (`maskclip label`), or after `self_train_after` of the schedule from the target
network itself (self-training). See pseudo.py for the label-map convention and data.py for the
deterministic crop stream that makes resume and multi-process sharding exact.

The loss is normalised by the *global* number of labelled pixels (all-reduced), or with loss_norm="all"
(the authors' mmseg 0.x) by the global number of pixels, ignored ones included; either way a DDP step
computes the same gradient as a single process on the whole batch (mmseg averages per-GPU means instead;
identical when every GPU has the same number of labelled pixels).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .augment import UNLABELED
from .config import PlusTrainConfig, poly_lr
from .data import StreamSampler, TrainCrops
from .distributed import DistInfo, all_reduce, setup_distributed, training_device
from .pseudo import fill_unlabeled, label_statistics, merge_precomputed, pseudo_from_logits
from .state import TrainState, rng_state, seed_all

log = logging.getLogger(__name__)

Teacher = Callable[[Tensor], Tensor]
LogFn = Callable[[dict[str, Any]], None]


def set_bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@dataclass
class StepContext:
    """What every step needs besides the state and the batch."""

    cfg: PlusTrainConfig
    device: torch.device
    num_classes: int
    teacher: Teacher | None
    use_amp: bool
    di: DistInfo
    self_start: int | None


@dataclass
class StepResult:
    loss: float  # global mean over labelled pixels
    source: str  # where the targets came from: teacher, pseudo-file, self, gt
    labelled: int
    pixels: int
    hist: Tensor
    stop: bool  # a process got SIGTERM


def targets(ctx: StepContext, gt: Tensor, pseudo: Tensor | None, images: Tensor, self_phase: bool, core: nn.Module,
            train_logits: Tensor | None) -> tuple[Tensor, str]:
    """Training target for one batch and where it came from ("teacher", "pseudo-file", "self", "gt")."""
    cfg = ctx.cfg
    cand = list(cfg.unseen_ids) if cfg.mode == "zero-shot" else None
    size = tuple(gt.shape[-2:])
    thr, ignore = cfg.pseudo_threshold, cfg.ignore_index
    with torch.no_grad():
        if self_phase:
            logits = train_logits.detach() if train_logits is not None else _eval_logits(ctx, core, images)
            labels, source = pseudo_from_logits(logits, size, cand, thr, 1.0, ignore), "self"
        elif ctx.teacher is not None:
            logits = ctx.teacher(images)
            if logits.ndim != 4 or logits.shape[0] != images.shape[0] or logits.shape[1] != ctx.num_classes:
                raise ValueError(f"teacher returned {tuple(logits.shape)}; expected [B={images.shape[0]}, "
                                 f"K={ctx.num_classes}, H, W] logits (K = classes of the target's classifier)")
            scale = float(getattr(ctx.teacher, "logit_scale", 1.0))
            labels, source = pseudo_from_logits(logits, size, cand, thr, scale, ignore), "teacher"
        elif pseudo is not None:
            return merge_precomputed(gt, pseudo, cand, cfg.ignore_index), "pseudo-file"
        else:
            return torch.where(gt == UNLABELED, torch.full_like(gt, cfg.ignore_index), gt), "gt"
    return fill_unlabeled(gt, labels), source


def _eval_logits(ctx: StepContext, core: nn.Module, images: Tensor) -> Tensor:
    """The network's logits from a separate eval-mode pass (BatchNorm running statistics)."""
    was_training = core.training
    core.eval()
    with torch.autocast(device_type=images.device.type, dtype=torch.float16, enabled=ctx.use_amp):
        logits = core(images)
    core.train(was_training)
    if ctx.cfg.freeze_bn:
        set_bn_eval(core)
    return logits


def train_step(state: TrainState, net: nn.Module, batch: dict[str, Tensor], ctx: StepContext,
               stop_requested: Callable[[], bool] = lambda: False) -> StepResult:
    """One SGD step on one batch; the state's iteration and RNG record advance with it. `stop_requested` is
    asked once the loss is known (a SIGTERM during the step ends the run after it, in every process)."""
    cfg, device = ctx.cfg, ctx.device
    lr = poly_lr(cfg, state.iteration)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    images = batch["image"].to(device, non_blocking=True)
    gt = batch["label"].to(device, non_blocking=True)
    pseudo = batch["pseudo"].to(device, non_blocking=True) if "pseudo" in batch else None
    self_phase = ctx.self_start is not None and state.iteration >= ctx.self_start
    shared = self_phase and cfg.self_train_source == "shared"
    if not shared:  # the teacher runs outside autocast: it manages its own precision
        target, source = targets(ctx, gt, pseudo, images, self_phase, state.model, None)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=ctx.use_amp):
        logits = net(images)
    if shared:
        target, source = targets(ctx, gt, pseudo, images, True, state.model, logits)
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    loss_sum = F.cross_entropy(logits.float(), target, ignore_index=cfg.ignore_index, reduction="sum")
    n_valid, n_pix, hist = label_statistics(target, ctx.num_classes, cfg.ignore_index)
    # one collective for: global labelled-pixel count, stop request, loss sum (for logging), pixel count
    red = all_reduce(torch.tensor([float(n_valid), float(stop_requested()), loss_sum.item(), float(n_pix)],
                                  dtype=torch.float64, device=device), ctx.di)
    global_valid = max(red[0].item(), 1.0)
    # "labelled": mean over labelled pixels; "all": over every pixel incl. ignored (the authors' mmseg 0.x)
    denom = global_valid if cfg.loss_norm == "labelled" else max(red[3].item(), 1.0)
    loss = loss_sum / denom * ctx.di.world_size  # DDP averages gradients over processes
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.iteration += 1
    state.rng = rng_state()
    return StepResult(red[2].item() / global_valid, source, n_valid, n_pix, hist, red[1].item() > 0)


@dataclass
class LogWindow:
    """Training statistics since the last log line: mean loss, images/s, sources, labelled share, classes."""

    num_classes: int
    device: torch.device
    loss: float = 0.0
    n: int = 0
    t: float = field(default_factory=time.perf_counter)
    labelled: int = 0
    pixels: int = 0
    sources: set = field(default_factory=set)
    hist: Tensor | None = None

    def add(self, r: StepResult) -> None:
        if self.hist is None:
            self.hist = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)
        self.loss += r.loss
        self.n += 1
        self.labelled += r.labelled
        self.pixels += r.pixels
        self.hist += r.hist
        self.sources.add(r.source)

    def flush(self, it: int, cfg: PlusTrainConfig, di: DistInfo, log_path: Path, log_fn: LogFn | None) -> None:
        hist = self.hist if self.hist is not None else torch.zeros(self.num_classes, dtype=torch.long,
                                                                   device=self.device)
        stats = all_reduce(torch.cat([hist.double(), torch.tensor([self.labelled, self.pixels], dtype=torch.float64,
                                                                  device=hist.device)]), di)
        elapsed = time.perf_counter() - self.t
        rec = {"iter": it, "loss": self.loss / max(self.n, 1), "lr": poly_lr(cfg, it - 1),
               "images_per_s": self.n * cfg.batch_size / max(elapsed, 1e-9), "source": "+".join(sorted(self.sources)),
               "labelled_fraction": stats[-2].item() / max(stats[-1].item(), 1),
               "class_hist": [int(v) for v in stats[:-2].tolist()], "time": time.time()}
        if di.is_main:
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"[maskclip+] it {it}/{cfg.iterations} loss {rec['loss']:.4f} lr {rec['lr']:.2e} "
                  f"{rec['images_per_s']:.1f} img/s src {rec['source']} labelled {rec['labelled_fraction']:.2f}",
                  flush=True)
            if log_fn is not None:
                log_fn(rec)
        fresh = LogWindow(self.num_classes, self.device)
        self.__dict__.update(fresh.__dict__)


def _check_model(model: nn.Module, cfg: PlusTrainConfig) -> int:
    if not hasattr(model, "num_classes"):
        raise TypeError("model must expose num_classes (use maskclip.plus.models.build_target_model)")
    num_classes = int(model.num_classes)
    if 0 <= cfg.ignore_index < num_classes:
        raise ValueError(f"ignore_index={cfg.ignore_index} is a class id (model has {num_classes} classes); "
                         "choose an ignore_index >= num_classes")
    bad = [i for i in cfg.unseen_ids if not 0 <= i < num_classes]
    if bad:
        raise ValueError(f"unseen_ids {bad} are not class ids of a {num_classes}-class model")
    return num_classes


def _start(cfg: PlusTrainConfig, model: nn.Module, di: DistInfo, device: torch.device, use_amp: bool,
           ckpt_path: Path) -> TrainState:
    """A fresh state, or the one saved in `ckpt_path` when resuming (the generators seeded either way)."""
    core = model.to(device)
    if di.world_size > 1 and device.type == "cuda" and cfg.sync_bn:
        core = nn.SyncBatchNorm.convert_sync_batchnorm(core)
    state = TrainState.create(core, cfg, use_amp)
    if cfg.resume and ckpt_path.exists():
        old = state.load(ckpt_path, cfg, di.rank)  # a checked tensor file: a planted one cannot run code
        if old.get("batch_size") != cfg.batch_size or old.get("seed") != cfg.seed:
            log.warning("%s: resumed with a different batch_size/seed: the data stream will differ", ckpt_path)
        if di.is_main:
            print(f"[maskclip+] resumed from {ckpt_path} at iteration {state.iteration}", flush=True)
    else:
        seed_all(cfg.seed + di.rank)
        state.rng = rng_state()
    return state


def train(config: PlusTrainConfig, model: nn.Module, dataset: Any, teacher: Teacher | None = None, *,
          log_fn: LogFn | None = None) -> dict[str, Any]:
    """Train a MaskCLIP+ target network; returns a summary dict.

    model: a SegmentationModel (or any module mapping normalised images [B,3,H,W] to logits [B,K,H,W] at
    input size with ``num_classes``). dataset: items as described in `data.TrainItem`. teacher: frozen
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


def _train(cfg: PlusTrainConfig, model: nn.Module, dataset: Any, teacher: Teacher | None, di: DistInfo,
           log_fn: LogFn | None) -> dict[str, Any]:
    cfg.validate(di.world_size)
    device = training_device(cfg.device, di)
    use_amp = bool(cfg.amp and device.type == "cuda")
    if cfg.amp and device.type != "cuda" and di.is_main:
        log.info("amp requested but device is %s: training in fp32", device)
    num_classes = _check_model(model, cfg)
    out = Path(cfg.out_dir)
    paths = {"checkpoint": out / "checkpoint.pt", "log": out / "log.jsonl", "model": out / "model.pt"}
    if di.is_main:
        out.mkdir(parents=True, exist_ok=True)
    state = _start(cfg, model, di, device, use_amp, paths["checkpoint"])
    start = state.iteration
    net: nn.Module = state.model
    if di.world_size > 1:
        net = nn.parallel.DistributedDataParallel(state.model, device_ids=[device.index] if device.type == "cuda"
                                                  else None)
    ctx = StepContext(cfg, device, num_classes, teacher, use_amp, di, cfg.self_train_start())
    if teacher is None and ctx.self_start != 0 and di.is_main:
        log.info("no teacher given: targets come from precomputed pseudo labels or ground truth")
    loader = torch.utils.data.DataLoader(
        TrainCrops(dataset, cfg), batch_size=cfg.batch_size // di.world_size,
        sampler=StreamSampler(start, cfg.iterations, cfg.batch_size, di.rank, di.world_size),
        num_workers=cfg.num_workers, pin_memory=device.type == "cuda", drop_last=False)
    status, losses, calls = _loop(state, net, loader, ctx, paths, log_fn)
    core = state.model
    if status == "completed" and di.is_main and getattr(core, "meta", None):
        from .models import save_target_model
        save_target_model(paths["model"], core, {"iterations": state.iteration, "config": asdict(cfg)})
    return {"status": status, "iteration": state.iteration, "start_iteration": start, "losses": losses,
            "checkpoint": str(paths["checkpoint"]),
            "model_path": str(paths["model"]) if getattr(core, "meta", None) else None,
            "log_path": str(paths["log"]), "teacher_calls": calls, "rank": di.rank, "world_size": di.world_size}


def save_snapshot(state: TrainState, cfg: PlusTrainConfig, path: Path) -> None:
    """The network after this iteration, as a model file (e.g. at the self-training switch)."""
    core = state.model
    if getattr(core, "meta", None):
        from .models import save_target_model
        save_target_model(path, core, {"iterations": state.iteration, "config": asdict(cfg)})


def _say(di: DistInfo, message: str) -> None:
    if di.is_main:
        print(message, flush=True)


def _loop(state: TrainState, net: nn.Module, loader: Any, ctx: StepContext, paths: dict[str, Path],
          log_fn: LogFn | None) -> tuple[str, list[float], int]:
    """Steps until the schedule ends; SIGTERM and Ctrl-C end it early with a checkpoint."""
    cfg, di = ctx.cfg, ctx.di
    stop = {"set": False}
    old_handler = None
    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(set=True))
    losses: list[float] = []
    calls = 0
    status = "completed"
    window = LogWindow(ctx.num_classes, ctx.device)
    bar = None
    if di.is_main and cfg.progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.iterations, initial=state.iteration, desc="maskclip+ train", file=sys.stderr)

    def checkpoint(why: str = "") -> None:
        if di.is_main:
            state.save(paths["checkpoint"], cfg)
        if why:
            _say(di, f"{why}checkpoint written at iteration {state.iteration} ({paths['checkpoint']})")

    try:
        net.train()
        if cfg.freeze_bn:
            set_bn_eval(state.model)
        for batch in loader:
            r = train_step(state, net, batch, ctx, lambda: stop["set"])
            it = state.iteration
            calls += r.source == "teacher"
            losses.append(r.loss)
            window.add(r)
            if bar is not None:
                bar.update(1)
            if it % cfg.log_every == 0 or it == cfg.iterations:
                window.flush(it, cfg, di, paths["log"], log_fn)
            if it % cfg.checkpoint_every == 0 or it == cfg.iterations:
                checkpoint()
            if it in cfg.snapshots and di.is_main:
                save_snapshot(state, cfg, paths["model"].with_name(f"model-iter{it}.pt"))
            if r.stop:
                if it != cfg.iterations:
                    checkpoint()
                _say(di, f"[maskclip+] SIGTERM: checkpoint written at iteration {it} ({paths['checkpoint']})")
                status = "interrupted"
                break
    except Exception:
        # SIGTERM to the whole process group can kill DataLoader workers before the loop sees the flag;
        # the state after the completed iterations is still consistent, so keep it
        if not stop["set"]:
            raise
        checkpoint("[maskclip+] SIGTERM: ")
        status = "interrupted"
    except KeyboardInterrupt:
        checkpoint("\n[maskclip+] interrupted: ")
        raise
    finally:
        if bar is not None:
            bar.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    return status, losses, calls


__all__ = ["LogWindow", "StepContext", "StepResult", "Teacher", "set_bn_eval", "targets", "train", "train_step"]
