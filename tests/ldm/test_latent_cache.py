"""The latent cache: built once, reused, invalidated by what changes its content, atomic and resumable."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from geoxai.data.images import load_tensor
from geoxai.errors import GeoxaiError
from geoxai.ldm.latent_cache import LatentCache, build_latent_cache, sample_from_moments

SIZE = 16


class Counting:
    """A fake frozen model: counts calls and images; deterministic and not mirror-symmetric."""

    def __init__(self, fn, fail_on_call: int | None = None):
        self.fn, self.fail_on_call, self.calls, self.images = fn, fail_on_call, 0, 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("killed")
        self.images += images.shape[0]
        return self.fn(images)


def fake_moments(images: torch.Tensor) -> torch.Tensor:  # [B, 8, S/4, S/4]: C = 4 latent channels
    x = F.avg_pool2d(images, 4)
    return torch.cat([x, x.mean(1, keepdim=True), -2 * x, x[:, :1] - 1], dim=1)


def fake_embed(images: torch.Tensor) -> torch.Tensor:  # [B, 6]: left-half and right-half colour means
    half = images.shape[-1] // 2
    d = torch.cat([images[..., :half].mean((2, 3)), images[..., half:].mean((2, 3))], dim=1)
    return F.normalize(d, dim=1)


def write_images(folder: Path, count: int, size: tuple[int, int] = (SIZE, SIZE), seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def build(paths, root, **overrides):
    encode, embed = Counting(fake_moments), Counting(fake_embed)
    options = dict(encode_moments=encode, embed=embed, autoencoder_id="ae-1", embedder_id="emb-1",
                   image_size=SIZE, flip=True, root=root, batch_size=2, progress=False)
    options.update(overrides)
    if "encode_moments" in overrides:
        encode = overrides["encode_moments"]
    cache = build_latent_cache(paths, **options)
    return cache, encode, embed


def test_built_once_then_reused(tmp_path):
    paths = write_images(tmp_path / "images", 5)
    first, encode, embed = build(paths, tmp_path / "cache")
    assert encode.images == 10 and embed.images == 10  # 5 images + their mirror images
    assert len(first) == 5 and first.moments.shape == (5, 8, 4, 4) and first.descriptors.shape == (5, 6)
    assert first.moments.dtype == np.float16 and first.descriptors.dtype == np.float32
    assert first.paths == [str(p) for p in paths]
    second, encode2, embed2 = build(list(reversed(paths)), tmp_path / "cache")  # order does not matter
    assert encode2.calls == 0 and embed2.calls == 0
    assert second.folder == first.folder and second.key == first.key
    np.testing.assert_array_equal(second.moments, first.moments)
    files = sorted(p.name for p in first.folder.iterdir())
    assert files == ["descriptors.npy", "flipped_descriptors.npy", "flipped_moments.npy", "index.csv",
                     "meta.json", "moments.npy", "skipped.csv"]


def test_rows_hold_the_encoding_of_their_image_and_its_mirror(tmp_path):
    paths = write_images(tmp_path / "images", 3)
    cache, _, _ = build(paths, tmp_path / "cache")
    for row, path in enumerate(cache.paths):
        image = load_tensor(path)[None]
        np.testing.assert_allclose(cache.moments[row], fake_moments(image)[0].numpy(), atol=2e-3)
        np.testing.assert_allclose(cache.descriptors[row], fake_embed(image)[0].numpy(), atol=1e-6)
        flipped = image.flip(-1)
        np.testing.assert_allclose(cache.flipped_moments[row], fake_moments(flipped)[0].numpy(), atol=2e-3)
        np.testing.assert_allclose(cache.flipped_descriptors[row], fake_embed(flipped)[0].numpy(), atol=1e-6)
        assert not np.allclose(cache.flipped_descriptors[row], cache.descriptors[row], atol=1e-3)


@pytest.mark.parametrize("change", ["modify", "touch", "add", "remove"])
def test_changed_files_give_a_new_cache(tmp_path, change):
    paths = write_images(tmp_path / "images", 4)
    first, _, _ = build(paths, tmp_path / "cache")
    if change == "modify":
        Image.new("RGB", (SIZE, SIZE), (255, 0, 0)).save(paths[1])
    elif change == "touch":
        stat = os.stat(paths[1])
        os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    elif change == "add":
        paths = paths + write_images(tmp_path / "more", 1, seed=1)
    else:
        paths = paths[:-1]
    second, encode, _ = build(paths, tmp_path / "cache")
    assert second.key != first.key and second.folder != first.folder and encode.calls > 0
    assert len(second) == len(paths)
    if change == "modify":
        assert not np.allclose(second.moments[1], first.moments[1])


@pytest.mark.filterwarnings("ignore:latent cache")
@pytest.mark.parametrize("override", [dict(autoencoder_id="ae-2"), dict(embedder_id="emb-2"),
                                      dict(image_size=8), dict(flip=False)])
def test_model_or_setting_changes_give_a_new_cache(tmp_path, override):
    paths = write_images(tmp_path / "images", 3)
    first, _, _ = build(paths, tmp_path / "cache")
    second, encode, _ = build(paths, tmp_path / "cache", **override)
    assert second.key != first.key and encode.calls > 0
    if "image_size" in override:
        assert second.moments.shape == (3, 8, 2, 2)
    if override.get("flip") is False:
        assert second.flipped_moments is None and second.flipped_descriptors is None


def test_killed_build_is_not_reused_and_the_next_build_resumes(tmp_path):
    paths = write_images(tmp_path / "images", 5)
    root = tmp_path / "cache"
    failing = Counting(fake_moments, fail_on_call=3)  # batch 1 = calls 1 (image) and 2 (mirror)
    with pytest.raises(RuntimeError, match="killed"):
        build(paths, root, encode_moments=failing)
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == []  # no cache to reuse
    resumed, encode, embed = build(paths, root)
    assert encode.images == 2 * 3 and embed.images == 2 * 3  # only the batches after the first
    fresh, _, _ = build(paths, tmp_path / "fresh")
    assert resumed.key == fresh.key
    for name in ("moments", "descriptors", "flipped_moments", "flipped_descriptors"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(fresh, name))
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == [resumed.folder.name]


def test_unreadable_image_is_skipped_and_listed(tmp_path):
    paths = write_images(tmp_path / "images", 4)
    bad = tmp_path / "images" / "img01b.png"
    bad.write_bytes(b"not a png")
    cache, _, _ = build(sorted(paths + [bad]), tmp_path / "cache")
    assert len(cache) == 4 and cache.moments.shape[0] == 4 and cache.flipped_descriptors.shape[0] == 4
    assert str(bad) not in cache.paths and [p for p, _ in cache.skipped] == [str(bad)]
    assert "unreadable" in cache.skipped[0][1]
    assert cache.meta["skipped"] == 1 and cache.meta["images"] == 4
    for row, path in enumerate(cache.paths):  # rows still line up with their images after compaction
        np.testing.assert_allclose(cache.descriptors[row], fake_embed(load_tensor(path)[None])[0], atol=1e-6)
    reopened = LatentCache.open(cache.folder)
    assert reopened.paths == cache.paths and reopened.skipped == cache.skipped


def test_mixed_sizes_are_resized_and_reshaping_is_said_once(tmp_path, capsys):
    # SIZE 16: 12x10 images are scaled up; 40x12 ones keep 30% of their area after the square crop
    paths = (write_images(tmp_path / "a", 3, size=(12, 10)) + write_images(tmp_path / "b", 2, size=(40, 12))
             + write_images(tmp_path / "c", 2, size=(24, 20)))
    cache, _, _ = build(paths, tmp_path / "cache", batch_size=1)
    assert cache.moments.shape == (7, 8, 4, 4)
    out = capsys.readouterr().out
    assert out.count("were scaled up") == 1 and "5 of 7 training images are smaller than the 16 px" in out
    assert out.count("lost more than half") == 1 and "2 of 7 training images" in out


def test_dataset_items_and_flip_probability(tmp_path):
    paths = write_images(tmp_path / "images", 4)
    cache, _, _ = build(paths, tmp_path / "cache")
    plain, mirrored = cache.dataset(flip_probability=0.0), cache.dataset(flip_probability=1.0)
    assert len(plain) == 4
    item = plain[2]
    assert item["moments"].shape == (8, 4, 4) and item["moments"].dtype == torch.float32
    assert item["descriptor"].shape == (6,) and item["descriptor"].dtype == torch.float32
    assert item["index"] == 2
    np.testing.assert_array_equal(item["moments"].numpy(), cache.moments[2].astype(np.float32))
    np.testing.assert_array_equal(mirrored[2]["descriptor"].numpy(), cache.flipped_descriptors[2])
    np.testing.assert_array_equal(mirrored[2]["moments"].numpy(), cache.flipped_moments[2].astype(np.float32))
    torch.manual_seed(0)
    half = cache.dataset()  # flip on: 0.5 by default
    picks = [bool(np.array_equal(half[0]["descriptor"].numpy(), cache.flipped_descriptors[0])) for _ in range(200)]
    assert 60 < sum(picks) < 140
    assert len(pickle.dumps(half)) < 2000  # workers reopen the memory maps instead of copying arrays
    no_flip, _, _ = build(paths, tmp_path / "cache", flip=False)
    assert no_flip.dataset().flip_probability == 0.0
    with pytest.raises(GeoxaiError, match="without flip"):
        no_flip.dataset(flip_probability=0.5)


def test_user_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(GeoxaiError, match="no images"):
        build([], tmp_path / "cache")
    with pytest.raises(GeoxaiError, match="do not exist"):
        build([tmp_path / "missing.png"], tmp_path / "cache")
    with pytest.raises(GeoxaiError, match="not a finished latent cache"):
        LatentCache.open(tmp_path)


def test_sample_from_moments_statistics():
    generator = torch.Generator().manual_seed(0)
    mean = torch.tensor([-1.0, 0.5, 2.0, 0.0]).view(1, 4, 1, 1).expand(4000, 4, 8, 8)
    logvar = torch.tensor([0.0, -2.0, 1.0, -60.0]).view(1, 4, 1, 1).expand(4000, 4, 8, 8)
    z = sample_from_moments(torch.cat([mean, logvar], dim=1), generator=generator)
    assert z.shape == (4000, 4, 8, 8)
    torch.testing.assert_close(z.mean((0, 2, 3)), mean[0, :, 0, 0], atol=0.01, rtol=0)
    expected_std = torch.exp(0.5 * torch.tensor([0.0, -2.0, 1.0, -30.0]))  # logvar clamped at -30
    torch.testing.assert_close(z.std((0, 2, 3)), expected_std, rtol=0.01, atol=1e-9)
    again = sample_from_moments(torch.cat([mean, logvar], dim=1), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, z)
