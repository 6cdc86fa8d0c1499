import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskclip.data.coco_masks import (
    annotation_mask,
    counts_to_rle_string,
    polygon_mask,
    rle_decode,
    rle_encode,
    rle_string_to_counts,
)
from maskclip.data.datasets import (
    CONTEXT459_IGNORE,
    DATASETS,
    DatasetError,
    SegDataset,
    canonical_dataset_name,
    describe_datasets,
    open_dataset,
)
from maskclip.data.image_io import read_label, voc_palette, write_png_atomic

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# The 80 category ids of COCO (ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 are unused).
COCO_CAT_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def _image(path: Path, h: int, w: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(rgb).save(path)


def _label(path: Path, arr, palette=None) -> None:
    write_png_atomic(path, np.asarray(arr), palette=palette)


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_aliases():
    for alias, canon in [("coco-stuff", "coco-stuff171"), ("ade20k", "ade150"), ("pascal-context", "context59"),
                         ("pc60", "context60"), ("voc", "voc21"), ("Cityscapes", "cityscapes"), ("camvid11", "camvid"),
                         ("coco_object", "coco-object"), ("pascal-context459", "context459")]:
        assert canonical_dataset_name(alias) == canon
        assert alias.lower().replace("_", "-") in DATASETS
    with pytest.raises(ValueError, match="voc20"):
        canonical_dataset_name("pascal-voc-2007")
    text = describe_datasets()
    assert "SegmentationClassContext" in text and "instances_<split>2017.json" in text


def test_missing_root_names_it_and_the_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"(?s)does not exist.*Expected layout:.*JPEGImages"):
        open_dataset("voc21", tmp_path / "nowhere")


# ----------------------------------------------------------------------------- Pascal VOC


