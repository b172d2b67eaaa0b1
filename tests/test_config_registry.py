"""Configs with overrides, strict merging, the entry-point registry and atomic writes."""

from __future__ import annotations

import pytest

from geoxai import registry
from geoxai.config import apply_overrides, load_config, merge
from geoxai.errors import GeoxaiError
from geoxai.files import atomic_path, atomic_write_text


def test_overrides_parse_yaml_values_and_create_sections(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  devices: 1\nname: a\n")
    config = load_config(path, ["trainer.devices=4", "trainer.precision=bf16-mixed", "new.deep.key=[1, 2]",
                                "name=b"])
    assert config["trainer"] == {"devices": 4, "precision": "bf16-mixed"}
    assert config["new"]["deep"]["key"] == [1, 2]
    assert config["name"] == "b"


def test_override_without_equals_and_into_a_value_are_errors():
    with pytest.raises(GeoxaiError, match="key.sub=value"):
        apply_overrides({}, ["trainer.devices"])
    with pytest.raises(GeoxaiError, match="is a value"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_invalid_yaml_and_non_mapping_are_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(GeoxaiError, match="invalid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(GeoxaiError, match="mapping"):
        load_config(listing)


def test_merge_rejects_unknown_keys_with_a_suggestion():
    defaults = {"optim": {"lr": 1.0, "batch_size": 8}, "seed": 0}
    merged = merge(defaults, {"optim": {"lr": 0.5}})
    assert merged == {"optim": {"lr": 0.5, "batch_size": 8}, "seed": 0}
    assert defaults["optim"]["lr"] == 1.0  # defaults untouched
    with pytest.raises(GeoxaiError, match=r"optim: unknown key 'batchsize'.*did you mean 'batch_size'"):
        merge(defaults, {"optim": {"batchsize": 4}})


def test_registry_unknown_name_suggests_close_names():
    with pytest.raises(GeoxaiError, match="did you mean 'cosplace'"):
        registry.load(registry.EMBEDDERS, "cosplac")


def test_registry_loads_module_attr_and_file(tmp_path):
    assert registry.load(registry.EMBEDDERS, "geoxai.errors:GeoxaiError") is GeoxaiError
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text("class MyPlugin:\n    name = 'mine'\n")
    loaded = registry.load(registry.PLUGINS, f"{plugin}:MyPlugin")
    assert loaded.name == "mine"
    with pytest.raises(GeoxaiError, match="did you mean 'MyPlugin'"):
        registry.load(registry.PLUGINS, f"{plugin}:MyPlugn")
    with pytest.raises(GeoxaiError, match="no such file"):
        registry.load(registry.PLUGINS, str(tmp_path / "missing.py") + ":X")
    with pytest.raises(GeoxaiError, match="cannot import module"):
        registry.load(registry.PLUGINS, "no_such_module_xyz:X")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
