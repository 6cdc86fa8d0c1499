"""Segmentation metrics from a confusion matrix (mmseg conventions).

The matrix M[g, p] counts pixels with ground truth g predicted as p, over all images seen so
far (memory is num_classes^2, whatever the number of images). Pixels whose label is
``ignore_index`` are skipped. From M, per class c:

    IoU_c = M[c,c] / (sum_p M[c,p] + sum_g M[g,c] - M[c,c])      (NaN if c is in neither)
    Acc_c = M[c,c] / sum_p M[c,p]                                (NaN if c is not in the GT)

mIoU / mAcc are the means over classes that are not NaN (``np.nanmean``, as in mmseg's
``total_area_to_metrics``): a class absent from the ground truth but predicted somewhere has
IoU 0 and counts; a class absent from both is left out. pAcc = trace(M) / M.sum();
fwIoU = sum_c freq_c IoU_c with freq_c the share of labelled pixels in class c.

For zero-shot splits (MaskCLIP+ Table 2): mIoU(S) and mIoU(U) average IoU over the seen /
unseen class ids, hIoU = 2 S U / (S + U); pAcc(S) / pAcc(U) are pixel accuracies over the
pixels whose ground truth is seen / unseen, mAcc(S) / mAcc(U) the class-mean accuracies.

All values are fractions in [0, 1] (multiply by 100 for the tables in papers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


class ConfusionMatrix:
    """Accumulates a confusion matrix over images; see the module docstring for the metrics."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred, label) -> None:
        """Add one prediction / label pair (same shape, integer class ids; numpy or torch).

        Raises ValueError when a prediction lies outside [0, num_classes) anywhere (a model
        bug that must not be hidden), or a label is neither a class id nor ignore_index.
        """
        pred, label = _to_numpy(pred), _to_numpy(label)
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from label shape {label.shape}")
        for what, a in (("prediction", pred), ("label", label)):
            if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
                raise ValueError(f"{what} must hold integer class ids, got dtype {a.dtype}")
        n = self.num_classes
        pred = pred.astype(np.int64, copy=False).reshape(-1)
        label = label.astype(np.int64, copy=False).reshape(-1)
        if pred.size and (pred.min() < 0 or pred.max() >= n):
            bad = np.unique(pred[(pred < 0) | (pred >= n)])[:10].tolist()
            raise ValueError(f"predictions {bad} outside the {n} classes [0, {n})")
        keep = label != self.ignore_index
        label, pred = label[keep], pred[keep]
        if label.size and (label.min() < 0 or label.max() >= n):
            bad = np.unique(label[(label < 0) | (label >= n)])[:10].tolist()
            raise ValueError(f"labels {bad} are neither in [0, {n}) nor the ignore index {self.ignore_index}")
        self.matrix += np.bincount(label * n + pred, minlength=n * n).reshape(n, n)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (e.g. from another worker); returns self."""
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge a {other.num_classes}-class matrix (ignore {other.ignore_index}) into a "
                f"{self.num_classes}-class one (ignore {self.ignore_index})"
            )
        self.matrix += other.matrix
        return self

    def to_dict(self) -> dict:
        """JSON-serialisable state, for resuming an interrupted evaluation."""
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index, "matrix": self.matrix.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> ConfusionMatrix:
        try:
            cm = cls(int(d["num_classes"]), int(d["ignore_index"]))
            m = np.asarray(d["matrix"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a saved confusion matrix ({e}); expected keys num_classes, ignore_index, "
                             "matrix") from None
        if m.shape != (cm.num_classes, cm.num_classes) or (m < 0).any():
            raise ValueError(f"saved matrix has shape {m.shape} or negative counts; expected "
                             f"{cm.num_classes}x{cm.num_classes} counts")
        cm.matrix = m
        return cm

    def _split(self, seen, unseen) -> tuple[np.ndarray, np.ndarray] | None:
        if seen is None and unseen is None:
            return None
        n = self.num_classes
        all_ids = np.arange(n)
        s = np.asarray(sorted(set(seen)) if seen is not None else np.setdiff1d(all_ids, list(unseen)), dtype=np.int64)
        u = np.asarray(sorted(set(unseen)) if unseen is not None else np.setdiff1d(all_ids, s), dtype=np.int64)
        for what, ids in (("seen", s), ("unseen", u)):
            if ids.size and (ids.min() < 0 or ids.max() >= n):
                raise ValueError(f"{what} class ids must lie in [0, {n}), got {ids.tolist()}")
        overlap = np.intersect1d(s, u)
        if overlap.size:
            raise ValueError(f"classes {overlap.tolist()} are listed as both seen and unseen")
        return s, u

    def compute(self, seen: Sequence[int] | None = None, unseen: Sequence[int] | None = None) -> dict:
        """Metrics as a dict of floats (fractions) plus per-class lists "IoU" and "Acc".

        With ``seen`` and/or ``unseen`` class ids (one may be omitted: it is then the
        complement of the other) the zero-shot metrics are added: mIoU_seen, mIoU_unseen,
        hIoU, pAcc_seen, pAcc_unseen, mAcc_seen, mAcc_unseen.
        """
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        gt = m.sum(axis=1)
        pred = m.sum(axis=0)
        union = gt + pred - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt > 0, tp / gt, np.nan)
        total = gt.sum()
        freq = gt / total if total > 0 else np.zeros_like(gt)
        out: dict = {
            "mIoU": _nanmean(iou),
            "mAcc": _nanmean(acc),
            "pAcc": float(tp.sum() / total) if total > 0 else float("nan"),
            "fwIoU": float(np.sum(freq[freq > 0] * iou[freq > 0])) if total > 0 else float("nan"),
            "num_pixels": int(total),
            "IoU": iou.tolist(),
            "Acc": acc.tolist(),
        }
        split = self._split(seen, unseen)
        if split is not None:
            s, u = split
            for tag, ids in (("seen", s), ("unseen", u)):
                out[f"mIoU_{tag}"] = _nanmean(iou[ids])
                out[f"mAcc_{tag}"] = _nanmean(acc[ids])
                px = gt[ids].sum()
                out[f"pAcc_{tag}"] = float(tp[ids].sum() / px) if px > 0 else float("nan")
            out["hIoU"] = harmonic_mean(out["mIoU_seen"], out["mIoU_unseen"])
        return out


def harmonic_mean(a: float, b: float) -> float:
    """2ab / (a + b); 0 when both are 0, NaN when either is NaN."""
    if math.isnan(a) or math.isnan(b):
        return float("nan")
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)
