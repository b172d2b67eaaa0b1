"""Training CosPlace on a folder of UTM-named street-view images (Berton et al., CVPR 2022).

Images are split into CosGroups (``cosgroups.py``); epoch ``e`` trains group ``e % num_groups`` with
that group's CosFace head. CosPlace steps one Adam for the network and one per head; here a single
Adam holds them as parameter groups, which is the same update: torch's Adam keeps its state per
parameter and skips parameters without a gradient, and the heads of the other groups get none. One
optimizer lets Lightning handle precision, accumulation, clipping and DDP as usual.

Outputs in ``output_dir``: ``cosplace_{backbone}_{dim}.pth`` (plain ``CosPlaceNet`` state dict, the
release layout), ``embedder.yaml`` (its spec, for ``--embedder-config``), ``train_log.csv`` (loss and
learning rates per step), ``config.yaml`` and ``checkpoints/last.ckpt`` (for ``--resume``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from geoxai.config import (
    COUNT,
    NON_NEGATIVE,
    POSITIVE,
    WHOLE_OR_OFF,
    Number,
    check_values,
    merge,
    read_yaml,
    save_config,
)
from geoxai.data.conventions import POSITIVE_RADIUS_M
from geoxai.data.images import load_tensor, resize_center_crop, unreadable_path
from geoxai.data.vpr import read_train_set
from geoxai.embedders.base import IMAGENET_MEAN, IMAGENET_STD
from geoxai.embedders.cosface import CosFaceHead
from geoxai.embedders.cosgroups import CosGroup, build_groups, describe_groups
from geoxai.embedders.cosplace import CosPlaceNet, backbone_name
from geoxai.embedders.specs import read_spec, sidecar_path, write_sidecar
from geoxai.errors import GeoxaiError, UnreadableImageError, settings_from
from geoxai.files import atomic_path
from geoxai.retrieval import evaluate_retrieval
from geoxai.stages import STAGES
from geoxai.trainer import (
    CHECKPOINT_NAME,
    TRAINER_DEFAULTS,
    TRAINER_RULES,
    build_trainer,
    check_finite_loss,
    fit_stage,
    skipped_images_callback,
    stage_info,
)
from geoxai.weights import read_weights

DEFAULTS: dict[str, Any] = {
    "stage": "embedder",
    "output_dir": None,
    "worlds": [],  # written by training: the SynthCity world and split of data.train_dir
    "data": {
        "train_dir": None,  # VPR training folder (UTM + heading in the file names)
        "image_size": 512,  # training crops and the embedder's input side
        "num_workers": 2,
    },
    "model": {
        "backbone": "resnet18",
        "dim": 512,
        "pretrained": None,  # null (random init) or imagenet (torchvision weights from the local hub cache)
        "train_all_layers": None,  # null: all when from scratch, layer3 onwards when pretrained (CosPlace)
    },
    "groups": {"M": 10, "alpha": 30, "N": 5, "L": 2, "min_images_per_class": 10, "num_groups": None},
    "loss": {"s": 30.0, "m": 0.4},
    "optim": {
        "lr": 1.0e-5,  # backbone and projection
        "classifiers_lr": 1.0e-2,  # CosFace heads
        "batch_size": 32,  # per device
        "iterations_per_epoch": 10000,  # summed over devices
        "epochs": 50,
    },
    "augment": {
        "brightness": 0.7, "contrast": 0.7, "saturation": 0.7, "hue": 0.5,
        "random_resized_crop": 0.5,  # crops keep between (1 - this) and all of the image area
        "on": "loader",  # loader: per image in the data workers; device: per image after transfer
    },
    "checkpoint_every_n_steps": 200,
    "trainer": dict(TRAINER_DEFAULTS),
    "eval": {"dataset_dir": None, "batch_size": 32, "radius": POSITIVE_RADIUS_M},
}
# Every numeric key of an embedder config, checked before any work starts.
RULES: dict[str, Number] = {
    **TRAINER_RULES,
    "data.image_size": COUNT, "data.num_workers": WHOLE_OR_OFF, "model.dim": COUNT,
    "groups.M": POSITIVE, "groups.alpha": POSITIVE, "groups.N": COUNT, "groups.L": COUNT,
    "groups.min_images_per_class": COUNT, "groups.num_groups": Number(low=1, whole=True, optional=True),
    "loss.s": POSITIVE, "loss.m": NON_NEGATIVE,
    "optim.lr": POSITIVE, "optim.classifiers_lr": POSITIVE, "optim.batch_size": COUNT,
    "optim.iterations_per_epoch": COUNT, "optim.epochs": COUNT,
    "augment.brightness": NON_NEGATIVE, "augment.contrast": NON_NEGATIVE, "augment.saturation": NON_NEGATIVE,
    "augment.hue": Number(low=0, high=0.5), "augment.random_resized_crop": Number(low=0, high=1, high_open=True),
    "checkpoint_every_n_steps": WHOLE_OR_OFF, "eval.batch_size": COUNT, "eval.radius": POSITIVE,
}

LOG_NAME = "train_log.csv"


# ------------------------------------------------------------------------------------- config
def training_config(config: dict[str, Any]) -> dict[str, Any]:
    """The full config: ``config`` over ``DEFAULTS``, with required keys and values checked."""
    cfg = merge(DEFAULTS, config, "embedder config")
    check_values(cfg, RULES)
    if cfg["stage"] != "embedder":
        raise GeoxaiError(f"embedder config: stage must be `embedder` (got {cfg['stage']!r})")
    if not cfg["output_dir"]:
        raise GeoxaiError("embedder config: set output_dir (the folder for weights, logs and checkpoints)")
    train_dir = cfg["data"]["train_dir"]
    if not train_dir or not Path(train_dir).is_dir():
        raise GeoxaiError(f"embedder config: data.train_dir={train_dir!r} is not a folder; point it at a "
                          "VPR training folder (e.g. worlds/synthcity/train from `geoxai data synthcity`)")
    eval_dir = cfg["eval"]["dataset_dir"]
    if eval_dir and not (Path(eval_dir, "database").is_dir() and Path(eval_dir, "queries").is_dir()):
        raise GeoxaiError(f"embedder config: eval.dataset_dir={eval_dir!r} is not a VPR test set (a folder with "
                          "database/ and queries/); fix it or set eval.dataset_dir: null (checked before training "
                          "so that a finished run never fails at its last step)")
    from geoxai.protocols import training_worlds
    from geoxai.synthcity.world import check_world_complete

    cfg["worlds"] = training_worlds([train_dir], "embedder")  # refuses a half-written world
    if eval_dir:
        check_world_complete(eval_dir)

    with settings_from("model"):
        cfg["model"]["backbone"] = backbone_name(cfg["model"]["backbone"])
    if cfg["model"]["pretrained"] not in (None, "imagenet"):
        raise GeoxaiError(f"embedder config: model.pretrained={cfg['model']['pretrained']!r}; use null or imagenet")
    if cfg["augment"]["on"] not in ("loader", "device"):
        raise GeoxaiError(f"embedder config: augment.on={cfg['augment']['on']!r}; use loader or device")
    return cfg


# -------------------------------------------------------------------------------------- model
def imagenet_weights_file(backbone: str) -> Path:
    """The torchvision ImageNet weights of ``backbone`` in the local torch hub cache (never downloaded)."""
    import torchvision

    weights = torchvision.models.get_model_weights(backbone_name(backbone))["IMAGENET1K_V1"]
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / Path(weights.url).name
    if not path.is_file():
        raise GeoxaiError(f"model.pretrained=imagenet: {path.name} not found in {folder}; copy the torchvision "
                          "ImageNet weights there, or set model.pretrained=null to train from scratch")
    return path


def build_network(model: dict[str, Any]) -> nn.Module:
    """A ``CosPlaceNet`` (random or ImageNet init) with CosPlace's layer freezing applied."""
    with settings_from("model"):
        name = backbone_name(model["backbone"])
    if model["pretrained"] == "imagenet":  # read here with weights_only=True, never by torchvision's loader

        state = read_weights(imagenet_weights_file(name), "model.pretrained=imagenet")
        net = CosPlaceNet(name, int(model["dim"]), torchvision_state=state)
    else:
        net = CosPlaceNet(name, int(model["dim"]))
    train_all = model["train_all_layers"]
    if train_all is None:
        train_all = model["pretrained"] is None
    if not train_all:  # CosPlace fine-tunes from layer3 (ResNet) or the last conv block (VGG16) on
        layers = list(net.backbone.children())
        frozen = layers[:6] if name.startswith("resnet") else layers[:-5]
        for layer in frozen:
            layer.requires_grad_(False)
    return net


