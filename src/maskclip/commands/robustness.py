"""`maskclip robustness`: mIoU under ImageNet-C corruptions, one table like the supplement's Table 1."""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

from .common import pipeline_from_args
from .eval import add_eval_options, prepare

EPILOG = """examples:
  maskclip robustness --dataset context59 --root VOCdevkit --model ViT-B/16
  maskclip robustness --dataset camvid --root camvid --corruptions gaussian_noise,jpeg_compression --severities 1,5

each (corruption, severity) is evaluated into OUT/<corruption>-<severity>/ (resumable); the table goes to
OUT/robustness.md and OUT/robustness.json."""


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _severities(text: str) -> list[int]:
    try:
        return [int(v) for v in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers 1..5, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    from ..data.datasets import DATASETS

    p = sub.add_parser("robustness", help="sweep ImageNet-C corruptions and severities into one mIoU table",
                       description="Evaluate clean and corrupted copies of a benchmark (supplement Table 1).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_options(p, DATASETS)
    p.add_argument("--corruptions", type=_names, default=None,
                   help="comma-separated corruptions (default: the paper's eight)")
    p.add_argument("--severities", type=_severities, default=[1, 2, 3, 4, 5],
                   help="comma-separated severities 1-5 (default 1,2,3,4,5)")
    p.set_defaults(func=run)


def table(results: dict[str, dict[int, float]], severities: list[int]) -> str:
    head = "| corruption | " + " | ".join(f"severity {s}" for s in severities) + " |"
    lines = [head, "|---|" + "---:|" * len(severities)]
    for name, row in results.items():
        cells = []
        for s in severities:
            v = row.get(s, row.get(0))
            cells.append("-" if v is None or math.isnan(v) else f"{100 * v:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from ..charts import line_chart
    from ..data.image_io import write_png_atomic
    from ..errors import SettingsError
    from ..eval.corruptions import CORRUPTIONS
    from ..eval.loop import Corruption
    from ..eval.runner import EvalJob, evaluate
    from ..io.atomic import write_json, write_text

    names = args.corruptions or list(CORRUPTIONS)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown or not names:
        raise SettingsError(f"--corruptions: unknown {unknown or 'empty list'}; choose from {', '.join(CORRUPTIONS)}")
    if not args.severities or any(not 1 <= s <= 5 for s in args.severities):
        raise SettingsError("--severities must be integers in 1..5, e.g. 1,3,5")
    dataset, predictor, settings, bg, unseen, proto, masks_dir = prepare(args)
    out = args.out or Path("runs") / "robustness" / f"{dataset.name}-{settings['protocol']}"
    job = EvalJob(settings, bg, limit=args.limit, unseen=unseen, progress=not args.quiet,
                  classes=proto.classes if proto else None, display=proto.display if proto else None,
                  masks_dir=masks_dir, pipeline=pipeline_from_args(args))
    clean = evaluate(predictor, dataset, out / "clean", replace(job, save_vis=args.save_vis))
    results: dict[str, dict[int, float]] = {"none": {0: clean.metrics["mIoU"]}}
    for name in names:
        results[name] = {}
        for sev in args.severities:
            corrupted = replace(job, corruption=Corruption(name, sev, args.seed), save_vis=args.save_vis)
            r = evaluate(predictor, dataset, out / f"{name}-{sev}", corrupted)
            results[name][sev] = r.metrics["mIoU"]
    text = (f"# Robustness: {dataset.name}, {clean.num_images} images, model `{settings['model']}`, "
            f"protocol {settings['protocol']}\n\nmIoU (%)\n\n" + table(results, args.severities))
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "robustness.md", text)
    write_png_atomic(out / "robustness.png", line_chart(
        {k: v for k, v in results.items() if k != "none"}, f"{dataset.name}: mIoU under corruption "
        f"(clean {100 * clean.metrics['mIoU']:.1f})", reference=clean.metrics["mIoU"]))
    write_json(out / "robustness.json", {"settings": settings, "severities": args.severities,
                                                "mIoU": {k: {str(s): v for s, v in row.items()}
                                                         for k, row in results.items()}})
    print(text)
    return 0
