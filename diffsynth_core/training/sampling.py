"""Sample images during training, made by the family's own pipeline.

``samples/step-000000-0.png`` (before training), every ``sample_every`` steps and after
training; one file per prompt, also sent to the run's trackers that take images. A prompt
is a string or a :class:`~.sample_prompts.SamplePrompt` (its own size, seed, steps, CFG scale,
negative prompt and family inputs, from a TOML / JSON-lines prompts file). Sampling runs on the main process only and must not change
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
from .sample_prompts import SamplePrompt, read_prompt_file

if TYPE_CHECKING:
    from ..pipeline import BasePipeline


def read_prompts(path: str | Path) -> list[SamplePrompt]:
    """The prompts of a ``--sample-prompts`` file (text, TOML or JSON lines: sample_prompts.py)."""
    return read_prompt_file(path)


def check_family_inputs(prompts: list[Any], pipe: Any) -> None:
    """A family input the pipeline's ``__call__`` cannot take is an error before the run starts
    (not at the first sample)."""
    import inspect

    parameters = inspect.signature(pipe.__call__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return  # the family passes further keywords on to its units
    known = {p.name for p in parameters}
    for number, entry in enumerate(prompts, start=1):
        unknown = sorted(set(getattr(entry, "inputs", {})) - known)
        if unknown:
            raise ConfigError(
                f"--sample-prompts: prompt {number} sets {', '.join(unknown)}, which "
                f"{type(pipe).__name__} does not take; it takes {', '.join(sorted(known))}"
            )


@contextmanager
def preserved_state(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode and forked RNGs inside; afterwards every module's mode and every RNG state
    (python, numpy, torch, CUDA) as before: an evaluation in the middle of a run leaves the
    run exactly where it was (samples, validation)."""
    modes = {m: m.training for m in module.modules()}
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = (
        [torch.cuda.current_device()]
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else []
    )
    try:
        with torch.random.fork_rng(devices=devices):
            module.eval()
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        for m, mode in modes.items():
            m.training = mode


@contextmanager
def untouched_training_state(pipe: BasePipeline) -> Iterator[None]:
    """Run inference inside; afterwards RNGs, scheduler and module modes are as before."""
    scheduler = copy.deepcopy(pipe.scheduler)
    try:
        with preserved_state(pipe), torch.no_grad():
            yield
    finally:
        pipe.scheduler = scheduler


STRIP_FRAMES = 4  # frames of a sample clip shown to the trackers, evenly spaced


def frame_strip(frames: list[Any], count: int = STRIP_FRAMES) -> Any:
    """``count`` evenly spaced frames of a clip (the first and the last among them) side by
    side in one image: what an image tracker can show of a sample video (the .mp4 is on disk)."""
    from PIL import Image

    if not frames:
        raise ValueError("a clip without frames")
    picks = sorted({round(i * (len(frames) - 1) / max(count - 1, 1)) for i in range(count)})
    chosen = [frames[i].convert("RGB") for i in picks]
    width, height = chosen[0].size
    strip = Image.new("RGB", (width * len(chosen), height))
    for index, frame in enumerate(chosen):
        strip.paste(frame, (index * width, 0))
    return strip


class SampleRenderer:
    """Makes the sample images of a run (see the module docstring)."""

    def __init__(
        self,
        prompts: list[str | SamplePrompt],
        every: int | None,
        output_path: Path,
        height: int,
        width: int,
        seed: int = 0,
        num_inference_steps: int = 20,
    ) -> None:
        self.prompts = [p if isinstance(p, SamplePrompt) else SamplePrompt(p) for p in prompts]
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
            images: dict[str, Any] = {}
            # --cache: the models the cache replaced are loaded for the samples only
            lazy = getattr(pipe, "sampling_models", None)
            loaded = lazy(pipe) if lazy is not None else nullcontext()
            with self._shown(step), loaded, untouched_training_state(pipe), accelerator.autocast():
                for i, prompt in enumerate(self.prompts):
                    path, result = self._one(pipe, step, i, prompt)
                    paths.append(path)
                    # a clip: the trackers get a strip of its frames (they take images)
                    images[f"samples/{i}"] = frame_strip(result) if isinstance(result, list) else result
            trackers = getattr(self.progress, "trackers", None)
            if trackers is not None:
                trackers.log_images(images, step)
        accelerator.wait_for_everyone()
        return paths

    def _shown(self, step: int) -> Any:
        label = f"sampling {len(self.prompts)} prompt(s) at step {step}"
        return self.progress.paused(label) if self.progress is not None else nullcontext()

    def _one(
        self, pipe: BasePipeline, step: int, index: int, sample: SamplePrompt
    ) -> tuple[Path, Any]:
        """(the file written, what the pipeline returned) for one prompt."""
        # the run's settings, then the prompt's own; progress=False: a second bar would break
        # the training bar's line
        call = {"seed": self.seed + index, **self.settings, **sample.settings, **sample.inputs}
        result = pipe(prompt=sample.prompt, progress=False, **call)
        stem = self.folder / f"step-{step:06d}-{index}"
        if isinstance(result, list):  # a video family returns frames
            from ..data.video import save_video

            return save_video(result, stem.with_suffix(".mp4")), result
        png = atomic_write(stem.with_suffix(".png"), lambda tmp: result.save(tmp, format="PNG"))
        return png, result
