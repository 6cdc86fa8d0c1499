"""The modified image encoder of every method as an ONNX graph: a deployable artifact, and a CPU backend.

`DenseEncoder` is the encoder pass MaskCLIP runs (`MaskCLIP._encoder_pass`: the method's read-out, keys
for key smoothing, the authors' ViT ops where asked, L2-normalised features) as one module with a fixed
window shape and a free batch size. `export_onnx` writes it as ONNX (`maskclip export-onnx`): ONNX Runtime
runs it without torch. `OnnxEncoder` is the same graph run by ONNX Runtime inside maskclip (`--backend
onnx`), one graph per window shape, exported from the loaded weights in this process on first use: maskclip
never runs an ONNX file it did not write itself in this run. Needs the extra: pip install "maskclip[onnx]".
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .clip.model import CLIP, VisionTransformer
from .dense.config import MaskCLIPConfig
from .dense.features import dense_features
from .dense.successors import authors_vit_ops
from .device import resolve_precision
from .errors import SettingsError
from .io.atomic import write_bytes

OPSET = 18


def require_onnx(runtime: str = "onnx") -> None:
    """A clear line when the extra is missing (before any export); runtime "onnx" or "openvino"."""
    for name in ("onnx", "onnxscript", "onnxruntime" if runtime == "onnx" else "openvino"):
        try:
            __import__(name)
        except ImportError:
            raise SettingsError(f"the {runtime} backend needs the extra: pip install \"maskclip[{runtime}]\" ({name} "
                                "is missing)") from None


def check_backend_settings(backend: str, precision: str | None, device: torch.device) -> str | None:
    """--backend onnx (fp32) or openvino (fp32, or bf16 where `precision` resolves to it) on the CPU: the precision
    it runs and records (None = fp32), or a SettingsError."""
    require_onnx(backend)
    if device.type != "cpu":
        raise SettingsError(f"--backend {backend} runs on the CPU; the model is on {device} (use --device cpu, or "
                            "the torch backend on a GPU)")
    allowed = (None, "auto", "fp32") + (("bf16",) if backend == "openvino" else ())
    if precision not in allowed:
        raise SettingsError(f"--backend {backend} runs {'fp32 or bf16' if backend == 'openvino' else 'fp32'}; "
                            f"--precision {precision} needs the torch backend")
    resolved = resolve_precision(precision, device)
    return resolved if backend == "openvino" and resolved == "bf16" else None


class DenseEncoder(nn.Module):
    """Normalised windows [B, 3, H, W] -> L2-normalised features [B, C, h, w] (and keys, with KS): the
    encoder pass of `MaskCLIP` for `config`'s method, in fp32."""

    def __init__(self, model: CLIP, config: MaskCLIPConfig):
        super().__init__()
        self.model, self.config = model.eval(), config

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cfg = self.config
        out = dense_features(self.model, x, cfg.readout, cfg.ks, cfg.output_stride, cfg.pos_embed, cfg.naclip_sigma)
        feats = F.normalize(out.feats.float(), dim=1)
        return (feats, out.keys.float()) if cfg.ks else (feats,)


def _authors_ops(model: CLIP, config: MaskCLIPConfig):
    is_vit = isinstance(model.visual, VisionTransformer)
    return authors_vit_ops(model.visual, is_vit and config.vit_ops == "authors")


def onnx_bytes(model: CLIP, config: MaskCLIPConfig, window: tuple[int, int]) -> bytes:
    """The ONNX graph (opset 18) of the encoder pass on windows of `window` pixels, any batch size."""
    require_onnx()
    enc = DenseEncoder(model, config)
    x = torch.zeros(2, 3, *window, device=next(model.parameters()).device)
    names = ["feats", "keys"] if config.ks else ["feats"]
    buf = io.BytesIO()
    with torch.no_grad(), _authors_ops(model, config), warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(enc, (x,), dynamo=True, input_names=["windows"], output_names=names,
                                 dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
                                 opset_version=OPSET, verbose=False)
        prog.optimize()
        prog.save(buf)
    return buf.getvalue()


def export_onnx(model: CLIP, config: MaskCLIPConfig, window: tuple[int, int], out: Path) -> Path:
    """Write the encoder graph to `out` (atomically; refused where a file exists: nothing is overwritten)."""
    out = Path(out)
    if out.exists():
        raise SettingsError(f"{out} exists; choose another --out (an existing file is never overwritten)")
    write_bytes(out, onnx_bytes(model, config, window))
    return out


class OnnxEncoder:
    """`MaskCLIP`'s encoder pass run by ONNX Runtime, or by OpenVINO compiling the same graph (`runtime`; bf16
    with precision "bf16"): one compiled graph per window shape, exported here from the model in memory (never
    read from a file)."""

    def __init__(self, model: CLIP, config: MaskCLIPConfig, threads: int | None = None, runtime: str = "onnx",
                 precision: str | None = None):
        require_onnx(runtime)
        self.model, self.config, self.runtime, self.precision = model, config, runtime, precision
        self.threads = threads or torch.get_num_threads()
        self._compiled: dict[tuple[int, int], Callable[[np.ndarray], list[np.ndarray]]] = {}

    def compiled(self, window: tuple[int, int]) -> Callable[[np.ndarray], list[np.ndarray]]:
        if window not in self._compiled:
            graph = onnx_bytes(self.model, self.config, window)
            compile_graph = _onnxruntime if self.runtime == "onnx" else _openvino
            self._compiled[window] = compile_graph(graph, self.threads, self.precision)
        return self._compiled[window]

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        outs = self.compiled(tuple(batch.shape[-2:]))(np.ascontiguousarray(batch.detach().float().cpu().numpy()))
        feats = torch.from_numpy(np.asarray(outs[0], dtype=np.float32)).to(batch.device)
        keys = torch.from_numpy(np.asarray(outs[1], dtype=np.float32)).to(batch.device) if len(outs) > 1 else None
        return feats, keys


def _onnxruntime(graph: bytes, threads: int, precision: str | None) -> Callable[[np.ndarray], list[np.ndarray]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"windows": x})


def _openvino(graph: bytes, threads: int, precision: str | None) -> Callable[[np.ndarray], list[np.ndarray]]:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(graph, b""), "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "INFERENCE_NUM_THREADS": threads})

    def run(x: np.ndarray) -> list[np.ndarray]:
        out = compiled(x)
        return [out[i] for i in range(len(compiled.outputs))]

    return run


__all__ = ["DenseEncoder", "OnnxEncoder", "check_backend_settings", "export_onnx", "onnx_bytes", "require_onnx"]
