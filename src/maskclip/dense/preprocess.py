"""From an RGB image to the normalised tensor the encoder sees, without needless full-size copies."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..normalization import NORMALIZATIONS


def image_view(image: np.ndarray | torch.Tensor, copy_readonly: bool = True) -> torch.Tensor:
    """[N, 3, H, W] view of an HxWx3 array/tensor in its own dtype (a 4-D tensor is taken as NCHW).

    `copy_readonly=False` shares even a read-only array (read_image's arrays are): only for callers that
    never write through the view, which saves a full-size copy."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
        arr = np.ascontiguousarray(image)
        if arr.flags.writeable or copy_readonly:
            image = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                image = torch.from_numpy(arr)
    if image.ndim == 3:
        image = image.permute(2, 0, 1)[None]
    return image


def to_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """HxWx3 uint8 (or float 0-255) -> float [1, 3, H, W] in 0-255."""
    return image_view(image).float()


def _mean_std(kind: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = NORMALIZATIONS[kind]
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
    return m, s


def normalize(image: torch.Tensor, kind: str) -> torch.Tensor:
    """[N, 3, H, W] in 0-255 -> normalised with `kind`'s mean and std ("imagenet" or "clip")."""
    m, s = _mean_std(kind, image.device)
    return (image - m) / s


def normalize_(image: torch.Tensor, kind: str) -> torch.Tensor:
    """`normalize` in place on a float image (no second full-size float temporary); returns `image`."""
    m, s = _mean_std(kind, image.device)
    return image.sub_(m).div_(s)


def float_copy(image: torch.Tensor) -> torch.Tensor:
    """A float32 copy in the layout `to_tensor` gives, always a new tensor (safe to normalise in place).

    The one full-size float image of `encode`: resizing happens after normalising it, on all three
    channels at once. (Resizing one channel at a time would hold a third of it, but is not bit-identical:
    on one thread torch resizes 3-channel images with another bilinear kernel than 1-channel ones.)"""
    return image.to(torch.float32, copy=True)


__all__ = ["float_copy", "image_view", "normalize", "normalize_", "to_tensor"]
