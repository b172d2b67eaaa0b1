"""Tiny models and data for tests: a deterministic embedder, a small autoencoder, an LDM checkpoint.

Everything here is random-initialised and built in milliseconds: the tests check behaviour, not quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from PIL import Image

from geoxai.data.images import resize_center_crop
from geoxai.data.vpr import VPRName, format_name
from geoxai.embedders.base import Embedder

DIM, IMAGE = 8, 16
TINY_UNET = {"model_channels": 32, "channel_mult": [1, 2], "attention_resolutions": [1], "num_res_blocks": 1,
             "num_heads": 2, "norm_num_groups": 8, "resblock_updown": False}


class TinyEmbedder(Embedder):
    """A fixed random projection of a 4x4 thumbnail: deterministic, instant, any dim."""

    name = "tiny"

    def __init__(self, dim: int = DIM, image_size: int = IMAGE, device: str = "cpu", seed: int = 0) -> None:
        super().__init__()
        self.dim, self.image_size, self.seed = int(dim), int(image_size), int(seed)
        self.register_buffer("projection", torch.randn(48, self.dim, generator=torch.Generator().manual_seed(seed)))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        thumbs = F.adaptive_avg_pool2d(resize_center_crop(images.to(self.device), self.image_size), 4)
        return F.normalize(thumbs.flatten(1) @ self.projection, dim=1)

    def spec(self) -> dict:
        return {"name": f"{__file__}:TinyEmbedder", "dim": self.dim, "image_size": self.image_size,
                "seed": self.seed}


class UntrainedEmbedder(TinyEmbedder):
    """TinyEmbedder standing for an untrained network asked for by name (``weights: random``)."""

    name = "untrained"

    def __init__(self, weights: str = "random", device: str = "cpu") -> None:
        super().__init__(device=device)

    @property
    def random_weights(self) -> bool:
        return True

    def spec(self) -> dict:
        return {"name": f"{__file__}:UntrainedEmbedder", "weights": "random"}


def save_tiny_vae(folder: Path) -> Path:
    torch.manual_seed(1)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4, layers_per_block=1)
    vae.save_pretrained(folder)
    return folder


def make_checkpoint(path: Path, vae_folder: Path, embedder_dim: int = DIM, context_dim: int = DIM,
                    identities: dict | None = None) -> Path:
    """A Lightning-layout checkpoint of a randomly initialised tiny model (what `geoxai train` saves)."""
    from geoxai.ldm.module import LatentDiffusion

    torch.manual_seed(0)
    config = {"stage": "ldm", "data": {"image_size": IMAGE},
              "embedder": TinyEmbedder(embedder_dim).spec(), "autoencoder": {"path": str(vae_folder)},
              "unet": TINY_UNET, "conditioning": {"mode": "crossattn"}, "optim": {"use_ema": False},
              "diffusion": {"scale_by_std": False, "scale_factor": 0.5}}
    model = LatentDiffusion(config, context_dim=context_dim, identities=identities)
    hyper = {"config": config, "context_dim": context_dim}
    if identities:
        hyper["identities"] = identities
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hyper}, path)
    return path


def write_queries(folder: Path, count: int = 5) -> Path:
    """VPR-named query photos of slightly different sizes, some in a subfolder."""
    rng = np.random.default_rng(0)
    for i in range(count):
        name = format_name(VPRName(utm_east=584000.0 + 30 * i, utm_north=4477000.0, zone_number="17", zone_letter="T"))
        where = folder / ("sub" if i % 2 else "") / name
        where.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20 + 2 * i, 24, 3), dtype=np.uint8)).save(where.with_suffix(".png"))
    return folder


class LayoutEmbedder(Embedder):
    """A hand-made place descriptor for tests: the 8x8 grayscale layout of the image, standardised per
    image, so global brightness and contrast changes (most of SynthCity's lighting) barely move it while
    another place's facades do. Deterministic, no weights."""

    name = "layout"

    def __init__(self, image_size: int = 64, device: str = "cpu") -> None:
        super().__init__()
        self.image_size, self.dim = int(image_size), 64

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        gray = resize_center_crop(images.to(self.device), self.image_size).mean(dim=1, keepdim=True)
        thumbs = F.adaptive_avg_pool2d(gray, 8).flatten(1)
        thumbs = (thumbs - thumbs.mean(dim=1, keepdim=True)) / (thumbs.std(dim=1, keepdim=True) + 1e-6)
        return F.normalize(thumbs, dim=1)

    def spec(self) -> dict:
        return {"name": f"{__file__}:LayoutEmbedder", "image_size": self.image_size}
