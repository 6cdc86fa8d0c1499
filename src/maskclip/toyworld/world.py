"""A synthetic captioned world with per-pixel ground truth, for training and testing small CLIPs offline.

Every scene is two background "stuff" regions split by a wavy horizon and one to four coloured objects
that may occlude each other. Each class carries LOCAL evidence a patch-level model can see (grass
blades, bricks, waves; an object's stripes, spots, checks, scales or glossy smoothness, each pattern
in a colour of its own), because MaskCLIP labels each patch on its own: a category defined only by
its outline cannot be localised.
Object colour is an attribute, so "red zebra" vs "yellow zebra" is a meaningful query, and a few
colour-category pairs never occur in the training world (`HELDOUT_PAIRS`) to test open-vocabulary transfer.

Rendering is numpy only and deterministic: scene `i` of split `s` is a pure function of (seed, s, i).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .captions import caption_for
from .scene import ObjectInfo, Scene

SKY_STUFF = ("sky", "wall")
GROUND_STUFF = ("grass", "sand", "water")
STUFF = SKY_STUFF + GROUND_STUFF
OBJECTS = ("zebra", "leopard", "turtle", "balloon", "fish")
CLASSES = STUFF + OBJECTS  # label id = index here
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "yellow": (240, 215, 30),
    "purple": (135, 55, 200),
    "orange": (245, 135, 25),
    "white": (240, 240, 240),
}
# how the world's classes are drawn in pictures (maskclip.render.palette(k, first=CLASS_COLOURS))
CLASS_COLOURS = ((135, 206, 250), (128, 128, 128), (34, 139, 34), (238, 214, 175), (25, 25, 160),
                 (255, 0, 255), (255, 140, 0), (0, 200, 200), (220, 20, 60), (255, 255, 0))
# colour-category pairs never rendered (so never captioned) in the training split
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (("purple", "zebra"), ("yellow", "turtle"), ("orange", "fish"))
SPLITS = {"train": 0, "val": 1, "test": 2}
MIN_VISIBLE = 0.25  # an object is captioned when this fraction of its area is visible ...
MIN_FRAME = 0.03  # ... or when it covers this fraction of the frame (close-ups cut objects at the border);
# a stuff class is named when it covers at least MIN_FRAME of the frame


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of the generator; the defaults are the world the bundled checkpoints were trained on."""

    size: int = 64
    min_objects: int = 1
    max_objects: int = 4
    min_object_size: float = 0.22  # object bounding-box height as a fraction of the image side
    max_object_size: float = 0.45
    full_ground_prob: float = 0.15  # scenes with no sky/wall region
    noise: float = 6.0  # per-pixel gaussian noise (grey levels)
    heldout: bool = False  # allow HELDOUT_PAIRS (evaluation only)
    partial_captions: float = 0.0  # share of training captions that name one thing only
    closeup: float = 0.0  # share of training scenes seen from close by: 1-2 large objects cut by the frame
    closeup_size: tuple[float, float] = (0.6, 1.4)  # close-up object height as a fraction of the image side


WORLD_SIZE = WorldConfig().size  # side of the rendered scenes every bundled model was trained on


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return y, x


