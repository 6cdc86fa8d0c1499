"""MaskCLIP+ files on disk: model files (model.pt) and training checkpoints (checkpoint.pt).

Both are checked tensor files (io.tensorfile): they load with `torch.load(weights_only=True)`, so reading
one can never run code, and a SHA-256 over their content refuses a corrupt one. The network description,
training config and extras travel as JSON; the RNG states of a checkpoint as tensors and plain numbers.

The first formats (".../1") were pickles read with full unpickling, which runs whatever code a file
carries. They are recognised (by peeking at their "format" value with an unpickler that calls nothing)
and refused with one error naming `maskclip convert-checkpoint OLD NEW`, which rewrites a file the user
trusts -- itself through a restricted loader that allows numpy arrays but still runs no code.
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io.safe_pickle import peek_format
from ..io.tensorfile import CheckedFile, CheckedFileError, load_checked, load_error_reason, save_checked

MODEL_FORMAT = "maskclip-plus-model/2"
TRAIN_FORMAT = "maskclip-plus-train/2"
OLD_FORMATS = {"maskclip-plus-model/1": MODEL_FORMAT, "maskclip-plus-train/1": TRAIN_FORMAT}
PLUS_FORMATS = (MODEL_FORMAT, TRAIN_FORMAT, *OLD_FORMATS)
_KIND = {MODEL_FORMAT: "model file", TRAIN_FORMAT: "training checkpoint",
         "maskclip-plus-model/1": "model file", "maskclip-plus-train/1": "training checkpoint"}


class PlusFormatError(CheckedFileError):
    """A MaskCLIP+ file that cannot be used as it is (old format, wrong kind, inconsistent); names the file."""


def is_plus_file(path: str | os.PathLike) -> bool:
    """True for a MaskCLIP+ model file or training checkpoint, old or new (decided by its "format" value)."""
    return peek_format(path) in PLUS_FORMATS


def old_format_error(path: str | os.PathLike, fmt: str) -> PlusFormatError:
    return PlusFormatError(
        f"{path}: a MaskCLIP+ {_KIND[fmt]} in the old format {fmt}, which only full unpickling reads (and "
        "unpickling runs any code stored in the file), so maskclip no longer loads it; if you trust the file, "
        f"convert it once: maskclip convert-checkpoint {path} NEW.pt")


def read_plus_file(path: str | os.PathLike, formats: tuple[str, ...]) -> CheckedFile:
    """A MaskCLIP+ file in one of `formats` (new ones), checked; an old-format file gets the conversion hint."""
    fmt = peek_format(path)
    if fmt in OLD_FORMATS:
        raise old_format_error(path, fmt)
    f = load_checked(path, formats)
    if not isinstance(f.payload.get("model"), dict):
        raise PlusFormatError(f"{path}: a {f.format} file without a model state dict; the file is corrupt")
    return f


def save_model_file(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], meta: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> Path:
    """model.pt: the network's state dict, its description (meta) and free-form extras (both JSON)."""
    return save_checked(path, MODEL_FORMAT, {"model": dict(state_dict)}, {"model": meta, "extra": extra or {}})


def save_train_file(path: str | os.PathLike, *, iteration: int, model: dict[str, torch.Tensor],
                    meta: dict[str, Any], optimizer: dict[str, Any], scaler: dict[str, Any],
                    rng: dict[str, Any], config: dict[str, Any]) -> Path:
    """checkpoint.pt: everything a bit-exact resume needs; `rng` as `_rng_state` returns it."""
    payload = {"iteration": int(iteration), "model": dict(model), "optimizer": optimizer, "scaler": scaler,
               "rng": rng_to_plain(rng)}
    return save_checked(path, TRAIN_FORMAT, payload, {"model": meta, "config": config})


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint as {"format", "iteration", "model", "meta", "optimizer", "scaler", "rng",
    "config"}, with the RNG states back in the forms random/numpy/torch take."""
    f = read_plus_file(path, (TRAIN_FORMAT,))
    p = f.payload
    try:
        return {"format": f.format, "iteration": int(p["iteration"]), "model": p["model"],
                "meta": dict(f.meta.get("model") or {}), "optimizer": p["optimizer"], "scaler": p["scaler"],
                "rng": rng_from_plain(p["rng"]), "config": dict(f.meta.get("config") or {})}
    except (KeyError, TypeError, ValueError) as e:
        raise PlusFormatError(f"{path}: incomplete training checkpoint ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------- RNG states


def rng_to_plain(st: dict[str, Any]) -> dict[str, Any]:
    """python/numpy/torch(/cuda) generator states as tensors and plain numbers (exact both ways)."""
    version, internal, gauss = st["python"]
    name, keys, pos, has_gauss, cached = st["numpy"]
    out: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(list(internal), dtype=torch.int64),
                   "gauss_next": None if gauss is None else float(gauss)},
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": st["torch"]}
    if "cuda" in st:
        out["cuda"] = list(st["cuda"])
    return out


def rng_from_plain(p: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `rng_to_plain`: what random.setstate / np.random.set_state / torch take."""
    py, npy = p["python"], p["numpy"]
    st: dict[str, Any] = {
        "python": (int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]),
        "numpy": (str(npy["name"]), npy["keys"].numpy().astype(np.uint32), int(npy["pos"]), int(npy["has_gauss"]),
                  float(npy["cached_gaussian"])),
        "torch": p["torch"]}
    if "cuda" in p:
        st["cuda"] = list(p["cuda"])
    return st


