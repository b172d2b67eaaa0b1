"""``geoxai evaluate``: score a GenerationRun with plugins, every number beside its baselines.

The runner (1) opens the run read-only and builds the pairs (``generated``, ``shuffled`` across
places, ``reference`` real re-visits from the database), (2) loads the plugins asked for, isolating
any that fails to import, (3) computes every artifact the plugins need once per distinct image
(artifact store; sharded over processes with ``devices > 1``), (4) runs each plugin, isolating
failures and checking its records, and (5) writes the EVAL folder:

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

from geoxai.errors import GeoxaiError, setting
from geoxai.evaluation.context import Database, EvaluationContext, merge_notices
from geoxai.evaluation.pairs import build_pairs
from geoxai.evaluation.plugin import PAIRINGS, Pair, Plugin, PluginOutcome, check_plugin_class, to_long_records
from geoxai.statistics import ONE_QUERY

FORMAT = "geoxai.evaluation/1"
STATE_FILE, RESULTS_FILE = "evaluation.json", "results.json"
SUMMARY_COLUMNS = ("plugin", "metric", "pairing", "mean", "ci_low", "ci_high", "n_queries", "n_skipped",
                   "higher_is_better", "definition")
ERROR_COLUMNS = ("plugin", "query_id", "sample", "stage", "error", "traceback")


# ---------------------------------------------------------------------------------- plugins
def parse_plugins(text: str | Sequence[str]) -> list[str]:
    """``--plugins`` as a list of names: comma-separated, spaces around names allowed."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(item).strip() for item in items]
    if not names or not any(names):
        raise GeoxaiError("--plugins is empty; name at least one plugin (see `geoxai plugins`), e.g. --plugins recall")
    if any(not name for name in names):
        raise GeoxaiError(f"--plugins {text!r}: an empty name between commas; write e.g. recall,lighting")
    bad = [name for name in names if any(c.isspace() for c in name)]
    if bad:
        raise GeoxaiError(f"--plugins: {bad[0]!r} contains a space; separate names with commas (recall,lighting)")
    if len(set(names)) != len(names):
        raise GeoxaiError(f"--plugins {text!r}: a plugin is named twice")
    return names


def load_plugin(spec: str) -> type[Plugin]:
    """The plugin class for a registered name, ``module:Class`` or ``file.py:Class``.

    An unknown name is a ``GeoxaiError`` with "did you mean"; an error raised while importing the
    plugin's own code propagates (the runner records it and goes on with the other plugins).
    """
    from geoxai.registry import PLUGINS, load

    return check_plugin_class(load(PLUGINS, spec), spec)


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


def _write_frame(path: Path, frame: pd.DataFrame, parquet: bool = False) -> None:
    from geoxai.files import atomic_path

    with atomic_path(path) as tmp:
        if parquet:
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)


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
            first = next(p for p, u in zip(paths, utm) if u is None)
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


def _settings_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k} ({old.get(k)!r} != {new.get(k)!r})" for k in keys if old.get(k) != new.get(k)]


# ---------------------------------------------------------------------------------- distributed
def _shard_worker(fabric: Any, plan: dict[str, Any]) -> None:
    """One process of a sharded artifact computation: its share of every artifact, then a barrier."""
    import torch

    from geoxai.evaluation.artifacts import provider
    from geoxai.store import ArtifactStore

    torch.set_num_threads(max(1, plan["threads"]))
    store = ArtifactStore(plan["store"])
    rank, world = fabric.global_rank, fabric.world_size
    for kind, options, paths in plan["work"]:
        if kind == "descriptor":
            options = {**options, "device": str(fabric.device)}
        provider(kind, **options).compute([Path(p) for p in paths], store, shard=(rank, world),
                                          progress=plan["progress"] and rank == 0, desc=f"{kind} (rank {rank})")
    fabric.barrier()


