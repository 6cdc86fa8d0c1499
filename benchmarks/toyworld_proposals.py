"""The proposal generator on the toy world: train on the seen classes, then look at held-out scenes.

    python benchmarks/toyworld_proposals.py                       # ~10 min on 2 CPU cores
    python benchmarks/toyworld_proposals.py --iterations 200      # a quicker look

The training scenes (the world's train split) are written as PNG folders and `maskclip train-proposals`
(the command, through `maskclip.cli.main`) trains on them with the unseen classes left out; the model is
then loaded with `ProposalGenerator` and evaluated on held-out scenes of the test split:

  seen mIoU      MaskFormer's semantic inference (`semantic()`, argmax over the seen classes) on the pixels
                 whose ground truth is a seen class (IoU over the seen classes);
  best-mask IoU  per ground-truth class region, the IoU of the best single proposal (soft mask > 0.5),
                 averaged over the regions of seen and of unseen classes: whether the class-agnostic
                 masks a CLIP would classify cover classes the generator was never trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toyworld_plus import DEFAULT_UNSEEN, write_world  # noqa: E402  (the last three classes unseen)


def evaluate(gen, scenes, classes: list[str], unseen: list[str]) -> dict:
    """Seen-class mIoU of semantic() and the best-proposal IoU of seen / unseen class regions."""
    from maskclip.eval.metrics import ConfusionMatrix

    seen_ids = [i for i, c in enumerate(classes) if c not in unseen]
    to_seen = np.full(256, 255, np.int64)
    to_seen[seen_ids] = np.arange(len(seen_ids))
    cm = ConfusionMatrix(len(seen_ids))
    best: dict[str, list[float]] = {"seen": [], "unseen": []}
    for s in scenes:
        cm.update(gen.semantic(s.image).argmax(0), to_seen[s.labels])
        masks = gen.propose(s.image).binary()
        for cid in np.unique(s.labels):
            region = s.labels == cid
            inter = (masks & region).sum((1, 2))
            union = (masks | region).sum((1, 2))
            best["unseen" if classes[cid] in unseen else "seen"].append(float((inter / np.maximum(union, 1)).max()))
    r = cm.compute()
    return {"seen_mIoU": r["mIoU"], "seen_IoU": dict(zip([classes[i] for i in seen_ids], r["IoU"])),
            "best_mask_IoU_seen": float(np.mean(best["seen"])), "best_mask_IoU_unseen": float(np.mean(best["unseen"])),
            "regions": {k: len(v) for k, v in best.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-images", type=int, default=400, help="training scenes (default 400)")
    p.add_argument("--scenes", type=int, default=50, help="held-out test scenes (default 50)")
    p.add_argument("--iterations", type=int, default=1000, help="training iterations (default 1000)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--crop", type=int, default=64, help="crop side; the 64 px scenes are resized by 0.5-2.0 of it")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW lr (default 1e-3: a randomly initialised "
                                                          "network on a short schedule; MaskFormer's is 1e-4)")
    p.add_argument("--unseen", default=DEFAULT_UNSEEN, help=f"unseen classes (default {DEFAULT_UNSEEN})")
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: on a shared 2-core machine more threads stall)")
    p.add_argument("--out", type=Path, default=Path("runs/toyworld_proposals"), help="work directory")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from maskclip.cli import main as cli
    from maskclip.proposals import ProposalGenerator
    from maskclip.toyworld import CLASSES
    from maskclip.toyworld.evaluate import heldout_scenes

    classes, unseen = list(CLASSES), [u.strip() for u in args.unseen.split(",") if u.strip()]
    data = write_world(args.out / "data", args.train_images, 64, args.seed)
    (args.out / "classes.txt").write_text("\n".join(classes) + "\n")
    run = args.out / f"run-{args.iterations}-{args.crop}-{args.lr:g}"
    command = ["train-proposals", str(data / "images"), str(data / "labels"), "--classes",
               str(args.out / "classes.txt"), "--unseen", ",".join(unseen), "--crop", str(args.crop),
               "--iterations", str(args.iterations), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
               "--log-every", str(max(args.iterations // 20, 1)),
               "--checkpoint-every", str(max(args.iterations // 4, 1)),
               "--threads", str(args.threads), "--device", "cpu", "--quiet", "--out", str(run)]
    if (run / "checkpoint.pt").exists():
        command.append("--resume")  # the same run, interrupted or finished: continue it (exactly)
    print("[toyworld-proposals] maskclip " + " ".join(command), file=sys.stderr)
    t0 = time.perf_counter()
    code = cli(command)
    train_s = time.perf_counter() - t0
    if code != 0:
        return code
    gen = ProposalGenerator.load(run / "model.pt")
    t0 = time.perf_counter()
    res = evaluate(gen, heldout_scenes(args.scenes, seed=args.seed), classes, unseen)
    res.update(train_seconds=train_s, eval_seconds=time.perf_counter() - t0, command="maskclip " + " ".join(command))
    print(f"seen-class mIoU of semantic() on {args.scenes} held-out scenes: {100 * res['seen_mIoU']:.1f}")
    print("per seen class: " + ", ".join(f"{c} {100 * v:.1f}" for c, v in res["seen_IoU"].items()))
    print(f"best single proposal IoU per class region: seen {100 * res['best_mask_IoU_seen']:.1f} "
          f"({res['regions']['seen']} regions), unseen {100 * res['best_mask_IoU_unseen']:.1f} "
          f"({res['regions']['unseen']} regions)")
    print(f"training {train_s:.0f} s, evaluation {res['eval_seconds']:.0f} s ({args.threads} threads)")
    (run / "results.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
