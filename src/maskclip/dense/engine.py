"""MaskCLIP inference: image -> dense features (cached) -> per-pixel labels for any vocabulary.

The work is split in two so that a new vocabulary never re-runs the image encoder:
`MaskCLIP.encode` computes L2-normalised dense features (and keys) for every scale and window;
`MaskCLIP.decode` applies a text classifier, prompt denoising and key smoothing on the patch grid,
upsamples bilinearly to the input size and averages the scales' probabilities. The geometry (resize,
windows, padding, stitching, scale averaging, memory bounds) is `maskclip.tiling`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..clip.model import CLIP, VisionTransformer
from ..device import autocast, resolve_precision
from ..tiling import WindowPlan, average_scales, plan_windows, resized_size, stitch, window_batches
from .config import MaskCLIPConfig, with_compat
from .features import DenseEncoder, check_readout, stride_of
from .preprocess import float_copy, image_view, normalize_
from .refine import key_smoothing, pamr, prompt_denoising
from .successors import authors_vit_ops
from .text import TextClassifier


@dataclass
class ScaleFeatures:
    """Dense features of all windows of one scale: feats/keys [N_windows, C, h, w] on the patch grid."""

    feats: torch.Tensor
    keys: torch.Tensor | None
    plan: WindowPlan  # the windows in the resized image and their padded size

    @property
    def size(self) -> tuple[int, int]:
        return self.plan.size


@dataclass
class ImageFeatures:
    scales: list[ScaleFeatures]
    image_size: tuple[int, int]
    config: MaskCLIPConfig = field(repr=False)
    guide: torch.Tensor | None = None  # PAMR's image: the normalised input at the first scale's working size


def label_dtype(num_classes: int) -> torch.dtype:
    """The smallest integer type holding labels 0..num_classes (one past the classes: 'unknown')."""
    return torch.uint8 if num_classes <= 255 else torch.int16 if num_classes <= 32767 else torch.int32


@dataclass
class PreparedImage:
    """An image as the encoder takes it: normalised, resized to each scale's working size ([1, 3, h, w] each, or
    [N, 3, h, w] for a normalised batch). Made where it is cheap (a DataLoader worker), encoded later together
    with other images (`MaskCLIP.encode_batch`)."""

    scales: list[torch.Tensor]
    image_size: tuple[int, int]


def scale_sizes(cfg: MaskCLIPConfig) -> list[tuple[int, int]]:
    """The working size of every scale: `size`, or one square per `scales` entry."""
    return [tuple(cfg.size)] if not cfg.scales else [(s, s) for s in cfg.scales]


def prepare_image(image: np.ndarray | torch.Tensor, cfg: MaskCLIPConfig, device: torch.device | None = None,
                  normalized: bool = False) -> PreparedImage:
    """The normalised input at every scale's size: one float copy normalised in place (the uint8 image is moved
    to `device` as it is, a quarter of the bytes of floats), then resized (`cfg.interpolation`)."""
    x = image if normalized else image_view(image, copy_readonly=False)
    x = x.to(device or torch.device("cpu"))
    if not normalized:
        x = normalize_(float_copy(x), cfg.normalize)
    h, w = x.shape[-2:]
    scales = []
    for size in scale_sizes(cfg):
        th, tw = resized_size(h, w, cfg.resize, size)
        same = (th, tw) == (h, w)
        scales.append(x if same else F.interpolate(x, size=(th, tw), mode=cfg.interpolation, align_corners=False))
    return PreparedImage(scales, (int(h), int(w)))


class MaskCLIP:
    """A frozen CLIP turned into a segmenter. `encode` once per image, `decode` per vocabulary."""

    def __init__(self, model: CLIP, config: MaskCLIPConfig | None = None, **overrides):
        self.model = model.eval()
        config = with_compat(config or MaskCLIPConfig(), overrides)  # compat="authors": every authors' choice
        # the precision this machine runs (auto -> fp16 on CUDA, bf16 on native-bf16 CPUs, else fp32), recorded
        self.config = replace(config, dtype=resolve_precision(config.dtype, self.device))
        self.dense = DenseEncoder(self.model, self.config)  # the encoder pass of the method
        self._onnx = None
        if config.backend != "torch":  # before any image: the extra, the device, the precision
            from ..onnx_backend import check_backend_settings

            self.config = replace(self.config, dtype=check_backend_settings(config.backend, config.dtype, self.device))
            self.dense.config = self.config
        self.grid_stride = stride_of(model)  # inputs are padded to a multiple of it (pad "crop", "center")
        self.is_vit = isinstance(model.visual, VisionTransformer)
        check_readout(model, self.config.readout, self.config.output_stride)  # before any image, not per image

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---- image side -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, image: np.ndarray | torch.Tensor, normalized: bool = False) -> ImageFeatures:
        """Dense features for an RGB image (HxWx3 uint8, or [N,3,H,W] already normalised).

        Memory: the image is moved to the device as it is (uint8: a quarter of the bytes of floats), then
        one float copy is normalised in place (not three full-size float images at once)."""
        return self.encode_batch([prepare_image(image, self.config, self.device, normalized)])[0]

    @torch.no_grad()
    def encode_batch(self, images: Sequence[PreparedImage | np.ndarray]) -> list[ImageFeatures]:
        """Dense features of several images (RGB arrays, or `prepare_image`'s output made elsewhere, e.g. in a
        DataLoader worker): windows of the same padded shape share encoder passes of at most `window_batch`
        windows, so small images fill the batch; each image gets the windows, plans and guide `encode` gives it."""
        cfg = self.config
        prepared = [p if isinstance(p, PreparedImage) else prepare_image(p, cfg, self.device) for p in images]
        per_image: list[list[ScaleFeatures]] = [[] for _ in prepared]
        with authors_vit_ops(self.model.visual, self.is_vit and cfg.vit_ops == "authors"):
            for s in range(len(prepared[0].scales) if prepared else 0):
                xs = [p.scales[s].to(self.device) for p in prepared]
                plans = [plan_windows(*x.shape[-2:], cfg.mode, cfg.crop, cfg.step, cfg.max_pixels,
                                      self._pad_multiple()) for x in xs]
                for j, (f, k) in enumerate(self._encode_windows(xs, plans)):
                    per_image[j].append(ScaleFeatures(f, k, plans[j]))
        return [ImageFeatures(sc, p.image_size, cfg, p.scales[0].to(self.device) if cfg.pamr else None)
                for sc, p in zip(per_image, prepared)]

    def _pad_multiple(self) -> int:
        """What windows are padded to: the grid stride, or 1 where the encoder floors (pad "floor"; a ResNet
        with pad "stretch", as the authors' AvgPool does)."""
        pad = self.config.pad
        floors = pad == "floor" or (pad == "stretch" and not self.is_vit)
        return 1 if floors else self.grid_stride

    def _encode_windows(self, xs: list[torch.Tensor], plans: list[WindowPlan]
                        ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(feats, keys) of every window of each resized image, in the plan's order; windows of one padded shape
        are batched across images (padding zeros = the mean colour)."""
        groups: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = {}
        for j, (x, plan) in enumerate(zip(xs, plans)):
            for win in window_batches(x, plan, 1, self.config.pad == "center"):
                groups.setdefault(plan.padded, []).append((j, win))
        feats: list[list[torch.Tensor]] = [[] for _ in xs]
        keys: list[list[torch.Tensor]] = [[] for _ in xs]
        step = self.config.window_batch
        for items in groups.values():
            for start in range(0, len(items), step):
                chunk = items[start:start + step]
                f, k = self._encoder_pass(chunk[0][1] if len(chunk) == 1 else torch.cat([w for _, w in chunk]))
                row = 0
                for j, w in chunk:
                    feats[j].append(f[row:row + len(w)])
                    if k is not None:
                        keys[j].append(k[row:row + len(w)])
                    row += len(w)
        return [(torch.cat(f), torch.cat(k) if k else None) for f, k in zip(feats, keys)]

    def _onnx_encoder(self):
        """The exported encoder of --backend onnx|openvino, made on first use (`maskclip.onnx_backend`)."""
        if self._onnx is None:
            from ..onnx_backend import OnnxEncoder

            self._onnx = OnnxEncoder(self.model, self.config, runtime=self.config.backend, precision=self.config.dtype)
        return self._onnx

    def _encoder_pass(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One encoder call at the configured precision: L2-normalised features and keys, both fp32."""
        if self.config.backend != "torch":
            return self._onnx_encoder()(batch)
        with autocast(self.device, self.config.dtype):
            out = self.dense.features(batch)
        return self.dense.normalized(out)

    # ---- text side --------------------------------------------------------------------------------
    def grid_scores(self, feats: torch.Tensor, keys: torch.Tensor | None, classifier: TextClassifier) -> torch.Tensor:
        """Scores on the patch grid [N, K, h, w]: cosine logits, or smoothed confidences with KS; per class
        (the max over its names), or per name with score "name-softmax" (reduced in `to_probs`)."""
        cfg = self.config
        emb = classifier.embeddings.to(feats.device, feats.dtype)
        logits = torch.einsum("nchw,kc->nkhw", feats, emb)
        if cfg.score == "class-max":
            logits = classifier.class_logits(logits)
        if cfg.pd:
            logits = prompt_denoising(logits, cfg.pd_threshold, cfg.logit_scale, cfg.pd_keep_top)
        if cfg.ks and keys is not None:
            return key_smoothing(logits, keys, cfg.ks_form, cfg.logit_scale, cfg.ks_threshold)
        return logits

    def window_scores(self, sf: ScaleFeatures, classifier: TextClassifier) -> torch.Tensor:
        """Scores of every window, upsampled bilinearly from the grid: to the padded window and cropped back
        (pad "crop": [N, K, ph, pw], cropped by `stitch`; "center": [N, K, wh, ww]) or straight to the window
        ("stretch", "floor")."""
        return self.window_upsample(self.grid_scores(sf.feats, sf.keys, classifier), sf)

    def window_upsample(self, scores: torch.Tensor, sf: ScaleFeatures) -> torch.Tensor:
        """The geometry of `window_scores`: grid maps [N, K, h, w] of sf's windows upsampled to the windows."""
        pad = self.config.pad
        if pad in ("stretch", "floor"):
            return F.interpolate(scores, size=sf.plan.window, mode="bilinear", align_corners=False)
        up = F.interpolate(scores, size=sf.plan.padded, mode="bilinear", align_corners=False)
        if pad == "center":
            (wh, ww), (ph, pw) = sf.plan.window, sf.plan.padded
            top, left = (ph - wh) // 2, (pw - ww) // 2
            up = up[..., top:top + wh, left:left + ww]
        return up

    def scale_scores(self, sf: ScaleFeatures, classifier: TextClassifier) -> torch.Tensor:
        """Scores [K, H', W'] over the resized image: windows averaged where they overlap."""
        return stitch(self.window_scores(sf, classifier), sf.plan)

    def image_map(self, grid: torch.Tensor, sf: ScaleFeatures, size: tuple[int, int]) -> torch.Tensor:
        """Any per-window grid maps [N_windows, K, h, w] of `sf` taken to the input size [K, H, W] the way
        scores are (window upsampling, stitching, bilinear to the input size): a linear map, so region
        pooling can run it backwards (`maskclip.regions.pooling`)."""
        full = stitch(self.window_upsample(grid, sf), sf.plan)
        return F.interpolate(full[None], size=size, mode="bilinear", align_corners=False)[0]

    def to_probs(self, scores: torch.Tensor, classifier: TextClassifier | None = None,
                 temperature: float | None = None) -> torch.Tensor:
        """Probabilities over classes (dim 0 or 1 of a [.., K, H, W] tensor): a softmax at the logit scale (or
        `temperature`), or the renormalised KS confidences; with score "name-softmax" over the names first,
        then the max per class (`classifier` says which names make a class)."""
        dim = scores.dim() - 3
        if self.config.ks:  # already confidences: renormalise the smoothed values
            p = scores.clamp_min(0)
            total = p.sum(dim=dim, keepdim=True)
            # every smoothed score <= 0: all the probability on the best one (not on class 0)
            best = F.one_hot(scores.argmax(dim=dim), scores.shape[dim]).movedim(-1, dim).to(p.dtype)
            p = torch.where(total > 0, p / total.clamp_min(1e-12), best)
        else:
            tau = self.config.logit_scale if temperature is None else temperature
            p = torch.softmax(scores * tau, dim=dim)
        if self.config.score == "name-softmax" and classifier is not None:
            p = classifier.class_logits(p if dim == 1 else p[None])
            p = p if dim == 1 else p[0]
        return p

    @torch.no_grad()
    def decode(self, features: ImageFeatures, classifier: TextClassifier, return_probs: bool = True,
               max_bytes: int = 256 * 2 ** 20) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Labels [H, W] and, if asked, probabilities [K, H, W] at the input size.

        Labels are compact: uint8 up to 255 classes (`label_dtype`: int16, int32 beyond), an eighth of
        int64 on a large image; the values are the argmax indices. Upsampling to the input size happens in
        row blocks so that huge images stay within `max_bytes` (PAMR needs the whole image at once).
        """
        cfg = self.config
        h, w = features.image_size
        small = [self.scale_scores(sf, classifier) for sf in features.scales]
        if cfg.pamr:
            small = [self._pamr(s, features) for s in small]
        k = classifier.num_classes
        mmseg = cfg.multiscale == "mmseg" and len(small) > 1  # softmax at temperature 1, averaged
        # one scale and one score per class: the argmax of the scores is the argmax of the probabilities
        need_probs = return_probs or len(small) > 1 or cfg.score == "name-softmax"
        transform = (lambda b: self.to_probs(b, classifier, 1.0 if mmseg else None)) if need_probs else None
        labels = torch.empty(h, w, dtype=label_dtype(k), device=small[0].device)
        probs = torch.empty(k, h, w, device=small[0].device) if return_probs else None
        for r0, r1, p in average_scales(small, (h, w), transform, max_bytes):
            labels[r0:r1] = p.max(dim=0).indices
            if probs is not None:
                probs[:, r0:r1] = p
        return labels, probs

    def _pamr(self, scores: torch.Tensor, features: ImageFeatures) -> torch.Tensor:
        """PAMR at the input size on the scores (bilinearly upsampled), guided by the normalised working-size
        input resized bilinearly to that size (the successors' order: before the temperature and the rule)."""
        cfg = self.config
        size = features.image_size
        full = F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)
        guide = F.interpolate(features.guide, size=size, mode="bilinear", align_corners=False)
        return pamr(full, guide, cfg.pamr_steps, tuple(cfg.pamr_dilations))[0]

    def segment(self, image: np.ndarray | torch.Tensor, classifier: TextClassifier,
                return_probs: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.decode(self.encode(image), classifier, return_probs)

    @torch.no_grad()
    def logits(self, images: torch.Tensor, classifier: TextClassifier) -> torch.Tensor:
        """Scores at input size [B, K, H, W] for normalised images, one image at a time (evaluation).

        Uses the configured mode/size per image; no resizing back beyond the input size.
        """
        out = []
        for img in images:
            feats = self.encode(img[None], normalized=True)
            per_scale = []
            for sf in feats.scales:
                s = self.scale_scores(sf, classifier)
                if self.config.pamr:  # at the input size, guided by the input
                    per_scale.append(self._pamr(s, feats)[None])
                else:
                    per_scale.append(F.interpolate(s[None], size=images.shape[-2:], mode="bilinear",
                                                   align_corners=False))
            out.append(torch.stack(per_scale).mean(0))
        return torch.cat(out)

    @torch.no_grad()
    def batch_logits(self, images: torch.Tensor, classifier: TextClassifier) -> torch.Tensor:
        """Scores at input size [B, K, H, W] for a batch of normalised images in one encoder pass per scale
        (whole mode: each image is one window; the training-time teacher). Slide mode: `logits`."""
        if self.config.mode != "whole":
            return self.logits(images, classifier)
        feats = self.encode(images, normalized=True)
        out = 0
        for sf in feats.scales:
            th, tw = sf.size
            s = self.window_scores(sf, classifier)[..., :th, :tw]
            out = out + F.interpolate(s, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return out / len(feats.scales)


__all__ = ["ImageFeatures", "MaskCLIP", "MaskCLIPConfig", "PreparedImage", "ScaleFeatures", "autocast", "label_dtype",
           "prepare_image", "scale_sizes"]
