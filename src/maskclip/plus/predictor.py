"""A trained MaskCLIP+ network behind the same interface as `MaskCLIPPredictor`.

`set_image` runs the target network once and caches its per-pixel embeddings; `predict(classes)` scores
them against text embeddings, so a trained network still takes any vocabulary: new names are embedded
with the CLIP text encoder and prompt templates recorded in the checkpoint (the ones it was trained
against). The checkpoint's own classes are scored with the stored classifier itself, which needs no
text encoder at all.

Geometry (resize, whole/slide, multi-scale) follows the `MaskCLIPConfig` given, so MaskCLIP and
MaskCLIP+ can be run and compared with the same options; the input normalisation is always the one the
network was trained with (recorded in the checkpoint), and the MaskCLIP-only options (path, KS, PD,
logit scale) do not apply.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..clip.download import file_sha256
from ..clip.model import CLIP
from ..clip.weights import WeightsError, WeightsInfo, load_weights, random_weights
from ..data.image_inputs import as_rgb_uint8
from ..dense.config import MaskCLIPConfig
from ..dense.engine import autocast, label_dtype, scale_sizes
from ..dense.predictor import Prediction, finish_prediction
from ..dense.preprocess import float_copy, image_view
from ..dense.text import TextClassifier, build_text_classifier
from ..device import resolve_device, resolve_precision
from ..io.cache import TextCache
from ..normalization import pixel_mean_std
from ..tiling import WindowPlan, average_scales, plan_windows, resized_size, stitch, window_batches
from ..vocab import Vocabulary
from .formats import PlusFormatError, is_plus_file
from .models import SegmentationModel, load_target_model


def is_plus_checkpoint(path: str | Path) -> bool:
    """True for a MaskCLIP+ model file (model.pt) or training checkpoint (checkpoint.pt), old format or new.

    Cheap and safe on any file: it reads only the pickle of a torch.save zip archive, with an unpickler that
    resolves nothing and reads no tensor data, and looks at its "format" value (a CLIP name, a gzip'd state
    dict, a directory, garbage: False).
    """
    return is_plus_file(path)


@dataclass
class _ScaleFeatures:
    feats: torch.Tensor  # [N_windows, C, h, w] head embeddings
    plan: WindowPlan  # the windows in the resized image


class PlusPredictor:
    """Open-vocabulary segmentation with a trained MaskCLIP+ network.

        p = PlusPredictor("runs/voc/model.pt")
        p.set_image(rgb)                         # runs the target network once
        pred = p.predict(["cat", "dog", "sofa"])  # any names; cheap

    clip: the CLIP whose text encoder embeds new vocabularies (a CLIP, a name or a path); default: the
    one recorded in the checkpoint, loaded on first use and checked against its SHA-256.
    templates: default: the checkpoint's.
    """

    def __init__(self, checkpoint: str | Path | SegmentationModel, device: str | torch.device | None = None,
                 config: MaskCLIPConfig | None = None, clip: Any = None,
                 templates: str | list[str] | None = None, quick_gelu: bool | None = None,
                 overrides: dict | None = None):
        self.device = resolve_device(device)
        if isinstance(checkpoint, SegmentationModel):
            self.net, self.path, sha = checkpoint, None, None
        else:
            self.path = Path(checkpoint)
            if not is_plus_checkpoint(self.path):
                raise PlusFormatError(f"{self.path}: not a MaskCLIP+ checkpoint (write one with `maskclip train`)")
            self.net, sha = load_target_model(self.path), file_sha256(self.path)
        self.net = self.net.to(self.device).eval()
        self.meta: dict[str, Any] = dict(self.net.meta)
        name = str(self.path) if self.path is not None else "maskclip+:" + str(self.meta.get("name"))
        self.weights = WeightsInfo(name, sha, "maskclip+", str(self.path) if self.path else None)
        self.config = replace(config or MaskCLIPConfig(), **(overrides or {}))
        rec = self.meta.get("templates")
        self.templates: str | list[str] = templates if templates is not None else (rec if rec else "85")
        self._clip_arg = clip
        recorded = bool(self.meta.get("clip", {}).get("quick_gelu", True))
        self._quick_gelu = quick_gelu if quick_gelu is not None else recorded
        self._clip: CLIP | None = None
        self._text_cache: TextCache | None = None
        mean, std = pixel_mean_std("imagenet")  # the authors' configs, unless the checkpoint says otherwise
        self.mean = tuple(self.meta.get("mean", mean))
        self.std = tuple(self.meta.get("std", std))
        self.features: list[_ScaleFeatures] | None = None
        self.image_size: tuple[int, int] | None = None
        self._classifiers: dict[tuple, TextClassifier] = {}

    # ---- identity, for sidecars and reports ---------------------------------------------------------
    def identity(self) -> WeightsInfo:
        """The network file behind every prediction (its SHA-256 taken when it was loaded)."""
        return self.weights

    @property
    def model_name(self) -> str:
        return self.weights.name

    @property
    def trained_classes(self) -> list[str]:
        """Display names of the classes the network was trained on (its stored classifier's rows)."""
        return list(self.meta.get("class_names") or [])

    # ---- text side ----------------------------------------------------------------------------------
    def text_encoder(self) -> CLIP:
        """The CLIP used to embed new vocabularies (loaded once, on first use)."""
        if self._clip is None:
            clip, info = self._load_clip()
            self._clip = clip.to(self.device).eval()
            self._text_cache = TextCache(info.sha256) if info.sha256 else None
        return self._clip

    def _load_clip(self) -> tuple[CLIP, WeightsInfo]:
        if isinstance(self._clip_arg, CLIP):
            return self._clip_arg, WeightsInfo("<in-memory CLIP>", None, "memory")
        rec = self.meta.get("clip") or {}
        name = self._clip_arg or rec.get("name")
        if not name:
            raise ValueError(f"{self.model_name}: the checkpoint records no CLIP, so new class names cannot be "
                             "embedded; pass the CLIP it was trained with (--weights PATH / clip=...)")
        if self._clip_arg is None and str(name).startswith("random:"):
            _, arch, seed = str(name).split(":")
            return random_weights(arch, seed=int(seed.removeprefix("seed")))
        try:
            model, info = load_weights(name, quick_gelu=self._quick_gelu)
        except WeightsError as err:
            raise WeightsError(f"{self.model_name}: cannot load the CLIP text encoder {name!r} it was trained with "
                               f"({err}); pass it with --weights PATH (Python: clip=PATH)") from None
        want = rec.get("sha256")
        if self._clip_arg is None and want and info.sha256 not in (None, want):
            raise WeightsError(f"{self.model_name}: CLIP {name!r} has SHA-256 {info.sha256}, the network "
                               f"was trained against {want}; pass the right weights with --weights PATH")
        return model, info

    def classifier(self, classes: list[str | list[str]] | Vocabulary) -> TextClassifier:
        """Name embeddings of the scored classes; the stored classifier when they are the trained classes."""
        vocab = Vocabulary.of(classes)
        key = tuple(tuple(c) for c in vocab.scored)
        if key not in self._classifiers:
            names = [list(c) for c in key]
            trained = self.trained_classes
            if trained and all(len(c) == 1 for c in names) and [c[0] for c in names] == trained \
                    and self.templates == self.meta.get("templates"):
                w = self.net.classifier.effective_weight().detach().float().cpu()
                clf = TextClassifier(w, torch.arange(len(names)), [c[0] for c in names])
            else:
                clf = self._with_learned(build_text_classifier(self.text_encoder(), vocab, self.templates,
                                                               cache=self._text_cache), vocab)
            self._classifiers[key] = clf
        return self._classifiers[key]

    def _with_learned(self, clf: TextClassifier, vocab: Vocabulary) -> TextClassifier:
        """A name the network learned an embedding for (e.g. a cls_bg "background") scores with that embedding."""
        tc, trained = self.net.classifier, self.trained_classes
        if tc.learned is None or not trained:
            return clf
        rows = tc.effective_weight().detach().float().cpu()
        learned = {trained[i].lower(): rows[i] for i in tc.learned_ids.tolist()}
        names = [n.lower() for c in vocab.scored for n in c]  # the classifier's row order
        emb = clf.embeddings.clone()
        for j, n in enumerate(names):
            if n in learned:
                emb[j] = learned[n].to(emb.device, emb.dtype)
        return TextClassifier(emb, clf.class_of_name, clf.class_names)

    # ---- image side ---------------------------------------------------------------------------------

    @torch.no_grad()
    def set_image(self, image: Any, value_range: str | None = None) -> None:
        """Run the network on an image (every scale and window) and cache its embeddings.

        `image`: a PIL image, or an HxWx3 uint8/uint16/float array or tensor, as `MaskCLIPPredictor.set_image`
        (rules: `maskclip.data.image_inputs.as_rgb_uint8`; `value_range` "0-1"/"0-255" for float images).
        """
        self.features, self.image_size = None, None  # a refused image leaves no stale features behind
        rgb = as_rgb_uint8(image, value_range)
        cfg = self.config
        x = float_copy(image_view(rgb, copy_readonly=False).to(self.device))  # uint8 to the device, one float copy
        m = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        s = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        x.sub_(m).div_(s)  # in place: no second full-size float image
        h, w = x.shape[-2:]
        out = []
        for size in scale_sizes(cfg):
            th, tw = resized_size(h, w, cfg.resize, size)
            xs = x if (th, tw) == (h, w) else F.interpolate(x, size=(th, tw), mode=cfg.interpolation,
                                                            align_corners=False)
            # the network takes any size: windows are not padded; huge whole images get big windows
            plan = plan_windows(th, tw, cfg.mode, cfg.crop, cfg.step, cfg.max_pixels)
            feats = []
            for batch in window_batches(xs, plan, cfg.window_batch):
                # the trained network: reduced precision on CUDA only (its BatchNorm statistics are fp32's)
                with autocast(self.device, resolve_precision(cfg.dtype, self.device) if self.device.type == "cuda"
                              else None):
                    feats.append(self.net.features(batch).float())
            out.append(_ScaleFeatures(torch.cat(feats), plan))
        self.features, self.image_size = out, (h, w)

    def _scale_logits(self, sf: _ScaleFeatures, clf: TextClassifier) -> torch.Tensor:
        """Class logits [K, H', W'] over one resized image; overlapping windows averaged."""
        tc = self.net.classifier
        feats = F.normalize(sf.feats, dim=1) if tc.normalize_features else sf.feats
        emb = clf.embeddings.to(feats.device, feats.dtype)
        logits = clf.class_logits(torch.einsum("nchw,kc->nkhw", feats, emb) * tc.logit_scale)
        maps = [F.interpolate(logits[i:i + 1], size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)[0]
                for i, (y1, y2, x1, x2) in enumerate(sf.plan.windows)]
        return stitch(maps, sf.plan)

    @torch.no_grad()
    def predict(self, classes: list[str | list[str]] | Vocabulary, background: list[str] | None = None,
                threshold: float | None = None, return_probs: bool = True) -> Prediction:
        """Same contract as MaskCLIPPredictor.predict (synonyms: max over names; background merged;
        threshold -> background or 'unknown'). Probabilities: softmax of the network's logits, averaged
        over scales."""
        if self.features is None or self.image_size is None:
            raise RuntimeError("call set_image(image) before predict(classes)")
        vocab = Vocabulary.of(classes, background, threshold)
        clf = self.classifier(vocab)
        h, w = self.image_size
        small = [self._scale_logits(sf, clf) for sf in self.features]
        k = small[0].shape[0]
        labels = torch.empty(h, w, dtype=label_dtype(k), device=small[0].device)
        keep = return_probs or vocab.threshold is not None
        probs = torch.empty(k, h, w, device=small[0].device) if keep else None
        for r0, r1, p in average_scales(small, (h, w), lambda block: torch.softmax(block, dim=0)):
            labels[r0:r1] = p.argmax(dim=0)
            if probs is not None:
                probs[:, r0:r1] = p
        return finish_prediction(labels, probs, vocab, return_probs)


__all__ = ["PlusPredictor", "is_plus_checkpoint"]
