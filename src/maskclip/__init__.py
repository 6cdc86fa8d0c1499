"""maskclip: free dense labels from CLIP (MaskCLIP) and segmentation networks trained on them (MaskCLIP+)."""

__version__ = "0.1.0"

from .clip.weights import available_models, load_clip, random_clip  # noqa: E402
from .data.image_io import read_image  # noqa: E402
from .dense import MaskCLIP, MaskCLIPConfig, MaskCLIPPredictor, Prediction, build_text_classifier  # noqa: E402

__all__ = ["MaskCLIP", "MaskCLIPConfig", "MaskCLIPPredictor", "Prediction", "available_models",
           "build_text_classifier", "load_clip", "random_clip", "read_image"]
