"""`maskclip toyworld train|render|export`: train the bundled toy CLIPs and look at the world."""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

from ..errors import SettingsError
from ..io.atomic import write_text

DEFAULT_OUT = "runs/toy"


def _add_train(sub) -> None:
    from ..toyworld.train import ToyTrainConfig

    p = sub.add_parser(
        "train", help="train a small CLIP on the toy world (the bundled toy-vit recipe by default)",
        description="Train a small CLIP contrastively on rendered toy-world scenes and their captions. "
                    "Deterministic: the same options give the same model. Writes checkpoint.pt (for "
                    "--resume), model.pt, log.jsonl and config.json under --out; with --export also a "
                    "gzipped fp16 state dict loadable by maskclip.clip.weights.load_clip.")
    defaults = ToyTrainConfig()
    helps = {
        "arch": "image encoder: vit or resnet",
        "image_size": "model input side in pixels (scenes are resized to it bilinearly, as MaskCLIP does at "
                      "inference; a ResNet needs a multiple of 32)",
        "world_size": "side of the rendered scenes in pixels (objects and textures are sized in these pixels)",
        "patch_size": "ViT patch size",
        "vision_width": "ViT width (heads = width // 64) or ResNet stem width (attention-pool heads = width*32//64)",
        "vision_layers": "ViT blocks (ResNets use one bottleneck per stage)",
        "embed_dim": "joint image-text embedding size",
        "text_width": "text transformer width (heads = width // 64)",
        "text_layers": "text transformer blocks",
        "context_length": "text context in tokens (captions are at most ~30)",
        "steps": "optimisation steps",
        "batch_size": "image-caption pairs per step (the contrastive negatives)",
        "lr": "peak AdamW learning rate (linear warm-up, cosine decay)",
        "weight_decay": "AdamW weight decay on matrices",
        "warmup": "warm-up steps",
        "seed": "model initialisation seed",
        "world_seed": "seed of the training scene stream",
        "twins": "share of each batch made of hard-negative twins (same stuff, other categories or colours)",
        "twin_stuff": "share of the twins that keep the objects and change the stuff (another ground or top), "
                      "so the stuff classes must be told apart too",
        "workers": "processes that render upcoming batches while the model trains (0: render in-line); the "
                   "model does not depend on it",
        "closeup": "share of scenes seen from close by: 1-2 large objects cut by the frame, so captions often "
                   "name a single thing",
        "partial_captions": "share of captions that name one thing only, phrased like the prompt templates",
        "log_every": "log every N steps",
        "ckpt_every": "write checkpoint.pt every N steps",
        "threads": "CPU threads (torch.set_num_threads)",
        "amp": "mixed precision: bf16 autocast (CPU with AVX512-BF16/AMX, or GPU), fp16 (CUDA only) or none",
    }
    for f in fields(ToyTrainConfig):
        default = getattr(defaults, f.name)
        kind = type(default)
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=default,
                       choices={"arch": ("vit", "resnet"), "amp": ("none", "bf16", "fp16")}.get(f.name),
                       help=f"{helps[f.name]} (default: {default})")
    p.add_argument("--out", default=None, help=f"output directory (default: runs/NAME with --bundle NAME, else "
                                               f"{DEFAULT_OUT})")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--no-resume", action="store_true",
                   help="start from scratch even if --out holds a checkpoint of the same config")
    p.add_argument("--bundle", metavar="NAME", default=None,
                   help="after training, write NAME.pt.gz (fp16, gzipped) into the package's toyworld/weights/, "
                        "measure its held-out mIoU and record it with its SHA-256 in manifest.json, so that "
                        "load_clip(NAME) finds it (the bundled ones: --bundle toy-vit, and for toy-rn the "
                        "command in its manifest entry)")
    p.set_defaults(func=_train)


def _train(args) -> int:
    from ..device import resolve_device
    from ..toyworld.train import ToyTrainConfig, train

    device = str(resolve_device(args.device))
    cfg = ToyTrainConfig(**{f.name: getattr(args, f.name) for f in fields(ToyTrainConfig)})
    try:
        cfg.clip_config()  # e.g. a ResNet input size that is not a multiple of 32
    except ValueError as err:
        raise SettingsError(str(err)) from None
    out = args.out or (f"runs/{args.bundle}" if args.bundle else DEFAULT_OUT)
    try:
        model = train(cfg, out, device=device, resume=not args.no_resume)
    except ValueError as err:  # a checkpoint of another configuration in --out
        raise SettingsError(str(err)) from None
    if args.bundle:
        _bundle_model(model.float().cpu(), args.bundle, cfg, _command_line(cfg, args.bundle), _train_seconds(out))
    return 0


def _command_line(cfg, name: str) -> str:
    """The training command that reproduces `cfg` (options that differ from the defaults; where the run
    was written and how often it logged do not change the model)."""
    from ..toyworld.train import ToyTrainConfig

    defaults = ToyTrainConfig()
    opts = [f"--{f.name.replace('_', '-')} {getattr(cfg, f.name)}" for f in fields(ToyTrainConfig)
            if getattr(cfg, f.name) != getattr(defaults, f.name)
            and f.name not in ("log_every", "ckpt_every", "workers")]
    return " ".join(["maskclip toyworld train", *opts, f"--bundle {name}"])