def compute_sharded(work: list[tuple[str, dict[str, Any], list[str]]], store_root: Path, devices: int,
                    num_nodes: int = 1, accelerator: str = "auto", progress: bool = True) -> None:
    """Fill the store for ``work`` (kind, provider options, paths) with ``devices`` x ``num_nodes``
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
             devices: int = 1, num_nodes: int = 1, seed: int = 0, radius: float = 25.0, store: Any = None,
             progress: bool = True, num_workers: int | None = None, label: str | None = None,
             segmenter_spec: Mapping[str, Any] | None = None) -> EvaluationResult:
    """Evaluate the GenerationRun ``run`` with ``plugins`` into the EVAL folder ``out`` (see module doc)."""
    import geoxai
    from geoxai.files import make_folder, writable_folder
    from geoxai.protocols import run_check
    from geoxai.runs import GenerationRun
    from geoxai.store import ArtifactStore

    started = time.time()
    names = parse_plugins(plugins)
    if batch_size < 1:
        raise GeoxaiError(f"{setting('batch_size')} {batch_size}: must be at least 1")
    if devices < 1 or num_nodes < 1:
        raise GeoxaiError(f"{setting('devices')} {devices} / {setting('num_nodes')} {num_nodes}: must be at least 1")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GeoxaiError(f"--out {out}: is a file; give a folder for the evaluation")
    writable_folder(out, "--out", create=False)
    reader = GenerationRun.open(run, missing="skip")
    protocol_check = run_check(reader.settings, database)  # refuses places the run's generator trained on
    run_root = Path(run).resolve()
    manifest = reader.manifest(absolute=True)
    if manifest.empty:
        raise GeoxaiError(f"{run_root}: the run lists no (existing) image; nothing to evaluate")
    hidden = {Path(path): _unreadable_folder(Path(path)) for path in reader.missing}  # path -> folder's problem
    errors: list[dict] = [_error_row("", "image", f"{path}: in {path.parent}: {why}" if why else
                                     f"listed image does not exist: {path}") for path, why in hidden.items()]

    # plugins: unknown names stop here (a user mistake); a plugin that fails to import is isolated
    classes: dict[str, type[Plugin]] = {}
    outcomes: dict[str, PluginOutcome] = {}
    for spec in names:
        try:
            cls = load_plugin(spec)
        except GeoxaiError:
            raise
        except Exception as exc:  # the plugin's own code failed to import
            errors.append(_error_row(spec, "import", exc))
            outcomes[spec] = PluginOutcome(spec, "failed", error=f"import failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            continue
        if cls.name in classes:
            raise GeoxaiError(f"--plugins: {spec!r} is the plugin {cls.name!r}, which is already named")
        classes[cls.name] = cls
    needs = {need for cls in classes.values() for need in cls.needs}

    # the database, the embedder
    for cls in classes.values():
        if "database" in cls.needs and database is None:
            raise GeoxaiError(f"plugin {cls.name} needs --database DIR (database images named by UTM, e.g. "
                              "worlds/synthcity/database): generations are retrieved against it")
    db, db_folders = None, []
    if database is not None:
        db = _open_database(database, radius, any(_plugin_needs_labels(c) for c in classes.values()), db_folders)
        errors += [_error_row("", "image", f"{path}: {why}") for path, why in db_folders]
    outcomes_note = ""
    if (db is None or db.utm is None) and any("reference" in cls.pairings for cls in classes.values()):
        reason = "no --database" if db is None else "database names without UTM coordinates"
        outcomes_note = f"no reference pairing ({reason}): real re-visits come from database images within {radius:g} m"
    spec = dict(embedder_spec) if embedder_spec is not None else dict(reader.settings.get("embedder") or {})
    provider_options: dict[str, dict[str, Any]] = {}
    random_weights = {"embedder": False, "run": _run_random_weights(reader.settings)}
    descriptor_provider = None
    embedder_identity = None
    if "descriptor" in needs or "database" in needs:
        if not spec:
            raise GeoxaiError(f"{run_root}: the run does not record the embedder its generations were conditioned on; "
                              "give one with --embedder-config FILE (or --embedder and its options)")
        from geoxai.embedders import from_spec
        from geoxai.evaluation.artifacts import DescriptorArtifact
        from geoxai.retrieval import check_trained

        embedder = from_spec(spec, device=device)
        check_trained(embedder, spec)
        random_weights["embedder"] = bool(embedder.random_weights)
        descriptor_provider = DescriptorArtifact(spec, device=device, batch_size=batch_size, num_workers=num_workers)
        descriptor_provider._embedder = embedder
        embedder_identity = embedder.identity()
        provider_options["descriptor"] = {"embedder_spec": spec, "batch_size": batch_size, "num_workers": num_workers}
    if "lab" in needs:
        provider_options["lab"] = {"batch_size": batch_size}
    segmentation_provider = None
    segmenter_identity = None
    if "segmentation" in needs:
        users = [cls.name for cls in classes.values() if "segmentation" in cls.needs]
        if segmenter_spec is None:
            raise GeoxaiError(f"plugin {users[0]} needs --segmenter NAME (see `geoxai segmenters`): groundtruth for "
                              "SynthCity worlds and reference runs, synthcity for generated SynthCity images, hf for photos")
        from geoxai.evaluation.artifacts import SegmentationArtifact
        from geoxai.segmentation.base import check_classes

        segmentation_provider = SegmentationArtifact(segmenter_spec, batch_size=batch_size, device=device)
        for cls in classes.values():
            if "segmentation" in cls.needs:
                check_classes(segmentation_provider.segmenter, cls.name, cls.segmentation_classes)
        segmenter_identity = segmentation_provider.segmenter.identity()
        provider_options["segmentation"] = {"segmenter_spec": dict(segmenter_spec), "batch_size": batch_size}

    # the EVAL folder: one run, one set of settings
    state = {"format": FORMAT, "run": str(run_root), "run_identity": reader.identity(),
             "embedder": embedder_identity, "embedder_spec": spec if embedder_identity else None,
             "segmenter": segmenter_identity,
             "database": str(Path(database).resolve()) if database is not None else None,
             "seed": int(seed), "radius": float(radius)}
    state_path = out / STATE_FILE
    if state_path.is_file():
        old = _read_state(state_path, out)
        if old.get("run_identity") != state["run_identity"]:
            raise GeoxaiError(f"--out {out} holds an evaluation of another run ({old.get('run')}); use a new --out "
                              "for this run")
        differing = _settings_differences({k: old.get(k) for k in state if k != "embedder_spec"},
                                          {k: v for k, v in state.items() if k != "embedder_spec"})
        differing = [d for d in differing if not any(d.startswith(f"{k} ") and old.get(k) is None
                                                     for k in ("embedder", "segmenter"))]
        differing = [d for d in differing if not any(d.startswith(f"{k} ") and state.get(k) is None
                                                     for k in ("embedder", "segmenter"))]
        if differing:
            raise GeoxaiError(f"--out {out} was evaluated with other settings: {'; '.join(differing)}; use a new --out "
                              "or the same settings")
        if old.get("embedder") and not state["embedder"]:
            state["embedder"], state["embedder_spec"] = old["embedder"], old.get("embedder_spec")
        if old.get("segmenter") and not state["segmenter"]:
            state["segmenter"] = old["segmenter"]
    elif out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise GeoxaiError(f"--out {out} is not empty and holds no evaluation; choose a new or empty folder")
    writable_folder(out, "--out")
    from geoxai.files import atomic_write_text

    atomic_write_text(state_path, json.dumps(state, indent=1))

    # pairs and the images every artifact is needed for
    pairs = build_pairs(manifest, seed, db, radius)
    images: set[Path] = {Path(p) for p in manifest["query_path"]} | {Path(p) for p in manifest["image_path"]}
    images |= {pair.other for pair in pairs["reference"]}
    work: list[tuple[str, dict[str, Any], list[str]]] = []
    for kind, options in provider_options.items():
        wanted = set(images)
        if kind == "descriptor" and db is not None:  # retrieval (recall) and top-1 checks (lighting probe)
            wanted |= set(db.paths)
        work.append((kind, options, sorted(str(p) for p in wanted)))
    store = store or ArtifactStore()
    if devices * num_nodes > 1 and work:
        compute_sharded(work, store.root, devices, num_nodes, progress=progress)

    artifacts: dict[str, dict[str, np.ndarray]] = {}
    digests: dict[Path, str] = {}
    computed: dict[str, int] = {}
    unreadable: set[Path] = set()
    for kind, options, paths in work:
        from geoxai.evaluation.artifacts import provider as make_provider

        artifact_provider = {"descriptor": descriptor_provider, "segmentation": segmentation_provider}.get(kind) \
            or make_provider(kind, **options)
        found = artifact_provider.compute([Path(p) for p in paths], store, progress=progress, desc=kind)
        artifacts[kind] = found.values
        digests.update(zip((Path(p) for p in paths), found.keys))
        computed[kind] = found.computed
        for path, error in found.skipped:
            if Path(path) not in unreadable:
                errors.append(_error_row("", "image", error))
            unreadable.add(Path(path))
    if not work:  # plugins that read pixels only still need every image's digest, and images that decode
        from geoxai.store import file_digests
        from geoxai.data.images import load_rgb
        from geoxai.errors import UnreadableImageError

        ordered = sorted(images)
        digests.update(zip(ordered, file_digests(ordered, progress=progress, store=store)))
        for path in ordered:  # skipped with their pairs, as an artifact provider skips them for other plugins
            try:
                load_rgb(path)
            except UnreadableImageError as exc:
                errors.append(_error_row("", "image", exc))
                unreadable.add(Path(path))
    if unreadable:
        for pairing in pairs:
            pairs[pairing] = [p for p in pairs[pairing] if p.original not in unreadable and p.other not in unreadable]

    ctx = EvaluationContext(seed=int(seed), artifacts=artifacts, digests=digests, database=db,
                            embedder_provider=descriptor_provider, run_settings=dict(reader.settings),
                            segmenter=segmentation_provider.segmenter if segmentation_provider else None)
    domain = _check_domain(spec if embedder_identity else None, segmentation_provider, reader.settings, manifest, db,
                           out / RESULTS_FILE)
    for line in _warnings(random_weights, spec if embedder_identity else None, domain.notice):
        ctx.notice(line)
    if outcomes_note:
        ctx.notice(outcomes_note)
    in_hidden = [path for path, why in hidden.items() if why]
    if len(in_hidden) < len(hidden):
        ctx.notice(f"{len(hidden) - len(in_hidden)} image(s) listed in the manifest do not exist; their pairs are "
                   "skipped (errors.csv)")
    if in_hidden:
        folders = sorted({path.parent for path in in_hidden})
        ctx.notice(f"{len(in_hidden)} image(s) listed in the manifest are in {len(folders)} unreadable folder(s), "
                   f"first {folders[0]}; their pairs are skipped (errors.csv)")
    if unreadable:
        ctx.notice(f"{len(unreadable)} unreadable image(s) skipped with every pair that uses them (errors.csv)")
    if db_folders:
        ctx.notice(f"{len(db_folders)} unreadable database folder(s): their images are left out of retrieval and "
                   f"the reference pairing (errors.csv); first {db_folders[0][0]}: {db_folders[0][1]}")
    if manifest["query_id"].nunique() == 1 and any("shuffled" in cls.pairings for cls in classes.values()):
        ctx.notice(f"{ONE_QUERY}: the shuffled pairing compares with another query's generation, and a "
                   "confidence interval needs two queries or more (none is shown)")

    # plugins, one by one, each isolated (saved records that cannot be read are set aside first)
    plugin_dir = make_folder(out / "plugins")
    for notice in _set_aside_damaged_plugins(plugin_dir, set(classes)):
        ctx.notice(notice)
    for name, cls in classes.items():
        outcomes[name] = _run_plugin(cls, pairs, ctx, plugin_dir, state, errors)

    # the EVAL folder's files (every plugin ever finished in it, the newest version of each)
    records, summary = _collect(plugin_dir)
    _write_frame(out / "records.parquet", records, parquet=True)
    _write_frame(out / "summary.csv", summary)
    _write_frame(out / "errors.csv", pd.DataFrame(errors, columns=list(ERROR_COLUMNS)))
    plugin_infos = {}
    for info_file in sorted(plugin_dir.glob("*.json")):
        info = json.loads(info_file.read_text())
        plugin_infos[info["name"]] = info
    for name, outcome in outcomes.items():
        if outcome.status == "failed":
            plugin_infos.setdefault(name, {"name": name})["status"] = "failed"
    results = {
        "format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "geoxai_version": geoxai.__version__, "git": _git_hash(), "label": label or out.name,
        "run": {"path": str(run_root), "identity": state["run_identity"], "settings": dict(reader.settings),
                "images": int(len(manifest)), "queries": int(manifest["query_id"].nunique()),
                "protocol": _protocol(reader.settings), "protocol_check": protocol_check},
        "config": {"plugins": names, "database": state["database"], "seed": int(seed), "radius": float(radius),
                   "batch_size": int(batch_size), "devices": int(devices), "num_nodes": int(num_nodes),
                   "pairs": {k: len(v) for k, v in pairs.items()}},
        "backends": {"embedder": {"spec": state["embedder_spec"], "identity": state["embedder"]},
                     "segmenter": ({**segmentation_provider.segmenter.describe(), "identity": segmenter_identity}
                                   if segmentation_provider else None)},
        "versions": _versions(),
        "plugins": plugin_infos,
        "summary": json.loads(summary.to_json(orient="records")),
        "errors": len(errors),
        "notices": _merged_notices(out / RESULTS_FILE, ctx.all_notices(),
                                   [name for name, outcome in outcomes.items() if outcome.status != "reused"]),
        "random_weights": random_weights,
    }
    if domain.record() is not None:
        results["domain"] = domain.record()
    atomic_write_text(out / RESULTS_FILE, json.dumps(results, indent=1, default=str))
    return EvaluationResult(out=out, run=run_root, plugins=list(outcomes.values()), summary=summary,
                            computed=computed, notices=results["notices"], errors=len(errors),
                            seconds=time.time() - started)


def _run_random_weights(settings: Mapping[str, Any]) -> bool:
    """Whether the run's generations were conditioned on an untrained (random) embedder."""
    embedder = settings.get("embedder") if isinstance(settings.get("embedder"), Mapping) else {}
    return bool(settings.get("random_weights")) or str(embedder.get("weights")) == "random"


