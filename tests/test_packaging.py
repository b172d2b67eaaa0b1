"""The package layout, entry points and CLI wiring that every other part relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from click.testing import CliRunner

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from geoxai.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "geoxai").rglob("__init__.py")
    }
    assert found, "no packages found under geoxai/"
    missing = found - listed
    assert not missing, f"add to [tool.setuptools].packages in pyproject.toml: {sorted(missing)}"
    assert "geoxai_plugins" in listed


def test_entry_point_groups_are_declared():
    groups = _pyproject()["project"]["entry-points"]
    for group in ("geoxai.plugins", "geoxai.embedders", "geoxai.segmenters"):
        assert group in groups
    assert "cosplace" in {ep.name for ep in entry_points(group="geoxai.embedders")}


def test_plugins_folder_installs_as_geoxai_plugins():
    import geoxai_plugins

    assert Path(geoxai_plugins.__file__).parent.name in {"plugins", "geoxai_plugins"}


def test_help_lists_the_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("data", "train", "retrieve", "probe", "sample"):
        assert command in result.output


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "geoxai.cli", "data", "--help"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "synthcity" in result.stdout and "info" in result.stdout


def test_train_with_unknown_stage_is_a_one_line_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("stage: embeder\n")
    result = CliRunner().invoke(cli, ["train", "--config", str(config)])
    assert result.exit_code == 2
    assert "did you mean 'embedder'" in result.output
    assert "Traceback" not in result.output


def test_train_with_missing_config_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "config file not found" in result.output


def test_ruff_finds_nothing():
    """The lint rules in pyproject.toml hold for the library, the plugins, the tests and the benchmarks."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the dev extra)")
    result = subprocess.run([ruff, "check", "--no-cache", "geoxai", "plugins", "tests", "benchmarks"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
