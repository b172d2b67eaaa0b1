"""The autoencoder's ceiling: query photos passed through encode -> posterior mode -> decode.

An LDM generates latents that the frozen autoencoder decodes, so no generation can be more
recognisable than the autoencoder's own reconstruction of the photo. ``write_reconstruction_run``
writes those reconstructions as a GenerationRun (one "sample" per query); evaluating it with the
same plugins as the generations (``geoxai evaluate RUN --plugins recall``) gives the ceiling beside
every generation number, measured the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from geoxai.devices import resolve_device
from geoxai.errors import GeoxaiError, UnreadableImageError


def write_reconstruction_run(autoencoder: Mapping[str, Any], queries: str | Path, out: str | Path, image_size: int,
                             batch_size: int = 16, device: str = "auto", limit: int | None = None,
                             progress: bool = True) -> Any:
    """Reconstructions of the images under ``queries`` (resized and centre-cropped to ``image_size``)
    through the autoencoder ``autoencoder`` (an ``autoencoder:`` config section), as a GenerationRun."""
    from torchvision.transforms.functional import to_pil_image
    from tqdm.auto import tqdm

    from geoxai.data.images import load_tensor, resize_center_crop
    from geoxai.data.vpr import list_images
    from geoxai.ldm.autoencoder import autoencoder_identity, decode, encode_moments, load_autoencoder
    from geoxai.runs import GenerationRun, plan_queries

    if image_size < 8 or batch_size < 1:
        raise GeoxaiError(f"image size {image_size} / batch size {batch_size}: must be positive (size at least 8)")
    queries = Path(queries).resolve()
    items = plan_queries(list_images(queries), queries)[:limit]
    vae = load_autoencoder(autoencoder)
    torch_device = resolve_device(device)
    settings = {"generator": "autoencoder-reconstruction", "autoencoder": dict(autoencoder),
                "identities": {"autoencoder": autoencoder_identity(vae)}, "image_size": int(image_size),
                "queries": str(queries), "samples": 1, "seed": 0}
    run = GenerationRun.create(out, settings, resume=True)
    todo = run.pending(items, 1)
    vae.to(torch_device)
    with tqdm(total=len(todo), desc="reconstructions", unit="img", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            images, kept = [], []
            for item, sample, seed in chunk:
                try:
                    images.append(resize_center_crop(load_tensor(item.query_path), int(image_size)))
                    kept.append((item, sample, seed))
                except UnreadableImageError:
                    continue
            if images:
                batch = torch.stack(images).to(torch_device)
                mean = encode_moments(vae, batch).chunk(2, dim=1)[0]  # the posterior mode
                decoded = decode(vae, mean).cpu()
                run.save_images([(item, sample, seed, to_pil_image(image))
                                 for (item, sample, seed), image in zip(kept, decoded, strict=True)])
            bar.update(len(chunk))
    run.finalize(items, 1)
    return run
