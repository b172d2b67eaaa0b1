"""Which places a generator saw in training: the two protocols every generation number names.

- ``unseen-places`` (the default and the headline): no test place is in the training data of the
  autoencoder or the LDM (nor the embedder's). Every number then says how well a descriptor of a
  place the generator never saw is turned back into that place.
- ``seen-map``: the database images of the test places are in the generator's training data, as a
  deployed generator would have the map; the queries still are not.

A training config names its protocol (``protocol:``); ``check_training_folders`` refuses folders
that break it. Test images are recognised by the VPR layout: a ``database/`` or ``queries/`` folder
is a test (or validation) split unless it sits inside a ``train/`` folder (Pitts30k's
``images/train/database`` holds training places).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from geoxai.errors import GeoxaiError

UNSEEN_PLACES, SEEN_MAP = "unseen-places", "seen-map"
PROTOCOLS = (UNSEEN_PLACES, SEEN_MAP)


def held_out_split(folder: str | Path) -> str | None:
    """``database`` or ``queries`` when ``folder`` is (inside) a held-out split, else None."""
    parts = Path(folder).resolve().parts
    for i, part in enumerate(parts):
        if part in ("database", "queries") and (i == 0 or parts[i - 1] != "train"):
            return part
    return None


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        from geoxai.registry import did_you_mean

        raise GeoxaiError(f"protocol {protocol!r}: use {' or '.join(PROTOCOLS)}.{did_you_mean(str(protocol), list(PROTOCOLS))}")
    return protocol


def check_training_folders(folders: Sequence[str | Path], protocol: str, key: str = "data.train_dirs") -> None:
    """Refuse training folders that hold held-out places under ``protocol``.

    ``unseen-places`` accepts no ``database/`` or ``queries/`` split; ``seen-map`` accepts
    ``database/`` (the map) but never ``queries/`` (the very images the generations are scored on).
    """
    check_protocol(protocol)
    for folder in folders:
        split = held_out_split(folder)
        if split is None:
            continue
        if protocol == UNSEEN_PLACES:
            raise GeoxaiError(f"{key}: {folder} holds held-out places ({split}/), which the protocol "
                              f"{UNSEEN_PLACES} keeps out of training; train on train/ only, or set "
                              f"protocol: {SEEN_MAP} to put the test places' database images into training on purpose")
        if split == "queries":
            raise GeoxaiError(f"{key}: {folder} holds query images of held-out places; no protocol trains on the "
                              "images the generations are evaluated with; remove it")
