"""What the web demo does, as a plain Python object (the FastAPI app in `serve.app` only moves JSON).

A `DemoSession` keeps one predictor per (model, settings) and remembers which image each one encoded, so
that a new vocabulary on the same image reuses the cached image features (`encoded: False` in the result)
and only the text side runs. Results are kept (the last few) for the export downloads.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..data.image_inputs import as_rgb_uint8
from ..errors import SettingsError
from ..export.formats import Labelled, coco_semantic, label_studio_tasks
from ..render import label_palette, labelled_heatmap, legible, overlay_with_legend
from ..vocab import Vocabulary

METHODS = ("maskclip", "sclip", "clearclip", "naclip")
MAX_IMAGE_PIXELS = 16_000_000  # uploads larger than this are refused (a demo, not a batch job)


@dataclass(frozen=True)
class Request:
    """One query: an image (bytes of an upload, or a bundled example's index) and the vocabulary and options."""

    classes: str
    image: bytes | None = None
    example: int | None = None
    background: str = ""
    model: str = "toy-rn"
    method: str = "maskclip"
    threshold: float | None = None
    ks: bool = False
    pd: bool = False
    slide: bool = False


def png_data_url(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@dataclass
class DemoSession:
    models: tuple[str, ...] = ("toy-rn", "toy-vit")
    device: str = "cpu"
    keep: int = 16
    _predictors: dict = field(default_factory=dict)
    _encoded: dict = field(default_factory=dict)
    _examples: list = field(default_factory=list)
    results: OrderedDict = field(default_factory=OrderedDict)

    def examples(self) -> list[np.ndarray]:
        """Held-out toy-world scenes, the offline examples (rendered once per session)."""
        if not self._examples:
            from ..toyworld.evaluate import heldout_scenes

            self._examples.extend(s.image for s in heldout_scenes(6, seed=0))
        return self._examples

    def predictor(self, req: Request):
        """The predictor of (model, method, KS, PD, slide), built once."""
        from ..dense.methods import method_preset
        from ..predict import load_predictor

        if req.model not in self.models:
            raise SettingsError(f"model {req.model!r} is not served here; choose one of {', '.join(self.models)}")
        if req.method not in METHODS:
            raise SettingsError(f"method {req.method!r}: choose one of {', '.join(METHODS)}")
        key = (req.model, req.method, req.ks, req.pd, req.slide)
        if key not in self._predictors:
            over = {"ks": req.ks, "pd": req.pd, **({"mode": "slide"} if req.slide else {})}
            base = method_preset(req.method).config() if req.method != "maskclip" else None
            try:
                self._predictors[key] = load_predictor(req.model, self.device, None, base, over)
            except ValueError as err:  # e.g. a successor's read-out on a ResNet CLIP
                raise SettingsError(str(err)) from None
        return key, self._predictors[key]

    def image(self, req: Request) -> np.ndarray:
        if req.example is not None:
            ex = self.examples()
            if not 0 <= req.example < len(ex):
                raise SettingsError(f"example {req.example} does not exist (0..{len(ex) - 1})")
            return ex[req.example]
        if not req.image:
            raise SettingsError("give an image (upload) or pick an example")
        try:
            im = Image.open(io.BytesIO(req.image))
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise SettingsError(f"image of {im.width}x{im.height} pixels is larger than this demo takes")
            return as_rgb_uint8(np.asarray(im.convert("RGB")))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise SettingsError(f"the upload is not an image this demo reads: {err}") from None

    def run(self, req: Request) -> dict:
        """Segment; returns the overlay, label map, legend and heat maps as data URLs, and an id for exports."""
        classes = _names(req.classes)
        if not classes:
            raise SettingsError("type at least one class name, e.g. 'zebra, grass, sky'")
        vocab = Vocabulary.of(classes, _names(req.background) or None, req.threshold)
        rgb = self.image(req)
        key, pred = self.predictor(req)
        digest = hashlib.sha256(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()
        encoded = self._encoded.get(key) != digest
        if encoded:
            pred.set_image(rgb)
            self._encoded[key] = digest
        out = pred.predict(vocab, return_probs=True)
        colors = label_palette(out.classes)
        rid = hashlib.sha256(f"{digest}{key}{vocab.to_json()}".encode()).hexdigest()[:16]
        probs = np.asarray(out.probs.cpu() if hasattr(out.probs, "cpu") else out.probs, dtype=np.float32)
        self.results[rid] = Labelled(f"demo-{rid}", "upload" if req.image else f"example-{req.example}",
                                     out.labels.astype(np.int64), tuple(out.classes), probs)
        while len(self.results) > self.keep:
            self.results.popitem(last=False)
        present = sorted(int(k) for k in np.unique(out.labels))
        return {"id": rid, "encoded": encoded, "classes": out.classes, "size": list(out.labels.shape),
                "overlay": png_data_url(overlay_with_legend(rgb, out.labels, out.classes, colors)),
                "image": png_data_url(legible(rgb)),
                "labels": png_data_url(out.labels.astype(np.uint8 if len(out.classes) <= 256 else np.uint16)),
                "legend": [{"name": out.classes[k], "color": [int(v) for v in colors[k]],
                            "fraction": float((out.labels == k).mean())} for k in present],
                "heatmaps": [{"name": out.classes[k], "png": png_data_url(labelled_heatmap(rgb, probs[k],
                                                                                         out.classes[k]))}
                             for k in range(min(len(out.classes), probs.shape[0]))]}

    def export(self, rid: str, fmt: str) -> tuple[bytes, str, str]:
        """(file bytes, media type, file name) of a kept result in an export format."""
        item = self.results.get(rid)
        if item is None:
            raise SettingsError(f"result {rid!r} is gone (only the last {self.keep} are kept); segment again")
        import json

        if fmt == "coco":
            return json.dumps(coco_semantic([item], item.classes)).encode(), "application/json", f"{rid}-coco.json"
        if fmt == "labelstudio":
            body = json.dumps(label_studio_tasks([item], "maskclip-demo"))
            return body.encode(), "application/json", f"{rid}-labelstudio.json"
        if fmt == "cvat":
            from ..export.writer import cvat_zip

            return cvat_zip([item], item.classes, label_palette(item.classes)), "application/zip", f"{rid}-cvat.zip"
        if fmt == "png":
            buf = io.BytesIO()
            Image.fromarray(item.labels.astype(np.uint8)).save(buf, format="PNG")
            return buf.getvalue(), "image/png", f"{rid}-labels.png"
        raise SettingsError(f"export format {fmt!r}: choose coco, labelstudio, cvat or png")


__all__ = ["DemoSession", "METHODS", "Request", "png_data_url"]
