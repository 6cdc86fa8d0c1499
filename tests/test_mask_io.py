"""regions.mask_io: every mask format round-trips pixel for pixel (RLE through pycocotools itself), the
COCO instances lookup, segment-anything's two outputs, limits before allocation, one-line errors, pairing."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskclip.data.image_io import write_png_atomic
from maskclip.errors import SettingsError
from maskclip.regions.mask_io import SAM_HEADER, MaskFileError, find_masks_for, read_masks

H, W = 37, 53
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools, numpy 2


@pytest.fixture
def mask_utils():
    return pytest.importorskip("pycocotools.mask")


def random_masks(seed: int = 0, n: int = 6, h: int = H, w: int = W) -> np.ndarray:
    """Blobs and noise, one touching each border, one empty, one full."""
    rng = np.random.default_rng(seed)
    m = rng.random((n, h, w)) < rng.uniform(0.05, 0.6, (n, 1, 1))
    m[0] = False
    m[1] = True
    m[2 % n, :, :3] = True  # left border
    m[2 % n, -1, :] = True  # bottom border
    m[3 % n, 0, -1] = True  # top right corner pixel
    return m


def encode(mask_utils, m: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def one_line_error(path: Path, **kw) -> str:
    with pytest.raises(MaskFileError) as info:
        read_masks(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert isinstance(info.value, SettingsError)
    return msg


# ---------------------------------------------------------------- instance-id PNGs


@pytest.mark.parametrize("kind", ["L", "I;16", "P"])
def test_instance_png_one_mask_per_id(tmp_path, kind):
    rng = np.random.default_rng(1)
    top = 300 if kind == "I;16" else 9
    ids = rng.choice([0, 3, 7, top], size=(H, W))
    palette = np.random.default_rng(2).integers(0, 256, (256, 3)) if kind == "P" else None
    path = write_png_atomic(tmp_path / "ids.png", ids, palette=palette)
    got = read_masks(path, image_size=(H, W))
    assert got.masks.dtype == bool and got.masks.shape == (3, H, W)
    assert [r["id"] for r in got.records] == [3, 7, top]
    for m, r in zip(got.masks, got.records):
        np.testing.assert_array_equal(m, ids == r["id"])
    assert got.source == "instance-png"


def test_rgb_png_one_mask_per_colour_black_is_none(tmp_path):
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 1, 0], [10, 20, 30]], np.uint8)
    pick = np.random.default_rng(3).integers(0, 4, (H, W))
    Image.fromarray(colours[pick], "RGB").save(tmp_path / "rgb.png")
    got = read_masks(tmp_path / "rgb.png")
    assert [r["color"] for r in got.records] == [[0, 1, 0], [10, 20, 30], [255, 0, 0]]  # ascending R<<16|G<<8|B
    for m, c in zip(got.masks, [2, 3, 1]):
        np.testing.assert_array_equal(m, pick == c)


def test_all_zero_png_is_no_mask_and_rgba_is_refused(tmp_path):
    write_png_atomic(tmp_path / "zero.png", np.zeros((H, W), np.uint8))
    assert read_masks(tmp_path / "zero.png").masks.shape == (0, H, W)
    Image.new("RGBA", (W, H)).save(tmp_path / "rgba.png")
    assert "RGBA" in one_line_error(tmp_path / "rgba.png")


def test_too_many_ids_in_a_16_bit_png(tmp_path):
    ids = np.arange(H * W, dtype=np.int64).reshape(H, W) + 1
    path = write_png_atomic(tmp_path / "many.png", ids)
    assert "1961 masks, above the limit of 1000" in one_line_error(path)
    assert len(read_masks(path, max_masks=2000)) == H * W


# ---------------------------------------------------------------- COCO RLE and annotations


def test_single_rle_and_list_of_rles_round_trip(tmp_path, mask_utils):
    m = random_masks(4)
    got = read_masks(write_json(tmp_path / "one.json", encode(mask_utils, m[2])), image_size=(H, W))
    np.testing.assert_array_equal(got.masks, m[2:3])
    got = read_masks(write_json(tmp_path / "list.json", [encode(mask_utils, x) for x in m]))
    assert got.masks.dtype == bool and got.source == "coco-rle"
    np.testing.assert_array_equal(got.masks, m)


def test_uncompressed_rle_counts(tmp_path, mask_utils):
    m = random_masks(5)
    rles = [{"size": [H, W], "counts": _runs(x.T.reshape(-1))} for x in m]  # the iscrowd form, column-major
    for x, rle in zip(m, rles):  # the runs are what pycocotools reads as this mask
        np.testing.assert_array_equal(mask_utils.decode(mask_utils.frPyObjects(rle, H, W)).astype(bool), x)
    np.testing.assert_array_equal(read_masks(write_json(tmp_path / "u.json", rles)).masks, m)


def _runs(flat: np.ndarray) -> list[int]:
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.r_[0, change, flat.size]).tolist()
    return [0, *runs] if flat[0] else runs


def test_annotations_keep_their_fields(tmp_path, mask_utils):
    m = random_masks(6, n=3)
    anns = [{"id": 10 + i, "image_id": 1, "category_id": 5, "iscrowd": 0, "area": int(x.sum()),
             "bbox": [1, 2, 3, 4], "score": 0.5, "extra": "dropped", "segmentation": encode(mask_utils, x)}
            for i, x in enumerate(m)]
    got = read_masks(write_json(tmp_path / "anns.json", anns))
    np.testing.assert_array_equal(got.masks, m)
    assert got.source == "coco-annotations"
    assert got.records[1] == {"id": 11, "category_id": 5, "score": 0.5, "iscrowd": 0, "area": int(m[1].sum()),
                              "bbox": [1, 2, 3, 4]}


def polygons(seed: int, h: int = H, w: int = W) -> list[list[list[float]]]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(5):
        n = int(rng.integers(3, 9))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(2, 30, n)
        xy = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1)  # some reach outside the image
        parts = [xy.reshape(-1).round(2).tolist()]
        if k == 4:
            parts.append([0.0, 0.0, 10.0, 0.0, 0.0, 10.0])  # a second part at the corner
        out.append(parts)
    return out


def test_polygons_match_pycocotools(tmp_path, mask_utils):
    polys = polygons(7)
    anns = [{"id": i, "segmentation": p} for i, p in enumerate(polys)]
    path = write_json(tmp_path / "poly.json", anns)
    assert "image_size" in one_line_error(path)
    got = read_masks(path, image_size=(H, W))
    for m, p in zip(got.masks, polys):
        want = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(p, H, W))).astype(bool)
        np.testing.assert_array_equal(m, want)


def test_hostile_polygon_is_refused_before_rasterising(tmp_path):
    path = write_json(tmp_path / "p.json", [{"segmentation": [[0, 0, 1e12, 0, 0, 1e12]]}])
    assert "image perimeters" in one_line_error(path, image_size=(H, W))
    path = write_json(tmp_path / "q.json", [{"segmentation": [[0, 0, 5, "x", 0, 5]]}])
    assert "mask 0" in one_line_error(path, image_size=(H, W))


def coco_file(tmp_path: Path, mask_utils) -> tuple[Path, dict[int, np.ndarray]]:
    ma, mb = random_masks(8, n=3), random_masks(9, n=2, h=20, w=30)
    anns, aid = [], 1
    for image_id, ms in ((1, ma), (2, mb)):
        for x in ms:
            anns.append({"id": aid, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                         "segmentation": encode(mask_utils, x), "area": int(x.sum())})
            aid += 1
    anns.append({"id": 99, "image_id": 1, "category_id": 2, "iscrowd": 0,
                 "segmentation": [[1, 1, 20, 1, 20, 20, 1, 20]]})
    anns.insert(1, anns.pop())  # annotations of the two images interleaved
    data = {"images": [{"id": 1, "file_name": "a.jpg", "height": H, "width": W},
                       {"id": 2, "file_name": "val/b.jpg", "height": 20, "width": 30}],
            "annotations": anns, "categories": [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}]}
    return write_json(tmp_path / "instances.json", data), {1: ma, 2: mb}


def test_coco_instances_file_picks_the_image_by_file_name(tmp_path, mask_utils):
    path, want = coco_file(tmp_path, mask_utils)
    b = read_masks(path, image_size=(20, 30), image_name="photos/b.jpg")
    np.testing.assert_array_equal(b.masks, want[2])
    assert [r["id"] for r in b.records] == [4, 5] and b.source == "coco-instances"
    a = read_masks(path, image_name="a.jpg")
    assert [r["id"] for r in a.records] == [1, 99, 2, 3]  # file order
    np.testing.assert_array_equal(a.masks[[0, 2, 3]], want[1])
    assert a.masks[1, 1:20, 1:20].all() and a.masks[1].sum() == 19 * 19
    assert "no image name" in one_line_error(path)
    assert "'c.jpg'" in one_line_error(path, image_name="c.jpg")
    assert "20x30" in one_line_error(path, image_name="b.jpg", image_size=(H, W))


def test_a_rewritten_instances_file_is_read_again(tmp_path, mask_utils):
    path, _ = coco_file(tmp_path, mask_utils)
    assert len(read_masks(path, image_name="b.jpg")) == 2  # parsed once, then served from memory
    data = json.loads(path.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["id"] != 4]
    write_json(path, data)
    assert [r["id"] for r in read_masks(path, image_name="b.jpg").records] == [5]


# ---------------------------------------------------------------- segment-anything


def sam_records(mask_utils, m: np.ndarray) -> list[dict]:
    rng = np.random.default_rng(10)
    return [{"segmentation": encode(mask_utils, x), "area": int(x.sum()), "bbox": [0, 1, 2, 3],
             "predicted_iou": float(rng.random()), "point_coords": [[4.5, 6.25]],
             "stability_score": float(rng.random()), "crop_box": [0, 0, W, H]} for x in m]


def test_sam_json_round_trips(tmp_path, mask_utils):
    m = random_masks(11)
    recs = sam_records(mask_utils, m)
    got = read_masks(write_json(tmp_path / "img.json", recs), image_size=(H, W))
    np.testing.assert_array_equal(got.masks, m)
    assert got.source == "sam-json"
    for r, want in zip(got.records, recs):
        assert r == {k: want[k] for k in ("area", "bbox", "predicted_iou", "point_coords", "stability_score",
                                          "crop_box")}


def write_sam_folder(folder: Path, m: np.ndarray, recs: list[dict]) -> Path:
    """As segment-anything's scripts/amg.py writes it: <i>.png (0/255) and metadata.csv, no final newline."""
    folder.mkdir()
    lines = [SAM_HEADER]
    for i, (x, r) in enumerate(zip(m, recs)):
        Image.fromarray(x.astype(np.uint8) * 255, "L").save(folder / f"{i}.png")
        lines.append(",".join(str(v) for v in [i, r["area"], *r["bbox"], *r["point_coords"][0], r["predicted_iou"],
                                               r["stability_score"], *r["crop_box"]]))
    (folder / "metadata.csv").write_text("\n".join(lines))
    return folder


