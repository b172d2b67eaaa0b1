"""Loading a trained descriptor-conditioned LDM for sampling: the one door from files to models.

``load_components`` reads a Lightning ``.ckpt`` (``weights_only=True``) or a folder written by
``geoxai.ldm.export`` and returns ``LDMComponents``: the UNet with its EMA weights, the conditioner,
and the settings sampling needs. Paths inside a checkpoint (embedder weights, autoencoder) are
stored absolute by training; ``stored_paths_exist`` says clearly when one has moved.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch

from geoxai import pretrained
from geoxai.config import read_yaml
from geoxai.errors import GeoxaiError, setting
from geoxai.ldm.components import LDMComponents
from geoxai.ldm.conditioning import DescriptorConditioner
from geoxai.ldm.module import build_conditioner, model_settings, noise_scheduler_config
from geoxai.ldm.unet import build_unet
from geoxai.weights import check_state_dict, library_load, read_weights

EXPORT_MANIFEST = "geoxai.yaml"
EXPORT_FORMAT = 1


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """The path as given, or the folder of the shipped LDM a bare name means (``synthcity``)."""
    path = Path(checkpoint)
    if path.exists():
        return path
    if pretrained.is_shipped(str(checkpoint), "ldm"):
        return pretrained.folder(str(checkpoint), "ldm")
    if pretrained.looks_like_name(checkpoint):
        raise GeoxaiError(pretrained.unknown_name_message(str(checkpoint), "ldm"))
    return path


def load_components(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> LDMComponents:
    """UNet (EMA weights when EMA is on), conditioner and settings from a ``.ckpt``, an exported folder
    or the name of a shipped model."""
    path = resolve_checkpoint(checkpoint)
    if path.is_dir():
        return load_exported(path, map_location)
    if not path.is_file():
        raise GeoxaiError(f"{setting('checkpoint')} {path}: no such file or folder; give a .ckpt from "
                          "<output_dir>/checkpoints/ or a folder written by export")
    state = read_checkpoint(path, map_location, setting("checkpoint"))
    hparams = state.get("hyper_parameters") or {}
    if "config" not in hparams or "context_dim" not in hparams:
        raise GeoxaiError(f"{setting('checkpoint')} {path}: not a geoxai latent diffusion checkpoint (no config in "
                          "hyper_parameters); was it written by another training stage?")
    config, context_dim = hparams["config"], int(hparams["context_dim"])
    try:
        settings = model_settings(config)
        conditioner = build_conditioner(settings["conditioning"], context_dim)
        unet = conditioner.prepare_unet(build_unet(settings["unet"], conditioner.context_dim,
                                                   conditioner.class_embed_dim))
    except GeoxaiError as exc:
        raise GeoxaiError(f"{setting('checkpoint')} {path}: its stored config is not valid here ({exc})") from None
    weights = state["state_dict"]
    modules = {"unet": unet, "conditioner": conditioner}
    expected = {f"{prefix}.{k}": v for prefix, module in modules.items() for k, v in module.state_dict().items()}
    expected["scale_factor"] = torch.zeros(())
    check_state_dict(expected, weights, f"{setting('checkpoint')} {path}",
                     "use the config the checkpoint was trained with")
    for prefix, module in modules.items():
        module.load_state_dict({k[len(prefix) + 1:]: v for k, v in weights.items() if k.startswith(prefix + ".")})
    if settings["optim"]["use_ema"] and "ema" in state:
        params = [*unet.parameters(), *conditioner.parameters()]
        shadow = state["ema"]["shadow_params"]
        if len(shadow) != len(params) or any(s.shape != p.shape for s, p in zip(shadow, params, strict=True)):
            raise GeoxaiError(f"{setting('checkpoint')} {path}: its EMA weights do not match its model; "
                              "the file is damaged")
        with torch.no_grad():
            for s, p in zip(shadow, params, strict=True):
                p.copy_(s)
    scale = float(weights["scale_factor"])
    if not math.isfinite(scale):
        raise GeoxaiError(f"{setting('checkpoint')} {path}: scale factor not set yet (saved before the first step)")
    return LDMComponents(unet=unet.to(map_location).eval(), conditioner=conditioner.to(map_location).eval(),
                         scale_factor=scale,
                         config=copy.deepcopy(dict(config)), noise_scheduler_config=noise_scheduler_config(config),
                         context_dim=context_dim, source=str(path),
                         identities=dict(hparams.get("identities") or {}))


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu", setting: str = "--checkpoint") -> dict[str, Any]:
    """A Lightning checkpoint as a dict (``weights_only=True``), with a one-line error naming ``setting``."""
    state = read_weights(path, setting, map_location=map_location)
    if not isinstance(state, dict) or "state_dict" not in state:
        raise GeoxaiError(f"{setting} {path}: not a Lightning checkpoint (no state_dict)")
    return state


def damaged_safetensors(folder: Path) -> tuple[Path, str] | None:
    """The first ``.safetensors`` file under ``folder`` that does not read whole, with the reason."""
    from safetensors import safe_open

    for file in sorted(folder.rglob("*.safetensors")):
        try:
            with safe_open(str(file), "pt") as handle:
                for key in handle.keys():
                    handle.get_tensor(key)
        except Exception as exc:  # safetensors raises its own error types
            text = str(exc).strip().splitlines()
            return file, text[0] if text else type(exc).__name__
    return None


def load_exported(folder: str | Path, map_location: str | torch.device = "cpu") -> LDMComponents:
    """``LDMComponents`` from an exported folder; its autoencoder section points at ``folder/vae``."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    folder = Path(folder)
    manifest_path = folder / EXPORT_MANIFEST
    if not manifest_path.is_file():
        raise GeoxaiError(f"{setting('checkpoint')} {folder}: a folder without {EXPORT_MANIFEST}; give a .ckpt or a "
                          "folder written by geoxai.ldm.export.export_pipeline")
    manifest = read_yaml(manifest_path, "export manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise GeoxaiError(f"{manifest_path}: unknown export format (expected format: {EXPORT_FORMAT})")

    try:
        with library_load(folder / "unet", setting("checkpoint"), "export the model again (geoxai.ldm.export)"):
            unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True)
        conditioner = DescriptorConditioner(**json.loads((folder / "conditioner" / "config.json").read_text()))
        conditioner.load_state_dict(load_file(str(folder / "conditioner" / "model.safetensors")))
        conditioner.prepare_unet(unet)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        text = str(exc).strip().splitlines()
        damaged = damaged_safetensors(folder)
        where = f"{damaged[0]} is damaged ({damaged[1]})" if damaged else \
            f"damaged export ({text[0] if text else type(exc).__name__})"
        raise GeoxaiError(f"{setting('checkpoint')} {folder}: {where}; export it again (or reinstall geoxai for a "
                          "shipped model)") from None
    config = dict(manifest["training_config"])
    config["autoencoder"] = {**dict(config.get("autoencoder") or {}), "path": str((folder / "vae").resolve()),
                             "config": None}
    components = LDMComponents(unet=unet.to(map_location).eval(), conditioner=conditioner.to(map_location).eval(),
                               scale_factor=float(manifest["scale_factor"]), config=config,
                               noise_scheduler_config=dict(manifest["noise_scheduler"]),
                               context_dim=int(manifest["context_dim"]), source=str(folder),
                               identities=dict(manifest.get("identities") or {}),
                               guidance=float(manifest["guidance"]) if manifest.get("guidance") is not None else None)
    return components
