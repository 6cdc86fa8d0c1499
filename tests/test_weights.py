"""Reading CLIP checkpoints from local files and bundled names (no network; see test_download.py)."""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings
from pathlib import Path

import pytest
import torch

from maskclip.clip import weights
from maskclip.clip.convert import clip_state_dict, load_state_dict
from maskclip.clip.model import ARCHITECTURES, CLIP, CLIPConfig
from maskclip.clip.weights import (
    WeightsError,
    available_models,
    load_clip,
    load_weights,
    model_url,
    random_clip,
    random_weights,
    url_sha256,
)


def tiny_config(vision_layers=2, vocab_size=1000, vision_width=64, resolution=32) -> CLIPConfig:
    return CLIPConfig(embed_dim=32, image_resolution=resolution, vision_layers=vision_layers,
                      vision_width=vision_width, vision_patch_size=8 if isinstance(vision_layers, int) else None,
                      context_length=77, vocab_size=vocab_size, transformer_width=64, transformer_heads=1,
                      transformer_layers=2)


def tiny_clip(seed: int = 0, **kw) -> CLIP:
    torch.manual_seed(seed)
    model = CLIP(tiny_config(**kw)).eval()
    with torch.no_grad():  # non-trivial LayerNorm / BatchNorm statistics so every tensor matters
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_final.weight", "ln_post.weight", "bn3.weight")):
                p.uniform_(0.5, 1.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
    return model


def inputs(resolution: int = 32, vocab: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, resolution, resolution, generator=g)
    text = torch.zeros(2, 77, dtype=torch.long)
    text[:, 0] = vocab - 2
    text[0, 1:4] = torch.tensor([5, 17, 300])
    text[0, 4] = vocab - 1
    text[1, 1:3] = torch.tensor([42, 7])
    text[1, 3] = vocab - 1
    return image, text


def outputs(model: CLIP, resolution: int = 32, vocab: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    image, text = inputs(resolution, vocab)
    with torch.no_grad():
        return model.encode_image(image).float(), model.encode_text(text).float()


def assert_same_model(a: CLIP, b: CLIP, **kw) -> None:
    ia, ta = outputs(a, **kw)
    ib, tb = outputs(b, **kw)
    assert ia.abs().max() > 0.05 and ta.abs().max() > 0.05  # features are not degenerate
    torch.testing.assert_close(ia, ib, rtol=0, atol=0)
    torch.testing.assert_close(ta, tb, rtol=0, atol=0)


def trace(model: CLIP) -> torch.jit.ScriptModule:
    image, text = inputs(model.config.image_resolution, model.config.vocab_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(model, (image, text), check_trace=False)


def save_torchscript(model: CLIP, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.save is deprecated in torch 2.x
        torch.jit.save(trace(model), str(path))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- name tables


def test_openai_table_matches_release_urls():
    url = model_url("ViT-B/16")
    assert url == ("https://openaipublic.azureedge.net/clip/models/"
                   "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt")
    assert url_sha256(url) == "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"
    assert url_sha256(model_url("RN50")).startswith("afeb0e10")
    assert available_models()[:9] == ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16",
                                      "ViT-L/14", "ViT-L/14@336px"]
    assert set(available_models()[:9]) == set(ARCHITECTURES)
    with pytest.raises(WeightsError, match="ViT-B/16"):
        model_url("ViT-B/17")


def test_unknown_name_lists_available(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "MANIFEST_PATH", tmp_path / "none" / "manifest.json")
    with pytest.raises(WeightsError) as e:
        load_clip("ViT-B-16-typo")
    msg = str(e.value)
    assert "'ViT-B-16-typo'" in msg and "ViT-B/16" in msg and "RN50x64" in msg and "path" in msg
    with pytest.raises(WeightsError, match="directory"):
        load_clip(tmp_path)


# ---------------------------------------------------------------- file formats


def test_plain_state_dict_roundtrip(tmp_path):
    model = tiny_clip()
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    loaded, info = load_weights(path, progress=False)
    assert_same_model(model, loaded)
    assert info.sha256 == sha(path) and info.name == str(path) and info.source == "file"
    assert not hasattr(loaded, "weights_sha256")  # identity travels beside the module, not on it
    assert loaded.config == model.config and loaded.dtype == torch.float32 and not loaded.training


def test_resnet_state_dict_roundtrip(tmp_path):
    model = tiny_clip(vision_layers=(1, 1, 1, 1), vision_width=16, resolution=64)
    path = tmp_path / "tiny-rn.pt"
    torch.save(model.state_dict(), path)
    loaded = load_clip(str(path))
    assert not loaded.config.is_vit and loaded.config.vision_layers == (1, 1, 1, 1)
    assert_same_model(model, loaded, resolution=64)


def test_torchscript_archive_reads_tensors_only(tmp_path):
    model = tiny_clip()
    traced = trace(model)
    assert list(traced.state_dict()) == list(model.state_dict())  # OpenAI's archives carry these names
    path = tmp_path / "tiny-jit.pt"
    save_torchscript(model, path)
    sd = load_state_dict(path)
    assert set(sd) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(sd[k], v), k
    assert_same_model(model, load_clip(path))


def test_fp16_file_defaults_to_fp32_on_cpu_and_dtype_is_honoured(tmp_path):
    model = tiny_clip()
    path = tmp_path / "half.pt"
    torch.save(model.half().state_dict(), path)  # OpenAI's files are fp16
    assert load_clip(path).dtype == torch.float32
    half = load_clip(path, dtype=torch.float16)
    assert half.dtype == torch.float16 and half.text_projection.dtype == torch.float16
    assert load_clip(path, dtype=torch.bfloat16).token_embedding.weight.dtype == torch.bfloat16
    ref = load_clip(path)
    # fp32 upcast of fp16 weights is exact: weights equal the stored halves
    assert torch.equal(ref.visual.proj, model.visual.proj.float())
    with pytest.raises(ValueError, match="dtype"):
        load_clip(path, dtype=torch.int8)


def test_gzipped_state_dict_with_unused_vocab_rows_is_small(tmp_path):
    model = tiny_clip(vocab_size=49408)
    with torch.no_grad():
        model.token_embedding.weight[1000:49406].zero_()  # a toy vocabulary uses few rows
    plain = tmp_path / "toy.pt"
    torch.save(model.state_dict(), plain)
    gz = tmp_path / "toy.pt.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=6))
    assert gz.stat().st_size < plain.stat().st_size / 5  # 12.6 MB of zeros compress away
    loaded, info = load_weights(gz)
    assert info.sha256 == sha(gz)
    assert_same_model(model, loaded, vocab=49408)


def test_gzipped_torchscript_archive(tmp_path):
    model = tiny_clip()
    raw = tmp_path / "jit.pt"
    save_torchscript(model, raw)
    gz = tmp_path / "jit.pt.gz"
    gz.write_bytes(gzip.compress(raw.read_bytes()))
    assert_same_model(model, load_clip(gz))


def test_openclip_training_checkpoint(tmp_path):
    model = tiny_clip()
    sd = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    sd["module.logit_scale"] = sd["module.logit_scale"].reshape(1)  # OpenCLIP's non-scalar variant
    sd["module.attn_mask"] = torch.full((77, 77), float("-inf")).triu(1)  # older OpenCLIP buffer
    sd["module.logit_bias"] = torch.zeros(1)  # added when loading for SigLIP-style training
    ckpt = {"epoch": 32, "name": "laion-run", "state_dict": sd,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}}
    path = tmp_path / "epoch_32.pt"
    torch.save(ckpt, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a zero logit_bias is dropped silently
        loaded = load_clip(path)
    assert_same_model(model, loaded)
    assert loaded.logit_scale.shape == () and torch.equal(loaded.logit_scale, model.logit_scale)


def test_openclip_custom_text_and_model_key_and_logit_bias(tmp_path):
    model = tiny_clip()
    text_keys = ("token_embedding", "positional_embedding", "transformer.", "ln_final", "text_projection")
    sd = {(f"text.{k}" if k.startswith(text_keys) else k): v for k, v in model.state_dict().items()}
    sd["logit_bias"] = torch.tensor([-10.0])
    path = tmp_path / "custom.pt"
    torch.save({"model": sd, "step": 5}, path)
    with pytest.warns(UserWarning, match="logit_bias"):
        loaded = load_clip(path)
    assert_same_model(model, loaded)


def test_safetensors_file(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    model = tiny_clip()
    path = tmp_path / "open_clip_model.safetensors"
    st.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert_same_model(model, load_clip(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WeightsError, match=str(path.name)):
        load_clip(path)


@pytest.mark.parametrize("kind", ["plain", "jit", "gzip"])
def test_truncated_file_is_refused_naming_it(tmp_path, kind):
    model = tiny_clip()
    path = tmp_path / f"tiny-{kind}.pt"
    if kind == "jit":
        save_torchscript(model, path)
    else:
        torch.save(model.state_dict(), path)
    if kind == "gzip":
        path.write_bytes(gzip.compress(path.read_bytes()))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(WeightsError) as e:
        load_clip(path)
    assert str(path) in str(e.value) and "truncated" in str(e.value)


def test_flipped_bytes_inside_tensor_data_are_caught(tmp_path):
    model = tiny_clip()
    path = tmp_path / "rot.pt"
    torch.save(model.state_dict(), path)
    data = bytearray(path.read_bytes())
    needle = model.visual.proj.detach().numpy().tobytes()[:64]
    at = bytes(data).find(needle)
    assert at > 0
    data[at + 8] ^= 0xFF
    path.write_bytes(bytes(data))
    # torch itself does not check the zip CRCs and would load the altered tensor silently
    altered = torch.load(path, weights_only=True)["visual.proj"]
    assert not torch.equal(altered, model.visual.proj)
    with pytest.raises(WeightsError, match="CRC"):
        load_state_dict(path)


def test_non_clip_and_unsafe_files_are_refused(tmp_path):
    other = tmp_path / "resnet.pt"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(WeightsError, match="not a CLIP checkpoint"):
        load_clip(other)
    pickled = tmp_path / "pickle.pt"
    torch.save({"state_dict": tiny_clip().state_dict(), "args": Path("/x")}, pickled)
    with pytest.raises(WeightsError, match="weights_only"):
        load_clip(pickled)  # arbitrary Python objects are never unpickled
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="notes.pt"):
        load_clip(text)
    with pytest.raises(WeightsError, match="no tensors"):
        clip_state_dict({"epoch": 3})


# ---------------------------------------------------------------- bundled checkpoints


def write_bundle(tmp_path: Path, monkeypatch, model: CLIP, digest: str | None = None) -> Path:
    folder = tmp_path / "bundle"
    folder.mkdir()
    raw = tmp_path / "raw.pt"
    torch.save(model.state_dict(), raw)
    file = folder / "toy-vit.pt.gz"
    file.write_bytes(gzip.compress(raw.read_bytes()))
    manifest = {"toy-vit": {"file": file.name, "sha256": digest or sha(file), "description": "tiny ViT"}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(weights, "MANIFEST_PATH", folder / "manifest.json")
    return file


def test_bundled_name_resolves_through_manifest(tmp_path, monkeypatch):
    model = tiny_clip()
    monkeypatch.setattr(weights, "MANIFEST_PATH", tmp_path / "bundle" / "manifest.json")
    assert "toy-vit" not in available_models()  # no manifest yet: simply unknown
    with pytest.raises(WeightsError, match="unknown"):
        load_clip("toy-vit")
    file = write_bundle(tmp_path, monkeypatch, model)
    assert available_models()[-1] == "toy-vit"
    assert weights.bundled_models()["toy-vit"].description == "tiny ViT"
    loaded, info = load_weights("toy-vit")
    assert (info.name, info.sha256, info.source) == ("toy-vit", sha(file), "bundled")
    assert_same_model(model, loaded)


def test_bundled_checksum_mismatch_and_missing_file(tmp_path, monkeypatch):
    file = write_bundle(tmp_path, monkeypatch, tiny_clip(), digest="0" * 64)
    with pytest.raises(WeightsError) as e:
        load_clip("toy-vit")
    assert str(file) in str(e.value) and "0" * 64 in str(e.value)
    file.unlink()
    with pytest.raises(WeightsError, match="missing"):
        load_clip("toy-vit")
    weights.MANIFEST_PATH.write_text("{not json")
    with pytest.raises(WeightsError, match="manifest"):
        available_models()


# ---------------------------------------------------------------- random weights


def test_random_clip_is_labelled_and_real_shaped():
    model, info = random_weights("ViT-B/16")
    assert info.name == "random:ViT-B/16:seed0" and info.sha256 is None and info.source == "random"
    assert model.config == ARCHITECTURES["ViT-B/16"]
    assert model.visual.positional_embedding.shape == (197, 768) and model.visual.proj.shape == (768, 512)
    with pytest.raises(WeightsError, match="ViT-B/16"):
        random_clip("ViT-B/99")


def test_random_clip_is_seeded_and_leaves_global_rng_alone(monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, "tiny", tiny_config())
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, (c, info) = random_clip("tiny", seed=3), random_clip("tiny", seed=3), random_weights("tiny", seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    assert info.name == "random:tiny:seed4"
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.visual.conv1.weight, c.visual.conv1.weight)
