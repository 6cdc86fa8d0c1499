"""Package a trained toy CLIP: gzipped fp16 state dict + a manifest entry `load_clip` understands.

The manifest records the file's SHA-256, the one command that trains it, and the held-out mIoU
the tests hold it to (`check`: a quick 40-scene version of the same measurement).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path

import torch

from ..clip.model import CLIP
from ..io.atomic import atomic_write, write_text

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def export_gzip(model: CLIP, path: str | Path, dtype: torch.dtype = torch.float16) -> str:
    """Write the state dict (cast to `dtype`) as a gzipped `torch.save` file; returns its SHA-256.

    gzip's header timestamp is fixed (mtime=0) so the same weights always give the same bytes.
    """
    sd = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
          for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(sd, buf)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(buf.getvalue())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def update_manifest(name: str, entry: dict, weights_dir: str | Path = WEIGHTS_DIR) -> Path:
    """Add or replace one entry of `manifest.json` (written atomically)."""
    path = Path(weights_dir) / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    manifest[name] = entry
    write_text(path, json.dumps(manifest, indent=2) + "\n")
    return path


def bundle(model: CLIP, name: str, description: str, train_command: str, weights_dir: str | Path = WEIGHTS_DIR,
           scenes: int = 200, check_scenes: int = 40, seed: int = 0, train_seconds: float | None = None,
           log=print) -> dict:
    """Export `model` as `<name>.pt.gz`, measure it through the fp16 round trip, write its manifest entry."""
    from ..clip.weights import load_clip
    from .evaluate import (
        VARIANTS,
        WORLD_SIZE,
        evaluate_segmentation,
        heldout_scenes,
        recommended_settings,
        toy_config,
        variants_for,
    )

    weights_dir = Path(weights_dir)
    file = f"{name}.pt.gz"
    digest = export_gzip(model, weights_dir / file)
    reloaded = load_clip(weights_dir / file)  # what users get: fp16 weights, fp32 on CPU
    size = reloaded.visual.input_resolution
    held = heldout_scenes(scenes, seed=seed)
    results = {v: evaluate_segmentation(reloaded, held, toy_config(reloaded, **over))
               for v, over in variants_for(reloaded).items()}
    best = max(results, key=lambda v: results[v].miou)  # measured, not assumed (BEST_VARIANT is the usual winner)
    best_paper = max(variants_for(reloaded, paper_only=True), key=lambda v: results[v].miou)
    full = results[best]
    check = evaluate_segmentation(reloaded, heldout_scenes(check_scenes, seed=seed),
                                  toy_config(reloaded, **VARIANTS[best]))
    entry = {
        "file": file,
        "sha256": digest,
        "description": description,
        "image_size": size,
        "world_size": WORLD_SIZE,
        "train_command": train_command,
        "train_seconds": train_seconds,
        "heldout_miou": round(100 * full.miou, 2),
        "best_variant": best,
        "best_paper_variant": best_paper,  # without our additions (output stride): MaskCLIP+'s default teacher
        "recommended": recommended_settings(reloaded, best),  # what segment/eval/label/predictors apply
        "heldout": {"scenes": scenes, "seed": seed, "variant": best,
                    "miou_by_variant": {v: round(100 * r.miou, 2) for v, r in results.items()},
                    "per_class_iou": {k: round(100 * v, 1) for k, v in full.per_class().items()}},
        "check": {"scenes": check_scenes, "seed": seed, "variant": best, "miou": round(100 * check.miou, 2)},
    }
    update_manifest(name, entry, weights_dir)
    log(f"{name}: {weights_dir / file} ({(weights_dir / file).stat().st_size / 2**20:.2f} MiB) sha256 {digest}; "
        f"held-out mIoU {entry['heldout_miou']} ({scenes} scenes, best variant {best})")
    return entry
