"""``--distributed``: data-parallel (DDP), sharded (FSDP2) or DeepSpeed ZeRO-2/3 training, all
through accelerate's own engines (``Accelerator(fsdp_plugin=...)`` / ``deepspeed_plugin=...``).

* :func:`make_accelerator` builds the run's Accelerator for a mode; without one
  (``--distributed`` not given) accelerate's launch configuration decides, as in a seed script.
* :func:`prepare_sharding` runs just before ``accelerator.prepare``: every process starts from
  the main process's trainable weights (each process seeded its LoRA initialisation with
  ``seed + rank``; DDP broadcasts the weights itself, sharding would keep a mix of the ranks'
  initialisations), FSDP wraps the family's declared transformer blocks
  (``ModelFamily.blocks``) and leaves the frozen models it does not shard replicated.
* :func:`gathered_state_dict` collects the trainable weights for a checkpoint: under FSDP only
  the trainable ones are gathered (onto the main process, in CPU memory), never the frozen base.

accelerate turns FSDP on only on accelerator devices. On CPU processes (tests, the CPU bench)
the same plugin is switched on after the Accelerator is built (:func:`_fsdp_on_cpu`);
``fully_shard`` runs over gloo there, and preparation, ``save_state``/``load_state`` and the
state-dict gathering are accelerate's and torch's own code either way.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, cast

import torch

from ..errors import ConfigError
from .settings import BY_NAME

MODES = BY_NAME["distributed"].choices  # ddp, fsdp, deepspeed-zero2, deepspeed-zero3
_PURPOSE = "--distributed fsdp"


def launched_mode() -> str | None:
    """The engine ``accelerate launch`` was configured for: "fsdp", "deepspeed" or None."""
    for name, mode in (("ACCELERATE_USE_FSDP", "fsdp"), ("ACCELERATE_USE_DEEPSPEED", "deepspeed")):
        if os.environ.get(name, "false").lower() == "true":
            return mode
    return None


def check_mode(mode: str | None) -> None:
    """One clear error when the mode cannot run here (before any model is loaded)."""
    if mode is None:
        return
    launched = launched_mode()
    if launched is not None and not mode.startswith(launched):
        raise ConfigError(
            f"--distributed {mode}, but accelerate launch was configured for {launched}: "
            "give one of them (drop --distributed, or launch without that accelerate config)"
        )
    if mode.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            f"--distributed {mode} needs DeepSpeed, which is not installed: `pip install "
            "deepspeed` on a machine with CUDA GPUs, or use --distributed fsdp"
        )


def make_accelerator(
    mode: str | None,
    mixed_precision: str | None = None,
    gradient_accumulation_steps: int = 1,
    batch_size: int = 1,
    max_grad_norm: float | None = None,
    trackers: dict[str, Any] | None = None,
) -> Any:
    """The run's Accelerator for ``mode`` (None: accelerate's launch configuration decides);
    ``trackers``: accelerate's ``log_with`` / ``project_dir`` (training/trackers.py)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    check_mode(mode)
    # find_unused_parameters as in the seed: a family may leave some trainable branch unused
    common: dict[str, Any] = {
        "mixed_precision": mixed_precision,  # None: `accelerate launch` / `accelerate config`
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "kwargs_handlers": [DistributedDataParallelKwargs(find_unused_parameters=True)],
        **(trackers or {}),  # nothing is written before init_trackers
    }
    if mode == "fsdp":
        # --mixed-precision, else what `accelerate launch --mixed_precision` said
        plugin = fsdp_plugin(mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION"))
        before = os.environ.get("ACCELERATE_USE_FSDP")
        accelerator = Accelerator(fsdp_plugin=plugin, **common)  # sets ACCELERATE_USE_FSDP=true
        _fsdp_on_cpu(accelerator, plugin)
        if not kind(accelerator):  # one process, unsharded: a later run here is not FSDP
            _restore_env("ACCELERATE_USE_FSDP", before)
        return accelerator
    if mode is not None and mode.startswith("deepspeed"):
        stage = int(mode[-1])
        config = deepspeed_config(stage, gradient_accumulation_steps, batch_size, max_grad_norm)
        return Accelerator(deepspeed_plugin=deepspeed_plugin(config), **common)
    return Accelerator(**common)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def fsdp_plugin(mixed_precision: str | None = None) -> Any:
    """accelerate's FSDP2 plugin: blocks wrapped (their class names are filled in by
    :func:`prepare_sharding`), sharded states; under bf16/fp16 the weights are gathered in
    that precision for compute while the sharded trainable weights, their gradients (reduced
    in fp32) and the optimizer states stay fp32."""
    from accelerate import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import MixedPrecisionPolicy

    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision or "")
    policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32) if low else None
    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        state_dict_type="SHARDED_STATE_DICT",
        reshard_after_forward=True,
        cpu_ram_efficient_loading=False,
        mixed_precision_policy=policy,
    )


