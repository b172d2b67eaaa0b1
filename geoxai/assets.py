"""``geoxai assets``: every file a piece of work needs, found or missing, where it goes and where it comes from.

Real-data runs happen on machines without internet, so each weights file and data set is put in
place by hand before a long job starts; a file that turns out missing (or damaged) hours later costs
the run. This module lists what a config (``--config``), a set of plugins (``--plugins``) and a
segmenter spec (``--segmenter-config``) will read, in one table. Paths come from the loading modules
themselves (``cosplace.released_weights_path``, ``autoencoder.autoencoder_source``,
``perceptual.lpips_weights_file``, ...), so the table and the loaders cannot disagree.

A file found is also checked: against its published size and digest where the publisher gave one
(``PUBLISHED``; torch hub file names such as ``alexnet-owt-7be5be79.pth`` carry a sha256 prefix that
torch.hub itself checks when it downloads, and it is checked here too), and otherwise by loading its tensors and comparing
their names and shapes with the model's (a CosPlace release, a CompVis KL autoencoder). The table
says which check was made; "not verified" means none could be.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoxai import pretrained
from geoxai.errors import GeoxaiError, settings_from
from geoxai.evaluation import perceptual
from geoxai.evaluation.perceptual import INCEPTION_FILE, hub_checkpoints
from geoxai.evaluation.runner import load_plugin, parse_plugins
from geoxai.segmentation.base import read_segmenter_spec
from geoxai.segmentation.sam import CHECKPOINT_URL, RELEASES

FOUND, MISSING, MISMATCH = "found", "missing", "mismatch"
NOT_PUBLISHED = "size/hash not published: not verified"


@dataclass(frozen=True)
class Digest:
    """A published digest of a release file: ``hashlib`` algorithm, full hex digest or a prefix of it."""

    algorithm: str
    value: str
    size: int | None = None
    published: str = ""  # who publishes it


# Digests published for release files, keyed by file name. Only values found in public material are
# recorded here; files without one (the CosPlace releases, the CompVis kl-f8 archive) are checked by
# their contents instead.
PUBLISHED: dict[str, Digest] = {
    INCEPTION_FILE: Digest(
        "sha256", "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2", 95_628_359,
        "torch-fidelity release v0.2.0 (sha256 prefix in the file name)"),
    "sam_vit_b_01ec64.pth": Digest("md5", "01ec64d29a2fca3f0661936605ae66f8", None,
                                   "segment-anything release (md5 prefix in the file name)"),
    "sam_vit_l_0b3195.pth": Digest("md5", "0b3195507c641ddb6910d2bb5adee89c", None,
                                   "segment-anything release (md5 prefix in the file name)"),
    "sam_vit_h_4b8939.pth": Digest("md5", "4b8939a88964f0f4ff5f5b2642c598a6", None,
                                   "segment-anything release (md5 prefix in the file name)"),
}


@dataclass(frozen=True)
class Asset:
    """One file or folder some work reads, where it must be and where it comes from."""

    name: str  # what it is
    needed_by: str  # the setting that reads it (config key, plugin, segmenter)
    path: Path  # where it must be
    source: str  # URL, or how it is made
    folder: bool = False
    hub_prefix: bool = False  # a torch hub file: a sha256 prefix in its name is checked
    check: Callable[[Path], str] | None = field(default=None, compare=False)  # contents -> what was verified


@dataclass(frozen=True)
class Row:
    asset: Asset
    status: str  # found | missing | mismatch
    detail: str  # what was verified, or what does not match


# ------------------------------------------------------------------------------------ digests
def published_digest(asset: Asset) -> Digest | None:
    """The published digest of ``asset``'s file: recorded in ``PUBLISHED``, or a torch hub name's prefix."""
    if asset.path.name in PUBLISHED:
        return PUBLISHED[asset.path.name]
    if asset.hub_prefix:
        import torch.hub

        match = torch.hub.HASH_REGEX.search(asset.path.name)
        if match and len(match.group(1)) >= 6:
            return Digest("sha256", match.group(1), None, "sha256 prefix in the torch hub file name")
    return None


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def check_asset(asset: Asset) -> Row:
    """Found (and what verified it), missing, or mismatch (with the expected and found values)."""
    path, wanted = asset.path, "folder" if asset.folder else "file"
    if path.exists() and path.is_dir() != asset.folder:
        return Row(asset, MISMATCH, f"a {'file' if asset.folder else 'folder'} is there, not a {wanted}")
    if not path.exists():
        return Row(asset, MISSING, f"no such {wanted}")
    try:
        return _verified(asset)
    except OSError as exc:  # permissions, a file that vanished or a disk error while reading
        return Row(asset, MISMATCH, f"cannot be read ({exc.strerror or exc})")


def _verified(asset: Asset) -> Row:
    path = asset.path
    digest = None if asset.folder else published_digest(asset)
    checks = []
    if digest is not None:
        size = path.stat().st_size
        if digest.size is not None and size != digest.size:
            return Row(asset, MISMATCH, f"size {size} bytes, the release has {digest.size}")
        found = file_digest(path, digest.algorithm)
        if not found.startswith(digest.value):
            expected = digest.value if len(digest.value) == len(found) else f"{digest.value}..."
            return Row(asset, MISMATCH, f"{digest.algorithm} {found}, the release has {expected} "
                                        f"({digest.published})")
        kind = "" if len(digest.value) == len(found) else " prefix"
        checks.append(f"{digest.algorithm}{kind} matches {digest.published}")
    elif not asset.folder:
        checks.append(NOT_PUBLISHED)
    if asset.check is not None:
        try:
            checks.append(asset.check(path))
        except GeoxaiError as exc:
            return Row(asset, MISMATCH, str(exc))
    return Row(asset, FOUND, "; ".join(checks))


# ------------------------------------------------------------------------------------ content checks
def _cosplace_check(backbone: str, dim: int, key: str) -> Callable[[Path], str]:
    """Loads the file's tensors and compares them with CosPlace (backbone, dim); errors name the config ``key``."""
    def check(path: Path) -> str:
        import torch

        from geoxai.embedders.cosplace import (
            CosPlaceNet,
            check_cosplace_state,
            read_state_dict,
        )

        with torch.device("meta"):
            net = CosPlaceNet(backbone, dim)
        with settings_from(key.rpartition(".")[0]):
            check_cosplace_state(net, read_state_dict(path), str(path), f"cosplace {backbone} dim {dim}")
        return f"tensors match CosPlace {backbone} {dim}-d"
    return check


