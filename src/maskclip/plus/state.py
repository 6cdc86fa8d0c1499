"""The state of a MaskCLIP+ training run, and its save/load: what a bit-exact resume needs.

Model weights, optimiser and loss-scaler states, the number of finished iterations and the random
generators' states after them. Written as a checked tensor file ("maskclip-plus-train/2", plus.formats):
it loads with `torch.load(weights_only=True)` and a SHA-256 over its content refuses a corrupt one.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .augment import sample_seed
from .config import PlusTrainConfig
from .formats import load_checkpoint, save_train_file


def rng_state() -> dict[str, Any]:
    """The states of Python's, numpy's, torch's (and CUDA's) generators."""
    st: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainState:
    """model (the bare network, not a DDP wrapper), optimizer, scaler, finished iterations, RNG states."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any  # torch.amp.GradScaler
    iteration: int = 0
    rng: dict[str, Any] = field(default_factory=rng_state)

    @classmethod
    def create(cls, model: nn.Module, cfg: PlusTrainConfig, use_amp: bool) -> TrainState:
        """SGD over the trainable parameters (the text classifier is a buffer) and a loss scaler for fp16."""
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return cls(model, optimizer, torch.amp.GradScaler("cuda", enabled=use_amp))

    def save(self, path: Path, cfg: PlusTrainConfig) -> None:
        save_train_file(path, iteration=self.iteration, model=self.model.state_dict(),
                        meta=getattr(self.model, "meta", {}), optimizer=self.optimizer.state_dict(),
                        scaler=self.scaler.state_dict(), rng=self.rng, config=asdict(cfg))

    def load(self, path: Path, cfg: PlusTrainConfig, rank: int = 0) -> dict[str, Any]:
        """Restore everything from `path` (CPU first: RNG states must stay CPU tensors); rank 0 takes the
        stored generators, the others restart from a seed tied to the iteration. Returns the stored config."""
        ck = load_checkpoint(path)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        self.iteration = int(ck["iteration"])
        if rank == 0:
            set_rng_state(ck["rng"])
        else:
            seed_all(sample_seed(cfg.seed + rank, self.iteration))
        self.rng = rng_state()
        return ck.get("config", {})


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any, iteration: int,
                    rng: dict[str, Any], config: PlusTrainConfig) -> None:
    """A TrainState of these parts, saved (a checked tensor file; resumable bit-exactly)."""
    TrainState(getattr(model, "module", model), optimizer, scaler, iteration, rng).save(path, config)


__all__ = ["TrainState", "load_checkpoint", "rng_state", "save_checkpoint", "seed_all", "set_rng_state"]
