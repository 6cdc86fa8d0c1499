"""MaskCLIP: dense labels from a frozen CLIP (paper section 3.3)."""

from .config import MaskCLIPConfig
from .engine import ImageFeatures, MaskCLIP
from .features import READOUTS, DenseFeatures, dense_features, stride_of
from .predictor import MaskCLIPPredictor, Prediction
from .refine import key_smoothing, prompt_denoising
from .text import TextClassifier, build_text_classifier, resolve_templates, templates_85

__all__ = [
    "READOUTS", "DenseFeatures", "dense_features", "stride_of", "ImageFeatures", "MaskCLIP", "MaskCLIPConfig",
    "MaskCLIPPredictor", "Prediction", "key_smoothing", "prompt_denoising", "TextClassifier",
    "build_text_classifier", "resolve_templates", "templates_85",
]
