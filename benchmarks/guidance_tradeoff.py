"""Recall against diversity over the guidance scale, on validation places: how the default is chosen.

Classifier-free guidance sharpens the place (recall@1 of generations used as queries rises) and
narrows what varies between a query's generations. For each guidance scale this samples the
validation queries (``val/queries``; never trained on) with ``geoxai sample`` and scores them with
``geoxai evaluate --plugins recall,diversity``: recall@1 beside originals and chance, and the
``diversity`` plugin's ``pixel_l1_ratio`` (mean pixel L1 between two generations of a query, over the
same between two real visits of the place; the target is >= 0.5). The default guidance is the one
with the highest recall@1 among those that keep the ratio >= 0.5 (the most diverse one when none
does). Writes ``tradeoff.csv`` and ``tradeoff.png`` (recall@1 against diversity, one point per scale).

    python benchmarks/guidance_tradeoff.py --checkpoint synthcity --out runs/bench/guidance
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="synthcity", help="checkpoint, export folder or shipped name")
    parser.add_argument("--world", type=Path, default=Path("worlds/synthcity"))
    parser.add_argument("--guidance", default="1,1.5,2,3,5")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="DPM-Solver++ steps")
    parser.add_argument("--min-ratio", type=float, default=0.5, help="diversity the default must keep")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/guidance"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geoxai.evaluation.runner import evaluate
    from geoxai.files import atomic_write_text
    from geoxai.ldm.sampling import sample_run

    queries, database = args.world / "val" / "queries", args.world / "val" / "database"
    rows = []
    for guidance in [float(g) for g in args.guidance.split(",")]:
        run = args.out / f"g{guidance:g}"
        sample_run(args.checkpoint, queries, run, samples=args.samples, steps=args.steps, guidance=guidance,
                   batch_size=args.batch_size, device=args.device)
        evaluate(run, "recall,diversity", args.out / f"eval_g{guidance:g}", database=database, device=args.device,
                 progress=False)
        summary = pd.read_csv(args.out / f"eval_g{guidance:g}" / "summary.csv").set_index(["metric", "pairing"])
        row = {"guidance": guidance,
               "recall@1": summary.loc[("recall@1", "generated"), "mean"],
               "recall@1_ci_low": summary.loc[("recall@1", "generated"), "ci_low"],
               "recall@1_ci_high": summary.loc[("recall@1", "generated"), "ci_high"],
               "recall@1_originals": summary.loc[("recall@1", "reference"), "mean"],
               "recall@1_chance": summary.loc[("recall@1", "chance"), "mean"],
               "cosine": summary.loc[("cosine", "generated"), "mean"],
               "cosine_other_place": summary.loc[("cosine", "shuffled"), "mean"],
               "pixel_l1_ratio": summary.loc[("pixel_l1_ratio", "generated"), "mean"],
               "descriptor_distance_ratio": summary.loc[("descriptor_distance_ratio", "generated"), "mean"]}
        rows.append(row)
        print({k: round(float(v), 3) for k, v in row.items()}, flush=True)
    table = pd.DataFrame(rows)
    atomic_write_text(args.out / "tradeoff.csv", table.to_csv(index=False, float_format="%.4g"))
    diverse = table[table.pixel_l1_ratio >= args.min_ratio]
    chosen = (diverse.loc[diverse["recall@1"].idxmax()] if len(diverse)
              else table.loc[table.pixel_l1_ratio.idxmax()])
    print(f"default guidance {chosen.guidance:g}: recall@1 {chosen['recall@1']:.1f}, diversity ratio "
          f"{chosen.pixel_l1_ratio:.2f} ({'meets' if chosen.pixel_l1_ratio >= args.min_ratio else 'misses'} "
          f">= {args.min_ratio}); validation places, {args.samples} samples per query")

    figure, axis = plt.subplots(figsize=(5, 3.6))
    axis.errorbar(table.pixel_l1_ratio, table["recall@1"],
                  yerr=[table["recall@1"] - table["recall@1_ci_low"], table["recall@1_ci_high"] - table["recall@1"]],
                  fmt="o-", color="C0", capsize=3)
    for _, row in table.iterrows():
        axis.annotate(f"g={row.guidance:g}", (row.pixel_l1_ratio, row["recall@1"]), textcoords="offset points",
                      xytext=(5, 4), fontsize=8)
    axis.axvline(args.min_ratio, color="grey", linestyle=":", label=f"diversity target ({args.min_ratio:g})")
    axis.axhline(table["recall@1_chance"].iloc[0], color="C3", linestyle="--", label="chance")
    axis.set_xlabel("diversity: pixel L1 between generations / between real visits")
    axis.set_ylabel("recall@1 of generations (%)")
    axis.set_title("guidance: place vs diversity (validation places)", fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(args.out / "tradeoff.png", dpi=150)
    print(f"written: {args.out / 'tradeoff.csv'}, {args.out / 'tradeoff.png'}")


if __name__ == "__main__":
    main()
