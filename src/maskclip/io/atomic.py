"""One way to write a file: a temporary name in the same folder, then `os.replace`.

A reader never sees a half-written file under its final name, two processes writing the same
output (shards sharing a folder) never share a temporary name, and the temporary file is removed on
every failure path (an exception, a full disk, Ctrl-C, SIGTERM turned into an exception by the
command line). Every file gets the permissions a plain `open(path, "w")` would give it (0666 minus
the umask), whatever it holds: label PNGs, sidecars, reports and checkpoints alike.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_name(path: Path) -> Path:
    """A hidden name beside `path`, unique per process and call: `.name.<pid>.<random>.tmp`."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on a clean exit it replaces `path`, on any exit it is gone."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def json_safe(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (strict JSON has no NaN or Infinity), paths as text."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalars
        return json_safe(obj.item())
    return obj


def dumps_json(obj: Any, indent: int | None = 1) -> str:
    """Strict JSON: NaN and infinities become null, anything else non-JSON is an error."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    return write_text(path, dumps_json(obj, indent) + "\n")


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """`torch.save` through the same temporary-name-then-rename road."""
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


__all__ = ["atomic_write", "dumps_json", "json_safe", "save_torch", "temp_name", "write_bytes", "write_json",
           "write_text"]
