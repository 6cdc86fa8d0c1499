"""Load CLIP weights by name or path: `load_clip("ViT-B/16")`, `load_clip("toy-vit")`, `load_clip(path)`.

Every source takes the same road: resolve the name to a file, verify the file's SHA-256, read it into
a state dict (`convert.load_state_dict`), `build_model`, cast, move. OpenAI names are downloaded
into the cache (`$MASKCLIP_CACHE`, default `~/.cache/maskclip`); bundled names come from
`maskclip/toyworld/weights/manifest.json`; anything else is taken as a local file.
`load_weights` also returns a `WeightsInfo` (name, SHA-256, source, the model's recommended inference
settings) for sidecars, reports and caches; `load_clip` is the same without it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..io.cache import cache_dir as default_cache_dir
from .convert import load_state_dict
from .download import ChecksumError, DownloadError, WeightsError, download, file_sha256
from .model import ARCHITECTURES, CLIP, CLIPConfig, build_model, config_from_state_dict

__all__ = [
    "WeightsError", "DownloadError", "ChecksumError", "available_models", "bundled_models", "model_url",
    "download", "file_sha256", "load_state_dict", "load_clip", "load_weights", "random_clip", "random_weights",
    "resolve_weights", "WeightsInfo",
]

# OpenAI's releases; the SHA-256 of each file is the second-to-last URL segment.
_MODELS: dict[str, str] = {
    "RN50": "https://openaipublic.azureedge.net/clip/models/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": "https://openaipublic.azureedge.net/clip/models/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": "https://openaipublic.azureedge.net/clip/models/7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": "https://openaipublic.azureedge.net/clip/models/52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": "https://openaipublic.azureedge.net/clip/models/be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
    "ViT-B/32": "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": "https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": "https://openaipublic.azureedge.net/clip/models/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}

# Small CLIPs shipped with the package (written by the toy-world tooling); absent until it exists.
MANIFEST_PATH = Path(__file__).resolve().parents[1] / "toyworld" / "weights" / "manifest.json"

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class BundledModel:
    file: Path
    sha256: str
    description: str = ""
    recommended: dict = field(default_factory=dict)  # inference settings measured best for it


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights a model holds: reported in every sidecar and report, and the key of the text cache.

    source: "openai" (a release name), "bundled", "file" or "random" (sha256 None: never cached, never
    mistaken for trained weights). recommended: MaskCLIPConfig fields the model is best run with (the
    bundled toy CLIPs see 64 px scenes at their own input size, with CLIP's normalisation), applied
    wherever the user does not set them.
    """

    name: str
    sha256: str | None
    source: str
    path: str | None = None
    recommended: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ResolvedWeights:
    """A verified weights file and the name it is reported under."""

    path: Path
    sha256: str
    name: str
    source: str = "file"
    recommended: dict = field(default_factory=dict)


def bundled_models() -> dict[str, BundledModel]:
    """The manifest's entries (file paths resolved next to the manifest); empty if there is none."""
    if not MANIFEST_PATH.is_file():
        return {}
    try:
        entries = json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))
        return {name: BundledModel(MANIFEST_PATH.parent / e["file"], str(e["sha256"]).lower(),
                                   e.get("description", ""), _settings(e.get("recommended") or {}))
                for name, e in entries.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise WeightsError(f"{MANIFEST_PATH}: malformed manifest ({type(e).__name__}: {e}); expected "
                           '{"name": {"file": ..., "sha256": ..., "description": ...}, ...}') from None


def _settings(d: dict) -> dict:
    """JSON lists back to the tuples MaskCLIPConfig holds."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def available_models() -> list[str]:
    """Names `load_clip` accepts besides file paths: OpenAI's releases, then bundled checkpoints."""
    return list(_MODELS) + [n for n in bundled_models() if n not in _MODELS]


def _unknown(name: str) -> WeightsError:
    return WeightsError(f"unknown CLIP weights {name!r}: not a known name and no such file. "
                        f"Available names: {', '.join(available_models())}; or pass a path to a checkpoint")


def model_url(name: str) -> str:
    """Download URL of an OpenAI release name such as "ViT-B/16"."""
    if name not in _MODELS:
        raise _unknown(name)
    return _MODELS[name]


def url_sha256(url: str) -> str:
    """The expected SHA-256 that OpenAI's URLs carry as their second-to-last segment."""
    digest = url.rstrip("/").split("/")[-2].lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"no SHA-256 in the URL {url!r} (expected it as the second-to-last segment)")
    return digest


