"""``geoxai train`` for ``stage: ldm``: the descriptor-conditioned latent diffusion model.

The frozen autoencoder and embedder run once over the training images (``geoxai.ldm.latent_cache``);
training then reads posterior moments and descriptors from memory-mapped files. Output folder:

    config.yaml          the resolved config (every default filled in)
    checkpoints/         last.ckpt and step_XXXXXX.ckpt (Lightning; resume with --resume)
    images/              step_XXXXXX.png previews: held-out originals over generations
    loss.csv             step, loss, lr per optimizer step
    logs/                Lightning CSV logs (and TensorBoard when installed)
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch

from geoxai.config import (
    BETAS,
    COUNT,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    WHOLE_OR_OFF,
    Number,
    check_values,
    merge,
    save_config,
)
from geoxai.devices import resolve_device
from geoxai.embedders import from_spec
from geoxai.errors import GeoxaiError, UnreadableImageError, config_key, settings_from
from geoxai.ldm.autoencoder import (
    AUTOENCODER_DEFAULTS,
    autoencoder_identity,
    downsampling_factor,
    encode_moments,
    latent_channels,
    load_autoencoder,
)
from geoxai.ldm.autoencoder_training import check_folders
from geoxai.ldm.loading import read_checkpoint
from geoxai.ldm.module import MODEL_SECTIONS, LatentDiffusion, model_settings, noise_scheduler_config
from geoxai.stages import STAGES
from geoxai.trainer import TRAINER_DEFAULTS, TRAINER_RULES, build_trainer, fit_stage, stage_info
from geoxai.weights import check_state_dict

DATA_DEFAULTS: dict[str, Any] = {
    "train_dirs": [],  # image folders (any depth), e.g. a world's train/ and database/
    "image_size": 256,
    "flip": True,  # cache mirrored images too; training picks one of the pair with p = 0.5
    "batch_size": 48,
    "num_workers": 4,
    "val_queries": None,  # held-out image folder for previews (default: training images)
    "cache_dir": None,  # latent cache root (default: the geoxai cache, latents/)
    "encode_batch_size": 32,  # images per autoencoder / embedder call while caching
}
LOGGING_DEFAULTS: dict[str, Any] = {
    "image_every_n_steps": 5000,  # 0 disables previews
    "num_images": 8,
    "sampler": "ddim",
    "sampler_steps": 50,
    "guidance": 1.0,
    "checkpoint_every_n_steps": 5000,
}
LDM_DEFAULTS: dict[str, Any] = {
    "stage": "ldm",
    "output_dir": None,
    "protocol": "unseen-places",  # unseen-places | seen-map: which places training may hold (geoxai.protocols)
    "worlds": [],  # written by training: the SynthCity worlds and splits of data.train_dirs and the autoencoder's
    "data": DATA_DEFAULTS,
    "embedder": {},  # a geoxai.embedders.from_spec spec, passed through unchanged
    "autoencoder": AUTOENCODER_DEFAULTS,
    **MODEL_SECTIONS,
    "logging": LOGGING_DEFAULTS,
    "trainer": TRAINER_DEFAULTS,
}

# Every numeric key of an LDM config, checked before any work starts (image_size is also checked
# against the autoencoder's downsampling factor once it is loaded: fit_to_models).
LDM_RULES: dict[str, Number] = {
    **TRAINER_RULES,
    "data.image_size": COUNT, "data.batch_size": COUNT, "data.num_workers": WHOLE_OR_OFF,
    "data.encode_batch_size": COUNT,
    "logging.image_every_n_steps": WHOLE_OR_OFF, "logging.num_images": COUNT, "logging.sampler_steps": COUNT,
    "logging.guidance": NON_NEGATIVE, "logging.checkpoint_every_n_steps": WHOLE_OR_OFF,
    "unet.in_channels": COUNT, "unet.out_channels": Number(low=1, whole=True, optional=True),
    "unet.sample_size": Number(low=1, whole=True, optional=True), "unet.model_channels": COUNT,
    "unet.channel_mult": Number(low=1, whole=True, each=True),
    "unet.attention_resolutions": Number(low=1, whole=True, each=True), "unet.num_res_blocks": COUNT,
    "unet.num_heads": COUNT, "unet.num_head_channels": Number(low=1, whole=True, special=((-1, "use num_heads"),)),
    "unet.transformer_depth": COUNT, "unet.norm_num_groups": COUNT,
    "unet.dropout": Number(low=0, high=1, high_open=True),
    "conditioning.num_tokens": COUNT, "conditioning.hidden_dim": Number(low=1, whole=True, optional=True),
    "conditioning.p_uncond": Number(low=0, high=1, high_open=True),
    "diffusion.num_train_timesteps": COUNT,
    "diffusion.beta_start": Number(low=0, high=1, low_open=True, high_open=True),
    "diffusion.beta_end": Number(low=0, high=1, low_open=True, high_open=True),
    "diffusion.snr_gamma": Number(low=0, low_open=True, optional=True),
    "diffusion.scale_factor": Number(low=0, low_open=True, optional=True),
    "optim.base_lr": POSITIVE, "optim.warmup_steps": WHOLE_OR_OFF, "optim.warmup_start": PROBABILITY,
    "optim.weight_decay": NON_NEGATIVE, "optim.betas": BETAS, "optim.ema_decay": PROBABILITY,
}


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with every default filled in; unknown keys and missing essentials are errors."""
    config = merge(LDM_DEFAULTS, dict(config), "config")
    check_values(config, LDM_RULES)
    _check_previews(config)
    if config["stage"] != "ldm":
        raise GeoxaiError(f"config: stage is {config['stage']!r}; this trainer handles stage: ldm")
    if not config["output_dir"]:
        raise GeoxaiError("config: output_dir is not set; e.g. output_dir: runs/ldm/synthcity")
    data = config["data"]
    if isinstance(data["train_dirs"], (str, Path)):
        data["train_dirs"] = [str(data["train_dirs"])]
    if not data["train_dirs"]:
        raise GeoxaiError("config: data.train_dirs is empty; list the image folders to train on")
    if not config["embedder"]:
        raise GeoxaiError("config: embedder is empty; give a spec like {name: cosplace, backbone: resnet50, "
                          "dim: 512, weights: hub}")
    config.update(model_settings(config))
    return config


