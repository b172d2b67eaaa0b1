"""Writing a SynthCity world to disk in VPR format, with label maps and a factor table.

Layout of ``out``::

    synthcity.yaml          world parameters (written first: marks the folder as this world and
                            records the arguments that complete it)
    train/<name>.png        every visit of the training places
    database/<name>.png     visit 0 of the held-out test places
    queries/<name>.png      visits 1.. of the held-out test places
    val/database/, val/queries/   the same for validation places (training-side places held out
                            from train/ so that choices are tuned on places nothing was trained on)
    labels/<split>/<name>.png   canonical label ids, one channel, mirroring the image paths
    metadata.csv            one row per image: place, visit, split, position, every factor (written
                            last: a world without it, or with fewer images than its parameters
                            promise, is half-written and refused by every command that reads it)

Everything is deterministic, so a re-run with the same parameters writes only what is missing and
the result is byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image
from tqdm.auto import tqdm

from geoxai import labels as L
from geoxai.data.vpr import VPRName, format_name, parse_name
from geoxai.errors import GeoxaiError, setting
from geoxai.files import atomic_save_image, atomic_write_text, writable_folder
from geoxai.synthcity.places import (
    MAX_PLACES,
    MAX_SEED,
    ORIGIN_EAST,
    ORIGIN_NORTH,
    PLACE_SPACING_M,
    SEED_BLOCK_EAST_M,
    SEED_BLOCK_NORTH_M,
    SEED_BLOCK_ROWS,
)
from geoxai.synthcity.render import MIN_SIZE, SynthCity
from geoxai.synthcity.rng import Rng

FORMAT_VERSION = 1
PARAMS_FILE = "synthcity.yaml"
METADATA_FILE = "metadata.csv"
WORLD_ENTRIES = ("train", "database", "queries", "val", "labels", "metadata.csv", PARAMS_FILE)
SPLITS = ("train", "database", "queries", "val/database", "val/queries")

# Linear approximation of UTM zone 10 S -> WGS84 around the grid origin (551000 E, 4178000 N), exact
# there and within a few metres over a few kilometres: good enough for names, not for geodesy.
_LAT0, _LON0 = 37.747879, -122.421096
_DEG_LAT_PER_M, _DEG_LON_PER_M = 9.0128e-6, 1.13505e-5
_ORIGIN = (551000.0, 4178000.0)


def approximate_lat_lon(east: float, north: float) -> tuple[float, float]:
    """WGS84 (lat, lon) of a UTM 10 S position near San Francisco (linear approximation)."""
    return (round(_LAT0 + (north - _ORIGIN[1]) * _DEG_LAT_PER_M, 6),
            round(_LON0 + (east - _ORIGIN[0]) * _DEG_LON_PER_M, 6))


def zone_letter(lat: float) -> str:
    """The UTM latitude band (8 degrees each from 80 S): S near San Francisco, further north for the
    blocks of higher seeds."""
    return "CDEFGHJKLMNPQRSTUVWX"[min(max(int((lat + 80.0) // 8), 0), 19)]


def visit_timestamp(seed: int, visit: int) -> str:
    """Capture date of a visit (all places of a visit share it), as YYYYMMDD."""
    day = date(2019, 1, 1) + timedelta(days=(seed * 131 + visit * 47) % 1461)
    return day.strftime("%Y%m%d")


@dataclass
class WorldSummary:
    """What a world holds: counts, factor statistics and class pixel shares."""

    out: Path
    seed: int
    size: int
    places: int
    visits: int
    images: dict[str, int]
    places_per_split: dict[str, int]
    written: int
    skipped: int
    elapsed_s: float
    class_shares: dict[str, float]  # percent of all pixels of the world
    vehicles: dict[str, float] = field(default_factory=dict)  # mean, max per image
    pedestrians: dict[str, float] = field(default_factory=dict)
    windows: dict[str, float] = field(default_factory=dict)  # mean, min, max per image

    def format(self) -> str:
        lines = [
            f"SynthCity world in {self.out}",
            f"  seed {self.seed}, {self.size} px, {self.places} places x {self.visits} visits",
            f"  images    train {self.images['train']}  database {self.images['database']}  "
            f"queries {self.images['queries']}  val/database {self.images['val/database']}  "
            f"val/queries {self.images['val/queries']}",
            f"  places    train {self.places_per_split['train']}, validation {self.places_per_split['val']}, "
            f"test {self.places_per_split['test']}",
            f"  written   {self.written} new, {self.skipped} already complete, {self.elapsed_s:.1f} s",
            f"  vehicles per image     mean {self.vehicles['mean']:.2f}  max {self.vehicles['max']:.0f}",
            f"  pedestrians per image  mean {self.pedestrians['mean']:.2f}  max {self.pedestrians['max']:.0f}",
            f"  windows per image      mean {self.windows['mean']:.1f}  min {self.windows['min']:.0f}  "
            f"max {self.windows['max']:.0f}",
            "  class pixel shares (%)",
        ]
        for name, share in self.class_shares.items():
            lines.append(f"    {name:<11}{share:6.2f}")
        return "\n".join(lines)


def world_params(places: int, visits: int, size: int, seed: int, test_fraction: float,
                 val_fraction: float = 0.0) -> dict[str, Any]:
    params = {"format": "synthcity", "version": FORMAT_VERSION, "seed": int(seed), "size": int(size),
              "places": int(places), "visits": int(visits), "test_fraction": float(test_fraction)}
    if val_fraction:  # absent for worlds without validation places, so their parameters stay as before
        params["val_fraction"] = float(val_fraction)
    if seed:  # places in the seed's own UTM block (seed 0's block is where every world used to be)
        params["coordinates"] = "seed-block"
    return params


def world_identity(params: dict[str, Any]) -> str:
    """A world's identity: a hash of the parameters that generate it (not of where it lies)."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def rerun_command(out: Path, params: dict[str, Any]) -> str:
    """The ``geoxai data synthcity`` command that writes (or completes) the world ``params``."""
    options = [f"--{key.replace('_', '-')} {params[key]}" for key in ("places", "visits", "size", "seed", "test_fraction")
               if params.get(key) is not None]
    return " ".join([f"geoxai data synthcity --out {out}", *options, f"--val-fraction {params.get('val_fraction', 0.0)}"])


