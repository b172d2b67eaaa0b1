"""The factor probe: one SynthCity factor changed at a time, descriptor cosine to the unchanged render."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from geoxai.embedders.probe import FACTORS, OTHER_PLACE, REVISIT, held_out_places, run_probe
from geoxai.errors import GeoxaiError

SPEC = {"name": "cosplace", "backbone": "resnet18", "dim": 16, "weights": "random", "image_size": 64}


def _embedder():
    from geoxai.embedders import from_spec

    torch.manual_seed(0)
    return from_spec(SPEC, device="cpu")


def test_probe_table_has_every_factor_revisit_and_other_place(tmp_path):
    result = run_probe(SPEC, places=3, seed=0, size=64, out=tmp_path, device="cpu", progress=False)
    assert result.table["change"].tolist() == [*FACTORS, REVISIT, OTHER_PLACE]
    assert (result.table["places"] == 3).all()
    assert result.table["cosine"].between(-1.0, 1.0 + 1e-6).all()
    assert (result.table["ci_low"] <= result.table["cosine"] + 1e-9).all()
    assert (result.table["cosine"] <= result.table["ci_high"] + 1e-9).all()
    written = pd.read_csv(tmp_path / "probe.csv")
    pd.testing.assert_frame_equal(written, result.table, check_dtype=False)
    text = result.format()
    for change in [*FACTORS, REVISIT, OTHER_PLACE]:
        assert change in text


def test_probe_uses_held_out_places_only():
    from geoxai.synthcity import SynthCity

    city = SynthCity(seed=0, size=64)
    chosen = held_out_places(city, 10)
    assert len(set(chosen)) == 10 and all(city.is_test_place(p, 0.3) for p in chosen)
    assert not all(city.is_test_place(p, 0.3) for p in range(max(chosen)))  # train places were skipped


def test_constant_embedder_gives_similarity_one_everywhere():
    embedder = _embedder()
    constant = torch.nn.functional.normalize(torch.arange(1.0, 17.0), dim=0)
    embedder.embed = lambda images: constant.expand(len(images), -1).clone()
    result = run_probe(embedder, places=3, seed=0, size=64, device="cpu", progress=False)
    np.testing.assert_allclose(result.table["cosine"], 1.0, atol=1e-6)
    np.testing.assert_allclose(result.table[["ci_low", "ci_high"]].to_numpy(), 1.0, atol=1e-6)


def test_similarities_come_from_the_right_renders():
    """Recompute the re-visit and different-place cosines by hand from SynthCity renders."""
    from geoxai.synthcity import SynthCity

    embedder = _embedder()
    result = run_probe(embedder, places=3, seed=0, size=64, device="cpu", progress=False)
    city = SynthCity(seed=0, size=64)

    def embed(images):
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        return embedder.embed(batch).numpy()

    base = embed([city.render(p, 0).image for p in result.places])
    revisit = embed([city.render(p, 1).image for p in result.places])
    lighting = embed([city.render(p, 0, lighting=city.visit_factors(p, 1)["lighting"]).image
                      for p in result.places])
    other = np.sum(base * np.roll(base, -1, axis=0), axis=1)
    assert result.cosine(OTHER_PLACE) == pytest.approx(other.mean(), abs=1e-5)
    assert result.cosine(REVISIT) == pytest.approx(np.sum(base * revisit, axis=1).mean(), abs=1e-5)
    assert result.cosine("lighting") == pytest.approx(np.sum(base * lighting, axis=1).mean(), abs=1e-5)
    assert result.cosine(OTHER_PLACE) < 1.0 - 1e-4  # different places give different descriptors


def test_too_few_places_is_a_clear_error():
    with pytest.raises(GeoxaiError, match="--places 1"):
        run_probe(SPEC, places=1, size=64, device="cpu", progress=False)


def test_probe_command_prints_the_table(tmp_path):
    from click.testing import CliRunner

    from geoxai.cli import cli

    options = ["probe", "--backbone", "resnet18", "--dim", "16", "--image-size", "64", "--places", "2",
               "--size", "64", "--device", "cpu", "--out", str(tmp_path)]
    refused = CliRunner().invoke(cli, options)  # no --weights: an untrained network is refused
    assert refused.exit_code == 2 and "--weights random" in refused.output
    result = CliRunner().invoke(cli, [*options, "--weights", "random"])
    assert result.exit_code == 0, result.output
    assert OTHER_PLACE in result.output and (tmp_path / "probe.csv").is_file()
    assert "RANDOM weights" in result.output and pd.read_csv(tmp_path / "probe.csv")["random_weights"].all()
