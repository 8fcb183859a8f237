"""Caption changes drawn per sample: dropout, tag shuffling, a trigger word.

Every change a caption goes through between the dataset and the prompt embedder lives here,
in one transform with its own seed: what sample ``index`` of ``epoch`` reads is a function of
``(seed, epoch, index)`` alone, never of a global random state. So a resumed run reads exactly
what an unbroken one read, processes and DataLoader workers agree without sharing state, and a
cache of text embeddings can tell which caption a sample gets (:meth:`CaptionTransform.caption`)
before any model runs.

A dropped caption becomes the empty prompt: the family embeds ``""`` as it does for any
caption (the empty-prompt embedding; with ``--cache-features`` it is computed once).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class CaptionTransform:
    """``--caption-dropout``, ``--shuffle-tags`` / ``--keep-tokens``, ``--trigger-word``.

    Order: the dropout draw first (a dropped caption is ``""``: no tags, no trigger word); then
    the tags after the first ``keep_tokens`` are shuffled; then the trigger word goes in front
    (a caption that already starts with it keeps it there, once).
    """

    dropout: float = 0.0
    shuffle_tags: bool = False
    keep_tokens: int = 0
    trigger_word: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.dropout <= 1:
            raise ConfigError(f"caption dropout must be within [0, 1], not {self.dropout}")
        if self.keep_tokens < 0:
            raise ConfigError(f"keep_tokens must be >= 0, not {self.keep_tokens}")

    @property
    def active(self) -> bool:
        """Whether the transform changes any caption at all."""
        return bool(self.dropout or self.shuffle_tags or self.trigger_word)

    def _rng(self, epoch: int, index: int) -> random.Random:
        # a string seed is hashed with SHA-512: the same numbers in every process and Python
        return random.Random(f"diffsynth-captions:{self.seed}:{epoch}:{index}")

    def caption(self, prompt: str, epoch: int, index: int) -> str:
        """The caption sample ``index`` reads in ``epoch`` instead of ``prompt``."""
        rng = self._rng(epoch, index)
        if rng.random() < self.dropout:
            return ""
        text = without_trigger_word(prompt, self.trigger_word)  # (it goes first again below)
        text = shuffle_tags(text, self.keep_tokens, rng) if self.shuffle_tags else text
        return with_trigger_word(text, self.trigger_word)


def split_tags(prompt: str) -> list[str]:
    """A comma-tag caption's tags, stripped, empty ones left out."""
    return [tag.strip() for tag in prompt.split(",") if tag.strip()]


def shuffle_tags(prompt: str, keep_tokens: int, rng: random.Random) -> str:
    """``prompt``'s tags after the first ``keep_tokens`` in an order drawn from ``rng``."""
    tags = split_tags(prompt)
    kept, rest = tags[:keep_tokens], tags[keep_tokens:]
    rng.shuffle(rest)
    return ", ".join(kept + rest)


def without_trigger_word(prompt: str, trigger_word: str | None) -> str:
    """``prompt`` without a leading ``"trigger,"`` tag (a caption that already has it)."""
    head, comma, rest = prompt.partition(",")
    if trigger_word and head.strip() == trigger_word.strip():
        return rest.strip() if comma else ""
    return prompt


def with_trigger_word(prompt: str, trigger_word: str | None) -> str:
    """``"trigger, prompt"`` (just the word for an empty prompt)."""
    if not trigger_word:
        return prompt
    word = trigger_word.strip()
    return f"{word}, {prompt}" if prompt.strip() else word
