"""MaskCLIP+ target networks: backbone + head + frozen text classifier.

The classifier is CLIP's text-embedding matrix used as a 1x1 convolution and is never trained (a buffer,
not a Parameter): keeping the visual-language association intact is what lets the trained network
segment classes it never saw, and what lets :meth:`SegmentationModel.set_classifier` swap in new class
names after training.

Classifier form. The authors' ``MaskClipPlusHead`` scores raw (un-normalised) head features against the
L2-normalised text embeddings, with no scale (``norm_feat=False`` in all their MaskCLIP+ configs). That is
the default here. ``normalize_features=True`` gives a cosine classifier (features L2-normalised per pixel)
times ``logit_scale``; with a cosine classifier a scale is needed for the softmax/CE to be sharp
(CLIP's own is 100; 40 is common in later training-free work) -- the default scale applies only then.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import ResNet, load_pretrained_backbone
from .formats import MODEL_FORMAT, TRAIN_FORMAT, PlusFormatError, read_plus_file, save_model_file
from .heads import ASPPv2Head, DeepLabV3PlusHead, LightHead

log = logging.getLogger(__name__)

# deeplabv2-r50: what the authors' ViT-B/16 annotation-free configs train (a ResNet-50 v1c, though their file
# names say r101)
MODEL_NAMES = ("deeplabv2-r101", "deeplabv2-r50", "deeplabv3plus-r101", "light-r18")


class TextHead(nn.Module):
    """logits[b, k] = <f(feat[b]), t_k> * s, with t_k the L2-normalised text embedding of class k.

    `learned_ids`: classes whose embedding is LEARNED instead (the authors' ``cls_bg``: a background that CLIP
    cannot name well, Context-60 zero-shot): a Parameter initialised from a standard normal, L2-normalised at
    use and trained while the text embeddings stay frozen.
    """

    weight: Tensor
    learned_ids: Tensor

    def __init__(self, text_embeddings: Tensor, normalize_features: bool = False, logit_scale: float = 1.0,
                 learned_ids: tuple[int, ...] = ()):
        super().__init__()
        self.normalize_features = normalize_features
        self.logit_scale = float(logit_scale)
        self.register_buffer("weight", self._prepare(text_embeddings))
        ids = torch.as_tensor(sorted(set(int(i) for i in learned_ids)), dtype=torch.long)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_classes):
            raise ValueError(f"learned class ids {ids.tolist()} out of range for {self.num_classes} classes")
        self.register_buffer("learned_ids", ids)
        self.learned = nn.Parameter(torch.randn(len(ids), self.embed_dim)) if len(ids) else None

    def effective_weight(self) -> Tensor:
        """The classifier rows in use: text embeddings, with the learned rows (normalised) in their places."""
        if self.learned is None:
            return self.weight
        return self.weight.index_copy(0, self.learned_ids, F.normalize(self.learned, dim=-1).to(self.weight.dtype))

    @staticmethod
    def _prepare(text_embeddings: Tensor) -> Tensor:
        if text_embeddings.ndim != 2:
            raise ValueError(f"text_embeddings must be [num_classes, embed_dim], got {tuple(text_embeddings.shape)}")
        return F.normalize(text_embeddings.detach().float(), dim=-1).clone()

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.weight.shape[1]

    def set_embeddings(self, text_embeddings: Tensor) -> None:
        """Replace the classes (any count; same embed_dim). The buffer is re-registered, so this also works
        for a different number of classes than the network was trained with."""
        w = self._prepare(text_embeddings)
        if w.shape[1] != self.embed_dim:
            raise ValueError(f"text embeddings have dim {w.shape[1]}, the network produces {self.embed_dim}")
        self.weight = w.to(self.weight.device)
        self.learned_ids, self.learned = self.learned_ids[:0], None  # new classes: text embeddings only

    def forward(self, feat: Tensor) -> Tensor:
        if self.normalize_features:
            feat = F.normalize(feat, dim=1)
        logits = F.conv2d(feat, self.effective_weight().to(feat.dtype)[:, :, None, None])
        return logits * self.logit_scale if self.logit_scale != 1.0 else logits


class SegmentationModel(nn.Module):
    """backbone -> head (embed_dim features) -> frozen text classifier.

    ``forward(x)`` returns logits upsampled (bilinear) to the input size, which is what the loss and the
    pseudo labels need; ``forward(x, upsample=False)`` returns them at feature resolution.
    ``meta`` records how to rebuild the network (see save_target_model / load_target_model).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, classifier: TextHead,
                 meta: dict[str, Any] | None = None):
        super().__init__()
        self.backbone, self.head, self.classifier = backbone, head, classifier
        self.meta: dict[str, Any] = dict(meta or {})

    def features(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def forward(self, x: Tensor, upsample: bool = True) -> Tensor:
        logits = self.classifier(self.features(x))
        if upsample and logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    def set_classifier(self, text_embeddings: Tensor) -> None:
        """Query the trained network with new class names (open vocabulary)."""
        self.classifier.set_embeddings(text_embeddings)
        self.meta["num_classes"] = self.classifier.num_classes

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes


def build_target_model(name: str, embed_dim: int, text_embeddings: Tensor, pretrained: str | None = None, *,
                       output_stride: int | None = None, base_channels: int = 64,
                       normalize_features: bool = False, logit_scale: float | None = None,
                       head_channels: int = 128, warn_random_init: bool = True,
                       learned_classes: tuple[int, ...] = ()) -> SegmentationModel:
    """Build a MaskCLIP+ target network.

    name: "deeplabv2-r101" (paper's VOC / COCO-Stuff / annotation-free model), "deeplabv2-r50" (the authors'
    ViT-B/16 annotation-free configs), "deeplabv3plus-r101" (paper's
    Pascal Context zero-shot model) or "light-r18" (ResNet-18 + LightHead, output stride 16 by default: 4x
    fewer head FLOPs than OS 8 for CPU use; pass output_stride=8 for finer masks).
    pretrained: None (random init, warned loudly), "imagenet" (the public checkpoint for the architecture:
    open-mmlab resnet101_v1c for r101, torchvision resnet18 for light-r18), a PRETRAINED_URLS key, a URL or
    a local file. base_channels < 64 shrinks the network (tests only; no pretrained weights fit then).
    logit_scale: defaults to 1 for raw features (authors) and 40 when normalize_features=True.
    learned_classes: class ids whose embedding is learned (the authors' cls_bg; see TextHead).
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown target model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if text_embeddings.ndim != 2 or text_embeddings.shape[1] != embed_dim:
        raise ValueError(f"text_embeddings must be [num_classes, {embed_dim}], got {tuple(text_embeddings.shape)}")
    if name == "light-r18":
        os_ = output_stride or 16
        backbone = ResNet(18, deep_stem=False, stem_channels=base_channels, base_channels=base_channels,
                          output_stride=os_)
        head: nn.Module = LightHead(backbone.out_channels[-1], embed_dim, head_channels)
        default_weights = "resnet18"
    else:
        os_ = output_stride or 8
        depth = 50 if name.endswith("-r50") else 101
        backbone = ResNet(depth, deep_stem=True, stem_channels=base_channels, base_channels=base_channels,
                          output_stride=os_)
        # ASPP rates are the paper's for OS 8; scaled with the stride (OS 16 -> halved, as DeepLab does)
        def rates(ds: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(max(1, d * 8 // os_) for d in ds)
        if name.startswith("deeplabv2-"):
            head = ASPPv2Head(backbone.out_channels[-1], embed_dim, rates((6, 12, 18, 24)))
        else:
            head = DeepLabV3PlusHead(backbone.out_channels[-1], backbone.out_channels[0], embed_dim,
                                     rates((1, 12, 24, 36)))
        default_weights = f"resnet{depth}_v1c"
    if pretrained is not None:
        load_pretrained_backbone(backbone, default_weights if pretrained == "imagenet" else pretrained)
    elif warn_random_init:
        msg = (f"{name}: backbone is RANDOMLY INITIALISED (pretrained=None). The paper uses ImageNet weights; "
               f"pass pretrained='imagenet' (downloads {default_weights}) or a local checkpoint path.")
        warnings.warn(msg, stacklevel=2)
        log.warning(msg)
    scale_ = logit_scale if logit_scale is not None else (40.0 if normalize_features else 1.0)
    classifier = TextHead(text_embeddings, normalize_features, scale_, tuple(learned_classes))
    meta = dict(name=name, embed_dim=embed_dim, num_classes=int(text_embeddings.shape[0]), output_stride=os_,
                base_channels=base_channels, normalize_features=normalize_features, logit_scale=scale_,
                head_channels=head_channels, learned_classes=sorted(set(int(i) for i in learned_classes)))
    return SegmentationModel(backbone, head, classifier, meta)


def save_target_model(path: str | Path, model: nn.Module, extra: dict[str, Any] | None = None) -> None:
    """Write {meta, model state, extra} atomically as a checked tensor file (plus.formats, "maskclip-plus-model/2")."""
    model = getattr(model, "module", model)
    if not getattr(model, "meta", None):
        raise ValueError("model has no .meta (build it with build_target_model) so it could not be rebuilt")
    save_model_file(path, model.state_dict(), model.meta, extra)


def load_target_model(path: str | Path, map_location: str | torch.device = "cpu") -> SegmentationModel:
    """Rebuild a network written by save_target_model (or a training checkpoint) and load its weights.

    The file is read with torch.load(weights_only=True) and its checksum verified, so loading never runs
    code from it; an old-format file is refused with the `maskclip convert-checkpoint` command to use.
    The network is built on the CPU (`map_location` is accepted for compatibility); move it with `.to()`.
    """
    f = read_plus_file(path, (MODEL_FORMAT, TRAIN_FORMAT))
    sd, meta = f.payload["model"], f.meta.get("model")
    text = sd.get("classifier.weight")
    if not isinstance(meta, dict) or not isinstance(text, Tensor):
        raise PlusFormatError(f"{path}: not a MaskCLIP+ model file (no network description or classifier)")
    try:
        model = build_target_model(meta["name"], meta["embed_dim"], text, None,
                                   output_stride=meta["output_stride"], base_channels=meta["base_channels"],
                                   normalize_features=meta["normalize_features"], logit_scale=meta["logit_scale"],
                                   head_channels=meta.get("head_channels", 128), warn_random_init=False,
                                   learned_classes=tuple(meta.get("learned_classes", ())))
        model.load_state_dict(sd)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise PlusFormatError(f"{path}: the network it describes cannot be rebuilt "
                              f"({type(e).__name__}: {str(e)[:300]})") from None
    model.meta = {**meta, **model.meta}  # keep what the trainer recorded (CLIP, templates, classes, ...)
    return model


__all__ = ["MODEL_NAMES", "TextHead", "SegmentationModel", "build_target_model", "save_target_model",
           "load_target_model"]
