"""Which device to run on: one default and one check, used by every command and both predictors."""

from __future__ import annotations

import contextlib
import functools
import os

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


PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX, from /proc/cpuinfo on Linux; read once);
    without it bf16 is emulated and can be far slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def resolve_precision(precision: str | None, device: torch.device) -> str | None:
    """The autocast dtype ("fp16", "bf16") or None (fp32) that `precision` means on `device`.

    "auto": $MASKCLIP_PRECISION if set, else fp16 on CUDA (what the authors and the successors ran), bf16 on
    CPUs with native bf16, fp32 elsewhere."""
    if precision == "auto":
        env = os.environ.get("MASKCLIP_PRECISION", "").strip().lower()
        if env and env != "auto":
            if env not in PRECISIONS:
                raise SettingsError(f"MASKCLIP_PRECISION={env!r}: choose one of {', '.join(PRECISIONS)}")
            return resolve_precision(env, device)
        if device.type == "cuda":
            return "fp16"
        return "bf16" if device.type == "cpu" and native_bf16() else None
    return None if precision in (None, "fp32") else precision


def autocast(device: torch.device, dtype: str | None):
    """Autocast to "fp16"/"bf16" on `device`, or nothing (None: fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"fp16": torch.float16, "bf16": torch.bfloat16}[dtype])


__all__ = ["PRECISIONS", "autocast", "default_device", "native_bf16", "resolve_device", "resolve_precision"]
