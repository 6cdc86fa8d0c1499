"""The toy world, its trainer and the bundled toy CLIP (an end-to-end regression test of the dense path)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskclip.toyworld import CLASSES, COLOURS, HELDOUT_PAIRS, OBJECTS, STUFF, TEMPLATES, World, WorldConfig
from maskclip.toyworld.train import ToyTrainConfig, contrastive_loss, new_model, train, world_phrases, world_token_ids

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "maskclip" / "toyworld" / "weights"
MANIFEST = WEIGHTS / "manifest.json"

torch.set_num_threads(2)


def test_world_is_deterministic_and_seeded():
    a, b = World(0).scene(7), World(0).scene(7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels) and a.caption == b.caption
    c = World(1).scene(7)
    assert not np.array_equal(a.image, c.image)
    d = World(0).scene(7, "test")
    assert not np.array_equal(a.image, d.image)
    assert a.image.shape == (64, 64, 3) and a.image.dtype == np.uint8 and a.labels.shape == (64, 64)


@pytest.mark.parametrize("closeup", [0.0, 1.0])
def test_labels_and_captions_agree(closeup):
    from maskclip.toyworld.world import MIN_FRAME

    world = World(3, WorldConfig(closeup=closeup))
    for i in range(60):
        s = world.scene(i)
        assert s.meta["closeup"] == (closeup == 1.0)
        present = {CLASSES[j] for j in np.unique(s.labels)}
        counts = np.bincount(s.labels.ravel(), minlength=len(CLASSES))
        assert set(s.stuff) <= present and set(s.stuff) <= set(STUFF)
        for stuff in STUFF:  # stuff counts as in view when it covers MIN_FRAME of the picture
            assert (stuff in s.stuff) == (counts[CLASSES.index(stuff)] >= MIN_FRAME * 64 * 64)
            if re.search(rf"\b{stuff}\b", s.caption):
                assert stuff in s.stuff, s.caption
        if s.stuff:  # the ground is always named (the sky or wall when no ground is in view)
            assert s.stuff[-1] in s.caption, s.caption
        for o in s.objects:
            visible = (s.instances == o.instance).sum()
            assert visible == o.visible
            assert np.all(s.labels[s.instances == o.instance] == CLASSES.index(o.category))
            assert o.captioned == (visible > 0 and (visible >= 0.25 * o.area or visible >= MIN_FRAME * 64 * 64))
            if o.captioned:
                assert o.category in present
                assert re.search(rf"\b({o.colour} )?{o.category}\b", s.caption), (s.caption, o)
        # nothing is captioned that is not in the picture
        for cat in OBJECTS:
            if re.search(rf"\b{cat}\b", s.caption):
                assert any(o.category == cat and o.captioned for o in s.objects)
        assert (s.instances == 0).sum() == np.isin(s.labels, [CLASSES.index(c) for c in STUFF]).sum()

    # close-ups name fewer things (often one object and one stuff): sharper evidence of what a texture is called
    def names(caption: str) -> int:
        return len(re.findall(r"\b(" + "|".join(CLASSES) + r")\b", caption))

    mean = np.mean([names(world.scene(i).caption) for i in range(60)])
    assert mean < 3.0 if closeup else mean > 3.5


def test_partial_captions_name_one_thing_in_view():
    world = World(0, WorldConfig(closeup=0.5, partial_captions=1.0))
    names = "|".join(CLASSES)
    for i in range(300):  # includes close-ups filled by objects, with no stuff in view
        s, t = world.scene(i), world.twin(i)
        for scene in (s, t):
            found = re.findall(rf"\b({names})\b", scene.caption)
            assert len(found) == 1, scene.caption
            assert found[0] in scene.stuff or any(o.captioned and o.category == found[0] for o in scene.objects)


def test_heldout_pairs_never_in_training_split():
    world = World(0)
    seen = set()
    for i in range(400):
        s = world.scene(i)
        seen |= {(o.colour, o.category) for o in s.objects}
        for colour, cat in HELDOUT_PAIRS:
            assert f"{colour} {cat}" not in s.caption
    assert not seen & set(HELDOUT_PAIRS)
    assert len(seen) == len(COLOURS) * len(OBJECTS) - len(HELDOUT_PAIRS)
    test = World(0, WorldConfig(heldout=True))
    assert {(o.colour, o.category) for i in range(400) for o in test.scene(i, "test").objects} & set(HELDOUT_PAIRS)


def test_twins_are_hard_negatives():
    world = World(0, WorldConfig(closeup=0.5))
    for i in range(40):
        base, twin = world.scene(i), world.twin(i)
        assert twin.meta["layout"] == base.meta["layout"] and len(twin.objects) == len(base.objects)
        changed = [(a.colour != b.colour) + (a.category != b.category) for a, b in zip(base.objects, twin.objects)]
        assert all(c == 1 for c in changed)  # each object differs in exactly one of colour or category
        assert not {(o.colour, o.category) for o in twin.objects} & set(HELDOUT_PAIRS)
        again = world.twin(i)
        assert np.array_equal(again.image, twin.image) and again.caption == twin.caption




@pytest.mark.parametrize("category", ["zebra", "leopard", "turtle", "fish"])
def test_patterns_carry_their_category_colour_on_any_body_colour(category):
    """A single patch can tell the category (the pattern colour) and the attribute (the body colour)."""
    from maskclip.toyworld.world import PATTERN_COLOURS, render_scene

    pattern = np.array(PATTERN_COLOURS[category], np.float64)
    for k, colour in enumerate(COLOURS):
        rng = np.random.default_rng(k)
        s = render_scene(rng, WorldConfig(noise=0.0), [(colour, category)], stuff=(None, "sand"))
        px = s.image[s.instances == 1].astype(np.float64)
        # the whole image is scaled by one brightness factor in [0.9, 1.1]: find it from the pattern pixels
        dist = np.min([np.abs(px - f * pattern).max(1) for f in np.linspace(0.9, 1.1, 41)], axis=0)
        share = (dist <= 3).mean()
        assert 0.2 < share < 0.8, (category, colour, share)  # pattern and body both visible


def test_stuff_twins_keep_the_objects_and_change_the_stuff():
    world = World(0, WorldConfig(closeup=0.5))
    kinds = {"stuff": 0, "objects": 0}
    differ = 0
    for i in range(60):
        base, twin = world.scene(i), world.twin(i, stuff_share=1.0)
        if base.meta["closeup"]:  # close-ups often show no stuff: their twins change the objects
            assert twin.meta["layout"] == base.meta["layout"]
            kinds["objects"] += 1
            continue
        kinds["stuff"] += 1
        assert [(o.colour, o.category) for o in twin.objects] == [(o.colour, o.category) for o in base.objects]
        (t0, g0), (t1, g1) = base.meta["layout"], twin.meta["layout"]
        assert (t0 != t1) + (g0 != g1) == 1  # exactly one of the two stuff regions changed
        assert (t1 is None) == (t0 is None)
        new = (t1 if t0 != t1 else g1)
        if new in twin.caption:
            assert new in twin.stuff
            differ += 1
        else:  # one caption style names the ground only ("there is a red zebra in the water .")
            assert new in ("sky", "wall") and "there is" in twin.caption, twin.caption
    assert kinds["stuff"] > 20 and kinds["objects"] > 10, kinds
    assert differ > 0.75 * kinds["stuff"], (differ, kinds)


def test_prefetched_batches_equal_inline_batches():
    from maskclip.toyworld.train import batches, make_batch

    cfg = ToyTrainConfig(**{**TINY, "steps": 4, "workers": 1, "twins": 0.5, "twin_stuff": 0.5})
    world = World(cfg.world_seed, WorldConfig(size=cfg.world_size, closeup=cfg.closeup))
    got = list(batches(world, cfg, start=1))
    assert len(got) == 3
    for step, (images, tokens) in zip(range(1, 4), got):
        ref_images, ref_tokens = make_batch(world, step, cfg.batch_size, cfg.context_length, 0.5, 0.5)
        assert torch.equal(images, ref_images) and torch.equal(tokens, ref_tokens)

TINY = dict(image_size=32, world_size=32, patch_size=8, vision_width=64, vision_layers=1, embed_dim=32, text_width=64,
            text_layers=1, context_length=32, batch_size=16, lr=2e-3, warmup=5, log_every=5, ckpt_every=10)


def test_make_batch_resizes_scenes_to_the_model_input():
    """A model trained at another input size sees the world's scenes resized bilinearly, exactly as
    MaskCLIP's inference resizes them (normalise, then interpolate)."""
    from maskclip.toyworld.train import make_batch

    world = World(0, WorldConfig(size=32))
    small, tokens = make_batch(world, 3, 8, 32, 0.5, 0.5)
    big, tokens2 = make_batch(world, 3, 8, 32, 0.5, 0.5, image_size=64)
    assert small.shape == (8, 3, 32, 32) and big.shape == (8, 3, 64, 64) and torch.equal(tokens, tokens2)
    torch.testing.assert_close(big, F.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False))


