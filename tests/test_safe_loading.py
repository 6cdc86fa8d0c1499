"""Hostile inputs: no file maskclip reads can run code from it (pickle payloads, TorchScript `__setstate__`),
and the checked MaskCLIP+ formats round-trip exactly, refuse corruption, and refuse the old pickle formats
with one error naming `maskclip convert-checkpoint`, which converts them without running code either."""

from __future__ import annotations

import builtins
import collections
import contextlib
import ctypes
import gzip
import io
import json
import pickle
import sys
import types
import warnings
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import randomize_, tiny_config
from maskclip.cli import main
from maskclip.clip.convert import clip_state_dict, load_state_dict
from maskclip.clip.model import CLIP
from maskclip.clip.weights import WeightsError, load_clip
from maskclip.dense import MaskCLIPConfig
from maskclip.io import safe_pickle
from maskclip.io.safe_pickle import ArchiveError, Inert, load_archive, peek_format, read_torchscript_state_dict
from maskclip.io.tensorfile import CheckedFileError
from maskclip.plus.config import PlusTrainConfig
from maskclip.plus.formats import MODEL_FORMAT, TRAIN_FORMAT, PlusFormatError, load_checkpoint, upgrade_plus_file
from maskclip.plus.loop import train
from maskclip.plus.models import build_target_model, load_target_model, save_target_model
from maskclip.plus.predictor import PlusPredictor, is_plus_checkpoint
from maskclip.plus.state import rng_state as _rng_state
from maskclip.plus.state import save_checkpoint
from maskclip.predict import load_predictor
from test_plus_train import LinearTeacher, tiny_data, tiny_model
from test_plus_train import cfg as train_cfg
from test_weights import save_torchscript, tiny_clip, trace

pytestmark = pytest.mark.usefixtures("single_thread")
PAYLOAD_TEXT = "maskclip-payload-ran"
PLUS = ("plus-model-1", "plus-model-2", "plus-train-1", "plus-train-2")
HOSTILE = (*PLUS, "clip-wrapper", "torchscript-like", "torchscript-like-gz")


