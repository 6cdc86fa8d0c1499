"""Region classification: merge operations, the ensemble of eq. (1), O = Â^T M, one-pass pooling, regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskclip.dense.config import MaskCLIPConfig
from maskclip.dense.engine import MaskCLIP
from maskclip.dense.predictor import MaskCLIPPredictor
from maskclip.dense.text import build_text_classifier
from maskclip.normalization import NORMALIZATIONS
from maskclip.regions import MaskSet, RegionConfig, RegionPredictor, connected_regions, ensemble, paint
from maskclip.regions.merge import class_probs, mask_box, merged_embeddings, sub_image
from maskclip.regions.pooling import pooled_features
from maskclip.regions.predictor import seen_columns, with_config
from maskclip.vocab import Vocabulary


def _normalised(img: np.ndarray, kind: str = "clip") -> torch.Tensor:
    mean, std = NORMALIZATIONS[kind]
    x = torch.from_numpy(img).permute(2, 0, 1).float()
    return (x - torch.tensor(mean).view(3, 1, 1) * 255) / (torch.tensor(std).view(3, 1, 1) * 255)


# ---------------------------------------------------------------- merge operations


def test_merge_operations_on_a_hand_made_image():
    img = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3) * 2
    mask = np.zeros((6, 8), bool)
    mask[1:4, 2:5] = True
    mask[2, 3] = False  # a hole: inside the box, outside the mask
    x = _normalised(img)
    # a 3x3 box resized to 3x3 is the box itself
    crop = sub_image(x, mask, "crop", 3, interpolation="bilinear")
    torch.testing.assert_close(crop, x[:, 1:4, 2:5])
    both = sub_image(x, mask, "mask&crop", 3, interpolation="bilinear")
    want = x[:, 1:4, 2:5].clone()
    want[:, 1, 1] = 0  # the mean colour is 0 after normalising
    torch.testing.assert_close(both, want)
    whole = sub_image(x, mask, "mask", 6, interpolation="bilinear")  # 6x8 squashed to 6x6
    ref = F.interpolate((x * torch.from_numpy(mask).float())[None], size=(6, 6), mode="bilinear",
                        align_corners=False)[0]
    torch.testing.assert_close(whole, ref)
    assert sub_image(x, np.zeros((6, 8), bool), "crop", 3) is None


def test_mask_box_and_its_expansion():
    m = np.zeros((10, 20), bool)
    m[2:6, 4:8] = True
    assert mask_box(m) == (2, 6, 4, 8)
    assert mask_box(m, 2.0) == (0, 8, 2, 10)  # centre (4, 6), 8 x 8, clipped at the top
    assert mask_box(np.zeros((3, 3), bool)) is None


def test_merged_embeddings_are_clip_image_embeddings_of_the_sub_images(tiny_vit, single_thread):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    masks = np.zeros((3, 40, 56), bool)
    masks[0, 5:30, 10:40] = True
    masks[1] = rng.random((40, 56)) > 0.5
    emb = merged_embeddings(tiny_vit, img, masks, "mask&crop", 64, batch_size=1)
    assert torch.equal(emb[2], torch.zeros_like(emb[2]))  # empty mask
    x = _normalised(img)
    for i in range(2):
        y0, y1, x0, x1 = mask_box(masks[i])
        sub = (x * torch.from_numpy(masks[i]).float())[:, y0:y1, x0:x1]
        sub = F.interpolate(sub[None], size=(64, 64), mode="bicubic", align_corners=False)
        with torch.no_grad():
            torch.testing.assert_close(emb[i], tiny_vit.encode_image(sub)[0], atol=1e-5, rtol=1e-5)


def test_class_probs_are_a_softmax_over_all_classes_with_synonyms_as_max():
    emb = torch.randn(4, 8)
    names = F.normalize(torch.randn(3, 8), dim=-1)
    from maskclip.dense.text import TextClassifier

    clf = TextClassifier(names, torch.tensor([0, 0, 1]), ["a", "b"])
    cos = F.normalize(emb, dim=-1) @ names.T
    want = torch.softmax(50 * torch.stack([cos[:, :2].max(1).values, cos[:, 2]], 1), 1)
    torch.testing.assert_close(class_probs(emb, clf, 50.0), want)
    uniform = class_probs(torch.zeros(1, 8), clf, 50.0)
    torch.testing.assert_close(uniform, torch.full((1, 2), 0.5))


# ---------------------------------------------------------------- ensemble and painting


def test_ensemble_is_equation_one():
    rng = np.random.default_rng(1)
    ac = rng.dirichlet(np.ones(5), size=4)
    ap = rng.dirichlet(np.ones(3), size=4) * 0.9  # S seen classes (+ no-object left out)
    seen = [4, 0, 2]
    lam = 0.7
    want = np.empty_like(ac)
    for n in range(4):
        for c in range(5):
            if c in seen:
                want[n, c] = ap[n, seen.index(c)] ** lam * ac[n, c] ** (1 - lam)
            else:
                want[n, c] = ac[n, c] ** lam
    got = ensemble(torch.tensor(ac), torch.tensor(ap), seen, lam)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    assert torch.equal(ensemble(torch.tensor(ac), None, [], lam), torch.tensor(ac))


def test_paint_is_a_transposed_product_with_a_fallback_where_no_mask_covers():
    rng = np.random.default_rng(2)
    ahat = torch.tensor(rng.random((3, 4)), dtype=torch.float32)
    masks = rng.random((3, 5, 7)) > 0.6
    masks[:, 0, 0] = False
    labels, probs = paint(ahat, masks, fallback=9, return_probs=True, max_bytes=200)  # several row blocks
    o = np.einsum("nk,nhw->khw", ahat.numpy(), masks.astype(np.float32))
    covered = masks.any(0)
    np.testing.assert_array_equal(labels.numpy(), np.where(covered, o.argmax(0), 9))
    total = o.sum(0)
    np.testing.assert_allclose(probs.numpy(), np.where(total > 0, o / np.maximum(total, 1e-30), 0), rtol=1e-6)
    assert labels[0, 0] == 9


def test_seen_columns_match_names_and_leave_the_rest_unseen():
    vocab = Vocabulary.of([["person", "man"], "cat", "sofa"])
    cols, classes = seen_columns(("Cat", "dog", "man", "person"), vocab)
    assert cols == [0, 2] and classes == [1, 0]  # cat <- column 0, person <- its first naming column "man"
    assert seen_columns(None, vocab) == ([], [])


# ---------------------------------------------------------------- one-pass pooling


@pytest.mark.parametrize("mode,pad", [("whole", "crop"), ("slide", "crop"), ("slide", "center"), ("whole", "stretch")])
def test_pooling_equals_an_explicit_masked_mean(tiny_vit, single_thread, mode, pad):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    cfg = MaskCLIPConfig(mode=mode, pad=pad, crop=32, step=20, resize="fit", size=(90, 60), normalize="clip")
    engine = MaskCLIP(tiny_vit, cfg)
    feats = engine.encode(img)
    masks = rng.random((4, 50, 70)) > 0.5
    masks[3] = False
    masks[3, 10:20, 5:9] = True
    got = pooled_features(engine, feats, masks.astype(np.float32), max_bytes=50 * 70 * 4 * 3 * 2)  # 2 per chunk
    sf = feats.scales[0]
    full = engine.image_map(sf.feats, sf, (50, 70))  # [C, H, W]: the feature MaskCLIP gives each pixel
    m = torch.from_numpy(masks).float()
    want = torch.einsum("chw,nhw->nc", full, m) / m.flatten(1).sum(1)[:, None]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # the mean of per-pixel cosine logits is the pooled feature's logits times its norm (linearity)
    clf = build_text_classifier(tiny_vit, ["a", "b", "c"], "single")
    scores = engine.image_map(engine.grid_scores(sf.feats, None, clf), sf, (50, 70))
    mean_logits = torch.einsum("khw,nhw->nk", scores, m) / m.flatten(1).sum(1)[:, None]
    torch.testing.assert_close(got @ clf.embeddings.T, mean_logits, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- regions


def test_connected_regions_match_scipy():
    nd = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(4)
    for _ in range(20):
        lab = rng.integers(0, 3, (int(rng.integers(1, 30)), int(rng.integers(1, 30))))
        ms = connected_regions(lab)
        ref = sum(nd.label(lab == v)[1] for v in np.unique(lab))
        assert len(ms) == ref
        assert (ms.masks.sum(0) == 1).all()  # a partition
        for m, r in zip(ms.masks, ms.records):
            assert (lab[m] == r["label"]).all() and nd.label(m)[1] == 1 and r["area"] == m.sum()
    big = connected_regions(np.array([[0, 0, 1], [2, 0, 1]]), min_area=2)
    assert sorted(r["label"] for r in big.records) == [0, 1]


# ---------------------------------------------------------------- the predictor


def test_region_predictor_names_masks_and_reuses_embeddings(tiny_vit, single_thread, monkeypatch):
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    masks = np.zeros((3, 40, 48), bool)
    masks[0, :20] = True
    masks[1, 20:, :24] = True
    masks[2, 20:30, 24:] = True  # rows 30.. of the right half stay uncovered
    dense = MaskCLIPPredictor(tiny_vit, device="cpu", templates="single")
    p = RegionPredictor(dense, RegionConfig(merge="crop", top_k=2))
    calls = []
    real = tiny_vit.encode_image
    monkeypatch.setattr(tiny_vit, "encode_image", lambda x: calls.append(len(x)) or real(x))
    p.set_image(img, masks=MaskSet(masks, records=[{"id": 7}, {"id": 8}, {"id": 9}]))
    pred = p.predict(["cat", "dog", "car"])
    assert calls == [3] and pred.classes == ["cat", "dog", "car", "unknown"]
    assert (pred.labels[30:, 24:] == 3).all()  # uncovered -> unknown
    assert [r["id"] for r in pred.regions] == [7, 8, 9] and len(pred.regions[0]["top"]) == 2
    for r, m in zip(pred.regions, masks):
        assert (pred.labels[m] == pred.classes.index(r["label"])).all()  # disjoint masks: each paints its label
    again = p.predict(["cat", "dog", "car", "tree"], background=["sky"])
    assert calls == [3] and again.classes[-1] == "background"  # no new image pass for a new vocabulary
    assert (again.labels[30:, 24:] == 4).all()  # uncovered -> the background group (after 4 classes)


def test_region_predictor_ensembles_generator_scores_for_seen_classes(tiny_vit, single_thread):
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    masks = np.zeros((2, 32, 32), np.float32)
    masks[0, :16], masks[1, 16:] = 1, 1
    ap = np.array([[0.9, 0.05], [0.1, 0.1]], np.float32)

    class Generator:
        def propose(self, image):
            return MaskSet(masks, scores=ap, seen=("dog", "cat"))

    p = RegionPredictor(MaskCLIPPredictor(tiny_vit, device="cpu", templates="single"),
                        RegionConfig(merge="mask", lam=0.8), proposals=Generator())
    p.set_image(img)
    pred = p.predict(["cat", "dog", "bird"])
    ac = class_probs(p._embeddings, p.dense.classifier(Vocabulary.of(["cat", "dog", "bird"])), 100.0)
    want = ensemble(ac, torch.tensor(ap[:, [0, 1]]), [1, 0], 0.8)
    got = torch.tensor([[v for _, v in sorted(r["top"], key=lambda t: ["cat", "dog", "bird"].index(t[0]))]
                        for r in pred.regions])
    torch.testing.assert_close(got, want / want.sum(1, keepdim=True), atol=1e-5, rtol=1e-4)


def test_regions_from_maskclip_and_pooling_need_no_masks(tiny_vit, single_thread):
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    dense = MaskCLIPPredictor(tiny_vit, device="cpu", templates="single", resize="none")
    p = RegionPredictor(dense, RegionConfig(merge="pool"), proposals="regions", min_area=0.0)
    p.set_image(img)
    pred = p.predict(["cat", "dog", "car"])
    base = dense.predict(["cat", "dog", "car"], return_probs=False).labels
    regions = connected_regions(base)
    assert len(pred.regions) == len(regions)
    for r, m in zip(pred.regions, regions.masks):
        assert (pred.labels[m] == ["cat", "dog", "car"].index(r["label"])).all()
    with pytest.raises(ValueError, match="no masks"):
        RegionPredictor(dense).set_image(img)
    with pytest.raises(ValueError, match="at the image's size"):
        with_config(p, merge="crop").set_image(img, masks=np.ones((1, 10, 10), bool))
