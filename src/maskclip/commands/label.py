"""`maskclip label`: pseudo-label an image collection (sharded, resumable) for MaskCLIP+ training."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_batch_options, add_export_option, add_maskclip_options, add_model_options, pipeline_from_args

EPILOG = """examples:
  maskclip label images/ --classes context59 --out pseudo/            (a packaged class list by name)
  maskclip label images/ --classes "cat,dog" --shard 0/4 --out pseudo/  (machine 1 of 4; run 1/4, 2/4, 3/4 too)

  maskclip label s3mount/images/ --classes coco_stuff171 --engine ray --address auto --ray-gpus-per-actor 1 \
      --device cuda --out s3mount/pseudo/           (a Ray cluster: one model replica per GPU actor)

writes the same files as `maskclip segment` and an index (index.json, or index.shard<i>of<n>.json with
--shard) listing image, label PNG and JSON of every image whose outputs exist and decode. Re-running
skips finished images (same settings, same unchanged source file). --engine ray writes exactly the files
the local engine writes (the output folder must be shared by the cluster's machines)."""


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
    _engine_options(p)
    add_batch_options(p)
    add_model_options(p)
    add_maskclip_options(p)
    p.set_defaults(func=run)


def _engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine (--engine ray: pip install \"maskclip[ray]\")")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local (this process, default) or ray: Ray Data over a pool of actors, one model replica "
                        "each, on the cluster at --address or a local Ray instance")
    g.add_argument("--address", default=None, help="Ray cluster address (e.g. auto, ray://head:10001); default: "
                                                   "start a local instance")
    g.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")
    g.add_argument("--ray-actors", type=int, default=None, help="actors (default: the cluster's CPUs / CPUs per actor)")
    g.add_argument("--ray-cpus-per-actor", type=float, default=1.0, help="default 1")
    g.add_argument("--ray-gpus-per-actor", type=float, default=0.0, help="GPUs per actor (default 0; 1 with CUDA)")
    g.add_argument("--ray-batch", type=int, default=8, help="images per actor call (default 8)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (this process; with --engine ray: per actor). Default: torch's")


def run(args: argparse.Namespace) -> int:
    from ..annotate import LabelOptions, decodes, label_files
    from ..io.label_index import write_label_index
    from .segment import export_after, plan, prepare, summary

    i, n = args.shard
    if args.engine == "ray":
        from ..ray_engine import label_with_ray

        job = plan(args)  # every check before the cluster starts; the actors load the model
        mine = list(range(i, len(job.files), n))
        report, meta = label_with_ray(args, job, mine)
    else:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        job, predictor, meta = prepare(args)
        mine = list(range(i, len(job.files), n))  # names come from the whole collection, so shards agree
        report = label_files(predictor, [job.files[j] for j in mine], job.layout, job.vocab, meta,
                             LabelOptions(args.heatmaps, not args.no_resume, not args.quiet, args.max_image_pixels,
                                          save_probs=args.save_probs, class_scores=bool(args.export)),
                             names=[job.names[j] for j in mine], pipeline=pipeline_from_args(args))
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
