"""The frozen KL autoencoder that maps images to the latents the diffusion model works in.

One ``autoencoder:`` config section names where it comes from:

- a diffusers folder (``save_pretrained`` layout, or a pipeline folder with a ``vae/`` subfolder);
- a single CompVis / Stable Diffusion file (``.ckpt`` or ``.safetensors``, the autoencoder alone or a
  whole LDM whose keys start with ``first_stage_model.``), loaded with
  ``AutoencoderKL.from_single_file``. Offline, that needs a config: ``config:`` may name a diffusers
  folder; otherwise the CompVis config is read off the checkpoint's own tensor shapes (channels,
  levels, res-blocks, latent channels), so no network is ever touched;
- a hub id such as ``stabilityai/sd-vae-ft-mse``: fetched into the geoxai cache when online; offline
  the error names the files to fetch and the folder to put them in.

Images enter in [0, 1] and are scaled to [-1, 1] as the autoencoders were trained. ``moments`` are the
encoder's posterior parameters (mean and log-variance stacked on the channel axis); caching them
instead of one latent sample keeps the per-step sampling of the CompVis recipe.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from pathlib import Path
from typing import Any, Mapping

import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from geoxai import pretrained
from geoxai.errors import GeoxaiError
from geoxai.weights import library_load, read_weights

AUTOENCODER_DEFAULTS: dict[str, Any] = {
    "path": None,  # diffusers folder | .ckpt/.safetensors file | hub id (e.g. stabilityai/sd-vae-ft-mse)
    "config": None,  # single files only: a diffusers folder whose config.json describes the file
}
SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
# The CompVis latent-diffusion releases of pretrained KL autoencoders: kl-fN.zip holds model.ckpt.
COMPVIS_KL_URL = "https://ommer-lab.com/files/latent-diffusion/{name}.zip"
_COMPVIS_KL = re.compile(r"^kl-f(4|8|16|32)$")


def autoencoder_settings(spec: Mapping[str, Any] | None, where: str = "autoencoder") -> dict[str, Any]:
    """Validate an ``autoencoder:`` section (unknown keys are errors)."""
    from geoxai.config import merge

    settings = merge(AUTOENCODER_DEFAULTS, dict(spec or {}), where)
    if not settings["path"]:
        raise GeoxaiError(f"{where}.path is not set; give a diffusers folder, a .ckpt/.safetensors file "
                          "or a hub id like stabilityai/sd-vae-ft-mse")
    return settings


def autoencoder_source(source: str) -> tuple[str, str]:
    """(URL or "", what to do to put it in place) for an ``autoencoder.path`` value, read off the path itself.

    ``.../kl-f8/model.ckpt`` is the CompVis release (its zip URL); a folder ``<dir>/vae`` is what the
    autoencoder training stage writes into its output_dir (with the config in ``configs/autoencoder/``
    that writes there, when the working folder has one); a hub id is fetched into ``hub_folder``.
    """
    path = Path(source).expanduser()
    if _COMPVIS_KL.match(path.parent.name) and path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        url = COMPVIS_KL_URL.format(name=path.parent.name)
        return url, (f"download the CompVis {path.parent.name} release {url} and unzip its model.ckpt to {path}, or "
                     "set autoencoder.path to a diffusers AutoencoderKL folder of the same architecture "
                     "(stabilityai/sd-vae-ft-mse, fetched once when online)")
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        return "", (f"put a CompVis or Stable Diffusion KL autoencoder file at {path}, or set autoencoder.path "
                    "to a diffusers AutoencoderKL folder")
    if path.name == "vae" and not _HUB_ID.match(source):
        config = _training_config_for(path.parent)
        command = f"`geoxai train --config {config}`" if config else \
            f"`geoxai train --config` with an autoencoder config (stage: autoencoder) whose output_dir is {path.parent}"
        return "", f"train it with {command} (the autoencoder stage writes <output_dir>/vae)"
    if _HUB_ID.match(source) and not source.startswith((".", "/")):
        return f"https://huggingface.co/{source}", (f"download {' and '.join(_HUB_FILES)} from "
                                                    f"https://huggingface.co/{source} into {hub_folder(source)}")
    return "", (f"give a diffusers AutoencoderKL folder, a .ckpt/.safetensors file or a hub id (for the thesis' "
                f"kl-f8: {COMPVIS_KL_URL.format(name='kl-f8')}, unzipped to models/first_stage_models/kl-f8/)")


def _training_config_for(output_dir: Path) -> str | None:
    """The config in ``./configs/autoencoder/`` whose output_dir is ``output_dir``, if there is one."""
    from geoxai.config import read_yaml

    for config in sorted(Path("configs", "autoencoder").glob("*.yaml")):
        try:
            written = read_yaml(config).get("output_dir")
        except (GeoxaiError, AttributeError):  # not a mapping, or unreadable: not the one
            continue
        if written and Path(written).expanduser().resolve() == output_dir.resolve():
            return config.as_posix()
    return None


def hub_folder(hub_id: str) -> Path:
    """The folder inside the geoxai cache where a hub autoencoder lives (fetched once; not created here)."""
    from geoxai.cache import cache_dir

    return cache_dir() / "autoencoders" / hub_id.replace("/", "--")


def load_autoencoder(spec: Mapping[str, Any]) -> AutoencoderKL:
    """The autoencoder named by ``spec`` (an ``autoencoder:`` section), frozen and in eval mode."""
    settings = autoencoder_settings(spec)
    source = str(settings["path"])
    path = Path(source).expanduser()

    if not path.exists() and pretrained.is_shipped(source, "autoencoder"):
        path = pretrained.folder(source, "autoencoder")
    if path.is_dir():
        vae = _from_folder(path)
    elif path.is_file():
        vae = _from_single_file(path, settings["config"])
    elif _HUB_ID.match(source) and not source.startswith((".", "/")):
        vae = _from_hub(source)
    else:
        raise GeoxaiError(f"autoencoder.path {source}: no such folder or file; "
                          f"{autoencoder_source(source)[1]}; `geoxai assets --config CONFIG` lists every file a "
                          "config needs")
    vae.requires_grad_(False)
    return vae.eval()


def _from_folder(path: Path) -> AutoencoderKL:
    folder = path if (path / "config.json").is_file() else path / "vae"
    if not (folder / "config.json").is_file():
        raise GeoxaiError(f"autoencoder.path {path}: no config.json (nor vae/config.json); "
                          "expected an AutoencoderKL.save_pretrained folder")
    # safetensors when the folder has them; a .bin is read by diffusers with weights_only=True
    use_safetensors = any(folder.glob("*.safetensors"))

    with library_load(folder, "autoencoder.path", "expected an AutoencoderKL.save_pretrained folder: save it "
                      "again with save_pretrained (safetensors)"):
        return AutoencoderKL.from_pretrained(folder, local_files_only=True, use_safetensors=use_safetensors)


def _from_single_file(path: Path, config: str | None) -> AutoencoderKL:
    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        raise GeoxaiError(f"autoencoder.path {path}: expected a folder or a {'/'.join(SINGLE_FILE_SUFFIXES)} "
                          "checkpoint")
    try:
        if config is not None:
            config_dir = Path(config).expanduser()
            if not (config_dir / "config.json").is_file() and (config_dir / "vae" / "config.json").is_file():
                config_dir = config_dir / "vae"
            if not (config_dir / "config.json").is_file():
                raise GeoxaiError(f"autoencoder.config {config}: no config.json there; give a diffusers "
                                  "AutoencoderKL folder (or leave it empty to read the config off the file)")
            return AutoencoderKL.from_single_file(read_single_file(path), config=str(config_dir),
                                                  local_files_only=True)
        state = read_single_file(path)
        return AutoencoderKL.from_single_file(state, original_config=compvis_config_from_state_dict(state, path))
    except GeoxaiError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise GeoxaiError(f"autoencoder.path {path}: cannot load it as a KL autoencoder "
                          f"({_first_line(exc)})") from None


def read_single_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a CompVis / Stable Diffusion single file (``weights_only=True``; one-line errors)."""
    try:
        state = read_weights(path, "autoencoder.path")
    except GeoxaiError as exc:
        if "refused" not in str(exc):
            raise
        # Old Lightning checkpoints may pickle configs or other objects beside the tensors; they are
        # not unpickled (that would run code from the file), the user converts a trusted file once.
        raise GeoxaiError(f"{exc}; if you trust the file, convert it once to .safetensors (docs/security.md, "
                          "'Converting a file you trust') and point autoencoder.path at the result") from None
    if not isinstance(state, dict):
        raise GeoxaiError(f"autoencoder.path {path}: holds no state dict of tensors")
    return state.get("state_dict", state)


