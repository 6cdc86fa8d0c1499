"""MaskCLIP+ on the toy world: does the trained network beat the MaskCLIP that taught it, and does the
paper's zero-shot ordering (Table 3: seen-only << guided < guided + self-training on unseen classes) appear?

    python benchmarks/toyworld_plus.py                          # everything (~100 min on 2 CPU cores)
    python benchmarks/toyworld_plus.py --only annotation-free   # the teacher-vs-student claim (~20 min)
    python benchmarks/toyworld_plus.py --only zero-shot         # the zero-shot table, both backbones
    python benchmarks/toyworld_plus.py --backbones pretrained   # the zero-shot table, pretrained only
    python benchmarks/toyworld_plus.py --quick                  # smaller run

Everything goes through the library the commands call: the training images (the world's train split)
are written to disk, `train_maskclip_plus` (what `maskclip train` runs) trains the networks, and
`load_predictor` (what `maskclip segment` and `maskclip eval` use) evaluates teacher and students on
held-out scenes of the test split with a ConfusionMatrix. Rows:

  (a) MaskCLIP teacher: the bundled toy CLIP (toy-rn) with its best variant among the paper's and the
      authors' settings (manifest's best_paper_variant, else BEST_VARIANT; `--variant` for another);
  (b) MaskCLIP+ annotation-free: light-r18 trained from (a)'s labels of each crop, no ground truth;
  (c) transductive zero-shot with unseen classes (default: the last three, as the paper's VOC split takes
      the last five), each with a RANDOMLY initialised backbone and with the backbone pretrained on
      image-level labels read from captions (`python -m maskclip.toyworld.pretrain`, the toy world's
      ImageNet: no pixel labels, no teacher; built into OUT/toy-backbone.pt when missing):
        seen-only ("adapted DeepLab"): the seen-class ground truth alone;
        guided: + (a)'s labels restricted to the unseen classes on the unseen pixels, all schedule long;
        guided + self-training: guided for the first 1/10 of the schedule, then the network labels its own
        crops (the paper's schedule, the authors' switch iteration and training-pass labels).
      At the switch the guided network's choice among the unseen classes is scored on the held-out unseen
      pixels ("restricted accuracy"), next to the teacher's: self-training can only keep what is there.

Claims checked (exit status 1 if one fails): mIoU (b) > (a); on unseen classes, with the pretrained
backbone, seen-only < guided < guided + self-training; MaskCLIP+ zero-shot mIoU(U) >= its teacher's.
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
from typing import Any

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


# the zero-shot trainings and their labels in the table; each with a random and a pretrained backbone
ZERO_SHOT = {"seen-only": "seen-only (adapted DeepLab)", "guided": "guided", "guided+self": "guided + self-training"}
BACKBONES = ("random", "pretrained")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller run: fewer images, iterations and test scenes")
    p.add_argument("--model", default="toy-rn", help="the teacher CLIP: bundled name or path (default toy-rn)")
    p.add_argument("--variant", default=None, help="MaskCLIP variant of the teacher (default: the best of the paper's "
                                                     "and the authors' variants recorded for a bundled checkpoint, "
                                                     "else the toy-world module's BEST_VARIANT)")
    p.add_argument("--unseen", default=DEFAULT_UNSEEN, help=f"unseen classes (default {DEFAULT_UNSEEN})")
    p.add_argument("--only", default=None, help="annotation-free, zero-shot, or a comma-separated subset of "
                                                f"annotation-free,{','.join(ZERO_SHOT)} (default: all)")
    p.add_argument("--backbones", default=",".join(BACKBONES),
                   help="zero-shot student initialisations: random, pretrained or both (default both)")
    p.add_argument("--pretrained", type=Path, default=None,
                   help="the caption-pretrained backbone (default: OUT/toy-backbone.pt, built when missing)")
    p.add_argument("--train-images", type=int, default=None, help="training scenes (default 2000; quick 600)")
    p.add_argument("--scenes", type=int, default=None, help="held-out test scenes (default 300; quick 100)")
    p.add_argument("--iterations", type=int, default=None, help="iterations per network (default 1000; quick 200)")
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
    return p.parse_args(argv)


def selected_runs(args: argparse.Namespace) -> list[str]:
    """Run names: "annotation-free" and "<zero-shot training>@<backbone>"."""
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    if set(backbones) - set(BACKBONES):
        raise SystemExit(f"--backbones {args.backbones!r}: choose from {', '.join(BACKBONES)}")
    every = ["annotation-free"] + [f"{z}@{b}" for b in backbones for z in ZERO_SHOT]
    if not args.only:
        return every
    keep = [r.strip() for r in args.only.split(",") if r.strip()]
    unknown = set(keep) - {"annotation-free", "zero-shot", *ZERO_SHOT}
    if unknown:
        raise SystemExit(f"--only {args.only!r}: unknown {sorted(unknown)}")
    return [r for r in every if r.split("@")[0] in keep or ("zero-shot" in keep and "@" in r)]


def ensure_backbone(args: argparse.Namespace, student: int) -> Path:
    """The caption-pretrained backbone (the toy world's ImageNet), built once into OUT when missing."""
    from maskclip.toyworld.pretrain import PretrainConfig, pretrain, save_backbone

    path = args.pretrained or args.out / "toy-backbone.pt"
    if not path.is_file():
        config = PretrainConfig(width=args.width, size=student, steps=400 if args.quick else PretrainConfig.steps)
        print(f"[toyworld+] pretraining the backbone on caption words into {path}", file=sys.stderr)
        state, report = pretrain(config)
        save_backbone(path, state, report)
    return path


def build_jobs(args: argparse.Namespace, names: list[str], base: Any, data: Path,
               backbone: Path | None) -> dict:
    """The library call of every selected run."""
    zero_shot = replace(base, data=replace(base.data, labels=data / "labels"),
                        unseen=tuple(u.strip() for u in args.unseen.split(",") if u.strip()),
                        train=replace(base.train, mode="zero-shot", suppress_unseen=True))
    switch = zero_shot.train.self_train_start()
    jobs = {}
    for name in names:
        if name == "annotation-free":
            jobs[name] = base
            continue
        kind, init = name.split("@")
        job = replace(zero_shot, target=replace(zero_shot.target, pretrained=str(backbone) if init == "pretrained"
                                                else None))
        if kind == "seen-only":
            job = replace(job, use_teacher=False)
        elif kind == "guided":
            job = replace(job, train=replace(job.train, self_train_after=None, snapshots=(switch,) if switch else ()))
        jobs[name] = job
    return jobs


def train_all(jobs: dict, out: Path, teacher_sha: str) -> dict[str, float] | None:
    """Train (or continue) every run; seconds per run, or None if one stopped early."""
    from maskclip.plus.api import train_maskclip_plus

    seconds = {}
    for name, job in jobs.items():
        run_dir = out / name
        stamp = {"job": repr(job), "teacher_sha256": teacher_sha}
        old = json.loads((run_dir / "bench.json").read_text()) if (run_dir / "bench.json").is_file() else {}
        resume = {k: old.get(k) for k in stamp} == stamp  # the same run ("seconds" is added when it finishes)
        if resume and (run_dir / "model.pt").is_file():
            seconds[name] = old.get("seconds", float("nan"))
            continue
        if not resume and run_dir.exists():
            shutil.rmtree(run_dir)  # other options or another teacher checkpoint: start again
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "bench.json").write_text(json.dumps(stamp))
        print(f"[toyworld+] training {name} into {run_dir}", file=sys.stderr)
        t0 = time.perf_counter()
        # the same run, interrupted earlier: continue it (exactly)
        res = train_maskclip_plus(replace(job, train=replace(job.train, out_dir=str(run_dir), resume=resume)),
                                  device="cpu", progress=False)
        if res["status"] != "completed":
            print(f"[toyworld+] training {name} stopped at iteration {res['iteration']}", file=sys.stderr)
            return None
        seconds[name] = time.perf_counter() - t0
        (run_dir / "bench.json").write_text(json.dumps({**stamp, "seconds": seconds[name]}))
    return seconds


