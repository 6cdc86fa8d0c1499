"""`maskclip eval` and `maskclip robustness` end to end on the real samples (random-weight model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from maskclip.cli import main


@pytest.fixture(scope="module")
def tiny_weights(tiny_vit, tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    torch.save(tiny_vit.state_dict(), path)
    return path


FAST = ("--templates", "single", "--size", "96", "--quiet")


@pytest.mark.slow
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


def test_eval_errors_name_the_problem(tiny_weights, tmp_path, capsys):
    assert main(["eval", "--dataset", "pascal-parts", "--root", str(tmp_path), "--weights", str(tiny_weights)]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["eval", "--dataset", "camvid", "--root", str(tmp_path), "--weights", str(tiny_weights)]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def _strict(text: str) -> dict:
    def refuse(name: str):
        raise AssertionError(f"report.json holds {name}: not strict JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("device", ["cuda:99", "gpu"])
def test_eval_and_robustness_check_the_device_first(shared_data, tiny_weights, tmp_path, capsys, device):
    for cmd in ("eval", "robustness"):
        assert main([cmd, "--dataset", "camvid", "--root", str(shared_data / "camvid"), "--weights",
                     str(tiny_weights), "--device", device, "--out", str(tmp_path / cmd), *FAST]) == 2
        err = capsys.readouterr().err.strip()
        assert "--device" in err and len(err.splitlines()) == 1
        assert not (tmp_path / cmd / "state.json").exists()


def test_a_resumed_eval_with_another_limit_never_reports_the_old_metrics(shared_data, tiny_weights, tmp_path):
    out = tmp_path / "cv"
    base = ["eval", "--dataset", "camvid", "--root", str(shared_data / "camvid"), "--weights", str(tiny_weights),
            "--out", str(out), *FAST]
    assert main([*base, "--limit", "3"]) == 0
    three = _strict((out / "report.json").read_text())
    assert main([*base, "--limit", "1"]) == 0
    one = _strict((out / "report.json").read_text())
    assert three["num_images"] == 3 and one["num_images"] == 1
    assert main([*base, "--limit", "3"]) == 0  # and back: a fresh run, not a mix of the two
    assert _strict((out / "report.json").read_text())["metrics"] == three["metrics"]


def test_report_has_no_nan_and_says_why_a_value_is_missing(tiny_weights, tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, 2, (32, 32)).astype(np.uint8)).save(root / "labels" / f"{i}.png")
    out = tmp_path / "ev"
    assert main(["eval", "--dataset", "folder", "--root", str(root), "--classes", "cat,dog,tree", "--weights",
                 str(tiny_weights), "--out", str(out), *FAST]) == 0
    report = _strict((out / "report.json").read_text())
    assert report["metrics"]["Acc"][2] is None  # "tree" is in no ground truth: its accuracy is undefined
    assert "undefined on these images" in (out / "report.md").read_text()


def test_eval_records_the_same_identity_as_segment(tiny_weights, shared_data, tmp_path):
    out = tmp_path / "cv"
    assert main(["eval", "--dataset", "camvid", "--root", str(shared_data / "camvid"), "--weights",
                 str(tiny_weights), "--limit", "1", "--out", str(out), *FAST]) == 0
    s = json.loads((out / "report.json").read_text())["settings"]
    assert s["model"] == str(tiny_weights) and len(s["model_sha256"]) == 64 and s["kind"] == "maskclip"


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
