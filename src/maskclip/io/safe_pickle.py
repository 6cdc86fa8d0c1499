"""Read the pickle of a torch zip archive (`torch.save`, TorchScript) without running anything from the file.

A pickle is a program: its GLOBAL opcodes name callables that the standard unpickler imports and calls.
`SafeUnpickler` resolves only a tiny allow-list that it implements itself (tensor rebuilding on storages it
builds from the archive's own bytes, storage type markers, OrderedDict, TorchScript's list helpers). Every
other global -- `__torch__.*` TorchScript classes, `builtins.open`, `os.system`, anything -- becomes an
inert record class whose construction, `__setstate__`, item and list methods only store their arguments.
So loading can build records and tensors, and nothing else: no code from the file ever runs.

That is what lets maskclip read OpenAI's TorchScript archives (the tensors of the module tree, what
TorchScript's own loader returns as its state dict, without executing the archive's code) and peek at a
file's top-level dict (its "format" tag) cheaply, reading no tensor data at all (`structure_only`).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import types
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NamedTuple

import torch

MAX_PICKLE_BYTES = 256 << 20  # data.pkl of a CLIP archive is ~100 kB; more is not a checkpoint
MAX_DEPTH = 200  # module nesting (CLIP: < 10)
MAX_TENSORS = 1 << 20
Source = str | os.PathLike | IO[bytes] | zipfile.ZipFile


class ArchiveError(ValueError):
    """The archive cannot be read (safely or at all); `str(e)` names the file, `e.reason` says why."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


