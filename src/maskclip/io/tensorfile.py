"""Checked tensor files: dicts of tensors and plain values that load with `torch.load(weights_only=True)`.

    {"format": "<tag>", "meta": "<JSON text>", <payload: tensors, lists, dicts, numbers, strings>,
     "sha256": "<hex digest over everything else>"}

weights_only=True means reading the file can build only tensors and plain containers, never run code; the
SHA-256 over a canonical walk of the content (keys sorted; each tensor's dtype, shape and bytes; every
scalar) catches bit rot that torch itself would load silently. Metadata that is not tensors (model
descriptions, training configs) travels as one JSON string, so no Python object is ever pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..clip.download import WeightsError
from .atomic import json_safe, save_torch

RESERVED = ("format", "meta", "sha256")
MAX_DEPTH = 64


class CheckedFileError(WeightsError, ValueError):
    """A file that cannot be read as what it should be (unsafe, corrupt, another format); names the file."""


@dataclass(frozen=True)
class CheckedFile:
    """What `load_checked` read: the format tag, the parsed JSON metadata and the remaining payload."""

    path: Path
    format: str
    meta: dict[str, Any]
    payload: dict[str, Any]


def _scalar(obj: Any) -> bytes | None:
    """Canonical bytes of a plain scalar (also used for dict keys), None for anything else."""
    if obj is None:
        return b"N"
    if isinstance(obj, bool):
        return b"T" if obj else b"F"
    if isinstance(obj, int):
        text = str(obj).encode()
        return b"I%d:" % len(text) + text
    if isinstance(obj, float):
        return b"D" + struct.pack("<d", obj)
    if isinstance(obj, str):
        raw = obj.encode("utf-8", "surrogatepass")
        return b"S%d:" % len(raw) + raw
    if isinstance(obj, bytes):
        return b"B%d:" % len(obj) + obj
    return None


def _feed(h: Any, obj: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"content nested more than {MAX_DEPTH} levels deep")
    plain = _scalar(obj)
    if plain is not None:
        h.update(plain)
    elif isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided:
            raise TypeError(f"only dense tensors can be stored, got layout {obj.layout}")
        t = obj.detach().resolve_conj().resolve_neg().cpu().contiguous()
        h.update(f"X{t.dtype}:{tuple(t.shape)}:".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, Mapping):
        keys = []
        for k, v in obj.items():
            kb = _scalar(k)
            if kb is None:
                raise TypeError(f"dict keys must be plain scalars, got {type(k).__name__}")
            keys.append((kb, v))
        h.update(b"M%d:" % len(keys))
        for kb, v in sorted(keys, key=lambda kv: kv[0]):
            h.update(kb)
            _feed(h, v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        h.update((b"L" if isinstance(obj, list) else b"U") + b"%d:" % len(obj))
        for v in obj:
            _feed(h, v, depth + 1)
    else:
        raise TypeError(f"cannot store a {type(obj).__name__} in a checked tensor file")


def content_digest(doc: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical walk of `doc` without its "sha256" entry."""
    h = hashlib.sha256(b"maskclip-checked/1\n")
    _feed(h, {k: v for k, v in doc.items() if k != "sha256"})
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    return str(obj)  # free-form extras that are not JSON are recorded as text


def meta_json(meta: Mapping[str, Any] | None) -> str:
    """Strict JSON text of `meta` (NaN -> null, tuples -> lists, paths -> strings)."""
    return json.dumps(json_safe(dict(meta or {})), allow_nan=False, default=_json_default, separators=(",", ":"))


def save_checked(path: str | os.PathLike, fmt: str, payload: Mapping[str, Any],
                 meta: Mapping[str, Any] | None = None) -> Path:
    """Write `payload` (tensors and plain containers) with `fmt`, `meta` as JSON and the digest, atomically."""
    clash = [k for k in payload if k in RESERVED]
    if clash:
        raise ValueError(f"payload keys {clash} are reserved ({', '.join(RESERVED)})")
    doc: dict[str, Any] = {"format": fmt, "meta": meta_json(meta), **payload}
    doc["sha256"] = content_digest(doc)
    return save_torch(path, doc)


_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def load_error_reason(err: BaseException) -> str:
    """One line out of torch.load's many: the global a weights-only load refused, else the first line."""
    text = str(err)
    m = _UNSUPPORTED.search(text)
    if m:
        return f"it holds Python objects besides tensors ({m.group(1)})"
    if "TorchScript archive" in text:
        return "it is a TorchScript archive, not a torch.save file"
    m = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    line = m.group(1).strip() if m else (text.strip().splitlines() or [""])[0]
    if line.startswith("Unsupported operand"):
        return f"not a torch.save file ({line})"
    return f"{type(err).__name__}: {line[:300]}"


def load_weights_only(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)` whose every failure is one CheckedFileError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckedFileError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():  # a TorchScript archive is refused below, never dispatched to jit
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for unsafe or broken pickles
        raise CheckedFileError(f"{path}: cannot be loaded safely ({load_error_reason(e)}); maskclip reads files "
                               "with torch.load(weights_only=True) and never runs code stored in them") from None


def load_checked(path: str | os.PathLike, formats: tuple[str, ...] | list[str],
                 map_location: str | torch.device = "cpu") -> CheckedFile:
    """Read a file written by `save_checked` in one of `formats`; verify its digest and parse its metadata."""
    path = Path(path)
    doc = load_weights_only(path, map_location)
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if not isinstance(fmt, str) or not isinstance(doc.get("sha256"), str) or not isinstance(doc.get("meta"), str):
        raise CheckedFileError(f"{path}: not a {' or '.join(formats)} file (no format tag, metadata and checksum)")
    if fmt not in formats:
        raise CheckedFileError(f"{path}: is a {fmt} file, expected {' or '.join(formats)}")
    try:
        ok = content_digest(doc) == doc["sha256"]
    except (TypeError, ValueError, RecursionError) as e:
        raise CheckedFileError(f"{path}: unexpected content ({e}); the file is corrupt") from None
    if not ok:
        raise CheckedFileError(f"{path}: checksum mismatch (its content does not match the SHA-256 stored in it): "
                               "the file is corrupt; restore it from a backup or write it again")
    try:
        meta = json.loads(doc["meta"])
    except ValueError as e:
        raise CheckedFileError(f"{path}: bad metadata ({e}); the file is corrupt") from None
    if not isinstance(meta, dict):
        raise CheckedFileError(f"{path}: metadata is not a JSON object; the file is corrupt")
    payload = {k: v for k, v in doc.items() if k not in RESERVED}
    return CheckedFile(path, fmt, meta, payload)


__all__ = ["CheckedFile", "CheckedFileError", "content_digest", "load_checked", "load_error_reason",
           "load_weights_only", "meta_json", "save_checked"]
