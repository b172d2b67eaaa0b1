"""``geoxai train`` for ``stage: segmenter``: the ``synthcity`` segmenter, trained on SynthCity renders.

Generated images have no ground truth, so a network learns SynthCity's label maps from the
world's training places (``train/`` and ``labels/train/``) with cross-entropy, optionally weighted
so that thin, rare classes (poles, signs, persons) count. Augmentation keeps labels aligned
(random crops and horizontal flips move both) and jitters brightness, contrast, saturation and hue
of the image only (optionally blurs it): generations shift colours and lighting, and a segmenter
that keyed on them would mislabel exactly the images it exists for. Validation places
(``val/queries``) are scored during training; the test places' ``queries/`` are scored once, at
the end, by the saved segmenter loaded back from its file. Output folder:

    segmenter.safetensors   the network (its config in the safetensors metadata)
    segmenter.yaml          its spec: name synthcity, architecture, classes, image size, weights file
    metrics.json            pixel accuracy and per-class IoU on validation and test places
    config.yaml             the full training config
    checkpoints/last.ckpt   Lightning checkpoint (continue with --resume)
    logs/                   CSV log of losses and validation scores
    skipped_images.csv      unreadable training images, when there were any
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from geoxai import labels as L
from geoxai.config import (
    COUNT,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    WHOLE_OR_OFF,
    Number,
    check_values,
    merge,
    read_yaml,
    save_config,
)
from geoxai.errors import GeoxaiError, UnreadableImageError, config_key, did_you_mean
from geoxai.segmentation.synthcity import (
    ARCHITECTURES,
    SegmentationNet,
    SynthCitySegmenter,
    network_config,
    save_segmenter,
    size_factor,
)
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
from geoxai.weights import check_state_dict, read_weights

IGNORE = 255  # label id ignored by the loss and the scores (ids outside the canonical range)
CLASS_WEIGHTS = (None, "inverse-sqrt-frequency")

DEFAULTS: dict[str, Any] = {
    "stage": "segmenter",
    "output_dir": None,
    "protocol": "unseen-places",  # unseen-places | seen-map: which places training may hold (geoxai.protocols)
    "worlds": [],  # written by training: the SynthCity worlds and splits of data.train_dirs
    "data": {
        "train_dirs": [],  # image folders whose label maps lie at <root>/labels/<relative path> (SynthCity train/)
        "val_dir": None,  # validation places (val/queries): scored every check_val_every_n_epoch
        "test_dir": None,  # test places (queries/): scored once, after training
        "image_size": 128,  # images and label maps are resized (shorter side) and centre-cropped to this
        "crop_size": None,  # random training crops of this side (null: whole images); scores use whole images
        "batch_size": 16,
        "num_workers": 0,
    },
    "model": {
        "architecture": "unet",  # unet | lraspp_mobilenet_v3_large | deeplabv3_mobilenet_v3_large (torchvision)
        "widths": [16, 32, 64, 128],  # unet only: channels per level
    },
    "augment": {
        "flip": True,  # horizontal flip of image and labels together
        "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1,  # image only
        "blur": 0.0,  # probability of a Gaussian blur of the image
        "blur_sigma": [0.1, 1.5],  # its sigma range in pixels (generations decoded by a small autoencoder are soft)
        "blur_kernel": 5,  # its kernel side in pixels (odd)
    },
    # class_weights: null (plain cross-entropy) or inverse-sqrt-frequency (from the training label maps:
    # thin, rare classes such as poles and signs weigh more, the average pixel weighs 1)
    "loss": {"class_weights": None},
    "optim": {"lr": 3.0e-3, "weight_decay": 1.0e-4, "warmup_steps": 50},  # AdamW, then cosine decay to 0
    "checkpoint_every_n_steps": 100,
    "threads": None,  # torch intra-op threads (null: torch's default); 1 is faster on a busy small CPU
    "trainer": dict(TRAINER_DEFAULTS),
}

# Every numeric key of a segmenter config, checked before any work starts (multiples of the network's
# size factor and the blur kernel's oddness are checked by training_config after them).
RULES: dict[str, Number] = {
    **TRAINER_RULES,
    "data.image_size": COUNT, "data.crop_size": Number(low=1, whole=True, optional=True), "data.batch_size": COUNT,
    "data.num_workers": WHOLE_OR_OFF, "model.widths": Number(low=1, whole=True, each=True),
    "augment.brightness": NON_NEGATIVE, "augment.contrast": NON_NEGATIVE, "augment.saturation": NON_NEGATIVE,
    "augment.hue": Number(low=0, high=0.5), "augment.blur": PROBABILITY,
    "augment.blur_sigma": Number(low=0, low_open=True, each=True), "augment.blur_kernel": COUNT,
    "optim.lr": POSITIVE, "optim.weight_decay": NON_NEGATIVE, "optim.warmup_steps": WHOLE_OR_OFF,
    "checkpoint_every_n_steps": WHOLE_OR_OFF, "threads": Number(low=1, whole=True, optional=True),
}


# ------------------------------------------------------------------------------------- config
def training_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The full config: ``config`` over ``DEFAULTS``, with required keys and values checked."""
    from geoxai.protocols import check_protocol

    cfg = merge(DEFAULTS, dict(config), "segmenter config")
    check_values(cfg, RULES)
    if cfg["stage"] != "segmenter":
        raise GeoxaiError(f"segmenter config: stage is {cfg['stage']!r}; this trainer handles stage: segmenter")
    if not cfg["output_dir"]:
        raise GeoxaiError("segmenter config: output_dir is not set; e.g. output_dir: runs/segmenter/synthcity")
    check_protocol(cfg["protocol"])
    data, model = cfg["data"], cfg["model"]
    if isinstance(data["train_dirs"], (str, Path)):
        data["train_dirs"] = [str(data["train_dirs"])]
    if not data["train_dirs"]:
        raise GeoxaiError("segmenter config: data.train_dirs is empty; list the image folders to train on "
                          "(e.g. worlds/synthcity/train)")
    if model["architecture"] not in ARCHITECTURES:

        raise GeoxaiError(f"segmenter config: model.architecture {model['architecture']!r} is not one of "
                          f"{', '.join(ARCHITECTURES)}.{did_you_mean(str(model['architecture']), list(ARCHITECTURES))}")
    if model["architecture"] == "unet" and (not model["widths"] or any(int(w) <= 0 for w in model["widths"])):
        raise GeoxaiError(f"segmenter config: model.widths {model['widths']!r} must list positive channel counts")
    factor = size_factor(model["architecture"], model["widths"])
    if int(data["image_size"]) <= 0 or int(data["image_size"]) % factor:
        raise GeoxaiError(f"segmenter config: data.image_size {data['image_size']} is not a positive multiple of "
                          f"{factor} (the UNet halves the image {len(model['widths']) - 1} times)")
    crop = data["crop_size"]
    if crop is not None and (not isinstance(crop, int) or crop <= 0 or crop % factor or crop > int(data["image_size"])):
        raise GeoxaiError(f"segmenter config: data.crop_size {crop!r} must be null or a positive multiple of {factor} "
                          f"no larger than data.image_size {data['image_size']}")
    if cfg["loss"]["class_weights"] not in CLASS_WEIGHTS:
        raise GeoxaiError(f"segmenter config: loss.class_weights {cfg['loss']['class_weights']!r}; use "
                          f"{' or '.join(str(w).replace('None', 'null') for w in CLASS_WEIGHTS)}")
    sigma = cfg["augment"]["blur_sigma"]
    if (not isinstance(sigma, (list, tuple)) or len(sigma) != 2
            or not all(isinstance(s, (int, float)) for s in sigma) or not 0 < sigma[0] <= sigma[1]):
        raise GeoxaiError(f"segmenter config: augment.blur_sigma {sigma!r} must be [low, high] with 0 < low <= high")
    kernel = cfg["augment"]["blur_kernel"]
    if not isinstance(kernel, int) or kernel <= 0 or kernel % 2 == 0:
        raise GeoxaiError(f"segmenter config: augment.blur_kernel {kernel!r} must be a positive odd integer")
    return cfg


