"""MaskFormer's set criterion for the proposal generator: match, then classify and segment the matches.

Defaults are MaskFormer's (config.py / mask_former_model.py of facebookresearch/MaskFormer): CE weight 1
over S+1 classes with the no-object class weighted 0.1 (eos_coef), sigmoid focal mask loss weight 20
(alpha 0.25, gamma 2) and dice weight 1, the same weights in the matching cost, deep supervision on.
Why MaskFormer's and not Mask2Former's (CE 2, BCE 5, dice 5): ZegFormer -- the seen-class proposal
generator this module reproduces -- is a MaskFormer and trains with these; Mask2Former's weights go
with its point-sampled BCE on 112x112 points (`mask_loss="bce"` with weights 2/5/5 approximates it
on all pixels).

Resolution: as MaskFormer's criterion, the matched mask logits are upsampled (bilinear) to the label
resolution and the losses are taken there; the matching runs at the prediction resolution on targets
resized by nearest (matching.hungarian_match). Pixels without a seen-class label are left out of the mask
and dice losses (targets.py). Each mask loss is the mean over its valid pixels, summed over the matched
pairs and divided by the number of target masks in the batch (at least 1), as MaskFormer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .matching import hungarian_match
from .targets import SemanticTargets

MASK_LOSSES = ("focal", "bce")


@dataclass(frozen=True)
class CriterionConfig:
    """Loss and matching-cost weights; the defaults are MaskFormer's (module docstring)."""

    class_weight: float = 1.0  # CE weight and matching class-cost weight (Mask2Former: 2)
    mask_weight: float = 20.0  # focal (or BCE) weight, loss and cost (MaskFormer MASK_WEIGHT; Mask2Former BCE 5)
    dice_weight: float = 1.0  # dice weight, loss and cost (MaskFormer DICE_WEIGHT; Mask2Former 5)
    no_object_weight: float = 0.1  # CE weight of the "no object" class (eos_coef, both papers)
    mask_loss: str = "focal"  # "focal" (MaskFormer) or "bce" (Mask2Former)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    deep_supervision: bool = True  # the same losses on every decoder layer's predictions (both papers)

    def validate(self) -> None:
        if self.mask_loss not in MASK_LOSSES:
            raise ValueError(f"CriterionConfig.mask_loss must be one of {MASK_LOSSES}, got {self.mask_loss!r}")
        for name in ("class_weight", "mask_weight", "dice_weight", "no_object_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"CriterionConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.class_weight == self.mask_weight == self.dice_weight == 0:
            raise ValueError("CriterionConfig: all weights are 0; nothing to match or train on")


def _mean_over(loss: Tensor, valid: Tensor | None) -> Tensor:
    """Per-row mean of [M, P] over the valid pixels of each row."""
    if valid is None:
        return loss.mean(-1)
    w = valid.to(loss)
    return (loss * w).sum(-1) / w.sum(-1).clamp_min(1)


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, valid: Tensor | None = None, alpha: float = 0.25,
                       gamma: float = 2.0) -> Tensor:
    """[M, P] logits and binary targets -> [M]: RetinaNet's focal loss, mean over each row's valid pixels."""
    t = targets.to(logits)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = prob * t + (1 - prob) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return _mean_over(loss, valid)


def sigmoid_bce_loss(logits: Tensor, targets: Tensor, valid: Tensor | None = None) -> Tensor:
    """[M, P] -> [M]: binary cross-entropy on the logits, mean over each row's valid pixels."""
    return _mean_over(F.binary_cross_entropy_with_logits(logits, targets.to(logits), reduction="none"), valid)


def dice_loss(logits: Tensor, targets: Tensor, valid: Tensor | None = None) -> Tensor:
    """[M, P] -> [M]: 1 - (2 sum(p t) + 1) / (sum p + sum t + 1) over each row's valid pixels."""
    prob = logits.sigmoid()
    t = targets.to(logits)
    if valid is not None:
        w = valid.to(logits)
        prob, t = prob * w, t * w
    return 1 - (2 * (prob * t).sum(-1) + 1) / (prob.sum(-1) + t.sum(-1) + 1)


