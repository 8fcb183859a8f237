"""The toy family's models: a tiny transformer denoiser, a fixed "VAE" and a hashed-word encoder.

They are small enough to train in milliseconds on a CPU, yet shaped like the real thing: the
denoiser has attention blocks with ``to_q/to_k/to_v/to_out`` projections (LoRA targets named
as in diffusers), the VAE maps 4x4 pixel patches to 4 latent channels and back, and the text
encoder maps a prompt to one embedding vector. Each model saves to and loads from a
``config.json`` plus a safetensors file, like a component folder of an official repository.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..training.module import gradient_checkpoint_forward


def timestep_embedding(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of ``timestep`` (0-1000 scale), as diffusion models use."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=timestep.device) / half)
    args = timestep.float().reshape(-1, 1) * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ToyBlock(nn.Module):
    """Self-attention over latent pixels, then an MLP, both modulated by the conditioning."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.to_q, self.to_k, self.to_v, self.to_out = (nn.Linear(dim, dim) for _ in range(4))
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x) + cond[:, None]
        b, n, d = h.shape
        q, k, v = (
            p(h).reshape(b, n, self.num_heads, -1).transpose(1, 2)
            for p in (self.to_q, self.to_k, self.to_v)
        )
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.to_out(attn)
        return x + self.ff(self.norm2(x) + cond[:, None])


class ToyDiT(nn.Module):
    """Predicts the flow (noise - x0) of latents ``(B, C, h, w)`` given a timestep and a text vector."""

    def __init__(
        self,
        in_channels: int = 4,
        dim: int = 32,
        text_dim: int = 16,
        num_layers: int = 2,
        num_heads: int = 2,
    ) -> None:
        super().__init__()
        self.config = {
            "in_channels": in_channels,
            "dim": dim,
            "text_dim": text_dim,
            "num_layers": num_layers,
            "num_heads": num_heads,
        }
        self.proj_in = nn.Linear(in_channels, dim)
        self.time_embed = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.text_proj = nn.Linear(text_dim, dim)
        self.transformer_blocks = nn.ModuleList(ToyBlock(dim, num_heads) for _ in range(num_layers))
        self.norm_out = nn.LayerNorm(dim)
        self.proj_out = nn.Linear(dim, in_channels)

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text_emb: torch.Tensor,
        use_gradient_checkpointing: bool = False,
        use_gradient_checkpointing_offload: bool = False,
    ) -> torch.Tensor:
        b, c, h, w = latents.shape
        x = self.proj_in(latents.flatten(2).transpose(1, 2))
        t = timestep.reshape(-1).expand(b) if timestep.numel() == 1 else timestep
        cond = self.time_embed(timestep_embedding(t, x.shape[-1]).to(x.dtype)) + self.text_proj(
            text_emb
        )
        for block in self.transformer_blocks:
            x = gradient_checkpoint_forward(
                block, use_gradient_checkpointing, use_gradient_checkpointing_offload, x, cond
            )
        x = self.proj_out(self.norm_out(x))
        return x.transpose(1, 2).reshape(b, c, h, w)


class ToyVAE(nn.Module):
    """A fixed linear autoencoder: 4x4 average pooling, 3 -> 4 channels; decode inverts it."""

    factor = 4

    def __init__(self, latent_channels: int = 4) -> None:
        super().__init__()
        self.config = {"latent_channels": latent_channels}
        self.encoder = nn.Conv2d(3, latent_channels, 1)
        self.decoder = nn.Conv2d(latent_channels, 3, 1)

    def tie_decoder(self) -> None:
        """Make decode(encode(x)) reproduce x's pooled colours (pseudo-inverse of the encoder)."""
        w = self.encoder.weight.detach()[:, :, 0, 0]
        inverse = torch.linalg.pinv(w)
        self.decoder.weight.data = inverse[:, :, None, None].clone()
        bias, encoder_bias = self.decoder.bias, self.encoder.bias
        assert bias is not None and encoder_bias is not None  # both convolutions have a bias
        bias.data = -(inverse @ encoder_bias.detach())

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(F.avg_pool2d(image, self.factor))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.decoder(latents), scale_factor=self.factor, mode="nearest")


class ToyTokenizer:
    """Words -> ids by CRC32: no vocabulary file, the same ids on every machine."""

    def __init__(self, vocab_size: int = 256) -> None:
        self.vocab_size = vocab_size

    def __call__(self, text: str) -> list[int]:
        # id 0 starts every prompt, so even an empty prompt has one token to average
        words = text.lower().split()
        return [0] + [1 + zlib.crc32(w.encode()) % (self.vocab_size - 1) for w in words]


class ToyTextEncoder(nn.Module):
    """Mean of learned word embeddings: one vector per prompt."""

    def __init__(self, vocab_size: int = 256, dim: int = 16) -> None:
        super().__init__()
        self.config = {"vocab_size": vocab_size, "dim": dim}
        self.embedding = nn.Embedding(vocab_size, dim)

    def forward(self, ids: list[list[int]]) -> torch.Tensor:
        device = self.embedding.weight.device
        return torch.stack([self.embedding(torch.tensor(i, device=device)).mean(0) for i in ids])


def save_component(model: nn.Module, folder: Path, weights_name: str) -> None:
    """Write ``config.json`` and the weights, as one folder of a diffusers repository."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(model.config, indent=2))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / weights_name), metadata={"format": "pt"})


def load_component(
    cls: type[nn.Module], files: list[Path], dtype: torch.dtype, device: str | torch.device
) -> Any:
    """Build ``cls`` from the config.json and safetensors among ``files``."""
    from ..errors import ModelFileError
    from ..loading import load_state_dict

    configs = [f for f in files if f.name == "config.json"]
    weights = [f for f in files if f.suffix == ".safetensors"]
    if not configs or not weights:
        raise ModelFileError(
            f"expected config.json and a .safetensors file among {[str(f) for f in files]}"
        )
    model = cls(**json.loads(configs[0].read_text()))
    model.load_state_dict(load_state_dict([str(w) for w in weights]))
    return model.to(device=device, dtype=dtype)