class Payload:
    """Unpickling this calls open(marker, "w"): the marker file is the proof that the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


class Evil(torch.nn.Module):
    """A scripted submodule whose TorchScript `__setstate__` prints when TorchScript loads the archive."""

    def __init__(self):
        super().__init__()
        self.secret = torch.ones(3)

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, bool]:
        return (self.secret, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, bool]) -> None:
        print("maskclip-payload-ran")
        self.secret = state[0]
        self.training = state[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.secret.sum()


def write_torchscript_like(path: Path, data_pkl: bytes) -> Path:
    """A zip laid out like a TorchScript archive (constants.pkl makes convert.py treat it as one)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", data_pkl)
        z.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
        z.writestr("evil/version", "3\n")
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Every hostile file, a marker path no loader may create, a CLIP, an image and a 2-image folder dataset."""
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "PWNED"
    bad = Payload(marker)
    sd = tiny_clip().state_dict()
    files = {"plus-model-1": {"format": "maskclip-plus-model/1", "meta": {"name": "light-r18"}, "model": {"x": bad},
                              "extra": {}},
             "plus-model-2": {"format": MODEL_FORMAT, "meta": "{}", "model": {"x": bad}, "sha256": "0" * 64},
             "plus-train-1": {"format": "maskclip-plus-train/1", "iteration": 1, "model": {}, "rng": bad},
             "plus-train-2": {"format": TRAIN_FORMAT, "meta": "{}", "model": {}, "rng": bad, "sha256": "0" * 64},
             "clip-wrapper": {"state_dict": sd, "args": bad}}
    paths = {}
    for name, obj in files.items():
        torch.save(obj, root / f"{name}.pt")
        paths[name] = root / f"{name}.pt"
    paths["torchscript-like"] = write_torchscript_like(root / "ts-like.pt", pickle.dumps(bad, protocol=2))
    paths["torchscript-like-gz"] = root / "ts-like.pt.gz"
    paths["torchscript-like-gz"].write_bytes(gzip.compress(paths["torchscript-like"].read_bytes()))
    torch.manual_seed(0)
    torch.save(randomize_(CLIP(tiny_config(vit=True)), seed=3).state_dict(), root / "clip.pt")
    rng = np.random.default_rng(0)
    for d in ("images", "folder/images", "folder/labels"):
        (root / d).mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "folder/images" / f"im{i}.png")
        Image.fromarray(rng.integers(0, 2, (32, 32), dtype=np.uint8)).save(root / "folder/labels" / f"im{i}.png")
    yield types.SimpleNamespace(root=root, marker=marker, files=paths)
    assert not marker.exists(), "a hostile pickle ran"


def cli(args: list, capsys) -> tuple[int, str]:
    """Exit status and everything the command said (SystemExit messages included)."""
    msg = ""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:
        rc, msg = (e.code, "") if isinstance(e.code, int) else (1 if e.code else 0, str(e.code or ""))
    out = capsys.readouterr()
    return rc, out.out + out.err + msg


def assert_refused(rc: int, text: str, path: Path) -> None:
    assert rc != 0, text
    assert str(path) in text, text
    assert "Traceback" not in text, text


# ------------------------------------------------------------------------------------------- pickle payloads


def test_the_payload_is_real(tmp_path):
    pickle.loads(pickle.dumps(Payload(tmp_path / "ran")))  # the standard unpickler runs it
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("name", HOSTILE)
def test_python_entry_points_never_run_a_payload(hostile, name):
    path = hostile.files[name]
    entries = {"load_clip": load_clip, "load_state_dict": load_state_dict, "load_target_model": load_target_model,
               "PlusPredictor": lambda p: PlusPredictor(p, device="cpu"),
               "load_predictor": lambda p: load_predictor(str(p), "cpu", "single", MaskCLIPConfig())}
    for entry, fn in entries.items():
        with pytest.raises((WeightsError, ValueError)) as e:
            fn(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value), (entry, str(e.value))
    assert is_plus_checkpoint(path) is (name in PLUS)
    assert not hostile.marker.exists()


@pytest.mark.parametrize("name", HOSTILE)
def test_commands_never_run_a_payload(hostile, name, capsys, tmp_path):
    path, r = hostile.files[name], hostile.root
    img, folder = r / "images" / "im0.png", r / "folder"
    commands = [
        ["segment", img, "--classes", "a,b", "--model", path, "--out", tmp_path / "seg", "--quiet"],
        ["segment", img, "--classes", "a,b", "--weights", path, "--out", tmp_path / "segw", "--quiet"],
        ["label", img, "--classes", "a,b", "--model", path, "--out", tmp_path / "label", "--quiet"],
        ["eval", "--dataset", "folder", "--root", folder, "--classes", "a,b", "--model", path, "--out",
         tmp_path / "eval", "--quiet"],
        ["robustness", "--dataset", "folder", "--root", folder, "--classes", "a,b", "--model", path, "--out",
         tmp_path / "rob", "--quiet", "--corruptions", "gaussian_noise", "--severities", "1"],
        ["convert-checkpoint", path, tmp_path / "new.pt"],
    ]
    for args in commands:
        assert_refused(*cli(args, capsys), path)
        assert not hostile.marker.exists(), args[0]
    assert not (tmp_path / "new.pt").exists()


def train_args(hostile, out, *extra) -> list:
    return ["train", "--images", hostile.root / "images", "--classes", "a,b", "--target", "light-r18",
            "--pretrained", "none", "--width", "8", "--head-channels", "16", "--batch-size", "2", "--crop-size",
            "32", "--scale", "32,32", "--weights", hostile.root / "clip.pt", "--templates", "single", "--out", out,
            "--workers", "0", "--quiet", "--iterations", "2", *extra]


@pytest.mark.parametrize("name", HOSTILE)
def test_resuming_training_from_a_planted_checkpoint_never_runs_it(hostile, name, capsys, tmp_path):
    path = hostile.files[name]
    for sub in ("plus", "toy"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "checkpoint.pt").write_bytes(path.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # randomly initialised backbone
        assert_refused(*cli(train_args(hostile, tmp_path / "plus", "--resume"), capsys),
                       tmp_path / "plus" / "checkpoint.pt")
        assert_refused(*cli(train_args(hostile, tmp_path / "clip", "--weights", path), capsys), path)
    threads = torch.get_num_threads()
    try:  # toyworld resumes by default
        assert_refused(*cli(["toyworld", "train", "--out", tmp_path / "toy", "--threads", "1", "--workers", "0"],
                            capsys), tmp_path / "toy" / "checkpoint.pt")
    finally:
        torch.set_num_threads(threads)
    assert not hostile.marker.exists()


def test_unknown_globals_become_inert_records(hostile):
    obj = load_archive(hostile.files["clip-wrapper"])
    rec = obj["args"]
    assert isinstance(rec, Inert) and rec.global_name in ("io.open", "builtins.open")
    assert rec.args == (str(hostile.marker), "w") and not hostile.marker.exists()
    assert torch.equal(obj["state_dict"]["visual.proj"], tiny_clip().state_dict()["visual.proj"])
    assert peek_format(hostile.files["plus-train-1"]) == "maskclip-plus-train/1"


# --------------------------------------------------------------------------------------- TorchScript archives


def _flush_c_stdout() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)  # TorchScript's print goes through C stdio


def test_torchscript_code_in_an_archive_never_runs(tmp_path, capfd):
    model = tiny_clip()
    want = {k: v.clone() for k, v in model.state_dict().items()}
    model.evil = torch.jit.script(Evil())
    path = tmp_path / "evil.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(trace(model), str(path))
        capfd.readouterr()
        torch.jit.load(str(path))  # control: TorchScript's own loader runs the archive's __setstate__
    _flush_c_stdout()
    assert PAYLOAD_TEXT in capfd.readouterr().out
    sd = load_state_dict(path)
    clip = load_clip(path)
    _flush_c_stdout()
    seen = capfd.readouterr()
    assert PAYLOAD_TEXT not in seen.out + seen.err
    assert set(sd) == set(want)
    for k, v in want.items():
        assert torch.equal(sd[k], v) and torch.equal(clip.state_dict()[k], v), k


RN = dict(vision_layers=(1, 1, 1, 1), vision_width=16, resolution=64)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("kw,dtype", [({}, torch.float32), ({}, torch.float16), (RN, torch.float32),
                                      (RN, torch.float16)], ids=["vit-fp32", "vit-fp16", "rn-fp32", "rn-fp16"])
def test_torchscript_tensors_equal_torchscripts_own_state_dict(tmp_path, kw, dtype, gz):
    path = tmp_path / "clip.pt"
    save_torchscript(tiny_clip(**kw).to(dtype), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ref = clip_state_dict(dict(torch.jit.load(str(path), map_location="cpu").state_dict()))
    if gz:
        path = tmp_path / "clip.pt.gz"
        path.write_bytes(gzip.compress((tmp_path / "clip.pt").read_bytes()))
    got = load_state_dict(path)
    assert list(got) == list(ref)
    for k, v in ref.items():
        assert got[k].dtype == v.dtype and got[k].stride() == v.stride() and torch.equal(got[k], v), k
        assert v.dtype == (torch.int64 if k.endswith("num_batches_tracked") else dtype), k


class _Node:
    """Pickles as a `__torch__` module record whose state is {"m": child}."""


def _node_pickle(depth: int, cyclic: bool = False) -> bytes:
    mod = types.ModuleType("__torch__")
    mod.M = type("M", (_Node,), {"__module__": "__torch__", "__qualname__": "M"})
    sys.modules["__torch__"] = mod
    try:
        root = node = mod.M()
        for _ in range(depth):
            node.m = mod.M()
            node = node.m
        node.m = root if cyclic else torch.zeros(1)
        return pickle.dumps(root, protocol=2)
    finally:
        del sys.modules["__torch__"]


@pytest.mark.parametrize("depth,cyclic", [(safe_pickle.MAX_DEPTH + 5, False), (3, True)], ids=["deep", "cycle"])
def test_module_tree_bombs_are_one_error_naming_the_file(tmp_path, depth, cyclic):
    path = write_torchscript_like(tmp_path / "bomb.pt", _node_pickle(depth, cyclic))
    with pytest.raises(ArchiveError, match="bomb.pt"):
        read_torchscript_state_dict(path)
    with pytest.raises(WeightsError, match="bomb.pt"):
        load_state_dict(path)


class _Storage:
    """Stands for a storage: the pickler below writes it as a persistent id claiming `numel` elements."""

    def __init__(self, numel: int):
        self.numel = numel


class _Tensor:
    """Pickles as torch.save writes a 1-d float tensor of `size` elements on a storage of `numel`."""

    def __init__(self, numel: int, size: int | None = None):
        self.storage, self.size = _Storage(numel), numel if size is None else size

    def __reduce__(self):
        args = (self.storage, 0, (self.size,), (1,), False, collections.OrderedDict())
        return (torch._utils._rebuild_tensor_v2, args)


class _StoragePickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("storage", torch.FloatStorage, "0", "cpu", obj.numel) if isinstance(obj, _Storage) else None


def _archive(path: Path, obj, data: bytes = b"\0" * 8, byteorder: str = "little") -> Path:
    buf = io.BytesIO()
    _StoragePickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a/data.pkl", buf.getvalue())
        z.writestr("a/data/0", data)
        z.writestr("a/byteorder", byteorder)
    return path


def test_storage_sizes_and_byte_order_are_checked(tmp_path):
    ok = load_archive(_archive(tmp_path / "ok.pt", {"t": _Tensor(2)}))
    assert ok["t"].shape == (2,) and ok["t"].dtype == torch.float32
    with pytest.raises(ArchiveError, match="huge.pt.*bytes"):  # refused before anything is allocated
        load_archive(_archive(tmp_path / "huge.pt", {"t": _Tensor(10 ** 12)}))
    with pytest.raises(ArchiveError, match="big.pt.*big-endian"):
        load_archive(_archive(tmp_path / "big.pt", {"t": _Tensor(2)}, byteorder="big"))
    with pytest.raises(ArchiveError, match="over.pt.*exceeds"):
        load_archive(_archive(tmp_path / "over.pt", {"t": _Tensor(2, size=3)}))  # 3 elements on a storage of 2
    with pytest.raises(ArchiveError, match="short.pt.*bytes"):
        load_archive(_archive(tmp_path / "short.pt", {"t": _Tensor(2)}, data=b"\0" * 4))  # claims 2, holds 1


def test_peeking_reads_no_tensor_data_and_is_false_for_non_checkpoints(hostile, tmp_path, monkeypatch):
    gz = tmp_path / "sd.pt.gz"
    gz.write_bytes(gzip.compress((hostile.root / "clip.pt").read_bytes()))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    for p in (tmp_path, "ViT-B/16", gz, garbage, hostile.root / "clip.pt", tmp_path / "missing.pt"):
        assert not is_plus_checkpoint(p)

    def no_data(*args):
        raise AssertionError("structure-only peek read tensor data")

    monkeypatch.setattr(safe_pickle.SafeUnpickler, "_storage", no_data)
    model = tiny_model()
    save_target_model(tmp_path / "m.pt", model)
    assert is_plus_checkpoint(tmp_path / "m.pt") and peek_format(tmp_path / "m.pt") == MODEL_FORMAT
    stub = load_archive(tmp_path / "m.pt", structure_only=True)["model"]["classifier.weight"]
    assert stub.shape == tuple(model.classifier.weight.shape)


# ------------------------------------------------------------------------------------- checked MaskCLIP+ files


def test_model_file_round_trip_is_exact_and_weights_only(tmp_path):
    model = tiny_model().eval()
    path = tmp_path / "model.pt"
    save_target_model(path, model, {"note": Path("/x"), "nan": float("nan")})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == MODEL_FORMAT and len(raw["sha256"]) == 64 and isinstance(raw["meta"], str)
    again = load_target_model(path).eval()
    assert again.meta == model.meta
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_a_flipped_byte_inside_a_tensor_is_refused_naming_the_file(tmp_path, capsys, hostile):
    model = tiny_model()
    path = tmp_path / "model.pt"
    save_target_model(path, model)
    data = bytearray(path.read_bytes())
    at = bytes(data).find(model.head.proj.weight.detach().numpy().tobytes()[:64])
    assert at > 0
    data[at + 8] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckedFileError, match="checksum mismatch.*corrupt") as e:
        load_target_model(path)
    assert str(path) in str(e.value)
    rc, text = cli(["segment", hostile.root / "images" / "im0.png", "--classes", "a,b", "--model", path, "--out",
                    tmp_path / "seg", "--quiet"], capsys)
    assert_refused(rc, text, path)
    assert "checksum mismatch" in text


def _optimizer_after_a_step(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    return opt


def _assert_same_rng(a: dict, b: dict) -> None:
    assert a["python"] == b["python"] and torch.equal(a["torch"], b["torch"])
    na, nb = a["numpy"], b["numpy"]
    assert na[0] == nb[0] and na[1].dtype == nb[1].dtype and np.array_equal(na[1], nb[1]) and na[2:] == nb[2:]


def _assert_same_tree(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same_tree(a[k], b[k])
    else:
        assert a == b


def test_training_checkpoint_round_trip_restores_every_state_exactly(tmp_path):
    model = tiny_model()
    opt = _optimizer_after_a_step(model)
    np.random.seed(5)
    np.random.normal()  # a cached gaussian in numpy's state
    rng = _rng_state()
    config = PlusTrainConfig(out_dir=str(tmp_path))
    save_checkpoint(tmp_path / "checkpoint.pt", model, opt, torch.amp.GradScaler("cuda", enabled=False), 7, rng,
                    config)
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["format"] == TRAIN_FORMAT and ck["iteration"] == 7 and ck["meta"] == model.meta
    assert ck["config"] == json.loads(json.dumps(asdict(config)))
    _assert_same_rng(ck["rng"], rng)
    _assert_same_tree(ck["model"], model.state_dict())
    _assert_same_tree(ck["optimizer"], opt.state_dict())


def _old_model_file(path: Path, model) -> Path:
    torch.save({"format": "maskclip-plus-model/1", "meta": model.meta, "model": model.state_dict(), "extra": {}},
               path)  # exactly what the old save_target_model wrote
    return path


def _old_checkpoint(path: Path, model, opt, iteration: int, rng: dict, config: PlusTrainConfig) -> Path:
    torch.save({"format": "maskclip-plus-train/1", "iteration": iteration, "model": model.state_dict(),
                "meta": model.meta, "optimizer": opt.state_dict(), "scaler": {}, "rng": rng,
                "config": asdict(config)}, path)  # the old save_checkpoint, numpy RNG state included
    return path


def test_old_formats_get_one_error_naming_the_conversion_and_convert_exactly(tmp_path, capsys, hostile):
    model = tiny_model().eval()
    old_model = _old_model_file(tmp_path / "model.pt", model)
    opt = _optimizer_after_a_step(tiny_model(seed=1))
    rng = _rng_state()
    old_ckpt = _old_checkpoint(tmp_path / "checkpoint.pt", model, opt, 3, rng, PlusTrainConfig())
    for path, load in ((old_model, load_target_model), (old_ckpt, load_checkpoint), (old_ckpt, load_target_model)):
        with pytest.raises(PlusFormatError) as e:
            load(path)
        msg = str(e.value)
        assert str(path) in msg and f"maskclip convert-checkpoint {path}" in msg and "\n" not in msg
    rc, text = cli(["segment", hostile.root / "images" / "im0.png", "--classes", "a,b", "--model", old_model, "--out",
                    tmp_path / "seg", "--quiet"], capsys)
    assert_refused(rc, text, old_model)
    assert "maskclip convert-checkpoint" in text and text.count("error:") == 1

    assert cli(["convert-checkpoint", old_model, old_model], capsys)[0] == 2  # NEW == OLD
    assert cli(["convert-checkpoint", old_model, tmp_path / "m2.pt"], capsys)[0] == 0
    assert cli(["convert-checkpoint", old_ckpt, tmp_path / "c2.pt"], capsys)[0] == 0
    rc, text = cli(["convert-checkpoint", tmp_path / "m2.pt", tmp_path / "m3.pt"], capsys)
    assert rc != 0 and "already in the current format" in text
    again = load_target_model(tmp_path / "m2.pt").eval()
    assert again.meta == model.meta
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    ck = load_checkpoint(tmp_path / "c2.pt")
    assert ck["iteration"] == 3
    _assert_same_rng(ck["rng"], rng)
    _assert_same_tree(ck["model"], model.state_dict())
    _assert_same_tree(ck["optimizer"], opt.state_dict())


def test_a_converted_old_checkpoint_resumes_bit_exactly(tmp_path):
    kw = dict(iterations=4, checkpoint_every=100)
    full_model = tiny_model()
    full = train(train_cfg(tmp_path, "full", **kw), full_model, tiny_data(), LinearTeacher())
    with pytest.raises(KeyboardInterrupt):  # checkpoint after 2 iterations
        train(train_cfg(tmp_path, "cut", **kw), tiny_model(), tiny_data(), LinearTeacher(interrupt_at=3))
    ckpt = tmp_path / "cut" / "checkpoint.pt"
    ck = load_checkpoint(ckpt)
    model = tiny_model()
    model.load_state_dict(ck["model"])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    opt.load_state_dict(ck["optimizer"])
    old = _old_checkpoint(tmp_path / "old.pt", model, opt, ck["iteration"], ck["rng"], train_cfg(tmp_path, "cut"))
    ckpt.unlink()
    assert upgrade_plus_file(old, ckpt) == TRAIN_FORMAT
    first = [json.loads(line)["loss"] for line in open(tmp_path / "cut" / "log.jsonl")]
    resumed = tiny_model(seed=9)
    rest = train(train_cfg(tmp_path, "cut", **kw), resumed, tiny_data(), LinearTeacher())
    assert rest["start_iteration"] == 2 and first + rest["losses"] == full["losses"]
    _assert_same_tree(dict(resumed.state_dict()), dict(full_model.state_dict()))


def test_conversion_refuses_a_trusted_but_hostile_old_file(hostile, tmp_path):
    with pytest.raises(CheckedFileError, match="not converted") as e:
        upgrade_plus_file(hostile.files["plus-train-1"], tmp_path / "new.pt")
    assert str(hostile.files["plus-train-1"]) in str(e.value)
    assert not (tmp_path / "new.pt").exists() and not hostile.marker.exists()


def test_deeplab_model_meta_survives_json(tmp_path):
    model = build_target_model("deeplabv3plus-r101", 8, torch.randn(3, 8), None, base_channels=4, head_channels=8,
                               warn_random_init=False, normalize_features=True)
    save_target_model(tmp_path / "m.pt", model)
    assert load_target_model(tmp_path / "m.pt").meta == model.meta
