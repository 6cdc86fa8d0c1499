"""Peak memory (RSS) of one very large image through read_image -> MaskCLIPPredictor.set_image -> predict.

    python benchmarks/large_image_memory.py              # 9450 x 9450 flat-colour PNG (89 MP, ~260 KB)
    python benchmarks/large_image_memory.py --side 6000  # smaller, faster

Each stage runs in a fresh subprocess (a tiny random CLIP, CPU) and reports `ru_maxrss`, the peak resident
memory of that process: `base` (imports and model only), `read` (+ read_image), `set_image` (+ the image
encoder), `predict` (+ labels at full size, no probabilities) and `predict+probs` (+ the K x H x W
probabilities, which the caller asked for and which are part of the output). The numbers before the
memory work (to_tensor's float copy normalised out of place, int64 labels) were measured on this
benchmark on the same machine (9450 and 6000 sides) and are printed beside the current ones with their ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# peak RSS in MB before the memory work (src/ at commit 1619359, same benchmark, 2-core CPU box, torch 2.13,
# Pillow 13): read went through tobytes twice and convert("RGB"), set_image normalised a float copy out of place
BEFORE = {9450: {"base": 359, "read": 1456, "set_image": 3597, "predict": 3597, "predict+probs": 3597},
          6000: {"base": 271, "read": 744, "set_image": 1623, "predict": 1623, "predict+probs": 1623}}

CHILD = r"""
import json, resource, sys, time
import torch
from maskclip.clip.model import CLIP
from maskclip.data.image_io import read_image
from maskclip.dense import MaskCLIPPredictor
sys.path.insert(0, {tests!r})
from conftest import randomize, tiny_config

stage, path = {stage!r}, {path!r}
torch.manual_seed(0)
model = randomize(CLIP(tiny_config(vit=True)), seed=1).eval()
p = MaskCLIPPredictor(model, device="cpu", templates="single")
p.classifier(["red", "blue"])
t = time.perf_counter()
if stage != "base":
    image = read_image(path)
if stage not in ("base", "read"):
    p.set_image(image)
if stage.startswith("predict"):
    pred = p.predict(["red", "blue"], return_probs=stage == "predict+probs")
seconds = time.perf_counter() - t
print(json.dumps({{"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds}}))
"""


def measure(stage: str, path: Path) -> dict:
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    code = CHILD.format(stage=stage, path=str(path), tests=tests)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=9450, help="image side in pixels (default 9450: 89 MP)")
    args = ap.parse_args()
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flat.png"
        t = time.perf_counter()
        Image.new("RGB", (args.side, args.side), (200, 30, 30)).save(path)
        mp = args.side * args.side / 1e6
        print(f"{args.side}x{args.side} = {mp:.1f} MP flat PNG, {path.stat().st_size / 1024:.0f} KB "
              f"(written in {time.perf_counter() - t:.1f} s)")
        print(f"{'stage':14s} {'peak RSS (MB)':>14s} {'seconds':>8s} {'before (MB)':>12s} {'ratio':>6s}")
        for stage in ("base", "read", "set_image", "predict", "predict+probs"):
            r = measure(stage, path)
            before = BEFORE.get(args.side, {}).get(stage, 0.0)
            ratio = f"{r['rss_mb'] / before:6.2f}" if before else f"{'-':>6s}"
            print(f"{stage:14s} {r['rss_mb']:14.0f} {r['seconds']:8.1f} {before or float('nan'):12.0f} {ratio}")


if __name__ == "__main__":
    main()