def _check_folders(cfg: dict[str, Any]) -> None:
    """Every folder exists and training folders keep to the protocol, before any work starts."""
    from geoxai.protocols import check_training_folders, training_worlds
    from geoxai.synthcity.world import check_world_complete

    data = cfg["data"]
    named = [("data.train_dirs", folder) for folder in data["train_dirs"]]
    named += [(f"data.{key}", data[key]) for key in ("val_dir", "test_dir") if data[key]]
    for key, folder in named:
        if not Path(folder).is_dir():
            raise GeoxaiError(f"{config_key(key)}: {folder} is not a folder; fix the path (relative paths are "
                              f"read from the current directory, {Path.cwd()})")
    check_training_folders(data["train_dirs"], cfg["protocol"])
    cfg["worlds"] = training_worlds(data["train_dirs"], "segmenter")
    for key in ("val_dir", "test_dir"):
        if data[key]:
            check_world_complete(data[key])


# --------------------------------------------------------------------------------------- data
def labelled_images(folders: Sequence[str | Path], key: str) -> list[tuple[Path, Path]]:
    """(image, label map) pairs of ``folders``; an image without a label map is an error, since the
    world it comes from is incomplete (re-running ``geoxai data synthcity`` completes it)."""
    from geoxai.data.vpr import list_images
    from geoxai.segmentation.groundtruth import label_path

    pairs, missing = [], []
    for folder in folders:
        for image in list_images(folder):
            found = label_path(image)
            if found is None:
                missing.append(image)
            else:
                pairs.append((Path(image), found))
    if missing:
        raise GeoxaiError(f"{key}: {len(missing)} image(s) have no label map (e.g. {missing[0]}; looked for "
                          "labels/<its path> in the folders above it); train on a SynthCity world (`geoxai data "
                          "synthcity`; re-running it completes a partly written world)")
    if not pairs:
        raise GeoxaiError(f"{key}: no .jpg/.jpeg/.png images in {', '.join(map(str, folders))}")
    return pairs


