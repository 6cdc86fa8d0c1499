import os

import numpy as np
import pytest
from PIL import Image

from maskclip.data.image_io import (
    ImageReadError,
    list_images,
    read_image,
    read_label,
    voc_palette,
    write_png_atomic,
)


def _pattern(h=20, w=30):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 8 % 256, y * 12 % 256, (x + y) * 5 % 256], axis=2).astype(np.uint8)


@pytest.mark.parametrize("ext,fmt", [("png", "PNG"), ("bmp", "BMP"), ("tif", "TIFF"), ("webp", "WEBP")])
def test_lossless_formats_roundtrip_exactly(tmp_path, ext, fmt):
    img = _pattern()
    p = tmp_path / f"x.{ext}"
    kw = {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(img).save(p, fmt, **kw)
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, img)


def test_jpeg_reads_close_to_original(tmp_path):
    img = np.full((16, 24, 3), (200, 40, 90), np.uint8)
    p = tmp_path / "x.jpg"
    Image.fromarray(img).save(p, quality=95)
    out = read_image(p)
    assert out.shape == (16, 24, 3)
    assert np.abs(out.astype(int) - img).max() <= 4


def test_exif_orientation_is_applied(tmp_path):
    # stored 20 high x 40 wide: left half red, right half blue. Orientation 6 = "rotate 90
    # degrees clockwise to display", so the displayed image is 40 high, red on top.
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = (255, 0, 0)
    img[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rot.jpg"
    Image.fromarray(img).save(p, quality=95, exif=exif.tobytes())
    out = read_image(p)
    assert out.shape == (40, 20, 3)
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60  # top: red
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60  # bottom: blue
    raw = read_image(p, exif=False)
    assert raw.shape == (20, 40, 3)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    g = (np.arange(12 * 10).reshape(12, 10) * 2).astype(np.uint8)
    p = tmp_path / "g.png"
    Image.fromarray(g, "L").save(p)
    out = read_image(p)
    assert out.shape == (12, 10, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], g)


def test_palette_image_gives_colours_but_label_gives_indices(tmp_path):
    idx = np.array([[0, 1, 2], [15, 1, 255]], np.uint8)
    p = write_png_atomic(tmp_path / "lab.png", idx, palette=voc_palette())
    np.testing.assert_array_equal(read_label(p), idx)  # indices kept, not colours
    rgb = read_image(p)
    np.testing.assert_array_equal(rgb[0, 1], [128, 0, 0])  # VOC colour of id 1
    np.testing.assert_array_equal(rgb[1, 2], [224, 224, 192])  # VOC colour of 255


def test_rgba_is_composited_on_white(tmp_path):
    a = np.zeros((2, 3, 4), np.uint8)
    a[0, 0] = (255, 0, 0, 0)  # fully transparent red -> white
    a[0, 1] = (255, 0, 0, 255)  # opaque red
    a[0, 2] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    a[1] = (10, 20, 30, 255)
    p = tmp_path / "a.png"
    Image.fromarray(a, "RGBA").save(p)
    out = read_image(p)
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 1], [255, 0, 0])
    assert np.all(np.abs(out[0, 2].astype(int) - 127) <= 1)
    np.testing.assert_array_equal(out[1, 0], [10, 20, 30])


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    v = np.array([[0, 257, 1000, 32768, 65535]], np.uint16)
    p = tmp_path / "d.png"
    Image.fromarray(v).save(p)
    assert Image.open(p).mode == "I;16"
    out = read_image(p)
    # 8-bit value = round(v * 255 / 65535): 1000 -> 4 (clipping would give 255)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 4, 128, 255])
    np.testing.assert_array_equal(read_label(p)[0], v[0])  # labels keep the raw 16-bit ids


def test_truncated_file_raises_with_path(tmp_path):
    p = tmp_path / "broken.png"
    Image.fromarray(_pattern(64, 64)).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="broken.png") as e:
        read_image(p)
    assert isinstance(e.value, ValueError)
    assert "truncated" in str(e.value) or "corrupt" in str(e.value)


