"""The precision policy: auto = fp16 on CUDA, bf16 on CPUs with native bf16, fp32 elsewhere; measured safe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskclip import device as dev
from maskclip.dense import MaskCLIP, MaskCLIPConfig
from maskclip.errors import SettingsError


def test_auto_resolves_by_device_and_cpu_features(monkeypatch):
    monkeypatch.delenv("MASKCLIP_PRECISION", raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(dev, "native_bf16", lambda: True)
    assert dev.resolve_precision("auto", cpu) == "bf16" and dev.resolve_precision("auto", cuda) == "fp16"
    monkeypatch.setattr(dev, "native_bf16", lambda: False)
    assert dev.resolve_precision("auto", cpu) is None  # emulated bf16 can be slower than fp32
    assert dev.resolve_precision("fp32", cuda) is None and dev.resolve_precision("bf16", cpu) == "bf16"
    assert dev.resolve_precision(None, cuda) is None
    monkeypatch.setenv("MASKCLIP_PRECISION", "fp32")
    assert dev.resolve_precision("auto", cuda) is None  # the environment overrides auto only
    assert dev.resolve_precision("fp16", cuda) == "fp16"
    monkeypatch.setenv("MASKCLIP_PRECISION", "fp8")
    with pytest.raises(SettingsError, match="MASKCLIP_PRECISION"):
        dev.resolve_precision("auto", cpu)


def test_the_engine_records_the_precision_it_runs(tiny_vit, monkeypatch):
    monkeypatch.delenv("MASKCLIP_PRECISION", raising=False)
    assert MaskCLIPConfig().dtype == "auto"
    monkeypatch.setattr(dev, "native_bf16", lambda: True)
    assert MaskCLIP(tiny_vit).config.dtype == "bf16"
    assert MaskCLIP(tiny_vit, dtype="fp32").config.dtype is None
    monkeypatch.setattr(dev, "native_bf16", lambda: False)
    assert MaskCLIP(tiny_vit).config.dtype is None


@pytest.mark.parametrize("model", ["toy-rn", "toy-vit"])
def test_bf16_keeps_the_toy_labels(model):
    """The gate of making auto the default (benchmarks/precision.py on 200 scenes: >= 99.88% of pixels keep
    their label, mIoU within 0.01): here on 24 held-out scenes, >= 99%."""
    from maskclip.clip.weights import load_weights
    from maskclip.toyworld.evaluate import class_classifier, heldout_scenes, scene_scores

    clip, info = load_weights(model)
    config = MaskCLIPConfig(**{k: v for k, v in info.recommended.items() if k != "templates"})
    scenes = [s.image for s in heldout_scenes(24)]
    clf = class_classifier(clip)
    a = scene_scores(MaskCLIP(clip, config, dtype="fp32"), scenes, clf).argmax(1)
    b = scene_scores(MaskCLIP(clip, config, dtype="bf16"), scenes, class_classifier(clip, precision="bf16")).argmax(1)
    assert float((a == b).float().mean()) >= 0.99  # image and text encoders in bf16, as auto runs them
    assert not np.array_equal(a.numpy(), np.zeros_like(a.numpy()))


def test_the_text_side_follows_the_policy_with_a_cache_per_precision(tmp_path, monkeypatch):
    from maskclip.dense import MaskCLIPPredictor
    from maskclip.dense.text import build_text_classifier

    monkeypatch.setenv("MASKCLIP_CACHE", str(tmp_path))
    names = ["sky", "grass", "turtle"]
    fp32 = MaskCLIPPredictor("toy-vit", dtype="fp32")
    bf16 = MaskCLIPPredictor("toy-vit", dtype="bf16")
    assert bf16.text_cache.precision == "bf16" and fp32.text_cache.precision is None
    assert bf16.text_cache.path(("{}",)) != fp32.text_cache.path(("{}",))  # never served the other's embeddings
    a, b = fp32.classifier(names).embeddings, bf16.classifier(names).embeddings
    cos = (a * b).sum(-1)
    assert float(cos.min()) > 0.995 and not torch.equal(a, b)  # reduced, not ignored
    direct = build_text_classifier(bf16.model, names, bf16.templates, precision="bf16").embeddings
    torch.testing.assert_close(b, direct, rtol=0, atol=0)  # the cached rows are what bf16 computes
    again = MaskCLIPPredictor("toy-vit", dtype="bf16").classifier(names).embeddings  # from the bf16 cache file
    torch.testing.assert_close(again, b, rtol=0, atol=0)
