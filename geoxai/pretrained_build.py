"""Packing trained models into a shipped set (``geoxai pretrained build``): fp16 safetensors plus a card each.

The set is written into a temporary folder and renamed into place, so a reader never sees half of
it. Weights are stored in fp16 (half the bytes) and read back as fp32; the identities the LDM
checks (embedder, autoencoder) are those of the stored, rounded weights, and every number on a
card is measured with the stored weights (``geoxai evaluate`` with ``--checkpoint <name>``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from geoxai import pretrained
from geoxai.config import save_config
from geoxai.embedders import SIDECAR, from_spec, read_spec
from geoxai.errors import GeoxaiError, setting

EMBEDDER_WEIGHTS = "model.safetensors"
CARD = "MODEL_CARD.md"


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def _rewrite_half(path: Path) -> None:
    """Rewrite a safetensors file in fp16, keeping its metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    save_file(_half(load_file(str(path))), str(path), metadata=metadata)


def _portable(value: Any, base: str) -> Any:
    """``value`` with absolute paths under ``base`` (the working directory) made relative: a shipped
    set records where it was trained from, not the machine's folders."""
    if isinstance(value, dict):
        return {k: _portable(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v, base) for v in value]
    if isinstance(value, str) and value.startswith(base + "/"):
        return value[len(base) + 1:]
    return value


def _pack_embedder(embedder_dir: Path, out: Path) -> dict[str, Any]:
    from safetensors.torch import save_file

    from geoxai.embedders.cosplace import read_state_dict

    spec = read_spec(embedder_dir / SIDECAR)
    if spec.get("name") != "cosplace" or spec.get("weights") in (None, "hub", "random"):
        raise GeoxaiError(f"--embedder {embedder_dir}: a shipped embedder is a trained CosPlace ({SIDECAR} with "
                          "name: cosplace and a weights file)")
    out.mkdir(parents=True)
    save_file(_half(read_state_dict(spec["weights"])), str(out / EMBEDDER_WEIGHTS), metadata={"format": "pt"})
    shipped = {k: v for k, v in spec.items() if k not in ("weights", "device")}
    save_config({**shipped, "weights": EMBEDDER_WEIGHTS}, out / SIDECAR)
    return spec


def _pack_ldm(checkpoint: Path, out: Path, name: str, embedder_dir: Path,
              kept_embedder: str | None = None, previous: Path | None = None) -> dict[str, Any]:
    from geoxai.ldm.autoencoder import autoencoder_identity, load_autoencoder
    from geoxai.ldm.export import export_pipeline
    from geoxai.ldm.loading import EXPORT_MANIFEST

    export_pipeline(checkpoint, out)
    for file in [*(out / "unet").glob("*.safetensors"), *(out / "vae").glob("*.safetensors")]:
        _rewrite_half(file)
    for file in (out / "unet" / "config.json", out / "vae" / "config.json"):  # diffusers records _name_or_path
        file.write_text(json.dumps(_portable(json.loads(file.read_text()), str(Path.cwd().resolve())), indent=2))
    manifest = yaml.safe_load((out / EXPORT_MANIFEST).read_text())
    trained_with = {"embedder": dict(manifest["embedder"]),
                    "autoencoder": dict(manifest["training_config"]["autoencoder"]),
                    "note": "the fp32 weights the LDM was trained with, before fp16 storage"}
    manifest["embedder"] = {"name": name}
    manifest["training_config"]["embedder"] = {"name": name}
    manifest["training_config"]["autoencoder"] = {**manifest["training_config"]["autoencoder"], "path": name}
    # What the stored (fp16-rounded) weights are: sampling checks these, not the training run's.
    # (The shipped embedder's identity does not depend on where its file lies.)
    embedder = from_spec(read_spec(embedder_dir / SIDECAR))
    trained_identity = (manifest.get("identities") or {}).get("embedder")
    if kept_embedder and trained_identity and trained_identity != embedder.identity():
        raise GeoxaiError(f"--checkpoint {checkpoint}: trained with embedder {trained_identity}, not the shipped "
                          f"embedder kept by --embedder {kept_embedder} ({embedder.identity()}); pack the embedder it was "
                          "trained with (its training folder)")
    manifest["identities"] = {"embedder": embedder.identity(),
                              "autoencoder": autoencoder_identity(load_autoencoder({"path": str(out / "vae")}))}
    manifest["source_checkpoint"] = Path(checkpoint).name
    _carry_worlds(manifest, previous)
    manifest["trained_with"] = trained_with
    manifest = _portable(manifest, str(Path.cwd().resolve()))
    (out / EXPORT_MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False))
    return manifest


def _carry_worlds(manifest: dict[str, Any], previous: Path | None) -> None:
    """Keep the SynthCity worlds the set being replaced records for the same checkpoint, when the
    checkpoint was trained before training recorded them (the sampling guard reads them)."""
    config = manifest["training_config"]
    old = _yaml(previous) if previous is not None else None
    if "worlds" in config or not isinstance(old, dict) or old.get("source_checkpoint") != manifest["source_checkpoint"]:
        return
    worlds = (old.get("training_config") or {}).get("worlds")
    if isinstance(worlds, list):
        config["worlds"] = worlds


def _pack_segmenter(segmenter_dir: Path, out: Path) -> dict[str, Any]:
    from geoxai.segmentation.synthcity import SPEC_NAME, WEIGHTS_NAME, weights_file

    source = weights_file(segmenter_dir)
    out.mkdir(parents=True)
    shutil.copyfile(source, out / WEIGHTS_NAME)
    _rewrite_half(out / WEIGHTS_NAME)
    spec = yaml.safe_load((source.parent / SPEC_NAME).read_text())
    (out / SPEC_NAME).write_text(yaml.safe_dump({**spec, "weights": WEIGHTS_NAME}, sort_keys=False))
    return spec


