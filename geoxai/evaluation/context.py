"""What a plugin can read while it scores: artifacts, images, the database, the embedder, notices.

Artifacts (descriptors, colour statistics, segmentations) were computed by the runner before any
plugin ran; the context only looks them up by image content. Images are decoded once and kept (as
uint8) for every plugin of the evaluation. Pairs whose images differ in size are aligned the same way
for every plugin: the original is centre-cropped to the generation's aspect ratio (what the generator
was conditioned on), then the generation is resized to that crop; this is said once per evaluation,
as one line counting the images (``all_notices``).
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from geoxai.data.conventions import POSITIVE_RADIUS_M
from geoxai.domain import BANNER
from geoxai.errors import GeoxaiError


@dataclass
class Database:
    """The database images of an evaluation (``--database``): paths, UTM positions, radius."""

    paths: list[Path]
    utm: np.ndarray | None  # [N, 2], None when the names carry no coordinates
    radius: float = POSITIVE_RADIUS_M

    def positives(self, utm: np.ndarray) -> list[np.ndarray]:
        """Per position, the database indices within the radius, nearest first."""
        from geoxai.data.vpr import radius_positives

        if self.utm is None:
            raise GeoxaiError("the database names carry no UTM coordinates, so positives are undefined")
        return radius_positives(self.utm, np.asarray(utm, dtype=np.float64), self.radius)


@dataclass
class EvaluationContext:
    """Everything a plugin reads; built by the runner (``geoxai.evaluation.runner``)."""

    seed: int
    artifacts: dict[str, dict[str, np.ndarray]]  # kind -> image digest -> value
    digests: dict[Path, str]  # every image of the evaluation -> its content digest
    database: Database | None = None
    embedder_provider: Any = None  # a DescriptorArtifact (gives the embedder for probes)
    segmenter: Any = None  # the evaluation's segmenter, when a plugin needs segmentations
    run_settings: Mapping[str, Any] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    image_cache_bytes: int = 2 << 30
    _images: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _cached_bytes: int = 0
    _resized: dict[Path, str] = field(default_factory=dict, repr=False)  # image -> "128x128 vs 640x480 ..."

    # ------------------------------------------------------------------------------ notices
    def notice(self, text: str) -> None:
        """Say something once per evaluation (shown on the console and kept in results.json)."""
        if text not in self.notices:
            self.notices.append(text)

    def all_notices(self) -> list[str]:
        """Every notice of the evaluation, the images aligned to their original's size as one counted line."""
        if not self._resized:
            return list(self.notices)
        first, example = next(iter(self._resized.items()))
        count = len(self._resized)
        counted = "1 image of another size than its" if count == 1 else f"{count} images of another size than their"
        line = (f"{counted} original (e.g. {first.parent.name}/{first.name}: {example}) compared after "
                "centre-cropping the original to the image's aspect ratio and resizing the image to that crop")
        return [*self.notices, line]

    def rng(self, name: str) -> np.random.Generator:
        """A generator seeded by the evaluation seed and ``name`` (one stream per use)."""
        digest = hashlib.sha256(f"{self.seed}:{name}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    # ------------------------------------------------------------------------------ artifacts
    def digest(self, path: str | Path) -> str:
        path = Path(path)
        if path not in self.digests:
            raise GeoxaiError(f"{path}: not an image of this evaluation (no artifacts were computed for it)")
        return self.digests[path]

    def artifact(self, kind: str, path: str | Path) -> np.ndarray | None:
        """The ``kind`` value of one image, or None when the image could not be read."""
        if kind not in self.artifacts:
            raise GeoxaiError(f"artifact {kind!r} was not computed: add it to the plugin's needs")
        return self.artifacts[kind].get(self.digest(path))

    def artifact_array(self, kind: str, paths: Sequence[str | Path], shape: tuple[int, ...]) -> np.ndarray:
        """Values of ``kind`` for ``paths`` as one float array [N, *shape]; NaN rows for unreadable images."""
        out = np.full((len(paths), *shape), np.nan, dtype=np.float32)
        for row, path in enumerate(paths):
            value = self.artifact(kind, path)
            if value is not None:
                out[row] = value
        return out

    def segmentation(self, path: str | Path) -> np.ndarray | None:
        """The canonical label map (uint8 [H, W]) of one image from the evaluation's segmenter."""
        return self.artifact("segmentation", path)

    def descriptors(self, paths: Sequence[str | Path]) -> np.ndarray:
        """L2-normalised descriptors [N, dim] of ``paths`` (NaN rows for unreadable images)."""
        return self.artifact_array("descriptor", paths, (int(self.embedder.dim),))

    @property
    def embedder(self) -> Any:
        """The evaluation's embedder, for plugins that embed images that are not files (probes)."""
        if self.embedder_provider is None:
            raise GeoxaiError("this evaluation has no embedder")
        return self.embedder_provider.embedder

    # ------------------------------------------------------------------------------ images
    def image(self, path: str | Path) -> np.ndarray | None:
        """The RGB image [H, W, 3] as float32 in [0, 1], or None when unreadable (decoded once)."""
        from geoxai.data.images import load_rgb
        from geoxai.errors import UnreadableImageError

        path = Path(path)
        if path in self._images:
            self._images.move_to_end(path)
            array = self._images[path]
        else:
            try:
                array = np.asarray(load_rgb(path), dtype=np.uint8)
            except UnreadableImageError:
                return None
            self._images[path] = array
            self._cached_bytes += array.nbytes
            while self._cached_bytes > self.image_cache_bytes and len(self._images) > 1:
                _, old = self._images.popitem(last=False)
                self._cached_bytes -= old.nbytes
        return array.astype(np.float32) / 255.0

    def aligned(self, original: str | Path, other: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
        """Both images at one size: the original centre-cropped to ``other``'s aspect ratio, ``other``
        resized to that crop. None when either image cannot be read."""
        a, b = self.image(original), self.image(other)
        if a is None or b is None:
            return None
        if a.shape == b.shape:
            return a, b
        from PIL import Image

        ha, wa = a.shape[:2]
        hb, wb = b.shape[:2]
        target = hb / wb
        if ha / wa > target:  # original taller than the generation: crop its height
            h, w = int(round(wa * target)), wa
        else:
            h, w = ha, int(round(ha / target))
        top, left = (ha - h) // 2, (wa - w) // 2
        a = a[top:top + h, left:left + w]
        resized = Image.fromarray((b * 255).round().astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        self._resized.setdefault(Path(other), f"{wb}x{hb} vs {wa}x{ha}, crop {w}x{h}")
        return a, np.asarray(resized, dtype=np.float32) / 255.0


def merge_notices(earlier: Sequence[str], now: Sequence[str], rerun: Sequence[str] = ()) -> list[str]:
    """The notices of an EVAL folder evaluated again: today's, then the earlier ones not said again today.

    A plugin reused from the earlier evaluation does not run again, so its notices (e.g. why FID was
    skipped) would vanish. Dropped: earlier notices of the plugins in ``rerun`` (``name: ...``; they
    said again what holds now), and a line that today says again with other numbers (the count of
    images of another size, the shipped models on other images).
    """
    restated = [re.compile(r"^\d+ images? of another size than"), re.compile(re.escape(BANNER))]
    kept = [text for text in earlier if text not in now
            and not any(text.startswith(f"{name}: ") for name in rerun)
            and not any(p.match(text) and any(p.match(t) for t in now) for p in restated)]
    return [*now, *dict.fromkeys(kept)]
