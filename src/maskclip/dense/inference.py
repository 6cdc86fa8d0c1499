"""MaskCLIP inference: image -> dense features (cached) -> per-pixel labels for any vocabulary.

The work is split in two so that a new vocabulary never re-runs the image encoder:
`MaskCLIP.encode` computes L2-normalised dense features (and keys) for every scale and window;
`MaskCLIP.decode` applies a text classifier, prompt denoising and key smoothing on the patch grid,
upsamples bilinearly to the input size and averages the scales' probabilities.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field, replace
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..clip.model import CLIP
from .features import PATHS, check_output_stride, dense_features, stride_of
from .refine import key_smoothing, prompt_denoising
from .text import TextClassifier

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # = (123.675, 116.28, 103.53) / 255
IMAGENET_STD = (0.229, 0.224, 0.225)  # = (58.395, 57.12, 57.375) / 255
NORMALIZATIONS = {"clip": (CLIP_MEAN, CLIP_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}


@dataclass(frozen=True)
class MaskCLIPConfig:
    """Every numeric choice of MaskCLIP inference; defaults follow the paper.

    path: "authors" (value path + residual + FFN, the authors' code), "value-only", or "baseline".
    ks / pd: key smoothing and prompt denoising. ks_form "paper" (eq. 5, keys normalised per position)
      or "authors" (their code: keys normalised along the token axis); ks_threshold 1.0 smooths everywhere.
    logit_scale: softmax temperature for probabilities, PD and KS (CLIP's 100; later papers use 40).
    mode: "whole" (resize, one pass) or "slide" (crop x crop windows every stride pixels, batched).
    resize: "fit" (shrink or grow to fit within `size`=(long, short), mmseg's keep-ratio rule),
      "short" (short side = size[0]) or "none". The authors' whole-image configs: fit (520, 520)
      Pascal Context, (512, 512) VOC/COCO-Stuff/ADE20K, (1024, 512) Cityscapes; later papers: short 336.
    scales: multi-scale ensemble (e.g. (224, 336, 520)): each value replaces size with (s, s) and the
      probabilities are averaged, as in supplement Table 5. None = the single `size`.
    normalize: "clip" or "imagenet" (the authors' configs use ImageNet mean/std).
    interpolation: image resize; "bilinear" as mmseg (the authors' code), "bicubic" as CLIP's preprocessing.
    max_pixels: a whole-mode input larger than this (after resizing) is encoded in overlapping windows of
      about sqrt(max_pixels) pixels instead, so memory stays bounded on very large images.
    dtype: None (model dtype), "fp16" or "bf16" autocast for the image encoder.
    output_stride: ResNets only; None = 32 as CLIP (the paper, the authors' code), 16 or 8 reads the same
      features on a finer grid a trous (our addition; see maskclip.dense.features).
    """

    path: Literal["authors", "value-only", "baseline"] = "authors"
    ks: bool = False
    pd: bool = False
    ks_form: Literal["paper", "authors"] = "paper"
    ks_threshold: float = 1.0
    pd_threshold: float = 0.5
    pd_keep_top: bool = True
    logit_scale: float = 100.0
    mode: Literal["whole", "slide"] = "whole"
    resize: Literal["fit", "short", "none"] = "fit"
    size: tuple[int, int] = (512, 512)
    crop: int = 224
    stride: int = 112
    scales: tuple[int, ...] | None = None
    normalize: Literal["clip", "imagenet"] = "imagenet"
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    window_batch: int = 16
    max_pixels: int = 1536 * 1536
    dtype: Literal["fp16", "bf16"] | None = None
    output_stride: int | None = None

    def __post_init__(self) -> None:
        if self.path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {self.path!r}")
        if self.mode not in ("whole", "slide"):
            raise ValueError(f"mode must be 'whole' or 'slide', got {self.mode!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {tuple(NORMALIZATIONS)}, got {self.normalize!r}")
        if self.crop <= 0 or self.stride <= 0:
            raise ValueError("crop and stride must be positive")
        if self.output_stride not in (None, 8, 16, 32):
            raise ValueError(f"output_stride must be None, 8, 16 or 32, got {self.output_stride!r}")


@dataclass
class ScaleFeatures:
    """Dense features of all windows of one scale: feats/keys [N_windows, C, h, w] on the patch grid."""

    feats: torch.Tensor
    keys: torch.Tensor | None
    windows: list[tuple[int, int, int, int]]  # (y1, y2, x1, x2) in the resized image
    padded: tuple[int, int]  # window size after padding to the stride
    size: tuple[int, int]  # resized image (H', W')


@dataclass
class ImageFeatures:
    scales: list[ScaleFeatures]
    image_size: tuple[int, int]
    config: MaskCLIPConfig = field(repr=False)


def image_view(image: np.ndarray | torch.Tensor, copy_readonly: bool = True) -> torch.Tensor:
    """[N, 3, H, W] view of an HxWx3 array/tensor in its own dtype (a 4-D tensor is taken as NCHW).

    `copy_readonly=False` shares even a read-only array (read_image's arrays are): only for callers that
    never write through the view, which saves a full-size copy."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
        arr = np.ascontiguousarray(image)
        if arr.flags.writeable or copy_readonly:
            image = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                image = torch.from_numpy(arr)
    if image.ndim == 3:
        image = image.permute(2, 0, 1)[None]
    return image


def to_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """HxWx3 uint8 (or float 0-255) -> float [1, 3, H, W] in 0-255."""
    return image_view(image).float()


def _mean_std(kind: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = NORMALIZATIONS[kind]
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
    return m, s


def normalize(image: torch.Tensor, kind: str) -> torch.Tensor:
    m, s = _mean_std(kind, image.device)
    return (image - m) / s


def normalize_(image: torch.Tensor, kind: str) -> torch.Tensor:
    """`normalize` in place on a float image (no second full-size float temporary); returns `image`."""
    m, s = _mean_std(kind, image.device)
    return image.sub_(m).div_(s)


def float_copy(image: torch.Tensor) -> torch.Tensor:
    """A float32 copy in the layout `to_tensor` gives, always a new tensor (safe to normalise in place).

    The one full-size float image of `encode`: resizing happens after normalising it, on all three
    channels at once. (Resizing one channel at a time would hold a third of it, but is not bit-identical:
    on one thread torch resizes 3-channel images with another bilinear kernel than 1-channel ones.)"""
    return image.to(torch.float32, copy=True)


def label_dtype(num_classes: int) -> torch.dtype:
    """The smallest integer type holding labels 0..num_classes (one past the classes: 'unknown')."""
    return torch.uint8 if num_classes <= 255 else torch.int16 if num_classes <= 32767 else torch.int32


def resized_size(h: int, w: int, resize: str, size: Sequence[int]) -> tuple[int, int]:
    """Target (H', W') keeping the aspect ratio (mmseg's keep_ratio rule for "fit")."""
    if resize == "none":
        return h, w
    if resize == "short":
        scale = size[0] / min(h, w)
    elif resize == "fit":
        long_edge, short_edge = max(size), min(size)
        scale = min(long_edge / max(h, w), short_edge / min(h, w))
    else:
        raise ValueError(f"resize must be 'fit', 'short' or 'none', got {resize!r}")
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def slide_windows(h: int, w: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """mmseg's sliding-window grid: windows of crop x crop (smaller if the image is), last ones flush."""
    rows = max(h - crop + stride - 1, 0) // stride + 1
    cols = max(w - crop + stride - 1, 0) // stride + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, h), min(c * stride + crop, w)
            out.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return out


def _autocast(device: torch.device, dtype: str | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"fp16": torch.float16, "bf16": torch.bfloat16}[dtype])


class MaskCLIP:
    """A frozen CLIP turned into a segmenter. `encode` once per image, `decode` per vocabulary."""

    def __init__(self, model: CLIP, config: MaskCLIPConfig | None = None, **overrides):
        self.model = model.eval()
        self.config = replace(config or MaskCLIPConfig(), **overrides)
        self.stride = stride_of(model)
        check_output_stride(model, self.config.output_stride)  # fail before any image, not per image

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---- image side -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, image: np.ndarray | torch.Tensor, normalized: bool = False) -> ImageFeatures:
        """Dense features for an RGB image (HxWx3 uint8, or [1,3,H,W] already normalised).

        Memory: the image is moved to the device as it is (uint8: a quarter of the bytes of floats), then
        one float copy is normalised in place (before: three full-size float images at once)."""
        cfg = self.config
        x = image if normalized else image_view(image, copy_readonly=False)
        x = x.to(self.device)
        if not normalized:
            x = normalize_(float_copy(x), cfg.normalize)
        h, w = x.shape[-2:]
        sizes = [cfg.size] if not cfg.scales else [(s, s) for s in cfg.scales]
        return ImageFeatures([self._encode_scale(x, s) for s in sizes], (h, w), cfg)

    def _encode_scale(self, x: torch.Tensor, size: Sequence[int]) -> ScaleFeatures:
        cfg = self.config
        th, tw = resized_size(*x.shape[-2:], cfg.resize, size)
        if (th, tw) != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=(th, tw), mode=cfg.interpolation, align_corners=False)
        if cfg.mode == "whole" and th * tw <= cfg.max_pixels:
            windows = [(0, th, 0, tw)]
        elif cfg.mode == "whole":  # too large for one pass: big overlapping windows
            side = max(self.stride, int(cfg.max_pixels ** 0.5) // self.stride * self.stride)
            windows = slide_windows(th, tw, side, side * 3 // 4)
        else:
            windows = slide_windows(th, tw, cfg.crop, cfg.stride)
        wh, ww = windows[0][1] - windows[0][0], windows[0][3] - windows[0][2]
        ph, pw = -(-wh // self.stride) * self.stride, -(-ww // self.stride) * self.stride
        feats, keys = [], []
        need_keys = cfg.ks
        for start in range(0, len(windows), cfg.window_batch):
            batch = torch.cat([x[..., y1:y2, x1:x2] for (y1, y2, x1, x2) in windows[start:start + cfg.window_batch]])
            batch = F.pad(batch, (0, pw - ww, 0, ph - wh))  # zeros = the mean colour after normalisation
            with _autocast(self.device, cfg.dtype):
                out = dense_features(self.model, batch, cfg.path, keys=need_keys, output_stride=cfg.output_stride)
            feats.append(F.normalize(out.feats.float(), dim=1))
            if need_keys:
                keys.append(out.keys.float())
        return ScaleFeatures(torch.cat(feats), torch.cat(keys) if need_keys else None, windows, (ph, pw), (th, tw))

    # ---- text side --------------------------------------------------------------------------------
    def grid_scores(self, feats: torch.Tensor, keys: torch.Tensor | None, classifier: TextClassifier) -> torch.Tensor:
        """Class scores on the patch grid [N, K, h, w]: cosine logits, or smoothed confidences with KS."""
        cfg = self.config
        emb = classifier.embeddings.to(feats.device, feats.dtype)
        logits = classifier.class_logits(torch.einsum("nchw,kc->nkhw", feats, emb))
        if cfg.pd:
            logits = prompt_denoising(logits, cfg.pd_threshold, cfg.logit_scale, cfg.pd_keep_top)
        if cfg.ks and keys is not None:
            return key_smoothing(logits, keys, cfg.ks_form, cfg.logit_scale, cfg.ks_threshold)
        return logits

    def scale_scores(self, sf: ScaleFeatures, classifier: TextClassifier) -> torch.Tensor:
        """Scores [K, H', W'] over the resized image: windows upsampled bilinearly and averaged where they overlap."""
        scores = self.grid_scores(sf.feats, sf.keys, classifier)
        up = F.interpolate(scores, size=sf.padded, mode="bilinear", align_corners=False)
        th, tw = sf.size
        if len(sf.windows) == 1:
            y1, y2, x1, x2 = sf.windows[0]
            return up[0, :, : y2 - y1, : x2 - x1]
        acc = up.new_zeros(scores.shape[1], th, tw)
        count = up.new_zeros(1, th, tw)
        for i, (y1, y2, x1, x2) in enumerate(sf.windows):
            acc[:, y1:y2, x1:x2] += up[i, :, : y2 - y1, : x2 - x1]
            count[:, y1:y2, x1:x2] += 1
        return acc / count

    def to_probs(self, scores: torch.Tensor) -> torch.Tensor:
        """Probabilities over classes (dim 0 or 1 of a [.., K, H, W] tensor)."""
        dim = scores.dim() - 3
        if self.config.ks:  # already confidences: renormalise the smoothed values
            p = scores.clamp_min(0)
            return p / p.sum(dim=dim, keepdim=True).clamp_min(1e-12)
        return torch.softmax(scores * self.config.logit_scale, dim=dim)

    @torch.no_grad()
    def decode(self, features: ImageFeatures, classifier: TextClassifier, return_probs: bool = True,
               max_bytes: int = 256 * 2 ** 20) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Labels [H, W] and, if asked, probabilities [K, H, W] at the input size.

        Labels are compact: uint8 up to 255 classes (`label_dtype`: int16, int32 beyond), an eighth of
        int64 on a large image; the values are the argmax indices. Upsampling to the input size happens in
        row blocks so that huge images stay within `max_bytes`.
        """
        h, w = features.image_size
        small = [self.scale_scores(sf, classifier) for sf in features.scales]
        k = small[0].shape[0]
        need_probs = return_probs or len(small) > 1  # one scale: argmax of the scores is the argmax of probs
        rows = h if 4 * k * h * w * 2 <= max_bytes else max(1, max_bytes // max(1, 4 * k * w * 2))
        labels = torch.empty(h, w, dtype=label_dtype(k), device=small[0].device)
        probs = torch.empty(k, h, w, device=small[0].device) if return_probs else None
        mats = None
        if rows < h:
            mats = [(_interp_matrix(s.shape[1], h, s.device), _interp_matrix(s.shape[2], w, s.device)) for s in small]
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            p = 0
            for i, s in enumerate(small):
                if mats is None:
                    block = F.interpolate(s[None], size=(h, w), mode="bilinear", align_corners=False)[0]
                else:
                    block = torch.einsum("Hh,khw,Ww->kHW", mats[i][0][r0:r1], s, mats[i][1])
                p = p + (self.to_probs(block) if need_probs else block)
            if len(small) > 1:
                p = p / len(small)
            labels[r0:r1] = p.max(dim=0).indices
            if probs is not None:
                probs[:, r0:r1] = p
        return labels, probs

    def segment(self, image: np.ndarray | torch.Tensor, classifier: TextClassifier,
                return_probs: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.decode(self.encode(image), classifier, return_probs)

    @torch.no_grad()
    def logits(self, images: torch.Tensor, classifier: TextClassifier) -> torch.Tensor:
        """Batched scores at input size [B, K, H, W] for normalised images (training-time teacher, eval).

        Uses the configured mode/size per image; no resizing back beyond the input size.
        """
        out = []
        for img in images:
            feats = self.encode(img[None], normalized=True)
            per_scale = []
            for sf in feats.scales:
                s = self.scale_scores(sf, classifier)[None]
                per_scale.append(F.interpolate(s, size=images.shape[-2:], mode="bilinear", align_corners=False))
            out.append(torch.stack(per_scale).mean(0))
        return torch.cat(out)


def _interp_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """[n_out, n_in] matrix of 1-D linear interpolation (align_corners=False), so that separable
    bilinear upsampling of a row block equals the matching rows of F.interpolate."""
    eye = torch.eye(n_in, device=device)[None]  # 1, n_in (channels), n_in (length)
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T