def test_toy_config_resizes_scenes_to_a_models_input_size():
    from maskclip.toyworld.evaluate import WORLD_SIZE, toy_config

    rn = new_model(ToyTrainConfig(arch="resnet", image_size=2 * WORLD_SIZE, vision_width=8, text_layers=1))
    vit = new_model(ToyTrainConfig(**{**TINY, "image_size": WORLD_SIZE}))
    assert (toy_config(rn).resize, toy_config(rn).size) == ("fit", (2 * WORLD_SIZE, 2 * WORLD_SIZE))
    assert toy_config(vit).resize == "none" and toy_config().resize == "none"
    assert toy_config(rn, resize="none").resize == "none"  # explicit overrides win
    assert toy_config(rn, readout="baseline").readout == "baseline"


@pytest.mark.slow
def test_resnet_trainer_on_resized_scenes_learns(tmp_path):
    cfg = ToyTrainConfig(arch="resnet", image_size=64, world_size=32, vision_width=8, embed_dim=32, text_width=64,
                      text_layers=1, context_length=32, batch_size=16, lr=2e-3, warmup=5, log_every=5,
                      ckpt_every=100, steps=30, workers=0)
    model = train(cfg, tmp_path, log=lambda *_: None)
    log = _log(tmp_path / "log.jsonl")
    assert model.visual.input_resolution == 64
    assert np.mean([r["loss"] for r in log[-2:]]) < log[0]["loss"] - 0.3, log


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    model = train(ToyTrainConfig(**TINY, steps=30), out, log=lambda *_: None)
    return model, _log(out / "log.jsonl")


