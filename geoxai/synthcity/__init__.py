"""SynthCity: the procedural street world whose every pixel has a known cause (docs/synthcity.md).

``rng`` keyed random streams, ``palettes`` what colours are drawn from, ``places`` where places are
and their persistent content, ``factors`` the transient factors of a visit, ``raster`` drawing
primitives, ``drawing`` one view rasterised, ``render`` the ``SynthCity`` class, ``world`` a world
written to disk and checked, ``reference_runs`` GenerationRuns of renders.
"""

from geoxai.synthcity.factors import FACTOR_KEYS
from geoxai.synthcity.places import GRID_KEYS, MAX_PLACES, MAX_SEED, seed_origin
from geoxai.synthcity.reference_runs import REFERENCE_KINDS, write_reference_run
from geoxai.synthcity.render import CONTENT_KEYS, MIN_SIZE, Render, SynthCity
from geoxai.synthcity.world import (
    PARAMS_FILE,
    WorldSummary,
    check_world_complete,
    find_world,
    image_name,
    place_splits,
    synthcity_place,
    world_identity,
    world_params,
    write_world,
)

__all__ = [
    "CONTENT_KEYS", "FACTOR_KEYS", "GRID_KEYS", "MAX_PLACES", "MAX_SEED", "MIN_SIZE", "PARAMS_FILE",
    "REFERENCE_KINDS", "Render", "SynthCity", "WorldSummary", "check_world_complete", "find_world", "image_name",
    "place_splits", "seed_origin", "synthcity_place", "world_identity", "world_params", "write_reference_run",
    "write_world",
]
