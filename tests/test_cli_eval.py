"""`maskclip eval` and `maskclip robustness` end to end on the real samples (random-weight model)."""

from __future__ import annotations

import json

import pytest
import torch

from maskclip.cli import main


@pytest.fixture(scope="module")
def tiny_weights(tiny_vit, tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    torch.save(tiny_vit.state_dict(), path)
    return path


FAST = ("--templates", "single", "--size", "96", "--quiet")


def test_eval_coco_object_end_to_end_and_resume(shared_data, tiny_weights, tmp_path, capsys):
    out = tmp_path / "coco"
    args = ["eval", "--dataset", "coco-object", "--root", str(shared_data / "coco-val2017-mini"), "--weights",
            str(tiny_weights), "--limit", "4", "--out", str(out), "--save-vis", "2", *FAST]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["num_images"] == 4 and len(report["classes"]) == 81 and report["classes"][0] == "background"
    assert report["settings"]["protocol"] == "paper" and report["settings"]["config"]["size"] == [96, 96]
    assert (out / "report.md").read_text().count("\n| ") >= 81
    assert len(list((out / "vis").glob("*.png"))) == 2
    state = json.loads((out / "state.json").read_text())
    assert len(state["done"]) == 4
    assert main(args) == 0  # resumed: every image is done, nothing is recomputed
    again = json.loads((out / "report.json").read_text())
    assert again["timing"]["seconds"] == report["timing"]["seconds"] and again["metrics"] == report["metrics"]


def test_eval_camvid_later_protocol_and_unseen(shared_data, tiny_weights, tmp_path):
    out = tmp_path / "cv"
    assert main(["eval", "--dataset", "camvid", "--root", str(shared_data / "camvid"), "--weights",
                 str(tiny_weights), "--protocol", "later", "--limit", "2", "--unseen", "car,pedestrian",
                 "--out", str(out), "--templates", "single", "--quiet"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["settings"]["config"]["mode"] == "slide" and r["settings"]["config"]["logit_scale"] == 40
    assert {"mIoU_seen", "mIoU_unseen", "hIoU"} <= set(r["metrics"])


def test_eval_errors_name_the_problem(tiny_weights, tmp_path):
    with pytest.raises(SystemExit, match="unknown dataset"):
        main(["eval", "--dataset", "pascal-parts", "--root", str(tmp_path), "--weights", str(tiny_weights)])
    with pytest.raises(SystemExit, match=str(tmp_path)):
        main(["eval", "--dataset", "camvid", "--root", str(tmp_path), "--weights", str(tiny_weights)])


def test_robustness_table(shared_data, tiny_weights, tmp_path, capsys):
    out = tmp_path / "rob"
    assert main(["robustness", "--dataset", "camvid", "--root", str(shared_data / "camvid"), "--weights",
                 str(tiny_weights), "--limit", "2", "--corruptions", "gaussian_noise,jpeg_compression",
                 "--severities", "1,5", "--out", str(out), *FAST]) == 0
    table = (out / "robustness.md").read_text()
    assert "| gaussian_noise |" in table and "severity 5" in table
    data = json.loads((out / "robustness.json").read_text())
    assert set(data["mIoU"]) == {"none", "gaussian_noise", "jpeg_compression"}
    assert set(data["mIoU"]["gaussian_noise"]) == {"1", "5"}
