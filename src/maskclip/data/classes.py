"""Class-name lists for the benchmarks, and parsing of user-given class lists.

A class is a list of names (synonyms); the first name is the display name. Scoring code
takes the max over a class's names, which is how the later training-free papers use the
``*_expanded`` lists. For voc21 / context60 / coco_object the first class is "background",
whose names are a list of stuff words (sky, wall, tree, ...): all are kept so that the
background score is the max over them, and ``display_names`` reports it as "background".

Display names are unique within every list (reports, --unseen and the vocabulary's one-name rule rely on it).
ADE20K-full (ade847) names several classes by the same first word ("bag" three times, "pot", "screen", ...):
there, see `_unique_display`, a class may lead with another of its own synonyms. Where each list comes from:
maskclip/assets/class_names/SOURCES.md.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# Packaged lists, by the name accepted by load_class_names -> file under maskclip/assets/class_names.
_PACKAGED = {
    "voc20": "voc20.txt",
    "voc21": "voc21_expanded.txt",
    "context59": "context59.txt",
    "context60": "context60_expanded.txt",
    "context459": "context459.txt",
    "coco_stuff171": "coco_stuff171.txt",
    "coco_object": "coco_object_expanded.txt",
    "ade150": "ade150.txt",
    "ade847": "ade847.txt",
    "cityscapes19": "cityscapes19.txt",
}

# Lists whose first line is the background class (display name "background").
_HAS_BACKGROUND = {"voc21", "context60", "coco_object"}

# CamVid (SegNet version) ids 0..10: Sky, Building, Pole, Road, Pavement, Tree, SignSymbol,
# Fence, Car, Pedestrian, Bicyclist, written as natural-language names for the text encoder.
CAMVID11 = [
    ["sky"], ["building"], ["pole"], ["road"], ["pavement"], ["tree"],
    ["sign symbol"], ["fence"], ["car"], ["pedestrian"], ["bicyclist"],
]

_ALIASES = {
    "voc21_expanded": "voc21",
    "context60_expanded": "context60",
    "coco_object_expanded": "coco_object",
    "coco_object81": "coco_object",
    "cityscapes": "cityscapes19",
    "ade20k": "ade150",
    "ade20k_full": "ade847",
    "ade_full": "ade847",
    "a847": "ade847",
    "coco_stuff": "coco_stuff171",
    "camvid": "camvid11",
}

CLASS_LISTS: tuple[str, ...] = tuple(sorted([*_PACKAGED, "camvid11"]))


def _split_line(line: str) -> list[str]:
    return [n.strip() for n in line.split(",") if n.strip()]


def _key(name: str) -> str:
    return " ".join(name.lower().split())  # as maskclip.vocab.name_key: case and runs of spaces do not count


def list_key(name: str) -> str:
    """The packaged-list key that ``name`` (a list name or alias, any case, '-' or '_') stands for."""
    key = name.strip().lower().replace("-", "_")
    return _ALIASES.get(key, key)


def _unique_display(classes: list[list[str]]) -> list[list[str]]:
    """Lead every class with a name that no other class leads with.

    A class scores the max over its names, so their order changes only what is shown. Among classes that
    share a first name, one with a single name (else the first) keeps it; every other one leads with its
    first synonym that no class leads with (ade847: "bag, handbag, pocketbook, purse" shows as "handbag").
    """
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(classes):
        groups.setdefault(_key(c[0]), []).append(i)
    leads = set(groups)
    out = [list(c) for c in classes]
    for ids in (g for g in groups.values() if len(g) > 1):
        keeper = next((i for i in ids if len(classes[i]) == 1), ids[0])
        for i in ids:
            if i == keeper:
                continue
            alt = next((n for n in classes[i][1:] if _key(n) not in leads), None)
            if alt is None:
                raise ValueError(f"class {i} {classes[i]!r} has no name of its own to show; another class leads "
                                 f"with {classes[i][0]!r}")
            leads.add(_key(alt))
            out[i] = [alt, *(n for n in classes[i] if n != alt)]
    return out


def load_class_names(name: str) -> list[list[str]]:
    """The packaged class list ``name`` (one of CLASS_LISTS) as a list of synonym lists, in class-id order.

    The background class of voc21/context60/coco_object is returned with "background" as its
    first (display) name, followed by all its stuff words. First names are unique (`_unique_display`).
    """
    key = list_key(name)
    if key == "camvid11":
        return [list(c) for c in CAMVID11]
    if key not in _PACKAGED:
        raise ValueError(f"unknown class list {name!r}; choose one of: {', '.join(CLASS_LISTS)}")
    text = resources.files("maskclip.assets").joinpath("class_names").joinpath(_PACKAGED[key]).read_text("utf-8")
    classes = [_split_line(line) for line in text.splitlines() if line.strip()]
    if key in _HAS_BACKGROUND:
        bg = [n for n in classes[0] if n != "background"]
        classes[0] = ["background", *bg]
    return _unique_display(classes)


# The successors' class-name files (SCLIP's; ClearCLIP's where they differ), by the dataset they label
_METHOD_LISTS = {"voc21": "voc21", "voc20": "voc20", "context60": "context60", "context59": "context59",
                 "coco-object": "coco_object", "coco-stuff171": "coco_stuff171", "cityscapes": "cityscapes19",
                 "ade150": "ade150"}
_CLEARCLIP_OWN = ("voc21", "voc20", "coco_object")


def method_class_names(method: str, dataset: str) -> tuple[list[list[str]], list[str]] | None:
    """The names SCLIP, ClearCLIP or NACLIP score for `dataset` (their configs/cls_*.txt, names split on ', ';
    NACLIP's are SCLIP's byte for byte) and the names to show: a first line of stuff words is the background
    class, shown as "background" but scored by those words alone. None for another method or dataset."""
    key = _METHOD_LISTS.get(dataset)
    if key is None or method not in ("sclip", "clearclip", "naclip"):
        return None
    folder = "clearclip" if method == "clearclip" and key in _CLEARCLIP_OWN else "sclip"
    text = resources.files("maskclip.assets").joinpath("class_names").joinpath(folder).joinpath(f"{key}.txt")
    text = text.read_text("utf-8")
    classes = [_split_line(line) for line in text.splitlines() if line.strip()]
    shown = [c[0] for c in classes]
    if dataset in ("voc21", "coco-object", "context60"):
        shown[0] = "background"
    return classes, shown


def display_names(classes: list[list[str]]) -> list[str]:
    """The first name of every class."""
    return [c[0] for c in classes]


def parse_class_arg(text: str | Path) -> list[list[str]]:
    """Classes from a command-line value: "cat,dog" or the path of a file with one class a line.

    In a file, a line may hold comma-separated synonyms ("person, man, woman"); blank lines
    and lines starting with '#' are skipped. In the inline form every comma separates classes.
    The vocabulary's one name rule applies (maskclip.vocab): a repeated name is a ValueError naming it.
    """
    from ..vocab import Vocabulary, parse_classes

    return [list(c) for c in Vocabulary(parse_classes(str(text), option="class list")).classes]
