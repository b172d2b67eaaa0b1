"""``geoxai evaluate``: score a GenerationRun with plugins, every number beside its baselines.

``evaluate`` (1) opens the run read-only and loads the plugins asked for, isolating any that fails to
import, (2) checks and builds the artifact kinds the plugins need (``geoxai.evaluation.artifacts``)
and opens the EVAL folder (``geoxai.evaluation.folder``: a folder of another run or other settings is
refused), (3) builds the pairs (``generated``, ``shuffled`` across places, ``reference`` real re-visits
from the database), (4) computes every artifact once per distinct image (artifact store; sharded over
processes with ``devices > 1``), (5) runs each plugin, isolating failures and checking its records,
and (6) writes the EVAL folder's tables:

    records.parquet   query_id, sample, plugin, metric, value, pairing, skip_reason (long format)
    summary.csv       plugin, metric, pairing, mean, ci_low, ci_high, n_queries, n_skipped,
                      higher_is_better, definition
    results.json      summary, config, versions and identities, the run, git hash, date, notices
    errors.csv        plugin, query_id, sample, stage, error, traceback
    plugins/          one records and one summary file per finished plugin (what a resume reuses)
    evaluation.json   what the folder evaluates (run identity, embedder, database, seed): a folder
                      refuses results of another run or other settings

A killed evaluation resumes: artifacts come back from the store and finished plugins are reused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from geoxai.data.conventions import POSITIVE_RADIUS_M
from geoxai.errors import GeoxaiError, setting
from geoxai.evaluation import artifacts
from geoxai.evaluation.artifacts import KINDS, ArtifactPlan, ArtifactSettings
from geoxai.evaluation.context import Database, EvaluationContext
from geoxai.evaluation.folder import FORMAT, RESULTS_FILE, SUMMARY_COLUMNS, EvaluationFolder
from geoxai.evaluation.pairs import build_pairs
from geoxai.evaluation.plugin import PAIRINGS, Pair, Plugin, PluginOutcome, load_plugin, parse_plugins, to_long_records
from geoxai.statistics import ONE_QUERY

__all__ = ["EvaluationResult", "compute_sharded", "evaluate", "exit_status", "load_plugin", "parse_plugins"]


# ---------------------------------------------------------------------------------- result
@dataclass
class EvaluationResult:
    """What ``evaluate`` did: the folder, the outcome per plugin, the summary, what was computed."""

    out: Path
    run: Path
    plugins: list[PluginOutcome]
    summary: pd.DataFrame
    computed: dict[str, int] = field(default_factory=dict)  # artifact kind -> distinct images computed now
    notices: list[str] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        return [p.name for p in self.plugins if p.status == "failed"]

    def format(self) -> str:
        lines = [f"evaluation of {self.run} -> {self.out} ({self.seconds:.0f} s)"]
        for outcome in self.plugins:
            status = {"ok": f"{outcome.records} records, {outcome.seconds:.1f} s",
                      "reused": f"{outcome.records} records reused from this folder",
                      "failed": f"FAILED: {outcome.error}"}[outcome.status]
            lines.append(f"  {outcome.name}: {status}")
        computed = ", ".join(f"{kind} {n}" for kind, n in self.computed.items())
        if computed:
            lines.append(f"  artifacts computed now (distinct images): {computed}")
        if not self.summary.empty:
            shown = self.summary.pivot_table(index=["plugin", "metric"], columns="pairing", values="mean",
                                             aggfunc="first", sort=False)
            order = [p for p in (*PAIRINGS, "chance") if p in shown.columns]
            lines.append(shown[order].to_string(float_format=lambda v: f"{v:.4g}", na_rep="—"))
        lines += [f"notice: {notice}" for notice in self.notices]
        if self.errors:
            lines.append(f"{self.errors} error(s) recorded in {self.out / 'errors.csv'}")
        lines.append(f"written: {self.out / 'records.parquet'}, {self.out / 'summary.csv'}, "
                     f"{self.out / RESULTS_FILE}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- helpers
def _git_hash() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _error_row(plugin: str, stage: str, error: BaseException | str, query_id: str = "", sample: Any = "") -> dict:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    trace = "".join(traceback.format_exception(error)) if isinstance(error, BaseException) else ""
    return {"plugin": plugin, "query_id": query_id, "sample": sample, "stage": stage, "error": text, "traceback": trace}



def _open_database(folder: str | Path, radius: float, needs_labels: bool,
                   unreadable_folders: list[tuple[Path, str]] | None = None) -> Database:
    """The database; folders under it that cannot be read are added to ``unreadable_folders``."""
    from geoxai.data.vpr import list_images, name_utm

    folder = Path(folder)
    images_folder = folder / "database" if (folder / "database").is_dir() else folder
    listed = list_images(images_folder, warn=False)  # unreadable folders: errors.csv and a notice
    if unreadable_folders is not None:
        unreadable_folders.extend(listed.unreadable_folders)
    paths = [p.resolve() for p in listed]
    utm = [name_utm(p) for p in paths]
    if any(u is None for u in utm):
        if needs_labels:
            first = next(p for p, u in zip(paths, utm, strict=True) if u is None)
            raise GeoxaiError(f"--database {folder}: {first.name} has no UTM coordinates in its name, and recall needs "
                              "them (25 m positives); name images @east@north@...@.jpg")
        return Database(paths, None, radius)
    return Database(paths, np.asarray(utm, dtype=np.float64), radius)


def _unreadable_folder(path: Path) -> str | None:
    """Why the folder of an image the run lists but that is not there cannot be read (None: it can,
    or it does not exist, so the image does not either)."""
    from geoxai.data.vpr import folder_error

    try:
        with os.scandir(path.parent):
            return None
    except FileNotFoundError:
        return None
    except OSError as exc:  # permissions, an I/O error: the image may well be there
        return folder_error(exc)


def _plugin_needs_labels(plugin: type[Plugin]) -> bool:
    return "database" in plugin.needs



# ---------------------------------------------------------------------------------- distributed
def _shard_worker(fabric: Any, plan: dict[str, Any]) -> None:
    """One process of a sharded artifact computation: its share of every artifact, then a barrier."""
    import torch

    from geoxai.store import ArtifactStore

    torch.set_num_threads(max(1, plan["threads"]))
    store = ArtifactStore(plan["store"])
    rank, world = fabric.global_rank, fabric.world_size
    for kind, options, paths in plan["work"]:
        KINDS[kind].in_worker(options, str(fabric.device)).compute(
            [Path(p) for p in paths], store, shard=(rank, world), progress=plan["progress"] and rank == 0,
            desc=f"{kind} (rank {rank})")
    fabric.barrier()


def compute_sharded(work: list[tuple[str, dict[str, Any], list[str]]], store_root: Path, devices: int,
                    num_nodes: int = 1, accelerator: str = "auto", progress: bool = True) -> None:
    """Fill the store for ``work`` (kind name, its ``options()``, paths) with ``devices`` x ``num_nodes``
    processes (Lightning Fabric on torch.distributed): each computes every world-th missing image.

    On one node the processes are spawned here; on several nodes every node runs the same command
    under a cluster launcher (SLURM, torchrun) and ranks other than 0 stop after the barrier.
    """
    from lightning_fabric import Fabric

    if accelerator == "auto":
        import torch

        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    launched = "LOCAL_RANK" in os.environ or "SLURM_PROCID" in os.environ
    strategy = "ddp" if (launched or num_nodes > 1) else "ddp_spawn"
    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy)
    threads = max(1, (os.cpu_count() or 1) // max(1, devices)) if accelerator == "cpu" else 1
    plan = {"work": work, "store": str(store_root), "progress": progress, "threads": threads}
    if strategy == "ddp_spawn":
        fabric.launch(_shard_worker, plan)
        return
    fabric.launch()
    _shard_worker(fabric, plan)
    if fabric.global_rank != 0:
        sys.exit(0)  # rank 0 scores the plugins and writes the EVAL folder



# ---------------------------------------------------------------------------------- evaluate
def evaluate(run: str | Path, plugins: str | Sequence[str], out: str | Path, database: str | Path | None = None,
             embedder_spec: Mapping[str, Any] | None = None, batch_size: int = 32, device: str = "auto",
             devices: int = 1, num_nodes: int = 1, seed: int = 0, radius: float = POSITIVE_RADIUS_M, store: Any = None,
             progress: bool = True, num_workers: int | None = None, label: str | None = None,
             segmenter_spec: Mapping[str, Any] | None = None) -> EvaluationResult:
    """Evaluate the GenerationRun ``run`` with ``plugins`` into the EVAL folder ``out`` (see module doc)."""
    from geoxai.store import ArtifactStore

    started = time.time()
    names = parse_plugins(plugins)
    _check_sizes(batch_size, devices, num_nodes)
    folder = EvaluationFolder(out)
    opened = _OpenedRun.open(run, database)
    classes, outcomes = _load_plugins(names, opened.errors)
    settings = ArtifactSettings(run=opened.root, run_settings=dict(opened.reader.settings),
                                embedder_spec=embedder_spec, segmenter_spec=segmenter_spec, database=database,
                                batch_size=batch_size, device=device, num_workers=num_workers)
    artifacts.check(list(classes.values()), settings)
    db, db_folders = _database(database, radius, classes, opened.errors)
    plan = artifacts.plan(list(classes.values()), settings)
    state = folder.open({"format": FORMAT, "run": str(opened.root), "run_identity": opened.reader.identity(),
                         **plan.state(), "database": str(Path(database).resolve()) if database is not None else None,
                         "seed": int(seed), "radius": float(radius)})

    pairs = build_pairs(opened.manifest, seed, db, radius)
    store = store or ArtifactStore()
    found = _compute_artifacts(plan, _pair_images(opened.manifest, pairs), db, store, devices, num_nodes,
                               progress, opened.errors)
    pairs = {pairing: [p for p in given if p.original not in found.unreadable and p.other not in found.unreadable]
             for pairing, given in pairs.items()}
    ctx = EvaluationContext(seed=int(seed), artifacts=found.values, digests=found.digests, database=db,
                            run_settings=dict(opened.reader.settings), **plan.context())
    domain = _check_domain(plan, state, opened, db, folder)
    random_weights = {**plan.random_weights(), "run": _run_random_weights(opened.reader.settings)}
    for line in [*_warnings(plan, random_weights["run"], domain.notice),
                 *_input_notices(opened, classes, db, db_folders, found.unreadable, radius)]:
        ctx.notice(line)

    for line in folder.set_aside_damaged(set(classes)):
        ctx.notice(line)
    for name, cls in classes.items():
        outcomes[name] = _run_plugin(cls, pairs, ctx, folder, state, opened.errors)

    records, summary = folder.collect()
    folder.write_tables(records, summary, opened.errors)
    rerun = [name for name, outcome in outcomes.items() if outcome.status != "reused"]
    results = _results(folder, opened, state, plan, names, pairs, summary, outcomes, random_weights, label,
                       {"seed": int(seed), "radius": float(radius), "batch_size": int(batch_size),
                        "devices": int(devices), "num_nodes": int(num_nodes)},
                       folder.merged_notices(ctx.all_notices(), rerun), domain.record())
    folder.write_results(results)
    return EvaluationResult(out=folder.out, run=opened.root, plugins=list(outcomes.values()), summary=summary,
                            computed=found.computed, notices=results["notices"], errors=len(opened.errors),
                            seconds=time.time() - started)


def _check_sizes(batch_size: int, devices: int, num_nodes: int) -> None:
    if batch_size < 1:
        raise GeoxaiError(f"{setting('batch_size')} {batch_size}: must be at least 1")
    if devices < 1 or num_nodes < 1:
        raise GeoxaiError(f"{setting('devices')} {devices} / {setting('num_nodes')} {num_nodes}: must be at least 1")


@dataclass
class _OpenedRun:
    """The run being evaluated: its reader, manifest, protocol check, and the listed images not there."""

    reader: Any
    root: Path
    manifest: pd.DataFrame
    protocol_check: Any
    hidden: dict[Path, str | None]  # listed image not there -> why its folder cannot be read (None: it can)
    errors: list[dict]  # errors.csv rows, from here on

    @classmethod
    def open(cls, run: str | Path, database: str | Path | None) -> _OpenedRun:
        from geoxai.protocols import run_check
        from geoxai.runs import GenerationRun

        reader = GenerationRun.open(run, missing="skip")
        protocol_check = run_check(reader.settings, database)  # refuses places the run's generator trained on
        root = Path(run).resolve()
        manifest = reader.manifest(absolute=True)
        if manifest.empty:
            raise GeoxaiError(f"{root}: the run lists no (existing) image; nothing to evaluate")
        hidden = {Path(path): _unreadable_folder(Path(path)) for path in reader.missing}
        errors = [_error_row("", "image", f"{path}: in {path.parent}: {why}" if why else
                             f"listed image does not exist: {path}") for path, why in hidden.items()]
        return cls(reader, root, manifest, protocol_check, hidden, errors)


def _load_plugins(names: list[str], errors: list[dict]) -> tuple[dict[str, type[Plugin]], dict[str, PluginOutcome]]:
    """The plugin classes by name; unknown names stop here (a user mistake), a plugin whose own code
    fails to import is recorded as failed and left out."""
    classes: dict[str, type[Plugin]] = {}
    outcomes: dict[str, PluginOutcome] = {}
    for spec in names:
        try:
            cls = load_plugin(spec)
        except GeoxaiError:
            raise
        except Exception as exc:  # the plugin's own code failed to import
            errors.append(_error_row(spec, "import", exc))
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            outcomes[spec] = PluginOutcome(spec, "failed", error=f"import failed: {text}")
            continue
        if cls.name in classes:
            raise GeoxaiError(f"--plugins: {spec!r} is the plugin {cls.name!r}, which is already named")
        classes[cls.name] = cls
    return classes, outcomes


def _database(database: str | Path | None, radius: float, classes: Mapping[str, type[Plugin]],
              errors: list[dict]) -> tuple[Database | None, list[tuple[Path, str]]]:
    """The database (None without ``--database``) and its folders that cannot be read (in errors.csv)."""
    if database is None:
        return None, []
    folders: list[tuple[Path, str]] = []
    db = _open_database(database, radius, any(_plugin_needs_labels(c) for c in classes.values()), folders)
    errors += [_error_row("", "image", f"{path}: {why}") for path, why in folders]
    return db, folders


def _pair_images(manifest: pd.DataFrame, pairs: Mapping[str, list[Pair]]) -> set[Path]:
    """Every image of the pairs: originals, generations, reference photos."""
    images = {Path(p) for p in manifest["query_path"]} | {Path(p) for p in manifest["image_path"]}
    return images | {pair.other for pair in pairs["reference"]}


@dataclass
class _Computed:
    """The artifacts of an evaluation: values by kind and digest, every image's digest, what was skipped."""

    values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    digests: dict[Path, str] = field(default_factory=dict)
    computed: dict[str, int] = field(default_factory=dict)  # kind -> distinct images computed now
    unreadable: set[Path] = field(default_factory=set)


