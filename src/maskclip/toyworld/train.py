"""Train a small CLIP on the toy world: symmetric contrastive loss, learned temperature, CPU or CUDA.

Scenes are rendered on the fly from a deterministic index stream (step * batch + i), so a run is a
pure function of its config and resuming from a checkpoint continues the very same stream.

Token-embedding rows of BPE ids that never occur in the world's language start at zero: they get
zero gradient, and AdamW (weight decay multiplies the weight, Adam divides a zero moment by eps)
leaves them exactly zero, so the saved checkpoint is mostly zeros and gzips to a few MB.

Why two vision blocks: MaskCLIP reads dense labels off the last block's value path, which works when
the image embedding is mostly the class token's attention over patch values. In a 4-block toy ViT the
class token's own residual stream (gathered in earlier blocks) was twice the norm of that attention
output, and the image embedding pointed only half-way (cosine 0.51) to its attention-only part: the
stuff classes, told apart by colour alone, travelled through the earlier blocks and their patches
were never labelled (sky and water IoU 0). With two blocks the same 300-step run labelled sky 84,
grass 67 and water 58 (value-only mIoU 34.6 vs 17.3), but its objects stay near chance: a patch's value
in the second block does not yet say which object it belongs to (the class token's FFN decodes that
after pooling, where MaskCLIP never looks).

Why the ResNet works best: CLIP's ResNet ends in an attention pool with no residual and no FFN, so its
image embedding IS an attention-weighted average of c_proj(v_proj(x_i)), exactly MaskCLIP's dense
features. Trained on the 64 px scenes resized to 128 px (a 4 x 4 grid; `world_size` vs `image_size`),
a 300-step run labelled stuff at 81-86 and every object at 46-68 IoU (value path 69.6 vs baseline 6.3).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..clip.model import CLIP, CLIPConfig
from ..clip.tokenizer import tokenize
from ..io.atomic import save_torch, write_text
from ..io.tensorfile import CheckedFileError, load_weights_only
from .captions import TEMPLATES, article
from .world import CLASSES, COLOURS, OBJECTS, World, WorldConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ToyTrainConfig:
    """One training run. The defaults are the bundled `toy-vit` recipe."""

    arch: str = "vit"  # "vit" or "resnet"
    image_size: int = 64  # model input side; scenes are rendered at world_size and resized (bilinear) to it
    world_size: int = 64  # rendered scene side (the world's objects and textures are sized in its pixels)
    patch_size: int = 8  # ViT only
    vision_width: int = 128  # ViT width (heads = width // 64); ResNet stem width (attnpool heads = width*32//64)
    vision_layers: int = 2  # ViT blocks (two: see the module docstring); ResNet uses (1, 1, 1, 1)
    embed_dim: int = 128
    text_width: int = 128
    text_layers: int = 3
    context_length: int = 32
    steps: int = 1100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 50
    seed: int = 0  # model init
    world_seed: int = 0
    partial_captions: float = 0.0  # share of captions naming a single thing in a prompt-template phrasing
    twins: float = 0.5  # share of each batch that is a hard-negative twin of another scene in it
    twin_stuff: float = 0.5  # share of those twins that change the stuff and keep the objects
    closeup: float = 0.5  # share of scenes seen from close by (large objects cut by the frame)
    workers: int = 1  # processes rendering the next batches while the model trains (0: render in-line)
    log_every: int = 50
    ckpt_every: int = 250
    threads: int = 2
    amp: str = "none"  # "bf16" autocast (fast on CPUs with AVX512-BF16/AMX and on GPUs), "fp16" (CUDA) or "none"

    def clip_config(self) -> CLIPConfig:
        text = dict(context_length=self.context_length, vocab_size=49408, transformer_width=self.text_width,
                    transformer_heads=self.text_width // 64, transformer_layers=self.text_layers)
        if self.arch == "vit":
            return CLIPConfig(embed_dim=self.embed_dim, image_resolution=self.image_size,
                              vision_layers=self.vision_layers, vision_width=self.vision_width,
                              vision_patch_size=self.patch_size, **text)
        if self.arch == "resnet":
            if self.image_size % 32:
                raise ValueError(f"--image-size {self.image_size}: a ResNet needs a multiple of 32")
            return CLIPConfig(embed_dim=self.embed_dim, image_resolution=self.image_size, vision_layers=(1, 1, 1, 1),
                              vision_width=self.vision_width, vision_patch_size=None, **text)
        raise ValueError(f"unknown arch {self.arch!r}; expected 'vit' or 'resnet'")


def world_phrases() -> list[str]:
    """Every string the world's language can produce: captions, class names, attribute queries, templates."""
    words = [*CLASSES, *COLOURS, "background"]
    queries = [article(f"{c} {o}") for c in COLOURS for o in OBJECTS] + [article(o) for o in OBJECTS]
    glue = ["on the grass", "on the sand", "in the water", "under the sky", "in front of a wall",
            "there is a", "and", "with", ",", ".", "a scene with a", "in the scene"]
    return words + queries + glue + [t.format(w) for t in TEMPLATES for w in CLASSES]


def world_token_ids() -> torch.Tensor:
    """Sorted BPE ids used by the world's language (including start/end of text)."""
    ids = tokenize(world_phrases(), context_length=77)
    return torch.unique(ids[ids > 0])


def new_model(config: ToyTrainConfig) -> CLIP:
    torch.manual_seed(config.seed)
    model = CLIP(config.clip_config())
    keep = torch.zeros(model.vocab_size, dtype=torch.bool)
    keep[world_token_ids()] = True
    with torch.no_grad():
        model.token_embedding.weight[~keep] = 0.0
    return model


