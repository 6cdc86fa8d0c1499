"""`maskclip label`: pseudo-label an image collection (sharded, resumable) for MaskCLIP+ training."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_batch_options, add_export_option, add_maskclip_options, add_model_options

EPILOG = """examples:
  maskclip label images/ --classes context59 --out pseudo/            (a packaged class list by name)
  maskclip label images/ --classes "cat,dog" --shard 0/4 --out pseudo/  (machine 1 of 4; run 1/4, 2/4, 3/4 too)

writes the same files as `maskclip segment` and an index (index.json, or index.shard<i>of<n>.json with
--shard) listing image, label PNG and JSON of every image whose outputs exist and decode. Re-running
skips finished images (same settings, same unchanged source file)."""


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard expects i/n like 0/4, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= i < n")
    return i, n


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label", help="pseudo-label an image collection with MaskCLIP (sharded, resumable)",
                       description="Batch MaskCLIP labelling of an image collection, e.g. to train MaskCLIP+ on.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="DIRS_OR_IMAGES")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="i/n",
                   help="process every n-th image starting at i (sorted order), to split work across machines")
    add_export_option(p)
    add_batch_options(p)
    add_model_options(p)
    add_maskclip_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..annotate import LabelOptions, decodes, label_files
    from ..io.label_index import write_label_index
    from .segment import export_after, prepare, summary

    job, predictor, meta = prepare(args)
    i, n = args.shard
    mine = list(range(i, len(job.files), n))  # names come from the whole collection, so shards agree
    report = label_files(predictor, [job.files[j] for j in mine], job.layout, job.vocab, meta,
                         LabelOptions(args.heatmaps, not args.no_resume, not args.quiet, args.max_image_pixels,
                                      save_probs=args.save_probs, class_scores=bool(args.export)),
                         names=[job.names[j] for j in mine])
    done = set(report.done_names)
    lay = job.layout
    entries = [{"image": str(job.files[j]), "label": lay.relative(lay.label(job.names[j])),
                "json": lay.relative(lay.sidecar(job.names[j]))}
               for j in mine if job.names[j] in done and decodes(lay.label(job.names[j]))]
    index = write_label_index(lay.root, entries, job.vocab.output_names, (i, n), len(job.files), meta)
    print(summary(report, job) + f"\nindex: {index} ({len(entries)} images)",
          file=sys.stderr if report.failed else sys.stdout)
    export_after(args, job)
    return 1 if report.failed else 0