class CosPlaceTraining(pl.LightningModule):
    """The descriptor network plus one CosFace head per group; epoch ``e`` trains group ``e % G``."""

    def __init__(self, net: nn.Module, classes_per_group: list[int], dim: int, lr: float,
                 classifiers_lr: float, s: float = 30.0, m: float = 0.4,
                 device_augment: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net
        self.heads = nn.ModuleList(CosFaceHead(dim, n, s, m) for n in classes_per_group)
        self.lr, self.classifiers_lr = float(lr), float(classifiers_lr)
        self.device_augment = device_augment
        self.skipped_images: dict[str, str] = {}  # unreadable training images met so far, path -> error

    @property
    def current_group(self) -> int:
        return self.current_epoch % len(self.heads)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        groups = [{"params": trainable, "lr": self.lr}]
        groups += [{"params": list(head.parameters()), "lr": self.classifiers_lr} for head in self.heads]
        return torch.optim.Adam(groups)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, group: int) -> torch.Tensor:
        """CosFace cross-entropy of images in [0, 1] against their class indices within ``group``."""
        images = TF.normalize(images, IMAGENET_MEAN, IMAGENET_STD)
        logits = self.heads[group](self.net(images), labels)
        return F.cross_entropy(logits.float(), labels)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor, Any], batch_idx: int) -> torch.Tensor:
        images, labels, errors = batch
        for error in (line for text in errors for line in text.split("\n") if line):
            self.skipped_images[unreadable_path(error)] = error
        if self.device_augment is not None:
            images = torch.stack([self.device_augment(image) for image in images])
        loss = self.loss(images, labels, self.current_group)
        check_finite_loss(loss, self.global_step, "embedder: ", "lower optim.lr")
        param_groups = self.optimizers().param_groups
        self.log("loss", loss, prog_bar=True)
        self.log("lr", param_groups[0]["lr"], prog_bar=True)
        self.log("classifiers_lr", param_groups[1 + self.current_group]["lr"], prog_bar=True)
        self.log("group", float(self.current_group), prog_bar=True)
        return loss


