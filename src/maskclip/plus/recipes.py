"""The authors' MaskCLIP+ model zoo as named recipes: every setting of each released config, resolved.

Each recipe is the authors' config file read through its ``_base_`` files (crop, img_scale, schedule, target
network, optimiser, unseen split, teacher) plus their code's implicit choices: the loss averaged over all
pixels incl. ignored ones (mmseg 0.x), the teacher run on the ImageNet-normalised training crop at the
crop's own size with their MaskCLIP (no PD, no KS in any released config), scoring only the candidate
classes, self-training labels from the training pass after their 1-based counter reaches the start
(1999 of 20k guided steps), and, annotation-free on VOC20 / Context-59, the ground truth's void mask
(their readers make background void, so the student never trains on GT-background pixels).

Two things their file names do not say: the ViT-B/16 annotation-free configs train a ResNet-50 v1c
student (``deeplabv2-r50``) although the names say r101, and zero-shot Context is Context-60 with a
learned background embedding (cls_bg), a DeepLabv3+ head, lr 0.004 and weight decay 1e-4.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..data.splits import load_split
from ..dense.config import MaskCLIPConfig, with_compat
from .api import PlusData, PlusJob, TargetSpec, TeacherSpec
from .config import PlusTrainConfig


@dataclass(frozen=True)
class Recipe:
    """One released MaskCLIP+ config (model-zoo row), in the package's terms."""

    name: str
    config: str  # the authors' config file, under configs/maskclip_plus/
    mode: str  # "annotation-free" | "zero-shot"
    dataset: str  # the package's reader
    clip: str  # teacher CLIP (its text encoder also embeds the classes)
    target: str
    crop: int
    scale: tuple[int, int]  # random-resize base (img_scale)
    iterations: int
    lr: float = 0.01
    weight_decay: float = 5e-4
    unseen: str | None = None  # a packaged split (maskclip.data.splits)
    learned_background: str | None = None  # cls_bg
    gt_ignore_mask: bool = False  # annotation-free: GT void (incl. background made void) not trained on
    split: str = "train"  # VOC: trainaug (train + SBD, labels in SegmentationClassAug), as the authors
    published: str = ""  # the model zoo's mIoU (* = differs from the paper)
    note: str = ""

    def train_config(self) -> PlusTrainConfig:
        """The schedule and every training choice of the authors' code."""
        return PlusTrainConfig(
            iterations=self.iterations, batch_size=16, crop_size=(self.crop, self.crop), scale=self.scale,
            lr=self.lr, weight_decay=self.weight_decay, mode=self.mode,
            self_train_after=0.1 if self.mode == "zero-shot" else None, self_train_source="shared",
            switch="authors", teacher_classes="unseen", pseudo_threshold=0.0, loss_norm="all",
            gt_ignore_mask=self.gt_ignore_mask, suppress_unseen=self.mode == "zero-shot")

    def teacher_config(self) -> MaskCLIPConfig:
        """Their MaskCLIP on the training crop: ImageNet normalisation, the crop at its own size, one pass."""
        return with_compat(MaskCLIPConfig(compat="authors", normalize="imagenet", resize="none", mode="whole",
                                          ks=False, pd=False))

    def job(self, root: str | Path, out: str | Path, split: str | None = None) -> PlusJob:
        """The PlusJob of this recipe on the dataset under `root` (what `maskclip train --recipe` runs)."""
        return PlusJob(
            PlusData(dataset=self.dataset, root=Path(root), split=split or self.split),
            TeacherSpec(self.clip, self.teacher_config(), "85"),
            TargetSpec(self.target, "imagenet", learned_background=self.learned_background),
            replace(self.train_config(), out_dir=str(out)),
            unseen=tuple(load_split(self.unseen)[1]) if self.unseen else (),
            options={"recipe": self.name})

    def summary(self) -> dict:
        return asdict(self)


def _af(dataset: str, clip: str, crop: int, scale: tuple[int, int], iters: int, published: str,
        gt_ignore_mask: bool, config: str) -> Recipe:
    tag = {"RN50": "rn50", "RN50x16": "rn50x16", "ViT-B/16": "vit16"}[clip]
    short = {"voc20": "voc20", "context59": "context59", "coco-stuff171": "cocostuff"}[dataset]
    vit = clip == "ViT-B/16"
    return Recipe(f"af-{short}-{tag}", config, "annotation-free", dataset, clip,
                  "deeplabv2-r50" if vit else "deeplabv2-r101", crop, scale, iters, published=published,
                  gt_ignore_mask=gt_ignore_mask, split="trainaug" if dataset == "voc20" else "train",
                  note="ResNet-50 v1c student: the config never overrides the r50 base (its name says r101)"
                  if vit else "")


