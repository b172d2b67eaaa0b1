"""Figures of an evaluation report, each a PNG (150 dpi) with the data it was drawn from as CSV.

Figures are drawn on ``matplotlib.figure.Figure`` objects (the Agg canvas, no pyplot state), so a
report can be built inside any process, GUI or not. A figure whose data is absent is not drawn;
the caller gets the reason so the report can say what is missing rather than silently omit it.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from geoxai.files import atomic_write_bytes, atomic_write_text
from geoxai.report.evaluations import PAIRINGS, Evaluation
from geoxai.report.tables import tidy_summary

DPI = 150
# One colour per pairing across every figure: the measurement stands out, baselines recede.
PAIRING_COLORS = {"generated": "#1f77b4", "shuffled": "#8c8c8c", "reference": "#2ca02c", "chance": "#d62728"}
PAIRING_LINES = {"generated": "-", "shuffled": "--", "reference": ":", "chance": "-."}
_RECALL_METRIC = re.compile(r"^recall@(\d+)$")


@dataclass
class FigureFile:
    """A written figure: its PNG, its data (CSV) and a sentence saying what it shows."""

    name: str
    png: Path
    data: Path
    caption: str


def _save(fig: Figure, data: pd.DataFrame, folder: Path, name: str, caption: str) -> FigureFile:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)  # constrained layout already fits the labels
    png, csv = folder / f"{name}.png", folder / f"{name}.csv"
    atomic_write_bytes(png, buffer.getvalue())
    atomic_write_text(csv, data.to_csv(index=False))
    return FigureFile(name=name, png=png, data=csv, caption=caption)


def _pairing_order(pairings: Sequence[str]) -> list[str]:
    return sorted(set(pairings), key=lambda p: (PAIRINGS.index(p) if p in PAIRINGS else len(PAIRINGS), p))


def _arrow(higher_is_better: object) -> str:
    return " ↑" if higher_is_better is True else " ↓" if higher_is_better is False else ""


# -------------------------------------------------------------------------- per-plugin metrics
def plugin_metrics_figure(evaluations: Sequence[Evaluation], plugin: str, folder: Path,
                          file_stem: str | None = None) -> FigureFile | None:
    """Each metric of ``plugin``: generated mean with its CI beside shuffled and reference, per evaluation.

    One panel per metric (metrics have their own scales); evaluations along x in the order given.
    """
    data = tidy_summary(evaluations)
    data = data[(data["plugin"] == plugin) & data["mean"].notna()].reset_index(drop=True)
    if data.empty:
        return None
    metrics = list(dict.fromkeys(data["metric"]))
    labels = [e.label for e in evaluations]
    pairings = _pairing_order(data["pairing"])
    ncols = min(4, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    width = max(3.2, 0.9 * len(labels) + 1.6)
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        fig = Figure(figsize=(width * ncols, 3.2 * nrows + 0.6), dpi=DPI, layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        offsets = np.linspace(-0.25, 0.25, len(pairings)) if len(pairings) > 1 else np.zeros(1)
        for ax, metric in zip(axes, metrics, strict=False):
            rows = data[data["metric"] == metric]
            for offset, pairing in zip(offsets, pairings, strict=True):
                sub = rows[rows["pairing"] == pairing].set_index("evaluation").reindex(labels)
                x = np.arange(len(labels)) + offset
                low = (sub["mean"] - sub["ci_low"]).clip(lower=0).fillna(0).to_numpy()
                high = (sub["ci_high"] - sub["mean"]).clip(lower=0).fillna(0).to_numpy()
                ax.errorbar(x, sub["mean"].to_numpy(), yerr=np.vstack([low, high]), fmt="o", capsize=3,
                            color=PAIRING_COLORS.get(pairing), label=pairing, markersize=6 if
                            pairing == "generated" else 4.5)
            hib = next((v for v in rows["higher_is_better"] if v is not None), None)
            ax.set_title(metric + _arrow(hib))
            ax.set_xticks(np.arange(len(labels)), labels, rotation=20 if len(labels) > 3 else 0)
            ax.set_xlim(-0.6, len(labels) - 0.4)
            ax.grid(axis="x", visible=False)  # a vertical line would cut through each group of points
        for ax in axes[len(metrics):]:
            ax.set_visible(False)
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside upper center", ncols=len(pairings), frameon=False)
    caption = (f"Plugin {plugin}: mean over queries with its 95% CI, generated beside its chance level "
               f"(shuffled) and a real re-visit (reference), per evaluation.")
    return _save(fig, data, folder, file_stem or f"{plugin}_metrics", caption)


# ----------------------------------------------------------------------- lighting vs descriptor
def _find_metric(evaluation: Evaluation, plugin: str, metric: str, prefix: str | None = None) -> str | None:
    metrics = evaluation.metrics(plugin)
    if metric in metrics:
        return metric
    if prefix:
        return next((m for m in metrics if m.lower().startswith(prefix.lower())), None)
    return None


def _pair_values(evaluation: Evaluation, plugin: str, x_metric: str, y_metric: str) -> pd.DataFrame | None:
    """x (from ``plugin``) and y (same plugin first, else any plugin) per (query, sample, pairing)."""
    records = evaluation.records[evaluation.records["value"].notna()]
    x_name = _find_metric(evaluation, plugin, x_metric, prefix="delta_l" if x_metric == "delta_L" else None)
    if x_name is None:
        return None
    y_plugin = plugin if y_metric in evaluation.metrics(plugin) else next(
        (p for p in evaluation.plugins if y_metric in evaluation.metrics(p)), None)
    if y_plugin is None:
        return None
    keys = ["query_id", "sample", "pairing"]
    x = records[(records["plugin"] == plugin) & (records["metric"] == x_name)]
    y = records[(records["plugin"] == y_plugin) & (records["metric"] == y_metric)]
    x = x.groupby(keys, as_index=False)["value"].mean().rename(columns={"value": x_name})
    y = y.groupby(keys, as_index=False)["value"].mean().rename(columns={"value": f"{y_plugin} {y_metric}"})
    pairs = x.merge(y, on=keys)
    if pairs.empty:
        return None
    pairs.insert(0, "evaluation", evaluation.label)
    return pairs.rename(columns={x_name: "x", f"{y_plugin} {y_metric}": "y"}).assign(
        x_metric=f"{plugin} {x_name}", y_metric=f"{y_plugin} {y_metric}")


def lighting_scatter_figure(evaluations: Sequence[Evaluation], folder: Path, plugin: str = "lighting",
                            metrics: tuple[str, str] = ("delta_L", "cosine")) -> FigureFile | None:
    """L* change against descriptor cosine over (original, image) pairs, with Spearman's rho.

    A descriptor that ignores lighting keeps a high cosine whatever the L* change: a rank
    correlation near 0 is the interesting outcome. ``metrics`` = (x metric of ``plugin``, y metric);
    the default x also matches any metric named ``delta_l...``.
    """
    frames = [f for e in evaluations if (f := _pair_values(e, plugin, *metrics)) is not None]
    if not frames:
        return None
    data = pd.concat(frames, ignore_index=True)
    labels = list(dict.fromkeys(data["evaluation"]))
    pairings = _pairing_order(data["pairing"])
    palette = {p: PAIRING_COLORS.get(p, "#9467bd") for p in pairings}
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        fig = Figure(figsize=(4.6 * len(labels), 4.4), dpi=DPI, layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(labels), squeeze=False, sharey=True)).ravel()
        for ax, label in zip(axes, labels, strict=True):
            sub = data[data["evaluation"] == label].copy()
            rhos = {}
            for pairing in pairings:
                pts = sub[sub["pairing"] == pairing]
                if len(pts) >= 3 and pts["x"].nunique() > 1 and pts["y"].nunique() > 1:
                    rhos[pairing] = (spearmanr(pts["x"], pts["y"]).statistic, len(pts))
            names = {p: f"{p}: ρ = {rhos[p][0]:.2f} (n={rhos[p][1]})" if p in rhos else f"{p}: too few pairs"
                     for p in pairings}
            sub["series"] = sub["pairing"].map(names)
            sns.scatterplot(data=sub, x="x", y="y", hue="series", hue_order=[names[p] for p in pairings], ax=ax,
                            s=22, alpha=0.75, palette={names[p]: palette[p] for p in pairings}, edgecolor="none")
            headline = next((p for p in pairings if p in rhos), None)
            title = (f"{label}\nSpearman ρ = {rhos[headline][0]:.2f} ({headline}, n={rhos[headline][1]})"
                     if headline else f"{label}\nSpearman ρ: too few pairs")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel(f"{sub['x_metric'].iloc[0]} (L* change)")
            ax.set_ylabel(sub["y_metric"].iloc[0])
            if ax.get_legend() is not None:
                sns.move_legend(ax, "upper center", bbox_to_anchor=(0.5, -0.16), title="Spearman per pairing",
                                fontsize=8, title_fontsize=8, frameon=False)  # below the axes: no point hidden
    x_name, y_name = data["x_metric"].iloc[0], data["y_metric"].iloc[0]
    caption = (f"{x_name} against {y_name} over (original, image) pairs; Spearman's rank correlation in the "
               f"titles (generated) and legends (every pairing): a descriptor that ignores lighting shows no trend.")
    return _save(fig, data, folder, f"{plugin}_vs_{metrics[1]}".replace("@", "at"), caption)


# --------------------------------------------------------------------------------- recall@N
def recall_curve_figure(evaluations: Sequence[Evaluation], folder: Path,
                        plugin: str = "recall") -> FigureFile | None:
    """recall@N against N per evaluation (colour) and pairing (line style), with 95% CI bands."""
    data = tidy_summary(evaluations)
    data = data[(data["plugin"] == plugin) & data["mean"].notna()].copy()
    data["N"] = data["metric"].map(lambda m: int(match[1]) if (match := _RECALL_METRIC.match(m)) else None)
    data = data[data["N"].notna()].astype({"N": int})
    if data["N"].nunique() < 2:
        return None
    labels = [e.label for e in evaluations if (data["evaluation"] == e.label).any()]
    colors = dict(zip(labels, sns.color_palette("deep" if len(labels) <= 10 else "husl", len(labels)), strict=True))
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        fig = Figure(figsize=(6.4, 4.2), dpi=DPI, layout="constrained")
        ax = fig.subplots()
        for label in labels:
            for pairing in _pairing_order(data["pairing"]):
                sub = data[(data["evaluation"] == label) & (data["pairing"] == pairing)].sort_values("N")
                if sub.empty:
                    continue
                ax.plot(sub["N"], sub["mean"], PAIRING_LINES.get(pairing, "-"), marker="o", markersize=4,
                        color=colors[label], label=f"{label} · {pairing}")
                if sub["ci_low"].notna().all():
                    ax.fill_between(sub["N"], sub["ci_low"], sub["ci_high"], color=colors[label], alpha=0.12,
                                    linewidth=0)
        ns = sorted(data["N"].unique())
        ax.set_xticks(ns)
        ax.set_xlabel("N")
        ax.set_ylabel("recall@N")
        ax.set_title(f"{plugin}: recall@N (line style = pairing, colour = evaluation)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    caption = ("recall@N of the generations used as queries, per evaluation (colour) and pairing (solid = "
               "generated, dashed = shuffled, dotted = reference, dash-dot = analytic chance); bands = 95% CI.")
    return _save(fig, data, folder, f"{plugin}_at_n", caption)
