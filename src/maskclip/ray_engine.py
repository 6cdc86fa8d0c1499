"""`maskclip label --engine ray`: the same labelling on a Ray cluster (an optional extra: maskclip[ray]).

Ray Data streams the image indices through a pool of actors; each actor builds the predictor once (a GPU
per actor when asked) and runs `annotate.label_files` on its batch, so every output file is the one the
local engine writes, at the same path (the cluster shares the output folder), and a re-run skips what is
finished. The driver gathers what each item did and writes the label index as the local engine does.
MaskCLIP+ training across machines stays on torchrun.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace

from .annotate import BatchReport


class _Labeller:
    """A Ray actor: the driver's checked job -> the predictor, once; a batch of image indices -> labelled."""

    def __init__(self, args: argparse.Namespace, job):
        import torch

        from .commands.segment import load

        if args.threads:
            torch.set_num_threads(args.threads)
        self.args, self.job = args, job  # the inputs were scanned and checked once, by the driver
        self.predictor, self.meta = load(args, job)

    def __call__(self, batch: dict) -> dict:
        from .annotate import LabelOptions, label_files
        from .commands.common import pipeline_from_args

        a, job = self.args, self.job
        idx = [int(i) for i in batch["index"]]
        report = label_files(self.predictor, [job.files[i] for i in idx], job.layout, job.vocab, self.meta,
                             LabelOptions(a.heatmaps, not a.no_resume, False, a.max_image_pixels,
                                          save_probs=a.save_probs, class_scores=bool(a.export)),
                             names=[job.names[i] for i in idx],
                             # Ray streams the inputs; no worker processes forked inside an actor
                             pipeline=replace(pipeline_from_args(a), workers=0))
        failed = dict(report.failed)
        written = set(report.written)
        status = ["failed" if str(job.files[i]) in failed else "written" if str(job.files[i]) in written
                  else "skipped" for i in idx]
        return {"index": idx, "status": status, "error": [failed.get(str(job.files[i]), "") for i in idx],
                "meta": [json.dumps(self.meta)] * len(idx)}


def label_with_ray(args: argparse.Namespace, job, indices: Sequence[int]) -> tuple[BatchReport, dict]:
    """Label `indices` of the checked `job` (commands.segment.plan) on Ray (`args.address`, else a local
    instance); (report, meta)."""
    try:
        import ray
        import ray.data
    except ImportError:
        from .errors import SettingsError

        raise SettingsError('--engine ray needs Ray: pip install "maskclip[ray]"') from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False,
                 **({} if args.address else {"num_cpus": args.ray_cpus}))
    try:
        actors = args.ray_actors or max(1, int(ray.cluster_resources().get("CPU", 1) // args.ray_cpus_per_actor))
        ds = ray.data.from_items([{"index": int(i)} for i in indices]).map_batches(
            _Labeller, fn_constructor_args=(args, job), batch_size=args.ray_batch, concurrency=actors,
            num_cpus=args.ray_cpus_per_actor, num_gpus=args.ray_gpus_per_actor)
        rows = sorted(ds.take_all(), key=lambda r: r["index"])
    finally:
        if started:
            ray.shutdown()
    report, meta = BatchReport(), {}
    for r in rows:
        path, name = str(job.files[r["index"]]), job.names[r["index"]]
        meta = meta or json.loads(r["meta"])
        if r["status"] == "failed":
            report.failed.append((path, r["error"]))
            continue
        (report.written if r["status"] == "written" else report.skipped).append(path)
        report.done_names.append(name)
    return report, meta


__all__ = ["label_with_ray"]
