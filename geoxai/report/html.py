"""The report's ``index.html``: one static page with provenance, tables, figures, grids and errors.

The page has no script and no external URL (fonts, CSS and images are local or inline), so it opens
from a file share, an archive or an offline laptop exactly as it was written; images are referenced
by paths relative to the page so the whole folder can be moved or zipped.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from geoxai.data.images import image_size
from geoxai.errors import UnreadableImageError
from geoxai.report.evaluations import Evaluation
from geoxai.report.figures import FigureFile
from geoxai.report.tables import Table

ERROR_LINES = 10  # errors shown per evaluation; errors.csv has them all

CSS = """
:root { --ink: #1d232b; --muted: #5b6672; --line: #d9dee4; --band: #f5f7f9; --accent: #1f5fa8; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: #fff; }
header { background: #15202b; color: #fff; padding: 22px 40px 14px; }
header h1 { margin: 0 0 4px; font-size: 24px; font-weight: 600; }
header p { margin: 0; color: #c5cdd6; font-size: 13px; }
nav { position: sticky; top: 0; z-index: 1; background: #fff; border-bottom: 1px solid var(--line);
      padding: 8px 40px; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 16px; }
main { padding: 8px 40px 60px; max-width: 1500px; }
h2 { font-size: 20px; font-weight: 600; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; font-weight: 600; margin: 22px 0 6px; }
a { color: var(--accent); }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 12.5px; }
.muted, .caption { color: var(--muted); font-size: 13px; }
.caption { margin: 6px 0 4px; max-width: 1100px; }
.downloads { font-size: 13px; margin: 2px 0 8px; }
.downloads a { margin-right: 10px; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table.report-table { border-collapse: collapse; font-size: 13.5px; margin: 6px 0; }
table.report-table th, table.report-table td { padding: 4px 10px; border-bottom: 1px solid var(--line);
       white-space: nowrap; }
table.report-table thead th { background: var(--band); text-align: center; font-weight: 600; }
table.report-table thead tr:last-child th { border-bottom: 2px solid #9aa5b1; font-weight: 500;
       color: var(--muted); font-size: 12.5px; }
table.report-table tbody th { text-align: left; font-weight: 600; }
table.report-table td { text-align: right; font-variant-numeric: tabular-nums; }
table.report-table tbody tr:nth-child(even) { background: #fafbfc; }
table.report-table colgroup.metric { border-left: 1px solid #b8c1cb; }
table.report-table thead tr:nth-last-child(3) th[colspan] { text-align: left; }  /* plugin above its metrics */
table.kv { border-collapse: collapse; font-size: 13px; }
table.kv th { text-align: left; color: var(--muted); font-weight: 500; padding: 2px 14px 2px 0; vertical-align: top;
       white-space: nowrap; }
table.kv td { padding: 2px 0; word-break: break-all; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 12px 16px; background: #fff; }
.card h3 { margin-top: 0; }
details { margin-top: 6px; }
summary { cursor: pointer; color: var(--accent); font-size: 13px; }
dl.defs { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; font-size: 13px; margin: 6px 0; }
dl.defs dt { font-weight: 600; } dl.defs dd { margin: 0; color: var(--muted); }
ul.notes { font-size: 13px; color: #7a4b00; margin: 4px 0; }
figure { margin: 14px 0 26px; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; max-width: 1100px; }
.ok { color: #1e7b34; } .failed { color: #b3261e; font-weight: 600; }
.skipped li, .notices li { margin: 2px 0; }
.banner { background: #fdecea; border: 1px solid #b3261e; color: #7f1d1d; font-weight: 600; padding: 8px 14px;
          border-radius: 4px; margin: 12px 0; }
pre.err { background: var(--band); border: 1px solid var(--line); padding: 8px; font-size: 12px; overflow-x: auto; }
"""


def _e(text: object) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _href(path: Path, out: Path) -> str:
    """A path relative to the page, URL-quoted, so the folder can move as a whole."""
    relative = Path(os.path.relpath(path, out)).as_posix()
    return quote(relative, safe="/")


def _width(png: Path) -> str:
    """Show a 150-dpi figure at 100 dpi so its text matches the page's; the file stays sharp on dense screens."""
    try:
        width, _ = image_size(png)
    except UnreadableImageError:
        return ""
    return f' width="{round(width * 2 / 3)}"'


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in settings.items():
        if isinstance(value, Mapping) and value:
            items.extend(_flatten(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _kv(rows: Sequence[tuple[str, Any]]) -> str:
    cells = []
    for key, value in rows:
        if value is None or value == "":
            value = "—"
        elif not isinstance(value, str):
            value = json.dumps(value, default=str)
        cells.append(f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>")
    return f'<table class="kv">{"".join(cells)}</table>'


def _version(version: object) -> str:
    text = str(version)
    return text if text.startswith("v") else f"v{text}"


def _provenance(evaluation: Evaluation) -> str:
    results, run = evaluation.results, evaluation.run
    plugins = results.get("plugins") if isinstance(results.get("plugins"), dict) else {}
    plugin_list = ", ".join(
        f'<span class="{"ok" if (info or {}).get("status", "ok") == "ok" else "failed"}">{_e(name)}'
        f'{" " + _e(_version(info.get("version"))) if isinstance(info, dict) and info.get("version") else ""}'
        f'{" (" + _e(info.get("status")) + ")" if isinstance(info, dict) and info.get("status") not in (None, "ok") else ""}'
        f"</span>" for name, info in plugins.items()) or "—"
    rows = [("EVAL folder", str(evaluation.folder.resolve())), ("run", str(evaluation.run_path or "—")),
            ("run identity", run.get("identity")), ("images / queries", f"{run.get('images', '—')} / "
                                                                         f"{run.get('queries', '—')}"),
            ("created", results.get("created")), ("geoxai version", results.get("geoxai_version")),
            ("git", results.get("git"))]
    settings = run.get("settings") if isinstance(run.get("settings"), dict) else {}
    config = results.get("config") if isinstance(results.get("config"), dict) else {}
    backends = results.get("backends") if isinstance(results.get("backends"), dict) else {}
    parts = [f'<div class="card"><h3>{_e(evaluation.label)}</h3>',
             *(f'<p class="banner">{_e(w)}</p>' for w in evaluation.warnings), _kv(rows),
             f'<p class="muted">plugins: {plugin_list}</p>']
    for title, mapping in (("generator settings (run.yaml)", settings), ("evaluation config", config),
                           ("backends", backends)):
        if mapping:
            parts.append(f"<details{' open' if title.startswith('generator') else ''}><summary>{_e(title)}"
                         f"</summary>{_kv(_flatten(mapping))}</details>")
    parts.append("</div>")
    return "\n".join(parts)


def _downloads(files: Sequence[Path], out: Path) -> str:
    if not files:
        return ""
    links = " ".join(f'<a href="{_href(f, out)}">{_e(f.name)}</a>' for f in files)
    return f'<p class="downloads">download: {links}</p>'


def _definitions(table: Table) -> str:
    if not table.definitions:
        return ""
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in table.definitions.items())
    return f'<details><summary>metric definitions</summary><dl class="defs">{items}</dl></details>'


def _errors(evaluation: Evaluation) -> str:
    errors = evaluation.errors
    declared = evaluation.results.get("errors")
    count = len(errors) if not isinstance(declared, int) else max(declared, len(errors))
    if count == 0:
        return f"<h3>{_e(evaluation.label)}</h3><p class=\"ok\">no errors</p>"
    lines = []
    for row in errors.head(ERROR_LINES).itertuples(index=False):
        first = str(row.error).strip().splitlines()[0] if str(row.error).strip() else "(no message)"
        lines.append(f"{row.plugin} · {row.query_id or '—'} · sample {row.sample or '—'} · {row.stage}: {first}")
    more = f"\n… and {count - len(lines)} more (see errors.csv)" if count > len(lines) else ""
    body = f'<pre class="err">{_e(chr(10).join(lines) + more)}</pre>' if lines else ""
    return (f"<h3>{_e(evaluation.label)}</h3><p class=\"failed\">{count} error(s)</p>{body}"
            f'<p class="muted mono">{_e(evaluation.folder.resolve() / "errors.csv")}</p>')


def index_html(out: Path, evaluations: Sequence[Evaluation], summary: Table, plugin_tables: Sequence[Table],
               paired: Table | None, paired_reasons: Sequence[str], figures: Sequence[FigureFile],
               grids: Sequence[tuple[Path, str]], skipped: Sequence[tuple[str, str]],
               table_files: Mapping[str, Sequence[Path]], warnings: Sequence[str] = ()) -> str:
    """The whole page as a string; ``table_files`` maps a table name to its written md/tex/csv files;
    ``warnings`` are banners shown at the top and beside every figure and grid."""
    created = datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    labels = ", ".join(e.label for e in evaluations)
    sections = [("provenance", "Evaluations"), ("summary", "Summary"), ("plugins", "Per plugin"),
                ("paired", "Paired differences"), ("figures", "Figures"), ("grids", "Image grids"),
                ("errors", "Errors"), ("notices", "Notices")]
    nav = "".join(f'<a href="#{anchor}">{_e(title)}</a>' for anchor, title in sections)
    body = [f'<header><h1>geoxai evaluation report</h1><p>{len(evaluations)} evaluation(s): {_e(labels)} · '
            f"written {_e(created)}</p></header>", f"<nav>{nav}</nav>", "<main>"]
    banners = "".join(f'<p class="banner">{_e(w)}</p>' for w in warnings)
    body.append(banners)

    body.append('<h2 id="provenance">Evaluations</h2><div class="cards">')
    body.extend(_provenance(e) for e in evaluations)
    body.append("</div>")

    body.append('<h2 id="summary">Summary</h2>')
    body.append(_downloads(table_files.get(summary.name, []), out))
    body.append(summary.to_html())
    body.append(_definitions(summary))

    body.append('<h2 id="plugins">Per plugin</h2>')
    for table in plugin_tables:
        body.append(f'<h3 id="plugin-{_e(table.name)}">{_e(table.title)}</h3>')
        body.append(_downloads(table_files.get(table.name, []), out))
        body.append(table.to_html())
        body.append(_definitions(table))

    body.append('<h2 id="paired">Paired differences</h2>')
    if paired is not None:
        body.append(f"<h3>{_e(paired.title)}</h3>")
        body.append(_downloads(table_files.get(paired.name, []), out))
        body.append(paired.to_html())
    else:
        reasons = "".join(f"<li>{_e(r)}</li>" for r in paired_reasons) or "<li>no comparable metrics</li>"
        body.append(f'<p>No paired difference:</p><ul class="notes">{reasons}</ul>')

    body.append('<h2 id="figures">Figures</h2>')
    body.append(banners if figures else "")
    if not figures:
        body.append('<p class="muted">No figure could be drawn (see Notices).</p>')
    for figure in figures:
        body.append(f'<figure><img src="{_href(figure.png, out)}" alt="{_e(figure.name)}"{_width(figure.png)}>'
                    f'<figcaption>{_e(figure.caption)} <a href="{_href(figure.data, out)}">data (CSV)</a>'
                    f"</figcaption></figure>")

    body.append('<h2 id="grids">Image grids</h2>')
    body.append(banners if grids else "")
    if not grids:
        body.append('<p class="muted">No grid could be made (see Notices).</p>')
    for path, text in grids:
        body.append(f'<figure><img src="{_href(path, out)}" alt="{_e(path.stem)}">'
                    f"<figcaption>{_e(text)}</figcaption></figure>")

    body.append('<h2 id="errors">Errors</h2>')
    body.extend(_errors(e) for e in evaluations)

    body.append('<h2 id="notices">Notices</h2>')
    notices = [(e.label, str(n)) for e in evaluations for n in (e.results.get("notices") or [])]
    if notices:
        body.append('<h3>From the evaluations</h3><ul class="notices">'
                    + "".join(f"<li><b>{_e(label)}</b>: {_e(text)}</li>" for label, text in notices) + "</ul>")
    if skipped:
        body.append('<h3>Left out of this report</h3><ul class="skipped">'
                    + "".join(f"<li><b>{_e(what)}</b>: {_e(why)}</li>" for what, why in skipped) + "</ul>")
    if not notices and not skipped:
        body.append('<p class="muted">none</p>')
    body.append("</main>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>geoxai report: {_e(labels)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(part for part in body if part) + "\n</body>\n</html>\n")
