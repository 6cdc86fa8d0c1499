"""Class-agnostic mask proposals trained on seen classes (the decoupled route: ZegFormer, SimBaseline).

A MaskFormer-style generator (`model`) trained with Hungarian matching (`matching`) and MaskFormer's
set criterion (`losses`) on the seen classes of semantic label maps (`targets`, `train`); at inference
`ProposalGenerator` turns an image into a `regions.MaskSet`: N soft masks with A^p, their scores over the
seen classes, for a frozen CLIP to classify into any vocabulary.
"""

from .generator import ProposalGenerator
from .losses import CriterionConfig
from .model import ProposalConfig, ProposalModel, build_proposal_model
from .train import ProposalJob, ProposalSchedule, TrainingInterrupted, train_proposals

__all__ = ["CriterionConfig", "ProposalConfig", "ProposalGenerator", "ProposalJob", "ProposalModel",
           "ProposalSchedule", "TrainingInterrupted", "build_proposal_model", "train_proposals"]
