"""The factor probe: how far an embedder's descriptor moves when one SynthCity factor changes.

It is the interventional twin of the generative explanation. The generator shows what a
descriptor *seems* to ignore; here each transient factor (sky, lighting, vehicles, pedestrians,
signs, camera) is re-sampled alone, with the place and all other factors fixed, and the cosine
similarity to the unchanged render says what the descriptor *does* ignore. Beside it: a full
re-visit (every factor re-sampled) and a different place (the chance level). Only test places of the
world are used, so an embedder trained on that world's ``train/`` has never seen them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from geoxai.devices import resolve_device
from geoxai.embedders import Embedder, from_spec
from geoxai.errors import GeoxaiError, setting
from geoxai.retrieval import check_trained
from geoxai.statistics import bootstrap_ci

FACTORS = ("sky", "lighting", "vehicles", "pedestrians", "signs", "camera")
REVISIT, OTHER_PLACE = "all (re-visit)", "different place"
BASE_VISIT, OTHER_VISIT = 0, 1


@dataclass
class ProbeResult:
    """Per change: mean cosine to the unchanged render with its 95% bootstrap CI over places."""

    table: pd.DataFrame  # change, cosine, ci_low, ci_high, top1_same_place, places
    spec: dict[str, Any]
    places: list[int] = field(default_factory=list)
    seed: int = 0
    size: int = 128
    out: Path | None = None
    random_weights: bool = False

    def cosine(self, change: str) -> float:
        return float(self.table.set_index("change").loc[change, "cosine"])

    def format(self) -> str:
        shown = self.table.copy()
        shown["95% CI"] = [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(shown["ci_low"], shown["ci_high"], strict=True)]
        shown["top-1 same place"] = [
            "" if np.isnan(v) else f"{100 * v:.0f}%" for v in shown["top1_same_place"]]
        shown["cosine"] = shown["cosine"].map(lambda v: f"{v:.3f}")
        lines = ["WARNING: the embedder has RANDOM weights (seeded init): these cosines describe an untrained "
                 "network, a baseline, not a VPR model"] if self.random_weights else []
        lines += [
            f"factor probe: SynthCity seed {self.seed}, {len(self.places)} test places at {self.size} px, "
            f"embedder {self.spec}",
            shown[["change", "cosine", "95% CI", "top-1 same place"]].to_string(index=False),
            "cosine: descriptor similarity to the unchanged render of the place (1 = change ignored); "
            f"'{OTHER_PLACE}' is the chance level; top-1: the changed render's nearest unchanged render "
            "among the probed places is its own place",
        ]
        if self.out is not None:
            lines.append(f"written: {self.out / 'probe.csv'}")
        return "\n".join(lines)


def held_out_places(city: Any, count: int, test_fraction: float = 0.3) -> list[int]:
    """The first ``count`` held-out places of the world (``is_test_place``)."""
    if count < 2:
        raise GeoxaiError(f"{setting('places')} {count}: the probe needs at least 2 places (one is the other's chance level)")
    places, place = [], 0
    while len(places) < count:
        if city.is_test_place(place, test_fraction):
            places.append(place)
        place += 1
    return places


def _to_batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)


def run_probe(spec: Mapping[str, Any] | Any, places: int = 50, seed: int = 0, size: int = 128,
              out: str | Path | None = None, device: str = "auto", progress: bool = True,
              test_fraction: float = 0.3) -> ProbeResult:
    """Probe an embedder (a spec dict, or an ``Embedder``) on ``places`` SynthCity test places.

    For each place: the unchanged render (visit 0), one render per factor with only that factor
    taken from visit 1, and visit 1 itself; the different-place baseline pairs each place with the
    next probed place. Writes ``out/probe.csv`` when ``out`` is given.
    """
    from tqdm.auto import tqdm

    from geoxai.synthcity import SynthCity

    if out is not None:
        from geoxai.files import writable_folder

        writable_folder(out, setting("out"))  # before the work, not after it

    if isinstance(spec, Embedder):
        embedder = spec

        embedder.to(resolve_device(device))
    else:
        embedder = from_spec(spec, device=device)
        check_trained(embedder, spec)
    city = SynthCity(seed=seed, size=size)
    chosen = held_out_places(city, places, test_fraction)
    changes = list(FACTORS) + [REVISIT]
    base = np.zeros((len(chosen), embedder.dim), dtype=np.float32)
    changed = np.zeros((len(changes), len(chosen), embedder.dim), dtype=np.float32)
    for i, place in enumerate(tqdm(chosen, desc="probe", unit="place", disable=not progress)):
        other = city.visit_factors(place, OTHER_VISIT)
        images = [city.render(place, BASE_VISIT).image]
        images += [city.render(place, BASE_VISIT, **{factor: other[factor]}).image for factor in FACTORS]
        images.append(city.render(place, OTHER_VISIT).image)
        descriptors = embedder.embed(_to_batch(images)).float().cpu().numpy()
        base[i], changed[:, i] = descriptors[0], descriptors[1:]

    rows = []
    for change, descriptors in zip(changes, changed, strict=True):
        cosines = np.sum(descriptors * base, axis=1)
        nearest = np.argmax(descriptors @ base.T, axis=1)
        rows.append(_row(change, cosines, float(np.mean(nearest == np.arange(len(chosen)))), seed))
    other_place = np.roll(np.arange(len(chosen)), -1)
    rows.append(_row(OTHER_PLACE, np.sum(base * base[other_place], axis=1), float("nan"), seed))
    table = pd.DataFrame(rows)

    out_path = Path(out) if out is not None else None
    table["random_weights"] = bool(embedder.random_weights)
    if out_path is not None:
        from geoxai.files import atomic_path

        with atomic_path(out_path / "probe.csv") as tmp:
            table.to_csv(tmp, index=False)
    described = embedder.spec() if isinstance(spec, Embedder) else dict(spec)
    return ProbeResult(table, described, chosen, seed, size, out_path, bool(embedder.random_weights))


def _row(change: str, cosines: np.ndarray, top1: float, seed: int) -> dict[str, Any]:
    low, high = bootstrap_ci(cosines, seed)
    return {"change": change, "cosine": float(np.mean(cosines)), "ci_low": low, "ci_high": high,
            "top1_same_place": top1, "places": len(cosines)}