def test_sam_folder_round_trips(tmp_path, mask_utils):
    m = random_masks(12)
    recs = sam_records(mask_utils, m)
    folder = write_sam_folder(tmp_path / "img", m, recs)
    before = sorted((p.name, p.read_bytes()) for p in folder.iterdir())
    for path in (folder, folder / "metadata.csv"):
        got = read_masks(path, image_size=(H, W))
        np.testing.assert_array_equal(got.masks, m)
        assert got.source == "sam-folder"
        for i, (r, want) in enumerate(zip(got.records, recs)):
            assert r == {"id": i} | {k: v for k, v in want.items() if k != "segmentation"}
    assert sorted((p.name, p.read_bytes()) for p in folder.iterdir()) == before  # inputs only read
    (folder / "3.png").unlink()
    assert "3.png is missing" in one_line_error(folder)


def test_empty_mask_lists(tmp_path):
    assert read_masks(write_json(tmp_path / "e.json", []), image_size=(H, W)).masks.shape == (0, H, W)
    folder = tmp_path / "sam"
    folder.mkdir()
    (folder / "metadata.csv").write_text(SAM_HEADER + "\n")
    got = read_masks(folder, image_size=(H, W))
    assert got.masks.shape == (0, H, W) and got.masks.dtype == bool


# ---------------------------------------------------------------- limits and hostile files