def _compute_artifacts(plan: ArtifactPlan, images: set[Path], db: Database | None, store: Any, devices: int,
                       num_nodes: int, progress: bool, errors: list[dict]) -> _Computed:
    """Every planned kind for its images, from the store or computed (sharded over processes with
    ``devices x num_nodes > 1``); unreadable images are recorded once each."""
    work = [(kind, sorted(str(p) for p in kind.images(images, db))) for kind in plan.computed_kinds]
    stored = [(kind.name, kind.options(), paths) for kind, paths in work if kind.stores]
    if devices * num_nodes > 1 and stored:
        compute_sharded(stored, store.root, devices, num_nodes, progress=progress)
    found = _Computed()
    for kind, paths in work:
        result = kind.compute([Path(p) for p in paths], store, progress=progress, desc=kind.name)
        found.digests.update(zip((Path(p) for p in paths), result.keys, strict=True))
        if kind.stores:
            found.values[kind.name] = result.values
            found.computed[kind.name] = result.computed
        for path, error in result.skipped:
            if Path(path) not in found.unreadable:
                errors.append(_error_row("", "image", error))
            found.unreadable.add(Path(path))
    return found


def _check_domain(plan: ArtifactPlan, state: Mapping[str, Any], opened: _OpenedRun, db: Database | None,
                  folder: EvaluationFolder) -> Any:
    """The shipped models of this evaluation (its artifact kinds' backends, the run's LDM) against the real
    images, joined with those of an earlier evaluation into the same folder."""
    from geoxai import domain

    settings = opened.reader.settings
    models = [*plan.domain_models(state),
              domain.ldm_model(settings.get("checkpoint")) if settings.get("generator") == "geoxai.ldm" else None]
    images = [*opened.manifest["query_path"].unique(), *(db.paths if db is not None else [])]
    return domain.merged(domain.check_domain(models, images), folder.earlier_results().get("domain"))