def test_truncated_jpeg_raises(tmp_path):
    p = tmp_path / "broken.jpg"
    Image.fromarray(_pattern(64, 64)).save(p, quality=90)
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(ImageReadError, match="broken.jpg"):
        read_image(p)


def test_not_an_image_and_missing_file(tmp_path):
    t = tmp_path / "notes.png"
    t.write_text("hello")
    with pytest.raises(ImageReadError, match="not a recognised image"):
        read_image(t)
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "missing.jpg")


def test_read_label_rejects_rgb(tmp_path):
    p = tmp_path / "rgb.png"
    Image.fromarray(_pattern()).save(p)
    with pytest.raises(ImageReadError, match="single-channel"):
        read_label(p)


def test_list_images_sorted_by_extension_and_recursive(tmp_path):
    for n in ["b.JPG", "a.png", ".hidden.png", "notes.txt", "sub/c.webp"]:
        f = tmp_path / n
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"x")
    assert [p.name for p in list_images([tmp_path])] == ["a.png", "b.JPG"]
    rec = list_images([str(tmp_path)], recursive=True)
    assert [p.relative_to(tmp_path).as_posix() for p in rec] == ["a.png", "b.JPG", "sub/c.webp"]
    # explicit files are kept whatever their extension, duplicates dropped, order kept
    got = list_images([tmp_path / "notes.txt", tmp_path, tmp_path / "a.png"])
    assert [p.name for p in got] == ["notes.txt", "a.png", "b.JPG"]


def test_list_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        list_images([tmp_path / "empty"])


def test_write_png_atomic_palette_rgb_gray_16bit(tmp_path):
    idx = np.array([[0, 3], [7, 200]], np.int64)
    p = write_png_atomic(tmp_path / "out" / "p.png", idx, palette=[(0, 0, 0), (1, 2, 3)] * 128)
    im = Image.open(p)
    assert im.mode == "P" and im.getpalette()[3:6] == [1, 2, 3]
    np.testing.assert_array_equal(np.array(im), idx)

    rgb = _pattern()
    p = write_png_atomic(tmp_path / "rgb.png", rgb)
    assert Image.open(p).mode == "RGB"
    np.testing.assert_array_equal(read_image(p), rgb)

    p = write_png_atomic(tmp_path / "g.png", np.array([[0, 255]]))
    assert Image.open(p).mode == "L"

    p = write_png_atomic(tmp_path / "w.png", np.array([[0, 300, 65535]]))
    np.testing.assert_array_equal(read_label(p), [[0, 300, 65535]])
    assert oct(os.stat(p).st_mode & 0o777) != oct(0o600)  # not left with mkstemp's private mode


def test_write_png_atomic_replaces_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "x.png"
    write_png_atomic(target, np.zeros((4, 4), np.uint8))
    write_png_atomic(target, np.full((4, 4), 9, np.uint8))
    np.testing.assert_array_equal(read_label(target), np.full((4, 4), 9))
    with pytest.raises(ValueError, match="palette PNG"):
        write_png_atomic(target, np.array([[0, 256]]), palette=voc_palette())
    with pytest.raises(ValueError, match="shape"):
        write_png_atomic(tmp_path / "bad.png", np.zeros((2, 2, 2), np.uint8))
    np.testing.assert_array_equal(read_label(target), np.full((4, 4), 9))  # untouched by failures
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_voc_palette_known_entries():
    pal = voc_palette()
    assert pal.shape == (256, 3)
    np.testing.assert_array_equal(pal[:4], [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]])
    np.testing.assert_array_equal(pal[15], [192, 128, 128])  # person


def test_write_png_atomic_follows_the_umask_and_cleans_up_on_failure(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:
        p = write_png_atomic(tmp_path / "m.png", np.zeros((2, 2), np.uint8))
    finally:
        os.umask(old)
    assert os.stat(p).st_mode & 0o777 == 0o640  # what open(path, "w") would give

    def broken_save(self, fp, format=None, **kw):
        fp.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_png_atomic(tmp_path / "m.png", np.ones((2, 2), np.uint8))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.png"]  # old file kept, no temporary left
    monkeypatch.undo()
    np.testing.assert_array_equal(read_label(p), np.zeros((2, 2)))