# --------------------------------------------------------------------------------------- data
def augmentation(augment: dict[str, Any], image_size: int) -> v2.Compose:
    """CosPlace's training augmentation: colour jitter, then a random resized crop."""
    return v2.Compose([
        v2.ColorJitter(brightness=augment["brightness"], contrast=augment["contrast"],
                       saturation=augment["saturation"], hue=augment["hue"]),
        v2.RandomResizedCrop([image_size, image_size], scale=(1.0 - augment["random_resized_crop"], 1.0),
                             antialias=True),
    ])


class GroupImages(Dataset):
    """Item ``i`` is a random image of class ``i`` of one group: every class is drawn equally often.

    Images are resized (shorter side) and centre-cropped to ``image_size`` so any dataset batches;
    an unreadable file is replaced by another image of its class, and its error travels with the
    item (third element, newline-separated) so the training module counts and reports it.
    """

    def __init__(self, group: CosGroup, image_size: int, transform: nn.Module | None = None) -> None:
        self.group, self.image_size, self.transform = group, image_size, transform

    def __len__(self) -> int:
        return self.group.num_classes

    def __getitem__(self, class_index: int) -> tuple[torch.Tensor, int, str]:
        paths = self.group.images[class_index]
        errors = []
        for pick in torch.randperm(len(paths)).tolist():
            try:
                image = load_tensor(paths[pick])
                break
            except UnreadableImageError as exc:
                errors.append(str(exc))
        else:
            raise GeoxaiError(f"every image of class {self.group.class_ids[class_index]} is unreadable "
                              f"({errors[0]}); remove or replace them")
        image = resize_center_crop(image, self.image_size)
        if self.transform is not None:
            image = self.transform(image)
        return image, class_index, "\n".join(errors)


