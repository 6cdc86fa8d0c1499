"""The cache folder and the text-embedding cache: the one place maskclip keeps files between runs.

Weights are downloaded into `cache_dir()`; text classifiers are stored under `cache_dir()/text` only
through an explicit `TextCache` (the predictors make one for weights with a known SHA-256), so that
embedding class names never writes to disk behind the caller's back.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import save_torch


def cache_dir() -> Path:
    """`$MASKCLIP_CACHE`, else `~/.cache/maskclip`."""
    env = os.environ.get("MASKCLIP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "maskclip"


@dataclass(frozen=True)
class TextCache:
    """Name embeddings of one set of weights, keyed by (names, templates); a damaged entry is recomputed."""

    model_sha256: str
    root: Path | None = None

    def path(self, names: list[str], templates: tuple[str, ...]) -> Path:
        blob = json.dumps({"model": self.model_sha256, "names": names, "templates": list(templates)}, sort_keys=True)
        key = hashlib.sha256(blob.encode()).hexdigest()[:32]
        return (self.root or cache_dir() / "text") / f"{key}.pt"

    def load(self, names: list[str], templates: tuple[str, ...], dim: int) -> torch.Tensor | None:
        path = self.path(names, templates)
        if not path.is_file():
            return None
        try:
            emb = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed, never trusted
            return None
        ok = isinstance(emb, torch.Tensor) and emb.shape == (len(names), dim) and bool(torch.isfinite(emb).all())
        return emb if ok else None

    def save(self, names: list[str], templates: tuple[str, ...], emb: torch.Tensor) -> None:
        save_torch(self.path(names, templates), emb.detach().cpu())


__all__ = ["TextCache", "cache_dir"]
