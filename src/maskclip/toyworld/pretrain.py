"""The toy world's "ImageNet": the MaskCLIP+ student's backbone pretrained on image-level labels from captions.

The paper's student starts from ImageNet weights: image-level labels of many categories, no pixel labels,
no CLIP. The toy analogue is multi-label classification of the words the captions name (the ten classes
and the colours), on scenes of the train split that MaskCLIP+ never trains on (another index range), with
no pixel labels and no teacher. The backbone is trained at output stride 32 (as ImageNet models are) and
dilated later by the student, with the same weights.

    python -m maskclip.toyworld.pretrain --out runs/toy-backbone.pt       # ~7 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io.atomic import save_torch, write_json
from ..normalization import pixel_mean_std
from ..plus.backbones import ResNet
from .world import CLASSES, COLOURS, World, WorldConfig

# the words a caption can name: the label vocabulary of the pretraining task
CAPTION_WORDS: tuple[str, ...] = tuple(CLASSES) + tuple(COLOURS)


@dataclass(frozen=True)
class PretrainConfig:
    """Defaults: ResNet-18 at width 32 (the toy student's light-r18) on 128 px views of 64 px scenes."""

    scenes: int = 20000  # pretraining scenes (train split, indices from `first_index`)
    first_index: int = 1_000_000  # far from MaskCLIP+'s training scenes (the first few thousand)
    steps: int = 2000
    batch_size: int = 32
    size: int = 128  # the side the student sees the 64 px scenes at
    width: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0
    world_seed: int = 0
    val_scenes: int = 500  # held-out scenes (val split) for the reported accuracy


def caption_targets(caption: str) -> Tensor:
    """Multi-hot [len(CAPTION_WORDS)]: which vocabulary words the caption names."""
    words = set(re.findall(r"[a-z]+", caption.lower()))
    return torch.tensor([w in words for w in CAPTION_WORDS], dtype=torch.float32)


def render(world: World, indices: range, split: str) -> tuple[Tensor, Tensor]:
    """Scenes as uint8 images [N,3,H,W] and their caption targets [N, V] (no pixel labels are kept)."""
    images, targets = [], []
    for i in indices:
        s = world.scene(i, split)
        images.append(torch.from_numpy(s.image).permute(2, 0, 1))
        targets.append(caption_targets(s.caption))
    return torch.stack(images), torch.stack(targets)


class Classifier(nn.Module):
    """Backbone -> global average pool -> linear multi-label head (the head is discarded after)."""

    def __init__(self, width: int, num_words: int):
        super().__init__()
        self.backbone = ResNet(18, deep_stem=False, stem_channels=width, base_channels=width, output_stride=32)
        self.fc = nn.Linear(self.backbone.out_channels[-1], num_words)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.backbone(x)[-1].mean((2, 3)))


def prepare(images: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """uint8 [N,3,h,w] -> normalised float at `size` (ImageNet mean/std, as the MaskCLIP+ student)."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in pixel_mean_std("imagenet"))
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
    if flip is not None:
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return (x - mean) / std


@torch.no_grad()
def word_accuracy(model: Classifier, images: Tensor, targets: Tensor, size: int) -> dict[str, float]:
    """Per-word accuracy at threshold 0.5, averaged over words, and the exact-match rate per image."""
    model.eval()
    pred = torch.cat([model(prepare(images[i:i + 64], size)) > 0 for i in range(0, len(images), 64)])
    model.train()
    t = targets > 0.5
    return {"word_accuracy": float((pred == t).float().mean()), "exact_match": float((pred == t).all(1).float().mean()),
            "class_accuracy": float((pred == t)[:, :len(CLASSES)].float().mean())}


def pretrain(config: PretrainConfig, progress: bool = True) -> tuple[dict[str, Tensor], dict]:
    """Train the classifier; returns the backbone's state dict (the package's parameter names) and a report."""
    torch.manual_seed(config.seed)
    world = World(config.world_seed, WorldConfig())
    t0 = time.perf_counter()
    images, targets = render(world, range(config.first_index, config.first_index + config.scenes), "train")
    val_images, val_targets = render(world, range(config.val_scenes), "val")
    model = Classifier(config.width, len(CAPTION_WORDS))
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=config.steps, desc="toy backbone pretraining", file=sys.stderr)
    losses = []
    for step in range(config.steps):
        for g in opt.param_groups:  # cosine decay
            g["lr"] = 0.5 * config.lr * (1 + np.cos(np.pi * step / config.steps))
        idx = torch.randint(len(images), (config.batch_size,), generator=gen)
        flip = torch.rand(config.batch_size, generator=gen) < 0.5
        loss = F.binary_cross_entropy_with_logits(model(prepare(images[idx], config.size, flip)), targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    if bar is not None:
        bar.close()
    tail = max(min(100, len(losses) // 4), 1)
    report = {"config": asdict(config), "words": list(CAPTION_WORDS), "first_loss": float(np.mean(losses[:tail])),
              "final_loss": float(np.mean(losses[-tail:])),
              "val": word_accuracy(model, val_images, val_targets, config.size),
              "seconds": time.perf_counter() - t0}
    return model.backbone.state_dict(), report


def save_backbone(path: str | Path, state: dict[str, Tensor], report: dict) -> None:
    """A plain tensor dict (loaded with weights_only=True by `--pretrained PATH`) and a JSON report beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_torch(path, {k: v.detach().clone() for k, v in state.items()})
    write_json(path.with_suffix(".json"), report)


def main(argv: list[str] | None = None) -> int:
    d = PretrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="backbone file to write (and a .json report beside it)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"SGD steps (default {d.steps})")
    p.add_argument("--scenes", type=int, default=d.scenes, help=f"pretraining scenes (default {d.scenes})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--width", type=int, default=d.width, help=f"ResNet-18 base width (default {d.width})")
    p.add_argument("--size", type=int, default=d.size, help=f"input side (default {d.size})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PretrainConfig(scenes=args.scenes, steps=args.steps, batch_size=args.batch_size, width=args.width,
                            size=args.size, seed=args.seed)
    state, report = pretrain(config)
    save_backbone(args.out, state, report)
    print(json.dumps({"out": str(args.out), **report["val"], "seconds": round(report["seconds"], 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