def to_tensor(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 [B,H,W,3] -> CLIP-normalised float [B,3,H,W]."""
    x = torch.from_numpy(np.ascontiguousarray(np.stack(images) if isinstance(images, list) else images))
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the in-batch image-text similarity matrix."""
    img = F.normalize(image_features, dim=-1)
    txt = F.normalize(text_features, dim=-1)
    logits = logit_scale.exp().clamp(max=100.0) * img @ txt.t()
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def make_batch(world: World, step: int, batch_size: int, context_length: int, twins: float = 0.0,
               twin_stuff: float = 0.0, image_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes step*batch .. (step+1)*batch-1; the last `twins` share replaced by twins of the first ones.

    With `image_size` other than the world's size the images are resized bilinearly, as MaskCLIP's
    inference resizes them (`resize="fit"`), so the model sees the world at the same scale either way.
    """
    n_twins = int(batch_size * twins) if twins else 0
    n_twins = min(n_twins, batch_size // 2)
    first = step * batch_size
    scenes = world.batch(range(first, first + batch_size - n_twins), "train")
    scenes += [world.twin(first + i, "train", twin_stuff) for i in range(n_twins)]
    images = to_tensor([s.image for s in scenes])
    if image_size and image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    tokens = tokenize([s.caption for s in scenes], context_length=context_length)
    return images, tokens


class _Batches(torch.utils.data.Dataset):
    """Training batch `step` as a dataset item, so DataLoader workers can render ahead of the model."""

    def __init__(self, world: World, config: ToyTrainConfig, start: int):
        self.world, self.config, self.start = world, config, start

    def __len__(self) -> int:
        return self.config.steps - self.start

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        return make_batch(self.world, self.start + i, c.batch_size, c.context_length, c.twins, c.twin_stuff,
                          c.image_size)


def batches(world: World, config: ToyTrainConfig, start: int):
    """Batches start .. steps-1 in order; rendered by `config.workers` processes (or in-line with 0).

    Every batch is a pure function of its step, so prefetching changes nothing but the speed.
    """
    data = _Batches(world, config, start)
    if config.workers <= 0:
        return (data[i] for i in range(len(data)))
    return iter(torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=config.workers,
                                            prefetch_factor=4, persistent_workers=False))


def _param_groups(model: CLIP, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "embedding" in name or "ln" in name or "bn" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _autocast(amp: str, device: str) -> torch.autocast:
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}
    if amp not in dtypes:
        raise ValueError(f"--amp {amp!r}: expected one of {sorted(dtypes)}")
    kind = torch.device(device).type
    if amp == "fp16" and kind != "cuda":
        raise ValueError("--amp fp16 needs a CUDA device (use bf16 on CPU)")
    return torch.autocast(device_type=kind, dtype=dtypes[amp] or torch.float32, enabled=amp != "none")


def lr_at(step: int, config: ToyTrainConfig) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    t = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def _atomic_save(obj, path: Path) -> None:
    save_torch(path, obj)


def _model_fields(config: dict) -> dict:
    """The options that shape the model (not how often it logs or how many processes render)."""
    return {k: v for k, v in config.items() if k not in ("log_every", "ckpt_every", "workers")}


def train(config: ToyTrainConfig, out_dir: str | Path, device: str = "cpu", resume: bool = True,
          log=print) -> CLIP:
    """Train (or resume) a toy CLIP; writes `checkpoint.pt`, `model.pt` and `log.jsonl` under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if device == "cpu":
        torch.set_num_threads(config.threads)
    world = World(config.world_seed, WorldConfig(size=config.world_size, partial_captions=config.partial_captions,
                                                       closeup=config.closeup))
    model = new_model(config).to(device)
    opt = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    start = 0
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ckpt = load_weights_only(ckpt_path, map_location=device)  # tensors and plain values only: runs no code
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) or "model" not in ckpt:
            raise CheckedFileError(f"{ckpt_path}: not a toy-world training checkpoint; use a new --out or --no-resume")
        if _model_fields(ckpt["config"]) != _model_fields(asdict(config)):
            raise ValueError(f"{ckpt_path} was written by a different config; use a new --out or --no-resume")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start = ckpt["step"]
        log(f"resumed from {ckpt_path} at step {start}")
    write_text(out / "config.json", json.dumps(asdict(config), indent=2))
    model.train()
    autocast = _autocast(config.amp, device)
    t0 = time.time()
    # a resumed run appends to its log; a fresh one (--no-resume, or no checkpoint) starts it anew, so
    # the bundle's train_seconds counts only the run that made the model
    with open(out / "log.jsonl", "a" if start else "w") as logf:
        for step, (images, tokens) in zip(range(start, config.steps), batches(world, config, start)):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, config)
            images, tokens = images.to(device), tokens.to(device)
            with autocast:
                loss = contrastive_loss(model.encode_image(images), model.encode_text(tokens), model.logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            if (step + 1) % config.log_every == 0 or step == start:
                rec = {"step": step + 1, "loss": round(loss.item(), 4), "lr": lr_at(step, config),
                       "logit_scale": round(model.logit_scale.exp().item(), 2), "elapsed_s": round(time.time() - t0, 1)}
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                log(f"step {rec['step']}/{config.steps} loss {rec['loss']:.4f} scale {rec['logit_scale']} "
                    f"{rec['elapsed_s']}s")
            if (step + 1) % config.ckpt_every == 0 or step + 1 == config.steps:
                _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step + 1,
                              "config": asdict(config)}, ckpt_path)
    model.eval()
    _atomic_save(model.state_dict(), out / "model.pt")
    return model


def config_from_dict(d: dict) -> ToyTrainConfig:
    names = {f.name for f in fields(ToyTrainConfig)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown training options {sorted(unknown)}")
    return ToyTrainConfig(**d)
