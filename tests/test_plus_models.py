"""MaskCLIP+ target networks: backbone geometry, heads, frozen text classifier, weight-name mapping."""

import pytest
import torch
import torch.nn.functional as F

from maskclip.plus.backbones import (
    ResNet,
    load_backbone_state_dict,
    load_pretrained_backbone,
    output_stride_of,
    torchvision_to_ours,
)
from maskclip.plus.heads import ASPPv2Head, DeepLabV3PlusHead
from maskclip.plus.models import SegmentationModel, TextHead, build_target_model, load_target_model, save_target_model

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name, k=5, d=16, **kw):
    torch.manual_seed(0)
    kw.setdefault("base_channels", 8)
    return build_target_model(name, d, torch.randn(k, d), None, warn_random_init=False, **kw)


def test_resnet101_v1c_d8_stage_shapes_and_stride():
    net = ResNet(101, base_channels=8, output_stride=8).eval()
    with torch.no_grad():
        c1, c2, c3, c4 = net(torch.zeros(1, 3, 64, 96))
    assert net.out_channels == [32, 64, 128, 256]
    assert [tuple(c.shape[1:]) for c in (c1, c2, c3, c4)] == [(32, 16, 24), (64, 8, 12), (128, 8, 12), (256, 8, 12)]
    assert output_stride_of(net) == 8
    assert output_stride_of(ResNet(101, base_channels=8, output_stride=16)) == 16
    # deep stem: 3x3 convs 3->32->32->64 at full width
    full_stem = [m for m in ResNet(50, output_stride=8).stem if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in full_stem] == [
        (3, 32, (3, 3)), (32, 32, (3, 3)), (32, 64, (3, 3))]


def test_dilations_are_contracted_like_mmseg():
    net = ResNet(101, base_channels=8, output_stride=8)
    assert net.strides == (1, 2, 1, 1) and net.dilations == (1, 1, 2, 4)
    l3 = [b.conv2.dilation[0] for b in net.layer3]
    l4 = [b.conv2.dilation[0] for b in net.layer4]
    assert l3 == [1] + [2] * 22 and l4 == [2, 4, 4]
    assert all(b.conv2.stride == (1, 1) for b in net.layer4) and net.layer2[0].conv2.stride == (2, 2)
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]


def test_full_width_parameter_counts_match_the_public_architectures():
    # torchvision resnet101 has 44,549,160 params incl. the 2,049,000-param fc; the v1c deep stem replaces
    # conv1 (9,408) + bn1 (128) with 28,512 conv + 256 BN params
    r101 = ResNet(101, output_stride=8)
    assert sum(p.numel() for p in r101.parameters()) == 44_549_160 - 2_049_000 - 9_536 + 28_768
    # torchvision resnet18: 11,689,512 incl. a 513,000-param fc
    r18 = ResNet(18, deep_stem=False, output_stride=8)
    assert sum(p.numel() for p in r18.parameters()) == 11_689_512 - 513_000


def test_heads_produce_embed_dim_features_at_the_right_stride():
    m2 = tiny("deeplabv2-r101")
    assert isinstance(m2.head, ASPPv2Head)
    assert [b[0].dilation[0] for b in m2.head.branches] == [6, 12, 18, 24]
    x = torch.randn(2, 3, 64, 64)
    assert m2.features(x).shape == (2, 16, 8, 8)
    m3 = tiny("deeplabv3plus-r101")
    assert isinstance(m3.head, DeepLabV3PlusHead)
    assert m3.head.c1_bottleneck[0].out_channels == 48 and m3.head.c1_bottleneck[0].in_channels == 32
    assert m3.features(x).shape == (2, 16, 16, 16)  # decoder at C1 resolution (stride 4)
    light = tiny("light-r18", head_channels=8)
    assert light.features(x).shape == (2, 16, 4, 4)  # OS 16 by default
    assert tiny("light-r18", output_stride=8, head_channels=8).features(x).shape == (2, 16, 8, 8)
    for m in (m2, m3, light):
        assert m(x).shape == (2, 5, 64, 64)
        assert m(x, upsample=False).shape[-2:] == m.features(x).shape[-2:]


def test_aspp_v2_sums_its_branches():
    head = ASPPv2Head(8, 4, (1, 2)).eval()
    x = [torch.randn(1, 8, 6, 6)]
    expect = head.branches[0](x[0]) + head.branches[1](x[0])
    assert torch.allclose(head(x), expect)
    assert head(x).min() >= 0  # each branch ends in ReLU (authors' ConvModule form)


