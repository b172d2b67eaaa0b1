"""Reference runs: GenerationRuns whose "generations" are SynthCity renders with a known cause.

An explainer's generations for a query photo are judged against what they should be; in a SynthCity
world that can be rendered exactly. For each query image of a world (its place and visit read from
``metadata.csv``) a reference run holds ``samples`` images of one kind (``REFERENCE_KINDS``):

- ``identity``: the query image itself (pixels copied from the file);
- ``oracle``: the query's place at a fresh visit, every transient factor re-sampled (a perfect
  explainer of a perfect place-recognition model);
- ``other-place``: another test place of the world at a fresh visit (a useless explainer); sample
  ``s`` follows a derangement of the test places drawn from ``(seed, s)``, so never the own place;
- ``sky``, ``lighting``, ``vehicles``, ``pedestrians``, ``signs``: the query's own render with that
  one factor taken from a fresh visit, everything else bit-identical;
- ``windows``, ``colours``: the query's own render with the window grids, or the facade colours,
  re-sampled (``SynthCity.content_factors``), everything else bit-identical.

Invariants: a fresh visit (or content variant) is ``visits of the world + the image's seed`` (the
63-bit ``geoxai.runs.sample_seed`` of the manifest), so it is used by no world image, differs per
query and sample, and does not depend on ``--limit``, batching or interruptions. Every image has
its label map at ``labels/samples/<query_id>/<sample>.png`` (written before the image, which marks
it done) and a row in ``reference.csv``: ``SynthCity(seed, size).render(place, visit,
**json.loads(overrides_json))`` reproduces image and labels exactly. A re-run writes only what is
missing and leaves every file byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image
from tqdm.auto import tqdm

from geoxai.data.images import load_label_map, load_rgb
from geoxai.data.vpr import list_images
from geoxai.errors import GeoxaiError, UnreadableImageError, did_you_mean, setting
from geoxai.files import atomic_save_image, atomic_write_text
from geoxai.runs import GenerationRun, QueryItem, plan_queries, sample_seed
from geoxai.synthcity.render import SynthCity
from geoxai.synthcity.world import PARAMS_FILE

TRANSIENT_KINDS = ("sky", "lighting", "vehicles", "pedestrians", "signs")
CONTENT_KINDS = {"windows": "windows", "colours": "facade_colors"}  # kind -> SynthCity override key
REFERENCE_KINDS = ("identity", "oracle", "other-place", *TRANSIENT_KINDS, *CONTENT_KINDS)
REFERENCE_FILE, LABELS_FOLDER = "reference.csv", "labels"
REFERENCE_COLUMNS = ("query_id", "sample", "kind", "query_place", "query_visit", "place", "visit", "fresh",
                     "overrides_json", "label_path")
GENERATOR = "synthcity-reference"
_CHUNK = 32  # images per manifest rewrite
_MAKE_WORLD = "write one with `geoxai data synthcity --out DIR`"


@dataclass(frozen=True)
class Reference:
    """What one generated image is: ``city.render(place, visit, **overrides)``.

    ``fresh`` is the fresh visit (or content variant) the replaced part was drawn from; None for
    ``identity``.
    """

    place: int
    visit: int
    fresh: int | None
    overrides: dict[str, Any]


@dataclass(frozen=True)
class _World:
    root: Path
    seed: int
    size: int
    visits: int
    rows: dict[str, dict[str, Any]]  # metadata row by relative image path
    test_places: list[int]


def _check_options(kind: str, samples: int, limit: int | None) -> None:
    if kind not in REFERENCE_KINDS:
        raise GeoxaiError(f"{setting('kind')} {kind!r}: unknown; choose one of {', '.join(REFERENCE_KINDS)}."
                          f"{did_you_mean(kind, list(REFERENCE_KINDS))}")
    if samples < 1:
        raise GeoxaiError(f"{setting('samples')} {samples}: must be at least 1")
    if limit is not None and limit < 1:
        raise GeoxaiError(f"{setting('limit')} {limit}: must be at least 1 (or left out for all queries)")


def _load_world(world: Path) -> _World:
    """The world's parameters and metadata; anything else than a SynthCity world is refused."""
    if not world.is_dir():
        what = "is not a folder" if world.exists() else "does not exist"
        raise GeoxaiError(f"{setting('world')} {world} {what}; give a SynthCity world folder, or {_MAKE_WORLD}")
    missing = [name for name in (PARAMS_FILE, "metadata.csv") if not (world / name).is_file()]
    if missing:
        raise GeoxaiError(f"{setting('world')} {world} is not a SynthCity world (no {' or '.join(missing)}); "
                          f"{_MAKE_WORLD}")
    try:
        params = yaml.safe_load((world / PARAMS_FILE).read_text(encoding="utf-8"))
        seed, size, visits = int(params["seed"]), int(params["size"]), int(params["visits"])
        if params.get("format") != "synthcity":
            raise ValueError("format is not synthcity")
    except (OSError, yaml.YAMLError, TypeError, KeyError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GeoxaiError(f"{setting('world')} {world}: unreadable {PARAMS_FILE} ({reason}); {_MAKE_WORLD}") from None
    try:
        table = pd.read_csv(world / "metadata.csv", usecols=["path", "label_path", "place", "visit", "split"],
                            dtype={"path": str, "label_path": str, "split": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise GeoxaiError(f"{setting('world')} {world}: unreadable metadata.csv ({str(exc).splitlines()[0]}); "
                          f"{_MAKE_WORLD}") from None
    if not (world / "queries").is_dir():
        raise GeoxaiError(f"{setting('world')} {world} has no queries/ folder; {_MAKE_WORLD}")
    rows = {row["path"]: {**row, "place": int(row["place"]), "visit": int(row["visit"])}
            for row in table.to_dict("records")}
    test_places = sorted({int(p) for p in table.loc[table["split"] != "train", "place"]})
    return _World(world, seed, size, visits, rows, test_places)


def _query_row(world: _World, query_path: Path) -> dict[str, Any]:
    relative = Path(os.path.abspath(query_path)).relative_to(world.root).as_posix()
    row = world.rows.get(relative)
    if row is None:
        raise GeoxaiError(f"{setting('world')} {world.root}: query image {relative} is not in metadata.csv; the world "
                          f"folder was changed, write it again with `geoxai data synthcity --out {world.root}`")
    return row


def _derangement(places: list[int], seed: int, sample: int) -> dict[int, int]:
    """A permutation of ``places`` without fixed points (a single cycle, Sattolo's algorithm).

    Drawn with ``random.Random.random()`` only, whose sequence Python keeps stable.
    """
    rng = random.Random(f"geoxai-reference/other-place/{int(seed)}/{int(sample)}")
    order = list(places)
    for i in range(len(order) - 1, 0, -1):
        j = min(int(i * rng.random()), i - 1)
        order[i], order[j] = order[j], order[i]
    return dict(zip(places, order, strict=True))


class _Plan:
    """Which render each (query, sample) of a run is, for one kind."""

    def __init__(self, kind: str, world: _World, city: SynthCity, seed: int):
        self.kind, self.world, self.city, self.seed = kind, world, city, seed
        self._derangements: dict[int, dict[int, int]] = {}
        if kind == "other-place" and len(world.test_places) < 2:
            raise GeoxaiError(f"{setting('kind')} other-place needs a world with at least 2 test places, {world.root} "
                              f"has {len(world.test_places)}; write a world with more --places")

    def reference(self, row: dict[str, Any], sample: int, image_seed: int) -> Reference:
        place, visit, kind = row["place"], row["visit"], self.kind
        fresh = self.world.visits + int(image_seed)
        if kind == "identity":
            return Reference(place, visit, None, {})
        if kind == "oracle":
            return Reference(place, fresh, fresh, {})
        if kind == "other-place":
            if sample not in self._derangements:
                self._derangements[sample] = _derangement(self.world.test_places, self.seed, sample)
            return Reference(self._derangements[sample][place], fresh, fresh, {})
        if kind in TRANSIENT_KINDS:
            return Reference(place, visit, fresh, {kind: self.city.visit_factors(place, fresh)[kind]})
        key = CONTENT_KINDS[kind]
        return Reference(place, visit, fresh, {key: self.city.content_factors(place, fresh)[key]})

    def draw(self, row: dict[str, Any], reference: Reference) -> tuple[Image.Image, np.ndarray]:
        """The image and label map of ``reference`` (identity: copies of the world's files)."""
        if self.kind == "identity":
            try:
                labels = load_label_map(self.world.root / row["label_path"])
            except UnreadableImageError:
                raise GeoxaiError(f"{setting('world')} {self.world.root}: label map {row['label_path']} is missing or "
                                  f"unreadable; complete the world with `geoxai data synthcity --out "
                                  f"{self.world.root}` and its parameters") from None
            return load_rgb(self.world.root / row["path"]), labels
        render = self.city.render(reference.place, reference.visit, **reference.overrides)
        return Image.fromarray(render.image, "RGB"), render.labels


def label_path(run: GenerationRun, query_id: str, sample: int) -> Path:
    """Where the label map of an image lives: the image path mirrored under ``labels/``."""
    return run.root / LABELS_FOLDER / run.image_path(query_id, sample).relative_to(run.root)


def write_reference_run(world: str | Path, kind: str, samples: int, out: str | Path, seed: int = 0,
                        limit: int | None = None, progress: bool = True) -> GenerationRun:
    """Write (or resume) a reference GenerationRun of ``kind`` for the query images of ``world``.

    ``limit`` keeps the first queries in plan order. Renders stand in for generations, so every
    explainer metric can be checked against a perfect (``oracle``), useless (``other-place``) or
    single-factor reference. Returns the finalised run.
    """
    _check_options(kind, samples, limit)
    loaded = _load_world(Path(os.path.abspath(world)))
    queries = loaded.root / "queries"
    items = plan_queries(list_images(queries), queries)[:limit]
    rows = {item.query_id: _query_row(loaded, item.query_path) for item in items}
    city = SynthCity(seed=loaded.seed, size=loaded.size)
    plan = _Plan(kind, loaded, city, int(seed))

    settings = {"generator": GENERATOR, "kind": kind, "world": str(loaded.root), "world_seed": loaded.seed,
                "world_size": loaded.size, "queries": str(queries), "samples": int(samples), "seed": int(seed)}
    run = GenerationRun.create(out, settings, resume=True)
    todo = [(item, sample, image_seed, True) for item, sample, image_seed in run.pending(items, samples)]
    waiting = {(item.query_id, sample) for item, sample, _, _ in todo}
    todo += [(item, sample, sample_seed(int(seed), item.index, sample), False)  # image kept, label lost
             for item in items for sample in range(int(samples))
             if (item.query_id, sample) not in waiting and not label_path(run, item.query_id, sample).exists()]

    done: list[tuple[QueryItem, int, int, Image.Image]] = []
    with tqdm(total=len(todo), desc=f"reference run ({kind})", unit="img", file=sys.stderr,
              disable=not progress) as bar:
        for item, sample, image_seed, needs_image in todo:
            row = rows[item.query_id]
            image, labels = plan.draw(row, plan.reference(row, sample, image_seed))
            atomic_save_image(label_path(run, item.query_id, sample), Image.fromarray(labels, "L"))
            if needs_image:
                done.append((item, sample, image_seed, image))
            if len(done) >= _CHUNK:
                run.save_images(done)
                done = []
            bar.update(1)
        run.save_images(done)
    run.finalize(items, samples)
    _write_reference_table(run, loaded, plan)
    return run


def _write_reference_table(run: GenerationRun, world: _World, plan: _Plan) -> None:
    """``reference.csv``: one row per image of the manifest, rebuilt from it (so a resume agrees)."""
    records = []
    for entry in run.manifest().to_dict("records"):
        row = _query_row(world, run.resolve(entry["query_path"]))
        sample = int(entry["sample"])
        reference = plan.reference(row, sample, int(entry["seed"]))
        records.append({
            "query_id": entry["query_id"], "sample": sample, "kind": plan.kind,
            "query_place": row["place"], "query_visit": row["visit"],
            "place": reference.place, "visit": reference.visit,
            "fresh": "" if reference.fresh is None else reference.fresh,
            "overrides_json": json.dumps(reference.overrides, sort_keys=True, separators=(",", ":")),
            "label_path": label_path(run, entry["query_id"], sample).relative_to(run.root).as_posix(),
        })
    frame = pd.DataFrame(records, columns=list(REFERENCE_COLUMNS))
    atomic_write_text(run.root / REFERENCE_FILE, frame.to_csv(index=False, lineterminator="\n"))