def _check_previews(config: dict[str, Any]) -> None:
    """The preview sampler and its steps work on the config's noise schedule: checked now, not at the
    first preview after thousands of training steps."""
    from geoxai.ldm.pipeline import SAMPLERS, build_scheduler, check_steps

    logging = config["logging"]
    if int(logging["image_every_n_steps"]) == 0 or int(logging["num_images"]) == 0:
        return
    if logging["sampler"] not in SAMPLERS:
        raise GeoxaiError(f"{config_key('logging.sampler')}: {logging['sampler']!r} is not a sampler; use one of "
                          f"{', '.join(SAMPLERS)}")
    scheduler = build_scheduler(logging["sampler"], noise_scheduler_config(config))
    check_steps(scheduler, int(logging["sampler_steps"]), logging["sampler"],
                names=(config_key("logging.sampler_steps") + ":", "logging.sampler:"))


def check_paths(config: dict[str, Any]) -> dict[str, Any]:
    """Every folder the config reads exists (checked before training, not when first read), and the
    paths stored in the checkpoint are absolute."""
    from geoxai import protocols

    check_folders(config["data"]["train_dirs"], "data.train_dirs")
    protocols.check_training_folders(config["data"]["train_dirs"], config["protocol"])
    config = {**config, "worlds": protocols.training_worlds(config["data"]["train_dirs"], "ldm")
              + protocols.autoencoder_worlds(config["autoencoder"])}
    if config["data"]["val_queries"]:
        check_folders([config["data"]["val_queries"]], "data.val_queries")
    return absolute_paths(config)


def absolute_paths(config: dict[str, Any]) -> dict[str, Any]:
    """The config with every path (data, output, embedder weights, autoencoder) made absolute.

    The config is stored in every checkpoint; absolute paths make a checkpoint usable from any
    working directory (and the stored identities catch a file replaced at the same path).
    """
    config = copy.deepcopy(config)
    data = config["data"]
    data["train_dirs"] = [str(Path(folder).resolve()) for folder in data["train_dirs"]]
    for key in ("val_queries", "cache_dir"):
        if data[key]:
            data[key] = str(Path(data[key]).resolve())
    config["output_dir"] = str(Path(config["output_dir"]).resolve())
    weights = config["embedder"].get("weights")
    if weights not in (None, "hub", "random") and Path(str(weights)).exists():
        config["embedder"]["weights"] = str(Path(str(weights)).resolve())
    for key in ("path", "config"):
        value = config["autoencoder"].get(key)
        if value and Path(str(value)).expanduser().exists():  # hub ids stay as they are
            config["autoencoder"][key] = str(Path(str(value)).expanduser().resolve())
    return config