def restricted_accuracy(predictor, scenes, classes: list[str], unseen: list[int]) -> float:
    """Of the held-out pixels of unseen classes, the share whose label among the unseen classes only is right
    (what zero-shot pseudo labels ask of a network: the candidates are the unseen classes)."""
    names = [classes[u] for u in unseen]
    right = total = 0
    for s in scenes:
        mask = np.isin(s.labels, unseen)
        if not mask.any():
            continue
        predictor.set_image(s.image)
        pred = np.asarray(unseen)[predictor.predict(names, return_probs=False).labels]
        right += int((pred[mask] == s.labels[mask]).sum())
        total += int(mask.sum())
    return right / max(total, 1)


def evaluate_runs(teacher, names: list[str], out: Path, student_config, scenes, classes: list[str],
                  unseen: list[int], switch: int | None) -> tuple[dict, dict]:
    """Every model on the held-out scenes, and the restricted accuracy at the switch (teacher: its own)."""
    from maskclip.predict import load_predictor
    from maskclip.toyworld.captions import TEMPLATES

    results = {"MaskCLIP teacher": evaluate(teacher, scenes, classes, unseen)}
    switch_acc = {"MaskCLIP teacher": restricted_accuracy(teacher, scenes, classes, unseen)}
    for name in names:
        pred = load_predictor(str(out / name / "model.pt"), "cpu", list(TEMPLATES), student_config)
        results[f"MaskCLIP+ {name}"] = evaluate(pred, scenes, classes, unseen)
        snap = out / name / f"model-iter{switch}.pt"
        if name.startswith("guided@") and snap.is_file():  # guided+self is the same run up to the switch
            at_switch = load_predictor(str(snap), "cpu", list(TEMPLATES), student_config)
            switch_acc[name] = switch_acc[name.replace("guided@", "guided+self@")] = \
                restricted_accuracy(at_switch, scenes, classes, unseen)
    return results, switch_acc


