"""One process or several (torchrun + DistributedDataParallel), on CUDA or the CPU (gloo)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return DistInfo()
    created = False
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        dist.init_process_group("nccl" if use_cuda else "gloo")
        created = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), created)


def training_device(requested: str | None, di: DistInfo) -> torch.device:
    """The requested device, else this process's GPU (cuda:<local rank>), else the CPU."""
    if requested is not None:
        device = torch.device(requested)
    elif torch.cuda.is_available():
        device = torch.device("cuda", di.local_rank)
    else:
        device = torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def all_reduce(t: torch.Tensor, di: DistInfo) -> torch.Tensor:
    """Sum over processes (a no-op in one process)."""
    if di.world_size > 1:
        dist.all_reduce(t)
    return t


__all__ = ["DistInfo", "all_reduce", "setup_distributed", "training_device"]
