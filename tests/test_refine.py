"""Key smoothing and prompt denoising as pure functions, against explicit per-position loops."""

import math

import pytest
import torch

from maskclip.dense import key_smoothing, prompt_denoising


def test_prompt_denoising_removes_classes_never_confident():
    # 3 classes on a 1x2 grid; class 2 never reaches p >= 0.5
    logits = torch.tensor([[[[0.30, 0.10]], [[0.10, 0.30]], [[0.29, 0.29]]]])
    p = torch.softmax(logits * 100, dim=1)
    assert p[0, 0, 0, 0] > 0.5 and p[0, 1, 0, 1] > 0.5 and p[0, 2].max() < 0.5
    out = prompt_denoising(logits, threshold=0.5)
    assert torch.all(out[0, 2] == -100)
    torch.testing.assert_close(out[0, :2], logits[0, :2])


def test_prompt_denoising_all_below_threshold_keep_top_or_authors():
    logits = torch.zeros(1, 4, 2, 2)
    logits[0, 1, 0, 0] = 0.005  # peak p of class 1 ~ 0.38, others lower: all below 0.5
    kept = prompt_denoising(logits, keep_top=True)
    assert torch.all(kept[0, [0, 2, 3]] == -100) and torch.equal(kept[0, 1], logits[0, 1])
    authors = prompt_denoising(logits, keep_top=False)
    assert torch.all(authors == -100)


def _ks_loop(logits, keys, form, scale=100.0, thresh=1.0):
    b, k, h, w = logits.shape
    p = torch.softmax(logits * scale, dim=1).reshape(b, k, -1)
    kk = keys.reshape(b, keys.shape[1], -1)  # B, C, N
    out = p.clone()
    for n in range(b):
        if form == "paper":
            kn = kk[n] / kk[n].norm(dim=0, keepdim=True)
        else:  # authors: each channel normalised over the token axis
            kn = kk[n] / kk[n].norm(dim=1, keepdim=True)
        for i in range(h * w):
            if p[n, :, i].max() >= thresh:
                continue
            acc = torch.zeros(k)
            for j in range(h * w):
                acc += float(kn[:, i] @ kn[:, j]) * p[n, :, j]
            out[n, :, i] = acc
    return out.reshape(b, k, h, w)


@pytest.mark.parametrize("form", ["paper", "authors"])
def test_key_smoothing_matches_equation_5(form):
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 3, 4) * 0.05
    keys = torch.randn(2, 7, 3, 4)
    torch.testing.assert_close(key_smoothing(logits, keys, form=form), _ks_loop(logits, keys, form),
                               atol=1e-5, rtol=1e-5)


def test_key_smoothing_reassociated_equals_the_similarity_matrix_product():
    """K (K^T p), as computed, against (K K^T) p with the HW x HW matrix built, at a realistic grid."""
    g = torch.Generator().manual_seed(0)
    logits, keys = torch.randn(1, 19, 24, 48, generator=g) * 0.05, torch.randn(1, 64, 24, 48, generator=g)
    p = torch.softmax(logits * 100, dim=1).reshape(1, 19, -1).transpose(1, 2).double()
    kk = torch.nn.functional.normalize(keys.reshape(1, 64, -1).transpose(1, 2).double(), dim=-1)
    want = ((kk @ kk.transpose(1, 2)) @ p).transpose(1, 2).reshape(1, 19, 24, 48)
    got = key_smoothing(logits, keys, "paper")
    assert float((got.double() - want).abs().max() / want.abs().max()) < 1e-5


def test_key_smoothing_forms_differ_and_threshold_limits_positions():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 2, 3) * 0.05
    keys = torch.randn(1, 4, 2, 3) * torch.tensor([1.0, 5.0, 0.2, 3.0]).view(1, 4, 1, 1)
    assert (key_smoothing(logits, keys, "paper") - key_smoothing(logits, keys, "authors")).abs().max() > 1e-3
    p = torch.softmax(logits * 100, dim=1)
    thresh = float(p.amax(dim=1).median())
    out = key_smoothing(logits, keys, "paper", threshold=thresh)
    confident = p.amax(dim=1, keepdim=True) >= thresh
    torch.testing.assert_close(out[confident.expand_as(out)], p[confident.expand_as(p)])
    torch.testing.assert_close(out, _ks_loop(logits, keys, "paper", thresh=thresh), atol=1e-5, rtol=1e-5)


def test_key_smoothing_identical_keys_average_predictions():
    """With all keys equal, every cosine is 1: each position gets the sum of all positions' p."""
    logits = torch.randn(1, 3, 2, 2) * 0.01  # unsaturated: max p < 1, so every position is smoothed
    keys = torch.ones(1, 5, 2, 2)
    out = key_smoothing(logits, keys, "paper")
    total = torch.softmax(logits * 100, dim=1).sum(dim=(2, 3))
    for i in range(2):
        for j in range(2):
            torch.testing.assert_close(out[0, :, i, j], total[0], atol=1e-5, rtol=1e-5)
    assert math.isclose(float(out[0, :, 0, 0].sum()), 4.0, rel_tol=1e-5)


def test_key_smoothing_rejects_unknown_form():
    with pytest.raises(ValueError, match="paper"):
        key_smoothing(torch.zeros(1, 2, 1, 1), torch.ones(1, 2, 1, 1), form="tokens")
