"""`maskclip robustness`: mIoU under ImageNet-C corruptions, one table like the supplement's Table 1."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .eval import add_eval_options, prepare

EPILOG = """examples:
  maskclip robustness --dataset context59 --root VOCdevkit --model ViT-B/16
  maskclip robustness --dataset camvid --root camvid --corruptions gaussian_noise,jpeg_compression --severities 1,5

each (corruption, severity) is evaluated into OUT/<corruption>-<severity>/ (resumable); the table goes to
OUT/robustness.md and OUT/robustness.json."""


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    from ..data.datasets import DATASETS

    p = sub.add_parser("robustness", help="sweep ImageNet-C corruptions and severities into one mIoU table",
                       description="Evaluate clean and corrupted copies of a benchmark (supplement Table 1).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_options(p, DATASETS)
    p.add_argument("--corruptions", type=_names, default=None,
                   help="comma-separated corruptions (default: the paper's eight)")
    p.add_argument("--severities", type=lambda t: [int(v) for v in _names(t)], default=[1, 2, 3, 4, 5],
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
    from ..annotate import write_json_atomic
    from ..eval.corruptions import CORRUPTIONS
    from ..eval.runner import evaluate, write_text_atomic

    names = args.corruptions or list(CORRUPTIONS)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise SystemExit(f"error: unknown corruptions {unknown}; choose from {', '.join(CORRUPTIONS)}")
    if any(not 1 <= s <= 5 for s in args.severities):
        raise SystemExit("error: --severities must lie in 1..5")
    dataset, predictor, settings, bg, unseen = prepare(args)
    out = args.out or Path("runs") / "robustness" / f"{dataset.name}-{args.protocol}"
    common = dict(bg_threshold=bg, seed=args.seed, limit=args.limit, unseen=unseen, progress=not args.quiet)
    clean = evaluate(predictor, dataset, out / "clean", settings, save_vis=args.save_vis, **common)
    results: dict[str, dict[int, float]] = {"none": {0: clean.metrics["mIoU"]}}
    for name in names:
        results[name] = {}
        for sev in args.severities:
            r = evaluate(predictor, dataset, out / f"{name}-{sev}", settings, corruption=name, severity=sev,
                         **common)
            results[name][sev] = r.metrics["mIoU"]
    text = (f"# Robustness: {dataset.name}, {clean.num_images} images, model `{settings['model']}`, "
            f"protocol {settings['protocol']}\n\nmIoU (%)\n\n" + table(results, args.severities))
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "robustness.md", text)
    write_json_atomic(out / "robustness.json", {"settings": settings, "severities": args.severities,
                                                "mIoU": {k: {str(s): v for s, v in row.items()}
                                                         for k, row in results.items()}})
    print(text)
    return 0
