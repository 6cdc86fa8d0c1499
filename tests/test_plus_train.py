"""MaskCLIP+ pseudo labels, augmentation and the training loop (CPU, tiny models)."""

import json
import os
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from maskclip.data.image_io import write_png_atomic
from maskclip.io.label_index import read_label_index, write_label_index
from maskclip.plus.augment import UNLABELED, AugmentConfig, augment, photometric_distortion, random_crop, rescale_size
from maskclip.plus.config import PlusTrainConfig, poly_lr
from maskclip.plus.data import StreamSampler, TrainCrops, TrainFiles, TrainItem
from maskclip.plus.loop import train
from maskclip.plus.models import build_target_model, load_target_model
from maskclip.plus.pseudo import (
    check_no_unseen_leak,
    merge_precomputed,
    pseudo_labels_annotation_free,
    pseudo_labels_zero_shot,
    restricted_argmax,
    suppress_classes,
)
from maskclip.plus.state import load_checkpoint

K = 4


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return build_target_model("light-r18", 8, torch.randn(K, 8), None, base_channels=4, head_channels=8,
                              output_stride=8, warn_random_init=False)


def tiny_data(n=6, seed=0, with_gt=True):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        gt = rng.integers(0, 2, (40, 48))  # only classes 0, 1 annotated ("seen")
        gt[:5] = 255
        out.append(TrainItem(img, gt if with_gt else None))
    return out


class LinearTeacher:
    """Deterministic stand-in for MaskCLIP: a fixed random linear map of the pixels, at 1/4 resolution."""

    def __init__(self, k=K, seed=123, interrupt_at=None, sigterm_at=None):
        self.w = torch.randn(k, 3, generator=torch.Generator().manual_seed(seed))
        self.calls, self.interrupt_at, self.sigterm_at = 0, interrupt_at, sigterm_at

    def __call__(self, x):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        if self.calls == self.sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return F.avg_pool2d(torch.einsum("kc,bchw->bkhw", self.w, x), 4)


def cfg(tmp_path, name="run", **kw):
    base = dict(iterations=6, batch_size=4, crop_size=(32, 32), scale=(64, 32), num_workers=0,
                out_dir=str(tmp_path / name), log_every=1, checkpoint_every=100, progress=False)
    base.update(kw)
    return PlusTrainConfig(**base)


# ---------------------------------------------------------------------------------------------- pseudo labels


def test_zero_shot_pseudo_labels_only_on_unlabeled_pixels_and_unseen_ids():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 7)
    logits[:, 0] += 10  # a seen class wins the unrestricted argmax everywhere
    gt = torch.randint(0, 2, (2, 6, 7))
    gt[:, :2] = UNLABELED
    gt[:, -1] = 255
    unseen = [3, 4]
    out = pseudo_labels_zero_shot(logits, gt, unseen)
    for b in range(2):
        for y in range(6):
            for x in range(7):
                g = int(gt[b, y, x])
                if g == UNLABELED:
                    want = unseen[int(logits[b, unseen, y, x].argmax())]
                else:
                    want = g
                assert int(out[b, y, x]) == want
    assert set(out[gt == UNLABELED].tolist()) <= set(unseen)
    assert (out[gt == 255] == 255).all()
    # low-resolution teacher logits are upsampled to the label size
    assert pseudo_labels_zero_shot(logits[:, :, ::2, ::2], gt, unseen).shape == gt.shape
    # the brief's variant: ignore_index itself marks the unlabeled pixels
    out2 = pseudo_labels_zero_shot(logits, gt, unseen, ignore_index=255, unlabeled_value=255)
    assert set(out2[gt == 255].tolist()) <= set(unseen) and (out2[gt == UNLABELED] == UNLABELED).all()


def test_annotation_free_is_the_argmax():
    logits = torch.tensor([[[[0.0, 2.0]], [[1.0, 0.0]], [[0.5, 3.0]]]])
    assert pseudo_labels_annotation_free(logits).tolist() == [[[1, 2]]]


def test_leakage_guard_and_suppression():
    gt = torch.tensor([[0, 1, 255], [1, 3, 0]])
    check_no_unseen_leak(gt, [2])  # no error
    with pytest.raises(ValueError, match=r"leakage.*\[3\]"):
        check_no_unseen_leak(gt, [2, 3])
    sup = suppress_classes(gt, [3])
    assert sup.tolist() == [[0, 1, 255], [1, UNLABELED, 0]]
    check_no_unseen_leak(sup, [2, 3])


