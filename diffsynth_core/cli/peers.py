"""The settings of DiffSynth-Studio, musubi-tuner, kohya's sd-scripts and ai-toolkit, by
their own names: what each is called in ``diffsynth train``, or why it has no equivalent.

Two users: ``diffsynth train``, which refuses a flag or config key spelt as a peer spells it
(``--learning_rate``, ``dataset_base_path``, ``network_dim``) with one line naming our
spelling, and ``diffsynth convert-config``, which rewrites a peer's file as our TOML.

A target names a setting of training/settings.py; where that setting is not declared (in an
installation without it), the peer name reads as having no equivalent. Light: no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DS, MUSUBI, KOHYA, AITK = "DiffSynth-Studio", "musubi-tuner", "kohya's sd-scripts", "ai-toolkit"


@dataclass(frozen=True)
class Peer:
    """One peer setting: our setting it becomes (None: no equivalent), and how its value
    converts (``convert(value) -> {our name: value}``; default: the same value)."""

    target: str | None
    tools: str
    note: str = ""
    convert: Callable[[Any], dict[str, Any]] | None = None


def _inverted_boundary(target: str) -> Callable[[Any], dict[str, Any]]:
    # musubi's min/max_timestep are t in [0, 1000] with 1000 the noise end; our boundaries are
    # fractions of the schedule from the noise end: min_timestep 200 -> max boundary 0.8
    return lambda value: {target: round(1 - float(value) / 1000, 6)}


def _switch(target: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {target: value is True or str(value).lower() in ("", "1", "true", "yes")}


def _weighting(value: Any) -> dict[str, Any]:
    """musubi's --weighting_scheme: a loss weight, or (SD3's) a way of drawing timesteps."""
    table = {"none": {"loss_weighting": "none"}, "cosmap": {"loss_weighting": "cosmap"},
             "logit_normal": {"timestep_sampling": "logit-normal"}, "mode": {"timestep_sampling": "mode"}}  # fmt: skip
    return table.get(str(value), {})


def _sampling(value: Any) -> dict[str, Any]:
    """musubi's and ai-toolkit's timestep methods: ours where one matches."""
    table = {"uniform": "uniform", "sigmoid": "sigmoid", "shift": "shift", "linear": "uniform",
             "logit_normal": "logit-normal", "mode": "mode"}  # fmt: skip
    return {"timestep_sampling": table[str(value)]} if str(value) in table else {}


OPTIMIZERS = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD", "adamw8bit": "bitsandbytes.optim.AdamW8bit"}


def _optimizer(value: Any) -> dict[str, Any]:
    """A peer's optimizer name (``adamw8bit``, ``AdamW8bit``) as ours (a dotted class path)."""
    return {"optimizer": OPTIMIZERS.get(str(value).lower(), str(value))}


_SAME = (
    "learning_rate", "num_epochs", "max_steps", "batch_size", "gradient_accumulation_steps",
    "lr_scheduler", "max_grad_norm", "seed", "mixed_precision", "weight_decay", "height", "width",
    "num_frames", "max_pixels", "data_file_keys", "trainable_models", "lora_base_model",
    "lora_target_modules", "lora_rank", "lora_checkpoint", "gradient_checkpointing",
    "min_timestep_boundary", "max_timestep_boundary", "sample_prompts", "save_every_n_steps",
    "timestep_sampling", "logit_mean", "logit_std", "mode_scale", "sigmoid_scale", "loss_type",
    "caption_extension", "keep_tokens", "trigger_word", "resume", "optimizer",
)  # fmt: skip

