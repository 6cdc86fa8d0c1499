"""Read a CLIP checkpoint file into a plain state dict with OpenAI's parameter names.

Accepted: OpenAI's TorchScript archives (only their tensors are read, by a restricted unpickler:
neither the graph nor any code stored in the archive is ever run),
`torch.save`d state dicts (loaded with `weights_only=True`, optionally wrapped in a dict under
"state_dict" or "model"), OpenCLIP checkpoints of the same architectures, `.safetensors` files,
and gzip-compressed versions of any of these. Every archive's CRCs are checked before loading,
so a truncated or corrupt file is refused with an error naming it, never half-loaded.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import torch

from ..io.safe_pickle import ArchiveError, read_torchscript_state_dict
from ..io.tensorfile import load_error_reason
from .download import WeightsError

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
_WRAPPER_KEYS = ("state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
# OpenCLIP's CustomTextCLIP keeps the OpenAI text tower under "text."
_TEXT_TOWER = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _refuse(path: Path, why: str) -> WeightsError:
    return WeightsError(f"{path}: cannot read weights ({why}); the file is truncated, corrupt or not a "
                        "CLIP checkpoint: delete it and download it again, or pass another file")


def _open_payload(path: Path) -> IO[bytes]:
    """The file, decompressed in memory when it is gzip'd (bundled toy checkpoints are)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic != GZIP_MAGIC:
        return open(path, "rb")
    try:
        data = gzip.decompress(path.read_bytes())  # checks the gzip CRC-32 and length trailer
    except (OSError, EOFError, zlib.error) as e:
        raise _refuse(path, f"bad gzip data: {e}") from None
    return io.BytesIO(data)


def _is_safetensors(head: bytes) -> bool:
    return len(head) >= 9 and head[8:9] == b"{" and 0 < struct.unpack("<Q", head[:8])[0] < 1 << 30


def _read_safetensors(f: IO[bytes], path: Path) -> dict[str, torch.Tensor]:
    """Minimal reader for the safetensors layout: u64 header size, JSON header, raw little-endian data."""
    f.seek(0)
    data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + n])
        header.pop("__metadata__", None)
        body = memoryview(data)[8 + n:]
        end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
        if end != len(body):
            raise ValueError(f"data holds {len(body)} bytes, header describes {end}")
        out = {}
        for name, spec in header.items():
            dtype = _SAFETENSORS_DTYPES.get(spec["dtype"])
            if dtype is None:
                raise ValueError(f"unsupported dtype {spec['dtype']} for {name}")
            start, stop = spec["data_offsets"]
            buf = bytearray(body[start:stop])
            t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
            out[name] = t.reshape(spec["shape"])
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
        raise _refuse(path, f"bad safetensors file: {e}") from None
    return out


def _read_object(path: Path) -> object:
    """Whatever the file holds: a ScriptModule's state dict or the `torch.load`ed object."""
    with _open_payload(path) as f:
        head = f.read(16)
        f.seek(0)
        if head.startswith(ZIP_MAGIC):
            try:
                with zipfile.ZipFile(f) as z:
                    bad = z.testzip()  # CRC-32 of every member: catches bit rot inside tensor data
                    names = z.namelist()
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
                raise _refuse(path, f"bad zip archive: {e}") from None
            if bad is not None:
                raise _refuse(path, f"CRC mismatch in archive member {bad}")
            f.seek(0)
            if any(n.endswith("/constants.pkl") for n in names):
                # TorchScript (OpenAI's release format): only the tensors of the module tree are read, by an
                # unpickler that resolves no global, so neither the archive's code nor its pickle ever runs
                try:
                    return read_torchscript_state_dict(f, str(path))
                except ArchiveError as e:
                    raise _refuse(path, f"TorchScript archive: {e.reason}") from None
            try:
                return torch.load(f, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                if "weights only" not in str(e).lower():
                    raise _refuse(path, load_error_reason(e)) from None
                raise WeightsError(
                    f"{path}: holds Python objects besides tensors (e.g. training arguments); maskclip reads "
                    "checkpoints with torch.load(weights_only=True) and never unpickles arbitrary objects. "
                    "If you trust the file, load it yourself and re-save only its state dict: "
                    "torch.save(checkpoint['state_dict'], 'clip.pt')") from None
            except Exception as e:  # noqa: BLE001 - torch raises many types for bad pickles
                raise _refuse(path, load_error_reason(e)) from None
        if _is_safetensors(head):
            return _read_safetensors(f, path)
        try:
            return torch.load(f, map_location="cpu", weights_only=True)  # legacy (pre-1.6) format
        except Exception as e:  # noqa: BLE001
            raise _refuse(path, load_error_reason(e)) from None


def _unwrap(obj: object, path: Path) -> Mapping:
    if not isinstance(obj, Mapping):
        raise _refuse(path, f"expected a state dict, found {type(obj).__name__}")
    for key in _WRAPPER_KEYS:  # training checkpoints: {"epoch":..., "state_dict": {...}, ...}
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return obj


def clip_state_dict(obj: object, path: str | os.PathLike = "<memory>") -> dict[str, torch.Tensor]:
    """Normalise a loaded checkpoint object to OpenAI's CLIP names.

    OpenCLIP's ViT/ResNet CLIPs already use OpenAI's names; what differs is the packaging (a
    training checkpoint dict, "module." prefixes from DDP, the "text." tower prefix of CustomTextCLIP),
    a 1-element `logit_scale`, an `attn_mask` buffer in some versions, and SigLIP's `logit_bias`.
    """
    path = Path(path)
    sd = {k: v for k, v in _unwrap(obj, path).items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise _refuse(path, "no tensors found")
    if "vision_model.embeddings.class_embedding" in sd:  # Hugging Face CLIPModel names (save_pretrained)
        from .hf_convert import hf_to_openai

        try:
            return hf_to_openai(sd)
        except (KeyError, ValueError) as e:
            raise _refuse(path, f"Hugging Face CLIP weights that do not convert: {e}") from None
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    if "token_embedding.weight" not in sd and "text.token_embedding.weight" in sd:
        sd = {(k[5:] if k.startswith("text.") and k[5:].startswith(_TEXT_TOWER) else k): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.endswith("attn_mask")}  # rebuilt by the model (causal)
    if "logit_scale" in sd and sd["logit_scale"].numel() == 1:
        sd["logit_scale"] = sd["logit_scale"].reshape(())
    bias = sd.pop("logit_bias", None)
    if bias is not None and bool((bias != 0).any()):
        warnings.warn(f"{path}: dropping logit_bias={bias.flatten()[0].item():.4g} (a SigLIP-style bias); "
                      "embeddings and dense features are unaffected, CLIP.forward logits omit it",
                      stacklevel=3)
    return sd


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read any supported checkpoint file into a CPU state dict with OpenAI's CLIP names."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    return clip_state_dict(_read_object(path), path)
