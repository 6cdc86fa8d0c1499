"""Exports round-trip: each format decoded with its own tools (or an independent decoder) equals the label maps."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from maskclip.cli import main
from maskclip.export.rle import coco_rle, label_studio_rle
from maskclip.toyworld import World

pycoco = pytest.importorskip("pycocotools.mask")
CLASSES = "sky,wall,grass,sand,water,zebra,leopard,turtle,balloon,fish"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A `maskclip segment` run on five toy scenes with the bundled toy CLIP, exported in every format."""
    root = tmp_path_factory.mktemp("export")
    (root / "images").mkdir()
    w = World(0)
    for i in range(5):
        Image.fromarray(w.scene(i, "test").image).save(root / "images" / f"s{i}.png")
    out = root / "run"
    assert main(["segment", str(root / "images"), "--model", "toy-rn", "--classes", CLASSES, "--out", str(out),
                 "--quiet", "--export", "coco,labelstudio"]) == 0
    assert main(["export", str(out), "--format", "coco-panoptic,cvat,masks", "--things",
                 "zebra,leopard,turtle,balloon,fish"]) == 0
    labels = {p.stem: np.asarray(Image.open(p)) for p in sorted((out / "labels").glob("*.png"))}
    assert len(labels) == 5 and len({len(np.unique(v)) for v in labels.values()}) >= 1
    return out, labels


def test_coco_rle_equals_pycocotools():
    rng = np.random.default_rng(0)
    cases = [rng.random((17, 23)) > 0.5, np.zeros((5, 4), bool), np.ones((5, 4), bool),
             np.pad(np.ones((3, 3), bool), 2), rng.random((64, 1)) > 0.9]
    big = np.zeros((300, 200), bool)
    big[10:290, 5:150] = True  # long runs: counts in several 5-bit groups, negative deltas
    cases.append(big)
    for m in cases:
        ref = pycoco.encode(np.asfortranarray(m.astype(np.uint8)))
        ours = coco_rle(m)
        assert ours["counts"] == ref["counts"].decode() and ours["size"] == list(ref["size"])
        assert np.array_equal(pycoco.decode({"size": ours["size"], "counts": ours["counts"].encode()}), m)


def test_coco_export_loads_in_pycocotools_and_matches_the_label_maps(run):
    from pycocotools.coco import COCO

    out, labels = run
    coco = COCO(str(out / "export" / "coco.json"))
    names = CLASSES.split(",")
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == names
    for img in coco.dataset["images"]:
        lab = labels[img["maskclip_name"]]
        assert (img["height"], img["width"]) == lab.shape
        rebuilt = np.full(lab.shape, 255)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])):
            m = coco.annToMask(ann).astype(bool)
            assert isinstance(ann["segmentation"]["counts"], str) and ann["area"] == m.sum()
            assert 0 <= ann["score"] <= 1  # the mean probability of the class over its pixels (the sidecar's)
            assert not (rebuilt[m] != 255).any()  # one class per pixel
            rebuilt[m] = ann["category_id"] - 1
        assert np.array_equal(rebuilt, lab)


def test_panoptic_export_decodes_to_the_label_maps_with_one_segment_per_thing_region(run):
    from maskclip.regions.masks import components

    out, labels = run
    doc = json.loads((out / "export" / "panoptic.json").read_text())
    cats = {c["id"]: c for c in doc["categories"]}
    assert cats[6]["name"] == "zebra" and cats[6]["isthing"] == 1 and cats[1]["isthing"] == 0
    for ann in doc["annotations"]:
        rgb = np.asarray(Image.open(out / "export" / "panoptic" / ann["file_name"])).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]
        lab = labels[ann["file_name"].removesuffix(".png")]
        rebuilt = np.full(lab.shape, 255)
        for seg in ann["segments_info"]:
            m = ids == seg["id"]
            assert m.sum() == seg["area"] > 0
            rebuilt[m] = seg["category_id"] - 1
            if cats[seg["category_id"]]["isthing"]:
                assert components(m.astype(np.int64))[m].max() == components(m.astype(np.int64))[m].min()
        assert np.array_equal(rebuilt, lab)
        stuff = [s["category_id"] for s in ann["segments_info"] if not cats[s["category_id"]]["isthing"]]
        assert len(stuff) == len(set(stuff))  # one segment per stuff class


def ls_decode(rle: list[int]) -> np.ndarray:
    """An independent decoder written from thi.ng rle-pack's specification (what Label Studio's brush reads)."""
    bits = "".join(format(b, "08b") for b in rle)
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        v = int(bits[pos:pos + n], 2)
        pos += n
        return v

    num = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, np.int64)
    i = 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if repeat:
            out[i:j] = read(word)
            i = j
        else:
            while i < j:
                out[i] = read(word)
                i += 1
    return out


def test_label_studio_rle_roundtrips_through_an_independent_decoder():
    rng = np.random.default_rng(1)
    for m in (rng.random((19, 31)) > 0.6, np.ones((300, 300), bool), np.zeros((2, 3), bool)):
        rgba = ls_decode(label_studio_rle(m)).reshape(*m.shape, 4)
        assert np.array_equal(rgba[..., 3] == 255, m) and set(np.unique(rgba)) <= {0, 255}


