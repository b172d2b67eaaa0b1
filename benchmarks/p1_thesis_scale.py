"""P1 at the thesis' sizes: what a latent cache saves per training step, part by part.

A step that encodes its batch runs (1) the frozen kl-f8 ``AutoencoderKL`` encoder on 256-px images
(SD/CompVis config: 128-256-512-512 channels, 2 res-blocks, z = 4), (2) the frozen CosPlace ResNet50
on the same images at 512 px, and (3) the forward + backward + AdamW step of the 192-channel UNet of
``configs/ldm/pitts30k-cosplace-r50-256.yaml`` on 32x32x4 latents; with the cache it runs (3) alone.
Weights are random (speed does not depend on their values); images are random tensors, so file
decoding (done by loader workers in training) is left out. Prints seconds per step of each part, the
share of each in an encoding step, and the speed-up of the cache (target >= 3x), measured in one run.

    python benchmarks/p1_thesis_scale.py --batch-size 2 --steps 3            # CPU
    python benchmarks/p1_thesis_scale.py --batch-size 48 --steps 20 --device cuda --bf16
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
KL_F8 = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
             layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
             up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=256)


def timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    """Mean seconds per call over ``steps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs/ldm/pitts30k-cosplace-r50-256.yaml")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed calls per part")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    args = parser.parse_args()

    from diffusers import AutoencoderKL

    from geoxai.embedders import from_spec
    from geoxai.ldm.autoencoder import encode_moments
    from geoxai.ldm.module import LatentDiffusion

    device = torch.device(args.device)
    config = yaml.safe_load(args.config.read_text())
    size, batch = int(config["data"]["image_size"]), args.batch_size
    torch.manual_seed(0)
    vae = AutoencoderKL(**KL_F8).eval().requires_grad_(False).to(device)
    embedder = from_spec({"name": "cosplace", "backbone": "resnet50", "dim": 512, "weights": "random",
                          "image_size": int(config["embedder"]["image_size"])}, device=str(device))
    model = LatentDiffusion(config, embedder.dim).to(device)
    optimizer = torch.optim.AdamW(model.denoiser_parameters(), lr=1e-5)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    images = torch.rand(batch, 3, size, size, device=device)
    moments = torch.randn(batch, 8, size // 8, size // 8, device=device)
    descriptors = torch.nn.functional.normalize(torch.randn(batch, embedder.dim, device=device), dim=-1)

    def encode() -> None:
        with torch.no_grad(), autocast:
            encode_moments(vae, images * 2 - 1)

    def embed() -> None:
        with torch.no_grad(), autocast:
            embedder.embed(images)

    def unet_step() -> None:
        with autocast:
            loss = model.compute_loss({"moments": moments, "descriptor": descriptors})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    print(f"batch {batch} at {size} px on {device} ({torch.get_num_threads()} threads"
          f"{', bf16 autocast' if args.bf16 else ''}): kl-f8 encoder "
          f"{sum(p.numel() for p in vae.encoder.parameters()) / 1e6:.1f}M, CosPlace ResNet50 at "
          f"{embedder.image_size} px, UNet {sum(p.numel() for p in model.unet.parameters()) / 1e6:.1f}M", flush=True)
    parts = {"kl-f8 encoder (256 px)": timed(encode, args.steps, args.warmup, device),
             f"CosPlace ResNet50 ({embedder.image_size} px)": timed(embed, args.steps, args.warmup, device),
             "UNet forward + backward + AdamW": timed(unet_step, args.steps, args.warmup, device)}
    total = sum(parts.values())
    for name, seconds in parts.items():
        print(f"  {name:<34} {seconds:8.3f} s/step  {100 * seconds / total:5.1f}% of an encoding step")
    cached = parts["UNet forward + backward + AdamW"]
    print(f"encode every step {total:.3f} s/step, latent cache {cached:.3f} s/step: "
          f"speed-up {total / cached:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
