"""Tables of an evaluation report: what each checkpoint measured, beside its chance level and reference.

A number alone says little: a cosine of 0.6 is good if chance is 0.1 and a real re-visit 0.7, and
poor if chance is 0.55. So every cell of ``generated`` sits beside the ``shuffled`` pairing (chance)
and the ``reference`` pairing (another real photo of the place); a baseline that was not measured
shows "—" instead of disappearing. Cells are ``mean ± half-width of the 95% CI`` over queries, read
from each evaluation's ``summary.csv``. Comparisons between evaluations are paired over the query
photos they share, which removes the (large) variation between places from the difference.

Each table keeps three renderings: formatted strings (Markdown, HTML), LaTeX strings (booktabs,
escaped) and the tidy numbers (CSV), so no format loses precision to another's formatting.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from geoxai.report.evaluations import PAIRINGS, Evaluation
from geoxai.statistics import ONE_QUERY, bootstrap_ci

BASELINE_PAIRINGS = ("generated", "shuffled", "reference")  # always shown; "chance" only when measured
CELL_CAPTION = ("mean ± half-width of the 95% bootstrap CI over queries; shuffled = chance level "
                "(another query's generation), reference = a real re-visit of the place; "
                "↑/↓: higher/lower is better; — = not measured")
PAIRED_CAPTION = ("paired difference B − A over the query photos both evaluations share (per query: mean "
                  "over its samples of the generated pairing), with a 95% percentile bootstrap CI over "
                  "queries; * = the CI excludes 0")


# ----------------------------------------------------------------------------------- formatting
@dataclass(frozen=True)
class _Style:
    """How one output format writes the few symbols a table needs."""

    pm: str
    dash: str
    up: str
    down: str
    minus: str
    latex: bool

    def escape(self, text: str) -> str:
        return latex_escape(text) if self.latex else text

    def numbers(self, text: str) -> str:
        """Cells of numbers only: LaTeX gets a real minus sign instead of a hyphen."""
        return text.replace("-", "$-$") if self.latex else text


TEXT = _Style(pm=" ± ", dash="—", up=" ↑", down=" ↓", minus=" − ", latex=False)
LATEX = _Style(pm=r" $\pm$ ", dash="---", up=r" $\uparrow$", down=r" $\downarrow$", minus=" $-$ ", latex=True)
_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "±": r"$\pm$", "—": "---", "−": "$-$", "↑": r"$\uparrow$", "↓": r"$\downarrow$"}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX table (underscores in metric names would start subscripts)."""
    return "".join(_LATEX_SPECIALS.get(char, char) for char in str(text))


def decimals_for(values: Sequence[float]) -> int:
    """Decimals for one metric's column: 3 up to 1 (cosines, rates), 2 up to 100, then 1.

    One precision per metric keeps a column aligned and comparable across rows.
    """
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    largest = max(finite, default=0.0)
    return 1 if largest >= 100 else 2 if largest > 1 else 3


def format_cell(mean: float, ci_low: float, ci_high: float, decimals: int, style: _Style = TEXT) -> str:
    """``mean ± half-CI``; the mean alone when there is no CI (set-level metrics such as FID)."""
    if mean is None or not math.isfinite(mean):
        return style.dash
    text = f"{mean:.{decimals}f}"
    if ci_low is not None and ci_high is not None and math.isfinite(ci_low) and math.isfinite(ci_high):
        text += f"{style.pm}{(ci_high - ci_low) / 2:.{decimals}f}"
    return style.numbers(text)


def format_difference(diff: float, ci_low: float, ci_high: float, decimals: int, style: _Style = TEXT) -> str:
    """``+0.023 [-0.010, 0.051]``, starred when the CI excludes 0 (a difference the data supports)."""
    if not math.isfinite(diff):
        return style.dash
    text = f"{diff:+.{decimals}f} [{ci_low:.{decimals}f}, {ci_high:.{decimals}f}]"
    return style.numbers(text) + (" *" if ci_low > 0 or ci_high < 0 else "")


def metric_header(metric: str, higher_is_better: bool | None, style: _Style = TEXT) -> str:
    arrow = style.up if higher_is_better is True else style.down if higher_is_better is False else ""
    return style.escape(metric) + arrow


