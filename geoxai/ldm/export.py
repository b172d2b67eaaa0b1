"""A trained LDM as a folder in diffusers' ``save_pretrained`` layout, self-contained but the embedder:

    unet/          UNet2DConditionModel (EMA weights): plain ``UNet2DConditionModel.from_pretrained``
    vae/           AutoencoderKL.save_pretrained
    conditioner/   config.json + model.safetensors of the DescriptorConditioner
    scheduler/     the training DDPMScheduler config
    geoxai.yaml    scale factor, conditioning mode, context dim, image size, embedder spec, training config

The embedder is referenced by its spec (weights path or ``hub``), not copied. ``load_components``
reads such a folder as well as a ``.ckpt``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from geoxai.errors import GeoxaiError

MANIFEST = "geoxai.yaml"
FORMAT = 1


def export_pipeline(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write the pipeline folder of ``checkpoint`` to ``out_dir`` atomically (temp folder, then rename)."""
    from safetensors.torch import save_file

    from geoxai.ldm.autoencoder import load_autoencoder
    from geoxai.ldm.module import load_components, make_noise_scheduler

    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir / MANIFEST).is_file() and any(out_dir.iterdir()):
        raise GeoxaiError(f"export: {out_dir} exists and is not an exported pipeline; choose an empty or new folder")
    components = load_components(checkpoint)
    config = components.config
    vae = load_autoencoder(config["autoencoder"])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        components.unet.save_pretrained(tmp / "unet")
        vae.save_pretrained(tmp / "vae")
        (tmp / "conditioner").mkdir()
        (tmp / "conditioner" / "config.json").write_text(json.dumps(components.conditioner.config(), indent=2))
        save_file({k: v.contiguous() for k, v in components.conditioner.state_dict().items()},
                  str(tmp / "conditioner" / "model.safetensors"))
        make_noise_scheduler(config).save_pretrained(tmp / "scheduler")
        manifest = {
            "format": FORMAT,
            "scale_factor": components.scale_factor,
            "context_dim": components.context_dim,
            "conditioning": components.conditioner.mode,
            "image_size": int(config["data"]["image_size"]),
            "embedder": config["embedder"],
            "noise_scheduler": components.noise_scheduler_config,
            "source_checkpoint": str(Path(checkpoint).resolve()),
            "training_config": config,
        }
        (tmp / MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False))
        _replace_folder(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def _replace_folder(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; a previous export there is swapped out, then removed."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{new.name}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old)


def load_exported(folder: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``LDMComponents`` from an exported folder; its autoencoder section points at ``folder/vae``."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    from geoxai.ldm.conditioning import DescriptorConditioner
    from geoxai.ldm.module import LDMComponents

    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise GeoxaiError(f"--checkpoint {folder}: a folder without {MANIFEST}; give a .ckpt or a folder "
                          "written by geoxai.ldm.export.export_pipeline")
    manifest = yaml.safe_load(manifest_path.read_text())
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise GeoxaiError(f"{manifest_path}: unknown export format (expected format: {FORMAT})")
    try:
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True)
        conditioner = DescriptorConditioner(**json.loads((folder / "conditioner" / "config.json").read_text()))
        conditioner.load_state_dict(load_file(str(folder / "conditioner" / "model.safetensors")))
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        text = str(exc).strip().splitlines()
        raise GeoxaiError(f"--checkpoint {folder}: damaged export ({text[0] if text else type(exc).__name__}); "
                          "export it again") from None
    config = dict(manifest["training_config"])
    config["autoencoder"] = {**dict(config.get("autoencoder") or {}), "path": str((folder / "vae").resolve()),
                             "config": None}
    components = LDMComponents(unet=unet.to(map_location).eval(), conditioner=conditioner.to(map_location).eval(),
                               scale_factor=float(manifest["scale_factor"]), config=config,
                               noise_scheduler_config=dict(manifest["noise_scheduler"]),
                               context_dim=int(manifest["context_dim"]), source=str(folder))
    return components
