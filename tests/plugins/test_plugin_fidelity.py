"""Plugin ``fidelity`` and geoxai.evaluation.perceptual: exact PSNR/SSIM, baselines, LPIPS only from
cached weights (never the network), Fréchet distances and their stability flag."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geoxai.evaluation import perceptual
from geoxai.evaluation.runner import evaluate
from geoxai.runs import GenerationRun, plan_queries
from geoxai.synthcity.reference_runs import write_reference_run
from geoxai.synthcity.world import write_world

SPEC = {"name": "cosplace", "backbone": "resnet18", "dim": 16, "image_size": 48, "weights": "random"}
LPIPS_FILE = "alexnet-owt-7be5be79.pth"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fidelity") / "world"
    write_world(out, places=12, visits=3, size=48, progress=False)
    return out


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory):
    """The reference run of one kind (2 samples per query), written once per module."""
    root, done = tmp_path_factory.mktemp("fidelity-runs"), {}

    def run(kind: str) -> Path:
        if kind not in done:
            write_reference_run(world, kind, 2, root / kind, progress=False)
            done[kind] = root / kind
        return done[kind]

    return run


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """Empty torch hub and Hugging Face caches, and any attempt to reach the network fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    from huggingface_hub import constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    local_connect = socket.socket.connect

    def connect(sock, address):  # data-loader workers talk over Unix sockets: those stay allowed
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address)
        return local_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(scope="module")
def alexnet_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub cache holds a randomly initialised AlexNet under torchvision's file name."""
    import torchvision

    home = tmp_path_factory.mktemp("torch-home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(torchvision.models.alexnet().state_dict(), folder / LPIPS_FILE)
    return home


def score(run: Path, out: Path, database: Path | None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    result = evaluate(run, "fidelity", out, database=database, embedder_spec=SPEC, progress=False)
    assert result.failed == [], (out / "errors.csv").read_text()
    return pd.read_parquet(out / "records.parquet"), pd.read_csv(out / "summary.csv"), result.notices


def values(records: pd.DataFrame, metric: str, pairing: str) -> pd.Series:
    return records.loc[(records["metric"] == metric) & (records["pairing"] == pairing), "value"]


def row(summary: pd.DataFrame, metric: str, pairing: str = "generated") -> pd.Series:
    found = summary[(summary["metric"] == metric) & (summary["pairing"] == pairing)]
    assert len(found) == 1, f"no single summary row for {metric} / {pairing}"
    return found.iloc[0]


# ---------------------------------------------------------------------------------- reference runs
def test_identity_run_is_the_ceiling(runs, world, tmp_path, offline, one_thread):
    records, summary, notices = score(runs("identity"), tmp_path / "eval", world)
    psnr = values(records, "psnr", "generated")
    assert len(psnr) == 12 and (psnr == 100.0).all()  # identical images: capped, not infinite
    assert values(records, "ssim", "generated").to_numpy() == pytest.approx(1.0, abs=1e-5)
    assert (values(records, "psnr", "shuffled") < 30).all() and (values(records, "psnr", "reference") < 30).all()
    assert row(summary, "fd_descriptor")["mean"] == pytest.approx(0.0, abs=1e-3)
    assert row(summary, "fd_descriptor", "reference")["mean"] > row(summary, "fd_descriptor")["mean"]
    assert row(summary, "fd_descriptor")["n_queries"] == 12 and np.isnan(row(summary, "fd_descriptor")["ci_low"])
    assert any("fd_descriptor (generated)" in n and "unstable" in n for n in notices)  # 6 and 12 images of 16 dims
    # without weights (empty hub cache): one skipped row each, the reason said once
    for metric in ("fid", "kid", "fd_dinov2"):
        skipped = row(summary, metric)
        assert np.isnan(skipped["mean"]) and skipped["n_skipped"] == 1
    assert any(n.startswith("fidelity: fid and kid skipped: ") for n in notices)
    assert row(summary, "psnr")["higher_is_better"] and not row(summary, "fid")["higher_is_better"]


def test_other_place_scores_below_the_oracle(runs, world, tmp_path, offline, one_thread):
    oracle, oracle_summary, _ = score(runs("oracle"), tmp_path / "oracle", world)
    other, other_summary, _ = score(runs("other-place"), tmp_path / "other", world)
    for metric in ("psnr", "ssim"):
        assert row(other_summary, metric)["mean"] < row(oracle_summary, metric)["mean"]
        assert row(oracle_summary, metric)["mean"] < 100  # a fresh visit is not a copy


# ---------------------------------------------------------------------------------- exact values
def constant_run(root: Path, originals: list[int], generations: list[int]) -> Path:
    """A hand-written GenerationRun: query i is a constant grey ``originals[i]``, its one generation a
    constant grey ``generations[i]`` (8-bit values)."""
    queries = root / "queries"
    queries.mkdir(parents=True)
    for i, value in enumerate(originals):
        Image.new("RGB", (32, 24), (value,) * 3).save(queries / f"query{i}.png")
    items = plan_queries(sorted(queries.iterdir()), queries)
    run = GenerationRun.create(root / "run", {"generator": "constant greys", "queries": queries})
    run.save_images([(item, 0, 0, Image.new("RGB", (32, 24), (value,) * 3))
                     for item, value in zip(items, generations, strict=True)])
    run.finalize(items, 1)
    return root / "run"


def test_hand_checked_psnr_and_ssim(tmp_path, offline, one_thread):
    run = constant_run(tmp_path, originals=[51, 102], generations=[153, 102])
    records, summary, notices = score(run, tmp_path / "eval", None)
    psnr = records[(records["metric"] == "psnr") & (records["pairing"] == "generated")].set_index("query_id")["value"]
    mse = (102 / 255) ** 2  # 0.2 vs 0.6
    assert psnr["q000000"] == pytest.approx(10 * np.log10(1 / mse), abs=1e-4)  # 7.96 dB
    assert psnr["q000001"] == 100.0
    ssim = records[(records["metric"] == "ssim") & (records["pairing"] == "generated")].set_index("query_id")["value"]
    c1 = 0.01 ** 2  # constant images: only the luminance term of SSIM is left
    assert ssim["q000000"] == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1), abs=1e-4)
    # the shuffled baseline: each query against the other's generation
    shuffled = values(records, "psnr", "shuffled").sort_values().to_numpy()
    assert shuffled == pytest.approx(sorted([10 * np.log10(1 / (51 / 255) ** 2), 10 * np.log10(1 / (51 / 255) ** 2)]),
                                     abs=1e-4)
    assert any("no reference pairing" in n for n in notices)


