"""Quality ladder of MaskCLIP variants on held-out toy-world scenes with a bundled toy CLIP.

    python benchmarks/toyworld.py                       # toy-rn, 200 scenes, all rows
    python benchmarks/toyworld.py --model toy-vit --scenes 200 --json out/toyworld_ladder.json

Rows: the paper's baseline (unmodified last layer), the authors' value path (residual + FFN) and the
value-only path, each with and without key smoothing (KS) and prompt denoising (PD); for ResNets the
a trous read-out at output stride 16 and 8 (OS16, OS8: our addition); value-only with PAMR; for ViTs
the successors' last blocks (SCLIP, ClearCLIP, NACLIP), each with and without PAMR; multi-scale;
attribute queries ("COLOUR CATEGORY" must pick the right one of two same-category instances), with
held-out colour-category pairs separately; ImageNet-C-style corruptions at severities 1/3/5; and prompt
denoising where its premise holds: a vocabulary of the ten classes plus ten names that never occur
(`--pd-only` for that section alone).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch


def plus_rows(path: str | None, model: str, seed: int, size: int, sha: str | None) -> list[tuple]:
    """MaskCLIP+ rows from a toyworld_plus results file, if it was made with this teacher and world."""
    if not path or not Path(path).is_file():
        return []
    r = json.loads(Path(path).read_text())
    teacher, world = r.get("teacher", {}), r.get("world", {})
    if (teacher.get("model"), world.get("seed"), world.get("size")) != (model, seed, size) or \
            (sha and teacher.get("sha256") and teacher["sha256"] != sha):
        print(f"{path}: made with another teacher or world; MaskCLIP+ rows left out", file=sys.stderr)
        return []
    rows = []
    for name, res in r["results"].items():
        if name.startswith("MaskCLIP+"):
            note = f"{world['test_scenes']} test scenes of the same split, from {path}"
            rows.append((f"{name} (light-r18)", res["mIoU"], dict(zip(r["classes"], res["IoU"])), note))
    return rows


PD_BASES = ("authors", "authors+KS", "value-only", "value-only+KS")


def pd_section(model, scenes) -> list[dict]:
    """Each base variant without and with PD, on the ten classes and on ten classes + ten absent names."""
    from maskclip.toyworld.evaluate import (
        ABSENT_NAMES,
        KNOWN_ABSENT_NAMES,
        VARIANTS,
        evaluate_open_vocabulary,
        toy_config,
    )

    rows = []
    for base in PD_BASES:
        for pd in (False, True):
            config = toy_config(model, **{**VARIANTS[base], "pd": pd})
            row = {"variant": base + ("+PD" if pd else ""),
                   "miou_10": evaluate_open_vocabulary(model, scenes, config, ())[0]}
            for key, names in (("unknown", ABSENT_NAMES), ("known", KNOWN_ABSENT_NAMES)):
                row[f"miou_{key}"], row[f"absent_share_{key}"] = evaluate_open_vocabulary(model, scenes, config,
                                                                                          names)
            rows.append(row)
            print(f"  {row['variant']:<20} 10 classes {100 * row['miou_10']:5.1f}  +unknown "
                  f"{100 * row['miou_unknown']:5.1f} ({100 * row['absent_share_unknown']:.1f}% px)  +known "
                  f"{100 * row['miou_known']:5.1f} ({100 * row['absent_share_known']:.1f}% px)", file=sys.stderr)
    return rows


def format_pd(rows: list[dict], model: str, n: int) -> str:
    from maskclip.toyworld.evaluate import ABSENT_NAMES, KNOWN_ABSENT_NAMES

    lines = [f"\nPrompt denoising where its premise holds ({model}, {n} scenes): the ten classes; the ten plus "
             f"{len(ABSENT_NAMES)} names that never occur and the CLIP never read ({', '.join(ABSENT_NAMES)}); the ten "
             f"plus {len(KNOWN_ABSENT_NAMES)} words it read in captions that name no class "
             f"({', '.join(KNOWN_ABSENT_NAMES)}). mIoU over the ten; 'px' = pixels given an absent name:\n",
             "| variant | 10 classes | + unknown names | px | + known words | px |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {100 * r['miou_10']:.1f} | {100 * r['miou_unknown']:.1f} | "
                     f"{100 * r['absent_share_unknown']:.1f}% | {100 * r['miou_known']:.1f} | "
                     f"{100 * r['absent_share_known']:.1f}% |")
    return "\n".join(lines)


def _manifest_best(model: str) -> str | None:
    from maskclip.clip.weights import MANIFEST_PATH

    return json.loads(MANIFEST_PATH.read_text())[model].get("best_variant")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy-rn", help="bundled name or checkpoint path (default: toy-rn; the other "
                                                    "bundled one is toy-vit)")
    p.add_argument("--scenes", type=int, default=200, help="held-out scenes for mIoU (default: 200)")
    p.add_argument("--attribute-scenes", type=int, default=200,
                   help="scenes with two same-category objects of different colours (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="world seed of the held-out scenes (default: 0)")
    p.add_argument("--no-corruptions", action="store_true", help="skip the corruption rows")
    p.add_argument("--plus", default="runs/toyworld_plus/results.json",
                   help="results of benchmarks/toyworld_plus.py to add as MaskCLIP+ rows when present and made on "
                        "the same model, world seed and image size (default: runs/toyworld_plus/results.json)")
    p.add_argument("--json", default=None, help="also write all numbers to this JSON file")
    p.add_argument("--pd-only", action="store_true",
                   help="only the prompt-denoising section: each variant with and without PD on the world's ten "
                        "classes and on those plus ten names that never occur (most classes absent from each scene, "
                        "as in Pascal Context-59)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from maskclip.clip.weights import bundled_models, load_weights
    from maskclip.toyworld import CLASSES
    from maskclip.toyworld.evaluate import (
        BEST_VARIANT,
        VARIANTS,
        WORLD_SIZE,
        attribute_scenes,
        class_classifier,
        evaluate_attributes,
        evaluate_segmentation,
        heldout_scenes,
        toy_config,
        variants_for,
    )

    t0 = time.time()
    model, info = load_weights(args.model)
    size = model.visual.input_resolution  # the model's input; scenes are WORLD_SIZE and resized to it
    scenes = heldout_scenes(args.scenes, seed=args.seed)
    clf = class_classifier(model)
    rows: list[tuple[str, float, dict]] = []

    def seg(name: str, config, images=None) -> None:
        r = evaluate_segmentation(model, scenes, config, clf, images=images)
        rows.append((name, r.miou, r.per_class()))
        print(f"  {name:<34} mIoU {100 * r.miou:5.1f}", file=sys.stderr)

    pd_rows = pd_section(model, scenes)
    if args.pd_only:
        print(format_pd(pd_rows, args.model, len(scenes)))
        return 0
    variants = variants_for(model)
    for name, over in variants.items():
        seg(name, toy_config(model, **over))

    entry = bundled_models().get(args.model)  # the bundle's measured best, for the rows below
    best_name = (entry and _manifest_best(args.model)) or BEST_VARIANT
    best = VARIANTS[best_name]
    seg(f"{best_name}, multi-scale {size}/{size * 3 // 2}/{size * 2}",
        toy_config(model, **best, resize="fit", scales=(size, size * 3 // 2, size * 2)))
    seg(f"{best_name}, input x2 ({size * 2}px)", toy_config(model, **best, resize="fit", size=(size * 2, size * 2)))

    plus = plus_rows(args.plus, args.model, args.seed, WORLD_SIZE, info.sha256)
    for name, miou, per, note in plus:
        rows.append((name, miou, per))
        print(f"  {name:<34} mIoU {100 * miou:5.1f} ({note})", file=sys.stderr)

    attr_scenes = attribute_scenes(args.attribute_scenes, seed=args.seed)
    attrs = {}
    for name in dict.fromkeys(("baseline", "authors", "value-only", best_name)):
        a = evaluate_attributes(model, attr_scenes, toy_config(model, **VARIANTS[name]))
        attrs[name] = {"seen": a.accuracy, "seen_n": a.total, "heldout": a.heldout_accuracy,
                       "heldout_n": a.heldout_total}

    corr = []
    if not args.no_corruptions:
        try:
            from maskclip.eval.corruptions import corrupt
        except ImportError:
            corrupt = None
            print("maskclip.eval.corruptions not available: corruption rows skipped", file=sys.stderr)
        if corrupt is not None:
            for cname in ("gaussian_noise", "gaussian_blur", "jpeg_compression"):
                for sev in (1, 3, 5):
                    imgs = [corrupt(s.image, cname, sev, seed=i) for i, s in enumerate(scenes)]
                    r = evaluate_segmentation(model, scenes, toy_config(model, **best), clf, images=imgs)
                    corr.append((cname, sev, r.miou))
                    print(f"  {cname} s{sev}: {100 * r.miou:5.1f}", file=sys.stderr)

    short = [c[:5] for c in CLASSES]
    print(f"\nToy-world ladder: model {args.model}, {len(scenes)} held-out scenes ({WORLD_SIZE}px, model input "
          f"{size}px), "
          f"world seed {args.seed}\n")
    print("| variant | mIoU | " + " | ".join(short) + " |")
    print("|---|---:|" + "---:|" * len(short))
    for name, miou, per in rows:
        print(f"| {name} | {100 * miou:.1f} | " + " | ".join(f"{100 * per[c]:.0f}" for c in CLASSES) + " |")
    print(f"\nAttribute queries ({len(attr_scenes)} scenes; 'COLOUR CATEGORY' picks its instance among "
          "same-category objects of other colours):\n")
    print("| variant | seen pairs | held-out pairs |")
    print("|---|---:|---:|")
    for name, a in attrs.items():
        print(f"| {name} | {100 * a['seen']:.1f}% (n={a['seen_n']}) | {100 * a['heldout']:.1f}% (n={a['heldout_n']}) |")
    if corr:
        print(f"\nCorruptions ({best_name}; clean {100 * rows[list(variants).index(best_name)][1]:.1f}):\n")
        print("| corruption | s1 | s3 | s5 |")
        print("|---|---:|---:|---:|")
        for cname in dict.fromkeys(c for c, _, _ in corr):
            vals = [m for c, _, m in corr if c == cname]
            print(f"| {cname} | " + " | ".join(f"{100 * v:.1f}" for v in vals) + " |")
    print(format_pd(pd_rows, args.model, len(scenes)))
    print(f"\n({time.time() - t0:.0f}s)")
    if args.json:
        out = {"model": args.model, "scenes": len(scenes), "seed": args.seed, "image_size": size,
               "rows": [{"variant": n, "miou": m, "per_class": per} for n, m, per in rows],
               "attributes": attrs, "prompt_denoising": pd_rows,
               "corruptions": [{"name": c, "severity": s, "miou": m} for c, s, m in corr]}
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(out, indent=2))
        os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
