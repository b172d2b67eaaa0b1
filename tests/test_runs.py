"""GenerationRun: create / resume, atomic images, a manifest rebuilt from plan + disk, stable ids and seeds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from geoxai.data.vpr import VPRName, format_name
from geoxai.errors import GeoxaiError
from geoxai.files import atomic_save_image
from geoxai.runs import MANIFEST_COLUMNS, GenerationRun, QueryItem, plan_queries, sample_seed

SETTINGS = dict(checkpoint="/models/ldm.ckpt", sampler="ddim", steps=20, guidance=1.0, seed=7, samples=2,
                embedder={"name": "cosplace", "backbone": "ResNet18", "dim": 64}, queries="/data/queries",
                batch_size=4, device="cpu")


def vpr_name(east: float, north: float) -> str:
    return format_name(VPRName(utm_east=east, utm_north=north, zone_number="17", zone_letter="T"))


@pytest.fixture
def queries(tmp_path) -> tuple[Path, list[Path]]:
    folder = Path(SETTINGS["queries"])  # the folder run.yaml records: query paths may point into it
    names = [vpr_name(584269.67, 4477041.35), vpr_name(584300.0, 4477000.5), "plain_photo.jpg"]
    paths = [folder / "sub" / names[0], folder / names[1], folder / names[2]]
    return folder, paths


def image(value: int) -> Image.Image:
    return Image.new("RGB", (8, 8), (value, 255 - value, 0))


def generate(run: GenerationRun, todo) -> None:
    run.save_images([(item, sample, seed, image(10 * sample)) for item, sample, seed in todo])


def test_plan_queries_gives_stable_ids_and_parses_utm(queries):
    folder, paths = queries
    items = plan_queries(list(reversed(paths)), folder)
    assert [i.query_id for i in items] == ["q000000", "q000001", "q000002"]
    assert [i.index for i in items] == [0, 1, 2]
    assert [i.query_path for i in items] == sorted(paths)  # sorted like list_images
    by_path = {i.query_path: i for i in items}
    assert (by_path[paths[0]].utm_east, by_path[paths[0]].utm_north) == (584269.67, 4477041.35)
    assert math.isnan(by_path[paths[2]].utm_east) and math.isnan(by_path[paths[2]].utm_north)
    first_two = plan_queries(sorted(paths)[:2], folder)  # a --limit keeps the ids of the first queries
    assert first_two == items[:2]
    relative = plan_queries([p.relative_to(folder) for p in paths], folder)
    assert relative == items


def test_sample_seeds_are_deterministic_and_distinct():
    seeds = {(q, s): sample_seed(7, q, s) for q in range(200) for s in range(8)}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= seed < 2**63 for seed in seeds.values())
    assert sample_seed(7, 3, 1) == seeds[(3, 1)]
    assert sample_seed(8, 3, 1) != seeds[(3, 1)]


def test_create_writes_settings_and_an_empty_manifest(tmp_path):
    run = GenerationRun.create(tmp_path / "run", {**SETTINGS, "checkpoint": Path("model.ckpt")})
    stored = yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())
    assert stored["steps"] == 20 and stored["embedder"]["dim"] == 64 and stored["created"]
    assert "geoxai_version" in stored
    assert Path(stored["checkpoint"]).is_absolute()  # paths are stored absolute
    assert (tmp_path / "run" / "manifest.csv").read_text().splitlines() == [",".join(MANIFEST_COLUMNS)]
    assert len(run) == 0 and list(run.manifest().columns) == list(MANIFEST_COLUMNS)
    reopened = GenerationRun.open(tmp_path / "run")
    assert reopened.settings["sampler"] == "ddim" and len(reopened) == 0


def test_manifest_rows_paths_and_utm(tmp_path, queries):
    folder, paths = queries
    run = GenerationRun.create(tmp_path / "run", SETTINGS)
    items = plan_queries(paths, folder)
    todo = run.pending(items, 2)
    assert len(todo) == 6
    generate(run, todo)
    assert run.image_path("q000001", 1) == tmp_path / "run" / "samples" / "q000001" / "1.png"
    assert run.image_path("q000001", 1).is_file()
    text = (tmp_path / "run" / "manifest.csv").read_text().splitlines()
    assert text[0] == "query_id,query_path,sample,seed,image_path,utm_east,utm_north"
    frame = GenerationRun.open(tmp_path / "run").manifest()
    assert list(frame.columns) == list(MANIFEST_COLUMNS) and len(frame) == 6
    assert list(zip(frame.query_id, frame["sample"], strict=True)) == [(f"q00000{q}", s)
                                                                     for q in range(3) for s in range(2)]
    assert frame.image_path[3] == "samples/q000001/1.png"
    assert frame.query_path[0] == sorted(paths)[0].as_posix()  # outside the run: absolute
    assert frame.seed.tolist() == [sample_seed(7, q, s) for q in range(3) for s in range(2)]
    plain = frame[frame.query_path.str.endswith("plain_photo.jpg")]
    assert plain.utm_east.isna().all() and plain.utm_north.isna().all()
    assert all(line.endswith(",,") for line in text if "plain_photo" in line)  # empty, not "nan"
    vpr = frame[frame.query_path.str.contains("@")]
    assert vpr.utm_east.notna().all()


def test_query_inside_the_run_is_stored_relative(tmp_path):
    run = GenerationRun.create(tmp_path / "run", SETTINGS)
    inside = tmp_path / "run" / "queries" / "a.jpg"
    items = plan_queries([inside], tmp_path / "run" / "queries")
    generate(run, run.pending(items, 1))
    frame = run.manifest()
    assert frame.query_path.tolist() == ["queries/a.jpg"]
    assert run.manifest(absolute=True).query_path[0] == str(inside.absolute())


def test_resume_generates_only_what_is_missing(tmp_path, queries):
    folder, paths = queries
    items = plan_queries(paths, folder)
    run = GenerationRun.create(tmp_path / "run", SETTINGS)
    todo = run.pending(items, 2)
    generate(run, todo[:3])
    created = run.settings["created"]
    resumed = GenerationRun.create(tmp_path / "run", {**SETTINGS, "batch_size": 32, "device": "cuda"})
    assert resumed.settings["created"] == created and resumed.settings["batch_size"] == 32
    rest = resumed.pending(items, 2)
    assert [(i.query_id, s, seed) for i, s, seed in rest] == [(i.query_id, s, seed) for i, s, seed in todo[3:]]
    generate(resumed, rest)
    assert resumed.pending(items, 2) == []
    frame = resumed.finalize(items, 2)
    assert len(frame) == 6 and not frame.duplicated(["query_id", "sample"]).any()


def test_crash_between_images_and_manifest_loses_nothing(tmp_path, queries, monkeypatch):
    folder, paths = queries
    items = plan_queries(paths, folder)
    run = GenerationRun.create(tmp_path / "run", SETTINGS)
    todo = run.pending(items, 2)
    generate(run, todo[:2])

    def crash(self, rows):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(GenerationRun, "_write_manifest", crash)
        with pytest.raises(KeyboardInterrupt):  # both images are written, the manifest is not
            run.save_images([(item, sample, 1234, image(0)) for item, sample, _ in todo[2:4]])
    assert len(pd.read_csv(tmp_path / "run" / "manifest.csv")) == 2
    resumed = GenerationRun.create(tmp_path / "run", SETTINGS)  # resuming reconciles with the disk
    assert len(resumed) == 4
    rest = resumed.pending(items, 2)
    assert [(i.query_id, s) for i, s, _ in rest] == [(i.query_id, s) for i, s, _ in todo[4:]]
    generate(resumed, rest)
    frame = resumed.finalize(items, 2)
    assert len(frame) == 6 and not frame.duplicated(["query_id", "sample"]).any()
    # the seed a generator used is read back from the image when the manifest missed it
    assert frame.seed.tolist() == [seed for _, _, seed in todo[:2]] + [1234, 1234] + [s for _, _, s in todo[4:]]
    on_disk = pd.read_csv(tmp_path / "run" / "manifest.csv")
    assert len(on_disk) == 6 and list(on_disk.columns) == list(MANIFEST_COLUMNS)


def test_finalize_recovers_images_the_manifest_missed(tmp_path, queries):
    folder, paths = queries
    items = plan_queries(paths, folder)
    run = GenerationRun.create(tmp_path / "run", SETTINGS)
    todo = run.pending(items, 1)
    for item, sample, _ in todo:  # images land, manifest never written (killed process)
        atomic_save_image(run.image_path(item.query_id, sample), image(0))
    assert len(run) == 0
    frame = run.finalize(items, 1)
    assert frame.query_id.tolist() == ["q000000", "q000001", "q000002"]
    assert frame.seed.tolist() == [seed for _, _, seed in todo]  # recomputed from the plan
    assert len(pd.read_csv(tmp_path / "run" / "manifest.csv")) == 3


def test_two_writers_share_one_manifest(tmp_path, queries):
    folder, paths = queries
    items = plan_queries(paths, folder)
    first = GenerationRun.create(tmp_path / "run", SETTINGS)
    second = GenerationRun.create(tmp_path / "run", SETTINGS)  # e.g. another GPU's process
    todo = first.pending(items, 1)
    generate(first, todo[:1])
    generate(second, todo[1:2])
    generate(first, todo[2:])
    assert GenerationRun.open(tmp_path / "run").manifest().query_id.tolist() == ["q000000", "q000001", "q000002"]


def test_deleted_image_is_dropped_and_generated_again(tmp_path, queries):
    folder, paths = queries
    items = plan_queries(paths, folder)
    run = GenerationRun.create(tmp_path / "run", SETTINGS)
    generate(run, run.pending(items, 1))
    run.image_path("q000001", 0).unlink()
    with pytest.warns(UserWarning, match="no image on disk"):
        reopened = GenerationRun.open(tmp_path / "run")
    assert sorted(reopened.manifest().query_id) == ["q000000", "q000002"]
    assert [(i.query_id, s) for i, s, _ in reopened.pending(items, 1)] == [("q000001", 0)]


def test_different_settings_are_an_error_naming_the_keys(tmp_path):
    GenerationRun.create(tmp_path / "run", SETTINGS)
    with pytest.raises(GeoxaiError) as error:
        GenerationRun.create(tmp_path / "run", {**SETTINGS, "steps": 50,
                                                "embedder": {**SETTINGS["embedder"], "dim": 128}})
    message = str(error.value)
    assert "steps" in message and "embedder.dim" in message and "--out" in message
    assert "sampler" not in message and "\n" not in message
    with pytest.raises(GeoxaiError, match="already holds"):
        GenerationRun.create(tmp_path / "run", SETTINGS, resume=False)


def test_folders_that_are_not_runs(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(GeoxaiError, match="not empty and is not a GenerationRun"):
        GenerationRun.create(tmp_path / "busy", SETTINGS)
    with pytest.raises(GeoxaiError, match="not a GenerationRun"):
        GenerationRun.open(tmp_path / "busy")
    (tmp_path / "empty").mkdir()
    assert len(GenerationRun.create(tmp_path / "empty", SETTINGS)) == 0


def test_changed_query_folder_is_an_error(tmp_path, queries):
    folder, paths = queries
    run = GenerationRun.create(tmp_path / "run", SETTINGS)
    generate(run, run.pending(plan_queries(paths, folder), 1))
    shifted = plan_queries([folder / "aaa_new.jpg", *paths], folder)  # a new first query shifts the ids
    with pytest.raises(GeoxaiError, match="query folder changed"):
        GenerationRun.open(tmp_path / "run").pending(shifted, 1)


def test_a_run_written_by_another_generator(tmp_path):
    root = tmp_path / "theirs"
    (root / "samples" / "a").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(root / "samples" / "a" / "0.png")
    Image.new("RGB", (4, 4)).save(root / "samples" / "a" / "1.png")
    (root / "run.yaml").write_text("generator: other-model\nqueries: /data/q\n")
    (root / "manifest.csv").write_text(
        "query_id,query_path,sample,seed,image_path,utm_east,utm_north\n"
        "a,/data/q/a.jpg,0,,samples/a/0.png,10.5,20.0\n"
        "a,/data/q/a.jpg,1,9223372036854775801,samples/a/1.png,10.5,20.0\n")
    run = GenerationRun.open(root)
    frame = run.manifest()
    assert frame.iloc[0].query_id == "a" and frame.iloc[0].utm_east == 10.5 and pd.isna(frame.iloc[0].seed)
    assert frame.iloc[1].seed == 9223372036854775801  # exact, not rounded through float
    assert run.resolve(frame.iloc[0].image_path) == root / "samples" / "a" / "0.png"
    (root / "manifest.csv").write_text(
        "query_id,query_path,sample,seed,image_path,utm_east,utm_north\n"
        "a,/data/q/a.jpg,2,3,samples/a/2.png,,\n")
    with pytest.raises(GeoxaiError, match="do not exist"):
        GenerationRun.open(root)
    (root / "manifest.csv").write_text("query_id,sample\na,0\n")
    with pytest.raises(GeoxaiError, match="missing column"):
        GenerationRun.open(root)


def test_format_summarises_the_run(tmp_path, queries):
    folder, paths = queries
    items = plan_queries(paths, folder)
    run = GenerationRun.create(tmp_path / "run", SETTINGS)
    generate(run, run.pending(items, 2)[:4])
    from geoxai.cli import format_run

    text = format_run(run)
    assert "4 images of 2 queries" in text and "2 planned images still missing" in text
    assert str(tmp_path / "run") in text and "ddim" in text and "\n" not in text
    assert isinstance(items[0], QueryItem)


def test_pairs_of_a_run_for_every_pairing(tmp_path, queries):
    from geoxai.evaluation.context import Database
    from geoxai.evaluation.pairs import build_pairs

    folder, paths = queries
    items = plan_queries(paths, folder)
    run = GenerationRun.create(tmp_path / "run", SETTINGS)
    generate(run, run.pending(items, 2))
    manifest = GenerationRun.open(tmp_path / "run").manifest(absolute=True)
    generated = build_pairs(manifest)["generated"]
    assert len(generated) == 2 * len(items)
    assert {(p.query_id, p.original) for p in generated} == {(i.query_id, i.query_path) for i in items}
    shuffled = build_pairs(manifest, seed=1)["shuffled"]
    assert all(p.partner != p.query_id for p in shuffled)  # never the query's own generation
    database = Database([items[0].query_path], np.array([[items[0].utm_east, items[0].utm_north]]))
    reference = build_pairs(manifest, database=database)["reference"]
    assert [p.query_id for p in reference] == [items[0].query_id] and reference[0].sample == -1
