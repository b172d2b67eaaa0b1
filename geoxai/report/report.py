"""``write_report``: EVAL folders in, paper-ready tables, figures, image grids and a static page out.

Everything is derived from what the evaluations wrote (no model, no GPU), so a report can be
rebuilt at any time, e.g. after adding a checkpoint to a comparison. Every file is written
atomically; what could not be made is listed with the reason instead of failing the whole report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from geoxai.errors import GeoxaiError, did_you_mean, setting
from geoxai.files import atomic_save_image, atomic_write_text
from geoxai.report.evaluations import Evaluation, load_evaluation, report_warnings

FORMATS = ("md", "latex", "csv", "html")
_SUFFIX = {"md": ".md", "latex": ".tex", "csv": ".csv"}
_RESERVED = {"summary", "paired", "index"}


@dataclass
class ReportResult:
    """What a report wrote (paths under ``out``) and what it left out, with the reason for each."""

    out: Path
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def index(self) -> Path | None:
        page = self.out / "index.html"
        return page if page in self.written else None

    def format(self) -> str:
        """A few lines for the terminal: where the report is, what it holds, what is missing and why."""
        groups: dict[str, list[str]] = {}
        for path in self.written:
            relative = path.relative_to(self.out)
            key = relative.parts[0] + "/" if len(relative.parts) > 1 else "page" if path.suffix == ".html" else "tables"
            groups.setdefault(key, []).append(Path(*relative.parts[1:]).as_posix() if len(relative.parts) > 1
                                              else relative.as_posix())
        lines = [f"report in {self.out} ({len(self.written)} files)"]
        for key, names in groups.items():
            shown = ", ".join(names) if len(names) <= 8 else ", ".join(names[:8]) + f", ... ({len(names)} in all)"
            lines.append(f"  {key}: {shown}")
        if self.index is not None:
            lines.append(f"  open {self.index}")
        for what, why in self.skipped:
            lines.append(f"  skipped {what}: {why}")
        return "\n".join(lines)


def _formats(formats: Sequence[str] | str) -> list[str]:
    """Validated formats; a comma-separated string is accepted as the CLI passes it."""
    if isinstance(formats, str):
        formats = formats.split(",")
    chosen = []
    for name in (f.strip().lower() for f in formats):
        if not name:
            continue
        name = {"tex": "latex", "markdown": "md"}.get(name, name)
        if name not in FORMATS:
            raise GeoxaiError(f"unknown report format {name!r}.{did_you_mean(name, list(FORMATS))} "
                              f"Valid formats: {', '.join(FORMATS)}")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise GeoxaiError(f"no report format given; choose from {', '.join(FORMATS)}")
    return chosen


def _safe(name: str) -> str:
    """A file stem from a plugin or evaluation name (no separators, no surprises on any file system)."""
    stem = re.sub(r"[^A-Za-z0-9._@-]+", "_", name).strip("._") or "unnamed"
    return stem


def _unique_labels(evaluations: list[Evaluation]) -> None:
    """Labels name rows and files, so two evaluations must not share one (e.g. two folders named ``eval``)."""
    labels = [e.label for e in evaluations]
    for evaluation, label in zip(evaluations, labels, strict=True):
        parent = evaluation.folder.resolve().parent.name
        if labels.count(label) > 1 and parent:
            evaluation.label = f"{parent}/{label}"
    seen: dict[str, int] = {}
    for evaluation in evaluations:
        count = seen.get(evaluation.label, 0)
        seen[evaluation.label] = count + 1
        if count:
            evaluation.label = f"{evaluation.label} ({count + 1})"


def write_report(evaluations: Sequence[str | Path], out: str | Path,
                 formats: Sequence[str] | str = ("md", "latex", "csv", "html"), *, grid_rows: int = 8,
                 grid_samples: int = 4, n_boot: int = 10_000, seed: int = 0,
                 scatter_metrics: tuple[str, str] = ("delta_L", "cosine")) -> ReportResult:
    """Write the report of ``evaluations`` (EVAL folders, in table-row order; the first is the base
    of paired differences) into ``out``.

    Tables go to ``out/summary``, ``out/<plugin>`` and ``out/paired`` in each format (``md``,
    ``latex`` -> ``.tex``, ``csv``), figures with their data to ``out/figures/``, image grids to
    ``out/grids/``, and with ``html`` a static ``out/index.html`` that shows all of it. Figures and
    grids are written whatever the formats.
    """
    chosen = _formats(formats)
    folders = [Path(e) for e in ([evaluations] if isinstance(evaluations, (str, Path)) else list(evaluations))]
    if not folders:
        raise GeoxaiError("no evaluations given; pass one or more EVAL folders written by `geoxai evaluate --out`")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GeoxaiError(f"{out}: is a file; give a folder for the report (it is created when missing)")
    if grid_rows < 1 or grid_samples < 1:
        raise GeoxaiError(f"{setting('grid_rows')} {grid_rows} / {setting('grid_samples')} {grid_samples}: "
                          "each must be at least 1")
    loaded = [load_evaluation(folder) for folder in folders]
    _unique_labels(loaded)

    from geoxai.report import figures as fig
    from geoxai.report.grids import evaluation_grid
    from geoxai.report.html import index_html
    from geoxai.report.tables import metric_tables, paired_table

    result = ReportResult(out=out)
    out.mkdir(parents=True, exist_ok=True)

    def write(path: Path, text: str) -> None:
        atomic_write_text(path, text)
        result.written.append(path)

    summary, plugin_tables = metric_tables(loaded)
    paired, reasons = paired_table(loaded, n_boot=n_boot, seed=seed)
    if paired is None:
        result.skipped.append(("paired difference", "; ".join(reasons)))
    elif reasons:
        result.skipped.extend(("part of the paired difference", r) for r in reasons)
    warnings = report_warnings(loaded)
    for table in [summary, *plugin_tables, *([paired] if paired is not None else [])]:
        table.warnings = list(warnings)
    for table in plugin_tables:
        table.name = f"plugin_{_safe(table.name)}" if _safe(table.name) in _RESERVED else _safe(table.name)

    table_files: dict[str, list[Path]] = {}
    for table in [summary, *plugin_tables, *([paired] if paired is not None else [])]:
        for name in chosen:
            if name == "html":
                continue
            path = out / f"{table.name}{_SUFFIX[name]}"
            text = {"md": table.to_markdown, "latex": table.to_latex, "csv": table.to_csv}[name]()
            write(path, text)
            table_files.setdefault(table.name, []).append(path)

    figures_dir = out / "figures"
    figures = []
    plugins = list(dict.fromkeys(p for e in loaded for p in e.plugins))
    for plugin in plugins:
        drawn = fig.plugin_metrics_figure(loaded, plugin, figures_dir, file_stem=f"{_safe(plugin)}_metrics")
        if drawn is None:
            result.skipped.append((f"figure {plugin} metrics", "no summary row with a mean"))
        else:
            figures.append(drawn)
    drawn = fig.lighting_scatter_figure(loaded, figures_dir, metrics=scatter_metrics)
    if drawn is None:
        result.skipped.append(("figure lighting vs descriptor", f"the records hold no plugin lighting "
                                                                f"{scatter_metrics[0]} (or delta_l*) paired with a "
                                                                f"{scatter_metrics[1]} value"))
    else:
        figures.append(drawn)
    drawn = fig.recall_curve_figure(loaded, figures_dir)
    if drawn is None:
        result.skipped.append(("figure recall@N", "plugin recall has fewer than two recall@N metrics"))
    else:
        figures.append(drawn)
    for drawn in figures:
        result.written.extend([drawn.png, drawn.data])

    grids, stems = [], set()
    for evaluation in loaded:
        image, text = evaluation_grid(evaluation, rows=grid_rows, samples=grid_samples)
        if image is None:
            result.skipped.append((f"grid {evaluation.label}", text))
            continue
        stem = _safe(evaluation.label)
        stem = next(s for i in range(len(loaded) + 1) if (s := stem if i == 0 else f"{stem}_{i + 1}") not in stems)
        stems.add(stem)
        path = out / "grids" / f"{stem}.png"
        atomic_save_image(path, image)
        result.written.append(path)
        grids.append((path, text))

    if "html" in chosen:
        page = index_html(out, loaded, summary, plugin_tables, paired, reasons, figures, grids,
                          result.skipped, table_files, warnings=warnings)
        write(out / "index.html", page)
    return result