def fit_to_models(config: dict[str, Any], vae: Any, context_dim: int) -> dict[str, Any]:
    """Fill what the autoencoder decides (latent side, scale factor) and check what must agree."""
    config = copy.deepcopy(config)
    factor, channels = downsampling_factor(vae), latent_channels(vae)
    size = int(config["data"]["image_size"])
    if size % factor:
        raise GeoxaiError(f"data.image_size {size}: not a multiple of the autoencoder's downsampling factor {factor}")
    if int(config["unet"]["in_channels"]) != channels:
        raise GeoxaiError(f"unet.in_channels {config['unet']['in_channels']} differs from the autoencoder's "
                          f"{channels} latent channels; set unet.in_channels: {channels}")
    if config["unet"]["sample_size"] is None:
        config["unet"]["sample_size"] = size // factor
    diffusion = config["diffusion"]
    if not diffusion["scale_by_std"] and diffusion["scale_factor"] is None:
        diffusion["scale_factor"] = float(vae.config.scaling_factor)
    return config


def training_images(train_dirs: list[str]) -> list[Path]:
    from geoxai.data.vpr import list_images

    paths: list[Path] = []
    for folder in train_dirs:
        found = list_images(folder)
        if not found:
            raise GeoxaiError(f"data.train_dirs: {folder} holds no .jpg/.jpeg/.png images")
        paths += found
    return paths


