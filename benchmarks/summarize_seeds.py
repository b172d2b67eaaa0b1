"""Mean and spread over seeds of sweep rows (``results.csv`` of ``ldm_synthcity_sweep.py``), per variant.

Variants named ``<name>-s<seed>`` are grouped by ``<name>``; several results files (e.g. of sweeps
run in parallel over different variants) are read together. Prints a Markdown table: per metric the
mean over seeds with its standard deviation, and the per-seed values.

    python benchmarks/summarize_seeds.py runs/bench/ablation-a/results.csv runs/bench/ablation-b/results.csv
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

METRICS = ["recall@1_generated", "cosine_paired", "cosine_other_place", "building_iou_generated",
           "building_iou_shuffled", "vehicle_removed_generated", "vehicle_removed_shuffled"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path)
    args = parser.parse_args()
    rows = pd.concat([pd.read_csv(path) for path in args.results], ignore_index=True)
    rows = rows[rows.kind == "ldm"].copy()
    rows["group"] = [re.sub(r"-s\d+$", "", v) for v in rows.variant]
    metrics = [m for m in METRICS if m in rows]
    lines = ["| variant | seeds | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
    for group, part in rows.groupby("group", sort=False):
        part = part.sort_values("seed")
        cells = []
        for metric in metrics:
            values = part[metric].astype(float)
            spread = f" ± {values.std(ddof=1):.3g}" if len(values) > 1 else ""
            cells.append(f"{values.mean():.3g}{spread} ({', '.join(f'{v:.3g}' for v in values)})")
        lines.append(f"| {group} | {', '.join(str(int(s)) for s in part.seed)} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    chance = rows["recall@1_chance"].iloc[0] if "recall@1_chance" in rows else float("nan")
    print(f"\nrecall@1 chance {chance:.3g}, originals {rows['recall@1_original'].iloc[0]:.3g}, "
          f"autoencoder ceiling {rows['recall@1_reconstruction'].iloc[0]:.3g}; guidance "
          f"{', '.join(f'{g:g}' for g in sorted(rows.guidance.unique()))}")


if __name__ == "__main__":
    main()
