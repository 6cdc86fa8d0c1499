"""The evaluation report: strict JSON (null where a value is undefined) and a Markdown table that says why."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..io.atomic import write_json, write_text

UNDEFINED_NOTE = ("'-' (null in report.json): undefined on these images. IoU: the class is in neither the ground "
                  "truth nor the predictions (left out of mIoU, as mmseg); Acc: the class is not in the ground truth.")


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


def pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals; '-' where it is undefined (NaN or None)."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _undefined(m: dict) -> bool:
    values = [m["mIoU"], *m["IoU"], *m["Acc"]]
    return any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values)


def markdown_report(report: EvalReport) -> str:
    m = report.metrics
    s = report.settings
    zs = "hIoU" in m
    lines = [f"# {report.dataset} ({report.split}), {report.num_images} images", "",
             f"model: `{s.get('model')}` sha256 `{s.get('model_sha256')}`  ",
             f"protocol: {s.get('protocol')}; corruption: {s.get('corruption') or 'none'}"
             + (f" severity {s.get('severity')}" if s.get("corruption") else ""), "",
             "| mIoU | pAcc | mAcc | fwIoU |" + (" mIoU(S) | mIoU(U) | hIoU |" if zs else ""),
             "|---:|---:|---:|---:|" + ("---:|---:|---:|" if zs else ""),
             f"| {pct(m['mIoU'])} | {pct(m['pAcc'])} | {pct(m['mAcc'])} | {pct(m['fwIoU'])} |"
             + (f" {pct(m['mIoU_seen'])} | {pct(m['mIoU_unseen'])} | {pct(m['hIoU'])} |" if zs else ""),
             "", "| class | IoU | Acc |", "|---|---:|---:|"]
    for name, iou, acc in zip(report.classes, m["IoU"], m["Acc"]):
        lines.append(f"| {name} | {pct(iou)} | {pct(acc)} |")
    if _undefined(m):
        lines += ["", UNDEFINED_NOTE]
    t = report.timing
    lines += ["", f"time: {t['seconds']} s, {t['images_per_second']} images/s on {t['device']}", "",
              "settings:", "```json", json.dumps({k: v for k, v in s.items() if k != 'model_sha256'}, indent=1), "```"]
    if report.failures:
        lines += ["", "failed images:"] + [f"- {n}: {e}" for n, e in report.failures]
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, report: EvalReport) -> None:
    """report.json, report.md and per_class_iou.png (a bar per class) beside them."""
    from ..charts import bar_chart
    from ..data.image_io import write_png_atomic

    write_json(out_dir / "report.json", report.to_dict())
    write_text(out_dir / "report.md", markdown_report(report))
    m = report.metrics
    title = (f"{report.dataset} ({report.num_images} images): per-class IoU (%), mIoU {100 * m['mIoU']:.1f}"
             if m.get("mIoU") is not None else f"{report.dataset}: per-class IoU (%)")
    write_png_atomic(out_dir / "per_class_iou.png", bar_chart(report.classes, m["IoU"], title))


__all__ = ["EvalReport", "UNDEFINED_NOTE", "markdown_report", "pct", "write_report"]