def test_merge_precomputed_keeps_only_candidate_ids_on_unlabeled_pixels():
    gt = torch.tensor([[UNLABELED, UNLABELED, 1, 255]])
    pseudo = torch.tensor([[3, 0, 2, 3]])
    assert merge_precomputed(gt, pseudo, [2, 3]).tolist() == [[3, 255, 1, 255]]
    assert merge_precomputed(gt, pseudo, None).tolist() == [[3, 0, 1, 255]]


# ---------------------------------------------------------------------------------------------- augmentation


def test_augment_is_a_function_of_the_generator_seed_and_pads_with_ignore():
    acfg = AugmentConfig(crop_size=(32, 32), scale=(64, 32))
    img = torch.rand(3, 40, 48) * 255
    lab = torch.randint(0, 3, (2, 40, 48))
    a = augment(img, lab, acfg, torch.Generator().manual_seed(5))
    b = augment(img, lab, acfg, torch.Generator().manual_seed(5))
    c = augment(img, lab, acfg, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    assert a[0].shape == (3, 32, 32) and a[1].shape == (2, 32, 32)
    small = AugmentConfig(crop_size=(32, 32), scale=(16, 8), ratio_range=(1.0, 1.0), photometric=False, flip_prob=0)
    im2, lb2 = augment(img, lab, small, torch.Generator().manual_seed(0))
    h, w = rescale_size(40, 48, (16, 8))
    assert (h, w) == (8, 10)
    assert (lb2[:, h:] == 255).all() and (lb2[:, :, w:] == 255).all() and (lb2[:, :h, :w] != 255).all()
    assert (im2[:, h:] == 0).all()


def test_rescale_size_matches_mmcv_keep_ratio():
    assert rescale_size(375, 500, (2048, 512)) == (512, 683)
    assert rescale_size(1000, 200, (2048, 512)) == (2048, 410)


def test_flip_and_photometric_ranges():
    img = torch.arange(3 * 4 * 6, dtype=torch.float32).view(3, 4, 6)
    lab = torch.arange(24).view(1, 4, 6)
    acfg = AugmentConfig(crop_size=(4, 6), scale=(6, 4), ratio_range=(1.0, 1.0), photometric=False, flip_prob=1.0,
                         mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), cat_max_ratio=1.0)
    out, lo = augment(img, lab, acfg, torch.Generator().manual_seed(0))
    assert torch.equal(lo, lab.flip(-1)) and torch.allclose(out, img.flip(-1))
    x = torch.rand(3, 16, 16) * 255
    changed = 0
    for s in range(20):
        y = photometric_distortion(x, AugmentConfig(), torch.Generator().manual_seed(s))
        assert y.min() >= 0 and y.max() <= 255
        changed += int(not torch.allclose(y, x))
    assert changed >= 15  # 4 steps at p=1/2 each: all skipped with probability 1/16


def test_cat_max_ratio_retries_towards_mixed_crops():
    lab = torch.zeros(1, 100, 100, dtype=torch.long)
    lab[:, :, 90:] = 1  # only crops starting at x > 75 hold < 75% of class 0
    img = torch.zeros(3, 100, 100)

    def mixed(ratio):
        acfg = AugmentConfig(crop_size=(20, 20), cat_max_ratio=ratio)
        n = 0
        for s in range(60):
            _, c = random_crop(img, lab, acfg, torch.Generator().manual_seed(s))
            n += int((c == 0).float().mean() < 0.75)
        return n

    assert mixed(0.75) >= mixed(1.0) + 15  # ~47% vs ~6% of crops


# ---------------------------------------------------------------------------------------------- data stream


def test_stream_sampler_shards_each_global_batch():
    one = list(StreamSampler(2, 4, 4))
    r0, r1 = list(StreamSampler(2, 4, 4, 0, 2)), list(StreamSampler(2, 4, 4, 1, 2))
    assert one == [8, 9, 10, 11, 12, 13, 14, 15]
    assert r0 == [8, 9, 12, 13] and r1 == [10, 11, 14, 15]


def test_train_crops_visit_every_image_once_per_epoch(tmp_path):
    crops = TrainCrops(tiny_data(5), cfg(tmp_path))
    first = [crops.dataset_index(p) for p in range(5)]
    second = [crops.dataset_index(p) for p in range(5, 10)]
    assert sorted(first) == sorted(second) == list(range(5)) and first != second
    a, b = crops[7], crops[7]
    assert torch.equal(a["image"], b["image"]) and (a["label"] == UNLABELED).sum() > 0


