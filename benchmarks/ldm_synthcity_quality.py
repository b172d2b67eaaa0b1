"""Does a descriptor-conditioned LDM trained on SynthCity generate the *place* of its descriptor?

Per conditioning mode (crossattn = the thesis, tokens, film) this trains ``configs/ldm/synthcity.yaml``
for a wall-clock budget, generates images from held-out queries' descriptors (``geoxai sample``) and
reports, beside their baselines:

- recall@1 of the generations used as queries against ``<world>/database`` (the embedder's own
  retrieval, 25 m positives) next to the original queries' recall@1 and chance (target >= 50%);
- the mean descriptor cosine between each original and its generations next to an other-place
  pairing (each generation against the originals of queries at other places: the chance level);
- the loss curve (``loss.png``) and a grid of originals beside three generations (``grid.png``).

Outputs in ``--out``: ``<mode>/train/`` (the training run), ``<mode>/generations/`` (a GenerationRun),
``<mode>/results.json``, ``<mode>/loss.png``, ``<mode>/grid.png`` and ``results.csv`` (one row per mode).
A mode whose ``train/checkpoints/last.ckpt`` exists is not trained again (delete the folder to retrain).

Needs the SynthCity world and its CosPlace embedder (and the autoencoder the config names):

    geoxai data synthcity --out worlds/synthcity
    geoxai train --config configs/embedder/synthcity-resnet18.yaml
    python benchmarks/ldm_synthcity_quality.py                           # 30 min per mode, all queries
    python benchmarks/ldm_synthcity_quality.py --minutes 1 --queries 8 --modes crossattn   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch


def check_inputs(config: dict[str, Any], world: Path, config_path: Path) -> None:
    """Stop with the commands that build what is missing (nothing is downloaded)."""
    problems = []
    if not (world / "queries").is_dir() or not (world / "database").is_dir():
        problems.append(f"no SynthCity world at {world}: run `geoxai data synthcity --out {world}`")
    for folder in config.get("data", {}).get("train_dirs") or []:
        if not Path(folder).is_dir():
            problems.append(f"training folder {folder} (data.train_dirs of {config_path}) does not exist: "
                            f"run `geoxai data synthcity --out {Path(folder).parent}`")
    weights = (config.get("embedder") or {}).get("weights")
    if weights not in (None, "hub") and not Path(str(weights)).is_file():
        problems.append(f"embedder weights {weights} not found: train the SynthCity CosPlace embedder with "
                        "`geoxai train --config configs/embedder/synthcity-resnet18.yaml`")
    autoencoder = str((config.get("autoencoder") or {}).get("path") or "")
    hub_id = re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", autoencoder) is not None  # e.g. stabilityai/sd-vae-ft-mse
    if autoencoder and not Path(autoencoder).exists() and not hub_id:
        problems.append(f"autoencoder {autoencoder} not found: train it with the autoencoder config "
                        "(configs/autoencoder/), e.g. `geoxai train --config configs/autoencoder/synthcity.yaml`")
    if problems:
        sys.exit("missing inputs:\n  " + "\n  ".join(problems))


def subset_queries(world: Path, count: int | None, out: Path) -> Path:
    """All queries of the world, or ``count`` of them spread evenly over the places (copied once)."""
    from geoxai.data.vpr import list_images

    paths = list_images(world / "queries")
    if count is None or count >= len(paths):
        return world / "queries"
    chosen = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, count).round()]
    folder = out / f"queries_{count}"
    if sorted(p.name for p in folder.glob("*")) != sorted(p.name for p in chosen):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for path in chosen:
            shutil.copy2(path, folder / path.name)
    return folder


def plot_loss(loss_csv: Path, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.read_csv(loss_csv)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(frame["step"], frame["loss"], lw=0.6, alpha=0.4, label="per step")
    window = len(frame) // 50
    if window > 1:
        ax.plot(frame["step"], frame["loss"].rolling(window, min_periods=1).mean(), lw=1.5,
                label=f"mean of {window} steps")
    ax.set(xlabel="optimizer step", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate(run_folder: Path, world: Path, embedder: Any, device: torch.device, batch_size: int,
             search: Any = None) -> dict[str, Any]:
    """Recall@1 of generations and originals, chance, and paired vs other-place descriptor cosine.

    ``search(database, queries, k) -> (distances, indices)``: geoxai's faiss search unless given.
    """
    from geoxai.data.vpr import VPRTestSet, radius_positives
    from geoxai.embedders.descriptors import embed_files
    from geoxai.retrieval import chance_recall, recall_at
    from geoxai.runs import GenerationRun

    if search is None:
        from geoxai.retrieval import search

    test_set = VPRTestSet(world)
    manifest = GenerationRun.open(run_folder).manifest(absolute=True)
    query_paths = sorted(set(manifest["query_path"]))
    query_index = {p: i for i, p in enumerate(query_paths)}
    compute = dict(batch_size=batch_size, device=device, progress=True)
    database = embed_files(embedder, test_set.database_paths, desc="database", **compute).array
    originals = embed_files(embedder, [Path(p) for p in query_paths], desc="originals", **compute).array
    generated = embed_files(embedder, [Path(p) for p in manifest["image_path"]], desc="generations", **compute).array
    query_utm = manifest.groupby("query_path")[["utm_east", "utm_north"]].first().loc[query_paths].to_numpy()
    positives = radius_positives(test_set.database_utm, query_utm, test_set.radius)
    owner = manifest["query_path"].map(query_index).to_numpy()

    _, top_original = search(database, originals, 1)
    _, top_generated = search(database, generated, 1)
    correct_generated = np.array([top_generated[i, 0] in positives[q] for i, q in enumerate(owner)], dtype=float)
    per_query = [correct_generated[owner == q].mean() * 100 for q in range(len(query_paths)) if len(positives[q])]
    cosine = (generated * originals[owner]).sum(axis=1)
    near = np.linalg.norm(query_utm[:, None] - query_utm[None], axis=-1) <= test_set.radius
    others = (generated @ originals.T)[~near[owner]]  # each generation vs originals of other places
    return {
        "queries": len(query_paths), "generations": len(manifest), "database": len(test_set.database_paths),
        "recall@1_generated": float(np.mean(per_query)),  # mean over queries of the share of correct samples
        "recall@1_original": recall_at(top_original, positives, ns=(1,))[1],
        "recall@1_chance": chance_recall([len(p) for p in positives], len(database), ns=(1,))[1],
        "cosine_paired": float(cosine.mean()),
        "cosine_other_place": float(others.mean()),
    }


@torch.no_grad()
def reconstruction_recall(autoencoder: Any, queries: list[Path], world: Path, embedder: Any, device: torch.device,
                          batch_size: int, search: Any = None) -> dict[str, float]:
    """Recall@1 of the queries passed through the autoencoder (encode, posterior mode, decode).

    The ceiling for any LDM on that autoencoder: a generation can at best be the reconstruction.
    """
    from geoxai.data.images import load_tensor
    from geoxai.data.vpr import VPRTestSet, radius_positives, utm_coordinates
    from geoxai.data.images import resize_center_crop
    from geoxai.embedders.descriptors import embed_files
    from geoxai.retrieval import recall_at

    if search is None:
        from geoxai.retrieval import search
    test_set = VPRTestSet(world)
    database = embed_files(embedder, test_set.database_paths, batch_size=batch_size, device=device,
                           progress=False).array
    autoencoder = autoencoder.to(device).eval()
    originals, reconstructions = [], []
    for start in range(0, len(queries), batch_size):
        images = torch.stack([resize_center_crop(load_tensor(p), embedder.image_size)
                              for p in queries[start:start + batch_size]]).to(device)
        latents = autoencoder.encode(images * 2 - 1).latent_dist.mode()
        decoded = ((autoencoder.decode(latents).sample.clamp(-1, 1) + 1) / 2).float()
        originals.append(embedder.embed(images).float().cpu().numpy())
        reconstructions.append(embedder.embed(decoded).float().cpu().numpy())
    originals, reconstructions = np.concatenate(originals), np.concatenate(reconstructions)
    positives = radius_positives(test_set.database_utm, utm_coordinates(queries), test_set.radius)
    _, top = search(database, reconstructions, 1)
    return {"recall@1_reconstruction": recall_at(top, positives, ns=(1,))[1],
            "cosine_reconstruction": float((originals * reconstructions).sum(axis=1).mean())}


def trained_steps(checkpoint: Path) -> int:
    """The optimizer step a Lightning checkpoint was saved at."""
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"])


def generations_grid(run_folder: Path, image_size: int, rows: int, path: Path) -> None:
    from geoxai.data.images import load_tensor
    from geoxai.data.images import resize_center_crop
    from geoxai.files import atomic_save_image
    from geoxai.report.grids import original_vs_generations_grid
    from geoxai.runs import GenerationRun

    manifest = GenerationRun.open(run_folder).manifest(absolute=True)
    ids = sorted(manifest["query_id"].unique())
    ids = [ids[int(i)] for i in np.linspace(0, len(ids) - 1, min(rows, len(ids))).round()]
    originals, generations = [], []
    for query_id in ids:
        rows_of = manifest[manifest["query_id"] == query_id].sort_values("sample")
        originals.append(resize_center_crop(load_tensor(rows_of["query_path"].iloc[0]), image_size))
        generations.append([load_tensor(p) for p in rows_of["image_path"].iloc[:3]])
    columns = min(3, len(generations[0]))
    atomic_save_image(path, original_vs_generations_grid(originals, generations, ncols=columns, labels=ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/ldm/synthcity.yaml"))
    parser.add_argument("--world", type=Path, default=Path("worlds/synthcity"), help="SynthCity world folder")
    parser.add_argument("--minutes", type=float, default=30.0, help="training wall-clock budget per mode")
    parser.add_argument("--modes", default="crossattn,tokens,film", help="conditioning modes, comma-separated")
    parser.add_argument("--queries", type=int, default=None, help="held-out queries to sample (default: all)")
    parser.add_argument("--samples", type=int, default=3, help="generations per query")
    parser.add_argument("--sampler", default="dpm++", choices=["dpm++", "ddim", "ddpm"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0,
                        help="classifier-free guidance (the config trains with p_uncond 0.1)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--grid-rows", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/ldm_synthcity"))
    parser.add_argument("overrides", nargs="*", help="extra config overrides key.sub=value for every mode")
    args = parser.parse_args()

    import pandas as pd

    from geoxai.config import load_config
    from geoxai.devices import resolve_device
    from geoxai.embedders import from_spec
    from geoxai.files import atomic_write_text
    from geoxai.ldm.sampling import sample_run
    from geoxai.ldm.training import train

    device = resolve_device(args.device)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    check_inputs(load_config(args.config, args.overrides), args.world, args.config)
    queries = subset_queries(args.world, args.queries, args.out)
    ceilings: dict[str, dict[str, float]] = {}  # per autoencoder: recall@1 of the queries' reconstructions
    rows = []
    for mode in modes:
        folder = args.out / mode
        config = load_config(args.config, [*args.overrides, f"conditioning.mode={mode}",
                                           f"trainer.max_time={args.minutes}", f"output_dir={folder / 'train'}"])
        checkpoint = folder / "train" / "checkpoints" / "last.ckpt"
        if checkpoint.is_file():
            print(f"[{mode}] reusing {checkpoint} (delete {folder / 'train'} to train again)")
        else:
            print(f"[{mode}] training for {args.minutes:g} minutes")
            checkpoint = train(config)
        plot_loss(folder / "train" / "loss.csv", folder / "loss.png", f"SynthCity LDM, conditioning {mode}")
        run = sample_run(checkpoint, queries, folder / "generations", samples=args.samples, sampler=args.sampler,
                         steps=args.steps, guidance=args.guidance, batch_size=args.batch_size, device=str(device))
        print(run.format())
        generations_grid(folder / "generations", int(config["data"]["image_size"]), args.grid_rows, folder / "grid.png")
        embedder = from_spec(config["embedder"]).to(device).eval()
        autoencoder = str(config["autoencoder"]["path"])
        if autoencoder not in ceilings:
            from geoxai.data.vpr import list_images
            from geoxai.ldm.autoencoder import load_autoencoder

            ceilings[autoencoder] = reconstruction_recall(load_autoencoder(config["autoencoder"]),
                                                          list_images(queries), args.world, embedder, device,
                                                          args.batch_size)
        result = {"mode": mode, "minutes": args.minutes, "sampler": args.sampler, "steps": args.steps,
                  "guidance": args.guidance, "checkpoint": str(checkpoint), "train_steps": trained_steps(checkpoint),
                  **evaluate(folder / "generations", args.world, embedder, device, args.batch_size),
                  **ceilings[autoencoder]}
        atomic_write_text(folder / "results.json", json.dumps(result, indent=1))
        rows.append(result)
        print(f"[{mode}] {result['train_steps']} steps; recall@1 generations {result['recall@1_generated']:.1f} "
              f"(target >= 50), originals {result['recall@1_original']:.1f}, autoencoder reconstructions "
              f"{result['recall@1_reconstruction']:.1f}, chance {result['recall@1_chance']:.1f}; descriptor cosine "
              f"paired {result['cosine_paired']:.3f} vs other places {result['cosine_other_place']:.3f}")
    table = pd.DataFrame(rows)
    atomic_write_text(args.out / "results.csv", table.to_csv(index=False, float_format="%.4g"))
    columns = ["mode", "train_steps", "queries", "generations", "recall@1_generated", "recall@1_original",
               "recall@1_reconstruction", "recall@1_chance", "cosine_paired", "cosine_other_place"]
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"written: {args.out / 'results.csv'} and per mode results.json, loss.png, grid.png")


if __name__ == "__main__":
    main()
