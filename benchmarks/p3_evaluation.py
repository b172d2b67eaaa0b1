"""P3: one evaluation with several plugins vs one evaluation per plugin, and evaluation throughput.

On the default SynthCity world's queries x N oracle samples (a reference run: renders of the same
place with every transient factor re-sampled), with the world's trained CosPlace embedder:

1. all plugins in one `evaluate` (a cold artifact store) vs one `evaluate` per plugin (each with its
   own cold store): wall-clock of each and the ratio, in one process, one after the other;
2. an evaluation that adds one plugin to a finished EVAL folder: what it recomputes (artifact
   computations counted by the store) and how long it takes;
3. throughput: distinct images per second of the combined evaluation (target: the whole evaluation
   under 2 minutes on 2 cores).

    geoxai data synthcity --out worlds/synthcity
    geoxai train --config configs/embedder/synthcity-resnet18.yaml
    python benchmarks/p3_evaluation.py                       # recall,lighting,fidelity x 4 oracle samples
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("worlds/synthcity"))
    parser.add_argument("--embedder-config", type=Path, default=Path("runs/embedder/synthcity-resnet18/embedder.yaml"))
    parser.add_argument("--plugins", default="recall,lighting,fidelity")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/p3"))
    args = parser.parse_args()

    from geoxai.embedders import read_spec
    from geoxai.evaluation.runner import evaluate, parse_plugins
    from geoxai.runs import GenerationRun
    from geoxai.store import ArtifactStore
    from geoxai.synthcity.reference_runs import write_reference_run

    if not args.embedder_config.is_file():
        sys.exit(f"no {args.embedder_config}: train the SynthCity embedder first "
                 "(geoxai train --config configs/embedder/synthcity-resnet18.yaml)")
    spec = read_spec(args.embedder_config)
    plugins = parse_plugins(args.plugins)
    run = write_reference_run(args.world, "oracle", args.samples, args.out / "oracle-run", progress=True).root
    manifest = GenerationRun.open(run).manifest()
    for folder in ("stores", "evals"):
        shutil.rmtree(args.out / folder, ignore_errors=True)

    def timed(names: list[str], name: str, store: ArtifactStore) -> tuple[float, object]:
        started = time.perf_counter()
        result = evaluate(run, ",".join(names), args.out / "evals" / name, database=args.world, embedder_spec=spec,
                          batch_size=args.batch_size, store=store, progress=False)
        return time.perf_counter() - started, result

    combined_s, combined = timed(plugins, "combined", ArtifactStore(args.out / "stores" / "combined"))
    separate = {}
    for plugin in plugins:
        seconds, result = timed([plugin], f"only-{plugin}", ArtifactStore(args.out / "stores" / f"only-{plugin}"))
        separate[plugin] = {"seconds": round(seconds, 1), "computed": result.computed}
    separate_s = sum(v["seconds"] for v in separate.values())

    # an evaluation that adds the last plugin to a finished folder of the others
    store = ArtifactStore(args.out / "stores" / "incremental")
    base_s, base = timed(plugins[:-1], "incremental", store)
    added_s, added = timed(plugins, "incremental", store)

    images = manifest["query_path"].nunique() + len(manifest) + len(list((args.world / "database").glob("*.png")))
    results = {
        "plugins": plugins, "queries": int(manifest["query_id"].nunique()), "generations": int(len(manifest)),
        "distinct_images": int(images),
        "combined": {"seconds": round(combined_s, 1), "computed": combined.computed,
                     "plugins": {p.name: round(p.seconds, 1) for p in combined.plugins}},
        "separate": separate, "separate_total_seconds": round(separate_s, 1),
        "speedup_combined_vs_separate": round(separate_s / combined_s, 2),
        "incremental": {"first_seconds": round(base_s, 1), "first_computed": base.computed,
                        "added_plugin": plugins[-1], "added_seconds": round(added_s, 1),
                        "added_computed": added.computed,
                        "statuses": {p.name: p.status for p in added.plugins}},
        "throughput_images_per_s": round(images / combined_s, 1),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    print(f"P3: {len(plugins)} plugins in one evaluation {combined_s:.1f} s vs one evaluation each "
          f"{separate_s:.1f} s = {separate_s / combined_s:.2f}x (target >= 3x); the combined evaluation of "
          f"{images} distinct images took {combined_s:.1f} s = {images / combined_s:.1f} images/s (target < 120 s); "
          f"adding {plugins[-1]} to a finished folder recomputed {added.computed} in {added_s:.1f} s")


if __name__ == "__main__":
    main()
