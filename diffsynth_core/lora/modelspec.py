"""The SAI model spec keys (``modelspec.*``) of a LoRA or checkpoint file's metadata.

ComfyUI's and the model hubs' loaders show these (Stability-AI/ModelSpec, version 1.0.0):
the MUST keys ``sai_model_spec``, ``architecture``, ``implementation`` and ``title``, and
``author``, ``description``, ``date``, ``resolution`` and ``trigger_phrase`` when known.
The architecture is the family's name, with ``/lora`` (``/lokr``, ``/loha``) for an adapter
as kohya's trainers write it; the implementation is the codebase whose key names the file
uses (the ``--lora-format``). Import-light: no torch.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass

SPEC_VERSION = "1.0.0"
# --lora-format -> the codebase whose names the keys are in
IMPLEMENTATIONS = {
    "diffusers": "https://github.com/huggingface/diffusers",
    "comfyui": "https://github.com/comfyanonymous/ComfyUI",
    "peft": "https://github.com/huggingface/peft",
}


@dataclass(frozen=True)
class ModelSpec:
    """What the user and the run say about the model (``--metadata-*``, size, trigger)."""

    title: str
    author: str | None = None
    description: str | None = None
    resolution: tuple[int, int] | None = None  # (width, height)
    trigger_phrase: str | None = None

    def keys(
        self, family: str | None, export_format: str, lora_type: str | None
    ) -> dict[str, str]:
        """The ``modelspec.*`` entries for one file (``lora_type`` None: full weights)."""
        architecture = family or "unknown"
        if lora_type:
            architecture += f"/{lora_type}"
        out: Mapping[str, str | None] = {
            "sai_model_spec": SPEC_VERSION,
            "architecture": architecture,
            "implementation": IMPLEMENTATIONS.get(export_format, export_format),
            "title": self.title,
            "author": self.author,
            "description": self.description,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "resolution": f"{self.resolution[0]}x{self.resolution[1]}" if self.resolution else None,
            "trigger_phrase": self.trigger_phrase,
        }
        return {f"modelspec.{k}": v for k, v in out.items() if v}
