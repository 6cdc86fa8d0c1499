import io
import math

import numpy as np
import pytest
from PIL import Image

from maskclip.eval.corruptions import (
    CORRUPTIONS,
    PARAMETERS,
    _canny,
    _chamfer_distance,
    _equalize_hist,
    corrupt,
    disk_kernel,
    gaussian_filter,
)


def _synthetic(h=96, w=128):
    """Smooth gradients, a sinusoid and a checkerboard: structure for blurs to remove."""
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
    img = np.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.5 + 0.3 * np.sin(12 * x) * np.cos(9 * y)], 2)
    img[(np.floor(x * 8) + np.floor(y * 6)) % 2 == 0] *= 0.6
    return (img * 255).astype(np.uint8)


def _psnr(a, b):
    return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2))


def test_parameter_table_is_imagenet_c():
    # hendrycks/robustness ImageNet-C/imagenet_c/imagenet_c/corruptions.py
    assert CORRUPTIONS == ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
                           "gaussian_blur", "defocus_blur", "spatter", "jpeg_compression")
    assert PARAMETERS["gaussian_noise"] == (0.08, 0.12, 0.18, 0.26, 0.38)
    assert PARAMETERS["shot_noise"] == (60, 25, 12, 5, 3)
    assert PARAMETERS["impulse_noise"] == (0.03, 0.06, 0.09, 0.17, 0.27)
    assert PARAMETERS["speckle_noise"] == (0.15, 0.2, 0.35, 0.45, 0.6)
    assert PARAMETERS["gaussian_blur"] == (1, 2, 3, 4, 6)
    assert PARAMETERS["defocus_blur"] == ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))
    assert PARAMETERS["spatter"][0] == (0.65, 0.3, 4, 0.69, 0.6, 0)
    assert PARAMETERS["spatter"][4] == (0.67, 0.4, 1, 0.65, 1.5, 1)
    assert PARAMETERS["jpeg_compression"] == (25, 18, 15, 10, 7)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shape_dtype_determinism_and_severity_order(name):
    img = _synthetic()
    outs = [corrupt(img, name, s, seed=3) for s in range(1, 6)]
    for o in outs:
        assert o.dtype == np.uint8 and o.shape == img.shape
    np.testing.assert_array_equal(corrupt(img, name, 3, seed=3), outs[2])  # same seed, same image
    psnr = [_psnr(img, o) for o in outs]
    assert all(psnr[i] > psnr[i + 1] for i in range(4)), psnr  # stronger = further from clean
    assert psnr[0] < 45


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "spatter"])
def test_random_corruptions_depend_on_seed(name):
    img = _synthetic()
    assert not np.array_equal(corrupt(img, name, 3, seed=0), corrupt(img, name, 3, seed=1))


def test_odd_sizes_work():
    img = _synthetic(37, 53)
    for name in CORRUPTIONS:
        assert corrupt(img, name, 5).shape == (37, 53, 3)


def test_gaussian_noise_std_matches_parameter():
    grey = np.full((256, 256, 3), 128, np.uint8)
    for sev in (1, 2):  # 0.5 +- 6 (sev 1) or 4 (sev 2) sigma: clipping negligible
        c = PARAMETERS["gaussian_noise"][sev - 1]
        out = corrupt(grey, "gaussian_noise", sev, seed=0).astype(np.float64) / 255
        d = out - 128 / 255
        assert d.std() == pytest.approx(c, rel=0.02)
        assert d.mean() == pytest.approx(-0.5 / 255, abs=0.002)  # uint8 conversion truncates


def test_shot_and_speckle_noise_statistics():
    grey = np.full((256, 256, 3), 128, np.uint8)
    x = 128 / 255
    shot = corrupt(grey, "shot_noise", 1, seed=0).astype(np.float64) / 255  # Poisson(60 x) / 60
    assert shot.std() == pytest.approx(math.sqrt(x / 60), rel=0.03)
    speckle = corrupt(grey, "speckle_noise", 1, seed=0).astype(np.float64) / 255  # x + x N(0, .15)
    assert speckle.std() == pytest.approx(x * 0.15, rel=0.03)


def test_impulse_noise_replaces_fraction_with_salt_and_pepper():
    grey = np.full((200, 200, 3), 100, np.uint8)
    out = corrupt(grey, "impulse_noise", 4, seed=0)  # amount 0.17, per channel value
    salt, pepper = (out == 255).mean(), (out == 0).mean()
    assert salt + pepper == pytest.approx(0.17, abs=0.004)
    assert salt == pytest.approx(0.085, abs=0.004)
    assert set(np.unique(out).tolist()) == {0, 100, 255}  # untouched values come back unchanged


def test_gaussian_blur_of_step_edge_is_normal_cdf():
    step = np.zeros((8, 64, 3), np.uint8)
    step[:, 32:] = 200
    out = corrupt(step, "gaussian_blur", 3, seed=0)  # sigma 3
    sigma = 3.0
    for col in range(20, 45):
        # pixel centre col vs edge at 31.5..32: discrete Gaussian sum ~ Phi((col - 31.5) / sigma)
        expect = 200 * 0.5 * (1 + math.erf((col - 31.5) / (sigma * math.sqrt(2))))
        assert abs(int(out[4, col, 0]) - expect) <= 2.0, (col, out[4, col, 0], expect)


