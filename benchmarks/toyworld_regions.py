"""Region classification on the toy world: a proposal generator trained on seen classes, a frozen CLIP naming
its masks, the ensemble of eq. (1), against MaskCLIP and MaskCLIP+ zero-shot on the same held-out scenes.

    python benchmarks/toyworld_regions.py                          # ~25 min on 2 CPU cores (training ~15)
    python benchmarks/toyworld_regions.py --plus "runs/toyworld_plus/guided+self@pretrained/model.pt"  # + MaskCLIP+
    python benchmarks/toyworld_regions.py --quick                  # smaller run

Everything goes through the library the commands call: the world's train split is written as PNG folders,
`train_proposals` (what `maskclip train-proposals` runs) trains the MaskFormer-style generator on the SEEN
classes only (the unseen ones, default the last three as in the MaskCLIP+ zero-shot benchmark, are ignored
pixels), and `RegionPredictor` (what `maskclip classify-masks` and `eval --method regions` use) names masks
with the bundled toy CLIP. Rows, all on the same held-out test scenes:

  MaskCLIP                      the toy CLIP's dense labels (its recommended settings)
  A^c alone, generator masks    mask / crop / mask&crop / pool (ours: one encoder pass)
  ensemble λ 0.6 / 0.7 / 0.8    eq. (1) with the generator's A^p, for mask&crop and for pool
  ground-truth segments         each object instance and each stuff region as a mask: the classifier's bound
  MaskCLIP regions              connected regions of MaskCLIP's own labels, re-classified (training-free)
  MaskCLIP+ zero-shot           with --plus (a model from benchmarks/toyworld_plus.py --only zero-shot)

Columns: mIoU, mIoU(S), mIoU(U), hIoU (harmonic mean of seen and unseen mIoU) and seconds per image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toyworld_plus import DEFAULT_UNSEEN, write_world  # noqa: E402


def gt_segments(scene):
    """Every object instance and every stuff class's region of a scene, one mask each."""
    from maskclip.regions import MaskSet

    masks = [scene.instances == k for k in range(1, int(scene.instances.max()) + 1) if (scene.instances == k).any()]
    stuff = scene.instances == 0
    masks += [(scene.labels == c) & stuff for c in np.unique(scene.labels[stuff])]
    return MaskSet(np.stack(masks), source="ground truth")


def evaluate(predictor, scenes, classes: list[str], unseen: list[int], masks_of=None) -> dict:
    """Confusion over the scenes; `masks_of(scene)` gives each scene's masks (None: the predictor's own)."""
    from maskclip.eval.metrics import ConfusionMatrix

    cm = ConfusionMatrix(len(classes))
    t0 = time.perf_counter()
    for s in scenes:
        if masks_of is None:
            predictor.set_image(s.image)
        else:
            predictor.set_image(s.image, masks=masks_of(s))
        cm.update(predictor.predict(classes, return_probs=False).labels, s.labels)
    r = cm.compute(unseen=unseen)
    r["seconds_per_image"] = (time.perf_counter() - t0) / len(scenes)
    return r


