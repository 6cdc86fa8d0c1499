import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from maskclip.eval.metrics import ConfusionMatrix, harmonic_mean

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# 2 x 3 example, 4 classes (class 3 appears nowhere), one ignored pixel:
#   label [[0, 0, 1], [1, 2, 255]]    pred [[0, 1, 1], [1, 2, 0]]
# counted pixels (gt, pred): (0,0) (0,1) (1,1) (1,1) (2,2)
#   class 0: tp 1, gt 2, pred 1 -> union 2 -> IoU 1/2, Acc 1/2
#   class 1: tp 2, gt 2, pred 3 -> union 3 -> IoU 2/3, Acc 1
#   class 2: tp 1, gt 1, pred 1 -> IoU 1,  Acc 1
#   class 3: absent from both -> NaN, left out of the means
LABEL = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 2, 0]])


def test_hand_computed_example():
    cm = ConfusionMatrix(4)
    cm.update(PRED, LABEL)
    np.testing.assert_array_equal(cm.matrix, [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    r = cm.compute()
    np.testing.assert_allclose(r["IoU"][:3], [1 / 2, 2 / 3, 1])
    np.testing.assert_allclose(r["Acc"][:3], [1 / 2, 1, 1])
    assert math.isnan(r["IoU"][3]) and math.isnan(r["Acc"][3])
    assert r["mIoU"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)  # 0.7222
    assert r["mAcc"] == pytest.approx((1 / 2 + 1 + 1) / 3)  # 0.8333
    assert r["pAcc"] == pytest.approx(4 / 5)
    # fwIoU: class frequencies 2/5, 2/5, 1/5
    assert r["fwIoU"] == pytest.approx(2 / 5 * 1 / 2 + 2 / 5 * 2 / 3 + 1 / 5 * 1)  # 0.6667
    assert r["num_pixels"] == 5
    json.dumps(r)  # plain floats/lists


def test_class_predicted_but_absent_from_gt_counts_as_zero():
    cm = ConfusionMatrix(4)
    cm.update(np.array([[0, 3]]), np.array([[0, 0]]))
    r = cm.compute()
    # class 0: tp 1, gt 2, pred 1 -> 1/2; class 3: tp 0, union 1 -> 0 (counts); 1, 2: NaN
    assert r["IoU"][3] == 0.0 and math.isnan(r["Acc"][3])
    assert r["mIoU"] == pytest.approx((1 / 2 + 0) / 2)
    assert r["mAcc"] == pytest.approx(1 / 2)


def test_seen_unseen_split_metrics():
    cm = ConfusionMatrix(4)
    cm.update(PRED, LABEL)
    r = cm.compute(seen=[0, 1], unseen=[2, 3])
    s, u = (1 / 2 + 2 / 3) / 2, 1.0  # class 3 is NaN and left out of the unseen mean
    assert r["mIoU_seen"] == pytest.approx(s) and r["mIoU_unseen"] == pytest.approx(u)
    assert r["hIoU"] == pytest.approx(2 * s * u / (s + u))  # 0.7368
    assert r["pAcc_seen"] == pytest.approx(3 / 4)  # 4 seen-class pixels, 3 correct
    assert r["pAcc_unseen"] == pytest.approx(1.0)
    assert r["mAcc_seen"] == pytest.approx(3 / 4) and r["mAcc_unseen"] == pytest.approx(1.0)
    # one side given: the other is its complement
    assert cm.compute(unseen=[2, 3])["mIoU_seen"] == pytest.approx(s)
    assert cm.compute(seen=[0, 1])["hIoU"] == pytest.approx(r["hIoU"])
    with pytest.raises(ValueError, match=r"\[1\].*both seen and unseen"):
        cm.compute(seen=[0, 1], unseen=[1, 2])
    with pytest.raises(ValueError, match="unseen class ids"):
        cm.compute(seen=[0], unseen=[7])


def test_harmonic_mean_edges():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert math.isnan(harmonic_mean(float("nan"), 0.5))
    assert harmonic_mean(0.5, 0.5) == pytest.approx(0.5)


def test_invalid_predictions_and_labels_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"predictions \[3\] outside"):
        cm.update(np.array([0, 3]), np.array([0, 255]))  # even where the label is ignored
    with pytest.raises(ValueError, match=r"predictions \[-1\]"):
        cm.update(np.array([-1, 0]), np.array([0, 0]))
    with pytest.raises(ValueError, match=r"labels \[7\]"):
        cm.update(np.array([0, 0]), np.array([7, 0]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="integer"):
        cm.update(np.zeros(2), np.zeros(2, int))
    assert cm.matrix.sum() == 0  # failed updates added nothing


def test_torch_inputs_and_custom_ignore():
    cm = ConfusionMatrix(3, ignore_index=-1)
    cm.update(torch.tensor([[0, 2], [1, 1]]), torch.tensor([[0, 2], [-1, 2]]))
    np.testing.assert_array_equal(cm.matrix, [[1, 0, 0], [0, 0, 0], [0, 1, 1]])


def test_merge_equals_single_accumulation_and_roundtrip():
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(6):
        label = rng.integers(0, 6, (13, 17))
        label[rng.random(label.shape) < 0.1] = 255
        pairs.append((rng.integers(0, 6, (13, 17)), label))
    single = ConfusionMatrix(6)
    for p, lab in pairs:
        single.update(p, lab)
    a, b = ConfusionMatrix(6), ConfusionMatrix(6)
    for p, lab in pairs[:2]:
        a.update(p, lab)
    for p, lab in pairs[2:]:
        b.update(p, lab)
    np.testing.assert_array_equal(a.merge(b).matrix, single.matrix)
    restored = ConfusionMatrix.from_dict(json.loads(json.dumps(single.to_dict())))
    np.testing.assert_array_equal(restored.matrix, single.matrix)
    assert restored.compute()["mIoU"] == single.compute()["mIoU"]
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(ConfusionMatrix(5))
    with pytest.raises(ValueError, match="saved"):
        ConfusionMatrix.from_dict({"num_classes": 2, "ignore_index": 255, "matrix": [[1, 2]]})
    with pytest.raises(ValueError, match="expected keys"):
        ConfusionMatrix.from_dict({"matrix": []})


def _set_based_iou(pairs, n, ignore):
    """Independent reference: per-class intersection / union as Python sets of pixel ids,
    summed over images (dataset-level IoU, as mmseg)."""
    inter, union = np.zeros(n), np.zeros(n)
    offset = 0
    for pred, label in pairs:
        p, g = pred.reshape(-1), label.reshape(-1)
        valid = set(np.flatnonzero(g != ignore).tolist())
        for c in range(n):
            gs = set(np.flatnonzero(g == c).tolist())
            ps = set(np.flatnonzero(p == c).tolist()) & valid
            inter[c] += len(gs & ps)
            union[c] += len(gs | ps)
        offset += g.size
    iou = [inter[c] / union[c] for c in range(n) if union[c] > 0]
    return iou, inter, union


@pytest.mark.parametrize("dataset,n,names", [
    ("camvid", 11, ["0016E5_07959", "0016E5_07961", "0016E5_07963", "0016E5_07965"]),
    ("ade20k-val-sample", 150, ["ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003"]),
])
def test_against_set_based_iou_on_real_labels(dataset, n, names):
    root = SHARED / dataset
    if not root.is_dir():
        pytest.skip(f"{root} not available")
    from maskclip.data.image_io import read_label

    rng = np.random.default_rng(1)
    pairs = []
    for name in names:
        path = root / ("valannot" if dataset == "camvid" else "annotations") / f"{name}.png"
        raw = read_label(path).astype(np.int64)
        if dataset == "camvid":
            label = np.where(raw == 11, 255, raw)
        else:
            label = np.where(raw == 0, 255, raw - 1)
        # a perturbed prediction: shifted map, ignored pixels filled, 5 % flipped to another
        # class of the image (flips to absent classes would add many IoU-0 classes)
        pred = np.roll(label, (7, -5), axis=(0, 1))
        present = np.unique(label[label != 255])
        pred = np.where(pred == 255, present[0], pred)
        flip = rng.random(pred.shape) < 0.05
        pred[flip] = rng.choice(present, flip.sum())
        pairs.append((pred, label))
    cm = ConfusionMatrix(n)
    for p, lab in pairs:
        cm.update(p, lab)
    r = cm.compute()
    iou, inter, union = _set_based_iou(pairs, n, 255)
    assert r["mIoU"] == pytest.approx(float(np.mean(iou)), abs=1e-12)
    np.testing.assert_array_equal(np.diag(cm.matrix), inter)
    assert 0.2 < r["mIoU"] < 0.95  # a perturbed copy: far from both 0 and 1
    valid = sum(int((lab != 255).sum()) for _, lab in pairs)
    correct = sum(int(((p == lab) & (lab != 255)).sum()) for p, lab in pairs)
    assert r["pAcc"] == pytest.approx(correct / valid)