def _value_noise(rng: np.random.Generator, size: int, cells_y: int, cells_x: int) -> np.ndarray:
    """Smooth-ish noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    g = rng.random((cells_y + 1, cells_x + 1)).astype(np.float32)
    y = np.linspace(0, cells_y, size, dtype=np.float32)
    x = np.linspace(0, cells_x, size, dtype=np.float32)
    y0 = np.minimum(y.astype(int), cells_y - 1)
    x0 = np.minimum(x.astype(int), cells_x - 1)
    fy = (y - y0)[:, None]
    fx = (x - x0)[None, :]
    a = g[y0][:, x0]
    b = g[y0][:, x0 + 1]
    c = g[y0 + 1][:, x0]
    d = g[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _stuff_texture(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Full-frame H x W x 3 float texture of a stuff class."""
    y, x = _grid(size)
    if name == "sky":
        base = np.array([120, 180, 235], np.float32)
        grad = (1.0 - y / size)[..., None] * np.array([-30, -20, 0], np.float32)
        clouds = _value_noise(rng, size, 3, 4)[..., None] * 40.0
        return base + grad + clouds
    if name == "wall":  # grey bricks with dark mortar, running bond
        bh, bw = 6, 12
        row = np.floor((y + rng.integers(0, bh)) / bh)
        shift = (row % 2) * (bw / 2)
        xm = (x + shift + rng.integers(0, bw)) % bw
        ym = (y + rng.integers(0, bh)) % bh
        mortar = (xm < 1.5) | (ym < 1.5)
        tone = 140 + 25 * (rng.random((int(size / bh) + 3, int(size / bw) + 3)) - 0.5)
        brick = tone[(row.astype(int) % tone.shape[0]), ((x + shift) // bw).astype(int) % tone.shape[1]]
        v = np.where(mortar, 70.0, brick).astype(np.float32)
        return np.stack([v, v * 0.97, v * 0.93], -1)
    if name == "grass":  # vertical blades: noise stretched along y
        blades = _value_noise(rng, size, 4, size // 2)
        v = 0.55 + 0.6 * blades
        return np.stack([55 * v, 160 * v, 45 * v], -1)
    if name == "sand":  # fine speckle on beige
        speck = rng.random((size, size)).astype(np.float32)
        v = 1.0 - 0.25 * (speck > 0.85)
        dune = _value_noise(rng, size, 2, 3) * 20
        return np.stack([225 * v + dune, 200 * v + dune, 150 * v + dune], -1)
    if name == "water":  # horizontal wavy highlights on deep blue
        phase = rng.random() * 6.28
        waves = np.sin(y * 1.3 + 2.0 * np.sin(x * 0.25 + phase))
        v = (waves > 0.6).astype(np.float32)
        return np.stack([35 + 70 * v, 70 + 90 * v, 150 + 80 * v], -1)
    raise ValueError(f"unknown stuff class {name!r}; expected one of {STUFF}")


def _object_mask(category: str, cy: float, cx: float, h: float,
                 angle: float, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shape mask and object-local coordinates (u along the body, v across)."""
    aspect = {"zebra": 1.5, "leopard": 1.6, "turtle": 1.2, "balloon": 0.85, "fish": 1.9}[category]
    a, b = h * aspect / 2, h / 2  # semi-axes: along u (width), along v (height)
    ca, sa = np.cos(angle), np.sin(angle)
    u = (x - cx) * ca + (y - cy) * sa
    v = -(x - cx) * sa + (y - cy) * ca
    r = (u / a) ** 2 + (v / b) ** 2
    if category == "turtle":  # dome: flat bottom
        mask = (r <= 1.0) & (v <= b * 0.55)
    elif category == "fish":  # body plus a tail triangle
        tail = (u < -a * 0.75) & (u > -a * 1.25) & (np.abs(v) < (-u - a * 0.75) * 1.0)
        mask = (r <= 1.0) | tail
    else:
        mask = r <= 1.0
    return mask, u, v


# each category's pattern has a colour of its own (a zebra's black stripes, a leopard's brown spots):
# local evidence a single patch can show whatever the body colour (the attribute) is
PATTERN_COLOURS: dict[str, tuple[int, int, int]] = {
    "zebra": (20, 20, 25),  # near-black stripes
    "leopard": (100, 55, 15),  # dark brown spots
    "turtle": (60, 85, 30),  # olive shell plates
    "fish": (15, 85, 95),  # dark teal scales
}


def _object_texture(category: str, colour: np.ndarray, rng: np.random.Generator, u: np.ndarray,
                    v: np.ndarray, h: float) -> np.ndarray:
    """The category's local pattern, in its own pattern colour, on the object's colour (float H x W x 3)."""
    ou, ov = rng.random(2) * 10
    if category == "zebra":  # stripes across the body, period 6 px
        on = np.sin((u + ou) * (2 * np.pi / 6.0) + 0.8 * np.sin(v * 0.3)) > 0.2
    elif category == "leopard":  # spots on a 7 px grid
        cu, cv = (u + ou) % 7.0 - 3.5, (v + ov) % 7.0 - 3.5
        on = cu ** 2 + cv ** 2 < 2.0 ** 2
    elif category == "turtle":  # checkered shell, 5 px cells
        on = ((np.floor((u + ou) / 5.0) + np.floor((v + ov) / 5.0)) % 2) == 0
    elif category == "fish":  # scales: thin diagonal cross-hatch, period 5 px
        d1 = (u + v + ou) % 5.0 < 1.2
        d2 = (u - v + ov) % 5.0 < 1.2
        on = d1 | d2
    elif category == "balloon":  # glossy smooth: a soft highlight, no texture
        r = np.sqrt((u + h * 0.15) ** 2 + (v + h * 0.15) ** 2) / max(h, 1.0)
        shade = np.clip(1.15 - 0.9 * r, 0.6, 1.15)[..., None]
        return np.clip(colour * shade + 40 * np.clip(0.25 - r, 0, None)[..., None] * 4, 0, 255)
    else:
        raise ValueError(f"unknown object category {category!r}; expected one of {OBJECTS}")
    return np.where(on[..., None], np.array(PATTERN_COLOURS[category], np.float32), colour)


def allowed_pairs(heldout: bool) -> list[tuple[str, str]]:
    """(colour, category) pairs the world may render."""
    pairs = [(c, o) for o in OBJECTS for c in COLOURS]
    return pairs if heldout else [p for p in pairs if p not in HELDOUT_PAIRS]


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    return np.random.default_rng([seed, SPLITS[split], index])


def render_scene(rng: np.random.Generator, config: WorldConfig = WorldConfig(),
                 objects: list[tuple[str, str]] | None = None,
                 stuff: tuple[str | None, str] | None = None, closeup: bool = False) -> Scene:
    """Render one scene. `objects` forces the (colour, category) list and `stuff` the (top or None,
    ground) pair; otherwise they are drawn from `rng`.

    A `closeup` scene shows 1-2 objects of `config.closeup_size` placed anywhere (so often cut by the
    frame) and a horizon anywhere, so a caption can name a single object or a single stuff: the
    image-level evidence that teaches a patch what its own texture is called.
    """
    s = config.size
    y, x = _grid(s)
    # stuff: top region (sky/wall) over a ground region, split by a wavy horizon
    if stuff is not None:
        top, ground = stuff
    else:
        ground = GROUND_STUFF[rng.integers(len(GROUND_STUFF))]
        top = None if rng.random() < config.full_ground_prob else SKY_STUFF[rng.integers(len(SKY_STUFF))]
    if top is None:
        labels = np.full((s, s), CLASSES.index(ground), np.int64)
        image = _stuff_texture(ground, rng, s)
    else:
        level = rng.uniform(-0.15, 1.15) if closeup else rng.uniform(0.3, 0.6)
        horizon = s * level + s * 0.06 * np.sin(x[0] * rng.uniform(0.03, 0.12) + rng.random() * 6.3)
        is_top = y < horizon[None, :]
        labels = np.where(is_top, CLASSES.index(top), CLASSES.index(ground)).astype(np.int64)
        image = np.where(is_top[..., None], _stuff_texture(top, rng, s), _stuff_texture(ground, rng, s))
    image = np.ascontiguousarray(image, dtype=np.float32)
    instances = np.zeros((s, s), np.int64)

    pairs = allowed_pairs(config.heldout)
    if objects is None:
        n = int(rng.integers(1, 3)) if closeup else int(rng.integers(config.min_objects, config.max_objects + 1))
        objects = [pairs[i] for i in rng.integers(len(pairs), size=n)]
    infos: list[ObjectInfo] = []
    for k, (colour, category) in enumerate(objects, start=1):
        if colour not in COLOURS or category not in OBJECTS:
            raise ValueError(f"unknown object ({colour!r}, {category!r}); colours {list(COLOURS)}, "
                             f"categories {list(OBJECTS)}")
        if closeup:
            h = s * rng.uniform(*config.closeup_size)
            cy, cx = rng.uniform(0, s), rng.uniform(0, s)
        else:
            h = s * rng.uniform(config.min_object_size, config.max_object_size)
            cy, cx = rng.uniform(h * 0.4, s - h * 0.4), rng.uniform(h * 0.4, s - h * 0.4)
        angle = rng.uniform(-0.5, 0.5)
        reach = h * 1.3  # bounding radius of every shape; draw only inside this box (speed)
        y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 1, s)
        x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 1, s)
        mask, u, v = _object_mask(category, cy, cx, h, angle, y[y0:y1, x0:x1], x[y0:y1, x0:x1])
        rgb = np.array(COLOURS[colour], np.float32) * rng.uniform(0.9, 1.05)
        tex = _object_texture(category, rgb, rng, u, v, h)
        box = (slice(y0, y1), slice(x0, x1))
        image[box] = np.where(mask[..., None], tex, image[box])
        labels[box][mask] = CLASSES.index(category)
        instances[box][mask] = k
        infos.append(ObjectInfo(category, colour, k, int(mask.sum()), 0))
    for info in infos:
        info.visible = int((instances == info.instance).sum())
        info.captioned = info.visible > 0 and (info.visible >= info.area * MIN_VISIBLE
                                               or info.visible >= MIN_FRAME * s * s)
    image = image * rng.uniform(0.9, 1.1) + rng.normal(0, config.noise, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    counts = np.bincount(labels.ravel(), minlength=len(CLASSES))
    stuff = tuple(c for c in (top, ground) if c is not None and counts[CLASSES.index(c)] >= MIN_FRAME * s * s)
    return Scene(image=image, labels=labels, instances=instances, objects=infos, stuff=stuff,
                 meta={"layout": (top, ground), "closeup": closeup})


class World:
    """Deterministic scene source: `world.scene(i, split)` is the same array on every machine."""

    def __init__(self, seed: int = 0, config: WorldConfig | None = None):
        self.seed = int(seed)
        self.config = config or WorldConfig()

    def scene(self, index: int, split: str = "train", caption_rng: bool = True) -> Scene:
        config = self.config
        if split != "train" and not config.heldout:
            config = WorldConfig(**{**config.__dict__, "heldout": True})
        rng = scene_rng(self.seed, split, index)
        closeup = split == "train" and config.closeup > 0 and rng.random() < config.closeup
        scene = render_scene(rng, config, closeup=closeup)
        scene.split, scene.index = split, index
        scene.caption = caption_for(scene, rng, train=(split == "train"), partial=config.partial_captions)
        return scene

    def twin(self, index: int, split: str = "train", stuff_share: float = 0.0) -> Scene:
        """A hard negative of `scene(index)`: what a caption says is changed, the rest kept.

        With probability `stuff_share` (wide scenes only) the objects are kept (same colours and
        categories, new positions) and the stuff changes (another ground, or another top); otherwise the
        stuff layout and the number of objects are kept and each object's category changes (70%) or its
        colour changes (30%).

        Without twins, colours and stuff alone tell a caption from the rest of a batch and the model
        never has to learn the categories' textures; without stuff twins, the objects alone do, and the
        stuff classes get almost no gradient (a batch holds only a dozen stuff layouts).
        """
        base = self.scene(index, split)
        config = self.config
        rng = np.random.default_rng([self.seed, SPLITS[split], index, 1])
        pairs = set(allowed_pairs(config.heldout or split != "train"))
        top, ground = base.meta["layout"]
        if stuff_share > 0 and not base.meta["closeup"] and rng.random() < stuff_share:
            objects = [(o.colour, o.category) for o in base.objects]
            if top is not None and rng.random() < 0.5:
                top = next(t for t in SKY_STUFF if t != top)
            else:
                options = [g for g in GROUND_STUFF if g != ground]
                ground = options[rng.integers(len(options))]
        else:
            change_category = rng.random() < 0.7
            objects = []
            for o in base.objects:
                if change_category:
                    options = [(o.colour, c) for c in OBJECTS if c != o.category and (o.colour, c) in pairs]
                else:
                    options = [(c, o.category) for c in COLOURS if c != o.colour and (c, o.category) in pairs]
                objects.append(options[rng.integers(len(options))])
        scene = render_scene(rng, config, objects, stuff=(top, ground), closeup=base.meta["closeup"])
        scene.split, scene.index = split, index
        scene.caption = caption_for(scene, rng, train=(split == "train"), partial=config.partial_captions)
        return scene

    def batch(self, indices, split: str = "train") -> list[Scene]:
        return [self.scene(int(i), split) for i in indices]
