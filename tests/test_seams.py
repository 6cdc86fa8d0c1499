"""The seams: one predictor contract, models that carry their recommended settings, options generated from
the config, the evaluation loop usable in memory, the MaskCLIP+ training as a library call."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import numpy as np
import pytest
import torch
from PIL import Image

from maskclip.cli import build_parser, main
from maskclip.clip.weights import bundled_models
from maskclip.data.image_io import write_png_atomic
from maskclip.dense import MaskCLIPConfig, MaskCLIPPredictor
from maskclip.device import resolve_precision
from maskclip.eval.loop import evaluate_samples
from maskclip.eval.metrics import ConfusionMatrix
from maskclip.predict import Predictor, load_predictor, predictor_identity
from maskclip.toyworld.evaluate import heldout_scenes
from maskclip.toyworld.world import CLASSES
from maskclip.vocab import Vocabulary

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory):
    """Six held-out toy scenes as an images/labels folder dataset."""
    root = tmp_path_factory.mktemp("toy")
    scenes = heldout_scenes(6)
    for i, s in enumerate(scenes):
        write_png_atomic(root / "images" / f"{i}.png", s.image)
        write_png_atomic(root / "labels" / f"{i}.png", s.labels.astype(np.uint8))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root, scenes


def test_a_bundled_model_carries_its_recommended_settings_everywhere(toy_folder, tmp_path):
    root, scenes = toy_folder
    rec = dict(bundled_models()["toy-rn"].recommended)
    templates = list(rec.pop("templates"))
    p = load_predictor("toy-rn", "cpu")
    # the recorded settings are the recommended ones, with the precision this machine runs (auto resolved)
    assert p.config == replace(MaskCLIPConfig(**rec), dtype=resolve_precision("auto", torch.device("cpu")))
    assert list(p.templates) == templates
    assert (p.config.readout, p.config.output_stride, p.config.size) == ("value-only", 16, (128, 128))
    assert MaskCLIPPredictor("toy-rn", device="cpu").config == p.config  # the Python API the same way
    assert load_predictor("toy-rn", "cpu", overrides={"readout": "authors"}).config.readout == "authors"

    out = tmp_path / "seg"
    assert main(["segment", str(root / "images"), "--model", "toy-rn", "--classes", str(root / "classes.txt"),
                 "--out", str(out), "--quiet"]) == 0
    meta = json.loads((out / "labels" / "0.json").read_text())
    assert meta["settings"]["size"] == [128, 128] and meta["settings"]["readout"] == "value-only"
    assert meta["templates"] == templates
    vocab = Vocabulary.of(list(CLASSES))
    for i, s in enumerate(scenes):  # the command's labels are the predictor's
        p.set_image(s.image)
        got = np.asarray(Image.open(out / "labels" / f"{i}.png"))
        assert np.array_equal(got, p.predict(vocab, return_probs=False).labels)

    ev = tmp_path / "ev"
    assert main(["eval", "--dataset", "folder", "--root", str(root), "--classes", str(root / "classes.txt"),
                 "--model", "toy-rn", "--out", str(ev), "--quiet"]) == 0
    report = json.loads((ev / "report.json").read_text())
    assert report["settings"]["protocol"] == "model" and report["settings"]["config"]["output_stride"] == 16
    cm = evaluate_samples(p, ((i, str(i), s.image, s.labels) for i, s in enumerate(scenes)), vocab)
    assert report["metrics"]["mIoU"] == pytest.approx(cm.compute()["mIoU"], abs=1e-12)
    assert report["metrics"]["mIoU"] > 0.6  # the toy CLIP at its own settings, not at 512 px


def test_both_predictors_keep_one_contract(tiny_vit):
    from maskclip.plus.models import build_target_model
    from maskclip.plus.predictor import PlusPredictor

    torch.manual_seed(0)
    net = build_target_model("light-r18", 32, torch.randn(3, 32), None, base_channels=4, head_channels=8,
                             warn_random_init=False)
    image = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    vocab = Vocabulary.of(["cat", "dog"], background=["sky"], threshold=0.6)
    for p in (MaskCLIPPredictor(tiny_vit, device="cpu", templates="single", size=(64, 64)),
              PlusPredictor(net, device="cpu", clip=tiny_vit, templates="single")):
        assert isinstance(p, Predictor)
        p.set_image(image)
        pred = p.predict(vocab)
        assert pred.classes == ["cat", "dog", "background"] and pred.labels.shape == (40, 48)
        low = pred.probs.max(0) < 0.6
        assert (pred.labels[low] == 2).all()
        assert predictor_identity(p)["kind"] in ("maskclip", "maskclip+")


def test_every_config_option_is_generated_with_its_default():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for cmd in ("segment", "label", "eval", "robustness", "train"):
        text = " ".join(sub.choices[cmd].format_help().split())
        for f in fields(MaskCLIPConfig):
            meta = f.metadata.get("cli")
            if meta is None:
                continue
            flag = meta.get("flag") or "--" + f.name.replace("_", "-")
            if cmd == "train" and f.name == "mode":
                flag = "--teacher-mode"
            assert flag in text, (cmd, flag)
        assert "(default: authors" in text and "(default: 2048,512" in text


def test_old_flags_still_work_as_aliases(tiny_vit, tmp_path):
    from maskclip.commands.common import overrides_from_args

    p = sub_parser("segment")
    args = p.parse_args(["x.png", "--classes", "a,b", "--out", "o", "--path", "value-only", "--stride", "64",
                         "--dtype", "fp32", "--dense-stride", "32", "--no-ks"])
    assert overrides_from_args(args) == {"readout": "value-only", "step": 64, "dtype": None, "output_stride": None,
                                         "ks": False}
    assert overrides_from_args(p.parse_args(["x.png", "--classes", "a", "--out", "o"])) == {}


def sub_parser(name: str):
    return next(a for a in build_parser()._actions if a.dest == "command").choices[name]


def test_the_evaluation_loop_runs_in_memory(tiny_vit):
    p = MaskCLIPPredictor(tiny_vit, device="cpu", templates="single", size=(64, 64))
    rng = np.random.default_rng(0)
    samples = [(i, f"s{i}", (rng.random((32, 40, 3)) * 255).astype(np.uint8), rng.integers(0, 2, (32, 40)))
               for i in range(3)]
    vocab = Vocabulary.of(["cat", "dog"])
    cm = evaluate_samples(p, samples, vocab)
    ref = ConfusionMatrix(2)
    for _, _, image, label in samples:
        p.set_image(image)
        ref.update(p.predict(["cat", "dog"], return_probs=False).labels, label)
    assert np.array_equal(cm.matrix, ref.matrix) and cm.matrix.sum() == 3 * 32 * 40


def test_packaged_lists_stay_as_published_and_user_lists_follow_the_name_rule(tmp_path, capsys):
    from maskclip.vocab import parse_vocabulary

    coco = parse_vocabulary("coco_object")  # "bed" is in its background class and a class of its own
    assert len(coco.classes) == 81 and coco.allow_shared
    with pytest.raises(ValueError, match="'bed'"):
        parse_vocabulary("wall, bed, cat, bed")
    with pytest.raises(ValueError, match="both a class and a --background"):
        parse_vocabulary("cat,dog", "sky,dog")
    assert replace(MaskCLIPConfig(), step=56).step == 56
