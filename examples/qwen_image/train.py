"""Qwen-Image LoRA training, written as in the seed's "simple" example.

    accelerate launch examples/qwen_image/train.py                  # Qwen/Qwen-Image from the hub
    accelerate launch examples/qwen_image/train.py models/qwen-image  # a local copy of the repo

The model folder comes from the first argument or ``QWEN_IMAGE_MODEL_PATH``; without either,
the files are fetched from the hub (``Qwen/Qwen-Image``, about 58 GB). To try it offline on the
tiny preset (random weights, the real classes):

    python -c "from diffsynth_qwen_image import build_tiny; build_tiny('models/qwen-image-tiny')"
    QWEN_IMAGE_SIZE=64 QWEN_IMAGE_REPEAT=1 QWEN_IMAGE_DTYPE=float32 \\
        accelerate launch examples/qwen_image/train.py models/qwen-image-tiny

The other settings (dataset, size, repeat, output, dtype) are environment variables whose
defaults are the seed's values.
"""

import os
import sys

import accelerate
import torch

from diffsynth_core import (
    DiffusionTrainingModule,
    FlowMatchSFTLoss,
    ModelLogger,
    UnifiedDataset,
    launch_training_task,
)
from diffsynth_qwen_image import ModelConfig, QwenImagePipeline

HERE = os.path.dirname(os.path.abspath(__file__))
DATASET = os.environ.get("QWEN_IMAGE_DATASET", os.path.join(HERE, "data"))
SIZE = int(os.environ.get("QWEN_IMAGE_SIZE", "512"))
REPEAT = int(os.environ.get("QWEN_IMAGE_REPEAT", "50"))
OUTPUT = os.environ.get("QWEN_IMAGE_OUTPUT", "models/toy_model")
DTYPE = getattr(torch, os.environ.get("QWEN_IMAGE_DTYPE", "bfloat16"))


def model_config(model_path, pattern):
    """A component of Qwen-Image: from the local folder when given, else from the hub."""
    if model_path:
        return ModelConfig(path=model_path, origin_file_pattern=pattern)
    return ModelConfig(model_id="Qwen/Qwen-Image", origin_file_pattern=pattern)


class QwenImageTrainingModule(DiffusionTrainingModule):
    def __init__(self, device, model_path=None):
        super().__init__()
        # Load the pipeline
        self.pipe = QwenImagePipeline.from_pretrained(
            torch_dtype=DTYPE,
            device=device,
            model_configs=[
                model_config(model_path, "transformer/diffusion_pytorch_model*.safetensors"),
                model_config(model_path, "text_encoder/model*.safetensors"),
                model_config(model_path, "vae/diffusion_pytorch_model.safetensors"),
            ],
            tokenizer_config=model_config(model_path, "tokenizer/"),
        )
        # Switch to training mode
        self.switch_pipe_to_training_mode(
            self.pipe,
            lora_base_model="dit",
            lora_target_modules="to_q,to_k,to_v,add_q_proj,add_k_proj,add_v_proj",
            lora_rank=32,
        )

    def forward(self, data):
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


if __name__ == "__main__":
    model_path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("QWEN_IMAGE_MODEL_PATH")
    accelerator = accelerate.Accelerator(
        kwargs_handlers=[accelerate.DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    dataset = UnifiedDataset(
        base_path=DATASET,
        metadata_path=os.path.join(DATASET, "metadata.csv"),
        repeat=REPEAT,
        data_file_keys="image",
        main_data_operator=UnifiedDataset.default_image_operator(
            base_path=DATASET,
            height=SIZE,
            width=SIZE,
            height_division_factor=16,
            width_division_factor=16,
        ),
    )
    model = QwenImageTrainingModule(accelerator.device, model_path)
    model_logger = ModelLogger(
        output_path=OUTPUT,
        remove_prefix_in_ckpt="pipe.dit.",
    )
    launch_training_task(
        accelerator,
        dataset,
        model,
        model_logger,
        learning_rate=1e-5,
        num_epochs=1,
    )