def compvis_config_from_state_dict(state: Mapping[str, torch.Tensor], where: Any = "checkpoint") -> dict:
    """A CompVis ``first_stage_config`` read off a KL autoencoder's tensor shapes (offline, no yaml).

    ``ch`` is ``conv_in``'s width, the levels are the ``encoder.down.N`` blocks, ``ch_mult`` their
    widths over ``ch``, and ``z_channels`` half of ``quant_conv``'s output (mean and log-variance).
    """
    prefix = "first_stage_model." if any(k.startswith("first_stage_model.") for k in state) else ""
    try:
        ch = state[f"{prefix}encoder.conv_in.weight"].shape[0]
        levels = sorted({int(m.group(1)) for k in state
                         if (m := re.match(rf"{re.escape(prefix)}encoder\.down\.(\d+)\.", k))})
        ch_mult = [state[f"{prefix}encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in levels]
        blocks = {int(m.group(1)) for k in state
                  if (m := re.match(rf"{re.escape(prefix)}encoder\.down\.0\.block\.(\d+)\.", k))}
        z_channels = state[f"{prefix}quant_conv.weight"].shape[0] // 2
        in_channels = state[f"{prefix}encoder.conv_in.weight"].shape[1]
        out_channels = state[f"{prefix}decoder.conv_out.weight"].shape[0]
    except KeyError as exc:
        raise GeoxaiError(f"autoencoder.path {where}: not a CompVis KL autoencoder (missing {exc}); "
                          "give a diffusers folder or set autoencoder.config to one") from None
    ddconfig = {"double_z": True, "z_channels": int(z_channels), "resolution": 256,
                "in_channels": int(in_channels), "out_ch": int(out_channels), "ch": int(ch),
                "ch_mult": ch_mult, "num_res_blocks": len(blocks), "attn_resolutions": [], "dropout": 0.0}
    return {"model": {"params": {"first_stage_config": {"params": {"embed_dim": int(z_channels),
                                                                   "ddconfig": ddconfig}}}}}


def _from_hub(hub_id: str) -> AutoencoderKL:
    folder = hub_folder(hub_id)
    if all((folder / name).is_file() for name in _HUB_FILES):
        return _from_folder(folder)
    fix = (f"download {' and '.join(_HUB_FILES)} from https://huggingface.co/{hub_id} into {folder} "
           "(or set autoencoder.path to a local folder)")
    if not _online():
        raise GeoxaiError(f"autoencoder.path {hub_id}: no such local folder, and as a hub id it is not downloaded "
                          f"and the hub is unreachable; {fix}")
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(hub_id, local_dir=folder, allow_patterns=list(_HUB_FILES))
    except Exception as exc:  # network and hub errors come in many types
        raise GeoxaiError(f"autoencoder.path {hub_id}: download failed ({_first_line(exc)}); {fix}") from None
    return _from_folder(folder)


def _online(timeout: float = 3.0) -> bool:
    """Whether the hub answers quickly; avoids minutes of retries on a machine without network."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def downsampling_factor(vae: AutoencoderKL) -> int:
    """Image side / latent side (8 for kl-f8)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_channels(vae: AutoencoderKL) -> int:
    return int(vae.config.latent_channels)


@torch.no_grad()
def encode_moments(vae: AutoencoderKL, images01: torch.Tensor) -> torch.Tensor:
    """Posterior mean and log-variance ``[B, 2C, h, w]`` of images in [0, 1]."""
    param = next(vae.parameters())
    x = images01.to(device=param.device, dtype=param.dtype) * 2.0 - 1.0
    return vae.encode(x).latent_dist.parameters


def sample_latents(moments: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw ``z = mean + std * eps`` from the posterior given by ``moments`` ``[B, 2C, h, w]``."""
    return DiagonalGaussianDistribution(moments.float()).sample(generator)


@torch.no_grad()
def decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] from autoencoder latents (divide diffusion latents by the scale factor first)."""
    param = next(vae.parameters())
    images = vae.decode(latents.to(device=param.device, dtype=param.dtype)).sample
    return ((images.float() + 1.0) / 2.0).clamp_(0.0, 1.0)


def autoencoder_identity(source: Mapping[str, Any] | AutoencoderKL) -> str:
    """A stable hash of the autoencoder's config and weights (the latent cache key).

    Content, not path: the same weights copied elsewhere keep their cached latents, retrained
    weights at the same path do not.
    """
    vae = source if isinstance(source, AutoencoderKL) else load_autoencoder(source)
    cached = getattr(vae, "_geoxai_identity", None)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    identity = f"kl-f{downsampling_factor(vae)}-z{latent_channels(vae)}-{digest.hexdigest()[:16]}"
    vae._geoxai_identity = identity
    return identity