def _train_seconds(run: str | Path) -> float | None:
    """Wall time of the run's last logged step (log.jsonl), summed over resumed sessions."""
    log = Path(run) / "log.jsonl"
    if not log.is_file():
        return None
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    # elapsed_s restarts at each (re)start: add up the last record of every session
    total, last = 0.0, 0.0
    for r in records:
        if r["elapsed_s"] < last:
            total += last
        last = r["elapsed_s"]
    return round(total + last, 1) if records else None


def _bundle_model(model, name: str, cfg, command: str, train_seconds: float | None = None) -> None:
    from ..toyworld.bundle import bundle

    layers = f"{cfg.vision_layers} layers, patch {cfg.patch_size}" if cfg.arch == "vit" else "1 bottleneck per stage"
    desc = (f"toy CLIP ({cfg.arch}, {cfg.image_size}px input, {cfg.world_size}px scenes, width {cfg.vision_width}, "
            f"{layers}) trained {cfg.steps} steps x "
            f"{cfg.batch_size} on the maskclip toy world (seed {cfg.seed}, world seed {cfg.world_seed})")
    bundle(model, name, desc, command, train_seconds=train_seconds)


def _add_bundle(sub) -> None:
    p = sub.add_parser("bundle", help="package an already trained run as a bundled checkpoint",
                       description="Export RUN/model.pt as NAME.pt.gz into the package's toyworld/weights/, "
                                   "measure its held-out mIoU and record it in manifest.json.")
    p.add_argument("--run", required=True, help="training output directory (holds model.pt and config.json)")
    p.add_argument("--name", required=True, help="bundled name, e.g. toy-vit")
    p.add_argument("--train-command", default=None,
                   help="the command that trained it, recorded in the manifest (default: rebuilt from config.json)")
    p.set_defaults(func=_bundle)


def _bundle(args) -> int:
    import torch

    from ..clip.model import build_model
    from ..toyworld.train import config_from_dict

    run = Path(args.run)
    for f in ("model.pt", "config.json"):
        if not (run / f).is_file():
            print(f"error: {run / f} is missing; --run must be a finished `maskclip toyworld train` output",
                  file=sys.stderr)
            return 1
    cfg = config_from_dict(json.loads((run / "config.json").read_text()))
    model = build_model(torch.load(run / "model.pt", map_location="cpu", weights_only=True)).float()
    command = args.train_command or _command_line(cfg, args.name)
    _bundle_model(model, args.name, cfg, command, _train_seconds(run))
    return 0


def _add_render(sub) -> None:
    p = sub.add_parser("render", help="render toy-world scenes with ground truth and captions",
                       description="Render scenes of the toy world: PNG images, colourised ground-truth "
                                   "maps and a captions.jsonl file.")
    p.add_argument("--out", default="out/toyworld", help="output directory (default: out/toyworld)")
    p.add_argument("-n", "--num", type=int, default=16, help="number of scenes (default: 16)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="scene split (default: test)")
    p.add_argument("--seed", type=int, default=0, help="world seed (default: 0)")
    p.add_argument("--size", type=int, default=None,
                   help="image side (default: the world's 64, what the bundled models were trained on)")
    p.set_defaults(func=_render)


def _render(args) -> int:
    import numpy as np

    from ..data.image_io import write_png_atomic
    from ..io.atomic import atomic_write
    from ..render import colorize, label_palette
    from ..toyworld import WORLD_SIZE
    from ..toyworld.world import CLASS_COLOURS, CLASSES, World, WorldConfig

    if args.num <= 0:
        raise SettingsError(f"--num must be positive, got {args.num}")
    out = Path(args.out)
    world = World(args.seed, WorldConfig(size=args.size or WORLD_SIZE, heldout=args.split != "train"))
    colors = label_palette(CLASSES, known=dict(zip(CLASSES, CLASS_COLOURS)))
    records = []
    for i in range(args.num):
        s = world.scene(i, args.split)
        write_png_atomic(out / f"{args.split}_{i:04d}.png", s.image)
        write_png_atomic(out / f"{args.split}_{i:04d}_gt.png", colorize(s.labels, colors))
        with atomic_write(out / f"{args.split}_{i:04d}_labels.npy") as f:
            np.save(f, s.labels.astype(np.uint8))
        records.append({"index": i, "caption": s.caption,
                        "objects": [[o.colour, o.category, o.visible] for o in s.objects]})
    write_text(out / "captions.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    print(f"wrote {args.num} scenes to {out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("toyworld", help="the synthetic captioned world and its small CLIPs",
                              description="Train small CLIPs on the synthetic toy world, or render its scenes.")
    sub = p.add_subparsers(dest="toyworld_command", metavar="ACTION")
    _add_train(sub)
    _add_render(sub)
    _add_bundle(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
