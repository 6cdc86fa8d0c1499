"""The pipeline's options against one image at a time, in the same process: the measurement behind the defaults.

    python benchmarks/pipeline_options.py                      # both protocols, the variants below
    python benchmarks/pipeline_options.py --protocol slide --variants 0,1,0 2,4,4

Random ViT-B/16, 4 CamVid + 4 COCO images (toy scenes without ../shared/data), the text classifier built
before the clock starts, the defaults' precision. A variant is WORKERS,BATCH_IMAGES,PENDING_WRITES:
  0,1,0  one image at a time, written inline (the reference)
  0,1,4  background writes
  0,4,4  batches of 4 images
  2,4,4  and 2 decoding workers
  1,1,4  1 decoding worker, one image a batch
The labels are the same for every variant (tests/test_pipeline.py); only images/s differ.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from maskclip.annotate import LabelOptions, label_files  # noqa: E402
from maskclip.clip.weights import random_weights  # noqa: E402
from maskclip.dense import MaskCLIPConfig, MaskCLIPPredictor  # noqa: E402
from maskclip.io.layout import OutputLayout  # noqa: E402
from maskclip.pipeline import PipelineOptions  # noqa: E402
from maskclip.vocab import Vocabulary  # noqa: E402
from throughput import CAMVID, PROTOCOLS, images  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=("whole", "slide", "both"), default="both")
    p.add_argument("--variants", nargs="+", default=["0,1,0", "0,1,4", "0,4,4", "2,4,4", "1,1,4"])
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = images(4, Path(tempfile.mkdtemp(prefix="maskclip-pipeline-")))
    clip, info = random_weights("ViT-B/16")
    vocab = Vocabulary.of([c.strip() for c in CAMVID.split(",")])
    for protocol in ("whole", "slide") if args.protocol == "both" else (args.protocol,):
        pred = MaskCLIPPredictor(clip, templates="85", config=MaskCLIPConfig(**PROTOCOLS[protocol]), weights=info)
        pred.classifier(vocab)
        base = None
        for spec in args.variants:
            workers, batch, pending = map(int, spec.split(","))
            out = Path(tempfile.mkdtemp(prefix="maskclip-pipeline-"))
            t0 = time.perf_counter()
            label_files(pred, paths, OutputLayout(out), vocab, {"model": info.name},
                        LabelOptions(progress=False, resume=False),
                        pipeline=PipelineOptions(workers=workers, batch_images=batch, pending_writes=pending))
            rate = len(paths) / (time.perf_counter() - t0)
            base = base or rate
            print(f"{protocol:>5} workers {workers} batch {batch} pending writes {pending}: {rate:.3f} img/s "
                  f"({rate / base:.2f}x the first variant)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
