"""docs/real-data.md end to end: every `geoxai` command of the page's bash blocks, in order, on stand-ins.

The stand-ins sit where the page says the real files go (relative to a working folder, and in
$GEOXAI_CACHE / the Hugging Face cache): a random CosPlace ResNet50 saved in the release's key
layout, a tiny KL autoencoder in the CompVis layout at models/first_stage_models/kl-f8/model.ckpt, a
tiny random SegFormer with the Cityscapes labels under the page's model id, and a few places of
UTM-named images. The commands are read from the page itself, so the page and this test cannot
drift; only sizes are overridden (TINY), never paths.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from geoxai.cli import cli

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "real-data.md"
SEGFORMER_ID = "nvidia/segformer-b5-finetuned-cityscapes-1024-1024"

# Tiny sizes for each command (appended, or replacing the page's value); the paths stay the page's.
TINY_TRAIN = ("embedder.image_size=32 data.image_size=32 data.batch_size=4 data.num_workers=0 "
              "data.encode_batch_size=8 unet.sample_size=16 unet.model_channels=32 unet.channel_mult=[1,2] "
              "unet.attention_resolutions=[2] unet.num_res_blocks=1 unet.num_heads=4 optim.warmup_steps=1 "
              "logging.image_every_n_steps=2 logging.num_images=2 logging.sampler_steps=2 "
              "logging.checkpoint_every_n_steps=2 trainer.max_steps=2 trainer.accelerator=cpu trainer.devices=1 "
              "trainer.log_every_n_steps=1")
TINY = {
    "retrieve": ([("--image-size 512", "--image-size 32")], "--batch-size 8"),
    "train": ([], TINY_TRAIN),
    "sample": ([("--samples 4", "--samples 2")], "--steps 2 --batch-size 8"),
    "evaluate": ([], "--batch-size 8"),
}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def page_commands() -> list[str]:
    """The `geoxai` lines of the page's ```bash blocks, in order (continuation lines joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", PAGE.read_text(), re.DOTALL)
    lines = [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith("geoxai ")]


def tiny(command: str) -> list[str]:
    name = command.split()[1]
    replacements, extra = TINY.get(name, ([], ""))
    for old, new in replacements:
        assert old in command, f"docs/real-data.md: `{name}` no longer has {old}"
        command = command.replace(old, new)
    return shlex.split(command)[1:] + shlex.split(extra)


def write_place_images(folder: Path, places: range, per_place: int, rng: np.random.Generator) -> None:
    """Images of places 30 m apart (same pattern per place, fresh noise per image), VPR-named."""
    folder.mkdir(parents=True, exist_ok=True)
    for place in places:
        pattern = np.random.default_rng(place).integers(0, 255, (4, 4, 3))
        for visit in range(per_place):
            image = np.kron(pattern, np.ones((8, 10, 1))) + rng.normal(0, 12, (32, 40, 3))
            name = f"@{584000 + 30 * place + visit:.2f}@{4477000 + visit:.2f}@17@T@@@p{place}@{visit}@@@@@@@.jpg"
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / name, quality=95)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The page's working folder with every file in place (stand-ins), and the caches pointed into it."""
    from huggingface_hub import constants
    from test_autoencoder import tiny_vae, to_compvis
    from test_segmenters import CITYSCAPES_NAMES, save_segformer

    from geoxai.embedders.cosplace import CosPlaceNet, released_weights_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GEOXAI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no LPIPS/Inception weights: recorded skips
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    rng = np.random.default_rng(0)
    root = tmp_path / "datasets" / "pitts30k" / "images"
    write_place_images(root / "train" / "database", range(6), 2, rng)
    write_place_images(root / "train" / "queries", range(6), 1, rng)
    write_place_images(root / "val" / "queries", range(6, 8), 1, rng)
    write_place_images(root / "test" / "database", range(10, 14), 2, rng)
    write_place_images(root / "test" / "queries", range(10, 14), 1, rng)
    torch.manual_seed(0)
    torch.save(CosPlaceNet("resnet50", 512).state_dict(), released_weights_path("resnet50", 512))
    kl_f8 = tmp_path / "models" / "first_stage_models" / "kl-f8" / "model.ckpt"
    kl_f8.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"first_stage_model.{k}": v for k, v in to_compvis(tiny_vae().state_dict()).items()}},
               kl_f8)
    snapshot = tmp_path / "hub" / f"models--{SEGFORMER_ID.replace('/', '--')}"
    save_segformer(snapshot / "snapshots" / "0123abc", CITYSCAPES_NAMES)
    (snapshot / "refs").mkdir()
    (snapshot / "refs" / "main").write_text("0123abc")
    return tmp_path


def test_every_command_of_the_real_data_page_runs(workdir):
    commands = page_commands()
    names = [command.split()[1] for command in commands]
    assert names == ["assets", "data", "data", "retrieve", "train", "sample", "evaluate", "report"], names
    runner = CliRunner()
    for command in commands:
        result = runner.invoke(cli, tiny(command))
        name = command.split()[1]
        if name == "assets":
            # everything in place except the fidelity plugin's optional perceptual weights (skipped metrics)
            assert result.exit_code == 1, result.output
            rows = [line for line in result.output.splitlines() if re.search(r"  (found|missing|mismatch)  ", line)]
            assert any("ResNet50_512_cosplace.pth" in row and "  found  " in row for row in rows), result.output
            assert any("kl-f8/model.ckpt" in row and "  found  " in row and "CompVis KL autoencoder" in row
                       for row in rows), result.output
            found = [row for row in rows if "  found  " in row]
            assert len(found) == 6, result.output  # CosPlace, kl-f8, 3 training folders, the SegFormer
            assert any(SEGFORMER_ID in row and "image processor and weights present" in row for row in found)
            assert all("plugin fidelity" in row for row in rows if "  found  " not in row), result.output
            continue
        assert result.exit_code == 0, f"{command}\n{result.output}"
    out = workdir / "runs"
    recalls = read_csv(out / "retrieval" / "pitts30k-test" / "recalls.csv")
    assert [int(row["n"]) for row in recalls] == [1, 5, 10, 20]
    assert all(0 <= float(row["recall"]) <= 100 and row["num_queries"] == "4" for row in recalls)
    assert float(recalls[-1]["recall"]) == 100  # 8 database images: the top 20 hold every positive
    assert (out / "ldm" / "pitts30k-cosplace-r50-256" / "checkpoints" / "last.ckpt").is_file()
    generated = list((out / "samples" / "pitts30k-test").rglob("*.png"))
    assert len(generated) == 4 * 2  # 4 test queries x --samples 2
    results = json.loads((out / "eval" / "pitts30k-test" / "results.json").read_text())
    summary = read_csv(out / "eval" / "pitts30k-test" / "summary.csv")
    plugins = {row["plugin"] for row in summary}
    assert {"recall", "fidelity", "sky", "buildings", "vehicles", "signs"} <= plugins, plugins
    assert set(results["plugins"]) == plugins and not results["errors"]
    value = {(row["plugin"], row["metric"], row["pairing"]): row for row in summary}
    assert float(value["recall", "recall@1", "reference"]["mean"]) == 100  # the other real photo of the place
    assert 0 <= float(value["recall", "recall@1", "generated"]["mean"]) <= 100
    assert float(value["fidelity", "psnr", "reference"]["mean"]) > float(value["fidelity", "psnr", "generated"]["mean"])
    assert value["fidelity", "fid", "generated"]["mean"] == "" and value["fidelity", "fid", "generated"]["n_skipped"] == "1"
    assert (out / "report" / "pitts30k-test" / "index.html").is_file()
