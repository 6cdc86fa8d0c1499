"""The authors' pipeline behind one switch, and SCLIP, ClearCLIP, NACLIP and PAMR in the same engine, each
checked against a direct re-derivation (per-head loops, per-pixel loops) and the facts table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskclip.cli import main
from maskclip.clip.model import QuickGELU
from maskclip.dense import MaskCLIP, MaskCLIPConfig, MaskCLIPPredictor, dense_features
from maskclip.dense.config import AUTHORS
from maskclip.dense.methods import method_preset
from maskclip.dense.refine import pamr
from maskclip.dense.successors import authors_vit_ops, dino_pos_embed
from maskclip.dense.text import TextClassifier, templates_80
from maskclip.errors import SettingsError
from maskclip.eval.protocols import paper_size, protocol
from maskclip.tiling import resized_size

pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------- the successors' last block


def _reference_block(block, x, readout, grid, sigma=5.0):
    """The successors' equations written out head by head with plain matrix products."""
    h = block.ln_1(x)[0]  # one image: [T, D]
    d_model = h.shape[-1]
    heads = block.attn.num_heads
    w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
    q, k, v = (h @ w[i * d_model:(i + 1) * d_model].T + b[i * d_model:(i + 1) * d_model] for i in range(3))
    d = d_model // heads
    rows, cols = grid
    coords = [(i, j) for i in range(rows) for j in range(cols)]
    prior = torch.zeros(len(coords) + 1, len(coords) + 1)
    for a, (ya, xa) in enumerate(coords):
        for c, (yc, xc) in enumerate(coords):
            prior[a + 1, c + 1] = math.exp(-((ya - yc) ** 2 + (xa - xc) ** 2) / (2 * sigma ** 2))
    outs = []
    for m in range(heads):
        qm, km, vm = (t[:, m * d:(m + 1) * d] for t in (q, k, v))
        s = d ** -0.5
        if readout == "sclip":
            a = torch.softmax(s * qm @ qm.T, -1) + torch.softmax(s * km @ km.T, -1)
        elif readout == "clearclip":
            a = torch.softmax(s * qm @ qm.T, -1)
        else:
            a = torch.softmax(s * km @ km.T + prior, -1)
        outs.append(a @ vm)
    out = block.attn.out_proj(torch.cat(outs, -1))
    if readout != "sclip":
        return out[None]
    y = x[0] + out
    return (y + block.mlp(block.ln_2(y)))[None]


@pytest.mark.parametrize("readout", ["sclip", "clearclip", "naclip"])
@torch.no_grad()
def test_each_attention_form_matches_a_per_head_loop(tiny_vit, readout):
    torch.manual_seed(0)
    images = torch.randn(1, 3, 48, 64)
    visual = tiny_vit.visual
    x, grid = visual.tokens(images)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    y = _reference_block(visual.transformer.resblocks[-1], x, readout, grid)
    want = (visual.ln_post(y[:, 1:]) @ visual.proj).transpose(1, 2).reshape(1, -1, *grid)
    got = dense_features(tiny_vit, images, readout).feats
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    other = dense_features(tiny_vit, images, "value-only").feats
    assert (got - other).abs().max() > 1e-2  # really another read-out


def test_successors_are_refused_on_a_resnet(tiny_rn):
    with pytest.raises(SettingsError, match="ResNet"):
        MaskCLIP(tiny_rn, readout="naclip")


