"""Does a descriptor-conditioned LDM trained on SynthCity generate the *place* of its descriptor?

Measured with the product itself (`geoxai sample` + `geoxai evaluate --plugins recall`), under the two
protocols every generation number must name (geoxai.protocols):

- unseen-places (headline): configs/ldm/synthcity.yaml, autoencoder and LDM trained on train/ only;
- seen-map: configs/ldm/synthcity-seen-map.yaml, the test places' database images in training too.

Per protocol: (1) the checkpoint (trained here, step-matched, when missing); (2) the guidance scale
chosen on the *validation* places (val/queries against val/database, never the test places);
(3) the test: generations from the world's queries at that guidance, evaluated against database/,
beside the originals (reference pairing), the shuffled pairing, chance, and the autoencoder's
reconstruction ceiling evaluated the same way.

    geoxai data synthcity --out worlds/synthcity
    geoxai train --config configs/embedder/synthcity-resnet18.yaml
    geoxai train --config configs/autoencoder/synthcity.yaml            # and synthcity-seen-map.yaml
    python benchmarks/ldm_synthcity_quality.py                          # trains what is missing
    python benchmarks/ldm_synthcity_quality.py --queries 40 --val-queries 20 --protocols unseen-places  # quicker

Outputs in --out: <protocol>/val-g<g>/ and test/ and reconstruction/ (runs and EVAL folders),
results.csv and results.md (one row per protocol).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CONFIGS = {"unseen-places": Path("configs/ldm/synthcity.yaml"), "seen-map": Path("configs/ldm/synthcity-seen-map.yaml")}


def subset(folder: Path, count: int | None, out: Path) -> Path:
    """All images of ``folder``, or ``count`` of them spread evenly (copied once into ``out``)."""
    from geoxai.data.vpr import list_images

    paths = list_images(folder)
    if count is None or count >= len(paths):
        return folder
    chosen = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, count).round()]
    if sorted(p.name for p in out.glob("*")) != sorted(p.name for p in chosen):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for path in chosen:
            shutil.copy2(path, out / path.name)
    return out


def recall_table(eval_folder: Path) -> pd.Series:
    summary = pd.read_csv(eval_folder / "summary.csv")
    return summary[summary.plugin == "recall"].set_index(["metric", "pairing"])["mean"]


def cell(eval_folder: Path, metric: str, pairing: str) -> str:
    summary = pd.read_csv(eval_folder / "summary.csv").set_index(["plugin", "metric", "pairing"])
    row = summary.loc[("recall", metric, pairing)]
    if not np.isfinite(row["ci_low"]):
        return f"{row['mean']:.1f}"
    return f"{row['mean']:.1f} [{row['ci_low']:.1f}, {row['ci_high']:.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("worlds/synthcity"))
    parser.add_argument("--protocols", default="unseen-places,seen-map")
    parser.add_argument("--train-steps", type=int, default=3800, help="steps when a checkpoint must be trained here")
    parser.add_argument("--queries", type=int, default=None, help="test queries (default: all 300)")
    parser.add_argument("--val-queries", type=int, default=None, help="validation queries (default: all)")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--guidances", default="1,2,3,5", help="guidance scales compared on the validation places")
    parser.add_argument("--steps", type=int, default=20, help="DPM-Solver++ steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/ldm_quality"))
    args = parser.parse_args()

    from geoxai.config import load_config
    from geoxai.evaluation.runner import evaluate
    from geoxai.ldm.reconstruction import write_reconstruction_run
    from geoxai.ldm.sampling import sample_run
    from geoxai.ldm.training import train

    world = args.world
    for needed in ("queries", "database", "val/queries", "val/database"):
        if not (world / needed).is_dir():
            sys.exit(f"no {world / needed}: run `geoxai data synthcity --out {world}` (a world with validation places)")
    guidances = [float(g) for g in args.guidances.split(",")]
    rows = []
    for protocol in [p.strip() for p in args.protocols.split(",") if p.strip()]:
        config = load_config(CONFIGS[protocol])
        folder = args.out / protocol
        checkpoint = Path(config["output_dir"]) / "checkpoints" / "last.ckpt"
        if not checkpoint.is_file():
            print(f"[{protocol}] training {args.train_steps} steps ({CONFIGS[protocol]})", flush=True)
            config.setdefault("trainer", {}).update(max_steps=args.train_steps, max_time=None)
            checkpoint = train(config)
        import torch

        steps = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"])
        embedder_spec = None  # the run records the embedder the generations were conditioned on

        # 1. guidance chosen on validation places
        val_queries = subset(world / "val" / "queries", args.val_queries, args.out / "val_queries")
        val_recall = {}
        for guidance in guidances:
            run = folder / f"val-g{guidance:g}"
            sample_run(checkpoint, val_queries, run / "run", samples=args.samples, steps=args.steps, guidance=guidance,
                       batch_size=args.batch_size, device=args.device)
            result = evaluate(run / "run", "recall", run / "eval", database=world / "val" / "database",
                              embedder_spec=embedder_spec, device=args.device)
            val_recall[guidance] = float(recall_table(result.out)["recall@1", "generated"])
            print(f"[{protocol}] validation, guidance {guidance:g}: recall@1 {val_recall[guidance]:.1f}", flush=True)
        best = max(val_recall, key=lambda g: (val_recall[g], -g))

        # 2. the test places, once, at the chosen guidance; and the autoencoder's ceiling
        queries = subset(world / "queries", args.queries, args.out / "test_queries")
        test = folder / "test"
        sample_run(checkpoint, queries, test / "run", samples=args.samples, steps=args.steps, guidance=best,
                   batch_size=args.batch_size, device=args.device)
        result = evaluate(test / "run", "recall", test / "eval", database=world / "database", device=args.device)
        ceiling = folder / "reconstruction"
        write_reconstruction_run(config["autoencoder"], queries, ceiling / "run", int(config["data"]["image_size"]),
                                 device=args.device)
        evaluate(ceiling / "run", "recall", ceiling / "eval", database=world / "database",
                 embedder_spec=config["embedder"], device=args.device)
        gen, rec = recall_table(test / "eval"), recall_table(ceiling / "eval")
        row: dict[str, Any] = {
            "protocol": protocol, "train_steps": steps, "guidance (chosen on validation)": best,
            "validation recall@1 per guidance": json.dumps({f"{g:g}": round(v, 1) for g, v in val_recall.items()}),
            "queries": int(pd.read_csv(test / "run" / "manifest.csv")["query_id"].nunique()), "samples": args.samples,
            "recall@1 generated [95% CI]": cell(test / "eval", "recall@1", "generated"),
            "recall@1 originals": round(float(gen["recall@1", "reference"]), 1),
            "recall@1 reconstructions (ceiling)": round(float(rec["recall@1", "generated"]), 1),
            "recall@1 shuffled": round(float(gen["recall@1", "shuffled"]), 1),
            "recall@1 chance": round(float(gen["recall@1", "chance"]), 1),
            "cosine generated": round(float(gen["cosine", "generated"]), 3),
            "cosine other place (shuffled)": round(float(gen["cosine", "shuffled"]), 3),
            "cosine real re-visit (reference)": round(float(gen["cosine", "reference"]), 3),
            "verified generated %": round(float(gen["verified", "generated"]), 1),
        }
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "results.csv", index=False)
    (args.out / "results.md").write_text("```\n" + table.set_index("protocol").T.to_string() + "\n```\n")
    print(table.set_index("protocol").T.to_string())
    print(f"written: {args.out / 'results.csv'}, {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
