"""DPM-Solver++ (20 steps) against DDIM (200 steps, CompVis' default sampler) on one model and batch.

Prints images/s of each sampler and the speed-up measured in this run (target >= 8x). With
``--checkpoint`` it uses a trained model; adding ``--dataset`` (a VPR test folder) also generates one
image per query with each sampler, uses the generations as queries against the dataset's database
(the checkpoint's embedder, faiss, 25 m positives) and reports recall@1 of each next to the original
queries' (target: the samplers within 2 points). Without a checkpoint a randomly initialised model
of the chosen ``--model`` size is timed (speed only).

    python benchmarks/p2_samplers.py --model thesis --batch 16                    # speed, GPU
    python benchmarks/p2_samplers.py --checkpoint runs/ldm/synthcity/checkpoints/last.ckpt \\
        --dataset worlds/synthcity --batch 32                                     # speed + recall@1
    python benchmarks/p2_samplers.py --model tiny --batch 2 --dpm-steps 2 --ddim-steps 20 --device cpu
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Random-model sizes: CompVis-style UNet settings, image side and autoencoder widths (kl-f8 = 4 levels).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(unet={"model_channels": 32, "channel_mult": [1, 2], "attention_resolutions": [1],
                       "num_res_blocks": 1, "num_heads": 2, "norm_num_groups": 8, "resblock_updown": False},
                 image_size=16, vae=(8, 16), dim=8),
    "small": dict(unet={"model_channels": 64, "channel_mult": [1, 2, 2, 4], "attention_resolutions": [2, 4],
                        "num_res_blocks": 2, "num_heads": 4}, image_size=128, vae=(32, 64, 128, 128), dim=512),
    "thesis": dict(unet={"model_channels": 192, "channel_mult": [1, 2, 2, 4, 4],
                         "attention_resolutions": [1, 2, 4, 8], "num_res_blocks": 2, "num_heads": 8},
                   image_size=256, vae=(128, 256, 512, 512), dim=512),
}


def random_model(preset: str) -> tuple[Any, Any]:
    """LDMComponents and an AutoencoderKL with random weights, shaped like ``PRESETS[preset]``."""
    from diffusers import AutoencoderKL

    from geoxai.ldm.module import LatentDiffusion

    spec = PRESETS[preset]
    torch.manual_seed(0)
    config = {"data": {"image_size": spec["image_size"]}, "unet": spec["unet"], "optim": {"use_ema": False},
              "diffusion": {"scale_by_std": False, "scale_factor": 0.18215}}
    components = LatentDiffusion(config, context_dim=spec["dim"]).components()
    levels = len(spec["vae"])
    groups = min(32, spec["vae"][0])
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * levels,
                        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=spec["vae"],
                        latent_channels=4, norm_num_groups=groups, layers_per_block=2 if preset != "tiny" else 1)
    return components, vae.eval()


def generate(pipeline: Any, descriptors: torch.Tensor, steps: int, batch: int, seeds: list[int],
             guidance: float, embedder: Any = None) -> tuple[float, torch.Tensor | None]:
    """Seconds to generate from every descriptor in batches; the generations' descriptors with ``embedder``."""
    embedded, elapsed = [], 0.0
    for i in range(0, len(descriptors), batch):
        generators = [torch.Generator().manual_seed(s) for s in seeds[i:i + batch]]
        t0 = time.perf_counter()
        images = pipeline(descriptors[i:i + batch], num_inference_steps=steps, guidance=guidance,
                          generator=generators)  # returned on the CPU: the device is done
        elapsed += time.perf_counter() - t0
        if embedder is not None:
            with torch.no_grad():
                embedded.append(embedder.embed(images.to(embedder.device)).float().cpu())
    return elapsed, (torch.cat(embedded) if embedded else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="trained LDM (.ckpt or exported folder)")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="VPR test folder (database/, queries/): also report recall@1 (needs --checkpoint)")
    parser.add_argument("--queries", type=int, default=None, help="with --dataset: only the first N queries")
    parser.add_argument("--model", choices=sorted(PRESETS), default="small", help="random-model size (no checkpoint)")
    parser.add_argument("--batch", type=int, default=16, help="images per UNet call")
    parser.add_argument("--batches", type=int, default=2, help="timed batches without --dataset")
    parser.add_argument("--dpm-steps", type=int, default=20)
    parser.add_argument("--ddim-steps", type=int, default=200)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = parser.parse_args()

    from geoxai.devices import resolve_device
    from geoxai.ldm.pipeline import DescriptorDiffusionPipeline
    from geoxai.runs import sample_seed

    if args.dataset is not None and args.checkpoint is None:
        parser.error("--dataset needs --checkpoint (recall of a random model means nothing)")
    device = resolve_device(args.device)
    embedder = test_set = None
    if args.checkpoint is not None:
        from geoxai.embedders import from_spec
        from geoxai.ldm.autoencoder import load_autoencoder
        from geoxai.ldm.loading import load_components

        components = load_components(args.checkpoint)
        vae = load_autoencoder(components.config["autoencoder"])
        what = f"checkpoint {args.checkpoint}"
        if args.dataset is not None:
            embedder = from_spec(components.config["embedder"]).to(device).eval()
    else:
        components, vae = random_model(args.model)
        what = f"random '{args.model}' model"
    pipelines = {name: DescriptorDiffusionPipeline.from_components(components, vae, sampler=name, device=device)
                 for name in ("dpm++", "ddim")}
    steps = {"dpm++": args.dpm_steps, "ddim": args.ddim_steps}
    unet_m = sum(p.numel() for p in components.unet.parameters()) / 1e6
    print(f"{what}: UNet {unet_m:.1f}M parameters, {components.config['data']['image_size']} px, "
          f"conditioning dim {components.context_dim}, device {device}, batch {args.batch}")

    original_recall = None
    if args.dataset is not None:
        from geoxai.data.vpr import VPRTestSet
        from geoxai.embedders.descriptors import embed_files
        from geoxai.retrieval import chance_recall, recall_at, search

        test_set = VPRTestSet(args.dataset)
        query_paths = test_set.queries_paths[:args.queries]
        positives = test_set.positives()[:len(query_paths)]
        database = embed_files(embedder, test_set.database_paths, device=device, desc="database").array
        found = embed_files(embedder, query_paths, device=device, desc="queries")
        queries, skipped = found.array, found.skipped
        keep = ~np.isnan(queries).any(axis=1) & np.array([len(p) > 0 for p in positives])
        db_ok = ~np.isnan(database).any(axis=1)
        if not db_ok.all():
            raise SystemExit("unreadable database images; fix the dataset first")
        descriptors = torch.from_numpy(queries[keep])
        positives = [p for p, k in zip(positives, keep, strict=True) if k]
        _, predictions = search(database, queries[keep], 1)
        original_recall = recall_at(predictions, positives, ns=(1,))[1]
        chance = chance_recall([len(p) for p in positives], len(database), ns=(1,))[1]
        seeds = [sample_seed(args.seed, int(i), 0) for i in np.flatnonzero(keep)]
    else:
        count = args.batch * args.batches
        descriptors = torch.nn.functional.normalize(
            torch.randn(count, components.context_dim, generator=torch.Generator().manual_seed(args.seed)), dim=1)
        seeds = [sample_seed(args.seed, i, 0) for i in range(count)]

    # Warm-up: CUDA context, cuDNN autotuning and allocator, so neither sampler pays them.
    for pipeline in pipelines.values():
        pipeline(descriptors[:args.batch], num_inference_steps=2, generator=[torch.Generator()] * min(
            args.batch, len(descriptors)))

    results: dict[str, dict[str, float]] = {}
    for name, pipeline in pipelines.items():
        seconds, generated = generate(pipeline, descriptors, steps[name], args.batch, seeds, args.guidance, embedder)
        results[name] = {"steps": steps[name], "seconds": seconds, "images_per_s": len(descriptors) / seconds}
        if generated is not None:
            _, predictions = search(database, generated.numpy(), 1)
            results[name]["recall@1"] = recall_at(predictions, positives, ns=(1,))[1]
    speedup = results["dpm++"]["images_per_s"] / results["ddim"]["images_per_s"]

    print(f"{'sampler':<22}{'steps':>6}{'images':>8}{'seconds':>10}{'images/s':>10}"
          + (f"{'recall@1':>10}" if args.dataset else ""))
    for name, label in (("dpm++", "DPM-Solver++ (2M)"), ("ddim", "DDIM (eta 0)")):
        r = results[name]
        line = f"{label:<22}{r['steps']:>6}{len(descriptors):>8}{r['seconds']:>10.2f}{r['images_per_s']:>10.2f}"
        print(line + (f"{r['recall@1']:>10.2f}" if "recall@1" in r else ""))
    print(f"speed-up (DPM-Solver++ / DDIM images/s): {speedup:.2f}x (target >= 8x)")
    summary: dict[str, Any] = {"model": what, "device": str(device), "batch": args.batch, "images": len(descriptors),
                               "samplers": results, "speedup": speedup}
    if original_recall is not None:
        gap = abs(results["dpm++"]["recall@1"] - results["ddim"]["recall@1"])
        print(f"recall@1: original queries {original_recall:.2f}, DPM-Solver++ {results['dpm++']['recall@1']:.2f}, "
              f"DDIM {results['ddim']['recall@1']:.2f} (gap {gap:.2f} points, target <= 2; "
              f"chance {chance:.2f}, {len(skipped)} unreadable queries left out)")
        summary.update(original_recall=original_recall, chance_recall=chance, recall_gap=gap)
    if args.out is not None:
        from geoxai.files import atomic_write_text

        atomic_write_text(args.out, json.dumps(summary, indent=1))
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