def _check_domain(spec: Mapping[str, Any] | None, segmentation: Any, settings: Mapping[str, Any],
                  manifest: pd.DataFrame, db: Database | None, earlier: Path) -> Any:
    """The shipped models of this evaluation (its embedder, segmenter, the run's LDM) against the real images,
    joined with those of an earlier evaluation into the same folder."""
    from geoxai import domain

    models = [domain.embedder_model(spec),
              domain.segmenter_model(segmentation.segmenter.spec() if segmentation else None),
              domain.ldm_model(settings.get("checkpoint")) if settings.get("generator") == "geoxai.ldm" else None]
    check = domain.check_domain(models, [*manifest["query_path"].unique(), *(db.paths if db is not None else [])])
    return domain.merged(check, _earlier_results(earlier).get("domain"))


def _warnings(random_weights: Mapping[str, bool], spec: Mapping[str, Any] | None, domain: str | None) -> list[str]:
    """WARNING lines on stderr (random weights) and the notices they become; the domain notice first."""
    lines = [domain] if domain else []
    if random_weights["embedder"]:
        named = ", ".join(f"{k} {v}" for k, v in (spec or {}).items())
        lines.append(f"the evaluation's embedder has RANDOM weights ({named}): its numbers are an untrained "
                     "network baseline, not a VPR model")
    if random_weights["run"]:
        lines.append("the run's generations were conditioned on an embedder with RANDOM weights: they are an "
                     "untrained network baseline, not explanations of a VPR model")
    for line in lines[1 if domain else 0:]:
        print(f"WARNING: {line}", file=sys.stderr)
    return lines


