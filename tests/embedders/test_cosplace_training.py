"""CosPlace training: CosGroups, the CosFace head, a few real training steps, saving and resuming."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from geoxai.embedders.cosface import CosFaceHead
from geoxai.embedders.cosgroups import build_groups, class_and_group_ids
from geoxai.errors import GeoxaiError

REPO = Path(__file__).resolve().parents[2]
# Robust to where SynthCity puts places inside cells: 30 m cells hold one place each (places are 30 m
# apart), one heading bin, one group of all classes.
TINY_GROUPS = {"M": 30, "alpha": 360, "N": 1, "L": 1, "min_images_per_class": 4}


# ------------------------------------------------------------------------------------ CosGroups
def test_class_and_group_ids_follow_the_paper_formulas():
    east = [396525.3, -5.0, -50.0, 49.9, 100.0]
    north = [4983812.0, -0.1, 7.0, 10.0, 99.99]
    heading = [125.0, -30.0, 359.9, float("nan"), 60.0]
    classes, groups = class_and_group_ids(east, north, heading, M=10, alpha=30, N=5, L=2)
    for i in range(len(east)):
        h = 0.0 if math.isnan(heading[i]) else heading[i] % 360
        expected_class = (east[i] // 10 * 10, north[i] // 10 * 10, h // 30 * 30)
        expected_group = (expected_class[0] % 50 // 10, expected_class[1] % 50 // 10, expected_class[2] % 60 // 30)
        assert tuple(classes[i]) == expected_class
        assert tuple(groups[i]) == expected_group
    # spelled out: negatives floor to the cell below, headings wrap, missing heading counts as 0
    assert tuple(classes[1]) == (-10.0, -10.0, 330.0) and tuple(groups[1]) == (4, 4, 1)
    assert tuple(classes[0]) == (396520.0, 4983810.0, 120.0) and tuple(groups[0]) == (2, 1, 0)
    assert tuple(classes[3]) == (40.0, 10.0, 0.0) and tuple(groups[3]) == (4, 1, 0)
    assert tuple(classes[4]) == (100.0, 90.0, 60.0) and tuple(groups[4]) == (0, 4, 0)


def _table(rows: list[tuple[float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame({"path": [f"img{i:02d}.jpg" for i in range(len(rows))],
                         "utm_east": [r[0] for r in rows], "utm_north": [r[1] for r in rows],
                         "heading": [r[2] for r in rows]})


def test_build_groups_drops_small_classes_and_one_class_groups():
    rows = ([(1, 1, 0)] * 3 + [(51, 2, 10)] * 3 + [(102, 3, 20)] * 2  # group (0,0,0): 3, 3, 2 images
            + [(11, 1, 0)] * 3 + [(61, 1, 0)] * 3  # group (1,0,0): two classes of 3
            + [(21, 1, 0)] * 5  # group (2,0,0): a single class -> dropped
            + [(31, 1, 40)] * 3 + [(81, 1, 40)] * 1)  # group (3,0,1): one class left after the filter
    groups = build_groups(_table(rows), M=10, alpha=30, N=5, L=2, min_images_per_class=3)
    assert [g.group_id for g in groups] == [(0, 0, 0), (1, 0, 0)]
    assert groups[0].class_ids == [(0.0, 0.0, 0.0), (50.0, 0.0, 0.0)]  # (100, 0, 0) had only 2 images
    assert groups[0].images[0] == ["img00.jpg", "img01.jpg", "img02.jpg"]
    assert [g.num_images for g in groups] == [6, 6]
    assert len(build_groups(_table(rows), min_images_per_class=3, num_groups=1)) == 1
    # with a lower minimum, the largest group (3 classes) comes first
    assert build_groups(_table(rows), min_images_per_class=2)[0].num_classes == 3


def test_no_class_reaching_the_minimum_names_the_option():
    rows = [(1, 1, 0)] * 3 + [(51, 1, 0)] * 2
    with pytest.raises(GeoxaiError, match=r"groups\.min_images_per_class=3"):
        build_groups(_table(rows), min_images_per_class=10)


# ------------------------------------------------------------------------------------- CosFace
def test_cosface_logits_match_the_formula():
    head = CosFaceHead(2, 3, s=30.0, m=0.4)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]))
    x = torch.tensor([[3.0, 4.0], [0.0, -1.0]])
    labels = torch.tensor([1, 2])
    cos = torch.tensor([[0.6, 0.8, -0.7 / math.sqrt(2) * 2], [0.0, -1.0, 1 / math.sqrt(2)]])
    expected = 30.0 * (cos - 0.4 * torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    torch.testing.assert_close(head(x, labels), expected)
    torch.testing.assert_close(head(x), 30.0 * cos)  # no margin without labels


# ---------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from geoxai.synthcity.world import write_world

    out = tmp_path_factory.mktemp("world")
    write_world(out, places=8, visits=4, size=64, seed=0, test_fraction=0.25, overwrite=False, progress=False)
    return out


def _config(world: Path, out: Path, **sections) -> dict:
    config = {
        "stage": "embedder", "output_dir": str(out),
        "data": {"train_dir": str(world / "train"), "image_size": 64, "num_workers": 0},
        "model": {"backbone": "resnet18", "dim": 32},
        "groups": dict(TINY_GROUPS),
        "optim": {"lr": 1e-3, "batch_size": 6, "iterations_per_epoch": 3, "epochs": 10},
        "checkpoint_every_n_steps": 2,
        "trainer": {"max_steps": 4, "log_every_n_steps": 1, "seed": 0},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def test_a_few_steps_on_one_batch_reduce_the_loss(world):
    from geoxai.data.vpr import read_train_set
    from geoxai.embedders.training import CosPlaceTraining, GroupImages, build_network

    groups = build_groups(read_train_set(world / "train"), **TINY_GROUPS)
    assert groups[0].num_classes >= 5  # every training place is a class
    dataset = GroupImages(groups[0], image_size=64)
    torch.manual_seed(0)
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([image for image, _, _ in items])
    labels = torch.tensor([label for _, label, _ in items])
    module = CosPlaceTraining(build_network({"backbone": "resnet18", "dim": 32, "pretrained": None,
                                             "train_all_layers": None}),
                              [g.num_classes for g in groups], dim=32, lr=1e-3, classifiers_lr=1e-2)
    optimizer = module.configure_optimizers()
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3] + [1e-2] * len(groups)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = module.loss(images, labels, 0)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_train_saves_release_layout_sidecar_log_and_resumes(world, tmp_path):
    from geoxai.embedders import from_spec, read_spec
    from geoxai.embedders.cosplace import CosPlaceNet
    from geoxai.embedders.training import train

    out = tmp_path / "run"
    weights = train(_config(world, out))
    assert weights == out / "cosplace_resnet18_32.pth"
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net = CosPlaceNet("resnet18", 32)
    net.load_state_dict(state, strict=True)
    assert "aggregation.1.p" in state and "aggregation.3.weight" in state

    sidecar = yaml.safe_load((out / "embedder.yaml").read_text())
    assert sidecar == {"name": "cosplace", "backbone": "resnet18", "dim": 32,
                       "weights": "cosplace_resnet18_32.pth", "image_size": 64}
    embedder = from_spec(read_spec(out / "embedder.yaml"), device="cpu")
    image = torch.rand(2, 3, 64, 64)
    net.eval()
    with torch.no_grad():
        from torchvision.transforms.v2 import functional as TF

        expected = net(TF.normalize(image, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    torch.testing.assert_close(embedder.embed(image), expected)

    log = pd.read_csv(out / "train_log.csv")
    assert log["step"].tolist() == [1, 2, 3, 4]
    assert {"loss", "lr", "classifiers_lr", "group"} <= set(log.columns)
    assert np.allclose(log["lr"], 1e-3) and np.allclose(log["classifiers_lr"], 1e-2)

    with pytest.raises(GeoxaiError, match="--resume"):
        train(_config(world, out))  # would silently overwrite the run

    with pytest.raises(GeoxaiError, match=r"groups\.M is 20"):
        train(_config(world, out, groups={"M": 20}), resume=True)  # other classes: the heads would not fit

    train(_config(world, out, trainer={"max_steps": 7}), resume=True)
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 7
    log = pd.read_csv(out / "train_log.csv")
    assert log["step"].tolist() == list(range(1, 8))  # continued, no step twice
    assert log["epoch"].tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert not torch.equal(torch.load(weights, weights_only=True)["aggregation.3.weight"],
                           state["aggregation.3.weight"])


def test_resume_without_checkpoint_is_a_clear_error(world, tmp_path):
    from geoxai.embedders.training import train

    with pytest.raises(GeoxaiError, match="no checkpoint"):
        train(_config(world, tmp_path / "fresh"), resume=True)


def test_unknown_config_key_suggests_the_right_one(world, tmp_path):
    from geoxai.embedders.training import train

    config = _config(world, tmp_path / "run", optim={"classifier_lr": 0.1})
    with pytest.raises(GeoxaiError, match="did you mean 'classifiers_lr'"):
        train(config)


def test_classes_below_the_minimum_stop_training_with_the_fix(world, tmp_path):
    from geoxai.embedders.training import train

    config = _config(world, tmp_path / "run", groups={"min_images_per_class": 10})
    with pytest.raises(GeoxaiError, match=r"lower it, e\.g\. groups\.min_images_per_class=4"):
        train(config)


def test_imagenet_init_reads_only_the_local_hub_cache(tmp_path, monkeypatch):
    import torchvision

    from geoxai.embedders.training import build_network

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    model = {"backbone": "resnet18", "dim": 16, "pretrained": "imagenet", "train_all_layers": None}
    with pytest.raises(GeoxaiError, match=r"resnet18-f37072fd\.pth not found in .*hub/checkpoints"):
        build_network(model)

    reference = torchvision.models.resnet18()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    net = build_network(model)
    assert torch.equal(net.backbone[0].weight, reference.conv1.weight)
    assert torch.equal(net.backbone[6][0].conv1.weight, reference.layer3[0].conv1.weight)
    # CosPlace fine-tunes from layer3 on when starting from ImageNet
    assert not any(p.requires_grad for p in net.backbone[4].parameters())
    assert all(p.requires_grad for p in net.backbone[6].parameters())


def test_synthcity_config_keeps_each_place_in_one_class_and_one_group():
    """Every visit of a SynthCity place must land in its place's class, and all places in one group."""
    from geoxai.synthcity import SynthCity

    config = yaml.safe_load((REPO / "configs" / "embedder" / "synthcity-resnet18.yaml").read_text())
    g = config["groups"]
    city = SynthCity(seed=0, size=64)
    rows = [(*city.visit_utm(p, v), city.visit_heading(p, v), p) for p in range(120) for v in range(6)]
    east, north, heading, place = map(np.array, zip(*rows, strict=True))
    classes, groups = class_and_group_ids(east, north, heading, g["M"], g["alpha"], g["N"], g["L"])
    per_place = pd.DataFrame({"place": place, "cls": [tuple(c) for c in classes]}).groupby("place")["cls"]
    assert per_place.nunique().max() == 1, "a place's visits are split across classes"
    assert pd.Series([tuple(c) for c in classes]).nunique() == 120, "two places share a class"
    assert len({tuple(x) for x in groups}) == 1, "places spread over several groups (one head each)"
