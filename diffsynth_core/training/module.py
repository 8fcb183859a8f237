"""DiffusionTrainingModule and switch_pipe_to_training_mode (the seed's training API).

A training module owns a pipeline. ``__init__`` loads it and switches it to training mode
(freeze everything, then make some models trainable and/or inject LoRA); ``forward(data)``
fills the inputs exactly as for inference, runs every unit and returns the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch.utils.checkpoint import create_selective_checkpoint_contexts

from ..lora.inject import (
    bare_key,
    inject_lora,
    load_lora_weights,
    merge_lora,
    read_lora_file,
    split_targets,
)


# what --gradient-checkpointing-policy selective keeps from the forward: the outputs of the
# matrix products and of attention (the expensive ops); the pointwise ops between them
# (norms, modulation, activations, residual adds) are recomputed in backward
def _saved_ops() -> frozenset[Any]:
    aten = torch.ops.aten
    names = (
        "mm", "addmm", "bmm", "baddbmm", "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention", "_flash_attention_forward",
        "_efficient_attention_forward", "_scaled_mm",
    )  # fmt: skip
    return frozenset(getattr(aten, n).default for n in names if hasattr(aten, n))


CHECKPOINTING_POLICIES = ("full", "selective")


# a product with a shorter contraction (LoRA's B: the rank) costs fewer than this many
# multiply-adds per output element: recomputing it is as cheap as a pointwise op, keeping it is not
CHEAP_CONTRACTION = 64
_MATMULS = {"mm": 0, "bmm": 0, "addmm": 1, "baddbmm": 1}  # op -> index of its left factor


def _save_matmuls(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> Any:
    from torch.utils.checkpoint import CheckpointPolicy

    if op not in SAVED_OPS:
        return CheckpointPolicy.PREFER_RECOMPUTE
    left = _MATMULS.get(op.overloadpacket.__name__)
    if left is not None and args[left].shape[-1] < CHEAP_CONTRACTION:
        return CheckpointPolicy.PREFER_RECOMPUTE
    return CheckpointPolicy.MUST_SAVE


SAVED_OPS = _saved_ops()


def selective_context() -> Any:
    """``context_fn`` of torch's checkpoint for the selective policy (a fresh pair per call)."""
    return create_selective_checkpoint_contexts(_save_matmuls)


def _checkpoint_func(offload: bool, policy: str = "full") -> Callable[..., Any]:
    """The checkpoint runner for one setting: ``run(function, *args, **kwargs)``."""
    if policy not in CHECKPOINTING_POLICIES:
        raise ValueError(f"gradient checkpointing policy {policy!r}: use one of {CHECKPOINTING_POLICIES}")
    extra: dict[str, Any] = {"context_fn": selective_context} if policy == "selective" else {}

    def run(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not offload:
            return torch.utils.checkpoint.checkpoint(
                function, *args, use_reentrant=False, **extra, **kwargs
            )
        # recompute in backward, and keep the few saved activations in CPU memory meanwhile
        with torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available()):
            return torch.utils.checkpoint.checkpoint(
                function, *args, use_reentrant=False, **extra, **kwargs
            )

    return run


def set_gradient_checkpointing(
    model: torch.nn.Module, enabled: bool, offload: bool = False, policy: str = "full"
) -> None:
    """Switch gradient checkpointing of a diffusers model (cheap: call it every step).

    ``policy``: ``full`` recomputes each block whole in backward; ``selective`` keeps the
    outputs of its matrix products and attention and recomputes only the pointwise ops."""
    if not hasattr(model, "gradient_checkpointing"):
        return
    if enabled:
        # torch types Module.__setattr__ for tensors and modules; any value may be set
        model._gradient_checkpointing_func = _checkpoint_func(offload, policy)  # type: ignore[assignment]
    for module in model.modules():
        if hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = enabled  # type: ignore[assignment]  # as above
            if enabled:
                module._gradient_checkpointing_func = model._gradient_checkpointing_func


