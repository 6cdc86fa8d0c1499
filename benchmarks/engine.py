"""Speed of the MaskCLIP engine against a straightforward implementation, measured in the same run.

    python benchmarks/engine.py                 # ViT-B/16 architecture, random weights, CPU
    python benchmarks/engine.py --classes 171   # the full COCO-Stuff vocabulary (slow reference!)

Rows (each prints ours, the reference, and the ratio):
  text      171-class-style classifier x 85 templates: sorted + trimmed batches vs every prompt at context 77
  slide     sliding windows: batched windows and a last block that skips q/attention vs a per-window loop
            running the full last block
  requery   a cached image asked again with a new 20-class vocabulary vs the first call (image encoder +
            classifier); the text classifiers of both vocabularies are warm in the cache, as in an interactive
            session, and the cold-text variant is printed too
  autocast  bf16 autocast vs fp32 on the image encoder, with the fraction of pixels whose label changes

Weights are random (no real CLIP can be downloaded here): timings depend only on the architecture.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from maskclip.clip.tokenizer import tokenize
from maskclip.clip.weights import ARCHITECTURES, load_weights, random_weights
from maskclip.data.classes import load_class_names
from maskclip.dense import MaskCLIP, MaskCLIPPredictor, build_text_classifier
from maskclip.dense.text import TextClassifier, templates_85


def timeit(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


@torch.no_grad()
def naive_text(model, names: list[str], templates) -> torch.Tensor:
    """Per class: all templates at the full 77-token context, as openai/CLIP's zero-shot notebook does."""
    out = []
    for name in names:
        e = model.encode_text(tokenize([t.format(name) for t in templates]), trim=False)
        out.append(F.normalize(F.normalize(e, dim=-1).mean(0), dim=-1))
    return torch.stack(out)


@torch.no_grad()
def naive_slide(model, image: torch.Tensor, clf: TextClassifier, crop: int, stride: int) -> torch.Tensor:
    """One window at a time; the last block computes q, k, v and the attention it then throws away."""
    from maskclip.tiling import slide_windows

    v = model.visual
    h, w = image.shape[-2:]
    acc = torch.zeros(clf.num_classes, h, w)
    cnt = torch.zeros(1, h, w)
    for (y1, y2, x1, x2) in slide_windows(h, w, crop, stride):
        x, grid = v.tokens(image[..., y1:y2, x1:x2])
        for blk in v.transformer.resblocks[:-1]:
            x = blk(x)
        last = v.transformer.resblocks[-1]
        y = last.ln_1(x)
        q, k, val = F.linear(y, last.attn.in_proj_weight, last.attn.in_proj_bias).chunk(3, dim=-1)
        _ = last.attention(y)  # the full attention, as an unmodified block would compute it
        val = last.attn.out_proj(val) + x
        val = val + last.mlp(last.ln_2(val))
        feats = F.normalize(v.ln_post(val[:, 1:]) @ v.proj, dim=-1)[0]
        logits = (feats @ clf.embeddings.T).T.reshape(-1, *grid)
        up = F.interpolate(logits[None], size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)[0]
        acc[:, y1:y2, x1:x2] += up
        cnt[:, y1:y2, x1:x2] += 1
    return acc / cnt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B/16")
    ap.add_argument("--classes", type=int, default=20, help="how many COCO-Stuff classes for the text row")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, info = random_weights(args.model) if args.model in ARCHITECTURES else load_weights(args.model)
    tmpl = templates_85()
    names = [c[0] for c in load_class_names("coco_stuff171")][: args.classes]
    print(f"model {info.name}, torch threads {torch.get_num_threads()}")
    print(f"{'row':10s} {'ours (s)':>10s} {'reference (s)':>14s} {'speed-up':>9s}  note")

    t_ours, ours = timeit(lambda: build_text_classifier(model, names, "85"))
    t_ref, ref = timeit(lambda: naive_text(model, names, tmpl))
    diff = (ours.embeddings - ref).abs().max().item()
    print(f"{'text':10s} {t_ours:10.2f} {t_ref:14.2f} {t_ref / t_ours:8.1f}x  {len(names)} classes x 85 templates, "
          f"max |diff| {diff:.1e}; 171 classes extrapolate to {t_ours * 171 / len(names) / 60:.1f} vs "
          f"{t_ref * 171 / len(names) / 60:.1f} min")

    rng = np.random.default_rng(0)
    img = (rng.random((448, 672, 3)) * 255).astype(np.uint8)
    clf = TextClassifier(ref, torch.arange(len(names)), names)
    engine = MaskCLIP(model, mode="slide", resize="none", crop=224, step=112)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    from maskclip.dense.preprocess import normalize

    xn = normalize(x, "imagenet")
    t_ours, s_ours = timeit(lambda: engine.scale_scores(engine.encode(img).scales[0], clf))
    t_ref, s_ref = timeit(lambda: naive_slide(model, xn, clf, 224, 112))
    agree = (s_ours.argmax(0) == s_ref.argmax(0)).float().mean().item()
    print(f"{'slide':10s} {t_ours:10.2f} {t_ref:14.2f} {t_ref / t_ours:8.1f}x  448x672, 15 windows of 224, "
          f"label agreement {agree:.4f}")

    vocab_a = names[:20]
    vocab_b = [c[0] for c in load_class_names("ade150")][:20]
    p = MaskCLIPPredictor(model, device="cpu", templates="85")
    p.classifier(vocab_a), p.classifier(vocab_b)  # warm text cache
    img2 = img[:375, :500]
    t_first, _ = timeit(lambda: (p.set_image(img2), p.predict(vocab_a, return_probs=False)))
    t_again, _ = timeit(lambda: p.predict(vocab_b, return_probs=False), repeat=3)
    print(f"{'requery':10s} {t_again:10.3f} {t_first:14.3f} {t_first / t_again:8.1f}x  375x500 image, new 20-class "
          "vocabulary, text classifier warm")
    cold = MaskCLIPPredictor(model, device="cpu", templates="single")
    cold.set_image(img2)
    t_cold, _ = timeit(lambda: cold.predict([f"{n} thing" for n in vocab_b], return_probs=False))
    print(f"{'':10s} {t_cold:10.3f} {'':14s} {t_first / t_cold:8.1f}x  same, text cold with a single template")

    e32 = MaskCLIP(model, size=(448, 448))
    e16 = MaskCLIP(model, size=(448, 448), dtype="bf16")
    clf_a = p.classifier(vocab_a)
    t32, (l32, _) = timeit(lambda: e32.segment(img2, clf_a, return_probs=False))
    t16, (l16, _) = timeit(lambda: e16.segment(img2, clf_a, return_probs=False))
    changed = (l32 != l16).float().mean().item()
    print(f"{'autocast':10s} {t16:10.2f} {t32:14.2f} {t32 / t16:8.1f}x  bf16 vs fp32 whole image; "
          f"{changed:.2%} of pixels change label (random weights: near-tied classes)")


if __name__ == "__main__":
    main()