def _keep_shipped(value: str | Path, kind: str, out: Path) -> Path | None:
    """Copy the shipped ``kind`` model named ``value`` (card included) to ``out``; None for a path.

    Rebuilding a set after retraining one model keeps the others as they are, bit for bit, with the
    cards that describe how they were trained and what they measured.
    """
    if Path(value).exists() or not pretrained.looks_like_name(value):
        return None
    source = pretrained.folder(str(value), kind)  # an unknown name: one line listing the shipped ones
    shutil.copytree(source, out)
    return out


def build(name: str, embedder_dir: str | Path, checkpoint: str | Path, segmenter_dir: str | Path,
          out: str | Path | None = None, cards: str | Path | None = None, guidance: float | None = None) -> Path:
    """Pack a trained embedder folder, LDM checkpoint and segmenter folder as the shipped set ``name``.

    ``embedder_dir`` and ``segmenter_dir`` may instead name shipped models (``synthcity``), which are
    kept as they are (weights and cards); the LDM must then have been trained on that embedder.
    ``cards`` is a folder of ``<kind>.md`` texts (measured numbers, commands) put on the cards
    under the provenance this function writes itself. ``guidance`` is the scale chosen on validation
    places; ``geoxai sample`` uses it when ``--guidance`` is not given. Returns the set's folder.
    """
    from geoxai.files import atomic_folder

    if not pretrained.looks_like_name(name):
        raise GeoxaiError(f"name {name!r}: a shipped set is named by one word (letters, digits, -, _)")
    if guidance is not None:  # checked here too, so that a set never carries a guidance sample refuses
        from geoxai.ldm.sampling import check_guidance

        check_guidance(guidance, setting("guidance"))
    target = Path(out) if out is not None else pretrained.ROOT / name
    with atomic_folder(target) as tmp:
        # The old set stays readable until the new one replaces it in one rename, so a shipped model
        # kept by name is copied from it and the LDM's identities are computed with the copy.
        kept: set[str] = set()
        if _keep_shipped(embedder_dir, "embedder", tmp / "embedder"):
            kept.add("embedder")
            spec = read_spec(tmp / "embedder" / SIDECAR)
        else:
            spec = _pack_embedder(Path(embedder_dir), tmp / "embedder")
        manifest = _pack_ldm(Path(checkpoint), tmp / "ldm", name, tmp / "embedder",
                             str(embedder_dir) if "embedder" in kept else None, target / "ldm" / "geoxai.yaml")
        if guidance is not None:
            manifest["guidance"] = float(guidance)
            (tmp / "ldm" / "geoxai.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        if _keep_shipped(segmenter_dir, "segmenter", tmp / "segmenter"):
            kept.add("segmenter")
            segmenter = yaml.safe_load((tmp / "segmenter" / "segmenter.yaml").read_text())
        else:
            segmenter = _pack_segmenter(Path(segmenter_dir), tmp / "segmenter")
        notes = Path(cards) if cards is not None else None
        _write_cards(tmp, name, spec, manifest, segmenter, Path(embedder_dir), Path(segmenter_dir), notes, kept)
    return target


def _note(notes: Path | None, kind: str) -> str:
    if notes is None or not (notes / f"{kind}.md").is_file():
        return "(no measurements recorded at build time)\n"
    return (notes / f"{kind}.md").read_text()


def _write_cards(root: Path, name: str, embedder_spec: dict[str, Any], manifest: dict[str, Any],
                 segmenter: dict[str, Any], embedder_dir: Path, segmenter_dir: Path, notes: Path | None,
                 kept: frozenset[str] | set[str] = frozenset()) -> None:
    config = manifest["training_config"]
    autoencoder_run = Path(str(manifest["trained_with"]["autoencoder"]["path"])).parent
    cards = {
        root / "embedder": ("embedder", f"CosPlace {embedder_spec.get('backbone')} {embedder_spec.get('dim')}-d",
                            f"--embedder {name}", _yaml(embedder_dir / "config.yaml")),
        root / "ldm": ("ldm", f"descriptor-conditioned LDM ({manifest.get('conditioning')} conditioning)",
                       f"--checkpoint {name}", config),
        root / "ldm" / "vae": ("autoencoder", "KL autoencoder, downsampling 8", f"autoencoder.path: {name}",
                               _yaml(autoencoder_run / "config.yaml")),
        root / "segmenter": ("segmenter", f"SynthCity segmenter ({segmenter.get('architecture')})",
                             f"--segmenter {name}", _yaml(segmenter_dir / "config.yaml")),
    }
    for folder, (kind, title, usage, training) in cards.items():
        if kind in kept:  # a shipped model kept as it was keeps its card
            continue
        sizes = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
        text = [f"# {name} {kind}: {title}", "",
                f"Shipped with geoxai; loads by name: `{usage}`. Stored as fp16 safetensors "
                f"({sizes / 2**20:.1f} MiB), read back as fp32.", "",
                "## What it is and what it measures", "", _note(notes, kind).rstrip(), ""]
        if training:
            training = _portable(training, str(Path.cwd().resolve()))
            text += ["## Training config (as recorded by `geoxai train`)", "", "```yaml",
                     yaml.safe_dump(training, sort_keys=False).rstrip(), "```", ""]
        (folder / CARD).write_text("\n".join(text))


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


