"""Outputs never overwrite an input, never collide, never belong to another image; settings are checked
once, before the model loads, with one line that names the option (exit 2)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskclip.cli import main
from maskclip.commands import segment as segment_cmd
from maskclip.io.atomic import atomic_write, write_json
from maskclip.io.layout import OutputLayout, output_names

COMMON = ("--templates", "single", "--size", "64", "--quiet")


@pytest.fixture
def tiny_ckpt(tiny_vit, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(tiny_vit.state_dict(), path)
    return path


def _image(path: Path, seed: int, size=(24, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _segment(*argv: str) -> int:
    return main(["segment", *argv, *COMMON])


# ---------------------------------------------------------------- names


def test_output_names_mirror_the_tree_and_never_collide(tmp_path):
    files = [tmp_path / "p" / "x" / "a.png", tmp_path / "p" / "y" / "a.png", tmp_path / "p" / "x" / "a_2.png",
             tmp_path / "p" / "x" / "b.jpg", tmp_path / "p" / "x" / "b_overlay.png", tmp_path / "p" / "z" / "c.jpg",
             tmp_path / "p" / "z" / "c.png", tmp_path / "p" / "z" / "C.webp"]
    names = output_names(files)
    assert names[:6] == ["x/a", "y/a", "x/a_2", "x/b", "x/b_overlay", "z/c.jpg"]
    assert names[6] == "z/c.png" and names[7] == "z/C.webp"  # a shared stem keeps the extensions
    assert len({n.lower() for n in names}) == len(names)
    layout = OutputLayout(tmp_path / "out")
    paths = [layout.label(n) for n in names] + [layout.sidecar(n) for n in names] + [layout.overlay(n) for n in names]
    assert len(set(paths)) == 3 * len(names)
    assert output_names([tmp_path / "one" / "photo.jpg"]) == ["photo"]


def test_two_roots_with_the_same_file_names_get_their_own_outputs(tiny_ckpt, tmp_path):
    a, b = _image(tmp_path / "cam1" / "img.png", 1), _image(tmp_path / "cam2" / "img.png", 2)
    out = tmp_path / "out"
    assert _segment(str(a.parent), str(b.parent), "--classes", "cat,dog", "--weights", str(tiny_ckpt),
                    "--out", str(out)) == 0
    metas = [json.loads((out / "labels" / d / "img.json").read_text()) for d in ("cam1", "cam2")]
    assert [m["source"]["path"] for m in metas] == [str(a.resolve()), str(b.resolve())]


# ---------------------------------------------------------------- never overwrite an input


def test_out_equal_to_the_input_folder_leaves_every_input_untouched(tiny_ckpt, tmp_path):
    photos = tmp_path / "photos"
    for i, name in enumerate(["a.png", "b.png", "a_overlay.png", "sub/a.png"]):
        _image(photos / name, i)
    before = _digests(photos)
    for _ in range(2):  # the second run must not take the first run's outputs for inputs
        assert _segment(str(photos), "--recursive", "--classes", "cat,dog", "--weights", str(tiny_ckpt),
                        "--out", str(photos)) == 0
    after = _digests(photos)
    assert {k: v for k, v in after.items() if k in before} == before
    labels = sorted(p.relative_to(photos / "labels").as_posix() for p in (photos / "labels").rglob("*.png"))
    assert labels == ["a.png", "a_overlay.png", "b.png", "sub/a.png"]


def test_an_output_that_is_an_input_is_refused_before_any_work(tiny_ckpt, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    victim = _image(out / "labels" / "a.png", 0)  # the user points at a file where an output would go
    before = victim.read_bytes()
    monkeypatch.setattr(segment_cmd, "load_predictor", lambda *a, **k: pytest.fail("model loaded"))
    assert _segment(str(victim), "--classes", "cat,dog", "--weights", str(tiny_ckpt), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert str(victim) in err and "overwrite" in err and len(err.strip().splitlines()) == 1
    assert victim.read_bytes() == before and sorted(_digests(out)) == ["labels/a.png"]


# ---------------------------------------------------------------- resume belongs to the same source


def test_a_replaced_input_is_recomputed_an_unchanged_one_is_not(tiny_ckpt, tmp_path, capsys):
    img = _image(tmp_path / "in" / "a.png", 0)
    out = tmp_path / "out"
    args = (str(img), "--classes", "cat,dog", "--weights", str(tiny_ckpt), "--out", str(out))
    assert _segment(*args) == 0
    assert _segment(*args) == 0
    assert "1 already done" in capsys.readouterr().out
    _image(img, 1, size=(20, 28))  # same name, other picture
    assert _segment(*args) == 0
    assert "1 written" in capsys.readouterr().out
    meta = json.loads((out / "labels" / "a.json").read_text())
    assert meta["image_size"] == [20, 28] and meta["source"]["size"] == img.stat().st_size
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10 ** 9))  # touched
    assert _segment(*args) == 0
    assert "1 written" in capsys.readouterr().out
    (out / "labels" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")  # damaged output: redone
    assert _segment(*args) == 0
    assert "1 written" in capsys.readouterr().out


def test_label_index_lists_only_outputs_that_exist_and_decode(tiny_ckpt, tmp_path):
    folder = tmp_path / "in"
    for i in range(3):
        _image(folder / f"{i}.png", i)
    (folder / "3.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    out = tmp_path / "pseudo"
    assert main(["label", str(folder), "--classes", "cat,dog", "--weights", str(tiny_ckpt), "--out", str(out),
                 *COMMON]) == 1
    index = json.loads((out / "index.json").read_text())
    assert sorted(Path(e["image"]).name for e in index["entries"]) == ["0.png", "1.png", "2.png"]
    for e in index["entries"]:
        with Image.open(out / e["label"]) as im:
            im.load()


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_removes_its_temporary_file_on_every_failure(tmp_path):
    target = tmp_path / "report.json"
    write_json(target, {"ok": 1})
    for exc in (OSError(28, "No space left on device"), KeyboardInterrupt(), SystemExit(143)):
        with pytest.raises(type(exc)), atomic_write(target, "w") as f:
            f.write("partial")
            raise exc
        assert json.loads(target.read_text()) == {"ok": 1}  # the old file is intact
        assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_sidecars_and_reports_get_the_permissions_of_the_pngs(tiny_ckpt, tmp_path):
    old = os.umask(0o022)
    try:
        img = _image(tmp_path / "in" / "a.png", 0)
        out = tmp_path / "out"
        assert _segment(str(img), "--classes", "cat,dog", "--weights", str(tiny_ckpt), "--out", str(out)) == 0
    finally:
        os.umask(old)
    modes = {p.suffix: stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert modes == {".png": 0o644, ".json": 0o644}


def test_a_full_disk_while_writing_leaves_no_temporary_files(tiny_ckpt, tmp_path, monkeypatch, capsys):
    img = _image(tmp_path / "in" / "a.png", 0)
    out = tmp_path / "out"

    def full(self, fp, *a, **k):
        fp.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    assert _segment(str(img), "--classes", "cat,dog", "--weights", str(tiny_ckpt), "--out", str(out)) == 1
    assert "No space left" in capsys.readouterr().err
    assert [p for p in out.rglob("*") if p.is_file()] == []


# ---------------------------------------------------------------- settings: one line, exit 2, before the model


BAD_SETTINGS = [
    (["--threshold", "1.5"], "--threshold"),
    (["--pd-threshold", "-0.1"], "--pd-threshold"),
    (["--logit-scale", "nan"], "--logit-scale"),
    (["--logit-scale", "0"], "--logit-scale"),
    (["--crop", "0"], "--crop"),
    (["--stride", "-3"], "--stride"),
    (["--window-batch", "0"], "--window-batch"),
    (["--size", "0"], "--size"),
    (["--size", "100000"], "--size"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "--device"),
    (["--device", "potato"], "--device"),
    (["--background", "cat"], "--background"),
    (["--background", " , "], "--background"),
    (["--templates", "no-such-file.txt"], "--templates"),
    (["--classes", " ".join(["giraffe"] * 80)], "too long"),
]


@pytest.mark.parametrize("extra,option", BAD_SETTINGS, ids=[" ".join(e)[:30] for e, _ in BAD_SETTINGS])
def test_bad_settings_get_one_line_before_the_model_loads(tiny_ckpt, tmp_path, capsys, monkeypatch, extra, option):
    img = _image(tmp_path / "in" / "a.png", 0)
    monkeypatch.setattr(segment_cmd, "load_predictor", lambda *a, **k: pytest.fail("the model was loaded"))
    argv = ["segment", str(img), "--classes", "cat,dog", "--weights", str(tiny_ckpt), "--out", str(tmp_path / "o"),
            "--quiet", *extra]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own checks
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert option in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o" / "labels").exists()


def test_template_file_without_placeholder_and_out_that_is_a_file(tiny_ckpt, tmp_path, capsys):
    img = _image(tmp_path / "in" / "a.png", 0)
    tmpl = tmp_path / "t.txt"
    tmpl.write_text("a photo of a {}.\na photo\n")
    base = ["segment", str(img), "--classes", "cat,dog", "--weights", str(tiny_ckpt), "--quiet"]
    assert main([*base, "--out", str(tmp_path / "o"), "--templates", str(tmpl)]) == 2
    assert "line 2" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main([*base, "--out", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "afile" / "sub")]) == 2
    assert "cannot create" in capsys.readouterr().err


def test_long_inline_list_is_never_tried_as_a_path_and_a_bare_word_is_warned(tiny_ckpt, tmp_path, capsys):
    img = _image(tmp_path / "in" / "a.png", 0)
    many = ",".join(f"thing number {i}" for i in range(40))  # > 255 bytes, no file of that name
    assert len(many.encode()) > 255
    out = tmp_path / "o"
    assert _segment(str(img), "--classes", many, "--weights", str(tiny_ckpt), "--out", str(out)) == 0
    assert len(json.loads((out / "labels" / "a.json").read_text())["classes"]) == 40
    assert _segment(str(img), "--classes", "voc2O", "--weights", str(tiny_ckpt), "--out", str(out)) == 0
    assert "taken as one class" in capsys.readouterr().err


def test_a_large_jpeg_is_decoded_at_reduced_size_and_labelled_at_full_size(tiny_vit, tmp_path):
    from maskclip.annotate import LabelOptions, label_files
    from maskclip.dense import MaskCLIPPredictor
    from maskclip.io.layout import OutputLayout
    from maskclip.vocab import Vocabulary

    rng = np.random.default_rng(0)
    jpg = tmp_path / "big.jpg"
    Image.fromarray((rng.random((160, 240, 3)) * 255).astype(np.uint8)).save(jpg, quality=90)
    p = MaskCLIPPredictor(tiny_vit, device="cpu", templates="single", size=(64, 64))
    layout = OutputLayout(tmp_path / "out")
    opts = LabelOptions(progress=False, reduced_decode_pixels=10_000)  # "large" for this test: > 10k pixels
    report = label_files(p, [jpg], layout, Vocabulary.of(["cat", "dog"]), {"model": "tiny"}, opts)
    assert report.written == [str(jpg)]
    meta = json.loads(layout.sidecar("big").read_text())
    assert meta["image_size"] == [160, 240] and meta["decoded_size"] == [80, 120]  # 1/2: still >= the 43x64 work
    labels = np.asarray(Image.open(layout.label("big")))
    assert labels.shape == (160, 240)
    small = np.asarray(Image.open(layout.overlay("big")))
    assert small.shape[0] == 80 * 4  # the overlay is drawn at the decoded size, enlarged x4 to be legible (256)
    assert np.array_equal(labels[::2, ::2], labels[1::2, 1::2])  # nearest upsampling of the reduced labels


def test_sigterm_becomes_an_exit_that_cleans_up(tmp_path):
    import signal

    from maskclip.cli import sigterm_exits

    target = tmp_path / "out.json"
    with pytest.raises(SystemExit) as e, sigterm_exits(), atomic_write(target, "w") as f:
        f.write("half")
        os.kill(os.getpid(), signal.SIGTERM)
    assert e.value.code == 128 + signal.SIGTERM and list(tmp_path.iterdir()) == []