class Inert:
    """Stands for a global the file names: stores what the pickle passes it, calls nothing."""

    module = ""
    qualname = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = object.__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None, items=[], elements=[])
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Arguments were recorded by `__new__`."""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__["items"].append((key, value))

    def append(self, value: Any) -> None:
        self.__dict__["elements"].append(value)

    def extend(self, values: Any) -> None:
        self.__dict__["elements"].extend(values if isinstance(values, (list, tuple)) else [values])

    def __repr__(self) -> str:
        return f"<inert {self.module}.{self.qualname}>"

    @property
    def global_name(self) -> str:
        return f"{self.module}.{self.qualname}"


class StorageType(NamedTuple):
    """The `torch FloatStorage`-style marker of a persistent id: only its dtype matters."""

    dtype: torch.dtype


class Storage(NamedTuple):
    """A storage read from the archive: raw CPU bytes and the dtype of their elements."""

    raw: torch.UntypedStorage
    dtype: torch.dtype
    numel: int


class StorageStub(NamedTuple):
    """A storage in structure-only mode: never read from the archive."""

    dtype: torch.dtype
    numel: int


class TensorStub(NamedTuple):
    """A tensor in structure-only mode: its shape and dtype, no data."""

    shape: tuple[int, ...]
    dtype: torch.dtype


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_JIT_LISTS = ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist")


def inert_class(module: str, name: str) -> type[Inert]:
    """A fresh record class for the global `module.name` (one per unpickler and global)."""
    label = "".join(c if c.isalnum() else "_" for c in name)[:100] or "_"
    return type(label, (Inert,), {"module": module, "qualname": name, "__module__": __name__})


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int and v >= 0 for v in value):
        raise pickle.UnpicklingError(f"tensor {what} must be non-negative integers, got {value!r:.80}")
    return tuple(value)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor | TensorStub:
    """What torch._utils._rebuild_tensor does, on a storage this module built, with the bounds checked first."""
    shape, strides = _ints(size, "size"), _ints(stride, "stride")
    if type(offset) is not int or offset < 0 or len(shape) != len(strides):
        raise pickle.UnpicklingError("bad tensor offset or stride")
    if isinstance(storage, StorageStub):
        return TensorStub(shape, storage.dtype)
    if not isinstance(storage, Storage):
        raise pickle.UnpicklingError(f"a tensor must be built on a storage of the archive, got {storage!r:.80}")
    if 0 not in shape and offset + sum((n - 1) * s for n, s in zip(shape, strides)) >= storage.numel:
        raise pickle.UnpicklingError(f"tensor {shape} at offset {offset} exceeds its storage ({storage.numel})")
    return torch.empty((0,), dtype=storage.dtype).set_(storage.raw, offset, shape, strides)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor | TensorStub:
    return _rebuild_tensor(storage, offset, size, stride)  # hooks and autograd flags are not kept


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> Any:
    if not isinstance(data, (torch.Tensor, TensorStub)):
        raise pickle.UnpicklingError("a parameter must wrap a tensor")
    return data


def _first(value: Any, *rest: Any) -> Any:
    return value


_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.jit._pickle", "restore_type_tag"): _first,
    **{("torch.jit._pickle", n): _first for n in _JIT_LISTS},
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickles `<prefix>/data.pkl` of an open torch zip archive; see the module docstring.

    Everything `find_class` and `persistent_load` hand out is immutable (named tuples, the OrderedDict type)
    or fresh (bound methods, record classes), so a pickle's BUILD opcodes cannot alter a marker, a storage
    or what a later load sees.
    """

    def __init__(self, file: IO[bytes], archive: zipfile.ZipFile | None, prefix: str, structure_only: bool = False):
        super().__init__(file)
        self.archive, self.prefix, self.structure_only = archive, prefix, structure_only
        self.storages: dict[str, Any] = {}
        self.inert: dict[tuple[str, str], type[Inert]] = {}

    def find_class(self, module: str, name: str) -> Any:
        fn = _FUNCTIONS.get((module, name))
        if fn is not None:
            return self._call(fn)
        if module == "torch" and name in _STORAGE_DTYPES:
            return StorageType(_STORAGE_DTYPES[name])
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        key = (module, name)
        if key not in self.inert:
            self.inert[key] = inert_class(module, name)
        return self.inert[key]

    def _call(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` behind a fresh bound method: a pickle's BUILD can neither patch it nor reach `fn`."""
        return types.MethodType(lambda _self, *args: fn(*args), self)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, stype, key, _location, numel = pid  # always read to the CPU, wherever it was saved from
        if not isinstance(stype, StorageType) or not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError(f"bad storage reference {pid!r:.80}")
        if key not in self.storages:
            self.storages[key] = StorageStub(stype.dtype, numel) if self.structure_only else \
                self._storage(key, stype.dtype, numel)
        return self.storages[key]

    def _storage(self, key: str, dtype: torch.dtype, numel: int) -> Storage:
        assert self.archive is not None
        name = f"{self.prefix}/data/{key}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise pickle.UnpicklingError(f"storage {name} is missing from the archive") from None
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != nbytes:
            raise pickle.UnpicklingError(f"storage {name} holds {info.file_size} bytes (compression "
                                         f"{info.compress_type}), {numel} x {dtype} need {nbytes} stored bytes")
        data = bytearray(self.archive.read(name))  # checks the member's CRC-32
        raw = torch.frombuffer(data, dtype=torch.uint8).untyped_storage() if nbytes else torch.UntypedStorage(0)
        return Storage(raw, dtype, numel)


def _pickle_member(z: zipfile.ZipFile) -> tuple[str, zipfile.ZipInfo]:
    """The prefix and entry of the one top-level `<prefix>/data.pkl`."""
    found = [i for i in z.infolist() if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1]
    if len(found) != 1:
        raise pickle.UnpicklingError(f"expected one <name>/data.pkl in the archive, found {len(found)}")
    info = found[0]
    if info.file_size > MAX_PICKLE_BYTES:
        raise pickle.UnpicklingError(f"{info.filename} is {info.file_size} bytes (more than {MAX_PICKLE_BYTES})")
    prefix = info.filename[: -len("/data.pkl")]
    recorded = _byteorder(z, f"{prefix}/byteorder")
    if recorded != sys.byteorder:
        raise pickle.UnpicklingError(f"the archive's data is {recorded}-endian, this machine is {sys.byteorder}-endian")
    return prefix, info


def _byteorder(z: zipfile.ZipFile, member: str) -> str:
    """The byte order the archive records (torch writes "little" or "big"); absent: little-endian."""
    try:
        with z.open(member) as f:
            return f.read(16).decode("ascii", "replace").strip()
    except KeyError:
        return "little"


def _with_archive(source: Source, name: str | None, fn: Callable[[zipfile.ZipFile], Any]) -> Any:
    """Open `source` as a zip archive and run `fn` on it; every failure becomes one ArchiveError."""
    label = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<archive>")
    try:
        if isinstance(source, zipfile.ZipFile):
            return fn(source)
        with zipfile.ZipFile(source) as z:
            return fn(z)
    except ArchiveError:
        raise
    except (RecursionError, MemoryError) as e:
        raise ArchiveError(label, f"{type(e).__name__} while unpickling (a recursion or memory bomb?)") from None
    except Exception as e:  # noqa: BLE001 - a hostile pickle can raise anything the unpickler raises
        raise ArchiveError(label, f"cannot unpickle it safely ({type(e).__name__}: {str(e)[:300]})") from None


def load_archive(source: Source, name: str | None = None, *, structure_only: bool = False) -> Any:
    """The object in a torch zip archive's data.pkl: dicts, lists, tensors (or TensorStubs), Inert records."""
    def read(z: zipfile.ZipFile) -> Any:
        prefix, info = _pickle_member(z)
        with z.open(info) as f:
            data = f.read(MAX_PICKLE_BYTES + 1)
        return SafeUnpickler(io.BytesIO(data), z, prefix, structure_only).load()
    return _with_archive(source, name, read)


def peek_format(path: str | os.PathLike) -> str | None:
    """The "format" value of the top-level dict of a torch.save file, read without tensor data; None for
    anything else (a folder, a name, a gzip file, garbage, a file that cannot be unpickled safely)."""
    p = Path(path)
    try:
        if not p.is_file() or not zipfile.is_zipfile(p):
            return None
        obj = load_archive(p, structure_only=True)
    except (OSError, ArchiveError):
        return None
    fmt = obj.get("format") if isinstance(obj, dict) else None
    return fmt if isinstance(fmt, str) else None


def _is_module(obj: Any) -> bool:
    return isinstance(obj, Inert) and obj.module.startswith("__torch__")


def _module_tensors(module: Inert, prefix: str, out: dict[str, torch.Tensor], path: tuple[int, ...]) -> None:
    """Tensor attributes of `module`, then those of its submodules, under dotted names (as state_dict)."""
    if len(path) > MAX_DEPTH or id(module) in path:
        raise pickle.UnpicklingError(f"module tree nested more than {MAX_DEPTH} deep or cyclic at {prefix!r:.80}")
    state = module.state
    if not isinstance(state, dict):  # a custom __getstate__: nothing that is a plain attribute
        return
    subs = []
    for key, value in state.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, torch.Tensor):
            out[prefix + key] = value
        elif _is_module(value):
            subs.append((key, value))
    if len(out) > MAX_TENSORS:
        raise pickle.UnpicklingError(f"more than {MAX_TENSORS} tensors")
    for key, value in subs:
        _module_tensors(value, f"{prefix}{key}.", out, (*path, id(module)))


def read_torchscript_state_dict(source: Source, name: str | None = None) -> dict[str, torch.Tensor]:
    """{"dotted.name": tensor} for every tensor attribute of a TorchScript archive's module tree (what its
    state dict holds, plus plain tensor attributes such as `attn_mask`), without running its code."""
    label = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<archive>")
    root = load_archive(source, label)
    if not _is_module(root):
        raise ArchiveError(label, f"data.pkl holds {getattr(root, 'global_name', type(root).__name__)}, "
                                  "not a TorchScript module")
    out: dict[str, torch.Tensor] = {}
    try:
        _module_tensors(root, "", out, ())
    except (pickle.UnpicklingError, RecursionError) as e:
        raise ArchiveError(label, f"bad TorchScript module tree ({e})") from None
    return out


__all__ = ["ArchiveError", "Inert", "SafeUnpickler", "Storage", "StorageStub", "StorageType", "TensorStub",
           "inert_class", "load_archive", "peek_format", "read_torchscript_state_dict"]
