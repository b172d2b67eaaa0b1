"""The ``geoxai`` command line: a thin layer that parses options and calls the library.

User mistakes surface as ``GeoxaiError`` and are printed on one line (exit status 2); so are output
folders that cannot be written (permissions, a read-only or full disk). Library imports happen
inside the commands so that ``geoxai --help`` stays fast. Results go to stdout, progress bars and
notices to stderr. Every ``torch.load`` in the process, a library's included, loads weights only.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from geoxai import __version__
from geoxai.data.conventions import POSITIVE_RADIUS_M
from geoxai.errors import GeoxaiError


class FiniteFloat(click.FloatRange):
    """click's ``FloatRange`` that also refuses nan and infinities: ``float("nan")`` parses and
    passes every range comparison (``nan < 0`` is false), so a NaN would reach the model."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


# Whole numbers that count something: at least one.
COUNT = click.IntRange(min=1)
# Seeds are hashed or stored as 64-bit integers (torch generators, pandas columns): 0 to 2**63 - 1.
SEED = click.IntRange(min=0, max=2**63 - 1)
# Radii in metres: positive and finite.
RADIUS = FiniteFloat(min=0, min_open=True)
# Classifier-free guidance: uncond + g * (cond - uncond). 0 is the unconditional model (a baseline of what
# the descriptor adds), 1 the plain conditional one; a negative scale would push away from the descriptor.
GUIDANCE = FiniteFloat(min=0)
# SynthCity's smallest image side (geoxai.synthcity.MIN_SIZE; not imported, to keep --help fast).
MIN_WORLD_SIZE = 32


class _Group(click.Group):
    """A click group that turns ``GeoxaiError``, click's usage errors and write errors into a one-line message."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a bad option of a subcommand: one line, like every other mistake
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
            ctx.exit(2)
        except GeoxaiError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except OSError as exc:
            from geoxai.files import is_write_error, output_error

            if not is_write_error(exc):
                raise
            path = exc.filename or "output"
            click.echo(f"error: {output_error(exc, path)}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoxai")
def cli() -> None:
    """Explain visual place recognition descriptors with generative models."""


def format_run(run: Any) -> str:
    """A one-paragraph summary of a GenerationRun for the terminal."""
    done = run.progress()
    text = (f"GenerationRun {run.root}: {done['images']} images of {done['queries']} queries "
            f"(up to {done['samples']} samples per query)")
    if done["planned"] > done["images"]:
        text += f", {done['planned'] - done['images']} planned images still missing (re-run to resume)"
    what = [f"{key} {run.settings[key]}" for key in ("kind", "sampler", "steps", "guidance", "seed") if key in run.settings]
    if what:
        text += f"; {', '.join(what)}"
    if done["updated"]:
        text += f"; created {run.settings.get('created', '?')}, last written {done['updated']}"
    if done["session_images"]:
        seconds = done["session_seconds"]
        text += (f"; this session wrote {done['session_images']} images in {seconds:.0f} s "
                 f"({done['session_images'] / max(seconds, 1e-9):.2f} images/s)")
    return text + "."


# --------------------------------------------------------------------------------------- data
@cli.group(cls=_Group)
def data() -> None:
    """Build and inspect VPR datasets (SynthCity, folders in VPR format)."""


@data.command("synthcity")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write train/, database/, queries/, labels/ and metadata.csv into.")
@click.option("--places", default=200, show_default=True, type=COUNT, help="Number of places.")
@click.option("--visits", default=6, show_default=True, type=click.IntRange(min=2),
              help="Visits (photos) per place: visit 0 goes to database/, later visits to queries/.")
@click.option("--size", default=128, show_default=True, type=click.IntRange(min=MIN_WORLD_SIZE),
              help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="World seed.")
@click.option("--test-fraction", default=0.3, show_default=True, type=FiniteFloat(0, 1, min_open=True, max_open=True),
              help="Share of places held out as test places: database/ and queries/.")
@click.option("--val-fraction", default=0.1, show_default=True, type=FiniteFloat(0, 1, max_open=True),
              help="Share of the remaining places held out as validation places: val/database/ and val/queries/ "
                   "(the rest go to train/). Choices are tuned on them, never on test places.")
@click.option("--overwrite", is_flag=True, help="Replace a different world already in --out.")
def data_synthcity(out: Path, places: int, visits: int, size: int, seed: int, test_fraction: float,
                   val_fraction: float, overwrite: bool) -> None:
    """Render a SynthCity world in VPR format, with label maps and a factor table."""
    from geoxai.synthcity.world import write_world

    summary = write_world(out, places=places, visits=visits, size=size, seed=seed, test_fraction=test_fraction,
                          val_fraction=val_fraction, overwrite=overwrite, progress=True)
    click.echo(summary.format())


@data.command("synthcity-run")
@click.option("--world", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="SynthCity world folder (from `geoxai data synthcity --out`); its queries/ are the queries.")
@click.option("--kind", required=True, type=str,
              help="What each sample is: identity, oracle, other-place, sky, lighting, vehicles, pedestrians, "
                   "signs, windows or colours (see docs/synthcity.md, Reference runs).")
@click.option("--samples", default=4, show_default=True, type=COUNT, help="Images per query.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="GenerationRun folder to write; an existing run with the same settings is resumed.")
@click.option("--seed", default=0, show_default=True, type=SEED,
              help="Run seed: picks the fresh visits and, for other-place, the other places.")
@click.option("--limit", default=None, type=COUNT, help="Only the first N queries (in plan order). [default: all]")
def data_synthcity_run(world: Path, kind: str, samples: int, out: Path, seed: int, limit: int | None) -> None:
    """Write a SynthCity reference run: renders of known cause in place of an explainer's generations."""
    from geoxai.synthcity.reference_runs import write_reference_run

    run = write_reference_run(world, kind, samples, out, seed=seed, limit=limit, progress=True)
    click.echo(format_run(run))


