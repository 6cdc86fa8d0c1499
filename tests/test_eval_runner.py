"""The evaluation loop: streaming metrics, resume, corruptions, pictures, reports, protocols."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from maskclip.data.datasets import open_dataset
from maskclip.dense import MaskCLIPPredictor
from maskclip.eval.loop import Corruption
from maskclip.eval.metrics import ConfusionMatrix
from maskclip.eval.runner import EvalJob, evaluate, protocol


class CountingPredictor(MaskCLIPPredictor):
    calls = 0  # images encoded, one at a time or in batches

    def set_image(self, image):
        type(self).calls += 1
        super().set_image(image)

    def predict_batch(self, images, *args, **kwargs):
        type(self).calls += len(images)
        return super().predict_batch(images, *args, **kwargs)


@pytest.fixture
def folder_dataset(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(5):
        img = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
        lab = rng.integers(0, 3, size=(40, 48)).astype(np.uint8)
        lab[:4] = 255
        Image.fromarray(img).save(tmp_path / "images" / f"im{i}.png")
        Image.fromarray(lab).save(tmp_path / "labels" / f"im{i}.png")
    return open_dataset("folder", tmp_path, classes=["cat", "dog", "tree"])


def _predictor(tiny_vit):
    CountingPredictor.calls = 0
    return CountingPredictor(tiny_vit, device="cpu", templates="single", size=(64, 64))


def test_evaluate_streams_matches_independent_confusion_and_resumes(tiny_vit, folder_dataset, tmp_path):
    p = _predictor(tiny_vit)
    out = tmp_path / "run"
    part = evaluate(p, folder_dataset, out, EvalJob({"model": "tiny"}, limit=2, progress=False, checkpoint_every=1))
    assert part.num_images == 2 and CountingPredictor.calls == 2
    full = evaluate(p, folder_dataset, out, EvalJob({"model": "tiny"}, progress=False))
    assert full.num_images == 5 and CountingPredictor.calls == 5  # the first two were not recomputed
    again = evaluate(p, folder_dataset, out, EvalJob({"model": "tiny"}, progress=False))
    assert CountingPredictor.calls == 5 and again.metrics["mIoU"] == full.metrics["mIoU"]
    # independent: predict every image afresh and accumulate
    cm = ConfusionMatrix(3, 255)
    for s in folder_dataset:
        p.set_image(s.image)
        cm.update(p.predict(folder_dataset.classes, return_probs=False).labels, s.label)
    ref = cm.compute()
    assert full.metrics["mIoU"] == pytest.approx(ref["mIoU"]) and full.metrics["IoU"] == pytest.approx(ref["IoU"])
    assert full.metrics["num_pixels"] == 5 * 36 * 48
    report = json.loads((out / "report.json").read_text())
    assert report["classes"] == ["cat", "dog", "tree"] and report["settings"]["model"] == "tiny"
    md = (out / "report.md").read_text()
    assert "| tree |" in md and f"{100 * full.metrics['mIoU']:.2f}" in md
    # a changed setting starts over
    CountingPredictor.calls = 0
    evaluate(p, folder_dataset, out, EvalJob({"model": "tiny", "x": 1}, limit=1, progress=False))
    assert CountingPredictor.calls == 1


def test_corruption_is_applied_and_deterministic(tiny_vit, folder_dataset, tmp_path):
    p = _predictor(tiny_vit)
    clean = evaluate(p, folder_dataset, tmp_path / "c", EvalJob(progress=False, limit=3))
    noisy = EvalJob(corruption=Corruption("gaussian_noise", 5), progress=False, limit=3)
    a = evaluate(p, folder_dataset, tmp_path / "a", noisy)
    b = evaluate(p, folder_dataset, tmp_path / "b", noisy)
    assert a.metrics["IoU"] == b.metrics["IoU"]
    assert a.metrics["IoU"] != clean.metrics["IoU"]
    assert a.settings["corruption"] == "gaussian_noise" and a.settings["severity"] == 5


def test_save_vis_and_background_threshold_rules(tiny_vit, folder_dataset, tmp_path):
    p = _predictor(tiny_vit)
    evaluate(p, folder_dataset, tmp_path / "v", EvalJob(save_vis=2, progress=False))
    panels = sorted((tmp_path / "v" / "vis").glob("*.png"))
    assert len(panels) == 2
    assert np.asarray(Image.open(panels[0])).shape[1] > 3 * 48  # image | truth | prediction | legend
    with pytest.raises(ValueError, match="background"):
        evaluate(p, folder_dataset, tmp_path / "t", EvalJob(bg_threshold=0.1, progress=False))


def test_background_threshold_sends_unsure_pixels_to_class_zero(tiny_vit, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "labels" / "a.png")
    ds = open_dataset("folder", tmp_path, classes=[["background", "sky", "wall"], ["cat"], ["dog"]])
    r = evaluate(_predictor(tiny_vit), ds, tmp_path / "o", EvalJob(bg_threshold=1.0, progress=False))
    assert r.metrics["pAcc"] == 1.0  # nothing is that sure: all pixels background, which is the truth


def test_protocol_presets():
    paper = protocol("paper", "context59")
    assert paper.config.size == (520, 520) and paper.config.mode == "whole" and paper.config.normalize == "imagenet"
    assert protocol("paper", "cityscapes").config.size == (1024, 512)
    later = protocol("later", "voc21")
    assert later.config.mode == "slide" and later.config.size == (336, 336) and later.config.crop == 224
    assert later.config.step == 112 and later.config.logit_scale == 40 and later.bg_threshold == 0.1
    assert protocol("later", "cityscapes").config.size == (560, 560)
    assert protocol("later", "ade150").bg_threshold is None
    with pytest.raises(ValueError, match="protocol"):
        protocol("fast", "voc21")


def test_camvid_sample_end_to_end(tiny_vit, shared_data, tmp_path):
    ds = open_dataset("camvid", shared_data / "camvid")
    r = evaluate(_predictor(tiny_vit), ds, tmp_path / "cv", EvalJob({"model": "tiny"}, limit=3, progress=False))
    assert r.num_images == 3 and len(r.metrics["IoU"]) == 11 and 0 <= r.metrics["mIoU"] <= 1