PEERS: dict[str, Peer] = {
    # DiffSynth-Studio's train.py
    "dataset_base_path": Peer("dataset", DS),
    "dataset_metadata_path": Peer("metadata", DS),
    "dataset_repeat": Peer("repeat", DS),
    "dataset_num_workers": Peer("num_workers", DS),
    "output_path": Peer("output", DS),
    "save_steps": Peer("save_every_n_steps", DS),
    "use_gradient_checkpointing": Peer("gradient_checkpointing", DS, convert=_switch("gradient_checkpointing")),
    "use_gradient_checkpointing_offload": Peer(
        "gradient_checkpointing_offload", DS, convert=_switch("gradient_checkpointing_offload")
    ),
    "model_paths": Peer(None, DS, "give --model-path DIR, the model's repository folder in the official layout"),
    "model_id_with_origin_paths": Peer(None, DS, "--model picks the family, whose default hub files are used"),
    "tokenizer_path": Peer(None, DS, "the tokenizer is read from --model-path"),
    "processor_path": Peer(None, DS, "the processor is read from --model-path"),
    "remove_prefix_in_ckpt": Peer(None, DS, "the family names its checkpoint keys"),
    "extra_inputs": Peer(None, DS, "the family's units take their inputs (family options: `diffsynth models`)"),
    "find_unused_parameters": Peer(None, DS, "always on under data parallelism"),
    "align_to_opensource_format": Peer(None, DS, "use --lora-format (diffusers, comfyui, peft)"),
    "task": Peer(None, DS, "use --loss"),
    # musubi-tuner and kohya's sd-scripts
    "output_dir": Peer("output", f"{MUSUBI}, {KOHYA}"),
    "max_train_epochs": Peer("num_epochs", f"{MUSUBI}, {KOHYA}"),
    "max_train_steps": Peer("max_steps", f"{MUSUBI}, {KOHYA}"),
    "train_batch_size": Peer("batch_size", f"{MUSUBI}, {KOHYA}"),
    "network_dim": Peer("lora_rank", f"{MUSUBI}, {KOHYA}"),
    "network_alpha": Peer("lora_alpha", f"{MUSUBI}, {KOHYA}"),
    "network_dropout": Peer("lora_dropout", f"{MUSUBI}, {KOHYA}"),
    "network_weights": Peer("lora_checkpoint", f"{MUSUBI}, {KOHYA}"),
    "network_module": Peer(None, f"{MUSUBI}, {KOHYA}", "LoRA is built in (--lora-rank, --lora-target-modules)"),
    "network_args": Peer(None, f"{MUSUBI}, {KOHYA}", "give --lora-target-modules and --lora-alpha"),
    "optimizer_type": Peer("optimizer", f"{MUSUBI}, {KOHYA}", convert=_optimizer),
    "optimizer_args": Peer(None, f"{MUSUBI}, {KOHYA}", "only --weight-decay is passed to the optimizer"),
    "lr_warmup_steps": Peer("warmup_steps", f"{MUSUBI}, {KOHYA}"),
    "save_every_n_epochs": Peer(None, f"{MUSUBI}, {KOHYA}", "a checkpoint is written at every epoch end"),
    "save_state": Peer(None, f"{MUSUBI}, {KOHYA}", "training states are always saved with checkpoints"),
    "sample_every_n_steps": Peer("sample_every", f"{MUSUBI}, {KOHYA}"),
    "sample_every_n_epochs": Peer(None, f"{MUSUBI}, {KOHYA}", "use --sample-every N (steps)"),
    "discrete_flow_shift": Peer("flow_shift", MUSUBI),
    "weighting_scheme": Peer("loss_weighting", MUSUBI, convert=_weighting),
    "min_timestep": Peer("max_timestep_boundary", MUSUBI, "1 - min_timestep / 1000", _inverted_boundary("max_timestep_boundary")),
    "max_timestep": Peer("min_timestep_boundary", MUSUBI, "1 - max_timestep / 1000", _inverted_boundary("min_timestep_boundary")),
    "huber_c": Peer("huber_delta", KOHYA),
    "max_data_loader_n_workers": Peer("num_workers", f"{MUSUBI}, {KOHYA}"),
    "persistent_data_loader_workers": Peer(None, f"{MUSUBI}, {KOHYA}", "workers are started per epoch"),
    # musubi-tuner's single checkpoint files (diffsynth train: --transformer / --vae FILE)
    "dit": Peer("transformer", MUSUBI),
    "vae": Peer("vae", MUSUBI),
    "text_encoder": Peer("text_encoder", MUSUBI),
    "pretrained_model_name_or_path": Peer(None, KOHYA, "give --model-path DIR"),
    "dataset_config": Peer(None, f"{MUSUBI}, {KOHYA}", "`diffsynth convert-config FILE` converts it"),
    "output_name": Peer(None, f"{MUSUBI}, {KOHYA}", "files are named by kind and step (final.safetensors ...)"),
    "logging_dir": Peer(None, f"{MUSUBI}, {KOHYA}", "logs go to OUTPUT/logs"),
    "sdpa": Peer(None, f"{MUSUBI}, {KOHYA}", "attention is diffusers' (PyTorch SDPA)"),
    "xformers": Peer(None, f"{MUSUBI}, {KOHYA}", "attention is diffusers' (PyTorch SDPA)"),
    "fp8_base": Peer(None, MUSUBI, "no fp8 base option in this installation"),
    "blocks_to_swap": Peer("blocks_to_swap", MUSUBI),
    "shuffle_caption": Peer("shuffle_tags", f"{MUSUBI}, {KOHYA}", convert=_switch("shuffle_tags")),
    "caption_dropout_rate": Peer("caption_dropout", f"{KOHYA}, {AITK}"),
    "num_repeats": Peer("repeat", f"{MUSUBI}, {KOHYA}, {AITK}"),
    "image_directory": Peer("dataset", MUSUBI),
    "image_dir": Peer("dataset", KOHYA),
    "enable_bucket": Peer(None, f"{MUSUBI}, {KOHYA}", "batches above 1 group same-size images by themselves"),
    "bucket_no_upscale": Peer(None, f"{MUSUBI}, {KOHYA}", "images are only scaled down to --max-pixels"),
    "cache_directory": Peer(None, MUSUBI, "--cache-features keeps frozen-unit outputs in memory"),
    "noise_offset": Peer(None, KOHYA, "no noise offset"),
}
for _name in _SAME:
    PEERS.setdefault(_name, Peer(_name, f"{DS}, {MUSUBI}"))
