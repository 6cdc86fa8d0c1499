"""Is bf16 safe and faster here? The evidence a precision policy (issue #16) needs, measured in one run.

    python benchmarks/precision.py            # both toy CLIPs on 200 held-out scenes + a random ViT-B/16 timing

For each bundled toy CLIP (its recommended MaskCLIP settings): mIoU on held-out scenes with the image
encoder in fp32, under bf16 autocast (the text side, softmax, normalisation and KS fp32), and with the text
encoder under bf16 autocast too (what `--precision auto` runs on a native-bf16 CPU): the mIoU change and the
share of pixels whose label is unchanged. Then the time of one whole-image
encoder pass of a random ViT-B/16 at 448 x 448 in both precisions, and whether this CPU has native bf16
(AVX512-BF16 / AMX), without which bf16 can be far slower than fp32.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch


def native_bf16() -> list[str]:
    """The CPU's bf16 features (Linux /proc/cpuinfo flags): avx512_bf16, amx_bf16."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return sorted(f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags)


def labels_of(model, config, scenes, text_precision: str | None = None) -> np.ndarray:
    from maskclip.dense import MaskCLIP
    from maskclip.toyworld.evaluate import class_classifier, scene_scores

    engine = MaskCLIP(model, config)
    clf = class_classifier(model, precision=text_precision)
    out = [scene_scores(engine, [s.image for s in scenes[i:i + 32]], clf).argmax(1).numpy()
           for i in range(0, len(scenes), 32)]
    return np.concatenate(out)


def miou(pred: np.ndarray, truth: np.ndarray, k: int) -> float:
    from maskclip.eval.metrics import ConfusionMatrix

    cm = ConfusionMatrix(k)
    cm.update(pred, truth)
    return float(cm.compute()["mIoU"])


def toy_rows(n: int) -> list[dict]:
    from maskclip.clip.weights import load_weights
    from maskclip.dense import MaskCLIPConfig
    from maskclip.toyworld import CLASSES
    from maskclip.toyworld.evaluate import heldout_scenes

    scenes = heldout_scenes(n)
    truth = np.stack([s.labels for s in scenes])
    rows = []
    for name in ("toy-rn", "toy-vit"):
        model, info = load_weights(name)
        rec = {k: v for k, v in info.recommended.items() if k != "templates"}
        config = MaskCLIPConfig(**rec)
        a = labels_of(model, config, scenes)
        b = labels_of(model, replace(config, dtype="bf16"), scenes)
        c = labels_of(model, replace(config, dtype="bf16"), scenes, text_precision="bf16")
        ma, mb, mc = (miou(x, truth, len(CLASSES)) for x in (a, b, c))
        rows.append({"model": name, "fp32": ma, "bf16": mb, "delta": mb - ma, "agree": float((a == b).mean()),
                     "bf16_text": mc, "delta_text": mc - ma, "agree_text": float((a == c).mean())})
    return rows


def timing(reps: int) -> dict:
    from maskclip.clip.weights import random_weights
    from maskclip.dense import MaskCLIP

    model, _ = random_weights("ViT-B/16")
    x = torch.randn(1, 3, 448, 448)
    out = {}
    for dtype in (None, "bf16"):
        engine = MaskCLIP(model, resize="none", dtype=dtype)
        with torch.no_grad():
            engine.encode(x, normalized=True)  # warm-up
            t0 = time.perf_counter()
            for _ in range(reps):
                engine.encode(x, normalized=True)
        out[dtype or "fp32"] = (time.perf_counter() - t0) / reps
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=200, help="held-out toy scenes (default 200)")
    p.add_argument("--reps", type=int, default=3, help="timed ViT-B/16 passes per precision (default 3)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"native bf16 on this CPU: {', '.join(native_bf16()) or 'none'}")
    print("| model | mIoU fp32 | bf16 image encoder: mIoU | change | same label | bf16 image + text encoders: mIoU "
          "| change | same label |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in toy_rows(args.scenes):
        print(f"| {r['model']} | {100 * r['fp32']:.2f} | {100 * r['bf16']:.2f} | {100 * r['delta']:+.2f} | "
              f"{100 * r['agree']:.2f}% | {100 * r['bf16_text']:.2f} | {100 * r['delta_text']:+.2f} | "
              f"{100 * r['agree_text']:.2f}% |")
    t = timing(args.reps)
    print(f"random ViT-B/16, 448x448 whole image, encoder pass: fp32 {1000 * t['fp32']:.0f} ms, bf16 "
          f"{1000 * t['bf16']:.0f} ms ({t['fp32'] / t['bf16']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
