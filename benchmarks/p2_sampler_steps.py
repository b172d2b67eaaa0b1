"""P2 on a trained model: recall@1 against sampler steps, and DPM-Solver++ 20 steps against DDIM 200.

For each (sampler, steps) this runs ``geoxai sample`` on the test queries (one generation each, the
same per-image seeds for every sampler) and ``geoxai evaluate --plugins recall``, and records the
generation time of the run (images/s) and recall@1 of the generations with its 95% CI, beside the
originals and chance. Prints the speed-up of DPM-Solver++ 20 steps over DDIM 200 steps measured in
this one run (target >= 8x) and their recall@1 gap (target: within 2 points); writes
``steps.csv`` and ``steps.png`` (recall@1 against steps).

    python benchmarks/p2_sampler_steps.py --checkpoint synthcity --limit 100 --out runs/bench/p2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="synthcity", help="checkpoint, export folder or shipped name")
    parser.add_argument("--world", type=Path, default=Path("worlds/synthcity"))
    parser.add_argument("--plan", default="dpm++:5,dpm++:10,dpm++:20,dpm++:50,ddim:200")
    parser.add_argument("--limit", type=int, default=None, help="first N test queries (default: all)")
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's own")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/p2"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geoxai.evaluation.runner import evaluate
    from geoxai.files import atomic_write_text
    from geoxai.ldm.sampling import sample_run

    rows = []
    for entry in args.plan.split(","):
        sampler, steps = entry.split(":")
        name = f"{sampler.replace('+', 'p')}_{steps}"
        started = time.perf_counter()
        run = sample_run(args.checkpoint, args.world / "queries", args.out / name, samples=1, sampler=sampler,
                         steps=int(steps), guidance=args.guidance, batch_size=args.batch_size, limit=args.limit,
                         device=args.device)
        seconds = time.perf_counter() - started
        evaluate(run.root, "recall", args.out / f"eval_{name}", database=args.world, device=args.device,
                 progress=False)
        summary = pd.read_csv(args.out / f"eval_{name}" / "summary.csv").set_index(["metric", "pairing"])
        rows.append({"sampler": sampler, "steps": int(steps), "images": len(run.manifest()),
                     "seconds": seconds, "images_per_s": len(run.manifest()) / seconds,
                     "guidance": float(run.settings["guidance"]),
                     "recall@1": summary.loc[("recall@1", "generated"), "mean"],
                     "ci_low": summary.loc[("recall@1", "generated"), "ci_low"],
                     "ci_high": summary.loc[("recall@1", "generated"), "ci_high"],
                     "originals": summary.loc[("recall@1", "reference"), "mean"],
                     "chance": summary.loc[("recall@1", "chance"), "mean"]})
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    table = pd.DataFrame(rows)
    atomic_write_text(args.out / "steps.csv", table.to_csv(index=False, float_format="%.4g"))
    by = table.set_index(["sampler", "steps"])
    if ("dpm++", 20) in by.index and ("ddim", 200) in by.index:
        fast, slow = by.loc[("dpm++", 20)], by.loc[("ddim", 200)]
        gap = fast["recall@1"] - slow["recall@1"]
        print(f"DPM-Solver++ 20 vs DDIM 200: {fast.images_per_s:.2f} vs {slow.images_per_s:.2f} images/s = "
              f"{fast.images_per_s / slow.images_per_s:.2f}x (target >= 8x, one run, the run's whole wall time "
              f"incl. loading); recall@1 {fast['recall@1']:.1f} vs {slow['recall@1']:.1f}, gap {gap:+.1f} points "
              f"(target within 2) over {int(fast.images)} queries")
    figure, axis = plt.subplots(figsize=(5, 3.4))
    dpm = table[table.sampler == "dpm++"].sort_values("steps")
    axis.errorbar(dpm.steps, dpm["recall@1"], yerr=[dpm["recall@1"] - dpm.ci_low, dpm.ci_high - dpm["recall@1"]],
                  fmt="o-", capsize=3, label="DPM-Solver++ (2M)")
    for _, row in table[table.sampler != "dpm++"].iterrows():
        axis.errorbar([row.steps], [row["recall@1"]], yerr=[[row["recall@1"] - row.ci_low], [row.ci_high - row["recall@1"]]],
                      fmt="s", capsize=3, label=f"{row.sampler.upper()} {row.steps}")
    axis.axhline(table.chance.iloc[0], color="C3", linestyle="--", label="chance")
    axis.set_xscale("log")
    axis.set_xlabel("sampler steps")
    axis.set_ylabel("recall@1 of generations (%)")
    axis.set_title(f"recall@1 against sampler steps ({int(table.images.iloc[0])} test queries)", fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(args.out / "steps.png", dpi=150)
    print(f"written: {args.out / 'steps.csv'}, {args.out / 'steps.png'}")


if __name__ == "__main__":
    main()
