"""The text side at vocabulary scale: the per-name cache, and the 847-class classifier in both precisions.

    python benchmarks/text_side.py            # cache rows + ADE-847 x 80 templates, fp32 and bf16 (~8 min here)
    python benchmarks/text_side.py --quick    # cache rows + the first 64 ADE-847 classes

Random ViT-B/16 text encoder (timings depend only on the architecture). Rows:
  first query   a new 20-class vocabulary, 85 templates, embedded (cold cache)
  re-query      the same vocabulary from a fresh predictor's view: read from the on-disk per-name cache
  subset        10 of those names (a subset re-embeds nothing)
  superset      those 20 plus 4 new names (only the 4 are embedded)
  ade847        ADE20K-full's classes (every synonym a name) x 80 templates, at fp32 and at the precision
                `--precision auto` picks here, with the cosine between the two embeddings
Target (issue #16): re-query at least 100x faster than the first query.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    from maskclip.clip.weights import random_weights
    from maskclip.data.classes import load_class_names
    from maskclip.dense.text import build_text_classifier
    from maskclip.device import resolve_precision
    from maskclip.io.cache import TextCache

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the first 64 ADE-847 classes only")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--ade847-fp32", choices=("all", "quick", "none"), default="all",
                   help="the fp32 row of ADE-847: every class (default), the first 64 (quick) or none")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = random_weights("ViT-B/16")
    auto = resolve_precision("auto", torch.device("cpu"))
    root = Path(tempfile.mkdtemp(prefix="maskclip-text-"))
    names = [c[0] for c in load_class_names("ade150")][:24]
    vocab = names[:20]

    def cache() -> TextCache:  # a fresh object each time: nothing kept in memory between queries
        return TextCache("benchmark-random-vit-b16", root=root, precision=auto)

    t_first, _ = timed(lambda: build_text_classifier(model, vocab, "85", cache(), auto))
    t_again, _ = timed(lambda: build_text_classifier(model, vocab, "85", cache(), auto))
    t_sub, _ = timed(lambda: build_text_classifier(model, vocab[:10], "85", cache(), auto))
    t_sup, _ = timed(lambda: build_text_classifier(model, names, "85", cache(), auto))
    print(f"text side, {auto or 'fp32'}, 85 templates, {args.threads} threads")
    print(f"  first query  20 names: {t_first:.2f} s")
    print(f"  re-query     20 names: {1000 * t_again:.1f} ms ({t_first / t_again:.0f}x; target 100x: "
          f"{'met' if t_first / t_again >= 100 else 'NOT met'})")
    print(f"  subset       10 names: {1000 * t_sub:.1f} ms ({t_first / t_sub:.0f}x)")
    print(f"  superset     24 names (4 new): {t_sup:.2f} s")
    from maskclip.vocab import Vocabulary

    classes = Vocabulary.of(load_class_names("ade847")[: 64 if args.quick else None], allow_shared=True)
    prompts = len(classes.names) * 80
    embs = {}
    for prec in dict.fromkeys([None, auto]):
        if prec is None and args.ade847_fp32 != "all" and auto is not None:
            if args.ade847_fp32 == "none":
                continue
            few = Vocabulary.of(classes.classes[:64], allow_shared=True)
            t, _ = timed(lambda: build_text_classifier(model, few, "80", None, None))
            print(f"  ade847 first 64 classes x 80 templates, fp32: {t:.1f} s "
                  f"({len(few.names) * 80 / t:.0f} prompts/s)")
            continue
        t, clf = timed(lambda: build_text_classifier(model, classes, "80", None, prec))
        embs[prec] = clf.embeddings
        print(f"  ade847 {len(classes.classes)} classes ({len(classes.names)} names) x 80 templates ({prompts} "
              f"prompts), {prec or 'fp32'}: {t:.1f} s "
              f"({prompts / t:.0f} prompts/s)")
    if len(embs) == 2 and auto is not None:
        cos = (embs[None] * embs[auto]).sum(-1)
        print(f"  {auto} vs fp32 embeddings: cosine min {float(cos.min()):.5f}, mean {float(cos.mean()):.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
