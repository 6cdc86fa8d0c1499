"""MaskCLIP+ as the authors' code trains it: each detail behind its switch, with the authors' value available."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import randomize_, tiny_config
from maskclip.clip.model import CLIP
from maskclip.dense import MaskCLIP, MaskCLIPConfig, build_text_classifier
from maskclip.plus.augment import UNLABELED
from maskclip.plus.config import PlusTrainConfig
from maskclip.plus.data import TrainCrops, TrainItem
from maskclip.plus.distributed import DistInfo
from maskclip.plus.loop import StepContext, train, train_step
from maskclip.plus.models import build_target_model, load_target_model
from maskclip.plus.pseudo import pseudo_from_logits
from maskclip.plus.state import TrainState
from maskclip.plus.teacher import NO_SCORE, MaskCLIPTeacher

K = 4


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return build_target_model("light-r18", 8, torch.randn(K, 8), None, base_channels=4, head_channels=8,
                              output_stride=8, warn_random_init=False, **kw)


def tiny_data(n=4, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        gt = rng.integers(0, 2, (40, 48))
        gt[:12] = 255  # void (e.g. VOC20's background)
        out.append(TrainItem(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), gt))
    return out


def teacher(x):
    w = torch.randn(K, 3, generator=torch.Generator().manual_seed(7))
    return F.avg_pool2d(torch.einsum("kc,bchw->bkhw", w, x), 4)


def cfg(tmp_path, **kw):
    base = dict(iterations=3, batch_size=2, crop_size=(32, 32), scale=(64, 32), num_workers=0,
                out_dir=str(tmp_path / "run"), log_every=1, checkpoint_every=100, progress=False, photometric=False)
    return PlusTrainConfig(**{**base, **kw})


# ------------------------------------------------------------------------------------------------ teacher


def tiny_clip():
    torch.manual_seed(0)
    return randomize_(CLIP(tiny_config(vit=True)), seed=3).eval()


def test_zero_shot_teacher_scores_the_unseen_classes_only_so_softmax_steps_see_only_them():
    clip = tiny_clip()
    text = build_text_classifier(clip, ["cat", "dog", "sky", "sea"], "single")
    config = MaskCLIPConfig(ks=True, pd=True, normalize="clip", resize="none")
    mean, std = (0.0,) * 3, (1.0,) * 3
    x = torch.rand(2, 3, 32, 32) * 255
    unseen = [1, 3]
    engine = MaskCLIP(clip, config)
    only = MaskCLIPTeacher(engine, text, mean, std, unseen)(x)
    assert only.shape == (2, 4, 32, 32) and (only[:, [0, 2]] == NO_SCORE).all()
    # exactly MaskCLIP with a classifier of the unseen classes alone (KS and PD softmax over them)
    assert torch.equal(only[:, unseen], MaskCLIPTeacher(engine, text.subset(unseen), mean, std)(x))
    # all classes scored: KS weighs softmax over four classes, another result on the unseen channels
    every = MaskCLIPTeacher(engine, text, mean, std)(x)
    assert not (every[:, [0, 2]] == NO_SCORE).any()
    assert not torch.allclose(every[:, unseen], only[:, unseen], atol=1e-4)


def test_text_classifier_subset_keeps_each_class_synonyms():
    clip = tiny_clip()
    text = build_text_classifier(clip, [["cat", "kitty"], ["dog"], ["sky", "heaven"]], "single")
    sub = text.subset([2, 0])
    assert sub.class_names == ["sky", "cat"] and sub.num_classes == 2
    assert sub.class_of_name.tolist() == [1, 1, 0, 0]  # rows in the original order, ids remapped
    assert torch.equal(sub.embeddings, text.embeddings[[0, 1, 3, 4]])
    with pytest.raises(ValueError):
        text.subset([3])


# --------------------------------------------------------------------------------------------- pseudo labels


def test_pseudo_threshold_ignores_low_confidence_pixels_among_the_candidates():
    logits = torch.tensor([[5.0, 0.0, 0.0], [1.0, 1.1, 0.0], [0.0, 0.0, 9.0]]).T.reshape(1, 3, 1, 3)
    assert pseudo_from_logits(logits, (1, 3)).tolist() == [[[0, 1, 2]]]
    # confidences: ~0.99, ~0.38, ~1.0 (softmax over the three)
    assert pseudo_from_logits(logits, (1, 3), threshold=0.5).tolist() == [[[0, 255, 2]]]
    # among candidates {0, 1} only: confidences ~0.99, ~0.52, 0.5
    assert pseudo_from_logits(logits, (1, 3), [0, 1], threshold=0.51).tolist() == [[[0, 1, 255]]]
    # the temperature sharpens (the teacher's cosine logits are scored at CLIP's scale 100)
    assert pseudo_from_logits(logits * 0.01, (1, 3), threshold=0.5, scale=100.0).tolist() == [[[0, 255, 2]]]
    assert pseudo_from_logits(logits * 0.01, (1, 3), threshold=0.5).tolist() == [[[255, 255, 255]]]


def test_gt_ignore_mask_keeps_only_the_void_pixels_of_the_ground_truth():
    data = tiny_data(1)
    c = cfg(Path("unused"), crop_size=(40, 48), scale=(48, 40), gt_ignore_mask=True)
    crop = TrainCrops(data, c)[0]
    plain = TrainCrops(data, replace(c, gt_ignore_mask=False))[0]  # same crop geometry (same stream position)
    assert set(torch.unique(crop["label"]).tolist()) == {UNLABELED, 255}  # no class id leaks
    assert set(torch.unique(plain["label"]).tolist()) <= {UNLABELED, 255}  # 255 = padding only
    void = (crop["label"] == 255) & (plain["label"] == UNLABELED)
    assert void.sum() > 0 and ((crop["label"] == UNLABELED) <= (plain["label"] == UNLABELED)).all()
    with pytest.raises(ValueError, match="needs the ground truth"):
        TrainCrops([TrainItem(data[0].image)], c)[0]


def test_annotation_free_with_the_void_mask_never_trains_on_void_pixels(tmp_path, monkeypatch):
    from maskclip.plus import loop

    targets = []
    orig = loop.label_statistics
    monkeypatch.setattr(loop, "label_statistics", lambda t, k, i: (targets.append(t.clone()), orig(t, k, i))[1])
    train(cfg(tmp_path, gt_ignore_mask=True, iterations=2), tiny_model(), tiny_data(), teacher)
    assert len(targets) == 2
    for t in targets:  # teacher labels everywhere except on the ground truth's void pixels
        assert (t == 255).any() and ((t >= 0) & (t < K)).any() and not (t == UNLABELED).any()


# ------------------------------------------------------------------------------------------- loss, learned bg


def one_step(tmp_path, **kw):
    c = cfg(tmp_path, weight_decay=0.0, momentum=0.0, **kw)
    model = tiny_model()
    state = TrainState.create(model, c, False)
    ctx = StepContext(c, torch.device("cpu"), K, teacher, False, DistInfo(), None)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    crops = TrainCrops(tiny_data(), c)
    batch = {k: torch.stack([crops[i][k] for i in range(2)]) for k in ("image", "label")}
    r = train_step(state, model, batch, ctx)
    return r, {k: (v.detach() - before[k]) for k, v in model.named_parameters()}


def test_loss_over_all_pixels_scales_the_update_by_the_labelled_share(tmp_path):
    r1, d_lab = one_step(tmp_path, loss_norm="labelled", gt_ignore_mask=True)
    r2, d_all = one_step(tmp_path, loss_norm="all", gt_ignore_mask=True)
    share = r1.labelled / r1.pixels
    assert 0.3 < share < 0.9 and r1.labelled == r2.labelled
    for k in d_lab:  # plain SGD, no momentum or decay: the update is lr x gradient
        assert torch.allclose(d_all[k], d_lab[k] * share, rtol=1e-4, atol=1e-7), k


def test_learned_background_trains_its_row_only_and_survives_save_and_load(tmp_path):
    model = tiny_model(learned_classes=(0,))
    text = model.classifier.weight.clone()
    row0 = model.classifier.effective_weight()[0].detach().clone()
    assert model.classifier.learned.requires_grad and not model.classifier.weight.requires_grad
    assert not torch.allclose(row0, text[0])  # a standard-normal init (the authors'), normalised at use
    res = train(cfg(tmp_path, iterations=2), model, tiny_data(), teacher)
    w = model.classifier.effective_weight().detach()
    assert torch.equal(model.classifier.weight, text)  # the text embeddings stay frozen
    assert torch.equal(w[1:], text[1:]) and not torch.allclose(w[0], row0)
    assert torch.allclose(w[0].norm(), torch.tensor(1.0))
    again = load_target_model(res["model_path"])
    assert again.meta["learned_classes"] == [0]
    assert torch.equal(again.classifier.effective_weight(), model.classifier.effective_weight())


def test_snapshots_write_the_network_at_the_given_iterations(tmp_path):
    res = train(cfg(tmp_path, iterations=3, snapshots=(1, 2)), tiny_model(), tiny_data(), teacher)
    run = tmp_path / "run"
    assert (run / "model-iter1.pt").is_file() and (run / "model-iter2.pt").is_file()
    a, b = load_target_model(run / "model-iter1.pt"), load_target_model(res["model_path"])
    assert any(not torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    with pytest.raises(ValueError, match="snapshots"):
        cfg(tmp_path, snapshots=(9,)).validate()


def test_shared_self_training_labels_come_from_the_training_pass(tmp_path):
    """The authors: the training forward's detached logits (train-mode BN), no second pass."""
    calls = []
    model = tiny_model()
    orig = model.forward

    def counting(x, upsample=True):
        calls.append(model.training)
        return orig(x, upsample)

    model.forward = counting
    train(cfg(tmp_path, iterations=2, self_train_after=0.0, self_train_source="shared"), model, tiny_data(), None)
    assert calls == [True, True]
    calls.clear()
    train(cfg(tmp_path, iterations=2, self_train_after=0.0, self_train_source="eval", out_dir=str(tmp_path / "e")),
          model, tiny_data(), None)
    assert calls == [False, True, False, True]


def test_deeplabv2_r50_is_a_resnet50(tmp_path):
    m = build_target_model("deeplabv2-r50", 8, torch.randn(K, 8), None, base_channels=4, warn_random_init=False)
    assert m.backbone.depth == 50 and len(m.backbone.layer3) == 6
    assert json.loads(json.dumps(m.meta))["name"] == "deeplabv2-r50"