def _warnings(plan: ArtifactPlan, run_random: bool, domain: str | None) -> list[str]:
    """WARNING lines on stderr (random weights) and the notices they become; the domain notice first."""
    lines = plan.warnings()
    if run_random:
        lines.append("the run's generations were conditioned on an embedder with RANDOM weights: they are an "
                     "untrained network baseline, not explanations of a VPR model")
    for line in lines:
        print(f"WARNING: {line}", file=sys.stderr)
    return [domain, *lines] if domain else lines


def _input_notices(opened: _OpenedRun, classes: Mapping[str, type[Plugin]], db: Database | None,
                   db_folders: list[tuple[Path, str]], unreadable: set[Path], radius: float) -> list[str]:
    """What the evaluation could not use of its inputs, one line each (details in errors.csv)."""
    notices = []
    if (db is None or db.utm is None) and any("reference" in cls.pairings for cls in classes.values()):
        reason = "no --database" if db is None else "database names without UTM coordinates"
        notices.append(f"no reference pairing ({reason}): real re-visits come from database images within {radius:g} m")
    in_hidden = [path for path, why in opened.hidden.items() if why]
    if len(in_hidden) < len(opened.hidden):
        notices.append(f"{len(opened.hidden) - len(in_hidden)} image(s) listed in the manifest do not exist; their "
                       "pairs are skipped (errors.csv)")
    if in_hidden:
        folders = sorted({path.parent for path in in_hidden})
        notices.append(f"{len(in_hidden)} image(s) listed in the manifest are in {len(folders)} unreadable folder(s), "
                       f"first {folders[0]}; their pairs are skipped (errors.csv)")
    if unreadable:
        notices.append(f"{len(unreadable)} unreadable image(s) skipped with every pair that uses them (errors.csv)")
    if db_folders:
        notices.append(f"{len(db_folders)} unreadable database folder(s): their images are left out of retrieval and "
                       f"the reference pairing (errors.csv); first {db_folders[0][0]}: {db_folders[0][1]}")
    if opened.manifest["query_id"].nunique() == 1 and any("shuffled" in cls.pairings for cls in classes.values()):
        notices.append(f"{ONE_QUERY}: the shuffled pairing compares with another query's generation, and a "
                       "confidence interval needs two queries or more (none is shown)")
    return notices


