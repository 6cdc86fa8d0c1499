"""CLIP's byte-pair tokenizer with OpenAI's token ids (via instant-clip-tokenizer's bundled vocabulary)."""

from __future__ import annotations

import html
import re
import unicodedata
from functools import lru_cache

import torch

SOT, EOT = 49406, 49407
CONTEXT_LENGTH = 77


@lru_cache(maxsize=1)
def _tokenizer():
    from instant_clip_tokenizer import Tokenizer

    return Tokenizer()


class PromptTooLongError(ValueError):
    """A prompt does not fit in the text encoder's context."""


# OpenAI cleans text with ftfy.fix_text before BPE. Its typographic fixes are reproduced here with the
# standard library (ftfy's own tables): Latin ligatures and digraphs, half/full-width forms, curly quotes,
# NFC. ftfy's mojibake repair and control-character removal are not (they need its heuristics).
_LIGATURES = {ord(k): v for k, v in {
    "Ĳ": "IJ", "ĳ": "ij", "ŉ": "ʼn", "Ǳ": "DZ", "ǲ": "Dz", "ǳ": "dz", "Ǆ": "DŽ", "ǅ": "Dž", "ǆ": "dž",
    "Ǉ": "LJ", "ǈ": "Lj", "ǉ": "lj", "Ǌ": "NJ", "ǋ": "Nj", "ǌ": "nj",
    "ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "ſt", "ﬆ": "st"}.items()}
_WIDTH = {0x3000: " ", **{i: unicodedata.normalize("NFKC", chr(i)) for i in range(0xFF01, 0xFFF0)
                         if unicodedata.normalize("NFKC", chr(i)) != chr(i)}}
_SINGLE_QUOTES = re.compile("[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTES = re.compile("[\u201c-\u201f]")


def clean(text: str) -> str:
    """OpenAI's text cleaning: ftfy's typographic fixes, HTML entities unescaped twice, whitespace collapsed."""
    if "<" not in text:  # ftfy unescapes entities itself unless the text looks like HTML
        text = html.unescape(text)
    text = text.translate(_LIGATURES).translate(_WIDTH)
    text = _SINGLE_QUOTES.sub("'", _DOUBLE_QUOTES.sub('"', text))
    text = unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text))
    return " ".join(text.split())


def encode(text: str) -> list[int]:
    """BPE ids of `text` without the start/end tokens (cleaned and lower-cased as OpenAI does)."""
    return list(_tokenizer().encode(clean(text).lower()))


def tokenize(texts: str | list[str], context_length: int = CONTEXT_LENGTH,
             truncate: bool = False) -> torch.Tensor:
    """Token ids [N, context_length]: SOT, BPE ids, EOT, zero padding.

    A text longer than the context raises `PromptTooLongError` naming it, unless `truncate`
    (then the last kept token is EOT, as in openai/CLIP).
    """
    if isinstance(texts, str):
        texts = [texts]
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [SOT, *encode(text), EOT]
        if len(ids) > context_length:
            if not truncate:
                raise PromptTooLongError(
                    f"prompt {text!r} is {len(ids)} tokens, more than the context length {context_length}; "
                    "shorten the class name or template")
            ids = ids[:context_length]
            ids[-1] = EOT
        out[i, : len(ids)] = torch.tensor(ids)
    return out