def train_generator(args, out: Path, classes: list[str], unseen: list[str]) -> Path:
    """The proposal generator on the seen classes of the world's train split (resumed when interrupted)."""
    from maskclip.proposals import ProposalJob, ProposalSchedule, train_proposals

    data = write_world(out / "data", args.train_images, 64, args.seed)
    (out / "classes.txt").write_text("\n".join(classes) + "\n")
    run = out / "proposals"
    job = ProposalJob(data / "images", data / "labels", str(out / "classes.txt"), run, unseen=tuple(unseen),
                      schedule=ProposalSchedule(iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
                                                crop_size=(64, 64), checkpoint_every=max(args.iterations // 4, 1),
                                                log_every=max(args.iterations // 10, 1), seed=args.seed))
    stamp = run.parent / "proposals.json"
    want = repr(job)
    if (run / "model.pt").is_file() and stamp.is_file() and stamp.read_text() == want:
        return run / "model.pt"
    resume = (run / "checkpoint.pt").is_file() and stamp.is_file() and stamp.read_text() == want
    if run.exists() and not resume:
        import shutil

        shutil.rmtree(run)
    stamp.write_text(want)
    train_proposals(replace(job, resume=resume), device="cpu", progress=False)
    return run / "model.pt"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy-rn", help="the frozen CLIP (default toy-rn)")
    p.add_argument("--unseen", default=DEFAULT_UNSEEN, help=f"unseen classes (default {DEFAULT_UNSEEN})")
    p.add_argument("--train-images", type=int, default=None, help="training scenes (default 2000; quick 500)")
    p.add_argument("--iterations", type=int, default=None, help="generator iterations (default 3000; quick 500)")
    p.add_argument("--batch-size", type=int, default=8, help="generator batch size (default 8)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="generator AdamW learning rate (default 1e-3: MaskFormer's 1e-4 leaves the objects behind in "
                        "a schedule this short, seen mIoU 75.7 vs 92.4 after 1000 iterations)")
    p.add_argument("--scenes", type=int, default=None, help="held-out test scenes (default 200; quick 50)")
    p.add_argument("--no-object", type=float, default=None,
                   help="drop generator queries whose no-object probability exceeds this (default: keep all)")
    p.add_argument("--plus", type=Path, default=None, help="a MaskCLIP+ zero-shot model to score on the same scenes")
    p.add_argument("--quick", action="store_true", help="a smaller run")
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    p.add_argument("--out", type=Path, default=Path("runs/toyworld_regions"), help="work directory")
    p.add_argument("--json", type=Path, default=None, help="results file (default OUT/results.json)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    args = p.parse_args(argv)
    args.train_images = args.train_images or (500 if args.quick else 2000)
    args.iterations = args.iterations or (500 if args.quick else 3000)
    n_test = args.scenes or (50 if args.quick else 200)
    torch.set_num_threads(args.threads)

    from maskclip.dense.predictor import MaskCLIPPredictor
    from maskclip.predict import load_predictor
    from maskclip.proposals import ProposalGenerator
    from maskclip.regions import RegionConfig, RegionPredictor
    from maskclip.regions.predictor import with_config
    from maskclip.toyworld import CLASSES
    from maskclip.toyworld.evaluate import heldout_scenes

    classes = list(CLASSES)
    unseen_names = [u.strip() for u in args.unseen.split(",") if u.strip()]
    unseen = [classes.index(u) for u in unseen_names]
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    gen_path = train_generator(args, args.out, classes, unseen_names)
    train_seconds = time.perf_counter() - t0
    generator = ProposalGenerator.load(gen_path, no_object_threshold=args.no_object)
    scenes = heldout_scenes(n_test, seed=args.seed)
    dense = MaskCLIPPredictor(args.model, device="cpu")
    proposals = {id(s): generator.propose(s.image) for s in scenes}  # the same masks for every row

    def without_scores(s):
        m = proposals[id(s)]
        return replace(m, scores=None, seen=None)

    rows: dict[str, dict] = {"MaskCLIP (the CLIP's recommended settings)": evaluate(dense, scenes, classes, unseen)}
    base = RegionPredictor(dense, RegionConfig())
    for merge in ("mask", "crop", "mask&crop", "pool"):
        rows[f"A^c alone, generator masks, {merge}"] = evaluate(with_config(base, merge=merge), scenes, classes,
                                                                 unseen, without_scores)
    for merge in ("mask&crop", "pool"):
        for lam in (0.6, 0.7, 0.8):
            rows[f"ensemble λ={lam}, {merge}"] = evaluate(with_config(base, merge=merge, lam=lam), scenes, classes,
                                                          unseen, lambda s: proposals[id(s)])
    for merge in ("mask&crop", "pool"):
        rows[f"ground-truth segments, {merge}"] = evaluate(with_config(base, merge=merge), scenes, classes, unseen,
                                                           gt_segments)
    for merge in ("mask&crop", "pool"):
        regions = RegionPredictor(dense, RegionConfig(merge=merge), proposals="regions")
        rows[f"MaskCLIP regions, {merge}"] = evaluate(regions, scenes, classes, unseen)
    if args.plus is not None:  # tested as benchmarks/toyworld_plus.py tests it: at the teacher's input size
        from maskclip.dense.config import MaskCLIPConfig
        from maskclip.toyworld.captions import TEMPLATES

        res = dense.model.visual.input_resolution
        plus = load_predictor(str(args.plus), "cpu", list(TEMPLATES),
                              MaskCLIPConfig(normalize="clip", mode="whole", resize="fit", size=(res, res)))
        rows["MaskCLIP+ zero-shot"] = evaluate(plus, scenes, classes, unseen)
    gen_seen = evaluate_generator(generator, scenes, classes, unseen)

    def pct(v: float) -> str:
        return f"{100 * v:.1f}" if np.isfinite(v) else "nan"

    lines = ["| method | mIoU | mIoU(S) | mIoU(U) | hIoU | s/img |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {pct(r['mIoU'])} | {pct(r['mIoU_seen'])} | {pct(r['mIoU_unseen'])} | "
                     f"{pct(r['hIoU'])} | {r['seconds_per_image']:.3f} |")
    table = "\n".join(lines)
    print(table)
    print(f"generator alone (MaskFormer's semantic inference over the seen classes; unseen pixels count as "
          f"errors): seen mIoU {pct(gen_seen)}")
    total = time.perf_counter() - t_start
    print(f"generator training {train_seconds:.0f} s; total {total:.0f} s ({args.threads} threads)")
    world = {"seed": args.seed, "test_scenes": n_test, "train_scenes": args.train_images}
    report = {"clip": args.model, "world": world,
              "classes": classes, "unseen": unseen_names, "generator": str(gen_path),
              "generator_training": {"iterations": args.iterations, "batch_size": args.batch_size,
                                     "seconds": train_seconds, "no_object_threshold": args.no_object},
              "region_config": asdict(RegionConfig()), "generator_seen_mIoU": gen_seen,
              "results": {k: {m: v[m] for m in ("mIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "IoU", "seconds_per_image")}
                          for k, v in rows.items()}, "table": table, "total_seconds": total}
    path = args.json or args.out / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=float))
    os.replace(tmp, path)
    return 0


def evaluate_generator(generator, scenes, classes: list[str], unseen: list[int]) -> float:
    """The generator's own seen-class mIoU (its semantic inference over the seen classes only)."""
    from maskclip.eval.metrics import ConfusionMatrix

    seen = [classes.index(n) for n in generator.seen]  # the generator's score columns, as class ids
    cm = ConfusionMatrix(len(classes))
    for s in scenes:
        pred = np.asarray(seen)[generator.semantic(s.image).argmax(0)]
        cm.update(pred, s.labels)
    return float(np.nanmean([cm.compute()["IoU"][i] for i in seen]))


if __name__ == "__main__":
    sys.exit(main())
