"""Semantic plugins: region metrics on hand-made label maps, and validity on SynthCity reference runs.

The unit tests draw label maps whose IoU, presence, instances, window counts and colours are known.
The validity tests evaluate reference runs of a tiny world with the ground-truth segmenter: identity is
perfect, another place scores like the shuffled chance level, and each single-factor intervention
moves its own metrics while every other region stays within 5% of unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from geoxai_plugins.semantic import BuildingsPlugin, WindowsPlugin
from PIL import Image
from skimage.color import deltaE_ciede2000, rgb2lab

import geoxai.statistics as S
from geoxai import labels as L
from geoxai.errors import GeoxaiError
from geoxai.evaluation import Pair, Skip
from geoxai.evaluation import region_plugin as R
from geoxai.evaluation.context import EvaluationContext
from geoxai.evaluation.runner import evaluate
from geoxai.segmentation import regions as G
from geoxai.segmentation.groundtruth import GroundTruthSegmenter
from geoxai.synthcity.reference_runs import write_reference_run
from geoxai.synthcity.world import write_world

PLUGINS = "sky,buildings,vehicles,signs,windows,colours,classes"
PAIR = Pair("q", 0, "generated", Path("original.png"), Path("image.png"))


def maps(original: np.ndarray, other: np.ndarray, original_rgb: np.ndarray | None = None,
         other_rgb: np.ndarray | None = None) -> R.PairMaps:
    return R.PairMaps(PAIR, np.asarray(original, np.uint8), np.asarray(other, np.uint8), original_rgb, other_rgb)


def box(shape: tuple[int, int], label: int, *boxes: tuple[int, int, int, int], fill: int = L.OTHER) -> np.ndarray:
    """A label map of ``fill`` with ``label`` in each (top, left, height, width) box."""
    out = np.full(shape, fill, dtype=np.uint8)
    for top, left, h, w in boxes:
        out[top:top + h, left:left + w] = label
    return out


# ---------------------------------------------------------------------------------- unit: geometry
def test_alignment_follows_the_images_geometry():
    assert G.crop_box((48, 64), (48, 64)) == (0, 0, 48, 64)
    assert G.crop_box((12, 12), (6, 12)) == (3, 0, 6, 12)  # original taller: its height is cropped
    assert G.crop_box((12, 12), (12, 6)) == (0, 3, 12, 6)
    labels = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert G.resize_labels(labels, (2, 2)).tolist() == [[5, 7], [13, 15]]  # nearest: ids stay ids
    assert set(np.unique(G.resize_labels(labels, (7, 9)))) <= set(range(16))
    assert G.resize_labels(labels.astype(np.int64) * 1000, (8, 8)).max() == 15000  # instance ids beyond uint8
    original, other = G.align_labels(np.zeros((12, 12), np.uint8), np.ones((3, 6), np.uint8))
    assert original.shape == other.shape == (6, 12) and other.all()


# ---------------------------------------------------------------------------------- unit: regions
def test_region_values_known_iou_kept_added():
    a = box((100, 100), L.SKY, (0, 0, 10, 20))  # 200 px
    b = box((100, 100), L.SKY, (0, 10, 10, 20))  # 200 px, 100 shared
    values = R.region_values(a, b, "sky", (L.SKY,))
    assert values["sky_iou"] == pytest.approx(100 / 300)
    assert values["sky_area_original"] == values["sky_area_image"] == pytest.approx(0.02)
    assert values["sky_kept"] == 1.0 and isinstance(values["sky_added"], Skip)
    gone = R.region_values(a, box((100, 100), L.SKY), "sky", (L.SKY,))
    assert gone["sky_iou"] == 0.0 and gone["sky_kept"] == 0.0
    added = R.region_values(box((100, 100), L.SKY), b, "sky", (L.SKY,))
    assert added["sky_added"] == 1.0 and isinstance(added["sky_kept"], Skip)
    # absent from both: IoU undefined and skipped; a stray pixel (below 0.1 %) is not a presence
    stray = box((100, 100), L.SKY, (5, 5, 3, 3))  # 9 px < 10 px
    both = R.region_values(stray, box((100, 100), L.SKY), "sky", (L.SKY,))
    assert isinstance(both["sky_iou"], Skip) and "absent from both" in both["sky_iou"].reason
    assert both["sky_area_original"] == pytest.approx(0.0009)
    # a region made of several ids (building with its windows)
    facade = box((100, 100), L.BUILDING, (0, 0, 50, 100))
    facade[10:20, 10:20] = L.WINDOW
    assert R.region_values(facade, box((100, 100), L.BUILDING, (0, 0, 50, 100)), "building",
                           (L.BUILDING, L.WINDOW))["building_iou"] == 1.0


def test_instances_and_removal_rate():
    a = box((100, 100), L.VEHICLE, (10, 10, 5, 5), (10, 40, 5, 5), (60, 60, 10, 10), (90, 90, 3, 3))  # last: 9 px
    labels, count = G.instances(a == L.VEHICLE, G.min_pixels(a.shape))
    assert count == 3 and labels.max() == 3
    b = box((100, 100), L.VEHICLE, (12, 12, 5, 5), (30, 80, 5, 5))  # overlaps the first, one new elsewhere
    assert G.removal_rate(a == L.VEHICLE, b == L.VEHICLE, 10) == pytest.approx(2 / 3)
    assert G.removal_rate(a == L.VEHICLE, a == L.VEHICLE, 10) == 0.0
    assert G.removal_rate(b == L.PERSON, b == L.VEHICLE, 10) is None  # nothing to remove
    values = R.removal_values(maps(a, b), "vehicle", (L.VEHICLE,))
    assert values["vehicle_removed"] == pytest.approx(2 / 3)
    assert isinstance(R.removal_values(maps(b * 0, b), "vehicle", (L.VEHICLE,))["vehicle_removed"], Skip)


def window_grid(rows: int, cols: int, shape: tuple[int, int] = (100, 100)) -> np.ndarray:
    """Windows of 4 x 4 px on a facade, one pixel apart."""
    out = np.full(shape, L.BUILDING, dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            out[10 + 5 * r:14 + 5 * r, 10 + 5 * c:14 + 5 * c] = L.WINDOW
    return out


def test_window_counts_of_hand_drawn_masks():
    grid = window_grid(3, 4)
    assert G.count_instances(grid == L.WINDOW, 10) == 12
    merged = grid.copy()
    merged[10:14, 14] = L.WINDOW  # the first two windows touch: one component
    assert G.count_instances(merged == L.WINDOW, 10) == 11
    split = np.zeros(grid.shape, np.int64)
    for k, (r, c) in enumerate(((r, c) for r in range(3) for c in range(4)), start=1):
        split[10 + 5 * r:14 + 5 * r, 10 + 5 * c:14 + 5 * c] = k
    assert G.count_instances(merged == L.WINDOW, 10, split) == 12  # instances split the merged blob
    diagonal = box((100, 100), L.WINDOW, (10, 10, 4, 4), (14, 14, 4, 4))  # corner to corner
    assert G.count_instances(diagonal == L.WINDOW, 10) == 2  # 4-connected: two windows
    assert G.count_instances(box((100, 100), L.WINDOW, (0, 0, 3, 3)) == L.WINDOW, 10) == 0  # below the minimum
    values = R.count_values(maps(grid, window_grid(3, 3)), "window", (L.WINDOW,))
    assert (values["windows_original"], values["windows_image"], values["window_count_error"]) == (12, 9, 3)
    assert values["window_count_error_rel"] == pytest.approx(0.25) and values["window_count_exact"] == 0.0
    none = R.count_values(maps(window_grid(0, 0), grid), "window", (L.WINDOW,))
    assert isinstance(none["window_count_error_rel"], Skip) and none["window_count_error"] == 12


def test_position_kept_tolerates_a_small_shift():
    a = box((128, 128), L.SIGN, (20, 20, 6, 6))
    shifted = box((128, 128), L.SIGN, (21, 21, 6, 6))
    assert G.dilation_radius((128, 128)) == 2 and G.dilation_radius((48, 48)) == 1
    assert G.dilation_radius((512, 512)) == 8
    plain = G.iou(a == L.SIGN, shifted == L.SIGN)
    kept = R.position_values(maps(a, shifted), "sign", (L.SIGN,))["sign_position_kept"]
    assert kept == pytest.approx(81 / 119) and kept > plain  # two 10 x 10 squares one pixel apart diagonally
    far = R.position_values(maps(a, box((128, 128), L.SIGN, (90, 90, 6, 6))), "sign", (L.SIGN,))
    assert far["sign_position_kept"] == 0.0
    assert isinstance(R.position_values(maps(a * 0, a * 0), "sign", (L.SIGN,))["sign_position_kept"], Skip)


def uniform(shape: tuple[int, int], colour: tuple[float, float, float]) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, np.float32), (*shape, 3)).copy()


def delta_e(first: tuple[float, float, float], second: tuple[float, float, float]) -> float:
    lab = rgb2lab(np.array([[first, second]], dtype=np.float64))
    return float(deltaE_ciede2000(lab[0, 0], lab[0, 1]))


def test_colour_differences_of_known_colours():
    shape = (40, 40)
    sky = box(shape, L.SKY, (0, 0, 20, 40), fill=L.BUILDING)
    blue, grey = (0.3, 0.5, 0.9), (0.6, 0.6, 0.6)
    first, second = uniform(shape, blue), uniform(shape, grey)
    values = R.appearance_values(maps(sky, sky, first, second), "sky", (L.SKY,))
    assert values["sky_colour_change"] == pytest.approx(delta_e(blue, grey), abs=1e-3)
    assert values["sky_texture_change"] == pytest.approx(0.0, abs=1e-3)
    clouds = second.copy()
    clouds[:10] = 1.0  # half of the sky white: L* spread (100 - L*grey) / 2
    lightness = rgb2lab(np.array([[grey]], dtype=np.float64))[0, 0, 0]
    values = R.appearance_values(maps(sky, sky, second, clouds), "sky", (L.SKY,))
    assert values["sky_texture_change"] == pytest.approx((100 - lightness) / 2, abs=1e-3)
    no_sky = R.appearance_values(maps(sky, box(shape, L.OTHER, fill=L.BUILDING), first, second), "sky", (L.SKY,))
    assert no_sky["sky_colour_change"].reason == "no sky in the image"

    # facades: mean colour and the dominant one (70 % orange, 20 % red, 10 % white)
    orange, red, white = (0.9, 0.5, 0.1), (0.8, 0.1, 0.1), (1.0, 1.0, 1.0)
    facade = box(shape, L.OTHER, fill=L.BUILDING)
    painted = uniform(shape, orange)
    painted[28:36] = red
    painted[36:] = white
    repainted = uniform(shape, red)
    values = R.facade_values(maps(facade, facade, painted, repainted), (L.BUILDING,), seed=0)
    assert values["facade_dominant_change"] == pytest.approx(delta_e(orange, red), abs=1e-3)
    lab = rgb2lab(painted.astype(np.float64)).reshape(-1, 3).mean(axis=0)
    expected = float(deltaE_ciede2000(lab, rgb2lab(np.array([[red]], dtype=np.float64))[0, 0]))
    assert values["facade_colour_change"] == pytest.approx(expected, abs=1e-3)
    same = R.facade_values(maps(facade, facade, painted, painted.copy()), (L.BUILDING,), seed=0)
    assert same == {"facade_colour_change": 0.0, "facade_dominant_change": 0.0}

    # signs: the original's signs that an image sign overlaps, by mean colour
    signs = box(shape, L.SIGN, (2, 2, 6, 6), (20, 20, 6, 6))
    moved = box(shape, L.SIGN, (3, 3, 6, 6))  # the first kept (shifted), the second gone
    before, after = uniform(shape, red), uniform(shape, orange)
    change = R.matched_appearance_values(maps(signs, moved, before, after), "sign", (L.SIGN,))
    assert change["sign_appearance_change"] == pytest.approx(delta_e(red, orange), abs=1e-3)
    lost = R.matched_appearance_values(maps(signs, box(shape, L.SIGN, (30, 2, 6, 6)), before, after), "sign",
                                       (L.SIGN,))
    assert isinstance(lost["sign_appearance_change"], Skip)


def test_class_flips():
    original = box((50, 50), L.SKY, (0, 0, 10, 50), fill=L.BUILDING)
    original[40:] = L.ROAD
    image = box((50, 50), L.OTHER, fill=L.BUILDING)
    image[40:] = L.ROAD
    image[30:40, 0:10] = L.VEHICLE
    image[0, 0] = L.SIGN  # a stray pixel is not a class
    values = R.class_flip_values(maps(original, image), [c for c in L.NAMES if c != L.OTHER])
    assert values == {"classes_changed": 2.0, "classes_removed": 1.0, "classes_added": 1.0}


def test_rank_correlation_row():
    def records(pairing: str, counts: list[tuple[float, float]]) -> pd.DataFrame:
        rows = []
        for i, (x, y) in enumerate(counts):
            for metric, value in (("windows_original", x), ("windows_image", y)):
                rows.append({"query_id": f"q{i}", "sample": 0, "plugin": "windows", "metric": metric, "value": value,
                             "pairing": pairing, "skip_reason": ""})
        return pd.DataFrame(rows)

    same = S.rank_correlation_row(records("generated", [(1, 1), (3, 3), (5, 5), (8, 8)]), "windows_original",
                                  "windows_image", "generated", 0, "window_count_spearman")
    assert same["mean"] == pytest.approx(1.0) and same["n_queries"] == 4
    reversed_ = S.rank_correlation_row(records("shuffled", [(1, 8), (3, 5), (5, 3), (8, 1)]), "windows_original",
                                       "windows_image", "shuffled", 0, "window_count_spearman")
    assert reversed_["mean"] == pytest.approx(-1.0)
    few = records("reference", [(1, 1), (2, 2)])
    assert S.rank_correlation_row(few, "windows_original", "windows_image", "reference", 0, "x") is None
    assert np.isnan(S.rank_correlation_row(few.assign(pairing="generated"), "windows_original", "windows_image",
                                           "generated", 0, "x")["mean"])


# ---------------------------------------------------------------------------------- unit: through a context
def context(tmp_path: Path, maps_by_name: dict[str, np.ndarray], segmenter=None) -> tuple[EvaluationContext, dict]:
    """A context whose segmentation artifact holds ``maps_by_name`` (images written as grey PNGs)."""
    paths, digests, values = {}, {}, {}
    for name, labels in maps_by_name.items():
        path = tmp_path / "images" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*labels.shape, 3), 128, np.uint8)).save(path)
        paths[name], digests[path], values[name] = path, name, labels
    ctx = EvaluationContext(seed=0, artifacts={"segmentation": values}, digests=digests, segmenter=segmenter)
    return ctx, paths


def test_ceiling_against_ground_truth_and_size_alignment(tmp_path):
    truth = box((20, 20), L.BUILDING, (0, 0, 10, 20), fill=L.ROAD)
    predicted = truth.copy()
    predicted[5:10] = L.ROAD  # the segmenter finds half of the building: building IoU 0.5 on the original
    other = box((10, 20), L.BUILDING, (0, 0, 5, 20), fill=L.ROAD)  # another aspect ratio
    ctx, paths = context(tmp_path, {"original": predicted, "without_truth": predicted, "image": other})
    (tmp_path / "labels" / "images").mkdir(parents=True)
    Image.fromarray(truth).save(tmp_path / "labels" / "images" / "original.png")
    pairs = [Pair("q0", 0, "generated", paths["original"], paths["image"]),
             Pair("q1", 0, "generated", paths["without_truth"], paths["image"])]
    records = {(r["query_id"], r["sample"]): r for r in BuildingsPlugin().score(pairs, ctx)}
    # ceiling on the original: building rows 0..4 found of 0..9 (IoU 0.5), road rows 5..19 for 10..19 (2/3)
    assert records[("q0", -1)]["building_iou_ceiling"] == pytest.approx(0.5)
    assert records[("q0", -1)]["road_iou_ceiling"] == pytest.approx(2 / 3)
    assert isinstance(records[("q1", -1)]["building_iou_ceiling"], Skip)
    # the original's map is cropped to rows 5..14 (the image's 1:2 aspect ratio), where the segmenter
    # sees road only; the image (10 x 20) has building in rows 0..4 and road in rows 5..9
    pair = records[("q0", 0)]
    assert pair["building_iou"] == 0.0 and pair["building_added"] == 1.0 and isinstance(pair["building_kept"], Skip)
    assert pair["road_iou"] == pytest.approx(0.5)
    assert pair["road_iou_vs_ceiling"] == pytest.approx(0.5 / (2 / 3))
    assert any("nearest neighbour" in notice for notice in ctx.notices)
    assert any("ceiling" in notice and "1 of 2 originals" in notice for notice in ctx.notices)


def test_windows_split_by_the_segmenters_instances(tmp_path):
    grid = window_grid(2, 2)
    merged = grid.copy()
    merged[10:14, 14] = L.WINDOW  # two windows merged in the label map
    ids = np.zeros(grid.shape, np.int64)
    for k, (r, c) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1)), start=1):
        ids[10 + 5 * r:14 + 5 * r, 10 + 5 * c:14 + 5 * c] = k

    class Instances(GroundTruthSegmenter):  # the sam backend's signature: ids [B, H, W] from images and maps
        def instances(self, images, class_id, semantic_maps=None):
            assert images.shape == (1, 3, 100, 100) and class_id == L.WINDOW
            assert semantic_maps.shape == (1, 100, 100) and int(semantic_maps.max()) == L.WINDOW
            return torch.from_numpy(ids)[None]

    ctx, paths = context(tmp_path, {"original": grid, "image": merged}, segmenter=Instances())
    pair = Pair("q0", 0, "generated", paths["original"], paths["image"])
    plain = R.count_values(R.load_pair(ctx, pair), "window", (L.WINDOW,))
    assert (plain["windows_original"], plain["windows_image"]) == (4, 3)
    record = next(r for r in WindowsPlugin().score([pair], ctx) if r["sample"] == 0)
    assert (record["windows_original"], record["windows_image"], record["window_count_error"]) == (4, 4, 0)


def test_an_instance_answer_of_another_form_names_the_backend(tmp_path):
    grid = window_grid(2, 2)
    stack = np.stack([grid == L.WINDOW])

    class Masks(GroundTruthSegmenter):  # a stack of masks per image instead of one id map
        name = "masks"

        def instances(self, images, class_id, semantic_maps=None):
            return torch.from_numpy(stack)[None]

    ctx, paths = context(tmp_path, {"original": grid, "image": grid}, segmenter=Masks())
    pair = Pair("q0", 0, "generated", paths["original"], paths["image"])
    with pytest.raises(GeoxaiError, match=r"segmenter 'masks': instances\(\) returned a torch.bool tensor "
                                          r"\[1, 1, 100, 100\]; it must return an integer tensor \[1, 100, 100\]"):
        WindowsPlugin().score([pair], ctx)
    ctx, paths = context(tmp_path / "plain", {"original": grid, "image": grid}, segmenter=GroundTruthSegmenter())
    pair = Pair("q0", 0, "generated", paths["original"], paths["image"])
    record = next(r for r in WindowsPlugin().score([pair], ctx) if r["sample"] == 0)  # no instances(): components
    assert record["windows_original"] == record["windows_image"] == 4


# ---------------------------------------------------------------------------------- validity on SynthCity
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("semantic") / "world"
    write_world(out, places=16, visits=3, size=48, progress=False)
    return out


@pytest.fixture(scope="module")
def evaluated(world, tmp_path_factory, one_thread):
    """(records, summary) of a reference run of one kind, evaluated once per module with ground truth."""
    root, done = tmp_path_factory.mktemp("semantic-runs"), {}

    def run(kind: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        if kind not in done:
            write_reference_run(world, kind, 2, root / kind, progress=False)
            result = evaluate(root / kind, PLUGINS, root / f"eval-{kind}", database=world,
                              segmenter_spec={"name": "groundtruth"}, progress=False)
            assert not result.failed, result.format()
            done[kind] = (pd.read_parquet(root / f"eval-{kind}" / "records.parquet"),
                          pd.read_csv(root / f"eval-{kind}" / "summary.csv"), root / f"eval-{kind}")
        return done[kind][:2]

    run.folder = lambda kind: done[kind][2]
    return run


def mean(summary: pd.DataFrame, metric: str, pairing: str = "generated") -> float:
    found = summary[(summary["metric"] == metric) & (summary["pairing"] == pairing)]
    assert len(found) == 1, f"no single summary row for {metric} / {pairing}"
    return float(found["mean"].iloc[0])


REGIONS = ("sky", "building", "road", "vehicle", "person", "sign", "pole", "window")


def test_identity_is_perfect(evaluated):
    records, summary = evaluated("identity")
    pairs = records[(records["pairing"] == "generated") & (records["sample"] >= 0)]
    value = pairs.groupby("metric")["value"]
    for name in REGIONS:
        assert (value.get_group(f"{name}_iou").dropna() == 1.0).all()
        assert (value.get_group(f"{name}_kept").dropna() == 1.0).all()
        assert (value.get_group(f"{name}_added").dropna() == 0.0).all()
    for metric in ("window_count_error", "classes_changed", "vehicle_removed", "person_removed"):
        assert (value.get_group(metric).dropna() == 0.0).all(), metric
    for metric in ("sky_colour_change", "sky_texture_change", "sign_appearance_change", "facade_colour_change",
                   "facade_dominant_change"):
        assert value.get_group(metric).dropna().abs().max() < 1e-6, metric
    assert (value.get_group("window_count_exact") == 1.0).all()
    assert (value.get_group("sign_position_kept").dropna() == 1.0).all()
    assert mean(summary, "window_count_spearman") == pytest.approx(1.0)
    # with ground truth as the segmenter, the ceiling is 1 and IoU vs ceiling is the IoU
    for name in REGIONS:
        assert mean(summary, f"{name}_iou_ceiling") == 1.0
        assert mean(summary, f"{name}_iou_vs_ceiling") == mean(summary, f"{name}_iou")
    # every plugin reports all three pairings; an undefined IoU is skipped with its reason, and said
    assert set(summary.loc[summary["metric"] == "building_iou", "pairing"]) == {"generated", "shuffled", "reference"}
    assert set(summary.loc[summary["metric"] == "classes_changed", "pairing"]) == {"generated", "shuffled",
                                                                                   "reference"}
    skipped = records[records["metric"].str.endswith("_iou") & (records["skip_reason"] != "")]
    assert skipped["skip_reason"].str.startswith("class absent from both images").all()
    results = json.loads((evaluated.folder("identity") / "results.json").read_text())
    if len(skipped):
        assert any("class absent from both images" in notice for notice in results["notices"])
    for plugin in PLUGINS.split(","):
        info = results["plugins"][plugin]
        assert info["needs"] == ["segmentation"]
        assert all(m["definition"] and "higher_is_better" in m for m in info["metrics"].values())


def test_window_counts_match_the_world(evaluated, world):
    records, _ = evaluated("identity")
    counted = records[(records["metric"] == "windows_original") & (records["pairing"] == "generated")]
    manifest = pd.read_csv(evaluated.folder("identity").parent / "identity" / "manifest.csv")
    metadata = pd.read_csv(world / "metadata.csv").set_index("path")
    truth = {row.query_id: metadata.loc[Path(row.query_path).relative_to(world).as_posix(), "window_count"]
             for row in manifest.itertuples()}
    assert len(counted) and all(value == truth[q]
                                for q, value in zip(counted["query_id"], counted["value"], strict=True))


OTHER_PLACE_METRICS = ("sky_iou", "building_iou", "road_iou", "window_iou", "window_count_error", "classes_changed",
                       "facade_colour_change", "vehicle_iou")


def test_other_place_scores_at_the_shuffled_chance_level(evaluated):
    _, summary = evaluated("other-place")
    _, oracle = evaluated("oracle")
    rows = summary.set_index(["metric", "pairing"])
    for metric in OTHER_PLACE_METRICS:
        generated, shuffled = rows.loc[(metric, "generated")], rows.loc[(metric, "shuffled")]
        assert generated["ci_low"] <= shuffled["ci_high"] and shuffled["ci_low"] <= generated["ci_high"], metric
    for metric in ("building_iou", "road_iou", "sky_iou"):  # the same place is well above chance
        assert mean(oracle, metric) > mean(summary, metric) + 0.05
        assert mean(oracle, metric) > mean(oracle, metric, "shuffled") + 0.05


# kind -> (metrics that must move away from identity, regions its own factor may change)
INTERVENTIONS = {
    "sky": ({"sky_colour_change": 5.0, "sky_texture_change": 0.5}, ()),
    "lighting": ({}, ()),
    "vehicles": ({"vehicle_removed": 0.3, "vehicle_iou": -0.3}, ("vehicle", "person", "road", "pole")),
    "pedestrians": ({"person_removed": 0.3, "person_iou": -0.3}, ("person",)),
    "signs": ({"sign_appearance_change": 5.0, "sign_iou": -0.2}, ("sign",)),
    "windows": ({"window_count_error": 0.5, "window_count_exact": -0.3, "window_iou": -0.3}, ("window",)),
    "colours": ({"facade_colour_change": 5.0, "facade_dominant_change": 5.0}, ()),
}


@pytest.mark.parametrize("kind", list(INTERVENTIONS))
def test_an_intervention_moves_only_its_own_metrics(evaluated, kind):
    _, identity = evaluated("identity")
    _, summary = evaluated(kind)
    moves, touched = INTERVENTIONS[kind]
    for metric, change in moves.items():
        shift = mean(summary, metric) - mean(identity, metric)
        assert (shift >= change) if change > 0 else (shift <= change), (metric, shift)
    for name in REGIONS:
        if name not in touched:  # every other region within 5% of unchanged
            assert mean(summary, f"{name}_iou") >= 0.95, (kind, name)
    if not touched:  # nothing but colours moved: every mask and count is exactly the original's
        for name in REGIONS:
            assert mean(summary, f"{name}_iou") == 1.0, (kind, name)
        assert mean(summary, "window_count_error") == 0.0 and mean(summary, "classes_changed") == 0.0
    if "window" not in touched:
        assert mean(summary, "window_count_error") <= 0.05 * mean(identity, "windows_original")
    if kind == "signs":  # signs keep their place (far above chance) while their look changes; poles stay
        _, other = evaluated("other-place")
        assert mean(summary, "sign_position_kept") > mean(summary, "sign_iou")
        assert mean(summary, "sign_position_kept") > mean(other, "sign_position_kept", "shuffled") + 0.3
        assert mean(summary, "pole_position_kept") >= 0.95
    if kind == "lighting":  # masks identical, the sky's colour may move
        assert mean(summary, "sky_colour_change") > 0.0


def test_a_segmenter_without_a_class_is_refused(world, tmp_path, evaluated):
    evaluated("identity")  # the run exists
    run = evaluated.folder("identity").parent / "identity"
    plugin_file = tmp_path / "no_windows.py"
    plugin_file.write_text("from geoxai.segmentation.groundtruth import GroundTruthSegmenter\n"
                           "class NoWindows(GroundTruthSegmenter):\n"
                           "    classes = tuple(c for c in range(11) if c != 3)\n")
    with pytest.raises(GeoxaiError, match="windows needs class window"):
        evaluate(run, "windows", tmp_path / "eval", database=world,
                 segmenter_spec={"name": f"{plugin_file}:NoWindows"}, progress=False)


def test_ground_truth_skips_an_unreadable_image_with_its_pairs(world, tmp_path):
    run = write_reference_run(world, "identity", 1, tmp_path / "run", progress=False).root
    manifest = pd.read_csv(run / "manifest.csv")
    broken = run / manifest["image_path"][0]
    broken.write_bytes(b"not an image")  # its label map is still beside it
    result = evaluate(run, "buildings", tmp_path / "eval", segmenter_spec={"name": "groundtruth"}, progress=False)
    assert not result.failed and any("1 unreadable image(s) skipped" in n for n in result.notices)
    errors = pd.read_csv(tmp_path / "eval" / "errors.csv")
    assert list(errors["stage"]) == ["image"] and broken.name in errors["error"][0]
    records = pd.read_parquet(tmp_path / "eval" / "records.parquet")
    generated = records[(records.pairing == "generated") & (records["sample"] >= 0)]
    assert generated["query_id"].nunique() == len(manifest) - 1