@pytest.mark.slow
def test_trainer_loss_decreases(tiny_run):
    _, log = tiny_run
    first, last = log[0]["loss"], np.mean([r["loss"] for r in log[-2:]])
    assert last < first - 0.3, log  # chance level is log(16) = 2.77


def test_unused_token_rows_start_and_stay_zero(tiny_run):
    model, _ = tiny_run
    ids = world_token_ids()
    assert len(ids) < 100  # the world's language is tiny
    w = model.token_embedding.weight.detach()
    used = torch.zeros(w.shape[0], dtype=torch.bool)
    used[ids] = True
    assert torch.count_nonzero(w[~used]) == 0  # exactly zero after 30 AdamW steps
    assert (w[used].abs().sum(1) > 0).all()


@pytest.mark.slow
def test_trainer_resume_continues_the_same_run(tmp_path):
    cfg = ToyTrainConfig(**{**TINY, "log_every": 2, "ckpt_every": 5}, steps=10)
    full = train(cfg, tmp_path / "full", log=lambda *_: None)

    class Stop(Exception):
        pass

    def stop_at_8(msg: str) -> None:
        if msg.startswith("step 8/"):
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tmp_path / "cut", log=stop_at_8)  # dies after the step-5 checkpoint
    messages = []
    resumed = train(cfg, tmp_path / "cut", log=messages.append)
    assert messages[0].startswith("resumed") and "step 5" in messages[0]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)
    with pytest.raises(ValueError, match="different config"):
        train(ToyTrainConfig(**TINY, steps=11), tmp_path / "cut", log=lambda *_: None)