def preview_originals(paths: list[Path], count: int, image_size: int) -> tuple[torch.Tensor, list[Path]]:
    """``count`` readable images spread evenly over ``paths``, resized and centre-cropped."""
    from geoxai.data.images import load_tensor, resize_center_crop

    if count <= 0 or not paths:
        return torch.zeros(0, 3, image_size, image_size), []
    step = max(1, len(paths) // count)
    images, used = [], []
    for path in paths[::step]:
        try:
            images.append(resize_center_crop(load_tensor(path), image_size))
            used.append(path)
        except UnreadableImageError:
            continue
        if len(images) == count:
            break
    if not images:
        return torch.zeros(0, 3, image_size, image_size), []
    return torch.stack(images), used


def check_identities(stored: Mapping[str, str], current: Mapping[str, str], where: str) -> None:
    """Refuse frozen models whose weights differ from those a checkpoint was trained with.

    A weights file replaced at the same path (another training run, another release) would
    otherwise condition the UNet on descriptors or latents it never saw, silently.
    """
    keys = {"embedder": "embedder.weights", "autoencoder": "autoencoder.path"}
    for kind, key in keys.items():
        if stored.get(kind) and current.get(kind) and stored[kind] != current[kind]:
            raise GeoxaiError(f"{where}: its {kind} ({key}) has identity {current[kind]} but the model was trained "
                              f"with {stored[kind]}; the file at that path was replaced: restore the original "
                              "weights, or train a new model")


def check_resume(checkpoint: Path, model: Any, context_dim: int, identities: Mapping[str, str]) -> None:
    """One-line errors when ``checkpoint`` cannot continue with the current config."""
    state = read_checkpoint(checkpoint, setting="--resume")
    hparams = state.get("hyper_parameters") or {}
    old_dim = hparams.get("context_dim")
    if old_dim is not None and int(old_dim) != int(context_dim):
        raise GeoxaiError(f"embedder: gives {context_dim}-d descriptors but {checkpoint} has context dim "
                          f"{old_dim}; use the embedder it was trained with or a new output_dir")
    check_identities(hparams.get("identities") or {}, identities, f"--resume {checkpoint}")
    check_state_dict(model.state_dict(), state["state_dict"], f"--resume {checkpoint}",
                     "use the config the checkpoint was trained with, or a new output_dir")


def _loggers(out: Path) -> list[Any]:
    from pytorch_lightning.loggers import CSVLogger

    loggers: list[Any] = [CSVLogger(save_dir=str(out), name="logs")]
    if importlib.util.find_spec("tensorboard") is None:  # optional: previews then live in images/ only
        return loggers
    from pytorch_lightning.loggers import TensorBoardLogger

    loggers.append(TensorBoardLogger(save_dir=str(out), name="tensorboard"))
    return loggers


def checked_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``resolve_config`` with every folder checked, the worlds recorded and paths made absolute."""
    return check_paths(resolve_config(config))


def train(config: dict[str, Any], resume: bool = False) -> Path:
    """Train (or with ``resume`` continue) the LDM of ``config``; returns ``checkpoints/last.ckpt``."""
    return STAGES["ldm"].run(config, resume)


def fit(config: dict[str, Any], out: Path, resume: bool) -> Path:
    """The LDM's part of ``Stage.run``: frozen models, latent cache, previews, training."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
    from torch.utils.data import DataLoader

    from geoxai.cache import cache_dir
    from geoxai.ldm.callbacks import LossCSV, PreviewGrid
    from geoxai.ldm.latent_cache import build_latent_cache

    checkpoints = out / "checkpoints"
    last = checkpoints / "last.ckpt"
    data, logging = config["data"], config["logging"]

    vae = load_autoencoder(config["autoencoder"])
    with settings_from("embedder"):
        embedder = from_spec(config["embedder"])
    if embedder.random_weights and config["embedder"].get("weights") != "random":
        raise GeoxaiError("embedder.weights is not set, which means a random, untrained embedder: give the weights "
                          "the descriptors should come from (e.g. runs/embedder/.../cosplace_*.pth), or write "
                          "embedder.weights: random to train on random descriptors deliberately")
    identities = {"embedder": embedder.identity(), "autoencoder": autoencoder_identity(vae)}
    config = fit_to_models(config, vae, embedder.dim)
    pl.seed_everything(int(config["trainer"]["seed"]), workers=True, verbose=False)  # same init every run
    model = LatentDiffusion(config, embedder.dim, identities)
    if resume:
        check_resume(last, model, embedder.dim, identities)

    device = resolve_device("auto")
    if device.type == "cuda":  # under DDP each rank re-runs this; keep its work on its own GPU
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    vae.to(device)
    embedder.to(device)
    cache = build_latent_cache(
        training_images(data["train_dirs"]), encode_moments=partial(encode_moments, vae), embed=embedder.embed,
        autoencoder_id=autoencoder_identity(vae), embedder_id=embedder.identity(),
        image_size=int(data["image_size"]), flip=bool(data["flip"]),
        root=Path(data["cache_dir"]) if data["cache_dir"] else cache_dir("latents"),
        batch_size=int(data["encode_batch_size"]), device=device, progress=True)
    if len(cache) == 0:
        raise GeoxaiError(f"data.train_dirs: no readable images in {', '.join(data['train_dirs'])}")
    if cache.skipped:
        stage_info(f"latent cache: {len(cache.skipped)} unreadable training image(s) skipped, listed in "
                   f"{cache.folder / 'skipped.csv'} (first: {cache.skipped[0][1]})")

    callbacks: list[Any] = [
        ModelCheckpoint(dirpath=str(checkpoints), filename="step_{step:06d}", auto_insert_metric_name=False,
                        every_n_train_steps=int(logging["checkpoint_every_n_steps"]) or None, save_top_k=-1,
                        save_last=True),
        LearningRateMonitor(logging_interval="step"),
        LossCSV(out / "loss.csv"),
    ]
    if int(logging["image_every_n_steps"]) > 0 and int(logging["num_images"]) > 0:
        from geoxai.data.vpr import list_images

        preview_paths = list_images(data["val_queries"]) if data["val_queries"] else [Path(p) for p in cache.paths]
        originals, _ = preview_originals(preview_paths, int(logging["num_images"]), int(data["image_size"]))
        with torch.no_grad():
            descriptors = embedder.embed(originals.to(device)).float().cpu() if len(originals) else \
                torch.zeros(0, embedder.dim)
        callbacks.append(PreviewGrid(out / "images", originals, descriptors, vae,
                                     every_n_steps=int(logging["image_every_n_steps"]), sampler=logging["sampler"],
                                     sampler_steps=int(logging["sampler_steps"]), guidance=float(logging["guidance"]),
                                     seed=int(config["trainer"]["seed"])))
    vae.cpu()
    embedder.cpu()
    del embedder

    dataset = cache.dataset()
    batch_size = int(data["batch_size"])
    workers = int(data["num_workers"])
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) >= batch_size,
                        num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    save_config(config, out / "config.yaml")
    trainer = build_trainer(config["trainer"], out, callbacks=callbacks, logger=_loggers(out))
    stage_info(f"ldm: {len(cache)} cached images ({cache.folder}), latents "
                                f"{tuple(cache.moments.shape[1:])} moments, descriptors {cache.descriptors.shape[1]}-d, "
                                f"UNet {sum(p.numel() for p in model.unet.parameters()) / 1e6:.1f}M parameters, "
                                f"conditioning {config['conditioning']['mode']}")
    fit_stage(trainer, model, last, resume, train_dataloaders=loader)
    if trainer.is_global_zero:
        scale = float(model.scale_factor)
        stage_info(f"ldm: trained to step {trainer.global_step}, scale factor "
              f"{scale if math.isfinite(scale) else 'unset'}, checkpoint {last}")
    return last