def resolve_weights(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                    progress: bool = True) -> ResolvedWeights:
    """Name or path -> a local file whose SHA-256 is known (downloaded or bundled ones verified)."""
    name = os.fspath(name_or_path)
    if name in _MODELS:
        url = _MODELS[name]
        digest = url_sha256(url)
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        return ResolvedWeights(download(url, root, sha256=digest, progress=progress), digest, name, "openai")
    bundled = bundled_models()
    if name in bundled:
        entry = bundled[name]
        if not entry.file.is_file():
            raise WeightsError(f"bundled checkpoint {name!r}: file {entry.file} is missing "
                               f"(listed in {MANIFEST_PATH}); reinstall maskclip")
        digest = file_sha256(entry.file)
        if digest != entry.sha256:
            raise WeightsError(f"bundled checkpoint {name!r}: {entry.file} has SHA-256 {digest}, "
                               f"the manifest {MANIFEST_PATH} says {entry.sha256}; the file is corrupt "
                               "or the manifest is stale")
        return ResolvedWeights(entry.file, digest, name, "bundled", entry.recommended)
    path = Path(name).expanduser()
    if path.is_file():
        return ResolvedWeights(path, file_sha256(path), name)
    if path.is_dir():
        weights = hf_folder_weights(path)
        return ResolvedWeights(weights, file_sha256(weights), name, "huggingface")
    raise _unknown(name)


def hf_folder_weights(folder: Path) -> Path:
    """The weights file of a Hugging Face CLIP folder (what `CLIPModel.save_pretrained` writes): safetensors
    preferred, else pytorch_model.bin (read weights-only, as every checkpoint)."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(f"{folder}: is a directory without model.safetensors or pytorch_model.bin; give a checkpoint "
                       "file or a Hugging Face CLIP folder (CLIPModel.save_pretrained)")


def hf_folder_config(weights: Path, sd: dict, quick_gelu: bool) -> CLIPConfig | None:
    """A Hugging Face folder's CLIPConfig: the shapes from the weights, the head counts and the activation
    from its config.json (a state dict cannot tell heads; `quick_gelu=False` (--gelu) still wins)."""
    cfg = weights.parent / "config.json"
    if weights.name not in ("model.safetensors", "pytorch_model.bin") or not cfg.is_file():
        return None
    try:
        hf = json.loads(cfg.read_text())
        vision, text = hf.get("vision_config", {}), hf.get("text_config", {})
    except (OSError, ValueError, AttributeError):
        raise WeightsError(f"{cfg}: not a readable Hugging Face CLIP config.json") from None
    base = config_from_state_dict(sd)
    return replace(base, vision_heads=int(vision.get("num_attention_heads", base.heads_visual)),
                   transformer_heads=int(text.get("num_attention_heads", base.transformer_heads)),
                   quick_gelu=quick_gelu and vision.get("hidden_act", "quick_gelu") == "quick_gelu")


def _default_dtype(device: torch.device, stored: torch.dtype) -> torch.dtype:
    # CPU: fp32 (fp16 CPU kernels are slow or missing); elsewhere keep the file's precision
    return torch.float32 if device.type == "cpu" else stored


def _finish(model: CLIP, device: str | torch.device, dtype: torch.dtype | None) -> CLIP:
    device = torch.device(device)
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(str, _DTYPES))}, got {dtype}")
    dtype = dtype or _default_dtype(device, model.dtype)
    return model.to(device=device, dtype=dtype).eval()


def load_weights(name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, cache_dir: str | os.PathLike | None = None,
                 progress: bool = True, quick_gelu: bool = True) -> tuple[CLIP, WeightsInfo]:
    """`load_clip` and the `WeightsInfo` of what was loaded."""
    w = resolve_weights(name_or_path, cache_dir=cache_dir, progress=progress)
    sd = load_state_dict(w.path)
    config = hf_folder_config(w.path, sd, quick_gelu) if w.source == "huggingface" else None
    try:
        model = build_model(sd, config=config, quick_gelu=config.quick_gelu if config else quick_gelu)
    except (ValueError, KeyError, RuntimeError) as e:
        raise WeightsError(f"{w.path}: not a CLIP checkpoint of a supported architecture: {e}") from None
    info = WeightsInfo(w.name, w.sha256, w.source, str(w.path), w.recommended)
    return _finish(model, device, dtype), info


def load_clip(name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
              dtype: torch.dtype | None = None, cache_dir: str | os.PathLike | None = None,
              progress: bool = True, quick_gelu: bool = True) -> CLIP:
    """Load a CLIP by OpenAI name, bundled name or checkpoint path, ready for inference (eval mode).

    dtype defaults to float32 on CPU and to the file's own precision elsewhere (OpenAI's files are
    fp16, so CUDA gets fp16 as in openai/CLIP). `quick_gelu=False` for OpenCLIP checkpoints trained with
    nn.GELU (a state dict cannot tell). Raises `WeightsError` with a message saying what to do.
    """
    return load_weights(name_or_path, device, dtype, cache_dir, progress, quick_gelu)[0]


def random_weights(name: str, seed: int = 0, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None) -> tuple[CLIP, WeightsInfo]:
    """A randomly initialised CLIP of a real architecture, for tests and weight-free pipeline demos.

    Reported as "random:<name>:seed<seed>" with no SHA-256, so that no report can mistake it for trained
    weights. The global RNG state is left untouched.
    """
    if name not in ARCHITECTURES:
        raise WeightsError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(ARCHITECTURES[name])
    return _finish(model, device, dtype), WeightsInfo(f"random:{name}:seed{seed}", None, "random")


def random_clip(name: str, seed: int = 0, device: str | torch.device = "cpu",
                dtype: torch.dtype | None = None) -> CLIP:
    """`random_weights` without its WeightsInfo."""
    return random_weights(name, seed, device, dtype)[0]