def _single_file_vae_check(path: Path) -> str:
    from geoxai.ldm.autoencoder import compvis_config_from_state_dict, read_single_file

    ddconfig = compvis_config_from_state_dict(read_single_file(path), path)["model"]["params"]["first_stage_config"]["params"]["ddconfig"]
    return (f"tensors of a CompVis KL autoencoder (ch {ddconfig['ch']}, ch_mult {ddconfig['ch_mult']}, "
            f"z {ddconfig['z_channels']})")


def _diffusers_folder_check(path: Path) -> str:
    folder = path if (path / "config.json").is_file() else path / "vae"
    if not (folder / "config.json").is_file():
        raise GeoxaiError(f"autoencoder.path {path}: no config.json (nor vae/config.json); expected an "
                          "AutoencoderKL.save_pretrained folder")
    if not any(folder.glob("diffusion_pytorch_model*")):
        raise GeoxaiError(f"autoencoder.path {path}: config.json but no diffusion_pytorch_model weights")
    return "diffusers folder with config and weights"


def _hf_folder_check(processor: bool) -> Callable[[Path], str]:
    """A transformers model folder has its config, weights and (for segmenters) its image processor."""
    def check(path: Path) -> str:
        names = {p.name for p in path.iterdir()}
        lacking = [n for n in ("config.json", "preprocessor_config.json")[:1 + processor] if n not in names]
        if not any(n.endswith((".safetensors", ".bin")) for n in names):
            lacking.append("weights (.safetensors)")
        if lacking:
            raise GeoxaiError(f"{path} lacks {', '.join(lacking)}; save the model"
                              f"{' and its image processor' if processor else ''} with save_pretrained or "
                              "`hf download` it again")
        return f"config{', image processor' if processor else ''} and weights present"
    return check


