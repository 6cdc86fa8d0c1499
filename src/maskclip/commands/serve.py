"""`maskclip serve`: the local web demo (an optional extra: pip install "maskclip[demo]")."""

from __future__ import annotations

import argparse

from ..errors import SettingsError

EPILOG = """The page: pick a bundled example (held-out toy-world scenes) or upload an image, type the classes and a
background group, choose model, method and options (threshold, KS, PD, sliding windows) and see the overlay
with a legend and one heat map per class. A new vocabulary on the same image reuses the image features
(only the text side runs). Downloads: COCO JSON, Label Studio tasks, the label PNG.

examples:
  maskclip serve                                   # http://127.0.0.1:7860, the bundled toy CLIPs, offline
  maskclip serve --models ViT-B/16,toy-rn --port 8000
  maskclip serve --host 0.0.0.0                    # reachable from other machines (no authentication!)"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="a local web demo: type classes, see masks (needs the [demo] extra)",
                       description="Serve the interactive demo page (FastAPI + uvicorn).", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="toy-rn,toy-vit",
                   help="comma-separated CLIP names or checkpoint paths offered on the page (default toy-rn,toy-vit: "
                        "bundled, offline)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise SettingsError('maskclip serve needs the demo extra: pip install "maskclip[demo]"') from None
    from ..serve.app import create_app
    from ..serve.session import DemoSession

    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if not models:
        raise SettingsError("--models is empty; give at least one CLIP name, e.g. toy-rn")
    print(f"maskclip demo on http://{args.host}:{args.port}  (models: {', '.join(models)}; Ctrl-C stops)")
    uvicorn.run(create_app(DemoSession(models, args.device)), host=args.host, port=args.port, log_level="warning")
    return 0