PEERS["timestep_sampling"] = Peer("timestep_sampling", MUSUBI, convert=_sampling)


def _declared() -> set[str]:
    from ..training.settings import BY_NAME

    return set(BY_NAME)


def target_of(name: str) -> str | None:
    """Our setting for peer setting ``name`` (dashes or underscores), if this installation
    declares it; a peer name that is ours with underscores for dashes maps to itself."""
    key = name.lstrip("-").replace("-", "_")
    declared = _declared()
    peer = PEERS.get(key)
    if peer is not None:
        return peer.target if peer.target in declared else None
    return key if key in declared else None


def flag_suggestion(token: str) -> str | None:
    """The one-line refusal of a flag spelt as a peer spells it (``--learning_rate``,
    ``--output_dir``), or None when ``token`` is no peer's."""
    flag = token.partition("=")[0]
    key = flag[2:].replace("-", "_")
    if not flag.startswith("--") or ("_" not in flag and (key not in PEERS or key in _declared())):
        return None  # not a peer's spelling (nor ours with underscores), or our own flag
    target = target_of(key)
    if target is not None:
        ours = "--" + target.replace("_", "-")
        if target == key:
            return f"{flag}: diffsynth train's flags are spelt with dashes: {ours}"
        return f"{flag} is the spelling of {_whose(key)}; diffsynth train's flag is {ours}{_how(key)}"
    if key in PEERS:
        return f"{flag} (of {_whose(key)}) has no equivalent in diffsynth train: {_why(key)}"
    return None


def key_suggestion(key: str, where: str) -> str | None:
    """The refusal of a config-file key spelt as a peer spells it (``dataset_base_path``)."""
    name = key.replace("-", "_")
    if name not in PEERS:
        return None
    target = target_of(name)
    if target is not None:
        return f"{key} in {where} is the spelling of {_whose(name)}; diffsynth train's key is {target}{_how(name)}"
    return f"{key} in {where} (of {_whose(name)}) has no equivalent in diffsynth train: {_why(name)}"


def _whose(key: str) -> str:
    tools = PEERS[key].tools.split(", ") if key in PEERS else [DS]
    return " and ".join(tools) if len(tools) < 3 else ", ".join(tools[:-1]) + " and " + tools[-1]


def _how(key: str) -> str:
    peer = PEERS.get(key)
    return f" (= {peer.note})" if peer and peer.note and peer.target else ""


def _why(key: str) -> str:
    peer = PEERS[key]
    return peer.note or f"this installation has no {peer.target} setting"
