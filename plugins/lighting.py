"""``lighting``: does illumination change, and does the VPR descriptor care? (thesis finding F4)

F4 reads "lighting often changes (shade <-> sun): CosPlace is not sensitive to lighting". This
plugin puts numbers on both halves.

*Illumination change.* For every pair it reads the ``lab`` artifact (CIELAB via scikit-image, one
set of statistics per image) and reports the change of mean lightness ``delta_L`` (signed: positive
is brighter), its size ``abs_delta_L`` and the change of lightness spread ``delta_contrast`` (hard
sun and shade raise the L* standard deviation), beside the ``cosine`` of the two descriptors. The
statistics are computed per image over the whole frame, so an image of another size than its
original needs no alignment; a framing difference (a generation of the original's centre crop)
does enter the numbers, and the ``reference`` pairing shows how large such differences are between
two real photos of one place. ``spearman_abs_delta_L_cosine`` (a set-level row of the summary)
ranks ``abs_delta_L`` against ``cosine``: near 0, the descriptor ignores how much the light moved.

*Embedder probe.* Generations change more than lighting, so each original query photo is also
changed photometrically only, at full resolution before the embedder's resize and crop: brightness
(RGB x 0.6 and x 1.4, clipped), gamma (0.5 and 2.0) and colour temperature (white-balance gains
``WARM`` and ``COOL``). Per original it records the cosine of each changed image's descriptor to the
unchanged one's (the mean of the two levels of each change) and, with ``--database``, the percent of
the six changes whose nearest database image stays the original's (``probe_top1_stability``).
These per-original values sit under pairing ``generated`` with sample -1; their baselines are the
same quantities between the original and the original of its ``shuffled`` partner (another place)
and between the original and its ``reference`` photo (a real re-visit). "The descriptor moves by X
under lighting, by Y between places, by Z between two visits" is one row of the summary. The
changes are fixed, so the probe is deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import pandas as pd

from geoxai.evaluation import Metric, Pair, Plugin, Skip

if TYPE_CHECKING:
    import torch

BRIGHTNESS = (0.6, 1.4)  # RGB scale factors (clipped to [0, 1]): under- and over-exposure
GAMMA = (0.5, 2.0)  # out = in ** gamma: lifted shadows, crushed shadows
WARM = (1.15, 1.0, 0.85)  # per-channel white-balance gains: low sun, tungsten
COOL = (0.85, 1.0, 1.15)  # overcast, shade
PROBES: tuple[tuple[str, str, Any], ...] = (
    *(("brightness", f"x{f:g}", f) for f in BRIGHTNESS),
    *(("gamma", f"gamma {g:g}", g) for g in GAMMA),
    ("temperature", "warm", WARM),
    ("temperature", "cool", COOL),
)
FAMILIES = ("brightness", "gamma", "temperature")
SPEARMAN = "spearman_abs_delta_L_cosine"
MIN_QUERIES = 3  # fewer queries give no meaningful rank correlation or bootstrap over queries


def photometric_change(image: torch.Tensor, family: str, level: float | tuple[float, float, float]) -> torch.Tensor:
    """One probe change of images [..., 3, H, W] in [0, 1] (a torch tensor), clipped to [0, 1]."""
    import torch

    if family == "brightness":
        changed = image * float(level)
    elif family == "gamma":
        changed = image.clamp(0.0, 1.0) ** float(level)
    elif family == "temperature":
        changed = image * torch.tensor(level, dtype=image.dtype, device=image.device).view(3, 1, 1)
    else:
        raise ValueError(f"unknown photometric change {family!r}")
    return changed.clamp(0.0, 1.0)


class LightingPlugin(Plugin):
    name = "lighting"
    headline = ("abs_delta_L", "probe_cosine_brightness")  # what the report's summary shows
    version = "1"
    description = ("Illumination change (CIELAB L*) between originals and images beside descriptor cosine, and the "
                   "embedder's descriptor under brightness, gamma and colour-temperature changes (F4)")
    needs = ("lab", "descriptor")
    metrics = {
        "delta_L": Metric("mean CIELAB L* of the image minus the original's (0-100 scale; positive: brighter)",
                          None, "L*"),
        "abs_delta_L": Metric("absolute difference of mean CIELAB L* between image and original: how much the "
                              "illumination changed", None, "L*"),
        "delta_contrast": Metric("standard deviation of CIELAB L* of the image minus the original's (positive: "
                                 "more contrast, e.g. hard sun and shade)", None, "L*"),
        "cosine": Metric("cosine similarity of the image's descriptor to its original's", True),
        "probe_cosine_brightness": Metric(
            "cosine of the original's descriptor to that of the original with RGB scaled by 0.6 and by 1.4 "
            "(mean of both); baselines: another place's original (shuffled), a real re-visit (reference)", True),
        "probe_cosine_gamma": Metric(
            "cosine of the original's descriptor to that of the original under gamma 0.5 and 2.0 (mean of both); "
            "baselines: another place's original (shuffled), a real re-visit (reference)", True),
        "probe_cosine_temperature": Metric(
            "cosine of the original's descriptor to that of the original under a warm and a cool white-balance "
            "shift (mean of both); baselines: another place's original (shuffled), a real re-visit (reference)", True),
        "probe_top1_stability": Metric(
            "percent of the six photometric changes of the original whose nearest database image is the "
            "unchanged original's; baselines: another place's original (shuffled), a real re-visit (reference)",
            True, "%"),
        SPEARMAN: Metric("Spearman rank correlation between abs_delta_L and cosine over the pairing's pairs (CI: "
                         "bootstrap over queries); near 0: the descriptor ignores how much the light changed, "
                         "negative: larger lighting changes lower the cosine", None),
    }

    # ------------------------------------------------------------------------------ score
    def score(self, pairs: list[Pair], ctx: Any) -> Iterable[dict]:
        has_descriptors = "descriptor" in ctx.artifacts
        descriptor = self._descriptor_lookup(pairs, ctx) if has_descriptors else {}
        records = []
        for pair in pairs:
            a, b = ctx.artifact("lab", pair.original), ctx.artifact("lab", pair.other)
            values: dict[str, float | Skip] = {}
            if a is None or b is None:
                reason = f"no colour statistics for {(pair.original if a is None else pair.other).name}"
                values.update(delta_L=Skip(reason), abs_delta_L=Skip(reason), delta_contrast=Skip(reason))
            else:
                delta = float(b[0]) - float(a[0])
                values.update(delta_L=delta, abs_delta_L=abs(delta), delta_contrast=float(b[1]) - float(a[1]))
            values["cosine"] = self._cosine(descriptor, pair.original, pair.other) if has_descriptors else \
                Skip("no descriptors in this evaluation")
            records.append(pair.record(**values))
        records.extend(self._probe(pairs, ctx, descriptor))
        return records

    @staticmethod
    def _descriptor_lookup(pairs: list[Pair], ctx: Any) -> dict[Path, np.ndarray]:
        """Descriptor of every image of the pairs, read once."""
        paths = sorted({p for pair in pairs for p in (pair.original, pair.other)})
        return dict(zip(paths, ctx.descriptors(paths), strict=True))

    @staticmethod
    def _cosine(descriptor: Mapping[Path, np.ndarray], a: Path, b: Path) -> float | Skip:
        u, v = descriptor.get(a), descriptor.get(b)
        if u is None or v is None or not (np.isfinite(u).all() and np.isfinite(v).all()):
            return Skip("no descriptor for one of the images")
        return float(np.dot(u, v))

    # ------------------------------------------------------------------------------ probe
    def _probe(self, pairs: list[Pair], ctx: Any, descriptor: Mapping[Path, np.ndarray]) -> list[dict]:
        """Per original: descriptor cosine and top-1 stability under the photometric changes, with the
        shuffled (another place's original) and reference (a real re-visit) baselines."""
        original_of: dict[str, Path] = {}
        for pair in pairs:
            original_of.setdefault(pair.query_id, pair.original)
        queries = sorted(original_of)
        partner_of = {pair.query_id: pair.partner for pair in pairs if pair.pairing == "shuffled"}
        reference_of = {pair.query_id: pair.other for pair in pairs if pair.pairing == "reference"}
        probe_names = [f"probe_cosine_{family}" for family in FAMILIES] + ["probe_top1_stability"]

        if ctx.embedder_provider is None or "descriptor" not in ctx.artifacts:
            reason = "no embedder in this evaluation (the probe embeds photometrically changed originals)"
            return [{"query_id": q, "sample": -1, "pairing": "generated", **{m: Skip(reason) for m in probe_names}}
                    for q in queries]

        originals = [original_of[q] for q in queries]
        base = np.stack([descriptor[p] for p in originals]) if originals else np.zeros((0, 1), np.float32)
        changed = self._embed_changes(originals, ctx)  # [Q, len(PROBES), dim]; NaN rows for unreadable
        top1 = self._top1(ctx, base, changed, [reference_of.get(q) for q in queries],
                          [original_of.get(partner_of.get(q, "")) for q in queries])

        records = []
        families = np.array([family for family, _, _ in PROBES])
        for i, q in enumerate(queries):
            values: dict[str, float | Skip] = {}
            ok = np.isfinite(base[i]).all() and np.isfinite(changed[i]).all()
            cosines = changed[i] @ base[i] if ok else None
            for family in FAMILIES:
                values[f"probe_cosine_{family}"] = float(cosines[families == family].mean()) if ok else \
                    Skip("the original could not be read or embedded")
            values["probe_top1_stability"] = top1["generated"][i] if ok else \
                Skip("the original could not be read or embedded")
            records.append({"query_id": q, "sample": -1, "pairing": "generated", **values})
            for pairing, other in (("shuffled", original_of.get(partner_of.get(q, ""))),
                                   ("reference", reference_of.get(q))):
                if other is None:
                    continue
                cosine = self._cosine(descriptor, original_of[q], other)
                baseline = {f"probe_cosine_{family}": cosine for family in FAMILIES}
                baseline["probe_top1_stability"] = top1[pairing][i]
                records.append({"query_id": q, "sample": -1, "pairing": pairing, **baseline})
        return records

    @staticmethod
    def _embed_changes(originals: list[Path], ctx: Any) -> np.ndarray:
        """Descriptors [Q, len(PROBES), dim] of every change of every original, embedded in batches."""
        import torch

        from geoxai.data.images import resize_center_crop

        embedder = ctx.embedder
        size, dim = int(embedder.image_size), int(embedder.dim)
        out = np.full((len(originals), len(PROBES), dim), np.nan, dtype=np.float32)
        per_batch = max(1, int(getattr(ctx.embedder_provider, "batch_size", 32)) // len(PROBES))
        for start in range(0, len(originals), per_batch):
            rows, images = [], []
            for row in range(start, min(start + per_batch, len(originals))):
                image = ctx.image(originals[row])
                if image is None:
                    continue
                tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
                images += [resize_center_crop(photometric_change(tensor, family, level), size)
                           for family, _, level in PROBES]
                rows.append(row)
            if not rows:
                continue
            found = embedder.embed(torch.stack(images)).float().cpu().numpy()
            found /= np.linalg.norm(found, axis=1, keepdims=True).clip(min=1e-12)
            out[rows] = found.reshape(len(rows), len(PROBES), dim)
        return out

    @staticmethod
    def _top1(ctx: Any, base: np.ndarray, changed: np.ndarray, references: list[Path | None],
              partners: list[Path | None]) -> dict[str, list[float | Skip]]:
        """Per original and pairing: percent of images whose nearest database image is the original's
        (generated: the six changes; shuffled: the partner's original; reference: the reference photo)."""
        count = len(base)
        if ctx.database is None:
            skip = Skip("no --database: top-1 stability needs database images to retrieve")
            return {p: [skip] * count for p in ("generated", "shuffled", "reference")}
        from geoxai.retrieval import search

        db = database_descriptors(ctx)
        db = db[np.isfinite(db).all(axis=1)]
        if len(db) == 0 or count == 0:
            skip = Skip("no readable database image")
            return {p: [skip] * count for p in ("generated", "shuffled", "reference")}
        extra = sorted({p for p in (*references, *partners) if p is not None})
        extra_desc = dict(zip(extra, ctx.descriptors(extra), strict=True)) if extra else {}
        queries = np.concatenate([base, changed.reshape(-1, base.shape[1]),
                                  np.stack([extra_desc[p] for p in extra]) if extra else base[:0]])
        finite = np.isfinite(queries).all(axis=1)
        top = np.full(len(queries), -1, dtype=np.int64)
        if finite.any():
            top[finite] = search(db, queries[finite], 1)[1][:, 0]
        own, moved = top[:count], top[count:count + changed.shape[0] * changed.shape[1]].reshape(count, -1)
        of_extra = dict(zip(extra, top[count + moved.size:], strict=True))
        result: dict[str, list[float | Skip]] = {"generated": [], "shuffled": [], "reference": []}
        unreadable = Skip("the original could not be read or embedded")
        for i in range(count):
            if own[i] < 0:
                for key in result:
                    result[key].append(unreadable)
                continue
            result["generated"].append(100.0 * float(np.mean(moved[i] == own[i])) if (moved[i] >= 0).all()
                                       else unreadable)
            for key, other in (("shuffled", partners[i]), ("reference", references[i])):
                found = of_extra.get(other, -1) if other is not None else -1
                result[key].append(100.0 * float(found == own[i]) if found >= 0 else
                                   Skip("no descriptor for the baseline image"))
        return result

    # ------------------------------------------------------------------------------ summary
    def summarize(self, records: pd.DataFrame, ctx: Any) -> pd.DataFrame:
        """The default rows plus, per pairing, Spearman's rho between abs_delta_L and cosine over pairs,
        with a 95% CI from a seeded bootstrap over queries (their pairs resampled together)."""
        from geoxai.statistics import summarize_records

        summary = summarize_records(records, seed=ctx.seed)
        rows = [row for pairing in ("generated", "shuffled", "reference")
                if (row := spearman_row(records, pairing, ctx.seed)) is not None]
        return pd.concat([summary, pd.DataFrame(rows, columns=summary.columns)], ignore_index=True) if rows \
            else summary


def spearman_row(records: pd.DataFrame, pairing: str, seed: int) -> dict[str, Any] | None:
    """The summary row of Spearman's rho (abs_delta_L vs cosine) over one pairing's pairs, with a CI from
    a bootstrap over queries; None for a baseline pairing with too few queries."""
    from geoxai.statistics import rank_correlation_row

    return rank_correlation_row(records, "abs_delta_L", "cosine", pairing, seed, SPEARMAN, MIN_QUERIES)


def database_descriptors(ctx: Any) -> np.ndarray:
    """Descriptors of the database images (the runner computes them whenever a database is given)."""
    return ctx.descriptors(ctx.database.paths)