def test_classifier_is_a_frozen_buffer_scoring_normalised_text_embeddings():
    torch.manual_seed(1)
    text = torch.randn(3, 6) * 5
    clf = TextHead(text)
    assert "weight" in dict(clf.named_buffers()) and len(list(clf.parameters())) == 0
    feat = torch.randn(2, 6, 4, 5)
    expect = torch.einsum("bchw,kc->bkhw", feat, F.normalize(text, dim=-1))
    assert torch.allclose(clf(feat), expect, atol=1e-5)
    cos = TextHead(text, normalize_features=True, logit_scale=40.0)
    assert torch.allclose(cos(feat), 40 * torch.einsum("bchw,kc->bkhw", F.normalize(feat, dim=1),
                                                        F.normalize(text, dim=-1)), atol=1e-4)
    model = tiny("light-r18", head_channels=8)
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith("classifier") for n in names)


def test_set_classifier_opens_the_vocabulary():
    model = tiny("light-r18", k=5, head_channels=8).eval()
    x = torch.randn(1, 3, 32, 32)
    new = torch.randn(7, 16)
    model.set_classifier(new)
    assert model.num_classes == 7 and model(x).shape == (1, 7, 32, 32)
    assert torch.equal(model.classifier.weight, F.normalize(new, dim=-1))
    with pytest.raises(ValueError, match="dim"):
        model.set_classifier(torch.randn(3, 10))


def test_build_target_model_validates_and_warns_on_random_init():
    with pytest.raises(ValueError, match="unknown target model"):
        build_target_model("pspnet", 16, torch.randn(2, 16))
    with pytest.raises(ValueError, match="num_classes"):
        build_target_model("light-r18", 16, torch.randn(2, 8))
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        build_target_model("light-r18", 16, torch.randn(2, 16), None, base_channels=8)


def _as_torchvision_names(sd):
    out = {}
    for k, v in sd.items():
        k = k.replace("stem.0.", "conv1.").replace("stem.1.", "bn1.")
        out[k] = v.clone()
    out["fc.weight"] = torch.randn(1000, 8)
    out["fc.bias"] = torch.randn(1000)
    return out


def test_torchvision_state_dict_maps_onto_every_backbone_tensor(tmp_path):
    torch.manual_seed(0)
    src = ResNet(18, deep_stem=False, stem_channels=8, base_channels=8)
    for m in src.modules():  # make BN statistics non-trivial so a missed copy would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    tv = _as_torchvision_names(src.state_dict())
    assert "conv1.weight" in tv and not any(k.startswith("stem.") for k in tv)
    assert set(torchvision_to_ours(tv)) == set(src.state_dict())
    dst = ResNet(18, deep_stem=False, stem_channels=8, base_channels=8)
    load_backbone_state_dict(dst, tv)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    # the same through a local file (what pretrained="path" does)
    path = tmp_path / "r18.pth"
    torch.save(tv, path)
    dst2 = ResNet(18, deep_stem=False, stem_channels=8, base_channels=8)
    load_pretrained_backbone(dst2, str(path))
    assert torch.equal(dst2.layer4[1].conv2.weight, src.layer4[1].conv2.weight)


def test_missing_unexpected_or_misshaped_keys_error():
    src = ResNet(18, deep_stem=False, stem_channels=8, base_channels=8)
    tv = _as_torchvision_names(src.state_dict())
    dst = ResNet(18, deep_stem=False, stem_channels=8, base_channels=8)
    broken = dict(tv)
    del broken["layer3.1.bn2.weight"]
    with pytest.raises(ValueError, match="layer3.1.bn2.weight"):
        load_backbone_state_dict(dst, broken)
    extra = dict(tv, **{"layer5.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="layer5.0.conv1.weight"):
        load_backbone_state_dict(dst, extra)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_backbone_state_dict(ResNet(18, deep_stem=False, stem_channels=8, base_channels=16), tv)
    with pytest.raises(ValueError):  # a torchvision (7x7 stem) checkpoint cannot fill a v1c deep stem
        load_backbone_state_dict(ResNet(18, deep_stem=True, stem_channels=8, base_channels=8), tv)
    with pytest.raises(FileNotFoundError, match="neither a known name"):
        load_pretrained_backbone(dst, "/nonexistent/weights.pth")


def test_mmseg_v1c_state_dict_loads_with_prefix_and_fc():
    torch.manual_seed(0)
    src = ResNet(101, base_channels=8)
    sd = {"backbone." + k: v.clone() for k, v in src.state_dict().items()}
    sd["fc.weight"] = torch.randn(10, 256)
    dst = ResNet(101, base_channels=8)
    load_backbone_state_dict(dst, {"state_dict": sd})
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.state_dict().items())


def test_save_and_load_target_model_roundtrip(tmp_path):
    model = tiny("deeplabv3plus-r101", k=4).eval()
    path = tmp_path / "m.pt"
    save_target_model(path, model)
    again = load_target_model(path).eval()
    assert isinstance(again, SegmentationModel) and again.meta == model.meta
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert not (tmp_path / "m.pt.tmp").exists()
