"""`maskclip demo`: offline end-to-end MaskCLIP on toy-world scenes with the bundled toy CLIP.

Renders held-out scenes, segments them, writes overlays and image | ground truth | prediction panels,
and prints per-class IoU. `--classes` takes your own queries ("red zebra, yellow zebra, grass"); queries
the world can ground (a stuff class, a category, or "COLOUR CATEGORY") are scored against it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

IGNORE = 255


def query_mask(scene, query: str) -> np.ndarray | None:
    """Pixels a query denotes in a toy-world scene, or None if the world cannot ground it."""
    from ..toyworld.world import CLASSES, COLOURS, OBJECTS

    words = query.lower().split()
    if len(words) == 1 and words[0] in CLASSES:
        return scene.labels == CLASSES.index(words[0])
    if len(words) == 2 and words[0] in COLOURS and words[1] in OBJECTS:
        ids = [o.instance for o in scene.objects if o.colour == words[0] and o.category == words[1]]
        return np.isin(scene.instances, ids)
    return None


def query_ground_truth(scene, queries: list[str]) -> tuple[np.ndarray, list[bool]]:
    """Label map over `queries` (IGNORE where no query applies) and which queries are groundable.

    When two queries cover a pixel (e.g. "zebra" and "red zebra"), the more specific one (later in
    order of word count) wins.
    """
    gt = np.full(scene.labels.shape, IGNORE, np.int64)
    known = []
    for i in sorted(range(len(queries)), key=lambda j: len(queries[j].split())):
        m = query_mask(scene, queries[i])
        if m is not None:
            gt[m] = i
    for q in queries:
        known.append(query_mask(scene, q) is not None)
    return gt, known


def _best_variant(model: str, default: str) -> str:
    """The variant the bundle measured best for a bundled model (its manifest's best_variant)."""
    import json

    from ..clip.weights import MANIFEST_PATH

    try:
        return json.loads(MANIFEST_PATH.read_text())[model].get("best_variant", default)
    except (OSError, ValueError, KeyError, TypeError):
        return default


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
                   help="dense feature path (default: the variant the bundled model's manifest records as best; "
                        "value-only otherwise)")
    p.add_argument("--dense-stride", type=int, default=None, choices=(32, 16, 8),
                   help="ResNet models: output stride of the dense read-out (default: the bundled model's best "
                        "variant; toy-rn: 16, a trous; 32 is the paper's)")
    p.add_argument("--ks", action="store_true", help="key smoothing")
    p.add_argument("--pd", action="store_true", help="prompt denoising")
    p.add_argument("--scale", type=int, default=4, help="upscaling of the panels (default: 4)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..clip.weights import load_clip
    from ..dense import MaskCLIP, build_text_classifier
    from ..toyworld import CLASSES, TEMPLATES
    from ..toyworld.evaluate import BEST_VARIANT, VARIANTS, heldout_scenes, scene_scores, toy_config
    from ..data.image_io import write_png_atomic
    from ..eval.metrics import ConfusionMatrix
    from ..render import overlay, panel
    from ..toyworld.visualize import palette

    if args.num_scenes <= 0:
        print(f"error: --num-scenes must be positive, got {args.num_scenes}", file=sys.stderr)
        return 2
    if args.device == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), 2))
    t0 = time.time()
    try:
        model = load_clip(args.model, device=args.device)
    except Exception as err:  # WeightsError and friends carry a message saying what to do
        print(f"error: cannot load --model {args.model!r}: {err}", file=sys.stderr)
        return 1
    queries = list(CLASSES) if args.classes is None else [q.strip() for q in args.classes.split(",") if q.strip()]
    if not queries:
        print("error: --classes is empty; give comma-separated names such as 'red zebra, grass'", file=sys.stderr)
        return 2
    if len(set(q.lower() for q in queries)) != len(queries):
        print(f"error: --classes has duplicates: {queries}", file=sys.stderr)
        return 2
    overrides = dict(VARIANTS[_best_variant(args.model, BEST_VARIANT)])
    if args.path:
        overrides["path"] = args.path
    if args.dense_stride:
        overrides["output_stride"] = args.dense_stride
    overrides["ks"] = args.ks or overrides.get("ks", False)
    overrides["pd"] = args.pd or overrides.get("pd", False)
    config = toy_config(model, **overrides)
    engine = MaskCLIP(model, config)
    classifier = build_text_classifier(model, queries, TEMPLATES)
    scenes = heldout_scenes(args.num_scenes, seed=args.seed)
    scores = scene_scores(engine, [s.image for s in scenes], classifier)
    preds = scores.argmax(1).numpy()

    out = Path(args.out)
    k = len(queries)
    cm = ConfusionMatrix(k, IGNORE)
    known = [False] * k
    colors = palette(k)
    for i, (scene, pred) in enumerate(zip(scenes, preds)):
        gt, known_i = query_ground_truth(scene, queries)
        known = [a or b for a, b in zip(known, known_i)]
        cm.update(pred, gt)
        write_png_atomic(out / f"scene{i:02d}_overlay.png", overlay(scene.image, pred, colors))
        write_png_atomic(out / f"scene{i:02d}_panel.png",
                         panel(scene.image, gt, pred, queries, colors, scale=args.scale, title=scene.caption))

    print("panels: image | ground truth (black: no query applies) | prediction")
    print(f"model {args.model}, {config.path}{' +KS' if config.ks else ''}{' +PD' if config.pd else ''}"
          f"{f' +OS{config.output_stride}' if config.output_stride else ''}, "
          f"{len(scenes)} held-out scenes, panels in {out}/")
    for i, s in enumerate(scenes[:3]):
        print(f"  scene {i}: {s.caption}")
    per_class = cm.compute()["IoU"]
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
    print(f"done in {time.time() - t0:.1f}s")
    return 0
