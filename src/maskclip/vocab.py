"""The vocabulary: which classes to label, their synonyms, the background group and the threshold.

One object, validated once, used by every command and both predictors. A class is a tuple of names
(synonyms: its score is the max over them); the first name is the one shown. `background` names are
merged into one class labelled "background" (the paper's web-image demos); with `threshold`, pixels
whose top probability is below it become background, or "unknown" when there is no background group.

One rule for names: after trimming, collapsing spaces and ignoring case, every name appears once in
the whole vocabulary (classes and background group). The published benchmark lists are kept exactly
as published, even where they break it (SCLIP's COCO-Object list names "bed" in its background class
and as a class): those come in with `allow_shared=True`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import SettingsError

BACKGROUND = "background"
UNKNOWN = "unknown"
_MAX_PATH_BYTES = 4096  # longer text is an inline list, never tried as a path (ENAMETOOLONG otherwise)
_MAX_NAME_BYTES = 255

ClassSpec = str | Sequence[str]


def name_key(name: str) -> str:
    """What two names must differ in: case and runs of spaces do not count."""
    return " ".join(name.lower().split())


def _clean(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(" ".join(n.split()) for n in names if n and n.strip())


@dataclass(frozen=True)
class Vocabulary:
    """Validated classes (synonym tuples), background group and threshold; see the module docstring."""

    classes: tuple[tuple[str, ...], ...]
    background: tuple[str, ...] = ()
    threshold: float | None = None
    allow_shared: bool = False
    below_threshold: int | None = None  # the class of pixels below the threshold (default: module docstring)
    display: tuple[str, ...] | None = None  # names shown per class when not the first synonym (published lists)

    def __post_init__(self) -> None:
        if not self.classes:
            raise SettingsError("the class list is empty: give at least one class name")
        for i, c in enumerate(self.classes):
            if not c:
                raise SettingsError(f"class {i + 1} has no name")
        if self.display is not None and len(self.display) != len(self.classes):
            raise SettingsError(f"{len(self.display)} display names for {len(self.classes)} classes")
        if self.below_threshold is not None and not 0 <= self.below_threshold < len(self.classes):
            raise SettingsError(f"below_threshold {self.below_threshold} is not a class index "
                                f"(0..{len(self.classes) - 1})")
        if self.threshold is not None and not (isinstance(self.threshold, (int, float)) and
                                               math.isfinite(self.threshold) and 0 <= self.threshold <= 1):
            raise SettingsError(f"threshold {self.threshold!r} must be a number in [0, 1]")
        self._check_names()

    def _check_names(self) -> None:
        seen: dict[str, int] = {}
        groups = list(self.classes) + ([self.background] if self.background else [])
        for i, names in enumerate(groups):
            for n in names:
                k = name_key(n)
                where = seen.get(k)
                if where is None:
                    seen[k] = i
                elif where == i:
                    raise SettingsError(f"class name {n!r} appears twice in class {i + 1}; give each name once")
                elif i == len(self.classes):
                    raise SettingsError(f"{n!r} is both a class and a --background name; a name belongs to "
                                        "one of them")
                elif not self.allow_shared or k == name_key(self.classes[where][0]) == name_key(self.classes[i][0]):
                    raise SettingsError(f"duplicate class name {n!r} (classes {where + 1} and {i + 1}); each "
                                        "name may appear once")

    @classmethod
    def of(cls, classes: Sequence[ClassSpec] | Vocabulary, background: Sequence[str] | None = None,
           threshold: float | None = None, allow_shared: bool = False,
           below_threshold: int | None = None) -> Vocabulary:
        """From Python lists: each class a name or a list of synonyms (already a Vocabulary: returned as it is,
        and then `background` and `threshold` must not be given again)."""
        if isinstance(classes, Vocabulary):
            if background is not None or threshold is not None:
                raise SettingsError("give background and threshold inside the Vocabulary, not beside it")
            return classes
        if isinstance(classes, str):
            raise SettingsError(f"classes must be a list of names, got the string {classes!r} "
                                "(use parse_classes for 'cat,dog')")
        groups = tuple(_clean([c] if isinstance(c, str) else c) for c in classes)
        return cls(groups, _clean(background or ()), threshold, allow_shared, below_threshold)

    @property
    def scored(self) -> list[list[str]]:
        """What the text classifier embeds: the classes, then the background group as one class."""
        return [list(c) for c in self.classes] + ([list(self.background)] if self.background else [])

    @property
    def names(self) -> list[str]:
        """Display names of the scored classes (the background group shows as "background")."""
        shown = list(self.display) if self.display is not None else [c[0] for c in self.classes]
        return shown + ([BACKGROUND] if self.background else [])

    @property
    def output_names(self) -> list[str]:
        """Display names of the labels a prediction can hold ("unknown" last when thresholding without
        a background group)."""
        unknown = self.threshold is not None and not self.background and self.below_threshold is None
        return self.names + ([UNKNOWN] if unknown else [])

    @property
    def fallback(self) -> int:
        """The label of pixels below the threshold: `below_threshold`, else the background group, else
        "unknown" (appended after the classes)."""
        return self.below_threshold if self.below_threshold is not None else len(self.classes)

    def check_prompts(self, templates: Sequence[str], context_length: int) -> None:
        """Every name fits every template in the text encoder's context (a clear error before any work)."""
        from .clip.tokenizer import PromptTooLongError, tokenize

        longest = sorted(templates, key=len)[-3:]  # prompts grow with the template's length
        for names in self.scored:
            for n in names:
                try:
                    tokenize([t.format(n) for t in longest], context_length=context_length)
                except PromptTooLongError as err:
                    raise SettingsError(f"class name {n!r} is too long for the text encoder ({err})") from None

    def to_json(self) -> dict:
        return {"classes": [list(c) for c in self.classes], "background": list(self.background) or None,
                "threshold": self.threshold}


