"""MaskCLIP+ on the toy world: does the trained network beat the MaskCLIP that taught it?

    python benchmarks/toyworld_plus.py                  # full run (~75 min on 2 CPU cores)
    python benchmarks/toyworld_plus.py --only annotation-free          # the teacher-vs-student claim (~27 min)
    python benchmarks/toyworld_plus.py --student-size 64               # networks at 64 px (~30 min)
    python benchmarks/toyworld_plus.py --quick          # smaller run
    python benchmarks/toyworld_plus.py --json out/toyworld_plus.json

Everything goes through the library the commands call: the training images (the world's train split)
are written to disk, `train_maskclip_plus` (what `maskclip train` runs) trains the networks, and
`load_predictor` (what `maskclip segment` and `maskclip eval` use) evaluates teacher and students on
held-out scenes of the test split with a ConfusionMatrix. Rows:

  (a) MaskCLIP teacher: the bundled toy CLIP (toy-rn) with its best variant among the paper's and the
      authors' settings (manifest's best_paper_variant, else BEST_VARIANT; `--variant` for another);
  (b) MaskCLIP+ annotation-free: light-r18 (narrow, RANDOMLY initialised: no ImageNet weights offline;
      the toy world is simple enough) trained from (a)'s labels of each crop, no ground truth;
  (c) transductive zero-shot with unseen classes (default: the last three, as the paper's VOC split takes
      the last five): ground truth for the seen classes and
      (a)'s labels, restricted to the unseen classes, on the unseen pixels (then self-training after 1/10,
      the paper's schedule), against the same network trained on the seen classes alone (unseen pixels
      ignored).

Claims checked (exit status 1 if one fails): mIoU (b) > (a); mIoU(U) of zero-shot > seen-only.
`--only annotation-free` runs (b) alone, e.g. against another `--variant` of the teacher.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

# the last three classes of the list, as the paper's VOC split takes the last five of twenty as unseen
DEFAULT_UNSEEN = "turtle,balloon,fish"


def write_world(out: Path, n: int, size: int, seed: int) -> Path:
    """The first n scenes of the world's train split as PNGs (images/ and labels/); reused when present."""
    from PIL import Image

    from maskclip.toyworld import World, WorldConfig

    stamp = out / "world.json"
    want = {"n": n, "size": size, "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return out
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    world = World(seed, WorldConfig(size=size))
    for i in range(n):
        s = world.scene(i, "train")
        Image.fromarray(s.image).save(out / "images" / f"{i:05d}.png")
        Image.fromarray(s.labels.astype(np.uint8)).save(out / "labels" / f"{i:05d}.png")
    stamp.write_text(json.dumps(want))
    return out


def bundled_best_variant(model: str) -> str | None:
    """The variant the bundled checkpoint's manifest entry reports as its best among the paper's and the
    authors' settings (measured when it was bundled), if any: the checkpoint may be replaced, and its
    best variant with it. MaskCLIP+ as in the paper learns from MaskCLIP as in the paper."""
    from maskclip.clip.weights import MANIFEST_PATH

    try:
        entry = json.loads(MANIFEST_PATH.read_text()).get(model) or {}
    except (OSError, ValueError):
        return None
    return entry.get("best_paper_variant") or entry.get("best_variant") or (entry.get("heldout") or {}).get("variant")


def evaluate(predictor, scenes, classes: list[str], unseen: list[int]) -> dict:
    from maskclip.eval.metrics import ConfusionMatrix

    cm = ConfusionMatrix(len(classes))
    t0 = time.perf_counter()
    for s in scenes:
        predictor.set_image(s.image)
        cm.update(predictor.predict(classes, return_probs=False).labels, s.labels)
    r = cm.compute(unseen=unseen)
    r["seconds"] = time.perf_counter() - t0
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller run: fewer images, iterations and test scenes")
    p.add_argument("--model", default="toy-rn", help="the teacher CLIP: bundled name or path (default toy-rn)")
    p.add_argument("--variant", default=None, help="MaskCLIP variant of the teacher (default: the best of the paper's "
                                                     "and the authors' variants recorded for a bundled checkpoint, "
                                                     "else the toy-world module's BEST_VARIANT)")
    p.add_argument("--unseen", default=DEFAULT_UNSEEN, help=f"unseen classes (default {DEFAULT_UNSEEN})")
    p.add_argument("--only", default=None, help="comma-separated subset of the trainings to run: annotation-free, "
                                                "zero-shot, seen-only (default: all; the claims need all)")
    p.add_argument("--train-images", type=int, default=None, help="training scenes (default 2000; quick 600)")
    p.add_argument("--scenes", type=int, default=None, help="held-out test scenes (default 300; quick 100)")
    p.add_argument("--iterations", type=int, default=None, help="iterations per network (default 1500; quick 300)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--student-size", type=int, default=None,
                   help="side the networks see the 64 px scenes at, in training (crop and resize scale) and in "
                        "testing (default: the teacher's input size, 128 for toy-rn: the size its CLIP was "
                        "trained at; a 64 px student cannot resolve 5-6 px textures after its stride-4 stem)")
    p.add_argument("--width", type=int, default=32, help="light-r18 base width (default 32)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default 0.01, the paper's)")
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    p.add_argument("--out", type=Path, default=Path("runs/toyworld_plus"),
                   help="work directory (default runs/toyworld_plus)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here (default OUT/results.json)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--workers", type=int, default=1, help="data-loading processes per training (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from maskclip.clip.weights import load_weights
    from maskclip.plus.api import PlusData, PlusJob, TargetSpec, TeacherSpec, train_maskclip_plus
    from maskclip.plus.config import PlusTrainConfig
    from maskclip.predict import load_predictor
    from maskclip.toyworld import CLASSES
    from maskclip.toyworld.captions import TEMPLATES
    from maskclip.toyworld.evaluate import BEST_VARIANT, VARIANTS, WORLD_SIZE, heldout_scenes, toy_config

    n_train = args.train_images or (600 if args.quick else 2000)
    n_test = args.scenes or (100 if args.quick else 300)
    iters = args.iterations or (300 if args.quick else 1500)
    variant = args.variant or bundled_best_variant(args.model) or BEST_VARIANT
    if variant not in VARIANTS:
        raise SystemExit(f"--variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    classes = list(CLASSES)
    unseen_names = [u.strip() for u in args.unseen.split(",") if u.strip()]
    unseen = [classes.index(u) for u in unseen_names]
    t_start = time.perf_counter()

    clip, clip_info = load_weights(args.model)
    size = WORLD_SIZE  # the scenes; the teacher resizes them (and the crops) to its own input size
    config = toy_config(clip, **VARIANTS[variant])
    student = args.student_size or clip.visual.input_resolution
    # the networks are trained on crops of the scenes resized to `student` and tested at that size
    student_config = replace(config, resize="fit" if student != size else "none", size=(student, student),
                             scales=None, output_stride=None)
    out = args.out
    data = write_world(out / "data", n_train, size, args.seed)
    (out / "classes.txt").write_text("\n".join(classes) + "\n")
    (out / "templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    print(f"[toyworld+] teacher {args.model} ({variant}), {n_train} train scenes and {n_test} test scenes at "
          f"{size}px (networks see them at {student}px), {iters} iterations x batch {args.batch_size}, unseen "
          f"{unseen_names}", file=sys.stderr)

    base = PlusJob(
        PlusData(classes=str(out / "classes.txt"), images=data / "images"),
        TeacherSpec(args.model, config, list(TEMPLATES)),
        TargetSpec("light-r18", None, output_stride=8, width=args.width),
        PlusTrainConfig(iterations=iters, batch_size=args.batch_size, crop_size=(student, student),
                        scale=(student, student), lr=args.lr, checkpoint_every=max(iters // 4, 1),
                        log_every=max(iters // 10, 1), num_workers=args.workers))
    zero_shot = replace(base, data=replace(base.data, labels=data / "labels"), unseen=tuple(unseen_names),
                        train=replace(base.train, mode="zero-shot", suppress_unseen=True))
    runs = {"annotation-free": base, "zero-shot": zero_shot, "seen-only": replace(zero_shot, use_teacher=False)}
    if args.only:
        keep = [r.strip() for r in args.only.split(",") if r.strip()]
        unknown = set(keep) - set(runs)
        if unknown:
            raise SystemExit(f"--only {args.only!r}: unknown {sorted(unknown)}; choose from {', '.join(runs)}")
        runs = {k: v for k, v in runs.items() if k in keep}
    commands, train_seconds = {}, {}
    for name, job in runs.items():
        run_dir = out / name
        commands[name] = repr(job)  # the library call, in full
        stamp = {"job": commands[name], "teacher_sha256": clip_info.sha256}
        resume = (run_dir / "bench.json").is_file() and json.loads((run_dir / "bench.json").read_text()) == stamp
        if not resume and run_dir.exists():
            shutil.rmtree(run_dir)  # other options or another teacher checkpoint: start again
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "bench.json").write_text(json.dumps(stamp))
        print(f"[toyworld+] training {name} into {run_dir}", file=sys.stderr)
        t0 = time.perf_counter()
        # the same run, interrupted or finished earlier: continue it (exactly)
        res = train_maskclip_plus(replace(job, train=replace(job.train, out_dir=str(run_dir), resume=resume)),
                                  device="cpu", progress=False)
        train_seconds[name] = time.perf_counter() - t0
        if res["status"] != "completed":
            print(f"[toyworld+] training {name} stopped at iteration {res['iteration']}", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)

    scenes = heldout_scenes(n_test, seed=args.seed)
    results = {}
    teacher = load_predictor(args.model, "cpu", list(TEMPLATES), config)
    results["MaskCLIP teacher"] = evaluate(teacher, scenes, classes, unseen)
    for name in runs:
        pred = load_predictor(str(out / name / "model.pt"), "cpu", list(TEMPLATES), student_config)
        results[f"MaskCLIP+ {name}"] = evaluate(pred, scenes, classes, unseen)

    def pct(v: float) -> str:
        return f"{100 * v:5.1f}" if np.isfinite(v) else "  nan"

    header = f"{'model':<30} {'mIoU':>6} {'mIoU(S)':>8} {'mIoU(U)':>8} {'hIoU':>6} {'train s':>8}"
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        key = name.removeprefix("MaskCLIP+ ")
        ts = f"{train_seconds[key]:8.0f}" if key in train_seconds else f"{'-':>8}"
        lines.append(f"{name:<30} {pct(r['mIoU']):>6} {pct(r['mIoU_seen']):>8} {pct(r['mIoU_unseen']):>8} "
                     f"{pct(r['hIoU']):>6} {ts}")
    a, b = results["MaskCLIP teacher"], results.get("MaskCLIP+ annotation-free")
    z, s = results.get("MaskCLIP+ zero-shot"), results.get("MaskCLIP+ seen-only")
    claims = {}  # only those whose runs were made (--only)
    if b:
        claims["annotation-free MaskCLIP+ beats its MaskCLIP teacher (mIoU)"] = b["mIoU"] > a["mIoU"]
    if z and s:
        claims["zero-shot MaskCLIP+ beats the seen-only network on unseen classes (mIoU(U))"] = \
            z["mIoU_unseen"] > s["mIoU_unseen"]
    table = "\n".join(lines)
    print(table)
    print("per-class IoU: " + ", ".join(f"{c}" for c in classes))
    for name, r in results.items():
        print(f"  {name:<28} " + " ".join(pct(v) for v in r["IoU"]))
    for claim, ok in claims.items():
        print(f"{'PASS' if ok else 'FAIL'}: {claim}")
    # the networks' frozen classifier is the teacher's text embeddings: classes whose embeddings are
    # nearly collinear can hardly be told apart by either (a diagnostic for a weak toy CLIP)
    from maskclip.plus.models import load_target_model

    w = load_target_model(out / next(iter(runs)) / "model.pt").classifier.weight
    cos = (w @ w.T).numpy()
    close = sorted(((float(cos[i, j]), classes[i], classes[j]) for i in range(len(classes))
                    for j in range(i + 1, len(classes)) if cos[i, j] > 0.95), reverse=True)
    if close:
        print("nearly collinear class text embeddings (cosine > 0.95): " +
              ", ".join(f"{a}/{b} {c:.3f}" for c, a, b in close))
    total = time.perf_counter() - t_start
    print(f"total {total:.0f} s ({args.threads} threads)")

    report = {
        "teacher": {"model": args.model, "sha256": clip_info.sha256, "variant": variant,
                    "settings": asdict(config)},
        "world": {"seed": args.seed, "size": size, "student_size": student, "train_scenes": n_train,
                  "test_scenes": n_test,
                  "test_split": "test"},
        "classes": classes, "unseen": unseen_names,
        "training": {"iterations": iters, "batch_size": args.batch_size, "target": "light-r18",
                     "width": args.width, "pretrained": "none (random init)", "lr": args.lr,
                     "seconds": train_seconds},
        "commands": commands,
        "results": {k: {m: v[m] for m in ("mIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "pAcc", "IoU", "seconds")}
                    for k, v in results.items()},
        "collinear_text_embeddings": [[a, b, c] for c, a, b in close],
        "claims": claims, "table": table, "total_seconds": total, "threads": args.threads,
    }
    path = args.json or out / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)
    print(f"results: {path}", file=sys.stderr)
    return 0 if all(claims.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