def _results(folder: EvaluationFolder, opened: _OpenedRun, state: Mapping[str, Any], plan: ArtifactPlan,
             names: list[str], pairs: Mapping[str, list[Pair]], summary: pd.DataFrame,
             outcomes: Mapping[str, PluginOutcome], random_weights: dict[str, bool], label: str | None,
             config: Mapping[str, Any], notices: list[str], domain: Any) -> dict[str, Any]:
    """results.json: the run, the configuration, backends, versions, plugins, summary, notices."""
    import geoxai

    settings = opened.reader.settings
    results = {
        "format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "geoxai_version": geoxai.__version__, "git": _git_hash(), "label": label or folder.out.name,
        "run": {"path": str(opened.root), "identity": state["run_identity"], "settings": dict(settings),
                "images": int(len(opened.manifest)), "queries": int(opened.manifest["query_id"].nunique()),
                "protocol": _protocol(settings), "protocol_check": opened.protocol_check},
        "config": {"plugins": names, "database": state["database"], "seed": config["seed"],
                   "radius": config["radius"], "batch_size": config["batch_size"], "devices": config["devices"],
                   "num_nodes": config["num_nodes"], "pairs": {k: len(v) for k, v in pairs.items()}},
        "backends": plan.backends(state),
        "versions": _versions(),
        "plugins": folder.plugin_infos(outcomes),
        "summary": json.loads(summary.to_json(orient="records")),
        "errors": len(opened.errors),
        "notices": notices,
        "random_weights": random_weights,
    }
    if domain is not None:
        results["domain"] = domain
    return results


