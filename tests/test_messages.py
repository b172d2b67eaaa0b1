"""Messages that point to the right fix, and a newcomer's first hour: setting names as the user wrote
them, YAML positions, shipped specs, checks before training, random weights said loudly, complete
--help, progress on stderr and no library adverts."""

from __future__ import annotations

from pathlib import Path

import click
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from geoxai.cli import cli
from geoxai.errors import GeoxaiError

REPO = Path(__file__).resolve().parents[1]


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def error_of(result) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    return result.output


# --------------------------------------------------------------------------- setting names
def test_training_errors_name_config_keys_not_flags(tmp_path):
    (tmp_path / "train").mkdir()
    config = write_yaml(tmp_path / "ldm.yaml", {
        "stage": "ldm", "output_dir": str(tmp_path / "run"), "data": {"train_dirs": [str(tmp_path / "train")]},
        "embedder": {"name": "cosplace", "weights": str(tmp_path / "missing.pth")},
        "autoencoder": {"path": str(tmp_path / "missing-vae")}})
    output = error_of(CliRunner().invoke(cli, ["train", "--config", str(config)]))
    assert "autoencoder.path" in output and "--" not in output.replace("--config", "")
    (tmp_path / "vae").mkdir()
    from tiny_models import save_tiny_vae

    save_tiny_vae(tmp_path / "vae")
    config = write_yaml(tmp_path / "ldm.yaml", {**yaml.safe_load(config.read_text()),
                                                "autoencoder": {"path": str(tmp_path / "vae")}})
    output = error_of(CliRunner().invoke(cli, ["train", "--config", str(config)]))
    assert "embedder.weights" in output and "--weights" not in output
    embedder = write_yaml(tmp_path / "emb.yaml", {"stage": "embedder", "output_dir": str(tmp_path / "e"),
                                                  "data": {"train_dir": str(tmp_path / "train")},
                                                  "model": {"backbone": "resnet19"}})
    output = error_of(CliRunner().invoke(cli, ["train", "--config", str(embedder)]))
    assert "model.backbone 'resnet19'" in output and "did you mean 'resnet18'" in output


def test_the_same_error_names_the_flag_on_the_command_line():
    from geoxai.embedders import from_spec

    with pytest.raises(GeoxaiError, match=r"^--backbone 'resnet19'"):
        from_spec({"name": "cosplace", "backbone": "resnet19", "weights": "random"})