def test_gaussian_filter_keeps_constant_images_and_channels_apart():
    x = np.zeros((10, 12, 3))
    x[..., 1] = 0.25
    y = gaussian_filter(x, 2)
    np.testing.assert_allclose(y[..., 1], 0.25, atol=1e-6)  # edge-replicating border
    np.testing.assert_allclose(y[..., 0], 0, atol=1e-7)


def test_defocus_disk_kernel():
    k = disk_kernel(3, 0.1)  # alias blur 0.1 is almost no blur: the disk itself
    assert k.shape == (17, 17)
    assert k.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(k, k.T, atol=1e-7)
    inside = np.hypot(*np.mgrid[-8:9, -8:9]) <= 3
    assert inside.sum() == 29
    np.testing.assert_allclose(k[inside], 1 / 29, rtol=1e-3)
    k10 = disk_kernel(10, 0.5)  # radius > 8: grid -10..10 and 5x5 anti-aliasing
    assert k10.shape == (21, 21)
    assert (np.hypot(*np.mgrid[-10:11, -10:11]) <= 10).sum() == 317
    assert k10[10, 10] == pytest.approx(1 / 317, rel=1e-5)  # interior: blur of a constant
    # the disk touches the grid's edge, and OpenCV's reflect-101 border folds the blur back
    # in, so (as in ImageNet-C) the kernel sums to slightly more than 1
    assert 1.0 < k10.sum() < 1.02


def test_jpeg_matches_pil_roundtrip():
    img = _synthetic()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=10)
    np.testing.assert_array_equal(corrupt(img, "jpeg_compression", 4), np.asarray(Image.open(buf)))


def test_spatter_water_only_brightens_and_mud_darkens():
    img = _synthetic()
    for sev in (1, 2, 3):  # water: x + m * colour, m >= 0
        out = corrupt(img, "spatter", sev, seed=1).astype(int)
        assert (out >= img.astype(int) - 1).all()  # -1: truncation of x / 255 * 255
    white = np.full((96, 128, 3), 255, np.uint8)
    mud = corrupt(white, "spatter", 5, seed=1)
    changed = (mud < 250).any(axis=2)
    assert 0.02 < changed.mean() < 0.6
    # fully covered mud pixels are the mud colour (63, 42, 20) blended by m >= 0.8
    dark = mud[changed]
    assert (dark[:, 0] >= dark[:, 1]).all() and (dark[:, 1] >= dark[:, 2]).all()


def test_canny_step_edge_is_one_pixel_wide():
    img = np.zeros((12, 16), np.uint8)
    img[:, 8:] = 200
    e = _canny(img, 50, 150)
    # Sobel responds at columns 7 and 8; OpenCV's non-maximum suppression keeps the first
    assert e[:, 7].all() and e.sum() == 12


def test_chamfer_distance_weights_and_accuracy():
    edges = np.zeros((9, 9), bool)
    edges[4, 4] = True
    d = _chamfer_distance(edges, cap=20.0)
    # OpenCV's 5x5 L2 chamfer steps: 1 (axial), 1.4 (diagonal), 2.1969 (knight's move)
    assert d[4, 4] == 0 and d[4, 5] == 1 and d[3, 3] == pytest.approx(1.4)
    assert d[3, 6] == pytest.approx(2.1969) and d[2, 2] == pytest.approx(2.8)
    assert d[4, 8] == 4 and d[3, 8] == pytest.approx(2.1969 + 2)
    # against the exact Euclidean distance (brute force) on random edges: within 3 %
    rng = np.random.default_rng(0)
    edges = rng.random((30, 40)) < 0.01
    d = _chamfer_distance(edges, cap=20.0)
    ys, xs = np.nonzero(edges)
    gy, gx = np.mgrid[0:30, 0:40]
    exact = np.sqrt((gy[..., None] - ys) ** 2 + (gx[..., None] - xs) ** 2).min(axis=2)
    far = exact >= 20.6  # chamfer overestimates by at most ~3 %: these must be capped
    assert (d[far] == 20).all()
    near = exact > 0
    np.testing.assert_allclose(d[near & ~far], np.minimum(exact[near & ~far], 20), rtol=0.03)
    assert (d[exact == 0] == 0).all()
    assert (_chamfer_distance(np.zeros((5, 5), bool), cap=20.0) == 20).all()


def test_equalize_hist_like_opencv():
    img = np.array([[10, 10, 20, 30]], np.uint8)
    # first occupied bin -> 0; then cumulative count above it * 255 / (N - count of first bin)
    np.testing.assert_array_equal(_equalize_hist(img), [[0, 0, 128, 255]])
    assert (_equalize_hist(np.full((3, 3), 7, np.uint8)) == 7).all()


def test_invalid_arguments_name_the_allowed_values():
    img = _synthetic(8, 8)
    with pytest.raises(ValueError, match="gaussian_noise.*jpeg_compression"):
        corrupt(img, "fog", 1)
    for bad in (0, 6, 2.5, True, "3"):
        with pytest.raises(ValueError, match="1, 2, 3, 4 or 5"):
            corrupt(img, "gaussian_noise", bad)
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        corrupt(img.astype(np.float32), "gaussian_noise", 1)
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        corrupt(img[..., 0], "gaussian_noise", 1)