# ---------------------------------------------------------------------------------- LPIPS weights
def test_lpips_without_cached_weights_is_skipped_without_network(runs, world, tmp_path, offline, one_thread):
    with pytest.raises(perceptual.WeightsNotCached) as error:
        perceptual.lpips_model("alex")
    message = str(error.value)
    assert "\n" not in message and LPIPS_FILE in message and str(perceptual.hub_checkpoints()) in message
    records, summary, notices = score(runs("oracle"), tmp_path / "eval", world)
    lpips = records[records["metric"] == "lpips"]
    assert len(lpips) == 12 + 12 + 6 and lpips["value"].isna().all()
    assert (lpips["skip_reason"] == message).all()
    assert row(summary, "lpips")["n_skipped"] == 12
    assert sum(n.startswith("fidelity: lpips skipped") for n in notices) == 1
    assert row(summary, "psnr")["n_queries"] == 6  # the rest of the plugin ran


def test_lpips_with_cached_weights(runs, world, tmp_path, alexnet_home, monkeypatch, offline, one_thread):
    monkeypatch.setenv("TORCH_HOME", str(alexnet_home))  # after `offline`: the network stays refused
    records, summary, _ = score(runs("identity"), tmp_path / "eval", world)
    lpips = records[records["metric"] == "lpips"]
    assert (lpips["skip_reason"] == "").all() and np.isfinite(lpips["value"]).all()
    assert (values(records, "lpips", "generated") == 0).all()  # identical images
    assert (values(records, "lpips", "shuffled") > 0).all()
    assert perceptual.lpips_model("alex") is perceptual.lpips_model("alex")  # one instance per process
    tiny = np.zeros((2, 16, 16, 3), dtype=np.float32)  # below AlexNet's pooling windows: a skip, not a failure
    skips = perceptual.lpips_or_skips(tiny, tiny, None)
    assert all(isinstance(s, perceptual.Skip) and s.reason.startswith("LPIPS failed on 16x16 images") for s in skips)


def test_autoencoder_trains_without_lpips_when_weights_are_missing(offline):
    from geoxai.ldm.autoencoder_training import _lpips

    with pytest.warns(UserWarning, match="vgg16-397923af.pth"):
        module, status = _lpips(0.1)
    assert module is None and status.startswith("skipped: LPIPS unavailable") and "vgg16-397923af.pth" in status


# ---------------------------------------------------------------------------------- set-level distances
def test_frechet_distance_and_its_stability_flag():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    assert perceptual.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    shifts = [perceptual.frechet_distance(a, a + shift) for shift in (0.5, 1.0, 2.0)]
    assert shifts == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0], rel=1e-6)  # |mean shift|^2, same covariance
    scaled = perceptual.frechet_distance(a, 2 * a)  # mean x2, covariance x4: tr(C + 4C - 2 * 2C) = tr(C)
    assert scaled == pytest.approx(np.sum(a.mean(axis=0) ** 2) + np.trace(np.cov(a, rowvar=False)), rel=1e-6)
    # torchmetrics' FID formula on the same features agrees; KID of a set with itself is ~0
    b = rng.normal(size=(300, 8)) * 1.3 + 0.2
    assert perceptual.fid_from_features(a, b) == pytest.approx(perceptual.frechet_distance(a, b), rel=1e-6)
    kid, _ = perceptual.kid_from_features(a, a, subset_size=100, subsets=10)
    assert abs(kid) < 0.05 < perceptual.kid_from_features(a, a + 2.0, subset_size=100, subsets=10)[0]
    assert perceptual.frechet_unstable(15, 8) and not perceptual.frechet_unstable(16, 8)
    assert np.isnan(perceptual.frechet_distance(a[:1], a))  # one sample has no covariance
