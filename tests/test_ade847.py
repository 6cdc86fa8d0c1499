from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskclip.data.datasets import ADE847_IGNORE, DATASETS, DatasetError, canonical_dataset_name, open_dataset
from maskclip.data.image_io import read_label


def _write(base: Path, split: str, stem: str, label: np.ndarray, size: tuple[int, int] | None = None,
           dtype: str = "<u2") -> None:
    """One image + 16-bit TIFF label as Mask2Former's prepare_ade20k_full_sem_seg.py writes them."""
    h, w = size or label.shape
    img = base / "images_detectron2" / split / f"{stem}.jpg"
    lab = base / "annotations_detectron2" / split / f"{stem}.tif"
    img.parent.mkdir(parents=True, exist_ok=True)
    lab.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(img, quality=95)
    Image.fromarray(label.astype(dtype)).save(lab)


LABEL = np.array([[0, 1, 255, 846], [65535, 65535, 150, 149], [300, 0, 0, 65535]])


def test_registry_names():
    for alias in ("ade847", "ade-full", "a847", "ade20k-full", "ADE20K_full"):
        assert canonical_dataset_name(alias) == "ade847"
    assert "annotations_detectron2" in DATASETS["ade847"].layout


def test_reads_16bit_tiffs_with_65535_ignore(tmp_path):
    base = tmp_path / "ADE20K_2021_17_01"
    _write(base, "validation", "ADE_val_00000002", LABEL)
    _write(base, "validation", "ADE_val_00000001", LABEL[::-1])
    assert Image.open(base / "annotations_detectron2/validation/ADE_val_00000001.tif").mode == "I;16"
    ds = open_dataset("ade20k-full", tmp_path)
    assert ds.name == "ade847" and ds.num_classes == 847 and ds.ignore_index == ADE847_IGNORE == 65535
    assert ds.names == ["ADE_val_00000001", "ADE_val_00000002"]
    s = ds[1]
    assert s.label.dtype == np.int64 and s.image.shape == (3, 4, 3)
    np.testing.assert_array_equal(s.label, LABEL)  # train ids as stored: 255 is a class here, 65535 ignore
    assert ds.class_names[0] == "wall" and ds.class_names[846] == "adding machine"


def test_flat_root_train_split_and_big_endian_tiff(tmp_path):
    _write(tmp_path, "training", "ADE_train_00000001", LABEL, dtype=">u2")
    assert Image.open(tmp_path / "annotations_detectron2/training/ADE_train_00000001.tif").mode == "I;16B"
    np.testing.assert_array_equal(read_label(tmp_path / "annotations_detectron2/training/ADE_train_00000001.tif"),
                                  LABEL)
    ds = open_dataset("ade847", tmp_path, "train")
    np.testing.assert_array_equal(ds.read_label(0), LABEL)


def test_ids_beyond_the_847_classes_are_an_error(tmp_path):
    _write(tmp_path, "validation", "a", np.array([[0, 847], [1000, 65535]]))
    ds = open_dataset("ade847", tmp_path)
    with pytest.raises(DatasetError, match=r"values \[847, 1000\] outside the 847 classes"):
        ds.read_label(0)


def test_size_mismatch_names_both_files(tmp_path):
    _write(tmp_path, "validation", "a", LABEL, size=(4, 5))
    ds = open_dataset("ade847", tmp_path)
    with pytest.raises(DatasetError, match=r"(?s)a\.tif is 4x3 but image .*a\.jpg is 5x4"):
        ds[0]


def test_missing_label_is_reported_at_open(tmp_path):
    _write(tmp_path, "validation", "a", LABEL)
    (tmp_path / "annotations_detectron2/validation/a.tif").unlink()
    with pytest.raises(DatasetError, match=r"(?s)1 listed files are missing.*a\.tif"):
        open_dataset("ade847", tmp_path)


def test_missing_folders_show_the_layout(tmp_path):
    (tmp_path / "images_detectron2" / "validation").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"(?s)annotations_detectron2/validation.*Expected layout:.*65535"):
        open_dataset("ade847", tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset("ade847", tmp_path / "nowhere")