def _check_rng(st: dict[str, Any]) -> None:
    """Refuse states random/numpy would not take (before they are written anywhere)."""
    random.Random().setstate(st["python"])
    np.random.RandomState().set_state(st["numpy"])


# ---------------------------------------------------------------------------------------------- conversion


def _numpy_globals() -> list[Any]:
    """numpy's array/scalar/dtype rebuilders, under numpy 2's and numpy 1's names: data, never code."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]

    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes)
              if n.endswith("DType") and n not in ("ObjectDType", "VoidDType", "StringDType")]
    return [np.ndarray, np.dtype, *dtypes, multiarray._reconstruct, multiarray.scalar,
            (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
            (multiarray.scalar, "numpy.core.multiarray.scalar")]


def read_old_file(path: str | os.PathLike) -> dict[str, Any]:
    """An old-format file, read with torch's weights-only unpickler plus numpy arrays: still no code runs."""
    path = Path(path)
    if not path.is_file():
        raise CheckedFileError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals(_numpy_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")  # refused, not run
            doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for unsafe or broken pickles
        raise CheckedFileError(f"{path}: not converted: cannot be loaded safely ({load_error_reason(e)}); only "
                               "tensors, plain values and numpy arrays are read, never code") from None
    if not isinstance(doc, dict) or doc.get("format") not in OLD_FORMATS:
        raise PlusFormatError(f"{path}: not an old-format MaskCLIP+ file ({', '.join(OLD_FORMATS)})")
    return doc


def upgrade_meta(meta: dict | None) -> dict:
    """The ".../1" network description in today's names: "classes" are synonym lists and "class_names" the
    display names, as in the dataset readers (".../1" had them the other way round)."""
    meta = dict(meta or {})
    names, classes = meta.get("classes"), meta.get("class_names")
    if names is not None and all(isinstance(n, str) for n in names):
        meta["classes"] = classes if classes is not None else [[n] for n in names]
        meta["class_names"] = list(names)
    return meta


def upgrade_plus_file(old: str | os.PathLike, new: str | os.PathLike) -> str:
    """Rewrite an old-format MaskCLIP+ file (model or checkpoint) in the current format; returns the new tag."""
    old, new = Path(old), Path(new)
    if not old.is_file():
        raise CheckedFileError(f"{old}: no such file")
    if new.exists() and (new.resolve() == old.resolve() or os.path.samefile(new, old)):
        raise PlusFormatError(f"{new}: is the file being converted; write the converted file under another name")
    fmt = peek_format(old)
    if fmt in (MODEL_FORMAT, TRAIN_FORMAT):
        raise PlusFormatError(f"{old}: already in the current format {fmt}; nothing to convert")
    doc = read_old_file(old)
    try:
        if doc["format"] == "maskclip-plus-model/1":
            save_model_file(new, doc["model"], upgrade_meta(doc["meta"]), dict(doc.get("extra") or {}))
        else:
            _check_rng(doc["rng"])
            save_train_file(new, iteration=doc["iteration"], model=doc["model"], meta=upgrade_meta(doc.get("meta")),
                            optimizer=doc["optimizer"], scaler=doc["scaler"], rng=doc["rng"], config=doc["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise PlusFormatError(f"{old}: not converted: incomplete {doc['format']} file "
                              f"({type(e).__name__}: {e})") from None
    return read_plus_file(new, (MODEL_FORMAT, TRAIN_FORMAT)).format


__all__ = ["MODEL_FORMAT", "OLD_FORMATS", "PLUS_FORMATS", "PlusFormatError", "TRAIN_FORMAT", "is_plus_file",
           "load_checkpoint", "read_old_file", "read_plus_file", "rng_from_plain", "rng_to_plain",
           "save_model_file", "save_train_file", "upgrade_plus_file"]