def _run_random_weights(settings: Mapping[str, Any]) -> bool:
    """Whether the run's generations were conditioned on an untrained (random) embedder."""
    embedder = settings.get("embedder") if isinstance(settings.get("embedder"), Mapping) else {}
    return bool(settings.get("random_weights")) or str(embedder.get("weights")) == "random"




def _protocol(settings: Mapping[str, Any]) -> str:
    """Which places the generator saw (from the run's settings); said in every result."""
    if settings.get("protocol"):
        return str(settings["protocol"])
    if settings.get("generator") == "synthcity-reference":
        return "not a trained generator (SynthCity reference renders)"
    return "unknown (the run does not record it)"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "torchvision", "diffusers", "pytorch-lightning", "faiss-cpu", "faiss-gpu", "numpy", "pandas"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found




def _run_plugin(cls: type[Plugin], pairs: dict[str, list[Pair]], ctx: EvaluationContext, folder: EvaluationFolder,
                state: Mapping[str, Any], errors: list[dict]) -> PluginOutcome:
    """Score one plugin (or reuse its finished records in this folder); failures are recorded, not raised."""
    reused = folder.reusable(cls)
    if reused is not None:
        return reused
    info = cls.info()
    started = time.time()
    try:
        plugin = cls()
        given = [pair for pairing in cls.pairings for pair in pairs.get(pairing, [])]
        records = to_long_records(cls, plugin.score(given, ctx))
        _check_every_pair_scored(cls, given, records)
        summary = _checked_summary(cls, plugin.summarize(records, ctx))
    except Exception as exc:  # isolation: one plugin's failure never stops the others
        errors.append(_error_row(cls.name, "score", exc))
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return PluginOutcome(cls.name, "failed", seconds=time.time() - started, error=text, info=info)
    return folder.save(info, records, summary, time.time() - started)


