"""Seconds per image of region classification: N merged sub-images through CLIP vs one pooled pass (ours).

    python benchmarks/regions_speed.py                         # ViT-B/16 (random weights), 683x512, N = 10, 50
    python benchmarks/regions_speed.py --model RN50 --masks 20,100 --device cuda

Random weights of the named architecture (the cost does not depend on the values): a 683 x 512 image (a
VOC image after the paper's resize), N random rectangular masks. Rows: each merge operation and pooling,
the image side only (set_image + the embeddings; the text side is shared and cached); the ratio is
against mask&crop measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def masks_of(n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros((n, h, w), bool)
    for i in range(n):
        y0, x0 = rng.integers(0, h - 32), rng.integers(0, w - 32)
        out[i, y0:y0 + int(rng.integers(32, h - y0 + 1)), x0:x0 + int(rng.integers(32, w - x0 + 1))] = True
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B/16", help="architecture (random weights; default ViT-B/16)")
    p.add_argument("--masks", default="10,50", help="numbers of masks per image (default 10,50)")
    p.add_argument("--size", default="512,683", help="image H,W (default 512,683)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per row, the best is kept (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from maskclip.clip.weights import random_weights
    from maskclip.dense.predictor import MaskCLIPPredictor
    from maskclip.regions import MaskSet, RegionConfig, RegionPredictor
    from maskclip.regions.predictor import with_config

    h, w = (int(v) for v in args.size.split(","))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    clip, info = random_weights(args.model, device=args.device)
    dense = MaskCLIPPredictor(clip, device=args.device, templates="single", weights=info, resize="none")
    base = RegionPredictor(dense, RegionConfig())
    print(f"{args.model} (random weights) on {args.device}, image {h}x{w}, sub-images "
          f"{base.sub_image_size}px; seconds per image (best of {args.repeats})")
    print("| masks | merge | seconds | vs mask&crop |\n|---:|---|---:|---:|")
    for n in (int(v) for v in args.masks.split(",")):
        masks = MaskSet(masks_of(n, h, w, rng))
        times = {}
        for merge in ("mask&crop", "mask", "crop", "pool"):
            pred = with_config(base, merge=merge)
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                pred.set_image(image, masks=masks)
                pred.embed(masks)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
            times[merge] = best
            print(f"| {n} | {merge} | {best:.2f} | {times['mask&crop'] / best:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
