"""The artifact store's contract: a namespace is named by everything that changes its values, values
read back are the values written (across instances and processes), and ``compute_for_images``
computes each distinct missing image once and returns a value for every readable one.
(Damaged chunks and their healing are in test_cache_healing.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoxai.data.images import ImageDataset, collate_images
from geoxai.errors import GeoxaiError
from geoxai.store import ArtifactStore, compute_for_images, namespace_id


def chunks(namespace) -> list[Path]:
    return sorted((namespace.folder / "chunks").glob("*.npz"))


def test_a_namespace_is_named_by_kind_backend_and_settings(tmp_path):
    store = ArtifactStore(tmp_path)
    one = store.namespace("lab", "skimage", {"a": 1, "b": [2, 3]})
    again = store.namespace("lab", "skimage", {"b": [2, 3], "a": 1})  # the order of settings does not count
    assert one.folder == again.folder == tmp_path / "lab" / namespace_id("lab", "skimage", {"a": 1, "b": [2, 3]})
    others = {store.namespace("sky", "skimage", {"a": 1, "b": [2, 3]}).folder,
              store.namespace("lab", "other", {"a": 1, "b": [2, 3]}).folder,
              store.namespace("lab", "skimage", {"a": 2, "b": [2, 3]}).folder,
              store.namespace("lab", "skimage").folder}
    assert len(others) == 4 and one.folder not in others
    meta = json.loads((one.folder / "meta.json").read_text())
    assert meta == {"format": 1, "kind": "lab", "backend": "skimage", "settings": {"a": 1, "b": [2, 3]}}


def test_values_read_back_by_key_in_any_order(tmp_path):
    namespace = ArtifactStore(tmp_path).namespace("descriptors", "tiny")
    values = {f"k{i}": np.arange(4, dtype=np.float32) + i for i in range(3)}
    assert namespace.missing(["k1", "k0", "k1", "k9"]) == ["k1", "k0", "k9"]  # once each, first-seen order
    namespace.put_many({})  # nothing to store: no chunk
    assert chunks(namespace) == []
    namespace.put_many(values)
    assert len(chunks(namespace)) == 1 and len(namespace) == 3
    assert "k1" in namespace and "k9" not in namespace
    np.testing.assert_array_equal(namespace.get("k2"), values["k2"])
    got = namespace.get_many(["k2", "k0", "k2"])
    assert [g.tolist() for g in got] == [values[k].tolist() for k in ("k2", "k0", "k2")]
    assert namespace.missing(["k1", "k9", "k0", "k8"]) == ["k9", "k8"]
    with pytest.raises(KeyError, match="k9"):
        namespace.get_many(["k0", "k9"])


def test_values_of_several_shapes_read_back_each_with_its_shape(tmp_path):
    namespace = ArtifactStore(tmp_path).namespace("labels", "tiny")
    namespace.put_many({"small": np.ones((2, 3), np.uint8), "large": np.zeros((4, 5), np.uint8)})
    assert namespace.get("small").shape == (2, 3) and namespace.get("large").shape == (4, 5)
    assert namespace.get("small").sum() == 6


def test_values_that_are_not_numbers_of_one_dtype_are_refused(tmp_path):
    namespace = ArtifactStore(tmp_path).namespace("descriptors", "tiny")
    with pytest.raises(GeoxaiError, match="one dtype"):
        namespace.put_many({"a": np.zeros(2, np.float32), "b": np.zeros(2, np.float64)})
    with pytest.raises(GeoxaiError, match="one dtype"):
        namespace.put_many({"a": np.array(["text"])})
    assert chunks(namespace) == [] and len(namespace) == 0


def test_values_persist_across_store_instances(tmp_path):
    settings = {"image_size": 32}
    ArtifactStore(tmp_path).namespace("descriptors", "tiny", settings).put_many({"a": np.array([1.5, 2.5])})
    reopened = ArtifactStore(tmp_path).namespace("descriptors", "tiny", settings)
    assert reopened.get("a").tolist() == [1.5, 2.5]
    assert ArtifactStore(tmp_path).namespace("descriptors", "tiny", {"image_size": 64}).missing(["a"]) == ["a"]


def test_two_writers_of_one_namespace_see_each_others_values(tmp_path):
    """Several processes (one per GPU) fill one namespace without locks: each writes its own chunks and
    reads those of the others as they appear."""
    first = ArtifactStore(tmp_path).namespace("descriptors", "tiny")
    second = ArtifactStore(tmp_path).namespace("descriptors", "tiny")
    first.put_many({"a": np.array([1.0])})
    assert second.missing(["a", "b"]) == ["b"]  # written after `second` was opened
    second.put_many({"b": np.array([2.0])})
    first.put_many({"c": np.array([3.0])})
    assert len(chunks(first)) == 3
    for namespace in (first, second):
        assert [v.item() for v in namespace.get_many(["a", "b", "c"])] == [1.0, 2.0, 3.0]


@pytest.fixture
def images(tmp_path) -> list[Path]:
    """Three distinct images, a copy of the first under another name, and a file that is not an image."""
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i, value in enumerate((10, 120, 240)):
        paths.append(folder / f"image{i}.png")
        Image.new("RGB", (8, 6), (value, 0, 0)).save(paths[-1])
    paths.append(folder / "copy.png")
    shutil.copyfile(paths[0], paths[-1])
    paths.append(folder / "broken.png")
    paths[-1].write_bytes(b"not an image")
    return paths


class RedMean:
    """A model that records which images it saw: the mean red value of each image of a batch."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, batch) -> np.ndarray:
        self.seen += len(batch["index"])
        return batch["image"][:, 0].mean(dim=(1, 2)).numpy()[:, None] * 255