# ---------------------------------------------------------------------------------------- table
@dataclass
class Table:
    """One table in all its renderings; ``name`` is the file stem (``summary``, a plugin, ``paired``)."""

    name: str
    title: str
    caption: str
    display: pd.DataFrame          # formatted cells for Markdown and HTML
    latex_frame: pd.DataFrame      # the same cells written for LaTeX
    data: pd.DataFrame             # tidy numbers for CSV
    notes: list[str] = field(default_factory=list)
    definitions: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # banners above the table and first in its caption

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table; multi-level headers are joined into one line."""
        frame = self.display
        headers = [_flat_header(col) for col in frame.columns]
        index = [" · ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in frame.index]
        cell = lambda text: str(text).replace("|", r"\|")  # noqa: E731
        lines = [f"> **WARNING: {warning}**" for warning in self.warnings] + ([""] if self.warnings else [])
        lines += [f"**{self.title}**", "",
                  "| " + " | ".join([""] + [cell(h) for h in headers]) + " |",
                  "|" + "|".join([":---"] + ["---:"] * len(headers)) + "|"]
        for label, row in zip(index, frame.itertuples(index=False), strict=True):
            lines.append("| " + " | ".join([cell(label)] + [cell(v) for v in row]) + " |")
        lines += ["", f"_{self.caption}_"]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        """A ``table`` float with booktabs rules, ready to paste (needs ``\\usepackage{booktabs}``)."""
        frame = self.latex_frame
        index_levels = frame.index.nlevels
        body = frame.style.to_latex(
            hrules=True, multicol_align="c", multirow_align="naive",
            column_format="l" * index_levels + "r" * frame.shape[1],
            caption=latex_escape("".join(f"WARNING: {w}. " for w in self.warnings) + f"{self.title}: {self.caption}"),
            label=f"tab:geoxai-{_latex_label(self.name)}",
            position="htbp", position_float="centering")
        return "% geoxai report table; needs \\usepackage{booktabs}\n" + body

    def to_csv(self) -> str:
        return self.data.to_csv(index=False)

    def to_html(self) -> str:
        """An HTML fragment (a ``<table>``), escaped, with the caption and notes below it."""
        table = self.display.to_html(border=0, escape=True, classes="report-table", na_rep="—")
        table = table.replace(' halign="left"', "").replace(' valign="top"', "")
        table = table.replace("<thead>", self._colgroups() + "<thead>", 1)
        caption = _html_escape(self.caption)
        notes = "".join(f"<li>{_html_escape(n)}</li>" for n in self.notes)
        banners = "".join(f'<p class="banner">{_html_escape(w)}</p>\n' for w in self.warnings)
        return (f'{banners}<div class="table-wrap">{table}</div>\n<p class="caption">{caption}</p>\n'
                + (f'<ul class="notes">{notes}</ul>\n' if notes else ""))


    def _colgroups(self) -> str:
        """``<colgroup>``s so CSS can draw a rule between metrics (the columns of one metric stay together)."""
        groups = [f'<colgroup span="{self.display.index.nlevels}"></colgroup>']
        columns = list(self.display.columns)
        start = 0
        for i in range(1, len(columns) + 1):
            if i == len(columns) or _group(columns[i]) != _group(columns[start]):
                groups.append(f'<colgroup class="metric" span="{i - start}"></colgroup>')
                start = i
        return "".join(groups)


def _group(column: object) -> object:
    return column[:-1] if isinstance(column, tuple) and len(column) > 1 else column


def _flat_header(column: object) -> str:
    """("recall", "recall@1 ↑", "generated") -> "recall · recall@1 ↑"; baselines keep their pairing only."""
    if not isinstance(column, tuple):
        return str(column)
    parts = [str(p) for p in column if str(p)]
    if len(parts) > 1 and parts[-1] == "generated":
        parts = parts[:-1]
    elif len(parts) > 1 and parts[-1] in PAIRINGS:
        parts = parts[-1:]
    return " · ".join(parts)


def _html_escape(text: str) -> str:
    return html.escape(str(text), quote=True)


def _latex_label(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-:." else "-" for c in name)


# -------------------------------------------------------------------------------- metric tables
def _union(items: Sequence[Sequence[str]]) -> list[str]:
    out: list[str] = []
    for seq in items:
        out.extend(x for x in seq if x not in out)
    return out


def _higher_is_better(evaluations: Sequence[Evaluation], plugin: str, metric: str) -> bool | None:
    for evaluation in evaluations:
        value = evaluation.higher_is_better(plugin, metric)
        if value is not None:
            return value
    return None


def tidy_summary(evaluations: Sequence[Evaluation]) -> pd.DataFrame:
    """All summary rows with an ``evaluation`` column and the half-width of the CI (the CSV tables)."""
    frames = []
    for evaluation in evaluations:
        frame = evaluation.summary.copy()
        frame.insert(0, "evaluation", evaluation.label)
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    data["half_ci"] = (data["ci_high"] - data["ci_low"]) / 2
    columns = ["evaluation", "plugin", "metric", "pairing", "mean", "ci_low", "ci_high", "half_ci",
               "n_queries", "n_skipped", "higher_is_better", "definition"]
    return data[columns + [c for c in data.columns if c not in columns]]


def _pairings_shown(data: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(data["pairing"]))
    extra = [p for p in present if p not in BASELINE_PAIRINGS]
    return list(BASELINE_PAIRINGS) + sorted(extra, key=lambda p: (PAIRINGS.index(p) if p in PAIRINGS else 99, p))


def _cells(evaluations: Sequence[Evaluation], data: pd.DataFrame, columns: list[tuple[str, str]],
           with_plugin_level: bool, style: _Style) -> pd.DataFrame:
    """Rows = evaluations, columns = ([plugin,] metric header, pairing), cells formatted in ``style``.

    Each plugin shows generated, shuffled and reference, plus any other pairing it measured (e.g. an
    analytic chance level of recall), so a baseline one metric lacks reads "—" beside its siblings.
    """
    pairings_of = {p: _pairings_shown(data[data["plugin"] == p]) for p in dict.fromkeys(p for p, _ in columns)}
    lookup = {(r.evaluation, r.plugin, r.metric, r.pairing): r for r in data.itertuples(index=False)}
    header_columns, rows = [], []
    decimals = {}
    for plugin, metric in columns:
        values = data.loc[(data["plugin"] == plugin) & (data["metric"] == metric), "mean"]
        decimals[plugin, metric] = decimals_for(list(values))
    for plugin, metric in columns:
        header = metric_header(metric, _higher_is_better(evaluations, plugin, metric), style)
        for pairing in pairings_of[plugin]:
            header_columns.append(((style.escape(plugin),) if with_plugin_level else ()) + (header, style.escape(pairing)))
    for evaluation in evaluations:
        row = []
        for plugin, metric in columns:
            for pairing in pairings_of[plugin]:
                r = lookup.get((evaluation.label, plugin, metric, pairing))
                row.append(style.dash if r is None else
                           format_cell(r.mean, r.ci_low, r.ci_high, decimals[plugin, metric], style))
        rows.append(row)
    frame = pd.DataFrame(rows, index=[style.escape(e.label) for e in evaluations],
                         columns=pd.MultiIndex.from_tuples(header_columns))
    return frame


def _long_cells(evaluations: Sequence[Evaluation], data: pd.DataFrame, columns: list[tuple[str, str]],
                style: _Style) -> pd.DataFrame:
    """Rows = (plugin, metric header), columns = ([evaluation,] pairing): the summary's layout.

    Metrics run down the page and each evaluation's generated value sits beside its own chance level
    and real reference, so the table stays narrow enough for a paper however many plugins ran.
    """
    pairings = _pairings_shown(data[data.set_index(["plugin", "metric"]).index.isin(columns)])
    lookup = {(r.evaluation, r.plugin, r.metric, r.pairing): r for r in data.itertuples(index=False)}
    several = len(evaluations) > 1
    header = [((style.escape(e.label),) if several else ()) + (style.escape(p),)
              for e in evaluations for p in pairings]
    index, rows = [], []
    for plugin, metric in columns:
        values = data.loc[(data["plugin"] == plugin) & (data["metric"] == metric), "mean"]
        decimals = decimals_for(list(values))
        direction = _higher_is_better(evaluations, plugin, metric)
        index.append((style.escape(plugin), metric_header(metric, direction, style)))
        row = []
        for evaluation in evaluations:
            for pairing in pairings:
                r = lookup.get((evaluation.label, plugin, metric, pairing))
                row.append(style.dash if r is None else format_cell(r.mean, r.ci_low, r.ci_high, decimals, style))
        rows.append(row)
    columns_index = pd.MultiIndex.from_tuples(header) if several else pd.Index([h[0] for h in header])
    if not index:  # no metric has a generated value (e.g. every value skipped): an empty table, said below it
        return pd.DataFrame(columns=columns_index, index=pd.MultiIndex.from_tuples([("", "")])[:0])
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index), columns=columns_index)


def _skip_notes(evaluations: Sequence[Evaluation], plugin: str) -> list[str]:
    """Why some queries have no value: the most common skip reason per metric and evaluation."""
    notes = []
    for evaluation in evaluations:
        status = evaluation.plugin_info(plugin).get("status")
        if status and status != "ok":
            notes.append(f"{evaluation.label}: plugin {plugin} {status} (see the errors section)")
        records = evaluation.records
        skipped = records[(records["plugin"] == plugin) & (records["skip_reason"] != "")]
        for metric, group in skipped.groupby("metric", sort=False):
            reason = group["skip_reason"].value_counts().index[0]
            queries, values = group["query_id"].nunique(), len(group)
            notes.append(f"{evaluation.label}: {metric} skipped for {queries} {'query' if queries == 1 else 'queries'} "
                         f"({values} {'value' if values == 1 else 'values'}), e.g. {reason!r}")
    return notes


def _one_query_notes(evaluations: Sequence[Evaluation]) -> list[str]:
    """Evaluations of a single query: no shuffled pairing (it needs another query) and no CI."""
    return [f"{e.label}: {ONE_QUERY} (no shuffled pairing and no confidence interval)"
            for e in evaluations if e.run.get("queries") == 1]


HEADLINE_METRICS = 2


def _generated_values(data: pd.DataFrame, plugin: str, metric: str) -> bool:
    rows = data[(data["plugin"] == plugin) & (data["metric"] == metric) & (data["pairing"] == "generated")]
    return bool(rows["mean"].notna().any())


def metric_tables(evaluations: Sequence[Evaluation]) -> tuple[Table, list[Table]]:
    """The summary table (every plugin) and one table per plugin, evaluations as rows in the given order."""
    data = tidy_summary(evaluations)
    plugins = _union([e.plugins for e in evaluations])
    plugins = [p for p in plugins if (data["plugin"] == p).any()]
    pairs = [(p, m) for p in plugins for m in _union([e.metrics(p) for e in evaluations])
             if ((data["plugin"] == p) & (data["metric"] == m)).any()]
    definitions = {}
    for plugin, metric in pairs:
        text = next((e.definition(plugin, metric) for e in evaluations if e.definition(plugin, metric)), "")
        if text:
            definitions[f"{plugin} · {metric}"] = text
    # the summary shows each plugin's headline metrics (its first declared ones); the per-plugin
    # tables and summary.csv hold them all
    headline = []
    for plugin in plugins:
        own = [q for q in pairs if q[0] == plugin]
        named = _union([e.headline(plugin) for e in evaluations])
        if named:  # the plugin's own choice, as far as it was measured
            headline += [q for m in named for q in own if q[1] == m and _generated_values(data, *q)]
            continue
        # otherwise metrics with a direction (agreement with the original) first, in declared order,
        # leaving out metrics no evaluation measured (e.g. LPIPS without its weights)
        measured = [q for q in own if _generated_values(data, *q)]
        measured.sort(key=lambda q: _higher_is_better(evaluations, *q) is None)
        headline += measured[:HEADLINE_METRICS]
    summary = Table(
        name="summary", title="Summary", caption=CELL_CAPTION + "; each plugin's headline metrics (all metrics in "
                                                                "the per-plugin tables)",
        display=_long_cells(evaluations, data, headline, TEXT),
        latex_frame=_long_cells(evaluations, data, headline, LATEX),
        data=data, notes=_one_query_notes(evaluations) + ([] if headline else [
            "no metric has a generated value: the per-plugin tables say why each was skipped"]),
        definitions={k: v for k, v in definitions.items() if tuple(k.split(" · ", 1)) in set(headline)})
    per_plugin = []
    for plugin in plugins:
        columns = [(p, m) for p, m in pairs if p == plugin]
        plugin_data = data[data["plugin"] == plugin].reset_index(drop=True)
        display = _cells(evaluations, plugin_data, columns, False, TEXT)
        latex = _cells(evaluations, plugin_data, columns, False, LATEX)
        queries = []
        for evaluation in evaluations:
            rows = plugin_data[(plugin_data["evaluation"] == evaluation.label)
                               & (plugin_data["pairing"] == "generated")]
            n = rows["n_queries"].max()
            queries.append(str(int(n)) if pd.notna(n) else TEXT.dash)
        display[("queries", "")] = queries
        latex[("queries", "")] = [q if q != TEXT.dash else LATEX.dash for q in queries]
        description = next((str(e.plugin_info(plugin).get("description")) for e in evaluations
                            if e.plugin_info(plugin).get("description")), "")
        per_plugin.append(Table(
            name=plugin, title=f"Plugin {plugin}" + (f" — {description}" if description else ""),
            caption=CELL_CAPTION + "; queries = queries with a generated value",
            display=display, latex_frame=latex, data=plugin_data,
            notes=_one_query_notes(evaluations) + _skip_notes(evaluations, plugin),
            definitions={m: d for k, d in definitions.items() for p, m in [k.split(" · ", 1)] if p == plugin}))
    return summary, per_plugin


# ---------------------------------------------------------------------------- paired difference
def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 10_000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (resampling queries), seeded so a report is reproducible."""
    return bootstrap_ci(values, seed=seed, resamples=n_boot, confidence=level)


