"""Colour maths inside regions: mean CIELAB colours, CIEDE2000 differences, texture, dominant colour.

CIELAB is D65 (scikit-image, ``geoxai.evaluation.artifacts.rgb_to_lab`` computes it for evaluations);
differences are CIEDE2000 (``skimage.color.deltaE_ciede2000``): about 1 is just noticeable, above
10 another colour.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.cluster.vq import kmeans2
from skimage.color import deltaE_ciede2000

DOMINANT_CLUSTERS = 3  # k of the k-means that finds a facade's dominant colour
MAX_CLUSTER_PIXELS = 4096  # pixels drawn (seeded) for the k-means; enough for three centres


def mean_lab(lab: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """Mean CIELAB colour [3] of the pixels under ``mask``; None when the mask is empty."""
    if not mask.any():
        return None
    return lab[mask].mean(axis=0)


def ciede2000(first: np.ndarray, second: np.ndarray) -> float:
    """CIEDE2000 colour difference of two CIELAB colours (about 1: just noticeable; above 10: another colour)."""
    return float(deltaE_ciede2000(np.asarray(first, np.float64), np.asarray(second, np.float64)))


def lightness_spread(lab: np.ndarray, mask: np.ndarray) -> float | None:
    """Standard deviation of L* under ``mask`` (texture: clouds in a sky, shading); None when empty."""
    return float(lab[..., 0][mask].std()) if mask.any() else None


def dominant_colour(pixels: np.ndarray, seed: int, k: int = DOMINANT_CLUSTERS) -> np.ndarray | None:
    """Centre of the largest of ``k`` k-means clusters (k-means++, seeded) of CIELAB ``pixels`` [N, 3].

    Pixels beyond ``MAX_CLUSTER_PIXELS`` are subsampled with the same seed, so identical pixel sets give
    identical centres. None without pixels; with fewer distinct colours than ``k``, the most frequent one.
    """
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 3)
    if len(pixels) == 0:
        return None
    rng = np.random.default_rng(seed)
    if len(pixels) > MAX_CLUSTER_PIXELS:
        pixels = pixels[rng.choice(len(pixels), MAX_CLUSTER_PIXELS, replace=False)]
    distinct, counts = np.unique(pixels, axis=0, return_counts=True)
    if len(distinct) <= k:
        return distinct[int(np.argmax(counts))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty cluster is harmless here: the largest one is kept
        centres, assigned = kmeans2(pixels, k, minit="++", seed=rng)
    return centres[int(np.argmax(np.bincount(assigned, minlength=k)))]