def _dataset_check(path: Path) -> str:
    from geoxai.data.vpr import list_images

    count = len(list_images(path))
    if count == 0:
        raise GeoxaiError(f"{path}: holds no .jpg/.jpeg/.png images")
    return f"{count} images"


# ------------------------------------------------------------------------------------ requirements
def embedder_assets(spec: Mapping[str, Any], needed_by: str, key: str = "weights") -> list[Asset]:
    """The weights file of an embedder spec (``cosplace`` with ``hub`` or a file); none for random or
    shipped models. Errors name the spec's keys (``embedder.dim`` inside a training config)."""
    with settings_from(key.rpartition(".")[0]):
        return _embedder_assets(spec, needed_by, key)


def _embedder_assets(spec: Mapping[str, Any], needed_by: str, key: str) -> list[Asset]:
    from geoxai.embedders import cosplace

    weights = spec.get("weights")
    name = str(spec.get("name", "cosplace"))
    if pretrained.is_shipped(name, "embedder") or weights in (None, cosplace.RANDOM) or name != "cosplace":
        return []
    if str(weights) == "hub":
        backbone = cosplace.backbone_name(spec.get("backbone") or cosplace.DEFAULT_BACKBONE)
        dim = spec.get("dim") or cosplace.DEFAULT_DIM  # a dim without a release is an error there
        path = cosplace.released_weights_path(backbone, dim)
        return [Asset(f"CosPlace {backbone} {dim}-d released weights", f"{needed_by}: {key}: hub", path,
                      cosplace.RELEASE_URL.format(file=path.name), check=_cosplace_check(backbone, dim, key))]
    path = Path(str(weights)).expanduser()
    backbone, dim = spec.get("backbone"), spec.get("dim")
    known = bool(backbone) and isinstance(dim, int) and not isinstance(dim, bool) and dim > 0
    check = _cosplace_check(cosplace.backbone_name(backbone), dim, key) if known else None
    return [Asset("CosPlace weights", f"{needed_by}: {key}", path,
                  "a CosPlace .pth (the release, or `geoxai train` with stage: embedder)", check=check)]


def autoencoder_assets(section: Mapping[str, Any], needed_by: str, key: str = "autoencoder.path") -> list[Asset]:
    """The autoencoder an ``autoencoder:`` section names: a CompVis file, a diffusers folder or a hub id."""
    from geoxai.ldm.autoencoder import (
        SINGLE_FILE_SUFFIXES,
        autoencoder_source,
        hub_folder,
    )

    source = str(section.get("path") or "")
    if not source or pretrained.is_shipped(source, "autoencoder"):
        return []
    url, how = autoencoder_source(source)
    path = Path(source).expanduser()
    where = f"{needed_by}: {key}"
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        name = f"{path.parent.name} autoencoder (CompVis)" if url else "KL autoencoder file"
        return [Asset(name, where, path, url or how, check=_single_file_vae_check)]
    if url.startswith("https://huggingface.co/") and not path.exists():
        return [Asset(f"autoencoder {source}", where, hub_folder(source), url, folder=True,
                      check=_diffusers_folder_check)]
    return [Asset("autoencoder (diffusers folder)", where, path, url or how, folder=True, check=_diffusers_folder_check)]


def imagenet_asset(backbone: str, needed_by: str) -> Asset:
    """The torchvision ImageNet weights a CosPlace training from ImageNet starts from (torch hub cache)."""
    import torchvision

    from geoxai.embedders.cosplace import backbone_name

    url = torchvision.models.get_model_weights(backbone_name(backbone))["IMAGENET1K_V1"].url
    return Asset(f"{backbone} ImageNet weights (torchvision)", needed_by, hub_checkpoints() / Path(url).name, url,
                 hub_prefix=True)


