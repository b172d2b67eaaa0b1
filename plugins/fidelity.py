"""``fidelity``: do generations closely resemble their original? (thesis finding F1)

Per pair, how close the image is to its original in pixels and perceptually: PSNR and SSIM
(torchmetrics, pixels in [0, 1] after ``ctx.aligned``) and LPIPS (AlexNet; skipped, with the
reason, when its backbone weights are not in the torch hub cache). Per set, how close the
distribution of generations is to the distribution of originals: the Fréchet distance of the
embedder's own descriptors (``fd_descriptor``), and, when their weights are cached, FID and KID
(Inception v3) and the Fréchet distance of DINOv2 features (``fd_dinov2``).

Baselines: ``shuffled`` (the generation of a query at another place: what any image of the world
scores, the chance level) and ``reference`` (another real photo of the same place: what a real
re-visit scores). Set-level metrics compare the originals with the generations (``generated``)
and with the reference photos (``reference``); the shuffled set holds the same generations, so it
has no set-level row.

PSNR of identical images is infinite; it is capped at 100 dB (``PSNR_CAP``), so an identity run
reads 100 and means stay finite. Set-level values come without a CI (a bootstrap of a Fréchet
distance resamples duplicates and is biased), with the set size in ``n_queries``; sets smaller
than 2 x the feature dimension are reported with a notice that the value is unstable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch

from geoxai.evaluation import Metric, Model, Pair, Plugin, Skip
from geoxai.evaluation.perceptual import (
    DINOV2_MODEL,
    INCEPTION_URL,
    LPIPS_MODELS,
    STABLE_SAMPLES_PER_DIM,
    evaluation_device,
    frechet_distance,
    frechet_unstable,
    lpips_model,
    lpips_or_skips,
    unavailable_reason,
)

PSNR_CAP = 100.0  # dB; identical images (MSE 0) would be infinite
SSIM_WINDOW = 11  # torchmetrics' default Gaussian window (sigma 1.5)
LPIPS_NET = "alex"
BATCH = 16
PAIR_METRICS = ("psnr", "ssim", "lpips")
SET_METRICS = ("fd_descriptor", "fid", "kid", "fd_dinov2")


class FidelityPlugin(Plugin):
    name = "fidelity"
    headline = ("lpips", "fid", "psnr")  # what the report's summary shows
    version = "1"
    description = ("How closely generations resemble their original: PSNR, SSIM, LPIPS per pair; Fréchet "
                   "distances (descriptor, Inception, DINOv2) and KID per set")
    needs = ("descriptor", "image")
    metrics = {
        "psnr": Metric(f"peak signal-to-noise ratio to the original, 10 log10(1 / MSE) over RGB pixels in [0, 1], "
                       f"capped at {PSNR_CAP:g} dB (identical images)", True, "dB"),
        "ssim": Metric("structural similarity to the original (torchmetrics: Gaussian 11-px window, sigma 1.5, "
                       "data range 1), mean over the image", True),
        "lpips": Metric("LPIPS distance to the original (AlexNet backbone, torchmetrics' linear layers; 0 for "
                        "identical images)", False),
        "fd_descriptor": Metric("Fréchet distance between the embedder's descriptors of the originals and of the "
                                "images (set level, the embedder's own descriptor space)", False),
        "fid": Metric("Fréchet Inception distance between the originals and the images (set level; torchmetrics, "
                      "torch-fidelity's Inception v3, 2048-d pool features)", False),
        "kid": Metric("kernel Inception distance between the originals and the images (set level; torchmetrics, "
                      "mean over 100 subsets; unbiased, usable on small sets)", False),
        "fd_dinov2": Metric(f"Fréchet distance between DINOv2 CLS features ({DINOV2_MODEL}) of the originals and "
                            "of the images (set level)", False),
    }
    models = (
        *LPIPS_MODELS,
        Model("Inception v3 FID weights (torch-fidelity)", "Apache-2.0", INCEPTION_URL),
        Model(f"DINOv2 ViT-S/14 ({DINOV2_MODEL})", "Apache-2.0", f"https://huggingface.co/{DINOV2_MODEL}"),
    )

    def __init__(self) -> None:
        self._sets: dict[str, list[Path]] = {}

    # ------------------------------------------------------------------------------ per pair
    def score(self, pairs: list[Pair], ctx: Any) -> Iterable[dict]:
        lpips_reason = unavailable_reason(lpips_model, LPIPS_NET)
        if lpips_reason:
            ctx.notice(f"fidelity: lpips skipped: {lpips_reason}")
        else:
            lpips_model(LPIPS_NET).to(evaluation_device(ctx))
        records: list[dict] = []
        buckets: dict[tuple[int, ...], list[tuple[Pair, np.ndarray, np.ndarray]]] = {}
        for pair in pairs:
            images = ctx.aligned(pair.original, pair.other)
            if images is None:
                records.append(pair.record(**{m: Skip("image unreadable") for m in PAIR_METRICS}))
                continue
            bucket = buckets.setdefault(images[0].shape, [])
            bucket.append((pair, *images))
            if len(bucket) >= BATCH:
                records.extend(self._score_batch(bucket, lpips_reason))
                bucket.clear()
        for bucket in buckets.values():
            if bucket:
                records.extend(self._score_batch(bucket, lpips_reason))

        generated = [p for p in pairs if p.pairing == "generated"]
        reference = [p for p in pairs if p.pairing == "reference"]
        self._sets = {"originals": sorted({p.original for p in generated}),
                      "generated": [p.other for p in generated],
                      "reference_originals": sorted({p.original for p in reference}),
                      "reference": [p.other for p in reference]}
        return records

    @staticmethod
    def _score_batch(batch: list[tuple[Pair, np.ndarray, np.ndarray]], lpips_reason: str | None) -> list[dict]:
        """PSNR, SSIM and LPIPS of same-size pairs at once."""
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

        original = torch.from_numpy(np.stack([a for _, a, _ in batch])).permute(0, 3, 1, 2)
        other = torch.from_numpy(np.stack([b for _, _, b in batch])).permute(0, 3, 1, 2)
        psnr = peak_signal_noise_ratio(other, original, data_range=1.0, reduction="none", dim=(1, 2, 3))
        psnr = psnr.clamp(max=PSNR_CAP).tolist()
        if min(original.shape[-2:]) >= SSIM_WINDOW:
            ssim: list[float | Skip] = structural_similarity_index_measure(
                other, original, data_range=1.0, reduction="none").tolist()
        else:
            ssim = [Skip(f"image smaller than the {SSIM_WINDOW}-px SSIM window")] * len(batch)
        lpips = lpips_or_skips(original.permute(0, 2, 3, 1), other.permute(0, 2, 3, 1), lpips_reason, LPIPS_NET)
        return [pair.record(psnr=p, ssim=s, lpips=d)
                for (pair, _, _), p, s, d in zip(batch, psnr, ssim, lpips, strict=True)]

    # ------------------------------------------------------------------------------ per set
    def summarize(self, records: pd.DataFrame, ctx: Any) -> pd.DataFrame:
        """Per-pair metrics as usual, plus one row per set-level metric and pairing."""
        from geoxai.statistics import summarize_records

        summary = summarize_records(records, seed=ctx.seed)
        rows = self._set_rows(ctx)
        if not rows:
            return summary
        return pd.concat([summary, pd.DataFrame(rows)], ignore_index=True)

    def _set_rows(self, ctx: Any) -> list[dict[str, Any]]:
        sets = self._sets
        if not sets.get("generated"):
            return []
        comparisons = [("generated", sets["originals"], sets["generated"])]
        if sets.get("reference"):
            comparisons.append(("reference", sets["reference_originals"], sets["reference"]))
        rows: list[dict[str, Any]] = []

        # the embedder's own descriptor space
        dim = int(ctx.embedder.dim)
        for pairing, real, other in comparisons:
            a, b = ctx.descriptors(real), ctx.descriptors(other)
            rows.append(_fd_row("fd_descriptor", pairing, a, b, dim, ctx))

        # Inception (FID, KID)
        from geoxai.evaluation import perceptual

        reason = unavailable_reason(perceptual.inception_model)
        if reason:
            ctx.notice(f"fidelity: fid and kid skipped: {reason}")
            rows += [_skipped_row("fid"), _skipped_row("kid")]
        else:
            perceptual.inception_model().to(evaluation_device(ctx))
            features = _features(perceptual.inception_features, ctx, sets)
            for pairing, real, other in comparisons:
                a, b = _stack(features, real), _stack(features, other)
                rows.append(_fd_row("fid", pairing, a, b, perceptual.INCEPTION_DIM, ctx,
                                    compute=perceptual.fid_from_features))
                if len(a) >= 2 and len(b) >= 2:
                    kid, _ = perceptual.kid_from_features(a, b, seed=ctx.seed)
                    rows.append(_value_row("kid", pairing, kid, len(b)))
                else:
                    rows.append(_skipped_row("kid", pairing))

        # DINOv2
        reason = unavailable_reason(perceptual.dinov2_model)
        if reason:
            ctx.notice(f"fidelity: fd_dinov2 skipped: {reason}")
            rows.append(_skipped_row("fd_dinov2"))
        else:
            model = perceptual.dinov2_model().to(evaluation_device(ctx))
            features = _features(perceptual.dinov2_features, ctx, sets)
            for pairing, real, other in comparisons:
                rows.append(_fd_row("fd_dinov2", pairing, _stack(features, real), _stack(features, other),
                                    int(model.config.hidden_size), ctx))
        return rows


# ---------------------------------------------------------------------------------- helpers
def _value_row(metric: str, pairing: str, value: float, n: int) -> dict[str, Any]:
    return {"metric": metric, "pairing": pairing, "mean": float(value), "ci_low": np.nan, "ci_high": np.nan,
            "n_queries": int(n), "n_skipped": 0}


def _skipped_row(metric: str, pairing: str = "generated") -> dict[str, Any]:
    return {"metric": metric, "pairing": pairing, "mean": np.nan, "ci_low": np.nan, "ci_high": np.nan,
            "n_queries": 0, "n_skipped": 1}


def _fd_row(metric: str, pairing: str, a: np.ndarray, b: np.ndarray, dim: int, ctx: Any,
            compute=frechet_distance) -> dict[str, Any]:
    """A Fréchet distance row; a set too small for a stable estimate is said in a notice."""
    a, b = a[np.isfinite(a).all(axis=1)], b[np.isfinite(b).all(axis=1)]
    if len(a) < 2 or len(b) < 2:
        ctx.notice(f"fidelity: {metric} ({pairing}) skipped: needs at least 2 images per set "
                   f"({len(a)} originals, {len(b)} images)")
        return _skipped_row(metric, pairing)
    if frechet_unstable(min(len(a), len(b)), dim):
        ctx.notice(f"fidelity: {metric} ({pairing}) compares {len(a)} originals with {len(b)} images of {dim} "
                   f"dimensions, fewer than {STABLE_SAMPLES_PER_DIM} x {dim} per set: the value is reported but "
                   "unstable (biased upwards; compare it only between sets of the same size)")
    return _value_row(metric, pairing, compute(a, b), len(b))


def _features(extract, ctx: Any, sets: dict[str, list[Path]]) -> dict[Path, np.ndarray]:
    """Features of every distinct image of the sets (unreadable images left out)."""
    paths = sorted({p for group in sets.values() for p in group})
    images = {p: ctx.image(p) for p in paths}
    readable = [p for p in paths if images[p] is not None]
    values = extract([images[p] for p in readable])
    return dict(zip(readable, values, strict=True))


def _stack(features: dict[Path, np.ndarray], paths: list[Path]) -> np.ndarray:
    rows = [features[p] for p in paths if p in features]
    dim = len(next(iter(features.values()))) if features else 0
    return np.stack(rows) if rows else np.zeros((0, dim))