def gradient_checkpoint_forward(
    block: Callable[..., Any],
    use_gradient_checkpointing: bool,
    use_gradient_checkpointing_offload: bool,
    *args: Any,
    use_gradient_checkpointing_policy: str = "full",
    **kwargs: Any,
) -> Any:
    """Call ``block`` with checkpointing when training asks for it (hand-written model_fns)."""
    if not (torch.is_grad_enabled() and use_gradient_checkpointing):
        return block(*args, **kwargs)
    runner = _checkpoint_func(use_gradient_checkpointing_offload, use_gradient_checkpointing_policy)
    return runner(block, *args, **kwargs)


def switch_pipe_to_training_mode(
    pipe: Any,
    trainable_models: str | Iterable[str] | None = None,
    lora_base_model: str | None = None,
    lora_target_modules: str | Iterable[str] = "",
    lora_rank: int = 32,
    lora_checkpoint: str | None = None,
    preset_lora_path: str | None = None,
    preset_lora_model: str | None = None,
    task: str = "sft",
    *,
    lora_alpha: float | None = None,
    lora_dtype: torch.dtype = torch.float32,
    allow_pickle: bool = False,
    lora_dropout: float = 0.0,
    use_dora: bool = False,
    use_rslora: bool = False,
    lora_type: str = "lora",
) -> None:
    """Freeze the pipeline, then unfreeze ``trainable_models`` and/or add LoRA to one model.

    The positional order and names are DiffSynth-Studio's, so ported scripts work; our own
    options are keyword-only. ``lora_checkpoint`` continues from a LoRA file in any supported
    key form. ``preset_lora_path`` merges a LoRA into ``preset_lora_model`` (default: the LoRA
    base model) before training, as a fixed part of the base. A ``task`` ending in
    ``:data_process`` (the seed's feature-caching stage) adds no LoRA. ``lora_type`` (``lora``,
    ``lokr``, ``loha``), ``use_dora``, ``use_rslora`` and ``lora_dropout`` pick the peft
    adapter (:mod:`diffsynth_core.lora.variants`). The LoRA weights
    default to fp32 even over a bf16 base: small updates to bf16 weights round away.
    """
    pipe.scheduler.set_timesteps(pipe.scheduler.config.num_train_timesteps, training=True)
    pipe.requires_grad_(False)
    pipe.eval()
    family = getattr(pipe, "family", None)
    if preset_lora_path:
        target = _model(pipe, preset_lora_model or lora_base_model or "")
        merge_lora(target, read_lora_file(preset_lora_path, target, allow_pickle, family))
    for name in split_targets(trainable_models or ""):
        model = _model(pipe, name)
        model.requires_grad_(True)
        model.train()
    if lora_base_model and not task.endswith(":data_process"):
        model = _model(pipe, lora_base_model)
        inject_lora(
            model, lora_target_modules, lora_rank, lora_alpha, dtype=lora_dtype,
            dropout=lora_dropout, use_dora=use_dora, use_rslora=use_rslora, lora_type=lora_type,
        )  # fmt: skip
        model.train()
        if lora_checkpoint:
            lora = read_lora_file(lora_checkpoint, model, allow_pickle, family)
            load_lora_weights(model, lora, source=str(lora_checkpoint))


def _model(pipe: Any, name: str) -> torch.nn.Module:
    model = getattr(pipe, name, None)
    if not isinstance(model, torch.nn.Module):
        known = ", ".join(getattr(pipe, "model_names", ())) or "none"
        from ..errors import ConfigError

        raise ConfigError(f"the pipeline has no model {name!r} (models: {known})")
    return model