def test_poly_schedule():
    c = PlusTrainConfig(iterations=100)
    assert poly_lr(c, 0) == pytest.approx(0.01)
    assert poly_lr(c, 50) == pytest.approx((0.01 - 1e-4) * 0.5**0.9 + 1e-4)
    assert poly_lr(c, 100) == pytest.approx(1e-4)


# ---------------------------------------------------------------------------------------------- training


def test_classifier_stays_frozen_while_the_network_trains(tmp_path):
    model = tiny_model()
    text = model.classifier.weight.clone()
    before = model.head.proj.weight.detach().clone()
    assert all(not n.startswith("classifier") for n, _ in model.named_parameters())
    res = train(cfg(tmp_path, iterations=3), model, tiny_data(), LinearTeacher())
    assert res["status"] == "completed" and len(res["losses"]) == 3
    assert torch.equal(model.classifier.weight, text)
    assert not torch.equal(model.head.proj.weight, before)
    again = load_target_model(res["model_path"])
    assert torch.equal(again.classifier.weight, text)
    recs = [json.loads(line) for line in open(res["log_path"])]
    assert [r["iter"] for r in recs] == [1, 2, 3] and all(r["source"] == "teacher" for r in recs)
    assert recs[0]["labelled_fraction"] > 0.5 and sum(recs[0]["class_hist"]) > 0 and len(recs[0]["class_hist"]) == K


@pytest.mark.parametrize("switch,guided", [("exact", 2), ("authors", 1)])
def test_switch_to_self_training_at_the_configured_iteration(tmp_path, switch, guided):
    teacher = LinearTeacher()
    res = train(cfg(tmp_path, iterations=5, self_train_after=0.4, switch=switch), tiny_model(), tiny_data(), teacher)
    assert teacher.calls == guided and res["teacher_calls"] == guided
    sources = [json.loads(line)["source"] for line in open(res["log_path"])]
    assert sources == ["teacher"] * guided + ["self"] * (5 - guided)


def test_switch_iteration_of_the_paper_and_of_the_authors_counter():
    # the authors' 1-based counter reaches start_self_train=2000 after 1999 guided steps of 20k
    zs = PlusTrainConfig(mode="zero-shot", iterations=20000, unseen_ids=[1])
    assert zs.self_train_start() == 1999 and zs.switch == "authors"
    assert replace(zs, switch="exact").self_train_start() == 2000
    assert PlusTrainConfig(mode="annotation-free").self_train_start() is None


def test_zero_shot_training_never_targets_seen_classes_on_unlabeled_pixels(tmp_path):
    seen_targets = []

    class Spy(LinearTeacher):
        def __call__(self, x):
            out = super().__call__(x)
            out[:, 0] += 100.0  # seen class 0 dominates the teacher
            return out

    data = tiny_data()
    for s in data:
        s.label[10:20] = 3  # an unseen class annotated in the raw ground truth
    c = cfg(tmp_path, mode="zero-shot", unseen_ids=[2, 3], iterations=2, self_train_after=None)
    with pytest.raises(ValueError, match="leakage"):
        train(c, tiny_model(), data, Spy())
    c.suppress_unseen = True
    res = train(c, tiny_model(), data, Spy(), log_fn=seen_targets.append)
    hist = np.sum([r["class_hist"] for r in seen_targets], axis=0)
    # the same crops, rebuilt: class 0/1 targets are exactly the annotated pixels, and every unlabeled pixel
    # (suppressed class 3 + the rest) went to an unseen id although the teacher preferred class 0
    crops = TrainCrops(data, c)
    labels = torch.stack([crops[p]["label"] for p in range(2 * 4)])
    assert res["status"] == "completed" and (labels == UNLABELED).sum() > 0
    assert hist[0] == (labels == 0).sum() and hist[1] == (labels == 1).sum()
    assert hist[2] + hist[3] == (labels == UNLABELED).sum()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_stop_and_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    kw = dict(iterations=6, self_train_after=0.5, checkpoint_every=2)
    full_model = tiny_model()
    full = train(cfg(tmp_path, "full", **kw), full_model, tiny_data(), LinearTeacher())

    model = tiny_model()
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C inside the 2nd iteration's teacher call
        train(cfg(tmp_path, "cut", **kw), model, tiny_data(), LinearTeacher(interrupt_at=2))
    ck = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert ck["iteration"] == 1
    first = [json.loads(line)["loss"] for line in open(tmp_path / "cut" / "log.jsonl")]

    model2 = tiny_model(seed=99)  # a fresh process would build a different random model: resume must overwrite
    rest = train(cfg(tmp_path, "cut", **kw), model2, tiny_data(), LinearTeacher())
    assert rest["start_iteration"] == 1
    assert first + rest["losses"] == full["losses"]
    full_state = _state(full_model)
    for k, v in _state(model2).items():
        assert torch.equal(v, full_state[k]), k


