"""``geoxai sample``: generate images from query photos' descriptors into a GenerationRun.

Each (query, sample) pair has its own seed (``geoxai.runs.sample_seed``) and its own generator, so
an image depends only on its query, sample index and the run's settings: not on the batch size, the
order of work, nor on where a killed run was resumed. Batches mix queries and samples so every UNet
call is full; each batch is saved as soon as it is generated.

With ``devices`` > 1 (or ``num_nodes`` > 1) the images to generate are shared out over processes
(Lightning Fabric on torch.distributed: one per GPU, or CPU processes): process r generates every
world-th pending image into the same GenerationRun (writes are atomic, the manifest is locked), so
the run holds the same images as a one-process run. On one node the processes are spawned here; on
several nodes every node runs the same command under a cluster launcher (SLURM, torchrun).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from geoxai.config import check_values
from geoxai.devices import resolve_device
from geoxai.domain import check_domain, embedder_model, ldm_model
from geoxai.embedders import from_spec
from geoxai.errors import GeoxaiError, setting, settings_from
from geoxai.files import writable_folder
from geoxai.runs import RUN_FILE, GenerationRun, QueryItem, plan_queries


def checkpoint_identity(path: str | Path) -> str:
    """sha256 of a checkpoint file, or of an exported folder (relative names and contents).

    Hashing the content rather than trusting the path means a checkpoint overwritten by further
    training can never be resumed into a run made with the old weights.
    """
    path = Path(path)
    # model cards (*.md) describe the model, they are not part of it: a card edit keeps the identity
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".md")
    digest = hashlib.sha256()
    for file in files:
        if file is not path:
            digest.update(f"{file.relative_to(path).as_posix()}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


MAX_SEED = 2**63 - 1  # run seeds are hashed into per-image seeds and stored as 64-bit integers


def _check_options(checkpoint: Path, samples: int, steps: int, batch_size: int, limit: int | None,
                   seed: int, devices: int, num_nodes: int) -> None:
    """The settings a caller of ``sample_run`` gives, checked before anything is read or written
    (the command line checks the same ranges with click types; this is the library's own guard)."""
    for name, value in (("samples", samples), ("steps", steps), ("batch_size", batch_size), ("devices", devices),
                        ("num_nodes", num_nodes)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise GeoxaiError(f"{setting(name)} {value!r}: must be a whole number >= 1")
    if limit is not None and (not isinstance(limit, numbers.Integral) or isinstance(limit, bool) or limit < 1):
        raise GeoxaiError(f"{setting('limit')} {limit!r}: must be a whole number >= 1 (or left out for all queries)")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise GeoxaiError(f"{setting('seed')} {seed!r}: must be a whole number from 0 to {MAX_SEED}")
    if not checkpoint.exists():
        raise GeoxaiError(f"{setting('checkpoint')} {checkpoint}: not found; give a .ckpt from `geoxai train` "
                          "(stage: ldm) or an exported pipeline folder")


def _section(config: dict[str, Any], key: str, checkpoint: Path) -> Any:
    if config.get(key) is None:
        raise GeoxaiError(f"{setting('checkpoint')} {checkpoint}: its training config has no `{key}:` section; "
                          "not a geoxai LDM checkpoint (train one with `geoxai train`, stage: ldm)")
    return config[key]


def frozen_models(components: Any, checkpoint: Path) -> tuple[Any, Any]:
    """The embedder and autoencoder a checkpoint was trained with, checked against its stored identities.

    Stored paths are absolute (training resolves them); a file that has moved, or been replaced at
    the same path, is one clear line naming the setting of the checkpoint's training config.
    """
    from geoxai.ldm.autoencoder import autoencoder_identity, load_autoencoder
    from geoxai.ldm.training import check_identities

    config = components.config
    embedder_spec = _section(config, "embedder", checkpoint)
    autoencoder_spec = _section(config, "autoencoder", checkpoint)
    source = f"{setting('checkpoint')} {checkpoint} (its training config)"
    weights = embedder_spec.get("weights")
    if weights not in (None, "hub", "random") and not Path(str(weights)).is_file():
        raise GeoxaiError(f"{source}: embedder.weights {weights} no longer exists; put the file back there (its "
                          "identity is checked), or sample from an export of the checkpoint made where it exists")
    with settings_from("embedder", source):
        embedder = from_spec(embedder_spec)
    if embedder.dim != components.context_dim:
        named = ", ".join(f"{k} {v}" for k, v in embedder_spec.items() if k != "device")
        raise GeoxaiError(
            f"{setting('checkpoint')} {checkpoint}: its embedder ({named}) gives {embedder.dim}-d descriptors "
            f"but the model is conditioned on {components.context_dim}-d descriptors; use the "
            "checkpoint together with the embedder it was trained with"
        )
    with settings_from("autoencoder", source):
        vae = load_autoencoder(autoencoder_spec)
    check_identities(components.identities, {"embedder": embedder.identity(), "autoencoder": autoencoder_identity(vae)},
                     f"{setting('checkpoint')} {checkpoint}")
    return embedder, vae


def sample_run(checkpoint: str | Path, queries: str | Path, out: str | Path, samples: int = 4,
               sampler: str = "dpm++", steps: int = 20, guidance: float | None = None, seed: int = 0,
               batch_size: int = 16, limit: int | None = None, device: str = "auto",
               progress: bool = True, devices: int = 1, num_nodes: int = 1) -> GenerationRun:
    """Generate ``samples`` images per query image under ``queries`` into the GenerationRun ``out``.

    Resumes an existing run with the same settings (only missing images are generated; a finished
    run is not written to at all); a run with other settings is an error. Unreadable queries are
    skipped, counted and reported on stderr, as are queries without UTM coordinates in their names
    and queries that had to be scaled up or mostly cropped for the embedder.
    Returns the finalised ``geoxai.runs.GenerationRun``.
    """
    from geoxai.data.vpr import list_images
    from geoxai.embedders.descriptors import embed_files
    from geoxai.ldm.loading import load_components, resolve_checkpoint
    from geoxai.ldm.pipeline import DescriptorDiffusionPipeline, build_scheduler, check_steps
    from geoxai.protocols import generator_check

    checkpoint, queries, out = resolve_checkpoint(checkpoint).resolve(), Path(queries).resolve(), Path(out)
    _check_options(checkpoint, samples, steps, batch_size, limit, seed, devices, num_nodes)
    if guidance is not None:
        check_guidance(guidance, setting("guidance"))
    if out.exists() and not out.is_dir():
        raise GeoxaiError(f"{setting('out')} {out}: is a file; give a folder for the GenerationRun")
    if not (out / RUN_FILE).is_file():
        writable_folder(out, setting("out"), create=False)  # a new run: prove it can be written before any work
    torch_device = resolve_device(device)
    listed = list_images(queries, warn=False)  # unreadable folders are said with unreadable queries
    items = plan_queries(listed, queries)[:limit]
    without_utm = [item for item in items if math.isnan(item.utm_east)]

    components = load_components(checkpoint, map_location="cpu")
    if guidance is None:  # the model's own choice (shipped models carry one), else the plain model
        guidance = components.guidance if components.guidance is not None else 1.0
        check_guidance(guidance, f"{setting('checkpoint')} {checkpoint}: its guidance")
    _check_schedule(components.noise_scheduler_config, checkpoint)
    config = components.config
    image_size = int(_section(config, "data", checkpoint)["image_size"])
    check_steps(build_scheduler(sampler, components.noise_scheduler_config), steps, sampler)
    embedder, vae = frozen_models(components, checkpoint)

    settings = {
        "generator": "geoxai.ldm",
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_identity(checkpoint),
        "sampler": sampler, "steps": int(steps), "guidance": float(guidance), "seed": int(seed),
        "samples": int(samples),
        "embedder": dict(config["embedder"]), "autoencoder": dict(config["autoencoder"]),
        "identities": dict(components.identities),
        "protocol": str(config.get("protocol") or "unknown (trained before protocols were recorded)"),
        "queries": str(queries), "image_size": image_size,
        "random_weights": bool(embedder.random_weights),
        "protocol_check": generator_check(config, queries),  # refuses queries the generator trained on
    }
    domain = check_domain([ldm_model(checkpoint), embedder_model(config["embedder"])],
                          [item.query_path for item in items])
    if domain.record() is not None:
        settings["domain"] = domain.record()
    fabric = _launched_fabric(devices, num_nodes, device)  # under a cluster launcher: every rank runs this
    if fabric is not None and fabric.global_rank != 0:
        fabric.barrier()  # rank 0 creates the run and records its plan first
    run = GenerationRun.create(out, settings, resume=True)
    if fabric is None or fabric.global_rank == 0:
        _warn(settings, domain.notice)
    todo = run.pending(items, samples)
    if fabric is not None and fabric.global_rank == 0:
        fabric.barrier()
    skipped: list[tuple[Path, str]] = []
    if todo:
        writable_folder(out, setting("out"))
        position = {item.query_id: i for i, item in enumerate(items)}
        wanted = [items[i] for i in sorted({position[item.query_id] for item, _, _ in todo})]
        found = embed_files(embedder, [item.query_path for item in wanted], batch_size=batch_size,
                            device=torch_device, progress=progress, desc="embedding queries")
        embedder.cpu()
        skipped = [(path, f"{path}: {reason}") for path, reason in listed.unreadable_folders] + found.skipped
        descriptors = {item.query_id: torch.from_numpy(row) for item, row in zip(wanted, found.array, strict=True)
                       if not np.isnan(row).any()}
        _notify(skipped, without_utm, found.reshaped.notices("queries"))
        todo = [entry for entry in todo if entry[0].query_id in descriptors]

        job = {"checkpoint": str(checkpoint), "out": str(out), "settings": settings, "sampler": sampler,
               "steps": int(steps), "guidance": float(guidance), "batch_size": int(batch_size),
               "progress": progress,
               # plain tuples: Fabric's spawn walks its arguments and refuses frozen dataclasses
               "todo": [(dataclasses.asdict(item), sample, s) for item, sample, s in todo],
               "descriptors": {k: v.numpy() for k, v in descriptors.items()}}
        if fabric is not None:
            _sample_worker(fabric, job, run=run, components=components, vae=vae)
            if fabric.global_rank != 0:
                sys.exit(0)  # rank 0 finalizes the run
        elif devices * num_nodes > 1:
            _spawn_workers(job, devices, device)
        else:
            pipeline = DescriptorDiffusionPipeline.from_components(components, vae, sampler=sampler,
                                                                   device=torch_device)
            _generate(run, pipeline, todo, descriptors, steps, guidance, batch_size,
                      f"sampling ({sampler}, {steps} steps)", progress)
    unreadable = {Path(path) for path, _ in skipped}
    run.finalize([item for item in items if item.query_path not in unreadable], samples)
    return run


def _check_schedule(schedule: dict[str, Any], checkpoint: Path) -> None:
    """The model's noise schedule holds finite numbers in range (a NaN beta would only show as a
    batch of NaN at the end of the first UNet loop)."""
    from geoxai.ldm.training import LDM_RULES

    rules = {key: rule for key, rule in LDM_RULES.items() if key.startswith("diffusion.")}
    with settings_from("", f"{setting('checkpoint')} {checkpoint} (its noise schedule)"):
        check_values({"diffusion": schedule}, rules)


def check_guidance(guidance: Any, where: str) -> None:
    """A guidance scale is a finite number >= 0 (0: the unconditional model, 1: the plain conditional
    one); NaN would otherwise run to the end and write a run of black images."""
    if isinstance(guidance, bool) or not isinstance(guidance, numbers.Real) or not math.isfinite(guidance) \
            or guidance < 0:
        raise GeoxaiError(f"{where} {guidance!r}: must be a finite number >= 0 (1 is the plain conditional model)")


def _generate(run: Any, pipeline: Any, todo: list[tuple[Any, int, int]], descriptors: dict[str, torch.Tensor],
              steps: int, guidance: float, batch_size: int, desc: str, progress: bool) -> None:
    """Generate ``todo`` (query, sample, seed) in batches, saving each batch as soon as it is done;
    a batch with non-finite values stops the run before it is saved."""
    from geoxai.ldm.pipeline import NonFiniteGeneration

    with tqdm(total=len(todo), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            batch_descriptors = torch.stack([descriptors[item.query_id] for item, _, _ in chunk])
            generators = [torch.Generator().manual_seed(int(s)) for _, _, s in chunk]
            try:
                images = pipeline(batch_descriptors, num_inference_steps=steps, guidance=guidance,
                                  generator=generators, output="pil")
            except NonFiniteGeneration as exc:
                raise NonFiniteGeneration(f"{exc}; nothing was written for this batch (earlier batches are "
                                          "kept)") from None
            run.save_images([(item, sample, s, image) for (item, sample, s), image in zip(chunk, images, strict=True)])
            bar.update(len(chunk))


def _accelerator(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if str(device).startswith("cuda") else "cpu"


def _launched_fabric(devices: int, num_nodes: int, device: str) -> Any:
    """A Fabric joined to the launcher's process group when a cluster launcher started this command
    with ``devices``/``num_nodes`` > 1, else None (one process, or processes spawned later)."""
    if devices * num_nodes <= 1 or not ("LOCAL_RANK" in os.environ or "SLURM_PROCID" in os.environ):
        return None
    from lightning_fabric import Fabric

    fabric = Fabric(accelerator=_accelerator(device), devices=devices, num_nodes=num_nodes, strategy="ddp")
    fabric.launch()
    return fabric


def _spawn_workers(job: dict[str, Any], devices: int, device: str) -> None:
    """Spawn ``devices`` processes on this node (Fabric ``ddp_spawn``); returns when all are done."""
    from lightning_fabric import Fabric

    accelerator = _accelerator(device)
    fabric = Fabric(accelerator=accelerator, devices=devices, strategy="ddp_spawn")
    job = {**job, "threads": max(1, (os.cpu_count() or 1) // devices) if accelerator == "cpu" else 1}
    fabric.launch(_sample_worker, job)


def _sample_worker(fabric: Any, job: dict[str, Any], run: Any = None, components: Any = None,
                   vae: Any = None) -> None:
    """One process of a sharded sampling run: every world-th pending image, then a barrier."""
    from geoxai.ldm.autoencoder import load_autoencoder
    from geoxai.ldm.loading import load_components
    from geoxai.ldm.pipeline import DescriptorDiffusionPipeline

    if "threads" in job:
        torch.set_num_threads(job["threads"])
    rank, world = fabric.global_rank, fabric.world_size
    if components is None:
        components = load_components(job["checkpoint"], map_location="cpu")
        vae = load_autoencoder(components.config["autoencoder"])
    if run is None:
        run = GenerationRun.create(job["out"], job["settings"], resume=True)
    pipeline = DescriptorDiffusionPipeline.from_components(components, vae, sampler=job["sampler"],
                                                           device=fabric.device)

    descriptors = {k: torch.from_numpy(v) for k, v in job["descriptors"].items()}
    todo = [(QueryItem(**item), sample, s) for item, sample, s in job["todo"]]
    _generate(run, pipeline, todo[rank::world], descriptors, job["steps"], job["guidance"],
              job["batch_size"], f"sampling ({job['sampler']}, {job['steps']} steps, rank {rank} of {world})",
              job["progress"] and rank == 0)
    fabric.barrier()


def _warn(settings: dict[str, Any], domain_notice: str | None) -> None:
    """Say on stderr, once per command, what makes the run's images describe something else than the user's data."""
    if settings["random_weights"]:
        named = ", ".join(f"{k} {v}" for k, v in settings["embedder"].items())
        print(f"WARNING: the queries' descriptors come from an embedder with RANDOM weights ({named}): the "
              "generations are an untrained network baseline, not explanations of a VPR model", file=sys.stderr)
    if domain_notice:
        print(f"notice: {domain_notice}", file=sys.stderr)


def _notify(skipped: list[tuple[Path, str]], without_utm: list[Any], reshaped: list[str]) -> None:
    """Say on stderr, once per run, what was skipped or will not be scorable (never silently)."""
    lines = []
    if skipped:
        lines.append(f"skipped {len(skipped)} unreadable query image(s) or folder(s), first: {skipped[0][1]}")
    if without_utm:
        lines.append(f"{len(without_utm)} query name(s) carry no UTM coordinates (e.g. {without_utm[0].query_path.name}): "
                     "their manifest rows have empty utm_east/utm_north, so recall cannot be scored for them")
    lines += reshaped
    for line in lines:
        print(f"notice: {line}", file=sys.stderr)
