"""How the label sets of public segmentation models map onto geoxai's canonical classes.

Plugins speak the canonical ids of ``labels.py`` (sky, building, window, ...), models speak
Cityscapes or ADE20K. Each table below lists every class of its benchmark, in the benchmark's index
order, with the canonical id it becomes (``other`` when nothing fits), so that a model's
``id2label`` can be translated by name (``lookup``) whatever the backend. The choices follow the
street-scene reading of SynthCity's labels: a facade's wall, door, columns and awnings are
``building``, glazing (and the blinds that fill it) is ``window``, anything that transports people
or goods is ``vehicle``, text-bearing boards are ``sign``. docs/segmentation.md shows both tables.
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from geoxai.errors import GeoxaiError
from geoxai.labels import BUILDING, OTHER, PERSON, POLE, ROAD, SIDEWALK, SIGN, SKY, VEGETATION, VEHICLE, WINDOW

# The 19 Cityscapes train classes, in train-id order.
CITYSCAPES: tuple[tuple[str, int], ...] = (
    ("road", ROAD),
    ("sidewalk", SIDEWALK),
    ("building", BUILDING),
    ("wall", BUILDING),  # free-standing walls read as built structure, like SynthCity's facades
    ("fence", OTHER),
    ("pole", POLE),
    ("traffic light", SIGN),
    ("traffic sign", SIGN),
    ("vegetation", VEGETATION),
    ("terrain", VEGETATION),  # mostly grass verges in Cityscapes' cities
    ("sky", SKY),
    ("person", PERSON),
    ("rider", PERSON),
    ("car", VEHICLE),
    ("truck", VEHICLE),
    ("bus", VEHICLE),
    ("train", VEHICLE),
    ("motorcycle", VEHICLE),
    ("bicycle", VEHICLE),
)

# The 150 classes of the ADE20K SceneParsing benchmark, in index order (0..149), under the short
# names of objectInfo150 (the first of its synonyms, as in the released models' configs).
ADE20K: tuple[tuple[str, int], ...] = (
    ("wall", BUILDING),  # in a street scene, the wall of a facade
    ("building", BUILDING),
    ("sky", SKY),
    ("floor", OTHER),  # indoor flooring; outdoor ground is road, sidewalk or earth
    ("tree", VEGETATION),
    ("ceiling", OTHER),
    ("road", ROAD),
    ("bed", OTHER),
    ("windowpane", WINDOW),
    ("grass", VEGETATION),
    ("cabinet", OTHER),
    ("sidewalk", SIDEWALK),
    ("person", PERSON),
    ("earth", OTHER),  # bare ground is not vegetation
    ("door", BUILDING),  # part of the facade
    ("table", OTHER),
    ("mountain", OTHER),
    ("plant", VEGETATION),
    ("curtain", OTHER),
    ("chair", OTHER),
    ("car", VEHICLE),
    ("water", OTHER),
    ("painting", OTHER),
    ("sofa", OTHER),
    ("shelf", OTHER),
    ("house", BUILDING),
    ("sea", OTHER),
    ("mirror", OTHER),
    ("rug", OTHER),
    ("field", VEGETATION),  # grass or crop land
    ("armchair", OTHER),
    ("seat", OTHER),
    ("fence", OTHER),
    ("desk", OTHER),
    ("rock", OTHER),
    ("wardrobe", OTHER),
    ("lamp", OTHER),
    ("bathtub", OTHER),
    ("railing", OTHER),  # like fence
    ("cushion", OTHER),
    ("base", OTHER),
    ("box", OTHER),
    ("column", BUILDING),  # columns and pillars of facades and arcades
    ("signboard", SIGN),
    ("chest of drawers", OTHER),
    ("counter", OTHER),
    ("sand", OTHER),
    ("sink", OTHER),
    ("skyscraper", BUILDING),
    ("fireplace", OTHER),
    ("refrigerator", OTHER),
    ("grandstand", BUILDING),  # a built structure, like Cityscapes' bus-stop buildings
    ("path", SIDEWALK),  # a way for pedestrians
    ("stairs", OTHER),
    ("runway", ROAD),
    ("case", OTHER),
    ("pool table", OTHER),
    ("pillow", OTHER),
    ("screen door", BUILDING),  # a door
    ("stairway", OTHER),
    ("river", OTHER),
    ("bridge", OTHER),  # Cityscapes leaves bridges out of its train classes too
    ("bookcase", OTHER),
    ("blind", WINDOW),  # blinds and shutters fill window openings
    ("coffee table", OTHER),
    ("toilet", OTHER),
    ("flower", VEGETATION),
    ("book", OTHER),
    ("hill", OTHER),
    ("bench", OTHER),
    ("countertop", OTHER),
    ("stove", OTHER),
    ("palm", VEGETATION),
    ("kitchen island", OTHER),
    ("computer", OTHER),
    ("swivel chair", OTHER),
    ("boat", VEHICLE),  # transports people or goods, parked along canals like cars
    ("bar", OTHER),
    ("arcade machine", OTHER),
    ("hovel", BUILDING),
    ("bus", VEHICLE),
    ("towel", OTHER),
    ("light", OTHER),
    ("truck", VEHICLE),
    ("tower", BUILDING),
    ("chandelier", OTHER),
    ("awning", BUILDING),  # attached to the facade
    ("streetlight", POLE),
    ("booth", BUILDING),  # kiosks and stalls
    ("television receiver", OTHER),
    ("airplane", VEHICLE),
    ("dirt track", ROAD),
    ("apparel", OTHER),
    ("pole", POLE),
    ("land", OTHER),
    ("bannister", OTHER),
    ("escalator", OTHER),
    ("ottoman", OTHER),
    ("bottle", OTHER),
    ("buffet", OTHER),
    ("poster", SIGN),  # a text-bearing board, like a signboard
    ("stage", OTHER),
    ("van", VEHICLE),
    ("ship", VEHICLE),
    ("fountain", OTHER),
    ("conveyer belt", OTHER),
    ("canopy", BUILDING),  # like awning
    ("washer", OTHER),
    ("plaything", OTHER),
    ("swimming pool", OTHER),
    ("stool", OTHER),
    ("barrel", OTHER),
    ("basket", OTHER),
    ("waterfall", OTHER),
    ("tent", OTHER),
    ("bag", OTHER),
    ("minibike", VEHICLE),
    ("cradle", OTHER),
    ("oven", OTHER),
    ("ball", OTHER),
    ("food", OTHER),
    ("step", OTHER),
    ("tank", OTHER),
    ("trade name", SIGN),  # shop names on facades
    ("microwave", OTHER),
    ("pot", OTHER),
    ("animal", OTHER),
    ("bicycle", VEHICLE),
    ("lake", OTHER),
    ("dishwasher", OTHER),
    ("screen", OTHER),
    ("blanket", OTHER),
    ("sculpture", OTHER),
    ("hood", OTHER),
    ("sconce", OTHER),
    ("vase", OTHER),
    ("traffic light", SIGN),
    ("tray", OTHER),
    ("ashcan", OTHER),
    ("fan", OTHER),
    ("pier", OTHER),
    ("crt screen", OTHER),
    ("plate", OTHER),
    ("monitor", OTHER),
    ("bulletin board", SIGN),  # like poster
    ("shower", OTHER),
    ("radiator", OTHER),
    ("glass", OTHER),
    ("clock", OTHER),
    ("flag", OTHER),
)

# Names some models use besides the two benchmarks' own: a "no class" entry, and the plain word for
# a class a benchmark names otherwise.
ALIASES: tuple[tuple[str, int], ...] = (
    ("background", OTHER),
    ("unlabeled", OTHER),
    ("void", OTHER),
    ("other", OTHER),
    ("window", WINDOW),
)

LABEL_SETS: dict[str, tuple[tuple[str, int], ...]] = {"Cityscapes": CITYSCAPES, "ADE20K": ADE20K}


def normalise(name: str) -> str:
    """A label name compared case-, separator- and spacing-insensitively: ``Traffic_Light`` ->
    ``traffic light``."""
    return " ".join(re.sub(r"[_\-./]+", " ", str(name)).lower().split())


def _table() -> dict[str, int]:
    table: dict[str, int] = {}
    for source, pairs in (*LABEL_SETS.items(), ("aliases", ALIASES)):
        for name, canonical in pairs:
            key = normalise(name)
            if table.setdefault(key, canonical) != canonical:  # a name shared by two sets maps one way
                raise AssertionError(f"{source}: {name!r} maps to {canonical}, elsewhere to {table[key]}")
    return table


BY_NAME: dict[str, int] = _table()


def canonical_id(name: str) -> int | None:
    """The canonical id of a source label name, or None when no table knows it.

    ADE20K's full names list synonyms (``windowpane, window``; ``person;individual;someone``): the
    first one is the class's name, the others are never used alone (``screen`` and ``counter`` are
    synonyms of other classes).
    """
    key = normalise(name)
    if key in BY_NAME:
        return BY_NAME[key]
    first = normalise(re.split(r"[,;]", str(name), maxsplit=1)[0])
    return BY_NAME.get(first)


def lookup(id2label: Mapping[int, str], where: str = "the model's labels") -> np.ndarray:
    """Canonical id per source class index (int64 array; indices the model never uses are ``other``).

    Refuses a label set with any unknown name, naming them: a silently dropped class would bias every
    plugin that reads it.
    """
    if not id2label:
        raise GeoxaiError(f"{where}: no labels (id2label is empty); the model's config must name its classes")
    indices = {int(index): name for index, name in id2label.items()}
    if min(indices) < 0:
        raise GeoxaiError(f"{where}: negative class index {min(indices)} in id2label")
    table = np.zeros(max(indices) + 1, dtype=np.int64)
    unknown = []
    for index, name in sorted(indices.items()):
        canonical = canonical_id(name)
        if canonical is None:
            unknown.append(f"{index} {name!r}")
        else:
            table[index] = canonical
    if unknown:
        shown = ", ".join(unknown[:8]) + (f", ... {len(unknown) - 8} more" if len(unknown) > 8 else "")
        raise GeoxaiError(f"{where}: cannot map {len(unknown)} of {len(indices)} labels onto geoxai's classes "
                          f"({shown}); known label sets: Cityscapes (19 train classes) and ADE20K (150 classes), "
                          "see docs/segmentation.md")
    return table
