"""UMT5 prompt encoding, exactly as diffusers' Wan pipelines do it.

The prompt is cleaned (ftfy, HTML entities, whitespace), tokenized to ``max_length`` (512 in
``WanVACEPipeline.__call__``), encoded with the attention mask, and every position after the
real tokens is set to zero: the DiT attends to all 512 positions, so the padding must be zeros,
not the encoder's output for pad tokens.
"""

from __future__ import annotations

import html
import re
from typing import Any

import torch

MAX_SEQUENCE_LENGTH = 512


def clean_prompt(text: str) -> str:
    """ftfy repair, double HTML unescape, collapsed whitespace (diffusers' ``prompt_clean``)."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


def encode_prompt(
    text_encoder: Any,
    tokenizer: Any,
    prompt: str | list[str],
    device: torch.device,
    dtype: torch.dtype,
    max_length: int = MAX_SEQUENCE_LENGTH,
) -> torch.Tensor:
    """``(batch, max_length, d_model)`` embeddings, zero after each prompt's last token."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    tokens = tokenizer(
        [clean_prompt(p) for p in prompts],
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    encoder_device = next(text_encoder.parameters()).device
    ids, mask = tokens.input_ids.to(encoder_device), tokens.attention_mask.to(encoder_device)
    hidden = text_encoder(ids, mask).last_hidden_state.to(device=device, dtype=dtype)
    keep = mask.to(device=device, dtype=dtype).unsqueeze(-1)
    # a multiply, not a copy into zeros: same values (mask is 0/1 and contiguous from the left)
    return hidden * keep
