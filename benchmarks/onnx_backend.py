"""The exported encoder against torch, in the same run: ms per window and the share of each precision's GEMM peak.

    python benchmarks/onnx_backend.py            # ViT-B/16 (random weights), 224 windows, batches of 16
    python benchmarks/onnx_backend.py --quick    # batches of 4, fewer repeats

For each method's modified encoder (maskclip, and the successors' last blocks): torch fp32, torch at the
precision `auto` picks here (bf16 on CPUs with native bf16), ONNX Runtime fp32 running the graph
`maskclip export-onnx` writes and, when the `openvino` package is installed, OpenVINO compiling that same
graph (fp32, and bf16 where the CPU has it). The ONNX outputs are checked against torch fp32 (relative 1e-4)
before they are timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from maskclip.clip.weights import random_weights  # noqa: E402
from maskclip.dense import MaskCLIPConfig  # noqa: E402
from maskclip.dense.engine import autocast  # noqa: E402
from maskclip.dense.methods import method_preset  # noqa: E402
from maskclip.device import resolve_precision  # noqa: E402
from maskclip.onnx_backend import DenseEncoder, OnnxEncoder, onnx_bytes  # noqa: E402
from throughput import gemm_peak, vit_flops  # noqa: E402


def timed(fn, x, repeats: int) -> float:
    fn(x)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - t0) / repeats


def openvino_runner(graph: bytes, precision: str, threads: int):
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    model = core.read_model(graph, b"")
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                 "INFERENCE_NUM_THREADS": threads})
    return lambda x: compiled(x.numpy())[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="batches of 4, 2 repeats")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch, repeats = (4, 2) if args.quick else (16, 3)
    clip, _ = random_weights("ViT-B/16")
    x = torch.randn(batch, 3, 224, 224)
    auto = resolve_precision("auto", torch.device("cpu")) or "fp32"
    peaks = {d: gemm_peak(d, args.threads) for d in ("fp32", "bf16")}
    flops = batch * vit_flops(197)
    print(f"ViT-B/16, {batch} windows of 224 per call, {args.threads} threads; GEMM peak fp32 "
          f"{peaks['fp32'] / 1e9:.0f}, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s; auto precision here: {auto}")
    rows = {}
    for method in ("maskclip", "sclip", "clearclip", "naclip"):
        cfg = replace(method_preset(method).config() if method != "maskclip" else MaskCLIPConfig(), dtype="fp32")
        enc = DenseEncoder(clip, cfg)
        ref = enc(x)[0]
        ort_enc = OnnxEncoder(clip, cfg, threads=args.threads)
        err = float((ort_enc(x)[0] - ref).abs().max() / ref.abs().max())
        with torch.no_grad():
            r = {"torch fp32": timed(enc, x, repeats)}
            if auto != "fp32":
                def at_auto(z):
                    with autocast(torch.device("cpu"), auto):
                        return enc(z)
                r[f"torch {auto}"] = timed(at_auto, x, repeats)
        r["onnxruntime fp32"] = timed(ort_enc, x, repeats)
        graph = onnx_bytes(clip, cfg, (224, 224))
        for prec in ("f32", "bf16"):
            run = openvino_runner(graph, prec, args.threads)
            if run is not None:
                r[f"openvino {prec.replace('f32', 'fp32')}"] = timed(run, x, repeats)
        rows[method] = {"onnx_rel_err": err, "ms_per_window": {k: 1000 * v / batch for k, v in r.items()}}
        cells = ", ".join(f"{k} {1000 * v / batch:.0f} ms ({100 * flops / v / peaks[k.split()[-1]]:.0f}%)"
                          for k, v in r.items())
        best = min(r, key=r.get)
        print(f"{method:>9}: {cells}; ONNX vs torch fp32: rel. error {err:.1e}; fastest: {best}")
    if args.json:
        args.json.write_text(json.dumps({"batch": batch, "peaks": peaks, "methods": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