class SetCriterion:
    """outputs of ProposalModel + per-image SemanticTargets -> {"loss", "loss_ce", "loss_mask", "loss_dice",
    and "<name>_<i>" for decoder layer i with deep supervision}; "loss" is the weighted sum of all."""

    def __init__(self, cfg: CriterionConfig, num_seen: int):
        cfg.validate()
        self.cfg, self.num_seen = cfg, num_seen
        self.class_weights = torch.ones(num_seen + 1)
        self.class_weights[-1] = cfg.no_object_weight

    def __call__(self, outputs: dict, targets: list[SemanticTargets]) -> dict[str, Tensor]:
        num_masks = max(sum(len(t.labels) for t in targets), 1)
        layers = [outputs] + (list(outputs.get("aux_outputs", [])) if self.cfg.deep_supervision else [])
        losses: dict[str, Tensor] = {}
        total = outputs["pred_logits"].new_zeros((), dtype=torch.float32)
        for i, out in enumerate(layers):
            matches = hungarian_match(out, targets, self.cfg)
            parts = {"loss_ce": self.loss_labels(out, targets, matches),
                     **self.loss_masks(out, targets, matches, num_masks)}
            suffix = "" if i == 0 else f"_{i - 1}"
            for k, v in parts.items():
                losses[k + suffix] = v
            total = total + (self.cfg.class_weight * parts["loss_ce"] + self.cfg.mask_weight * parts["loss_mask"]
                             + self.cfg.dice_weight * parts["loss_dice"])
        losses["loss"] = total
        return losses

    def loss_labels(self, out: dict, targets: list[SemanticTargets], matches: list[tuple[Tensor, Tensor]]) -> Tensor:
        """CE over S+1 for every query: matched queries their target's class, the others "no object"."""
        logits = out["pred_logits"].float()
        cls = torch.full(logits.shape[:2], self.num_seen, dtype=torch.long, device=logits.device)
        for b, ((rows, cols), t) in enumerate(zip(matches, targets)):
            cls[b, rows.to(logits.device)] = t.labels.to(logits.device)[cols.to(logits.device)]
        return F.cross_entropy(logits.transpose(1, 2), cls, self.class_weights.to(logits.device))

    def loss_masks(self, out: dict, targets: list[SemanticTargets], matches: list[tuple[Tensor, Tensor]],
                   num_masks: int) -> dict[str, Tensor]:
        """Mask (focal or BCE) and dice losses of the matched pairs at the label resolution."""
        pred = out["pred_masks"]
        src, tgt, valid = [], [], []
        for b, ((rows, cols), t) in enumerate(zip(matches, targets)):
            if len(rows):
                src.append(pred[b, rows.to(pred.device)])
                tgt.append(t.masks[cols.to(t.masks.device)])
                valid.append(t.valid[None].expand(len(cols), -1, -1))
        if not src:  # no target in the batch: zero, but still part of the graph
            zero = pred.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero}
        masks, valid_ = torch.cat(tgt), torch.cat(valid)
        logits = F.interpolate(torch.cat(src)[:, None].float(), size=masks.shape[-2:], mode="bilinear",
                               align_corners=False)[:, 0].flatten(1)
        masks, valid_ = masks.flatten(1).to(logits.device), valid_.flatten(1).to(logits.device)
        if self.cfg.mask_loss == "focal":
            mask = sigmoid_focal_loss(logits, masks, valid_, self.cfg.focal_alpha, self.cfg.focal_gamma)
        else:
            mask = sigmoid_bce_loss(logits, masks, valid_)
        return {"loss_mask": mask.sum() / num_masks, "loss_dice": dice_loss(logits, masks, valid_).sum() / num_masks}


__all__ = ["CriterionConfig", "MASK_LOSSES", "SetCriterion", "dice_loss", "sigmoid_bce_loss", "sigmoid_focal_loss"]
