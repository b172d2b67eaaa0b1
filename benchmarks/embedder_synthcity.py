"""CosPlace ResNet18 trained from scratch on SynthCity: recall and factor probe against their targets.

Generates the default world if it is missing, trains with configs/embedder/synthcity-resnet18.yaml
within a wall-clock budget, then prints recall@1/5/10/20 on the world's queries beside chance and the
factor probe on held-out places. Targets: R@1 >= 90%; probe cosine >= 0.9 for sky, lighting and
vehicle changes, with a clear gap to a different place (its CI entirely below theirs, >= 0.1 lower).

    python benchmarks/embedder_synthcity.py                        # the real run: 10 minutes of training
    python benchmarks/embedder_synthcity.py --minutes 1 --world /tmp/small --places 40   # a quick check
Extra ``key.sub=value`` arguments override the config (e.g. ``optim.batch_size=16``).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path

import yaml

from geoxai.config import apply_overrides, load_config
from geoxai.data.conventions import POSITIVE_RADIUS_M

REPO = Path(__file__).resolve().parents[1]
PROBE_FACTORS = ("sky", "lighting", "vehicles")
R1_TARGET, COSINE_TARGET, GAP_TARGET = 90.0, 0.9, 0.1


def ensure_world(world: Path, places: int, visits: int, size: int, seed: int) -> dict:
    """The world's parameters; the world is written first when ``world`` holds none."""
    params = world / "synthcity.yaml"
    if not params.is_file():
        from geoxai.synthcity.world import write_world

        print(f"writing SynthCity world into {world} ({places} places x {visits} visits, {size} px)")
        print(write_world(world, places=places, visits=visits, size=size, seed=seed, test_fraction=0.3,
                          progress=True).format())
    return yaml.safe_load(params.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "embedder" / "synthcity-resnet18.yaml")
    parser.add_argument("--world", type=Path, default=Path("worlds/synthcity"))
    parser.add_argument("--places", type=int, default=200, help="places of a newly written world")
    parser.add_argument("--visits", type=int, default=6, help="visits of a newly written world")
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget")
    parser.add_argument("--probe-places", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a new one under runs/)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    args = parser.parse_args()

    from geoxai.embedders import read_spec
    from geoxai.embedders.probe import OTHER_PLACE, run_probe
    from geoxai.embedders.training import evaluate, train

    world_params = ensure_world(args.world, args.places, args.visits, 128, 0)
    out = args.out or Path("runs/benchmarks/embedder_synthcity") / datetime.now().strftime("%Y%m%d-%H%M%S")
    config = load_config(args.config)
    config = apply_overrides(config, [
        f"output_dir={out}", f"data.train_dir={args.world / 'train'}", "eval.dataset_dir=null",
        f"data.image_size={world_params['size']}", f"trainer.max_time={args.minutes}", *args.overrides])
    eval_section = {"dataset_dir": str(args.world), "batch_size": 32, "radius": POSITIVE_RADIUS_M}

    started = time.perf_counter()
    weights = train(config)
    trained_s = time.perf_counter() - started
    recall = evaluate(weights, eval_section, out / "eval")
    probe = run_probe(read_spec(weights.parent / "embedder.yaml"), places=args.probe_places,
                      seed=int(world_params["seed"]), size=int(world_params["size"]), out=out, progress=True)
    print()
    print(probe.format())

    steps = sum(1 for _ in open(out / "train_log.csv")) - 1
    table = probe.table.set_index("change")
    other = table.loc[OTHER_PLACE]
    print()
    print(f"training: {trained_s / 60:.1f} min wall clock (budget {args.minutes:g} min), {steps} steps; "
          f"weights {weights}")
    print("recall@N on SynthCity queries (chance in brackets): " + ", ".join(
        f"R@{n} {recall.recalls[n]:.1f}% [{recall.chance[n]:.1f}%]" for n in recall.recalls))
    print(f"database places: {recall.num_database}, R@1 chance = 1/{recall.num_database} "
          f"= {100 / max(recall.num_database, 1):.1f}%")
    checks = [(f"R@1 {recall.recalls[1]:.1f}% >= {R1_TARGET:g}%", recall.recalls[1] >= R1_TARGET)]
    for factor in PROBE_FACTORS:
        row = table.loc[factor]
        gap = row["cosine"] - other["cosine"]
        checks.append((f"{factor}: cosine {row['cosine']:.3f} >= {COSINE_TARGET}", row["cosine"] >= COSINE_TARGET))
        checks.append((f"{factor}: gap to a different place {gap:.3f} >= {GAP_TARGET} with disjoint CIs",
                       gap >= GAP_TARGET and row["ci_low"] > other["ci_high"]))
    for text, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")


if __name__ == "__main__":
    main()
