"""Tokenizer: OpenAI's ids, context handling, and OpenAI's (ftfy + html) text cleaning."""

from __future__ import annotations

import html
import importlib.resources
import re

import pytest
import torch

from maskclip.clip.tokenizer import EOT, SOT, PromptTooLongError, clean, encode, tokenize

# OpenAI ids (facts section 1)
VECTORS = {
    "a diagram": [49406, 320, 22697, 49407],
    "a dog": [49406, 320, 1929, 49407],
    "a cat": [49406, 320, 2368, 49407],
}


@pytest.mark.parametrize("text,ids", list(VECTORS.items()))
def test_openai_test_vectors(text, ids):
    out = tokenize(text)
    assert out.shape == (1, 77) and out.dtype == torch.long
    assert out[0, : len(ids)].tolist() == ids
    assert (out[0, len(ids):] == 0).all()  # zero padding


def test_batch_layout():
    out = tokenize(list(VECTORS))
    assert out.shape == (3, 77)
    assert out[:, 0].eq(SOT).all()
    assert out.argmax(dim=-1).tolist() == [3, 3, 3]  # EOT is the highest id, where the features are read
    assert torch.equal(tokenize("a dog"), tokenize(["a dog"]))
    assert tokenize([]).shape == (0, 77)


def test_case_and_whitespace_are_normalised():
    assert torch.equal(tokenize("  A \t DOG\n"), tokenize("a dog"))


def test_custom_context_length():
    out = tokenize("a dog", context_length=6)
    assert out.tolist() == [[SOT, 320, 1929, EOT, 0, 0]]


def test_prompt_too_long_names_the_prompt():
    long_prompt = "a photo of " + " and ".join(["a dog"] * 30)
    with pytest.raises(PromptTooLongError, match=re.escape(repr(long_prompt))):
        tokenize(["a cat", long_prompt])
    assert issubclass(PromptTooLongError, ValueError)
    # exactly filling the context is fine: SOT + 75 ids + EOT
    n = len(encode("dog " * 75))
    assert n == 75
    assert tokenize("dog " * 75)[0, -1].item() == EOT
    with pytest.raises(PromptTooLongError):
        tokenize("dog " * 76)


def test_truncate_keeps_sot_and_ends_in_eot():
    long_prompt = "a photo of " + " and ".join(["a dog"] * 30)
    out = tokenize(long_prompt, truncate=True)
    full = tokenize(long_prompt, context_length=200)
    assert out.shape == (1, 77)
    assert out[0, 0].item() == SOT and out[0, -1].item() == EOT
    assert torch.equal(out[0, :76], full[0, :76])  # the kept prefix is unchanged
    assert (out[0] == EOT).sum() == 1


# Inputs and what OpenAI's cleaning (ftfy.fix_text, then html.unescape twice, then whitespace collapse)
# turns them into, as measured with ftfy 6.3.1.
CLEANING = [
    ("it\u2019s a \u201cdog\u201d", "it's a \"dog\""),
    ("\ufb01sh", "fish"),
    ("\uff26\uff55\uff4c\uff4c\u3000width", "Full width"),
    ("cafe\u0301", "caf\u00e9"),
    ("a cat &amp; a dog", "a cat & a dog"),
    ("&amp;amp;", "&"),
    ("\u0132ssel", "IJssel"),
    ("na\u00efve\u00a0caf\u00e9", "na\u00efve caf\u00e9"),
    ("\uff76\uff80\uff76\uff85", "\u30ab\u30bf\u30ab\u30ca"),
]


@pytest.mark.parametrize("raw,cleaned", CLEANING)
def test_openai_text_cleaning(raw, cleaned):
    assert clean(raw) == cleaned
    assert torch.equal(tokenize(raw), tokenize(cleaned))


def test_cleaning_matches_ftfy_when_installed():
    ftfy = pytest.importorskip("ftfy", reason="ftfy is not a dependency; install it to compare against it")

    def openai_clean(text: str) -> str:
        text = html.unescape(html.unescape(ftfy.fix_text(text)))
        return re.sub(r"\s+", " ", text.strip()).strip()

    texts = [raw for raw, _ in CLEANING]
    texts += ["<b>&amp;</b>", "\u0149 test", "\u201elow\u201c", "\uff21\uff22\uff23\uff01"]
    assets = importlib.resources.files("maskclip.assets")
    texts += assets.joinpath("prompt-templates-85.txt").read_text(encoding="utf-8").splitlines()
    for f in assets.joinpath("class_names").iterdir():
        texts += f.read_text(encoding="utf-8").splitlines()
    for t in texts:
        assert clean(t) == openai_clean(t), t


def _hf_tokenizer():
    transformers = pytest.importorskip("transformers")
    for name in ("openai/clip-vit-base-patch32", "openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14"):
        try:
            tok = transformers.CLIPTokenizer.from_pretrained(name, local_files_only=True)
        except Exception:  # noqa: BLE001 - any failure means: no local copy
            continue
        # transformers 5 quietly returns an empty tokenizer (vocab of 2) when no files are found
        if len(tok) >= 49408:
            return tok
    pytest.skip("no Hugging Face CLIP vocabulary in the local cache (it cannot be downloaded here)")


def test_matches_hf_clip_tokenizer_when_vocab_is_cached():
    tok = _hf_tokenizer()
    texts = list(VECTORS) + ["a photo of a {}.".format(c) for c in ("bicycle", "traffic light", "potted plant")]
    assets = importlib.resources.files("maskclip.assets")
    texts += [t.format("aeroplane") for t in assets.joinpath("prompt-templates-85.txt").read_text().splitlines()]
    for t in texts:
        hf_ids = tok(t)["input_ids"]
        ours = tokenize(t)[0]
        assert ours[: len(hf_ids)].tolist() == hf_ids, t