def read_label_map(path: Path) -> torch.Tensor:
    """A label map as a long tensor [H, W]; ids outside the canonical range become ``IGNORE``."""
    from geoxai.data.images import load_label_map

    labels = torch.from_numpy(load_label_map(path).copy()).long()
    labels[labels >= L.NUM_CLASSES] = IGNORE
    return labels


def augmentation(augment: Mapping[str, Any], crop_size: int | None = None) -> Any:
    """Crop and flip move image and labels together; colour jitter and blur touch the image only."""
    from torchvision.transforms import v2

    steps = [v2.RandomCrop(crop_size)] if crop_size else []
    if augment["flip"]:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(v2.ColorJitter(brightness=augment["brightness"], contrast=augment["contrast"],
                                saturation=augment["saturation"], hue=augment["hue"]))
    if float(augment["blur"]) > 0:
        sigma = tuple(float(s) for s in augment["blur_sigma"])
        blur = v2.GaussianBlur(int(augment["blur_kernel"]), sigma=sigma)
        steps.append(v2.RandomApply([blur], p=float(augment["blur"])))
    return v2.Compose(steps)


class LabelledImages(Dataset):
    """(image [3, S, S] in [0, 1], labels [S, S]) pairs at ``size``; an unreadable image or label map
    yields ``image=None`` and its error, so the module skips and reports it."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], size: int, transform: Any = None) -> None:
        self.pairs, self.size, self.transform = list(pairs), int(size), transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        from geoxai.data.images import load_tensor, resize_center_crop

        image_path, label_path = self.pairs[index]
        try:
            image, labels = load_tensor(image_path), read_label_map(label_path)
        except UnreadableImageError as exc:
            return {"image": None, "labels": None, "error": str(exc)}
        if tuple(labels.shape) != tuple(image.shape[-2:]):
            return {"image": None, "labels": None,
                    "error": f"{label_path}: unreadable image (label map {tuple(labels.shape)} does not match its "
                             f"image {tuple(image.shape[-2:])}); re-render the world"}
        image = resize_center_crop(image, self.size)
        if tuple(labels.shape) != (self.size, self.size):
            labels = TF.center_crop(TF.resize(labels[None], [self.size], interpolation=InterpolationMode.NEAREST),
                                    [self.size, self.size])[0]
        if self.transform is not None:
            image, labels = self.transform(tv_tensors.Image(image), tv_tensors.Mask(labels))
        return {"image": image.as_subclass(torch.Tensor), "labels": labels.as_subclass(torch.Tensor), "error": None}


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    good = [item for item in batch if item["image"] is not None]
    skipped = [item["error"] for item in batch if item["image"] is None]
    if not good:
        return {"image": None, "labels": None, "skipped": skipped}
    return {"image": torch.stack([item["image"] for item in good]),
            "labels": torch.stack([item["labels"] for item in good]), "skipped": skipped}


def _loader(pairs: Sequence[tuple[Path, Path]], size: int, batch_size: int, workers: int, transform: Any = None,
            shuffle: bool = False) -> DataLoader:
    return DataLoader(LabelledImages(pairs, size, transform), batch_size=batch_size, shuffle=shuffle,
                      num_workers=workers, collate_fn=collate, drop_last=shuffle and len(pairs) >= batch_size,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def class_weights(pairs: Sequence[tuple[Path, Path]], kind: str | None) -> torch.Tensor | None:
    """Cross-entropy weights ``1 / sqrt(frequency)`` of each class in the training label maps,
    scaled so that the average training pixel weighs 1 (classes that never occur weigh 1)."""
    if kind is None:
        return None
    counts = torch.zeros(L.NUM_CLASSES, dtype=torch.float64)
    for _, label_path in pairs:
        try:
            labels = read_label_map(label_path)
        except UnreadableImageError:
            continue  # the training loop skips and reports it
        counts += torch.bincount(labels[labels != IGNORE].reshape(-1), minlength=L.NUM_CLASSES).double()
    frequency = counts / counts.sum().clamp(min=1)
    present = frequency > 0
    weights = torch.ones(L.NUM_CLASSES, dtype=torch.float64)
    weights[present] = frequency[present].rsqrt()
    weights[present] /= (frequency[present] * weights[present]).sum()
    return weights.float()


# ------------------------------------------------------------------------------------- scores
def confusion(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Confusion counts [true, predicted] over canonical classes; ``IGNORE`` pixels are left out."""
    keep = target != IGNORE
    index = target[keep].long() * L.NUM_CLASSES + predicted[keep].long()
    return torch.bincount(index.cpu(), minlength=L.NUM_CLASSES ** 2).reshape(L.NUM_CLASSES, L.NUM_CLASSES)


