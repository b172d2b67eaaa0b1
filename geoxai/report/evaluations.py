"""Reading an EVAL folder (what ``geoxai evaluate --out`` writes) into one object for the report.

The report never recomputes what the evaluation measured: tables and figures come from
``summary.csv``, paired differences and scatter plots from ``records.parquet``, provenance from
``results.json``. Every problem with a folder is a one-line ``GeoxaiError`` that names the folder
and the fix, because a report is usually built long after (and far from) the evaluation.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geoxai.domain import BANNER, RANDOM_BANNER, mismatch_of
from geoxai.errors import GeoxaiError

RECORDS_FILE, SUMMARY_FILE, RESULTS_FILE, ERRORS_FILE = "records.parquet", "summary.csv", "results.json", "errors.csv"
FORMAT_PREFIX = "geoxai.evaluation/"
RECORD_COLUMNS = ("query_id", "sample", "plugin", "metric", "value", "pairing", "skip_reason")
SUMMARY_COLUMNS = ("plugin", "metric", "pairing", "mean", "ci_low", "ci_high", "n_queries", "n_skipped",
                   "higher_is_better", "definition")
ERROR_COLUMNS = ("plugin", "query_id", "sample", "stage", "error", "traceback")
# The pairings of the contract, in the order a table shows them: the measurement, then its baselines.
PAIRINGS = ("generated", "shuffled", "reference", "chance")
_FIX = "give a folder written by `geoxai evaluate --out`"


def _bool_or_none(value: Any) -> bool | None:
    """``higher_is_better`` as written by CSV/JSON (True/False/"true"/empty) -> True, False or None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None


def _missing(folder: Path, name: str) -> GeoxaiError:
    return GeoxaiError(f"{folder}: no {name}; {_FIX}")


def _unreadable(folder: Path, name: str, exc: Exception) -> GeoxaiError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return GeoxaiError(f"{folder}: cannot read {name} ({reason}); {_FIX} (or re-run it)")


def _read_results(folder: Path) -> dict[str, Any]:
    path = folder / RESULTS_FILE
    if not path.is_file():
        inside = sorted(p.parent.name for p in folder.glob(f"*/{RESULTS_FILE}"))
        if inside:  # a folder of evaluations rather than one
            shown = ", ".join(inside[:5]) + (", ..." if len(inside) > 5 else "")
            raise GeoxaiError(f"{folder}: no {RESULTS_FILE}, but it holds EVAL folders ({shown}); pass those")
        raise _missing(folder, RESULTS_FILE)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _unreadable(folder, RESULTS_FILE, exc) from None
    if not isinstance(results, dict):
        raise GeoxaiError(f"{folder}: {RESULTS_FILE} is not a JSON object; {_FIX}")
    fmt = str(results.get("format", ""))
    if not fmt.startswith(FORMAT_PREFIX):
        raise GeoxaiError(f"{folder}: {RESULTS_FILE} has format {fmt or '<none>'!r}, expected "
                          f"{FORMAT_PREFIX}1; {_FIX}")
    return results


def _check_columns(folder: Path, name: str, frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise GeoxaiError(f"{folder}: {name} lacks column(s) {', '.join(absent)}; {_FIX}")


def _read_records(folder: Path) -> pd.DataFrame:
    path = folder / RECORDS_FILE
    if not path.is_file():
        raise _missing(folder, RECORDS_FILE)
    try:
        records = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a damaged file
        raise _unreadable(folder, RECORDS_FILE, exc) from None
    _check_columns(folder, RECORDS_FILE, records, RECORD_COLUMNS)
    records = records.copy()
    for column in ("query_id", "plugin", "metric", "pairing"):
        records[column] = records[column].astype(str)
    records["skip_reason"] = records["skip_reason"].fillna("").astype(str)
    records["sample"] = pd.to_numeric(records["sample"], errors="coerce").fillna(-1).astype("int64")
    records["value"] = pd.to_numeric(records["value"], errors="coerce").astype("float64")
    return records


def _read_summary(folder: Path) -> pd.DataFrame:
    path = folder / SUMMARY_FILE
    if not path.is_file():
        raise _missing(folder, SUMMARY_FILE)
    try:
        summary = pd.read_csv(path, dtype={"plugin": str, "metric": str, "pairing": str, "definition": str},
                              keep_default_na=False, na_values=[""])
    except Exception as exc:
        raise _unreadable(folder, SUMMARY_FILE, exc) from None
    _check_columns(folder, SUMMARY_FILE, summary, SUMMARY_COLUMNS)
    for column in ("mean", "ci_low", "ci_high", "n_queries", "n_skipped"):
        summary[column] = pd.to_numeric(summary[column], errors="coerce")
    summary["higher_is_better"] = summary["higher_is_better"].map(_bool_or_none).astype(object)
    summary["definition"] = summary["definition"].fillna("").astype(str)
    return summary


def _read_errors(folder: Path) -> pd.DataFrame:
    """``errors.csv``; an empty (even zero-byte) or absent file means no errors."""
    path = folder / ERRORS_FILE
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in ERROR_COLUMNS})
    if not path.is_file() or path.stat().st_size == 0:
        return empty
    try:
        errors = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return empty
    except Exception as exc:
        raise _unreadable(folder, ERRORS_FILE, exc) from None
    for column in ERROR_COLUMNS:
        if column not in errors.columns:
            errors[column] = ""
    return errors


