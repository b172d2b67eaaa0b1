"""Training side effects of the diffusion model: preview grids and the loss curve CSV.

Previews put held-out originals (top row) above generations from their descriptors (bottom row),
sampled with a few steps of the inference pipeline (``geoxai.ldm.pipeline``) from the EMA weights:
the quickest look at whether the model has learned the place, not only the scene layout. The same
noise seeds are used at every step, so successive grids are comparable.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from diffusers import AutoencoderKL
from PIL import Image
from torchvision.utils import make_grid

from geoxai.files import atomic_save_image, atomic_write_text


class PreviewGrid(pl.Callback):
    """Every ``every_n_steps`` optimizer steps (and at the end) save originals beside generations."""

    def __init__(self, out_dir: Path, originals: torch.Tensor, descriptors: torch.Tensor, vae: AutoencoderKL,
                 every_n_steps: int, sampler: str = "ddim", sampler_steps: int = 20, guidance: float = 1.0,
                 seed: int = 0):
        self.out_dir = Path(out_dir)
        self.originals, self.descriptors = originals.float().cpu(), descriptors.float().cpu()
        self.vae, self.sampler = vae, sampler
        self.every_n_steps, self.sampler_steps = int(every_n_steps), int(sampler_steps)
        self.guidance, self.seed = float(guidance), int(seed)
        self._last_step = -1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.save(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_steps > 0 and trainer.global_step != self._last_step:
            self.save(trainer, pl_module)

    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path | None:
        step = trainer.global_step
        self._last_step = step
        if not trainer.is_global_zero or len(self.descriptors) == 0:
            return None
        from geoxai.ldm.pipeline import DescriptorDiffusionPipeline, build_scheduler

        was_training = pl_module.training
        pl_module.eval()
        self.vae.to(pl_module.device)
        try:
            with pl_module.ema_scope():
                components = pl_module.components()
                # The constructor, not from_components: that one would freeze the live training weights.
                pipeline = DescriptorDiffusionPipeline(
                    unet=components.unet, conditioner=components.conditioner, vae=self.vae,
                    scheduler=build_scheduler(self.sampler, components.noise_scheduler_config),
                    scale_factor=components.scale_factor, image_size=int(self.originals.shape[-1]),
                    predict_noise=components.predict_noise)
                generators = [torch.Generator().manual_seed(self.seed + i) for i in range(len(self.descriptors))]
                generated = pipeline(self.descriptors, num_inference_steps=self.sampler_steps,
                                     guidance=self.guidance, generator=generators)
        finally:
            pl_module.train(was_training)
        grid = make_grid(torch.cat([self.originals, generated]).clamp(0, 1), nrow=len(generated), padding=2)
        path = self.out_dir / f"step_{step:06d}.png"
        array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        atomic_save_image(path, Image.fromarray(array))
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):  # TensorBoard
                experiment.add_image("previews", grid, step)
            elif hasattr(logger, "log_image"):  # W&B and others with an image API
                logger.log_image(key="previews", images=[Image.fromarray(array)], step=step)
        return path


class LossCSV(pl.Callback):
    """``loss.csv`` with one row per optimizer step: step, loss (mean over micro-batches), lr.

    On resume, rows after the checkpoint's step are dropped first, so a step never appears twice.
    """

    HEADER = ("step", "loss", "lr")

    def __init__(self, path: Path):
        self.path = Path(path)
        self._losses: list[float] = []
        self._step = 0
        self._lr = float("nan")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._step = trainer.global_step
        if not trainer.is_global_zero:
            return
        rows: list[list[str]] = []
        if self.path.is_file():
            with self.path.open(newline="") as handle:
                rows = [row for row in csv.reader(handle)][1:]
            rows = [row for row in rows if row and int(row[0]) <= trainer.global_step]
        buffer = io.StringIO()
        csv.writer(buffer).writerows([list(self.HEADER), *rows])
        atomic_write_text(self.path, buffer.getvalue())

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        # Read before the step: by on_train_batch_end the scheduler has moved to the next step's rate.
        if trainer.optimizers:
            self._lr = float(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if getattr(pl_module, "last_loss", None) is not None:
            self._losses.append(float(pl_module.last_loss))
        if trainer.global_step == self._step:
            return  # still accumulating gradients
        self._step = trainer.global_step
        if trainer.is_global_zero and self._losses:
            with self.path.open("a", newline="") as handle:
                csv.writer(handle).writerow([self._step, f"{sum(self._losses) / len(self._losses):.6g}",
                                             f"{self._lr:.6g}"])
        self._losses = []