def _keyed_means(evaluation: Evaluation, plugin: str, metric: str) -> pd.Series:
    means = evaluation.query_means(plugin, metric)
    keys = evaluation.query_keys
    means.index = [keys.get(q, f"{evaluation.folder}:{q}") for q in means.index]
    return means.groupby(level=0).mean()


def paired_differences(evaluations: Sequence[Evaluation], n_boot: int = 10_000,
                       seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Each later evaluation minus the first, per metric, over the query photos both hold.

    Returns the tidy rows (``evaluation_a, evaluation_b, plugin, metric, n_shared, mean_a, mean_b,
    difference, ci_low, ci_high, higher_is_better``) and sentences saying what could not be paired.
    """
    columns = ["evaluation_a", "evaluation_b", "plugin", "metric", "higher_is_better", "n_shared",
               "mean_a", "mean_b", "difference", "ci_low", "ci_high"]
    if len(evaluations) < 2:
        return pd.DataFrame(columns=columns), ["one evaluation: there is nothing to compare it with"]
    base, rows, reasons = evaluations[0], [], []
    for other in evaluations[1:]:
        shared_photos = set(base.query_keys.values()) & set(other.query_keys.values())
        if not shared_photos:
            reasons.append(f"{other.label} and {base.label} share no query photos (different query sets "
                           f"or runs), so they have no paired difference")
            continue
        few = []
        for plugin in [p for p in base.plugins if p in other.plugins]:
            for metric in [m for m in base.metrics(plugin) if m in other.metrics(plugin)]:
                a, b = _keyed_means(base, plugin, metric), _keyed_means(other, plugin, metric)
                shared = a.index.intersection(b.index).sort_values()
                if len(shared) < 2:
                    if len(a) or len(b):
                        few.append(f"{plugin} {metric}")
                    continue
                diff = (b[shared] - a[shared]).to_numpy()
                low, high = bootstrap_mean_ci(diff, n_boot=n_boot, seed=seed)
                rows.append([base.label, other.label, plugin, metric,
                             _higher_is_better([base, other], plugin, metric), len(shared),
                             float(a[shared].mean()), float(b[shared].mean()), float(diff.mean()), low, high])
        if few:
            reasons.append(f"{other.label} − {base.label}: fewer than 2 shared queries with a per-query value "
                           f"for {', '.join(few)} (set-level or skipped metrics)")
    return pd.DataFrame(rows, columns=columns), reasons


def paired_table(evaluations: Sequence[Evaluation], n_boot: int = 10_000,
                 seed: int = 0) -> tuple[Table | None, list[str]]:
    """The paired differences as a table (rows = metrics, columns = comparisons), or why there is none."""
    data, reasons = paired_differences(evaluations, n_boot=n_boot, seed=seed)
    if data.empty:
        return None, reasons
    summary = tidy_summary(evaluations)
    frames = {}
    for style in (TEXT, LATEX):
        cells: dict[tuple[str, str], dict[tuple[str, str], str]] = {}
        for r in data.itertuples(index=False):
            means = summary.loc[(summary["plugin"] == r.plugin) & (summary["metric"] == r.metric), "mean"]
            decimals = decimals_for(list(means) + [r.difference])
            comparison = style.escape(r.evaluation_b) + style.minus + style.escape(r.evaluation_a)
            row = (style.escape(r.plugin), metric_header(r.metric, r.higher_is_better, style))
            cells.setdefault(row, {})[(comparison, style.escape("difference [95% CI]"))] = format_difference(
                r.difference, r.ci_low, r.ci_high, decimals, style)
            cells[row][(comparison, "queries")] = str(r.n_shared)
        frame = pd.DataFrame.from_dict(cells, orient="index").fillna(style.dash)
        frame.index = pd.MultiIndex.from_tuples(frame.index)
        frame.columns = pd.MultiIndex.from_tuples(frame.columns)
        frames[style.latex] = frame
    title = f"Paired differences against {evaluations[0].label}"
    return Table(name="paired", title=title, caption=PAIRED_CAPTION, display=frames[False],
                 latex_frame=frames[True], data=data, notes=list(reasons)), reasons
