"""A hostile-input trial of the command line, run as a new user would (one subprocess per case).

    python benchmarks/hostile_trial.py            # about 3 minutes on 2 CPU cores
    python benchmarks/hostile_trial.py --json out/hostile.json

Every case builds its inputs in a temporary folder and checks what a careful user would: no code from
a file ever runs (a payload would create a marker file), no traceback, no input file changed, every
failure named on stderr, and for batch jobs no input silently dropped (each is written, done, failed
or listed as skipped). Prints one table row per category and exits 1 if any case breaks a rule.
"""

from __future__ import annotations

import argparse
import builtins
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import randomize_, tiny_config  # noqa: E402
from maskclip.clip.model import CLIP  # noqa: E402


class Payload:
    """Unpickling this creates the marker file: the proof that a loader ran code from a file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@dataclass
class Case:
    category: str
    name: str
    argv: list[str]
    expect_fail: bool = True
    inputs: list[Path] = field(default_factory=list)  # files that must stay byte-identical
    batch: list[Path] = field(default_factory=list)  # inputs of a batch job: none may be dropped silently


def _img(path: Path, seed: int = 0, size=(24, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _bomb_png(path: Path, w: int = 60000, h: int = 60000) -> Path:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def build(root: Path, marker: Path) -> list[Case]:
    torch.manual_seed(0)
    clip = randomize_(CLIP(tiny_config(vit=True)), seed=1)
    weights = root / "tiny.pt"
    torch.save(clip.state_dict(), weights)
    photos = root / "photos"
    for i, n in enumerate(["a.png", "b.jpg", "a_overlay.png", "sub/a.png"]):
        _img(photos / n, i)
    mixed = root / "mixed"
    _img(mixed / "ok.png")
    (mixed / "notes.txt").write_text("not an image")
    (mixed / "empty.png").write_bytes(b"")
    (mixed / "trunc.png").write_bytes((photos / "a.png").read_bytes()[:60])
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(mixed / "anim.gif", save_all=True, append_images=frames[1:])
    (mixed / "dir.png").mkdir()
    _bomb_png(mixed / "bomb.png")
    hostile = {}
    for tag, obj in {"plus-model": {"format": "maskclip-plus-model/2", "x": Payload(marker)},
                     "plus-old": {"format": "maskclip-plus-model/1", "x": Payload(marker)},
                     "clip": {"state_dict": clip.state_dict(), "x": Payload(marker)}}.items():
        hostile[tag] = root / f"{tag}.pt"
        torch.save(obj, hostile[tag])
    resume = root / "resume-run"
    resume.mkdir()
    torch.save({"format": "maskclip-plus-train/2", "x": Payload(marker)}, resume / "checkpoint.pt")
    (root / "afile").write_text("x")
    tmpl = root / "bad-templates.txt"
    tmpl.write_text("a photo of a {}.\nno placeholder\n")
    one = photos / "a.png"
    w = ["--weights", str(weights), "--templates", "single", "--size", "64", "--quiet"]
    seg = ["segment", str(one), "--classes", "cat,dog", "--out", str(root / "o")]
    data = root / "ds"
    (data / "labels").mkdir(parents=True)
    for i in range(2):
        _img(data / "images" / f"{i}.png", i)
        Image.fromarray((np.arange(24 * 32).reshape(24, 32) % 2).astype(np.uint8)).save(data / "labels" / f"{i}.png")
    ev = ["eval", "--dataset", "folder", "--root", str(data), "--classes", "cat,dog", "--out", str(root / "e")]
    cases = [Case("code in files", f"segment --model {t}",
                  ["segment", str(one), "--classes", "a,b", "--model", str(p), "--out", str(root / f"o-{t}")])
             for t, p in hostile.items()]
    cases += [Case("code in files", "segment --weights clip", [*seg, "--weights", str(hostile["clip"])]),
              Case("code in files", "eval --model plus", [*ev, "--model", str(hostile["plus-model"]), "--quiet"]),
              Case("code in files", "train --resume",
                   ["train", "--images", str(photos), "--classes", "a,b", "--weights", str(weights), "--target",
                    "light-r18", "--pretrained", "none", "--iterations", "1", "--out", str(resume), "--resume"]),
              Case("code in files", "toyworld train resume", ["toyworld", "train", "--out", str(resume), "--steps",
                                                              "1"]),
              Case("code in files", "convert-checkpoint", ["convert-checkpoint", str(hostile["plus-old"]),
                                                           str(root / "new.pt")])]
    cases += [Case("outputs", "--out equal to the input folder", ["segment", str(photos), "--recursive", "--classes",
                                                                  "a,b", "--out", str(photos), *w], False,
                   inputs=[p for p in photos.rglob("*") if p.is_file()]),
              Case("outputs", "an output path is an input", ["segment", str(root / "o2" / "labels" / "a.png"),
                                                             "--classes", "a,b", "--out", str(root / "o2"), *w],
                   inputs=[_img(root / "o2" / "labels" / "a.png", 7)]),
              Case("outputs", "same names in two folders", ["segment", str(photos / "a.png"), str(photos / "sub" /
                                                            "a.png"), "--classes", "a,b", "--out", str(root / "o3"),
                                                            *w], False)]
    bad = [("settings", "empty classes", ["--classes", ""]), ("settings", "duplicate classes", ["--classes", "a,A"]),
           ("settings", "class also background", ["--background", "cat"]),
           ("settings", "name too long", ["--classes", " ".join(["giraffe"] * 90)]),
           ("settings", "missing templates file", ["--templates", str(root / "nope.txt")]),
           ("settings", "templates without {}", ["--templates", str(tmpl)]),
           ("settings", "logit scale nan", ["--logit-scale", "nan"]),
           ("settings", "logit scale 0", ["--logit-scale", "0"]),
           ("settings", "threshold 2", ["--threshold", "2"]), ("settings", "pd threshold -1", ["--pd-threshold", "-1"]),
           ("settings", "crop 0", ["--crop", "0"]), ("settings", "step 0", ["--step", "0"]),
           ("settings", "size 0", ["--size", "0"]), ("settings", "window batch 0", ["--window-batch", "0"]),
           ("settings", "--device cuda", ["--device", "cuda:7"]),
           ("settings", "--device potato", ["--device", "potato"]),
           ("settings", "--out is a file", ["--out", str(root / "afile")]),
           ("settings", "--out below a file", ["--out", str(root / "afile" / "x")]),
           ("settings", "missing weights", ["--weights", str(root / "nope.pt")]),
           ("settings", "text file as weights", ["--weights", str(root / "afile")]),
           ("settings", "missing input", ["--classes", "a,b"])]
    for cat, name, extra in bad:
        argv = [*seg, *w, *extra]
        if name == "missing input":
            argv[1] = str(root / "nope.png")
        cases.append(Case(cat, name, argv))
    cases += [Case("settings", f"eval {name}", [*ev, "--weights", str(weights), "--quiet", *extra])
              for name, extra in [("--limit 0", ["--limit", "0"]), ("--device cuda", ["--device", "cuda:7"]),
                                  ("--bg-threshold 2", ["--bg-threshold", "2"])]]
    cases += [Case("settings", "robustness --device cuda", ["robustness", *ev[1:], "--weights", str(weights),
                                                            "--device", "cuda:7", "--quiet"]),
              Case("settings", "robustness severity 9", ["robustness", *ev[1:], "--weights", str(weights),
                                                         "--severities", "9", "--quiet"]),
              Case("settings", "unknown dataset", ["eval", "--dataset", "voc2099", "--root", str(data), "--weights",
                                                   str(weights)])]
    cases.append(Case("images", "folder of bad files", ["segment", str(mixed), "--classes", "a,b", "--out",
                                                        str(root / "o4"), *w],
                      batch=[p for p in mixed.iterdir()]))
    for name in ("bomb.png", "anim.gif", "empty.png", "trunc.png", "dir.png"):
        cases.append(Case("images", f"explicit {name}", ["segment", str(mixed / name), "--classes", "a,b", "--out",
                                                          str(root / f"o-{name}"), *w], batch=[mixed / name]))
    return cases


def run(case: Case, marker: Path) -> dict:
    marker.unlink(missing_ok=True)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in case.inputs}
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "maskclip.cli", *case.argv], capture_output=True, text=True,
                          env=env, timeout=600)
    err = proc.stderr + proc.stdout
    changed = [str(p) for p, h in before.items()
               if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != h]
    out = Path(case.argv[case.argv.index("--out") + 1]) if "--out" in case.argv else None
    labels = out / "labels" if out is not None else None
    written = {q.stem for q in labels.rglob("*.png")} if labels is not None and labels.is_dir() else set()
    dropped = [str(p) for p in case.batch if p.name not in err and p.stem not in written]
    named = any(line.startswith(("error:", "maskclip")) or "FAILED" in line or "skipped" in line
                for line in err.splitlines())
    ok_exit = (proc.returncode != 0) == case.expect_fail
    return {"category": case.category, "case": case.name, "rc": proc.returncode, "code_ran": marker.exists(),
            "traceback": "Traceback" in err, "changed": changed, "dropped": dropped,
            "clear": (named if case.expect_fail else True) and ok_exit, "stderr": err.strip().splitlines()[-3:]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=None, help="also write every case's result here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        marker = root / "PAYLOAD-RAN"
        rows = []
        for case in build(root, marker):
            r = run(case, marker)
            rows.append(r)
            good = r["clear"] and not (r["code_ran"] or r["traceback"] or r["changed"] or r["dropped"])
            last = r["stderr"][-1][:100] if r["stderr"] else ""
            print(f"{'ok ' if good else 'BAD'} {case.category:<14} {case.name:<32} rc={r['rc']} {last}",
                  file=sys.stderr)
    cats: dict[str, dict] = {}
    for r in rows:
        c = cats.setdefault(r["category"], {"cases": 0, "clear": 0, "tracebacks": 0, "code": 0, "changed": 0,
                                            "dropped": 0})
        c["cases"] += 1
        c["clear"] += r["clear"]
        c["tracebacks"] += r["traceback"]
        c["code"] += r["code_ran"]
        c["changed"] += bool(r["changed"])
        c["dropped"] += len(r["dropped"])
    print("| category | cases | clear result | tracebacks | code executed | inputs changed | silent drops |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, c in cats.items():
        print(f"| {name} | {c['cases']} | {c['clear']} | {c['tracebacks']} | {c['code']} | {c['changed']} | "
              f"{c['dropped']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    bad = [r for r in rows if not r["clear"] or r["code_ran"] or r["traceback"] or r["changed"] or r["dropped"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
