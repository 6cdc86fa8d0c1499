"""`maskclip label --engine ray` on a local Ray instance (2 CPUs) writes the local engine's files, file for file."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from maskclip.cli import main
from maskclip.toyworld import World

pytest.importorskip("ray.data")
pytestmark = pytest.mark.usefixtures("one_thread")  # main() sets one torch thread; restored after the test

CLASSES = "sky,wall,grass,sand,water,zebra,leopard,turtle,balloon,fish"


def files_of(root):
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def without_timing(path):
    d = json.loads(path.read_text())
    d.pop("seconds", None)
    return d


@pytest.mark.slow
def test_ray_engine_writes_the_local_engines_files(tmp_path, capsys):
    src = tmp_path / "images"
    (src / "sub").mkdir(parents=True)
    w = World(0)
    for i in range(5):
        Image.fromarray(w.scene(i, "test").image).save(src / ("sub" if i % 2 else "") / f"s{i}.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")  # fails in both engines, listed
    # one thread in both engines: the probabilities behind the exports' scores are then bit-identical too
    common = [str(src), "--recursive", "--model", "toy-rn", "--classes", CLASSES, "--quiet", "--export", "coco",
              "--threads", "1"]
    assert main(["label", *common, "--out", str(tmp_path / "local")]) == 1
    local_err = capsys.readouterr().err
    ray_args = ["--engine", "ray", "--ray-cpus", "2", "--ray-actors", "2", "--ray-batch", "2"]
    assert main(["label", *common, *ray_args, "--out", str(tmp_path / "ray")]) == 1
    ray_err = capsys.readouterr().err
    assert "FAILED" in local_err and "FAILED" in ray_err and "broken.png" in ray_err
    a, b = files_of(tmp_path / "local"), files_of(tmp_path / "ray")
    assert a.keys() == b.keys() and len([k for k in a if k.startswith("labels/") and k.endswith(".png")]) == 5
    for rel in a:
        if rel.endswith(".json") and rel.startswith("labels/"):
            assert without_timing(a[rel]) == without_timing(b[rel]), rel
        elif rel.endswith(".json"):  # the index and the COCO export: same entries, same order
            assert json.loads(a[rel].read_text()) == json.loads(b[rel].read_text()), rel
        else:
            assert a[rel].read_bytes() == b[rel].read_bytes(), rel
    # resumable: a second run finds everything done (the broken file fails again, and is listed again)
    assert main(["label", *common, *ray_args, "--out", str(tmp_path / "ray")]) == 1
    out = capsys.readouterr()
    assert "0 written, 5 already done, 1 failed" in out.err + out.out
