"""Readers for segmentation benchmarks in the layouts people have on disk.

``open_dataset(name, root, split)`` returns a SegDataset: a sequence of Samples (RGB image,
int64 label map, name, image path) plus the benchmark's official class list. Label maps use
``ignore_index`` for unlabelled pixels; every other value is a class index into ``classes``.

Conventions follow MMSegmentation (what MaskCLIP's evaluation used) unless noted:
- "reduce_zero_label" (voc20, context59, ade150): raw 0 becomes ignore, other ids shift by -1,
  raw 255 stays ignore.
- Images are read without applying EXIF orientation: annotations index the pixel grid as
  stored (mmseg, pycocotools and the dataset tools all work on stored pixels).
- Each reader checks at open time that every image and label file exists; a sample whose
  label does not match its image size, or holds ids outside the class list, raises a
  DatasetError naming the file when it is read.

See ``DATASETS`` (name -> DatasetInfo, aliases included) for the accepted names and the
expected layout of each; ``describe_datasets()`` prints them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import display_names, load_class_names, parse_class_arg
from .coco_masks import paint_semantic
from .image_io import IMAGE_EXTENSIONS, read_image, read_label


class DatasetError(ValueError):
    """A dataset whose files are missing or malformed; the message says what was expected."""


@dataclass
class Sample:
    image: np.ndarray  # H x W x 3 uint8 RGB
    label: np.ndarray  # H x W int64, class index or ignore_index
    name: str  # file stem, unique within the dataset
    path: Path  # image file


@dataclass(frozen=True)
class SampleRef:
    """Where one sample lives; ``label_path`` is None when labels come from elsewhere (COCO JSON)."""

    name: str
    image_path: Path
    label_path: Path | None


class SegDataset(Sequence[Sample]):
    """A list of (image, label) files with a class list and a label decoder."""

    def __init__(
        self,
        name: str,
        classes: list[list[str]],
        refs: Sequence[SampleRef],
        load_label: Callable[[SampleRef], np.ndarray],
        ignore_index: int = 255,
        root: Path | None = None,
    ):
        if not refs:
            raise DatasetError(f"{name}: no samples found under {root}")
        if 0 <= ignore_index < len(classes):
            raise DatasetError(f"{name}: ignore_index {ignore_index} collides with a class id (0..{len(classes) - 1})")
        self.name = name
        self.classes = classes
        self.refs = list(refs)
        self.ignore_index = int(ignore_index)
        self.root = root
        self._load_label = load_label

    @property
    def class_names(self) -> list[str]:
        """Display names (first synonym of each class)."""
        return display_names(self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.refs]

    def __len__(self) -> int:
        return len(self.refs)

    def __repr__(self) -> str:
        return f"SegDataset({self.name!r}, {len(self)} samples, {self.num_classes} classes, root={str(self.root)!r})"

    def read_label(self, index: int) -> np.ndarray:
        """The label map of sample ``index`` (int64, checked), without reading the image."""
        ref = self.refs[index]
        label = np.asarray(self._load_label(ref), dtype=np.int64)
        bad = ~(((label >= 0) & (label < self.num_classes)) | (label == self.ignore_index))
        if bad.any():
            values = np.unique(label[bad])[:10].tolist()
            raise DatasetError(
                f"{self.name}: label {ref.label_path or ref.name} holds values {values} outside the "
                f"{self.num_classes} classes (0..{self.num_classes - 1}) and ignore {self.ignore_index}; "
                "check that the dataset name matches the label files"
            )
        return label

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return self.subset(range(len(self))[index])
        ref = self.refs[index]
        image = read_image(ref.image_path, exif=False)
        label = self.read_label(index)
        if label.shape != image.shape[:2]:
            raise DatasetError(
                f"{self.name}: label {ref.label_path or ref.name} is {label.shape[1]}x{label.shape[0]} "
                f"but image {ref.image_path} is {image.shape[1]}x{image.shape[0]} (width x height)"
            )
        return Sample(image=image, label=label, name=ref.name, path=ref.image_path)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def subset(self, indices: Sequence[int]) -> SegDataset:
        """A dataset with only the given samples (e.g. the first N for a quick run)."""
        refs = [self.refs[i] for i in indices]
        return SegDataset(self.name, self.classes, refs, self._load_label, self.ignore_index, self.root)


# ----------------------------------------------------------------------------- label maps


def reduce_zero_label(raw: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """mmseg's reduce_zero_label: 0 -> ignore, k -> k-1, ignore (255) stays ignore."""
    raw = np.asarray(raw, dtype=np.int64)
    out = raw - 1
    out[(raw == 0) | (raw == ignore_index)] = ignore_index
    return out


