"""``geoxai train`` for ``stage: autoencoder``: a small KL autoencoder (diffusers ``AutoencoderKL``).

For datasets without a suitable pretrained autoencoder (SynthCity on a CPU). The loss is CompVis'
without the discriminator: L1 reconstruction (optionally + LPIPS) summed per image, plus
``kl_weight`` times the KL to N(0, I) (1e-6 in the kl-f8 recipe). Training runs on random crops —
the network is convolutional, so crops teach it the same filters at a fraction of the cost — and
evaluation on whole held-out images. Output folder:

    vae/            AutoencoderKL.save_pretrained (the path for an LDM config's autoencoder.path);
                    its scaling_factor is set to 1 / std of training latents
    metrics.json    held-out reconstruction PSNR (dB), L1, latent std, steps, whether LPIPS was used
    checkpoints/    Lightning checkpoints (last.ckpt; resume with --resume)
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from diffusers import AutoencoderKL

from geoxai.config import (
    BETAS,
    COUNT,
    NON_NEGATIVE,
    POSITIVE,
    WHOLE_OR_OFF,
    Number,
    check_values,
    merge,
    save_config,
)
from geoxai.errors import GeoxaiError, config_key
from geoxai.ldm.autoencoder import decode, encode_moments, sample_latents
from geoxai.ldm.loading import read_checkpoint
from geoxai.stages import STAGES
from geoxai.trainer import (
    TRAINER_DEFAULTS,
    TRAINER_RULES,
    build_trainer,
    check_finite_loss,
    fit_stage,
    skipped_images_callback,
    stage_info,
)
from geoxai.weights import check_state_dict

AE_DEFAULTS: dict[str, Any] = {
    "stage": "autoencoder",
    "output_dir": None,
    "protocol": "unseen-places",  # unseen-places | seen-map: which places training may hold (geoxai.protocols)
    "worlds": [],  # written by training: the SynthCity worlds and splits of data.train_dirs (an LDM inherits them)
    "data": {
        "train_dirs": [],
        "val_dir": None,  # held-out images for the PSNR report (e.g. a test set's queries/)
        "val_limit": 64,  # at most this many held-out images
        "image_size": 128,  # images are resized (shorter side) and centre-cropped to this first
        "crop_size": 64,  # random training crops (a multiple of the downsampling factor)
        "flip": True,
        "batch_size": 8,
        "num_workers": 0,
    },
    "model": {  # diffusers AutoencoderKL settings
        "block_out_channels": [128, 256, 512, 512],  # kl-f8 widths; one level per entry, f = 2**(levels-1)
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "mid_block_add_attention": True,
    },
    "loss": {"kl_weight": 1.0e-6, "lpips_weight": 0.0},
    "optim": {"lr": 4.5e-6, "betas": [0.5, 0.9], "warmup_steps": 0},
    "checkpoint_every_n_steps": 500,
    "trainer": TRAINER_DEFAULTS,
}

# Every numeric key of an autoencoder config, checked before any work starts.
AE_RULES: dict[str, Number] = {
    **TRAINER_RULES,
    "data.val_limit": COUNT, "data.image_size": COUNT, "data.crop_size": COUNT, "data.batch_size": COUNT,
    "data.num_workers": WHOLE_OR_OFF,
    "model.block_out_channels": Number(low=1, whole=True, each=True), "model.layers_per_block": COUNT,
    "model.latent_channels": COUNT, "model.norm_num_groups": COUNT,
    "loss.kl_weight": NON_NEGATIVE, "loss.lpips_weight": NON_NEGATIVE,
    "optim.lr": POSITIVE, "optim.betas": BETAS, "optim.warmup_steps": WHOLE_OR_OFF,
    "checkpoint_every_n_steps": WHOLE_OR_OFF,
}


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    config = merge(AE_DEFAULTS, dict(config), "config")
    check_values(config, AE_RULES)
    if config["stage"] != "autoencoder":
        raise GeoxaiError(f"config: stage is {config['stage']!r}; this trainer handles stage: autoencoder")
    if not config["output_dir"]:
        raise GeoxaiError("config: output_dir is not set; e.g. output_dir: runs/autoencoder/synthcity")
    data = config["data"]
    if isinstance(data["train_dirs"], (str, Path)):
        data["train_dirs"] = [str(data["train_dirs"])]
    if not data["train_dirs"]:
        raise GeoxaiError("config: data.train_dirs is empty; list the image folders to train on")
    factor = 2 ** (len(config["model"]["block_out_channels"]) - 1)
    for key in ("image_size", "crop_size"):
        if int(data[key]) % factor or int(data[key]) <= 0:
            raise GeoxaiError(f"config: data.{key} {data[key]} is not a positive multiple of the downsampling "
                              f"factor {factor} (2 ** (levels - 1) of model.block_out_channels)")
    if int(data["crop_size"]) > int(data["image_size"]):
        raise GeoxaiError(f"config: data.crop_size {data['crop_size']} exceeds data.image_size {data['image_size']}")
    return config


def check_folders(folders: list[str], key: str) -> None:
    """Every folder a config names exists before training starts (not only when it is first read)."""
    for folder in folders:
        if not Path(folder).is_dir():
            raise GeoxaiError(f"{config_key(key)}: {folder} is not a folder; fix the path (relative paths are "
                              f"read from the current directory, {Path.cwd()})")


def build_autoencoder(model: Mapping[str, Any]) -> AutoencoderKL:
    levels = len(model["block_out_channels"])
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=tuple(model["block_out_channels"]),
        layers_per_block=int(model["layers_per_block"]), latent_channels=int(model["latent_channels"]),
        norm_num_groups=int(model["norm_num_groups"]), mid_block_add_attention=bool(model["mid_block_add_attention"]))


_LPIPS_WARNED: set[str] = set()  # reasons already warned about in this process


def _lpips(weight: float) -> tuple[torch.nn.Module | None, str]:
    """torchmetrics' LPIPS (VGG) when its backbone weights are in the torch hub cache, else None and
    why (warned once per process): training goes on with L1 + KL rather than downloading."""
    if weight <= 0:
        return None, "off (loss.lpips_weight: 0)"
    from geoxai.evaluation.perceptual import (  # upward import: the same no-download LPIPS the evaluation uses
        PerceptualUnavailable,
        lpips_model,
    )

    try:
        metric = lpips_model("vgg")
    except PerceptualUnavailable as exc:
        reason = f"skipped: LPIPS unavailable ({exc})"
    except GeoxaiError:
        raise
    except Exception as exc:  # missing optional packages, an unreadable cached file
        text = str(exc).strip().splitlines()
        reason = f"skipped: LPIPS unavailable ({text[0] if text else type(exc).__name__})"
    else:
        return metric, "on"
    if reason not in _LPIPS_WARNED:
        _LPIPS_WARNED.add(reason)
        warnings.warn(f"autoencoder: {reason}; training with L1 + KL only", stacklevel=2)
    return None, reason


class AutoencoderTraining(pl.LightningModule):
    """L1 (+ LPIPS) + KL training of an ``AutoencoderKL``; the full config is in the hyperparameters."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.save_hyperparameters()
        self.vae = build_autoencoder(config["model"])
        self.lpips, self.lpips_status = _lpips(float(config["loss"]["lpips_weight"]))
        self.skipped_images: dict[str, str] = {}  # unreadable training images met so far, path -> error

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor | None:
        from geoxai.data.images import unreadable_path

        self.skipped_images.update({unreadable_path(error): error for _, error in batch["skipped"]})
        images = batch["image"]
        if images is None:  # every image of the batch was unreadable
            return None
        x = images * 2.0 - 1.0
        posterior = self.vae.encode(x).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample
        per_pixel = (x - reconstruction).abs()
        rec_loss = per_pixel.sum() / x.shape[0]
        loss_cfg = self.hparams.config["loss"]
        if self.lpips is not None:
            perceptual = self.lpips.net(reconstruction.clamp(-1, 1), x).mean()  # the network, with gradients
            rec_loss = rec_loss + float(loss_cfg["lpips_weight"]) * perceptual * x[0].numel()
        kl = posterior.kl().sum() / x.shape[0]
        loss = rec_loss + float(loss_cfg["kl_weight"]) * kl
        check_finite_loss(loss, self.global_step, "autoencoder: ", "lower optim.lr")
        self.log("train/l1", per_pixel.mean(), prog_bar=True, batch_size=x.shape[0])
        self.log("train/kl", kl, batch_size=x.shape[0])
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.hparams.config["optim"]
        optimizer = torch.optim.Adam(self.vae.parameters(), lr=float(optim["lr"]), betas=tuple(optim["betas"]))
        # step s of the warm-up runs at (s + 1) / (warmup + 1) of the rate, then the full rate (torch's
        # LinearLR; diffusers' constant_with_warmup would start at 0, a step that learns nothing)
        warmup = max(int(optim["warmup_steps"]), 0)
        scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0,
                                                      total_iters=warmup)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _random_crop_flip(crop: int, flip: bool):
    from torchvision.transforms import v2

    steps = [v2.RandomCrop(crop)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


def _images(folders: list[str]) -> list[Path]:
    from geoxai.data.vpr import list_images

    paths: list[Path] = []
    for folder in folders:
        paths += list_images(folder)
    if not paths:
        raise GeoxaiError(f"data.train_dirs: no .jpg/.jpeg/.png images in {', '.join(folders)}")
    return paths


def _loader(paths: list[Path], image_size: int, transform: Any, batch_size: int, workers: int, shuffle: bool):
    from torch.utils.data import DataLoader

    from geoxai.data.images import ImageDataset, collate_images, resize_center_crop

    def prepare(image: torch.Tensor) -> torch.Tensor:
        image = resize_center_crop(image, image_size)
        return transform(image) if transform is not None else image

    return DataLoader(ImageDataset(paths, prepare), batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      collate_fn=collate_images, drop_last=shuffle and len(paths) >= batch_size,
                      persistent_workers=shuffle and workers > 0)


@torch.no_grad()
def evaluate(vae: AutoencoderKL, loader: Any) -> dict[str, float]:
    """Mean per-image PSNR (dB) and L1 of posterior-mean reconstructions, on whole images in [0, 1]."""
    from torchmetrics.image import PeakSignalNoiseRatio

    psnr = PeakSignalNoiseRatio(data_range=1.0, reduction="none", dim=(1, 2, 3))
    values, l1, count = [], 0.0, 0
    for batch in loader:
        if batch["image"] is None:
            continue
        images = batch["image"]
        mean = encode_moments(vae, images).chunk(2, dim=1)[0]
        reconstruction = decode(vae, mean).cpu()
        values.append(psnr(reconstruction, images).reshape(-1))  # a batch of one gives a 0-d tensor
        l1 += float((reconstruction - images).abs().mean(dim=(1, 2, 3)).sum())
        count += len(images)
    if not count:
        return {"psnr_db": float("nan"), "l1": float("nan"), "images": 0}
    return {"psnr_db": float(torch.cat(values).mean()), "l1": l1 / count, "images": count}


@torch.no_grad()
def latent_std(vae: AutoencoderKL, loader: Any, max_batches: int = 8) -> float:
    """Std of posterior samples over a few training batches (the LDM's scale_by_std, precomputed)."""
    samples = []
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        if batch["image"] is not None:
            samples.append(sample_latents(encode_moments(vae, batch["image"])).flatten())
    return float(torch.cat(samples).std()) if samples else float("nan")


def checked_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``resolve_config`` with every folder checked and the worlds recorded (before any output)."""
    from geoxai.protocols import check_training_folders, training_worlds

    config = resolve_config(config)
    check_folders(config["data"]["train_dirs"], "data.train_dirs")
    check_training_folders(config["data"]["train_dirs"], config["protocol"])
    config["worlds"] = training_worlds(config["data"]["train_dirs"], "autoencoder")
    if config["data"]["val_dir"]:
        check_folders([config["data"]["val_dir"]], "data.val_dir")
    return config


def train(config: dict[str, Any], resume: bool = False) -> Path:
    """Train the autoencoder of ``config``; returns the ``vae/`` folder (diffusers layout)."""
    return STAGES["autoencoder"].run(config, resume)


def fit(config: dict[str, Any], out: Path, resume: bool) -> Path:
    """The autoencoder's part of ``Stage.run``: data, network, training, ``vae/`` and metrics."""
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from geoxai.files import atomic_folder, atomic_write_text

    last = out / "checkpoints" / "last.ckpt"
    data = config["data"]
    paths = _images(data["train_dirs"])
    train_loader = _loader(paths, int(data["image_size"]), _random_crop_flip(int(data["crop_size"]), data["flip"]),
                           int(data["batch_size"]), int(data["num_workers"]), shuffle=True)
    save_config(config, out / "config.yaml")
    trainer = build_trainer(config["trainer"], out, logger=CSVLogger(str(out), name="logs"), callbacks=[
        skipped_images_callback(out, "autoencoder"),
        ModelCheckpoint(dirpath=str(out / "checkpoints"), filename="step_{step:06d}", auto_insert_metric_name=False,
                        every_n_train_steps=int(config["checkpoint_every_n_steps"]) or None, save_top_k=-1,
                        save_last=True)])
    module = AutoencoderTraining(config)
    if resume:
        check_state_dict(module.state_dict(), read_checkpoint(last, setting="--resume")["state_dict"],
                         f"--resume {last}", "use the config the checkpoint was trained with, or a new output_dir")
    fit_stage(trainer, module, last, resume, train_dataloaders=train_loader)
    if not trainer.is_global_zero:
        return out / "vae"

    vae = module.vae.eval().cpu()
    std = latent_std(vae, _loader(paths, int(data["image_size"]), None, int(data["batch_size"]), 0, shuffle=False))
    if math.isfinite(std) and std > 0:
        vae.register_to_config(scaling_factor=1.0 / std)
    held_out = paths if not data["val_dir"] else _images([data["val_dir"]])
    held_out = held_out[:: max(1, len(held_out) // int(data["val_limit"]))][: int(data["val_limit"])]
    scores = evaluate(vae, _loader(held_out, int(data["image_size"]), None, int(data["batch_size"]), 0,
                                   shuffle=False))
    with atomic_folder(out / "vae") as folder:  # a reader never sees half a model
        vae.save_pretrained(folder)
    metrics = {"psnr_db": round(scores["psnr_db"], 3), "l1": round(scores["l1"], 5), "val_images": scores["images"],
               "val_source": str(data["val_dir"] or "training images (no data.val_dir)"),
               "latent_std": round(std, 5), "scaling_factor": float(vae.config.scaling_factor),
               "downsampling_factor": 2 ** (len(vae.config.block_out_channels) - 1),
               "latent_channels": int(vae.config.latent_channels), "steps": int(trainer.global_step),
               "image_size": int(data["image_size"]), "protocol": config["protocol"],
               "lpips": module.lpips_status}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    stage_info(f"autoencoder: held-out reconstruction PSNR {metrics['psnr_db']:.2f} dB on {metrics['val_images']} images "
          f"({metrics['val_source']}), latent std {std:.4f}, {metrics['steps']} steps, LPIPS {module.lpips_status}")
    return out / "vae"
