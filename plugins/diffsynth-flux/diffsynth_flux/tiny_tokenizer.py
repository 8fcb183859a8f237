"""Offline CLIP and T5 tokenizers for the tiny preset.

The real ones (``tokenizer/`` and ``tokenizer_2/`` of FLUX.1) cannot be downloaded in tests.
CLIP's is a byte-level BPE with ``</w>`` word ends: a small one is trained here with CLIP's own
normalizer and pre-tokenizer (what ``transformers.CLIPTokenizer`` builds around any
vocabulary), and every byte is added alone and as a word end, so no text maps to ``<unk>``.
T5's is a SentencePiece unigram model: a small vocabulary of whole words (``▁red``), their
pieces and single characters is written by hand with scores that prefer whole words, and
wrapped as ``transformers.T5TokenizerFast`` (T5's Metaspace pre-tokenizer). Both are saved with
``save_pretrained`` and read back by ``from_pretrained``, by us and by diffusers.
"""

from __future__ import annotations

import itertools
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


def train_clip_bpe(vocab_size: int = 700) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style BPE (``</w>`` word ends) trained on the captions; (vocab, merges)."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    template = CLIPTokenizer()._tokenizer  # CLIP's normalizer and pre-tokenizer
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tokenizer.normalizer = template.normalizer
    tokenizer.pre_tokenizer = template.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[CLIP_BOS, CLIP_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(caption_corpus() * 3, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab = dict(model["vocab"])
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):  # every byte, alone or word-final
        for token in (char, char + "</w>"):
            vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return vocab, merges  # type: ignore[return-value]


def build_clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    vocab, merges = train_clip_bpe()
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