_VOC, _CTX, _COCO = ((2048, 512), (520, 520), (2048, 512))
RECIPES: dict[str, Recipe] = {r.name: r for r in [
    _af("voc20", "RN50", 512, _VOC, 2000, "58.0", True,
        "anno_free/maskclip_plus_r50_deeplabv2_r101-d8_512x512_2k_voc12aug_20.py"),
    _af("voc20", "RN50x16", 512, _VOC, 2000, "67.5", True,
        "anno_free/maskclip_plus_r50x16_deeplabv2_r101-d8_512x512_2k_voc12aug_20.py"),
    _af("voc20", "ViT-B/16", 512, _VOC, 2000, "- (config released, not in the table)", True,
        "anno_free/maskclip_plus_vit16_deeplabv2_r101-d8_512x512_2k_voc12aug_20.py"),
    _af("context59", "RN50", 480, _CTX, 4000, "23.9", True,
        "anno_free/maskclip_plus_r50_deeplabv2_r101-d8_480x480_4k_pascal_context_59.py"),
    _af("context59", "RN50x16", 480, _CTX, 4000, "25.2", True,
        "anno_free/maskclip_plus_r50x16_deeplabv2_r101-d8_480x480_4k_pascal_context_59.py"),
    _af("context59", "ViT-B/16", 480, _CTX, 4000, "31.1", True,
        "anno_free/maskclip_plus_vit16_deeplabv2_r101-d8_480x480_4k_pascal_context_59.py"),
    _af("coco-stuff171", "RN50", 512, _COCO, 8000, "13.8*", False,
        "anno_free/maskclip_plus_r50_deeplabv2_r101-d8_512x512_8k_coco-stuff164k.py"),
    _af("coco-stuff171", "RN50x16", 512, _COCO, 8000, "17.3", False,
        "anno_free/maskclip_plus_r50x16_deeplabv2_r101-d8_512x512_8k_coco-stuff164k.py"),
    _af("coco-stuff171", "ViT-B/16", 512, _COCO, 8000, "18.0", False,
        "anno_free/maskclip_plus_vit16_deeplabv2_r101-d8_512x512_8k_coco-stuff164k.py"),
    Recipe("zs-voc20-rn50", "zero_shot/maskclip_plus_r50_deeplabv2_r101-d8_512x512_20k_voc12aug_20.py", "zero-shot",
           "voc20", "RN50", "deeplabv2-r101", 512, _VOC, 20000, unseen="voc20", published="87.8*", split="trainaug",
           note="background ignored (VOC20); 1999 guided steps, then self-training"),
    Recipe("zs-context60-rn50", "zero_shot/maskclip_plus_r50_deeplabv3plus_r101-d8_480x480_40k_pascal_context.py",
           "zero-shot", "context60", "RN50", "deeplabv3plus-r101", 480, _CTX, 40000, lr=0.004, weight_decay=1e-4,
           unseen="context60", learned_background="background", published="48.4*",
           note="background a seen class with a learned embedding (cls_bg); 3999 guided steps"),
    Recipe("zs-cocostuff-rn50", "zero_shot/maskclip_plus_r50_deeplabv2_r101-d8_512x512_80k_coco-stuff164k.py",
           "zero-shot", "coco-stuff171", "RN50", "deeplabv2-r101", 512, _COCO, 80000, unseen="coco_stuff171",
           published="39.7*", note="7999 guided steps"),
]}


def get_recipe(name: str) -> Recipe:
    """By recipe name or by the authors' config file name (with or without directory and .py)."""
    key = name.strip()
    if key in RECIPES:
        return RECIPES[key]
    stem = Path(key).name.removesuffix(".py")
    for r in RECIPES.values():
        if Path(r.config).name.removesuffix(".py") == stem:
            return r
    raise KeyError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)} (or an authors' config name)")


def recipe_table() -> str:
    """One line per recipe: name, mode, dataset, CLIP, target, crop, iterations, lr/wd, published mIoU."""
    rows = [f"{'recipe':<20} {'mode':<15} {'dataset':<14} {'CLIP':<9} {'target':<19} {'crop':>4} {'iters':>6} "
            f"{'lr/wd':<12} mIoU (model zoo)"]
    for r in RECIPES.values():
        rows.append(f"{r.name:<20} {r.mode:<15} {r.dataset:<14} {r.clip:<9} {r.target:<19} {r.crop:>4} "
                    f"{r.iterations:>6} {f'{r.lr:g}/{r.weight_decay:g}':<12} {r.published}")
    return "\n".join(rows)


__all__ = ["RECIPES", "Recipe", "get_recipe", "recipe_table"]