def test_sigterm_checkpoints_and_resume_matches(tmp_path):
    kw = dict(iterations=5)
    full = train(cfg(tmp_path, "full", **kw), tiny_model(), tiny_data(), LinearTeacher())
    before = signal.getsignal(signal.SIGTERM)
    first = train(cfg(tmp_path, "term", **kw), tiny_model(), tiny_data(), LinearTeacher(sigterm_at=3))
    assert first["status"] == "interrupted" and first["iteration"] == 3  # the 3rd iteration was finished
    assert signal.getsignal(signal.SIGTERM) == before  # our handler is removed again
    rest = train(cfg(tmp_path, "term", **kw), tiny_model(seed=5), tiny_data(), LinearTeacher())
    assert first["losses"] + rest["losses"] == full["losses"]
    assert not list((tmp_path / "term").glob("*.tmp"))


def test_precomputed_pseudo_labels_roundtrip_and_train(tmp_path):
    """The one pseudo-label format: label PNGs + an index (what `maskclip label` writes), read back for training."""
    images = []
    for i, item in enumerate(tiny_data(3, with_gt=False)):
        images.append(tmp_path / "imgs" / f"{i}.png")
        write_png_atomic(images[-1], item.image)
    teacher = LinearTeacher()
    entries = []
    for i, path in enumerate(images):
        image = np.asarray(Image.open(path).convert("RGB"))
        x = (torch.as_tensor(image).permute(2, 0, 1).float() - torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)) \
            / torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
        logits = F.interpolate(teacher(x[None]), size=(40, 48), mode="bilinear", align_corners=False)
        write_png_atomic(tmp_path / "pl" / "labels" / f"{i}.png", restricted_argmax(logits)[0].numpy())
        entries.append({"image": str(path), "label": f"labels/{i}.png", "json": f"labels/{i}.json"})
    write_label_index(tmp_path / "pl", entries, ["c0", "c1", "c2", "c3", "background"])
    pngs, lut = read_label_index(tmp_path / "pl", images, ["c0", "c1", "c2", "c3"], 255)
    assert lut.tolist() == [0, 1, 2, 3, 255, 255]  # 'background' and ids beyond the list -> ignore
    ds = TrainFiles(images, pseudo=pngs, pseudo_lut=lut)
    item = ds[1]
    assert item.label is None and np.array_equal(item.pseudo, np.asarray(Image.open(pngs[1])).astype(np.int64))
    out = train(cfg(tmp_path, iterations=2), tiny_model(), ds, None)
    sources = {json.loads(line)["source"] for line in open(out["log_path"])}
    assert sources == {"pseudo-file"}
    with pytest.raises(ValueError, match="no pseudo labels for 1 of 4"):
        read_label_index(tmp_path / "pl", images + [tmp_path / "imgs" / "other.png"], ["c0"], 255)


def test_bad_configuration_is_reported(tmp_path):
    with pytest.raises(ValueError, match="unseen_ids"):
        train(cfg(tmp_path, mode="zero-shot"), tiny_model(), tiny_data(), LinearTeacher())
    with pytest.raises(ValueError, match="mode"):
        train(cfg(tmp_path, mode="supervised"), tiny_model(), tiny_data(), LinearTeacher())

    c = cfg(tmp_path, mode="zero-shot", unseen_ids=[3], seen_ids=[0], iterations=1)
    with pytest.raises(ValueError, match=r"ids \[1\] that are neither seen"):
        train(c, tiny_model(), tiny_data(), LinearTeacher())

    class WrongK(LinearTeacher):
        def __call__(self, x):
            return super().__call__(x)[:, :2]

    with pytest.raises(ValueError, match="teacher returned"):
        train(cfg(tmp_path, iterations=1), tiny_model(), tiny_data(), WrongK())
