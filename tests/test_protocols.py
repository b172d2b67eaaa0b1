"""The protocol guard: a training config may hold test places only when its protocol says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoxai.errors import GeoxaiError
from geoxai.protocols import check_training_folders, held_out_split

REPO = Path(__file__).resolve().parents[1]


def test_held_out_splits_are_recognised_by_the_vpr_layout():
    assert held_out_split("worlds/synthcity/database") == "database"
    assert held_out_split("worlds/synthcity/val/queries") == "queries"
    assert held_out_split("worlds/synthcity/train") is None
    assert held_out_split("datasets/pitts30k/images/train/database") is None  # Pitts30k's training places


def test_unseen_places_refuses_test_places_and_seen_map_refuses_queries():
    with pytest.raises(GeoxaiError, match=r"data\.train_dirs: .*database.* protocol: seen-map"):
        check_training_folders(["w/train", "w/database"], "unseen-places")
    check_training_folders(["w/train", "w/database"], "seen-map")
    with pytest.raises(GeoxaiError, match="query images of held-out places"):
        check_training_folders(["w/train", "w/queries"], "seen-map")
    with pytest.raises(GeoxaiError, match="did you mean 'seen-map'"):
        check_training_folders(["w/train"], "seen_map")


def test_training_refuses_before_any_work(tmp_path):
    from geoxai.ldm.training import check_paths, resolve_config

    for folder in ("train", "database"):
        (tmp_path / "w" / folder).mkdir(parents=True)
    config = resolve_config({"output_dir": str(tmp_path / "run"), "embedder": {"name": "cosplace"},
                             "data": {"train_dirs": [str(tmp_path / "w" / "train"), str(tmp_path / "w" / "database")]}})
    with pytest.raises(GeoxaiError, match="unseen-places keeps out of training"):
        check_paths(config)
    check_paths({**config, "protocol": "seen-map"})


@pytest.mark.parametrize("name, protocol", [("synthcity", "unseen-places"), ("synthcity-seen-map", "seen-map")])
def test_shipped_synthcity_configs_name_their_protocol_and_respect_it(name, protocol):
    from geoxai.config import load_config

    for stage in ("ldm", "autoencoder"):
        config = load_config(REPO / "configs" / stage / f"{name}.yaml")
        assert config["protocol"] == protocol
        check_training_folders(config["data"]["train_dirs"], protocol)
        validation = config["data"].get("val_queries") or config["data"].get("val_dir")
        assert "/val/" in validation  # choices and previews on validation places, not test places


GENERATOR_CONFIGS = sorted((REPO / "configs").glob("ldm/*.yaml")) + sorted((REPO / "configs").glob("autoencoder/*.yaml"))


@pytest.mark.parametrize("path", GENERATOR_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_generator_config_resolves_and_respects_its_protocol(path):
    """A config shipped in configs/ has no unknown key (it would fail at `geoxai train`) and trains on
    no folder its protocol keeps out."""
    from geoxai.config import load_config
    from geoxai.ldm import autoencoder_training, training

    resolve = {"ldm": training.resolve_config, "autoencoder": autoencoder_training.resolve_config}[path.parent.name]
    config = resolve(load_config(path))
    assert config["stage"] == path.parent.name
    check_training_folders(config["data"]["train_dirs"], config["protocol"])
