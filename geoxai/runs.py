"""GenerationRun: the folder where a generator leaves its images, and where evaluation finds them.

A run is ``run.yaml`` (the settings that produced it), ``manifest.csv`` (one row per image:
``query_id, query_path, sample, seed, image_path, utm_east, utm_north``) and the images under
``samples/<query_id>/<sample>.png``. geoxai also keeps ``queries.csv`` (the plan: every query and how
many samples it gets) so the manifest can always be rebuilt from the plan and the images on disk:
an image is written atomically before the manifest mentions it, so a crash in between loses
nothing, and a re-run generates exactly the images that are not on disk. Any generator can write a
run by hand; docs/generation-run.md describes the format.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import geoxai
from geoxai.config import read_yaml
from geoxai.errors import GeoxaiError, OutputError, UnreadableImageError
from geoxai.files import atomic_save_image, atomic_write_text, make_folder

RUN_FILE, MANIFEST_FILE, QUERIES_FILE, SAMPLES_FOLDER = "run.yaml", "manifest.csv", "queries.csv", "samples"
FORMAT = "geoxai.generation-run/1"
MANIFEST_COLUMNS = ("query_id", "query_path", "sample", "seed", "image_path", "utm_east", "utm_north")
QUERIES_COLUMNS = ("query_id", "query_index", "query_path", "samples", "utm_east", "utm_north")
# Settings that do not change what an image looks like: a resume may change them.
NON_GENERATION_KEYS = frozenset({"format", "created", "updated", "geoxai_version", "batch_size", "device", "checkpoint",
                                 "limit", "progress", "num_workers", "domain", "random_weights"})
NON_GENERATION_KEYS |= {"protocol_check"}  # what geoxai.protocols found about the queries: a record, not a setting
_IMAGE_NAME = re.compile(r"^(\d+)\.png$")
_TEXT_KEY = "geoxai:"  # prefix of the PNG text chunks that make each image self-describing


@dataclass(frozen=True)
class QueryItem:
    """One query photo of the plan; ``query_id`` names its folder under ``samples/``."""

    query_id: str
    index: int
    query_path: Path
    utm_east: float = math.nan
    utm_north: float = math.nan


def plan_queries(query_paths: Sequence[str | Path], queries_root: str | Path) -> list[QueryItem]:
    """Queries in sorted path order with ids ``q000000, q000001, ...`` (position in that order).

    Ids are zero-padded indices, not file stems: VPR names are long and full of ``@``. They stay
    stable while the query folder does (the first N queries get the same ids whatever the limit).
    UTM coordinates come from VPR-style names (``geoxai.data.vpr.name_utm``, the rule ``retrieve``
    applies too); other names get NaN.
    """
    from geoxai.data.vpr import name_utm

    root = Path(os.path.abspath(queries_root))
    paths = sorted({Path(os.path.abspath(p if Path(p).is_absolute() else root / p)) for p in query_paths})
    width = max(6, len(str(len(paths) - 1)))
    items = []
    for index, path in enumerate(paths):
        east, north = name_utm(path) or (math.nan, math.nan)
        items.append(QueryItem(f"q{index:0{width}d}", index, path, east, north))
    return items


def sample_seed(base_seed: int, query_index: int, sample: int) -> int:
    """The seed of one generated image: a hash of (base seed, query, sample), in [0, 2**63).

    It does not depend on batch composition, device count or order, so a resumed or re-sharded
    run draws the same noise for the same image.
    """
    digest = hashlib.sha256(f"geoxai-sample:{int(base_seed)}:{int(query_index)}:{int(sample)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# -------------------------------------------------------------------------------- settings
def _plain(value: Any) -> Any:
    """Settings as YAML-safe builtins; paths become absolute so the working directory does not matter."""
    if isinstance(value, Path):
        return Path(os.path.abspath(value)).as_posix()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in settings.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key (old != new)`` for every generation setting that differs."""
    old_flat, new_flat = _flatten(old), _flatten(new)
    keys = sorted(k for k in set(old_flat) | set(new_flat) if k.split(".")[0] not in NON_GENERATION_KEYS)
    missing = "<unset>"
    return [f"{k} ({old_flat.get(k, missing)!r} != {new_flat.get(k, missing)!r})"
            for k in keys if old_flat.get(k, missing) != new_flat.get(k, missing)]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml(path, "run.yaml of a GenerationRun")
    if not isinstance(data, dict):
        raise GeoxaiError(f"{path}: run.yaml must be a mapping of settings; fix it or use a new --out")
    return data


