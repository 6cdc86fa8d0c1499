"""The modified image encoder of every method as an ONNX graph: a deployable artifact, and a CPU backend.

`DenseEncoder` is the encoder pass MaskCLIP runs (`MaskCLIP._encoder_pass`: the method's read-out, keys
for key smoothing, the authors' ViT ops where asked, L2-normalised features) as one module. `onnx_bytes`
exports it with a free batch size and, unless a window is fixed, free height and width (a ViT's in
multiples of its patch size). `export_onnx` writes it (`maskclip export-onnx`): ONNX Runtime or OpenVINO run
it without torch. `OnnxEncoder` runs that graph inside maskclip (`--backend onnx|openvino`), exported from
the loaded weights in this process on first use: maskclip never runs an ONNX file it did not write itself
in this run. Needs the extra: pip install "maskclip[onnx]" (or "maskclip[openvino]").
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .clip.model import CLIP, VisionTransformer
from .dense.config import MaskCLIPConfig
from .dense.features import DenseEncoder
from .dense.successors import authors_vit_ops
from .device import resolve_precision
from .errors import SettingsError
from .io.atomic import write_bytes

OPSET = 18
KEEP_COMPILED = 4  # graphs kept for the "dino" rule's window sizes (each holds the weights; oldest go first)


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


def _authors_ops(model: CLIP, config: MaskCLIPConfig):
    is_vit = isinstance(model.visual, VisionTransformer)
    return authors_vit_ops(model.visual, is_vit and config.vit_ops == "authors")


def _example_and_dims(model: CLIP, window: tuple[int, int] | None) -> tuple[torch.Tensor, dict]:
    """An example batch and the free dimensions: the batch always; height and width too without a `window`
    (a ViT's in multiples of its patch size: its patch embedding floors, `OnnxEncoder` crops to them)."""
    device = next(model.parameters()).device
    dims = {0: torch.export.Dim("batch", min=1, max=4096)}
    if window is not None:
        return torch.zeros(2, 3, *window, device=device), dims
    if isinstance(model.visual, VisionTransformer):
        p = model.visual.patch_size
        dims |= {2: p * torch.export.Dim("grid_h", min=1, max=512), 3: p * torch.export.Dim("grid_w", min=1, max=512)}
        h = max(2, model.visual.input_resolution // p) * p
        return torch.zeros(2, 3, h, h + p, device=device), dims
    dims |= {2: torch.export.Dim("height", min=32, max=8192), 3: torch.export.Dim("width", min=32, max=8192)}
    h = model.visual.input_resolution
    return torch.zeros(2, 3, h, h + 32, device=device), dims


def any_size(config: MaskCLIPConfig) -> bool:
    """Whether one graph can take every window size: not with the successors' "dino" position rule, whose
    interpolation scale factor the exporter fixes at the example's size (tests/test_onnx_backend.py)."""
    return config.pos_embed == "resize"


def onnx_bytes(model: CLIP, config: MaskCLIPConfig, window: tuple[int, int] | None = None) -> bytes:
    """The ONNX graph (opset 18) of the encoder pass on windows of `window` pixels, or of any size (None;
    `any_size` configs only), any batch size."""
    require_onnx()
    if window is None and not any_size(config):
        raise SettingsError("--pos-embed dino (SCLIP, ClearCLIP, NACLIP): the graph takes one window size; give "
                            "--window PX (e.g. the --crop of the slide protocol, 224)")
    enc = DenseEncoder(model, config)
    x, dims = _example_and_dims(model, window)
    names = ["feats", "keys"] if config.ks else ["feats"]
    buf = io.BytesIO()
    with torch.no_grad(), _authors_ops(model, config), warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(enc, (x,), dynamo=True, input_names=["windows"], output_names=names,
                                 dynamic_shapes={"x": dims}, opset_version=OPSET, verbose=False)
        prog.optimize()
        prog.save(buf)
    return buf.getvalue()


def export_onnx(model: CLIP, config: MaskCLIPConfig, window: tuple[int, int] | None, out: Path) -> Path:
    """Write the encoder graph to `out` (atomically; refused where a file exists: nothing is overwritten)."""
    out = Path(out)
    if out.exists():
        raise SettingsError(f"{out} exists; choose another --out (an existing file is never overwritten)")
    write_bytes(out, onnx_bytes(model, config, window))
    return out


class OnnxEncoder:
    """`MaskCLIP`'s encoder pass run by ONNX Runtime, or by OpenVINO compiling the same graph (`runtime`; bf16
    with precision "bf16"). One graph of any window size (one per size with the "dino" position rule),
    exported here from the model in memory on first use (never read from a file) and compiled once: a
    compile per image size cost more than it saved on whole images of many sizes."""

    def __init__(self, model: CLIP, config: MaskCLIPConfig, threads: int | None = None, runtime: str = "onnx",
                 precision: str | None = None):
        require_onnx(runtime)
        self.model, self.config, self.runtime, self.precision = model, config, runtime, precision
        self.threads = threads or torch.get_num_threads()
        self.patch = model.visual.patch_size if isinstance(model.visual, VisionTransformer) else 1
        self._graph: bytes | None = None
        self._compiled: dict[tuple[int, int], Callable[[np.ndarray], list[np.ndarray]]] = {}

    def compiled(self, window: tuple[int, int]) -> Callable[[np.ndarray], list[np.ndarray]]:
        """The runnable graph for `window`: one of any size where `any_size`, else one exported per size."""
        dynamic = any_size(self.config)
        key = (0, 0) if dynamic else window
        if key in self._compiled:
            self._compiled[key] = self._compiled.pop(key)  # most recently used last
        else:
            while len(self._compiled) >= KEEP_COMPILED:  # each holds its own copy of the weights
                self._compiled.pop(next(iter(self._compiled)))
            graph = self._graph if dynamic and self._graph is not None else onnx_bytes(
                self.model, self.config, None if dynamic else window)
            self._graph = graph if dynamic else None
            if self.runtime == "onnx":
                self._compiled[key] = _onnxruntime(graph, self.threads)
            else:
                self._compiled[key] = _openvino(graph, self.threads, self.precision)
        return self._compiled[key]

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, w = (d - d % self.patch for d in batch.shape[-2:])  # a ViT's patch embedding ignores the rest
        x = np.ascontiguousarray(batch[..., :h, :w].detach().float().cpu().numpy())
        outs = self.compiled((h, w))(x)
        feats = torch.from_numpy(np.asarray(outs[0], dtype=np.float32)).to(batch.device)
        keys = torch.from_numpy(np.asarray(outs[1], dtype=np.float32)).to(batch.device) if len(outs) > 1 else None
        return feats, keys


def _onnxruntime(graph: bytes, threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
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