def _merged_notices(results_path: Path, notices: list[str], rerun: list[str]) -> list[str]:
    """Today's notices and those of an earlier evaluation into the same folder (see ``merge_notices``)."""
    earlier = _earlier_results(results_path).get("notices")
    return merge_notices([str(n) for n in earlier] if isinstance(earlier, list) else [], notices, rerun)


def _earlier_results(path: Path) -> dict[str, Any]:
    """results.json of an earlier evaluation into this folder; empty when there is none (or it is damaged)."""
    try:
        found = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


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


def _read_state(path: Path, out: Path) -> dict[str, Any]:
    """evaluation.json of an existing EVAL folder; damaged, it cannot say which run the folder holds."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise GeoxaiError(f"--out {out}: {path.name} is damaged ({reason}), so this folder's evaluation cannot be "
                          "resumed; use a new --out, or delete the folder to evaluate again") from None
    if not isinstance(state, dict) or not str(state.get("format", "")).startswith("geoxai.evaluation/"):
        raise GeoxaiError(f"--out {out}: {path.name} is not an evaluation state file; use a new --out, or delete "
                          "the folder to evaluate again")
    return state


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plugin_files(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A finished plugin's saved files in ``plugins/``: records, summary rows, info."""
    return folder / f"{name}.parquet", folder / f"{name}.summary.csv", folder / f"{name}.json"


