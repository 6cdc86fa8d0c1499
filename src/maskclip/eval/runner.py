"""Evaluate a segmenter (MaskCLIP or a trained MaskCLIP+ network) over a dataset.

Streams images through the predictor into a confusion matrix, saving the matrix and the names of
finished images every few images (atomically), so an interrupted run resumes without recomputing
them. Writes a JSON report and a Markdown table. Corruptions are applied on the fly.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..annotate import settings_key, write_json_atomic
from ..data.datasets import SegDataset
from ..data.image_io import write_png_atomic
from ..dense.inference import MaskCLIPConfig
from ..dense.predictor import Prediction, apply_threshold
from ..render import palette, panel
from .corruptions import corrupt
from .metrics import ConfusionMatrix

# Datasets whose class 0 is a "background" made of stuff names (later papers' protocol).
BACKGROUND_DATASETS = ("voc21", "context60", "coco-object")


class Predictor(Protocol):
    def set_image(self, image: np.ndarray) -> None: ...

    def predict(self, classes, background=None, threshold=None, return_probs: bool = True) -> Prediction: ...


@dataclass(frozen=True)
class EvalProtocol:
    """A named set of inference settings for a benchmark."""

    name: str
    config: MaskCLIPConfig
    templates: str
    bg_threshold: float | None


def paper_size(dataset: str) -> tuple[int, int]:
    """The authors' whole-image test scales: fit 520x520 (Pascal Context), 1024x512 (Cityscapes), else 512."""
    if dataset.startswith("context"):
        return (520, 520)
    if dataset == "cityscapes":
        return (1024, 512)
    return (512, 512)


def protocol(name: str, dataset: str, **overrides) -> EvalProtocol:
    """'paper': the authors' configs (whole image, mmseg keep-ratio fit, ImageNet mean/std, 85 templates,
    logit scale 100, no background threshold).
    'later': SCLIP/ClearCLIP/NACLIP (short side 336, 560 for Cityscapes; 224 windows, stride 112;
    CLIP mean/std; logit scale 40; background threshold 0.1 on VOC21, PC60 and COCO-Object).
    'custom': MaskCLIPConfig defaults, to be overridden."""
    if name == "paper":
        cfg = MaskCLIPConfig(mode="whole", resize="fit", size=paper_size(dataset), normalize="imagenet",
                             logit_scale=100.0)
        p = EvalProtocol("paper", cfg, "85", None)
    elif name == "later":
        short = 560 if dataset == "cityscapes" else 336
        cfg = MaskCLIPConfig(mode="slide", resize="short", size=(short, short), crop=224, stride=112,
                             normalize="clip", logit_scale=40.0)
        p = EvalProtocol("later", cfg, "85", 0.1 if dataset in BACKGROUND_DATASETS else None)
    elif name == "custom":
        p = EvalProtocol("custom", MaskCLIPConfig(), "85", None)
    else:
        raise ValueError(f"unknown protocol {name!r}; choose 'paper', 'later' or 'custom'")
    if overrides:
        from dataclasses import replace

        p = replace(p, **overrides)
    return p


@dataclass
class EvalReport:
    dataset: str
    split: str
    num_images: int
    classes: list[str]
    metrics: dict
    settings: dict
    timing: dict
    failures: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _state_path(out_dir: Path) -> Path:
    return out_dir / "state.json"


def _load_state(out_dir: Path, key: str, num_classes: int, ignore_index: int) -> tuple[ConfusionMatrix, list[str], float]:
    path = _state_path(out_dir)
    if path.exists():
        try:
            state = json.loads(path.read_text())
        except ValueError:
            state = {}
        if state.get("settings_key") == key:
            return ConfusionMatrix.from_dict(state["confusion"]), list(state["done"]), float(state.get("seconds", 0))
    return ConfusionMatrix(num_classes, ignore_index), [], 0.0


