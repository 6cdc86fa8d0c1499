"""`maskclip classify-masks` and `maskclip eval --method regions` end to end (files in, files out)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from maskclip.cli import main


@pytest.fixture
def tiny_ckpt(tiny_vit, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_vit.state_dict(), path)
    return path


def _instance_png(path, ids: np.ndarray) -> None:
    Image.fromarray(ids.astype(np.uint8)).save(path)


def test_classify_masks_writes_labels_and_one_record_per_mask(tiny_ckpt, tmp_path, single_thread):
    rng = np.random.default_rng(0)
    imgs, masks = tmp_path / "imgs", tmp_path / "masks"
    imgs.mkdir(), masks.mkdir()
    ids = np.zeros((30, 40), np.uint8)
    ids[:15, :20], ids[15:, :20], ids[:, 30:] = 1, 2, 5  # columns 20..29 belong to no mask
    for stem in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(imgs / f"{stem}.png")
    _instance_png(masks / "a.png", ids)  # b has no mask file: reported, the batch goes on
    out = tmp_path / "out"
    before = {p: p.read_bytes() for p in [*imgs.iterdir(), *masks.iterdir()]}
    args = ["classify-masks", str(imgs), "--masks", str(masks), "--classes", "cat,dog,car", "--weights",
            str(tiny_ckpt), "--out", str(out), "--quiet", "--merge", "mask&crop", "--top-k", "2"]
    assert main(args) == 1
    meta = json.loads((out / "labels" / "a.json").read_text())
    assert [r["id"] for r in meta["regions"]] == [1, 2, 5] and meta["classes"][-1] == "unknown"
    labels = np.asarray(Image.open(out / "labels" / "a.png"))
    for r in meta["regions"]:
        assert (labels[ids == r["id"]] == meta["classes"].index(r["label"])).all() and len(r["top"]) == 2
    assert (labels[:, 20:30] == 3).all() and meta["palette"][3] == [150, 150, 150]  # unknown, in grey
    assert meta["source"]["masks"]["path"] == str((masks / "a.png").resolve())
    assert not (out / "labels" / "b.json").exists()
    assert {p: p.read_bytes() for p in before} == before  # inputs untouched
    # resumed: a is done; a changed mask file is recomputed
    assert main(args) == 1
    ids[:, 30:] = 6
    _instance_png(masks / "a.png", ids)
    assert main(args) == 1
    assert [r["id"] for r in json.loads((out / "labels" / "a.json").read_text())["regions"]] == [1, 2, 6]


def test_classify_masks_refuses_outputs_over_mask_files_and_two_sources(tiny_ckpt, tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(img)
    labels = tmp_path / "out" / "labels"
    labels.mkdir(parents=True)
    _instance_png(labels / "x.png", np.ones((20, 20)))  # where the label PNG of x would go
    base = ["classify-masks", str(img), "--classes", "a,b", "--weights", str(tiny_ckpt), "--out", str(tmp_path / "out")]
    assert main([*base, "--masks", str(labels)]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert main([*base, "--masks", str(labels), "--proposals", "regions"]) == 2
    assert "exactly one of --masks" in capsys.readouterr().err
    assert main([*base, "--proposals", str(tmp_path / "nope.pt")]) == 2
    assert main([*base, "--masks", str(tmp_path / "none")]) == 2


def test_classify_masks_on_coco_images_with_their_official_instances(shared_data, tiny_ckpt, tmp_path):
    coco = shared_data / "coco-val2017-mini"
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    names = sorted(p.name for p in (coco / "val2017").iterdir())[:2]
    for n in names:
        shutil.copy(coco / "val2017" / n, imgs / n)
    ann = json.loads((coco / "annotations" / "instances_val2017.json").read_text())
    out = tmp_path / "out"
    assert main(["classify-masks", str(imgs), "--masks", str(coco / "annotations" / "instances_val2017.json"),
                 "--classes", "coco_object_expanded", "--weights", str(tiny_ckpt), "--out", str(out), "--quiet",
                 "--merge", "pool", "--size", "224"]) == 0
    by_name = {im["file_name"]: im["id"] for im in ann["images"]}
    for n in names:
        meta = json.loads((out / "labels" / f"{n[:-4]}.json").read_text())
        want = [a for a in ann["annotations"] if a["image_id"] == by_name[n]]
        assert sorted(r["id"] for r in meta["regions"]) == sorted(a["id"] for a in want)
        assert len(meta["classes"]) == 82 and meta["classes"][-1] == "unknown"  # 81 + the pixels of no mask
        assert all(r["label"] in meta["classes"][:81] for r in meta["regions"])


def test_eval_with_regions_on_the_shared_data(shared_data, tiny_ckpt, tmp_path):
    out = tmp_path / "ev"
    assert main(["eval", "--dataset", "coco-object", "--root", str(shared_data / "coco-val2017-mini"), "--weights",
                 str(tiny_ckpt), "--method", "regions", "--proposals", "regions", "--merge", "pool", "--limit", "2",
                 "--size", "224", "--out", str(out), "--quiet"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["settings"]["method"] == "regions" and r["settings"]["regions"]["merge"] == "pool"
    assert r["num_images"] == 2 and 0 <= r["metrics"]["mIoU"] <= 1
    assert main(["eval", "--dataset", "coco-object", "--root", str(shared_data / "coco-val2017-mini"), "--weights",
                 str(tiny_ckpt), "--proposals", "regions", "--out", str(out)]) == 2


def test_classify_masks_with_a_proposal_generator_file(tiny_ckpt, tmp_path, single_thread):
    from dataclasses import asdict

    from maskclip.proposals import ProposalConfig, ProposalGenerator, build_proposal_model
    from maskclip.proposals.files import save_model_file

    torch.manual_seed(0)
    cfg = ProposalConfig(width=8, conv_dim=16, mask_dim=16, hidden_dim=16, num_queries=4, dec_layers=1, heads=2,
                         ffn_dim=16)
    net = build_proposal_model(cfg, 2, None, warn_random_init=False)
    gen_path = tmp_path / "props.pt"
    save_model_file(gen_path, net, {"config": asdict(cfg), "seen": ["dog", "tree"], "mean": [123.7, 116.3, 103.5],
                                    "std": [58.4, 57.1, 57.4], "input_size": [64, 64]})
    img = tmp_path / "in" / "x.png"
    img.parent.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "out"
    assert main(["classify-masks", str(img), "--proposals", str(gen_path), "--classes", "cat,dog", "--weights",
                 str(tiny_ckpt), "--out", str(out), "--quiet", "--merge", "crop", "--no-object", "1"]) == 0
    meta = json.loads((out / "labels" / "x.json").read_text())
    proposed = ProposalGenerator.load(gen_path).propose(np.asarray(Image.open(img)))
    assert [r["query"] for r in meta["regions"]] == [r["query"] for r in proposed.records]
    assert meta["proposals"] == str(gen_path) and set(meta["classes"]) <= {"cat", "dog", "unknown"}