@data.command("info")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--radius", default=POSITIVE_RADIUS_M, show_default=True, type=RADIUS, help="Positive radius in metres.")
@click.option("--no-labels", is_flag=True,
              help="Do not read UTM coordinates from file names (folders without VPR names).")
@click.option("--no-decode", is_flag=True,
              help="Read image headers only; skip the full decode check (fast on huge datasets).")
def data_info(folder: Path, radius: float, no_labels: bool, no_decode: bool) -> None:
    """Summarise a VPR dataset folder: counts, sizes, UTM extent, positives, duplicates, unreadable files.

    FOLDER is a test set (database/ + queries/), a training folder, or a world root with train/,
    database/ and queries/.
    """
    from geoxai.data.info import dataset_info

    info = dataset_info(folder, radius=radius, labels=not no_labels, decode=not no_decode, progress=True)
    click.echo(info.format())


# ------------------------------------------------------------------------------------ training
@cli.command("train", context_settings={"ignore_unknown_options": True})
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
              help="YAML config; its `stage:` key picks embedder, autoencoder, ldm or segmenter (examples in "
                   "configs/).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in the config's output_dir.")
@click.argument("overrides", nargs=-1)
def train(config_path: Path, resume: bool, overrides: tuple[str, ...]) -> None:
    """Train a stage from a config, with key.sub=value overrides (e.g. trainer.max_time=30)."""
    from geoxai.config import load_config
    from geoxai.stages import run_stage

    result = run_stage(load_config(config_path, overrides), resume=resume, where=str(config_path))
    if result is not None:
        click.echo(f"saved: {result}")