_reduce_zero = reduce_zero_label  # for readers whose keyword argument shadows the name


def lut_map(raw: np.ndarray, lut: np.ndarray, path: Path | str) -> np.ndarray:
    """Map raw ids through a lookup table; ids beyond the table or marked -1 are an error."""
    raw = np.asarray(raw, dtype=np.int64)
    if raw.size and (raw.min() < 0 or raw.max() >= len(lut)):
        raise DatasetError(f"label {path} holds id {int(raw.max())} outside the expected 0..{len(lut) - 1}")
    out = lut[raw]
    if (out < 0).any():
        values = np.unique(raw[out < 0])[:10].tolist()
        raise DatasetError(f"label {path} holds unexpected ids {values}")
    return out


# COCO-Stuff 164k: the 182 raw ids of stuffthingmaps (0-based COCO ids, 0 = person) minus the
# 11 ids no annotation uses, renumbered 0..170 in order (mmseg tools/.../coco_stuff164k.py).
COCO_STUFF_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
_COCO_STUFF_LUT = np.full(256, 255, dtype=np.int64)
_COCO_STUFF_LUT[[i for i in range(182) if i not in COCO_STUFF_UNUSED_IDS]] = np.arange(171)

# Cityscapes labelIds (0..33) -> the 19 train ids
# (cityscapesScripts labels.py); every other value (void classes, 255) is ignore (255).
CITYSCAPES_ID_TO_TRAINID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
_CITYSCAPES_LUT = np.full(256, 255, dtype=np.int64)
for _k, _v in CITYSCAPES_ID_TO_TRAINID.items():
    _CITYSCAPES_LUT[_k] = _v

# CamVid (SegNet): 0..10 classes, 11 = void.
_CAMVID_LUT = np.array([*range(11), 255], dtype=np.int64)


# ----------------------------------------------------------------------------- helpers


def _layout_error(dataset: str, root: Path, problem: str) -> DatasetError:
    info = DATASETS.get(dataset)
    layout = f"\nExpected layout:\n{info.layout}" if info else ""
    return DatasetError(f"{dataset}: {problem} (root {root}).{layout}")


def _find_base(root: Path, candidates: Sequence[str], required: Sequence[str], dataset: str) -> Path:
    """The first of root/<candidate> that contains all ``required`` sub-paths."""
    if not root.exists():
        raise _layout_error(dataset, root, "dataset root does not exist")
    for c in candidates:
        base = root / c if c else root
        if all((base / r).exists() for r in required):
            return base
    tried = ", ".join(str(root / c if c else root) for c in candidates)
    raise _layout_error(dataset, root, f"could not find {' and '.join(required)} in any of: {tried}")


def _read_split(path: Path) -> list[str]:
    """Sample names from a split file: first token of each line, basename without extension."""
    names = []
    for line in path.read_text().splitlines():
        if line.strip():
            tok = line.split()[0]
            names.append(Path(tok).stem if "/" in tok or "." in Path(tok).name else tok)
    return names


def _check_exist(dataset: str, root: Path, refs: Sequence[SampleRef]) -> None:
    missing = [p for r in refs for p in (r.image_path, r.label_path) if p is not None and not p.is_file()]
    if missing:
        shown = "\n  ".join(str(p) for p in missing[:3])
        raise _layout_error(dataset, root, f"{len(missing)} listed files are missing, e.g.\n  {shown}\n")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def _first_existing(base: Path, stem: str, suffixes: Sequence[str]) -> Path | None:
    for s in suffixes:
        p = base / f"{stem}{s}"
        if p.is_file():
            return p
    return None


# ----------------------------------------------------------------------------- Pascal VOC


