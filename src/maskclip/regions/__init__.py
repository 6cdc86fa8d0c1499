"""Region classification with a frozen CLIP: name N masks with any vocabulary (the decoupling paradigm)."""

from .config import MERGES, RegionConfig
from .ensemble import ensemble, paint
from .masks import MaskSet, connected_regions, masks_from_instance_map
from .predictor import RegionPredictor

__all__ = ["MERGES", "MaskSet", "RegionConfig", "RegionPredictor", "connected_regions", "ensemble",
           "masks_from_instance_map", "paint"]