def scores(matrix: torch.Tensor) -> dict[str, Any]:
    """Pixel accuracy, per-class IoU (None for a class neither present nor predicted) and their mean."""
    matrix = matrix.double()
    total = float(matrix.sum())
    hits = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - hits
    iou = {L.NAMES[c]: (round(float(hits[c] / union[c]), 4) if union[c] > 0 else None) for c in range(L.NUM_CLASSES)}
    present = [v for v in iou.values() if v is not None]
    return {"pixel_accuracy": round(float(hits.sum()) / total, 5) if total else None,
            "mean_iou": round(sum(present) / len(present), 4) if present else None, "iou": iou}


def evaluate(segmenter: Any, pairs: Sequence[tuple[Path, Path]], chunk: int = 64) -> dict[str, Any]:
    """Scores of a ``Segmenter`` on (image, label map) pairs, read and segmented as in use
    (``segment_files``, at the images' own size); unreadable files are counted, not scored."""
    import numpy as np

    matrix = torch.zeros(L.NUM_CLASSES, L.NUM_CLASSES, dtype=torch.long)
    scored, skipped = 0, 0
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        maps = segmenter.segment_files([image for image, _ in part])
        for (_, label_path), predicted in zip(part, maps, strict=True):
            try:
                target = read_label_map(label_path)
            except UnreadableImageError:
                target = None
            if predicted is None or target is None or tuple(target.shape) != predicted.shape:
                skipped += 1
                continue
            matrix += confusion(torch.from_numpy(predicted.astype(np.int64)), target)
            scored += 1
    return {**scores(matrix), "images": scored, "skipped": skipped}