def _as_file(text: str) -> Path | None:
    """The class file `text` names, if it can be a path and is an existing file."""
    if "\n" in text or len(text.encode()) > _MAX_PATH_BYTES:
        return None
    path = Path(text).expanduser()
    if any(len(part.encode()) > _MAX_NAME_BYTES for part in path.parts):
        return None
    try:
        return path if path.is_file() else None
    except OSError:
        return None


def _split(line: str) -> list[str]:
    return [n.strip() for n in line.split(",") if n.strip()]


def is_packaged_list(text: str) -> bool:
    """Whether a --classes value names one of the packaged benchmark lists (and no file of that name exists)."""
    from .data.classes import CLASS_LISTS, list_key

    return list_key(str(text)) in CLASS_LISTS and _as_file(str(text).strip()) is None


def parse_classes(text: str, option: str = "--classes", warn=None) -> tuple[tuple[str, ...], ...]:
    """Classes from a command-line value: a packaged list name, a class file, or "cat,dog".

    A file holds one class a line (synonyms comma-separated; '#' comments and blank lines skipped).
    `warn(message)` is told when a bare word is neither a packaged list nor a file and is taken as one
    class. Raises SettingsError naming the option.
    """
    from .data.classes import CLASS_LISTS, list_key, load_class_names

    raw = str(text).strip()
    if not raw:
        raise SettingsError(f"{option} is empty; give class names like 'cat,dog', a class file or a packaged list "
                            f"({', '.join(CLASS_LISTS)})")
    key = list_key(raw)  # a list name or an alias (coco_object_expanded, ade20k, ...)
    file = _as_file(raw)
    if file is None and key in CLASS_LISTS:
        return tuple(tuple(c) for c in load_class_names(key))
    if file is not None:
        try:
            lines = file.read_text("utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise SettingsError(f"{option} {file}: cannot read the class file ({err})") from None
        groups = [_split(ln) for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        groups = [g for g in groups if g]
        if not groups:
            raise SettingsError(f"{option} {file}: the class file is empty; give one class a line")
        return tuple(tuple(g) for g in groups)
    if "," not in raw and (os.sep in raw or "/" in raw or raw.endswith(".txt")):
        raise SettingsError(f"{option} {raw}: the class file does not exist; give an existing file or names like "
                            "'cat,dog'")
    names = _split(raw)
    if not names:
        raise SettingsError(f"{option} {raw!r} is empty: no class name in it; give names like 'cat,dog'")
    if len(names) == 1 and " " not in names[0] and warn is not None:
        warn(f"{option} {raw!r} is neither a packaged list ({', '.join(CLASS_LISTS)}) nor a file: taken as one "
             "class name")
    return tuple((n,) for n in names)


def parse_vocabulary(classes: str, background: str | None = None, threshold: float | None = None,
                     warn=None) -> Vocabulary:
    """The vocabulary of the command-line options --classes, --background and --threshold."""
    groups = parse_classes(classes, warn=warn)
    packaged = is_packaged_list(classes)
    bg: tuple[str, ...] = ()
    if background is not None:
        bg = tuple(_split(background))
        if not bg:
            raise SettingsError("--background is empty; give names like 'building,ground,grass,tree,sky'")
    try:
        return Vocabulary(groups, bg, threshold, allow_shared=packaged)  # published lists stay as published
    except SettingsError as err:
        raise SettingsError(f"{'--threshold' if 'threshold' in str(err) else '--classes'}: {err}") from None


__all__ = ["BACKGROUND", "UNKNOWN", "Vocabulary", "is_packaged_list", "name_key", "parse_classes",
           "parse_vocabulary"]
