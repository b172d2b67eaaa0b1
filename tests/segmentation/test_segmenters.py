"""Segmenter backends on tiny local models: label tables, ``hf`` (transformers) and ``sam`` (segment-anything).

Every model here is randomly initialised and saved to a temporary folder: nothing is downloaded.
What a random model predicts is meaningless, so the checks are about the plumbing: shapes, dtypes,
canonical ids within ``classes``, the mapping applied (by forcing which source class wins), the SAM
recipes on hand-made masks, and one-line errors for missing, damaged and unsafe weights.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from geoxai import labels as L
from geoxai.errors import GeoxaiError
from geoxai.segmentation import mappings
from geoxai.segmentation.base import Segmenter, from_spec, has_instances, instance_ids

pytestmark = pytest.mark.usefixtures("one_thread")

CITYSCAPES_NAMES = [name for name, _ in mappings.CITYSCAPES]
ADE_SUBSET = ["wall", "building", "sky", "windowpane", "car", "signboard", "tree", "road"]


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


class Payload:
    """Unpickling this runs ``open(marker, "w")``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# -- mappings ----------------------------------------------------------------------------------------

def test_label_tables_map_every_class_exactly_once():
    assert len(mappings.CITYSCAPES) == 19 and len(mappings.ADE20K) == 150
    for table in (mappings.CITYSCAPES, mappings.ADE20K):
        names = [name for name, _ in table]
        assert len(set(names)) == len(names)
        assert all(canonical in L.NAMES for _, canonical in table)
        assert mappings.lookup(dict(enumerate(names))).tolist() == [canonical for _, canonical in table]
    assert CITYSCAPES_NAMES[:3] == ["road", "sidewalk", "building"] and CITYSCAPES_NAMES[-1] == "bicycle"
    ade = [name for name, _ in mappings.ADE20K]
    assert ade[:3] == ["wall", "building", "sky"] and ade[8] == "windowpane" and ade[20] == "car"
    assert ade[-1] == "flag"


@pytest.mark.parametrize("table, name, canonical", [
    (mappings.CITYSCAPES, "wall", L.BUILDING),
    (mappings.CITYSCAPES, "rider", L.PERSON),
    (mappings.CITYSCAPES, "terrain", L.VEGETATION),
    (mappings.CITYSCAPES, "traffic sign", L.SIGN),
    (mappings.ADE20K, "windowpane", L.WINDOW),
    (mappings.ADE20K, "signboard", L.SIGN),
    (mappings.ADE20K, "streetlight", L.POLE),
    (mappings.ADE20K, "wall", L.BUILDING),
    (mappings.ADE20K, "fence", L.OTHER),
])
def test_spot_checks(table, name, canonical):
    assert dict(table)[name] == canonical


def test_lookup_normalises_names_and_refuses_unknown_labels():
    found = mappings.lookup({0: "Windowpane, window", 1: "person;individual;someone", 2: "Traffic_Light",
                             3: "bed ", 5: "SKY"})
    assert found.tolist() == [L.WINDOW, L.PERSON, L.SIGN, L.OTHER, L.OTHER, L.SKY]  # index 4 unused: other
    with pytest.raises(GeoxaiError) as exc:
        mappings.lookup({0: "sky", 1: "LABEL_1", 2: "lamppost thing"})
    line = one_line(exc)
    assert "LABEL_1" in line and "lamppost thing" in line and "2 of 3" in line


def test_docs_list_every_mapping():
    text = (Path(__file__).parents[2] / "docs" / "segmentation.md").read_text()
    rows = dict(re.findall(r"^\| \d+ \| ([^|]+?) \| (\w+) \|$", text, flags=re.M))
    for name, canonical in (*mappings.CITYSCAPES, *mappings.ADE20K):
        assert rows.get(name) == L.NAMES[canonical], name


# -- hf ------------------------------------------------------------------------------------------------

def save_segformer(folder: Path, names: list[str]) -> Path:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(0)
    config = SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 8, 8, 8], num_attention_heads=[1, 1, 1, 1],
                             decoder_hidden_size=8, id2label=dict(enumerate(names)),
                             label2id={name: i for i, name in enumerate(names)})
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    SegformerImageProcessor().save_pretrained(folder)
    return folder


