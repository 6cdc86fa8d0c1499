"""Images/second and peak memory of the evaluation loop, against a straightforward loop, in one run.

    python benchmarks/eval_loop.py                        # CamVid sample from ../shared/data, 12 images
    python benchmarks/eval_loop.py --model toy-vit --limit 50

ours       `maskclip.eval.runner.evaluate`: features once per image, labels from upsampled scores in row blocks,
           a streamed confusion matrix (constant memory in the number of images)
reference  a direct loop: full-resolution softmax probabilities for every class, argmax, and every
           prediction and label kept in lists until the end, where IoUs are computed from them

Each variant runs in its own process so that its peak resident memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / "shared" / "data" / "camvid"


def _model(name: str):
    from maskclip.clip.weights import load_clip, random_clip

    return load_clip(name) if name == "toy-vit" else random_clip(name)


def run_ours(args) -> dict:
    from maskclip.data.datasets import open_dataset
    from maskclip.dense import MaskCLIPPredictor
    from maskclip.eval.runner import EvalJob, evaluate

    ds = open_dataset("camvid", args.root)
    p = MaskCLIPPredictor(_model(args.model), device="cpu", templates="single", size=(512, 512))
    p.classifier(ds.classes)  # text side outside the timing, as in the reference
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        r = evaluate(p, ds, Path(d), EvalJob({"bench": 1}, limit=args.limit, progress=False))
    return {"seconds": time.perf_counter() - t, "images": r.num_images, "mIoU": r.metrics["mIoU"]}


def run_reference(args) -> dict:
    import numpy as np
    import torch

    from maskclip.data.datasets import open_dataset
    from maskclip.dense import MaskCLIP
    from maskclip.dense.text import build_text_classifier

    ds = open_dataset("camvid", args.root)
    model = _model(args.model)
    engine = MaskCLIP(model, size=(512, 512))
    clf = build_text_classifier(model, ds.classes, "single")
    preds, labels = [], []
    t = time.perf_counter()
    for i in range(min(args.limit, len(ds))):
        s = ds[i]
        _, probs = engine.segment(s.image, clf, return_probs=True)
        preds.append(probs.argmax(0).numpy())
        labels.append(s.label)
    k = ds.num_classes
    inter, union = np.zeros(k), np.zeros(k)
    for p, g in zip(preds, labels):
        valid = g != ds.ignore_index
        for c in range(k):
            a, b = (p == c) & valid, (g == c) & valid
            inter[c] += (a & b).sum()
            union[c] += (a | b).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        miou = float(np.nanmean(np.where(union > 0, inter / union, np.nan)))
    del torch
    return {"seconds": time.perf_counter() - t, "images": len(preds), "mIoU": miou}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B/16", help="architecture with random weights, or toy-vit")
    ap.add_argument("--root", type=Path, default=CAMVID)
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--which", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.which:
        out = run_ours(args) if args.which == "ours" else run_reference(args)
        out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return
    if not args.root.is_dir():
        sys.exit(f"CamVid sample not found at {args.root}; pass --root")
    rows = {}
    for which in ("ours", "reference"):
        cmd = [sys.executable, __file__, "--which", which, "--model", args.model, "--root", str(args.root),
               "--limit", str(args.limit)]
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
        rows[which] = json.loads(proc.stdout.splitlines()[-1])
    o, r = rows["ours"], rows["reference"]
    ips = {k: v["images"] / v["seconds"] for k, v in rows.items()}
    print(f"model {args.model}, CamVid sample, {o['images']} images, 480x360 resized to fit 512")
    print(f"{'':10s} {'img/s':>8s} {'peak RSS MB':>12s} {'mIoU':>7s}")
    for k in ("ours", "reference"):
        print(f"{k:10s} {ips[k]:8.3f} {rows[k]['max_rss_mb']:12.0f} {100 * rows[k]['mIoU']:7.2f}")
    print(f"ratio      {ips['ours'] / ips['reference']:7.2f}x {o['max_rss_mb'] / r['max_rss_mb']:11.2f}x")


if __name__ == "__main__":
    main()