def open_voc(root: str | Path, split: str = "val", *, background: bool = True, aug: bool = False) -> SegDataset:
    """Pascal VOC 2012 as voc21 (background = 0) or voc20 (background ignored)."""
    dataset = "voc21" if background else "voc20"
    root = Path(root)
    ann = "SegmentationClassAug" if aug else "SegmentationClass"
    base = _find_base(root, ["", "VOC2012", "VOCdevkit/VOC2012"], ["JPEGImages", ann], dataset)
    split_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not split_file.is_file():
        raise _layout_error(dataset, root, f"split file {split_file} not found")
    refs = [SampleRef(n, base / "JPEGImages" / f"{n}.jpg", base / ann / f"{n}.png") for n in _read_split(split_file)]
    _check_exist(dataset, root, refs)

    def load(ref: SampleRef) -> np.ndarray:
        raw = read_label(ref.label_path)  # palette indices: 0..20, 255 boundary/void
        return raw.astype(np.int64) if background else reduce_zero_label(raw)

    return SegDataset(dataset, load_class_names(dataset), refs, load, 255, base)


# ----------------------------------------------------------------------------- Pascal Context


def open_context(root: str | Path, split: str = "val", *, background: bool = True) -> SegDataset:
    """Pascal Context (mmseg layout) as context60 (0 = background) or context59 (0 ignored)."""
    dataset = "context60" if background else "context59"
    root = Path(root)
    base = _find_base(root, ["", "VOC2010", "VOCdevkit/VOC2010"], ["JPEGImages", "SegmentationClassContext"], dataset)
    split_file = base / "ImageSets" / "SegmentationContext" / f"{split}.txt"
    if not split_file.is_file():
        raise _layout_error(dataset, root, f"split file {split_file} not found")
    refs = [
        SampleRef(n, base / "JPEGImages" / f"{n}.jpg", base / "SegmentationClassContext" / f"{n}.png")
        for n in _read_split(split_file)
    ]
    _check_exist(dataset, root, refs)

    def load(ref: SampleRef) -> np.ndarray:
        raw = read_label(ref.label_path)
        return raw.astype(np.int64) if background else reduce_zero_label(raw)

    return SegDataset(dataset, load_class_names(dataset), refs, load, 255, base)


_CTX459_LABEL_DIRS = ("SegmentationClassContext_459", "annotations_ctx459/{split}", "pascal_ctx_d2/annotations_ctx459/{split}")
CONTEXT459_IGNORE = 65535


def open_context459(
    root: str | Path, split: str = "val", *, label_dir: str | Path | None = None, image_dir: str | Path | None = None
) -> SegDataset:
    """Pascal Context with all 459 classes, from converted label maps.

    The official full labels are MATLAB files (trainval/*.mat), which need scipy to read, so
    they are not read here. Convert them first, as ODISE / CAT-Seg do: ids 1..459 -> 0..458,
    0 (unlabelled) -> 65535, saved as 16-bit TIFF or PNG, one file per image named
    <image id>.tif/.png. Ignore index is 65535 (255 is a real class here).
    """
    dataset = "context459"
    root = Path(root)
    base = _find_base(root, ["", "VOC2010", "VOCdevkit/VOC2010"], ["JPEGImages"], dataset)
    images = Path(image_dir) if image_dir else base / "JPEGImages"
    if label_dir is not None:
        labels = Path(label_dir)
    else:
        cands = [b / d.format(split=split) for b in (base, root) for d in _CTX459_LABEL_DIRS]
        labels = next((c for c in cands if c.is_dir()), None)
        if labels is None:
            mat = " (found trainval/*.mat: convert them first, see the layout below)" if (base / "trainval").is_dir() else ""
            raise _layout_error(dataset, root, f"no 459-class label folder found{mat}; tried {', '.join(map(str, cands))}")
    split_file = base / "ImageSets" / "SegmentationContext" / f"{split}.txt"
    if split_file.is_file():
        names = _read_split(split_file)
        label_paths = [_first_existing(labels, n, (".tif", ".tiff", ".png")) or labels / f"{n}.tif" for n in names]
    else:
        label_paths = sorted(p for p in labels.iterdir() if p.suffix.lower() in (".tif", ".tiff", ".png"))
        names = [p.stem for p in label_paths]
    refs = [SampleRef(n, images / f"{n}.jpg", lp) for n, lp in zip(names, label_paths)]
    _check_exist(dataset, root, refs)

    def load(ref: SampleRef) -> np.ndarray:
        return read_label(ref.label_path).astype(np.int64)

    return SegDataset(dataset, load_class_names("context459"), refs, load, CONTEXT459_IGNORE, base)


