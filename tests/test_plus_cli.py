"""`maskclip train` end to end on tiny toy-world images with a tiny random CLIP teacher, and MaskCLIP+
checkpoints through `maskclip segment` / `load_predictor` (trained and new vocabularies)."""

from __future__ import annotations

import json
import os
import re
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import randomize_, tiny_config
from maskclip.cli import main
from maskclip.clip.model import CLIP
from maskclip.clip.weights import load_clip
from maskclip.dense import MaskCLIP, MaskCLIPConfig, build_text_classifier
from maskclip.dense.preprocess import normalize
from maskclip.normalization import pixel_mean_std
from maskclip.plus.formats import load_checkpoint
from maskclip.plus.models import load_target_model
from maskclip.plus.predictor import PlusPredictor, is_plus_checkpoint
from maskclip.plus.teacher import MaskCLIPTeacher
from maskclip.predict import load_predictor
from maskclip.toyworld import CLASSES, World, WorldConfig

SIZE = 32
IMAGENET_MEAN, IMAGENET_STD = pixel_mean_std("imagenet")


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """6 toy-world scenes (images + full ground truth), the class file and a tiny CLIP checkpoint."""
    root = tmp_path_factory.mktemp("toy")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    w = World(0, WorldConfig(size=SIZE))
    for i in range(6):
        s = w.scene(i, "train")
        Image.fromarray(s.image).save(root / "images" / f"s{i}.png")
        Image.fromarray(s.labels.astype(np.uint8)).save(root / "labels" / f"s{i}.png")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    torch.manual_seed(0)
    clip = randomize_(CLIP(tiny_config(vit=True)), seed=3)
    torch.save(clip.state_dict(), root / "clip.pt")
    return root


def train_args(world, out, *extra):
    return ["train", "--images", str(world / "images"), "--classes", str(world / "classes.txt"),
            "--target", "light-r18", "--pretrained", "none", "--width", "8", "--head-channels", "16",
            "--output-stride", "8", "--batch-size", "2", "--crop-size", str(SIZE), "--scale", f"{SIZE},{SIZE}",
            "--weights", str(world / "clip.pt"), "--templates", "single", "--normalize", "clip", "--resize", "none",
            "--out", str(out), "--workers", "0", "--log-every", "1", "--quiet", *extra]