@pytest.mark.slow
def test_a_fresh_run_starts_its_log_anew(tmp_path):
    """--no-resume over an old run: the log (and so the bundle's train_seconds) is of the new run only."""
    cfg = ToyTrainConfig(**{**TINY, "log_every": 1}, steps=3)
    for _ in range(2):
        train(cfg, tmp_path, resume=False, log=lambda *_: None)
    assert [r["step"] for r in _log(tmp_path / "log.jsonl")] == [1, 2, 3]

def test_contrastive_loss_is_symmetric_and_low_when_matched():
    x = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor(np.log(100.0))
    assert contrastive_loss(x, x, scale) < 0.1
    y = torch.randn(8, 16)
    torch.testing.assert_close(contrastive_loss(x, y, scale), contrastive_loss(y, x, scale))


def test_templates_and_phrases_tokenize_in_world_vocab():
    from maskclip.clip.tokenizer import tokenize

    ids = set(world_token_ids().tolist())
    for t in TEMPLATES:
        for c in CLASSES:
            row = tokenize(t.format(c))[0]
            assert set(row[row > 0].tolist()) <= ids
    assert any("zebra" in p for p in world_phrases())


def test_bundle_records_the_reproducing_command_and_time(tmp_path):
    from maskclip.commands.toyworld import _command_line, _train_seconds

    assert _command_line(ToyTrainConfig(), "toy-vit") == "maskclip toyworld train --bundle toy-vit"
    cfg = ToyTrainConfig(steps=10, twins=0.0, log_every=1, threads=1)
    assert _command_line(cfg, "x") == "maskclip toyworld train --steps 10 --twins 0.0 --threads 1 --bundle x"
    # a run resumed once: elapsed_s restarts, the sessions add up
    log = [{"step": 1, "elapsed_s": 1.0}, {"step": 5, "elapsed_s": 9.5}, {"step": 6, "elapsed_s": 2.0},
           {"step": 10, "elapsed_s": 8.0}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    assert _train_seconds(tmp_path) == 17.5
    assert _train_seconds(tmp_path / "missing") is None


# ---- the bundled checkpoint ------------------------------------------------------------------------

def _manifest() -> dict:
    if not MANIFEST.is_file():
        pytest.fail(f"{MANIFEST} is missing: the bundled toy CLIP must ship with the package")
    return json.loads(MANIFEST.read_text())


def test_bundled_checkpoint_sha_matches():
    for name, entry in _manifest().items():
        data = (WEIGHTS / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        assert len(data) < 8 * 2 ** 20, f"{name} is {len(data)} bytes; keep bundled weights small"


@pytest.mark.parametrize("name", ["toy-vit", "toy-rn"])
def test_bundled_toy_clip_segments_heldout_scenes(name):
    """Regression test of load_clip + the dense engine + text classifier on held-out scenes."""
    from maskclip.clip.weights import load_clip
    from maskclip.toyworld.evaluate import (
        VARIANTS,
        WORLD_SIZE,
        evaluate_segmentation,
        heldout_scenes,
        toy_config,
        variants_for,
    )

    entry = _manifest()[name]
    model = load_clip(name)
    check = entry["check"]
    assert model.visual.input_resolution == entry["image_size"]
    assert entry.get("world_size", WORLD_SIZE) == WORLD_SIZE
    scenes = heldout_scenes(check["scenes"], seed=check["seed"])
    r = evaluate_segmentation(model, scenes, toy_config(model, **VARIANTS[check["variant"]]))
    assert r.miou * 100 >= check["miou"] - 1.0, (r.miou, check)
    # MaskCLIP's modification is what makes the dense labels: the unmodified last layer is at least
    # 10 points worse (the target)
    base = evaluate_segmentation(model, scenes, toy_config(model, **VARIANTS["baseline"]))
    assert r.miou > base.miou + 0.10, (r.miou, base.miou)
    if "output_stride" in VARIANTS[check["variant"]]:
        # the a trous read-out of the same weights is what puts it ahead (81.8 vs 71.2 on 200 scenes)
        coarse = evaluate_segmentation(model, scenes, toy_config(model, readout="value-only"))
        assert r.miou > coarse.miou + 0.05, (r.miou, coarse.miou)
        assert entry["best_paper_variant"] in variants_for(model, paper_only=True)


def test_variants_for_resnets_add_output_strides_and_vits_the_successors():
    from maskclip.toyworld.evaluate import VARIANTS, variants_for

    rn = new_model(ToyTrainConfig(arch="resnet", image_size=64, vision_width=8, text_layers=1))
    vit = new_model(ToyTrainConfig(**TINY))
    successors = {k for k, v in VARIANTS.items() if v["readout"] in ("sclip", "clearclip", "naclip")}
    strides = {k for k, v in VARIANTS.items() if "output_stride" in v}
    pamr = {k for k, v in VARIANTS.items() if v.get("pamr")}
    assert successors == {f"{m}{p}" for m in ("sclip", "clearclip", "naclip") for p in ("", "+PAMR")} and strides
    assert pamr == {f"{m}+PAMR" for m in ("value-only", "sclip", "clearclip", "naclip")}
    assert set(variants_for(rn)) == set(VARIANTS) - successors
    assert set(variants_for(vit)) == set(VARIANTS) - strides
    assert variants_for(rn, paper_only=True) == variants_for(vit, paper_only=True)
    assert set(variants_for(vit, paper_only=True)) == set(VARIANTS) - strides - successors - pamr


def test_demo_writes_panels_and_prints_iou(tmp_path, capsys):
    from maskclip.cli import main

    _manifest()
    rc = main(["demo", "-n", "2", "--out", str(tmp_path), "--classes", "red zebra, zebra, grass, sky, dog"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "dog" in out and "not in the world" in out
    assert len(list(tmp_path.glob("scene*_panel.png"))) == 2
    assert len(list(tmp_path.glob("scene*_overlay.png"))) == 2
    assert not list(tmp_path.glob("*.tmp*"))
    assert "model toy-rn" in out and "+OS16" in out  # the default: the bundled ResNet, its best read-out


def test_demo_rejects_a_dense_stride_on_a_vit(tmp_path, capsys):
    from maskclip.cli import main

    _manifest()
    rc = main(["demo", "-n", "1", "--model", "toy-vit", "--dense-stride", "16", "--out", str(tmp_path)])
    assert rc == 2
    assert "ResNet" in capsys.readouterr().err


def test_query_ground_truth_prefers_specific_queries():
    from maskclip.commands.demo import IGNORE, query_ground_truth
    from maskclip.toyworld.world import render_scene

    scene = render_scene(np.random.default_rng(0), WorldConfig(), [("red", "zebra"), ("white", "zebra")])
    gt, known = query_ground_truth(scene, ["zebra", "red zebra", "unicorn"])
    assert known == [True, True, False]
    red = scene.instances == 1
    assert red.sum() > 0 and np.all(gt[red] == 1)
    assert np.all(gt[scene.instances == 2] == 0)
    assert np.all(gt[scene.instances == 0] == IGNORE)
