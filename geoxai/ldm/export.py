"""A trained LDM as a folder in diffusers' ``save_pretrained`` layout, self-contained but the embedder:

    unet/          UNet2DConditionModel (EMA weights): plain ``UNet2DConditionModel.from_pretrained``
    vae/           AutoencoderKL.save_pretrained
    conditioner/   config.json + model.safetensors of the DescriptorConditioner
    scheduler/     the training DDPMScheduler config
    geoxai.yaml    scale factor, conditioning mode, context dim, image size, embedder spec, training config

The embedder is referenced by its spec (weights path or ``hub``) and identity, not copied.
``geoxai.ldm.loading.load_components`` reads such a folder as well as a ``.ckpt``.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from geoxai.errors import GeoxaiError
from geoxai.ldm.autoencoder import load_autoencoder
from geoxai.ldm.loading import EXPORT_FORMAT, EXPORT_MANIFEST, load_components
from geoxai.ldm.module import make_noise_scheduler


def export_pipeline(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write the pipeline folder of ``checkpoint`` to ``out_dir`` atomically (temp folder, then rename)."""
    from safetensors.torch import save_file

    from geoxai.files import atomic_folder

    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir / EXPORT_MANIFEST).is_file() and any(out_dir.iterdir()):
        raise GeoxaiError(f"export: {out_dir} exists and is not an exported pipeline; choose an empty or new folder")
    components = load_components(checkpoint)
    config = components.config
    vae = load_autoencoder(config["autoencoder"])
    with atomic_folder(out_dir) as tmp:
        components.unet.save_pretrained(tmp / "unet")
        vae.save_pretrained(tmp / "vae")
        (tmp / "conditioner").mkdir()
        (tmp / "conditioner" / "config.json").write_text(json.dumps(components.conditioner.config(), indent=2))
        save_file({k: v.contiguous() for k, v in components.conditioner.state_dict().items()},
                  str(tmp / "conditioner" / "model.safetensors"))
        make_noise_scheduler(config).save_pretrained(tmp / "scheduler")
        manifest = {
            "format": EXPORT_FORMAT,
            "scale_factor": components.scale_factor,
            "context_dim": components.context_dim,
            "conditioning": components.conditioner.mode,
            "image_size": int(config["data"]["image_size"]),
            "embedder": config["embedder"],
            "identities": dict(components.identities),
            "noise_scheduler": components.noise_scheduler_config,
            "source_checkpoint": str(Path(checkpoint).resolve()),
            "training_config": config,
        }
        (tmp / EXPORT_MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False))
    return out_dir