def _plugin_state_problem(folder: Path, name: str) -> str | None:
    """Why a plugin's saved files in ``plugins/`` cannot be reused (None: they can, or there are none)."""
    from geoxai.evaluation.plugin import RECORD_COLUMNS

    records_path, summary_path, info_path = _plugin_files(folder, name)
    reading = info_path
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if not isinstance(info, dict) or info.get("name") != name:
            return f"{info_path.name} does not describe plugin {name}"
        for file_name, digest in (info.get("sha256") or {}).items():  # written by every finished plugin
            reading = folder / str(file_name)
            if _sha256(reading) != digest:
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


def _set_aside_damaged_plugins(folder: Path, running: set[str]) -> list[str]:
    """Set aside every plugin's saved files that cannot be read, one notice each: a plugin run now
    scores again, another is left out of the folder's tables until it is run again."""
    from geoxai.files import set_aside

    notices = []
    for info_path in sorted(folder.glob("*.json")):
        name = info_path.stem
        problem = _plugin_state_problem(folder, name)
        if problem is None:
            continue
        moved = [set_aside(path).name for path in _plugin_files(folder, name) if path.exists()]
        then = "it is scored again now" if name in running else f"run it again with --plugins {name}"
        notices.append(f"plugin {name}: its saved results in {folder} are damaged ({problem}); set aside as "
                       f"{', '.join(moved)}; {then}")
    return notices