class CosGroupsData(pl.LightningDataModule):
    """One epoch = ``iterations_per_epoch`` batches of classes drawn with replacement from the epoch's group."""

    def __init__(self, groups: list[CosGroup], image_size: int, batch_size: int, iterations_per_epoch: int,
                 num_workers: int = 2, transform: nn.Module | None = None) -> None:
        super().__init__()
        self.groups, self.image_size, self.batch_size = groups, image_size, batch_size
        self.iterations_per_epoch, self.num_workers, self.transform = iterations_per_epoch, num_workers, transform

    def train_dataloader(self) -> DataLoader:
        group = self.groups[self.trainer.current_epoch % len(self.groups)]
        dataset = GroupImages(group, self.image_size, self.transform)
        sampler = RandomSampler(dataset, replacement=True, num_samples=self.iterations_per_epoch * self.batch_size)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                          num_workers=self.num_workers, pin_memory=torch.cuda.is_available(),
                          persistent_workers=False)


# ---------------------------------------------------------------------------------- callbacks
class ResumeCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every N steps and on the step where training stops (max_steps, max_time, last epoch).

    Saving on the stopping step, before Lightning closes the epoch, makes ``--resume`` continue
    the same epoch (and group) at the next step. Subclassing ``ModelCheckpoint`` puts it after the
    timer among the callbacks, so a ``max_time`` stop is already known here.
    """

    def __init__(self, dirpath: Path, every_n_steps: int) -> None:
        super().__init__(dirpath=dirpath, save_top_k=0, save_last=True, every_n_train_steps=every_n_steps)
        self.path = Path(dirpath) / CHECKPOINT_NAME

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        last_epoch = (trainer.max_epochs is not None and trainer.max_epochs > 0 and trainer.is_last_batch
                      and trainer.current_epoch + 1 >= trainer.max_epochs)
        max_steps = 0 < trainer.max_steps <= trainer.global_step
        already_saved = getattr(self, "_last_global_step_saved", -1) == trainer.global_step
        if (trainer.should_stop or last_epoch or max_steps) and not already_saved:
            trainer.save_checkpoint(self.path)
            self._last_global_step_saved = trainer.global_step


class TrainLog(Callback):
    """``train_log.csv``: step, epoch, group, loss and learning rates of every batch, written atomically.

    On resume, rows after the checkpoint's step are dropped, so the log has each step once.
    """

    def __init__(self, path: Path, flush_every: int = 50) -> None:
        self.path, self.flush_every, self.rows = Path(path), max(1, flush_every), []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rows = []
        if trainer.global_step > 0 and self.path.is_file():
            previous = pd.read_csv(self.path)
            self.rows = previous[previous["step"] <= trainer.global_step].to_dict("records")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        metrics = trainer.callback_metrics
        self.rows.append({
            "step": trainer.global_step, "epoch": trainer.current_epoch, "group": pl_module.current_group,
            "loss": float(outputs["loss"]), "lr": float(metrics["lr"]),
            "classifiers_lr": float(metrics["classifiers_lr"]),
        })
        if len(self.rows) % self.flush_every == 0:
            self.flush(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush(trainer)

    def flush(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero:
            with atomic_path(self.path) as tmp:
                pd.DataFrame(self.rows).to_csv(tmp, index=False)


# -------------------------------------------------------------------------------------- train
def weights_name(backbone: str, dim: int) -> str:
    return f"cosplace_{backbone}_{dim}.pth"


def save_weights(net: nn.Module, path: Path, spec: dict[str, Any]) -> Path:
    """The network's plain state dict (release layout) and its ``embedder.yaml`` sidecar."""
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    write_sidecar(path, spec)
    return path


def _ddp_strategy(cfg_trainer: dict[str, Any], trainer: pl.Trainer) -> str | None:
    """Heads of other groups get no gradient in a step; DDP must be told to expect unused parameters."""
    if trainer.world_size > 1 and str(cfg_trainer.get("strategy", "auto")) in ("auto", "ddp"):
        return "ddp_find_unused_parameters_true"
    return None


