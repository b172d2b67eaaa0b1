"""The protocol guard: a training config may hold test places only when its protocol says so."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from geoxai.errors import GeoxaiError
from geoxai.protocols import (
    _parse_ranges,
    _ranges,
    check_training_folders,
    held_out_split,
)

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


# ------------------------------------------------------------------- by content: the worlds trained on
WORLD = {"places": 6, "visits": 2, "size": 32, "seed": 3, "test_fraction": 0.4, "val_fraction": 0.0}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from geoxai.synthcity.world import write_world

    out = tmp_path_factory.mktemp("protocol") / "world"
    write_world(out, progress=False, **WORLD)
    return out


def test_training_records_each_worlds_identity_and_splits(world, tmp_path):
    from geoxai.protocols import training_worlds
    from geoxai.synthcity.world import world_identity, world_params

    merged = tmp_path / "merged"  # test places copied out of their world, into a folder named like training data
    shutil.copytree(world / "database", merged)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "a.png")
    records = training_worlds([world / "train", merged, photos], "ldm")
    assert len(records) == 2  # photos of no SynthCity world are not recorded
    first, second = records
    assert first["world"] == world_identity(world_params(6, 2, 32, 3, 0.4)) and first["splits"] == ["train"]
    assert first["settings"]["seed"] == 3 and first["stage"] == "ldm"
    test_places = sorted(int(p.name.split("@")[7][1:]) for p in (world / "database").glob("*.png"))
    assert second["world"] is None and list(second["places"]) == ["3"]
    assert _parse_ranges(second["places"]["3"]) == set(test_places)


def test_place_ranges_round_trip():
    for places in ([], [0], [0, 1, 2, 5, 7, 8], [3, 9, 10, 11]):
        assert _parse_ranges(_ranges(places)) == set(places)
    assert _ranges([8, 0, 1, 2, 7, 5]) == "0-2,5,7-8"


def test_queries_of_places_in_training_are_refused_or_recorded(world, tmp_path):
    from geoxai.protocols import check_seen_places, training_worlds

    train = training_worlds([world / "train"], "ldm")
    assert check_seen_places(train, world / "queries", "unseen-places", "--queries")["result"].startswith("unseen")

    database = training_worlds([world / "database"], "ldm")
    with pytest.raises(GeoxaiError, match=r"--queries .*queries: \d+ of its places are in the training data"):
        check_seen_places(database, world / "queries", "unseen-places", "--queries")
    check = check_seen_places(database, world / "queries", "seen-map", "--queries")
    assert check["result"].startswith("seen-map") and check["seen"][0]["places"] == len(list((world / "database").glob("*.png")))

    queries = training_worlds([world / "queries"], "autoencoder")
    for protocol in ("unseen-places", "seen-map"):
        with pytest.raises(GeoxaiError, match=r"these very images \(queries/ .*generator's autoencoder"):
            check_seen_places(queries, world / "queries", protocol, "--queries")

    # the same world rendered into another folder is the same world; a copied-out folder shows its places
    elsewhere = tmp_path / "again"
    shutil.copytree(world, elsewhere)
    with pytest.raises(GeoxaiError, match="of its places"):
        check_seen_places(training_worlds([elsewhere / "database"], "ldm"), world / "queries", "unseen-places", "-q")
    merged = tmp_path / "merged" / "train"
    shutil.copytree(world / "database", merged)
    with pytest.raises(GeoxaiError, match=r"\d+ of its places are in the training data"):
        check_seen_places(training_worlds([merged], "ldm"), world / "queries", "unseen-places", "--queries")
    # a database (evaluate --database) in training is the seen-map protocol's map, not a refusal in itself
    check = check_seen_places(database, world, "seen-map", "--database", queries=False)
    assert check["result"].startswith("seen-map")
    assert check_seen_places(None, world / "queries", None, "--queries")["result"].startswith("not checked")


def test_an_ldm_inherits_its_autoencoders_worlds(world, tmp_path):
    from geoxai.config import save_config
    from geoxai.protocols import autoencoder_worlds, training_worlds

    run = tmp_path / "autoencoder"
    (run / "vae").mkdir(parents=True)
    records = training_worlds([world / "train"], "autoencoder")
    save_config({"stage": "autoencoder", "worlds": records}, run / "config.yaml")
    assert autoencoder_worlds({"path": str(run / "vae")}) == records
    assert autoencoder_worlds({"path": str(tmp_path / "missing")}) == []
    shipped = autoencoder_worlds({"path": "synthcity"})
    assert [r["stage"] for r in shipped] == ["autoencoder"] and shipped[0]["splits"] == ["train"]


def test_the_shipped_generator_records_the_worlds_it_trained_on():
    """Train places of the default world (seed 0, 200 places) and of the seed 1 world (800 places), nothing else."""
    from geoxai import pretrained
    from geoxai.protocols import recorded_worlds
    from geoxai.synthcity.world import world_identity, world_params

    manifest = yaml.safe_load((pretrained.folder("synthcity", "ldm") / "geoxai.yaml").read_text())
    worlds = recorded_worlds(manifest["training_config"])
    default, extra = world_identity(world_params(200, 6, 128, 0, 0.3, 0.1)), world_identity(
        world_params(800, 6, 128, 1, 0.01, 0.0))
    assert {(r["stage"], r["world"]) for r in worlds} == {("ldm", default), ("ldm", extra), ("autoencoder", default)}
    assert all(r["splits"] == ["train"] for r in worlds)


def test_a_rebuilt_set_keeps_the_worlds_of_its_checkpoint(tmp_path):
    from geoxai.pretrained_build import _carry_worlds

    previous = tmp_path / "geoxai.yaml"
    previous.write_text(yaml.safe_dump({"source_checkpoint": "step_1.ckpt", "training_config": {"worlds": [{"w": 1}]}}))
    manifest = {"source_checkpoint": "step_1.ckpt", "training_config": {}}
    _carry_worlds(manifest, previous)
    assert manifest["training_config"]["worlds"] == [{"w": 1}]
    other = {"source_checkpoint": "step_2.ckpt", "training_config": {}}  # another training run: nothing to carry
    _carry_worlds(other, previous)
    assert "worlds" not in other["training_config"]
    own = {"source_checkpoint": "step_1.ckpt", "training_config": {"worlds": []}}  # recorded by training: kept
    _carry_worlds(own, previous)
    assert own["training_config"]["worlds"] == []


def test_sample_refuses_queries_the_generator_trained_on_and_records_the_check(world, tmp_path):
    import torch
    from click.testing import CliRunner
    from tiny_models import make_checkpoint, save_tiny_vae

    from geoxai.cli import cli
    from geoxai.protocols import training_worlds
    from geoxai.runs import GenerationRun

    vae = save_tiny_vae(tmp_path / "vae")
    checkpoint = make_checkpoint(tmp_path / "plain.ckpt", vae)
    state = torch.load(checkpoint, weights_only=True)

    def with_worlds(name, folders, protocol):
        state["hyper_parameters"]["config"] = {**state["hyper_parameters"]["config"], "protocol": protocol,
                                               "worlds": training_worlds(folders, "ldm")}
        torch.save(state, tmp_path / name)
        return tmp_path / name

    def sample(ckpt, out):
        return CliRunner().invoke(cli, ["sample", "--checkpoint", str(ckpt), "--queries", str(world / "queries"),
                                        "--out", str(tmp_path / out), "--samples", "1", "--steps", "1", "--limit", "1"])

    result = sample(with_worlds("db.ckpt", [world / "train", world / "database"], "unseen-places"), "refused")
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "of its places are in the training data" in result.output
    assert not (tmp_path / "refused").exists()
    result = sample(with_worlds("map.ckpt", [world / "train", world / "database"], "seen-map"), "map")
    assert result.exit_code == 0, result.output
    check = GenerationRun.open(tmp_path / "map").settings["protocol_check"]
    assert check["result"].startswith("seen-map") and check["protocol"] == "seen-map"
    assert len(check["generator_worlds"]) == 2
    result = sample(with_worlds("q.ckpt", [world / "queries"], "seen-map"), "q")
    assert result.exit_code == 2 and "these very images" in result.output
    result = sample(checkpoint, "old")  # trained before worlds were recorded: sampled, and said so
    assert result.exit_code == 0
    assert GenerationRun.open(tmp_path / "old").settings["protocol_check"]["result"].startswith("not checked")


def test_evaluate_checks_the_database_against_the_runs_generator(world):
    from geoxai.protocols import run_check, training_worlds

    worlds = training_worlds([world / "database"], "ldm")
    settings = {"queries": str(world / "queries"),
                "protocol_check": {"protocol": "unseen-places", "generator_worlds": worlds}}
    with pytest.raises(GeoxaiError, match="the run's queries"):
        run_check(settings, None)
    settings["protocol_check"]["protocol"] = "seen-map"
    check = run_check(settings, world)
    assert check["database"]["result"].startswith("seen-map") and check["queries"]["result"].startswith("seen-map")
    assert run_check({}, world)["result"].startswith("not checked")
    # a world's root as --database is its database/ (what evaluate reads), not its train/ too
    trained = {"protocol": "unseen-places", "generator_worlds": training_worlds([world / "train"], "ldm")}
    check = run_check({"queries": str(world / "queries"), "protocol_check": trained}, world)
    assert check["database"]["splits"] == ["database"] and check["database"]["result"].startswith("unseen")


def test_a_place_is_its_seed_and_index_in_any_world_or_folder(world, tmp_path):
    """Queries copied out of their world, and a world of the same seed with other fractions whose
    training places include this world's test places: both are caught by place, not by folder."""
    from geoxai.protocols import check_seen_places, training_worlds
    from geoxai.synthcity.world import write_world

    copied = tmp_path / "copied"
    shutil.copytree(world / "queries", copied)
    with pytest.raises(GeoxaiError, match="of its places are in the training data of the generator's ldm"):
        check_seen_places(training_worlds([world / "database"], "ldm"), copied, "unseen-places", "--queries")
    assert check_seen_places(training_worlds([world / "train"], "ldm"), copied, "unseen-places",
                             "--queries")["result"].startswith("unseen")
    other = tmp_path / "other"  # seed 3 again, bigger images, fewer test places
    write_world(other, progress=False, **{**WORLD, "size": 40, "test_fraction": 0.2})
    with pytest.raises(GeoxaiError, match="of its places are in the training data"):
        check_seen_places(training_worlds([other / "train"], "ldm"), world / "queries", "unseen-places", "--queries")