def fails(capsys, argv, pattern):
    """The command exits with status 2 and one line on stderr that matches `pattern` (no traceback)."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err) and "Traceback" not in err, err


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "af"
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        assert main(train_args(world, out, "--iterations", "3", "--checkpoint-every", "2")) == 0
    return out


def test_train_writes_checkpoint_model_log_and_run_record(trained):
    log = records(trained / "log.jsonl")
    assert [r["iter"] for r in log] == [1, 2, 3]
    for r in log:
        assert np.isfinite(r["loss"]) and r["loss"] > 0 and r["lr"] > 0 and r["images_per_s"] > 0
        assert r["source"] == "teacher" and len(r["class_hist"]) == len(CLASSES)
        assert sum(r["class_hist"]) > 0 and 0 < r["labelled_fraction"] <= 1
    assert log[0]["lr"] > log[-1]["lr"]  # poly decay
    ck = load_checkpoint(trained / "checkpoint.pt")
    assert ck["iteration"] == 3 and ck["config"]["mode"] == "annotation-free"
    net = load_target_model(trained / "model.pt")
    assert net.meta["class_names"] == list(CLASSES) and net.meta["classes"] == [[c] for c in CLASSES]
    assert net.meta["templates"] == ["a photo of a {}."]
    assert net.meta["clip"]["name"].endswith("clip.pt") and len(net.meta["clip"]["sha256"]) == 64
    assert net.num_classes == len(CLASSES)
    run = json.loads((trained / "run.json").read_text())
    assert run["target"] == "light-r18" and run["train_config"]["iterations"] == 3


def test_existing_checkpoint_needs_resume_and_resume_continues(world, trained, tmp_path, capsys):
    fails(capsys, train_args(world, trained, "--iterations", "3"), "--resume")
    out = tmp_path / "copy"
    out.mkdir()
    for name in ("checkpoint.pt", "run.json", "log.jsonl"):
        (out / name).write_bytes((trained / name).read_bytes())
    assert main(train_args(world, out, "--iterations", "5", "--resume")) == 0
    assert [r["iter"] for r in records(out / "log.jsonl")] == [1, 2, 3, 4, 5]
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 5
    fails(capsys, train_args(world, out, "--iterations", "6", "--resume", "--mode", "zero-shot", "--unseen", "zebra",
                             "--labels", str(world / "labels"), "--suppress-unseen"), "different mode")


def test_sigterm_then_resume_reproduces_the_uninterrupted_run(world, tmp_path, monkeypatch):
    common = ("--iterations", "4", "--checkpoint-every", "100", "--self-train-after", "0.5", "--self-train-switch",
              "exact")
    assert main(train_args(world, tmp_path / "straight", *common)) == 0
    calls = {"n": 0}
    original = MaskCLIPTeacher.__call__

    def stop_on_second_call(self, x):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # trainer finishes the iteration, checkpoints, returns
        return original(self, x)

    monkeypatch.setattr(MaskCLIPTeacher, "__call__", stop_on_second_call)
    assert main(train_args(world, tmp_path / "cut", *common)) == 143
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["iteration"] == 2
    assert not (tmp_path / "cut" / "model.pt").exists()
    assert main(train_args(world, tmp_path / "cut", *common, "--resume")) == 0
    a = load_target_model(tmp_path / "straight" / "model.pt").state_dict()
    b = load_target_model(tmp_path / "cut" / "model.pt").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    srcs = [r["source"] for r in records(tmp_path / "cut" / "log.jsonl")]
    assert srcs == ["teacher", "teacher", "self", "self"]


def test_zero_shot_guard_fails_loudly_on_leaking_ground_truth(world, tmp_path, capsys):
    args = train_args(world, tmp_path / "zs", "--mode", "zero-shot", "--labels", str(world / "labels"),
                      "--unseen", "zebra,leopard", "--iterations", "2")
    labels = np.stack([np.asarray(Image.open(p)) for p in sorted((world / "labels").glob("*.png"))])
    assert np.isin(labels, [CLASSES.index("zebra"), CLASSES.index("leopard")]).any()  # the leak is real
    fails(capsys, args, r"leakage.*unseen class id\(s\) \[(5|6)")
    assert not (tmp_path / "zs" / "checkpoint.pt").exists()
    assert main(args + ["--suppress-unseen"]) == 0
    hist = np.array([r["class_hist"] for r in records(tmp_path / "zs" / "log.jsonl")]).sum(0)
    assert hist.sum() > 0
    net = load_target_model(tmp_path / "zs" / "model.pt")
    assert net.meta["mode"] == "zero-shot" and net.meta["unseen"] == ["zebra", "leopard"]
    # the seen-only baseline: no teacher, unseen pixels never targeted
    assert main(train_args(world, tmp_path / "seen", "--mode", "zero-shot", "--labels", str(world / "labels"),
                           "--unseen", "zebra,leopard", "--suppress-unseen", "--no-teacher",
                           "--iterations", "2")) == 0
    log = records(tmp_path / "seen" / "log.jsonl")
    assert {r["source"] for r in log} == {"gt"}
    assert all(r["class_hist"][5] == 0 and r["class_hist"][6] == 0 for r in log)


def test_unknown_unseen_name_and_missing_labels_are_reported(world, tmp_path, capsys):
    fails(capsys, train_args(world, tmp_path / "x", "--mode", "zero-shot", "--labels", str(world / "labels"),
                             "--unseen", "unicorn"), "--unseen: 'unicorn'")
    fails(capsys, train_args(world, tmp_path / "x", "--mode", "zero-shot", "--unseen", "zebra"), "needs ground truth")


def test_precomputed_pseudo_labels_from_maskclip_label(world, tmp_path, capsys):
    pseudo = tmp_path / "pseudo"
    assert main(["label", str(world / "images"), "--classes", str(world / "classes.txt"), "--weights",
                 str(world / "clip.pt"), "--templates", "single", "--normalize", "clip", "--resize", "none",
                 "--out", str(pseudo), "--quiet"]) == 0
    assert main(train_args(world, tmp_path / "pf", "--pseudo-dir", str(pseudo), "--iterations", "2")) == 0
    assert {r["source"] for r in records(tmp_path / "pf" / "log.jsonl")} == {"pseudo-file"}
    fails(capsys, train_args(world, tmp_path / "pf2", "--pseudo-dir", str(tmp_path), "--iterations", "2"), "index.json")


def test_segment_with_a_trained_model_uses_its_classes_and_new_vocabularies(world, trained, tmp_path):
    img = world / "images" / "s0.png"
    out = tmp_path / "seg"
    assert main(["segment", str(img), "--model", str(trained / "model.pt"), "--classes", str(world / "classes.txt"),
                 "--resize", "none", "--out", str(out), "--quiet"]) == 0
    rec = json.loads((out / "labels" / "s0.json").read_text())
    assert rec["classes"] == list(CLASSES) and rec["kind"] == "maskclip+"
    assert rec["model"].endswith("model.pt") and len(rec["model_sha256"]) == 64
    labels = np.asarray(Image.open(out / "labels" / "s0.png"))
    assert labels.shape == (SIZE, SIZE) and labels.max() < len(CLASSES)

    # the trained classes are scored by the stored classifier: identical to the network's own argmax
    net = load_target_model(trained / "model.pt").eval()
    image = np.array(Image.open(img).convert("RGB"))
    x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        want = net(x).argmax(1)[0].numpy()
    np.testing.assert_array_equal(labels, want)

    # a new vocabulary: embedded with the recorded CLIP + templates, then the same network
    new = ["cat", "red zebra", "blue sky"]
    out2 = tmp_path / "seg2"
    assert main(["segment", str(img), "--model", str(trained / "model.pt"), "--classes", ",".join(new),
                 "--resize", "none", "--out", str(out2), "--quiet"]) == 0
    assert json.loads((out2 / "labels" / "s0.json").read_text())["classes"] == new
    clip = load_clip(world / "clip.pt")
    emb = build_text_classifier(clip, new, ["a photo of a {}."]).embeddings
    net.set_classifier(emb)
    with torch.no_grad():
        want2 = net(x).argmax(1)[0].numpy()
    got2 = np.asarray(Image.open(out2 / "labels" / "s0.png"))
    np.testing.assert_array_equal(got2, want2)
    assert set(np.unique(got2)) <= {0, 1, 2}


def test_load_predictor_dispatches_and_is_plus_checkpoint(world, trained, tmp_path):
    assert is_plus_checkpoint(trained / "model.pt") and is_plus_checkpoint(trained / "checkpoint.pt")
    (tmp_path / "notes.txt").write_text("maskclip-plus-model/1")
    torch.save({"note": "maskclip-plus-model/2"}, tmp_path / "mention.pt")  # the tag as a value, not the format
    for p in (world / "clip.pt", tmp_path, tmp_path / "notes.txt", tmp_path / "missing.pt", "ViT-B/16",
              tmp_path / "mention.pt"):
        assert not is_plus_checkpoint(p)
    cfg = MaskCLIPConfig(resize="none", normalize="clip")
    p = load_predictor(str(trained / "model.pt"), "cpu", "single", cfg)
    assert isinstance(p, PlusPredictor)
    q = load_predictor(str(world / "clip.pt"), "cpu", "single", cfg)
    assert type(q).__name__ == "MaskCLIPPredictor"
    image = np.asarray(Image.open(world / "images" / "s1.png").convert("RGB"))
    p.set_image(image)
    pred = p.predict(list(CLASSES), background=["ground", "tree"], threshold=0.5)
    assert pred.classes == list(CLASSES) + ["background"] and pred.probs.shape == (len(CLASSES) + 1, SIZE, SIZE)
    np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-5)
    low = pred.probs.max(0) < 0.5
    assert (pred.labels[low] == len(CLASSES)).all()
    # synonyms: a class's score is the max over its names
    syn = p.predict([["zebra", "striped animal"], "sand"], return_probs=False)
    assert syn.classes == ["zebra", "sand"] and syn.probs is None


def test_teacher_batches_whole_crops_exactly_like_the_engine(world):
    clip = load_clip(world / "clip.pt")
    clf = build_text_classifier(clip, list(CLASSES), "single")
    g = torch.Generator().manual_seed(0)
    crops255 = torch.rand(3, 3, SIZE, SIZE, generator=g) * 255
    x = (crops255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for over in (dict(normalize="clip", resize="none"), dict(normalize="imagenet", resize="fit", size=(48, 48)),
                 dict(normalize="clip", resize="fit", ks=True, pd=True, scales=(32, 48))):
        engine = MaskCLIP(clip, MaskCLIPConfig(**over))
        teacher = MaskCLIPTeacher(engine, clf, IMAGENET_MEAN, IMAGENET_STD)
        assert teacher.renormalize == (over["normalize"] == "clip")
        got = teacher(x)
        want = engine.logits(normalize(crops255, engine.config.normalize), clf)
        assert got.shape == (3, len(CLASSES), SIZE, SIZE)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------- recipes

MODEL_ZOO = [  # the authors' released MaskCLIP+ configs (model-zoo page), each a recipe
    "maskclip_plus_r50_deeplabv2_r101-d8_512x512_2k_voc12aug_20",
    "maskclip_plus_r50x16_deeplabv2_r101-d8_512x512_2k_voc12aug_20",
    "maskclip_plus_r50_deeplabv2_r101-d8_480x480_4k_pascal_context_59",
    "maskclip_plus_r50x16_deeplabv2_r101-d8_480x480_4k_pascal_context_59",
    "maskclip_plus_vit16_deeplabv2_r101-d8_480x480_4k_pascal_context_59",
    "maskclip_plus_r50_deeplabv2_r101-d8_512x512_8k_coco-stuff164k",
    "maskclip_plus_r50x16_deeplabv2_r101-d8_512x512_8k_coco-stuff164k",
    "maskclip_plus_vit16_deeplabv2_r101-d8_512x512_8k_coco-stuff164k",
    "maskclip_plus_r50_deeplabv2_r101-d8_512x512_20k_voc12aug_20",
    "maskclip_plus_r50_deeplabv3plus_r101-d8_480x480_40k_pascal_context",
    "maskclip_plus_r50_deeplabv2_r101-d8_512x512_80k_coco-stuff164k",
]


def printed(capsys, *argv):
    capsys.readouterr()
    assert main(["train", *argv, "--print"]) == 0
    return json.loads(capsys.readouterr().out)


def test_recipe_lists_every_model_zoo_row(capsys):
    from maskclip.plus.recipes import RECIPES, get_recipe

    capsys.readouterr()
    assert main(["train", "--recipe"]) == 0
    table = capsys.readouterr().out
    for config in MODEL_ZOO:
        r = get_recipe(config)  # by the authors' config name
        assert r.name in table and r.config.endswith(config + ".py") and r.published in table
    assert len(RECIPES) == len(MODEL_ZOO) + 1  # + the released VOC ViT-B/16 config, not in the table


def test_recipe_print_resolves_the_authors_settings_and_options_override(capsys):
    d = printed(capsys, "--recipe", "zs-context60-rn50", "--root", "data/VOCdevkit")
    t = d["train"]
    assert d["recipe"]["config"].endswith("_480x480_40k_pascal_context.py")
    assert (t["iterations"], t["lr"], t["weight_decay"], t["crop_size"], t["scale"]) == (40000, 0.004, 1e-4,
                                                                                          [480, 480], [520, 520])
    assert (t["mode"], t["loss_norm"], t["switch"], t["self_train_source"], t["teacher_classes"]) == (
        "zero-shot", "all", "authors", "shared", "unseen")
    assert t["self_train_after"] == 0.1 and t["suppress_unseen"] and t["batch_size"] == 16
    assert d["target"]["name"] == "deeplabv3plus-r101" and d["target"]["learned_background"] == "background"
    assert d["teacher"]["clip"] == "RN50" and d["data"]["dataset"] == "context60"
    tc = d["teacher"]["config"]
    assert (tc["normalize"], tc["resize"], tc["ks"], tc["pd"], tc["readout"]) == ("imagenet", "none", False, False,
                                                                                   "authors")
    assert len(d["unseen"]) == 10 and "cow" in d["unseen"] and "background" not in d["unseen"]
    over = printed(capsys, "--recipe", "zs-context60-rn50", "--root", "x", "--lr", "0.02", "--loss-norm", "labelled")
    assert over["train"]["lr"] == 0.02 and over["train"]["loss_norm"] == "labelled"
    assert over["train"]["weight_decay"] == 1e-4  # the rest stays the recipe's
    vit = printed(capsys, "--recipe", "af-context59-vit16", "--root", "x")
    assert vit["target"]["name"] == "deeplabv2-r50" and vit["teacher"]["clip"] == "ViT-B/16"
    assert vit["train"]["gt_ignore_mask"] and vit["train"]["self_train_after"] is None
    plain = printed(capsys, "--images", "x", "--classes", "a,b")
    assert plain["train"]["loss_norm"] == "labelled" and plain["target"]["name"] == "deeplabv2-r101"


def test_recipe_job_is_the_command_lines_library_call(capsys):
    """`Recipe.job(root, out)` (the Python API) resolves to what `maskclip train --recipe ... --print` shows."""
    from dataclasses import asdict

    from maskclip.plus.recipes import RECIPES

    for name in ("zs-context60-rn50", "af-voc20-vit16", "zs-cocostuff-rn50"):
        job = RECIPES[name].job("data/x", "runs/y")
        cli = printed(capsys, "--recipe", name, "--root", "data/x", "--out", "runs/y")
        ours = json.loads(json.dumps(asdict(job), default=str))
        ours["train"].pop("resume"), cli["train"].pop("resume")  # the library resumes by default, the CLI on --resume
        for part in ("data", "target", "train"):
            assert ours[part] == cli[part], (name, part)
        assert list(job.unseen) == cli["unseen"] and ours["teacher"]["clip"] == cli["teacher"]["clip"]
        assert ours["teacher"]["config"] == cli["teacher"]["config"]


def test_unknown_recipe_is_one_line(capsys):
    fails(capsys, ["train", "--recipe", "voc-best", "--print"], "unknown recipe 'voc-best'")


def test_a_checkpoint_and_its_report_record_the_recipe(world, tmp_path):
    out = tmp_path / "r"
    args = train_args(world, out, "--recipe", "af-voc20-rn50", "--labels", str(world / "labels"), "--iterations",
                      "2", "--batch-size", "2")
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        assert main(args) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"] == "af-voc20-rn50" and run["train_config"]["loss_norm"] == "all"
    assert run["train_config"]["gt_ignore_mask"] and run["target"] == "light-r18"  # the command line wins
    assert load_target_model(out / "model.pt").meta["recipe"] == "af-voc20-rn50"
    seg = tmp_path / "seg"
    assert main(["segment", str(world / "images" / "s0.png"), "--model", str(out / "model.pt"), "--classes",
                 "sky,grass", "--out", str(seg), "--quiet"]) == 0
    assert json.loads((seg / "labels" / "s0.json").read_text())["recipe"] == "af-voc20-rn50"


def test_learned_background_is_trained_saved_and_scores_its_name(world, tmp_path):
    """--learned-background: the class's row is learned (the rest frozen) and the predictor uses it whenever
    a vocabulary names that class."""
    out = tmp_path / "bg"
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        assert main(train_args(world, out, "--iterations", "2", "--learned-background", "sky")) == 0
    net = load_target_model(out / "model.pt")
    sky = CLASSES.index("sky")
    assert net.meta["learned_classes"] == [sky]
    learned = net.classifier.effective_weight()[sky].detach()
    assert not torch.allclose(learned, net.classifier.weight[sky])  # not the text embedding
    p = PlusPredictor(out / "model.pt", device="cpu", clip=str(world / "clip.pt"))
    trained = p.classifier(list(CLASSES))
    assert torch.equal(trained.embeddings[sky], learned)
    other = p.classifier(["grass", "sky", "boat"])  # a new vocabulary: "sky" still scores with its learned row
    assert torch.allclose(other.embeddings[1], learned) and not torch.allclose(other.embeddings[0], learned)
    assert run_json_field(out, "learned_background") == "sky"


def run_json_field(out, key):
    return json.loads((out / "run.json").read_text())[key]


def test_a_void_mask_recipe_without_ground_truth_says_how_to_go_on(world, tmp_path, capsys):
    fails(capsys, train_args(world, tmp_path / "r", "--recipe", "af-context59-rn50", "--iterations", "1"),
          "--no-gt-ignore-mask")
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