def deepspeed_config(
    stage: int, gradient_accumulation_steps: int, batch_size: int, max_grad_norm: float | None
) -> dict[str, Any]:
    """The DeepSpeed config of ZeRO ``stage``; bf16/fp16 are filled in by accelerate from
    ``--mixed-precision``. The batch sizes are given: the runner's DataLoader is its own, so
    accelerate cannot infer them."""
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:  # the final checkpoint gathers the full weights onto the main process
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "gradient_clipping": max_grad_norm or 0.0,  # 0: no clipping (DeepSpeed clips itself)
        "zero_optimization": zero,
    }


def deepspeed_plugin(config: dict[str, Any]) -> Any:
    from accelerate.utils import DeepSpeedPlugin

    return DeepSpeedPlugin(hf_ds_config=config)


def _fsdp_on_cpu(accelerator: Any, plugin: Any) -> None:
    """Switch accelerate's FSDP on for CPU processes over gloo (see the module docstring)."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        return  # one process (nothing to shard), or accelerate already chose FSDP
    # AcceleratorState copies PartialState's fields whenever it is instantiated: set both
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)


def kind(accelerator: Any) -> str:
    """"fsdp", "deepspeed" or "" (not sharded) for this accelerator."""
    name = str(getattr(accelerator, "distributed_type", "NO")).rsplit(".", 1)[-1]  # fakes have none
    return {"FSDP": "fsdp", "DEEPSPEED": "deepspeed"}.get(name, "")


def prepare_sharding(accelerator: Any, model: torch.nn.Module, opts: Any = None) -> None:
    """Before ``accelerator.prepare`` of a sharded run (see the module docstring)."""
    sharded = kind(accelerator)
    if not sharded:
        return
    if opts is not None and getattr(opts, "sample_prompts", None):
        raise ConfigError(
            f"sample images are not made under sharded training ({sharded}): leave out "
            "--sample-prompts and make samples from the saved checkpoints with `diffsynth generate`"
        )
    if accelerator.num_processes > 1:
        broadcast_trainable(model)
    if sharded == "fsdp":
        _wrap_blocks(accelerator.state.fsdp_plugin, model)


def broadcast_trainable(model: torch.nn.Module) -> None:
    """Every process takes the main process's trainable weights (collective)."""
    import torch.distributed as dist

    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                dist.broadcast(param.data, src=0)


def _wrap_blocks(plugin: Any, model: torch.nn.Module) -> None:
    """FSDP units per declared block; frozen models without blocks stay whole (ignored)."""
    if plugin.transformer_cls_names_to_wrap:
        return  # the accelerate config names the classes itself
    pipe = getattr(model, "pipe", None)
    if pipe is None:
        raise ConfigError(
            f"{_PURPOSE}: the training module has no .pipe whose family declares its blocks; "
            "name them in the accelerate config (fsdp_transformer_layer_cls_to_wrap)"
        )
    from ..blocks import block_lists, repeated_blocks

    found = {name: getattr(pipe, name, None) for name in getattr(pipe, "model_names", ())}
    models = {n: m for n, m in found.items() if isinstance(m, torch.nn.Module)}
    trained = [n for n, m in models.items() if any(p.requires_grad for p in m.parameters())]
    names: set[str] = set()
    for name in trained:
        names |= {type(block).__name__ for block in repeated_blocks(pipe, name, _PURPOSE)}
    for name in models:  # the frozen models' declared blocks are sharded too
        names |= {type(block).__name__ for blocks in block_lists(pipe, name) for block in blocks}
    plugin.transformer_cls_names_to_wrap = sorted(names)
    # a frozen text encoder or VAE is called outside forward() (vae.encode): replicated, as
    # under DDP, it needs no gathering and is never left sharded
    frozen = [m for n, m in models.items() if n not in trained and not block_lists(pipe, n)]
    plugin.ignored_modules = frozen or None


def gathered_state_dict(accelerator: Any, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights a checkpoint is made from, collected on every process (collective). Under
    FSDP2: the trainable weights only, full, in CPU memory on the main process (the other
    processes get an empty dict)."""
    if kind(accelerator) == "fsdp" and getattr(accelerator, "is_fsdp2", False):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        return cast(dict[str, torch.Tensor], get_model_state_dict(model, options=options))
    return dict(accelerator.get_state_dict(model))