def red_means(namespace, paths, model, **kwargs):
    return compute_for_images(namespace, paths, model, ImageDataset, collate=collate_images, batch_size=2,
                              progress=False, **kwargs)


def test_compute_for_images_computes_each_missing_image_once(tmp_path, images):
    namespace = ArtifactStore(tmp_path / "store").namespace("red", "mean")
    model = RedMean()
    found = red_means(namespace, images, model)
    assert model.seen == found.computed == 3  # the copy shares the first image's digest
    assert len(found.keys) == 5 and found.keys[0] == found.keys[3] and len(set(found.keys)) == 4
    assert [round(float(found.values[k][0])) for k in found.keys[:4]] == [10, 120, 240, 10]
    assert found.keys[4] not in found.values
    assert [p.name for p, _ in found.skipped] == ["broken.png"] and found.skipped[0][1]  # with its reason
    stacked = found.stacked((1,))
    assert stacked.shape == (5, 1) and np.isnan(stacked[4]).all() and stacked[3, 0] == stacked[0, 0]

    again = red_means(namespace, images, model)  # everything readable is stored: nothing computed
    assert model.seen == 3 and again.computed == 0 and again.values.keys() == found.values.keys()

    new = images[0].parent / "new.png"
    Image.new("RGB", (8, 6), (60, 0, 0)).save(new)
    more = red_means(namespace, [*images, new], model)
    assert model.seen == 4 and more.computed == 1 and round(float(more.values[more.keys[-1]][0])) == 60


def test_shards_compute_disjoint_parts_that_together_cover_every_image(tmp_path, images):
    """Each process (one per GPU, started together) computes every world-th missing image and does not
    fail on the others, which the caller reads after synchronising."""
    readable = images[:3]
    models, parts = [RedMean(), RedMean()], []
    for rank in range(2):  # two processes that each see the store empty
        namespace = ArtifactStore(tmp_path / f"store{rank}").namespace("red", "mean")
        parts.append(red_means(namespace, readable, models[rank], shard=(rank, 2)))
    assert [m.seen for m in models] == [2, 1] == [p.computed for p in parts]
    keys = parts[0].keys
    assert set(parts[0].values) == {keys[0], keys[2]} and set(parts[1].values) == {keys[1]}
