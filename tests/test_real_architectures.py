"""`maskclip segment` on the real ViT-B/16 and RN50 architectures (random weights) over the shared samples."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from maskclip.cli import main
from maskclip.clip.weights import random_clip
from maskclip.data.image_io import read_image, read_label


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["ViT-B/16", "RN50"])
def test_segment_real_architecture_on_shared_images(arch, shared_data, tmp_path):
    imgs = tmp_path / "in"
    imgs.mkdir()
    picks = [next(iter(sorted((shared_data / "camvid" / "val").glob("*.png")))),
             next(iter(sorted((shared_data / "ade20k-val-sample" / "images").glob("*.jpg")))),
             next(iter(sorted((shared_data / "coco-val2017-mini" / "val2017").glob("*.jpg")))),
             next(iter(sorted((shared_data / "cityscapes-val-sample").rglob("*leftImg8bit*.png"))))]
    for p in picks:
        shutil.copy(p, imgs / p.name)
    ckpt = tmp_path / "w.pt"
    torch.save(random_clip(arch, seed=3).state_dict(), ckpt)
    out = tmp_path / "out"
    rc = main(["segment", str(imgs), "--classes", "person,car,road,sky,tree,building", "--weights", str(ckpt),
               "--templates", "single", "--ks", "--pd", "--size", "320", "--out", str(out), "--quiet"])
    assert rc == 0
    for p in picks:
        lab = read_label(out / "labels" / f"{p.stem}.png")
        assert lab.shape == read_image(p).shape[:2] and lab.max() < 6
        meta = json.loads((out / "labels" / f"{p.stem}.json").read_text())
        assert meta["model_sha256"] and meta["settings"]["ks"] and meta["settings"]["pd"]
