"""BasePipeline, PipelineUnit and the unit runner.

A pipeline is a list of units that turn user inputs (prompt, image, height ...) into model
inputs (embeddings, latents, noise ...), plus ``model_fn``, the denoiser call. Inference and
training run the very same units, so what is trained is what is generated. Inputs travel in
three dicts: ``inputs_shared`` (both CFG branches), ``inputs_posi`` and ``inputs_nega``
(positive and negative prompt branches). Every unit runs through the ``diffsynth_run_unit``
hook, which plugins can wrap to observe (timing, caching) or replace.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from .errors import PluginError
from .loading import ModelConfig, family_loading
from .registry import ModelFamily
from .scheduler import FlowMatchScheduler
from .training.speed import to_device

if TYPE_CHECKING:
    from PIL import Image

Inputs = dict[str, Any]


class PipelineUnit:
    """One preprocessing step of a pipeline.

    Subclasses implement ``process(pipe, **declared_inputs) -> dict of outputs``.

    Args:
        separate_cfg: run once per CFG branch: ``input_params_posi`` / ``input_params_nega``
            map the names ``process`` receives to the names in the positive / negative dict.
            The negative pass only runs when ``cfg_scale != 1``.
        take_over: ``process(pipe, inputs_shared, inputs_posi, inputs_nega)`` gets all three
            dicts and returns all three (for units that must see everything).
        input_params: names read from ``inputs_shared``.
        output_params: names the unit may return; returning another name is a bug and raises.
        onload_model_names: pipeline models the unit uses, moved to the device before it runs.
        insert_before: when contributed through ``diffsynth_pipeline_units``, the name of the
            unit to insert this one in front of (``None``: append).
        cacheable: the unit's outputs are a pure function of its declared inputs (no random
            numbers, no trainable weights), so ``--cache-features`` may compute them once per
            sample and reuse them (text embeddings, VAE latents of the input image).
    """

    def __init__(
        self,
        separate_cfg: bool = False,
        take_over: bool = False,
        input_params: Iterable[str] = (),
        input_params_posi: Mapping[str, str] | None = None,
        input_params_nega: Mapping[str, str] | None = None,
        output_params: Iterable[str] = (),
        onload_model_names: Iterable[str] = (),
        insert_before: str | None = None,
        cacheable: bool = False,
    ) -> None:
        self.separate_cfg = separate_cfg
        self.take_over = take_over
        self.input_params = tuple(input_params)
        self.input_params_posi = dict(input_params_posi or {})
        self.input_params_nega = dict(input_params_nega or {})
        self.output_params = tuple(output_params)
        self.onload_model_names = tuple(onload_model_names)
        self.insert_before = insert_before
        self.cacheable = cacheable and not take_over  # a take-over unit declares no inputs

    @property
    def name(self) -> str:
        return type(self).__name__

    # ``*args: Any, **kwargs: Any``: a type checker lets each unit declare the inputs it reads
    def process(self, pipe: BasePipeline, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.name}>"


def _checked(unit: PipelineUnit, out: Any) -> Inputs:
    if not isinstance(out, dict):
        raise TypeError(f"{unit.name}.process must return a dict, got {type(out).__name__}")
    if unit.output_params:
        extra = set(out) - set(unit.output_params)
        if extra:
            raise TypeError(f"{unit.name} returned undeclared outputs {sorted(extra)}")
    return out


def run_unit(
    unit: PipelineUnit, pipe: BasePipeline, inputs_shared: Inputs, inputs_posi: Inputs, inputs_nega: Inputs
) -> tuple[Inputs, Inputs, Inputs]:
    """The default behaviour of ``diffsynth_run_unit`` (see the hook's docstring)."""
    if unit.take_over:
        return unit.process(pipe, inputs_shared=inputs_shared, inputs_posi=inputs_posi, inputs_nega=inputs_nega)
    pipe.load_models_to_device(unit.onload_model_names)
    shared_kwargs = {name: inputs_shared.get(name) for name in unit.input_params}
    if not unit.separate_cfg:
        inputs_shared.update(_checked(unit, unit.process(pipe, **shared_kwargs)))
        return inputs_shared, inputs_posi, inputs_nega
    posi = {k: inputs_posi.get(v) for k, v in unit.input_params_posi.items()}
    inputs_posi.update(_checked(unit, unit.process(pipe, **shared_kwargs, **posi)))
    if inputs_shared.get("cfg_scale", 1) != 1:
        nega = {k: inputs_nega.get(v) for k, v in unit.input_params_nega.items()}
        inputs_nega.update(_checked(unit, unit.process(pipe, **shared_kwargs, **nega)))
    return inputs_shared, inputs_posi, inputs_nega


def _on_device(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether the model's first parameter is on ``device`` ("cuda" matches "cuda:0")."""
    param = next(model.parameters(), None)
    if param is None:
        return True
    here = param.device
    return here.type == device.type and (device.index is None or here.index == device.index)


class PipelineUnitRunner:
    """``pipe.unit_runner(unit, pipe, shared, posi, nega)``: runs a unit through the hook."""

    def __init__(self) -> None:
        self._hook: Any = None

    def __call__(
        self, unit: PipelineUnit, pipe: BasePipeline, inputs_shared: Inputs, inputs_posi: Inputs, inputs_nega: Inputs
    ) -> tuple[Inputs, Inputs, Inputs]:
        if self._hook is None:
            from .plugins import get_plugin_manager

            self._hook = get_plugin_manager().hook.diffsynth_run_unit
        return self._hook(
            unit=unit, pipe=pipe, inputs_shared=inputs_shared, inputs_posi=inputs_posi, inputs_nega=inputs_nega
        )


class BasePipeline(torch.nn.Module):
    """The base of every family's pipeline.

    A family subclasses it, sets its models as attributes (``self.dit``, ``self.vae`` ...),
    lists them in ``model_names``, builds ``self.units`` and implements ``model_fn`` (the
    denoiser call on prepared inputs, ``timestep`` on the 0-1000 scale) and
    ``training_inputs`` (a data batch -> the three input dicts, as for inference).
    """

    model_names: tuple[str, ...] = ()

    def __init__(
        self,
        device: str | torch.device = "cpu",
        torch_dtype: torch.dtype = torch.float32,
        height_division_factor: int = 16,
        width_division_factor: int = 16,
    ) -> None:
        super().__init__()
        self.device = torch.device(device)
        self.torch_dtype = torch_dtype
        self.height_division_factor = height_division_factor
        self.width_division_factor = width_division_factor
        self.units: list[PipelineUnit] = []
        self.unit_runner = PipelineUnitRunner()
        self.scheduler = FlowMatchScheduler()
        self.family: ModelFamily | None = None

    # -- units ---------------------------------------------------------------------------

    def add_units(self, units: Iterable[PipelineUnit]) -> None:
        for unit in units:
            names = [u.name for u in self.units]
            if unit.insert_before is None:
                self.units.append(unit)
            elif unit.insert_before in names:
                self.units.insert(names.index(unit.insert_before), unit)
            else:
                raise PluginError(
                    f"unit {unit.name} wants to run before {unit.insert_before}, which this "
                    f"pipeline does not have (units: {', '.join(names)})"
                )

    def run_units(self, inputs_shared: Inputs, inputs_posi: Inputs, inputs_nega: Inputs) -> tuple[Inputs, Inputs, Inputs]:
        for unit in self.units:
            inputs_shared, inputs_posi, inputs_nega = self.unit_runner(unit, self, inputs_shared, inputs_posi, inputs_nega)
        return inputs_shared, inputs_posi, inputs_nega

    # -- what a family implements ------------------------------------------------------

    # ``*args: Any, **inputs: Any``: a type checker lets each family name the inputs it takes
    def model_fn(self, *args: Any, **inputs: Any) -> torch.Tensor:
        """Predict the flow (noise - x0) for ``inputs['latents']`` at ``inputs['timestep']``."""
        raise NotImplementedError

    def __call__(
        self,
        prompt: str,
        *,
        negative_prompt: str = "",
        height: int = 1024,
        width: int = 1024,
        num_inference_steps: int = 30,
        cfg_scale: float = 1.0,
        seed: int | None = None,
        progress: bool = True,
    ) -> Image.Image | list[Image.Image]:
        """Generate: what ``diffsynth generate`` and the sample images of a run call.

        ``diffsynth generate`` passes the keywords the user gave (``--steps`` is
        ``num_inference_steps``; a keyword left out keeps the family's default) plus the
        family's generate options (``FamilyOption`` names) as further keywords; sampling
        passes ``prompt``, ``seed``, ``height``, ``width``, ``num_inference_steps`` and
        ``progress=False``. A family overrides it with its own defaults and may accept more
        keywords. Returns a PIL image, or the frames of a clip for a video family (one with
        a default ``num_frames``); families may return other types for other ``output_type``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement __call__(prompt, ...): a family's "
            "pipeline must, for `diffsynth generate` and sample images"
        )

    def training_inputs(self, data: Mapping[str, Any]) -> tuple[Inputs, Inputs, Inputs]:
        """Map one data batch to ``(inputs_shared, inputs_posi, inputs_nega)`` as for inference."""
        raise NotImplementedError

    # -- shared helpers ------------------------------------------------------------------

    def load_models_to_device(self, names: Iterable[str]) -> None:
        for name in names:
            model = getattr(self, name, None)
            # .to() walks every submodule even when nothing moves: milliseconds per unit and step
            if isinstance(model, torch.nn.Module) and not _on_device(model, self.device):
                model.to(self.device)

    def check_resize_height_width(self, height: int, width: int) -> tuple[int, int]:
        """Round a requested size up to the model's multiples."""
        hf, wf = self.height_division_factor, self.width_division_factor
        return (height + hf - 1) // hf * hf, (width + wf - 1) // wf * wf

    def generate_noise(
        self,
        shape: tuple[int, ...],
        seed: int | None = None,
        rand_device: str | torch.device = "cpu",
        rand_torch_dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Noise from ``seed`` on ``rand_device`` (cpu by default, so a seed gives the same
        image on every machine), then moved to the pipeline's device and dtype."""
        generator = None if seed is None else torch.Generator(rand_device).manual_seed(seed)
        noise = torch.randn(shape, generator=generator, device=rand_device, dtype=rand_torch_dtype)
        return to_device(noise, self.device, self.torch_dtype)

    def preprocess_image(self, image: Any) -> torch.Tensor:
        """A PIL image, or a list of equally sized ones, as a (B, C, H, W) tensor in [-1, 1]."""
        import numpy as np

        images = image if isinstance(image, (list, tuple)) else [image]
        arrays = [np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]
        tensor = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0
        return to_device(tensor, self.device, self.torch_dtype)  # pinned, async on CUDA

    @staticmethod
    def tensor_to_images(tensor: torch.Tensor) -> list[Any]:
        """(B, C, H, W) in [-1, 1] -> PIL images."""
        from PIL import Image

        array = ((tensor.float().clamp(-1, 1) + 1) * 127.5).round().byte()
        return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in array]

    def cfg_combine(self, posi: torch.Tensor, nega: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        """Classifier-free guidance; families with a rescaled CFG override it."""
        return nega + cfg_scale * (posi - nega)

    @contextmanager
    def inference_schedule(
        self, num_inference_steps: int, denoising_strength: float = 1.0, **schedule: Any
    ) -> Iterator[None]:
        """Set the inference timesteps for the ``with`` block; a pipeline that was on its
        training schedule (a sample rendered during training) gets it back afterwards, even
        when generation fails. ``schedule``: e.g. ``image_seq_len`` for a dynamic shift."""
        was_training = self.scheduler.training
        self.scheduler.set_timesteps(num_inference_steps, denoising_strength, **schedule)
        try:
            yield
        finally:
            if was_training:
                self.scheduler.set_timesteps(self.scheduler.config.num_train_timesteps, training=True)

    def denoise(self, inputs_shared: Inputs, inputs_posi: Inputs, inputs_nega: Inputs, progress: bool = True) -> torch.Tensor:
        """The sampling loop over ``self.scheduler.timesteps``; returns the final latents."""
        from tqdm.auto import tqdm

        cfg_scale = inputs_shared.get("cfg_scale", 1.0)
        for t in tqdm(self.scheduler.timesteps, disable=not progress, desc="denoise"):
            timestep = t.unsqueeze(0).to(device=self.device, dtype=self.torch_dtype)
            pred = self.model_fn(**inputs_shared, **inputs_posi, timestep=timestep)
            if cfg_scale != 1.0:
                pred_nega = self.model_fn(**inputs_shared, **inputs_nega, timestep=timestep)
                pred = self.cfg_combine(pred, pred_nega, cfg_scale)
            inputs_shared["latents"] = self.scheduler.step(pred, t, inputs_shared["latents"])
        return inputs_shared["latents"]


def resolve_model_configs(
    family: ModelFamily, model_path: str | None = None, allow_pickle: bool = False
) -> dict[str, ModelConfig]:
    """The family's default files, from a local copy of the repository or from the hub."""
    configs = {}
    for component, files in family.model_files.items():
        if model_path is not None:
            configs[component] = ModelConfig(
                path=model_path, origin_file_pattern=files.origin_file_pattern, allow_pickle=allow_pickle
            )
        else:
            configs[component] = ModelConfig(
                model_id=files.model_id, origin_file_pattern=files.origin_file_pattern, allow_pickle=allow_pickle
            )
    return configs


def load_pipeline(
    family: ModelFamily | str,
    model_configs: Mapping[str, ModelConfig] | None = None,
    device: str = "cpu",
    torch_dtype: torch.dtype = torch.float32,
    model_path: str | None = None,
    options: Mapping[str, Any] | None = None,
    purpose: str = "python",
) -> BasePipeline:
    """Load ``family``'s pipeline with its loader, then add its units and contributed ones.

    ``model_configs`` None: the family's files under ``model_path``; a mapping loads exactly
    those models (``{}``: none, the pipeline and its units only, where the loader allows).
    ``options`` (the family options the user gave) and ``purpose`` (``train``, ``generate``
    or ``python``) are passed to the loader. A ``diffsynth_load_pipeline`` implementation that
    answers overrides the family's loader (cross-cutting plugins); ``diffsynth_pipeline_units``
    lets one plugin extend another's family.
    """
    from .plugins import get_plugin_manager

    manager = get_plugin_manager()
    if isinstance(family, str):
        family = manager.get_family(family)
    configs = (
        dict(model_configs) if model_configs is not None else resolve_model_configs(family, model_path)
    )
    arguments = {
        "model_configs": configs,
        "device": device,
        "torch_dtype": torch_dtype,
        "options": dict(options or {}),
        "purpose": purpose,
    }
    with family_loading(family, configs):  # another family's files: one error naming them
        pipe = manager.hook.diffsynth_load_pipeline(family=family, **arguments)
        if pipe is None:
            pipe = family.load(**arguments)
    if pipe is None:
        raise PluginError(
            f"model family {family.name!r} (provided by {family.plugin}) names no loader: its "
            "ModelFamily needs loader='package.module:function'"
        )
    pipe.family = family
    pipe.add_units(family.pipeline_units(pipe))
    for units in manager.hook.diffsynth_pipeline_units(family=family, pipe=pipe):
        pipe.add_units(units or [])
    return pipe
