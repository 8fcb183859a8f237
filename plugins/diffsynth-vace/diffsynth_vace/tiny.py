"""The ``tiny`` preset: Wan2.1 VACE with the real classes and a tiny config, built offline.

:func:`build_tiny` writes, into one folder, exactly what the official
``Wan-AI/Wan2.1-VACE-1.3B-diffusers`` repository holds (``model_index.json``, ``transformer/``,
``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``), so both our loader and diffusers'
``WanVACEPipeline.from_pretrained(folder)`` read it. Nothing is downloaded: the weights are
seeded random initialisations and the UMT5 tokenizer is a Unigram model estimated here from
generated captions. Every build writes byte-identical files.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

from .sampler import DEFAULT_SCHEDULER_CONFIG

# Sizes measured to build, save, load back and generate on a CPU in well under a second per
# step (see TINY_MODELS.md); vace_in_channels stays 96 = 16 inactive + 16 reactive + 64 mask
# channels, as in the real model, so the conditioning path is the real one.
TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 32,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 64,
    "freq_dim": 256,
    "ffn_dim": 128,
    "num_layers": 4,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
    "vace_layers": [0, 2],
    "vace_in_channels": 96,
}
VAE_CONFIG: dict[str, Any] = {
    "base_dim": 16,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}
TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "vocab_size": 512,
    "d_model": 64,
    "d_kv": 16,
    "d_ff": 128,
    "num_layers": 2,
    "num_heads": 4,
    "feed_forward_proj": "gated-gelu",
    "is_encoder_decoder": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
}
SEED = 0

_COLOURS = ("red", "green", "blue", "yellow", "white", "black", "orange", "purple", "grey")
_SHAPES = ("square", "circle", "triangle", "ball", "box", "dot", "star", "ring")
_MOTIONS = ("moves left", "moves right", "bounces", "spins", "falls", "rises", "grows", "shrinks")
_PLACES = ("on a dark background", "over grass", "in the sky", "on a table", "under water")


def captions() -> list[str]:
    """The generated captions the tiny tokenizer learns from (deterministic order).

    Every combination appears, so word frequencies (the Unigram scores) are well defined.
    """
    return [
        f"A {colour} {shape} {motion} {place}, smooth video, high quality."
        for colour in _COLOURS
        for shape in _SHAPES
        for motion in _MOTIONS
        for place in _PLACES
    ]


def unigram_vocab() -> list[tuple[str, float]]:
    """(piece, log-probability) pairs: UMT5's specials, every caption word, every ASCII char.

    The scores are word frequencies estimated directly from the captions. The ``tokenizers``
    Unigram trainer was tried and rejected: on a corpus this repetitive it prunes to single
    letters, and its EM gives scores whose last digits differ between runs.
    """
    words = Counter(
        "▁" + word for line in captions() for word in unicodedata.normalize("NFKC", line).split()
    )
    total = sum(words.values())
    chars = [chr(c) for c in range(33, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", math.log(1 / total))]
    vocab += [(w, math.log(n / total)) for w, n in sorted(words.items())]
    # single characters spell out unseen words; their low score keeps known words whole
    vocab += [(c, math.log(1 / total) - 10.0) for c in chars if "▁" + c not in words]
    return vocab


def build_tokenizer() -> Any:
    """A UMT5-style tokenizer: Unigram, Metaspace; pad=0, eos=1, unk=2 as in UMT5."""
    from transformers import T5Tokenizer

    # T5Tokenizer builds its backend from the vocabulary (Metaspace pre-tokenizer, </s> appended)
    # and keeps only a sentencepiece "Precompiled" normalizer, which cannot be made offline;
    # the captions are NFKC-normalised above instead.
    return T5Tokenizer(vocab=unigram_vocab(), extra_ids=0, model_max_length=512)


def build_components() -> dict[str, Any]:
    """Every component of the pipeline, seeded so that two builds are identical."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACETransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(SEED)
    transformer = WanVACETransformer3DModel(**TRANSFORMER_CONFIG)
    torch.manual_seed(SEED + 1)
    vae = AutoencoderKLWan(**VAE_CONFIG)
    torch.manual_seed(SEED + 2)
    text_encoder = UMT5EncoderModel(UMT5Config(**TEXT_ENCODER_CONFIG))
    return {
        "transformer": transformer.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": build_tokenizer(),
        "scheduler": UniPCMultistepScheduler(**DEFAULT_SCHEDULER_CONFIG),
    }


def build_tiny(folder: Path | str) -> Path:
    """Write the tiny Wan2.1 VACE model into ``folder`` in the official diffusers layout."""
    from diffusers import WanVACEPipeline

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe = WanVACEPipeline(**build_components())
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