def _check_resumable(cfg: dict[str, Any], saved_path: Path) -> None:
    """A resumed run must keep what shapes the checkpoint: the network, the classes, the data."""
    if not saved_path.is_file():
        return
    saved = read_yaml(saved_path, "config of the run being resumed") or {}
    for section in ("model", "groups"):
        for key, value in cfg[section].items():
            if saved.get(section, {}).get(key, value) != value:
                raise GeoxaiError(f"--resume: {section}.{key} is {value!r} but the run in {saved_path.parent} "
                                  f"was trained with {saved[section][key]!r}; keep it, or start a new output_dir")
    if str(saved.get("data", {}).get("train_dir", cfg["data"]["train_dir"])) != str(cfg["data"]["train_dir"]):
        raise GeoxaiError(f"--resume: data.train_dir differs from the run in {saved_path.parent} "
                          f"({saved['data']['train_dir']}); keep it, or start a new output_dir")


def train(config: dict[str, Any], resume: bool = False) -> Path:
    """Train CosPlace from a config (see ``DEFAULTS``); returns the saved weights' path."""
    return STAGES["embedder"].run(config, resume)


def fit(cfg: dict[str, Any], out: Path, resume: bool) -> Path:
    """The embedder's part of ``Stage.run``: groups, network, training, weights and evaluation."""
    checkpoint = out / "checkpoints" / CHECKPOINT_NAME
    if resume:
        _check_resumable(cfg, out / "config.yaml")
    data, model, optim, augment = cfg["data"], cfg["model"], cfg["optim"], cfg["augment"]
    frame = read_train_set(data["train_dir"])
    g = cfg["groups"]
    groups = build_groups(frame, g["M"], g["alpha"], g["N"], g["L"], g["min_images_per_class"],
                          g["num_groups"], where=f"data.train_dir={data['train_dir']}")
    stage_info(f"CosGroups: {describe_groups(groups)}")

    image_size = int(data["image_size"])
    transform = augmentation(augment, image_size)
    net = build_network(model)
    module = CosPlaceTraining(net, [grp.num_classes for grp in groups], int(model["dim"]), optim["lr"],
                              optim["classifiers_lr"], cfg["loss"]["s"], cfg["loss"]["m"],
                              device_augment=transform if augment["on"] == "device" else None)
    datamodule = CosGroupsData(groups, image_size, optim["batch_size"], optim["iterations_per_epoch"],
                               int(data["num_workers"]), transform if augment["on"] == "loader" else None)

    trainer_cfg = copy.deepcopy(cfg["trainer"])
    if trainer_cfg["max_epochs"] is None:
        trainer_cfg["max_epochs"] = optim["epochs"]

    def make_trainer(**extra: Any) -> pl.Trainer:
        callbacks = [ResumeCheckpoint(checkpoint.parent, int(cfg["checkpoint_every_n_steps"])),
                     TrainLog(out / LOG_NAME, int(trainer_cfg["log_every_n_steps"])),
                     skipped_images_callback(out, "embedder")]
        return build_trainer(trainer_cfg, out, callbacks=callbacks, logger=False,
                             reload_dataloaders_every_n_epochs=1, **extra)

    trainer = make_trainer()
    strategy = _ddp_strategy(trainer_cfg, trainer)
    if strategy is not None:
        trainer = make_trainer(strategy=strategy)
    if trainer.is_global_zero:
        save_config(cfg, out / "config.yaml")
    # ResumeCheckpoint saves the stopping step itself (before Lightning closes the epoch)
    fit_stage(trainer, module, checkpoint, resume, save_last=False, datamodule=datamodule)
    if not trainer.is_global_zero:
        return out / weights_name(model["backbone"], int(model["dim"]))

    name = backbone_name(model["backbone"])
    weights = out / weights_name(name, int(model["dim"]))
    spec = {"name": "cosplace", "backbone": name, "dim": int(model["dim"]), "weights": str(weights),
            "image_size": image_size}
    save_weights(module.net, weights, spec)
    if cfg["eval"]["dataset_dir"]:
        evaluate(weights, cfg["eval"], out / "eval")
    return weights


def evaluate(weights: Path, section: dict[str, Any], out: Path) -> Any:
    """Recall@N of the trained weights on a test set (database/ + queries/); written under ``out``."""
    result = evaluate_retrieval(section["dataset_dir"], read_spec(sidecar_path(weights)), out=out,
                                batch_size=int(section["batch_size"]), radius=float(section["radius"]),
                                progress=True)
    stage_info(result.format())
    return result
