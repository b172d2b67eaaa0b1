"""What every training stage shares: the Lightning ``Trainer`` built from a config's ``trainer:``
section, safe checkpoints, resume rules, and quiet, honest console output.

Every stage (embedder, autoencoder, diffusion) goes through here, so devices, precision, strategy
and node count work the same everywhere: one CPU, one GPU, DDP over several GPUs or nodes. Lightning
checkpoints are written atomically and read with ``weights_only=True`` (``SafeCheckpointIO``);
progress bars go to stderr; Lightning's own tips and start-up chatter are silenced, and the stage
prints one line saying where it runs.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from geoxai.config import COUNT, Number, check_values, merge
from geoxai.errors import GeoxaiError
from geoxai.weights import read_weights

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
# Numeric trainer settings, checked by every stage before work starts (geoxai.config.check_values).
TRAINER_RULES: dict[str, Number] = {
    "trainer.devices": Number(low=1, whole=True, special=((-1, "every device"),), text=r"auto|\d+(\s*,\s*\d+)*,?",
                              text_hint='auto or indices like "0,1"', or_list=Number(low=0, whole=True)),
    "trainer.num_nodes": COUNT,
    "trainer.max_steps": Number(low=1, whole=True, special=((-1, "no limit"),)),
    "trainer.max_epochs": Number(low=1, whole=True, optional=True, special=((-1, "no limit"),)),
    "trainer.max_time": Number(low=0, low_open=True, optional=True, text=r"\d+:\d{1,2}:\d{1,2}:\d{1,2}",
                               text_hint="a duration DD:HH:MM:SS (a number is minutes)"),
    "trainer.accumulate_grad_batches": COUNT,
    "trainer.gradient_clip_val": Number(low=0, optional=True),
    "trainer.log_every_n_steps": COUNT,
    "trainer.check_val_every_n_epoch": Number(low=1, whole=True, optional=True),
    "trainer.seed": Number(low=0, high=2**32 - 1, whole=True),  # Lightning's seed_everything range
}
CHECKPOINT_NAME = "last.ckpt"


def resolve_precision(precision: str) -> str:
    """``auto`` means bf16 mixed precision on a GPU with bf16 support, full precision elsewhere."""
    if precision != "auto":
        return str(precision)
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def trainer_settings(section: dict[str, Any] | None, where: str = "trainer") -> dict[str, Any]:
    """Validate a ``trainer:`` section against the defaults (unknown keys are errors, and so are
    numbers outside ``TRAINER_RULES``)."""
    settings = merge(TRAINER_DEFAULTS, section or {}, where)
    check_values({"trainer": settings}, TRAINER_RULES)
    return settings


# ------------------------------------------------------------------------------- checkpoints
def _checkpoint_io_base() -> type:
    from pytorch_lightning.plugins.io import TorchCheckpointIO

    return TorchCheckpointIO


class SafeCheckpointIO(_checkpoint_io_base()):
    """Lightning checkpoints written atomically (temp file + rename: a crash never leaves half a
    file that ``--resume`` would trust) and read with ``weights_only=True`` whatever the caller asks."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        from geoxai.files import atomic_path

        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return read_weights(path, "--resume", map_location=map_location or "cpu")


def resume_checkpoint(output_dir: str | Path, resume: bool) -> Path | None:
    """The checkpoint a run continues from (``--resume``), or None for a fresh run.

    A fresh run refuses an output folder that already holds a run (nothing is overwritten), and
    ``--resume`` refuses a folder without one.
    """
    last = Path(output_dir) / "checkpoints" / CHECKPOINT_NAME
    if resume and not last.is_file():
        raise GeoxaiError(f"--resume: no checkpoint at {last}; start without --resume")
    if not resume and last.is_file():
        raise GeoxaiError(f"output_dir {output_dir} already holds a training run ({last}); continue it with "
                          "--resume or choose another output_dir")
    return last if resume else None


class NonFiniteLossError(GeoxaiError):
    """The loss became NaN or infinite; ``step`` is the optimizer step being computed and ``fix`` the
    setting to change (``fit_stage`` turns it into one line naming the checkpoint that is kept)."""

    def __init__(self, message: str, step: int, fix: str = "lower the learning rate or check the data"):
        super().__init__(message)
        self.step, self.fix = step, fix


def check_finite_loss(loss: torch.Tensor, step: int, what: str, fix: str) -> None:
    """Raise ``NonFiniteLossError`` when ``loss`` is NaN or infinite (every stage checks each step)."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"{what}training loss is {loss.item()} at step {step}", step, fix)


def _checkpoint_step(path: Path) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))
    except Exception:  # a checkpoint being unreadable here is reported where it is loaded
        return None


def fit_stage(trainer: Any, module: Any, last: Path, resume: bool, save_last: bool = True, **data: Any) -> None:
    """``trainer.fit`` for every stage: from ``last`` with ``--resume`` (weights only), the full state
    saved to ``last`` at the end (``save_last``) so ``--resume`` continues from it, and a NaN or
    infinite loss one line that names the last good checkpoint, which is kept.

    Batches are drawn anew each epoch (shuffled or sampled), so a mid-epoch resume loses nothing that
    matters: Lightning's warning that a dataloader is not resumable is muted.
    """
    last = Path(last)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*your dataloader is not resumable")
            trainer.fit(module, ckpt_path=str(last) if resume else None, weights_only=True, **data)
    except NonFiniteLossError as exc:
        good = _checkpoint_step(last) if last.is_file() else None
        kept = (f"the last good checkpoint is kept: {last} (step {good})" if good is not None
                else "no checkpoint had been saved yet")
        raise GeoxaiError(f"{exc}; training stopped, {kept}; {exc.fix}, then continue with --resume") from None
    if save_last:
        trainer.save_checkpoint(last, weights_only=False)


def check_output_dir(output_dir: str | Path) -> Path:
    """``output_dir`` created and proven writable before any training work starts."""
    from geoxai.files import writable_folder

    return writable_folder(output_dir, "output_dir")


# ---------------------------------------------------------------------------------- console
def stage_info(message: str) -> None:
    """One line on stdout from the main process only (DDP ranks > 0 stay quiet)."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) == 0:
        print(message, flush=True)


