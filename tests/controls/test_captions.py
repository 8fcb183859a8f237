"""--caption-dropout, --shuffle-tags / --keep-tokens, --trigger-word: what each caption
becomes, drawn from (seed, epoch, index) only, so a resumed run reads what an unbroken one read."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from diffsynth_core.data.captions import CaptionTransform

TAGS = "cat, red hat, sitting, sofa, window, daylight, photo"


def test_dropout_drops_the_given_fraction_to_the_empty_prompt() -> None:
    transform = CaptionTransform(dropout=0.3, seed=4)
    drawn = [transform.caption("a cat", epoch, i) for epoch in range(4) for i in range(500)]
    assert set(drawn) == {"", "a cat"}
    assert abs(drawn.count("") / len(drawn) - 0.3) < 0.03
    assert drawn == [transform.caption("a cat", e, i) for e in range(4) for i in range(500)]
    other_seed = CaptionTransform(dropout=0.3, seed=5)
    assert drawn != [other_seed.caption("a cat", e, i) for e in range(4) for i in range(500)]
    # each epoch drops other samples
    first = [transform.caption("a cat", 0, i) for i in range(500)]
    second = [transform.caption("a cat", 1, i) for i in range(500)]
    assert first != second


def test_shuffle_keeps_the_first_tokens_and_every_tag() -> None:
    transform = CaptionTransform(shuffle_tags=True, keep_tokens=2, seed=0)
    orders = {transform.caption(TAGS, epoch, 3) for epoch in range(30)}
    assert len(orders) > 10  # a new order per epoch
    for caption in orders:
        tags = caption.split(", ")
        assert tags[:2] == ["cat", "red hat"]
        assert sorted(tags) == sorted(TAGS.split(", "))
    unshuffled = CaptionTransform(keep_tokens=2)
    assert unshuffled.caption(TAGS, 0, 3) == TAGS


def test_the_trigger_word_goes_first_once() -> None:
    transform = CaptionTransform(trigger_word="sks", shuffle_tags=True, seed=1)
    for epoch in range(10):
        caption = transform.caption(TAGS, epoch, 0)
        assert caption.startswith("sks, ") and caption.count("sks") == 1
    assert transform.caption("sks, a dog", 0, 0) == "sks, a dog"
    assert CaptionTransform(trigger_word="sks").caption("", 0, 0) == "sks"
    dropped = CaptionTransform(trigger_word="sks", dropout=1.0)
    assert dropped.caption(TAGS, 0, 0) == ""  # the empty prompt: no trigger word either


def test_the_dataset_applies_it_per_epoch(tmp_path: Path) -> None:
    from diffsynth_core.data import UnifiedDataset
    from diffsynth_core.testing import make_image_dataset

    folder = make_image_dataset(tmp_path / "data", 3, 32)
    plain = UnifiedDataset(folder, folder / "metadata.csv")
    transform = CaptionTransform(trigger_word="sks", dropout=0.5, seed=2)
    dataset = UnifiedDataset(folder, folder / "metadata.csv", repeat=4, caption_transform=transform)
    prompts = {}
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        prompts[epoch] = [dataset[i]["prompt"] for i in range(len(dataset))]
        for i, prompt in enumerate(prompts[epoch]):
            original = plain[i % 3]["prompt"]
            assert prompt == transform.caption(original, epoch, i)
            assert prompt in ("", f"sks, {original}")
    assert prompts[0] != prompts[1]


def test_caption_extension_pairs_other_caption_files(toy_manager: Any, tiny_toy: Path, tmp_path: Path) -> None:
    """A folder captioned with .caption files trains with --caption-extension .caption; the
    default (.txt) finds no caption there."""
    from click.testing import CliRunner

    from diffsynth_core.cli.main import build_cli
    from diffsynth_core.testing import make_image_dataset

    folder = make_image_dataset(tmp_path / "data", 2, 32)
    (folder / "metadata.csv").unlink()
    for image in folder.glob("*.png"):
        image.with_suffix(".caption").write_text(f"a picture called {image.stem}\n")
    common = ["train", "--model", "toy", "--model-path", str(tiny_toy), "--dataset", str(folder),
              "--max-steps", "1", "--height", "32", "--width", "32"]  # fmt: skip
    refused = CliRunner().invoke(build_cli(toy_manager), [*common, "--output", str(tmp_path / "a")])
    assert refused.exit_code == 1 and "same-named .txt caption" in refused.output
    done = CliRunner().invoke(
        build_cli(toy_manager),
        [*common, "--output", str(tmp_path / "b"), "--caption-extension", ".caption", "--check-data"],
    )
    assert done.exit_code == 0, done.output


class Recorder:
    """The SFT loss, remembering each prompt it trained on; SIGTERM at call ``stop_at``."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.prompts: list[Any] = []
        self.stop_at = stop_at

    def __call__(self, pipe: Any, **inputs: Any) -> torch.Tensor:
        from diffsynth_core.training.losses import FlowMatchSFTLoss

        self.prompts.append(inputs["prompt"])
        if len(self.prompts) == self.stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return FlowMatchSFTLoss(pipe, **inputs)


@pytest.mark.usefixtures("toy_manager")
def test_resumed_run_reads_the_captions_of_the_unbroken_one(tiny_toy: Path, tmp_path: Path) -> None:
    from .helpers import lora_weights, toy_dataset, toy_module, train

    transform = CaptionTransform(dropout=0.3, shuffle_tags=True, keep_tokens=1, trigger_word="sks", seed=3)
    options = {"num_epochs": 2, "batch_size": 2, "seed": 3, "num_workers": 0}

    def dataset() -> Any:
        return toy_dataset(tmp_path / "data", n=4, caption_transform=transform, tags=True)

    unbroken_loss = Recorder()
    unbroken = toy_module(tiny_toy, unbroken_loss)
    assert train(unbroken, dataset(), tmp_path / "unbroken", **options).steps == 4

    stopped_loss = Recorder(stop_at=3)
    stopped = train(toy_module(tiny_toy, stopped_loss), dataset(), tmp_path / "run", **options)
    assert stopped.interrupted == "SIGTERM" and stopped.steps == 3
    resumed_loss = Recorder()
    resumed_module = toy_module(tiny_toy, resumed_loss, seed=99)
    assert train(resumed_module, dataset(), tmp_path / "run", resume="latest", **options).steps == 4

    assert stopped_loss.prompts + resumed_loss.prompts == unbroken_loss.prompts
    flat = [p for batch in unbroken_loss.prompts for p in batch]
    assert "" in flat and any(p.startswith("sks, tag0, ") for p in flat)  # dropout and shuffling
    assert len(set(flat)) > 4
    expected, got = lora_weights(unbroken), lora_weights(resumed_module)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_dataloader_workers_draw_the_epochs_captions(tmp_path: Path) -> None:
    """The loop's DataLoader (here with a worker process) reads each epoch's captions."""
    from diffsynth_core.training.batches import EpochBatches

    from .helpers import toy_dataset

    transform = CaptionTransform(dropout=0.5, trigger_word="sks", seed=1)
    dataset = toy_dataset(tmp_path / "data", n=4, caption_transform=transform)
    originals = [row["prompt"] for row in dataset.rows]
    plan = EpochBatches(dataset, batch_size=1, gradient_accumulation_steps=1, seed=0)
    for epoch in (0, 1):
        order = [batch[0] for batch in plan.epoch(epoch)]
        seen = [batch["prompt"] for batch in plan.loader(epoch, num_workers=1)]
        assert seen == [transform.caption(originals[i], epoch, i) for i in order]