# ----------------------------------------------------------------------------- COCO


def open_coco_stuff(root: str | Path, split: str = "val") -> SegDataset:
    """COCO-Stuff 164k: *_labelTrainIds.png (0..170, 255) or raw stuffthingmaps *.png (182 ids)."""
    dataset = "coco-stuff171"
    root = Path(root)
    img_rel, ann_rel = f"images/{split}2017", f"annotations/{split}2017"
    base = _find_base(root, ["", "coco_stuff164k", "coco-stuff"], [img_rel, ann_rel], dataset)
    refs = []
    for img in _images_in(base / img_rel):
        lab = _first_existing(base / ann_rel, img.stem, ("_labelTrainIds.png", ".png"))
        refs.append(SampleRef(img.stem, img, lab or base / ann_rel / f"{img.stem}_labelTrainIds.png"))
    _check_exist(dataset, root, refs)

    def load(ref: SampleRef) -> np.ndarray:
        raw = read_label(ref.label_path)
        if ref.label_path.name.endswith("_labelTrainIds.png"):
            return raw.astype(np.int64)
        return lut_map(raw, _COCO_STUFF_LUT, ref.label_path)

    return SegDataset(dataset, load_class_names("coco_stuff171"), refs, load, 255, base)


@dataclass
class CocoInstances:
    """The parts of an instances_*.json needed for semantic masks."""

    images: dict[str, dict]  # file stem -> image record
    annotations: dict[int, list[dict]]  # image id -> annotations
    category_to_label: dict[int, int]  # COCO category id -> 1..80 (category-id order)
    category_names: list[str]  # names in label order (index 0 = first category)


def load_coco_instances(path: str | Path) -> CocoInstances:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        cats = sorted(data["categories"], key=lambda c: int(c["id"]))
        images = {Path(im["file_name"]).stem: im for im in data["images"]}
        anns: dict[int, list[dict]] = {}
        for a in data["annotations"]:
            anns.setdefault(int(a["image_id"]), []).append(a)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(
            f"cannot read COCO instances file {path}: {e}; expected the official instances_<split>2017.json"
        ) from None
    return CocoInstances(
        images=images,
        annotations=anns,
        category_to_label={int(c["id"]): i + 1 for i, c in enumerate(cats)},
        category_names=[c["name"] for c in cats],
    )


