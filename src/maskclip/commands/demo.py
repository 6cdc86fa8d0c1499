"""`maskclip demo`: offline end-to-end MaskCLIP on toy-world scenes with the bundled toy CLIP.

Renders held-out scenes, segments them, writes overlays and image | ground truth | prediction panels,
and prints per-class IoU. `--classes` takes your own queries ("red zebra, yellow zebra, grass"); queries
the world can ground (a stuff class, a category, or "COLOUR CATEGORY") are scored against it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..data.image_io import write_png_atomic
from ..errors import SettingsError
from ..eval.metrics import ConfusionMatrix
from ..predict import load_predictor
from ..render import label_palette, overlay_with_legend, panel
from ..toyworld.evaluate import IGNORE, heldout_scenes, query_ground_truth
from ..toyworld.world import CLASS_COLOURS, CLASSES
from ..vocab import Vocabulary


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="offline demo: segment toy-world scenes with the bundled toy CLIP",
        description="Render held-out toy-world scenes, segment them with MaskCLIP on the bundled toy CLIP "
                    "(no download needed), write overlays and side-by-side panels, and print per-class IoU.")
    p.add_argument("--model", default="toy-rn",
                   help="CLIP weights: a bundled name (toy-rn, toy-vit), an OpenAI name or a checkpoint path "
                        "(default: toy-rn)")
    p.add_argument("--out", default="maskclip-demo", help="output directory (default: maskclip-demo)")
    p.add_argument("-n", "--num-scenes", type=int, default=8, help="number of scenes to render (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="world seed of the held-out scenes (default: 0)")
    p.add_argument("--classes", default=None,
                   help="comma-separated queries, e.g. 'red zebra, yellow zebra, grass, sky' (default: the "
                        "world's ten classes). Queries the world can ground (a class, or COLOUR CATEGORY) get IoUs")
    p.add_argument("--path", default=None, choices=("value-only", "authors", "baseline"),
                   help="dense feature path (default: the one the bundled model's manifest recommends)")
    p.add_argument("--dense-stride", type=int, default=None, choices=(32, 16, 8),
                   help="ResNet models: output stride of the dense read-out (default: the bundled model's "
                        "recommended one; toy-rn: 16, a trous; 32 is the paper's)")
    p.add_argument("--ks", action="store_true", help="key smoothing")
    p.add_argument("--pd", action="store_true", help="prompt denoising")
    p.add_argument("--scale", type=int, default=4, help="upscaling of the panels (default: 4)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=run)


def _predictor(args):
    """The bundled model with its recommended settings; --path/--dense-stride/--ks/--pd override them."""
    overrides = {k: v for k, v in (("path", args.path), ("output_stride", args.dense_stride)) if v}
    if args.ks:
        overrides["ks"] = True
    if args.pd:
        overrides["pd"] = True
    return load_predictor(args.model, device=args.device, overrides=overrides)


def run(args) -> int:
    if args.num_scenes <= 0:
        raise SettingsError(f"--num-scenes must be positive, got {args.num_scenes}")
    queries = list(CLASSES) if args.classes is None else [q.strip() for q in args.classes.split(",") if q.strip()]
    vocab = Vocabulary.of(queries) if queries else None
    if vocab is None:
        raise SettingsError("--classes is empty; give comma-separated names such as 'red zebra, grass'")
    if str(args.device).startswith("cpu"):
        torch.set_num_threads(min(torch.get_num_threads(), 2))
    t0 = time.time()
    predictor = _predictor(args)
    scenes = heldout_scenes(args.num_scenes, seed=args.seed)
    out = Path(args.out)
    k = len(queries)
    cm = ConfusionMatrix(k, IGNORE)
    known = [False] * k
    colors = label_palette(queries, known=dict(zip(CLASSES, CLASS_COLOURS)))  # a custom name: its own colour
    for i, scene in enumerate(scenes):
        predictor.set_image(scene.image)
        pred = predictor.predict(vocab, return_probs=False).labels
        gt, known_i = query_ground_truth(scene, queries)
        known = [a or b for a, b in zip(known, known_i)]
        cm.update(pred, gt)
        write_png_atomic(out / f"scene{i:02d}_overlay.png", overlay_with_legend(scene.image, pred, queries, colors))
        write_png_atomic(out / f"scene{i:02d}_panel.png",
                         panel(scene.image, gt, pred, queries, colors, scale=args.scale, title=scene.caption))
    _print_results(args, predictor.config, scenes, out, queries, known, cm.compute()["IoU"])
    print(f"done in {time.time() - t0:.1f}s")
    return 0


def _print_results(args, config, scenes, out: Path, queries: list[str], known: list[bool], per_class) -> None:
    print("panels: image | ground truth (black: no query applies) | prediction")
    print(f"model {args.model}, {config.readout}{' +KS' if config.ks else ''}{' +PD' if config.pd else ''}"
          f"{f' +OS{config.output_stride}' if config.output_stride else ''}, "
          f"{len(scenes)} held-out scenes, panels in {out}/")
    for i, s in enumerate(scenes[:3]):
        print(f"  scene {i}: {s.caption}")
    ious = []
    print(f"{'class':<20} IoU")
    for j, q in enumerate(queries):
        if not known[j]:
            print(f"{q:<20} (not in the world: no ground truth)")
        elif np.isnan(per_class[j]):
            print(f"{q:<20} (absent from these scenes)")
        else:
            ious.append(per_class[j])
            print(f"{q:<20} {100 * ious[-1]:5.1f}")
    if ious:
        print(f"{'mIoU':<20} {100 * float(np.mean(ious)):5.1f}")
