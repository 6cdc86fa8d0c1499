"""The web demo's HTTP side: FastAPI routes over a `DemoSession` (one page, JSON in and out, offline).

FastAPI + uvicorn rather than Gradio: two small dependencies, a page we control (no CDN, no front-end
build, works offline), and the library does the work (`session.py`), so the page is one HTML file.
"""

from __future__ import annotations

import base64
import threading
from importlib import resources

from ..errors import SettingsError
from .session import METHODS, DemoSession, Request, png_data_url


def _image_bytes(data_url: str | None) -> bytes | None:
    if not data_url:
        return None
    try:
        return base64.b64decode(data_url.split(",", 1)[-1], validate=False)
    except ValueError:
        raise SettingsError("the upload could not be decoded (expected a data URL)") from None


def create_app(session: DemoSession):
    """The FastAPI application serving `session`."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    app = FastAPI(title="maskclip demo", docs_url=None, redoc_url=None)
    lock = threading.Lock()  # one query at a time: the predictors and their caches are shared
    page = resources.files("maskclip.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.exception_handler(SettingsError)
    def _settings_error(_request, err: SettingsError):
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/config")
    def config() -> dict:
        return {"models": list(session.models), "methods": list(METHODS),
                "examples": [png_data_url(im) for im in session.examples()]}

    @app.post("/api/segment")
    def segment(body: dict) -> dict:
        try:
            threshold = float(body["threshold"]) if body.get("threshold") not in (None, "") else None
            example = int(body["example"]) if body.get("example") not in (None, "") else None
        except (TypeError, ValueError):
            raise SettingsError("threshold must be a number in 0..1 and example an index") from None
        req = Request(classes=str(body.get("classes", "")), image=_image_bytes(body.get("image")),
                      example=example, background=str(body.get("background", "")),
                      model=str(body.get("model", session.models[0])), method=str(body.get("method", "maskclip")),
                      threshold=threshold, ks=bool(body.get("ks")), pd=bool(body.get("pd")),
                      slide=bool(body.get("slide")))
        with lock:
            return session.run(req)

    @app.get("/api/export/{rid}/{fmt}")
    def export(rid: str, fmt: str) -> Response:
        body, media, name = session.export(rid, fmt)
        return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})

    return app


__all__ = ["create_app"]