def save_mask2former(folder: Path, names: list[str]) -> Path:
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    torch.manual_seed(0)
    backbone = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
                               encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=1, decoder_layers=2,
                               num_queries=4, num_attention_heads=1, use_pretrained_backbone=False,
                               id2label=dict(enumerate(names)), label2id={name: i for i, name in enumerate(names)})
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    Mask2FormerImageProcessor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("hf")
    return SimpleNamespace(cityscapes=save_segformer(root / "cityscapes", CITYSCAPES_NAMES),
                           ade=save_segformer(root / "ade", ADE_SUBSET),
                           mask2former=save_mask2former(root / "mask2former", ADE_SUBSET))


def test_hf_label_maps_are_canonical(models):
    from geoxai.segmentation.hf import HFSegmenter

    segmenter = HFSegmenter(model=str(models.cityscapes), resolution=32, device="cpu")
    maps = segmenter.segment(torch.rand(3, 3, 32, 48))
    assert maps.shape == (3, 32, 48) and maps.dtype == torch.long
    assert set(maps.unique().tolist()) <= set(segmenter.classes)
    assert L.WINDOW not in segmenter.classes and L.VEHICLE in segmenter.classes
    assert segmenter.inference == "shorter side resized to 32"
    assert segmenter.licence == f"see the model card of {models.cityscapes}"
    ade = HFSegmenter(model=str(models.ade), resolution=32, device="cpu")
    assert set(ade.classes) == {L.BUILDING, L.SKY, L.WINDOW, L.VEHICLE, L.SIGN, L.VEGETATION, L.ROAD}


