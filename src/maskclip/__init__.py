"""maskclip: free dense labels from CLIP (MaskCLIP) and segmentation networks trained on them (MaskCLIP+).

    from maskclip import MaskCLIPPredictor, read_image
    p = MaskCLIPPredictor("ViT-B/16")
    p.set_image(read_image("street.jpg"))
    pred = p.predict(["red car", "yellow car", "person"], background=["building", "ground", "tree", "sky"])
"""

__version__ = "0.1.0"

from .clip.weights import WeightsInfo, available_models, load_clip, load_weights, random_clip  # noqa: E402
from .data.image_io import read_image  # noqa: E402
from .dense import MaskCLIP, MaskCLIPConfig, MaskCLIPPredictor, Prediction, build_text_classifier  # noqa: E402
from .plus.predictor import PlusPredictor  # noqa: E402
from .predict import Predictor, load_predictor  # noqa: E402
from .regions import MaskSet, RegionConfig, RegionPredictor  # noqa: E402
from .regions.mask_io import read_masks  # noqa: E402
from .vocab import Vocabulary  # noqa: E402

__all__ = ["MaskCLIP", "MaskCLIPConfig", "MaskCLIPPredictor", "MaskSet", "PlusPredictor", "Prediction", "Predictor",
           "RegionConfig", "RegionPredictor", "Vocabulary", "WeightsInfo", "available_models", "build_text_classifier",
           "load_clip", "load_predictor", "load_weights", "random_clip", "read_image", "read_masks"]
