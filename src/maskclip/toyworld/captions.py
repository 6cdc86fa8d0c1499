"""Natural-language captions of toy-world scenes, and the prompt templates that match their style.

Captions name every visible object with its colour (the colour is sometimes dropped in training so
a bare category name also means something) and the stuff in view (what it stands on or in front of). The prompt
templates below are phrased like the captions: the toy CLIP never saw "a photo of a ..." language.
"""

from __future__ import annotations

import numpy as np

from .scene import Scene

# caption-style templates for building text classifiers against the toy CLIP
TEMPLATES: list[str] = [
    "a {} .",
    "there is a {} in the scene .",
    "a scene with a {} .",
    "{} .",
]

_GROUND_PHRASE = {"grass": "on the grass", "sand": "on the sand", "water": "in the water"}
_TOP_PHRASE = {"sky": "under the sky", "wall": "in front of a wall"}


def article(phrase: str) -> str:
    """'a red zebra', 'an orange fish'."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def partial_caption(scene: Scene, rng: np.random.Generator) -> str:
    """One thing in the scene, phrased like a prompt template ("a red zebra .", "there is a grass in the scene .").

    Short captions teach the model what a single name looks like, which is what a text classifier
    built from the templates asks it.
    """
    objs = [o for o in scene.objects if o.captioned]
    if objs and (rng.random() < 0.75 or not scene.stuff):  # a close-up may show no stuff at all
        o = objs[rng.integers(len(objs))]
        name = o.category if rng.random() < 0.3 else f"{o.colour} {o.category}"
    else:
        name = scene.stuff[rng.integers(len(scene.stuff))]
    return TEMPLATES[rng.integers(len(TEMPLATES))].format(name)


def caption_for(scene: Scene, rng: np.random.Generator | None = None, train: bool = True,
                partial: float = 0.0) -> str:
    """A caption naming the visible objects and the stuff; randomised (order, phrasing) when `rng` is given.

    With probability `partial` (training only) the caption names one thing only (`partial_caption`).
    """
    if rng is not None and train and partial > 0 and rng.random() < partial:
        return partial_caption(scene, rng)
    objs = [o for o in scene.objects if o.captioned]
    if rng is not None:
        order = rng.permutation(len(objs))
        objs = [objs[i] for i in order]
    names = []
    for o in objs:
        drop_colour = rng is not None and train and rng.random() < 0.15
        names.append(article(o.category if drop_colour else f"{o.colour} {o.category}"))
    top = next((s for s in scene.stuff if s in _TOP_PHRASE), None)
    ground = next((s for s in scene.stuff if s in _GROUND_PHRASE), None)
    place = ([_GROUND_PHRASE[ground]] if ground else []) + ([_TOP_PHRASE[top]] if top else [])
    stuff = [c for c in (ground, top) if c]
    style = int(rng.integers(3)) if rng is not None else 0
    if not names:  # only stuff in view
        return f"{_join(stuff)} ."
    if not stuff:  # a close-up filled by objects
        return f"{_join(names)} ."
    if style == 0:
        return f"{_join(names)} {' '.join(place)} ."
    if style == 1:
        return f"{_join(stuff)} with {_join(names)} ."
    return f"there is {_join(names)} {place[0]} ."
