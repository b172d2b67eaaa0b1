"""Artifact kinds: a new kind is one class and one registering line, and a plugin that needs it runs
through ``evaluate`` like the shipped ones (checked inputs, computed once per image content, stored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geoxai.errors import GeoxaiError
from geoxai.evaluation import Metric, Plugin
from geoxai.evaluation.artifacts import KINDS, ArtifactKind, artifact_kind, collate_list
from geoxai.evaluation.runner import evaluate
from geoxai.runs import GenerationRun
from geoxai.store import ArtifactStore, compute_for_images

THIS = Path(__file__).resolve()


class SizePlugin(Plugin):
    """Reads the ``size`` artifact of the test's own kind: the other image's width and height."""

    name = "size"
    description = "the other image's size"
    needs = ("size",)
    metrics = {"width": Metric("width of the other image in pixels"),
               "height": Metric("height of the other image in pixels")}

    def score(self, pairs, ctx):
        records = []
        for pair in pairs:
            width, height = ctx.artifact("size", pair.other)
            records.append(pair.record(width=float(width), height=float(height)))
        return records


def register_size_kind(calls: list[int]) -> type[ArtifactKind]:
    """The kind ``size``, registered by its decorator line; ``calls`` counts the images computed."""

    @artifact_kind
    class SizeKind(ArtifactKind):
        name = "size"

        def compute(self, paths, store, shard=(0, 1), progress=True, desc=""):
            from geoxai.data.images import ImageDataset

            def sizes(batch):
                calls.append(len(batch["image"]))
                return np.array([[image.shape[2], image.shape[1]] for image in batch["image"]], dtype=np.float32)

            namespace = store.namespace(self.name, "pixels", {"version": 1})
            return compute_for_images(namespace, paths, sizes, dataset=lambda todo: ImageDataset(todo),
                                      collate=collate_list, batch_size=8, progress=progress, desc=desc, shard=shard)

    return SizeKind


@pytest.fixture
def kinds():
    """The registry as it was before the test (a kind registered in a test is forgotten after it)."""
    saved = dict(KINDS)
    yield KINDS
    KINDS.clear()
    KINDS.update(saved)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from geoxai.synthcity.reference_runs import write_reference_run
    from geoxai.synthcity.world import write_world

    world = tmp_path_factory.mktemp("world")
    write_world(world, places=4, visits=2, size=32, progress=False)
    return write_reference_run(world, "oracle", 1, tmp_path_factory.mktemp("run") / "oracle", progress=False).root


def test_a_new_kind_is_one_class_and_one_line_and_a_plugin_needing_it_runs(kinds, run, tmp_path):
    calls: list[int] = []
    register_size_kind(calls)
    store = ArtifactStore(tmp_path / "store")
    result = evaluate(run, f"{THIS}:SizePlugin", tmp_path / "eval", progress=False, store=store)
    assert [p.status for p in result.plugins] == ["ok"]
    frame = pd.read_parquet(result.out / "records.parquet")
    images = GenerationRun.open(run).manifest(absolute=True)["image_path"]
    assert set(frame["metric"]) == {"width", "height"} and len(frame) > 0
    assert (frame["value"] == 32).all() and {Image.open(p).size for p in images} == {(32, 32)}
    assert result.computed["size"] == sum(calls) > 0  # once per distinct image content

    again = evaluate(run, f"{THIS}:SizePlugin", tmp_path / "again", progress=False, store=store)
    assert again.computed["size"] == 0 and sum(calls) == result.computed["size"]  # from the store


def test_an_unregistered_need_is_refused_naming_the_known_kinds(kinds, run, tmp_path):
    with pytest.raises(GeoxaiError, match=r"unknown needs \['size'\] \(known: descriptor, database, image, lab, "
                                          r"segmentation\)"):
        evaluate(run, f"{THIS}:SizePlugin", tmp_path / "eval", progress=False, store=ArtifactStore(tmp_path / "s"))


def test_a_kind_refuses_missing_inputs_in_one_line_before_computing(kinds, run, tmp_path):
    calls: list[int] = []
    kind = register_size_kind(calls)

    def check(settings, users):
        if settings.database is None:
            raise GeoxaiError(f"plugin {users[0].name} needs --database DIR for its sizes")

    kind.check = classmethod(lambda cls, settings, users: check(settings, users))
    with pytest.raises(GeoxaiError, match="^plugin size needs --database DIR for its sizes$"):
        evaluate(run, f"{THIS}:SizePlugin", tmp_path / "eval", progress=False, store=ArtifactStore(tmp_path / "s"))
    assert calls == [] and not (tmp_path / "eval" / "evaluation.json").exists()