@dataclass
class Evaluation:
    """One EVAL folder: the measurements of one GenerationRun, with their provenance."""

    folder: Path
    label: str
    records: pd.DataFrame
    summary: pd.DataFrame
    results: dict[str, Any]
    errors: pd.DataFrame
    run_path: Path | None

    @property
    def run(self) -> dict[str, Any]:
        run = self.results.get("run")
        return run if isinstance(run, dict) else {}

    @property
    def warnings(self) -> list[str]:
        """Banners for every page showing this evaluation: shipped SynthCity models on other images
        (``domain`` in results.json or the run's run.yaml) and untrained (random) embedders."""
        settings = self.run.get("settings") if isinstance(self.run.get("settings"), dict) else {}
        found = []
        if mismatch_of(self.results.get("domain")) or mismatch_of(settings.get("domain")):
            found.append(BANNER)
        random = self.results.get("random_weights")
        if (any(random.values()) if isinstance(random, dict) else bool(random)) or settings.get("random_weights"):
            found.append(RANDOM_BANNER)
        return found

    @cached_property
    def _measured(self) -> list[tuple[str, str]]:
        """(plugin, metric) pairs of the summary, then of the records, in order of appearance (computed once:
        records can hold millions of rows)."""
        pairs = zip(self.summary["plugin"], self.summary["metric"], strict=True)
        records = self.records[["plugin", "metric"]].drop_duplicates()
        return list(dict.fromkeys([*pairs, *zip(records["plugin"], records["metric"], strict=True)]))

    @property
    def plugins(self) -> list[str]:
        """Plugins in results.json order, then any others the summary or records mention."""
        declared = self.results.get("plugins")
        names = list(declared) if isinstance(declared, dict) else []
        return list(dict.fromkeys([*names, *(p for p, _ in self._measured)]))

    def plugin_info(self, plugin: str) -> dict[str, Any]:
        info = (self.results.get("plugins") or {}).get(plugin)
        return info if isinstance(info, dict) else {}

    def metrics(self, plugin: str) -> list[str]:
        """A plugin's metrics: declared order first, so tables follow what the plugin author chose."""
        declared = self.plugin_info(plugin).get("metrics")
        names = list(declared) if isinstance(declared, dict) else []
        return list(dict.fromkeys([*names, *(m for p, m in self._measured if p == plugin)]))

    def headline(self, plugin: str) -> list[str]:
        """The metrics the plugin asks the summary to show (empty: it did not say)."""
        named = self.plugin_info(plugin).get("headline")
        return [str(m) for m in named] if isinstance(named, list) else []

    def higher_is_better(self, plugin: str, metric: str) -> bool | None:
        rows = self.summary[(self.summary["plugin"] == plugin) & (self.summary["metric"] == metric)]
        for value in rows["higher_is_better"]:
            if value is not None:
                return bool(value)
        declared = (self.plugin_info(plugin).get("metrics") or {}).get(metric)
        return _bool_or_none(declared.get("higher_is_better")) if isinstance(declared, dict) else None

    def definition(self, plugin: str, metric: str) -> str:
        declared = (self.plugin_info(plugin).get("metrics") or {}).get(metric)
        if isinstance(declared, dict) and declared.get("definition"):
            return str(declared["definition"])
        rows = self.summary[(self.summary["plugin"] == plugin) & (self.summary["metric"] == metric)]
        texts = [t for t in rows["definition"] if t]
        return texts[0] if texts else ""

    def query_means(self, plugin: str, metric: str, pairing: str = "generated") -> pd.Series:
        """Per query, the mean over its samples (NaN values left out), indexed by query_id."""
        rows = self.records[(self.records["plugin"] == plugin) & (self.records["metric"] == metric)
                            & (self.records["pairing"] == pairing) & self.records["value"].notna()]
        return rows.groupby("query_id", sort=True)["value"].mean()

    @cached_property
    def manifest(self) -> pd.DataFrame | None:
        """The run's manifest with absolute ``query_path``/``image_path``, read by ``GenerationRun.open``
        (so a row pointing outside the run is refused); None when it cannot be read (``manifest_problem`` says why)."""
        return self._opened_run[0]

    @property
    def manifest_problem(self) -> str | None:
        """Why the run's manifest could not be read (None when it could, or when no run is named)."""
        return self._opened_run[1]

    @cached_property
    def _opened_run(self) -> tuple[pd.DataFrame | None, str | None]:
        from geoxai.runs import GenerationRun

        if self.run_path is None:
            return None, None
        try:
            with warnings.catch_warnings():  # rows without an image are left out; the report still works
                warnings.simplefilter("ignore")
                return GenerationRun.open(self.run_path, missing="skip").manifest(absolute=True), None
        except GeoxaiError as exc:  # moved, deleted, unreadable or refused run: the report works without images
            return None, str(exc)

    @cached_property
    def query_keys(self) -> dict[str, str]:
        """query_id -> what identifies the query photo across runs.

        Two runs (e.g. checkpoints after 7 and 14 epochs) number the same photos the same way only
        when they were made from the same query folder, so the photo's path is the key; without a
        readable manifest, the query folder in the run settings (else the run itself) scopes the id.
        """
        ids = sorted(set(self.records["query_id"]))
        manifest = self.manifest
        if manifest is not None:
            paths = manifest.drop_duplicates("query_id").set_index("query_id")["query_path"]
            return {q: f"photo:{paths[q]}" if q in paths.index else f"run:{self.run_path}:{q}" for q in ids}
        settings = self.run.get("settings") if isinstance(self.run.get("settings"), dict) else {}
        scope = settings.get("queries") and f"queries:{settings['queries']}"
        scope = scope or f"run:{self.run.get('identity') or self.run_path or self.folder}"
        return {q: f"{scope}:{q}" for q in ids}


