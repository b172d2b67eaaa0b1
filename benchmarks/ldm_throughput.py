"""Training throughput of an LDM config's denoiser: optimizer steps/s, images/s and peak memory.

Builds the UNet + conditioner of a training config (``configs/ldm/*.yaml``) with random weights and
times full optimizer steps (loss, backward, AdamW, EMA update) on random latent moments and
descriptors, so no dataset, autoencoder or embedder weights are needed: the number says what the
thesis-size model costs per step on this device, at the config's batch size and latent size, in
fp32 and in bf16 autocast (what ``trainer.precision: auto`` picks on a GPU), with and without
channels_last, and optionally under ``torch.compile`` (``--compile``; the first steps, which compile,
are untimed warm-up). Data loading is excluded: with the latent cache it is a memory copy.

    python benchmarks/ldm_throughput.py --config configs/ldm/pitts30k-cosplace-r50-256.yaml --steps 30
    python benchmarks/ldm_throughput.py --config configs/ldm/synthcity.yaml --steps 10 --precision fp32
    python benchmarks/ldm_throughput.py --config configs/ldm/synthcity.yaml --steps 20 --channels-last both --compile both
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def time_steps(config: dict, context_dim: int, device: torch.device, precision: str, channels_last: bool,
               steps: int, warmup: int, compile: bool = False) -> dict[str, float]:
    from geoxai.ldm.module import LatentDiffusion

    torch.manual_seed(0)
    model = LatentDiffusion(config, context_dim).to(device)
    model.scale_factor.fill_(1.0)
    if model.ema is not None:
        model.ema.to(device=device)
    if channels_last:
        model.unet.to(memory_format=torch.channels_last)
    if compile:
        model.unet = torch.compile(model.unet)
    optimizer = torch.optim.AdamW(model.denoiser_parameters(), lr=1e-5)
    batch_size = int(config["data"]["batch_size"])
    channels, size = int(config["unet"]["in_channels"]), int(config["unet"]["sample_size"])
    batch = {"moments": torch.randn(batch_size, 2 * channels, size, size, device=device),
             "descriptor": torch.nn.functional.normalize(torch.randn(batch_size, context_dim, device=device), dim=1)}
    use_bf16 = precision == "bf16"

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = model.compute_loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if model.ema is not None:
            model.ema.step(model.denoiser_parameters())

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    parameters = sum(p.numel() for p in model.unet.parameters()) / 1e6
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
    return {"mode": config["conditioning"]["mode"], "precision": precision, "channels_last": channels_last,
            "compile": compile, "batch": batch_size,
            "unet_params_M": round(parameters, 1), "s_per_step": seconds, "steps_per_s": 1 / seconds,
            "images_per_s": batch_size / seconds, "peak_mem_GiB": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/ldm/pitts30k-cosplace-r50-256.yaml"))
    parser.add_argument("--context-dim", type=int, default=512, help="descriptor dimension")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "both"],
                        help="auto: both on a GPU with bf16, fp32 elsewhere")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--channels-last", default="auto", choices=["auto", "no", "yes", "both"],
                        help="auto: both on a GPU, no elsewhere")
    parser.add_argument("--compile", default="no", choices=["no", "yes", "both"], help="torch.compile the UNet")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value, e.g. data.batch_size=96")
    args = parser.parse_args()

    import pandas as pd

    from geoxai.config import load_config
    from geoxai.devices import resolve_device

    device = resolve_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    precisions = {"auto": ["fp32", "bf16"] if bf16 else ["fp32"], "both": ["fp32", "bf16"]}.get(
        args.precision, [args.precision])
    config = load_config(args.config, args.overrides)
    rows = []
    choices = {"no": [False], "yes": [True], "both": [False, True]}
    layouts = choices.get(args.channels_last, [False, True] if device.type == "cuda" else [False])
    for precision in precisions:
        for compile in choices[args.compile]:
            for channels_last in layouts:
                rows.append(time_steps(config, args.context_dim, device, precision, channels_last, args.steps,
                                       args.warmup, compile=compile))
                print(rows[-1], flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.config} on {name}, torch {torch.__version__}, {args.steps} timed steps after {args.warmup}:")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
