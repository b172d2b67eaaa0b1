"""Training speed with the latent cache against encoding every step (what the CompVis code does).

Same LDM, same batch, same optimizer: the only difference is where a training batch's posterior
moments and descriptors come from, (a) the memory-mapped latent cache, or (b) decoding the image
files, running the frozen autoencoder encoder and the frozen embedder on every step. Prints steps/s
of both, measured in this one run, and their ratio (target >= 3x on a 2-core CPU), plus the one-off
cache build time and after how many steps it has paid for itself.

Models are shaped like configs/ldm/synthcity.yaml and configs/autoencoder/synthcity.yaml with
random weights (speed does not depend on the values); images are SynthCity's.

    python benchmarks/p1_latent_cache.py                                    # SynthCity scale
    python benchmarks/p1_latent_cache.py --limit 32 --batch-size 4 --steps 3 --warmup 1   # smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def build_models(ldm_config: dict[str, Any], ae_config: dict[str, Any], embedder_dim: int, image_size: int):
    from geoxai.embedders import from_spec
    from geoxai.ldm.autoencoder_training import build_autoencoder
    from geoxai.ldm.module import LatentDiffusion

    torch.manual_seed(0)
    vae = build_autoencoder(ae_config["model"]).eval().requires_grad_(False)
    embedder = from_spec({"name": "cosplace", "backbone": ldm_config["embedder"].get("backbone", "resnet18"),
                          "dim": embedder_dim, "image_size": image_size}, device="cpu")
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    config = {**ldm_config, "unet": {**ldm_config["unet"], "sample_size": image_size // factor,
                                     "in_channels": int(vae.config.latent_channels)}}
    model = LatentDiffusion(config, embedder.dim)
    return model, vae, embedder


def timed_steps(model: Any, batches: Iterator[dict[str, torch.Tensor]], steps: int, warmup: int) -> float:
    """Optimizer steps per second over ``steps`` steps after ``warmup`` untimed ones."""
    optimizer = torch.optim.AdamW(model.denoiser_parameters(), lr=1e-4)
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        loss = model.compute_loss(next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - start)


def forever(loader: Any, transform: Callable[[Any], dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        for batch in loader:
            yield transform(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=ROOT / "worlds/synthcity/train",
                        help="training images (default: the SynthCity world's train/)")
    parser.add_argument("--ldm-config", type=Path, default=ROOT / "configs/ldm/synthcity.yaml")
    parser.add_argument("--ae-config", type=Path, default=ROOT / "configs/autoencoder/synthcity.yaml")
    parser.add_argument("--limit", type=int, default=320,
                        help="only the first N images (speed per step does not depend on it; 0 = all)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the LDM config's")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    parser.add_argument("--num-workers", type=int, default=1, help="image-decoding workers of variant (b)")
    args = parser.parse_args()

    from torch.utils.data import DataLoader

    from geoxai.data.images import ImageDataset, collate_images, resize_center_crop
    from geoxai.data.vpr import list_images
    from geoxai.errors import GeoxaiError
    from geoxai.ldm.autoencoder import autoencoder_identity, encode_moments
    from geoxai.ldm.latent_cache import build_latent_cache

    if not args.images.is_dir():
        raise SystemExit(f"{args.images}: not found; render it with `geoxai data synthcity --out worlds/synthcity` "
                         "or pass --images")
    ldm_config = yaml.safe_load(args.ldm_config.read_text())
    ae_config = yaml.safe_load(args.ae_config.read_text())
    size = int(ldm_config["data"]["image_size"])
    batch_size = args.batch_size or int(ldm_config["data"]["batch_size"])
    paths = list_images(args.images)[: args.limit or None]
    model, vae, embedder = build_models(ldm_config, ae_config, int(ldm_config["embedder"].get("dim", 512)), size)
    print(f"{len(paths)} images at {size} px, batch {batch_size}, UNet "
          f"{sum(p.numel() for p in model.unet.parameters()) / 1e6:.1f}M, autoencoder "
          f"{sum(p.numel() for p in vae.parameters()) / 1e6:.1f}M, embedder {embedder.dim}-d, "
          f"{torch.get_num_threads()} threads")

    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        try:
            cache = build_latent_cache(paths, encode_moments=lambda x: encode_moments(vae, x), embed=embedder.embed,
                                       autoencoder_id=autoencoder_identity(vae), embedder_id=embedder.identity(),
                                       image_size=size, flip=False, root=Path(root), batch_size=32, progress=False)
        except GeoxaiError as exc:
            raise SystemExit(f"error: {exc}") from None
        build_seconds = time.perf_counter() - started

        cached_loader = DataLoader(cache.dataset(), batch_size=batch_size, shuffle=True, drop_last=True)
        cached = timed_steps(model, forever(cached_loader, lambda b: b), args.steps, args.warmup)

    def encode(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {"moments": encode_moments(vae, batch["image"]), "descriptor": embedder.embed(batch["image"])}

    image_loader = DataLoader(ImageDataset(paths, lambda image: resize_center_crop(image, size)),
                              batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=collate_images,
                              num_workers=args.num_workers, persistent_workers=args.num_workers > 0)
    encoding = timed_steps(model, forever(image_loader, encode), args.steps, args.warmup)

    ratio = cached / encoding
    saved_per_step = 1 / encoding - 1 / cached
    print(f"(a) latent cache:       {cached:.3f} steps/s")
    print(f"(b) encode every step:  {encoding:.3f} steps/s")
    print(f"speed-up (a)/(b): {ratio:.2f}x (target >= 3x)")
    print(f"cache build: {build_seconds:.1f} s for {len(paths)} images, repaid after "
          f"{build_seconds / saved_per_step:.0f} training steps" if saved_per_step > 0 else
          f"cache build: {build_seconds:.1f} s for {len(paths)} images")


if __name__ == "__main__":
    main()
