"""VPR datasets in the community format: images named by their UTM coordinates.

Names follow
``@UTM_east@UTM_north@UTM_zone_number@UTM_zone_letter@lat@lon@pano_id@tile_num@heading@pitch@roll@height@timestamp@note@.jpg``.
A test set is a folder with ``database/`` and ``queries/``; a database image is a positive for a
query when it lies within a radius (25 m) in UTM. A training folder holds images at any depth.
Image lists may be cached in ``<folder>_images_paths.txt`` beside a folder (the convention of the
VPR-datasets-downloader / CosPlace), which avoids walking huge folders.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geoxai.data.conventions import POSITIVE_RADIUS_M
from geoxai.data.images import IMAGE_SUFFIXES, load_rgb
from geoxai.errors import GeoxaiError, UnreadableImageError, setting

NAME_FIELDS = (
    "utm_east", "utm_north", "zone_number", "zone_letter", "lat", "lon", "pano_id", "tile_num",
    "heading", "pitch", "roll", "height", "timestamp", "note",
)
_NUMERIC_FIELDS = {"lat", "lon", "heading", "pitch", "roll", "height"}
# Zero padding and minimum decimals of the VPR-datasets-downloader, so real names round-trip as text.
_PADDING = {"utm_east": (7, 2), "utm_north": (7, 2), "lat": (3, 5), "lon": (4, 5)}


@dataclass(frozen=True)
class VPRName:
    """The fields of a VPR file name; numbers are floats, missing numbers NaN."""

    utm_east: float
    utm_north: float
    zone_number: str = ""
    zone_letter: str = ""
    lat: float = float("nan")
    lon: float = float("nan")
    pano_id: str = ""
    tile_num: str = ""
    heading: float = float("nan")
    pitch: float = float("nan")
    roll: float = float("nan")
    height: float = float("nan")
    timestamp: str = ""
    note: str = ""


def _name_fields(path: str | Path) -> list[str]:
    """The ``@``-separated fields of a file name, without the image suffix (index 1 = east)."""
    name = os.path.basename(os.fspath(path))
    stem, suffix = os.path.splitext(name)
    if suffix.lower() in IMAGE_SUFFIXES:
        name = stem
    return name.split("@")


def _no_coordinates(path: str | Path) -> GeoxaiError:
    return GeoxaiError(
        f"{path}: name has no UTM coordinates (expected @east@north@...@.jpg); "
        "use the no-labels mode (--no-labels) for folders without coordinates"
    )


def _utm(fields: list[str], path: str | Path) -> tuple[float, float]:
    try:
        east, north = float(fields[1]), float(fields[2])
    except (IndexError, ValueError):
        raise _no_coordinates(path) from None
    if not (math.isfinite(east) and math.isfinite(north)):
        raise _no_coordinates(path)
    return east, north


def _number(text: str, field: str, path: str | Path) -> float:
    if not text.strip():
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise GeoxaiError(f"{path}: field {field} must be a number or empty (got {text!r})") from None


def name_utm(path: str | Path) -> tuple[float, float] | None:
    """(east, north) from a VPR file name, or None when the name carries no valid coordinates.

    The one rule every command applies: ``retrieve`` refuses such names (unless ``--no-labels``),
    ``sample`` leaves their UTM empty and says how many there were.
    """
    try:
        return _utm(_name_fields(path), path)
    except GeoxaiError:
        return None


def parse_name(path: str | Path) -> VPRName:
    """Parse a VPR file name; a name without UTM coordinates is a ``GeoxaiError``."""
    fields = _name_fields(path)
    east, north = _utm(fields, path)
    values = dict(zip(NAME_FIELDS, fields[1:] + [""] * len(NAME_FIELDS), strict=False))
    kwargs: dict[str, Any] = {
        field: _number(values[field], field, path) if field in _NUMERIC_FIELDS else values[field]
        for field in NAME_FIELDS[2:]
    }
    return VPRName(utm_east=east, utm_north=north, **kwargs)


def _format_number(value: float | None, padding: tuple[int, int] | None) -> str:
    if value is None or value != value:
        return ""
    text = np.format_float_positional(float(value), trim="-")
    if padding is None:
        return text
    width, decimals = padding  # integer digits including the sign, minimum decimals
    sign = "-" if text.startswith("-") else ""
    integer, _, fraction = text.lstrip("-").partition(".")
    return f"{sign}{integer.zfill(width - len(sign))}.{fraction.ljust(decimals, '0')}"


def format_name(name: VPRName, suffix: str = ".jpg") -> str:
    """The file name for ``name``; inverse of ``parse_name``.

    Coordinates are zero-padded like the VPR-datasets-downloader writes them
    (``@0584269.67@4477041.35@17@T@040.44024@-079.99508@...``); extra decimals are kept, never cut.
    """
    if not (math.isfinite(name.utm_east) and math.isfinite(name.utm_north)):
        raise GeoxaiError(f"UTM coordinates must be finite numbers (got {name.utm_east}, {name.utm_north})")
    parts = []
    for field in NAME_FIELDS:
        value = getattr(name, field)
        if field in _NUMERIC_FIELDS or field in _PADDING:
            parts.append(_format_number(value, _PADDING.get(field)))
        else:
            text = str(value)
            if "@" in text or "/" in text or os.sep in text:
                raise GeoxaiError(f"VPR name field {field} cannot contain '@' or '/' (got {text!r})")
            parts.append(text)
    return "@" + "@".join(parts) + "@" + suffix


# ------------------------------------------------------------------------------------ listing
def images_list_file(folder: str | Path) -> Path:
    """Where the cached image list of ``folder`` lives: ``<folder>_images_paths.txt`` beside it."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}_images_paths.txt"


