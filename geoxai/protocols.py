"""Which places a generator saw in training: the two protocols every generation number names.

- ``unseen-places`` (the default and the headline): no test place is in the training data of the
  autoencoder or the LDM (nor the embedder's). Every number then says how well a descriptor of a
  place the generator never saw is turned back into that place.
- ``seen-map``: the database images of the test places are in the generator's training data, as a
  deployed generator would have the map; the queries still are not.

A training config names its protocol (``protocol:``); ``check_training_folders`` refuses folders
that break it. Test images are recognised by the VPR layout: a ``database/`` or ``queries/`` folder
is a test (or validation) split unless it sits inside a ``train/`` folder (Pitts30k's
``images/train/database`` holds training places).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from geoxai import pretrained
from geoxai.data.vpr import list_images
from geoxai.errors import GeoxaiError, did_you_mean
from geoxai.synthcity import MIN_SIZE, SynthCity
from geoxai.synthcity.world import (
    check_world_complete,
    place_splits,
    synthcity_place,
    world_identity,
    world_splits,
)

UNSEEN_PLACES, SEEN_MAP = "unseen-places", "seen-map"
PROTOCOLS = (UNSEEN_PLACES, SEEN_MAP)


def held_out_split(folder: str | Path) -> str | None:
    """``database`` or ``queries`` when ``folder`` is (inside) a held-out split, else None."""
    parts = Path(folder).resolve().parts
    for i, part in enumerate(parts):
        if part in ("database", "queries") and (i == 0 or parts[i - 1] != "train"):
            return part
    return None


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:

        raise GeoxaiError(f"protocol {protocol!r}: use {' or '.join(PROTOCOLS)}.{did_you_mean(str(protocol), list(PROTOCOLS))}")
    return protocol


def check_training_folders(folders: Sequence[str | Path], protocol: str, key: str = "data.train_dirs") -> None:
    """Refuse training folders that hold held-out places under ``protocol``.

    ``unseen-places`` accepts no ``database/`` or ``queries/`` split; ``seen-map`` accepts
    ``database/`` (the map) but never ``queries/`` (the very images the generations are scored on).
    """
    check_protocol(protocol)
    for folder in folders:
        split = held_out_split(folder)
        if split is None:
            continue
        if protocol == UNSEEN_PLACES:
            raise GeoxaiError(f"{key}: {folder} holds held-out places ({split}/), which the protocol "
                              f"{UNSEEN_PLACES} keeps out of training; train on train/ only, or set "
                              f"protocol: {SEEN_MAP} to put the test places' database images into training on purpose")
        if split == "queries":
            raise GeoxaiError(f"{key}: {folder} holds query images of held-out places; no protocol trains on the "
                              "images the generations are evaluated with; remove it")


# ------------------------------------------------------------------- by content: the worlds trained on
# Folder names are only the first guard: a world's test places copied into a folder called train/
# pass it. So every training stage records which SynthCity worlds its data came from (identity =
# hash of the world's generating parameters, wherever the folder lies) and which splits, and for
# folders outside any world, the SynthCity places their file names show (merged or copied folders).
# Sampling and evaluation compare the queries' world and places with that record.
_PLACE_GROUPS = {"train": "train", "val/database": "val", "val/queries": "val", "database": "test", "queries": "test"}


def _ranges(numbers: Sequence[int]) -> str:
    """``0-3,7,9-10``: a sorted set of integers, compactly (a world's places fit on one line)."""
    values, parts = sorted(set(numbers)), []
    start = previous = None
    for value in values + [None]:
        if value is not None and previous is not None and value == previous + 1:
            previous = value
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = value
    return ",".join(parts)


def _parse_ranges(text: str) -> set[int]:
    numbers: set[int] = set()
    for part in filter(None, str(text).split(",")):
        low, _, high = part.partition("-")
        numbers.update(range(int(low), int(high or low) + 1))
    return numbers


def _names_places(folder: str | Path) -> dict[int, set[int]]:
    """Places per seed that the SynthCity file names under ``folder`` show."""
    places: dict[int, set[int]] = {}
    try:
        paths = list_images(folder)
    except GeoxaiError:  # no images: the stage that reads the folder says so, in its own words
        return places
    for path in paths:
        found = synthcity_place(path)
        if found is not None:
            places.setdefault(found[0], set()).add(found[1])
    return places


def training_worlds(folders: Sequence[str | Path], stage: str) -> list[dict[str, Any]]:
    """What a training stage records about its data: per folder, the SynthCity world (identity,
    parameters) and splits it lies in, or, outside any world, the SynthCity places its names show.

    A folder inside a half-written world is refused here, before any work (``check_world_complete``).
    Folders with neither (photos of real places) are not recorded.
    """
    records: list[dict[str, Any]] = []
    for folder in folders:
        found = check_world_complete(folder)
        if found is not None:
            root, params = found
            records.append({"stage": stage, "folder": str(Path(folder).resolve()), "world": world_identity(params),
                            "settings": dict(params), "splits": world_splits(folder, root)})
            continue
        places = _names_places(folder)
        if places:
            records.append({"stage": stage, "folder": str(Path(folder).resolve()), "world": None,
                            "places": {str(seed): _ranges(p) for seed, p in sorted(places.items())}})
    return records


def recorded_worlds(config: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The worlds a stage's config records (``worlds:``), or None for stages trained before they were."""
    worlds = config.get("worlds")
    return [dict(record) for record in worlds] if isinstance(worlds, list) else None


def autoencoder_worlds(autoencoder: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The worlds a trained autoencoder recorded (``config.yaml`` beside its ``vae/`` folder); an LDM
    adds them to its own, since a generator is its autoencoder and its LDM together."""
    source = str(autoencoder.get("path") or "")
    path = Path(source).expanduser()
    if not path.exists() and pretrained.is_shipped(source, "autoencoder"):  # a shipped set's LDM records them
        manifest = _read_yaml(pretrained.folder(source, "autoencoder").parent / "geoxai.yaml")
        config = (manifest or {}).get("training_config") or {}
        return [record for record in recorded_worlds(config) or [] if record.get("stage") == "autoencoder"]
    config = _read_yaml(path.parent / "config.yaml") if path.is_dir() else None
    if not isinstance(config, dict) or config.get("stage") != "autoencoder":
        return []
    return recorded_worlds(config) or []


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def check_seen_places(worlds: list[dict[str, Any]] | None, folder: str | Path, protocol: str | None,
                      option: str, queries: bool = True) -> dict[str, Any]:
    """Compare the images under ``folder`` (a generator's queries, or a database) with the training data
    ``worlds`` records; returns what was found, for run.yaml and results.json.

    The very images in training are always refused; other images of the same places (a place is its
    world's seed and its index, read from the world's parameters or, outside a world, from the file
    names) are refused under ``unseen-places`` and recorded under ``seen-map``. A generator that
    records no worlds, and images that are not SynthCity's, are recorded as unchecked. ``queries=False`` (a retrieval database):
    images in training are places seen, not a refusal in themselves (``seen-map`` trains on the map).
    """
    found = check_world_complete(folder)
    protocol = protocol or UNSEEN_PLACES
    if worlds is None:
        return {"result": "not checked: the generator does not record the worlds it trained on", "protocol": protocol}
    check: dict[str, Any] = {"protocol": protocol, "folder": str(Path(folder).resolve())}
    if found is not None:
        root, params = found
        identity, splits = world_identity(params), world_splits(folder, root)
        check.update(world=identity, splits=splits)
        mine = _world_places(params, splits)
        for record in worlds:
            same = sorted(set(record.get("splits") or []) & set(splits)) if record.get("world") == identity else []
            if same and queries:
                raise GeoxaiError(f"{option} {folder}: these very images ({', '.join(same)}/ of the SynthCity world "
                                  f"{identity}) are in the training data of the generator's {record.get('stage')} "
                                  f"({record.get('folder')}); no protocol evaluates a generator on its training "
                                  "images; give the queries of places it did not train on")
    else:
        mine = _names_places(folder)
    seen: list[dict[str, Any]] = []
    for record in worlds:
        if record.get("world") is not None:
            trained = _world_places(record.get("settings") or {}, record.get("splits") or [])
        else:
            trained = {int(seed): _parse_ranges(text) for seed, text in (record.get("places") or {}).items()}
        count = sum(len(places & trained.get(seed, set())) for seed, places in mine.items())
        if count:
            seen.append({"stage": record.get("stage"), "folder": record.get("folder"), "places": count})
    if not seen:
        check["result"] = ("unseen: no place of these images is in the generator's training data" if mine
                           else "not checked: not SynthCity images")
        return check
    first = seen[0]
    if protocol == UNSEEN_PLACES:
        raise GeoxaiError(f"{option} {folder}: {first['places']} of its places are in the training data of the "
                          f"generator's {first['stage']} ({first['folder']}), which the protocol {UNSEEN_PLACES} "
                          f"keeps out; give {'queries' if queries else 'a database'} of places it did not train on, "
                          f"or a generator trained under protocol: {SEEN_MAP}")
    check.update(result=f"{SEEN_MAP}: the places of these images are in the generator's training data", seen=seen)
    return check


def _world_places(params: Mapping[str, Any], splits: Sequence[str]) -> dict[int, set[int]]:
    """Places per seed of ``splits`` of the world ``params``, from its parameters (a place is its seed
    and index: the same place in a world of another size or other fractions is still that place)."""
    try:
        city = SynthCity(seed=int(params["seed"]), size=max(int(params.get("size", MIN_SIZE)), MIN_SIZE))
        roles = place_splits(city, int(params["places"]), float(params["test_fraction"]),
                             float(params.get("val_fraction", 0.0)))
    except (KeyError, TypeError, ValueError, GeoxaiError):
        return {}
    wanted = {_PLACE_GROUPS.get(split, split) for split in splits}
    return {city.seed: {place for place, role in enumerate(roles) if role in wanted}}


def generator_check(config: Mapping[str, Any], queries: str | Path) -> dict[str, Any]:
    """``geoxai sample``: refuse queries a generator (its LDM and autoencoder) trained on, as above; the
    result, with the worlds the generator records, goes to run.yaml as ``protocol_check``."""
    worlds = recorded_worlds(config)
    check = check_seen_places(worlds, queries, config.get("protocol"), "--queries")
    return {**check, "generator_worlds": worlds} if worlds is not None else check


def run_check(settings: Mapping[str, Any], database: str | Path | None) -> dict[str, Any]:
    """``geoxai evaluate``: the run's check again (its queries folder may have been rewritten since) and
    the ``--database``, against the worlds the run's generator records (run.yaml ``protocol_check``)."""
    recorded = settings.get("protocol_check")
    if not isinstance(recorded, Mapping) or not isinstance(recorded.get("generator_worlds"), list):
        return {"result": "not checked: the run does not record the worlds its generator trained on"}
    worlds, protocol = list(recorded["generator_worlds"]), recorded.get("protocol")
    check: dict[str, Any] = {"queries": {k: v for k, v in recorded.items() if k != "generator_worlds"}}
    if settings.get("queries") and Path(str(settings["queries"])).is_dir():
        check["queries"] = check_seen_places(worlds, str(settings["queries"]), protocol, "the run's queries")
    if database is not None:  # the images evaluate reads: DIR/database when there is one (a world's root)
        images = Path(database) / "database" if (Path(database) / "database").is_dir() else Path(database)
        check["database"] = check_seen_places(worlds, images, protocol, "--database", queries=False)
    return check
