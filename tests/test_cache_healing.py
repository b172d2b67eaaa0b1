"""Caches heal: a damaged chunk of the artifact store or a damaged latent cache is reported once, set
aside and recomputed; a value read back is never wrong."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoxai.evaluation.artifacts import LabArtifact
from geoxai.store import ArtifactStore


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = folder / f"image{i}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def truncated(path: Path) -> bytes:
    return path.read_bytes()[: path.stat().st_size // 2]


DAMAGE = {
    "truncated": truncated,
    "not an npz": lambda path: b"this is not a numpy file\n" * 20,
    "an npy": lambda path: npy_bytes(np.zeros(3)),
    "object array": lambda path: npz_bytes(keys=np.load(path)["keys"],
                                           values=np.array([{"a": 1}] * len(np.load(path)["keys"]), dtype=object)),
    "wrong dtype": lambda path: npz_bytes(keys=np.load(path)["keys"], values=np.load(path)["values"].astype(np.float16)),
    "wrong rank": lambda path: npz_bytes(keys=np.load(path)["keys"], values=np.load(path)["values"][:, :2, None]),
    "wrong shape": lambda path: npz_bytes(keys=np.load(path)["keys"], values=np.load(path)["values"][:, :2]),
    "values of objects": lambda path: npz_bytes(keys=np.load(path)["keys"],
                                                **{f"value_{i}": np.array([None], dtype=object)
                                                   for i in range(len(np.load(path)["keys"]))}),
    "fewer values": lambda path: npz_bytes(keys=np.load(path)["keys"], values=np.load(path)["values"][:2]),
}


def lab(store: ArtifactStore, images: list[Path]):
    return LabArtifact(batch_size=8).compute(images, store, progress=False)


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_store_chunk_is_reported_once_set_aside_and_recomputed(images, tmp_path, how):
    store = ArtifactStore(tmp_path / "store")
    first = lab(store, images)
    assert first.computed == len(images)
    [chunk] = list((tmp_path / "store" / "lab").glob("*/chunks/*.npz"))
    chunk.write_bytes(DAMAGE[how](chunk))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = lab(ArtifactStore(tmp_path / "store"), images)  # a fresh process: nothing in memory
        third = lab(ArtifactStore(tmp_path / "store"), images)
    notes = [str(w.message) for w in caught if "is damaged" in str(w.message)]
    assert len(notes) == 1 and str(chunk) in notes[0] and "computed again" in notes[0], notes
    assert again.computed == len(images) and third.computed == 0
    assert [p.name.split(".damaged-")[0] for p in chunk.parent.glob("*.damaged-*")] == [chunk.name]
    for key in first.keys:
        np.testing.assert_array_equal(again.values[key], first.values[key])
        assert again.values[key].dtype == first.values[key].dtype


def test_the_store_never_unpickles(tmp_path):
    import geoxai.store

    source = Path(geoxai.store.__file__).read_text()
    assert "allow_pickle=True" not in source and source.count("allow_pickle=False") >= 2


def test_a_value_of_another_dtype_is_refused_on_write(tmp_path):
    from geoxai.errors import GeoxaiError

    namespace = ArtifactStore(tmp_path).namespace("thing", "test", {})
    namespace.put_many({"a": np.zeros(4, np.float32)})
    with pytest.raises(GeoxaiError, match="float32|<f4"):
        namespace.put_many({"b": np.zeros(4, np.float64)})
    with pytest.raises(GeoxaiError, match="numbers"):
        namespace.put_many({"c": np.array(["text"])})


# ------------------------------------------------------------------------ the latent cache
LATENT_DAMAGE = {
    "truncated moments": ("moments.npy", truncated),
    "descriptors not an npy": ("descriptors.npy", lambda path: b"garbage" * 50),
    "moments of another dtype": ("moments.npy", lambda path: npy_bytes(np.load(path).astype(np.float32))),
    "descriptors of objects": ("descriptors.npy",
                               lambda path: npy_bytes(np.array([object()] * len(np.load(path)), dtype=object))),
    "moments of another shape": ("flipped_moments.npy", lambda path: npy_bytes(np.load(path)[:-1])),
    "truncated index": ("index.csv", lambda path: b"row,path\n0,img00.png\n"),
    "garbage meta.json": ("meta.json", lambda path: b"{\"key\": \"trunc"),
}


@pytest.mark.parametrize("how", list(LATENT_DAMAGE))
def test_a_damaged_latent_cache_is_said_once_set_aside_and_rebuilt(tmp_path, capsys, how):
    from test_latent_cache import build, write_images

    from geoxai.errors import GeoxaiError
    from geoxai.ldm.latent_cache import LatentCache

    paths = write_images(tmp_path / "images", 4)
    cache, _, _ = build(paths, tmp_path / "cache")
    good = {name: np.array(getattr(cache, name)) for name in ("moments", "descriptors", "flipped_moments")}
    folder = cache.folder
    name, damage = LATENT_DAMAGE[how]
    (folder / name).write_bytes(damage(folder / name))

    with pytest.raises(GeoxaiError, match=r"latent cache .* is damaged .*delete it|not a finished latent cache"):
        LatentCache.open(folder)
    capsys.readouterr()
    rebuilt, encode, _ = build(paths, tmp_path / "cache")
    said = [line for line in capsys.readouterr().out.splitlines() if "is damaged" in line]
    assert len(said) == 1 and str(folder) in said[0] and encode.images == 8  # 4 images and their mirrors
    assert len(list(folder.parent.glob(f"{folder.name}.damaged-*"))) == 1
    for array_name, value in good.items():
        np.testing.assert_array_equal(np.array(getattr(rebuilt, array_name)), value)
    _, encode, _ = build(paths, tmp_path / "cache")
    assert encode.images == 0  # healed: reused without a word
    assert "damaged" not in capsys.readouterr().out


def test_a_latent_dataset_never_reads_a_file_damaged_after_opening(tmp_path):
    from test_latent_cache import build, write_images

    from geoxai.errors import GeoxaiError

    cache, _, _ = build(write_images(tmp_path / "images", 4), tmp_path / "cache")
    dataset = cache.dataset(flip_probability=0.0)
    (cache.folder / "descriptors.npy").write_bytes(npy_bytes(np.zeros((4, 6), np.float64)))
    with pytest.raises(GeoxaiError, match="descriptors.npy holds float64, not float32"):
        dataset[0]


def test_values_of_several_shapes_relax_the_shape_check_only(tmp_path):
    """Label maps of images of different sizes share a namespace; their rank is still checked."""
    namespace = ArtifactStore(tmp_path).namespace("maps", "test", {})
    namespace.put_many({"a": np.zeros((4, 4), np.uint8)})
    namespace.put_many({"b": np.ones((2, 6), np.uint8), "c": np.ones((3, 3), np.uint8)})
    fresh = ArtifactStore(tmp_path).namespace("maps", "test", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fresh.get("b").shape == (2, 6) and fresh.get("a").shape == (4, 4) and len(fresh) == 3


def test_a_damaged_interrupted_build_is_said_and_started_over(tmp_path, capsys):
    from test_latent_cache import Counting, build, fake_moments, write_images

    paths = write_images(tmp_path / "images", 5)
    with pytest.raises(RuntimeError, match="killed"):
        build(paths, tmp_path / "cache", encode_moments=Counting(fake_moments, fail_on_call=3))
    [partial] = list((tmp_path / "cache").glob(".*.partial"))
    moments = partial / "moments.npy"
    moments.write_bytes(truncated(moments))
    capsys.readouterr()
    cache, encode, _ = build(paths, tmp_path / "cache")
    said = [line for line in capsys.readouterr().out.splitlines() if "is damaged" in line]
    assert len(said) == 1 and str(partial) in said[0] and "starting it over" in said[0]
    assert encode.images == 2 * 5  # every image again, not only those after the interruption
    fresh, _, _ = build(paths, tmp_path / "fresh")
    np.testing.assert_array_equal(np.array(cache.moments), np.array(fresh.moments))


def test_a_damaged_chunk_that_cannot_be_moved_is_said_once_and_never_read(images, tmp_path, monkeypatch):
    import geoxai.files
    from geoxai.errors import OutputError

    store = ArtifactStore(tmp_path / "store")
    first = lab(store, images)
    [chunk] = list((tmp_path / "store" / "lab").glob("*/chunks/*.npz"))
    chunk.write_bytes(truncated(chunk))

    def read_only(path):
        raise OutputError(f"{path}: cannot write: Read-only file system")

    monkeypatch.setattr(geoxai.files, "set_aside", read_only)
    fresh = ArtifactStore(tmp_path / "store")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = lab(fresh, images)
        namespace = fresh.namespace(LabArtifact.kind, "cielab", LabArtifact.settings)
        namespace.missing(first.keys)  # looks again: the damaged chunk is not read twice
    notes = [str(w.message) for w in caught if "is damaged" in str(w.message)]
    assert len(notes) == 1 and "left in place (the store is read-only)" in notes[0]
    assert chunk.exists() and again.computed == len(images)
    for key in first.keys:
        np.testing.assert_array_equal(again.values[key], first.values[key])