def open_coco_object(
    root: str | Path,
    split: str = "val",
    *,
    annotations: str | Path | None = None,
    crowd: str = "paint",
    order: str = "area",
) -> SegDataset:
    """COCO-Object: 80 COCO classes + background (0).

    Labels come from, in order of preference: the instances JSON given as ``annotations``;
    precomputed ``annotations/<split>2017/*_instanceTrainIds.png`` (GroupViT / SCLIP's files,
    made from COCO-Stuff's stuffthingmaps: objects 1..80, everything else 0); or
    ``annotations/instances_<split>2017.json`` rasterised here.

    Rasterising: category ids map to 1..80 in category-id order, all other pixels are
    background 0 and nothing is ignored (in the GroupViT/SCLIP files unlabelled pixels also
    became background). Larger instances are painted first so smaller ones lying on them stay
    visible (``order="file"``: file order, later wins). Crowd regions are painted as their
    class by default (``crowd="ignore"`` marks them 255, ``"skip"`` leaves them background).
    """
    dataset = "coco-object"
    root = Path(root)
    if not root.exists():
        raise _layout_error(dataset, root, "dataset root does not exist")
    found = [
        (root / b, root / b / d)
        for b in ("", "coco_stuff164k", "coco")
        for d in (f"images/{split}2017", f"{split}2017")
        if (root / b / d).is_dir()
    ]
    if not found:
        raise _layout_error(dataset, root, f"no image folder images/{split}2017 or {split}2017")
    base, img_dir = found[0]
    png_dir = base / "annotations" / f"{split}2017"
    json_path = Path(annotations) if annotations else base / "annotations" / f"instances_{split}2017.json"
    classes = load_class_names("coco_object")

    use_png = annotations is None and png_dir.is_dir() and any(png_dir.glob("*_instanceTrainIds.png"))
    if use_png:
        refs = [SampleRef(p.stem, p, png_dir / f"{p.stem}_instanceTrainIds.png") for p in _images_in(img_dir)]
        _check_exist(dataset, root, refs)
        return SegDataset(dataset, classes, refs, lambda r: read_label(r.label_path).astype(np.int64), 255, base)

    if not json_path.is_file():
        raise _layout_error(dataset, root, f"neither {png_dir}/*_instanceTrainIds.png nor {json_path} found")
    coco = load_coco_instances(json_path)
    if len(coco.category_to_label) != 80:
        raise DatasetError(f"{json_path} has {len(coco.category_to_label)} categories; COCO-Object expects the 80 COCO categories")
    refs = [
        SampleRef(stem, img_dir / coco.images[stem]["file_name"], None) for stem in sorted(coco.images)
    ]
    _check_exist(dataset, root, refs)

    def load(ref: SampleRef) -> np.ndarray:
        im = coco.images[ref.name]
        anns = coco.annotations.get(int(im["id"]), [])
        try:
            return paint_semantic(
                anns, int(im["height"]), int(im["width"]), coco.category_to_label, crowd=crowd, order=order
            )
        except (ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{dataset}: bad annotation for image {im['file_name']} in {json_path}: {e}") from None

    return SegDataset(dataset, classes, refs, load, 255, base)


# ----------------------------------------------------------------------------- ADE20K, Cityscapes, CamVid


def open_ade20k(root: str | Path, split: str = "val") -> SegDataset:
    """ADE20K SceneParsing (150 classes, 0 = other -> ignore)."""
    dataset = "ade150"
    root = Path(root)
    sub = {"val": "validation", "train": "training"}.get(split, split)
    try:
        base = _find_base(root, ["", "ADEChallengeData2016"], [f"images/{sub}", f"annotations/{sub}"], dataset)
        img_dir, ann_dir = base / "images" / sub, base / "annotations" / sub
    except DatasetError:
        base = _find_base(root, ["", "ADEChallengeData2016"], ["images", "annotations"], dataset)
        img_dir, ann_dir = base / "images", base / "annotations"
    refs = [SampleRef(p.stem, p, ann_dir / f"{p.stem}.png") for p in _images_in(img_dir)]
    _check_exist(dataset, root, refs)
    return SegDataset(dataset, load_class_names("ade150"), refs, lambda r: reduce_zero_label(read_label(r.label_path)), 255, base)


def open_cityscapes(root: str | Path, split: str = "val", *, label_type: str = "auto") -> SegDataset:
    """Cityscapes fine annotations, 19 train classes.

    ``label_type``: "trainIds" reads *_gtFine_labelTrainIds.png, "labelIds" maps
    *_gtFine_labelIds.png with the official table, "auto" prefers trainIds per image.
    """
    dataset = "cityscapes"
    if label_type not in ("auto", "trainIds", "labelIds"):
        raise ValueError(f"label_type must be 'auto', 'trainIds' or 'labelIds', got {label_type!r}")
    root = Path(root)
    base = _find_base(root, ["", "cityscapes"], ["leftImg8bit", "gtFine"], dataset)
    if (base / "leftImg8bit" / split).is_dir():
        img_dir, gt_dir = base / "leftImg8bit" / split, base / "gtFine" / split
        images = sorted(img_dir.rglob("*_leftImg8bit.png"))
    else:  # flat layout: leftImg8bit/*.png, gtFine/*.png
        img_dir, gt_dir = base / "leftImg8bit", base / "gtFine"
        images = sorted(img_dir.glob("*_leftImg8bit.png"))
    suffixes = {
        "auto": ("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png"),
        "trainIds": ("_gtFine_labelTrainIds.png",),
        "labelIds": ("_gtFine_labelIds.png",),
    }[label_type]
    refs = []
    for img in images:
        stem = img.name[: -len("_leftImg8bit.png")]
        folder = gt_dir / img.parent.relative_to(img_dir)
        lab = _first_existing(folder, stem, suffixes) or folder / f"{stem}{suffixes[0]}"
        refs.append(SampleRef(stem, img, lab))
    _check_exist(dataset, root, refs)

    def load(ref: SampleRef) -> np.ndarray:
        raw = read_label(ref.label_path)
        if ref.label_path.name.endswith("_labelTrainIds.png"):
            return raw.astype(np.int64)
        return lut_map(raw, _CITYSCAPES_LUT, ref.label_path)

    return SegDataset(dataset, load_class_names("cityscapes19"), refs, load, 255, base)


def open_camvid(root: str | Path, split: str = "val") -> SegDataset:
    """CamVid, SegNet version: <split>/*.png, <split>annot/*.png (0..10, 11 = void)."""
    dataset = "camvid"
    root = Path(root)
    base = _find_base(root, ["", "CamVid", "camvid"], [split, f"{split}annot"], dataset)
    split_file = base / f"{split}.txt"
    names = _read_split(split_file) if split_file.is_file() else [p.stem for p in _images_in(base / split)]
    refs = [SampleRef(n, base / split / f"{n}.png", base / f"{split}annot" / f"{n}.png") for n in names]
    _check_exist(dataset, root, refs)
    return SegDataset(
        dataset, load_class_names("camvid11"), refs, lambda r: lut_map(read_label(r.label_path), _CAMVID_LUT, r.label_path), 255, base
    )


# ----------------------------------------------------------------------------- generic folder


def open_folder(
    root: str | Path,
    split: str = "val",
    *,
    classes: str | Path | list[list[str]] | list[str],
    images: str = "images",
    labels: str = "labels",
    ignore_index: int = 255,
    reduce_zero_label: bool = False,
    label_suffix: str = "",
) -> SegDataset:
    """Any images folder + labels folder pairing files by stem (``<stem><label_suffix>.png``).

    ``classes``: a list, "cat,dog", or a class file (one class a line, synonyms comma-separated).
    ``split`` is unused (kept for a uniform signature).
    """
    dataset = "folder"
    root = Path(root)
    if isinstance(classes, (str, Path)):
        cls = parse_class_arg(classes)
    else:
        cls = [[c] if isinstance(c, str) else list(c) for c in classes]
    img_dir, lab_dir = root / images, root / labels
    for d in (img_dir, lab_dir):
        if not d.is_dir():
            raise _layout_error(dataset, root, f"folder {d} does not exist")
    refs = []
    for img in _images_in(img_dir):
        lab = _first_existing(lab_dir, img.stem + label_suffix, (".png", ".tif", ".tiff", ".bmp"))
        refs.append(SampleRef(img.stem, img, lab or lab_dir / f"{img.stem}{label_suffix}.png"))
    _check_exist(dataset, root, refs)
    ignore = int(ignore_index)

    def load(ref: SampleRef) -> np.ndarray:
        raw = read_label(ref.label_path)
        return _reduce_zero(raw, ignore) if reduce_zero_label else raw.astype(np.int64)

    return SegDataset(dataset, cls, refs, load, ignore, root)


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # canonical name
    opener: Callable[..., SegDataset]
    layout: str  # expected files, shown in errors and --help


_VOC_LAYOUT = """  <root>/[VOCdevkit/][VOC2012/]JPEGImages/<id>.jpg
  <root>/.../SegmentationClass/<id>.png       (palette PNG: 0 background, 1..20, 255 void)
  <root>/.../SegmentationClassAug/<id>.png    (with aug=True: SBD-augmented labels)
  <root>/.../ImageSets/Segmentation/<split>.txt"""
_CONTEXT_LAYOUT = """  <root>/[VOCdevkit/][VOC2010/]JPEGImages/<id>.jpg
  <root>/.../SegmentationClassContext/<id>.png   (mmseg conversion: 0 background, 1..59)
  <root>/.../ImageSets/SegmentationContext/<split>.txt"""
_CTX459_LAYOUT = """  <root>/[VOCdevkit/][VOC2010/]JPEGImages/<id>.jpg
  <root>/.../SegmentationClassContext_459/<id>.tif|png  or  annotations_ctx459/<split>/<id>.tif|png
      (16-bit maps, 0..458 = the 459 classes, 65535 = unlabelled; the official trainval/*.mat
       files need scipy and are not read: convert them first, LabelMap-1 with 0 -> 65535)
  optional <root>/.../ImageSets/SegmentationContext/<split>.txt"""
_COCO_STUFF_LAYOUT = """  <root>/[coco_stuff164k/]images/<split>2017/<id>.jpg
  <root>/.../annotations/<split>2017/<id>_labelTrainIds.png   (0..170, 255 ignore)
      or <id>.png from stuffthingmaps_trainval2017 (raw 0..181 ids, mapped like mmseg)"""
_COCO_OBJECT_LAYOUT = """  <root>/[images/]<split>2017/<id>.jpg
  <root>/annotations/instances_<split>2017.json     (polygons and RLE, rasterised here)
      or <root>/annotations/<split>2017/<id>_instanceTrainIds.png (GroupViT/SCLIP: 0 bg, 1..80)"""
_ADE_LAYOUT = """  <root>/[ADEChallengeData2016/]images/validation/<id>.jpg
  <root>/.../annotations/validation/<id>.png     (0 other -> ignore, 1..150)
      (a flat images/ + annotations/ pair is accepted too)"""
_CITYSCAPES_LAYOUT = """  <root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png
  <root>/gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png   (0..18, 255)
      or <stem>_gtFine_labelIds.png (official 34 ids, mapped to train ids)
      (flat leftImg8bit/*.png + gtFine/*.png is accepted too)"""
_CAMVID_LAYOUT = """  <root>/<split>/<name>.png, <root>/<split>annot/<name>.png   (0..10, 11 void)
  optional <root>/<split>.txt (SegNet list: '<image path> <label path>' per line)"""
_FOLDER_LAYOUT = """  <root>/<images>/<stem>.<ext>, <root>/<labels>/<stem><label_suffix>.png
  plus classes= (list, 'a,b,c' or a class file); ignore_index= (default 255)"""

_INFOS = [
    (DatasetInfo("voc21", lambda r, s="val", **k: open_voc(r, s, background=True, **k), _VOC_LAYOUT), ("voc", "pascal-voc", "voc2012")),
    (DatasetInfo("voc20", lambda r, s="val", **k: open_voc(r, s, background=False, **k), _VOC_LAYOUT), ()),
    (DatasetInfo("context60", lambda r, s="val", **k: open_context(r, s, background=True, **k), _CONTEXT_LAYOUT), ("pc60", "pascal-context60")),
    (DatasetInfo("context59", lambda r, s="val", **k: open_context(r, s, background=False, **k), _CONTEXT_LAYOUT), ("pc59", "pascal-context", "pascal-context59")),
    (DatasetInfo("context459", open_context459, _CTX459_LAYOUT), ("pc459", "pascal-context459")),
    (DatasetInfo("coco-stuff171", open_coco_stuff, _COCO_STUFF_LAYOUT), ("coco-stuff", "cocostuff", "coco-stuff164k")),
    (DatasetInfo("coco-object", open_coco_object, _COCO_OBJECT_LAYOUT), ("coco-object81", "cocoobject")),
    (DatasetInfo("ade150", open_ade20k, _ADE_LAYOUT), ("ade20k", "ade")),
    (DatasetInfo("cityscapes", open_cityscapes, _CITYSCAPES_LAYOUT), ("cityscapes19",)),
    (DatasetInfo("camvid", open_camvid, _CAMVID_LAYOUT), ("camvid11",)),
    (DatasetInfo("folder", open_folder, _FOLDER_LAYOUT), ("generic",)),
]

DATASETS: dict[str, DatasetInfo] = {}
for _info, _aliases in _INFOS:
    for _n in (_info.name, *_aliases):
        DATASETS[_n] = _info


def canonical_dataset_name(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[key].name


def open_dataset(name: str, root: str | Path, split: str = "val", **kwargs) -> SegDataset:
    """Open benchmark ``name`` (see DATASETS) stored under ``root``.

    Extra keyword arguments go to the reader: voc*: aug; context459: label_dir, image_dir;
    coco-object: annotations, crowd, order; cityscapes: label_type; folder: classes, images,
    labels, ignore_index, reduce_zero_label, label_suffix.
    """
    info = DATASETS[canonical_dataset_name(name)]
    return info.opener(Path(root), split, **kwargs)


def describe_datasets() -> str:
    """Accepted names, aliases and expected layouts, for --help texts."""
    lines = []
    for info, aliases in _INFOS:
        alias = f" (aliases: {', '.join(aliases)})" if aliases else ""
        lines.append(f"{info.name}{alias}\n{info.layout}")
    return "\n".join(lines)