def evaluate(predictor: Predictor, dataset: SegDataset, out_dir: Path, settings: dict, *,
             bg_threshold: float | None = None, corruption: str | None = None, severity: int = 1, seed: int = 0,
             limit: int | None = None, save_vis: int = 0, seen: Sequence[int] | None = None,
             unseen: Sequence[int] | None = None, checkpoint_every: int = 10, progress: bool = True) -> EvalReport:
    """Run the predictor over `dataset` (first `limit` images), resuming from `out_dir/state.json`.

    `settings` describes the run (model, protocol, config); it keys the resume state, so a changed
    setting starts over. With `bg_threshold`, pixels whose top probability is below it become class 0
    (the dataset's background). Failed images are recorded and skipped.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    full = {**settings, "dataset": dataset.name, "corruption": corruption, "severity": severity if corruption else None,
            "seed": seed, "bg_threshold": bg_threshold}
    key = settings_key(full)
    cm, done, seconds = _load_state(out_dir, key, dataset.num_classes, dataset.ignore_index)
    done_set = set(done)
    failures: list[tuple[str, str]] = []
    if bg_threshold is not None and not dataset.class_names[0].lower().startswith("background"):
        raise ValueError(f"--bg-threshold needs a dataset whose class 0 is background; {dataset.name} starts with "
                         f"{dataset.class_names[0]!r}")
    colors = palette(dataset.num_classes)
    peak = 0
    bar = tqdm(range(n), desc=f"eval {dataset.name}", unit="img", disable=not progress, initial=0)
    since_save = 0
    for i in bar:
        name = dataset.refs[i].name
        if name in done_set:
            continue
        try:
            sample = dataset[i]
        except (OSError, ValueError) as err:
            failures.append((name, str(err)))
            bar.write(f"skipped {name}: {err}")
            continue
        image = sample.image if corruption is None else corrupt(sample.image, corruption, severity, seed=seed + i)
        t0 = time.perf_counter()
        predictor.set_image(image)
        pred = predictor.predict(dataset.classes, return_probs=bg_threshold is not None)
        labels = torch.as_tensor(pred.labels)
        if bg_threshold is not None:
            labels = apply_threshold(labels, torch.as_tensor(pred.probs), bg_threshold, 0)
        seconds += time.perf_counter() - t0
        labels = labels.numpy()
        cm.update(labels, sample.label)
        if save_vis and i < save_vis:
            write_png_atomic(out_dir / "vis" / f"{i:05d}_{name}.png",
                             panel(image, sample.label, labels, dataset.class_names, colors, dataset.ignore_index))
        done.append(name)
        done_set.add(name)
        since_save += 1
        if torch.cuda.is_available():
            peak = max(peak, torch.cuda.max_memory_allocated())
        if since_save >= checkpoint_every:
            write_json_atomic(_state_path(out_dir), {"settings_key": key, "confusion": cm.to_dict(), "done": done,
                                                    "seconds": seconds})
            since_save = 0
    write_json_atomic(_state_path(out_dir), {"settings_key": key, "confusion": cm.to_dict(), "done": done,
                                            "seconds": seconds})
    metrics = cm.compute(seen=seen, unseen=unseen) if (seen or unseen) else cm.compute()
    timing = {"seconds": round(seconds, 3), "images_per_second": round(len(done) / seconds, 4) if seconds else None,
              "device": str(getattr(predictor, "device", "cpu")), "host": platform.node(),
              "cuda_peak_bytes": peak or None}
    report = EvalReport(dataset.name, settings.get("split", "val"), len(done), dataset.class_names, metrics, full,
                        timing, failures)
    write_json_atomic(out_dir / "report.json", report.to_dict())
    write_text_atomic(out_dir / "report.md", markdown_report(report))
    return report


def write_text_atomic(path: Path, text: str) -> None:
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def markdown_report(report: EvalReport) -> str:
    m = report.metrics
    s = report.settings
    lines = [f"# {report.dataset} ({report.split}), {report.num_images} images", "",
             f"model: `{s.get('model')}` sha256 `{s.get('model_sha256')}`  ",
             f"protocol: {s.get('protocol')}; corruption: {s.get('corruption') or 'none'}"
             + (f" severity {s.get('severity')}" if s.get("corruption") else ""), "",
             "| mIoU | pAcc | mAcc | fwIoU |" + (" mIoU(S) | mIoU(U) | hIoU |" if "hIoU" in m else ""),
             "|---:|---:|---:|---:|" + ("---:|---:|---:|" if "hIoU" in m else ""),
             f"| {_pct(m['mIoU'])} | {_pct(m['pAcc'])} | {_pct(m['mAcc'])} | {_pct(m['fwIoU'])} |"
             + (f" {_pct(m['mIoU_seen'])} | {_pct(m['mIoU_unseen'])} | {_pct(m['hIoU'])} |" if "hIoU" in m else ""),
             "", "| class | IoU | Acc |", "|---|---:|---:|"]
    for name, iou, acc in zip(report.classes, m["IoU"], m["Acc"]):
        lines.append(f"| {name} | {_pct(iou)} | {_pct(acc)} |")
    t = report.timing
    lines += ["", f"time: {t['seconds']} s, {t['images_per_second']} images/s on {t['device']}", "",
              "settings:", "```json", json.dumps({k: v for k, v in s.items() if k != 'model_sha256'}, indent=1), "```"]
    if report.failures:
        lines += ["", "failed images:"] + [f"- {n}: {e}" for n, e in report.failures]
    return "\n".join(lines) + "\n"
