"""Zero-shot seen/unseen class splits of the benchmarks, as the works that define them drew them.

A split is the packaged file maskclip/assets/splits/<name>_unseen.txt: one unseen class a line, written as
its line of the class list of the same name (maskclip/assets/class_names, synonyms and all); every other
class of that list is seen. Each line is checked against the list when the split is loaded, so a misspelt
or repeated name fails loudly instead of silently moving a class to the seen side. Sources:
maskclip/assets/splits/SOURCES.md.

- voc20 (15 seen / 5 unseen), coco_stuff171 (156 / 15), context60 (50 / 10, background kept as a seen
  class): MaskCLIP+'s zero-shot configs (the paper's Table 2 protocol).
- context59 (49 / 10): the same 10 unseen classes on the 59-class list without background; a convenience,
  not a protocol of the paper (MaskCLIP+ evaluates Context zero-shot on 60 classes).
- ade847 (572 / 275): ZegFormer's frequency split of ADE20K-full: unseen = the classes its category list
  marks "rare" (seen in at most 10 training images).
"""

from __future__ import annotations

from importlib import resources

from .classes import _key, display_names, list_key, load_class_names

SPLITS: tuple[str, ...] = ("ade847", "coco_stuff171", "context59", "context60", "voc20")


def _unseen_lines(key: str, name: str) -> list[str]:
    if key not in SPLITS:
        raise ValueError(f"no zero-shot split for {name!r}; choose one of: {', '.join(SPLITS)}")
    folder = resources.files("maskclip.assets").joinpath("splits")
    text = folder.joinpath(f"{key}_unseen.txt").read_text("utf-8")
    return [line for line in text.splitlines() if line.strip()]


def split_ids(name: str) -> tuple[list[int], list[int]]:
    """(seen, unseen) class ids of split ``name`` in its class list, each sorted.

    A line matches the class with the same set of names (any order, case and spacing), or the class shown
    by that name. Raises ValueError naming a line that matches no class or repeats one.
    """
    key = list_key(name)
    lines = _unseen_lines(key, name)
    classes = load_class_names(key)
    by_names = {frozenset(_key(n) for n in c): i for i, c in enumerate(classes)}
    by_display = {_key(n): i for i, n in enumerate(display_names(classes))}
    unseen: list[int] = []
    for line in lines:
        names = frozenset(_key(n) for n in line.split(",") if n.strip())
        i = by_names.get(names, by_display.get(_key(line)))
        if i is None:
            raise ValueError(f"split {key}: unseen class {line.strip()!r} is not a class of {key}")
        if i in unseen:
            raise ValueError(f"split {key}: unseen class {line.strip()!r} is listed twice")
        unseen.append(i)
    if len(unseen) == len(classes):
        raise ValueError(f"split {key}: every class is unseen")
    rest = set(unseen)
    return [i for i in range(len(classes)) if i not in rest], sorted(unseen)


def load_split(name: str) -> tuple[list[str], list[str]]:
    """(seen, unseen) display names of split ``name``, in class-id order: the names ``dataset.class_names``
    shows for the benchmark of the same class list (ade847's as `load_class_names` leads them)."""
    seen, unseen = split_ids(name)
    shown = display_names(load_class_names(list_key(name)))
    return [shown[i] for i in seen], [shown[i] for i in unseen]


__all__ = ["SPLITS", "load_split", "split_ids"]