def _run_plugin(cls: type[Plugin], pairs: dict[str, list[Pair]], ctx: EvaluationContext, folder: Path,
                state: Mapping[str, Any], errors: list[dict]) -> PluginOutcome:
    """Score one plugin (or reuse its finished records in this folder); failures are recorded, not raised."""
    from geoxai.files import atomic_write_text

    info = cls.info()
    records_path, summary_path, info_path = _plugin_files(folder, cls.name)
    if info_path.is_file() and records_path.is_file() and summary_path.is_file():
        done = json.loads(info_path.read_text())
        if done.get("version") == info["version"] and done.get("status") == "ok":
            return PluginOutcome(cls.name, "reused", records=int(done.get("records", 0)), info=done)
    started = time.time()
    try:
        plugin = cls()
        given = [pair for pairing in cls.pairings for pair in pairs.get(pairing, [])]
        records = to_long_records(cls, plugin.score(given, ctx))
        _check_every_pair_scored(cls, given, records)
        summary = plugin.summarize(records, ctx)
        summary = _checked_summary(cls, summary)
    except Exception as exc:  # isolation: one plugin's failure never stops the others
        errors.append(_error_row(cls.name, "score", exc))
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return PluginOutcome(cls.name, "failed", seconds=time.time() - started, error=text, info=info)
    _write_frame(records_path, records, parquet=True)
    _write_frame(summary_path, summary)
    seconds = time.time() - started
    done = {**info, "status": "ok", "records": int(len(records)), "seconds": round(seconds, 2),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sha256": {path.name: _sha256(path) for path in (records_path, summary_path)}}
    atomic_write_text(info_path, json.dumps(done, indent=1))
    return PluginOutcome(cls.name, "ok", records=len(records), seconds=seconds, info=done)


def _check_every_pair_scored(cls: type[Plugin], given: list[Pair], records: pd.DataFrame) -> None:
    """Refuse records that leave pairs out: a missing pair would silently shrink a mean and its CI.

    Every pair given needs a record (a value or a ``Skip`` with its reason); extra records, such as
    per-original rows with sample -1 or an analytic ``chance`` level, are the plugin's to add.
    """
    scored = set(zip(records["query_id"].astype(str), records["sample"].astype(int), records["pairing"]))
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


def _collect(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every finished plugin's records and summary rows in this EVAL folder."""
    from geoxai.evaluation.plugin import RECORD_COLUMNS

    records, summaries = [], []
    for info_file in sorted(folder.glob("*.json")):
        name = info_file.stem
        if (folder / f"{name}.parquet").is_file() and (folder / f"{name}.summary.csv").is_file():
            records.append(pd.read_parquet(folder / f"{name}.parquet"))
            summaries.append(pd.read_csv(folder / f"{name}.summary.csv", dtype={"higher_is_better": object,
                                                                                "definition": object}))
    record_frame = pd.concat(records, ignore_index=True) if records else pd.DataFrame(columns=list(RECORD_COLUMNS))
    summary_frame = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    if "higher_is_better" in summary_frame:  # True / False / None, never 1.0 / 0.0 after a concat
        summary_frame["higher_is_better"] = [{"true": True, "false": False}.get(str(v).strip().lower())
                                             for v in summary_frame["higher_is_better"]]
        summary_frame["higher_is_better"] = summary_frame["higher_is_better"].astype(object)
    if "skip_reason" in record_frame:
        record_frame["skip_reason"] = record_frame["skip_reason"].fillna("").astype(str)
    return record_frame, summary_frame


def exit_status(result: EvaluationResult) -> int:
    """0 when every plugin finished, 1 when one failed (its error is in errors.csv)."""
    return 1 if result.failed else 0


