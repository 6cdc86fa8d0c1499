"""CLIP's byte-pair tokenizer with OpenAI's token ids (via instant-clip-tokenizer's bundled vocabulary)."""

from __future__ import annotations

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


def encode(text: str) -> list[int]:
    """BPE ids of `text` without the start/end tokens (lower-cased and whitespace-cleaned as OpenAI does)."""
    return list(_tokenizer().encode(" ".join(text.split()).lower()))


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
