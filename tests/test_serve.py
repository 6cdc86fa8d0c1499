"""The web demo end to end in headless Chromium: type classes, submit, and the page's labels are the API's."""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from maskclip.errors import SettingsError  # noqa: E402
from maskclip.predict import load_predictor  # noqa: E402
from maskclip.serve.app import create_app  # noqa: E402
from maskclip.serve.session import DemoSession, Request  # noqa: E402
from maskclip.toyworld.evaluate import heldout_scenes  # noqa: E402

CLASSES = "zebra, leopard, turtle, balloon, fish, grass, sand, water"


def chromium() -> str | None:
    for name in (os.environ.get("MASKCLIP_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


def api_labels(image: np.ndarray, classes: str, background: str = "") -> np.ndarray:
    p = load_predictor("toy-rn", "cpu")
    p.set_image(image)
    names = [c.strip() for c in classes.split(",")]
    bg = [c.strip() for c in background.split(",") if c.strip()] or None
    return p.predict(names, background=bg, return_probs=False).labels


def test_session_reuses_the_image_features_for_a_new_vocabulary():
    s = DemoSession(models=("toy-rn",))
    a = s.run(Request(classes="zebra, grass", example=2))
    b = s.run(Request(classes="zebra, grass, water", example=2))
    c = s.run(Request(classes="zebra", example=3))
    assert a["encoded"] and not b["encoded"] and c["encoded"]
    assert b["classes"] == ["zebra", "grass", "water"] and len(b["heatmaps"]) == 3
    with pytest.raises(SettingsError, match="not an image"):
        s.run(Request(classes="zebra", image=b"GIF89a not really"))
    with pytest.raises(SettingsError, match="not served"):
        s.run(Request(classes="zebra", example=0, model="ViT-B/16"))
    body, media, _ = s.export(b["id"], "coco")
    assert media == "application/json" and b'"annotations"' in body
    import zipfile

    body, media, name = s.export(b["id"], "cvat")
    assert media == "application/zip" and "labelmap.txt" in zipfile.ZipFile(io.BytesIO(body)).namelist()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(DemoSession(models=("toy-rn", "toy-vit"))), host="127.0.0.1",
                                        port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def page_labels(page) -> np.ndarray:
    src = page.get_attribute("#labels", "src")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))


@pytest.mark.slow
def test_browser_page_shows_the_api_labels(server, tmp_path):
    sync = pytest.importorskip("playwright.sync_api")
    exe = chromium()
    if exe is None:
        pytest.skip("no chromium found (apt-get install chromium, or set MASKCLIP_CHROMIUM)")
    scenes = heldout_scenes(6, seed=0)
    with sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(server)
        page.wait_for_selector("#examples img[data-index='2']")
        page.click("#examples img[data-index='2']")
        page.fill("#classes", CLASSES)
        page.fill("#background", "sky, wall")
        page.click("#submit")
        page.wait_for_function("document.body.dataset.ready")
        first = page.evaluate("document.body.dataset.ready")
        assert np.array_equal(page_labels(page), api_labels(scenes[2].image, CLASSES, "sky, wall"))
        assert page.evaluate("document.getElementById('overlay').naturalWidth") >= 256  # legible, with legend
        assert page.locator("#heatmaps img").count() == 9  # eight classes + the background group
        assert page.get_attribute("#status", "data-encoded") == "true"
        # a new vocabulary on the same image: cached features, labels still the API's
        page.fill("#classes", "zebra, grass")
        page.fill("#background", "")
        page.click("#submit")
        page.wait_for_function(f"document.body.dataset.ready && document.body.dataset.ready !== '{first}'")
        assert page.get_attribute("#status", "data-encoded") == "false"
        assert np.array_equal(page_labels(page), api_labels(scenes[2].image, "zebra, grass"))
        # an upload
        Image.fromarray(scenes[4].image).save(tmp_path / "up.png")
        second = page.evaluate("document.body.dataset.ready")
        page.set_input_files("#upload", str(tmp_path / "up.png"))
        page.wait_for_timeout(300)
        page.click("#submit")
        page.wait_for_function(f"document.body.dataset.ready !== '{second}'")
        assert np.array_equal(page_labels(page), api_labels(scenes[4].image, "zebra, grass"))
        href = page.get_attribute("#downloads a", "href")
        assert href.endswith("/coco")
        # a bad request is one line on the page, no crash
        page.fill("#classes", " , ")
        page.click("#submit")
        page.wait_for_function("document.getElementById('error').textContent.length > 0")
        assert "at least one class" in page.text_content("#error")
        browser.close()
