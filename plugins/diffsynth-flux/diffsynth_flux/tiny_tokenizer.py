"""Offline CLIP and T5 tokenizers for the tiny preset.

The real ones (``tokenizer/`` and ``tokenizer_2/`` of FLUX.1) cannot be downloaded in tests.
CLIP's is a byte-level BPE with ``</w>`` word ends: a small vocabulary and merges are built
here for the caption words, and ``transformers.CLIPTokenizer`` wraps them in CLIP's own
normalizer and pre-tokenizer; every byte is in the vocabulary, so no text maps to ``<unk>``.
T5's is a SentencePiece unigram model: a small vocabulary of whole words (``▁red``), their
pieces and single characters is written by hand with scores that prefer whole words, and
wrapped as ``transformers.T5TokenizerFast`` (T5's Metaspace pre-tokenizer). Both are saved with
``save_pretrained`` and read back by ``from_pretrained``, by us and by diffusers.
"""

from __future__ import annotations

import itertools
import re
import string
from typing import Any

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black", "pink", "gray")
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "stripe", "diamond")
PLACES = ("on a plain background", "in the center", "at the top left", "near the bottom")
EXTRA = (
    "A photo of a cat sitting on a wooden table next to a cup of coffee, soft morning light.",
    "A watercolor painting of mountains and a lake at sunset, with birds flying over the water.",
    "An old street in the rain at night, neon signs, reflections, people walking with umbrellas.",
    "Blurry, low quality, distorted, ugly, watermark, signature, a test picture.",
)
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
CLIP_MAX_LENGTH = 77


def caption_corpus() -> list[str]:
    """Generated captions: every colour x shape x place, deterministic order."""
    return [
        f"a {c} {s} {p}, a {b} background"
        for (c, s, p), b in zip(
            itertools.product(COLOURS, SHAPES, PLACES), itertools.cycle(COLOURS[::-1])
        )
    ] + list(EXTRA)


def clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style BPE (``</w>`` word ends) for the caption words; (vocab, merges).

    Built, not trained: the tokenizers library's BPE trainer breaks ties in a hash order, so
    two trainings differ. Each word gets the chain of merges that spells it from the left
    (``r e -> re``, ``re d</w> -> red</w>``); every byte is in the vocabulary alone and as a
    word end, so any text tokenizes (into bytes where no word matches).
    """
    from tokenizers import pre_tokenizers

    vocab = {CLIP_BOS: 0, CLIP_EOS: 1}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        for token in (char, char + "</w>"):
            vocab.setdefault(token, len(vocab))
    words = sorted({w for text in caption_corpus() for w in re.findall(r"[a-z]+", text.lower())})
    merges: list[tuple[str, str]] = []
    for word in words:
        for k in range(1, len(word)):
            last = word[k] + ("</w>" if k == len(word) - 1 else "")
            merge = (word[:k], last)
            if merge not in merges:
                merges.append(merge)
                vocab.setdefault(word[:k] + last, len(vocab))
    return vocab, merges


def build_clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_MAX_LENGTH)


def t5_vocab() -> list[tuple[str, float]]:
    """Unigram pieces with log-probability scores: specials, whole words, then characters."""
    words = sorted({w.strip(".,:").lower() for t in caption_corpus() for w in t.split()} - {""})
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + w, -3.0 - 0.01 * i) for i, w in enumerate(words)]
    pieces += [(w, -4.0 - 0.01 * i) for i, w in enumerate(words)]
    chars = string.ascii_letters + string.digits + string.punctuation
    pieces += [(c, -8.0) for c in chars] + [("▁" + c, -8.5) for c in chars]
    return pieces


def build_t5_tokenizer() -> Any:
    from transformers import T5TokenizerFast

    return T5TokenizerFast(vocab=t5_vocab(), extra_ids=0, model_max_length=512)
