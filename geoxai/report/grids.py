"""Image grids for reports: each original photo beside the images generated from its descriptor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import make_grid

from geoxai.data.images import load_rgb
from geoxai.errors import UnreadableImageError

if TYPE_CHECKING:
    from geoxai.report.evaluations import Evaluation

ImageLike = torch.Tensor | Image.Image


def _size(image: ImageLike) -> tuple[int, int]:
    if isinstance(image, Image.Image):
        return (image.height, image.width)
    return (int(image.shape[-2]), int(image.shape[-1]))


def _as_tensor(image: ImageLike, size: tuple[int, int]) -> torch.Tensor:
    """A float [3, H, W] tensor in [0, 1] at ``size`` (PIL, uint8 and float tensors accepted)."""
    if isinstance(image, Image.Image):
        image = pil_to_tensor(image.convert("RGB"))
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    image = image.detach().float().cpu()
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected an image [3, H, W] (got shape {tuple(image.shape)})")
    image = image.expand(3, -1, -1)
    if tuple(image.shape[1:]) != size:
        image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True,
                              align_corners=False)[0]
    return image.clamp(0, 1)


def _font(tile_height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font, larger on large tiles (about 1/12 of the height, at least 10 px)."""
    try:
        return ImageFont.load_default(size=max(10, tile_height // 12))
    except TypeError:  # Pillow < 10.1: one bitmap size only
        return ImageFont.load_default()


def _label(tile: torch.Tensor, text: str, bottom: bool = False) -> torch.Tensor:
    """``text`` on a dark band at the top (or bottom) of ``tile``, so it stays readable on any photo."""
    pil = to_pil_image(tile)
    draw = ImageDraw.Draw(pil)
    font = _font(pil.height)
    box = draw.textbbox((2, 1), text, font=font)
    height = box[3] + 2
    top = pil.height - height - 1 if bottom else 0
    draw.rectangle((0, top, pil.width, top + height), fill=(0, 0, 0))
    draw.text((2, top + 1), text, fill=(255, 255, 255), font=font)
    return pil_to_tensor(pil).float() / 255.0


def original_vs_generations_grid(originals: Sequence[ImageLike] | torch.Tensor,
                                 generations_per_original: Sequence[Sequence[ImageLike] | torch.Tensor],
                                 ncols: int, labels: Sequence[str] | None = None,
                                 padding: int = 2,
                                 captions: Sequence[Sequence[str]] | None = None) -> Image.Image:
    """One row per original: the original, then its first ``ncols`` generations.

    Every tile is resized to the first original's size; a row with fewer generations is padded with
    white tiles, so a grid always shows what is missing. ``labels`` (one per row, e.g. query ids)
    are written on the original's tile when tiles are at least 32 px tall (smaller ones would be
    covered by the text). ``captions`` (one list per row, one short string per generation, e.g. the
    image's score "cos 0.84"; "" for none) are written at the bottom of the generation tiles under
    the same size rule, so a reader sees the number next to the image it describes.
    """
    if len(originals) != len(generations_per_original):
        raise ValueError(f"{len(originals)} originals but {len(generations_per_original)} lists of generations")
    if len(originals) == 0:
        raise ValueError("no originals to show")
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1 (got {ncols})")
    if labels is not None and len(labels) != len(originals):
        raise ValueError(f"{len(labels)} labels for {len(originals)} rows")
    if captions is not None and len(captions) != len(originals):
        raise ValueError(f"{len(captions)} lists of captions for {len(originals)} rows")
    size = _size(originals[0])
    tiles = []
    for row, (original, generations) in enumerate(zip(originals, generations_per_original, strict=True)):
        tile = _as_tensor(original, size)
        tiles.append(_label(tile, str(labels[row])) if labels is not None and size[0] >= 32 else tile)
        shown = [_as_tensor(g, size) for g in list(generations)[:ncols]]
        if captions is not None and size[0] >= 32:
            row_captions = list(captions[row])[:len(shown)]
            shown = [_label(t, str(c), bottom=True) if c else t
                     for t, c in zip(shown, row_captions + [""] * (len(shown) - len(row_captions)), strict=False)]
        tiles.extend(shown + [torch.ones(3, *size)] * (ncols - len(shown)))
    grid = make_grid(torch.stack(tiles), nrow=ncols + 1, padding=padding, pad_value=1.0)
    return to_pil_image(grid.mul(255).round().to(torch.uint8))


# ------------------------------------------------------------------------------- report grids
# Per-image scores shown on the tiles of a report grid: the first two of these that were measured.
HEADLINE_METRICS = (("recall", "cosine"), ("recall", "correct@1"))
_SHORT_NAMES = {"cosine": "cos", "correct@1": "top1", "delta_L": "dL"}
TILE_HEIGHT = 160  # report grids rescale tiles to this height: small images readable, large ones light


def headline_metrics(evaluation: Evaluation, limit: int = 2) -> list[tuple[str, str]]:
    """(plugin, metric) pairs to write on tiles: the preferred ones when measured, else the first per-image one."""
    records = evaluation.records
    per_image = records[(records["pairing"] == "generated") & (records["sample"] >= 0) & records["value"].notna()]
    available = set(zip(per_image["plugin"], per_image["metric"], strict=True))
    chosen = [pm for pm in HEADLINE_METRICS if pm in available][:limit]
    if not chosen:
        ordered = [(p, m) for p in evaluation.plugins for m in evaluation.metrics(p) if (p, m) in available]
        chosen = ordered[:1]
    return chosen


def short_score(metric: str, value: float) -> str:
    """``cos 0.84``, ``top1 1``, ``r@5 0``: short enough for a 160 px tile."""
    name = _SHORT_NAMES.get(metric) or (metric.replace("recall", "r") if metric.startswith("recall@") else metric[:10])
    if value != value:  # NaN
        return f"{name} -"
    number = f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return f"{name} {number}"


def _open(path: str) -> Image.Image | None:
    """The image decoded as every command decodes it (``load_rgb``); None when it cannot be read."""
    try:
        return load_rgb(path)
    except UnreadableImageError:
        return None


def evaluation_grid(evaluation: Evaluation, rows: int = 8,
                    samples: int = 4) -> tuple[Image.Image | None, str]:
    """Some queries of an evaluation (spread evenly over its sorted ids) beside their generations.

    Returns the grid and a sentence describing it, or None and the reason there is no grid (run
    folder moved, no manifest, no images). Each generation tile carries its headline scores.
    """
    manifest = evaluation.manifest
    if manifest is None:
        if evaluation.manifest_problem and evaluation.run_path is not None and evaluation.run_path.is_dir():
            return None, f"{evaluation.label}: no grid: {evaluation.manifest_problem}"
        where = evaluation.run_path or "results.json names no run folder"
        return None, f"{evaluation.label}: no readable manifest.csv in the run folder ({where}); moved or deleted?"
    ids = sorted(set(manifest["query_id"]) & set(evaluation.records["query_id"])) or sorted(set(manifest["query_id"]))
    if not ids:
        return None, f"{evaluation.label}: the run's manifest lists no images"
    picks = [ids[i] for i in np.unique(np.linspace(0, len(ids) - 1, min(rows, len(ids))).round().astype(int))]
    metrics = headline_metrics(evaluation)
    records = evaluation.records
    scores = records[(records["pairing"] == "generated") & records["value"].notna()
                     & records["query_id"].isin(picks)]
    score = {(r.plugin, r.metric, r.query_id, r.sample): r.value for r in scores.itertuples(index=False)}
    originals, generations, captions, missing = [], [], [], 0
    counts = manifest[manifest["query_id"].isin(picks)].groupby("query_id").size()
    samples = max(1, min(samples, int(counts.max())))  # no empty column when the run has fewer samples
    for query_id in picks:
        rows_q = manifest[manifest["query_id"] == query_id].sort_values("sample")
        original = _open(rows_q["query_path"].iloc[0])
        if original is None:
            missing += 1
            original = Image.new("RGB", (TILE_HEIGHT, TILE_HEIGHT), (200, 200, 200))
        images, texts = [], []
        for row in rows_q.head(samples).itertuples(index=False):
            image = _open(row.image_path)
            if image is None:
                missing += 1
                image = Image.new("RGB", original.size, (255, 255, 255))
            images.append(image)
            texts.append(" ".join(short_score(m, score[p, m, query_id, row.sample])
                                  for p, m in metrics if (p, m, query_id, row.sample) in score))
        originals.append(original)
        generations.append(images)
        captions.append(texts)
    first = originals[0]
    width = max(1, round(first.width * TILE_HEIGHT / first.height))
    originals[0] = first.resize((width, TILE_HEIGHT), Image.Resampling.BICUBIC)
    grid = original_vs_generations_grid(originals, generations, ncols=samples, labels=picks, captions=captions)
    shown = ", ".join(f"{p} {m}" for p, m in metrics) or "none"
    text = (f"{evaluation.label}: {len(picks)} of {len(ids)} queries (evenly spread), the original then up to "
            f"{samples} generations; scores on the tiles: {shown}")
    if missing:
        text += f"; {missing} image(s) could not be read (grey/white tiles)"
    return grid, text