def _read_list_file(folder: Path, list_file: Path) -> list[Path]:
    """Paths from a list file: absolute, relative to ``folder`` (CosPlace) or to its parent."""
    paths, first_missing = [], None
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        entry = Path(line)
        if entry.is_absolute():
            candidates = [entry]
        else:
            candidates = [folder / entry, folder.parent / entry]
        found = next((p for p in candidates if os.path.isfile(p)), None)
        if found is None and first_missing is None:
            first_missing = line
        paths.append(found)
    if first_missing is not None:
        missing = sum(p is None for p in paths)
        raise GeoxaiError(
            f"{list_file}: {missing} listed image(s) do not exist, first {first_missing!r} "
            f"(paths are read relative to {folder} or {folder.parent}); fix or delete the list file"
        )
    if not paths:
        raise GeoxaiError(f"{list_file}: lists no images; delete it to search {folder} instead")
    return paths


class ImageList(list):
    """Image paths (a ``list[Path]``) with the folders under them that could not be read.

    ``unreadable_folders`` holds (folder, reason) like the (file, reason) of an unreadable image:
    os.walk alone would skip such a folder without a word, and its images would silently be missing.
    """

    def __init__(self, paths: Sequence[Path] = (), unreadable_folders: Sequence[tuple[Path, str]] = ()) -> None:
        super().__init__(paths)
        self.unreadable_folders: list[tuple[Path, str]] = list(unreadable_folders)


def folder_error(exc: OSError) -> str:
    """Why a folder cannot be read, phrased like an unreadable image's reason (with the fix)."""
    cause = exc.strerror or type(exc).__name__
    return f"unreadable folder ({cause}); its images are not listed: fix its permissions or the disk"