# ------------------------------------------------------------------------------------- the run
Key = tuple[str, int]


class GenerationRun:
    """A GenerationRun folder opened for reading and (resumable, atomic) writing."""

    def __init__(self, root: Path, settings: dict[str, Any]) -> None:
        self.root = Path(root)
        self.settings = settings
        self._rows: dict[Key, dict[str, Any]] = {}
        self._plan: dict[str, dict[str, Any]] = {}
        self._manifest_stat: tuple[int, int, int] | None = None
        self._plan_stat: tuple[int, int, int] | None = None
        self._lock = None
        self._session_images, self._session_started = 0, time.time()
        self._settings_to_write: dict[str, Any] | None = None  # run.yaml update, written with the first image
        self.missing: list[str] = []  # listed images that did not exist when the run was opened
        self._row_numbers: dict[Key, int] = {}  # (query_id, sample) -> its data row in manifest.csv

    # ---------------------------------------------------------------------------- opening
    @classmethod
    def create(cls, root: str | Path, settings: Mapping[str, Any], resume: bool = True) -> GenerationRun:
        """Start a run in ``root``, or resume the run there when it was made with the same settings."""
        root = Path(root)
        settings = _plain(dict(settings))
        run_file = root / RUN_FILE
        if run_file.exists():
            existing = _read_yaml(run_file)
            differing = _differences(existing, settings)
            if differing:
                raise GeoxaiError(f"{root} holds a GenerationRun made with other settings: "
                                  f"{'; '.join(differing)}; use a new --out or the run's settings to resume")
            if not resume:
                raise GeoxaiError(f"{root} already holds a GenerationRun; use a new --out to start another")
            merged = {**existing, **settings, "format": existing.get("format", FORMAT),
                      "created": existing.get("created", _now())}
            run = cls(root, merged)
            if merged != existing:  # only settings that do not change images differ: record them with new images
                run._settings_to_write = {**merged, "updated": _now()}
            if not (root / MANIFEST_FILE).exists():  # killed between run.yaml and the first manifest
                run._write_manifest({})
            run._load()
            run._reconcile()
            run._check_paths()
            return run
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise GeoxaiError(f"{root} is not empty and is not a GenerationRun (no run.yaml); "
                              "choose a new or empty --out folder")

        make_folder(root, "--out")
        full = {"format": FORMAT, **settings, "geoxai_version": geoxai.__version__, "created": _now()}
        atomic_write_text(run_file, yaml.safe_dump(full, sort_keys=False))
        run = cls(root, full)
        run._write_manifest({})
        return run

    @classmethod
    def open(cls, root: str | Path, missing: str = "error") -> GenerationRun:
        """Read a run (geoxai's or any generator's) without writing anything to it.

        A geoxai run's manifest is reconciled with its plan and images in memory (rows whose image
        is gone are dropped, with a warning). For a hand-written run, listed images that do not
        exist are an error, or with ``missing="skip"`` dropped and listed in ``run.missing``. A row
        whose image or query photo lies outside what the run may point to is an error naming it.
        """
        root = Path(root)
        if not root.is_dir():
            raise GeoxaiError(f"{root}: no such GenerationRun folder; give the folder written by `geoxai sample --out` "
                              "or `geoxai data synthcity-run --out`")
        absent_files = [name for name in (RUN_FILE, MANIFEST_FILE) if not (root / name).is_file()]
        if absent_files:
            raise GeoxaiError(f"not a GenerationRun: {root} (no {' or '.join(absent_files)}); give the folder "
                              "written by `geoxai sample --out` (format: docs/generation-run.md)")
        run = cls(root, _read_yaml(root / RUN_FILE))
        run._load()
        if run._plan:
            current, rows = run._reconciled()
            dropped = sorted(set(current) - set(rows))
            run._rows = rows
            run._check_paths()
            run.missing = [str(run.resolve(current[key]["image_path"])) for key in dropped]
            if dropped:
                warnings.warn(f"{root / MANIFEST_FILE}: {len(dropped)} row(s) have no image on disk; they are left "
                              "out (a resumed `geoxai sample` generates them again)", stacklevel=2)
            return run
        run._check_paths()
        absent = [key for key, row in run._rows.items() if not run.resolve(row["image_path"]).is_file()]
        if absent and missing != "skip":
            first = run._rows[absent[0]]["image_path"]
            raise GeoxaiError(f"{root / MANIFEST_FILE}: {len(absent)} listed image(s) do not exist, first "
                              f"{first}; write them or remove their rows")
        run.missing = [str(run.resolve(run._rows[key]["image_path"])) for key in absent]
        run._rows = {key: row for key, row in run._rows.items() if key not in set(absent)}
        return run

    def identity(self) -> str:
        """A hash of the settings that determine the images (what an evaluation folder is bound to).

        A resumed run that gained images keeps its identity; a hand-written run without settings is
        identified by its query photos instead.
        """
        generation = {k: v for k, v in _flatten(self.settings).items() if k.split(".")[0] not in NON_GENERATION_KEYS}
        if not generation:
            generation = {"queries": sorted({row["query_path"] for row in self._rows.values()})}
        return hashlib.sha256(json.dumps(generation, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # ---------------------------------------------------------------------------- paths
    def image_path(self, query_id: str, sample: int) -> Path:
        """Where the image of (query, sample) lives: ``samples/<query_id>/<sample>.png``."""
        return self.root / SAMPLES_FOLDER / query_id / f"{int(sample)}.png"

    def _relative(self, path: Path) -> str:
        """``path`` relative to the run when inside it, else absolute (posix separators)."""
        absolute = Path(os.path.abspath(path))
        try:
            return absolute.relative_to(Path(os.path.abspath(self.root))).as_posix()
        except ValueError:
            return absolute.as_posix()

    def resolve(self, path: str | Path) -> Path:
        """A manifest path as a usable path (relative ones are relative to the run folder)."""
        path = Path(path)
        return path if path.is_absolute() else self.root / path

    def query_folders(self) -> list[Path]:
        """The query folder recorded in run.yaml (``queries``), as written and with links followed.

        A relative value is relative to the run folder; none recorded means none outside the run.
        """
        recorded = self.settings.get("queries")
        if not isinstance(recorded, str) or not recorded.strip():
            return []
        folder = Path(os.path.normpath(self.resolve(recorded).absolute()))
        return list(dict.fromkeys([folder, folder.resolve()]))

    def _check_paths(self) -> None:
        """Refuse rows that would make geoxai read a file outside the run (a manifest is untrusted input).

        ``image_path`` must lie inside the run folder once every link is followed; ``query_path``
        inside the run likewise, or inside the query folder recorded in run.yaml. See
        docs/generation-run.md, *What a run may point to*.
        """
        root = self.root.resolve()
        queries = self.query_folders()
        for key in sorted(self._rows):
            row = self._rows[key]
            image = self.resolve(row["image_path"])
            if not _inside(image.resolve(), root):
                raise GeoxaiError(f"{self._where(key)}: image_path {row['image_path']} points outside the run "
                                  f"({image.resolve()}); keep generated images inside the run folder "
                                  "(samples/<query_id>/<sample>.png), see docs/generation-run.md")
            query = self.resolve(row["query_path"])
            plain = Path(os.path.normpath(query.absolute()))  # a photo in the query folder may be a link
            if not (_inside(query.resolve(), root) or any(_inside(plain, folder) or _inside(query.resolve(), folder)
                                                          for folder in queries)):
                recorded = f"the queries folder recorded in run.yaml ({queries[0]})" if queries else \
                    "a queries folder recorded in run.yaml (none is)"
                raise GeoxaiError(f"{self._where(key)}: query_path {row['query_path']} is outside the run and "
                                  f"outside {recorded}; record the query folder as `queries:` in run.yaml, "
                                  "see docs/generation-run.md")

    def _where(self, key: Key) -> str:
        """Where a row comes from, for errors: its line in manifest.csv, else the plan."""
        number = self._row_numbers.get(key)
        source = f"{self.root / MANIFEST_FILE} row {number}" if number else f"{self.root / QUERIES_FILE}"
        return f"{source} (query_id {key[0]}, sample {key[1]})"

    # ---------------------------------------------------------------------------- generating
    def pending(self, items: Sequence[QueryItem], samples: int) -> list[tuple[QueryItem, int, int]]:
        """(query, sample, seed) of the planned images not yet on disk, in plan order.

        Records the plan, so ``finalize`` and ``open`` can rebuild the manifest from it.
        """
        self._record_plan(items, samples)
        done = self._images_on_disk()
        base = int(self.settings.get("seed", 0) or 0)
        return [(item, s, sample_seed(base, item.index, s))
                for item in items for s in range(int(samples)) if (item.query_id, s) not in done]

    def save_images(self, entries: Iterable[tuple[QueryItem, int, int, Image.Image]]) -> None:
        """Write each image atomically, then rewrite the manifest once with every completed row."""
        rows: dict[Key, dict[str, Any]] = {}
        samples_per_query: dict[str, tuple[QueryItem, int]] = {}
        if self._settings_to_write is not None:
            atomic_write_text(self.root / RUN_FILE, yaml.safe_dump(self._settings_to_write, sort_keys=False))
            self.settings, self._settings_to_write = self._settings_to_write, None
        for item, sample, seed, image in entries:
            info = PngInfo()
            for key, value in (("query_id", item.query_id), ("sample", sample), ("seed", seed),
                               ("query_path", self._relative(item.query_path))):
                info.add_text(_TEXT_KEY + key, str(value))
            atomic_save_image(self.image_path(item.query_id, sample), image, pnginfo=info)
            rows[(item.query_id, int(sample))] = self._row(item, int(sample), int(seed))
            count = samples_per_query.get(item.query_id, (item, 0))[1]
            samples_per_query[item.query_id] = (item, max(count, int(sample) + 1))
            self._session_images += 1
        if not rows:
            return
        unplanned = [(item, n) for item, n in samples_per_query.values()
                     if item.query_id not in self._plan or self._plan[item.query_id]["samples"] < n]
        for item, n in unplanned:  # written without pending(): the plan grows to include them
            self._record_plan([item], n)
        with self._locked():
            current = self._read_manifest_if_changed()
            current.update(rows)
            self._write_manifest(current)

    def finalize(self, items: Sequence[QueryItem], samples: int) -> pd.DataFrame:
        """Rebuild the manifest from the plan and the images on disk; returns it."""
        self._record_plan(items, samples)
        self._reconcile()
        return self.manifest()

    # ---------------------------------------------------------------------------- reading
    def manifest(self, absolute: bool = False) -> pd.DataFrame:
        """One row per image (columns ``MANIFEST_COLUMNS``), sorted by query_id and sample.

        ``absolute=True`` turns ``query_path`` and ``image_path`` into absolute paths.
        """
        rows = [self._rows[key] for key in sorted(self._rows)]
        frame = pd.DataFrame({
            "query_id": pd.Series([r["query_id"] for r in rows], dtype=str),
            "query_path": pd.Series([r["query_path"] for r in rows], dtype=str),
            "sample": pd.Series([r["sample"] for r in rows], dtype="int64"),
            "seed": pd.array([r["seed"] for r in rows], dtype="Int64"),  # exact 63-bit ints, empty allowed
            "image_path": pd.Series([r["image_path"] for r in rows], dtype=str),
            "utm_east": pd.Series([r["utm_east"] for r in rows], dtype="float64"),
            "utm_north": pd.Series([r["utm_north"] for r in rows], dtype="float64"),
        })
        if absolute:
            for column in ("query_path", "image_path"):
                frame[column] = [str(self.resolve(p).absolute()) for p in frame[column]]
        return frame

    def __len__(self) -> int:
        return len(self._rows)

    def progress(self) -> dict[str, Any]:
        """Counts for a summary: images, queries, planned images, samples per query, this session's pace."""
        queries = {query_id for query_id, _ in self._rows}
        planned = sum(p["samples"] for p in self._plan.values())
        samples = max((p["samples"] for p in self._plan.values()), default=0) or \
            max((s + 1 for _, s in self._rows), default=0)
        manifest = self.root / MANIFEST_FILE
        updated = (datetime.fromtimestamp(manifest.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
                   if manifest.exists() else None)
        return {"images": len(self._rows), "queries": len(queries), "planned": planned, "samples": samples,
                "updated": updated, "session_images": self._session_images,
                "session_seconds": time.time() - self._session_started}

    def __repr__(self) -> str:
        return f"GenerationRun({str(self.root)!r}, images={len(self._rows)})"

    # ---------------------------------------------------------------------------- internals
    def _locked(self):
        """A lock around manifest / plan rewrites, so several processes (one per GPU) can share a run."""
        if self._lock is None:
            from filelock import FileLock

            self._lock = FileLock(str(self.root / ".manifest.lock"))
        return self._lock

    def _row(self, item: QueryItem, sample: int, seed: int | None) -> dict[str, Any]:
        return {"query_id": item.query_id, "query_path": self._relative(item.query_path), "sample": sample,
                "seed": seed, "image_path": self._relative(self.image_path(item.query_id, sample)),
                "utm_east": item.utm_east, "utm_north": item.utm_north}

    @staticmethod
    def _stat(path: Path) -> tuple[int, int, int] | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _load(self) -> None:
        self._rows = self._read_manifest()
        self._plan = self._read_plan()

    def _read_manifest(self) -> dict[Key, dict[str, Any]]:
        path = self.root / MANIFEST_FILE
        self._manifest_stat = self._stat(path)
        try:
            frame = pd.read_csv(path, dtype={"query_id": str, "query_path": str, "image_path": str,
                                             "seed": "Int64"},  # 63-bit seeds: never through float
                                keep_default_na=False, na_values={"utm_east": [""], "utm_north": [""],
                                                                  "seed": [""]})
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise GeoxaiError(f"{path}: unreadable manifest ({str(exc).splitlines()[0]}); "
                              "see docs/generation-run.md") from None
        absent = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
        if absent:
            raise GeoxaiError(f"{path}: missing column(s) {', '.join(absent)}; a manifest has the columns "
                              f"{', '.join(MANIFEST_COLUMNS)}")
        rows: dict[Key, dict[str, Any]] = {}
        self._row_numbers = {}
        for number, record in enumerate(frame[list(MANIFEST_COLUMNS)].to_dict("records"), start=1):
            try:
                record["sample"] = int(record["sample"])
                seed = record["seed"]
                record["seed"] = None if pd.isna(seed) else int(seed)
                record["utm_east"], record["utm_north"] = float(record["utm_east"]), float(record["utm_north"])
            except (TypeError, ValueError):
                raise GeoxaiError(f"{path}: row {record['query_id']}/{record['sample']} has a non-numeric "
                                  "sample, seed or UTM value") from None
            key = (record["query_id"], record["sample"])
            if key in rows:
                raise GeoxaiError(f"{path}: query {key[0]} sample {key[1]} is listed twice; keep one row")
            rows[key] = record
            self._row_numbers[key] = number
        return rows

    def _read_manifest_if_changed(self) -> dict[Key, dict[str, Any]]:
        """The manifest on disk: from memory when nobody rewrote it since this object did."""
        if self._manifest_stat is not None and self._stat(self.root / MANIFEST_FILE) == self._manifest_stat:
            return dict(self._rows)
        return self._read_manifest()

    def _write_manifest(self, rows: dict[Key, dict[str, Any]]) -> None:
        self._rows = dict(rows)
        text = self.manifest().to_csv(index=False)
        atomic_write_text(self.root / MANIFEST_FILE, text)
        self._manifest_stat = self._stat(self.root / MANIFEST_FILE)

    def _read_plan(self) -> dict[str, dict[str, Any]]:
        path = self.root / QUERIES_FILE
        self._plan_stat = self._stat(path)
        if self._plan_stat is None:
            return {}
        frame = pd.read_csv(path, dtype={"query_id": str, "query_path": str}, keep_default_na=False,
                            na_values={"utm_east": [""], "utm_north": [""]})
        return {row["query_id"]: row for row in frame.to_dict("records")}

    def _plan_changes(self, items: Sequence[QueryItem], samples: int) -> bool:
        """Whether ``items`` add queries or samples to the plan (checked without taking the lock)."""
        if self._stat(self.root / QUERIES_FILE) != self._plan_stat:
            self._plan = self._read_plan()
        return any(item.query_id not in self._plan or self._plan[item.query_id]["samples"] < int(samples)
                   or self._plan[item.query_id]["query_path"] != self._relative(item.query_path) for item in items)

    def _record_plan(self, items: Sequence[QueryItem], samples: int) -> None:
        """Add queries (and sample counts) to ``queries.csv``; a query id that changed photo is an error.

        An unchanged plan writes nothing (not even a lock file): resuming a finished run on a
        read-only disk works.
        """
        if not self._plan_changes(items, samples):
            return
        with self._locked():
            if self._stat(self.root / QUERIES_FILE) != self._plan_stat:
                self._plan = self._read_plan()
            changed = False
            for item in items:
                path = self._relative(item.query_path)
                old = self._plan.get(item.query_id)
                if old is not None and old["query_path"] != path:
                    raise GeoxaiError(
                        f"{self.root}: query {item.query_id} was {old['query_path']} in this run but is now "
                        f"{path}; the query folder changed, use a new --out")
                if old is None or old["samples"] < int(samples):
                    self._plan[item.query_id] = {"query_id": item.query_id, "query_index": item.index,
                                                 "query_path": path, "samples": int(samples),
                                                 "utm_east": item.utm_east, "utm_north": item.utm_north}
                    changed = True
            if changed:
                frame = pd.DataFrame([self._plan[k] for k in sorted(self._plan)], columns=list(QUERIES_COLUMNS))
                atomic_write_text(self.root / QUERIES_FILE, frame.to_csv(index=False))
                self._plan_stat = self._stat(self.root / QUERIES_FILE)

    def _images_on_disk(self) -> set[Key]:
        """(query_id, sample) of every finished image (temporary files of atomic writes are hidden)."""
        found: set[Key] = set()
        try:
            folders = list(os.scandir(self.root / SAMPLES_FOLDER))
        except FileNotFoundError:
            return found
        for folder in folders:
            if folder.is_dir() and not folder.name.startswith("."):
                try:
                    entries = list(os.scandir(folder.path))
                except OSError:  # an unreadable folder: its images count as absent, and are named so
                    continue
                for entry in entries:
                    match = _IMAGE_NAME.match(entry.name)
                    if match:
                        found.add((folder.name, int(match.group(1))))
        return found

    def _seed_of(self, plan: dict[str, Any], sample: int) -> int:
        """The seed recorded inside the image, else the one ``pending`` would have given it."""
        from geoxai.data.images import open_image

        try:
            with open_image(self.image_path(plan["query_id"], sample)) as image:
                return int(image.info[_TEXT_KEY + "seed"])  # text chunks precede the pixels
        except (UnreadableImageError, KeyError, ValueError, AttributeError):
            return sample_seed(int(self.settings.get("seed", 0) or 0), int(plan["query_index"]), sample)

    def _reconciled(self) -> tuple[dict[Key, dict[str, Any]], dict[Key, dict[str, Any]]]:
        """(manifest on disk, manifest it should be): listed rows whose image exists plus planned images on disk."""
        if self._stat(self.root / QUERIES_FILE) != self._plan_stat:
            self._plan = self._read_plan()
        current = self._read_manifest_if_changed()
        on_disk = self._images_on_disk()
        rows = {key: row for key, row in current.items() if key in on_disk}
        for query_id, plan in self._plan.items():
            item = QueryItem(query_id, int(plan["query_index"]), self.resolve(plan["query_path"]),
                             float(plan["utm_east"]), float(plan["utm_north"]))
            for sample in range(int(plan["samples"])):
                if (query_id, sample) in on_disk and (query_id, sample) not in rows:
                    rows[(query_id, sample)] = self._row(item, sample, self._seed_of(plan, sample))
        return current, rows

    def _reconcile(self) -> None:
        """Rewrite the manifest when it disagrees with the plan and the images on disk."""
        current, rows = self._reconciled()
        if _same_rows(current, rows):
            self._rows = rows
            return
        try:
            with self._locked():
                current, rows = self._reconciled()
                if not _same_rows(current, rows):
                    self._write_manifest(rows)
        except (PermissionError, OutputError):  # a read-only run: use the reconciled rows without writing them
            warnings.warn(f"{self.root / MANIFEST_FILE}: read-only, so it was not updated to match the "
                          "images on disk", stacklevel=3)
            self._rows = rows
            return
        dropped = len(set(current) - set(rows))
        if dropped:
            warnings.warn(f"{self.root / MANIFEST_FILE}: {dropped} row(s) had no image on disk; they were "
                          "removed and will be generated again on resume", stacklevel=3)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (both absolute, compared as written)."""
    return path == folder or folder in path.parents


def _same_rows(a: dict[Key, dict[str, Any]], b: dict[Key, dict[str, Any]]) -> bool:
    """Equal manifests, NaN equal to NaN."""
    def same(x: Any, y: Any) -> bool:
        return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))

    return a.keys() == b.keys() and all(same(a[k][c], b[k][c]) for k in a for c in MANIFEST_COLUMNS)
