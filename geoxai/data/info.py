"""``geoxai data info``: what is in a VPR dataset folder, and what is wrong with it.

Works on a test set (``database/`` + ``queries/``), a training folder (images at any depth) and a
world root holding several of ``train/``, ``database/``, ``queries/`` (other entries such as
``labels/`` or ``metadata.csv`` are ignored).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geoxai.data.conventions import POSITIVE_RADIUS_M
from geoxai.data.digests import Duplicates, find_duplicates
from geoxai.data.images import image_size
from geoxai.data.vpr import (
    _map_files,
    _name_fields,
    _utm,
    check_images,
    images_list_file,
    list_images,
    radius_positives,
)
from geoxai.errors import GeoxaiError, UnreadableImageError, setting
from geoxai.synthcity.world import check_world_complete

PARTS = ("train", "database", "queries")
_MAX_SIZES_SHOWN = 5


@dataclass
class FolderInfo:
    """One folder of images: counts, sizes, UTM extent and unreadable files."""

    name: str
    path: Path
    images: int
    list_file: Path | None = None
    sizes: dict[tuple[int, int], int] = field(default_factory=dict)  # (width, height) -> count
    utm_min: tuple[float, float] | None = None  # (east, north)
    utm_max: tuple[float, float] | None = None
    without_coordinates: int = 0  # names lacking UTM coordinates
    example_without_coordinates: str | None = None
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def utm_span(self) -> tuple[float, float] | None:
        """Extent in metres (east, north)."""
        if self.utm_min is None or self.utm_max is None:
            return None
        return self.utm_max[0] - self.utm_min[0], self.utm_max[1] - self.utm_min[1]


@dataclass
class DatasetInfo:
    """The summary ``geoxai data info`` prints; ``format()`` is the text."""

    folder: Path
    parts: list[FolderInfo]
    radius: float
    labels: bool = True
    decoded: bool = True
    queries: int | None = None  # queries considered for positives
    queries_without_positives: int | None = None
    positives_note: str | None = None  # why positives were not counted
    duplicates: Duplicates | None = None  # byte-identical files within and across the folders

    @property
    def unreadable(self) -> list[tuple[Path, str]]:
        return [item for part in self.parts for item in part.unreadable]

    def format(self) -> str:
        names = ", ".join(f"{p.name}/" for p in self.parts if p.path != self.folder)
        lines = [f"dataset: {self.folder}" + (f" ({names})" if names else " (training folder)")]
        for part in self.parts:
            label = "images" if part.path == self.folder else f"{part.name}/"
            source = f" (listed in {part.list_file})" if part.list_file else ""
            lines.append(f"{label}: {part.images} images{source}")
            lines.append(f"  sizes: {_format_sizes(part.sizes)}")
            lines.append(f"  UTM: {self._format_utm(part)}")
            lines.append(f"  unreadable: {len(part.unreadable)}")
        if self.queries_without_positives is not None:
            lines.append(f"queries without a positive within {self.radius:g} m: "
                         f"{self.queries_without_positives} of {self.queries}")
        elif self.positives_note:
            lines.append(f"positives: {self.positives_note}")
        if self.duplicates is not None:
            lines.append(self.duplicates.format())
            across = self.duplicates.across("queries", "database")
            if across:
                lines.append(f"  {len(across)} queries have a byte-identical copy in database/ (a perfect match that "
                             f"inflates recall), e.g. {across[0].name}")
            for group in self.duplicates.groups[:3]:
                lines.append("  " + " == ".join(f"{name}/{path.name}" for name, path in group))
        check = "" if self.decoded else " (headers only; full decode check skipped)"
        lines.append(f"unreadable files: {len(self.unreadable)}{check}")
        lines.extend(f"  {path}: {reason}" for path, reason in self.unreadable)
        return "\n".join(lines)

    def _format_utm(self, part: FolderInfo) -> str:
        if not self.labels:
            return "not read (no-labels mode)"
        span = part.utm_span
        if span is None:
            return "no coordinates in the file names"
        (e0, n0), (e1, n1) = part.utm_min, part.utm_max
        text = (f"east {e0:.2f} .. {e1:.2f}, north {n0:.2f} .. {n1:.2f} "
                f"(span {span[0]:.1f} m x {span[1]:.1f} m)")
        if part.without_coordinates:
            text += (f"; {part.without_coordinates} names without coordinates, "
                     f"e.g. {part.example_without_coordinates}")
        return text


def _format_sizes(sizes: dict[tuple[int, int], int]) -> str:
    if not sizes:
        return "none readable"
    ranked = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{w}x{h} ({n})" for (w, h), n in ranked[:_MAX_SIZES_SHOWN])
    if len(ranked) > _MAX_SIZES_SHOWN:
        others = len(ranked) - _MAX_SIZES_SHOWN
        text += f", and {others} other size{'s' if others != 1 else ''}"
    return text


def _header_size(path: Path) -> tuple[int, int] | str:
    """Width and height from the file header (no decode), or why the header cannot be read."""
    try:
        return image_size(path)
    except UnreadableImageError as exc:
        return str(exc).split(": ", 1)[1] if str(exc).startswith(f"{path}: ") else str(exc)


def _coordinates(paths: list[Path]) -> tuple[np.ndarray, list[Path]]:
    """UTM of the names that have it, and the paths whose names do not."""
    utm, missing = [], []
    for path in paths:
        try:
            utm.append(_utm(_name_fields(path), path))
        except GeoxaiError:
            missing.append(path)
    return np.asarray(utm, dtype=np.float64).reshape(-1, 2), missing


def _folder_info(name: str, folder: Path, labels: bool, decode: bool,
                 progress: bool) -> tuple[FolderInfo, np.ndarray | None]:
    paths = list_images(folder, warn=False)  # unreadable folders go in the table below
    list_file = images_list_file(folder)
    info = FolderInfo(name=name, path=folder, images=len(paths),
                      list_file=list_file if list_file.is_file() else None)
    headers = _map_files(_header_size, paths, f"{name}: headers", progress)
    info.sizes = dict(Counter(h for h in headers if isinstance(h, tuple)))
    if decode:
        info.unreadable = check_images(paths, progress=progress, desc=f"{name}: decoding")
    else:
        info.unreadable = [(p, h) for p, h in zip(paths, headers, strict=True) if isinstance(h, str)]
    info.unreadable = list(paths.unreadable_folders) + info.unreadable  # counted and named like a file
    utm = None
    if labels:
        utm, missing = _coordinates(paths)
        info.without_coordinates = len(missing)
        info.example_without_coordinates = missing[0].name if missing else None
        if len(utm):
            info.utm_min = tuple(float(v) for v in utm.min(axis=0))
            info.utm_max = tuple(float(v) for v in utm.max(axis=0))
        if missing:
            utm = None  # incomplete coordinates: no positives
    return info, utm


def dataset_info(folder: str | Path, radius: float = POSITIVE_RADIUS_M, labels: bool = True, decode: bool = True,
                 progress: bool = False) -> DatasetInfo:
    """Summarise a dataset folder: images per folder, sizes, UTM extent, positives, unreadable files.

    ``labels=False`` skips reading coordinates from names; ``decode=False`` reads headers only
    (much faster on huge datasets, but misses files that are truncated after the header).
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise GeoxaiError(f"{folder}: {what}; give a VPR dataset folder (database/ + queries/, "
                          "train/, or a folder of images)")
    if not radius >= 0:
        raise GeoxaiError(f"{setting('radius')} must be a distance in metres >= 0 (got {radius})")
    check_world_complete(folder)  # a half-written SynthCity world: one line naming the command that completes it
    names = [name for name in PARTS if (folder / name).is_dir()]
    targets = [(name, folder / name) for name in names] or [(folder.name or str(folder), folder)]
    result = DatasetInfo(folder=folder, parts=[], radius=radius, labels=labels, decoded=decode)
    coordinates = {}
    for name, path in targets:
        part, utm = _folder_info(name, path, labels, decode, progress)
        result.parts.append(part)
        coordinates[name] = utm
    if "database" in names and "queries" in names:
        result.queries = next(p.images for p in result.parts if p.name == "queries")
        if not labels:
            result.positives_note = "not computed (no-labels mode)"
        elif coordinates["database"] is None or coordinates["queries"] is None:
            result.positives_note = "not computed (some database/queries names have no coordinates)"
        else:
            positives = radius_positives(coordinates["database"], coordinates["queries"], radius)
            result.queries_without_positives = sum(len(p) == 0 for p in positives)
    elif "database" in names or "queries" in names:
        result.positives_note = "not computed (a test set needs both database/ and queries/)"
    result.duplicates = find_duplicates({name: list_images(path, warn=False) for name, path in targets},
                                        progress=progress)
    return result
