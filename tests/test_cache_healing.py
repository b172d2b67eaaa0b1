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


def truncated(path: Path) -> bytes:
    return path.read_bytes()[: path.stat().st_size // 2]


DAMAGE = {
    "truncated": truncated,
    "not an npz": lambda path: b"this is not a numpy file\n" * 20,
    "an npy": lambda path: (lambda b: (np.save(b, np.zeros(3)), b.getvalue())[1])(io.BytesIO()),
    "object array": lambda path: npz_bytes(keys=np.load(path)["keys"],
                                           values=np.array([{"a": 1}] * len(np.load(path)["keys"]), dtype=object)),
    "wrong dtype": lambda path: npz_bytes(keys=np.load(path)["keys"], values=np.load(path)["values"].astype(np.float16)),
    "wrong shape": lambda path: npz_bytes(keys=np.load(path)["keys"], values=np.load(path)["values"][:, :2, None]),
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
