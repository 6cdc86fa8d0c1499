"""Where the outputs of `segment` and `label` go: one name per input, mirrored from its folder tree.

    OUT/labels/<name>.png     label ids (palette PNG)      OUT/overlays/<name>.png   overlay + legend
    OUT/labels/<name>.json    sidecar, written last        OUT/heatmaps/<name>/      one PNG per class

<name> is the input's path relative to the deepest folder holding every input, without its extension
(`photos/sub/a.jpg` -> `sub/a`), so `a.png` in two folders, `a_2.png` beside `a.png` or `a_overlay.png`
beside `a.jpg` can never meet. Where two files of one folder share a stem (`a.jpg`, `a.png`) that
folder's names keep their extensions (`a.jpg`, `a.png`). Derived files live in their own folders, so no
input name can reach them, and no output path may be an input path.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import SettingsError

LABELS, OVERLAYS, HEATMAPS, PROBS, EXPORT = "labels", "overlays", "heatmaps", "probs", "export"


@dataclass(frozen=True)
class OutputLayout:
    """The output folder of a labelling run and the paths of each input's files in it."""

    root: Path

    def label(self, name: str) -> Path:
        return self.root / LABELS / f"{name}.png"

    def sidecar(self, name: str) -> Path:
        return self.root / LABELS / f"{name}.json"

    def overlay(self, name: str) -> Path:
        return self.root / OVERLAYS / f"{name}.png"

    def heatmaps(self, name: str) -> Path:
        return self.root / HEATMAPS / name

    def probs(self, name: str) -> Path:
        return self.root / PROBS / f"{name}.npy"

    def folders(self) -> list[Path]:
        """The folders this layout writes into (never scanned for inputs)."""
        return [self.root / d for d in (LABELS, OVERLAYS, HEATMAPS, PROBS, EXPORT)]

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def output_names(files: Sequence[Path]) -> list[str]:
    """One output name per input file (module docstring); unique, also ignoring case."""
    if not files:
        return []
    absolute = [Path(os.path.abspath(f)) for f in files]
    root = Path(os.path.commonpath([str(a.parent) for a in absolute]))
    rels = [PurePosixPath(a.relative_to(root).as_posix()) for a in absolute]
    by_folder: dict[PurePosixPath, list[int]] = defaultdict(list)
    for i, r in enumerate(rels):
        by_folder[r.parent].append(i)
    names = [""] * len(rels)
    for folder, idx in by_folder.items():
        stems = [rels[i].stem.lower() for i in idx]
        keep_ext = len(set(stems)) < len(stems)
        for i in idx:
            names[i] = (folder / (rels[i].name if keep_ext else rels[i].stem)).as_posix()
    seen: set[str] = set()
    for i, name in enumerate(names):  # e.g. A.jpg and a.jpg on a case-sensitive disk
        if name.lower() in seen:
            names[i] = f"{name}~{hashlib.sha256(str(rels[i]).encode()).hexdigest()[:8]}"
        seen.add(names[i].lower())
    return names


def check_out_dir(path: Path, option: str = "--out") -> Path:
    """Create the output folder (or find it) and make sure it can be written; a SettingsError otherwise."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise SettingsError(f"{option} {path}: is a file, not a folder; give a folder for the outputs")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SettingsError(f"{option} {path}: cannot create the folder ({err.strerror or err})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SettingsError(f"{option} {path}: the folder is not writable; choose another --out")
    return path


def check_no_overwrite(inputs: Sequence[Path], layout: OutputLayout, names: Sequence[str]) -> None:
    """Refuse (before any work) when an output would replace an input, naming both."""
    owned = {Path(p).resolve(): Path(p) for p in inputs}
    for src, name in zip(inputs, names):
        for out in (layout.label(name), layout.sidecar(name), layout.overlay(name)):
            hit = owned.get(out.resolve())
            if hit is not None:
                raise SettingsError(f"--out {layout.root}: the output {out} would overwrite the input {hit} "
                                    f"(the outputs of {src}); choose an --out outside the inputs")


__all__ = ["EXPORT", "HEATMAPS", "LABELS", "OVERLAYS", "PROBS", "OutputLayout", "check_no_overwrite", "check_out_dir",
           "output_names"]
