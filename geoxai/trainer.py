"""Building a Lightning ``Trainer`` from the ``trainer:`` section of a config.

Every training stage (embedder, autoencoder, diffusion) goes through here, so devices, precision,
strategy and node count work the same everywhere: one CPU, one GPU, DDP over several GPUs or nodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from geoxai.config import merge

TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",
    "devices": "auto",
    "num_nodes": 1,
    "strategy": "auto",
    "precision": "auto",  # bf16-mixed on a GPU that supports it, else 32-true
    "max_steps": -1,
    "max_epochs": None,
    "max_time": None,  # "DD:HH:MM:SS" or minutes as a number
    "accumulate_grad_batches": 1,
    "gradient_clip_val": None,
    "log_every_n_steps": 50,
    "check_val_every_n_epoch": 1,
    "deterministic": False,
    "seed": 0,
    "matmul_precision": "high",
}


def resolve_precision(precision: str) -> str:
    """``auto`` means bf16 mixed precision on a GPU with bf16 support, full precision elsewhere."""
    if precision != "auto":
        return str(precision)
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def trainer_settings(section: dict[str, Any] | None, where: str = "trainer") -> dict[str, Any]:
    """Validate a ``trainer:`` section against the defaults (unknown keys are errors)."""
    return merge(TRAINER_DEFAULTS, section or {}, where)


def build_trainer(
    section: dict[str, Any] | None,
    default_root_dir: str | Path,
    callbacks: list | None = None,
    logger: Any = True,
    enable_progress_bar: bool = True,
    **extra: Any,
):
    """A ``pytorch_lightning.Trainer`` configured from ``section``; ``extra`` overrides it."""
    import pytorch_lightning as pl

    settings = trainer_settings(section)
    pl.seed_everything(int(settings["seed"]), workers=True, verbose=False)
    torch.set_float32_matmul_precision(settings["matmul_precision"])
    max_time = settings["max_time"]
    if isinstance(max_time, (int, float)):
        max_time = {"minutes": float(max_time)}
    kwargs = dict(
        accelerator=settings["accelerator"],
        devices=settings["devices"],
        num_nodes=settings["num_nodes"],
        strategy=settings["strategy"],
        precision=resolve_precision(settings["precision"]),
        max_steps=settings["max_steps"],
        max_epochs=settings["max_epochs"],
        max_time=max_time,
        accumulate_grad_batches=settings["accumulate_grad_batches"],
        gradient_clip_val=settings["gradient_clip_val"],
        log_every_n_steps=settings["log_every_n_steps"],
        check_val_every_n_epoch=settings["check_val_every_n_epoch"],
        deterministic=settings["deterministic"],
        default_root_dir=str(default_root_dir),
        callbacks=callbacks or [],
        logger=logger,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
    )
    kwargs.update(extra)
    return pl.Trainer(**kwargs)