def test_yaml_errors_give_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: ldm\ndata:\n  train_dirs: [a, b\n  image_size: 64\n")
    output = error_of(CliRunner().invoke(cli, ["train", "--config", str(bad)]))
    assert f"{bad}:4:" in output and "invalid YAML" in output


def test_embedder_config_points_to_a_spec_that_exists(tmp_path):
    output = error_of(CliRunner().invoke(cli, ["probe", "--embedder-config", str(tmp_path / "nope.yaml")]))
    shipped = output.split("such as ")[-1].strip()
    assert (REPO / shipped).is_file(), shipped
    training = error_of(CliRunner().invoke(cli, ["probe", "--embedder-config",
                                                 str(REPO / "configs" / "embedder" / "synthcity-resnet18.yaml")]))
    assert "training config" in training and "embedder.yaml" in training


def test_config_mistakes_found_before_training_starts(tmp_path):
    from geoxai.synthcity.world import write_world

    world = tmp_path / "world"
    write_world(world, places=8, visits=4, size=32, progress=False)
    config = write_yaml(tmp_path / "emb.yaml", {
        "stage": "embedder", "output_dir": str(tmp_path / "run"), "data": {"train_dir": str(world / "train")},
        "eval": {"dataset_dir": str(tmp_path / "no-such-test-set")}})
    output = error_of(CliRunner().invoke(cli, ["train", "--config", str(config)]))
    assert "eval.dataset_dir" in output and not (tmp_path / "run").exists()
    autoencoder = write_yaml(tmp_path / "ae.yaml", {
        "stage": "autoencoder", "output_dir": str(tmp_path / "ae"),
        "data": {"train_dirs": [str(world / "train")], "val_dir": str(tmp_path / "nowhere")}})
    output = error_of(CliRunner().invoke(cli, ["train", "--config", str(autoencoder)]))
    assert "data.val_dir" in output and not (tmp_path / "ae").exists()


# --------------------------------------------------------------------------- first hour
@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    from geoxai.synthcity.world import write_world

    world = tmp_path_factory.mktemp("world")
    write_world(world, places=10, visits=3, size=32, progress=False)
    return world


def test_random_weights_are_refused_unless_asked_for_then_said_and_seeded(small_set, tmp_path):
    base = ["retrieve", "--dataset", str(small_set), "--backbone", "resnet18", "--image-size", "32",
            "--device", "cpu"]
    refused = error_of(CliRunner().invoke(cli, base))
    assert "--weights random" in refused
    runs = [CliRunner().invoke(cli, [*base, "--weights", "random", "--out", str(tmp_path / f"r{i}")]) for i in range(2)]
    assert all(r.exit_code == 0 for r in runs), runs[0].output
    assert "WARNING: the embedder has RANDOM weights" in runs[0].output
    first, second = (pd.read_csv(tmp_path / f"r{i}" / "recalls.csv") for i in range(2))
    assert first["random_weights"].all() and first["weights"].eq("random").all()
    pd.testing.assert_frame_equal(first, second)  # seeded: the same numbers every run
    assert "from the artifact store" in runs[1].output  # and the same identity, so nothing recomputed
    spec = CliRunner().invoke(cli, ["retrieve", "--dataset", str(small_set), "--device", "cpu", "--embedder-config",
                                    str(REPO / "configs" / "embedder" / "specs" / "random-resnet18-512.yaml")])
    assert spec.exit_code == 0 and "RANDOM weights" in spec.output, spec.output


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
        else:
            found.append((prefix + name, command))
    return found


def test_every_option_has_a_description_and_shows_its_default():
    missing = []
    for name, command in _commands(cli):
        for param in command.params:
            if not isinstance(param, click.Option) or param.name in ("help", "version"):
                continue
            if not param.help:
                missing.append(f"{name} {param.opts[0]}: no description")
            shown = param.show_default or param.required or param.is_flag or "[default" in param.help \
                or "[required]" in param.help
            if not shown:
                missing.append(f"{name} {param.opts[0]}: default not shown")
    assert not missing, "\n".join(missing)


def test_training_output_progress_on_stderr_and_no_adverts(small_set, tmp_path):
    config = write_yaml(tmp_path / "ae.yaml", {
        "stage": "autoencoder", "output_dir": str(tmp_path / "ae"),
        "data": {"train_dirs": [str(small_set / "train")], "image_size": 32, "crop_size": 16, "batch_size": 4,
                 "val_limit": 4},
        "model": {"block_out_channels": [4, 8], "layers_per_block": 1, "latent_channels": 2, "norm_num_groups": 4},
        "trainer": {"max_steps": 2}})
    result = CliRunner().invoke(cli, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "it/s" not in result.stdout and "Epoch 0" in result.stderr  # bars on stderr, results on stdout
    assert "autoencoder: held-out reconstruction PSNR" in result.stdout
    for advert in ("Tip:", "litlogger", "litmodels", "GPU available", "LeafSpec", "accelerate"):
        assert advert not in result.output


def test_geoxai_warnings_are_one_line_and_other_libraries_keep_their_format(capsys):
    import warnings

    import geoxai.store
    from geoxai.cli import show_warning

    show_warning(UserWarning("artifact store: x.npz is damaged"), UserWarning, geoxai.store.__file__, 160)
    assert capsys.readouterr().err == "warning: artifact store: x.npz is damaged\n"
    show_warning(UserWarning("deprecated"), UserWarning, warnings.__file__, 1)
    err = capsys.readouterr().err
    assert "UserWarning: deprecated" in err and warnings.__file__ in err