# ------------------------------------------------------------------------------------- module
class SegmenterTraining(pl.LightningModule):
    """Cross-entropy training of a ``SegmentationNet``; the full config is in the hyperparameters."""

    def __init__(self, config: dict[str, Any], weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        model = config["model"]
        self.net = SegmentationNet(model["architecture"], L.NUM_CLASSES, model["widths"])
        # recomputed from the label maps on --resume, so not part of the checkpoint
        self.register_buffer("class_weights", weights, persistent=False)
        self.skipped_images: dict[str, str] = {}  # unreadable training images met so far, path -> error
        self._matrix = torch.zeros(L.NUM_CLASSES, L.NUM_CLASSES, dtype=torch.long)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor | None:
        from geoxai.data.images import unreadable_path

        self.skipped_images.update({unreadable_path(error): error for error in batch["skipped"]})
        if batch["image"] is None:  # every item of the batch was unreadable
            return None
        logits = self.net(batch["image"])
        loss = F.cross_entropy(logits.float(), batch["labels"], weight=self.class_weights, ignore_index=IGNORE)
        check_finite_loss(loss, self.global_step, "segmenter: ", "lower optim.lr")
        with torch.no_grad():
            keep = batch["labels"] != IGNORE
            accuracy = (logits.argmax(1) == batch["labels"])[keep].float().mean()
        size = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/pixel_acc", accuracy, prog_bar=True, batch_size=size)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._matrix = torch.zeros(L.NUM_CLASSES, L.NUM_CLASSES, dtype=torch.long)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        if batch["image"] is not None:
            self._matrix += confusion(self.net(batch["image"]).argmax(1), batch["labels"])

    def on_validation_epoch_end(self) -> None:
        matrix = self._matrix.to(self.device)
        if self.trainer.world_size > 1:
            matrix = self.all_gather(matrix).sum(0)
        result = scores(matrix.cpu())
        if result["pixel_accuracy"] is not None:
            self.log("val/pixel_acc", result["pixel_accuracy"], prog_bar=True, rank_zero_only=True)
            self.log("val/miou", result["mean_iou"], prog_bar=True, rank_zero_only=True)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with a linear warm-up, then a cosine decay to zero over the run's steps.

        One function rather than a library schedule: diffusers' cosine warm-up starts at 0, not at
        1 / (warmup + 1), and torch's CosineAnnealingLR would keep the step count of the first
        session on a --resume with more steps, and rise again past it.
        """
        import math

        optim = self.hparams.config["optim"]
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=float(optim["lr"]),
                                      weight_decay=float(optim["weight_decay"]))
        warmup = max(int(optim["warmup_steps"]), 0)
        total = max(int(self.trainer.estimated_stepping_batches), warmup + 1)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


# -------------------------------------------------------------------------------------- train
def _check_resumable(cfg: dict[str, Any], saved_path: Path) -> None:
    """A resumed run keeps what shapes the network and the data it learns from."""
    if not saved_path.is_file():
        return
    saved = read_yaml(saved_path, "config of the run being resumed") or {}
    for section, key in (("model", "architecture"), ("model", "widths"), ("data", "image_size"),
                         ("data", "train_dirs")):
        was = saved.get(section, {}).get(key, cfg[section][key])
        if was != cfg[section][key]:
            raise GeoxaiError(f"--resume: {section}.{key} is {cfg[section][key]!r} but the run in {saved_path.parent} "
                              f"was trained with {was!r}; keep it, or start a new output_dir")


def _summary(result: dict[str, Any]) -> str:
    ious = ", ".join(f"{name} {value:.3f}" for name, value in result["iou"].items() if value is not None)
    return f"pixel accuracy {100 * result['pixel_accuracy']:.2f}%, mIoU {result['mean_iou']:.3f} ({ious})"


def checked_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``training_config`` with every folder checked and the worlds recorded (before any output)."""
    cfg = training_config(config)
    _check_folders(cfg)
    return cfg


def train(config: dict[str, Any], resume: bool = False) -> Path:
    """Train the segmenter of ``config`` (see ``DEFAULTS``); returns the ``segmenter.safetensors`` path."""
    return STAGES["segmenter"].run(config, resume)


def fit(cfg: dict[str, Any], out: Path, resume: bool) -> Path:
    """The segmenter's part of ``Stage.run``: data, network, training, weights and metrics."""
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from geoxai.files import atomic_write_text

    last = out / "checkpoints" / CHECKPOINT_NAME
    if resume:
        _check_resumable(cfg, out / "config.yaml")
    data, model = cfg["data"], cfg["model"]
    size = int(data["image_size"])
    train_pairs = labelled_images(data["train_dirs"], "data.train_dirs")
    val_pairs = labelled_images([data["val_dir"]], "data.val_dir") if data["val_dir"] else []
    test_pairs = labelled_images([data["test_dir"]], "data.test_dir") if data["test_dir"] else []
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    crop = f", {data['crop_size']} px crops" if data["crop_size"] else ""
    stage_info(f"segmenter: {model['architecture']} on {len(train_pairs)} training images at {size} px{crop}; "
               f"validation {len(val_pairs)} images, test {len(test_pairs)} images")

    train_loader = _loader(train_pairs, size, data["batch_size"], data["num_workers"],
                           augmentation(cfg["augment"], data["crop_size"]), shuffle=True)
    val_loader = _loader(val_pairs, size, data["batch_size"], 0) if val_pairs else None
    trainer = build_trainer(cfg["trainer"], out, logger=CSVLogger(str(out), name="logs"), callbacks=[
        skipped_images_callback(out, "segmenter"),
        ModelCheckpoint(dirpath=str(out / "checkpoints"), every_n_train_steps=int(cfg["checkpoint_every_n_steps"])
                        or None, save_top_k=0, save_last=True)],
        limit_val_batches=1.0 if val_loader is not None else 0, num_sanity_val_steps=0)
    if trainer.is_global_zero:
        save_config(cfg, out / "config.yaml")
    weights_per_class = class_weights(train_pairs, cfg["loss"]["class_weights"])
    if weights_per_class is not None:
        stage_info("segmenter: class weights " + ", ".join(f"{L.NAMES[c]} {w:.2f}"
                                                           for c, w in enumerate(weights_per_class.tolist())))
    module = SegmenterTraining(cfg, weights_per_class)
    if resume:
        check_state_dict(module.state_dict(), read_weights(last, "--resume")["state_dict"], f"--resume {last}",
                         "use the config the checkpoint was trained with, or a new output_dir")
    started = time.perf_counter()
    with warnings.catch_warnings():
        # data.val_dir: null means no validation, on purpose
        warnings.filterwarnings("ignore", message="You defined a `validation_step` but have no `val_dataloader`")
        fit_stage(trainer, module, last, resume, train_dataloaders=train_loader, val_dataloaders=val_loader)
    seconds = time.perf_counter() - started
    weights = out / "segmenter.safetensors"
    if not trainer.is_global_zero:
        return weights

    net = module.net.eval().cpu()
    save_segmenter(net, out, network_config(model["architecture"], L.NUM_CLASSES, size, model["widths"]))
    segmenter = SynthCitySegmenter(weights=weights, device="auto", batch_size=data["batch_size"])  # as in use
    metrics: dict[str, Any] = {
        "architecture": model["architecture"], "widths": model["widths"] if model["architecture"] == "unet" else [],
        "parameters": sum(p.numel() for p in net.parameters()), "image_size": size,
        "steps": int(trainer.global_step), "epochs": int(trainer.current_epoch), "train_images": len(train_pairs),
        "fit_seconds": round(seconds, 1), "protocol": cfg["protocol"], "inference": segmenter.inference,
    }
    for split, pairs, folder in (("val", val_pairs, data["val_dir"]), ("test", test_pairs, data["test_dir"])):
        if pairs:
            result = evaluate(segmenter, pairs)
            metrics[split] = {"source": str(folder), **result}
            if result["pixel_accuracy"] is not None:
                stage_info(f"segmenter: {split} ({folder}, {result['images']} images): {_summary(result)}")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return weights
