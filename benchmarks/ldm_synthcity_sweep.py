"""Which design choices move recall@1 of SynthCity generations, at the step counts a 2-core CPU affords?

A 30-minute CPU run of ``configs/ldm/synthcity.yaml`` is one data point; this script compares many
variants *step-matched* to that CPU budget: each autoencoder and LDM variant in the plan trains for
the number of optimizer steps it reaches on the 2-core CPU in its budget (measured there and written
into the plan), so a fast accelerator answers in minutes what the CPU answers in hours.

Choices are made on the world's *validation places* (``val/queries`` against ``val/database``),
never on the test places, and everything is measured with the product (``geoxai sample`` +
``geoxai evaluate --plugins recall``). Per autoencoder: validation PSNR and the *reconstruction
ceiling* (recall@1 of the validation queries passed through the autoencoder: no LDM on it can do
better). Per LDM variant and guidance scale: recall@1 of the generations, beside the originals',
chance and that ceiling, and the descriptor cosine beside the other-place (shuffled) one. Every
variant sets its conditioning mode explicitly and may name its seed (``seed:``, the training seed), so a
plan repeats a variant over seeds; an autoencoder entry with ``path:`` reuses a trained one. With
``--plugins recall,buildings,vehicles --segmenter-config SPEC`` each row also carries building IoU
and vehicle removal (generated, shuffled, reference). Rows are appended to ``results.csv`` as they finish,
so a run cut short keeps what it measured; ``--budget-minutes`` skips what would not finish.

    python benchmarks/ldm_synthcity_sweep.py --plan benchmarks/ldm_synthcity_sweep.yaml --out runs/bench/sweep
    python benchmarks/ldm_synthcity_sweep.py --plan benchmarks/ldm_conditioning_ablation.yaml \
        --plugins recall,buildings,vehicles --segmenter-config runs/segmenter/synthcity/segmenter.yaml \
        --out runs/bench/ablation
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

EXTRA_METRICS = {("buildings", "building_iou"): "building_iou", ("vehicles", "vehicle_removed"): "vehicle_removed"}


def recall_row(eval_folder: Path) -> dict[str, float]:
    """recall@1 (generated with its 95% CI, originals = reference, chance) and cosines from an EVAL
    folder's summary, plus building IoU and vehicle removal when those plugins ran."""
    summary = pd.read_csv(eval_folder / "summary.csv")
    t = summary[summary.plugin == "recall"].set_index(["metric", "pairing"])
    row = {"recall@1_generated": float(t.loc[("recall@1", "generated"), "mean"]),
           "recall@1_ci_low": float(t.loc[("recall@1", "generated"), "ci_low"]),
           "recall@1_ci_high": float(t.loc[("recall@1", "generated"), "ci_high"]),
           "recall@1_original": float(t.loc[("recall@1", "reference"), "mean"]),
           "recall@1_chance": float(t.loc[("recall@1", "chance"), "mean"]),
           "cosine_paired": float(t.loc[("cosine", "generated"), "mean"]),
           "cosine_other_place": float(t.loc[("cosine", "shuffled"), "mean"])}
    for (plugin, metric), column in EXTRA_METRICS.items():
        rows = summary[(summary.plugin == plugin) & (summary.metric == metric)].set_index("pairing")["mean"]
        for pairing in ("generated", "shuffled", "reference"):
            if pairing in rows:
                row[f"{column}_{pairing}"] = float(rows[pairing])
    return row


def append_row(path: Path, row: dict[str, Any]) -> None:
    import pandas as pd

    from geoxai.files import atomic_write_text

    frame = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    frame = pd.concat([frame, pd.DataFrame([row])], ignore_index=True)
    atomic_write_text(path, frame.to_csv(index=False, float_format="%.4g"))


