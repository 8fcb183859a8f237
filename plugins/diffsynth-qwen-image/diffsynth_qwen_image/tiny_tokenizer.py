"""An offline Qwen2 tokenizer for the tiny preset.

The real Qwen2 tokenizer cannot be downloaded in tests, so a small byte-level BPE is trained
here with Qwen's own normalizer (NFC) and pre-tokenizer (the Qwen split regex, then ByteLevel
without a prefix space) and wrapped as ``transformers.Qwen2Tokenizer`` with the 14 Qwen
special tokens. Trained on captions plus the prompt templates, every template word is one token,
so the Qwen-Image template prefix is 34 tokens exactly as with the real tokenizer, and the real
pipeline's ``drop_idx = 34`` works unchanged.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

QWEN_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The templates of diffusers' Qwen-Image pipelines (text-to-image and edit), with the special
# tokens cut out: their words must each become one token.
TEMPLATE_TEXTS = (
    "system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:\nuser\n\nassistant\n",
    "system\nDescribe the key features of the input image (color, shape, size, texture, objects, "
    "background), then explain how the user's text instruction should alter or modify the image. "
    "Generate a new image that meets the user's requirements while maintaining consistency with "
    "the original input where appropriate.\nuser\nPicture 1: \nassistant\n",
)

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black", "pink", "gray")
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "stripe", "diamond")
PLACES = ("on a plain background", "in the center", "at the top left", "near the bottom")
EXTRA = (
    "A photo of a cat sitting on a wooden table next to a cup of coffee, soft morning light.",
    "A watercolor painting of mountains and a lake at sunset, with birds flying over the water.",
    "An old street in the rain at night, neon signs, reflections, people walking with umbrellas.",
    "A small robot reading a book in a library, warm lamps, dust in the air, cinematic style.",
    "Blurry, low quality, distorted, ugly, deformed hands, extra fingers, watermark, signature.",
    "A bowl of fresh fruit: apples, bananas, grapes and lemons on a marble kitchen counter.",
)


def caption_corpus() -> list[str]:
    """Generated captions: every colour x shape x place, deterministic order."""
    return [
        f"a {c} {s} {p}, a {b} background"
        for (c, s, p), b in zip(
            itertools.product(COLOURS, SHAPES, PLACES), itertools.cycle(COLOURS[::-1])
        )
    ]


def train_bpe(vocab_size: int = 800) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train the byte-level BPE; returns the vocabulary and the merges (as tuples)."""
    import json

    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # the templates are repeated so that their words win the merges over caption words
    corpus = list(TEMPLATE_TEXTS) * 50 + caption_corpus() + list(EXTRA) * 3
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges  # type: ignore[return-value]


def build_tokenizer(vocab_size: int = 800) -> Any:
    """A ``transformers.Qwen2Tokenizer`` with the trained BPE and the Qwen special tokens."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = train_bpe(vocab_size)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True) for t in SPECIAL_TOKENS[1:]]}
    )
    return tokenizer


def save_tokenizer(folder: Path, vocab_size: int = 800) -> Any:
    """Build the tokenizer and save it in ``folder`` (the official ``tokenizer/`` layout)."""
    tokenizer = build_tokenizer(vocab_size)
    tokenizer.save_pretrained(str(folder))
    return tokenizer