class DiffusionTrainingModule(torch.nn.Module):
    """Base of training modules: subclasses set ``self.pipe`` and implement ``forward``."""

    switch_pipe_to_training_mode = staticmethod(switch_pipe_to_training_mode)

    def trainable_modules(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_param_names(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.requires_grad}

    def export_trainable_state_dict(
        self, state_dict: Mapping[str, torch.Tensor] | None = None, remove_prefix: str | None = None
    ) -> dict[str, torch.Tensor]:
        """Trainable weights only, with ``remove_prefix`` cut and peft's ``.default`` dropped."""
        names = self.trainable_param_names()
        source = state_dict if state_dict is not None else self.state_dict()
        out = {}
        for name, value in source.items():
            if name not in names:
                continue
            if remove_prefix and name.startswith(remove_prefix):
                name = name[len(remove_prefix) :]
            out[bare_key(name)] = value
        return out

    def add_lora_to_model(
        self,
        model: torch.nn.Module,
        target_modules: str | Iterable[str],
        lora_rank: int,
        lora_alpha: float | None = None,
        upcast_dtype: torch.dtype | None = None,
    ) -> torch.nn.Module:
        """The seed's helper: inject LoRA (alpha defaults to the rank) in ``upcast_dtype``."""
        return inject_lora(
            model, target_modules, lora_rank, lora_alpha, upcast_dtype or torch.float32
        )

    def mapping_lora_state_dict(
        self, state_dict: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The seed's helper: LoRA keys in peft's in-model form (``lora_A.default.weight``),
        other keys dropped, so ``model.load_state_dict(..., strict=False)`` takes them."""
        out = {}
        for key, value in state_dict.items():
            bare = bare_key(key)
            for part in (".lora_A.weight", ".lora_B.weight"):
                if bare.endswith(part):
                    out[bare[: -len(".weight")] + ".default.weight"] = value
        return out

    def transfer_data_to_device(
        self, data: Any, device: Any, torch_float_dtype: torch.dtype | None = None
    ) -> Any:
        """Tensors in ``data`` (nested tuples, lists, dicts) moved to ``device``; float
        tensors also cast to ``torch_float_dtype`` when given (the seed's helper)."""
        if isinstance(data, torch.Tensor):
            data = data.to(device)
            return (
                data.to(torch_float_dtype)
                if torch_float_dtype and data.is_floating_point()
                else data
            )
        if isinstance(data, (tuple, list)):
            return type(data)(
                self.transfer_data_to_device(x, device, torch_float_dtype) for x in data
            )
        if isinstance(data, dict):
            return {
                k: self.transfer_data_to_device(v, device, torch_float_dtype)
                for k, v in data.items()
            }
        return data


class PipelineTrainingModule(DiffusionTrainingModule):
    """The module ``diffsynth train`` builds for any family: the seed's forward, generically.

    ``pipe.training_inputs(data)`` maps a batch to inference inputs; ``extra_inputs``
    (``cfg_scale=1``, gradient checkpointing flags, timestep boundaries ...) are added to the
    shared inputs; the loss comes from the loss hook (``--loss``).
    """

    def __init__(
        self,
        pipe: Any,
        loss_fn: Callable[..., torch.Tensor],
        extra_inputs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.pipe = pipe
        self.loss_fn = loss_fn
        self.extra_inputs = dict(extra_inputs or {})

    def initial_inputs(self, data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The three input dicts before any unit runs (``diffsynth cache`` starts from them too)."""
        inputs_shared, inputs_posi, inputs_nega = self.pipe.training_inputs(data)
        inputs_shared = {
            "cfg_scale": 1,
            "rand_device": self.pipe.device,
            **inputs_shared,
            **self.extra_inputs,
        }
        return inputs_shared, inputs_posi, inputs_nega

    def forward(self, data: Mapping[str, Any]) -> torch.Tensor:
        inputs_shared, inputs_posi, inputs_nega = self.initial_inputs(data)
        for unit in self.pipe.units:
            inputs_shared, inputs_posi, inputs_nega = self.pipe.unit_runner(
                unit, self.pipe, inputs_shared, inputs_posi, inputs_nega
            )
        return self.loss_fn(self.pipe, **inputs_shared, **inputs_posi)