DATA_KEYS = ("data.train_dir", "data.train_dirs", "data.val_queries", "data.val_dir", "eval.dataset_dir")


def dataset_assets(config: Mapping[str, Any], needed_by: str) -> list[Asset]:
    """The image folders a training config reads."""
    out = []
    for key in DATA_KEYS:
        section, name = key.split(".")
        value = (config.get(section) or {}).get(name)
        for folder in ([value] if isinstance(value, (str, Path)) else list(value or [])):
            out.append(Asset("images (VPR names)", f"{needed_by}: {key}", Path(str(folder)).expanduser(),
                             "your copy of the dataset (VPR-datasets-downloader layout, docs/datasets.md)", folder=True,
                             check=_dataset_check))
    return out


def config_assets(path: Path, overrides: Sequence[str] = ()) -> list[Asset]:
    """Everything a training config (or an embedder spec file), with ``key.sub=value`` overrides, reads."""
    from geoxai.config import load_config

    config = load_config(path, overrides)
    where = path.as_posix()
    if "stage" not in config and "name" in config:  # an embedder spec (configs/embedder/specs/)
        return embedder_assets(config, where)
    out = embedder_assets(config.get("embedder") or {}, where, "embedder.weights")
    model = config.get("model") or {}
    if config.get("stage") == "embedder" and model.get("pretrained") == "imagenet":
        out.append(imagenet_asset(str(model.get("backbone") or "resnet18"), f"{where}: model.pretrained: imagenet"))
    out += autoencoder_assets(config.get("autoencoder") or {}, where)
    return out + dataset_assets(config, where)


def plugin_assets(plugins: str) -> list[Asset]:
    """The perceptual weights the plugins declare in their ``models`` (matched by source URL)."""
    import torchvision

    lpips_urls = {torchvision.models.get_model_weights(model).DEFAULT.url: net
                  for net, model in perceptual.LPIPS_BACKBONES.items()}
    out: list[Asset] = []
    for spec in parse_plugins(plugins):
        for model in getattr(load_plugin(spec), "models", ()):
            if model.source in lpips_urls:
                path = perceptual.lpips_weights_file(lpips_urls[model.source])
                out.append(Asset(model.name, f"plugin {spec}", path, model.source, hub_prefix=True))
            elif model.source == perceptual.INCEPTION_URL:
                out.append(Asset(model.name, f"plugin {spec}", perceptual.inception_weights_file(), model.source,
                                 hub_prefix=True))
            elif model.source.startswith("https://huggingface.co/"):
                out.append(_hf_cache_asset(model.source.removeprefix("https://huggingface.co/"), model.name,
                                           f"plugin {spec}"))
    return out