def pct(v: float) -> str:
    return f"{100 * v:5.1f}" if np.isfinite(v) else "  nan"


def format_tables(results: dict, classes: list[str], unseen: list[int], seconds: dict,
                  switch_acc: dict) -> str:
    """The main table (mIoU, S, U, hIoU, per unseen class, train time) and the per-class IoU rows."""
    uh = " ".join(f"{classes[u][:7]:>7}" for u in unseen)
    header = f"{'model':<44} {'mIoU':>6} {'mIoU(S)':>8} {'mIoU(U)':>8} {'hIoU':>6} {uh} {'acc@sw':>7} {'train s':>8}"
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        key = name.removeprefix("MaskCLIP+ ")
        ts = f"{seconds[key]:8.0f}" if key in seconds else f"{'-':>8}"
        sw = pct(switch_acc[key]) if key in switch_acc else "    -"
        per = " ".join(f"{pct(r['IoU'][u]):>7}" for u in unseen)
        lines.append(f"{name:<44} {pct(r['mIoU']):>6} {pct(r['mIoU_seen']):>8} {pct(r['mIoU_unseen']):>8} "
                     f"{pct(r['hIoU']):>6} {per} {sw:>7} {ts}")
    lines.append("per-class IoU: " + ", ".join(classes))
    for name, r in results.items():
        lines.append(f"  {name:<42} " + " ".join(pct(v) for v in r["IoU"]))
    return "\n".join(lines)


