"""The toy world: a synthetic captioned world with per-pixel ground truth and small CLIPs trained on it.

No real CLIP weights can be downloaded offline, so the package ships small CLIPs trained here
("toy-rn" and "toy-vit", loadable with `maskclip.clip.weights.load_clip`) as the offline demo and the
end-to-end proof that the dense MaskCLIP path works.
"""

from .captions import TEMPLATES, caption_for
from .world import (
                    CLASSES,
                    COLOURS,
                    HELDOUT_PAIRS,
                    OBJECTS,
                    STUFF,
                    WORLD_SIZE,
                    ObjectInfo,
                    Scene,
                    World,
                    WorldConfig,
                    render_scene,
)

__all__ = ["TEMPLATES", "caption_for", "CLASSES", "COLOURS", "HELDOUT_PAIRS", "OBJECTS", "STUFF", "ObjectInfo",
           "Scene", "World", "WorldConfig", "render_scene", "WORLD_SIZE"]