def report_warnings(evaluations: list[Evaluation]) -> list[str]:
    """Each banner of the evaluations once, naming the evaluations it applies to when not all of them."""
    found: dict[str, list[str]] = {}
    for evaluation in evaluations:
        for warning in evaluation.warnings:
            found.setdefault(warning, []).append(evaluation.label)
    return [warning if len(labels) == len(evaluations) else f"{warning} (evaluations: {', '.join(labels)})"
            for warning, labels in found.items()]


def load_evaluation(folder: str | Path) -> Evaluation:
    """Read an EVAL folder; a missing or unreadable file is a one-line error naming it and the fix."""
    folder = Path(folder)
    if not folder.exists():
        raise GeoxaiError(f"{folder}: no such folder; {_FIX}")
    if not folder.is_dir():
        raise GeoxaiError(f"{folder}: is a file, not an EVAL folder; {_FIX}")
    results = _read_results(folder)
    records = _read_records(folder)
    summary = _read_summary(folder)
    errors = _read_errors(folder)
    run = results.get("run") if isinstance(results.get("run"), dict) else {}
    run_path = Path(run["path"]) if run.get("path") else None
    if run_path is not None and not run_path.is_absolute():
        run_path = (folder / run_path).resolve()
    label = str(results.get("label") or "").strip() or folder.resolve().name
    return Evaluation(folder=folder, label=label, records=records, summary=summary, results=results,
                      errors=errors, run_path=run_path)
