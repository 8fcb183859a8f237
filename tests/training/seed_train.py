"""A training script in the seed's shape, for the toy family; run it with `accelerate launch`.

    accelerate launch --cpu --num_processes 2 tests/training/seed_train.py TINY DATA OUTPUT DUMP

Besides training, it records which process wrote which file (DUMP/writes-rank<r>.txt) and
each process's final LoRA weights (DUMP/rank<r>.safetensors), for test_multiprocess.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import accelerate
import torch

from diffsynth_core.data import UnifiedDataset
from diffsynth_core.loading import ModelConfig
from diffsynth_core.pipeline import load_pipeline
from diffsynth_core.testing import use_toy_plugin
from diffsynth_core.training.logger import ModelLogger
from diffsynth_core.training.losses import FlowMatchSFTLoss
from diffsynth_core.training.module import DiffusionTrainingModule
from diffsynth_core.training.runner import launch_training_task


class ToyTrainingModule(DiffusionTrainingModule):
    def __init__(self, tiny: str, device: Any) -> None:
        super().__init__()
        # Load the pipeline
        self.pipe = load_pipeline(
            "toy",
            model_configs={
                "dit": ModelConfig(
                    path=tiny,
                    origin_file_pattern="transformer/diffusion_pytorch_model*.safetensors",
                ),
                "vae": ModelConfig(
                    path=tiny, origin_file_pattern="vae/diffusion_pytorch_model.safetensors"
                ),
                "text_encoder": ModelConfig(
                    path=tiny, origin_file_pattern="text_encoder/model*.safetensors"
                ),
                "tokenizer": ModelConfig(path=tiny, origin_file_pattern="tokenizer/"),
            },
            device=str(device),
        )
        # Switch to training mode
        self.switch_pipe_to_training_mode(
            self.pipe,
            lora_base_model="dit",
            lora_target_modules="to_q,to_k,to_v,to_out",
            lora_rank=4,
        )

    def forward(self, data: dict[str, Any]) -> torch.Tensor:
        # Preprocess
        inputs_posi = {"prompt": data["prompt"]}
        inputs_nega = {"negative_prompt": ""}
        inputs_shared = {
            # Assume you are using this pipeline for inference,
            # please fill in the input parameters.
            "input_image": data["image"],
            "height": data["image"].size[1],
            "width": data["image"].size[0],
            # Please do not modify the following parameters
            # unless you clearly know what this will cause.
            "cfg_scale": 1,
            "rand_device": self.pipe.device,
            "use_gradient_checkpointing": True,
            "use_gradient_checkpointing_offload": False,
        }
        for unit in self.pipe.units:
            inputs_shared, inputs_posi, inputs_nega = self.pipe.unit_runner(
                unit, self.pipe, inputs_shared, inputs_posi, inputs_nega
            )
        # Loss
        loss = FlowMatchSFTLoss(self.pipe, **inputs_shared, **inputs_posi)
        return loss


def record_writes(dump: Path, rank: int) -> None:
    """Log every checkpoint and state this process publishes."""
    import diffsynth_core.training.logger as logger_module
    from diffsynth_core.training.state import TrainingStates

    log = dump / f"writes-rank{rank}.txt"
    log.touch()
    write, publish = logger_module.atomic_write, TrainingStates._publish

    def recorded_write(path: Any, writer: Any) -> Any:
        with log.open("a") as handle:
            handle.write(f"{Path(path).name}\n")
        return write(path, writer)

    def recorded_publish(self: Any, tmp: Path, final: Path) -> None:
        with log.open("a") as handle:
            handle.write(f"state/{final.name}\n")
        publish(self, tmp, final)

    logger_module.atomic_write = recorded_write
    TrainingStates._publish = recorded_publish  # type: ignore[method-assign]


if __name__ == "__main__":
    tiny, data, output, dump = sys.argv[1:5]
    torch.set_num_threads(1)
    use_toy_plugin()
    accelerator = accelerate.Accelerator(
        kwargs_handlers=[accelerate.DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    record_writes(Path(dump), accelerator.process_index)
    dataset = UnifiedDataset(
        base_path=data,
        metadata_path=f"{data}/metadata.csv",
        repeat=2,
        data_file_keys="image",
        main_data_operator=UnifiedDataset.default_image_operator(
            base_path=data,
            height=32,
            width=32,
            height_division_factor=16,
            width_division_factor=16,
        ),
    )
    model = ToyTrainingModule(tiny, accelerator.device)
    model_logger = ModelLogger(
        output_path=output,
        remove_prefix_in_ckpt="pipe.dit.",
    )
    result = launch_training_task(
        accelerator, dataset, model, model_logger,
        learning_rate=1e-3, num_epochs=2, progress=False, save_every_n_steps=3,
    )  # fmt: skip
    from safetensors.torch import save_file

    weights = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(
        weights,
        f"{dump}/rank{accelerator.process_index}.safetensors",
        metadata={"steps": str(result.steps)},
    )
