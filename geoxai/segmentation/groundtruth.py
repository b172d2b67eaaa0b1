"""``groundtruth``: SynthCity's own label maps, read from disk instead of predicted.

A SynthCity world keeps the label map of ``<world>/<split>/<name>.png`` at
``<world>/labels/<split>/<name>.png``; a reference run keeps the map of ``<run>/samples/q/s.png`` at
``<run>/labels/samples/q/s.png``. The rule is the same — for an image at ``<root>/<relative path>``
the map is at ``<root>/labels/<relative path>`` — so the backend walks up from each image to the
first folder that holds such a file. It is exact, so it is what the plugins are checked with; an
image without a label map (a generation of a trained model) is an error that says to use a
predicting backend (``synthcity``, ``hf``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from geoxai.errors import GeoxaiError, UnreadableImageError, setting
from geoxai.segmentation.base import Segmenter


def label_path(image: str | Path) -> Path | None:
    """Where the ground-truth label map of ``image`` lives, or None when there is none."""
    image = Path(image).resolve()
    for root in image.parents:
        candidate = root / "labels" / image.relative_to(root)
        if candidate.is_file():
            return candidate
    return None


class GroundTruthSegmenter(Segmenter):
    """Label maps written beside the images (SynthCity worlds and reference runs)."""

    name = "groundtruth"
    licence = "exact (rendered with the images)"
    inference = "read from labels/ beside the images"

    def __init__(self) -> None:
        """No options: the label maps are beside the images."""

    def segment(self, images: Any) -> Any:
        raise GeoxaiError("the groundtruth segmenter reads label maps of files; it cannot segment pixels")

    def segment_files(self, paths: Sequence[Path]) -> list[np.ndarray | None]:
        """The label maps beside ``paths``; None for an image that cannot be decoded, so that it is
        skipped with its pairs like under any other backend (its label map describes no readable image)."""
        from geoxai.data.images import load_label_map, load_rgb

        out: list[np.ndarray | None] = []
        for path in paths:
            found = label_path(path)
            if found is None:
                flag = setting("segmenter")
                raise GeoxaiError(f"{flag} groundtruth: {path} has no label map (looked for labels/<its path> in "
                                  "the folders above it); ground truth exists for SynthCity worlds and reference runs: "
                                  f"segment other images with a predicting backend (e.g. {flag} synthcity)")
            try:
                load_rgb(path)
            except UnreadableImageError:
                out.append(None)
                continue
            out.append(load_label_map(found))
        return out