def check_claims(results: dict) -> dict[str, bool]:
    """The claims whose runs were made (--only)."""
    a = results["MaskCLIP teacher"]
    claims = {}
    if "MaskCLIP+ annotation-free" in results:
        claims["annotation-free MaskCLIP+ beats its MaskCLIP teacher (mIoU)"] = \
            results["MaskCLIP+ annotation-free"]["mIoU"] > a["mIoU"]
    u = {k: results.get(f"MaskCLIP+ {k}@pretrained", {}).get("mIoU_unseen") for k in ZERO_SHOT}
    if all(v is not None for v in u.values()):
        claims["pretrained backbone, unseen classes: seen-only < guided < guided + self-training"] = \
            u["seen-only"] < u["guided"] < u["guided+self"]
        claims["MaskCLIP+ zero-shot (pretrained, guided + self-training) mIoU(U) >= its teacher's"] = \
            u["guided+self"] >= a["mIoU_unseen"]
    return claims


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    from maskclip.clip.weights import load_weights
    from maskclip.plus.api import PlusData, PlusJob, TargetSpec, TeacherSpec
    from maskclip.plus.config import PlusTrainConfig
    from maskclip.predict import load_predictor
    from maskclip.toyworld import CLASSES
    from maskclip.toyworld.captions import TEMPLATES
    from maskclip.toyworld.evaluate import BEST_VARIANT, VARIANTS, WORLD_SIZE, heldout_scenes, toy_config

    n_train = args.train_images or (600 if args.quick else 2000)
    n_test = args.scenes or (100 if args.quick else 300)
    iters = args.iterations or (200 if args.quick else 1000)
    variant = args.variant or bundled_best_variant(args.model) or BEST_VARIANT
    if variant not in VARIANTS:
        raise SystemExit(f"--variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    classes = list(CLASSES)
    unseen_names = [u.strip() for u in args.unseen.split(",") if u.strip()]
    unseen = [classes.index(u) for u in unseen_names]
    names = selected_runs(args)
    t_start = time.perf_counter()

    clip, clip_info = load_weights(args.model)
    config = toy_config(clip, **VARIANTS[variant])
    student = args.student_size or clip.visual.input_resolution
    # the networks are trained on crops of the scenes resized to `student` and tested at that size
    student_config = replace(config, resize="fit" if student != WORLD_SIZE else "none", size=(student, student),
                             scales=None, output_stride=None)
    out = args.out
    data = write_world(out / "data", n_train, WORLD_SIZE, args.seed)
    (out / "classes.txt").write_text("\n".join(classes) + "\n")
    print(f"[toyworld+] teacher {args.model} ({variant}), {n_train} train scenes and {n_test} test scenes at "
          f"{WORLD_SIZE}px (networks see them at {student}px), {iters} iterations x batch {args.batch_size}, unseen "
          f"{unseen_names}; runs: {', '.join(names)}", file=sys.stderr)
    backbone = ensure_backbone(args, student) if any(n.endswith("@pretrained") for n in names) else None
    base = PlusJob(
        PlusData(classes=str(out / "classes.txt"), images=data / "images"),
        TeacherSpec(args.model, config, list(TEMPLATES)),
        TargetSpec("light-r18", None, output_stride=8, width=args.width),
        PlusTrainConfig(iterations=iters, batch_size=args.batch_size, crop_size=(student, student),
                        scale=(student, student), lr=args.lr, checkpoint_every=max(iters // 4, 1),
                        log_every=max(iters // 10, 1), num_workers=args.workers))
    jobs = build_jobs(args, names, base, data, backbone)
    seconds = train_all(jobs, out, clip_info.sha256)
    if seconds is None:
        return 2
    torch.set_num_threads(args.threads)

    switch = replace(base.train, mode="zero-shot", unseen_ids=unseen).self_train_start()
    teacher = load_predictor(args.model, "cpu", list(TEMPLATES), config)
    results, switch_acc = evaluate_runs(teacher, names, out, student_config, heldout_scenes(n_test, seed=args.seed),
                                        classes, unseen, switch)
    table = format_tables(results, classes, unseen, seconds, switch_acc)
    claims = check_claims(results)
    print_summary(table, claims, switch, time.perf_counter() - t_start, args.threads)
    setup = {"teacher": {"model": args.model, "sha256": clip_info.sha256, "variant": variant,
                         "settings": asdict(config)},
             "world": {"seed": args.seed, "size": WORLD_SIZE, "student_size": student, "train_scenes": n_train,
                       "test_scenes": n_test, "test_split": "test"},
             "classes": classes, "unseen": unseen_names,
             "training": {"iterations": iters, "batch_size": args.batch_size, "target": "light-r18",
                          "width": args.width, "pretrained_backbone": str(backbone) if backbone else None,
                          "lr": args.lr, "seconds": seconds, "switch_iteration": switch},
             "commands": {k: repr(v) for k, v in jobs.items()}, "threads": args.threads}
    write_results(args.json or out / "results.json", {
        **setup, "results": {k: {m: v[m] for m in ("mIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "pAcc", "IoU",
                                                    "seconds")} for k, v in results.items()},
        "restricted_accuracy_at_switch": switch_acc, "claims": claims, "table": table,
        "total_seconds": time.perf_counter() - t_start})
    return 0 if all(claims.values()) else 1


def print_summary(table: str, claims: dict[str, bool], switch: int | None, total: float, threads: int) -> None:
    print(table)
    print(f"acc@sw: restricted accuracy on the held-out unseen pixels after the {switch} guided iterations before "
          "the switch (teacher: its own)")
    for claim, ok in claims.items():
        print(f"{'PASS' if ok else 'FAIL'}: {claim}")
    print(f"total {total:.0f} s ({threads} threads)")


def write_results(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)
    print(f"results: {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