@pytest.fixture
def voc_root(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    raw = {"2007_000001": np.array([[0, 0, 5, 5], [20, 255, 1, 0], [0, 15, 15, 255]]),
           "2007_000002": np.array([[3, 3, 3, 0], [0, 0, 0, 0], [7, 7, 255, 20]])}
    for i, (n, lab) in enumerate(raw.items()):
        _image(base / "JPEGImages" / f"{n}.jpg", 3, 4, i)
        _label(base / "SegmentationClass" / f"{n}.png", lab, voc_palette())
        _label(base / "SegmentationClassAug" / f"{n}.png", np.where(lab == 255, 0, lab))
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000001\n2007_000002\n")
    return tmp_path, raw


def test_voc21_keeps_background_and_void(voc_root):
    root, raw = voc_root
    ds = open_dataset("voc21", root)
    assert len(ds) == 2 and ds.num_classes == 21 and ds.ignore_index == 255
    assert ds.class_names[0] == "background" and ds.class_names[1] == "aeroplane"
    s = ds[0]
    assert s.name == "2007_000001" and s.image.shape == (3, 4, 3) and s.label.dtype == np.int64
    np.testing.assert_array_equal(s.label, raw["2007_000001"])  # palette indices, not colours


def test_voc20_reduces_zero_label(voc_root):
    root, raw = voc_root
    for base in (root, root / "VOCdevkit", root / "VOCdevkit" / "VOC2012"):  # any level works
        ds = open_dataset("voc20", base)
        assert ds.num_classes == 20 and ds.class_names[0] == "airplane"
        np.testing.assert_array_equal(ds[0].label, [[255, 255, 4, 4], [19, 255, 0, 255], [255, 14, 14, 255]])


def test_voc_aug_reads_segmentation_class_aug(voc_root):
    root, raw = voc_root
    ds = open_dataset("voc21", root, aug=True)
    np.testing.assert_array_equal(ds[1].label, np.where(raw["2007_000002"] == 255, 0, raw["2007_000002"]))


def test_voc_trainaug_split_implies_the_aug_labels(voc_root):
    root, raw = voc_root
    seg = root / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    (seg / "trainaug.txt").write_text((seg / "val.txt").read_text())
    try:
        ds = open_dataset("voc21", root, split="trainaug")
        np.testing.assert_array_equal(ds[1].label, open_dataset("voc21", root, aug=True)[1].label)
        assert ds.refs[1].label_path.parent.name == "SegmentationClassAug"
    finally:
        (seg / "trainaug.txt").unlink()


def test_voc_missing_split_and_missing_file(voc_root):
    root, _ = voc_root
    with pytest.raises(DatasetError, match=r"ImageSets/Segmentation/train.txt not found"):
        open_dataset("voc21", root, split="train")
    (root / "VOCdevkit/VOC2012/JPEGImages/2007_000002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"(?s)1 listed files are missing.*2007_000002.jpg"):
        open_dataset("voc21", root)


def test_label_image_size_mismatch_names_both_files(voc_root):
    root, _ = voc_root
    _label(root / "VOCdevkit/VOC2012/SegmentationClass/2007_000002.png", np.zeros((5, 4), np.uint8))
    ds = open_dataset("voc21", root)
    with pytest.raises(DatasetError, match=r"2007_000002.png is 4x5 but image .*2007_000002.jpg is 4x3"):
        ds[1]


def test_label_out_of_range_is_an_error(voc_root):
    root, _ = voc_root
    _label(root / "VOCdevkit/VOC2012/SegmentationClass/2007_000001.png", np.full((3, 4), 42, np.uint8))
    ds = open_dataset("voc21", root)
    with pytest.raises(DatasetError, match=r"values \[42\] outside the 21 classes"):
        ds.read_label(0)


def test_subset_and_slicing(voc_root):
    ds = open_dataset("voc21", voc_root[0])
    assert ds.subset([1]).names == ["2007_000002"]
    assert ds[-1:].names == ["2007_000002"]
    assert [s.name for s in ds] == ["2007_000001", "2007_000002"]


# ----------------------------------------------------------------------------- Pascal Context


def test_context60_and_context59(tmp_path):
    base = tmp_path / "VOC2010"
    lab = np.array([[0, 1, 59], [30, 0, 2]])
    _image(base / "JPEGImages" / "2008_000002.jpg", 2, 3)
    _label(base / "SegmentationClassContext" / "2008_000002.png", lab)
    (base / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (base / "ImageSets" / "SegmentationContext" / "val.txt").write_text("2008_000002\n")
    ds60 = open_dataset("context60", tmp_path)
    assert ds60.num_classes == 60 and ds60.class_names[:2] == ["background", "aeroplane"]
    np.testing.assert_array_equal(ds60[0].label, lab)
    ds59 = open_dataset("pascal-context", tmp_path)
    assert ds59.name == "context59" and ds59.num_classes == 59
    np.testing.assert_array_equal(ds59[0].label, [[255, 0, 58], [29, 255, 1]])


def test_context459_from_16bit_label_maps(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2010"
    lab = np.array([[0, 255, 300], [458, 65535, 7]], np.uint16)
    _image(base / "JPEGImages" / "2008_000010.jpg", 2, 3)
    (base / "SegmentationClassContext_459").mkdir(parents=True)
    Image.fromarray(lab).save(base / "SegmentationClassContext_459" / "2008_000010.tif")
    ds = open_dataset("pc459", tmp_path)
    assert ds.num_classes == 459 and ds.ignore_index == CONTEXT459_IGNORE
    assert ds.class_names[0] == "accordion"
    np.testing.assert_array_equal(ds[0].label, lab.astype(np.int64))


def test_context459_explains_mat_files(tmp_path):
    base = tmp_path / "VOC2010"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "trainval").mkdir()
    (base / "trainval" / "2008_000002.mat").write_bytes(b"MATLAB")
    with pytest.raises(DatasetError, match=r"(?s)trainval/\*\.mat: convert them first.*scipy"):
        open_dataset("context459", tmp_path)


# ----------------------------------------------------------------------------- COCO-Stuff


def test_coco_stuff_train_ids_and_raw_182_ids(tmp_path):
    root = tmp_path / "coco_stuff164k"
    _image(root / "images/val2017/000000000001.jpg", 2, 3, 1)
    _image(root / "images/val2017/000000000002.jpg", 2, 3, 2)
    _label(root / "annotations/val2017/000000000001_labelTrainIds.png", [[0, 170, 255], [5, 5, 80]])
    # raw stuffthingmaps ids: 11 is unused (-> ignore), 12 -> 11, 91 (first stuff) -> 80, 181 -> 170
    _label(root / "annotations/val2017/000000000002.png", [[0, 11, 12], [91, 181, 255]])
    ds = open_dataset("coco-stuff", tmp_path)
    assert ds.num_classes == 171 and ds.class_names[80] == "banner" and ds.class_names[11] == "stop sign"
    np.testing.assert_array_equal(ds[0].label, [[0, 170, 255], [5, 5, 80]])
    np.testing.assert_array_equal(ds[1].label, [[0, 255, 11], [80, 170, 255]])


# ----------------------------------------------------------------------------- COCO masks


def test_polygon_fill_matches_pycocotools_reference():
    # expected masks computed once with pycocotools.mask.frPyObjects + decode
    np.testing.assert_array_equal(
        polygon_mask([[0.3, 0.2, 7.6, 0.4, 0.5, 5.7]], 6, 8),
        [[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0],
         [0, 1, 1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(
        polygon_mask([[2.5, 0.5, 6.2, 3.1, 3.3, 5.5]], 6, 8),
        [[0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0, 0, 0],
         [0, 0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]])
    # an integer box [1,5) x [1,4) covers exactly its 4 x 3 pixels
    m = polygon_mask([[1, 1, 5, 1, 5, 4, 1, 4]], 6, 8)
    assert m.sum() == 12 and m[1:4, 1:5].all()
    # parts of one object are unioned (overlap does not cancel)
    both = polygon_mask([[1, 1, 5, 1, 5, 4, 1, 4], [3, 2, 7, 2, 7, 5, 3, 5]], 6, 8)
    assert both[2:4, 3:5].all() and both.sum() == 12 + 12 - 4


def test_rle_compressed_and_uncompressed_match_pycocotools_reference():
    expected = np.zeros((6, 8), np.uint8)
    expected[1:4, 2] = 1
    expected[2:6, 5:7] = 1
    expected[0, 7] = 1
    # string produced by pycocotools.mask.encode(np.asfortranarray(expected))
    np.testing.assert_array_equal(rle_decode("=3`01B13", 6, 8), expected)
    np.testing.assert_array_equal(rle_decode(b"=3`01B13", 6, 8), expected)
    assert counts_to_rle_string(rle_encode(expected)) == "=3`01B13"
    assert rle_string_to_counts("32400000e0") == [3, 2, 4, 2, 4, 2, 4, 2, 25]
    box = rle_decode([3, 2, 4, 2, 4, 2, 4, 2, 25], 6, 8)  # column-major runs
    assert box.sum() == 8 and box[3:5, 0:4].all()
    assert rle_encode(box) == [3, 2, 4, 2, 4, 2, 4, 2, 25]
    with pytest.raises(ValueError, match="covers 49 pixels"):
        rle_decode([40, 9], 6, 8)
    with pytest.raises(ValueError, match="differs from the image size"):
        annotation_mask({"size": [8, 6], "counts": [48]}, 6, 8)


def _coco_fixture(root: Path) -> Path:
    _image(root / "val2017" / "000000000007.jpg", 6, 8, 7)
    _image(root / "val2017" / "000000000009.jpg", 4, 5, 9)
    anns = [
        # B: compressed RLE, car (id 3 -> label 3)
        {"id": 2, "image_id": 7, "category_id": 3, "iscrowd": 0, "area": 10.0,
         "segmentation": {"size": [6, 8], "counts": "=3`01B13"}},
        # A: polygon, dog (id 18 -> label 17), rows 1-3 x cols 1-4
        {"id": 1, "image_id": 7, "category_id": 18, "iscrowd": 0, "area": 12.0,
         "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]]},
        # C: uncompressed RLE crowd, person (id 1 -> label 1), rows 3-4 x cols 0-3
        {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 1, "area": 8.0,
         "segmentation": {"size": [6, 8], "counts": [3, 2, 4, 2, 4, 2, 4, 2, 25]}},
    ]
    data = {
        "images": [{"id": 9, "file_name": "000000000009.jpg", "height": 4, "width": 5},
                   {"id": 7, "file_name": "000000000007.jpg", "height": 6, "width": 8}],
        "annotations": anns,
        "categories": [{"id": i, "name": f"c{i}"} for i in reversed(COCO_CAT_IDS)],
    }
    path = root / "annotations" / "instances_val2017.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    return path


# area order: A (12) then B (10) then C (8); C, the crowd, is painted as person
COCO_EXPECTED = np.array([
    [0, 0, 0, 0, 0, 0, 0, 3],
    [0, 17, 3, 17, 17, 0, 0, 0],
    [0, 17, 3, 17, 17, 3, 3, 0],
    [1, 1, 1, 1, 17, 3, 3, 0],
    [1, 1, 1, 1, 0, 3, 3, 0],
    [0, 0, 0, 0, 0, 3, 3, 0],
])


def test_coco_object_rasterises_polygon_and_both_rles(tmp_path):
    _coco_fixture(tmp_path)
    ds = open_dataset("coco-object", tmp_path)
    assert ds.names == ["000000000007", "000000000009"]
    assert ds.num_classes == 81 and ds.class_names[17] == "dog" and ds.class_names[3] == "car"
    np.testing.assert_array_equal(ds[0].label, COCO_EXPECTED)
    np.testing.assert_array_equal(ds[1].label, np.zeros((4, 5)))  # no annotations: background


def test_coco_object_crowd_and_order_options(tmp_path):
    _coco_fixture(tmp_path)
    ignore = open_dataset("coco-object", tmp_path, crowd="ignore")[0].label
    np.testing.assert_array_equal(ignore, np.where(COCO_EXPECTED == 1, 255, COCO_EXPECTED))
    skip = open_dataset("coco-object", tmp_path, crowd="skip")[0].label
    exp = COCO_EXPECTED.copy()
    exp[3] = [0, 17, 3, 17, 17, 3, 3, 0]
    exp[4] = [0, 0, 0, 0, 0, 3, 3, 0]
    np.testing.assert_array_equal(skip, exp)
    file_order = open_dataset("coco-object", tmp_path, order="file")[0].label  # B, A, C: A covers B
    exp = COCO_EXPECTED.copy()
    exp[1:3, 2] = 17
    np.testing.assert_array_equal(file_order, exp)
    with pytest.raises(ValueError, match="crowd must be"):
        open_dataset("coco-object", tmp_path, crowd="drop")[0]


def test_coco_object_prefers_instance_train_id_pngs(tmp_path):
    _image(tmp_path / "images/val2017/000000000005.jpg", 2, 2)
    _label(tmp_path / "annotations/val2017/000000000005_instanceTrainIds.png", [[0, 80], [1, 0]])
    ds = open_dataset("coco-object", tmp_path)
    np.testing.assert_array_equal(ds[0].label, [[0, 80], [1, 0]])


def test_coco_object_bad_json_is_reported(tmp_path):
    path = _coco_fixture(tmp_path)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="instances_val2017.json"):
        open_dataset("coco-object", tmp_path)


# ----------------------------------------------------------------------------- ADE20K, Cityscapes, CamVid, folder


def test_ade20k_reduce_zero_label(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    _image(root / "images/validation/ADE_val_00000001.jpg", 2, 2)
    _label(root / "annotations/validation/ADE_val_00000001.png", [[0, 1], [150, 17]])
    ds = open_dataset("ade20k", tmp_path)
    assert ds.num_classes == 150 and ds.class_names[0] == "wall"
    np.testing.assert_array_equal(ds[0].label, [[255, 0], [149, 16]])


def test_ade20k_and_cityscapes_flat_layouts(tmp_path):
    _image(tmp_path / "ade/images/ADE_val_00000009.jpg", 2, 2)
    _label(tmp_path / "ade/annotations/ADE_val_00000009.png", [[0, 3], [3, 150]])
    np.testing.assert_array_equal(open_dataset("ade150", tmp_path / "ade")[0].label, [[255, 2], [2, 149]])
    _image(tmp_path / "cs/leftImg8bit/lindau_000000_000019_leftImg8bit.png", 1, 3)
    _label(tmp_path / "cs/gtFine/lindau_000000_000019_gtFine_labelTrainIds.png", [[0, 18, 255]])
    ds = open_dataset("cityscapes", tmp_path / "cs")
    assert ds.names == ["lindau_000000_000019"]
    np.testing.assert_array_equal(ds[0].label, [[0, 18, 255]])


def test_corrupt_label_file_names_it(voc_root):
    root, _ = voc_root
    bad = root / "VOCdevkit/VOC2012/SegmentationClass/2007_000001.png"
    bad.write_bytes(bad.read_bytes()[:40])
    ds = open_dataset("voc21", root)
    with pytest.raises(ValueError, match="2007_000001.png"):
        ds[0]


def test_cityscapes_label_ids_mapped_with_official_table(tmp_path):
    img = tmp_path / "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"
    _image(img, 2, 5)
    gt = tmp_path / "gtFine/val/frankfurt"
    ids = np.array([[0, 7, 8, 11, 26], [33, 6, 31, 24, 255]])  # 255 = license plate (-1)
    _label(gt / "frankfurt_000000_000294_gtFine_labelIds.png", ids)
    ds = open_dataset("cityscapes", tmp_path)
    np.testing.assert_array_equal(ds[0].label, [[255, 0, 1, 2, 13], [18, 255, 16, 11, 255]])
    with pytest.raises(DatasetError, match="labelTrainIds"):
        open_dataset("cityscapes", tmp_path, label_type="trainIds")
    _label(gt / "frankfurt_000000_000294_gtFine_labelTrainIds.png", np.full((2, 5), 4))
    np.testing.assert_array_equal(open_dataset("cityscapes", tmp_path)[0].label, np.full((2, 5), 4))
    np.testing.assert_array_equal(open_dataset("cityscapes", tmp_path, label_type="labelIds")[0].label[0, 1], 0)


def test_camvid_void_becomes_ignore_and_split_file_order(tmp_path):
    for i, n in enumerate(["0016E5_07961", "0016E5_07959"]):
        _image(tmp_path / "val" / f"{n}.png", 2, 3, i)
        _label(tmp_path / "valannot" / f"{n}.png", [[0, 10, 11], [3, 4, 5 + i]])
    (tmp_path / "val.txt").write_text(
        "/SegNet/CamVid/val/0016E5_07961.png /SegNet/CamVid/valannot/0016E5_07961.png\n"
        "/SegNet/CamVid/val/0016E5_07959.png /SegNet/CamVid/valannot/0016E5_07959.png\n")
    ds = open_dataset("camvid", tmp_path)
    assert ds.names == ["0016E5_07961", "0016E5_07959"]  # split-file order, not sorted
    np.testing.assert_array_equal(ds[0].label, [[0, 10, 255], [3, 4, 5]])
    _label(tmp_path / "valannot" / "0016E5_07959.png", [[12, 0, 0], [0, 0, 0]])
    with pytest.raises(DatasetError, match=r"unexpected ids|outside"):
        ds.read_label(1)


def test_generic_folder_with_class_file_and_ignore_index(tmp_path):
    (tmp_path / "classes.txt").write_text("cat, kitty\ndog\nbird\n")
    _image(tmp_path / "imgs" / "a.jpg", 2, 2)
    _image(tmp_path / "imgs" / "b.png", 2, 2)
    _label(tmp_path / "masks" / "a_gt.png", [[0, 1], [2, 9]])
    _label(tmp_path / "masks" / "b_gt.png", [[9, 9], [2, 2]])
    ds = open_dataset("folder", tmp_path, classes=str(tmp_path / "classes.txt"), images="imgs",
                      labels="masks", label_suffix="_gt", ignore_index=9)
    assert ds.classes == [["cat", "kitty"], ["dog"], ["bird"]] and ds.ignore_index == 9
    np.testing.assert_array_equal(ds[0].label, [[0, 1], [2, 9]])
    red = open_dataset("folder", tmp_path, classes="dog,bird", images="imgs", labels="masks",
                       label_suffix="_gt", ignore_index=9, reduce_zero_label=True)
    np.testing.assert_array_equal(red[0].label, [[9, 0], [1, 9]])
    with pytest.raises(DatasetError, match="collides"):
        open_dataset("folder", tmp_path, classes="a,b,c", images="imgs", labels="masks", label_suffix="_gt",
                     ignore_index=1)
    with pytest.raises(DatasetError, match=r"(?s)missing.*c_gt.png"):
        _image(tmp_path / "imgs" / "c.jpg", 2, 2)
        open_dataset("folder", tmp_path, classes="a,b,c", images="imgs", labels="masks", label_suffix="_gt")


def test_segdataset_rejects_empty(tmp_path):
    with pytest.raises(DatasetError, match="no samples"):
        SegDataset("x", [["a"]], [], lambda r: None, 255, tmp_path)


# ----------------------------------------------------------------------------- real samples


def _need(sub: str) -> Path:
    p = SHARED / sub
    if not p.is_dir():
        pytest.skip(f"real data sample {p} not available")
    return p


def test_real_camvid_labels_in_range():
    root = _need("camvid")
    ds = open_dataset("camvid", root)
    assert len(ds) == 101 and ds.names[0] == "0016E5_07959"
    counts = np.zeros(256, np.int64)
    for i in range(0, len(ds), 10):
        counts += np.bincount(ds.read_label(i).reshape(-1), minlength=256)
    assert counts[11:255].sum() == 0  # only 0..10 and ignore
    assert (counts[:11] > 0).all() and counts[255] > 0
    s = ds[0]
    assert s.image.shape == (360, 480, 3) and s.label.shape == (360, 480)


def test_real_ade_flat_sample():
    root = _need("ade20k-val-sample")
    ds = open_dataset("ade150", root)
    assert ds.names == ["ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003"]
    raw = read_label(root / "annotations" / "ADE_val_00000001.png").astype(np.int64)
    lab = ds[0].label
    np.testing.assert_array_equal(lab[raw > 0], raw[raw > 0] - 1)
    assert (lab[raw == 0] == 255).all()
    assert np.unique(lab).tolist() == [0, 1, 2, 4, 6, 9, 17, 255]


def test_real_cityscapes_label_ids_agree_with_train_ids():
    root = _need("cityscapes-val-sample")
    train = open_dataset("cityscapes", root, label_type="trainIds")[0]
    mapped = open_dataset("cityscapes", root, label_type="labelIds")[0]
    assert train.image.shape == (128, 256, 3)
    # the sample's files were downscaled separately, so a few boundary pixels disagree
    assert (train.label == mapped.label).mean() > 0.995
    assert set(np.unique(mapped.label)) <= set(range(19)) | {255}


def test_real_coco_masks_match_pycocotools_pixel_counts():
    root = _need("coco-val2017-mini")
    data = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    images = {im["id"]: im for im in data["images"]}
    anns = {a["id"]: a for a in data["annotations"]}
    # (annotation id, pixel count, sum of x, sum of y) from pycocotools' annToMask
    reference = [
        (55301, 7454, 1275140, 2061142), (80342, 1611, 228823, 214089), (90763, 1354, 227601, 390524),
        (1378088, 11, 1570, 1854), (1472305, 20, 7001, 3817), (2114949, 24, 1785, 7153),
        (900100005001, 10841, 6160630, 1631189), (900100173057, 2810, 371150, 1349510),
        (1966294, 357626, 114286565, 99740268), (1960896, 293049, 92374561, 71421431),
    ]
    for aid, n, sx, sy in reference:
        a = anns[aid]
        im = images[a["image_id"]]
        m = annotation_mask(a["segmentation"], im["height"], im["width"]).astype(np.int64)
        ys, xs = np.nonzero(m)
        assert (m.sum(), xs.sum(), ys.sum()) == (n, sx, sy), aid


def test_real_coco_object_labels_have_the_right_categories():
    root = _need("coco-val2017-mini")
    ds = open_dataset("coco-object", root)
    assert len(ds) == 164
    data = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    cat_ids = sorted(c["id"] for c in data["categories"])
    to_label = {c: i + 1 for i, c in enumerate(cat_ids)}
    name_of = {c["id"]: c["name"] for c in data["categories"]}
    by_image = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for im in data["images"][:40]:
        i = ds.names.index(Path(im["file_name"]).stem)
        lab = ds.read_label(i)
        assert lab.shape == (im["height"], im["width"])
        anns = by_image.get(im["id"], [])
        present = {to_label[a["category_id"]] for a in anns}
        assert set(np.unique(lab).tolist()) <= present | {0}
        if anns:
            big = max(anns, key=lambda a: a["area"])  # painted first, but always partly visible
            assert (lab == to_label[big["category_id"]]).any()
            # the dataset's class name for that id is the COCO name
            coco_name = name_of[big["category_id"]]
            names = (coco_name, coco_name.replace("motorcycle", "motorbike"))
            assert ds.class_names[to_label[big["category_id"]]] in names
    s = ds[ds.names.index("000000000139")]
    assert s.image.shape == (426, 640, 3)
    assert ds.class_names[1] == "person" and (s.label == 1).sum() > 1000


def test_folder_dataset_takes_sub_folders_suffix_and_a_label_map(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "img" / "a.jpg")
    Image.fromarray(np.array([[10, 20, 0, 7, 10]] * 4, np.uint8)).save(tmp_path / "gt" / "a_gt.png")
    ds = open_dataset("folder", tmp_path, classes="sky,grass", images="img", labels="gt", label_suffix="_gt",
                      label_map={10: 0, 20: 1})
    np.testing.assert_array_equal(ds[0].label[0], [0, 1, 255, 255, 0])  # unlisted values are ignored


def test_eval_on_a_folder_dataset_from_the_command_line(tmp_path):
    from maskclip.cli import main
    from maskclip.toyworld import World

    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    w = World(0)
    for i in range(2):
        s = w.scene(i, "test")
        Image.fromarray(s.image).save(tmp_path / "img" / f"s{i}.png")
        Image.fromarray((s.labels + 1).astype(np.uint8)).save(tmp_path / "gt" / f"s{i}.png")  # stored 1-based
    mapping = ",".join(f"{k + 1}:{k}" for k in range(10))
    out = tmp_path / "ev"
    assert main(["eval", "--dataset", "folder", "--root", str(tmp_path), "--image-dir", "img", "--label-dir", "gt",
                 "--label-map", mapping, "--classes", "sky,wall,grass,sand,water,zebra,leopard,turtle,balloon,fish",
                 "--model", "toy-rn", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["num_images"] == 2 and report["metrics"]["mIoU"] > 0.3  # the toy CLIP segments its world
    assert (out / "per_class_iou.png").is_file()