def test_size_mismatch_names_the_file_and_both_sizes(tmp_path, mask_utils):
    path = write_json(tmp_path / "m.json", [encode(mask_utils, x) for x in random_masks(13, n=2)])
    msg = one_line_error(path, image_size=(H + 1, W))
    assert f"{H}x{W}" in msg and f"{H + 1}x{W}" in msg
    png = write_png_atomic(tmp_path / "m.png", np.ones((H, W), np.uint8))
    assert f"{H}x{W + 2}" in one_line_error(png, image_size=(H, W + 2))


def test_huge_claims_are_refused_before_allocating(tmp_path):
    big = write_json(tmp_path / "big.json", {"size": [100000, 100000], "counts": "0"})
    many = write_json(tmp_path / "many.json", [{"size": [H, W], "counts": [H * W]}] * 5000)
    tracemalloc.start()
    try:
        assert "MP, above the limit" in one_line_error(big)
        assert "5000 masks, above the limit of 1000" in one_line_error(many)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50e6
    total = write_json(tmp_path / "total.json", [{"size": [H, W], "counts": [H * W]}] * 10)
    assert "G pixels" in one_line_error(total, max_total_pixels=H * W * 9)
    assert "MB, above the limit" in one_line_error(total, max_file_bytes=100)


@pytest.mark.parametrize("content, expect", [
    (b'[{"size": [37, 53], "counts": "PPP', "not valid JSON"),
    (b"{not json", "not valid JSON"),
    (b"\x00\x01\xfe\xff\x80binary", "binary"),
    (b'"a string"', "JSON str"),
    (b'{"size": [37, 53]}', "JSON dict"),
    (b'[{"size": [37, 53], "counts": [1, 2]}]', "truncated"),
    (b'[{"size": [37, 53], "counts": [1, -1, 1961]}]', "negative"),
    (b'[{"size": [37.5, 53], "counts": [1961]}]', "positive integers"),
    (b'[{"size": [37, 53], "counts": "\\u00ff"}]', "invalid character"),
    (b'[{"segmentation": 5}]', "neither an RLE"),
    (b"[" * 100000, "JSON"),
    (b'{"images": 3, "annotations": []}', "COCO file"),
    (b'{"images": [{"id": 1, "file_name": "a.jpg", "height": 2, "width": 2}], "annotations": [{"image_id": 1}]}',
     "neither RLEs"),
    (b'[{"size": [2, 2], "counts": [4]}, 7]', "neither RLEs"),
])
def test_broken_json_gives_one_line(tmp_path, content, expect):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    assert expect in one_line_error(path, image_name="a.jpg")