def test_dino_position_rule_is_not_a_resize_to_the_grid():
    pos = torch.randn(14 * 14, 8)
    assert dino_pos_embed(pos, (14, 14)) is pos  # 224 windows are never resized
    got = dino_pos_embed(pos, (21, 28))
    assert got.shape == (21 * 28, 8)
    p = pos.reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    want = F.interpolate(p, scale_factor=(21.1 / 14, 28.1 / 14), mode="bicubic", align_corners=False,
                         recompute_scale_factor=False).permute(0, 2, 3, 1).reshape(-1, 8)
    torch.testing.assert_close(got, want)
    plain = F.interpolate(p, size=(21, 28), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(-1, 8)
    assert (got - plain).abs().max() > 1e-3


# ---------------------------------------------------------------- PAMR


def _pamr_per_pixel(scores, image, steps, dilations):
    """PAMR pixel by pixel: 16 neighbours, replicate padding, std over 18 values, softmax of -(1/3) sum |dI|/..."""
    _, k, h, w = scores.shape
    img, s = image[0].double(), scores[0].double()
    clamp = lambda v, n: min(max(v, 0), n - 1)  # noqa: E731 - replicate padding
    offs = [(d * dy, d * dx) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    aff = torch.zeros(len(offs), h, w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            sample = [img[:, clamp(y + d * dy, h), clamp(x + d * dx, w)] for d in dilations
                      for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            std = torch.stack(sample, 1).std(1)
            logits = [-((img[:, y, x] - img[:, clamp(y + oy, h), clamp(x + ox, w)]).abs() / (1e-8 + 0.1 * std)).mean()
                      for oy, ox in offs]
            aff[:, y, x] = torch.softmax(torch.stack(logits), 0)
    for _ in range(steps):
        new = torch.zeros_like(s)
        for y in range(h):
            for x in range(w):
                for i, (oy, ox) in enumerate(offs):
                    new[:, y, x] += aff[i, y, x] * s[:, clamp(y + oy, h), clamp(x + ox, w)]
        s = new
    return s[None]


def test_pamr_matches_a_per_pixel_loop():
    g = torch.Generator().manual_seed(0)
    scores, image = torch.randn(1, 3, 9, 11, generator=g), torch.randn(1, 3, 9, 11, generator=g)
    got = pamr(scores, image, steps=3, dilations=(1, 2))
    torch.testing.assert_close(got.double(), _pamr_per_pixel(scores, image, 3, (1, 2)), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- presets against the facts table


def test_presets_match_the_facts_table():
    s = {d: method_preset("sclip", d) for d in ("voc21", "context60", "coco-object", "coco-stuff171", "cityscapes",
                                                "ade150", "voc20", "context59")}
    assert s["voc21"].fields["logit_scale"] == 65 and s["voc21"].fields["area_threshold"] == 0.1
    assert s["context60"].fields["logit_scale"] == 50 and s["coco-object"].fields["logit_scale"] == 50
    assert s["ade150"].fields["logit_scale"] == 40 and "area_threshold" not in s["ade150"].fields
    assert s["coco-stuff171"].fields["size"] == (2048, 448) and s["cityscapes"].fields["size"] == (2048, 560)
    v = s["voc20"].fields
    assert v["size"] == (2048, 336) and (v["crop"], v["step"]) == (224, 112)
    assert [s[d].bg_threshold for d in ("voc21", "context60", "coco-object", "voc20")] == [0.1, 0.1, 0.1, None]
    c = {d: method_preset("clearclip", d) for d in ("voc21", "context60", "coco-object", "cityscapes", "ade150")}
    assert [c[d].bg_threshold for d in ("voc21", "context60", "coco-object", "ade150")] == [0.5, 0.15, 0.4, None]
    a = c["ade150"].fields
    assert a["size"] == (2048, 448) and (a["crop"], a["step"]) == (448, 224)
    assert (c["cityscapes"].fields["crop"], c["cityscapes"].fields["step"]) == (224, 224)
    assert c["ade150"].fields["logit_scale"] == 50 and c["ade150"].fields["pad"] == "center"
    n = {d: method_preset("naclip", d) for d in ("voc21", "voc20", "context59", "cityscapes")}
    assert n["voc21"].fields["mode"] == "whole" and n["voc20"].fields["mode"] == "whole"
    assert n["context59"].fields["mode"] == "slide" and n["cityscapes"].fields["size"] == (2048, 560)
    assert all(p.fields["pamr"] for p in n.values()) and "pamr" not in s["voc21"].fields
    for p in (*s.values(), *c.values(), *n.values()):
        assert p.templates == "80" and p.fields["normalize"] == "clip" and p.fields["score"] == "name-softmax"
        assert p.fields["pos_embed"] == "dino"
    assert len(templates_80()) == 80 and templates_80()[0] == "a bad photo of a {}."
    # their class names: SCLIP's expanded VOC, ClearCLIP's plain one
    assert s["voc21"].classes[0][:2] == ["sky", "wall"] and s["voc21"].display[0] == "background"
    assert len(s["voc21"].classes[15]) == 7 and c["voc21"].classes[15] == ["person"]
    assert method_preset("naclip", "voc21").classes == s["voc21"].classes


def test_paper_protocol_resizes_as_the_authors_configs():
    assert paper_size("voc21") == (2048, 512) and paper_size("ade150") == (2048, 512)
    assert paper_size("context59") == (520, 520) and paper_size("cityscapes") == (1024, 512)
    assert resized_size(375, 500, "fit", paper_size("voc20")) == (512, 683)
    assert resized_size(480, 640, "fit", paper_size("coco-stuff171")) == (512, 683)
    assert resized_size(375, 500, "fit", paper_size("context59")) == (390, 520)
    assert resized_size(375, 500, "squash", (224, 224)) == (224, 224)
    assert resized_size(375, 500, "squash", (320, 240)) == (240, 320)  # (width, height) as mmcv's img_scale
    assert protocol("sclip", "voc21").classes is not None and protocol("paper", "voc21").classes is None


# ---------------------------------------------------------------- the authors' pipeline, item by item


@torch.no_grad()
def test_authors_vit_ops_switch_gelu_and_eps_inside_and_restore_them(tiny_vit):
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    before = dense_features(tiny_vit, images, "authors").feats
    with authors_vit_ops(tiny_vit.visual):
        assert all(m.eps == 1e-6 for m in tiny_vit.visual.modules() if isinstance(m, torch.nn.LayerNorm))
        assert not any(isinstance(m, QuickGELU) for m in tiny_vit.visual.modules())
        inside = dense_features(tiny_vit, images, "authors").feats
    assert any(isinstance(m, QuickGELU) for m in tiny_vit.transformer.modules())  # the text tower untouched
    assert all(m.eps == 1e-5 for m in tiny_vit.visual.modules() if isinstance(m, torch.nn.LayerNorm))
    torch.testing.assert_close(dense_features(tiny_vit, images, "authors").feats, before, rtol=0, atol=0)
    assert (inside - before).abs().max() > 1e-4


def _clf(k=3, dim=32, seed=0):
    emb = F.normalize(torch.randn(k, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)
    return TextClassifier(emb, torch.arange(k), [f"c{i}" for i in range(k)])


def test_geometry_modes_for_sizes_off_the_stride(tiny_vit):
    img = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    clf = _clf()
    crop = MaskCLIP(tiny_vit, resize="none", pad="crop")
    stretch = MaskCLIP(tiny_vit, resize="none", pad="stretch")
    floor = MaskCLIP(tiny_vit, resize="none", pad="floor")
    centre = MaskCLIP(tiny_vit, resize="none", pad="center")
    f = crop.encode(img)
    grid = crop.grid_scores(f.scales[0].feats, None, clf)
    assert f.scales[0].plan.padded == (48, 64) and grid.shape[-2:] == (3, 4)
    want = F.interpolate(grid, size=(40, 50), mode="bilinear", align_corners=False)[0]  # the authors: stretched
    torch.testing.assert_close(stretch.scale_scores(stretch.encode(img).scales[0], clf), want)
    assert (crop.scale_scores(f.scales[0], clf) - want).abs().max() > 1e-3
    fl = floor.encode(img).scales[0]
    assert fl.feats.shape[-2:] == (2, 3)  # the remainder dropped by the patch embedding
    assert floor.scale_scores(fl, clf).shape[-2:] == (40, 50)
    assert centre.scale_scores(centre.encode(img).scales[0], clf).shape[-2:] == (40, 50)


def test_prompt_denoising_can_remove_every_class_as_the_authors_do(tiny_vit):
    img = (np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)
    keep = MaskCLIP(tiny_vit, resize="none", pd=True, pd_threshold=1.0)
    drop = MaskCLIP(tiny_vit, resize="none", pd=True, pd_threshold=1.0, pd_keep_top=False)
    f = keep.encode(img)
    s_keep = keep.grid_scores(f.scales[0].feats, None, _clf())
    s_drop = drop.grid_scores(f.scales[0].feats, None, _clf())
    assert (s_drop == -100).all() and not (s_keep == -100).all()


def test_key_smoothing_labels_are_the_argmax_of_the_smoothed_scores(tiny_vit):
    engine = MaskCLIP(tiny_vit, ks=True)
    scores = torch.tensor([[[-0.3]], [[-0.1]], [[-0.2]]])  # every smoothed score <= 0
    p = engine.to_probs(scores)
    assert p.argmax(0).item() == 1 and p[:, 0, 0].tolist() == [0.0, 1.0, 0.0]


def test_multiscale_as_mmseg_averages_softmax_at_temperature_one(tiny_vit):
    img = (np.random.default_rng(2).random((40, 40, 3)) * 255).astype(np.uint8)
    clf = _clf()
    e = MaskCLIP(tiny_vit, resize="fit", scales=(32, 48), multiscale="mmseg")
    f = e.encode(img)
    _, probs = e.decode(f, clf)
    small = [e.scale_scores(sf, clf) for sf in f.scales]
    want = sum(torch.softmax(F.interpolate(s[None], size=(40, 40), mode="bilinear", align_corners=False)[0], 0)
               for s in small) / 2
    torch.testing.assert_close(probs, want)


def test_compat_authors_sets_every_authors_choice_and_options_still_win(tiny_vit):
    e = MaskCLIP(tiny_vit, compat="authors")
    assert all(getattr(e.config, k) == v for k, v in AUTHORS.items())
    assert MaskCLIP(tiny_vit, compat="authors", ks_form="paper").config.ks_form == "paper"
    assert MaskCLIP(tiny_vit).config.ks_form == "paper" and MaskCLIPConfig().compat == "clip"


def test_name_softmax_score_rule_and_area_threshold(tiny_vit):
    emb = F.normalize(torch.randn(4, 32, generator=torch.Generator().manual_seed(3)), dim=-1)
    clf = TextClassifier(emb, torch.tensor([0, 0, 1, 2]), ["a", "b", "c"])  # class a has two names
    e = MaskCLIP(tiny_vit, resize="none", score="name-softmax", logit_scale=40.0)
    img = (np.random.default_rng(3).random((32, 48, 3)) * 255).astype(np.uint8)
    f = e.encode(img)
    names = e.scale_scores(f.scales[0], clf)  # [4 names, H, W]
    full = F.interpolate(names[None], size=(32, 48), mode="bilinear", align_corners=False)[0]
    p_names = torch.softmax(40 * full, 0)
    want = torch.stack([p_names[:2].max(0).values, p_names[2], p_names[3]])
    labels, probs = e.decode(f, clf)
    torch.testing.assert_close(probs, want)
    assert torch.equal(labels.long(), want.argmax(0))


# ---------------------------------------------------------------- end to end


@pytest.mark.parametrize("method", ["sclip", "clearclip", pytest.param("naclip", marks=pytest.mark.slow)])
def test_eval_with_a_method_end_to_end(shared_data, tiny_vit, tmp_path, method):
    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_vit.state_dict(), ckpt)
    out = tmp_path / method
    assert main(["eval", "--dataset", "coco-object", "--root", str(shared_data / "coco-val2017-mini"), "--weights",
                 str(ckpt), "--method", method, "--limit", "1", "--out", str(out), "--quiet",
                 "--size", "2048,224", "--crop", "224", "--step", "224"]) == 0
    r = json.loads((out / "report.json").read_text())
    s = r["settings"]
    assert s["protocol"] == method and s["method"] == method and s["config"]["readout"] == method
    assert s["templates"] == "80" and s["bg_threshold"] == method_preset(method, "coco-object").bg_threshold
    assert s["config"]["pamr"] == (method == "naclip") and s["config"]["score"] == "name-softmax"
    assert len(r["classes"]) == 81


def test_segment_with_a_method_and_compat_records_them(tiny_vit, tmp_path):
    from PIL import Image

    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_vit.state_dict(), ckpt)
    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)).save(img)
    for extra, key, value in ((["--method", "naclip"], "pamr", True), (["--compat", "authors"], "pad", "stretch")):
        out = tmp_path / extra[-1]
        assert main(["segment", str(img), "--classes", "cat,dog", "--weights", str(ckpt), "--out", str(out),
                     "--quiet", *extra]) == 0
        meta = json.loads((out / "labels" / "a.json").read_text())
        assert meta["settings"][key] == value
    assert meta["settings"]["compat"] == "authors" and meta["settings"]["vit_ops"] == "authors"
    p = MaskCLIPPredictor(tiny_vit, device="cpu", templates="single", config=method_preset("naclip").config())
    p.set_image(np.asarray(Image.open(img)))
    assert p.predict(["cat", "dog"]).labels.shape == (50, 70)
