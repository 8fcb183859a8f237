"""Sample images during training, made by the family's own pipeline.

``samples/step-000000-0.png`` (before training), every ``sample_every`` steps and after
training; one file per prompt. Sampling runs on the main process only and must not change
training: RNG states, the scheduler (inference resets its timesteps) and train/eval modes are
restored afterwards, so a run with samples ends with the same weights as one without.
While it samples, the progress bar says so and its rate and ETA leave that time out
(:meth:`.metrics.MetricsLog.paused`).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ConfigError
from .atomic import atomic_write

if TYPE_CHECKING:
    from ..pipeline import BasePipeline


SamplePrompt = str | dict[str, Any]  # a prompt, or {"prompt": ..., family inputs ...}


def read_prompts(path: str | Path) -> list[SamplePrompt]:
    """One prompt per line; blank lines and ``#`` comments are skipped.

    A line that is a JSON object gives a prompt with its own family inputs (an edit family's
    image): ``{"prompt": "make the square red", "edit_image": "before.png"}``; the
    command converts the inputs by the family's generate options (``cli/run/build.py``).
    """
    import json

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--sample-prompts {path}: no such file (one prompt per line)")
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    prompts: list[SamplePrompt] = []
    for number, line in enumerate(lines, 1):
        if not line or line.startswith("#"):
            continue
        if not line.startswith("{"):
            prompts.append(line)
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"--sample-prompts {path} line {number}: not JSON ({error})"
            ) from error
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str):
            raise ConfigError(
                f'--sample-prompts {path} line {number}: a JSON line needs "prompt" (text)'
            )
        prompts.append(entry)
    return prompts


@contextmanager
def untouched_training_state(pipe: BasePipeline) -> Iterator[None]:
    """Run inference inside; afterwards RNGs, scheduler and module modes are as before."""
    modes = {m: m.training for m in pipe.modules()}
    scheduler = copy.deepcopy(pipe.scheduler)
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = (
        [torch.cuda.current_device()]
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else []
    )
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            pipe.eval()
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        pipe.scheduler = scheduler
        for module, mode in modes.items():
            module.training = mode


class SampleRenderer:
    """Makes the sample images of a run (see the module docstring)."""

    def __init__(
        self,
        prompts: list[SamplePrompt],
        every: int | None,
        output_path: Path,
        height: int,
        width: int,
        seed: int = 0,
        num_inference_steps: int = 20,
    ) -> None:
        self.prompts = list(prompts)
        self.every = every
        self.folder = Path(output_path) / "samples"
        self.settings: dict[str, Any] = {  # keywords of BasePipeline.__call__
            "height": height,
            "width": width,
            "num_inference_steps": num_inference_steps,
        }
        self.seed = seed
        self.notes: list[str] = []
        self.progress: Any = None  # a MetricsLog: sampling shows in its bar

    @classmethod
    def from_options(cls, opts: Any, output_path: Path, progress: Any = None) -> SampleRenderer:
        """From RunOptions: ``sample_prompts``, ``sample_every``, ``sample_height`` ...;
        ``progress``: the run's MetricsLog."""
        renderer = cls(
            opts.sample_prompts,
            opts.sample_every,
            output_path,
            opts.sample_height,
            opts.sample_width,
            opts.sample_seed,
            opts.sample_steps,
        )
        renderer.progress = progress
        return renderer

    def due(self, step: int) -> bool:
        return bool(self.prompts and self.every and step % self.every == 0)

    def render(self, accelerator: Any, model: torch.nn.Module, step: int) -> list[Path]:
        """Every prompt through ``pipe(...)`` on the main process; others wait."""
        paths: list[Path] = []
        pipe = getattr(accelerator.unwrap_model(model), "pipe", None)
        if pipe is None and self.prompts:
            self.notes.append(
                "sample prompts ignored: the training module has no .pipe to sample with"
            )
            self.prompts = []
        if self.prompts and pipe is not None and accelerator.is_main_process:
            # --cache: the models the cache replaced are loaded for the samples only
            lazy = getattr(pipe, "sampling_models", None)
            loaded = lazy(pipe) if lazy is not None else nullcontext()
            with self._shown(step), loaded, untouched_training_state(pipe), accelerator.autocast():
                paths = [self._one(pipe, step, i, prompt) for i, prompt in enumerate(self.prompts)]
        accelerator.wait_for_everyone()
        return paths

    def _shown(self, step: int) -> Any:
        label = f"sampling {len(self.prompts)} prompt(s) at step {step}"
        return self.progress.paused(label) if self.progress is not None else nullcontext()

    def _one(self, pipe: BasePipeline, step: int, index: int, prompt: SamplePrompt) -> Path:
        inputs = dict(prompt) if isinstance(prompt, dict) else {"prompt": prompt}
        # progress=False: a second bar would break the training bar's line
        result = pipe(seed=self.seed + index, progress=False, **{**self.settings, **inputs})
        stem = self.folder / f"step-{step:06d}-{index}"
        if isinstance(result, list):  # a video family returns frames
            from ..data.video import save_video

            return save_video(result, stem.with_suffix(".mp4"))
        return atomic_write(stem.with_suffix(".png"), lambda tmp: result.save(tmp, format="PNG"))
