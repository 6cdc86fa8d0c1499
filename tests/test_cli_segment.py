"""`maskclip segment` and `maskclip label` end to end on a tiny CLIP checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from maskclip.cli import build_parser, main
from maskclip.data.image_io import read_label


@pytest.fixture
def tiny_ckpt(tiny_vit, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(tiny_vit.state_dict(), path)
    return path


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8)).save(d / "a.jpg")
    Image.fromarray((rng.random((33, 20)) * 255).astype(np.uint8), "L").save(d / "gray.png")
    Image.fromarray((rng.random((30, 30, 4)) * 255).astype(np.uint8), "RGBA").save(d / "rgba.webp")
    Image.fromarray((rng.random((24, 40)) * 65535).astype(np.uint16)).save(d / "deep.png")
    Image.fromarray((rng.random((5, 7, 3)) * 255).astype(np.uint8)).save(d / "tiny.bmp")  # smaller than a patch
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return d


def _run(*argv: str) -> int:
    return main(list(argv))


COMMON = ("--templates", "single", "--size", "64", "--quiet")


def test_segment_writes_labels_overlay_json_and_reports_failures(tiny_ckpt, images, tmp_path, capsys):
    out = tmp_path / "out"
    rc = _run("segment", str(images), "--classes", "cat,dog,tree", "--weights", str(tiny_ckpt), "--out", str(out),
              "--heatmaps", *COMMON)
    assert rc == 1  # broken.png failed, the others went on
    err = capsys.readouterr().err
    assert "broken.png" in err and "5 written" in err and "1 failed" in err
    for stem, shape in [("a", (40, 56)), ("gray", (33, 20)), ("rgba", (30, 30)), ("deep", (24, 40)), ("tiny", (5, 7))]:
        lab = read_label(out / "labels" / f"{stem}.png")
        assert lab.shape == shape and lab.max() < 3
        assert Image.open(out / "labels" / f"{stem}.png").mode == "P"
        meta = json.loads((out / "labels" / f"{stem}.json").read_text())
        assert meta["classes"] == ["cat", "dog", "tree"] and len(meta["palette"]) == 3
        assert meta["model_sha256"] and len(meta["model_sha256"]) == 64
        assert meta["settings"]["readout"] == "authors" and meta["settings"]["normalize"] == "imagenet"
        assert abs(sum(meta["pixel_fraction"].values()) - 1) < 1e-4
        assert meta["source"]["size"] == next(images.glob(f"{stem}.*")).stat().st_size
        ov = np.asarray(Image.open(out / "overlays" / f"{stem}.png"))
        assert ov.shape[0] >= shape[0] and ov.shape[1] > shape[1]  # overlay plus legend column
        assert len(list((out / "heatmaps" / stem).glob("*.png"))) == 3
    assert not (out / "labels" / "broken.json").exists()
    assert not list(out.glob("**/*.tmp"))


def test_segment_resumes_and_threshold_unknown(tiny_ckpt, images, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("segment", str(images / "a.jpg"), "--classes", "cat,dog", "--weights", str(tiny_ckpt), "--out",
            str(out), *COMMON)
    assert _run(*args) == 0
    assert _run(*args) == 0
    assert "1 already done" in capsys.readouterr().out
    assert _run(*args, "--threshold", "1") == 0  # new settings: recomputed; below 1 (unsaturated) is unknown
    assert "1 written" in capsys.readouterr().out
    meta = json.loads((out / "labels" / "a.json").read_text())
    assert meta["classes"] == ["cat", "dog", "unknown"] and meta["pixel_fraction"]["unknown"] > 0.5


@pytest.mark.parametrize("classes,message", [("", "empty"), ("cat,dog,cat", "duplicate"), (" , ", "no class name")])
def test_segment_rejects_bad_class_lists(tiny_ckpt, images, tmp_path, classes, message, capsys):
    assert _run("segment", str(images / "a.jpg"), "--classes", classes, "--weights", str(tiny_ckpt), "--out",
                str(tmp_path / "o"), *COMMON) == 2
    err = capsys.readouterr().err
    assert message in err and "--classes" in err and len(err.strip().splitlines()) == 1


def test_segment_missing_input_and_missing_weights(tiny_ckpt, tmp_path, capsys):
    assert _run("segment", str(tmp_path / "nope.jpg"), "--classes", "cat,dog", "--weights", str(tiny_ckpt), "--out",
                str(tmp_path / "o")) == 2
    assert "does not exist" in capsys.readouterr().err
    img = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(img)
    assert _run("segment", str(img), "--classes", "cat,dog", "--weights", str(tmp_path / "missing.pt"), "--out",
                str(tmp_path / "o")) == 1
    err = capsys.readouterr().err
    assert "missing.pt" in err and "Traceback" not in err


def test_label_shards_partition_the_collection(tiny_ckpt, images, tmp_path):
    (images / "broken.png").unlink()
    out = tmp_path / "pseudo"
    for shard in ("0/2", "1/2"):
        assert _run("label", str(images), "--classes", "cat,dog", "--background", "sky,grass", "--weights",
                    str(tiny_ckpt), "--out", str(out), "--shard", shard, *COMMON) == 0
    idx = [json.loads((out / f"index.shard{i}of2.json").read_text()) for i in (0, 1)]
    a, b = ({e["image"] for e in x["entries"]} for x in idx)
    assert not a & b and len(a | b) == 5 and idx[0]["classes"] == ["cat", "dog", "background"]
    for e in idx[0]["entries"] + idx[1]["entries"]:
        assert (out / e["label"]).exists() and (out / e["json"]).exists()


def test_help_documents_every_option():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("segment", "label"):
        p = sub.choices[name]
        text = p.format_help()
        for action in p._actions:
            for opt in action.option_strings:
                assert opt in text
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help"
