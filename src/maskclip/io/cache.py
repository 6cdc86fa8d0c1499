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
    """Per-name embeddings of one set of weights and one template set: a vocabulary that shares names with
    an earlier one (a subset, a superset, a reordering) embeds only its new names. One file per (weights,
    precision, templates), {name: embedding}; a damaged file or entry is recomputed, never trusted."""

    model_sha256: str
    root: Path | None = None
    precision: str | None = None  # the text encoder's autocast dtype (None: fp32, the key of earlier caches)

    def path(self, templates: tuple[str, ...]) -> Path:
        prec = {"precision": self.precision} if self.precision else {}
        blob = json.dumps({"model": self.model_sha256, "templates": list(templates), "per_name": 1, **prec},
                          sort_keys=True)
        key = hashlib.sha256(blob.encode()).hexdigest()[:32]
        return (self.root or cache_dir() / "text") / f"{key}.pt"

    def _bank(self, templates: tuple[str, ...]) -> dict[str, torch.Tensor]:
        path = self.path(templates)
        if not path.is_file():
            return {}
        try:
            bank = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never trusted
            return {}
        return bank if isinstance(bank, dict) else {}

    def lookup(self, names: list[str], templates: tuple[str, ...], dim: int) -> dict[str, torch.Tensor]:
        """The cached embeddings of those of `names` that have one (finite, of dimension `dim`)."""
        bank = self._bank(templates)
        out = {}
        for n in names:
            v = bank.get(n)
            if isinstance(v, torch.Tensor) and v.shape == (dim,) and bool(torch.isfinite(v).all()):
                out[n] = v
        return out

    def store(self, embeddings: dict[str, torch.Tensor], templates: tuple[str, ...]) -> None:
        """Add names to the file (merged with what is there now; written atomically)."""
        bank = self._bank(templates)
        bank.update({n: v.detach().float().cpu().clone() for n, v in embeddings.items()})
        save_torch(self.path(templates), bank)


__all__ = ["TextCache", "cache_dir"]
