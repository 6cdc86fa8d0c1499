"""benchmarks/toyworld_plus.py at toy size: every zero-shot row, both backbones, the switch snapshot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import toyworld_plus  # noqa: E402
from maskclip.toyworld.pretrain import PretrainConfig, pretrain, save_backbone  # noqa: E402


@pytest.mark.slow
def test_zero_shot_ladder_runs_end_to_end_and_reports_the_switch(tmp_path):
    torch.set_num_threads(1)
    state, report = pretrain(PretrainConfig(scenes=16, steps=2, batch_size=4, size=32, width=4, val_scenes=4),
                             progress=False)
    save_backbone(tmp_path / "bb.pt", state, report)
    argv = ["--only", "zero-shot", "--iterations", "20", "--train-images", "8", "--scenes", "3", "--width", "4",
            "--batch-size", "2", "--student-size", "32", "--pretrained", str(tmp_path / "bb.pt"), "--threads", "1",
            "--workers", "0", "--out", str(tmp_path / "run")]
    code = toyworld_plus.main(argv)
    assert code in (0, 1)  # 1: a claim failed (these networks are far too small to learn anything)
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    names = {f"MaskCLIP+ {z}@{b}" for z in toyworld_plus.ZERO_SHOT for b in toyworld_plus.BACKBONES}
    assert names | {"MaskCLIP teacher"} == set(r["results"])
    assert r["training"]["switch_iteration"] == 1  # round(0.1 * 20) - 1 = 1: the authors' counter
    for b in toyworld_plus.BACKBONES:  # guided and guided+self share the network at the switch
        acc = r["restricted_accuracy_at_switch"]
        assert acc[f"guided@{b}"] == acc[f"guided+self@{b}"] and 0 <= acc[f"guided@{b}"] <= 1
    assert (tmp_path / "run" / "guided@pretrained" / "model-iter1.pt").is_file()
    seen = json.loads((tmp_path / "run" / "seen-only@pretrained" / "run.json").read_text())
    assert seen["train_config"]["self_train_after"] is None
    # a second call trains nothing again: every run is finished with the same settings
    assert toyworld_plus.main(argv) == code
