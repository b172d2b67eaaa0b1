"""The EVAL folder: what it evaluates (its state file), each plugin's saved results, and its tables.

    evaluation.json   what the folder evaluates (run identity, embedder, segmenter, database, seed,
                      radius): a folder refuses results of another run or other settings
    plugins/          per finished plugin its records, summary rows and info (with the sha256 of both
                      files): what a resume reuses; files that cannot be read are set aside
    records.parquet, summary.csv, errors.csv, results.json
                      every plugin ever finished in the folder, newest version of each; written atomically

An evaluation into a folder that holds one of the same run and settings resumes it; notices of plugins
reused from the earlier evaluation are kept (``merge_notices``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from geoxai.errors import GeoxaiError
from geoxai.evaluation.artifacts import KINDS
from geoxai.evaluation.context import merge_notices
from geoxai.evaluation.plugin import RECORD_COLUMNS, Plugin, PluginOutcome
from geoxai.files import atomic_path, atomic_write_text, make_folder, set_aside, writable_folder

FORMAT = "geoxai.evaluation/1"
STATE_FILE, RESULTS_FILE = "evaluation.json", "results.json"
SUMMARY_COLUMNS = ("plugin", "metric", "pairing", "mean", "ci_low", "ci_high", "n_queries", "n_skipped",
                   "higher_is_better", "definition")
ERROR_COLUMNS = ("plugin", "query_id", "sample", "stage", "error", "traceback")


def write_frame(path: Path, frame: pd.DataFrame, parquet: bool = False) -> None:
    """A table written atomically (parquet or csv)."""
    with atomic_path(path) as tmp:
        if parquet:
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class EvaluationFolder:
    """One EVAL folder (``--out``): its state, its plugins' saved results, its tables."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise GeoxaiError(f"--out {self.out}: is a file; give a folder for the evaluation")
        writable_folder(self.out, "--out", create=False)
        self.plugins = self.out / "plugins"

    # ------------------------------------------------------------------------------ state
    def open(self, state: dict[str, Any]) -> dict[str, Any]:
        """Write ``state`` (what this evaluation is) after checking it against the folder's: another run or
        other settings are refused; a backend identity of an earlier evaluation that is not used now is kept."""
        path = self.out / STATE_FILE
        if path.is_file():
            old = self._read_state(path)
            if old.get("run_identity") != state["run_identity"]:
                raise GeoxaiError(f"--out {self.out} holds an evaluation of another run ({old.get('run')}); use a new "
                                  "--out for this run")
            differing = _differences(old, state)
            if differing:
                raise GeoxaiError(f"--out {self.out} was evaluated with other settings: {'; '.join(differing)}; use a "
                                  "new --out or the same settings")
            for identity, *riders in (cls.state_keys for cls in KINDS.values() if cls.state_keys):
                if old.get(identity) and not state[identity]:
                    state[identity] = old[identity]
                    state.update({key: old.get(key) for key in riders})
        elif self.out.exists() and any(p for p in self.out.iterdir() if not p.name.startswith(".")):
            raise GeoxaiError(f"--out {self.out} is not empty and holds no evaluation; choose a new or empty folder")
        writable_folder(self.out, "--out")
        atomic_write_text(path, json.dumps(state, indent=1))
        return state

    def _read_state(self, path: Path) -> dict[str, Any]:
        """evaluation.json of an existing EVAL folder; damaged, it cannot say which run the folder holds."""
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise GeoxaiError(f"--out {self.out}: {path.name} is damaged ({reason}), so this folder's evaluation "
                              "cannot be resumed; use a new --out, or delete the folder to evaluate again") from None
        if not isinstance(state, dict) or not str(state.get("format", "")).startswith("geoxai.evaluation/"):
            raise GeoxaiError(f"--out {self.out}: {path.name} is not an evaluation state file; use a new --out, or "
                              "delete the folder to evaluate again")
        return state

    def earlier_results(self) -> dict[str, Any]:
        """results.json of an earlier evaluation into this folder; empty when there is none (or it is damaged)."""
        path = self.out / RESULTS_FILE
        try:
            found = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def merged_notices(self, notices: list[str], rerun: list[str]) -> list[str]:
        """Today's notices and those of an earlier evaluation into the same folder (see ``merge_notices``)."""
        earlier = self.earlier_results().get("notices")
        return merge_notices([str(n) for n in earlier] if isinstance(earlier, list) else [], notices, rerun)

    # ------------------------------------------------------------------------------ plugins
    def _plugin_files(self, name: str) -> tuple[Path, Path, Path]:
        """A finished plugin's saved files in ``plugins/``: records, summary rows, info."""
        return self.plugins / f"{name}.parquet", self.plugins / f"{name}.summary.csv", self.plugins / f"{name}.json"

    def set_aside_damaged(self, running: set[str]) -> list[str]:
        """Set aside every plugin's saved files that cannot be read, one notice each: a plugin run now
        scores again, another is left out of the folder's tables until it is run again."""
        make_folder(self.plugins)
        notices = []
        for info_path in sorted(self.plugins.glob("*.json")):
            name = info_path.stem
            problem = self._plugin_problem(name)
            if problem is None:
                continue
            moved = [set_aside(path).name for path in self._plugin_files(name) if path.exists()]
            then = "it is scored again now" if name in running else f"run it again with --plugins {name}"
            notices.append(f"plugin {name}: its saved results in {self.plugins} are damaged ({problem}); set aside as "
                           f"{', '.join(moved)}; {then}")
        return notices

    def _plugin_problem(self, name: str) -> str | None:
        """Why a plugin's saved files in ``plugins/`` cannot be reused (None: they can, or there are none)."""
        records_path, summary_path, info_path = self._plugin_files(name)
        reading = info_path
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            if not isinstance(info, dict) or info.get("name") != name:
                return f"{info_path.name} does not describe plugin {name}"
            for file_name, digest in (info.get("sha256") or {}).items():  # written by every finished plugin
                reading = self.plugins / str(file_name)
                if sha256(reading) != digest:
                    return f"{file_name} changed since it was written"
            if records_path.is_file() or summary_path.is_file():
                reading = records_path
                if not set(RECORD_COLUMNS) <= set(pd.read_parquet(records_path).columns):
                    return f"{records_path.name} lacks record columns"
                reading = summary_path
                if not set(SUMMARY_COLUMNS) <= set(pd.read_csv(summary_path).columns):
                    return f"{summary_path.name} lacks summary columns"
        except (OSError, ValueError, KeyError, TypeError, NotImplementedError) as exc:  # json, pyarrow, pandas
            return f"{reading.name}: {' '.join(str(exc).split())[:160] or type(exc).__name__}"
        return None

    def reusable(self, cls: type[Plugin]) -> PluginOutcome | None:
        """The plugin's finished results in this folder, when they are of its current version."""
        records_path, summary_path, info_path = self._plugin_files(cls.name)
        if info_path.is_file() and records_path.is_file() and summary_path.is_file():
            done = json.loads(info_path.read_text())
            if done.get("version") == cls.info()["version"] and done.get("status") == "ok":
                return PluginOutcome(cls.name, "reused", records=int(done.get("records", 0)), info=done)
        return None

    def save(self, info: Mapping[str, Any], records: pd.DataFrame, summary: pd.DataFrame,
             seconds: float) -> PluginOutcome:
        """A finished plugin's records, summary rows and info (with the sha256 of both files)."""
        records_path, summary_path, info_path = self._plugin_files(info["name"])
        write_frame(records_path, records, parquet=True)
        write_frame(summary_path, summary)
        done = {**info, "status": "ok", "records": int(len(records)), "seconds": round(seconds, 2),
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "sha256": {path.name: sha256(path) for path in (records_path, summary_path)}}
        atomic_write_text(info_path, json.dumps(done, indent=1))
        return PluginOutcome(info["name"], "ok", records=len(records), seconds=seconds, info=done)

    def plugin_infos(self, outcomes: Mapping[str, PluginOutcome]) -> dict[str, Any]:
        """Every plugin ever finished in the folder (its info), and those that failed now."""
        infos = {}
        for info_file in sorted(self.plugins.glob("*.json")):
            info = json.loads(info_file.read_text())
            infos[info["name"]] = info
        for name, outcome in outcomes.items():
            if outcome.status == "failed":
                infos.setdefault(name, {"name": name})["status"] = "failed"
        return infos

    # ------------------------------------------------------------------------------ tables
    def collect(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Every finished plugin's records and summary rows in this EVAL folder."""
        records, summaries = [], []
        for info_file in sorted(self.plugins.glob("*.json")):
            records_path, summary_path, _ = self._plugin_files(info_file.stem)
            if records_path.is_file() and summary_path.is_file():
                records.append(pd.read_parquet(records_path))
                summaries.append(pd.read_csv(summary_path, dtype={"higher_is_better": object, "definition": object}))
        record_frame = pd.concat(records, ignore_index=True) if records else pd.DataFrame(columns=list(RECORD_COLUMNS))
        summary_frame = (pd.concat(summaries, ignore_index=True) if summaries
                         else pd.DataFrame(columns=list(SUMMARY_COLUMNS)))
        if "higher_is_better" in summary_frame:  # True / False / None, never 1.0 / 0.0 after a concat
            summary_frame["higher_is_better"] = [{"true": True, "false": False}.get(str(v).strip().lower())
                                                 for v in summary_frame["higher_is_better"]]
            summary_frame["higher_is_better"] = summary_frame["higher_is_better"].astype(object)
        if "skip_reason" in record_frame:
            record_frame["skip_reason"] = record_frame["skip_reason"].fillna("").astype(str)
        return record_frame, summary_frame

    def write_tables(self, records: pd.DataFrame, summary: pd.DataFrame, errors: list[dict]) -> None:
        """records.parquet, summary.csv and errors.csv."""
        write_frame(self.out / "records.parquet", records, parquet=True)
        write_frame(self.out / "summary.csv", summary)
        write_frame(self.out / "errors.csv", pd.DataFrame(errors, columns=list(ERROR_COLUMNS)))

    def write_results(self, results: Mapping[str, Any]) -> None:
        atomic_write_text(self.out / RESULTS_FILE, json.dumps(results, indent=1, default=str))


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The settings in which two state files differ; a backend's identity that one side lacks (not used
    there) and what rides with an identity (the embedder's spec) do not count."""
    riders = {key for cls in KINDS.values() for key in cls.state_keys[1:]}
    identities = {cls.state_keys[0] for cls in KINDS.values() if cls.state_keys}
    keys = sorted(k for k in new if k not in riders)
    return [f"{k} ({old.get(k)!r} != {new.get(k)!r})" for k in keys
            if old.get(k) != new.get(k) and not (k in identities and (old.get(k) is None or new.get(k) is None))]
