"""The compatibility contract of SynthCity: a small world and reference runs rendered today have the
exact bytes (world files) and pixels (reference images) that the module layout before
``geoxai.synthcity`` produced, so reorganising the code cannot change a world."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoxai.synthcity import write_reference_run, write_world

# sha256 (first 16 hex digits) of every file of `geoxai data synthcity --places 4 --visits 3 --size 32
# --seed 5 --test-fraction 0.5 --val-fraction 0`; the names carry each image's coordinates.
WORLD_DIGESTS = {
    "database/@0551006.86@4328005.25@10@S@039.099846@-122.421018@p00000@0@15.7@0@0@2.5@20201017@synthcity@.png":
        "28cd283c1078ec55",
    "database/@0551063.58@4328006.35@10@S@039.099856@-122.420374@p00002@0@12.2@0@0@2.5@20201017@synthcity@.png":
        "e155854cc37dc11d",
    "labels/database/@0551006.86@4328005.25@10@S@039.099846@-122.421018@p00000@0@15.7@0@0@2.5@20201017@synthcity@.png":
        "e2af5b3b2a9547f7",
    "labels/database/@0551063.58@4328006.35@10@S@039.099856@-122.420374@p00002@0@12.2@0@0@2.5@20201017@synthcity@.png":
        "c5633e041dfd714b",
    "labels/queries/@0551004.13@4328003.64@10@S@039.099832@-122.421049@p00000@2@13.6@0@0@2.5@20210119@synthcity@.png":
        "260b3aaf6d9402aa",
    "labels/queries/@0551004.66@4328003.33@10@S@039.099829@-122.421043@p00000@1@13.6@0@0@2.5@20201203@synthcity@.png":
        "69ac407a39cff67a",
    "labels/queries/@0551063.80@4328005.13@10@S@039.099845@-122.420372@p00002@1@14.3@0@0@2.5@20201203@synthcity@.png":
        "862911529d3323b5",
    "labels/queries/@0551065.83@4328003.20@10@S@039.099828@-122.420349@p00002@2@15.7@0@0@2.5@20210119@synthcity@.png":
        "f348986e5ddbebf1",
    "labels/train/@0551033.84@4328005.84@10@S@039.099852@-122.420712@p00001@0@16.4@0@0@2.5@20201017@synthcity@.png":
        "75b47421c5fdbf54",
    "labels/train/@0551035.68@4328005.31@10@S@039.099847@-122.420691@p00001@1@17.1@0@0@2.5@20201203@synthcity@.png":
        "321e00bd6d75a04a",
    "labels/train/@0551035.95@4328004.04@10@S@039.099835@-122.420688@p00001@2@15@0@0@2.5@20210119@synthcity@.png":
        "ce84c65b2438b16c",
    "labels/train/@0551094.18@4328005.87@10@S@039.099852@-122.420027@p00003@1@12.9@0@0@2.5@20201203@synthcity@.png":
        "3fb860b0e6daae2e",
    "labels/train/@0551094.45@4328005.12@10@S@039.099845@-122.420024@p00003@0@14.3@0@0@2.5@20201017@synthcity@.png":
        "e8ae0e8554c38f84",
    "labels/train/@0551095.68@4328006.09@10@S@039.099854@-122.42001@p00003@2@15.7@0@0@2.5@20210119@synthcity@.png":
        "664017e5112ce6a6",
    "metadata.csv": "8ee68c08b01f0252",
    "queries/@0551004.13@4328003.64@10@S@039.099832@-122.421049@p00000@2@13.6@0@0@2.5@20210119@synthcity@.png":
        "dfa9c8ef6a3ac6b2",
    "queries/@0551004.66@4328003.33@10@S@039.099829@-122.421043@p00000@1@13.6@0@0@2.5@20201203@synthcity@.png":
        "5830748b1e602c3b",
    "queries/@0551063.80@4328005.13@10@S@039.099845@-122.420372@p00002@1@14.3@0@0@2.5@20201203@synthcity@.png":
        "8c8285d6274f3caa",
    "queries/@0551065.83@4328003.20@10@S@039.099828@-122.420349@p00002@2@15.7@0@0@2.5@20210119@synthcity@.png":
        "08e9233e2356e921",
    "synthcity.yaml": "eb90a79db563e911",
    "train/@0551033.84@4328005.84@10@S@039.099852@-122.420712@p00001@0@16.4@0@0@2.5@20201017@synthcity@.png":
        "8972590515fee369",
    "train/@0551035.68@4328005.31@10@S@039.099847@-122.420691@p00001@1@17.1@0@0@2.5@20201203@synthcity@.png":
        "a69022e4529ff900",
    "train/@0551035.95@4328004.04@10@S@039.099835@-122.420688@p00001@2@15@0@0@2.5@20210119@synthcity@.png":
        "0705cec34de014fc",
    "train/@0551094.18@4328005.87@10@S@039.099852@-122.420027@p00003@1@12.9@0@0@2.5@20201203@synthcity@.png":
        "333bbe07947a3bd7",
    "train/@0551094.45@4328005.12@10@S@039.099845@-122.420024@p00003@0@14.3@0@0@2.5@20201017@synthcity@.png":
        "f38db0e92282b41c",
    "train/@0551095.68@4328006.09@10@S@039.099854@-122.42001@p00003@2@15.7@0@0@2.5@20210119@synthcity@.png":
        "7b03597fb684c69a",
}
# sha256 (first 16 hex digits) of the pixels of each reference image and label map (a run's PNG text
# names its own folder, so the file bytes depend on where the run is written), sample seed 1.
RUN_DIGESTS = {
    "windows/labels/samples/q000000/0.png": "c5c09a9aa275277d",
    "windows/labels/samples/q000001/0.png": "0e82c049853ff49b",
    "windows/labels/samples/q000002/0.png": "f9245ed7373c6e13",
    "windows/labels/samples/q000003/0.png": "14e8af243dd60df8",
    "windows/samples/q000000/0.png": "3d2c374368abe717",
    "windows/samples/q000001/0.png": "30f13dfeb5fdbe03",
    "windows/samples/q000002/0.png": "9854c0e451d11c4f",
    "windows/samples/q000003/0.png": "0a19204715138e87",
    "lighting/labels/samples/q000000/0.png": "9a24458710d3c7a7",
    "lighting/labels/samples/q000001/0.png": "770d87d119b8ac5f",
    "lighting/labels/samples/q000002/0.png": "925b4b0f961c7474",
    "lighting/labels/samples/q000003/0.png": "af5c90cf3135583a",
    "lighting/samples/q000000/0.png": "669b46c47efe1273",
    "lighting/samples/q000001/0.png": "9f7be8d9b93a4d52",
    "lighting/samples/q000002/0.png": "269dc8da85225ed9",
    "lighting/samples/q000003/0.png": "03996dd4f9913116",
    "other-place/labels/samples/q000000/0.png": "521d578d53896c96",
    "other-place/labels/samples/q000001/0.png": "ddada06352f1ef27",
    "other-place/labels/samples/q000002/0.png": "53c92e4fee8b931d",
    "other-place/labels/samples/q000003/0.png": "cb8abd341da72ba8",
    "other-place/samples/q000000/0.png": "53bd609f46f06e64",
    "other-place/samples/q000001/0.png": "10e3d8990bcb31a4",
    "other-place/samples/q000002/0.png": "bfd8d2625f5e361d",
    "other-place/samples/q000003/0.png": "0b1ab4f0956d798a",
    "colours/labels/samples/q000000/0.png": "9a24458710d3c7a7",
    "colours/labels/samples/q000001/0.png": "770d87d119b8ac5f",
    "colours/labels/samples/q000002/0.png": "925b4b0f961c7474",
    "colours/labels/samples/q000003/0.png": "af5c90cf3135583a",
    "colours/samples/q000000/0.png": "5a2f59d26f5d4e27",
    "colours/samples/q000001/0.png": "aea41969f62501ac",
    "colours/samples/q000002/0.png": "d3440038cf2ea3f3",
    "colours/samples/q000003/0.png": "457ba651e6f8d1fe",
}


def _digests(root: Path, pixels: bool) -> dict[str, str]:
    found = {}
    for path in sorted(root.rglob("*.png" if pixels else "*")):
        if path.is_file():
            data = np.asarray(Image.open(path)).tobytes() if pixels else path.read_bytes()
            found[path.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()[:16]
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compat") / "world"
    write_world(root, places=4, visits=3, size=32, seed=5, test_fraction=0.5, val_fraction=0.0, progress=False)
    return root


def test_world_files_are_byte_identical_to_the_contract(world):
    assert _digests(world, pixels=False) == WORLD_DIGESTS


@pytest.mark.parametrize("kind", ["windows", "lighting", "other-place", "colours"])
def test_reference_run_pixels_are_identical_to_the_contract(world, tmp_path, kind):
    write_reference_run(world, kind, 1, tmp_path / kind, seed=1, progress=False)
    expected = {name[len(kind) + 1:]: digest for name, digest in RUN_DIGESTS.items() if name.startswith(kind + "/")}
    assert len(expected) == 8
    assert _digests(tmp_path / kind, pixels=True) == expected