def read_params(root: Path) -> dict[str, Any] | None:
    """The parameters in ``root/synthcity.yaml``, or None when it holds no SynthCity world."""
    try:
        params = yaml.safe_load((root / PARAMS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return params if isinstance(params, dict) and params.get("format") == "synthcity" else None


def find_world(folder: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The SynthCity world ``folder`` is (or lies inside): its root and parameters, else None."""
    folder = Path(folder).resolve()
    for root in (folder, *folder.parents):
        if (root / PARAMS_FILE).is_file():
            params = read_params(root)
            if params is not None:
                return root, params
    return None


def world_splits(folder: str | Path, root: Path) -> list[str]:
    """The splits (``train``, ``database``, ``val/queries``...) of the world ``root`` under ``folder``."""
    parts = Path(folder).resolve().relative_to(root).parts
    if parts[:1] == ("labels",):
        parts = parts[1:]
    if not parts:
        return [split for split in SPLITS if (root / split).is_dir()]
    if parts[0] == "val":
        return [f"val/{parts[1]}"] if len(parts) > 1 and parts[1] in ("database", "queries") else \
            [split for split in SPLITS if split.startswith("val/")]
    return [parts[0]]


def synthcity_place(path: str | Path) -> tuple[int, int] | None:
    """(seed, place) of an image from its SynthCity file name (the seed from the UTM block its position
    lies in), wherever the file now is; None for any other name."""
    try:
        name = parse_name(path)
        place = int(name.pano_id[1:]) if name.pano_id.startswith("p") else -1
    except (GeoxaiError, ValueError):
        return None
    if name.note != "synthcity" or place < 0 or name.utm_east is None or name.utm_north is None:
        return None
    margin = PLACE_SPACING_M / 2  # the jitter is 2 m: half a spacing cannot cross into another block
    column = math.floor((name.utm_east - ORIGIN_EAST + margin) / SEED_BLOCK_EAST_M)
    row = math.floor((name.utm_north - ORIGIN_NORTH + margin) / SEED_BLOCK_NORTH_M)
    seed = column * SEED_BLOCK_ROWS + row
    if column < 0 or not 0 <= row < SEED_BLOCK_ROWS or not 0 <= seed <= MAX_SEED:
        return None
    east, north = SynthCity(seed=seed).place_utm(place)
    if abs(east - name.utm_east) > margin or abs(north - name.utm_north) > margin:
        return None  # the name's place and position disagree: not a name SynthCity wrote
    return seed, place


def _count_images(root: Path) -> int:
    count = 0
    for split in SPLITS:
        try:
            with os.scandir(root / split) as entries:
                count += sum(entry.name.endswith(".png") and entry.is_file() for entry in entries)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return count


def check_world_complete(folder: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """Refuse a folder inside a SynthCity world whose rendering did not finish; the world otherwise.

    A world is complete once ``metadata.csv`` (written last) exists and every image its parameters
    promise is on disk. Folders outside any SynthCity world return None and are not checked.
    """
    found = find_world(folder)
    if found is None:
        return None
    root, params = found
    try:
        expected = int(params["places"]) * int(params["visits"])
    except (KeyError, TypeError, ValueError):
        raise GeoxaiError(f"{root}: its {PARAMS_FILE} is not a SynthCity world's parameters ({_describe(params)}); "
                          f"re-render it with `geoxai data synthcity --out {root} --overwrite`") from None
    images = _count_images(root)
    if images < expected or not (root / METADATA_FILE).is_file():
        counts = (f"{images} of {expected} images" if images < expected
                  else f"{expected} of {expected} images but no {METADATA_FILE}, which is written last")
        raise GeoxaiError(f"{root}: a SynthCity world whose rendering did not finish ({counts}); "
                          f"re-run `{rerun_command(root, params)}` to complete it")
    return root, params


def place_splits(city: SynthCity, places: int, test_fraction: float, val_fraction: float) -> list[str]:
    """``test``, ``val`` or ``train`` per place; validation places are spread evenly over the
    non-test places (the k-th one is validation where ``floor(f * (k + 1) + phase)`` steps up)."""

    phase = Rng(city.seed, 6).random()
    splits, k = [], 0
    for place in range(places):
        if city.is_test_place(place, test_fraction):
            splits.append("test")
            continue
        step = math.floor(val_fraction * (k + 1) + phase) > math.floor(val_fraction * k + phase)
        splits.append("val" if step else "train")
        k += 1
    return splits


def _validate(city_places: int, visits: int, size: int, seed: int, test_fraction: float,
              val_fraction: float = 0.0) -> None:
    if city_places < 1:
        raise GeoxaiError(f"{setting('places')} must be >= 1 (got {city_places})")
    if visits < 2:
        raise GeoxaiError(f"{setting('visits')} must be >= 2: visit 0 goes to database/, later visits to queries/ "
                          f"(got {visits})")
    if size < MIN_SIZE:
        raise GeoxaiError(f"{setting('size')} must be >= {MIN_SIZE} pixels (got {size})")
    if city_places > MAX_PLACES:
        raise GeoxaiError(f"{setting('places')} must be <= {MAX_PLACES}, the places of one seed's block of UTM "
                          f"coordinates (got {city_places}); render more seeds instead")
    if not 0 <= seed <= MAX_SEED:
        raise GeoxaiError(f"{setting('seed')} must be from 0 to {MAX_SEED}: each seed has its own block of UTM "
                          f"coordinates (got {seed})")
    if not 0.0 < test_fraction < 1.0:
        raise GeoxaiError(f"{setting('test_fraction')} must be between 0 and 1, exclusive (got {test_fraction})")
    if not 0.0 <= val_fraction < 1.0:
        raise GeoxaiError(f"{setting('val_fraction')} must be in [0, 1) (got {val_fraction})")
    city = SynthCity(seed=seed, size=size)
    splits = place_splits(city, city_places, test_fraction, val_fraction)
    test, train = splits.count("test"), splits.count("train")
    if test == 0 or train == 0:
        which = "no test place" if test == 0 else "no training place"
        raise GeoxaiError(f"{setting('test_fraction')} {test_fraction} (and {setting('val_fraction')} {val_fraction}) "
                          f"with {setting('places')} {city_places} leaves {which}; use more places or other fractions")


def _prepare(out: Path, params: dict[str, Any], overwrite: bool) -> None:
    """Make ``out`` hold this world: new, resumable, or (with overwrite) replaced."""
    if out.exists() and not out.is_dir():
        raise GeoxaiError(f"{setting('out')} {out} is a file; give a folder")
    writable_folder(out, setting("out"))  # before any work: a read-only or full disk fails here, in one line
    params_path = out / PARAMS_FILE
    if params_path.exists():
        try:
            existing = yaml.safe_load(params_path.read_text())
        except yaml.YAMLError:
            existing = None
        if existing == params:
            return
        if not overwrite and isinstance(existing, dict) and params.get("coordinates") and \
                existing == {k: v for k, v in params.items() if k != "coordinates"}:
            raise GeoxaiError(f"{setting('out')} {out} holds this world as rendered before each seed had its own UTM "
                              f"block (its file names put the places on seed 0's positions); use "
                              f"{setting('overwrite')} to re-render it, or another {setting('out')}")
        if not overwrite:
            raise GeoxaiError(f"{setting('out')} {out} holds a different SynthCity world ({_describe(existing)}); "
                              f"use {setting('overwrite')} to replace it, or another {setting('out')}")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise GeoxaiError(f"{setting('out')} {out} is not empty and holds no SynthCity world; "
                          f"use {setting('overwrite')} to write the world there anyway, or another {setting('out')}")
    if overwrite:
        for entry in WORLD_ENTRIES:
            path = out / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    atomic_write_text(params_path, yaml.safe_dump(params, sort_keys=True))


def _describe(params: Any) -> str:
    if not isinstance(params, dict):
        return "unreadable synthcity.yaml"
    keys = ("seed", "size", "places", "visits", "test_fraction", "val_fraction")
    return ", ".join(f"{key} {params.get(key)}" for key in keys)


def image_name(city: SynthCity, place: int, visit: int, heading: float | None = None) -> str:
    """The VPR file name of one visit (unique per place and visit)."""
    east, north = city.visit_utm(place, visit)
    heading = city.visit_heading(place, visit) if heading is None else heading
    lat, lon = approximate_lat_lon(east, north)
    return format_name(VPRName(
        utm_east=east, utm_north=north, zone_number="10", zone_letter=zone_letter(lat), lat=lat, lon=lon,
        pano_id=f"p{place:05d}", tile_num=str(visit), heading=heading, pitch=0.0,
        roll=0.0, height=2.5, timestamp=visit_timestamp(city.seed, visit), note="synthcity"), ".png")


def flatten_factors(factors: dict[str, Any]) -> dict[str, Any]:
    """Scalar columns for one render's factors (the full dict goes to the JSON column)."""
    sky, light, camera = factors["sky"], factors["lighting"], factors["camera"]
    return {
        "sky_kind": sky["kind"], "sky_time_of_day": sky["time_of_day"], "sky_hue": sky["hue"],
        "sky_clouds": len(sky["clouds"]),
        "brightness": light["brightness"], "sun_side": light["sun_side"],
        "shadow_strength": light["shadow_strength"], "shadow_y": light["shadow_y"],
        "shadow_slope": light["shadow_slope"], "tint": light["tint"], "tint_strength": light["tint_strength"],
        "n_vehicles": len(factors["vehicles"]),
        "n_cars": sum(v["type"] == "car" for v in factors["vehicles"]),
        "n_vans": sum(v["type"] == "van" for v in factors["vehicles"]),
        "n_pedestrians": len(factors["pedestrians"]),
        "n_signs": len(factors["signs"]),
        "n_signs_visible": sum(bool(s["visible"]) for s in factors["signs"]),
        "camera_dx": camera["dx"], "camera_dy": camera["dy"], "camera_zoom": camera["zoom"],
        "noise_level": camera["noise_level"],
        "building_count": factors["building_count"], "windows_total": factors["windows_total"],
        "window_count": factors["window_count"], "tree_count": factors["tree_count"],
        "pole_count": factors["pole_count"], "sign_count": factors["sign_count"],
    }


_CITIES: dict[tuple[int, int], SynthCity] = {}  # one per process, so place content is sampled once


def _write_place(out: Path, seed: int, size: int, visits: int, splits: list[str],
                 place: int) -> list[dict[str, Any]]:
    """Render every visit of one place, write what is missing, return its metadata rows.

    Runs in worker processes; everything it writes is a function of its arguments alone.
    """
    city = _CITIES.setdefault((seed, size), SynthCity(seed=seed, size=size))
    role = splits[place]
    rows = []
    for visit in range(visits):
        held_out = "database" if visit == 0 else "queries"
        split = {"test": held_out, "val": f"val/{held_out}", "train": "train"}[role]
        render = city.render(place, visit)
        heading = city.camera_heading(place, render.factors["camera"])
        relative = Path(split) / image_name(city, place, visit, heading)
        image_path, label_path = out / relative, out / "labels" / relative
        complete = image_path.exists() and label_path.exists()
        if not image_path.exists():  # noisy photos barely compress: favour speed
            atomic_save_image(image_path, Image.fromarray(render.image, "RGB"), compress_level=1)
        if not label_path.exists():
            atomic_save_image(label_path, Image.fromarray(render.labels, "L"))
        counts = np.bincount(render.labels.ravel(), minlength=L.NUM_CLASSES)
        east, north = city.visit_utm(place, visit)
        row = {"path": relative.as_posix(), "label_path": ("labels" / relative).as_posix(),
               "place": place, "visit": visit, "split": split, "utm_east": east, "utm_north": north,
               "heading": heading}
        row.update(flatten_factors(render.factors))
        row.update({f"frac_{L.NAMES[i]}": round(float(counts[i]) / render.labels.size, 5)
                    for i in range(L.NUM_CLASSES)})
        row["factors_json"] = json.dumps(render.factors, sort_keys=True, separators=(",", ":"))
        row["_pixels"], row["_complete"] = counts, complete
        rows.append(row)
    return rows


def _end_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the ``geoxai`` process that started it dies, even by
    SIGKILL, which gives the pool no chance to stop its workers. On Linux the kernel sends SIGTERM
    (prctl PR_SET_PDEATHSIG); elsewhere a daemon thread checks every second whether the parent is gone."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
                if os.getppid() != parent:  # the parent died before the request took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def _default_workers(images: int) -> int:
    """Two processes for worlds big enough to pay for them (rendering is CPU-bound numpy + zlib)."""
    return min(2, os.cpu_count() or 1) if images >= 400 else 1


def write_world(out: str | Path, places: int = 200, visits: int = 6, size: int = 128, seed: int = 0,
                test_fraction: float = 0.3, val_fraction: float = 0.1, overwrite: bool = False, progress: bool = True,
                workers: int | None = None) -> WorldSummary:
    """Render a SynthCity world into ``out`` (see the module docstring); resumes an interrupted run.

    ``workers`` processes render places in parallel (default: 2 for worlds of 400+ images, else 1);
    the output is the same byte for byte whatever the number.
    """
    started = time.perf_counter()
    out = Path(out)
    _validate(places, visits, size, seed, test_fraction, val_fraction)
    params = world_params(places, visits, size, seed, test_fraction, val_fraction)
    _prepare(out, params, overwrite)
    workers = _default_workers(places * visits) if workers is None else max(1, int(workers))
    splits = place_splits(SynthCity(seed=seed, size=size), places, test_fraction, val_fraction)
    job = partial(_write_place, out, seed, size, visits, splits)

    rows: list[dict[str, Any]] = []
    bar = tqdm(total=places * visits, desc="synthcity", unit="img", disable=not progress)
    try:
        if workers > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if sys.platform.startswith("linux")
                                                  and "fork" in methods else None)
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_end_with_parent,
                                     initargs=(os.getpid(),)) as pool:
                for place_rows in pool.map(job, range(places), chunksize=2):
                    rows.extend(place_rows)
                    bar.update(len(place_rows))
        else:
            for place in range(places):
                rows.extend(job(place))
                bar.update(visits)
    finally:
        bar.close()
    pixels = np.sum([row.pop("_pixels") for row in rows], axis=0)
    skipped = sum(row.pop("_complete") for row in rows)
    table = pd.DataFrame(rows)
    atomic_write_text(out / METADATA_FILE, table.to_csv(index=False, lineterminator="\n"))  # last: complete

    total = max(int(pixels.sum()), 1)
    per_place = table.groupby("place")["split"].first()
    return WorldSummary(
        out=out, seed=seed, size=size, places=places, visits=visits,
        images={split: int((table["split"] == split).sum()) for split in SPLITS},
        places_per_split={"train": int((per_place == "train").sum()),
                          "val": int(per_place.str.startswith("val/").sum()),
                          "test": int(per_place.isin(["database", "queries"]).sum())},
        written=len(rows) - skipped, skipped=skipped, elapsed_s=time.perf_counter() - started,
        class_shares={L.NAMES[i]: round(100.0 * float(pixels[i]) / total, 2) for i in range(L.NUM_CLASSES)},
        vehicles={"mean": float(table["n_vehicles"].mean()), "max": float(table["n_vehicles"].max())},
        pedestrians={"mean": float(table["n_pedestrians"].mean()), "max": float(table["n_pedestrians"].max())},
        windows={"mean": float(table["window_count"].mean()), "min": float(table["window_count"].min()),
                 "max": float(table["window_count"].max())},
    )