def test_images_and_folders_that_are_not_masks(tmp_path):
    Image.new("RGB", (W, H)).save(tmp_path / "photo.png.jpg", format="JPEG")
    assert "JPEG image" in one_line_error(tmp_path / "photo.png.jpg")
    (tmp_path / "trunc.png").write_bytes(b"\x89PNG\r\n\x1a\nxx")
    one_line_error(tmp_path / "trunc.png")
    (tmp_path / "dir").mkdir()
    assert "metadata.csv" in one_line_error(tmp_path / "dir")
    assert "does not exist" in one_line_error(tmp_path / "nothing.json")
    sam = tmp_path / "sam"
    sam.mkdir()
    (sam / "metadata.csv").write_text("id,area\n0,5\n../x,3")
    assert "line 3" in one_line_error(sam)


# ---------------------------------------------------------------- pairing


def test_find_masks_for_lookup_order(tmp_path):
    images, masks = tmp_path / "imgs", tmp_path / "masks"
    (images / "sub").mkdir(parents=True)
    (masks / "sub" / "a").mkdir(parents=True)
    img = images / "sub" / "a.jpg"
    img.write_bytes(b"")
    with pytest.raises(MaskFileError, match=r"sub/a\.png, sub/a\.json, sub/a/metadata\.csv, a\.png, a\.json"):
        find_masks_for(masks, img, "sub/a")
    (masks / "a.json").write_text("[]")  # segment-anything names its outputs by the image's stem
    assert find_masks_for(masks, img, "sub/a") == masks / "a.json"
    (masks / "sub" / "a" / "metadata.csv").write_text(SAM_HEADER)
    assert find_masks_for(masks, img, "sub/a") == masks / "sub" / "a"
    (masks / "sub" / "a.json").write_text("[]")
    assert find_masks_for(masks, img, "sub/a") == masks / "sub" / "a.json"
    (masks / "sub" / "a.png").write_bytes(b"")
    assert find_masks_for(masks, img, "sub/a") == masks / "sub" / "a.png"
    assert find_masks_for(masks / "a.json", img, "sub/a") == masks / "a.json"  # one file for every image
    with pytest.raises(MaskFileError, match="does not exist"):
        find_masks_for(tmp_path / "nope", img, "sub/a")


def test_find_masks_for_never_returns_the_image_itself(tmp_path):
    img = tmp_path / "a.png"
    write_png_atomic(img, np.zeros((4, 4), np.uint8))
    (tmp_path / "a.json").write_text("[]")
    assert find_masks_for(tmp_path, img, "a") == tmp_path / "a.json"
    with pytest.raises(MaskFileError, match="image itself"):
        find_masks_for(img, img, "a")


# ---------------------------------------------------------------- real COCO annotations


def test_real_coco_instances_match_pycocotools(shared_data, mask_utils):
    coco_api = pytest.importorskip("pycocotools.coco")
    ann_file = shared_data / "coco-val2017-mini" / "annotations" / "instances_val2017.json"
    if not ann_file.is_file():
        pytest.skip("coco-val2017-mini is not present")
    coco = coco_api.COCO(str(ann_file))
    image = max(coco.dataset["images"], key=lambda im: len(coco.getAnnIds(imgIds=im["id"])))
    got = read_masks(ann_file, image_size=(image["height"], image["width"]), image_name=image["file_name"])
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
    assert [r["id"] for r in got.records] == [a["id"] for a in anns] and len(got) > 5
    for m, a in zip(got.masks, anns):
        want = coco.annToMask(a).astype(bool)
        assert int(m.sum()) == int(want.sum()) and (m == want).all(), a["id"]
