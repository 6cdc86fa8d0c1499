"""The batched, overlapped pipeline: the same files as one image at a time, bounded batches and writes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskclip.annotate import LabelOptions, label_files
from maskclip.dense import MaskCLIPConfig, MaskCLIPPredictor
from maskclip.dense.engine import MaskCLIP, prepare_image
from maskclip.io.layout import OutputLayout
from maskclip.pipeline import BackgroundWriter, Failed, PipelineOptions, batches, prefetched
from maskclip.toyworld.evaluate import heldout_scenes
from maskclip.vocab import Vocabulary

SIZES = [(96, 96), (96, 96), (80, 120), (96, 96), (80, 120), (70, 100), (96, 96)]
ONE_AT_A_TIME = PipelineOptions(workers=0, batch_images=1, pending_writes=0)
BATCHED = PipelineOptions(workers=2, prefetch=1, batch_images=3, pending_writes=2)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("photos")
    paths = []
    for i, (scene, (h, w)) in enumerate(zip(heldout_scenes(len(SIZES)), SIZES)):
        paths.append(root / f"p{i}.png")
        Image.fromarray(scene.image).resize((w, h)).save(paths[-1])
    bad = root / "p3b.png"
    bad.write_bytes(b"not a png at all")
    return sorted(paths + [bad])


def toy_predictor(**settings) -> MaskCLIPPredictor:
    return MaskCLIPPredictor("toy-rn", config=MaskCLIPConfig(dtype="fp32", **settings))


def run(photos, out: Path, pipeline: PipelineOptions, **settings) -> dict:
    p = toy_predictor(**settings)
    vocab = Vocabulary.of(["sky", "grass", "turtle", "balloon", "fish", "car"])
    report = label_files(p, photos, OutputLayout(out), vocab, {"model": "toy-rn"},
                         LabelOptions(progress=False, class_scores=True), pipeline=pipeline)
    return {"written": sorted(report.written), "failed": sorted(report.failed)}


def files_of(root: Path) -> dict[str, bytes | dict]:
    out = {}
    for f in sorted(root.rglob("*")):
        if f.is_file():
            rel = str(f.relative_to(root))
            if f.suffix == ".json":
                rec = json.loads(f.read_text())
                rec.pop("seconds")
                out[rel] = rec
            else:
                out[rel] = f.read_bytes()
    return out


@pytest.mark.parametrize("settings", [dict(), dict(mode="slide", size=(96, 96), crop=64, step=32, ks=True, pd=True)])
def test_batched_pipeline_writes_exactly_the_files_of_one_image_at_a_time(photos, tmp_path, settings):
    a = run(photos, tmp_path / "a", ONE_AT_A_TIME, **settings)
    b = run(photos, tmp_path / "b", BATCHED, **settings)
    assert a == b and len(a["written"]) == len(SIZES)
    assert [Path(p).name for p, _ in a["failed"]] == ["p3b.png"]  # the bad file named, the others written
    fa, fb = files_of(tmp_path / "a"), files_of(tmp_path / "b")
    assert fa.keys() == fb.keys() and len(fa) == 3 * len(SIZES)  # label PNG, overlay, sidecar
    for k in fa:  # every label and picture byte for byte; the scores to float rounding of a larger GEMM
        if k.endswith(".json"):
            sa, sb = fa[k].pop("class_scores"), fb[k].pop("class_scores")
            assert sa.keys() == sb.keys() and all(abs(sa[c] - sb[c]) <= 2e-6 for c in sa), k
        assert fa[k] == fb[k], k


def test_encode_batch_shares_passes_and_matches_encode():
    engine = MaskCLIP(toy_predictor().model, MaskCLIPConfig(dtype="fp32", mode="slide", size=(96, 96), crop=64,
                                                            step=32, ks=True, window_batch=8))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES[:5]]
    calls = []
    real = engine._encoder_pass
    engine._encoder_pass = lambda batch: calls.append(len(batch)) or real(batch)
    batched = engine.encode_batch([prepare_image(im, engine.config) for im in images])
    n_batched = list(calls)
    calls.clear()
    alone = [engine.encode(im) for im in images]
    windows = sum(len(f.scales[0].plan.windows) for f in alone)
    assert sum(n_batched) == sum(calls) == windows
    assert max(n_batched) == 8 and len(n_batched) < len(calls)  # full passes across images
    for fb, fa in zip(batched, alone):
        assert fb.image_size == fa.image_size and fb.scales[0].plan == fa.scales[0].plan
        torch.testing.assert_close(fb.scales[0].feats, fa.scales[0].feats, rtol=0, atol=2e-6)
        torch.testing.assert_close(fb.scales[0].keys, fa.scales[0].keys, rtol=0, atol=2e-5)


def test_predict_batch_is_set_image_then_predict():
    p = toy_predictor()
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES[:3]]
    got = p.predict_batch([p.prepare(im) for im in images], ["sky", "grass", "turtle"])
    for im, g in zip(images, got):
        p.set_image(im)
        want = p.predict(["sky", "grass", "turtle"])
        assert np.array_equal(g.labels, want.labels)
        np.testing.assert_allclose(g.probs, want.probs, rtol=0, atol=1e-5)


def test_batches_respect_the_image_and_pixel_budget():
    pairs = [(i, c) for i, c in enumerate([5, 5, 5, 20, 1, 1, 1, 1])]
    got = [[i for i, _ in b] for b in batches(pairs, 3, 12, cost=lambda c: c)]
    assert got == [[0, 1], [2], [3], [4, 5, 6], [7]]


def _read(x: int) -> int:
    if x == 3:
        raise ValueError(f"item {x}: unreadable")
    return x * x


@pytest.mark.parametrize("workers", [0, 2])
def test_prefetched_keeps_order_and_reports_failures(workers):
    got = list(prefetched(list(range(7)), _read, workers=workers))
    assert [i for i, _ in got] == list(range(7))
    assert got[3][1] == Failed("item 3: unreadable")
    assert [r for i, r in got if i != 3] == [0, 1, 4, 16, 25, 36]


def test_background_writer_bounds_pending_jobs_reports_errors_and_raises_crashes():
    release, results, submitted = threading.Event(), [], []
    writer = BackgroundWriter(pending=2)

    def submit_all():
        for i in range(5):
            writer.submit(lambda i=i: (release.wait(5), results.append(i)), lambda err: None)
            submitted.append(i)

    t = threading.Thread(target=submit_all)
    t.start()
    time.sleep(0.3)
    assert len(submitted) == 2  # the third waits for a slot: at most two results held
    release.set()
    t.join(5)
    writer.close()
    assert results == [0, 1, 2, 3, 4]

    errors = []
    with BackgroundWriter(pending=1) as w:
        w.submit(lambda: (_ for _ in ()).throw(OSError("disk full")), errors.append)
        w.submit(lambda: None, errors.append)
    assert [str(e) if e else None for e in errors] == ["disk full", None]

    with pytest.raises(KeyError):
        with BackgroundWriter(pending=1) as w:
            w.submit(lambda: {}["bug"], errors.append)


def test_batched_evaluation_gives_the_confusion_of_one_image_at_a_time(photos, tmp_path):
    from maskclip.data.datasets import open_dataset
    from maskclip.eval.loop import Corruption
    from maskclip.eval.runner import EvalJob, evaluate

    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for p in photos:
        (root / "images" / p.name).write_bytes(p.read_bytes())
        w, h = Image.open(p).size if p.name != "p3b.png" else (8, 8)
        Image.fromarray(rng.integers(0, 3, (h, w), dtype=np.uint8)).save(root / "labels" / p.name)
    ds = open_dataset("folder", root, classes=["sky", "grass", "turtle"])
    results = []
    for i, pipe in enumerate([ONE_AT_A_TIME, BATCHED]):
        job = EvalJob({"model": "toy-rn"}, corruption=Corruption("gaussian_noise", 2), progress=False, save_vis=3,
                      pipeline=pipe)
        rep = evaluate(toy_predictor(size=(64, 64)), ds, tmp_path / f"run{i}", job)
        results.append(rep)
        assert sorted(p.name for p in (tmp_path / f"run{i}" / "vis").glob("*.png")) == [
            "00000_p0.png", "00001_p1.png", "00002_p2.png"]
    a, b = results
    assert a.num_images == b.num_images == len(SIZES) and [n for n, _ in a.failures] == ["p3b"]
    assert a.metrics == b.metrics
    for f in ("00000_p0.png", "00002_p2.png"):
        assert (tmp_path / "run0" / "vis" / f).read_bytes() == (tmp_path / "run1" / "vis" / f).read_bytes()


def test_cli_pipeline_options_change_nothing_in_the_labels(photos, tmp_path):
    from maskclip.cli import main

    common = ["segment", str(photos[0].parent), "--model", "toy-rn", "--classes", "sky,grass,turtle", "--quiet",
              "--precision", "fp32"]
    assert main(common + ["--out", str(tmp_path / "a")]) == 1  # the unreadable file is reported: exit 1
    assert main(common + ["--out", str(tmp_path / "b"), "--workers", "2", "--batch-images", "3",
                          "--batch-pixels", "20000"]) == 1
    la = sorted((tmp_path / "a" / "labels").glob("*.png"))
    assert len(la) == len(SIZES)
    for f in la:
        assert f.read_bytes() == (tmp_path / "b" / "labels" / f.name).read_bytes()
    with pytest.raises(SystemExit):
        main(common + ["--out", str(tmp_path / "c"), "--batch-images", "0"])