def _check_every_pair_scored(cls: type[Plugin], given: list[Pair], records: pd.DataFrame) -> None:
    """Refuse records that leave pairs out: a missing pair would silently shrink a mean and its CI.

    Every pair given needs a record (a value or a ``Skip`` with its reason); extra records, such as
    per-original rows with sample -1 or an analytic ``chance`` level, are the plugin's to add.
    """
    scored = set(zip(records["query_id"].astype(str), records["sample"].astype(int), records["pairing"], strict=True))
    missing: dict[str, list[Pair]] = {}
    for pair in given:
        if (str(pair.query_id), int(pair.sample), pair.pairing) not in scored:
            missing.setdefault(pair.pairing, []).append(pair)
    if missing:
        counts = "; ".join(f"{len(pairs)} of {sum(p.pairing == pairing for p in given)} {pairing} pairs"
                           for pairing, pairs in missing.items())
        first = next(iter(missing.values()))[0]
        raise GeoxaiError(f"plugin {cls.name}: no record for {counts} (e.g. query {first.query_id} sample "
                          f"{first.sample}); score() must return one record per pair it is given, "
                          "with Skip(reason) for a value it cannot compute")


def _checked_summary(cls: type[Plugin], summary: pd.DataFrame) -> pd.DataFrame:
    """A plugin's summary with plugin name, direction and definition filled in; its columns checked."""
    needed = {"metric", "pairing", "mean", "ci_low", "ci_high", "n_queries", "n_skipped"}
    if not isinstance(summary, pd.DataFrame) or not needed <= set(summary.columns):
        raise GeoxaiError(f"plugin {cls.name}: summarize must return a DataFrame with columns {', '.join(sorted(needed))}")
    summary = summary.copy()
    summary["plugin"] = cls.name
    summary["higher_is_better"] = [cls.metrics[m].higher_is_better if m in cls.metrics else None
                                   for m in summary["metric"]]
    summary["definition"] = [cls.metrics[m].definition if m in cls.metrics else "" for m in summary["metric"]]
    order = {metric: i for i, metric in enumerate(cls.metrics)}
    pairing_order = {p: i for i, p in enumerate((*PAIRINGS, "chance"))}
    summary = summary.assign(_m=summary["metric"].map(order).fillna(len(order)),
                             _p=summary["pairing"].map(pairing_order).fillna(len(pairing_order)))
    summary = summary.sort_values(["_m", "metric", "_p"], kind="stable")
    # an interval over fewer than two queries is no interval: shown as none, never as zero width
    few = pd.to_numeric(summary["n_queries"], errors="coerce") < 2
    summary.loc[few, ["ci_low", "ci_high"]] = float("nan")
    return summary[list(SUMMARY_COLUMNS)].reset_index(drop=True)



def exit_status(result: EvaluationResult) -> int:
    """0 when every plugin finished, 1 when one failed (its error is in errors.csv)."""
    return 1 if result.failed else 0


