"""CLIP image and text encoders with OpenAI's parameter names.

The modules mirror openai/CLIP's `model.py` so that an OpenAI (or OpenCLIP) state dict loads
without renaming. Hyper-parameters are read off the state dict (`config_from_state_dict`), so one
`build_model` serves every released architecture and the small CLIPs this project trains itself.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class CLIPConfig:
    """Everything needed to instantiate a CLIP; `vision_layers` is an int for ViT, a 4-tuple for ResNets."""

    embed_dim: int
    image_resolution: int
    vision_layers: int | tuple[int, int, int, int]
    vision_width: int
    vision_patch_size: int | None
    context_length: int
    vocab_size: int
    transformer_width: int
    transformer_heads: int
    transformer_layers: int
    vision_heads: int | None = None  # default: width // 64 (ViT) or width * 32 // 64 (ResNet)
    quick_gelu: bool = True  # OpenAI's models; OpenCLIP's non-"quickgelu" LAION models use nn.GELU

    @property
    def is_vit(self) -> bool:
        return isinstance(self.vision_layers, int)

    @property
    def heads_visual(self) -> int:
        if self.vision_heads is not None:
            return self.vision_heads
        return self.vision_width // 64 if self.is_vit else self.vision_width * 32 // 64

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.is_vit:
            d["vision_layers"] = list(self.vision_layers)
        return d

    @staticmethod
    def from_dict(d: dict) -> "CLIPConfig":
        d = dict(d)
        if isinstance(d["vision_layers"], list):
            d["vision_layers"] = tuple(d["vision_layers"])
        return CLIPConfig(**d)


def _text(embed_dim: int, width: int, layers: int = 12) -> dict:
    return dict(embed_dim=embed_dim, context_length=77, vocab_size=49408, transformer_width=width,
                transformer_heads=width // 64, transformer_layers=layers)


# The released architectures (shapes only; weights come from `maskclip.clip.weights`).
ARCHITECTURES: dict[str, CLIPConfig] = {
    "RN50": CLIPConfig(image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64,
                       vision_patch_size=None, **_text(1024, 512)),
    "RN101": CLIPConfig(image_resolution=224, vision_layers=(3, 4, 23, 3), vision_width=64,
                        vision_patch_size=None, **_text(512, 512)),
    "RN50x4": CLIPConfig(image_resolution=288, vision_layers=(4, 6, 10, 6), vision_width=80,
                         vision_patch_size=None, **_text(640, 640)),
    "RN50x16": CLIPConfig(image_resolution=384, vision_layers=(6, 8, 18, 8), vision_width=96,
                          vision_patch_size=None, **_text(768, 768)),
    "RN50x64": CLIPConfig(image_resolution=448, vision_layers=(3, 15, 36, 10), vision_width=128,
                          vision_patch_size=None, **_text(1024, 1024)),
    "ViT-B/32": CLIPConfig(image_resolution=224, vision_layers=12, vision_width=768,
                           vision_patch_size=32, **_text(512, 512)),
    "ViT-B/16": CLIPConfig(image_resolution=224, vision_layers=12, vision_width=768,
                           vision_patch_size=16, **_text(512, 512)),
    "ViT-L/14": CLIPConfig(image_resolution=224, vision_layers=24, vision_width=1024,
                           vision_patch_size=14, **_text(768, 768)),
    "ViT-L/14@336px": CLIPConfig(image_resolution=336, vision_layers=24, vision_width=1024,
                                 vision_patch_size=14, **_text(768, 768)),
}


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 so fp16/bf16 weights keep CLIP's numerics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orig = x.dtype
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).to(orig)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block; tokens are batch-first [N, L, D]."""

    def __init__(self, d_model: int, n_head: int, causal: bool = False, quick_gelu: bool = True):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head, batch_first=True)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU() if quick_gelu else nn.GELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = LayerNorm(d_model)
        self.causal = causal

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Split heads of the in-projection of `x` (already layer-normed): each [N, H, L, Dh]."""
        n, length, d = x.shape
        h = self.attn.num_heads
        q, k, v = F.linear(x, self.attn.in_proj_weight, self.attn.in_proj_bias).chunk(3, dim=-1)
        return tuple(t.reshape(n, length, h, d // h).transpose(1, 2) for t in (q, k, v))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        n, _, length, _ = out.shape
        out = out.transpose(1, 2).reshape(n, length, -1)
        return self.attn.out_proj(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, causal: bool = False, quick_gelu: bool = True):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, causal, quick_gelu)
                                         for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


def resize_pos_embed(pos: torch.Tensor, grid: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize square patch position embeddings [g*g, D] to a (h, w) grid (MaskCLIP: bicubic)."""
    n, d = pos.shape
    g = int(round(math.sqrt(n)))
    if (g, g) == tuple(grid):
        return pos
    p = pos.reshape(1, g, g, d).permute(0, 3, 1, 2).float()
    p = F.interpolate(p, size=grid, mode=mode, align_corners=False)
    return p.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], d).to(pos.dtype)


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int, quick_gelu: bool = True):
        super().__init__()
        self.input_resolution = input_resolution
        self.patch_size = patch_size
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, quick_gelu=quick_gelu)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def tokens(self, x: torch.Tensor, pos_rule: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patchify, add the class token and position embeddings resized to the grid (by `pos_rule`,
        default `resize_pos_embed`), apply ln_pre."""
        x = self.conv1(x.to(self.conv1.weight.dtype))
        grid = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        pos = self.positional_embedding.to(x.dtype)
        pos = torch.cat([pos[:1], (pos_rule or resize_pos_embed)(pos[1:], grid)], dim=0)
        return self.ln_pre(x + pos), grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.tokens(x)
        x = self.transformer(x)
        return self.ln_post(x[:, 0]) @ self.proj


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        # all convs stride 1; an avgpool does the striding (anti-aliased, as in OpenAI's ResNets)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP's global attention pooling: the mean feature is the query over all positions."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int | None = None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # N, HW, C
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # N, HW+1, C
        pos = self.positional_embedding.to(x.dtype)
        pos = torch.cat([pos[:1], resize_pos_embed(pos[1:], (h, w))], dim=0)
        x = x + pos
        heads, dh = self.num_heads, c // self.num_heads
        q = self.q_proj(x[:, :1]).reshape(n, 1, heads, dh).transpose(1, 2)
        k = self.k_proj(x).reshape(n, -1, heads, dh).transpose(1, 2)
        v = self.v_proj(x).reshape(n, -1, heads, dh).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # N, H, 1, Dh
        return self.c_proj(out.transpose(1, 2).reshape(n, c))


class ModifiedResNet(nn.Module):
    """OpenAI's ResNet: 3-conv stem, anti-aliased strides, attention pooling instead of average pooling."""

    def __init__(self, layers: tuple[int, int, int, int], output_dim: int, heads: int, input_resolution: int = 224,
                 width: int = 64):
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        embed_dim = width * 32
        self.attnpool = AttentionPool2d(input_resolution // 32, embed_dim, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-32 feature map that feeds the attention pool."""
        x = self.stem(x.to(self.conv1.weight.dtype))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attnpool(self.features(x))


class CLIP(nn.Module):
    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        c = config
        if c.is_vit:
            self.visual = VisionTransformer(c.image_resolution, c.vision_patch_size, c.vision_width,
                                            c.vision_layers, c.heads_visual, c.embed_dim, c.quick_gelu)
        else:
            self.visual = ModifiedResNet(c.vision_layers, c.embed_dim, c.heads_visual, c.image_resolution,
                                         c.vision_width)
        self.context_length = c.context_length
        self.transformer = Transformer(c.transformer_width, c.transformer_layers, c.transformer_heads, causal=True,
                                       quick_gelu=c.quick_gelu)
        self.vocab_size = c.vocab_size
        self.token_embedding = nn.Embedding(c.vocab_size, c.transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(c.context_length, c.transformer_width))
        self.ln_final = LayerNorm(c.transformer_width)
        self.text_projection = nn.Parameter(torch.empty(c.transformer_width, c.embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation (used for random-weight tests and for training small CLIPs)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features ** -0.5
            for lin in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(lin.weight, std=std)
            for stage in (self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4):
                for name, param in stage.named_parameters():
                    if name.endswith("bn3.weight"):
                        nn.init.zeros_(param)
        width, layers = self.transformer.width, self.transformer.layers
        proj_std = (width ** -0.5) * ((2 * layers) ** -0.5)
        attn_std = width ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image.to(self.dtype))

    def encode_text(self, text: torch.Tensor, trim: bool = True) -> torch.Tensor:
        """Text features at the end-of-text token (the highest id in each row).

        With `trim`, the batch is cut to its longest prompt: under the causal mask no position attends
        to a later one, so the features at the EOT token are identical and the cost drops several-fold.
        """
        eot = text.argmax(dim=-1)
        if trim:
            text = text[:, : int(eot.max()) + 1]
        x = self.token_embedding(text).to(self.dtype)
        x = x + self.positional_embedding[: x.shape[1]].to(self.dtype)
        x = self.transformer(x)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = F.normalize(self.encode_image(image), dim=-1)
        txt = F.normalize(self.encode_text(text), dim=-1)
        logits = self.logit_scale.exp() * img @ txt.t()
        return logits, logits.t()


_NON_PARAMS = ("input_resolution", "context_length", "vocab_size")


def _count_blocks(sd: dict, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in sd if (m := pat.match(k))})


def config_from_state_dict(sd: dict[str, torch.Tensor]) -> CLIPConfig:
    """Read a CLIP's hyper-parameters off its state dict (facts section 1)."""
    missing = [k for k in ("text_projection", "positional_embedding", "token_embedding.weight", "ln_final.weight")
               if k not in sd]
    if missing:
        raise ValueError(f"not a CLIP state dict: missing {', '.join(missing)}")
    if "visual.proj" not in sd and "visual.layer1.0.conv1.weight" not in sd:
        raise ValueError("not a CLIP state dict: no image encoder "
                         "(neither 'visual.proj' of a ViT nor 'visual.layer1.0.conv1.weight' of a ResNet)")
    if "visual.proj" in sd:
        width = sd["visual.conv1.weight"].shape[0]
        layers = _count_blocks(sd, "visual.transformer.resblocks.")
        patch = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision_layers: int | tuple = layers
        resolution = patch * grid
    else:
        vision_layers = tuple(_count_blocks(sd, f"visual.layer{i}.") for i in (1, 2, 3, 4))
        width = sd["visual.layer1.0.conv1.weight"].shape[0]
        grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        patch = None
        resolution = grid * 32
    t_width = sd["ln_final.weight"].shape[0]
    return CLIPConfig(
        embed_dim=sd["text_projection"].shape[1],
        image_resolution=resolution,
        vision_layers=vision_layers,
        vision_width=width,
        vision_patch_size=patch,
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        transformer_width=t_width,
        transformer_heads=t_width // 64,
        transformer_layers=_count_blocks(sd, "transformer.resblocks."),
    )


def build_model(sd: dict[str, torch.Tensor], config: CLIPConfig | None = None, quick_gelu: bool = True) -> CLIP:
    """Instantiate a CLIP from a state dict.

    The modules are created on the meta device and take the state dict's tensors directly, so no
    time goes into a random initialisation that would be overwritten. A single-precision dict
    (all fp16, say) gives a model of that precision; a mixed one (OpenAI's archives keep norms in
    fp32) gives fp32. `quick_gelu=False` for OpenCLIP models trained with nn.GELU.
    """
    sd = {k: v.detach().clone() for k, v in sd.items() if k not in _NON_PARAMS}  # never alias the caller's
    config = config or config_from_state_dict(sd)
    if config.quick_gelu != quick_gelu:
        config = replace(config, quick_gelu=quick_gelu)
    with torch.device("meta"):
        model = CLIP(config)
    expected = set(model.state_dict())
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    if missing or unexpected:
        raise ValueError(
            "state dict does not match the CLIP architecture read off it: "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    model.load_state_dict(sd, strict=True, assign=True)
    dtypes = {v.dtype for v in sd.values() if v.is_floating_point()}
    model.to(dtypes.pop() if len(dtypes) == 1 else torch.float32)
    return model.eval()
