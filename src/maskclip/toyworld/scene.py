"""One rendered toy-world scene: pixels, per-pixel truth, its objects and its caption (a leaf module, so
that the world and its captions can both use it without importing each other)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ObjectInfo:
    category: str
    colour: str
    instance: int  # id in Scene.instances (1-based; 0 = stuff)
    area: int  # pixels inside the frame before occlusion
    visible: int  # pixels visible in the final image
    captioned: bool = False  # visible enough to be named in the caption (MIN_VISIBLE, MIN_FRAME)


@dataclass
class Scene:
    image: np.ndarray  # H x W x 3 uint8
    labels: np.ndarray  # H x W int64, index into CLASSES
    instances: np.ndarray  # H x W int64, 0 = stuff, k = objects[k-1]
    objects: list[ObjectInfo]
    stuff: tuple[str, ...]  # stuff classes present, top first
    caption: str = ""
    split: str = "train"
    index: int = 0
    meta: dict = field(default_factory=dict)


__all__ = ["ObjectInfo", "Scene"]
