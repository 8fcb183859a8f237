"""Where a ControlNet's files are: its repository, its weights file, its folder in a local
Qwen-Image copy.

Import-light (no torch), and importing nothing of this package: the family
(:mod:`.family`), the models (:mod:`.models`) and the tiny preset (:mod:`.tiny`) all read it.
"""

from __future__ import annotations

CONTROLNET_REPO = "InstantX/Qwen-Image-ControlNet-Union"
# The InstantX repositories are flat: config.json + this file at the root.
CONTROLNET_FILE = "diffusion_pytorch_model.safetensors"
# Inside a local Qwen-Image copy saved by diffusers' QwenImageControlNetPipeline.
CONTROLNET_SUBFOLDER = "controlnet"