def quiet_lightning() -> None:
    """Lightning's start-up lines (hardware, tips that advertise cloud services, stop reasons) give
    way to geoxai's own one-line summary; its warnings about geoxai's deliberate choices are muted.

    Applied once per process by ``build_trainer``; only Lightning's own loggers and three exact
    warning messages are touched.
    """
    for name in ("pytorch_lightning", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning's own pytree code instantiates torch's deprecated LeafSpec (torch >= 2.10).
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # Steps are counted across epochs, so a small epoch still logs every N steps.
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging "
                                              r"interval")
    # --resume continues in the same checkpoints/ folder by design.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # Worker counts are set in each config (data.num_workers), for 2-core machines as for GPU nodes.
    warnings.filterwarnings("ignore", message=r".*does not have many workers which may be a bottleneck")


SKIPPED_FILE = "skipped_images.csv"


def report_skipped(skipped: dict[str, str], out: Path, what: str) -> None:
    """Write ``out/skipped_images.csv`` (path, error) and say on the console how many were skipped."""
    import pandas as pd

    from geoxai.files import atomic_path

    path = out / SKIPPED_FILE
    previous = pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else None
    if previous is not None:  # a resumed run keeps what earlier sessions found
        skipped = {**dict(zip(previous["path"], previous["error"], strict=True)), **skipped}
    if not skipped and previous is None:
        return
    frame = pd.DataFrame({"path": sorted(skipped), "error": [skipped[p] for p in sorted(skipped)]})
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    if skipped:
        first = next(iter(sorted(skipped)))
        stage_info(f"{what}: {len(skipped)} unreadable training image(s) skipped, listed in {path} "
                   f"(first: {skipped[first]})")


def _skipped_callback_class() -> type:
    import pytorch_lightning as pl

    class SkippedImages(pl.Callback):
        """Collects the unreadable images a LightningModule met (its ``skipped_images`` dict, on every
        rank) and reports them once at the end of training: nothing is dropped silently."""

        def __init__(self, out: Path, what: str) -> None:
            self.out, self.what = Path(out), what

        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            found = dict(getattr(pl_module, "skipped_images", {}))
            if trainer.world_size > 1 and torch.distributed.is_initialized():
                gathered: list[Any] = [None] * trainer.world_size
                torch.distributed.all_gather_object(gathered, found)
                found = {k: v for part in gathered for k, v in (part or {}).items()}
            if trainer.is_global_zero:
                report_skipped(found, self.out, self.what)

    return SkippedImages


def skipped_images_callback(out: Path, what: str) -> Any:
    """A callback reporting the module's ``skipped_images`` in ``out/skipped_images.csv`` and on the console."""
    return _skipped_callback_class()(out, what)


def _progress_bar_class() -> type:
    from pytorch_lightning.callbacks import TQDMProgressBar

    class StderrProgressBar(TQDMProgressBar):
        """Lightning's tqdm bar on stderr, like every other geoxai progress bar (stdout is for results)."""

        def init_sanity_tqdm(self):
            with contextlib.redirect_stdout(sys.stderr):
                return super().init_sanity_tqdm()

        def init_train_tqdm(self):
            with contextlib.redirect_stdout(sys.stderr):
                return super().init_train_tqdm()

        def init_validation_tqdm(self):
            with contextlib.redirect_stdout(sys.stderr):
                return super().init_validation_tqdm()

        def init_predict_tqdm(self):
            with contextlib.redirect_stdout(sys.stderr):
                return super().init_predict_tqdm()

        def init_test_tqdm(self):
            with contextlib.redirect_stdout(sys.stderr):
                return super().init_test_tqdm()

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            # close the bar, so it is not printed again at interpreter exit
            if self._train_progress_bar is not None:
                self._train_progress_bar.close()

    return StderrProgressBar


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
    callbacks = list(callbacks or [])
    if enable_progress_bar:
        callbacks.append(_progress_bar_class()())
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
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        plugins=[SafeCheckpointIO()],
    )
    kwargs.update(extra)
    quiet_lightning()
    trainer = pl.Trainer(**kwargs)
    stage_info(f"trainer: {trainer.accelerator.__class__.__name__.replace('Accelerator', '').lower()} x "
               f"{trainer.num_devices} device(s) x {trainer.num_nodes} node(s), precision {trainer.precision}, "
               f"strategy {trainer.strategy.__class__.__name__.replace('Strategy', '').lower()}")
    return trainer