# ----------------------------------------------------------------------------------- embedders
def embedder_options(func=None, *, of_run: bool = False):
    """Options that describe an embedder: a registered name plus its settings, or a spec file.

    ``of_run``: the command (evaluate) defaults to the embedder its GenerationRun records, so no
    option is required and the defaults say so.
    """
    if func is None:
        return lambda f: embedder_options(f, of_run=of_run)
    run_default = " [default: the embedder the run's generations were conditioned on]"
    options = [
        click.option("--embedder", default="cosplace", show_default=not of_run,
                     help="Registered embedder name, or a shipped model's name (synthcity: no other options needed)."
                          + (run_default if of_run else "")),
        click.option("--embedder-config", type=click.Path(path_type=Path), default=None,
                     help="YAML spec of the embedder (the embedder.yaml written beside trained weights, or "
                          "configs/embedder/specs/*.yaml); replaces the options below. [default: none]"),
        click.option("--backbone", default=None,
                     help="CosPlace backbone: resnet18/50/101/152 or vgg16. [default: read from --weights, "
                          "else resnet50]"),
        click.option("--dim", default=None, type=COUNT,
                     help="Descriptor dimension. [default: read from --weights, else 512]"),
        click.option("--weights", default=None,
                     help="Weights file, `hub` for the released CosPlace weights, or `random` for a seeded random "
                          "init (an untrained network baseline). "
                          + ("[default: the run's embedder; required with --embedder cosplace]" if of_run
                             else "[required]")),
        click.option("--image-size", default=None, type=COUNT,
                     help="Input side after resize and centre crop. [default: 512, the thesis' CosPlace]"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def embedder_spec(embedder: str, embedder_config: Path | None, **options: Any) -> dict[str, Any]:
    """Collect embedder options into the spec dict that ``geoxai.embedders.from_spec`` reads."""
    if embedder_config is not None:
        from geoxai.embedders import read_spec  # resolves the sidecar's weights against its folder

        return read_spec(embedder_config)
    spec = {"name": embedder}
    spec.update({k: v for k, v in options.items() if v is not None})
    return spec


def device_option(func):
    return click.option("--device", default="auto", show_default=True,
                        help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")(func)


def batch_size_option(default: int, what: str):
    return click.option("--batch-size", default=default, show_default=True, type=COUNT, help=f"{what} per batch.")


@cli.command("retrieve")
@click.option("--dataset", required=True, type=click.Path(path_type=Path),
              help="VPR test folder with database/ and queries/.")
@embedder_options
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for recalls.csv, predictions.csv and the descriptors. [default: print only]")
@batch_size_option(32, "Images")
@device_option
@click.option("--radius", default=POSITIVE_RADIUS_M, show_default=True, type=RADIUS, help="Positive radius in metres.")
@click.option("--no-labels", is_flag=True,
              help="File names carry no UTM coordinates: find nearest neighbours only (predictions.csv, no recall).")
def retrieve(dataset: Path, embedder: str, embedder_config: Path | None, backbone: str | None,
             dim: int | None, weights: str | None, image_size: int | None, out: Path | None,
             batch_size: int, device: str, radius: float, no_labels: bool) -> None:
    """Recall@1/5/10/20 of an embedder on a VPR test set (faiss, 25 m positives)."""
    from geoxai.retrieval import evaluate_retrieval

    spec = embedder_spec(embedder, embedder_config, backbone=backbone, dim=dim, weights=weights,
                         image_size=image_size)
    result = evaluate_retrieval(dataset, spec, out=out, batch_size=batch_size, device=device,
                                radius=radius, progress=True, labels=not no_labels)
    click.echo(result.format())


@cli.command("probe")
@embedder_options
@click.option("--places", default=50, show_default=True, type=click.IntRange(min=2),
              help="SynthCity places to probe (at least 2: one is the other's chance level).")
@click.option("--seed", default=0, show_default=True, type=SEED, help="SynthCity world seed.")
@click.option("--size", default=128, show_default=True, type=click.IntRange(min=MIN_WORLD_SIZE),
              help="SynthCity image side.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for probe.csv. [default: print only]")
@device_option
def probe(embedder: str, embedder_config: Path | None, backbone: str | None, dim: int | None,
          weights: str | None, image_size: int | None, places: int, seed: int, size: int,
          out: Path | None, device: str) -> None:
    """Descriptor stability when one SynthCity factor changes, beside a different place."""
    from geoxai.embedders.probe import run_probe

    spec = embedder_spec(embedder, embedder_config, backbone=backbone, dim=dim, weights=weights,
                         image_size=image_size)
    result = run_probe(spec, places=places, seed=seed, size=size, out=out, device=device,
                       progress=True)
    click.echo(result.format())


# ------------------------------------------------------------------------------------ sampling
@cli.command("sample")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="Lightning checkpoint (.ckpt) from `geoxai train` (stage: ldm), an exported pipeline folder, "
                   "or a shipped model's name (synthcity).")
@click.option("--queries", required=True, type=click.Path(path_type=Path),
              help="Folder of query images (any depth), e.g. a test set's queries/.")
@click.option("--samples", default=4, show_default=True, type=COUNT, help="Generations per query.")
@click.option("--sampler", default="dpm++", show_default=True, type=click.Choice(["dpm++", "ddim", "ddpm"]),
              help="Diffusion sampler (DPM-Solver++ 2M, DDIM with eta 0, ancestral DDPM).")
@click.option("--steps", default=20, show_default=True, type=COUNT,
              help="Sampler steps per image (at most the model's training timesteps, 1000 for geoxai's models).")
@click.option("--guidance", default=None, type=GUIDANCE,
              help="Classifier-free guidance scale (1 = the plain conditional model, 0 = the unconditional one). "
                   "[default: the one chosen for the model on validation places when it carries one (shipped "
                   "models), else 1]")
@click.option("--seed", default=0, show_default=True, type=SEED,
              help="Run seed; each image's seed is derived from it, the query and the sample index.")
@batch_size_option(16, "Images generated")
@click.option("--limit", default=None, type=COUNT, help="Only the first N queries. [default: all]")
@device_option
@click.option("--devices", default=1, show_default=True, type=COUNT,
              help="Processes (one per GPU, or CPU processes) that share the images to generate (torch.distributed).")
@click.option("--num-nodes", default=1, show_default=True, type=COUNT,
              help="Nodes, each running this command under a cluster launcher (SLURM, torchrun).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="GenerationRun folder (resumed if it exists).")
def sample(checkpoint: Path, queries: Path, samples: int, sampler: str, steps: int, guidance: float,
           seed: int, batch_size: int, limit: int | None, device: str, devices: int, num_nodes: int,
           out: Path) -> None:
    """Generate images from the descriptors of query photos into a GenerationRun."""
    from geoxai.ldm.sampling import sample_run

    run = sample_run(checkpoint, queries, out, samples=samples, sampler=sampler, steps=steps,
                     guidance=guidance, seed=seed, batch_size=batch_size, limit=limit,
                     device=device, progress=True, devices=devices, num_nodes=num_nodes)
    click.echo(format_run(run))


# ----------------------------------------------------------------------------------- evaluation
@cli.command("evaluate")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--plugins", required=True,
              help="Comma-separated plugins: registered names (see `geoxai plugins`), module:Class or file.py:Class.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="EVAL folder for records.parquet, summary.csv, results.json, errors.csv (resumed if it exists).")
@click.option("--database", type=click.Path(path_type=Path), default=None,
              help="Database images with UTM names (a folder, or a test set with database/): retrieval and "
                   "the reference pairing (another real photo of each place). [default: none]")
@embedder_options(of_run=True)
@batch_size_option(32, "Images")
@device_option
@click.option("--devices", default=1, show_default=True, type=COUNT,
              help="Processes (one per GPU) that share the artifact computation (torch.distributed).")
@click.option("--num-nodes", default=1, show_default=True, type=COUNT,
              help="Nodes, each running this command under a cluster launcher (SLURM, torchrun).")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the shuffled pairing and of the bootstrap.")
@click.option("--radius", default=POSITIVE_RADIUS_M, show_default=True, type=RADIUS, help="Same-place radius in metres.")
@click.option("--label", default=None, help="Name of this evaluation in reports. [default: the --out folder's name]")
@click.option("--segmenter", default=None,
              help="Segmenter for plugins that read label maps (see `geoxai segmenters`): groundtruth, synthcity, "
                   "hf, ... [default: none]")
@click.option("--segmenter-config", type=click.Path(path_type=Path), default=None,
              help="YAML spec of the segmenter ({name: hf, model: ...}); replaces --segmenter. [default: none]")
def evaluate(run: Path, plugins: str, out: Path, database: Path | None, embedder: str, embedder_config: Path | None,
             backbone: str | None, dim: int | None, weights: str | None, image_size: int | None, batch_size: int,
             device: str, devices: int, num_nodes: int, seed: int, radius: float, label: str | None,
             segmenter: str | None, segmenter_config: Path | None) -> None:
    """Score a GenerationRun with plugins; every metric beside its shuffled (chance) and reference baselines.

    RUN is a GenerationRun folder (`geoxai sample`, `geoxai data synthcity-run`, or any generator's).
    The embedder defaults to the one the run's generations were conditioned on; embedder options
    replace it (e.g. to ask whether another VPR model re-identifies the place). Exit status 1 when a
    plugin failed (its traceback is in errors.csv; the others finished).
    """
    from geoxai.evaluation.runner import evaluate as run_evaluation
    from geoxai.evaluation.runner import exit_status

    options_given = embedder_config is not None or any(v is not None for v in (backbone, dim, weights, image_size)) \
        or embedder != "cosplace"
    spec = embedder_spec(embedder, embedder_config, backbone=backbone, dim=dim, weights=weights,
                         image_size=image_size) if options_given else None
    segmenter_spec = None
    if segmenter_config is not None:
        from geoxai.segmentation.base import read_segmenter_spec

        segmenter_spec = read_segmenter_spec(segmenter_config)
    elif segmenter is not None:
        segmenter_spec = {"name": segmenter}
    result = run_evaluation(run, plugins, out, database=database, embedder_spec=spec, batch_size=batch_size,
                            device=device, devices=devices, num_nodes=num_nodes, seed=seed, radius=radius,
                            progress=True, label=label, segmenter_spec=segmenter_spec)
    click.echo(result.format())
    status = exit_status(result)
    if status:
        click.echo(f"error: plugin(s) failed: {', '.join(result.failed)}; see {result.out / 'errors.csv'}", err=True)
        sys.exit(status)


@cli.command("plugins")
def plugins_command() -> None:
    """List the installed evaluation plugins: version, description, artifacts needed, metrics."""
    from geoxai.evaluation.discovery import describe_plugins

    click.echo(describe_plugins())


@cli.command("segmenters")
@click.option("--config", "config", type=click.Path(path_type=Path), default=None,
              help="Describe one configured backend (a segmenter spec YAML, e.g. {name: hf, model: ...}): the classes "
                   "its model expresses and its licence. [default: list every installed backend]")
def segmenters_command(config: Path | None) -> None:
    """List the installed segmenter backends: the canonical classes each can express, licence, inference."""
    from geoxai.segmentation.base import describe_segmenters, from_spec, read_segmenter_spec

    if config is None:
        click.echo(describe_segmenters())
        return
    info = from_spec(read_segmenter_spec(config)).describe()
    click.echo(f"{info['name']}: classes {', '.join(info['classes'])}; licence: {info['licence'] or 'not stated'}; "
               f"inference: {info['inference']}")


# ---------------------------------------------------------------------------------- pretrained
@cli.group("pretrained", cls=_Group, invoke_without_command=True)
@click.pass_context
def pretrained_group(ctx: click.Context) -> None:
    """The trained models shipped with geoxai, loaded by name (--checkpoint synthcity, --embedder synthcity).

    Without a subcommand: list them with their size and the first line of their model card.
    """
    if ctx.invoked_subcommand is not None:
        return
    from geoxai import pretrained

    for kind in pretrained.KINDS:
        for name in pretrained.names(kind):
            folder = pretrained.folder(name, kind)
            size = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
            card = (folder / "MODEL_CARD.md").read_text().splitlines()[0].lstrip("# ") \
                if (folder / "MODEL_CARD.md").is_file() else "(no model card)"
            click.echo(f"{name:<12} {kind:<12} {size / 2**20:6.1f} MiB  {card}\n{'':<26}{folder}")


@pretrained_group.command("build")
@click.argument("name")
@click.option("--embedder", "embedder_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder of an embedder training run (holds embedder.yaml), or a shipped embedder's name "
                   "to keep it as it is.")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="LDM checkpoint (.ckpt) trained on that embedder.")
@click.option("--segmenter", "segmenter_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder of a segmenter training run (holds segmenter.yaml), or a shipped segmenter's name "
                   "to keep it as it is.")
@click.option("--cards", type=click.Path(path_type=Path), default=None,
              help="Folder of embedder.md, ldm.md, autoencoder.md, segmenter.md: measured numbers for the cards. "
                   "[default: none]")
@click.option("--guidance", type=GUIDANCE, default=None,
              help="Guidance scale chosen on validation places; `geoxai sample` uses it by default. [default: none]")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Where to write the set. [default: inside the installed package, geoxai/pretrained/NAME]")
def pretrained_build(name: str, embedder_dir: Path, checkpoint: Path, segmenter_dir: Path, cards: Path | None,
                     guidance: float | None, out: Path | None) -> None:
    """Pack trained models as the shipped set NAME: fp16 safetensors and a model card each (docs/pretrained.md)."""
    from geoxai.pretrained_build import build

    click.echo(f"written: {build(name, embedder_dir, checkpoint, segmenter_dir, out=out, cards=cards, guidance=guidance)}")


# -------------------------------------------------------------------------------------- report
@cli.command("report")
@click.argument("evaluations", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Folder for the tables, figures/, grids/ and index.html (created when missing).")
@click.option("--format", "formats", default="md,latex,csv,html", show_default=True,
              help="Comma-separated output formats: md, latex, csv, html (figures and grids are always written).")
@click.option("--grid-rows", default=8, show_default=True, type=COUNT, help="Queries per image grid.")
@click.option("--grid-samples", default=4, show_default=True, type=COUNT, help="Generations shown per query.")
def report(evaluations: tuple[Path, ...], out: Path, formats: str, grid_rows: int, grid_samples: int) -> None:
    """Tables, figures, image grids and a static HTML page from EVAL folders.

    EVALUATIONS are folders written by `geoxai evaluate --out`, in the order of the table rows
    (e.g. checkpoints after 7, 14 and 25 epochs); paired differences compare each with the first.
    """
    from geoxai.report import write_report

    result = write_report(list(evaluations), out, formats=formats, grid_rows=grid_rows,
                          grid_samples=grid_samples)
    click.echo(result.format())


# -------------------------------------------------------------------------------------- assets
@cli.command("assets", context_settings={"ignore_unknown_options": True})
@click.option("--config", "configs", multiple=True, type=click.Path(path_type=Path),
              help="Training config (configs/ldm/*.yaml, ...) or embedder spec whose files to check; repeatable. "
                   "[default: none]")
@click.option("--plugins", default=None,
              help="Comma-separated evaluation plugins whose model weights to check (e.g. fidelity,diversity). "
                   "[default: none]")
@click.option("--segmenter-config", type=click.Path(path_type=Path), default=None,
              help="Segmenter spec YAML ({name: hf, model: ...} or sam) whose model files to check. [default: none]")
@click.argument("overrides", nargs=-1)
def assets(configs: tuple[Path, ...], plugins: str | None, segmenter_config: Path | None,
           overrides: tuple[str, ...]) -> None:
    """Every file the given work needs: found or missing, where to put it, where to fetch it (docs/real-data.md).

    OVERRIDES (key.sub=value, as for `geoxai train`) change every --config. Exit status 1 when anything is missing or does not match its published size and hash.
    """
    from geoxai.assets import check_assets

    result = check_assets(configs, plugins=plugins, segmenter_config=segmenter_config, overrides=overrides)
    click.echo(result.format())
    if not result.complete:
        sys.exit(1)


_OWN_CODE = (str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "plugins"))

def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    """geoxai's own warnings (a damaged cache entry set aside, rows without an image) as one
    ``warning:`` line on stderr; other libraries' warnings keep Python's format, which says where."""
    own = filename.startswith(_OWN_CODE) or "geoxai_plugins" in filename
    if own and issubclass(category, UserWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


def main() -> None:
    """Console-script entry point."""
    from geoxai.weights import FORCE_VARIABLE

    os.environ.setdefault(FORCE_VARIABLE, "1")  # library loads in this process read weights only
    warnings.showwarning = show_warning
    cli(prog_name="geoxai")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