def _hf_cache_asset(model_id: str, name: str, needed_by: str, processor: bool = False) -> Asset:
    """A model that is read from the Hugging Face cache by id (its snapshot folder there)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id=model_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError):  # not cached: where `hf download` puts it
        folder = Path(constants.HF_HUB_CACHE) / f"models--{model_id.replace('/', '--')}"
    return Asset(name, needed_by, folder, f"https://huggingface.co/{model_id} (`hf download {model_id}`)",
                 folder=True, check=_hf_folder_check(processor))


def segmenter_assets(spec: Mapping[str, Any], needed_by: str) -> list[Asset]:
    """The model folder of an ``hf`` segmenter, the checkpoint of ``sam`` (and its base's)."""
    name = str(spec.get("name", ""))
    if name in ("hf", "sam") and not spec.get("model" if name == "hf" else "checkpoint"):
        raise GeoxaiError(f"{needed_by}: segmenter {name} needs "
                          f"{'model: (a save_pretrained folder or a Hugging Face id)' if name == 'hf' else 'checkpoint:'}")
    if name == "hf":
        model = str(spec.get("model") or "")
        path = Path(model).expanduser()
        looks_like_path = model.startswith((".", "/", "~")) or model.count("/") != 1 or path.exists()
        if looks_like_path:
            return [Asset("segmentation model (transformers folder)", f"{needed_by}: model", path,
                          "a folder written by save_pretrained (model and image processor)", folder=True,
                          check=_hf_folder_check(processor=True))]
        return [_hf_cache_asset(model, f"segmentation model {model}", f"{needed_by}: model", processor=True)]
    if name == "sam":
        path = Path(str(spec.get("checkpoint") or "")).expanduser()
        out = [Asset("SAM checkpoint", f"{needed_by}: checkpoint", path,
                     CHECKPOINT_URL.format(file=path.name) if path.name in PUBLISHED else RELEASES)]
        base = spec.get("base")
        return out + (segmenter_assets(base, f"{needed_by}: base") if isinstance(base, Mapping) else [])
    return []


def collect(configs: Sequence[Path] = (), plugins: str | None = None, segmenter_config: Path | None = None,
            overrides: Sequence[str] = ()) -> list[Asset]:
    """Every asset the given configs (each with ``overrides``), plugins and segmenter spec need, each once."""
    if overrides and not configs:
        raise GeoxaiError(f"geoxai assets: {overrides[0]}: overrides change a --config; give the config they apply to")
    if not configs and plugins is None and segmenter_config is None:
        raise GeoxaiError("geoxai assets: nothing to check; give --config FILE (a training config or embedder spec), "
                          "--plugins NAMES and/or --segmenter-config FILE")
    assets: list[Asset] = []
    for config in configs:
        assets += config_assets(Path(config), overrides)
    if plugins is not None:
        assets += plugin_assets(plugins)
    if segmenter_config is not None:
        assets += segmenter_assets(read_segmenter_spec(segmenter_config), f"--segmenter-config {segmenter_config}")
    unique: dict[tuple[Path, str], Asset] = {}
    for asset in assets:
        unique.setdefault((asset.path, asset.name), asset)
    return list(unique.values())


# ------------------------------------------------------------------------------------ table
@dataclass
class AssetReport:
    rows: list[Row]

    @property
    def complete(self) -> bool:
        return all(row.status == FOUND for row in self.rows)

    def format(self) -> str:
        """One table (asset, needed by, status, where, source, check), then each mismatch in full."""
        if not self.rows:
            return "nothing to fetch: the given work reads no weights files or datasets"
        table = [("asset", "needed by", "status", "where", "source", "check")]
        table += [(r.asset.name, r.asset.needed_by, r.status, str(r.asset.path), r.asset.source,
                   r.detail if r.status == FOUND else planned_check(r.asset)) for r in self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(5)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)) + "  " + row[5]
                 for row in table]
        lines.insert(1, "  ".join("-" * width for width in widths) + "  " + "-" * 5)
        lines += [f"mismatch: {r.asset.path}: {r.detail}" for r in self.rows if r.status == MISMATCH]
        bad = sum(r.status != FOUND for r in self.rows)
        lines.append(f"{len(self.rows) - bad} of {len(self.rows)} found" +
                     (f"; {bad} missing or mismatched: put them where the table says" if bad else ""))
        return "\n".join(lines)


def planned_check(asset: Asset) -> str:
    """What will verify ``asset`` once it is in place."""
    if asset.folder:
        return "contents checked" if asset.check else "exists"
    digest = published_digest(asset)
    if digest is None:
        return NOT_PUBLISHED + ("; tensors checked" if asset.check else "")
    what = digest.algorithm + (" and size" if digest.size else "")
    return f"{what} checked ({digest.published})"


def check_assets(configs: Sequence[Path] = (), plugins: str | None = None, segmenter_config: Path | None = None,
                 overrides: Sequence[str] = ()) -> AssetReport:
    """Collect and check every asset; ``complete`` is False when any is missing or mismatched."""
    return AssetReport([check_asset(asset) for asset in collect(configs, plugins, segmenter_config, overrides)])

