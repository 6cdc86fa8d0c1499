"""Readers for segmentation benchmarks in the layouts people have on disk (Pascal VOC and Context,
ADE20K, Cityscapes, CamVid, any images + labels folder; COCO in `coco_readers`).

Conventions follow MMSegmentation (what MaskCLIP's evaluation used) unless noted:
- "reduce_zero_label" (voc20, context59, ade150): raw 0 becomes ignore, other ids shift by -1,
  raw 255 stays ignore.
- Images are read without applying EXIF orientation: annotations index the pixel grid as
  stored (mmseg, pycocotools and the dataset tools all work on stored pixels).
- Each reader checks at open time that every image and label file exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .classes import load_class_names, parse_class_arg
from .image_io import IMAGE_EXTENSIONS, read_label
from .segdataset import (
    _CAMVID_LUT,
    _CITYSCAPES_LUT,
    DatasetError,
    SampleRef,
    SegDataset,
    _reduce_zero,
    lut_map,
    reduce_zero_label,
)

LAYOUTS: dict[str, str] = {}
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
_ADE847_LAYOUT = """  <root>/[ADE20K_2021_17_01/]images_detectron2/validation/<id>.jpg
  <root>/.../annotations_detectron2/validation/<id>.tif   (16-bit: 0..846 = the 847 classes, 65535 = unlabelled)
      (Mask2Former's datasets/prepare_ade20k_full_sem_seg.py output; split train reads training/)"""
_CITYSCAPES_LAYOUT = """  <root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png
  <root>/gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png   (0..18, 255)
      or <stem>_gtFine_labelIds.png (official 34 ids, mapped to train ids)
      (flat leftImg8bit/*.png + gtFine/*.png is accepted too)"""
_CAMVID_LAYOUT = """  <root>/<split>/<name>.png, <root>/<split>annot/<name>.png   (0..10, 11 void)
  optional <root>/<split>.txt (SegNet list: '<image path> <label path>' per line)"""
_FOLDER_LAYOUT = """  <root>/<images>/<stem>.<ext>, <root>/<labels>/<stem><label_suffix>.png
  plus classes= (list, 'a,b,c' or a class file); ignore_index= (default 255)"""

LAYOUTS.update({"voc21": _VOC_LAYOUT, "voc20": _VOC_LAYOUT, "context60": _CONTEXT_LAYOUT, "context59": _CONTEXT_LAYOUT,
                "context459": _CTX459_LAYOUT, "coco-stuff171": _COCO_STUFF_LAYOUT, "coco-object": _COCO_OBJECT_LAYOUT,
                "ade150": _ADE_LAYOUT, "ade847": _ADE847_LAYOUT, "cityscapes": _CITYSCAPES_LAYOUT,
                "camvid": _CAMVID_LAYOUT, "folder": _FOLDER_LAYOUT})


# ----------------------------------------------------------------------------- helpers


def _layout_error(dataset: str, root: Path, problem: str) -> DatasetError:
    layout = f"\nExpected layout:\n{LAYOUTS[dataset]}" if dataset in LAYOUTS else ""
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


def train_ids_or(lut: np.ndarray) -> Callable[[SampleRef], np.ndarray]:
    """A label loader: *_labelTrainIds.png files hold train ids already, other label files go through `lut`."""

    def load(ref: SampleRef) -> np.ndarray:
        raw = read_label(ref.label_path)
        if ref.label_path.name.endswith("_labelTrainIds.png"):
            return raw.astype(np.int64)
        return lut_map(raw, lut, ref.label_path)

    return load


def _first_existing(base: Path, stem: str, suffixes: Sequence[str]) -> Path | None:
    for s in suffixes:
        p = base / f"{stem}{s}"
        if p.is_file():
            return p
    return None


# ----------------------------------------------------------------------------- Pascal VOC


def open_voc(root: str | Path, split: str = "val", *, background: bool = True, aug: bool = False) -> SegDataset:
    """Pascal VOC 2012 as voc21 (background = 0) or voc20 (background ignored). `aug` (implied by a split name
    ending in "aug", e.g. trainaug): labels from SegmentationClassAug (SBD's, the authors' training set)."""
    dataset = "voc21" if background else "voc20"
    root = Path(root)
    aug = aug or split.endswith("aug")
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


_CTX459_LABEL_DIRS = ("SegmentationClassContext_459", "annotations_ctx459/{split}",
                      "pascal_ctx_d2/annotations_ctx459/{split}")
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
            mat = (" (found trainval/*.mat: convert them first, see the layout below)" if (base / "trainval").is_dir()
                   else "")
            raise _layout_error(dataset, root, f"no 459-class label folder found{mat}; tried "
                                f"{', '.join(map(str, cands))}")
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
    return SegDataset(dataset, load_class_names("ade150"), refs, lambda r: reduce_zero_label(read_label(r.label_path)),
                      255, base)


ADE847_IGNORE = 65535


def open_ade847(root: str | Path, split: str = "val") -> SegDataset:
    """ADE20K-full, all 847 classes, as Mask2Former's prepare_ade20k_full_sem_seg.py writes it.

    Its labels are 16-bit TIFFs of train ids 0..846 with 65535 for unlabelled pixels (there are more
    classes than a byte holds, so 255 is a class here and the ignore index is 65535, as for context459).
    Images and labels are paired by stem; a .png label of the same stem is accepted too.
    """
    dataset = "ade847"
    root = Path(root)
    sub = {"val": "validation", "train": "training"}.get(split, split)
    base = _find_base(root, ["", "ADE20K_2021_17_01"],
                      [f"images_detectron2/{sub}", f"annotations_detectron2/{sub}"], dataset)
    ann_dir = base / "annotations_detectron2" / sub
    suffixes = (".tif", ".tiff", ".png")
    refs = [SampleRef(p.stem, p, _first_existing(ann_dir, p.stem, suffixes) or ann_dir / f"{p.stem}.tif")
            for p in _images_in(base / "images_detectron2" / sub)]
    _check_exist(dataset, root, refs)

    def load(ref: SampleRef) -> np.ndarray:
        return read_label(ref.label_path).astype(np.int64)

    return SegDataset(dataset, load_class_names("ade847"), refs, load, ADE847_IGNORE, base)


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

    return SegDataset(dataset, load_class_names("cityscapes19"), refs, train_ids_or(_CITYSCAPES_LUT), 255, base)


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
        dataset, load_class_names("camvid11"), refs,
        lambda r: lut_map(read_label(r.label_path), _CAMVID_LUT, r.label_path), 255, base
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
    label_map: dict[int, int] | None = None,
) -> SegDataset:
    """Any images folder + labels folder pairing files by stem (``<stem><label_suffix>.png``).

    ``classes``: a list, "cat,dog", or a class file (one class a line, synonyms comma-separated).
    ``label_map``: stored value -> class id (values not listed become ``ignore_index``), e.g. a tool's own
    ids; applied before ``reduce_zero_label``. ``split`` is unused (kept for a uniform signature).
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

    lut = None
    if label_map:
        lut = np.full(max(max(label_map), 255) + 1, ignore, dtype=np.int64)
        for k, v in label_map.items():
            lut[int(k)] = int(v)

    def load(ref: SampleRef) -> np.ndarray:
        raw = read_label(ref.label_path).astype(np.int64)
        if lut is not None:
            raw = np.where((raw >= 0) & (raw < len(lut)), lut[np.clip(raw, 0, len(lut) - 1)], ignore)
        return _reduce_zero(raw, ignore) if reduce_zero_label else raw

    return SegDataset(dataset, cls, refs, load, ignore, root)

