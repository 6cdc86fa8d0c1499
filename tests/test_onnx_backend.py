"""The ONNX backend: every method's modified encoder as ONNX, equal to torch (fp32, relative 1e-4)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from maskclip.cli import main  # noqa: E402
from maskclip.dense import MaskCLIPConfig, MaskCLIPPredictor  # noqa: E402
from maskclip.dense.methods import method_preset  # noqa: E402
from maskclip.errors import SettingsError  # noqa: E402
from maskclip.onnx_backend import DenseEncoder, OnnxEncoder  # noqa: E402

VIT_CASES = {
    "maskclip": MaskCLIPConfig(ks=True),
    "value-only": MaskCLIPConfig(readout="value-only"),
    "baseline": MaskCLIPConfig(readout="baseline"),
    "maskclip-authors-ops": MaskCLIPConfig(vit_ops="authors", ks=True),
    "sclip": method_preset("sclip").config(),
    "clearclip": method_preset("clearclip").config(),
    "naclip": method_preset("naclip").config(),
    "dino-pos-embed": MaskCLIPConfig(pos_embed="dino"),
}
RN_CASES = {
    "maskclip": MaskCLIPConfig(ks=True),
    "baseline": MaskCLIPConfig(readout="baseline"),
    "stride16": MaskCLIPConfig(output_stride=16, ks=True),
}


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def check(model, cfg: MaskCLIPConfig, window: tuple[int, int]) -> None:
    x = torch.randn(3, 3, *window, generator=torch.Generator().manual_seed(0))
    cfg = replace(cfg, dtype="fp32")
    from maskclip.dense.successors import authors_vit_ops

    with torch.no_grad(), authors_vit_ops(model.visual, cfg.vit_ops == "authors" and hasattr(model.visual, "proj")):
        want = DenseEncoder(model, cfg)(x)
    got = OnnxEncoder(model, cfg, threads=1)(x)
    assert got[0].shape == want[0].shape
    assert rel_err(got[0], want[0]) < 1e-4
    if cfg.ks:
        assert rel_err(got[1], want[1]) < 1e-4
    else:
        assert got[1] is None
    enc = OnnxEncoder(model, cfg, threads=1)
    one = enc(x[:1])  # the batch size is free
    assert rel_err(one[0], want[0][:1]) < 1e-4
    other = torch.randn(2, 3, window[1] + 32, window[0] - 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), authors_vit_ops(model.visual, cfg.vit_ops == "authors" and hasattr(model.visual, "proj")):
        want2 = DenseEncoder(model, cfg)(other)
    got2 = enc(other)  # and so are height and width: one graph (one per size with the dino position rule)
    assert got2[0].shape == want2[0].shape and rel_err(got2[0], want2[0]) < 1e-4
    assert len(enc._compiled) == (1 if cfg.pos_embed == "resize" else 2)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(VIT_CASES))
def test_vit_methods_match_torch(tiny_vit, case):
    check(tiny_vit, VIT_CASES[case], (64, 96))
    cfg = replace(VIT_CASES[case], dtype="fp32")
    ragged = torch.randn(2, 3, 70, 100, generator=torch.Generator().manual_seed(2))  # floored, as torch's
    with torch.no_grad():
        want = DenseEncoder(tiny_vit, cfg)(ragged)
    if cfg.vit_ops != "authors":
        assert rel_err(OnnxEncoder(tiny_vit, cfg, threads=1)(ragged)[0], want[0]) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(RN_CASES))
def test_resnet_methods_match_torch(tiny_rn, case):
    check(tiny_rn, RN_CASES[case], (64, 64))


@pytest.mark.slow
def test_backend_onnx_labels_as_torch_does():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8) for _ in range(2)]
    classes = ["sky", "grass", "turtle", "fish"]
    preds = {}
    for backend in ("torch", "onnx") + (("openvino",) if _has("openvino") else ()):
        p = MaskCLIPPredictor("toy-rn", config=MaskCLIPConfig(dtype="fp32", backend=backend, mode="slide",
                                                              size=(96, 96), crop=64, step=32, ks=True))
        preds[backend] = p.predict_batch(images, classes)
        assert p.config.backend == backend and p.config.dtype is None
    for backend in set(preds) - {"torch"}:
        for a, b in zip(preds["torch"], preds[backend]):
            assert (a.labels == b.labels).mean() > 0.999
            np.testing.assert_allclose(a.probs, b.probs, rtol=0, atol=1e-3)


def test_backend_onnx_refuses_reduced_precision():
    with pytest.raises(SettingsError, match="--backend onnx runs fp32"):
        MaskCLIPPredictor("toy-rn", config=MaskCLIPConfig(dtype="bf16", backend="onnx"))
    with pytest.raises(SettingsError, match="--backend openvino runs fp32 or bf16"):
        MaskCLIPPredictor("toy-rn", config=MaskCLIPConfig(dtype="fp16", backend="openvino"))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["maskclip", "naclip"])
def test_openvino_runs_the_same_graph(tiny_vit, case):
    pytest.importorskip("openvino")
    cfg = replace(VIT_CASES[case], dtype="fp32")
    x = torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = DenseEncoder(tiny_vit, cfg)(x)
    got = OnnxEncoder(tiny_vit, cfg, threads=1, runtime="openvino")(x)
    assert rel_err(got[0], want[0]) < 1e-4 and (not cfg.ks or rel_err(got[1], want[1]) < 1e-4)
    bf16 = OnnxEncoder(tiny_vit, cfg, threads=1, runtime="openvino", precision="bf16")(x)
    cos = (bf16[0] * want[0]).sum(1)  # both L2-normalised: bf16 keeps the direction
    assert float(cos.min()) > 0.99


@pytest.mark.slow
def test_export_onnx_writes_a_graph_onnxruntime_runs_alone(tmp_path, capsys):
    import onnxruntime as ort

    out = tmp_path / "toy.onnx"
    assert main(["export-onnx", "--model", "toy-vit", "--ks", "--out", str(out)]) == 0
    meta = json.loads((tmp_path / "toy.onnx.json").read_text())
    assert meta["window"] == "any" and meta["outputs"] == ["feats", "keys"] and meta["settings"]["ks"] is True
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    p = MaskCLIPPredictor("toy-vit", ks=True)  # the recommended settings, as the command used them
    assert p.config.readout == meta["settings"]["readout"]
    for shape in [(2, 3, 64, 64), (1, 3, 96, 160)]:  # any window size a multiple of the patch
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        feats, keys = sess.run(None, {"windows": x})
        with torch.no_grad():
            want = DenseEncoder(p.model, p.config)(torch.from_numpy(x))
        assert rel_err(torch.from_numpy(feats), want[0]) < 1e-4 and rel_err(torch.from_numpy(keys), want[1]) < 1e-4
    before = out.read_bytes()
    assert main(["export-onnx", "--model", "toy-vit", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before  # never overwritten
    assert main(["export-onnx", "--model", "toy-vit", "--method", "sclip", "--out", str(tmp_path / "s.onnx")]) == 2
    assert "--window" in capsys.readouterr().err and not (tmp_path / "s.onnx").exists()
