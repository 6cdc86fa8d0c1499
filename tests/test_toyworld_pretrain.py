"""The toy world's "ImageNet": caption words as image-level labels for the MaskCLIP+ student's backbone."""

from __future__ import annotations

import json

import pytest
import torch

from maskclip.plus.models import build_target_model
from maskclip.toyworld import World
from maskclip.toyworld.pretrain import CAPTION_WORDS, PretrainConfig, caption_targets, main, pretrain

pytestmark = pytest.mark.usefixtures("one_thread")


def test_caption_targets_are_the_words_the_caption_names():
    t = caption_targets("water and wall with a purple leopard, a fish and a purple balloon .")
    named = {w for w, v in zip(CAPTION_WORDS, t.tolist()) if v}
    assert named == {"water", "wall", "leopard", "fish", "balloon", "purple"}
    s = World(0).scene(3)
    assert caption_targets(s.caption).sum() >= 1  # every caption names something


def test_pretraining_learns_from_captions_and_the_student_loads_the_backbone(tmp_path):
    config = PretrainConfig(scenes=64, steps=60, batch_size=16, size=32, width=4, val_scenes=32, lr=0.05)
    state, report = pretrain(config, progress=False)
    assert report["final_loss"] < report["first_loss"] - 0.05 and 0 <= report["val"]["class_accuracy"] <= 1
    assert set(state) == set(build_target_model("light-r18", 8, torch.randn(10, 8), None, base_channels=4,
                                                warn_random_init=False).backbone.state_dict())
    out = tmp_path / "bb.pt"
    assert main(["--out", str(out), "--steps", "2", "--scenes", "16", "--width", "4", "--size", "32"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["config"]["width"] == 4
    m = build_target_model("light-r18", 8, torch.randn(10, 8), str(out), output_stride=8, base_channels=4)
    saved = torch.load(out, weights_only=True)
    assert torch.equal(m.backbone.layer4[0].conv1.weight, saved["layer4.0.conv1.weight"])  # dilated, same weights
