"""Proposal-generator files on disk: model files (model.pt) and training checkpoints (checkpoint.pt).

Both are checked tensor files (io.tensorfile): read with `torch.load(weights_only=True)`, so loading one
never runs code stored in it, with a SHA-256 over the content that refuses a corrupt one, and every
description (ProposalConfig, seen classes, normalisation, input size, training settings) as JSON.

    maskclip-proposals/1        {"model": state dict}; meta {"model": description, "extra": {...}}
    maskclip-proposals-train/1  {"iteration", "model", "optimizer", "scaler", "rng"}; meta {"model", "config"}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from ..io.tensorfile import CheckedFileError, load_checked, save_checked
from ..plus.formats import rng_from_plain, rng_to_plain
from .model import ProposalConfig, ProposalModel, build_proposal_model

MODEL_FORMAT = "maskclip-proposals/1"
TRAIN_FORMAT = "maskclip-proposals-train/1"
DESCRIPTION_KEYS = ("config", "seen", "mean", "std", "input_size")


class ProposalFileError(CheckedFileError):
    """A proposal file that cannot be used (wrong kind, incomplete, a network that cannot be rebuilt)."""


def save_model_file(path: str | os.PathLike, model: ProposalModel, description: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> Path:
    """model.pt: the weights and what rebuilds and feeds the network (`description`, DESCRIPTION_KEYS)."""
    missing = [k for k in DESCRIPTION_KEYS if k not in description]
    if missing:
        raise ValueError(f"model description lacks {missing}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checked(path, MODEL_FORMAT, {"model": state},
                        {"model": description, "extra": extra or {}})


def rebuild_model(path: str | os.PathLike, state: Any, description: Any) -> ProposalModel:
    """The network a description names, with `state` loaded; a ProposalFileError (one line) otherwise."""
    try:
        if not isinstance(description, dict) or not isinstance(state, dict):
            raise TypeError("no network description or state dict")
        config = ProposalConfig.from_dict(dict(description["config"]))
        model = build_proposal_model(config, len(description["seen"]), None, warn_random_init=False)
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ProposalFileError(f"{path}: the proposal network it describes cannot be rebuilt "
                                f"({type(e).__name__}: {first})") from None
    return model


def load_model_file(path: str | os.PathLike) -> tuple[ProposalModel, dict[str, Any]]:
    """(network on the CPU in eval mode, its description) from a model file or a training checkpoint."""
    f = load_checked(path, (MODEL_FORMAT, TRAIN_FORMAT))
    description = f.meta.get("model")
    model = rebuild_model(path, f.payload.get("model"), description)
    return model.eval(), dict(description)


def save_train_file(path: str | os.PathLike, *, iteration: int, model: dict[str, Tensor], description: dict,
                    optimizer: dict, scaler: dict, rng: dict, config: dict) -> Path:
    """checkpoint.pt: everything an exact resume needs (`rng` as plus.state.rng_state returns it)."""
    payload = {"iteration": int(iteration), "model": dict(model), "optimizer": optimizer, "scaler": scaler,
               "rng": rng_to_plain(rng)}
    return save_checked(path, TRAIN_FORMAT, payload, {"model": description, "config": config})


def load_train_file(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint as {"iteration", "model", "optimizer", "scaler", "rng", "description", "config"}, on the
    CPU (the RNG states must stay CPU tensors; load_state_dict moves the rest to the model's device)."""
    f = load_checked(path, (TRAIN_FORMAT,))
    p = f.payload
    try:
        return {"iteration": int(p["iteration"]), "model": p["model"], "optimizer": p["optimizer"],
                "scaler": p["scaler"], "rng": rng_from_plain(p["rng"]),
                "description": dict(f.meta["model"]), "config": dict(f.meta.get("config") or {})}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ProposalFileError(f"{path}: incomplete proposal training checkpoint ({type(e).__name__}: {e})") from None


__all__ = ["DESCRIPTION_KEYS", "MODEL_FORMAT", "ProposalFileError", "TRAIN_FORMAT", "load_model_file",
           "load_train_file", "rebuild_model", "save_model_file", "save_train_file"]