def _walk_images(folder: Path) -> ImageList:
    """Image files at any depth; hidden files and folders (``.x``, partial writes) are skipped, and
    folders that cannot be read (permissions, I/O errors) are collected with the reason."""
    found, seen, unreadable = [], set(), []

    def failed(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else folder
        if where == folder:  # the folder asked for itself: nothing at all can be listed
            raise GeoxaiError(f"{folder}: cannot read this folder ({exc.strerror or type(exc).__name__}); "
                              "fix its permissions") from None
        unreadable.append((where, folder_error(exc)))

    for root, dirs, files in os.walk(folder, followlinks=True, onerror=failed):
        real = os.path.realpath(root)
        if real in seen:  # a symlink loop
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(
            Path(root, f) for f in files
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES
        )
    return ImageList(sorted(found), sorted(unreadable))


def list_images(folder: str | Path, warn: bool = True) -> ImageList:
    """Image paths under ``folder``, sorted; or, when it exists, the list in ``<folder>_images_paths.txt``.

    A list file keeps its own order (so indices match other tools reading the same list). Folders
    that cannot be read are in ``.unreadable_folders`` and said in one warning (every command lists
    images through here, so none skips them silently); ``warn=False`` for a caller that counts them
    with its unreadable images instead.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise GeoxaiError(f"{folder}: {what}; give a folder of .jpg/.jpeg/.png images")
    list_file = images_list_file(folder)
    if list_file.is_file():
        return ImageList(_read_list_file(folder, list_file))
    paths = _walk_images(folder)
    if paths.unreadable_folders and warn:
        first, reason = paths.unreadable_folders[0]
        warnings.warn(f"{folder}: {len(paths.unreadable_folders)} folder(s) cannot be read, their images are left "
                      f"out; first {first}: {reason}", stacklevel=2)
    if not paths:
        raise GeoxaiError(f"no .jpg/.jpeg/.png images under {folder}"
                          + (f" that could be read ({len(paths.unreadable_folders)} unreadable folder(s))"
                             if paths.unreadable_folders else ""))
    return paths


# -------------------------------------------------------------------------------- coordinates
def utm_coordinates(paths: Sequence[str | Path]) -> np.ndarray:
    """UTM east/north of each path's name as float64 [N, 2]; a name without them is a ``GeoxaiError``."""
    utm = np.empty((len(paths), 2), dtype=np.float64)
    for i, path in enumerate(paths):
        utm[i] = _utm(_name_fields(path), path)
    return utm


def radius_positives(database_utm: np.ndarray, queries_utm: np.ndarray, radius: float) -> list[np.ndarray]:
    """Per query, the database indices within ``radius`` metres (inclusive), nearest first."""
    from sklearn.neighbors import NearestNeighbors

    if not 0 <= radius < math.inf:
        raise GeoxaiError(f"{setting('radius')} {radius}: must be a finite distance in metres >= 0")
    if len(queries_utm) == 0:
        return []
    knn = NearestNeighbors().fit(np.asarray(database_utm, dtype=np.float64))
    _, indices = knn.radius_neighbors(np.asarray(queries_utm, dtype=np.float64), radius=radius,
                                      sort_results=True)
    return [np.asarray(i, dtype=np.int64) for i in indices]


class VPRTestSet:
    """A VPR test folder: ``database/`` and ``queries/`` with UTM-coded names (unless ``labels=False``)."""

    def __init__(self, folder: str | Path, labels: bool = True, radius: float = POSITIVE_RADIUS_M) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise GeoxaiError(f"{self.folder}: test-set folder does not exist; "
                              "expected a folder with database/ and queries/")
        missing = [name for name in ("database", "queries") if not (self.folder / name).is_dir()]
        if missing:
            raise GeoxaiError(f"{self.folder}: no {' or '.join(m + '/' for m in missing)} folder; "
                              "a VPR test set has database/ and queries/ subfolders of images")
        if not 0 <= radius < math.inf:
            raise GeoxaiError(f"{setting('radius')} {radius}: must be a finite distance in metres >= 0")
        self.labels = labels
        self.radius = float(radius)
        # unreadable folders: in .unreadable_folders of each list, counted by the caller (retrieve)
        self.database_paths: ImageList = list_images(self.folder / "database", warn=False)
        self.queries_paths: ImageList = list_images(self.folder / "queries", warn=False)
        self.database_utm: np.ndarray | None = utm_coordinates(self.database_paths) if labels else None
        self.queries_utm: np.ndarray | None = utm_coordinates(self.queries_paths) if labels else None
        self._positives: dict[float, list[np.ndarray]] = {}

    def positives(self, radius: float | None = None) -> list[np.ndarray]:
        """Per query, the database indices within ``radius`` (default: the set's), nearest first."""
        if self.database_utm is None or self.queries_utm is None:
            raise GeoxaiError(
                f"{self.folder}: positives need UTM coordinates in the file names, but the test set "
                "was opened in the no-labels mode (labels=False / --no-labels)"
            )
        radius = self.radius if radius is None else float(radius)
        if radius not in self._positives:
            self._positives[radius] = radius_positives(self.database_utm, self.queries_utm, radius)
        return self._positives[radius]

    @property
    def queries_without_positives(self) -> list[int]:
        """Indices of queries with no database image within ``self.radius``."""
        return [i for i, p in enumerate(self.positives()) if len(p) == 0]

    def __repr__(self) -> str:
        return (f"VPRTestSet({str(self.folder)!r}, database={len(self.database_paths)}, "
                f"queries={len(self.queries_paths)}, labels={self.labels}, radius={self.radius})")


def read_train_set(folder: str | Path) -> pd.DataFrame:
    """A training folder as a table: ``path`` (str), ``utm_east``, ``utm_north``, ``heading`` (NaN if absent).

    One row per image, in ``list_images`` order.
    """
    paths = list_images(folder)
    rows = np.empty((len(paths), 3), dtype=np.float64)
    for i, path in enumerate(paths):
        fields = _name_fields(path)
        east, north = _utm(fields, path)
        heading = _number(fields[9], "heading", path) if len(fields) > 9 else float("nan")
        rows[i] = (east, north, heading)
    return pd.DataFrame({
        "path": [str(p) for p in paths],
        "utm_east": rows[:, 0], "utm_north": rows[:, 1], "heading": rows[:, 2],
    })


# ------------------------------------------------------------------------------------- images
def _decode_error(path: Path) -> str | None:
    try:
        load_rgb(path)
    except UnreadableImageError as exc:
        text, prefix = str(exc), f"{path}: "
        return text[len(prefix):] if text.startswith(prefix) else text
    return None


def _map_files(func: Callable[[Path], Any], paths: Sequence[Path], desc: str,
              progress: bool = False) -> list[Any]:
    """``[func(p) for p in paths]`` on a few threads (file I/O and PIL decoding release the GIL)."""
    from tqdm.auto import tqdm

    results: list[Any] = []
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool, \
            tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), 1024):  # a bounded number of pending futures
            chunk = paths[start:start + 1024]
            results.extend(pool.map(func, chunk))
            bar.update(len(chunk))
    return results


def check_images(paths: Sequence[str | Path], progress: bool = False,
                 desc: str = "decoding") -> list[tuple[Path, str]]:
    """Fully decode every file; return the unreadable ones with the reason, in input order."""
    paths = [Path(p) for p in paths]
    errors = _map_files(_decode_error, paths, desc, progress)
    return [(p, e) for p, e in zip(paths, errors, strict=True) if e is not None]