def train_autoencoders(plan: dict[str, Any], args: argparse.Namespace, embedder_spec: dict[str, Any],
                       deadline: float) -> dict[str, dict[str, Any]]:
    from geoxai.config import load_config
    from geoxai.evaluation.runner import evaluate
    from geoxai.ldm.autoencoder_training import train
    from geoxai.ldm.reconstruction import write_reconstruction_run

    results = {}
    for name, variant in plan["autoencoders"].items():
        folder = args.out / "autoencoders" / name
        trained = Path(variant["path"]) if "path" in variant else folder / "vae"
        if "path" in variant:  # a trained autoencoder: only its ceiling is measured
            folder.mkdir(parents=True, exist_ok=True)
        elif not trained.is_dir():
            if time.time() > deadline:
                append_row(args.out / "results.csv", {"kind": "autoencoder", "variant": name, "note": "skipped: budget"})
                continue
            started = time.time()
            train(load_config(args.autoencoder_config, [*variant.get("overrides", []), f"output_dir={folder}",
                                                        f"trainer.max_steps={variant['steps']}", "trainer.max_time=null"]))
            print(f"[autoencoder {name}] trained {variant['steps']} steps in {time.time() - started:.0f} s")
        metrics = json.loads((trained.parent / "metrics.json").read_text())
        write_reconstruction_run({"path": str(trained)}, args.world / "val" / "queries", folder / "reconstruction",
                                 int(metrics.get("image_size", 128)), device=args.device)
        evaluate(folder / "reconstruction", "recall", folder / "reconstruction-eval", database=args.world / "val" / "database",
                 embedder_spec=embedder_spec, device=args.device, progress=False)
        ceiling = {"recall@1_reconstruction": recall_row(folder / "reconstruction-eval")["recall@1_generated"]}
        results[name] = {"path": trained, "latent_channels": metrics["latent_channels"], **ceiling}
        append_row(args.out / "results.csv", {"kind": "autoencoder", "variant": name, "steps": metrics["steps"],
                                              "psnr_db": metrics["psnr_db"], **ceiling})
        print(f"[autoencoder {name}] PSNR {metrics['psnr_db']:.2f} dB, reconstruction recall@1 "
              f"{ceiling['recall@1_reconstruction']:.1f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", type=Path, default=Path(__file__).with_name("ldm_synthcity_sweep.yaml"))
    parser.add_argument("--config", type=Path, default=Path("configs/ldm/synthcity.yaml"))
    parser.add_argument("--autoencoder-config", type=Path, default=Path("configs/autoencoder/synthcity.yaml"))
    parser.add_argument("--world", type=Path, default=Path("worlds/synthcity"))
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--guidance", default="1,3", help="guidance scales to sample with, comma-separated")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--budget-minutes", type=float, default=None, help="skip variants that start after this")
    parser.add_argument("--step-scale", type=float, default=1.0, help="multiply every step count (smoke tests)")
    parser.add_argument("--plugins", default="recall", help="plugins scored per variant (recall always first)")
    parser.add_argument("--segmenter-config", type=Path, default=None, help="segmenter spec for segmentation plugins")
    parser.add_argument("--only", default=None, help="comma-separated LDM variants to run (default: all)")
    parser.add_argument("--autoencoders-only", action="store_true", help="stop after the autoencoders' ceilings")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/ldm_synthcity_sweep"))
    args = parser.parse_args()

    from geoxai.config import load_config
    from geoxai.evaluation.runner import evaluate
    from geoxai.ldm.sampling import sample_run
    from geoxai.ldm.training import train

    deadline = time.time() + 60 * args.budget_minutes if args.budget_minutes else float("inf")
    plan = yaml.safe_load(args.plan.read_text())
    for section in ("autoencoders", "ldm"):
        for variant in plan[section].values():
            if "steps" in variant:  # a trained autoencoder (path:) has none
                variant["steps"] = max(1, round(variant["steps"] * args.step_scale))
    args.out.mkdir(parents=True, exist_ok=True)
    base = load_config(args.config)
    query_folder, database = args.world / "val" / "queries", args.world / "val" / "database"
    autoencoders = train_autoencoders(plan, args, base["embedder"], deadline)
    best = max(autoencoders, key=lambda n: autoencoders[n]["recall@1_reconstruction"])
    print(f"best autoencoder by reconstruction recall: {best}")
    if args.autoencoders_only:
        return

    segmenter_spec = None
    if args.segmenter_config is not None:
        from geoxai.segmentation.base import read_segmenter_spec

        segmenter_spec = read_segmenter_spec(args.segmenter_config)
    only = set(args.only.split(",")) if args.only else None
    for name, variant in plan["ldm"].items():
        if only is not None and name not in only:
            continue
        ae_name = best if variant.get("autoencoder", "best") == "best" else variant["autoencoder"]
        if ae_name not in autoencoders or time.time() > deadline:
            append_row(args.out / "results.csv", {"kind": "ldm", "variant": name, "autoencoder": ae_name,
                                                  "note": "skipped: budget" if time.time() > deadline else
                                                  "skipped: autoencoder missing"})
            continue
        ae = autoencoders[ae_name]
        folder = args.out / "ldm" / name
        config = load_config(args.config, [
            f"autoencoder.path={ae['path']}", f"unet.in_channels={ae['latent_channels']}", f"output_dir={folder / 'train'}",
            f"trainer.max_steps={variant['steps']}", "trainer.max_time=null", "logging.image_every_n_steps=1000000",
            "logging.checkpoint_every_n_steps=1000000", f"trainer.seed={int(variant.get('seed', 0))}",
            *variant.get("overrides", [])])
        checkpoint = folder / "train" / "checkpoints" / "last.ckpt"
        started = time.time()
        if not checkpoint.is_file():
            checkpoint = train(config)
        seconds = time.time() - started
        for guidance in [float(g) for g in args.guidance.split(",")]:
            run_folder = folder / f"generations_g{guidance:g}"
            sample_run(checkpoint, query_folder, run_folder, samples=args.samples, sampler="dpm++", steps=20,
                       guidance=guidance, batch_size=args.batch_size, device=args.device)
            evaluate(run_folder, args.plugins, folder / f"eval_g{guidance:g}", database=database, device=args.device,
                     segmenter_spec=segmenter_spec, progress=False)
            result = recall_row(folder / f"eval_g{guidance:g}")
            row = {"kind": "ldm", "variant": name, "autoencoder": ae_name, "steps": variant["steps"],
                   "seed": int(variant.get("seed", 0)),
                   "train_seconds": round(seconds, 1), "guidance": guidance,
                   "overrides": " ".join(variant.get("overrides", [])),
                   "recall@1_reconstruction": ae["recall@1_reconstruction"], **result}
            append_row(args.out / "results.csv", row)
            print(f"[{name} g={guidance:g}] recall@1 generations {result['recall@1_generated']:.1f} "
                  f"(originals {result['recall@1_original']:.1f}, reconstructions "
                  f"{ae['recall@1_reconstruction']:.1f}, chance {result['recall@1_chance']:.1f}); cosine paired "
                  f"{result['cosine_paired']:.3f} vs other places {result['cosine_other_place']:.3f}", flush=True)
    print(f"written: {args.out / 'results.csv'}")


if __name__ == "__main__":
    main()