def test_label_studio_tasks_hold_one_brushlabels_result_per_class(run):
    out, labels = run
    tasks = json.loads((out / "export" / "labelstudio.json").read_text())
    assert len(tasks) == 5
    names = CLASSES.split(",")
    for task in tasks:
        lab = labels[task["meta"]["maskclip_name"]]
        pred = task["predictions"][0]
        assert pred["model_version"] == "maskclip:toy-rn" and 0 <= pred["score"] <= 1
        assert task["data"]["image"].startswith("/data/local-files/?d=")
        rebuilt = np.full(lab.shape, 255)
        for res in pred["result"]:
            assert res["type"] == "brushlabels" and res["value"]["format"] == "rle"
            assert (res["original_height"], res["original_width"]) == lab.shape
            (name,) = res["value"]["brushlabels"]
            m = ls_decode(res["value"]["rle"]).reshape(*lab.shape, 4)[..., 3] == 255
            rebuilt[m] = names.index(name)
        assert np.array_equal(rebuilt, lab)
        assert len(pred["result"]) == len(np.unique(lab))


def test_cvat_archive_labelmap_matches_the_class_pngs(run):
    out, labels = run
    z = zipfile.ZipFile(out / "export" / "cvat.zip")
    lines = [ln for ln in z.read("labelmap.txt").decode().splitlines() if ln and not ln.startswith("#")]
    colour = {}
    for ln in lines:
        name, rgb, _, _ = ln.split(":")
        colour[tuple(int(v) for v in rgb.split(","))] = name
    assert list(colour.values())[0] == "background" and len(colour) == 11
    names = CLASSES.split(",")
    listed = z.read("ImageSets/Segmentation/default.txt").decode().split()
    assert sorted(listed) == sorted(labels)
    for name in listed:
        lab = labels[name]
        label_png = Image.open(out / "labels" / f"{name}.png")
        pal = np.asarray(label_png.getpalette()[: 3 * len(names)]).reshape(-1, 3)
        rgb = np.asarray(Image.open(io.BytesIO(z.read(f"SegmentationClass/{name}.png"))).convert("RGB"))
        ids = np.array([[names.index(colour[tuple(p)]) for p in row] for row in rgb])
        assert np.array_equal(ids, lab)
        for k in np.unique(lab):  # the labelmap's colours are the label PNGs' own
            assert colour[tuple(int(v) for v in pal[k])] == names[k]
        obj = np.asarray(Image.open(io.BytesIO(z.read(f"SegmentationObject/{name}.png"))).convert("RGB"))
        assert len(np.unique(obj.reshape(-1, 3), axis=0)) >= len(np.unique(lab))


def test_export_errors_are_one_line(tmp_path, capsys):
    for argv, pattern in ((["export", str(tmp_path), "--format", "coco"], "no OUT/labels"),
                          (["export", str(tmp_path), "--format", "yolo"], "yolo is not a format")):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and pattern in err[0], err


@pytest.mark.slow
def test_label_exports_on_shared_coco_images_load_in_pycocotools(shared_data, tmp_path):
    """`maskclip label ... --export coco,cvat` on real photos (the shared COCO subset, first 4 images)."""
    from pycocotools.coco import COCO

    src = shared_data / "coco-val2017-mini" / "val2017"
    images = sorted(src.glob("*.jpg"))[:4]
    if not images:
        pytest.skip("no shared COCO images")
    out = tmp_path / "lab"
    assert main(["label", *map(str, images), "--model", "toy-rn", "--classes", "person,dog,grass,sky,road",
                 "--out", str(out), "--quiet", "--export", "coco,cvat"]) == 0
    coco = COCO(str(out / "export" / "coco.json"))
    assert len(coco.dataset["images"]) == 4
    for img in coco.dataset["images"]:
        lab = np.asarray(Image.open(out / "labels" / f"{img['maskclip_name']}.png"))
        assert (img["height"], img["width"]) == lab.shape  # the photo's full size
        rebuilt = np.full(lab.shape, 255)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])):
            rebuilt[coco.annToMask(ann).astype(bool)] = ann["category_id"] - 1
        assert np.array_equal(rebuilt, lab)
    assert zipfile.ZipFile(out / "export" / "cvat.zip").testzip() is None


def test_binary_masks_one_per_class_present(run):
    out, labels = run
    names = CLASSES.split(",")
    for name, lab in labels.items():
        files = sorted((out / "export" / "masks" / name).glob("*.png"))
        assert [int(f.name[:3]) for f in files] == sorted(np.unique(lab).tolist())
        for f in files:
            k = int(f.name[:3])
            assert f.stem.endswith(names[k])
            assert np.array_equal(np.asarray(Image.open(f)) == 255, lab == k)


def test_saved_probabilities_give_the_same_scores(run, tmp_path):
    """--save-probs: OUT/probs/NAME.npy (float16, K x H x W, no pickle); the export's scores from it agree with
    the sidecar's to float16 precision."""
    out, labels = run
    again = tmp_path / "again"
    images = sorted((out.parent / "images").glob("*.png"))
    assert main(["segment", *map(str, images), "--model", "toy-rn", "--classes", CLASSES, "--out", str(again),
                 "--quiet", "--save-probs", "--export", "coco"]) == 0
    probs = np.load(again / "probs" / "s0.npy", allow_pickle=False)
    assert probs.dtype == np.float16 and probs.shape == (10, *labels["s0"].shape)
    assert np.array_equal(probs.astype(np.float32).argmax(0), labels["s0"]) or \
        (probs.astype(np.float32).argmax(0) == labels["s0"]).mean() > 0.99  # float16 ties
    a = json.loads((out / "export" / "coco.json").read_text())["annotations"]
    b = json.loads((again / "export" / "coco.json").read_text())["annotations"]
    assert [x["category_id"] for x in a] == [x["category_id"] for x in b]
    assert np.allclose([x["score"] for x in a], [x["score"] for x in b], atol=2e-3)
