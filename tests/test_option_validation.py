"""Numeric command-line options are checked before any work starts: NaN, infinities and values out of
range are one `error:` line naming the option, and nothing is written; sampling stops on a batch
that holds non-finite values instead of saving black images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tiny_models import make_checkpoint, save_tiny_vae, write_queries

from geoxai.cli import MIN_WORLD_SIZE, cli
from geoxai.errors import GeoxaiError

pytestmark = pytest.mark.usefixtures("one_thread")

# Each command with the arguments it needs besides the option under test ({out} is the output folder).
BASE = {
    "synthcity": ["data", "synthcity", "--out", "{out}"],
    "synthcity-run": ["data", "synthcity-run", "--world", "{missing}", "--kind", "oracle", "--out", "{out}"],
    "info": ["data", "info", "{missing}"],
    "retrieve": ["retrieve", "--dataset", "{missing}", "--weights", "random", "--out", "{out}"],
    "probe": ["probe", "--weights", "random", "--out", "{out}"],
    "sample": ["sample", "--checkpoint", "{missing}", "--queries", "{missing}", "--out", "{out}"],
    "evaluate": ["evaluate", "{missing}", "--plugins", "recall", "--out", "{out}"],
    "report": ["report", "{missing}", "--out", "{out}"],
    "build": ["pretrained", "build", "tiny", "--embedder", "{missing}", "--checkpoint", "{missing}",
              "--segmenter", "{missing}", "--out", "{out}"],
}

BAD = [
    ("synthcity", "--places", "0"), ("synthcity", "--places", "-3"), ("synthcity", "--visits", "1"),
    ("synthcity", "--size", str(MIN_WORLD_SIZE - 1)), ("synthcity", "--seed", "-1"),
    ("synthcity", "--seed", str(2**63)), ("synthcity", "--test-fraction", "nan"),
    ("synthcity", "--test-fraction", "1"), ("synthcity", "--test-fraction", "0"),
    ("synthcity", "--val-fraction", "-0.1"), ("synthcity", "--val-fraction", "inf"),
    ("synthcity", "--places", "2.5"),
    ("synthcity-run", "--samples", "0"), ("synthcity-run", "--seed", "-1"), ("synthcity-run", "--limit", "0"),
    ("info", "--radius", "nan"), ("info", "--radius", "0"), ("info", "--radius", "-25"), ("info", "--radius", "inf"),
    ("retrieve", "--dim", "0"), ("retrieve", "--image-size", "-1"), ("retrieve", "--batch-size", "0"),
    ("retrieve", "--radius", "nan"),
    ("probe", "--places", "1"), ("probe", "--seed", "-2"), ("probe", "--size", "8"), ("probe", "--dim", "0"),
    ("sample", "--samples", "0"), ("sample", "--steps", "0"), ("sample", "--steps", "-5"),
    ("sample", "--guidance", "nan"), ("sample", "--guidance", "inf"), ("sample", "--guidance", "-inf"),
    ("sample", "--guidance", "-1"), ("sample", "--guidance", "NaN"), ("sample", "--seed", "-1"),
    ("sample", "--seed", str(2**63)), ("sample", "--devices", "0"), ("sample", "--num-nodes", "0"),
    ("sample", "--limit", "0"), ("sample", "--batch-size", "0"),
    ("evaluate", "--seed", "-1"), ("evaluate", "--devices", "0"), ("evaluate", "--num-nodes", "-1"),
    ("evaluate", "--radius", "-inf"), ("evaluate", "--batch-size", "0"), ("evaluate", "--dim", "-4"),
    ("report", "--grid-rows", "0"), ("report", "--grid-samples", "-1"),
    ("build", "--guidance", "nan"), ("build", "--guidance", "-0.5"),
]


def _args(command: str, tmp_path: Path, *extra: str) -> list[str]:
    names = {"out": str(tmp_path / "out"), "missing": str(tmp_path / "missing")}
    return [part.format(**names) for part in BASE[command]] + list(extra)


@pytest.mark.parametrize("command, option, value", BAD)
def test_a_bad_number_is_one_usage_error_naming_the_option(tmp_path, command, option, value):
    result = CliRunner().invoke(cli, _args(command, tmp_path, option, value))
    assert result.exit_code == 2, result.output
    errors = result.output.splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and f"'{option}'" in errors[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, option, value", [
    ("sample", "--guidance", "0"),  # the unconditional model: a baseline, allowed
    ("sample", "--seed", str(2**63 - 1)),
    ("synthcity-run", "--limit", "1"),
    ("evaluate", "--radius", "0.5"),
])
def test_edge_values_pass_the_options_and_reach_the_command(tmp_path, command, option, value):
    """The limits are where they should be: these values pass parsing, and the command then stops
    on its missing input (a one-line ``error:`` from the library), not on the option."""
    result = CliRunner().invoke(cli, _args(command, tmp_path, option, value))
    assert result.exit_code == 2 and result.output.startswith("error: "), result.output
    assert option not in result.output


# ------------------------------------------------------------------------------ the library
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    vae = save_tiny_vae(tmp_path_factory.mktemp("vae"))
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.ckpt", vae)


@pytest.fixture(scope="module")
def queries(tmp_path_factory) -> Path:
    return write_queries(tmp_path_factory.mktemp("queries"), count=2)


@pytest.mark.parametrize("setting, value, named", [
    ("guidance", float("nan"), "--guidance nan"),
    ("guidance", float("inf"), "--guidance inf"),
    ("guidance", -1.0, "--guidance -1.0"),
    ("seed", -1, "--seed -1"),
    ("seed", 2**63, f"--seed {2**63}"),
    ("steps", 0, "--steps 0"),
    ("samples", 2.5, "--samples 2.5"),
    ("devices", 0, "--devices 0"),
])
def test_sample_run_checks_its_settings_before_writing(checkpoint, queries, tmp_path, setting, value, named):
    from geoxai.ldm.sampling import sample_run

    with pytest.raises(GeoxaiError, match=f"^{named}: must be") as info:
        sample_run(checkpoint, queries, tmp_path / "run", **{"samples": 1, "steps": 2, "progress": False,
                                                            setting: value})
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_sample_run_names_a_checkpoint_guidance_that_is_not_finite(checkpoint, queries, tmp_path, monkeypatch):
    from geoxai.ldm import loading
    from geoxai.ldm.sampling import sample_run

    load = loading.load_components

    def nan_guidance(*args, **kwargs):
        components = load(*args, **kwargs)
        components.guidance = float("nan")
        return components

    monkeypatch.setattr(loading, "load_components", nan_guidance)
    with pytest.raises(GeoxaiError, match=r"--checkpoint .*: its guidance nan: must be a finite number"):
        sample_run(checkpoint, queries, tmp_path / "run", samples=1, steps=2, progress=False)
    assert not (tmp_path / "run" / "run.yaml").exists()


def test_a_batch_with_nan_stops_the_run_and_writes_no_image(checkpoint, queries, tmp_path, monkeypatch):
    """A model that yields NaN (damaged weights) stops at its first batch: no black images are saved."""
    from geoxai.ldm.components import LDMComponents
    from geoxai.ldm.pipeline import NonFiniteGeneration
    from geoxai.ldm.sampling import sample_run
    from geoxai.runs import GenerationRun

    def nan_noise(self, latents, t, descriptors, guidance=1.0):
        return torch.full_like(latents, float("nan"))

    monkeypatch.setattr(LDMComponents, "predict_noise", nan_noise)
    with pytest.raises(NonFiniteGeneration, match="NaN or infinite latents.*nothing was written for this batch") \
            as info:
        sample_run(checkpoint, queries, tmp_path / "run", samples=2, steps=2, batch_size=2, progress=False)
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "run").rglob("*.png"))
    assert len(GenerationRun.open(tmp_path / "run").manifest()) == 0


def test_the_nan_guard_is_one_line_through_the_command(checkpoint, queries, tmp_path, monkeypatch):
    from geoxai.ldm.components import LDMComponents

    monkeypatch.setattr(LDMComponents, "predict_noise",
                        lambda self, latents, *args, **kwargs: torch.full_like(latents, float("inf")))
    result = CliRunner().invoke(cli, ["sample", "--checkpoint", str(checkpoint), "--queries", str(queries),
                                      "--out", str(tmp_path / "run"), "--samples", "1", "--steps", "2",
                                      "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "not finite" not in lines[0] and "infinite latents" in lines[0]
    assert not list((tmp_path / "run").rglob("*.png"))


def test_the_pipeline_refuses_a_non_finite_guidance(checkpoint):
    from geoxai.ldm.autoencoder import load_autoencoder
    from geoxai.ldm.loading import load_components
    from geoxai.ldm.pipeline import DescriptorDiffusionPipeline

    components = load_components(checkpoint, map_location="cpu")
    pipeline = DescriptorDiffusionPipeline.from_components(components, load_autoencoder(components.config["autoencoder"]))
    with pytest.raises(GeoxaiError, match="--guidance nan: must be a finite number"):
        pipeline(torch.ones(1, components.context_dim), num_inference_steps=2, guidance=float("nan"))


def test_pretrained_build_refuses_a_guidance_sample_would_refuse(tmp_path):
    from geoxai.pretrained_build import build

    with pytest.raises(GeoxaiError, match="^--guidance nan: must be a finite number >= 0"):
        build("tiny", tmp_path / "embedder", tmp_path / "last.ckpt", tmp_path / "segmenter", out=tmp_path / "set",
              guidance=float("nan"))
    assert not (tmp_path / "set").exists()


def test_the_command_lines_limits_are_the_librarys():
    """Literals kept in cli.py (importing the library there would slow `geoxai --help`) agree with it."""
    from geoxai.cli import SEED
    from geoxai.ldm.sampling import MAX_SEED
    from geoxai.synthcity import MIN_SIZE

    assert MIN_WORLD_SIZE == MIN_SIZE and SEED.max == MAX_SEED


def test_a_nan_in_the_models_noise_schedule_is_named_before_the_run_is_created(checkpoint, queries, tmp_path,
                                                                                 monkeypatch):
    from geoxai.ldm import loading
    from geoxai.ldm.sampling import sample_run

    load = loading.load_components

    def nan_schedule(*args, **kwargs):
        components = load(*args, **kwargs)
        components.noise_scheduler_config["beta_end"] = float("nan")
        return components

    monkeypatch.setattr(loading, "load_components", nan_schedule)
    with pytest.raises(GeoxaiError, match=r"\(its noise schedule\): diffusion.beta_end: nan is not a number"):
        sample_run(checkpoint, queries, tmp_path / "run", samples=1, steps=2, progress=False)
    assert not (tmp_path / "run" / "run.yaml").exists()