class Forced(torch.nn.Module):
    """Stands in for the network: source class ``winner`` scores highest everywhere."""

    def __init__(self, classes: int, winner: int) -> None:
        super().__init__()
        self.classes, self.winner = classes, winner

    def forward(self, pixel_values, **_):
        n, _, h, w = pixel_values.shape
        logits = torch.full((n, self.classes, max(1, h // 4), max(1, w // 4)), -5.0)
        logits[:, self.winner] = 5.0
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize("resolution", [32, "sliding"])
def test_hf_applies_the_mapping(models, resolution):
    from geoxai.segmentation.hf import HFSegmenter

    segmenter = HFSegmenter(model=str(models.ade), resolution=resolution, window=32, stride=16, device="cpu")
    for source, canonical in (("windowpane", L.WINDOW), ("signboard", L.SIGN), ("wall", L.BUILDING)):
        segmenter.net = Forced(len(ADE_SUBSET), ADE_SUBSET.index(source))
        maps = segmenter.segment(torch.rand(2, 3, 37, 53))
        assert maps.shape == (2, 37, 53) and (maps == canonical).all(), (source, maps.unique())


class ForcedMasks(torch.nn.Module):
    """Stands in for a mask-classification network: one query, covering everything, of class ``winner``."""

    def __init__(self, classes: int, winner: int) -> None:
        super().__init__()
        self.classes, self.winner = classes, winner

    def forward(self, pixel_values, **_):
        n, _, h, w = pixel_values.shape
        class_logits = torch.full((n, 1, self.classes + 1), -5.0)  # the last class is "no object"
        class_logits[:, :, self.winner] = 5.0
        return SimpleNamespace(class_queries_logits=class_logits,
                               masks_queries_logits=torch.full((n, 1, max(1, h // 4), max(1, w // 4)), 5.0))


@pytest.mark.parametrize("resolution", [32, "sliding"])
def test_hf_mask_classification_models(models, resolution):
    from geoxai.segmentation.hf import HFSegmenter

    segmenter = HFSegmenter(model=str(models.mask2former), resolution=resolution, window=32, stride=16, device="cpu")
    assert segmenter.universal and L.WINDOW in segmenter.classes
    maps = segmenter.segment(torch.rand(1, 3, 37, 53))
    assert maps.shape == (1, 37, 53) and set(maps.unique().tolist()) <= set(segmenter.classes)
    segmenter.net = ForcedMasks(len(ADE_SUBSET), ADE_SUBSET.index("windowpane"))
    assert (segmenter.segment(torch.rand(2, 3, 37, 53)) == L.WINDOW).all()


def test_hf_sliding_window_covers_the_image(models):
    from geoxai.segmentation.hf import HFSegmenter, window_starts

    assert window_starts(53, 32, 16) == [0, 16, 21] and window_starts(20, 32, 16) == [0]
    segmenter = HFSegmenter(model=str(models.cityscapes), resolution="sliding", window=32, stride=16,
                            batch_size=2, device="cpu")
    maps = segmenter.segment(torch.rand(1, 3, 37, 53))
    assert maps.shape == (1, 37, 53) and set(maps.unique().tolist()) <= set(segmenter.classes)
    assert segmenter.inference == "sliding window 32, stride 16, at the image's resolution"


def test_hf_through_the_registry_files_and_cache(models, tmp_path, monkeypatch):
    from huggingface_hub import constants
    from PIL import Image

    (models.ade / "README.md").write_text("---\nlicense: other\nlicense_name: nvidia-source-code\n---\n# card\n")
    try:
        segmenter = from_spec({"name": "hf", "model": str(models.ade), "resolution": 32}, device="cpu")
        assert segmenter.licence == "other (nvidia-source-code)"
        assert from_spec(segmenter.spec()).identity() == segmenter.identity()
    finally:
        (models.ade / "README.md").unlink()
    paths = []
    for i, size in enumerate([(40, 30), (40, 30), (20, 36)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (*size, 3), dtype=np.uint8)).save(paths[-1])
    maps = segmenter.segment_files(paths)
    assert [m.shape for m in maps] == [(40, 30), (40, 30), (20, 36)] and all(m.dtype == np.uint8 for m in maps)

    # a model id resolves to its snapshot in the Hugging Face cache, offline
    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny-segformer"
    shutil.copytree(models.cityscapes, repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    cached = from_spec({"name": "hf", "model": "someone/tiny-segformer", "resolution": 32}, device="cpu")
    assert L.WINDOW not in cached.classes
    with pytest.raises(GeoxaiError) as exc:
        from_spec({"name": "hf", "model": "someone/not-downloaded"}, device="cpu")
    line = one_line(exc)
    assert "someone/not-downloaded" in line and str(cache) in line and "hf download" in line


def test_hf_refuses_damaged_folders_and_other_models(models, tmp_path):
    from transformers import SegformerImageProcessor, ViTConfig, ViTForImageClassification

    from geoxai.segmentation.hf import HFSegmenter

    vit = tmp_path / "vit"
    ViTForImageClassification(ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                         intermediate_size=8, image_size=32, patch_size=16)).save_pretrained(vit)
    SegformerImageProcessor().save_pretrained(vit)
    damaged = {}
    for kind in ("truncated", "config", "processor", "labels", "empty"):
        damaged[kind] = shutil.copytree(models.cityscapes, tmp_path / kind)
    weights = damaged["truncated"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    (damaged["config"] / "config.json").write_text("{not json")
    (damaged["processor"] / "preprocessor_config.json").unlink()
    config = json.loads((damaged["labels"] / "config.json").read_text())
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(19)}
    (damaged["labels"] / "config.json").write_text(json.dumps(config))
    for file in damaged["empty"].iterdir():
        file.unlink()
    expected = {"truncated": "cannot be loaded", "config": "cannot be read", "processor": "preprocessor_config.json",
                "labels": "LABEL_0", "empty": "no config.json"}
    for kind, folder in [*damaged.items(), ("vit", vit)]:
        with pytest.raises(GeoxaiError) as exc:
            HFSegmenter(model=str(folder), device="cpu")
        line = one_line(exc)
        assert expected.get(kind, "ViTForImageClassification, not a semantic segmentation model") in line, line
    with pytest.raises(GeoxaiError) as exc:
        HFSegmenter(model=str(tmp_path / "nowhere" / "model"), device="cpu")
    assert "no such folder" in one_line(exc)


def test_hf_bin_weights_load_weights_only(models, tmp_path):
    from safetensors.torch import load_file

    from geoxai.segmentation.hf import HFSegmenter

    folder = shutil.copytree(models.cityscapes, tmp_path / "bin")
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    assert L.ROAD in HFSegmenter(model=str(folder), resolution=32, device="cpu").classes
    marker = tmp_path / "payload-ran"
    torch.save({"weights": Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(GeoxaiError) as exc:
        HFSegmenter(model=str(folder), device="cpu")
    line = one_line(exc)
    assert "refused" in line and "GLOBAL" in line and str(folder) in line
    assert not marker.exists()


# -- sam -----------------------------------------------------------------------------------------------

def street_map(height: int = 48, width: int = 64) -> torch.Tensor:
    """Sky on top, a facade below with two separate windows."""
    labels = torch.full((height, width), L.BUILDING)
    labels[: height // 3] = L.SKY
    labels[24:32, 8:20] = L.WINDOW
    labels[24:32, 28:40] = L.WINDOW
    return labels


class StreetSegmenter(Segmenter):
    """A base segmenter that sees the same street in every image."""

    name = "street"
    classes = (L.SKY, L.BUILDING, L.WINDOW)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        return street_map(*images.shape[-2:]).expand(len(images), -1, -1).clone()


def box(top: int, left: int, bottom: int, right: int, shape=(48, 64)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def test_refine_recipe_majority_label_per_mask():
    from geoxai.segmentation.sam import refine_with_masks

    semantic = street_map().numpy()
    facade = box(14, 0, 48, 64)  # mostly building, with some sky rows and the windows
    window = box(23, 7, 33, 21)  # a window with a rim of wall
    refined = refine_with_masks(semantic, [window, facade])
    assert (refined[23:33, 7:21] == L.WINDOW).all()  # the smaller mask overrules the larger one
    assert (refined[14:23] == L.BUILDING).all() and (refined[24:32, 28:40] == L.BUILDING).all()
    assert (refined[:14] == semantic[:14]).all()  # no mask: the base label stays
    assert set(np.unique(refined)) <= set(np.unique(semantic))


def test_instances_recipe_splits_a_class_into_objects():
    from geoxai.segmentation.sam import instances_from_masks

    semantic = street_map().numpy()
    masks = [box(16, 0, 48, 64),  # the facade: mostly wall, never an instance
             box(24, 8, 31, 40),  # both windows (but their last row) and the wall between: cut along the blobs
             box(24, 8, 32, 14), box(24, 14, 32, 20)]  # the panes of the first window: already claimed
    found = instances_from_masks(semantic, L.WINDOW, masks)
    assert ((found > 0) == (semantic == L.WINDOW)).all()
    assert sorted(np.unique(found).tolist()) == [0, 1, 2]
    assert len(np.unique(found[24:32, 8:20])) == 1 and len(np.unique(found[24:32, 28:40])) == 1
    assert (instances_from_masks(semantic, L.WINDOW, []) == found).all()  # no masks: connected blobs


@pytest.fixture(scope="module")
def sam_checkpoint(tmp_path_factory) -> Path:
    from geoxai.segmentation.sam import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(build_model("tiny").state_dict(), path)
    return path


def test_sam_refines_and_splits_with_real_masks(sam_checkpoint, models):
    from geoxai.segmentation.sam import SAMSegmenter

    generator = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 0.95}
    segmenter = SAMSegmenter(checkpoint=str(sam_checkpoint), base=StreetSegmenter(), device="cpu", **generator)
    assert segmenter.model_type == "tiny" and segmenter.classes == StreetSegmenter.classes
    torch.manual_seed(0)
    images = torch.rand(2, 3, 48, 64)
    masks = segmenter.masks(images)
    assert len(masks) == 2 and any(masks)
    assert all(m.shape == (48, 64) and m.dtype == bool for found in masks for m in found)
    refined = segmenter.refine(images, masks=masks)
    base = street_map()
    assert refined.shape == (2, 48, 64) and refined.dtype == torch.long
    assert set(refined.unique().tolist()) <= set(base.unique().tolist())
    for image_masks, labels in zip(masks, refined, strict=True):
        covered = np.logical_or.reduce(image_masks) if image_masks else np.zeros((48, 64), dtype=bool)
        assert (labels[~torch.from_numpy(covered)] == base[~torch.from_numpy(covered)]).all()
    assert (segmenter.segment(images[:1]) == segmenter.refine(images[:1])).all()
    instances = segmenter.instances(images, L.WINDOW, semantic_maps=base.expand(2, -1, -1), masks=masks)
    assert instances.dtype == torch.long and instances.shape == (2, 48, 64)
    assert ((instances > 0) == (base == L.WINDOW)).all()
    own = segmenter.instances(images, L.WINDOW, masks=masks)  # on its own refined maps, as plugins call it
    assert ((own > 0) == (refined == L.WINDOW)).all()
    assert has_instances(segmenter) and np.array_equal(instance_ids(segmenter, own, images), own.numpy())

    # as a backend refining an hf model, rebuilt from its spec
    spec = {"name": "sam", "checkpoint": str(sam_checkpoint), "model_type": "tiny",
            "base": {"name": "hf", "model": str(models.ade), "resolution": 32}, **generator}
    backend = from_spec(spec, device="cpu")
    assert backend.classes == backend.base.classes and L.WINDOW in backend.classes
    maps = backend.segment(images[:1])
    assert maps.shape == (1, 48, 64) and set(maps.unique().tolist()) <= set(backend.classes)
    assert "refined by SAM tiny masks (4x4 points)" in backend.inference and "Apache-2.0" in backend.licence
    assert from_spec(backend.spec(), device="cpu").identity() == backend.identity()


def test_sam_refuses_pickled_code_missing_and_mismatched_checkpoints(sam_checkpoint, tmp_path):
    from geoxai.segmentation.sam import SAMSegmenter

    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"x": Payload(marker)}, evil)
    with pytest.raises(GeoxaiError) as exc:
        SAMSegmenter(checkpoint=str(evil), device="cpu")
    line = one_line(exc)
    assert "refused" in line and "GLOBAL" in line and "segmenter sam" in line
    assert not marker.exists()

    with pytest.raises(GeoxaiError) as exc:
        SAMSegmenter(checkpoint=str(tmp_path / "sam_vit_b.pth"), device="cpu")
    assert "no such file" in one_line(exc)

    partial = {k: v for k, v in torch.load(sam_checkpoint, weights_only=True).items() if "mask_decoder" not in k}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(GeoxaiError) as exc:
        SAMSegmenter(checkpoint=str(tmp_path / "partial.pth"), model_type="tiny", device="cpu")
    assert "missing keys" in one_line(exc)


def test_segmenters_command_lists_backends_and_describes_a_configured_one(tmp_path):
    from click.testing import CliRunner

    from geoxai.cli import cli

    listed = CliRunner().invoke(cli, ["segmenters"])
    assert listed.exit_code == 0 and "groundtruth" in listed.output and "hf" in listed.output
    spec = tmp_path / "gt.yaml"
    spec.write_text("name: groundtruth\n")
    described = CliRunner().invoke(cli, ["segmenters", "--config", str(spec)])
    assert described.exit_code == 0 and "classes other, sky, building, window" in described.output
    missing = CliRunner().invoke(cli, ["segmenters", "--config", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 2 and "--segmenter-config" in missing.output


def test_instances_have_one_declared_form():
    from geoxai.segmentation.groundtruth import GroundTruthSegmenter
    from geoxai.segmentation.hf import HFSegmenter
    from geoxai.segmentation.sam import SAMSegmenter
    from geoxai.segmentation.synthcity import SynthCitySegmenter

    assert has_instances(SAMSegmenter.__new__(SAMSegmenter))
    for cls in (GroundTruthSegmenter, HFSegmenter, SynthCitySegmenter):  # no instances: the base refuses
        assert not has_instances(cls.__new__(cls))
    with pytest.raises(NotImplementedError, match="'groundtruth' does not split classes into instances"):
        GroundTruthSegmenter().instances(torch.zeros(1, 3, 4, 4), L.WINDOW)
    images = torch.zeros(2, 3, 4, 5)
    ids = torch.arange(40).reshape(2, 4, 5)
    assert np.array_equal(instance_ids(GroundTruthSegmenter(), ids.int(), images), ids.numpy())
    for wrong, said in ((ids.float(), "a torch.float32 tensor [2, 4, 5]"), (ids[:1], "a torch.int64 tensor [1, 4, 5]"),
                        (ids > 0, "a torch.bool tensor [2, 4, 5]"), (ids.numpy(), "a ndarray"),
                        ([ids[0], ids[1]], "a list")):
        with pytest.raises(GeoxaiError, match=re.escape(f"segmenter 'groundtruth': instances() returned {said}; it "
                                                        "must return an integer tensor [2, 4, 5]")):
            instance_ids(GroundTruthSegmenter(), wrong, images)
