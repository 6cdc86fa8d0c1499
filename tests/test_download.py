"""Downloading weights from a local HTTP server (Range support written here): resume, checksum, errors."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import socket
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from maskclip.clip import download as dl
from maskclip.clip import weights
from maskclip.clip.download import ChecksumError, DownloadError, WeightsError, download
from maskclip.clip.model import CLIP, CLIPConfig
from maskclip.clip.weights import load_clip, load_weights

# ---------------------------------------------------------------- a small HTTP server with Range support


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        st = self.server.state
        rng = self.headers.get("Range")
        log = {"path": self.path, "range": rng, "status": None, "sent": 0}
        st.requests.append(log)
        data = st.files.get(self.path)
        if data is None:
            log["status"] = 404
            self.send_error(404)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not st.ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                log["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            log["status"] = 206
        else:
            self.send_response(200)
            log["status"] = 200
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if st.drop_after is not None:  # send part of the body, then drop the connection (once)
            body, st.drop_after = body[: st.drop_after], None
            self.close_connection = True
        log["sent"] = len(body)  # before writing: the client may have read it all before this thread resumes
        self.wfile.write(body)
        self.wfile.flush()


class _State:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.ignore_range = False
        self.drop_after: int | None = None


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = _State()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    st = httpd.state
    st.base = f"http://127.0.0.1:{httpd.server_address[1]}"

    def publish(name: str, data: bytes, digest: str | None = None) -> str:
        """Serve `data` under an OpenAI-style URL: /<sha256>/<name>."""
        path = f"/{digest or hashlib.sha256(data).hexdigest()}/{name}"
        st.files[path] = data
        return st.base + path

    st.publish = publish
    yield st
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def payload(n: int = 300_000, seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g).numpy().tobytes()


def tiny_clip() -> CLIP:
    torch.manual_seed(0)
    cfg = CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                     context_length=77, vocab_size=1000, transformer_width=64, transformer_heads=1,
                     transformer_layers=2)
    return CLIP(cfg).eval()


def features(model: CLIP) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, 32, 32, generator=g)
    text = torch.zeros(2, 77, dtype=torch.long)
    text[0, :4] = torch.tensor([998, 5, 17, 999])
    text[1, :3] = torch.tensor([998, 42, 999])
    with torch.no_grad():
        return model.encode_image(image), model.encode_text(text)


def assert_message(err: Exception, url: str, path: Path) -> None:
    msg = str(err)
    assert url in msg and str(path) in msg and "--weights PATH" in msg


# ---------------------------------------------------------------- download()


def test_fresh_download_verifies_and_renames_atomically(server, tmp_path, monkeypatch):
    data = payload()
    url = server.publish("blob.pt", data)
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        assert Path(src).read_bytes() == data and not Path(dst).exists()  # complete before it moves
        replaced.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(dl.os, "replace", spy)
    path = download(url, tmp_path / "cache", sha256=hashlib.sha256(data).hexdigest(), progress=True)
    assert path == tmp_path / "cache" / "blob.pt" and path.read_bytes() == data
    assert replaced == [("blob.pt.part", "blob.pt")]
    assert sorted(p.name for p in path.parent.iterdir()) == ["blob.pt"]
    assert [(r["range"], r["status"], r["sent"]) for r in server.requests] == [(None, 200, len(data))]
    # a second call uses the verified cache without touching the network
    assert download(url, tmp_path / "cache", sha256=hashlib.sha256(data).hexdigest()) == path
    assert len(server.requests) == 1


def test_partial_file_is_resumed_with_range(server, tmp_path):
    data = payload()
    url = server.publish("blob.pt", data)
    (tmp_path / "blob.pt.part").write_bytes(data[:123_457])
    path = download(url, tmp_path, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert path.read_bytes() == data and not (tmp_path / "blob.pt.part").exists()
    assert server.requests == [{"path": url.removeprefix(server.base), "range": "bytes=123457-",
                                "status": 206, "sent": len(data) - 123_457}]


def test_server_ignoring_range_restarts_from_scratch(server, tmp_path):
    data = payload()
    url = server.publish("blob.pt", data)
    server.ignore_range = True
    (tmp_path / "blob.pt.part").write_bytes(b"\0" * 1000)  # wrong bytes: appending would corrupt the file
    path = download(url, tmp_path, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert path.read_bytes() == data
    assert [(r["range"], r["status"], r["sent"]) for r in server.requests] == [("bytes=1000-", 200, len(data))]


def test_oversized_partial_file_gets_416_and_restarts(server, tmp_path):
    data = payload(5000)
    url = server.publish("blob.pt", data)
    (tmp_path / "blob.pt.part").write_bytes(b"x" * 6000)
    path = download(url, tmp_path, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert path.read_bytes() == data
    assert [(r["range"], r["status"]) for r in server.requests] == [("bytes=6000-", 416), (None, 200)]


def test_dropped_connection_keeps_part_and_next_call_resumes(server, tmp_path):
    data = payload()
    url = server.publish("blob.pt", data)
    digest = hashlib.sha256(data).hexdigest()
    server.drop_after = 100_000
    with pytest.raises(DownloadError) as e:
        download(url, tmp_path, sha256=digest, progress=False)
    assert_message(e.value, url, tmp_path / "blob.pt")
    assert "100000 of 300000 bytes" in str(e.value) and "resumes" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.pt.part"]
    assert (tmp_path / "blob.pt.part").read_bytes() == data[:100_000]
    path = download(url, tmp_path, sha256=digest, progress=False)
    assert path.read_bytes() == data
    assert [(r["range"], r["status"], r["sent"]) for r in server.requests] == [
        (None, 200, 100_000), ("bytes=100000-", 206, 200_000)]


def test_bad_checksum_leaves_nothing_in_place(server, tmp_path):
    data = payload()
    url = server.publish("blob.pt", data, digest="ab" * 32)
    with pytest.raises(ChecksumError) as e:
        download(url, tmp_path, sha256="ab" * 32, progress=False)
    assert_message(e.value, url, tmp_path / "blob.pt")
    assert hashlib.sha256(data).hexdigest() in str(e.value)
    assert list(tmp_path.iterdir()) == []  # neither the final file nor a .part to resume from


def test_stale_cached_file_is_downloaded_again(server, tmp_path):
    data = payload()
    url = server.publish("blob.pt", data)
    (tmp_path / "blob.pt").write_bytes(b"stale")
    with pytest.warns(UserWarning, match="kept aside"):
        path = download(url, tmp_path, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert path.read_bytes() == data
    assert not (tmp_path / "blob.pt.corrupt").exists()  # the good copy replaced it


def test_corrupt_cached_file_is_kept_aside_until_a_good_download_replaces_it(server, tmp_path):
    data = payload()
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / "blob.pt").write_bytes(b"stale")
    offline = f"http://127.0.0.1:{closed_port()}/{digest}/blob.pt"
    with pytest.warns(UserWarning, match="kept aside"), pytest.raises(DownloadError, match="kept aside"):
        download(offline, tmp_path, sha256=digest, progress=False)
    assert (tmp_path / "blob.pt.corrupt").read_bytes() == b"stale"  # not deleted, never used
    assert not (tmp_path / "blob.pt").exists()
    bad = server.publish("blob.pt", b"wrong bytes", digest=digest)
    with pytest.raises(ChecksumError, match="kept aside"):
        download(bad, tmp_path, sha256=digest, progress=False)
    assert (tmp_path / "blob.pt.corrupt").read_bytes() == b"stale"
    good = server.publish("blob.pt", data)
    assert download(good, tmp_path, sha256=digest, progress=False).read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.pt"]


def test_offline_gives_one_clear_error(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/{'cd' * 32}/blob.pt"
    with pytest.raises(DownloadError) as e:
        download(url, tmp_path / "c", sha256="cd" * 32, progress=False)
    assert_message(e.value, url, tmp_path / "c" / "blob.pt")
    assert isinstance(e.value, WeightsError) and isinstance(e.value, RuntimeError)
    assert e.value.__cause__ is None and e.value.__suppress_context__
    assert not (tmp_path / "c" / "blob.pt").exists() and not (tmp_path / "c" / "blob.pt.part").exists()


def test_http_404_is_a_clear_error(server, tmp_path):
    url = server.base + f"/{'ef' * 32}/missing.pt"
    with pytest.raises(DownloadError, match="Not Found") as e:
        download(url, tmp_path, progress=False)
    assert_message(e.value, url, tmp_path / "missing.pt")


# ---------------------------------------------------------------- load_clip over HTTP


@pytest.mark.parametrize("fmt", ["torchscript", "state_dict"])
def test_load_clip_downloads_into_cache_and_matches_original(server, tmp_path, monkeypatch, fmt):
    model = tiny_clip()
    src = tmp_path / "src.pt"
    if fmt == "torchscript":  # OpenAI's release format: an fp16 TorchScript archive
        text = torch.zeros(1, 77, dtype=torch.long)
        text[0, :2] = torch.tensor([998, 999])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(model, (torch.zeros(1, 3, 32, 32), text), check_trace=False), str(src))
    else:
        torch.save(model.state_dict(), src)
    data = src.read_bytes()
    url = server.publish("Tiny-8.pt", data)
    monkeypatch.setitem(weights._MODELS, "Tiny/8", url)
    cache = tmp_path / "cache"
    monkeypatch.setenv("MASKCLIP_CACHE", str(cache))
    loaded, info = load_weights("Tiny/8", progress=False)
    assert (cache / "Tiny-8.pt").read_bytes() == data
    assert (info.name, info.sha256, info.source) == ("Tiny/8", hashlib.sha256(data).hexdigest(), "openai")
    for a, b in zip(features(model), features(loaded)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # explicit cache_dir wins over the environment
    load_clip("Tiny/8", cache_dir=tmp_path / "other", progress=False)
    assert (tmp_path / "other" / "Tiny-8.pt").is_file()


def test_load_clip_offline_names_url_cache_and_weights_flag(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/{'12' * 32}/ViT-B-16.pt"
    monkeypatch.setitem(weights._MODELS, "ViT-B/16", url)
    with pytest.raises(WeightsError) as e:
        load_clip("ViT-B/16", cache_dir=tmp_path, progress=False)
    assert_message(e.value, url, tmp_path / "ViT-B-16.pt")


def test_load_clip_refuses_download_with_wrong_checksum(server, tmp_path, monkeypatch):
    src = tmp_path / "src.pt"
    torch.save(tiny_clip().state_dict(), src)
    digest = "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"
    url = server.publish("ViT-B-16.pt", src.read_bytes(), digest=digest)
    monkeypatch.setitem(weights._MODELS, "ViT-B/16", url)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as e:
        load_clip("ViT-B/16", cache_dir=cache, progress=False)
    assert_message(e.value, url, cache / "ViT-B-16.pt")
    assert list(cache.iterdir()) == []


def test_gzipped_download_loads(server, tmp_path, monkeypatch):
    model = tiny_clip()
    src = tmp_path / "src.pt"
    torch.save(model.state_dict(), src)
    data = gzip.compress(src.read_bytes())
    monkeypatch.setitem(weights._MODELS, "Tiny/gz", server.publish("tiny.pt.gz", data))
    loaded = load_clip("Tiny/gz", cache_dir=tmp_path / "cache", progress=False)
    for a, b in zip(features(model), features(loaded)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
