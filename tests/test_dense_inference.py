"""Inference: windows, resizing, chunked upsampling, multi-scale, predictor caching, vocabularies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskclip.dense import MaskCLIP, MaskCLIPConfig, MaskCLIPPredictor, build_text_classifier
from maskclip.dense import features as features_mod
from maskclip.dense.text import TextClassifier, encode_names, resolve_templates, templates_85
from maskclip.tiling import interp_matrix as _interp_matrix
from maskclip.tiling import resized_size, slide_windows


def test_slide_windows_cover_image_like_mmseg():
    wins = slide_windows(300, 451, 224, 112)
    # rows: (300-224+111)//112+1 = 2; cols: (451-224+111)//112+1 = 4
    assert len(wins) == 8
    assert wins[0] == (0, 224, 0, 224) and wins[-1] == (76, 300, 227, 451)
    cover = np.zeros((300, 451), int)
    for y1, y2, x1, x2 in wins:
        assert (y2 - y1, x2 - x1) == (224, 224)
        cover[y1:y2, x1:x2] += 1
    assert cover.min() >= 1
    assert slide_windows(100, 150, 224, 112) == [(0, 100, 0, 150)]


def test_resized_size_rules():
    assert resized_size(375, 500, "fit", (512, 512)) == (384, 512)  # long side fits 512
    assert resized_size(1024, 2048, "fit", (1024, 512)) == (512, 1024)  # Cityscapes (1024, 512)
    assert resized_size(375, 500, "short", (336, 336)) == (336, 448)
    assert resized_size(10, 20, "none", (1, 1)) == (10, 20)
    with pytest.raises(ValueError, match="resize"):
        resized_size(1, 1, "stretch", (2, 2))


def test_interp_matrix_equals_bilinear_interpolate():
    x = torch.randn(3, 5, 7)
    mh, mw = _interp_matrix(5, 23, x.device), _interp_matrix(7, 31, x.device)
    ref = F.interpolate(x[None], size=(23, 31), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(torch.einsum("Hh,khw,Ww->kHW", mh, x, mw), ref, atol=1e-5, rtol=1e-5)


def _classifier(k: int, dim: int, seed: int = 0) -> TextClassifier:
    g = torch.Generator().manual_seed(seed)
    return TextClassifier(F.normalize(torch.randn(k, dim, generator=g), dim=-1), torch.arange(k),
                          [f"c{i}" for i in range(k)])


def test_decode_in_row_blocks_equals_full_resolution(tiny_vit):
    img = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    engine = MaskCLIP(tiny_vit, readout="value-only", size=(64, 64), logit_scale=30.0)
    feats = engine.encode(img)
    clf = _classifier(4, 32)
    labels, probs = engine.decode(feats, clf)
    small_labels, small_probs = engine.decode(feats, clf, max_bytes=4 * 4 * 90 * 2 * 3)  # 3 rows per block
    assert torch.equal(labels, small_labels)
    torch.testing.assert_close(probs, small_probs)
    # reference: F.interpolate the whole score map at once
    scores = engine.scale_scores(feats.scales[0], clf)
    ref = torch.softmax(30 * F.interpolate(scores[None], size=(70, 90), mode="bilinear", align_corners=False)[0], 0)
    torch.testing.assert_close(probs, ref, atol=1e-5, rtol=1e-4)
    assert probs.shape == (4, 70, 90)
    torch.testing.assert_close(probs.sum(0), torch.ones(70, 90))


def test_whole_mode_pads_to_patch_multiple_and_crops(tiny_vit):
    """A 40x50 input (not a multiple of 16) is padded to 48x64; logits are cropped back, not stretched."""
    engine = MaskCLIP(tiny_vit, readout="authors", resize="none", normalize="clip")
    img = torch.rand(1, 3, 40, 50) * 255
    feats = engine.encode(img[0].permute(1, 2, 0).numpy().astype(np.uint8))
    sf = feats.scales[0]
    assert sf.plan.padded == (48, 64) and sf.feats.shape[-2:] == (3, 4)
    assert engine.scale_scores(sf, _classifier(3, 32)).shape == (3, 40, 50)


def test_slide_mode_averages_overlaps(tiny_vit):
    img = (np.random.default_rng(1).random((64, 96, 3)) * 255).astype(np.uint8)
    engine = MaskCLIP(tiny_vit, readout="value-only", mode="slide", crop=32, step=16, resize="none", window_batch=3)
    sf = engine.encode(img).scales[0]
    assert len(sf.plan.windows) == 3 * 5 and sf.feats.shape[0] == 15
    clf = _classifier(3, 32)
    scores = engine.scale_scores(sf, clf)
    # reference: run each window alone and average by hand
    acc = torch.zeros(3, 64, 96)
    cnt = torch.zeros(1, 64, 96)
    x = MaskCLIP(tiny_vit, readout="value-only", resize="none")
    for (y1, y2, x1, x2) in sf.plan.windows:
        s = x.scale_scores(x.encode(img[y1:y2, x1:x2]).scales[0], clf)
        acc[:, y1:y2, x1:x2] += s
        cnt[:, y1:y2, x1:x2] += 1
    torch.testing.assert_close(scores, acc / cnt, atol=1e-5, rtol=1e-4)


def test_multiscale_averages_probabilities(tiny_vit):
    img = (np.random.default_rng(2).random((50, 60, 3)) * 255).astype(np.uint8)
    clf = _classifier(3, 32)
    multi = MaskCLIP(tiny_vit, scales=(32, 64), logit_scale=20.0)
    _, p = multi.segment(img, clf)
    p32 = MaskCLIP(tiny_vit, size=(32, 32), logit_scale=20.0).segment(img, clf)[1]
    p64 = MaskCLIP(tiny_vit, size=(64, 64), logit_scale=20.0).segment(img, clf)[1]
    torch.testing.assert_close(p, (p32 + p64) / 2, atol=1e-5, rtol=1e-4)


def test_ks_and_pd_change_the_output(tiny_vit):
    img = (np.random.default_rng(3).random((64, 64, 3)) * 255).astype(np.uint8)
    clf = _classifier(5, 32)
    base = MaskCLIP(tiny_vit, resize="none", logit_scale=200.0).segment(img, clf)[1]
    ks = MaskCLIP(tiny_vit, resize="none", logit_scale=200.0, ks=True).segment(img, clf)[1]
    assert (base - ks).abs().max() > 1e-3
    torch.testing.assert_close(ks.sum(0), torch.ones(64, 64))


def test_predictor_reuses_image_features_for_new_vocabularies(tiny_vit, monkeypatch):
    calls = []
    real = features_mod.vit_dense
    monkeypatch.setattr(features_mod, "vit_dense", lambda *a, **k: calls.append(1) or real(*a, **k))
    p = MaskCLIPPredictor(tiny_vit, device="cpu", templates="single", size=(64, 64))
    img = (np.random.default_rng(4).random((48, 64, 3)) * 255).astype(np.uint8)
    p.set_image(img)
    assert len(calls) == 1
    a = p.predict(["cat", "dog"])
    b = p.predict([f"class {i}" for i in range(20)])
    assert len(calls) == 1  # the image encoder ran once
    assert a.labels.shape == (48, 64) and a.probs.shape == (2, 48, 64) and a.classes == ["cat", "dog"]
    assert b.probs.shape == (20, 48, 64) and b.labels.max() < 20


def test_predictor_background_group_and_threshold(tiny_vit):
    p = MaskCLIPPredictor(tiny_vit, device="cpu", templates="single", size=(64, 64))
    img = (np.random.default_rng(5).random((64, 64, 3)) * 255).astype(np.uint8)
    p.set_image(img)
    pred = p.predict(["cat", "dog"], background=["sky", "tree", "grass"])
    assert pred.classes == ["cat", "dog", "background"] and pred.probs.shape[0] == 3
    unk = p.predict(["cat", "dog"], threshold=0.9)  # pixels less sure than that are unknown, the others kept
    top = unk.probs.max(0)
    assert unk.classes == ["cat", "dog", "unknown"] and (top < 0.9).any() and (top >= 0.9).any()
    sure = top >= 0.9
    assert np.all(unk.labels[~sure] == 2) and np.array_equal(unk.labels[sure], unk.probs.argmax(0)[sure])
    bg = p.predict(["cat", "dog"], background=["sky"], threshold=0.9)
    assert np.all(bg.labels[bg.probs.max(0) < 0.9] == 2) and bg.classes[-1] == "background"
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        p.predict(["cat", "dog"], threshold=1.01)
    none = p.predict(["cat", "dog"], threshold=0.0)
    assert np.array_equal(none.labels, p.predict(["cat", "dog"]).labels)
    with pytest.raises(ValueError, match="duplicate"):
        p.predict(["cat", "Cat"])
    with pytest.raises(ValueError, match="empty"):
        p.predict([])


def test_synonyms_take_the_max_over_names(tiny_vit):
    clf = build_text_classifier(tiny_vit, [["cat", "kitten"], "dog"], templates="single")
    assert clf.embeddings.shape == (3, 32) and clf.class_of_name.tolist() == [0, 0, 1]
    logits = torch.randn(2, 3, 4, 4)
    out = clf.class_logits(logits)
    torch.testing.assert_close(out[:, 0], torch.maximum(logits[:, 0], logits[:, 1]))
    torch.testing.assert_close(out[:, 1], logits[:, 2])


def test_text_classifier_averages_normalised_template_embeddings(tiny_vit):
    from maskclip.clip.tokenizer import tokenize

    tmpl = ["a photo of a {}.", "a drawing of the {}.", "there is a {} in the scene."]
    emb = encode_names(tiny_vit, ["cat", "traffic light"], tuple(tmpl))
    with torch.no_grad():
        for i, name in enumerate(["cat", "traffic light"]):
            e = tiny_vit.encode_text(tokenize([t.format(name) for t in tmpl]), trim=False)
            ref = F.normalize(F.normalize(e, dim=-1).mean(0), dim=-1)
            torch.testing.assert_close(emb[i], ref, atol=1e-5, rtol=1e-5)
    assert len(templates_85()) == 85 and resolve_templates("single") == ("a photo of a {}.",)
    with pytest.raises(ValueError, match="{}"):
        resolve_templates(["no placeholder"])


def test_long_class_name_error_names_the_class(tiny_vit):
    from maskclip.clip.tokenizer import PromptTooLongError

    long_name = " ".join(["supercalifragilistic"] * 40)
    with pytest.raises(PromptTooLongError, match="supercalifragilistic"):
        build_text_classifier(tiny_vit, ["cat", long_name], templates="single")


def test_text_classifier_disk_cache_embeds_only_new_names(tiny_vit, tmp_path, monkeypatch):
    from maskclip.dense import text as text_mod
    from maskclip.io.cache import TextCache

    monkeypatch.setenv("MASKCLIP_CACHE", str(tmp_path))
    embedded: list[list[str]] = []
    real = text_mod.encode_names
    monkeypatch.setattr(text_mod, "encode_names", lambda m, names, t, **k: embedded.append(list(names)) or
                        real(m, names, t, **k))
    plain = build_text_classifier(tiny_vit, ["cat", "dog", "bird"], templates="single")
    assert not (tmp_path / "text").exists()  # no cache given: nothing written
    embedded.clear()
    cache = TextCache("ab" * 32)
    a = build_text_classifier(tiny_vit, ["cat", "dog"], templates="single", cache=cache)
    assert embedded == [["cat", "dog"]] and len(list((tmp_path / "text").glob("*.pt"))) == 1
    b = build_text_classifier(tiny_vit, ["dog"], templates="single", cache=cache)  # a subset: nothing embedded
    c = build_text_classifier(tiny_vit, [["dog", "puppy"], "bird", "cat"], templates="single", cache=cache)
    assert embedded == [["cat", "dog"], ["puppy", "bird"]]  # a superset: only the new names
    torch.testing.assert_close(b.embeddings[0], a.embeddings[1], rtol=0, atol=0)
    torch.testing.assert_close(c.embeddings[[0, 2, 3]], plain.embeddings[[1, 2, 0]], rtol=0, atol=1e-6)
    assert c.class_of_name.tolist() == [0, 0, 1, 2]
    build_text_classifier(tiny_vit, ["cat"], templates="85", cache=cache)  # other templates: another file
    assert embedded[-1] == ["cat"] and len(list((tmp_path / "text").glob("*.pt"))) == 2
    for f in (tmp_path / "text").glob("*.pt"):
        f.write_bytes(b"damaged")  # a damaged file is recomputed, never trusted
    build_text_classifier(tiny_vit, ["cat", "dog"], templates="single", cache=cache)
    assert embedded[-1] == ["cat", "dog"]


def test_config_validation():
    with pytest.raises(ValueError, match="readout"):
        MaskCLIPConfig(readout="qk")
    for bad in (dict(logit_scale=float("nan")), dict(logit_scale=0), dict(pd_threshold=1.5), dict(crop=0),
                dict(step=-1), dict(size=(512, 0)), dict(window_batch=0), dict(scales=(224, 100000))):
        with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
            MaskCLIPConfig(**bad)
    with pytest.raises(ValueError, match="normalize"):
        MaskCLIPConfig(normalize="coco")


@pytest.mark.parametrize("dtype", ["bf16"])
def test_autocast_option_runs_and_stays_close(tiny_vit, dtype):
    img = (np.random.default_rng(6).random((64, 64, 3)) * 255).astype(np.uint8)
    f32 = MaskCLIP(tiny_vit, resize="none").encode(img).scales[0].feats
    low = MaskCLIP(tiny_vit, resize="none", dtype=dtype).encode(img).scales[0].feats
    assert low.dtype == torch.float32  # features are returned in fp32 for the classifier
    cos = (f32 * low).sum(1)
    assert cos.min() > 0.97, float(cos.min())


def test_very_large_whole_image_is_encoded_in_bounded_windows(tiny_vit):
    img = (np.random.default_rng(7).random((200, 330, 3)) * 255).astype(np.uint8)
    engine = MaskCLIP(tiny_vit, resize="none", max_pixels=64 * 64)
    sf = engine.encode(img).scales[0]
    assert len(sf.plan.windows) > 1 and all(y2 - y1 <= 64 and x2 - x1 <= 64 for y1, y2, x1, x2 in sf.plan.windows)
    labels, probs = engine.decode(engine.encode(img), _classifier(3, 32), max_bytes=3 * 4 * 330 * 2 * 16)
    assert labels.shape == (200, 330) and probs.shape == (3, 200, 330)
    torch.testing.assert_close(probs.sum(0), torch.ones(200, 330))
