"""The text classifier: CLIP text embeddings of class names, averaged over prompt templates.

For each name: encode every template, L2-normalise each, average, L2-normalise again (the paper,
following ViLD, with 85 templates). A class may have several names (synonyms); its score is the max
over its names, so the classifier keeps one row per name and a map from names to classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import torch
import torch.nn.functional as F

from ..clip.model import CLIP
from ..clip.tokenizer import PromptTooLongError, tokenize
from ..device import autocast
from ..io.cache import TextCache
from ..vocab import Vocabulary

SINGLE_TEMPLATE = "a photo of a {}."


@lru_cache(maxsize=1)
def templates_85() -> tuple[str, ...]:
    """The 85 templates of the paper (ViLD's list), packaged with maskclip."""
    text = resources.files("maskclip.assets").joinpath("prompt-templates-85.txt").read_text()
    return tuple(line for line in text.splitlines() if line.strip())


@lru_cache(maxsize=1)
def templates_80() -> tuple[str, ...]:
    """OpenAI's 80 ImageNet templates, what SCLIP, ClearCLIP and NACLIP use, packaged with maskclip."""
    text = resources.files("maskclip.assets").joinpath("prompt-templates-80.txt").read_text()
    return tuple(line for line in text.splitlines() if line.strip())


def resolve_templates(templates: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """'85' (the paper's default), '80' (OpenAI's ImageNet templates: the successors'), 'single'
    ('a photo of a {}.') or an explicit list containing '{}'."""
    if templates == "85":
        return templates_85()
    if templates == "80":
        return templates_80()
    if templates == "single":
        return (SINGLE_TEMPLATE,)
    if isinstance(templates, str):
        templates = [templates]
    bad = [t for t in templates if "{}" not in t]
    if bad or not templates:
        raise ValueError(f"templates must each contain '{{}}' for the class name; got {bad or 'an empty list'}")
    return tuple(templates)


@dataclass
class TextClassifier:
    """L2-normalised name embeddings [N_names, C] and, for each name, the index of its class."""

    embeddings: torch.Tensor
    class_of_name: torch.Tensor
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "TextClassifier":
        return TextClassifier(self.embeddings.to(device, dtype or self.embeddings.dtype),
                              self.class_of_name.to(device), self.class_names)

    def subset(self, class_ids: list[int]) -> "TextClassifier":
        """The classifier of the listed classes only (in that order): e.g. a zero-shot teacher's unseen classes,
        so that softmax-based steps (PD, KS) see only them."""
        ids = torch.as_tensor(list(class_ids), dtype=torch.long)
        if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= self.num_classes:
            raise ValueError(f"class ids {list(class_ids)} are not a non-empty subset of {self.num_classes} classes")
        remap = torch.full((self.num_classes,), -1, dtype=torch.long)
        remap[ids] = torch.arange(len(ids))
        new = remap[self.class_of_name.cpu()]
        keep = new >= 0
        return TextClassifier(self.embeddings[keep.to(self.embeddings.device)], new[keep].to(self.class_of_name.device),
                              [self.class_names[i] for i in ids.tolist()])

    def class_logits(self, name_logits: torch.Tensor) -> torch.Tensor:
        """Max over each class's names: [B, N_names, ...] -> [B, K, ...]."""
        if name_logits.shape[1] == self.num_classes and bool(
                (self.class_of_name == torch.arange(self.num_classes, device=self.class_of_name.device)).all()):
            return name_logits
        out = name_logits.new_full((name_logits.shape[0], self.num_classes, *name_logits.shape[2:]), float("-inf"))
        idx = self.class_of_name.to(name_logits.device).view(1, -1, *([1] * (name_logits.dim() - 2)))
        return out.scatter_reduce(1, idx.expand_as(name_logits), name_logits, reduce="amax")


@torch.no_grad()
def encode_names(model: CLIP, names: list[str], templates: tuple[str, ...], batch_size: int = 256,
                 trim: bool = True, precision: str | None = None) -> torch.Tensor:
    """[len(names), C] L2-normalised template-averaged embeddings.

    Prompts are sorted by token length before batching, so that trimming each batch to its longest
    prompt (exact under the causal mask) saves most of the 77-token context. `precision` ("bf16", "fp16"):
    the text encoder under autocast (the engine's resolved policy); the normalisation and the template average
    stay fp32.
    """
    device = next(model.parameters()).device
    per_name = []
    for name in names:
        try:
            per_name.append(tokenize([t.format(name) for t in templates], context_length=model.context_length))
        except PromptTooLongError as err:
            raise PromptTooLongError(f"class name {name!r} does not fit in a prompt template: {err}") from None
    tokens = torch.cat(per_name)
    lengths = tokens.argmax(dim=-1)
    order = torch.argsort(lengths)
    feats = torch.empty(len(tokens), model.embed_dim)
    for start in range(0, len(tokens), batch_size):
        idx = order[start:start + batch_size]
        with autocast(device, precision):
            out = model.encode_text(tokens[idx].to(device), trim=trim).float()
        feats[idx] = F.normalize(out, dim=-1).cpu()
    feats = feats.reshape(len(names), len(templates), -1).mean(dim=1)
    return F.normalize(feats, dim=-1)


def build_text_classifier(model: CLIP, classes: list[str | list[str]] | Vocabulary, templates: str | list[str] = "85",
                          cache: TextCache | None = None, precision: str | None = None) -> TextClassifier:
    """Text classifier for `classes` (each a name or a list of synonyms; a Vocabulary: its scored classes,
    the background group last).

    With a `cache` (maskclip.io.cache.TextCache of the model's weights and this precision) the embeddings are
    read from and written to disk per (weights, precision, names, templates); without one nothing touches the
    disk. `precision`: the text encoder's autocast dtype (None: fp32).
    """
    classes = Vocabulary.of(classes).scored
    tmpl = resolve_templates(templates)
    names = [n for c in classes for n in c]
    class_of_name = torch.tensor([i for i, c in enumerate(classes) for _ in c])
    if cache is None:
        return TextClassifier(encode_names(model, names, tmpl, precision=precision), class_of_name,
                              [c[0] for c in classes])
    found = cache.lookup(names, tmpl, model.embed_dim)
    missing = [n for n in dict.fromkeys(names) if n not in found]  # only the names never embedded before
    if missing:
        new = dict(zip(missing, encode_names(model, missing, tmpl, precision=precision).cpu()))
        cache.store(new, tmpl)
        found.update(new)
    device = next(model.parameters()).device
    emb = torch.stack([found[n] for n in names]).to(device)
    return TextClassifier(emb, class_of_name, [c[0] for c in classes])
