"""Segmentation plugins on SynthCity: backend speed, calls per image, the full evaluation, and the
validity table with the trained segmenter beside the ground-truth one.

1. Images/s of each segmenter backend on this machine: groundtruth (reads label maps), synthcity
   (the trained network), hf (a SegFormer-B0-sized model, randomly initialised: speed does not depend
   on the weights' values) — on a few hundred of the world's images.
2. Segmentation calls of four segmentation plugins on queries x N oracle samples: must equal the
   number of distinct images (originals, generations, reference photos).
3. `evaluate --plugins sky,buildings,vehicles,signs,windows,colours,recall,lighting` on the default
   world's queries x 4 oracle samples with the synthcity segmenter: wall-clock (target < 3 minutes).
4. The validity table (reference runs: identity, oracle, other-place and every single-factor
   intervention) with `--segmenter groundtruth` and with `--segmenter synthcity` side by side, and the
   largest difference between the two per metric.

    geoxai data synthcity --out worlds/synthcity
    geoxai train --config configs/embedder/synthcity-resnet18.yaml
    geoxai train --config configs/segmenter/synthcity.yaml
    python benchmarks/segmentation_synthcity.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

KINDS = ("identity", "oracle", "other-place", "sky", "lighting", "vehicles", "pedestrians", "signs", "windows",
         "colours")
SEGMENTATION_PLUGINS = "sky,buildings,vehicles,signs,windows,colours,classes"
HEADLINE = [("sky", "sky_iou"), ("sky", "sky_colour_change"), ("buildings", "building_iou"), ("buildings", "road_iou"),
            ("vehicles", "vehicle_removed"), ("vehicles", "person_removed"), ("signs", "sign_position_kept"),
            ("signs", "sign_appearance_change"), ("windows", "window_count_error"), ("colours", "facade_colour_change"),
            ("classes", "classes_changed")]


def backend_speed(segmenter_spec: dict, paths: list[Path]) -> float:
    from geoxai.segmentation.base import from_spec

    segmenter = from_spec(segmenter_spec)
    segmenter.segment_files(paths[:4])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(paths), 16):
        segmenter.segment_files(paths[start:start + 16])
    return len(paths) / (time.perf_counter() - started)


def segformer_b0(folder: Path) -> Path:
    """A SegFormer-B0-sized model with the 19 Cityscapes classes, randomly initialised, saved locally."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    from geoxai.segmentation.mappings import CITYSCAPES

    if not (folder / "config.json").is_file():
        labels = {i: name for i, (name, _) in enumerate(CITYSCAPES)}
        config = SegformerConfig(num_labels=len(labels), id2label=labels, label2id={v: k for k, v in labels.items()})
        SegformerForSemanticSegmentation(config).save_pretrained(folder)
        SegformerImageProcessor(do_resize=False).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("worlds/synthcity"))
    parser.add_argument("--embedder-config", type=Path, default=Path("runs/embedder/synthcity-resnet18/embedder.yaml"))
    parser.add_argument("--segmenter-weights", type=Path, default=Path("runs/segmenter/synthcity/segmenter.yaml"))
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--validity-samples", type=int, default=2)
    parser.add_argument("--speed-images", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/segmentation"))
    args = parser.parse_args()

    from geoxai.data.vpr import list_images
    from geoxai.embedders import read_spec
    from geoxai.evaluation.runner import evaluate
    from geoxai.runs import GenerationRun
    from geoxai.store import ArtifactStore
    from geoxai.synthcity.reference_runs import write_reference_run

    for needed in (args.embedder_config, args.segmenter_weights):
        if not needed.is_file():
            sys.exit(f"missing {needed}: train it first (see this script's docstring)")
    embedder = read_spec(args.embedder_config)
    synthcity = {"name": "synthcity", "weights": str(args.segmenter_weights)}
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {}

    # 1. speed of each backend
    images = list_images(args.world / "queries")[:args.speed_images]
    model = segformer_b0(args.out / "segformer-b0-random")
    results["images_per_s"] = {
        "groundtruth": round(backend_speed({"name": "groundtruth"}, images), 1),
        "synthcity": round(backend_speed(synthcity, images), 1),
        "hf segformer-b0 (512 px)": round(backend_speed({"name": "hf", "model": str(model), "resolution": 512},
                                                         images[:32]), 2),
    }
    print(json.dumps(results["images_per_s"]), flush=True)

    # 2 + 3. the full evaluation on queries x N oracle samples with the trained segmenter
    oracle = write_reference_run(args.world, "oracle", args.samples, args.out / "runs" / "oracle").root
    manifest = GenerationRun.open(oracle).manifest()
    shutil.rmtree(args.out / "evals", ignore_errors=True)
    store = ArtifactStore(args.out / "store")
    shutil.rmtree(args.out / "store", ignore_errors=True)
    started = time.perf_counter()
    full = evaluate(oracle, f"{SEGMENTATION_PLUGINS.replace(',classes', '')},recall,lighting", args.out / "evals" / "full",
                    database=args.world, embedder_spec=embedder, segmenter_spec=synthcity, store=store, progress=False)
    seconds = time.perf_counter() - started
    distinct = manifest["query_path"].nunique() + len(manifest) + len(list_images(args.world / "database"))
    results["full_evaluation"] = {"seconds": round(seconds, 1), "queries": int(manifest["query_id"].nunique()),
                                  "generations": int(len(manifest)), "computed": full.computed,
                                  "distinct_images": int(distinct),
                                  "plugins": {p.name: round(p.seconds, 1) for p in full.plugins}}
    calls = evaluate(oracle, "sky,buildings,vehicles,signs", args.out / "evals" / "calls", database=args.world,
                     segmenter_spec={"name": "groundtruth"}, store=ArtifactStore(args.out / "store-calls"),
                     progress=False)
    results["segmentation_calls"] = {"plugins": 4, "samples": args.samples, "computed": calls.computed["segmentation"],
                                     "distinct_images": int(distinct)}
    print(json.dumps({k: results[k] for k in ("full_evaluation", "segmentation_calls")}, indent=1), flush=True)

    # 4. validity with both segmenters
    rows = []
    for kind in KINDS:
        run = write_reference_run(args.world, kind, args.validity_samples, args.out / "runs" / f"v-{kind}",
                                  progress=False).root
        for segmenter in ({"name": "groundtruth"}, synthcity):
            result = evaluate(run, SEGMENTATION_PLUGINS, args.out / "evals" / f"{kind}-{segmenter['name']}",
                              database=args.world, segmenter_spec=segmenter, store=store, progress=False)
            table = result.summary.set_index(["plugin", "metric", "pairing"])["mean"]
            for plugin, metric in HEADLINE:
                for pairing in ("generated", "shuffled", "reference"):
                    if (plugin, metric, pairing) in table.index:
                        rows.append({"kind": kind, "segmenter": segmenter["name"], "metric": metric,
                                     "pairing": pairing, "mean": float(table[plugin, metric, pairing])})
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out / "validity.csv", index=False)
    generated = frame[frame.pairing == "generated"].pivot_table(index="metric", columns=["segmenter", "kind"],
                                                                values="mean")
    gap = (generated["synthcity"] - generated["groundtruth"]).abs().max(axis=1)
    results["validity_max_abs_difference_synthcity_vs_groundtruth"] = gap.round(3).to_dict()
    print(generated.round(3).to_string())
    print("largest |synthcity - groundtruth| per metric over the kinds:")
    print(gap.round(3).to_string())
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"written: {args.out / 'results.json'}, {args.out / 'validity.csv'}")


if __name__ == "__main__":
    main()
