"""`maskclip export-onnx`: a method's modified image encoder as an ONNX file that runs without torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..dense.config import settings_dict
from ..errors import SettingsError
from ..io.atomic import write_json
from ..normalization import NORMALIZATIONS
from ..predict import is_plus_checkpoint, load_predictor, predictor_identity
from .common import add_maskclip_options, add_model_options, method_base, overrides_from_args, templates_from_arg

EPILOG = """examples:
  maskclip export-onnx --model ViT-B/16 --out vitb16-maskclip.onnx
  maskclip export-onnx --model ViT-B/16 --method sclip --window 224 --out vitb16-sclip.onnx   (224 x 224 only)
  maskclip export-onnx --model toy-rn --ks --out toy-rn.onnx

writes OUT (the graph: input "windows" float32 [B, 3, H, W], normalised as OUT.json says; output "feats"
[B, C, h, w], L2-normalised dense features in CLIP's joint space, and "keys" with --ks) and OUT.json
(model, settings, window, normalisation). Cosine logits against text embeddings follow by one matmul:
    import onnxruntime as ort; s = ort.InferenceSession("vitb16-maskclip.onnx")
    feats = s.run(None, {"windows": x})[0]        # x: np.float32 [B, 3, H, W]
Nothing existing is overwritten. Needs: pip install "maskclip[onnx]"."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-onnx", help="write a method's modified image encoder as ONNX (runs without torch)",
                       description="The dense image encoder of MaskCLIP or a successor (its read-out, keys for key "
                                   "smoothing, fp32) as an ONNX graph for any batch and window size.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="the .onnx file to write (an existing file is refused)")
    p.add_argument("--window", type=int, nargs="+", default=None, metavar="PX",
                   help="fix the window height (and width) in pixels the graph takes; default: any size (a ViT's in "
                        "multiples of its patch size)")
    add_model_options(p)
    add_maskclip_options(p)
    p.set_defaults(func=run)


def window_of(args: argparse.Namespace) -> tuple[int, int] | None:
    w = args.window
    if w is None:
        return None
    if len(w) not in (1, 2) or min(w) < 16 or max(w) > 4096:
        raise SettingsError(f"--window {' '.join(map(str, w))}: one or two sizes in 16..4096 pixels")
    return (w[0], w[-1])


def run(args: argparse.Namespace) -> int:
    from ..onnx_backend import export_onnx, require_onnx

    require_onnx()
    out: Path = args.out
    meta_path = out.with_name(out.name + ".json")
    for path in (out, meta_path):
        if path.exists():
            raise SettingsError(f"{path} exists; choose another --out (an existing file is never overwritten)")
    if is_plus_checkpoint(args.model):
        raise SettingsError(f"--model {args.model}: a MaskCLIP+ network is not a CLIP encoder; export-onnx takes "
                            "a CLIP")
    base, method_templates = method_base(args)
    overrides = {**overrides_from_args(args), "backend": "torch"}
    templates = templates_from_arg(args.templates) or method_templates
    predictor = load_predictor(args.weights or args.model, "cpu", templates, base, overrides,
                               quick_gelu=not args.gelu, random_init=args.random_weights)
    cfg = predictor.config
    window = window_of(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(predictor.model, cfg, window, out)
    mean, std = NORMALIZATIONS[cfg.normalize]
    write_json(meta_path, {**predictor_identity(predictor), "settings": settings_dict(cfg),
                           "window": list(window) if window else "any",
                           "input": {"name": "windows", "layout": "B,3,H,W", "pixels": "RGB 0-255",
                                     "normalise": {"mean": [255 * m for m in mean], "std": [255 * s for s in std]}},
                           "outputs": ["feats", "keys"] if cfg.ks else ["feats"]})
    size = f"{window[0]}x{window[1]}" if window else "any"
    print(f"wrote {out} ({out.stat().st_size / 2 ** 20:.1f} MiB; window {size}) and {meta_path}")
    return 0
