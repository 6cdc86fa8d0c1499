"""How MaskCLIP+ trains: every number of the schedule, the mode and the self-training switch.

Defaults are the paper's and the authors' configs (batch 16, SGD 0.01 / 0.9 / 5e-4, poly 0.9 down to
1e-4, 512x512 crops of images resized by 0.5-2.0 of (2048, 512), ImageNet mean/std).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..normalization import pixel_mean_std
from .augment import AugmentConfig

MODES = ("annotation-free", "zero-shot")


@dataclass
class PlusTrainConfig:
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
    # "shared": the training forward's detached logits (train-mode BN; the authors' implementation, no extra
    # pass); "eval": a separate no-grad forward in eval mode (BN running statistics)
    self_train_source: str = "shared"
    # where the switch falls: "authors" = their 1-based iteration counter compared with the start
    # (round(f * N) - 1 guided steps: 1999 of 20k); "exact" = round(f * N) guided steps
    switch: str = "authors"
    # zero-shot: the teacher scores (softmax, PD, KS) the unseen classes only ("unseen", the authors) or all
    # classes with the argmax restricted to the unseen ones afterwards ("all")
    teacher_classes: str = "unseen"
    # pseudo-labelled pixels whose confidence (max softmax over the candidate classes) is below this are
    # ignored; 0 = every pixel keeps its pseudo label (the paper and the authors' released configs)
    pseudo_threshold: float = 0.0
    # loss normalisation: "labelled" = mean over the labelled pixels (torch's ignore_index mean); "all" =
    # sum over all pixels of the batch incl. ignored ones (the authors' mmseg 0.x; a lower effective lr)
    loss_norm: str = "labelled"
    # annotation-free: pixels that are void (ignore_index) in the ground truth are not trained on. The
    # authors' VOC20 / Context-59 readers turn background into void, so their student never trains on
    # GT-background pixels (their numbers used it); False = every pixel gets a teacher label (annotation-free)
    gt_ignore_mask: bool = False
    snapshots: tuple[int, ...] = ()  # also write OUT/model-iter<N>.pt after these iterations
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
    mean: tuple[float, ...] = pixel_mean_std("imagenet")[0]  # the authors' configs, in pixel values
    std: tuple[float, ...] = pixel_mean_std("imagenet")[1]
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
        start = int(round(float(frac) * self.iterations))
        return max(start - 1, 0) if self.switch == "authors" else start

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(
            crop_size=(int(self.crop_size[0]), int(self.crop_size[1])), scale=(int(self.scale[0]), int(self.scale[1])),
            photometric=self.photometric, mean=tuple(self.mean), std=tuple(self.std),  # type: ignore[arg-type]
            ignore_index=self.ignore_index)

    def validate(self, world_size: int = 1) -> None:
        if self.mode not in MODES:
            raise ValueError(f"PlusTrainConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError("PlusTrainConfig.iterations and batch_size must be >= 1")
        if self.batch_size % world_size:
            raise ValueError(f"PlusTrainConfig.batch_size={self.batch_size} (global) is not divisible by the "
                             f"{world_size} processes")
        if self.mode == "zero-shot" and not len(self.unseen_ids):
            raise ValueError("zero-shot training needs PlusTrainConfig.unseen_ids (the classes without annotations)")
        frac = self.self_train_after
        if frac not in ("auto", None) and not (isinstance(frac, (int, float)) and 0 <= frac <= 1):
            raise ValueError(f"PlusTrainConfig.self_train_after must be a fraction in [0, 1], None or 'auto', "
                             f"got {frac!r}")
        for name, allowed in (("self_train_source", ("eval", "shared")), ("switch", ("authors", "exact")),
                              ("teacher_classes", ("unseen", "all")), ("loss_norm", ("labelled", "all"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"PlusTrainConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0 <= self.pseudo_threshold < 1:
            raise ValueError(f"PlusTrainConfig.pseudo_threshold must lie in [0, 1), got {self.pseudo_threshold}")
        if any(not 0 < int(n) <= self.iterations for n in self.snapshots):
            raise ValueError(f"PlusTrainConfig.snapshots must be iterations in 1..{self.iterations}, "
                             f"got {list(self.snapshots)}")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("PlusTrainConfig.checkpoint_every and log_every must be >= 1")


def poly_lr(cfg: PlusTrainConfig, iteration: int) -> float:
    """mmcv's poly policy: (lr - min_lr) * (1 - it / max_it) ** power + min_lr."""
    return (cfg.lr - cfg.min_lr) * (1 - iteration / cfg.iterations) ** cfg.poly_power + cfg.min_lr


__all__ = ["MODES", "PlusTrainConfig", "poly_lr"]
