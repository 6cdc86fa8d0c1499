"""The frozen MaskCLIP teacher of MaskCLIP+: labels every augmented training crop on the fly.

Its text classifier is also what the target network's frozen classifier is built from
(`class_embeddings`), so student and teacher score the same class embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..dense.engine import MaskCLIP
from ..dense.preprocess import normalize
from ..dense.text import TextClassifier
from ..normalization import pixel_mean_std

# the score of a class the teacher does not score: finite, so bilinear resizing cannot make NaNs
NO_SCORE = -1e4


class MaskCLIPTeacher:
    """Frozen MaskCLIP as a training-crop labeller: crops normalised for the target network ->
    class scores [B, K, H, W] at crop size (argmax = the pseudo label).

    The crops are re-normalised for the CLIP when the two normalisations differ (e.g. the toy CLIP's
    own statistics). Whole-image mode runs the batch in one encoder pass; slide mode goes image by image.
    """

    # the softmax temperature of the teacher's cosine logits for confidences (CLIP's logit scale, as PD's)
    logit_scale = 100.0

    def __init__(self, engine: MaskCLIP, classifier: TextClassifier, mean: Sequence[float], std: Sequence[float],
                 class_ids: Sequence[int] | None = None):
        """class_ids: score only these classes (the zero-shot teacher's unseen classes, so that PD and KS see
        only them, as the authors'); the other channels are returned as NO_SCORE."""
        self.engine, self.num_classes = engine, classifier.num_classes
        self.class_ids = None if class_ids is None else torch.as_tensor(list(class_ids), dtype=torch.long)
        self.classifier = classifier if class_ids is None else classifier.subset(list(class_ids))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        cm, cs = pixel_mean_std(engine.config.normalize)
        self.renormalize = not (np.allclose(cm, mean) and np.allclose(cs, std))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        eng = self.engine
        x = x.float().to(eng.device)
        if self.renormalize:
            x = normalize(x * self.std.to(x.device) + self.mean.to(x.device), eng.config.normalize)
        scores = eng.batch_logits(x, self.classifier)  # whole mode: the batch in one encoder pass
        if self.class_ids is None:
            return scores
        out = scores.new_full((scores.shape[0], self.num_classes, *scores.shape[2:]), NO_SCORE)
        out[:, self.class_ids.to(out.device)] = scores
        return out


def class_embeddings(classifier: TextClassifier) -> torch.Tensor:
    """One row per class for the target network: the mean of its names' (normalised) embeddings."""
    emb = classifier.embeddings.float().cpu()
    idx = classifier.class_of_name.cpu()
    out = torch.zeros(classifier.num_classes, emb.shape[1]).index_add_(0, idx, emb)
    return F.normalize(out, dim=-1)


__all__ = ["NO_SCORE", "MaskCLIPTeacher", "class_embeddings"]
