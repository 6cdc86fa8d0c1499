"""Which device to run on: one default and one check, used by every command and both predictors."""

from __future__ import annotations

import torch

from .errors import SettingsError


def default_device() -> torch.device:
    """CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | torch.device | None, option: str = "--device") -> torch.device:
    """`name` as a device that exists on this machine (None: the default), or a SettingsError saying why not."""
    if name is None or name == "":
        return default_device()
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise SettingsError(f"{option} {name!r}: not a device name; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(f"{option} {name}: CUDA is not available on this machine (torch "
                                f"{torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA); "
                                "use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise SettingsError(f"{option} {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise SettingsError(f"{option} {name}: Apple's MPS backend is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise SettingsError(f"{option} {name}: maskclip runs on cpu, cuda or mps, not {dev.type}")
    return dev


__all__ = ["default_device", "resolve_device"]
